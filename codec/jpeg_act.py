"""JPEG-ACT (Evans, Liu, Aamodt, ISCA 2020) applied to a cut tensor: the transform-coding baseline.

The method, step by step (restated in docs/baselines.md, "JPEG-ACT"):

1. Fixed point "fix35": ``f = clip(rint(x * 32), -128, 127)`` (3 integer, 5 fraction bits).
   Beyond the method, ``frac_bits`` picks another split of the 8 bits (``x * 2**frac_bits``)
   for tensors whose range passes [-4, 4); the default is 5.
2. Unsigned (post-ReLU) tensors: the zeros of ``f`` (exact zeros, and positives below 1/64
   that round to zero) become -40 before the transform, so a ReLU's zero plateau sits far
   below the non-zero values; after decoding, negatives are clamped back to 0.
3. Layout: the ``(N, C, H, W)`` tensor (``(C, H, W)`` is N = 1) viewed as one tall image
   of shape ``(N*C*H, W)``, zero-padded at the bottom and right to multiples of 8. Blocks
   are taken in raster order of the padded image (block rows, then block columns).
4. Transform: the orthonormal separable 8x8 DCT-II, ``Y = D B D^T``, rounded to integers
   (``numpy.rint``, ties to even).
5. Quantization: truncating division by a table entry (row-major 8x8),
   ``q = sign(Y) * (|Y| // T)``, saturated to int8 (the method's 8-bit datapath; the
   count of saturated coefficients is reported). Dequantization is ``q * T``.
6. Entropy coding of the int8 coefficients, one of

   * ``"zvc"``: zero-value compression: a bitmask of one bit per coefficient (1 =
     non-zero), then the non-zero coefficients as int8 bytes. The coefficients are taken
     block by block, each block in zig-zag order. Size: ``ceil(n_coefficients / 8) +
     n_nonzero`` bytes, exactly.
   * ``"jpeg"``: JPEG-style run-length + Huffman. Each block in zig-zag order (the DC
     coefficient is coded like the others, not differentially) becomes symbols
     ``(run << 4) | size``: ``run`` zeros (0..15) before a non-zero value whose magnitude
     has ``size`` bits (1..8), followed by ``size`` amplitude bits (JPEG's convention:
     ``v`` if ``v > 0``, else ``v + 2**size - 1``). ``0xF0`` (ZRL) stands for 16 zeros,
     ``0x00`` (EOB) ends a block whose remaining coefficients are zero (omitted when the
     block's last coefficient is non-zero). One Huffman table per tensor, built from the
     tensor's own symbol histogram (optimal with code lengths limited to 16 bits:
     package-merge), canonical codes.

Byte layout of :attr:`JpegActCompressed.data` (all of it counts in ``nbytes``)::

    zvc:   mask[ceil(n/8)]  values[n_nonzero]          mask bits MSB first, 1 = non-zero
    jpeg:  counts[16]  symbols[sum(counts)]  bits[...]  counts[i] = number of codes of
                                                         length i+1; symbols sorted by
                                                         (length, symbol value); codes
                                                         canonical, bits MSB first,
                                                         the last byte padded with 0s

The shape, the table name, the coder and the unsigned flag are metadata the receiver knows
from the stream header; they are not counted. ``n`` is the number of coefficients of the
padded image (64 per block).

Quantization tables: ``optL`` and ``optH`` (the paper's optimized tables), their
power-of-two variants ``optsL`` and ``optsH`` (``2**rint(log2(entry))``), and ``jpegQ``
for Q in 1..100, the JPEG luminance table scaled by quality (``scale = 50/Q`` for Q < 50,
else ``2 - Q/50``; entries ``floor(T * scale + 0.5)`` clipped to 1..255).

Depends on numpy, numba and the codec's own errors and Huffman code lengths, nothing else.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from numba import njit

from temposplit.codec._kernels import write_fields
from temposplit.codec.errors import ConfigurationError
from temposplit.codec.huffman import canonical_codes, package_merge

__all__ = [
    "CODERS",
    "TABLE_NAMES",
    "JpegActCompressed",
    "compress",
    "decode_coefficients",
    "decompress",
    "encode_coefficients",
    "n_blocks",
    "quant_table",
    "quantized_coefficients",
    "reconstruct",
]

FRACTION_BITS = 5  # fix35: x * 32 (the method's; other values are an extension, see compress)
ZERO_SHIFT = -40  # where an unsigned tensor's zeros go before the transform
BLOCK = 8
MAX_CODE_LENGTH = 16
CODERS = ("jpeg", "zvc")
# Sanity limit on what one call may allocate (a 200x272x2048 float tensor is 111 M elements).
MAX_ELEMENTS = 1 << 28

_OPT_L = np.array(
    [
        [8, 7, 7, 7, 7, 6, 6, 6],
        [8, 7, 7, 7, 6, 6, 6, 6],
        [7, 7, 6, 6, 6, 6, 6, 6],
        [7, 6, 6, 6, 6, 6, 5, 5],
        [7, 6, 6, 6, 6, 6, 5, 5],
        [7, 6, 6, 6, 6, 6, 5, 5],
        [7, 6, 6, 6, 6, 5, 5, 5],
        [6, 6, 6, 6, 5, 5, 5, 5],
    ],
    np.int32,
)
_OPT_H = np.array(
    [
        [8, 26, 25, 25, 24, 24, 23, 22],
        [26, 24, 24, 23, 22, 22, 21, 20],
        [26, 24, 24, 23, 22, 21, 20, 20],
        [25, 23, 23, 22, 21, 21, 20, 19],
        [25, 23, 22, 21, 21, 20, 19, 19],
        [24, 22, 21, 20, 20, 20, 19, 19],
        [23, 21, 20, 20, 19, 19, 19, 19],
        [22, 20, 20, 19, 19, 19, 19, 19],
    ],
    np.int32,
)
# ITU-T T.81 Annex K, table K.1.
_JPEG_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.int32,
)
TABLE_NAMES = ("optL", "optH", "optsL", "optsH", "jpeg1..jpeg100")


def _zigzag() -> np.ndarray:
    """Raster index (row * 8 + col) of each zig-zag position."""
    order = sorted(
        ((r, c) for r in range(BLOCK) for c in range(BLOCK)),
        key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]),
    )
    return np.array([r * BLOCK + c for r, c in order], np.int64)


ZIGZAG = _zigzag()


def _dct_matrix() -> np.ndarray:
    k = np.arange(BLOCK)[:, None]
    n = np.arange(BLOCK)[None, :]
    d = np.sqrt(2.0 / BLOCK) * np.cos(np.pi * (2 * n + 1) * k / (2 * BLOCK))
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix()


# --------------------------------------------------------------------------- tables


def quant_table(name: str) -> np.ndarray:
    """The 8x8 quantization table (int32, row-major) called ``name``.

    Raises
    ------
    ValueError
        ``name`` is not one of ``optL``, ``optH``, ``optsL``, ``optsH``, ``jpeg1``..``jpeg100``.
    """
    if name == "optL":
        return _OPT_L.copy()
    if name == "optH":
        return _OPT_H.copy()
    if name in ("optsL", "optsH"):
        base = _OPT_L if name == "optsL" else _OPT_H
        return (2 ** np.rint(np.log2(base))).astype(np.int32)
    match = re.fullmatch(r"jpeg(\d{1,3})", name) if isinstance(name, str) else None
    if match and 1 <= int(match.group(1)) <= 100:
        q = int(match.group(1))
        scale = 50.0 / q if q < 50 else 2.0 - q / 50.0
        return np.clip(np.floor(_JPEG_LUMINANCE * scale + 0.5), 1, 255).astype(np.int32)
    raise ConfigurationError(f"unknown JPEG-ACT quantization table {name!r}: use one of {', '.join(TABLE_NAMES)}")


def _check_coder(coder: str) -> str:
    if coder not in CODERS:
        raise ConfigurationError(f"unknown JPEG-ACT coder {coder!r}: use one of {', '.join(CODERS)}")
    return coder


# --------------------------------------------------------------------------- geometry and transform


def _check_shape(shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ConfigurationError(f"JPEG-ACT takes a (C, H, W) or (N, C, H, W) tensor, not {len(shape)}-D {shape}")
    if min(shape) < 1:
        raise ConfigurationError(f"every dimension must be at least 1, not {shape}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ConfigurationError(f"tensor of {math.prod(shape)} elements is over the limit of {MAX_ELEMENTS}")
    return shape


def _padded(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(rows, cols, padded rows, padded cols) of the tall image."""
    rows = math.prod(shape[:-1])
    cols = shape[-1]
    return rows, cols, -(-rows // BLOCK) * BLOCK, -(-cols // BLOCK) * BLOCK


def n_blocks(shape) -> int:
    """Number of 8x8 blocks of the padded tall image of a tensor of this shape."""
    _, _, prows, pcols = _padded(_check_shape(shape))
    return (prows // BLOCK) * (pcols // BLOCK)


def _check_tensor(x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ConfigurationError(f"JPEG-ACT takes a numpy array, not {type(x).__name__}")
    if x.dtype != np.float32:
        raise ConfigurationError(f"JPEG-ACT takes a float32 tensor, not {x.dtype}")
    _check_shape(x.shape)
    if not np.isfinite(x).all():
        raise ConfigurationError("the tensor holds NaN or infinite values")
    return x


def _check_frac_bits(frac_bits: int) -> int:
    if not isinstance(frac_bits, (int, np.integer)) or not 0 <= frac_bits <= 7:
        raise ConfigurationError(f"frac_bits must be an integer in 0..7, not {frac_bits!r}")
    return int(frac_bits)


def _forward(x: np.ndarray, table: np.ndarray, unsigned: bool, frac_bits: int) -> tuple[np.ndarray, int, int]:
    """Quantized int8 coefficients (n_blocks, 64) in raster order, with the clip counts."""
    scaled = np.rint(x * np.float32(1 << frac_bits))
    n_clipped = int(np.count_nonzero((scaled < -128) | (scaled > 127)))
    fixed = np.clip(scaled, -128, 127).astype(np.int16)
    if unsigned:
        fixed[fixed == 0] = ZERO_SHIFT
    rows, cols, prows, pcols = _padded(x.shape)
    image = np.zeros((prows, pcols), np.float64)
    image[:rows, :cols] = fixed.reshape(rows, cols)
    blocks = image.reshape(prows // BLOCK, BLOCK, pcols // BLOCK, BLOCK).transpose(0, 2, 1, 3)
    coef = np.rint(_DCT @ blocks @ _DCT.T).astype(np.int32)
    q = np.sign(coef) * (np.abs(coef) // table)
    n_saturated = int(np.count_nonzero((q < -128) | (q > 127)))
    return np.clip(q, -128, 127).astype(np.int8).reshape(-1, BLOCK * BLOCK), n_clipped, n_saturated


def _resolve_unsigned(x: np.ndarray, unsigned: bool | None) -> bool:
    if unsigned is None:
        return bool((x >= 0).all())
    if not isinstance(unsigned, (bool, np.bool_)):
        raise ConfigurationError(f"unsigned must be True, False or None, not {unsigned!r}")
    if unsigned and (x < 0).any():
        raise ConfigurationError("unsigned=True but the tensor has negative values")
    return bool(unsigned)


def quantized_coefficients(
    x: np.ndarray, table: str = "optL", unsigned: bool | None = None, frac_bits: int = FRACTION_BITS
) -> np.ndarray:
    """The quantized int8 DCT coefficients of ``x``, shape (n_blocks, 64), each block row-major.

    This is everything :func:`compress` does before entropy coding; ``unsigned=None``
    means "unsigned if no element is negative".
    """
    x = _check_tensor(x)
    return _forward(x, quant_table(table), _resolve_unsigned(x, unsigned), _check_frac_bits(frac_bits))[0]


def reconstruct(
    q: np.ndarray, shape, table: str = "optL", unsigned: bool = False, frac_bits: int = FRACTION_BITS
) -> np.ndarray:
    """The float32 tensor of ``shape`` rebuilt from quantized coefficients (n_blocks, 64)."""
    shape = _check_shape(shape)
    t = quant_table(table)
    rows, cols, prows, pcols = _padded(shape)
    nby, nbx = prows // BLOCK, pcols // BLOCK
    q = np.asarray(q)
    if q.shape != (nby * nbx, BLOCK * BLOCK):
        raise ConfigurationError(f"coefficients of shape {q.shape} do not fit a tensor of shape {shape}")
    coef = (q.astype(np.int32).reshape(nby, nbx, BLOCK, BLOCK) * t).astype(np.float64)
    blocks = np.clip(np.rint(_DCT.T @ coef @ _DCT), -128, 127)
    image = blocks.transpose(0, 2, 1, 3).reshape(prows, pcols)[:rows, :cols]
    if unsigned:
        image = np.maximum(image, 0)
    return (image.astype(np.float32) / np.float32(1 << _check_frac_bits(frac_bits))).reshape(shape)


# --------------------------------------------------------------------------- Huffman tables


def _table_order(lengths: np.ndarray) -> np.ndarray:
    """The used symbols in canonical order: by code length, then by symbol value."""
    used = np.flatnonzero(lengths)
    return used[np.argsort(lengths[used], kind="stable")]


def _decode_tables(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symbol and code length for every 16-bit window (length 0: no code prefixes it)."""
    used = np.flatnonzero(lengths)
    if np.sum(np.int64(1) << (MAX_CODE_LENGTH - lengths[used])) > (1 << MAX_CODE_LENGTH):
        raise ConfigurationError("the Huffman code lengths are over-subscribed (not a prefix code)")
    codes = canonical_codes(lengths)
    lut_symbol = np.zeros(1 << MAX_CODE_LENGTH, np.uint8)
    lut_length = np.zeros(1 << MAX_CODE_LENGTH, np.int64)
    for s in used:
        shift = MAX_CODE_LENGTH - int(lengths[s])
        start = int(codes[s]) << shift
        lut_symbol[start : start + (1 << shift)] = s
        lut_length[start : start + (1 << shift)] = lengths[s]
    return lut_symbol, lut_length


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _rle_symbols(qzz):
    """Run-length symbols and amplitudes of int8 blocks in zig-zag order (n_blocks, 64)."""
    nb = qzz.shape[0]
    symbols = np.empty(nb * 68, np.uint8)  # at most 64 values + 3 ZRL + EOB per block
    amplitudes = np.zeros(nb * 68, np.int32)
    m = 0
    for b in range(nb):
        last = -1
        for k in range(63, -1, -1):
            if qzz[b, k] != 0:
                last = k
                break
        run = 0
        for k in range(last + 1):
            v = np.int32(qzz[b, k])
            if v == 0:
                run += 1
                continue
            while run > 15:
                symbols[m] = 0xF0
                m += 1
                run -= 16
            mag = abs(v)
            size = 0
            while mag:
                size += 1
                mag >>= 1
            symbols[m] = (run << 4) | size
            amplitudes[m] = v if v > 0 else v + (1 << size) - 1
            m += 1
            run = 0
        if last < 63:
            symbols[m] = 0x00
            m += 1
    return symbols[:m], amplitudes[:m]


# Decoder status codes (0 = fine).
_ERR_TRUNCATED = 1
_ERR_BAD_CODE = 2
_ERR_BAD_SYMBOL = 3
_ERR_OVERRUN = 4
_ERR_TRAILING = 5
_DECODE_ERRORS = {
    _ERR_TRUNCATED: "the Huffman bit stream ends before the last block",
    _ERR_BAD_CODE: "a bit pattern is not a code of the Huffman table",
    _ERR_BAD_SYMBOL: "a run-length symbol is invalid (size 0 other than EOB/ZRL, or size over 8)",
    _ERR_OVERRUN: "a block's run-length symbols go past its 64 coefficients",
    _ERR_TRAILING: "bytes are left over after the last block",
}


@njit(cache=True, nogil=True)
def _unpack(bits, lut_symbol, lut_length, nb, out):
    """Decode ``nb`` blocks into ``out`` (nb, 64) int8, zig-zag order; returns a status code."""
    total = bits.size * 8
    pos = 0
    for b in range(nb):
        k = 0
        while k < 64:
            # Peek 16 bits (zeros past the end; the position check below catches over-reads).
            window = 0
            for j in range(3):
                byte_index = (pos >> 3) + j
                window = (window << 8) | (np.int64(bits[byte_index]) if byte_index < bits.size else 0)
            window = (window >> (8 - (pos & 7))) & 0xFFFF
            length = lut_length[window]
            if length == 0:
                return _ERR_BAD_CODE
            pos += length
            if pos > total:
                return _ERR_TRUNCATED
            s = lut_symbol[window]
            if s == 0x00:
                break
            if s == 0xF0:
                k += 16
                if k >= 64:
                    return _ERR_OVERRUN
                continue
            size = s & 15
            if size == 0 or size > 8:
                return _ERR_BAD_SYMBOL
            k += s >> 4
            if k >= 64:
                return _ERR_OVERRUN
            if pos + size > total:
                return _ERR_TRUNCATED
            amp = 0
            for _ in range(size):
                amp = (amp << 1) | ((np.int64(bits[pos >> 3]) >> (7 - (pos & 7))) & 1)
                pos += 1
            v = amp if amp >= (1 << (size - 1)) else amp - (1 << size) + 1
            if v < -128 or v > 127:
                return _ERR_BAD_SYMBOL
            out[b, k] = v
            k += 1
    if (pos + 7) // 8 != bits.size:
        return _ERR_TRAILING
    return 0


# --------------------------------------------------------------------------- entropy layer


def _check_coefficients(q) -> np.ndarray:
    q = np.asarray(q)
    if q.dtype != np.int8 or q.ndim != 2 or q.shape[1] != BLOCK * BLOCK:
        raise ConfigurationError(f"coefficients must be int8 of shape (n_blocks, 64), not {q.dtype} {q.shape}")
    return q


def encode_coefficients(q: np.ndarray, coder: str = "jpeg") -> bytes:
    """Entropy code int8 coefficients (n_blocks, 64), each block row-major (see the module's layout)."""
    coder = _check_coder(coder)
    qzz = np.ascontiguousarray(_check_coefficients(q)[:, ZIGZAG])
    if coder == "zvc":
        flat = qzz.reshape(-1)
        mask = flat != 0
        return np.packbits(mask).tobytes() + flat[mask].tobytes()
    symbols, amplitudes = _rle_symbols(qzz)
    freq = np.bincount(symbols, minlength=256)
    lengths = package_merge(freq, MAX_CODE_LENGTH).astype(np.int64)
    codes = canonical_codes(lengths).astype(np.int64)
    # Fields in stream order: each symbol's code, then its amplitude bits (width 0 for EOB/ZRL).
    values = np.empty(2 * symbols.size, np.int64)
    widths = np.empty(2 * symbols.size, np.int64)
    values[0::2], widths[0::2] = codes[symbols], lengths[symbols]
    values[1::2], widths[1::2] = amplitudes, symbols & 15
    bits, _ = write_fields(values, widths)
    counts = np.bincount(lengths, minlength=MAX_CODE_LENGTH + 1)[1:].astype(np.uint8)
    return counts.tobytes() + _table_order(lengths).astype(np.uint8).tobytes() + bits.tobytes()


def decode_coefficients(data: bytes, coder: str, n_blocks: int) -> np.ndarray:
    """Inverse of :func:`encode_coefficients`: int8 (n_blocks, 64), each block row-major.

    Raises
    ------
    ValueError
        The bytes are not a valid stream of ``n_blocks`` blocks for ``coder``.
    """
    coder = _check_coder(coder)
    if not isinstance(n_blocks, (int, np.integer)) or not 0 < n_blocks <= MAX_ELEMENTS // 64:
        raise ConfigurationError(f"n_blocks must be an integer in 1..{MAX_ELEMENTS // 64}, not {n_blocks!r}")
    buf = np.frombuffer(bytes(data), np.uint8)
    n = int(n_blocks) * BLOCK * BLOCK
    qzz = np.zeros((int(n_blocks), BLOCK * BLOCK), np.int8)
    if coder == "zvc":
        nmask = -(-n // 8)
        if buf.size < nmask:
            raise ConfigurationError(f"ZVC stream of {buf.size} bytes is shorter than its {nmask}-byte mask")
        mask = np.unpackbits(buf[:nmask], count=n).astype(bool)
        if np.unpackbits(buf[:nmask])[n:].any():
            raise ConfigurationError("ZVC mask has bits set past the last coefficient")
        nnz = int(np.count_nonzero(mask))
        if buf.size != nmask + nnz:
            raise ConfigurationError(f"ZVC stream has {buf.size - nmask} value bytes for {nnz} non-zero coefficients")
        values = buf[nmask:].view(np.int8)
        if (values == 0).any():
            raise ConfigurationError("ZVC stream holds a zero value where the mask says non-zero")
        qzz.reshape(-1)[mask] = values
    else:
        if buf.size < MAX_CODE_LENGTH:
            raise ConfigurationError("Huffman stream is shorter than its 16-byte table header")
        counts = buf[:MAX_CODE_LENGTH].astype(np.int64)
        nsym = int(counts.sum())
        if not 0 < nsym <= 256 or buf.size < MAX_CODE_LENGTH + nsym:
            raise ConfigurationError(f"Huffman table announces {nsym} symbols for a {buf.size}-byte stream")
        table_symbols = buf[MAX_CODE_LENGTH : MAX_CODE_LENGTH + nsym]
        if np.unique(table_symbols).size != nsym:
            raise ConfigurationError("Huffman table lists a symbol twice")
        lengths = np.zeros(256, np.int64)
        lengths[table_symbols] = np.repeat(np.arange(1, MAX_CODE_LENGTH + 1), counts)
        if not np.array_equal(table_symbols, _table_order(lengths)):
            raise ConfigurationError("Huffman table symbols are not in canonical (length, symbol) order")
        lut_symbol, lut_length = _decode_tables(lengths)
        status = _unpack(buf[MAX_CODE_LENGTH + nsym :], lut_symbol, lut_length, int(n_blocks), qzz)
        if status:
            raise ConfigurationError(f"corrupt JPEG-ACT stream: {_DECODE_ERRORS[status]}")
    q = np.empty_like(qzz)
    q[:, ZIGZAG] = qzz
    return q


# --------------------------------------------------------------------------- API


@dataclass(frozen=True)
class JpegActCompressed:
    """A JPEG-ACT coded tensor: the bytes and what the receiver knows from the stream header.

    Attributes
    ----------
    data : bytes
        The coded coefficients (layout in the module docstring); ``nbytes`` is its length.
    shape : tuple of int
        The tensor's shape, (C, H, W) or (N, C, H, W).
    table, coder : str
        The quantization table and the entropy coder.
    unsigned : bool
        Whether the zero shift and the clamp at 0 were applied.
    frac_bits : int
        Fraction bits of the fixed point (5: the method's fix35).
    n_clipped : int
        Input elements outside the fixed point's range (fix35: [-4, 127/32]), saturated.
    n_saturated : int
        Quantized coefficients outside int8, saturated.
    """

    data: bytes
    shape: tuple[int, ...]
    table: str
    coder: str
    unsigned: bool
    frac_bits: int = FRACTION_BITS
    n_clipped: int = 0
    n_saturated: int = 0

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_blocks(self) -> int:
        return n_blocks(self.shape)

    @property
    def bits_per_element(self) -> float:
        return 8.0 * self.nbytes / self.n_elements


def compress(
    x: np.ndarray,
    table: str = "optL",
    coder: str = "jpeg",
    unsigned: bool | None = None,
    frac_bits: int = FRACTION_BITS,
) -> JpegActCompressed:
    """JPEG-ACT code a float32 tensor (C, H, W) or (N, C, H, W).

    ``unsigned=None`` treats the tensor as unsigned (post-ReLU) when no element is negative.
    ``frac_bits`` is the fixed point's fraction (5, fix35, is the method); fewer bits widen
    its range for tensors past [-4, 4) (the SSD's default cut reaches +-19, where fix35
    clips 15 % of the values), at a coarser step. ``n_clipped`` of the result says how
    many elements the fixed point clipped.

    Raises
    ------
    ValueError
        Not a finite float32 3-D or 4-D array, an unknown table or coder, or unsigned=True
        with negative values.
    """
    x = _check_tensor(x)
    t = quant_table(table)
    coder = _check_coder(coder)
    unsigned = _resolve_unsigned(x, unsigned)
    frac_bits = _check_frac_bits(frac_bits)
    q, n_clipped, n_saturated = _forward(x, t, unsigned, frac_bits)
    return JpegActCompressed(
        data=encode_coefficients(q, coder),
        shape=tuple(int(s) for s in x.shape),
        table=table,
        coder=coder,
        unsigned=unsigned,
        frac_bits=frac_bits,
        n_clipped=n_clipped,
        n_saturated=n_saturated,
    )


def decompress(c: JpegActCompressed) -> np.ndarray:
    """The float32 tensor rebuilt from :func:`compress`'s output (its original shape)."""
    if not isinstance(c, JpegActCompressed):
        raise ConfigurationError(f"decompress takes a JpegActCompressed, not {type(c).__name__}")
    shape = _check_shape(c.shape)
    q = decode_coefficients(c.data, c.coder, n_blocks(shape))
    return reconstruct(q, shape, c.table, bool(c.unsigned), c.frac_bits)
