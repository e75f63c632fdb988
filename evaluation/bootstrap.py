"""Moving-block bootstrap over the consecutive scored frames of a clip.

Consecutive frames of a video are not independent (the same objects, the same errors), so
frames are resampled in blocks: a resample of n frames is ceil(n / L) blocks of L
consecutive frames, each starting at a uniformly drawn position in 0..n-L, joined and cut
to n. One set of resamples is drawn per clip (a fixed seed) and used for every method
(paired: a resample that happens to drop a hard stretch of the clip drops it for every
method, so differences between methods are not buried under the clip's own noise). A
statistic's 95 % interval is the 2.5th and 97.5th percentile of its values over the
resamples.
"""

from __future__ import annotations

import math

import numpy as np

from temposplit.errors import ConfigError

__all__ = ["BLOCK", "REPLICATES", "SEED", "block_resamples", "interval", "resample_weights"]

BLOCK = 10  # frames per block (1 s of vtest at 10 frames/s; 0.3-0.4 s of the other clips)
REPLICATES = 200
SEED = 20261130
LEVEL = 0.95


def block_resamples(n: int, block: int = BLOCK, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """Indices (replicates, n) of moving-block resamples of n consecutive frames."""
    if n < 1:
        raise ConfigError(f"cannot resample {n} frames")
    if block < 1 or replicates < 1:
        raise ConfigError(f"block ({block}) and replicates ({replicates}) must be positive")
    block = min(block, n)
    count = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(replicates, count))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(replicates, count * block)
    return idx[:, :n]


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
