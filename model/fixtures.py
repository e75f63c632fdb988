"""Small int8 feature-map fixtures of the SSD for the fabric's testbenches.

For each SSD cut, one ``ssd-<cut>.npz`` with a few consecutive vtest.avi frames' quint8
codes of every tensor crossing the cut, the int8 M1 calibrated on the fixed calibration set
(:mod:`.calibration`). To stay small, each tensor keeps its first
``C' = clamp(budget // (H * W), 1, C)`` channels at full spatial size (the codec works per
channel; block matching sums over channels). Keys, for tensor i of the cut:

* ``codes_i``: uint8 (T, C', H, W); ``scale_i``, ``zero_point_i``: s8 and z8 (shared by
  the T frames: static quantization); ``name_i``; ``shape_i``: the full (C, H, W);
* ``frames``: the frame indices in vtest.avi; ``command``: the command that made it;
  ``platform``: the PyTorch version and CPU kernels the calibration ran on
  (:func:`~temposplit.model.fingerprint.calibration_platform`): the codes are reproducible
  to the bit only there (docs/models.md, "Reproducibility").

Regenerate with ``temposplit models fixtures --out tests/fixtures/features``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_OUT = "tests/fixtures/features"
DEFAULT_START = 100
DEFAULT_FRAMES = 3
CHANNEL_BUDGET = 12_000  # codes per frame and tensor, before compression


def command(out, start: int = DEFAULT_START, count: int = DEFAULT_FRAMES) -> str:
    """The command that writes the fixtures with these options (the defaults' left out)."""
    import shlex

    words = ["temposplit", "models", "fixtures", "--out", str(out)]
    if start != DEFAULT_START:
        words += ["--start", str(start)]
    if count != DEFAULT_FRAMES:
        words += ["--frames", str(count)]
    return shlex.join(words)


COMMAND = command(DEFAULT_OUT)  # the committed fixtures'


def write_fixtures(out: Path, start: int = DEFAULT_START, count: int = DEFAULT_FRAMES, log=print) -> list[Path]:
    from temposplit.errors import ConfigError
    from temposplit.model import load_detector
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import read_video, vtest_path
    from temposplit.model.fingerprint import calibration_platform
    from temposplit.model.quantize import quantize

    if count < 1:
        raise ConfigError(f"frames must be at least 1, not {count}")
    # The frames first: a start past the end is an error now, not after calibrating.
    frames = list(read_video(vtest_path(), max_frames=count, start=start))
    if not frames:
        raise ConfigError(f"{vtest_path()} has no frame at or after --start {start}")
    if len(frames) < count:  # the command it records would say otherwise
        raise ConfigError(
            f"{vtest_path()} has only {len(frames)} frame(s) at or after --start {start}"
            f"; --frames {count} needs {count}"
        )
    det = load_detector()
    q = quantize(det, calibration_frames())
    batch = det.preprocess(frames)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from temposplit.files import output_file

    written, files = [], {}
    for cut in det.cuts:  # every file's arrays first: an error leaves the folder as it was
        split = q.split(cut.name)
        tensors = split.m1(batch.tensor)
        per_frame = [split.cut_tensors(tensors, i) for i in range(len(frames))]
        arrays: dict[str, np.ndarray] = {
            "frames": np.arange(start, start + len(frames)),
            "command": np.array(command(out, start, count)),
            "cut": np.array(cut.name),
            "platform": np.array(calibration_platform()),
        }
        for i, first in enumerate(per_frame[0]):
            c, h, w = first.shape
            keep = int(np.clip(CHANNEL_BUDGET // (h * w), 1, c))
            arrays[f"codes_{i}"] = np.stack([pf[i].codes[:keep] for pf in per_frame])
            arrays[f"scale_{i}"] = np.float64(first.scale)
            arrays[f"zero_point_{i}"] = np.int64(first.zero_point)
            arrays[f"name_{i}"] = np.array(first.name)
            arrays[f"shape_{i}"] = np.array(first.shape)
        files[out / f"ssd-{cut.name}.npz"] = arrays
    for path, arrays in files.items():
        with output_file(str(path)) as f:  # whole or not at all: an interrupt leaves the old file
            np.savez_compressed(f, **arrays)
        written.append(path)
        if log:
            log(f"{path} ({path.stat().st_size} bytes)")
    return written
