"""Compiled fast path of the context-adaptive coder ``ctx`` (docs/bitstream.md, section 6.2).

The readable definition is :mod:`temposplit.codec.ctx_reference`; these kernels are
tested equal to it, byte for byte. Without numba they run as plain Python (slow, right).

The range coder's state lives in local scalars and passes between kernels as a tuple
(an encoder: low, range, cache, cache size, bytes written; a decoder: range, code,
next byte). Array arguments are kept out of the per-bin helpers (with numba, a helper
that takes arrays costs a reference-count round trip per call): each call site codes a
bin with the scalar helper ``_ebin``/``_dbin`` and renormalizes only when the range is
below 2^24. A context is one int32: probability of a 0 bin (12 bits) << 8 | count.
"""

from __future__ import annotations

import numpy as np

from temposplit.codec._kernels import njit

PROB_BITS = 12
PROB_ONE = 1 << PROB_BITS
PROB_INIT = PROB_ONE // 2
TOP = 1 << 24
MASK32 = (1 << 32) - 1
COUNT_MAX = 62
UNARY_MAX = 14  # magnitude bins before the fixed-width suffix
INIT_STATE = PROB_INIT << 8

# Context layout (docs/bitstream.md, 6.2.5): offsets into one table of N_CONTEXTS.
C_INTRA_ZERO = 0  # 25: cls(a) * 5 + cls(b)
C_INTRA_SIGN = 25  # 9: sgn3(l) * 3 + sgn3(u)
C_INTRA_MAG = 34  # 20: min(i, 3) * 5 + cls(max(a, b))
C_TEMP_ZERO = 54  # 192: (pc * 4 + n) * 3 + t + 1
C_TEMP_SIGN = 246  # 144: (pc * 3 + sgn3(sl + su)) * 3 + t + 1
C_TEMP_MAG = 390  # 16: min(i, 3) * 4 + n
C_MV_ZERO = 406  # 4: k * 2 + (left vector component != 0)
C_MV_SIGN = 410  # 2: k
C_MV_MAG = 412  # 8: k * 4 + min(i, 3)
C_FLAG = 420  # 3: left flag + up flag
C_RES_ZERO = 423  # 36: (edge(p) * 4 + n) * 3 + t + 1, residual elements of a predicted frame
N_CONTEXTS = 459

# How elements are coded: intra and temporal (an anchor's section mode byte, docs 10), and
# residual (a predicted frame's coded blocks: temporal, with the residual zero contexts).
MODE_INTRA, MODE_TEMPORAL, MODE_RESIDUAL = 0, 1, 2
ERR_TRUNCATED = -1  # the coded data ends before the values it must hold
ERR_RANGE = -4  # a decoded value lies outside its range
ERR_CODE = -5  # the section's first word is not a valid code value
SLACK = 8  # bytes read past a section's end before a decoder gives up (checked at every byte it reads)


def new_contexts() -> np.ndarray:
    return np.full(N_CONTEXTS, INIT_STATE, np.int32)


# --------------------------------------------------------------------------- bins

# Adaptation shift of a context that has coded n bins: floor(log2(n + 2)), at most 6.
_SHIFT = np.array([1] * 2 + [2] * 4 + [3] * 8 + [4] * 16 + [5] * 32 + [6], np.int64)


@njit(cache=True, nogil=True)
def _update(state, bit):
    p = state >> 8
    n = state & 0xFF
    s = _SHIFT[n]
    p = p + ((PROB_ONE - p) >> s) if bit == 0 else p - (p >> s)
    return (p << 8) | (n + 1 if n < COUNT_MAX else n)


@njit(cache=True, nogil=True)
def _ebin(low, rng, state, bit):
    """One bin: the new (low, range, state), before renormalization."""
    bound = (rng >> PROB_BITS) * (state >> 8)
    if bit == 0:
        return low, bound, _update(state, 0)
    return low + bound, rng - bound, _update(state, 1)


@njit(cache=True, nogil=True)
def _ebypass(low, rng, bit):
    bound = (rng >> PROB_BITS) * PROB_INIT
    if bit == 0:
        return low, bound
    return low + bound, rng - bound


@njit(cache=True, nogil=True)
def _erenorm(low, rng, cache, csize, pos, out):
    while rng < TOP:
        rng <<= 8
        if low < 0xFF000000 or low > MASK32:  # the top byte is settled: emit the pending ones
            carry = low >> 32
            temp = cache
            while csize > 0:
                out[pos] = np.uint8((temp + carry) & 0xFF)
                pos += 1
                temp = 0xFF
                csize -= 1
            cache = (low >> 24) & 0xFF
        csize += 1
        low = (low & 0x00FFFFFF) << 8
    return low, rng, cache, csize, pos


@njit(cache=True, nogil=True)
def _dbin(rng, code, state):
    bound = (rng >> PROB_BITS) * (state >> 8)
    if code < bound:
        return bound, code, _update(state, 0), 0
    return rng - bound, code - bound, _update(state, 1), 1


@njit(cache=True, nogil=True)
def _dbypass(rng, code):
    bound = (rng >> PROB_BITS) * PROB_INIT
    if code < bound:
        return bound, code, 0
    return rng - bound, code - bound, 1


@njit(cache=True, nogil=True)
def _drenorm(rng, code, pos, data):
    while rng < TOP:
        rng <<= 8
        code = (code << 8) | (np.int64(data[pos]) if pos < data.size else np.int64(0))
        pos += 1
    return rng, code, pos


# --------------------------------------------------------------------------- coder state


@njit(cache=True, nogil=True)
def enc_start():
    """(low, range, cache, cache size, bytes written)."""
    return np.int64(0), np.int64(MASK32), np.int64(0), np.int64(1), np.int64(0)


@njit(cache=True, nogil=True)
def grow(out, pos, csize, need):
    """``out`` with room for ``need`` more bytes after the written and pending ones."""
    if pos + csize + need <= out.size:
        return out
    bigger = np.zeros(2 * out.size + csize + need, np.uint8)
    bigger[:pos] = out[:pos]
    return bigger


@njit(cache=True, nogil=True)
def enc_finish(es, out):
    """Flush (five low shifts) and return the section's bytes, the first (always 0) dropped."""
    low, rng, cache, csize, pos = es
    out = grow(out, pos, csize, 8)
    for _ in range(5):
        if low < 0xFF000000 or low > MASK32:
            carry = low >> 32
            temp = cache
            while csize > 0:
                out[pos] = np.uint8((temp + carry) & 0xFF)
                pos += 1
                temp = 0xFF
                csize -= 1
            cache = (low >> 24) & 0xFF
        csize += 1
        low = (low & 0x00FFFFFF) << 8
    return out[1:pos].copy()


@njit(cache=True, nogil=True)
def dec_start(data):
    """(range, code, next byte) after the first four bytes; code >= range marks bad data."""
    code = np.int64(0)
    for i in range(4):
        code = (code << 8) | (np.int64(data[i]) if i < data.size else np.int64(0))
    return np.int64(MASK32), code, np.int64(4)


# --------------------------------------------------------------------------- contexts


@njit(cache=True, nogil=True)
def _cls(v):
    if v < 2:
        return v
    if v < 4:
        return 2
    if v < 8:
        return 3
    return 4


@njit(cache=True, nogil=True)
def _sgn3(v):
    return 0 if v < 0 else (1 if v == 0 else 2)


@njit(cache=True, nogil=True)
def _bitlen(v):
    n = 0
    while v > 0:
        n += 1
        v >>= 1
    return n


# --------------------------------------------------------------------------- elements


@njit(cache=True, nogil=True)
def _temporal_contexts(p, sl, su, sp, t, sh, top, residual):
    """(zero, sign, first magnitude) contexts of a temporal element (docs 6.2.5): its
    prediction p, the change map left, up and one channel back, the reference's change t;
    a residual element's zero bin depends on p only through edge(p)."""
    n = (1 if sl != 0 else 0) + (1 if su != 0 else 0) + (1 if sp != 0 else 0)
    pc = p >> sh
    s = sl + su
    if residual:
        edge = 0 if p == 0 else (1 if p == top else 2)
        zero = C_RES_ZERO + (edge * 4 + n) * 3 + t + 1
    else:
        zero = C_TEMP_ZERO + (pc * 4 + n) * 3 + t + 1
    return (
        zero,
        C_TEMP_SIGN + (pc * 3 + (0 if s < 0 else (1 if s == 0 else 2))) * 3 + t + 1,
        C_TEMP_MAG + n,
    )


@njit(cache=True, nogil=True)
def _intra_contexts(lv, uv, zc, sh):
    """(zero, sign, first magnitude) contexts of an intra element from its left and upper codes."""
    a = abs(lv - zc) >> sh
    b = abs(uv - zc) >> sh
    return (
        C_INTRA_ZERO + _cls(a) * 5 + _cls(b),
        C_INTRA_SIGN + _sgn3(lv - zc) * 3 + _sgn3(uv - zc),
        C_INTRA_MAG + _cls(max(a, b)),
    )


@njit(cache=True, nogil=True)
def encode_elements(es, out, ctx, x, pred, flags, block, mode, n_bits, z_n, dref, sign):
    """Code the N-bit codes ``x`` (H, W, C) of the flagged blocks, block raster order, each
    block's elements in element order, relative to a prediction: with ``MODE_TEMPORAL``
    (an anchor) and ``MODE_RESIDUAL`` (a predicted frame's coded blocks) the co-located code
    of ``pred`` (temporal contexts), with ``MODE_INTRA`` min(z_N, top) (spatial contexts).
    Fills the change map ``sign`` (not intra). Returns (state, out)."""
    low, rng, cache, csize, pos = es
    height, width, channels = x.shape
    xf, pf, df, sf = x.reshape(x.size), pred.reshape(pred.size), dref.reshape(dref.size), sign.reshape(sign.size)
    nby, nbx = flags.shape
    top = (1 << n_bits) - 1
    sh = max(0, n_bits - 4)
    zc = np.int64(min(z_n, top))
    row = width * channels
    residual = mode == MODE_RESIDUAL
    for by in range(nby):
        for bx in range(nbx):
            if not flags[by, bx]:
                continue
            x0, x1 = bx * block, min(width, (bx + 1) * block)
            for y in range(by * block, min(height, (by + 1) * block)):
                out = grow(out, pos, csize, 40 * channels * (x1 - x0))
                for xx in range(x0, x1):
                    base = (y * width + xx) * channels
                    for c in range(channels):
                        i = base + c
                        if mode != MODE_INTRA:
                            p = np.int64(pf[i])
                            sl = np.int64(sf[i - channels]) if xx > 0 else 0
                            su = np.int64(sf[i - row]) if y > 0 else 0
                            sp = np.int64(sf[i - 1]) if c > 0 else 0
                            zctx, sctx, mb = _temporal_contexts(p, sl, su, sp, np.int64(df[i]), sh, top, residual)
                            ms = 4
                        else:
                            p = zc
                            lv = np.int64(xf[i - channels]) if xx > 0 else zc
                            uv = np.int64(xf[i - row]) if y > 0 else zc
                            zctx, sctx, mb = _intra_contexts(lv, uv, zc, sh)
                            ms = 5
                        v = np.int64(xf[i])
                        # --- the value relative to p (docs 6.2.4), inline for speed
                        low, rng, ctx[zctx] = _ebin(low, rng, ctx[zctx], 1 if v != p else 0)
                        if rng < TOP:
                            low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
                        if v == p:
                            continue
                        if mode != MODE_INTRA:
                            sf[i] = 1 if v > p else -1
                        if p == 0:
                            neg = False
                        elif p == top:
                            neg = True
                        else:
                            neg = v < p
                            low, rng, ctx[sctx] = _ebin(low, rng, ctx[sctx], 1 if neg else 0)
                            if rng < TOP:
                                low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
                        m = (p - v if neg else v - p) - 1
                        mmax = (p - 1) if neg else (top - p - 1)
                        lim = min(mmax, UNARY_MAX)
                        k = 0
                        while k < lim:
                            bit = 1 if m > k else 0
                            q = mb + min(k, 3) * ms
                            low, rng, ctx[q] = _ebin(low, rng, ctx[q], bit)
                            if rng < TOP:
                                low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
                            if bit == 0:
                                break
                            k += 1
                        if k == UNARY_MAX and mmax > UNARY_MAX:
                            rest = m - UNARY_MAX
                            for j in range(_bitlen(mmax - UNARY_MAX) - 1, -1, -1):
                                low, rng = _ebypass(low, rng, (rest >> j) & 1)
                                if rng < TOP:
                                    low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
    return (low, rng, cache, csize, pos), out


@njit(cache=True, nogil=True)
def decode_elements(ds, data, ctx, x, pred, flags, block, mode, n_bits, z_n, dref, sign):
    """Inverse of :func:`encode_elements`: fills the flagged blocks of ``x`` (and ``sign``) in
    place. Returns (state, status): status 0, or < 0 on an error."""
    return decode_elements_channels(ds, data, ctx, x, pred, flags, block, mode, n_bits, z_n, dref, sign, 0, x.shape[2])


@njit(cache=True, nogil=True)
def decode_elements_channels(ds, data, ctx, x, pred, flags, block, mode, n_bits, z_n, dref, sign, c0, c1):
    """:func:`decode_elements` of the channels ``c0`` .. ``c1 - 1`` of the (H, W, C) maps
    alone, as the section of the sub-tensor holding only those channels (a slice, 6.2.6): its
    element order and neighbours (the element before channel ``c0`` is outside the map). The
    other channels are neither read nor written, so slices decode into one map side by side.
    ``x`` may be ``pred``: an element's prediction is read before its code is written."""
    rng, code, pos = ds
    height, width, channels = x.shape
    xf, pf, df, sf = x.reshape(x.size), pred.reshape(pred.size), dref.reshape(dref.size), sign.reshape(sign.size)
    nby, nbx = flags.shape
    top = (1 << n_bits) - 1
    sh = max(0, n_bits - 4)
    zc = np.int64(min(z_n, top))
    row = width * channels
    residual = mode == MODE_RESIDUAL
    limit = data.size + SLACK
    for by in range(nby):
        for bx in range(nbx):
            if not flags[by, bx]:
                continue
            x0, x1 = bx * block, min(width, (bx + 1) * block)
            for y in range(by * block, min(height, (by + 1) * block)):
                for xx in range(x0, x1):
                    base = (y * width + xx) * channels
                    for c in range(c0, c1):
                        i = base + c
                        if mode != MODE_INTRA:
                            p = np.int64(pf[i])
                            sl = np.int64(sf[i - channels]) if xx > 0 else 0
                            su = np.int64(sf[i - row]) if y > 0 else 0
                            sp = np.int64(sf[i - 1]) if c > c0 else 0
                            zctx, sctx, mb = _temporal_contexts(p, sl, su, sp, np.int64(df[i]), sh, top, residual)
                            ms = 4
                        else:
                            p = zc
                            lv = np.int64(xf[i - channels]) if xx > 0 else zc
                            uv = np.int64(xf[i - row]) if y > 0 else zc
                            zctx, sctx, mb = _intra_contexts(lv, uv, zc, sh)
                            ms = 5
                        rng, code, ctx[zctx], bit = _dbin(rng, code, ctx[zctx])
                        if rng < TOP:
                            rng, code, pos = _drenorm(rng, code, pos, data)
                            if pos > limit:  # checked at each byte read: the work is bounded by the bytes
                                return (rng, code, pos), ERR_TRUNCATED
                        if bit == 0:
                            xf[i] = p
                            continue
                        if p == 0:
                            neg = False
                        elif p == top:
                            neg = True
                        else:
                            rng, code, ctx[sctx], bit = _dbin(rng, code, ctx[sctx])
                            if rng < TOP:
                                rng, code, pos = _drenorm(rng, code, pos, data)
                                if pos > limit:
                                    return (rng, code, pos), ERR_TRUNCATED
                            neg = bit == 1
                        mmax = (p - 1) if neg else (top - p - 1)
                        lim = min(mmax, UNARY_MAX)
                        m = 0
                        while m < lim:
                            q = mb + min(m, 3) * ms
                            rng, code, ctx[q], bit = _dbin(rng, code, ctx[q])
                            if rng < TOP:
                                rng, code, pos = _drenorm(rng, code, pos, data)
                                if pos > limit:
                                    return (rng, code, pos), ERR_TRUNCATED
                            if bit == 0:
                                break
                            m += 1
                        if m == UNARY_MAX and mmax > UNARY_MAX:
                            rest = 0
                            for _ in range(_bitlen(mmax - UNARY_MAX)):
                                rng, code, bit = _dbypass(rng, code)
                                if rng < TOP:
                                    rng, code, pos = _drenorm(rng, code, pos, data)
                                    if pos > limit:
                                        return (rng, code, pos), ERR_TRUNCATED
                                rest = (rest << 1) | bit
                            m = UNARY_MAX + rest
                            if m > mmax:
                                return (rng, code, pos), ERR_RANGE
                        xf[i] = p - (m + 1) if neg else p + (m + 1)
                        if mode != MODE_INTRA:
                            sf[i] = -1 if neg else 1
    return (rng, code, pos), 0


# --------------------------------------------------------------------------- vectors and flags


@njit(cache=True, nogil=True)
def encode_vectors(es, out, ctx, mvs, p):
    """Vector components (nby, nbx, lanes, 2), block raster, lane, dy then dx."""
    low, rng, cache, csize, pos = es
    nby, nbx, lanes = mvs.shape[0], mvs.shape[1], mvs.shape[2]
    for by in range(nby):
        for bx in range(nbx):
            out = grow(out, pos, csize, 16 * lanes)
            for ln in range(lanes):
                for k in range(2):
                    left = np.int64(mvs[by, bx - 1, ln, k]) if bx > 0 else 0
                    z = C_MV_ZERO + k * 2 + (1 if left != 0 else 0)
                    v = np.int64(mvs[by, bx, ln, k])
                    low, rng, ctx[z] = _ebin(low, rng, ctx[z], 1 if v != 0 else 0)
                    if rng < TOP:
                        low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
                    if v == 0:
                        continue
                    s = C_MV_SIGN + k
                    low, rng, ctx[s] = _ebin(low, rng, ctx[s], 1 if v < 0 else 0)
                    if rng < TOP:
                        low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
                    m = abs(v) - 1
                    i = 0
                    while i < p - 1:
                        bit = 1 if m > i else 0
                        q = C_MV_MAG + k * 4 + min(i, 3)
                        low, rng, ctx[q] = _ebin(low, rng, ctx[q], bit)
                        if rng < TOP:
                            low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
                        if bit == 0:
                            break
                        i += 1
    return (low, rng, cache, csize, pos), out


@njit(cache=True, nogil=True)
def decode_vectors(ds, data, ctx, nby, nbx, lanes, p):
    """Inverse of :func:`encode_vectors`: (state, vectors (nby, nbx, lanes, 2), status)."""
    mvs = np.zeros((nby, nbx, lanes, 2), np.int8)
    ds, status = decode_vectors_into(ds, data, ctx, mvs, p)
    return ds, mvs, status


@njit(cache=True, nogil=True)
def decode_vectors_into(ds, data, ctx, mvs, p):
    """:func:`decode_vectors` into ``mvs`` (nby, nbx, lanes, 2), every component written (the
    caller's array: the decoder allocates it the way it allocates its maps). (state, status)."""
    rng, code, pos = ds
    nby, nbx, lanes = mvs.shape[0], mvs.shape[1], mvs.shape[2]
    limit = data.size + SLACK
    for by in range(nby):
        for bx in range(nbx):
            for ln in range(lanes):
                for k in range(2):
                    left = np.int64(mvs[by, bx - 1, ln, k]) if bx > 0 else 0
                    z = C_MV_ZERO + k * 2 + (1 if left != 0 else 0)
                    rng, code, ctx[z], bit = _dbin(rng, code, ctx[z])
                    if rng < TOP:
                        rng, code, pos = _drenorm(rng, code, pos, data)
                        if pos > limit:
                            return (rng, code, pos), ERR_TRUNCATED
                    if bit == 0:
                        mvs[by, bx, ln, k] = 0
                        continue
                    s = C_MV_SIGN + k
                    rng, code, ctx[s], neg = _dbin(rng, code, ctx[s])
                    if rng < TOP:
                        rng, code, pos = _drenorm(rng, code, pos, data)
                        if pos > limit:
                            return (rng, code, pos), ERR_TRUNCATED
                    m = 0
                    while m < p - 1:
                        q = C_MV_MAG + k * 4 + min(m, 3)
                        rng, code, ctx[q], bit = _dbin(rng, code, ctx[q])
                        if rng < TOP:
                            rng, code, pos = _drenorm(rng, code, pos, data)
                            if pos > limit:
                                return (rng, code, pos), ERR_TRUNCATED
                        if bit == 0:
                            break
                        m += 1
                    mvs[by, bx, ln, k] = -(m + 1) if neg else m + 1
    return (rng, code, pos), 0


@njit(cache=True, nogil=True)
def encode_flags(es, out, ctx, flags):
    low, rng, cache, csize, pos = es
    nby, nbx = flags.shape
    for by in range(nby):
        out = grow(out, pos, csize, 8 * nbx)
        for bx in range(nbx):
            k = C_FLAG + (1 if bx > 0 and flags[by, bx - 1] else 0) + (1 if by > 0 and flags[by - 1, bx] else 0)
            low, rng, ctx[k] = _ebin(low, rng, ctx[k], 1 if flags[by, bx] else 0)
            if rng < TOP:
                low, rng, cache, csize, pos = _erenorm(low, rng, cache, csize, pos, out)
    return (low, rng, cache, csize, pos), out


@njit(cache=True, nogil=True)
def decode_flags(ds, data, ctx, nby, nbx):
    """Inverse of :func:`encode_flags`: (state, flags (nby, nbx), status)."""
    flags = np.zeros((nby, nbx), np.bool_)
    ds, status = decode_flags_into(ds, data, ctx, flags)
    return ds, flags, status


@njit(cache=True, nogil=True)
def decode_flags_into(ds, data, ctx, flags):
    """:func:`decode_flags` into ``flags`` (nby, nbx), every flag written. (state, status)."""
    rng, code, pos = ds
    nby, nbx = flags.shape
    limit = data.size + SLACK
    for by in range(nby):
        for bx in range(nbx):
            k = C_FLAG + (1 if bx > 0 and flags[by, bx - 1] else 0) + (1 if by > 0 and flags[by - 1, bx] else 0)
            rng, code, ctx[k], bit = _dbin(rng, code, ctx[k])
            if rng < TOP:
                rng, code, pos = _drenorm(rng, code, pos, data)
                if pos > limit:
                    return (rng, code, pos), ERR_TRUNCATED
            flags[by, bx] = bit == 1
    return (rng, code, pos), 0


# --------------------------------------------------------------------------- compensation by bands


@njit(cache=True, nogil=True)
def compensate_rows(out, ref, mvs, block, by0, first_bad):
    """Motion compensation (docs/bitstream.md, section 3) of the block rows ``by0`` ..
    ``by0 + rows - 1`` of ``ref`` (H, W, C) into ``out``, from their vectors ``mvs`` (rows,
    nbx, lanes, 2): one lane moves every channel, else lane c moves channel c. A block whose
    displaced block would leave the map is not written; ``first_bad[lane]`` keeps the index
    (block raster order) of the first such block of each lane, -1 while none: over the rows of
    a frame in turn, the first lane's that is set is what ``_kernels.compensate_shared`` and
    ``compensate_per_channel`` report (they stop there), and where none is, ``out`` is theirs."""
    height, width, channels = ref.shape
    rows, nbx, lanes = mvs.shape[0], mvs.shape[1], mvs.shape[2]
    of, rf = out.reshape(out.size), ref.reshape(ref.size)
    row = width * channels
    # A block row's run: bw * C contiguous codes with one lane, bw codes C apart with one per
    # channel. Unsigned indexes (no negative-index wraparound test) let the copy vectorize.
    step = np.uint64(1 if lanes == 1 else channels)
    for r in range(rows):
        by = by0 + r
        y0 = by * block
        bh = min(block, height - y0)
        for bx in range(nbx):
            x0 = bx * block
            bw = min(block, width - x0)
            run = np.uint64(bw * channels if lanes == 1 else bw)
            for ln in range(lanes):
                dy = np.int64(mvs[r, bx, ln, 0])
                dx = np.int64(mvs[r, bx, ln, 1])
                if y0 + dy < 0 or y0 + dy + bh > height or x0 + dx < 0 or x0 + dx + bw > width:
                    if first_bad[ln] < 0:
                        first_bad[ln] = by * nbx + bx
                    continue
                for yy in range(bh):
                    a = np.uint64((y0 + yy) * row + x0 * channels + ln)
                    b = np.uint64((y0 + dy + yy) * row + (x0 + dx) * channels + ln)
                    for k in range(run):
                        of[a + k * step] = rf[b + k * step]
