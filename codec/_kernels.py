"""Compiled (numba) fast paths of the codec, each tested equal to its readable definition.

Kernels take channel-last arrays so that one block row of all channels is one
contiguous run of memory.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit

    COMPILED = True
except ImportError:  # the PYNQ-Z2's 32-bit ARM has no numba wheels: the same code runs as Python
    COMPILED = False

    def njit(*args, **kwargs):
        """Without numba the kernels run as plain Python: right, but slow for big maps (the
        board leaves those to the fabric)."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn


_ORDER_Y = np.array([-1, -1, -1, 0, 0, 1, 1, 1], np.int64)
_ORDER_X = np.array([-1, 0, 1, -1, 1, -1, 0, 1], np.int64)


# --------------------------------------------------------------------------- element maps
# Whole-map passes the encoder makes on every frame. Without numba the callers use their
# NumPy definitions instead (a Python loop over a map would be slower than NumPy's).


@njit(cache=True, nogil=True)
def apply_lut(codes, table):
    """``table[codes]`` for uint8 ``codes`` of any shape and a 256-entry table (its dtype out)."""
    flat = codes.reshape(codes.size)
    out = np.empty(codes.size, table.dtype)
    for i in range(flat.size):
        out[i] = table[flat[i]]
    return out.reshape(codes.shape)


@njit(cache=True, nogil=True)
def _centred(codes, zero, shift, out):
    flat = codes.reshape(codes.size)
    dst = out.reshape(out.size)
    z = np.int16(zero)
    m = np.int16(1 << shift)
    for i in range(flat.size):
        dst[i] = (np.int16(flat[i]) - z) * m
    return out


def centred(codes, zero: int, shift: int, out=None) -> np.ndarray:
    """``(codes - zero) << shift`` as int16 for uint8 ``codes`` of any shape (``shift`` < 8),
    into ``out`` (a contiguous int16 array of their shape) when given: a map's worth of
    fresh memory costs more than the pass itself on some systems (first-touch page faults)."""
    if out is None:
        out = np.empty(codes.shape, np.int16)
    elif out.shape != codes.shape or out.dtype != np.int16 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous int16 array of shape {codes.shape}")
    if not COMPILED:
        np.subtract(codes, np.int16(zero), out=out, dtype=np.int16)
        return np.left_shift(out, shift, out=out)
    return _centred(np.ascontiguousarray(codes), zero, shift, out)


@njit(cache=True, nogil=True)
def hold_codes(q8, q_n, prev_n, lo, hi):
    """:func:`quantize.hold` with its tables ``lo``, ``hi``: (H, W, C) arrays, uint8 out."""
    a, b, c = q8.reshape(q8.size), q_n.reshape(q_n.size), prev_n.reshape(prev_n.size)
    out = np.empty(q8.size, np.uint8)
    for i in range(a.size):
        v = a[i]
        p = c[i]
        out[i] = p if lo[v] <= p and p <= hi[v] else b[i]
    return out.reshape(q8.shape)


@njit(cache=True, nogil=True)
def count_not(codes, value):
    """How many of ``codes`` (any shape) differ from ``value``."""
    flat = codes.reshape(codes.size)
    n = 0
    for i in range(flat.size):
        n += flat[i] != value
    return n


@njit(cache=True, nogil=True)
def residual_threshold(cur, pred, block, k, limit, dead_zone):
    """The residual decision by threshold (docs/bitstream.md, section 5): a block is coded
    when its mean |cur - pred| in 8-bit steps, ``sum << k`` / its element count (float64),
    exceeds ``limit`` and, with a dead zone, some value survives it (|d| << k > dead_zone).
    ``cur`` and ``pred`` are N-bit codes (H, W, C). Returns (coded (nby, nbx) bool, the
    coded blocks' values (int32, :func:`payload.gather_blocks` order), reconstruction)."""
    height, width, channels = cur.shape
    cur2 = cur.reshape(height, width * channels)
    pred2 = pred.reshape(height, width * channels)
    nby = (height + block - 1) // block
    nbx = (width + block - 1) // block
    coded = np.zeros((nby, nbx), np.bool_)
    total = 0
    for by in range(nby):
        y0 = by * block
        y1 = min(height, y0 + block)
        for bx in range(nbx):
            a0 = bx * block * channels
            run = min(width, bx * block + block) * channels - a0
            s = np.int64(0)
            largest = 0
            for y in range(y0, y1):
                # A row of the block is one contiguous run; slices indexed from 0 (as in _sad).
                rc = cur2[y, a0 : a0 + run]
                rp = pred2[y, a0 : a0 + run]
                acc = np.int32(0)
                top = np.int32(0)
                for i in range(run):
                    d = abs(np.int32(rc[i]) - np.int32(rp[i]))
                    acc += d
                    top = max(top, d)
                s += acc
                largest = max(largest, top)
            size = (y1 - y0) * run
            if (s << k) / size > limit and (largest << k) > dead_zone:
                coded[by, bx] = True
                total += size
    values = np.empty(total, np.int32)
    recon = pred.copy()
    pos = 0
    for by in range(nby):
        for bx in range(nbx):
            if not coded[by, bx]:
                continue
            for y in range(by * block, min(height, by * block + block)):
                for x in range(bx * block, min(width, bx * block + block)):
                    for c in range(channels):
                        d = np.int32(cur[y, x, c]) - np.int32(pred[y, x, c])
                        if (abs(d) << k) <= dead_zone:
                            d = 0
                        values[pos] = d
                        pos += 1
                        recon[y, x, c] = np.uint8(np.int32(pred[y, x, c]) + d)
    return coded, values, recon


# --------------------------------------------------------------------------- motion


@njit(cache=True, nogil=True)
def _sad(ref2, cur2, y0, x0, bh, bw, dy, dx, channels, bound):
    """Sum of |ref - cur| over a block, all channels; stops early once past ``bound``."""
    total = 0
    run = bw * channels
    a0 = (x0 + dx) * channels
    c0 = x0 * channels
    for r in range(bh):
        # Slices indexed from 0 let LLVM vectorize (an offset index costs a wraparound check).
        ra = ref2[y0 + dy + r, a0 : a0 + run]
        rc = cur2[y0 + r, c0 : c0 + run]
        acc = np.int32(0)
        for i in range(run):
            acc += np.int32(abs(ra[i] - rc[i]))  # |d| <= 511
        total += acc
        if total >= bound:
            return total
    return total


@njit(cache=True, nogil=True)
def tss_shared(ref, cur, block, p, full):
    """TSS (or full search) with one vector per block shared by all channels.

    ``ref`` and ``cur`` are centred int16 ``(H, W, C)`` arrays.
    """
    height, width, channels = ref.shape
    ref2 = ref.reshape(height, width * channels)
    cur2 = cur.reshape(height, width * channels)
    nby = (height + block - 1) // block
    nbx = (width + block - 1) // block
    mvs = np.zeros((nby, nbx, 2), np.int8)
    costs = np.zeros((nby, nbx), np.int64)
    big = np.int64(1) << 62
    for by in range(nby):
        y0 = by * block
        bh = min(block, height - y0)
        for bx in range(nbx):
            x0 = bx * block
            bw = min(block, width - x0)
            if full:
                best = big
                vy = 0
                vx = 0
                for dy in range(-p, p + 1):
                    if y0 + dy < 0 or y0 + dy + bh > height:
                        continue
                    for dx in range(-p, p + 1):
                        if x0 + dx < 0 or x0 + dx + bw > width:
                            continue
                        c = _sad(ref2, cur2, y0, x0, bh, bw, dy, dx, channels, best)
                        if c < best:
                            best = c
                            vy = dy
                            vx = dx
            else:
                best = _sad(ref2, cur2, y0, x0, bh, bw, 0, 0, channels, big)
                vy = 0
                vx = 0
                s = (p + 1) // 2
                while s >= 1:
                    cy = vy
                    cx = vx
                    for j in range(8):
                        dy = cy + _ORDER_Y[j] * s
                        dx = cx + _ORDER_X[j] * s
                        if y0 + dy < 0 or y0 + dy + bh > height or x0 + dx < 0 or x0 + dx + bw > width:
                            continue
                        c = _sad(ref2, cur2, y0, x0, bh, bw, dy, dx, channels, best)
                        if c < best:
                            best = c
                            vy = dy
                            vx = dx
                    s //= 2
            mvs[by, bx, 0] = vy
            mvs[by, bx, 1] = vx
            costs[by, bx] = best
    return mvs, costs


@njit(cache=True, nogil=True)
def tss_per_channel(ref, cur, block, p, full):
    """TSS (or full search) with one vector per block and channel: the shared search on
    each channel alone."""
    height, width, channels = ref.shape
    nby = (height + block - 1) // block
    nbx = (width + block - 1) // block
    mvs = np.zeros((nby, nbx, channels, 2), np.int8)
    costs = np.zeros((nby, nbx, channels), np.int64)
    for ch in range(channels):
        m, c = tss_shared(ref[:, :, ch : ch + 1].copy(), cur[:, :, ch : ch + 1].copy(), block, p, full)
        mvs[:, :, ch] = m
        costs[:, :, ch] = c
    return mvs, costs


@njit(cache=True, nogil=True)
def compensate_shared(ref, mvs, block):
    """Motion compensation with shared vectors; returns -1 in ``bad`` if a vector is invalid."""
    height, width, channels = ref.shape
    out = np.empty_like(ref)
    nby, nbx = mvs.shape[0], mvs.shape[1]
    for by in range(nby):
        y0 = by * block
        bh = min(block, height - y0)
        for bx in range(nbx):
            x0 = bx * block
            bw = min(block, width - x0)
            dy = np.int64(mvs[by, bx, 0])
            dx = np.int64(mvs[by, bx, 1])
            if y0 + dy < 0 or y0 + dy + bh > height or x0 + dx < 0 or x0 + dx + bw > width:
                return out, by * nbx + bx
            for r in range(bh):
                for x in range(bw):
                    for c in range(channels):
                        out[y0 + r, x0 + x, c] = ref[y0 + dy + r, x0 + dx + x, c]
    return out, -1


@njit(cache=True, nogil=True)
def compensate_per_channel(ref, mvs, block):
    """Motion compensation with one vector per block and channel."""
    out = np.empty_like(ref)
    for ch in range(ref.shape[2]):
        o, bad = compensate_shared(ref[:, :, ch : ch + 1].copy(), mvs[:, :, ch].copy(), block)
        if bad >= 0:
            return out, bad
        out[:, :, ch] = o[:, :, 0]
    return out, -1


@njit(cache=True, nogil=True)
def add_residual(codes, coded, block, symbols, zero, top):
    """Rebuild the coded blocks of a predicted frame in place: ``codes`` (H, W, C) uint8 (the
    prediction) plus each residual ``symbols[k] - zero``, the symbols in the order of
    :func:`payload.gather_blocks` (coded blocks in raster order, each block's elements in
    element order), with no copy of the map. Returns the position in ``symbols`` of the first
    value that would leave 0..``top`` (the values before it are added), -1 when none does,
    or -2 when the symbol count is not the coded blocks' element count (nothing written)."""
    height, width, channels = codes.shape
    nby, nbx = coded.shape
    flat = codes.reshape(height, width * channels)
    total = 0
    for by in range(nby):
        for bx in range(nbx):
            if coded[by, bx]:
                total += (min(height, by * block + block) - by * block) * (min(width, bx * block + block) - bx * block)
    if total * channels != symbols.size:
        return -2
    z = np.int64(zero)
    pos = 0
    for by in range(nby):
        y0 = by * block
        y1 = min(height, y0 + block)
        for bx in range(nbx):
            if not coded[by, bx]:
                continue
            a0 = bx * block * channels
            run = min(width, bx * block + block) * channels - a0
            for y in range(y0, y1):
                row = flat[y, a0 : a0 + run]  # one row of the block: contiguous, in element order
                for i in range(run):
                    v = np.int64(row[i]) + np.int64(symbols[pos + i]) - z
                    if v < 0 or v > top:
                        return pos + i
                    row[i] = v
                pos += run
    return -1


@njit(cache=True, nogil=True)
def _residual_cost(ref2, cur2, y0, x0, bh, bw, dy, dx, channels, rcost, bound):
    """Sum of ``rcost[|cur - ref|]`` over a block (N-bit codes, all channels): the cost of
    its residual with the vector (dy, dx); stops early once past ``bound``."""
    total = 0
    run = bw * channels
    a0 = (x0 + dx) * channels
    c0 = x0 * channels
    for r in range(bh):
        ra = ref2[y0 + dy + r, a0 : a0 + run]
        rc = cur2[y0 + r, c0 : c0 + run]
        for i in range(run):
            total += rcost[abs(np.int64(rc[i]) - np.int64(ra[i]))]
        if total >= bound:
            return total
    return total


@njit(cache=True, nogil=True)
def refine_shared(ref, cur, mvs, coded, block, p, radius, rcost, vcost):
    """New vectors for the coded blocks: the candidate with the lowest residual cost
    (``rcost`` indexed by |r|, r = cur - the displaced ``ref``, both N-bit codes (H, W, C))
    plus vector cost (``vcost`` indexed by |component|). Candidates, in order: the given
    vector (kept on ties), (0, 0), the left and the upper blocks' final vectors, then every
    vector within ``radius`` of the given one; all inside +-p and the map. A block that is
    not coded keeps its vector. Returns the new (nby, nbx, 2) vectors."""
    height, width, channels = ref.shape
    ref2 = ref.reshape(height, width * channels)
    cur2 = cur.reshape(height, width * channels)
    nby, nbx = mvs.shape[0], mvs.shape[1]
    out = mvs.copy()
    cy = np.zeros(4, np.int64)
    cx = np.zeros(4, np.int64)
    for by in range(nby):
        y0 = by * block
        bh = min(block, height - y0)
        for bx in range(nbx):
            if not coded[by, bx]:
                continue
            x0 = bx * block
            bw = min(block, width - x0)
            vy = np.int64(mvs[by, bx, 0])
            vx = np.int64(mvs[by, bx, 1])
            best = _residual_cost(ref2, cur2, y0, x0, bh, bw, vy, vx, channels, rcost, np.int64(1) << 62)
            best += vcost[abs(vy)] + vcost[abs(vx)]
            gy = vy
            gx = vx
            n = 1
            cy[0] = 0
            cx[0] = 0
            if bx > 0:
                cy[n] = out[by, bx - 1, 0]
                cx[n] = out[by, bx - 1, 1]
                n += 1
            if by > 0:
                cy[n] = out[by - 1, bx, 0]
                cx[n] = out[by - 1, bx, 1]
                n += 1
            m = 2 * radius + 1
            for j in range(n + m * m):
                if j < n:
                    dy = cy[j]
                    dx = cx[j]
                else:
                    dy = gy - radius + (j - n) // m
                    dx = gx - radius + (j - n) % m
                if dy < -p or dy > p or dx < -p or dx > p:
                    continue
                if y0 + dy < 0 or y0 + dy + bh > height or x0 + dx < 0 or x0 + dx + bw > width:
                    continue
                extra = vcost[abs(dy)] + vcost[abs(dx)]
                if extra >= best:
                    continue
                c = _residual_cost(ref2, cur2, y0, x0, bh, bw, dy, dx, channels, rcost, best - extra) + extra
                if c < best:
                    best = c
                    vy = dy
                    vx = dx
            out[by, bx, 0] = vy
            out[by, bx, 1] = vx
    return out


@njit(cache=True, nogil=True)
def refine_per_channel(ref, cur, mvs, coded, block, p, radius, rcost, vcost):
    """:func:`refine_shared` on each channel alone (one vector per block and channel)."""
    out = mvs.copy()
    for ch in range(ref.shape[2]):
        out[:, :, ch] = refine_shared(
            ref[:, :, ch : ch + 1].copy(),
            cur[:, :, ch : ch + 1].copy(),
            mvs[:, :, ch].copy(),
            coded,
            block,
            p,
            radius,
            rcost,
            vcost,
        )
    return out


# --------------------------------------------------------------------------- bits
# Bit order: fields are written MSB first, filling each byte from bit 7 down.
# Kernels report errors as negative status codes; the Python layer raises.

ERR_TRUNCATED = -1
ERR_BAD_CODE = -2
ERR_OVERRUN = -3


@njit(cache=True, nogil=True, inline="always")
def _put(out, pos, acc, nacc, value, width):
    """Append ``width`` bits of ``value`` (MSB first) to the packer state; returns the state."""
    acc = (acc << np.uint64(width)) | (np.uint64(value) & ((np.uint64(1) << np.uint64(width)) - np.uint64(1)))
    nacc += width
    while nacc >= 8:
        nacc -= 8
        out[pos] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
        pos += 1
    acc &= (np.uint64(1) << np.uint64(nacc)) - np.uint64(1)
    return pos, acc, nacc


@njit(cache=True, nogil=True, inline="always")
def _flush(out, pos, acc, nacc):
    """Write the last partial byte, zero-padded; returns the byte count."""
    if nacc > 0:
        out[pos] = np.uint8((acc << np.uint64(8 - nacc)) & np.uint64(0xFF))
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def write_fields(values, widths):
    """Concatenate fields (value, width <= 32) MSB first; returns (bytes, number of bits)."""
    total = 0
    for i in range(widths.size):
        total += np.int64(widths[i])  # not uint8 arithmetic (plain-Python fallback)
    out = np.zeros((total + 7) // 8 + 8, np.uint8)
    pos, acc, nacc = 0, np.uint64(0), 0
    for i in range(widths.size):
        w = np.int64(widths[i])
        if w > 0:
            pos, acc, nacc = _put(out, pos, acc, nacc, values[i], w)
    return out[: _flush(out, pos, acc, nacc)], total


@njit(cache=True, nogil=True)
def _peek(data, bitpos, n):
    """n (<= 32) bits at bitpos, MSB first; bits past the end read as 0."""
    v = np.uint64(0)
    byte = bitpos >> 3
    # gather 8 bytes
    for j in range(8):
        v <<= np.uint64(8)
        if byte + j < data.size:
            v |= np.uint64(data[byte + j])
    v <<= np.uint64(bitpos & 7)
    return np.int64(v >> np.uint64(64 - n))


@njit(cache=True, nogil=True)
def read_fixed(data, nbits, count, width):
    """``count`` fields of ``width`` (<= 16) bits; returns (values (uint16), status) with
    status = bits used or < 0."""
    if count * width > nbits:  # checked before the allocation (docs/bitstream.md, 11)
        return np.zeros(0, np.uint16), ERR_TRUNCATED
    out = np.zeros(count, np.uint16)
    pos = 0
    for i in range(count):
        if width > 0:
            out[i] = _peek(data, pos, width)
            pos += width
    return out, pos


@njit(cache=True, nogil=True)
def read_huffman(data, nbits, count, lut):
    """``count`` symbols through a 15-bit decode table; returns (symbols (uint16), bits used or < 0).
    Symbols are narrow (every alphabet has at most 2^9 + 15 tokens): a section of 2^24 of them
    is 32 MB."""
    out = np.zeros(count, np.uint16)
    pos = 0
    for i in range(count):
        e = lut[_peek(data, pos, 15)]
        if e == 0:
            return out, ERR_BAD_CODE
        pos += e & 15
        if pos > nbits:
            return out, ERR_TRUNCATED
        out[i] = e >> 4
    return out, pos


@njit(cache=True, nogil=True)
def zrl_tokens(symbols, zero, literals):
    """Zero-run-length tokens: literal symbols, or run token ``literals + j`` for a run of
    zeros of length L in [2^j, 2^(j+1)) followed by j extra bits (L - 2^j); runs longer
    than 65535 are split. Returns (tokens, extra values, extra widths)."""
    n = symbols.size
    tokens = np.empty(n, np.int32)
    extra = np.zeros(n, np.int32)
    widths = np.zeros(n, np.uint8)
    t = 0
    i = 0
    while i < n:
        if symbols[i] != zero:
            tokens[t] = symbols[i]
            t += 1
            i += 1
            continue
        run = 0
        while i < n and symbols[i] == zero:
            run += 1
            i += 1
        while run > 0:
            r = min(run, 65535)
            j = 0
            while (r >> (j + 1)) > 0:
                j += 1
            tokens[t] = literals + j
            extra[t] = r - (1 << j)
            widths[t] = j
            t += 1
            run -= r
    return tokens[:t], extra[:t], widths[:t]


@njit(cache=True, nogil=True)
def zrl_histogram(symbols, zero, literals):
    """Counts of the tokens :func:`zrl_tokens` makes (literals + 16 run tokens), without
    making them (a decoder counts the next anchor's table source in constant memory), and
    the number of symbols outside 0..literals-1."""
    counts = np.zeros(literals + 16, np.int64)
    n = symbols.size
    bad = 0
    i = 0
    while i < n:
        s = np.int64(symbols[i])
        if s != zero:
            if s < 0 or s >= literals:
                bad += 1
            else:
                counts[s] += 1
            i += 1
            continue
        run = 0
        while i < n and symbols[i] == zero:
            run += 1
            i += 1
        while run > 0:
            r = min(run, 65535)
            j = 0
            while (r >> (j + 1)) > 0:
                j += 1
            counts[literals + j] += 1
            run -= r
    return counts, bad


@njit(cache=True, nogil=True)
def read_zrl(data, nbits, count, lut, zero, literals):
    """Decode ``count`` symbols of zero-run-length tokens; returns (symbols (uint16), bits used
    or < 0). A few bytes of run tokens can announce 2^24 symbols: they are narrow."""
    out = np.zeros(count, np.uint16)
    pos = 0
    i = 0
    while i < count:
        e = lut[_peek(data, pos, 15)]
        if e == 0:
            return out, ERR_BAD_CODE
        pos += e & 15
        tok = e >> 4
        if tok < literals:
            if pos > nbits:
                return out, ERR_TRUNCATED
            out[i] = tok
            i += 1
            continue
        j = tok - literals
        run = (1 << j) + (_peek(data, pos, j) if j > 0 else 0)
        pos += j
        if pos > nbits:
            return out, ERR_TRUNCATED
        if i + run > count or zero < 0:
            return out, ERR_OVERRUN
        for r in range(run):
            out[i + r] = zero
        i += run
    return out, pos


@njit(cache=True, nogil=True)
def histogram(symbols, size):
    """Counts of each symbol value in 0..size-1 (any integer dtype, one pass, no copy),
    and the number of symbols outside that range (not counted)."""
    out = np.zeros(size, np.int64)
    bad = 0
    for i in range(symbols.size):
        s = np.int64(symbols[i])
        if s < 0 or s >= size:
            bad += 1
        else:
            out[s] += 1
    return out, bad


@njit(cache=True, nogil=True)
def write_table(symbols, codes, lengths):
    """Huffman-code symbols through (codes, lengths) tables, MSB first; returns (bytes, bits)."""
    total = 0
    for i in range(symbols.size):
        total += np.int64(lengths[symbols[i]])
    out = np.zeros((total + 7) // 8 + 8, np.uint8)
    pos, acc, nacc = 0, np.uint64(0), 0
    for i in range(symbols.size):
        s = symbols[i]
        pos, acc, nacc = _put(out, pos, acc, nacc, codes[s], np.int64(lengths[s]))
    return out[: _flush(out, pos, acc, nacc)], total
