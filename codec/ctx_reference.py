"""The readable definition of the v2 coder ``ctx`` (docs/bitstream.md, section 6.2).

Plain Python integers, one bin at a time, written to be read next to the
specification: the compiled kernels (:mod:`temposplit.codec._ctx_kernels`) and the
fabric must give the same bytes. Slow (a few microseconds a bin): for tests and for
reading, not for coding video.
"""

from __future__ import annotations

import numpy as np

PROB_BITS = 12  # probabilities in units of 1/4096
TOP = 1 << 24  # renormalize while the range is below this
UNARY_MAX = 14  # magnitude bins before the fixed-width suffix
COUNT_MAX = 62
SLACK = 8  # a decoder that reads more than this many bytes past a section's end stops: too short

# Context table layout (6.2.5): first index of each group.
INTRA_ZERO, INTRA_SIGN, INTRA_MAG = 0, 25, 34
TEMP_ZERO, TEMP_SIGN, TEMP_MAG = 54, 246, 390
MV_ZERO, MV_SIGN, MV_MAG = 406, 410, 412
FLAG = 420
RES_ZERO = 423  # the zero bins of a predicted frame's residual elements
N_CONTEXTS = 459


class Context:
    """An adaptive binary probability (6.2.2)."""

    def __init__(self) -> None:
        self.prob = 2048  # probability of a 0 bin, 1..4095
        self.n = 0  # bins coded, saturating at COUNT_MAX

    def update(self, bit: int) -> None:
        s = min(6, (self.n + 2).bit_length() - 1)  # floor(log2(n + 2))
        if bit == 0:
            self.prob += (4096 - self.prob) >> s
        else:
            self.prob -= self.prob >> s
        self.n = min(self.n + 1, COUNT_MAX)


class RangeEncoder:
    """LZMA's range encoder: 33-bit low, 32-bit range, a held-back byte for carries (6.2.1)."""

    def __init__(self) -> None:
        self.low = 0
        self.range = 0xFFFFFFFF
        self.cache = 0
        self.pending = 1
        self.out = bytearray()

    def bit(self, ctx: Context | None, b: int) -> None:
        """Code bin ``b`` with a context, or as a bypass bin (ctx None: p = 2048, no update)."""
        p = 2048 if ctx is None else ctx.prob
        bound = (self.range >> PROB_BITS) * p
        if b == 0:
            self.range = bound
        else:
            self.low += bound
            self.range -= bound
        if ctx is not None:
            ctx.update(b)
        while self.range < TOP:
            self.range <<= 8
            self._shift_low()

    def _shift_low(self) -> None:
        if self.low < 0xFF000000 or self.low >= 1 << 32:
            carry = self.low >> 32
            self.out.append((self.cache + carry) & 0xFF)
            for _ in range(self.pending - 1):
                self.out.append((0xFF + carry) & 0xFF)
            self.pending = 0
            self.cache = (self.low >> 24) & 0xFF
        self.pending += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        assert self.out[0] == 0  # the first byte is always 0 and is not written
        return bytes(self.out[1:])


class RangeDecoder:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.range = 0xFFFFFFFF
        self.code = 0
        for _ in range(4):
            self.code = (self.code << 8) | self._byte()
        if self.code >= self.range:
            raise ValueError("a ctx section does not start with a valid code value")

    def _byte(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0  # past the end: 0, counted
        self.pos += 1
        return b

    def bit(self, ctx: Context | None) -> int:
        p = 2048 if ctx is None else ctx.prob
        bound = (self.range >> PROB_BITS) * p
        if self.code < bound:
            b = 0
            self.range = bound
        else:
            b = 1
            self.code -= bound
            self.range -= bound
        if ctx is not None:
            ctx.update(b)
        while self.range < TOP:
            self.range <<= 8
            self.code = (self.code << 8) | self._byte()
        if self.pos > len(self.data) + SLACK:  # checked at each renormalization: work bounded by the bytes
            raise ValueError(f"a ctx section of {len(self.data)} bytes ends before the values it must hold")
        return b

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"a ctx section of {len(self.data)} bytes was read to byte {self.pos}")


# ----------------------------------------------------------------------------- binarization (6.2.4)


def encode_value(enc: RangeEncoder, x: int, p: int, top: int, z: Context, s: Context, mag, unary_max=UNARY_MAX):
    """Code x in 0..top relative to p; ``mag(i)`` is the context of magnitude bin i."""
    d = x - p
    enc.bit(z, int(d != 0))
    if d == 0:
        return
    if 0 < p < top:
        enc.bit(s, int(d < 0))
    neg = d < 0
    m = abs(d) - 1
    mmax = p - 1 if neg else top - p - 1
    for i in range(min(mmax, unary_max)):
        enc.bit(mag(i), int(m > i))
        if m == i:
            return
    if mmax > unary_max:  # all unary bins were 1: m >= unary_max
        w = (mmax - unary_max).bit_length()
        for j in range(w - 1, -1, -1):
            enc.bit(None, ((m - unary_max) >> j) & 1)


def decode_value(dec: RangeDecoder, p: int, top: int, z: Context, s: Context, mag, unary_max=UNARY_MAX) -> int:
    if dec.bit(z) == 0:
        return p
    neg = p == top if not 0 < p < top else dec.bit(s) == 1
    mmax = p - 1 if neg else top - p - 1
    m = 0
    while m < min(mmax, unary_max) and dec.bit(mag(m)) == 1:
        m += 1
    if m == unary_max and mmax > unary_max:
        rest = 0
        for _ in range((mmax - unary_max).bit_length()):
            rest = (rest << 1) | dec.bit(None)
        m = unary_max + rest
        if m > mmax:
            raise ValueError("a decoded value lies outside its range")
    return p - (m + 1) if neg else p + (m + 1)


# ----------------------------------------------------------------------------- contexts (6.2.5)


def cls(v: int) -> int:
    return v if v < 2 else 2 if v < 4 else 3 if v < 8 else 4


def sgn3(v: int) -> int:
    return 0 if v < 0 else 1 if v == 0 else 2


class Coder:
    """The contexts of one section and the element traversal both directions share."""

    def __init__(self) -> None:
        self.ctx = [Context() for _ in range(N_CONTEXTS)]

    def intra(self, codes, y, x, c, zc, sh):
        """(zero, sign, magnitude-of-i) contexts of an intra element; ``codes`` holds the
        elements coded so far."""
        lv = int(codes[y, x - 1, c]) if x > 0 else zc
        uv = int(codes[y - 1, x, c]) if y > 0 else zc
        a, b = abs(lv - zc) >> sh, abs(uv - zc) >> sh
        z = self.ctx[INTRA_ZERO + cls(a) * 5 + cls(b)]
        s = self.ctx[INTRA_SIGN + sgn3(lv - zc) * 3 + sgn3(uv - zc)]
        return z, s, lambda i: self.ctx[INTRA_MAG + min(i, 3) * 5 + cls(max(a, b))]

    def temporal(self, changes, dref, y, x, c, p, sh, top, residual):
        """Contexts of a temporal element: an anchor's, or (``residual``) a coded element of
        a predicted frame, whose zero bin depends on p only through edge(p)."""
        sl = int(changes[y, x - 1, c]) if x > 0 else 0
        su = int(changes[y - 1, x, c]) if y > 0 else 0
        sp = int(changes[y, x, c - 1]) if c > 0 else 0
        n = (sl != 0) + (su != 0) + (sp != 0)
        pc = p >> sh
        t = int(dref[y, x, c]) + 1
        if residual:
            edge = 0 if p == 0 else 1 if p == top else 2
            z = self.ctx[RES_ZERO + (edge * 4 + n) * 3 + t]
        else:
            z = self.ctx[TEMP_ZERO + (pc * 4 + n) * 3 + t]
        s = self.ctx[TEMP_SIGN + (pc * 3 + sgn3(sl + su)) * 3 + t]
        return z, s, lambda i: self.ctx[TEMP_MAG + min(i, 3) * 4 + n]

    def vector(self, mvs, by, bx, ln, k):
        left = int(mvs[by, bx - 1, ln, k]) if bx > 0 else 0
        z = self.ctx[MV_ZERO + k * 2 + (left != 0)]
        return z, self.ctx[MV_SIGN + k], lambda i: self.ctx[MV_MAG + k * 4 + min(i, 3)]

    def flag(self, flags, by, bx):
        return self.ctx[FLAG + int(bx > 0 and bool(flags[by, bx - 1])) + int(by > 0 and bool(flags[by - 1, bx]))]


def _elements(shape, flags, block):
    """Element positions of the flagged blocks: block raster, then element order."""
    h, w, c = shape
    for by, bx in zip(*np.nonzero(flags), strict=True):
        for y in range(by * block, min(h, (by + 1) * block)):
            for x in range(bx * block, min(w, (bx + 1) * block)):
                for ch in range(c):
                    yield y, x, ch


def _code_elements(enc, coder, x, pred, flags, block, temporal, n_bits, z_n, dref, changes, residual=False):
    top = (1 << n_bits) - 1
    sh = max(0, n_bits - 4)
    zc = min(z_n, top)
    for y, xx, c in _elements(x.shape, flags, block):
        v = int(x[y, xx, c])
        if temporal:
            p = int(pred[y, xx, c])
            z, s, mag = coder.temporal(changes, dref, y, xx, c, p, sh, top, residual)
            changes[y, xx, c] = (v > p) - (v < p)
        else:
            p = zc
            z, s, mag = coder.intra(x, y, xx, c, zc, sh)
        encode_value(enc, v, p, top, z, s, mag)


def _decode_elements(dec, coder, x, pred, flags, block, temporal, n_bits, z_n, dref, changes, residual=False):
    top = (1 << n_bits) - 1
    sh = max(0, n_bits - 4)
    zc = min(z_n, top)
    for y, xx, c in _elements(x.shape, flags, block):
        if temporal:
            p = int(pred[y, xx, c])
            z, s, mag = coder.temporal(changes, dref, y, xx, c, p, sh, top, residual)
        else:
            p = zc
            z, s, mag = coder.intra(x, y, xx, c, zc, sh)
        v = decode_value(dec, p, top, z, s, mag)
        x[y, xx, c] = v
        if temporal:
            changes[y, xx, c] = (v > p) - (v < p)


# ----------------------------------------------------------------------------- sections (6.2.3)


def _whole(shape):
    return np.ones((1, 1), bool), max(shape[0], shape[1])


def encode_anchor(codes, ref, dref, n_bits: int, z_n: int) -> tuple[bytes, np.ndarray]:
    """An anchor's codes (H, W, C): (section, change map); temporal when ``ref`` is given."""
    enc, coder = RangeEncoder(), Coder()
    changes = np.zeros(codes.shape, np.int8)
    dref = np.zeros(codes.shape, np.int8) if dref is None else dref
    flags, block = _whole(codes.shape)
    _code_elements(enc, coder, codes, ref, flags, block, ref is not None, n_bits, z_n, dref, changes)
    return enc.finish(), changes


def decode_anchor(data: bytes, shape, ref, dref, n_bits: int, z_n: int) -> tuple[np.ndarray, np.ndarray]:
    dec, coder = RangeDecoder(data), Coder()
    codes = np.zeros(shape, np.uint8)
    changes = np.zeros(shape, np.int8)
    dref = np.zeros(shape, np.int8) if dref is None else dref
    flags, block = _whole(shape)
    _decode_elements(dec, coder, codes, ref, flags, block, ref is not None, n_bits, z_n, dref, changes)
    dec.finish()
    return codes, changes


def encode_pred(mvs, p: int, flags, pred, recon, dref, block: int, n_bits: int, head: bool = True):
    """A predicted frame's section: vectors (nby, nbx, lanes, 2), then with ``flags`` the
    flags and the flagged blocks of ``recon`` against ``pred``: (section, change map).
    ``head`` False: the flagged blocks' elements alone (a slice after the first, 6.2.6)."""
    enc, coder = RangeEncoder(), Coder()
    nby, nbx, lanes, _ = mvs.shape
    for by in range(nby if head else 0):
        for bx in range(nbx):
            for ln in range(lanes):
                for k in range(2):
                    z, s, mag = coder.vector(mvs, by, bx, ln, k)
                    encode_value(enc, int(mvs[by, bx, ln, k]) + p, p, 2 * p, z, s, mag, unary_max=p - 1)
    changes = np.zeros(pred.shape, np.int8)
    if flags is not None:
        for by in range(nby if head else 0):
            for bx in range(nbx):
                enc.bit(coder.flag(flags, by, bx), int(flags[by, bx]))
        dref = np.zeros(pred.shape, np.int8) if dref is None else dref
        _code_elements(enc, coder, recon, pred, flags, block, True, n_bits, 0, dref, changes, residual=True)
    return enc.finish(), changes


def decode_vectors(dec: RangeDecoder, coder: Coder, nby, nbx, lanes, p) -> np.ndarray:
    """A predicted frame's vectors (nby, nbx, lanes, 2), the first part of its section."""
    mvs = np.zeros((nby, nbx, lanes, 2), np.int8)
    for by in range(nby):
        for bx in range(nbx):
            for ln in range(lanes):
                for k in range(2):
                    z, s, mag = coder.vector(mvs, by, bx, ln, k)
                    mvs[by, bx, ln, k] = decode_value(dec, p, 2 * p, z, s, mag, unary_max=p - 1) - p
    return mvs


def decode_flags(dec: RangeDecoder, coder: Coder, nby, nbx) -> np.ndarray:
    """A predicted frame's block flags (nby, nbx), after its vectors (residual mode)."""
    flags = np.zeros((nby, nbx), bool)
    for by in range(nby):
        for bx in range(nbx):
            flags[by, bx] = dec.bit(coder.flag(flags, by, bx)) == 1
    return flags


def decode_pred(data: bytes, nby, nbx, lanes, p, compensate, residual: bool, dref, block, n_bits):
    """Inverse of :func:`encode_pred`. ``compensate(mvs)`` gives the prediction (H, W, C)
    from the decoded vectors. Returns (mvs, flags or None, reconstruction, change map)."""
    dec, coder = RangeDecoder(data), Coder()
    mvs = decode_vectors(dec, coder, nby, nbx, lanes, p)
    pred = compensate(mvs)
    recon = pred.copy()
    changes = np.zeros(pred.shape, np.int8)
    flags = None
    if residual:
        flags = decode_flags(dec, coder, nby, nbx)
        dref = np.zeros(pred.shape, np.int8) if dref is None else dref
        _decode_elements(dec, coder, recon, pred, flags, block, True, n_bits, 0, dref, changes, residual=True)
    dec.finish()
    return mvs, flags, recon, changes
