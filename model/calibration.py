"""The fixed int8 calibration set: public photographs and a clip that is never evaluated.

Every int8 M1 (demo, edge, export, bench, evaluation) is calibrated on these frames by
default, so calibration never sees a frame that is scored. The files come from Debian's
``opencv-doc`` and ``labelme-examples`` (``temposplit fetch-data``, :mod:`.data`); the list,
with sources, sizes and why each is there, is in docs/models.md.

:func:`calibration_frames` returns RGB uint8 frames of different sizes (the detector's
preprocessing resizes each to its input): the photographs in the set's fixed order, then
``TREE_FRAMES`` frames of ``tree.avi`` spread over the clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temposplit.errors import ConfigError, MissingDependencyError

# tree.avi has 68 frames: frames 0, 16, 32, 48, 64 (the last two with a hand in front).
TREE_FRAMES = 5
TREE_STEP = 16


def calibration_sources(root: Path | None = None) -> list[tuple[str, Path, int | None]]:
    """(name, file, frame index or None for a photograph) of every calibration frame, in order."""
    from temposplit.model.data import calibration_paths

    out: list[tuple[str, Path, int | None]] = []
    for path in calibration_paths(root):
        if path.suffix == ".avi":
            out += [(f"{path.stem}#{i * TREE_STEP}", path, i * TREE_STEP) for i in range(TREE_FRAMES)]
        else:
            out.append((path.stem, path, None))
    return out


def _select(n: int, count: int | None) -> list[int]:
    """Indices of ``count`` frames spread evenly over the ``n`` of the set (all when None)."""
    if count is None:
        return list(range(n))
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"calibration count must be a positive integer, not {count!r}")
    if count >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, count)})


def calibration_frames(count: int | None = None, root: Path | None = None) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of the fixed calibration set, in a deterministic order.

    ``count``: None for the whole set; otherwise that many frames spread evenly over the
    set's order (so a small count still mixes photographs and the clip).
    """
    from temposplit.model.data import read_image, read_video

    sources = calibration_sources(root)
    missing = sorted({str(p) for _, p, _ in sources if not p.is_file()})
    if missing:
        raise MissingDependencyError(
            f"the calibration set is incomplete ({len(missing)} file(s) missing, e.g. {missing[0]}): "
            "run `make data` (temposplit fetch-data)"
        )
    chosen = [sources[i] for i in _select(len(sources), count)]
    frames: list[np.ndarray] = []
    clip_cache: dict[Path, dict[int, np.ndarray]] = {}
    for _name, path, index in chosen:
        if index is None:
            frames.append(read_image(path))
            continue
        if path not in clip_cache:
            wanted = {i for _, p, i in chosen if p == path}
            last = max(wanted)
            clip_cache[path] = {i: f for i, f in enumerate(read_video(path, max_frames=last + 1)) if i in wanted}
        frames.append(clip_cache[path][index])
    return frames


def folds(frames: list, k: int) -> list[list]:
    """``k`` calibration sets from ``frames``, fold ``r`` leaving out every frame ``i`` with
    ``i % k == r``: each keeps (k - 1) / k of the frames, and every frame is left out once.
    Scoring the int8 M1 of each measures how far the result moves with the calibration's
    data (docs/models.md, "calibration folds"); ``k`` = 1 is the whole set."""
    if k < 1 or (k > 1 and len(frames) < k):
        raise ConfigError(f"{k} calibration folds need at least {k} frames and k >= 1 (have {len(frames)})")
    if k == 1:
        return [list(frames)]
    return [[f for i, f in enumerate(frames) if i % k != r] for r in range(k)]
