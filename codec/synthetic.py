"""Temporally correlated synthetic feature maps, for tests and benchmarks.

Random codes give meaningless sizes; these look like post-ReLU activations (smooth,
partly zero) moving a little frame to frame, with sensor-like noise.
"""

from __future__ import annotations

import numpy as np


def correlated_clip(
    rng: np.random.Generator,
    n_frames: int,
    shape,
    dy: int = 0,
    dx: int = 1,
    noise: float = 2.0,
    zero_fraction: float = 0.5,
) -> list[np.ndarray]:
    """``n_frames`` quint8 maps of shape (C, H, W): one smooth map shifted by (dy, dx) per frame."""
    c, h, w = shape
    pad = n_frames * max(abs(dy), abs(dx)) + 2
    base = rng.normal(0, 1, (c, h + 2 * pad, w + 2 * pad)).astype(np.float32)
    for _ in range(3):  # spatial correlation over a few cells, as in real activations
        base = (base + np.roll(base, 1, 1) + np.roll(base, -1, 1) + np.roll(base, 1, 2) + np.roll(base, -1, 2)) / 5
    base /= base.std() + 1e-9
    cut = np.quantile(base[:, :: max(1, h // 16), :: max(1, w // 16)], zero_fraction)
    base = np.maximum(base - cut, 0) * 60
    frames = []
    for f in range(n_frames):
        y, x = pad + f * dy, pad + f * dx
        m = base[:, y : y + h, x : x + w] + rng.normal(0, noise, (c, h, w)).astype(np.float32) + 3
        frames.append(np.clip(np.rint(m), 0, 255).astype(np.uint8))
    return frames
