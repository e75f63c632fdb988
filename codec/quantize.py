"""Requantization of quint8 codes to N bits, in integer arithmetic only (docs/bitstream.md, section 2).

With k = 8 - N and ``>>`` a flooring (arithmetic) shift::

    z_N = (z8 + 2^(k-1)) >> k                      (z_N = z8 when k = 0)
    q_N = clamp(((q8 - z8 + 2^(k-1)) >> k) + z_N, 0, 2^N - 1)
    s_N = s8 * 2^k

The dequantized value of an N-bit code is (q_N - z_N) * s_N. Note that z_N can equal
2^N (for z8 near 255): it is a reference point, not necessarily a code.
"""

from __future__ import annotations

import numpy as np

from temposplit.codec.errors import ConfigurationError

MIN_BITS = 2
MAX_BITS = 8


def check_bits(n_bits: int) -> int:
    if (
        isinstance(n_bits, (bool, np.bool_))
        or not isinstance(n_bits, (int, np.integer))
        or not MIN_BITS <= int(n_bits) <= MAX_BITS
    ):
        raise ConfigurationError(f"N (bits per code) must be an integer in {MIN_BITS}..{MAX_BITS}, not {n_bits!r}")
    return int(n_bits)


def check_zero_point(z8: int) -> int:
    if isinstance(z8, (bool, np.bool_)) or not isinstance(z8, (int, np.integer)) or not 0 <= int(z8) <= 255:
        raise ConfigurationError(f"the quint8 zero point must be an integer in 0..255, not {z8!r}")
    return int(z8)


def zero_point_n(z8: int, n_bits: int) -> int:
    """z_N for a quint8 zero point z8."""
    k = 8 - check_bits(n_bits)
    z8 = check_zero_point(z8)
    return z8 if k == 0 else (z8 + (1 << (k - 1))) >> k


def scale_n(s8: float, n_bits: int) -> float:
    """s_N = s8 * 2^(8-N)."""
    return float(s8) * float(1 << (8 - check_bits(n_bits)))


def requantize(q8: np.ndarray, z8: int, n_bits: int) -> np.ndarray:
    """Requantize quint8 codes (any shape, dtype uint8) to N-bit codes (uint8)."""
    q8 = np.asarray(q8)
    if q8.dtype != np.uint8:
        raise ConfigurationError(f"quint8 codes must have dtype uint8, not {q8.dtype}")
    n_bits = check_bits(n_bits)
    k = 8 - n_bits
    if k == 0:
        return q8.copy()
    z_n = zero_point_n(z8, n_bits)
    shifted = (q8.astype(np.int16) - np.int16(z8) + np.int16(1 << (k - 1))) >> k  # numpy >> floors
    return np.clip(shifted + z_n, 0, (1 << n_bits) - 1).astype(np.uint8)


def hold_tables(z8: int, n_bits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The two 256-entry tables of :func:`hold`: the codes of max(0, v - m) and min(255, v + m)."""
    v = np.arange(256)
    table = lut(z8, n_bits)
    return table[np.maximum(0, v - m)], table[np.minimum(255, v + m)]


def hold(q8: np.ndarray, q_n: np.ndarray, prev_n: np.ndarray, z8: int, n_bits: int, m: int) -> np.ndarray:
    """Flicker hysteresis (an encoder decision; docs/bitstream.md, section 5): each element
    keeps the previous code ``prev_n`` while some 8-bit value within ``m`` steps of its own
    ``q8`` requantizes to it -- the previous code's cell widened by m steps on each side
    holds q8 -- and takes its fresh code ``q_n`` otherwise. The requantizer is monotonic, so
    that is requantize(max(0, q8 - m)) <= prev_n <= requantize(min(255, q8 + m)). m = 0 keeps
    ``q_n`` (the only code whose cell holds q8)."""
    lo, hi = hold_tables(z8, n_bits, m)
    keep = (lo[q8] <= prev_n) & (prev_n <= hi[q8])
    return np.where(keep, prev_n, q_n).astype(np.uint8)


def lut(z8: int, n_bits: int) -> np.ndarray:
    """The requantizer as a 256-entry table: ``lut(z8, n)[q8] == requantize(q8, z8, n)``."""
    return requantize(np.arange(256, dtype=np.uint8), z8, n_bits)


def dequantize(q_n: np.ndarray, s8: float, z8: int, n_bits: int) -> np.ndarray:
    """Float32 values (q_N - z_N) * s_N of N-bit codes: finite at every N for a scale a stream
    carries (s8 < 2^120, docs/bitstream.md section 2: |q_N - z_N| * s_N <= 256 * s8)."""
    z_n = zero_point_n(z8, n_bits)
    return ((np.asarray(q_n).astype(np.float32) - np.float32(z_n)) * np.float32(scale_n(s8, n_bits))).astype(np.float32)


def to_quint8(q_n: np.ndarray, z8: int, n_bits: int) -> np.ndarray:
    """Map N-bit codes back onto the 8-bit grid: ((q_N - z_N) << k) + z8, clamped to 0..255.

    With scale s8 and zero point z8 these codes dequantize to the same values as the
    N-bit codes, except where the clamp bites (only at the ends of the range).
    """
    n_bits = check_bits(n_bits)
    k = 8 - n_bits
    z_n = zero_point_n(z8, n_bits)
    v = ((np.asarray(q_n).astype(np.int16) - np.int16(z_n)) << k) + np.int16(z8)
    return np.clip(v, 0, 255).astype(np.uint8)


def centred(q_n: np.ndarray, z8: int, n_bits: int) -> np.ndarray:
    """((q_N - z_N) << k) as int16: an N-bit code on the 8-bit grid, centred on zero.

    The TSS cost compares this with (c8 - z8) of the current frame.
    """
    n_bits = check_bits(n_bits)
    k = 8 - n_bits
    z_n = zero_point_n(z8, n_bits)
    return (np.asarray(q_n).astype(np.int16) - np.int16(z_n)) << k
