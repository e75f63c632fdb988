"""Feature files for the edge's --replay in the system tests: synthetic ones (no model) and
real M1 outputs played back and forth to any length."""

import numpy as np

from temposplit.codec import features


def synthetic_replay(path, frames: int = 3, **identity) -> str:
    """A feature file as ``temposplit features`` writes it, ``frames`` frames of one 8x12x12
    tensor of random codes; ``identity`` replaces identity fields (None drops one)."""
    codes = np.random.default_rng(0).integers(0, 256, (frames, 8, 12, 12)).astype(np.uint8)
    fields = {
        "model": np.array("ssd-mobilenet-v2"),
        "cut": np.array("features.10"),
        "model_hash": np.arange(32, dtype=np.uint8),
        "frame_size": np.array([576, 768], np.int32),
        "fps": np.float64(10.0),
    }
    fields.update(identity)
    fields = {k: v for k, v in fields.items() if v is not None}
    features.save(str(path), features.FeatureClip(["features.10"], [codes], [0.1], [3], [4]), fields)
    return str(path)


def tiled_replay(replay_file, path, frames: int) -> str:
    """``replay_file`` (real M1 outputs) played back and forth up to ``frames`` frames."""
    with np.load(replay_file, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    key = next(k for k in data if k.startswith("codes/"))
    loop = np.concatenate([data[key], data[key][::-1]])
    data[key] = np.concatenate([loop] * (frames // len(loop) + 1))[:frames]
    np.savez(path, **data)
    return str(path)
