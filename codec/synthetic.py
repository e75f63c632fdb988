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


def ctx_section_inputs(rng: np.random.Generator, n_bits: int, p: int, block: int, shape, per_channel: bool = False):
    """Random inputs of every kind of ``ctx`` section on one (H, W, C) map, for tests: a
    predicted frame with residual blocks (about half flagged) and without, an intra and a
    temporal anchor. Codes are random at N bits, the current frame keeping 60 % of the
    reference's; the first block moves by up to one cell down and right, the last up and
    left, when the map is larger than a block. Returns ``(kind, args)`` pairs, ``args`` as
    :func:`temposplit.codec.ctx.encode_pred` (kind ``pred``) or
    :func:`~temposplit.codec.ctx.encode_anchor` (``anchor``) take them."""
    from temposplit.codec import _kernels as K

    top = (1 << n_bits) - 1
    a = rng.integers(0, top + 1, shape).astype(np.uint8)
    b = np.where(rng.random(shape) < 0.6, a, rng.integers(0, top + 1, shape)).astype(np.uint8)
    nby, nbx = -(-shape[0] // block), -(-shape[1] // block)
    mvs = np.zeros((nby, nbx, shape[2] if per_channel else 1, 2), np.int8)
    if shape[0] > block and shape[1] > block:  # the first block down-right, the last up-left: inside
        mvs[0, 0] = rng.integers(0, 2, mvs.shape[2:])
        mvs[-1, -1] = -rng.integers(0, 2, mvs.shape[2:])
    if per_channel:
        pred, bad = K.compensate_per_channel(a, mvs, block)
    else:
        pred, bad = K.compensate_shared(a, mvs.reshape(nby, nbx, 2), block)
    assert bad < 0
    flags = rng.random((nby, nbx)) < 0.5
    recon = np.where(np.kron(flags, np.ones((block, block), bool))[: shape[0], : shape[1], None], b, pred)
    dref = rng.integers(-1, 2, shape).astype(np.int8)
    z_n = int(rng.integers(0, top + 2))  # z_N may be 2^N
    return [
        ("pred", (mvs, p, flags, pred, recon, dref, block, n_bits)),
        ("pred", (mvs, p, None, pred, pred, None, block, n_bits)),
        ("anchor", (b, None, None, n_bits, z_n)),
        ("anchor", (b, a, dref, n_bits, z_n)),
    ]
