"""Block bootstrap over the consecutive scored frames of a clip.

Consecutive frames of a video are not independent (the same objects, the same errors), so
frames are resampled in blocks: a resample of n frames is ceil(n / L) blocks of L
consecutive frames, joined and cut to n. In the **moving-block** bootstrap (the default of
:func:`block_resamples`) each block starts at a uniformly drawn position in 0..n-L, so a
frame near either end of the clip is drawn less often than one in the middle (at n = 50,
L = 10 the first and the last frame have an expected weight of 0.12, a middle frame 1.22):
the resamples then scatter around a statistic that weighs the clip's middle more than the
point estimate does. The **circular** block bootstrap (``circular=True``, what the
evaluation's intervals use) draws a start anywhere in 0..n-1 and wraps the clip's end to
its start, so every frame has an expected weight of exactly 1.

One set of resamples is drawn per clip (a fixed seed, and for the evaluation's clips
:func:`clip_seed`, so that two clips of the same length are not resampled at the same
positions: the mean over clips needs the clips' resamples independent) and used for every
method of that clip (paired: a resample that happens to drop a hard stretch of the clip
drops it for every method, so differences between methods are not buried under the
clip's own noise). A statistic's 95 % interval is the 2.5th and 97.5th percentile of its
values over the resamples.

**Too few frames for an interval.** An interval needs at least :data:`MIN_BLOCKS` (2) whole
blocks of scored frames, ``n >= 2 * block`` (20 at the default block of 10:
:func:`enough_frames`). With one block or less every circular resample is the clip itself
rotated, each frame taken exactly once, so every resample equals the point estimate and
its "95 % interval" would be the point printed as if it were certain; between one and two
blocks a resample is nearly the whole clip. Below that the evaluation's summaries
(``summary.py``) give no interval and say :data:`TOO_FEW`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from temposplit.errors import ConfigError

__all__ = [
    "BLOCK",
    "MIN_BLOCKS",
    "REPLICATES",
    "SEED",
    "TOO_FEW",
    "block_resamples",
    "clip_seed",
    "enough_frames",
    "interval",
    "resample_weights",
]

BLOCK = 10  # scored frames per block (every frame scored: 1 s of vtest at 10 frames/s, 0.3-0.4 s at 25-30)
REPLICATES = 200
SEED = 20261130
LEVEL = 0.95
MIN_BLOCKS = 2  # whole blocks of scored frames an interval needs
TOO_FEW = "too few frames for an interval"


def enough_frames(n: int, block: int = BLOCK) -> bool:
    """Whether ``n`` scored frames hold the :data:`MIN_BLOCKS` whole blocks an interval needs
    (with fewer, every circular resample is about the clip itself: no interval, :data:`TOO_FEW`)."""
    return n >= MIN_BLOCKS * block


def clip_seed(clip: str) -> tuple[int, int]:
    """The seed of a clip's resamples: :data:`SEED` and the CRC-32 of its name (the same
    resamples on every run, other positions for another clip)."""
    return SEED, zlib.crc32(str(clip).encode("utf-8", "surrogatepass"))


def block_resamples(
    n: int,
    block: int = BLOCK,
    replicates: int = REPLICATES,
    seed: int | Sequence[int] = SEED,
    circular: bool = False,
) -> np.ndarray:
    """Indices (replicates, n) of block resamples of n consecutive frames: moving blocks
    (starts in 0..n-block), or with ``circular`` circular blocks (starts in 0..n-1, indices
    taken modulo n: every frame equally likely). With ``n <= block`` a circular resample is the
    clip rotated (every frame once): :func:`enough_frames` says whether the resamples can
    give an interval."""
    if n < 1:
        raise ConfigError(f"cannot resample {n} frames")
    if block < 1 or replicates < 1:
        raise ConfigError(f"block ({block}) and replicates ({replicates}) must be positive")
    block = min(block, n)
    count = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n if circular else n - block + 1, size=(replicates, count))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(replicates, count * block)
    return idx[:, :n] % n


def resample_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """How many times each of the n frames is taken in each resample: (replicates, n) integers."""
    indices = np.atleast_2d(indices)
    return np.stack([np.bincount(row, minlength=n) for row in indices])


def interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of a statistic's resampled values (NaNs dropped; NaN, NaN if
    fewer than half of the resamples gave a value)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.size < 0.5 * np.asarray(values).size:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
