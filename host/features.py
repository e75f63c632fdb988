"""``temposplit features``: a clip's int8 M1 cut tensors in a feature file, for replay.

The file is the codec's feature file (``temposplit encode`` reads it; docs/bitstream.md,
Feature files) plus the identity of what made it: the model and cut names, the model
hash the server checks (the stream header's), the source frames' size and the clip's
frame rate. ``temposplit edge --replay`` streams it without loading a model
(:class:`temposplit.host.sources.Replay`), which is what ``temposplit bench server``
runs many of at once.
"""

from __future__ import annotations

import numpy as np


def write_features(path: str, model, frames, fps: float, block: int | None = None, log=None) -> dict:
    """Run ``model``'s M1 (an :class:`~temposplit.host.pipeline.EdgeModel` or
    ``NumpyEdgeModel``) on ``frames`` (RGB uint8) and write the feature file ``path``.

    Returns a summary: frames, tensors (name and shape), model, cut.
    """
    from temposplit.codec import features
    from temposplit.errors import ConfigError

    log = log or (lambda msg: None)
    codes: list[list[np.ndarray]] = []
    sample = None
    size = None
    for frame in frames:
        cut = model.m1([frame])[0]
        if sample is None:
            sample, size = cut, frame.shape[:2]
            codes = [[] for _ in cut]
        for i, t in enumerate(cut):
            codes[i].append(np.asarray(t.codes, dtype=np.uint8))
        n = len(codes[0])
        if n % 10 == 0:
            log(f"  {n} frames")
    if sample is None:
        raise ConfigError("the video has no frames")
    specs = model.tensor_specs(sample, block)
    clip = features.FeatureClip(
        [t.name for t in sample],
        [np.stack(c) for c in codes],
        [float(t.scale) for t in sample],
        [int(t.zero_point) for t in sample],
        [s.block for s in specs],
    )
    identity = {
        "model": np.array(model.model),
        "cut": np.array(model.cut.name),
        "model_hash": np.frombuffer(model.model_hash(sample), np.uint8),
        "frame_size": np.array(size, np.int32),
        "fps": np.float64(fps),
    }
    from temposplit.files import output_file

    # Written beside it and renamed into place: a failure part way leaves ``path`` as it was.
    with output_file(path) as f:  # a file object: NumPy would append ".npz" to another name
        features.save(f, clip, identity)
    return {
        "frames": clip.frames,
        "model": model.model,
        "cut": model.cut.name,
        "tensors": [(t.name, tuple(t.shape)) for t in sample],
    }
