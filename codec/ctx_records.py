"""A ``ctx`` section as *value records*: what the fabric's record coder takes
(docs/fabric.md, "Value records").

Every bin of a ``ctx`` section (docs/bitstream.md 6.2) belongs to a *value*: an element's
code, a vector component or a block flag, binarized as 6.2.4 says (zero bin, sign bin,
truncated unary magnitude, bypass suffix). Which contexts a value's bins take depends
only on the section's inputs, never on the coder's state: the neighbours' codes and
changes are known to an encoder before it codes anything. So the contexts and the
binarization's lengths can be computed for the whole section at once, vectorized, and
the serial part -- the bins and the range coder -- left to a small engine that needs no
knowledge of the map's geometry. On the board that engine is the fabric's CTX mode with
FLAGS.RECORDS (hw/ctx_binarizer.py's RecordUnpack) and this module runs in NumPy on the ARM core.

A record is one 64-bit word, the fields of ``FIELDS`` from its least significant bit
(their meaning: docs/fabric.md, "Value records", whose table a test compares with them).
The suffix's value is ``m - 14``. :func:`record_bins` is the readable definition of the
bins a record stands for; the tests check that those bins, range-coded, are the section
:mod:`temposplit.codec.ctx_reference` writes.
"""

from __future__ import annotations

import numpy as np

from temposplit.codec import ctx_reference as R

FIELDS = {  # name: (first bit, width)
    "m": (0, 8),
    "z_ctx": (8, 9),
    "s_ctx": (17, 9),
    "mag_base": (26, 9),
    "mag_step": (35, 3),
    "unary_n": (38, 4),
    "suffix_w": (42, 4),
    "zero": (46, 1),
    "has_sign": (47, 1),
    "neg": (48, 1),
    "last": (49, 1),
}
RECORD_BITS = 50


def pack(**fields) -> np.ndarray:
    """Records (uint64) from equally long integer arrays, one per field of ``FIELDS``."""
    n = len(next(iter(fields.values())))
    out = np.zeros(n, np.uint64)
    for name, (lo, width) in FIELDS.items():
        v = np.asarray(fields[name], np.int64)
        if v.size and (v.min() < 0 or v.max() >= 1 << width):
            raise ValueError(f"record field {name} out of its {width} bits")
        out |= v.astype(np.uint64) << np.uint64(lo)
    return out


def unpack(records) -> dict[str, np.ndarray]:
    r = np.asarray(records, np.uint64)
    return {
        name: ((r >> np.uint64(lo)) & np.uint64((1 << width) - 1)).astype(np.int64)
        for name, (lo, width) in FIELDS.items()
    }


def _bitlength(v: np.ndarray) -> np.ndarray:
    out = np.zeros(v.shape, np.int32)
    for i in range(9):
        out[v >= (1 << i)] = i + 1
    return out


def _values(x, p, top, unary_max, z_ctx, s_ctx, mag_base, mag_step) -> dict[str, np.ndarray]:
    """The binarization (6.2.4) of values ``x`` against predictions ``p`` in 0..top."""
    x, p, top = (np.asarray(a, np.int32) for a in (x, p, top))
    d = x - p
    neg = d < 0
    mmax = np.where(neg, p - 1, top - p - 1)
    mmax = np.where(d == 0, 0, mmax)
    suffix = (mmax > unary_max) & (d != 0)
    return {
        "m": np.where(d == 0, 0, np.abs(d) - 1),
        "z_ctx": z_ctx,
        "s_ctx": s_ctx,
        "mag_base": mag_base,
        "mag_step": mag_step,
        "unary_n": np.where(d == 0, 0, np.minimum(mmax, unary_max)),
        "suffix_w": np.where(suffix, _bitlength(mmax - unary_max), 0),
        "zero": d == 0,
        "has_sign": (d != 0) & (p > 0) & (p < top),
        "neg": neg,
    }


def _cat(parts) -> dict[str, np.ndarray]:
    return {
        k: np.concatenate([np.broadcast_to(np.asarray(p[k], np.int32), p["m"].shape) for p in parts])
        for k in FIELDS
        if k != "last"
    }


def _finish(fields) -> np.ndarray:
    n = len(fields["m"])
    if n == 0:
        raise ValueError("a ctx section codes at least one value")
    last = np.zeros(n, np.int64)
    last[-1] = 1
    return pack(**fields, last=last)


def _shifted(a, axis):
    """a moved one step along ``axis`` (the neighbour before), 0 where there is none."""
    out = np.zeros_like(a)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    src[axis], dst[axis] = slice(None, -1), slice(1, None)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _sgn3(v):
    return np.where(v < 0, 0, np.where(v == 0, 1, 2))


def _cls(v):
    return np.select([v < 2, v < 4, v < 8], [v, 2, 3], 4)


def _temporal(recon, pred, dref, idx, n_bits, residual):
    """Fields of the temporal elements at flat indices ``idx`` (in coding order) and the
    frame's change map (sgn(recon - pred) at ``idx``, 0 elsewhere), whose left, upper and
    previous-channel neighbours are the contexts' (every one of them coded before)."""
    h, w, c = pred.shape
    top = (1 << n_bits) - 1
    sh = max(0, n_bits - 4)
    x = recon.reshape(-1)[idx].astype(np.int32)
    p = pred.reshape(-1)[idx].astype(np.int32)
    t = dref.reshape(-1)[idx].astype(np.int32) + 1
    flat = np.zeros(pred.size, np.int8)
    flat[idx] = np.sign(x - p)
    sl = np.where((idx // c) % w > 0, flat[idx - c], 0).astype(np.int32)
    su = np.where(idx >= w * c, flat[idx - w * c], 0).astype(np.int32)
    sp = np.where(idx % c > 0, flat[idx - 1], 0).astype(np.int32)
    n = (sl != 0).astype(np.int32) + (su != 0) + (sp != 0)
    pc = p >> sh
    if residual:
        edge = np.where(p == 0, 0, np.where(p == top, 1, 2))
        z = R.RES_ZERO + (edge * 4 + n) * 3 + t
    else:
        z = R.TEMP_ZERO + (pc * 4 + n) * 3 + t
    s = R.TEMP_SIGN + (pc * 3 + _sgn3(sl + su)) * 3 + t
    return _values(x, p, top, R.UNARY_MAX, z, s, R.TEMP_MAG + n, 4), flat.reshape(pred.shape)


def anchor_records(codes, ref, dref, n_bits: int, z_n: int) -> tuple[np.ndarray, np.ndarray]:
    """An anchor's section (6.2.3) as records, element order: (records, change map), the
    change map 0 for an intra anchor, as :func:`temposplit.codec.ctx.encode_anchor`."""
    codes = np.asarray(codes, np.uint8)
    top = (1 << n_bits) - 1
    if ref is not None:
        ref = np.asarray(ref, np.uint8)
        dref = np.zeros(codes.shape, np.int8) if dref is None else np.asarray(dref, np.int8)
        f, changes = _temporal(codes, ref, dref, np.arange(codes.size), n_bits, residual=False)
        return _finish(_cat([f])), changes
    sh = max(0, n_bits - 4)
    zc = min(z_n, top)
    x = codes.astype(np.int32)
    lv = np.full_like(x, zc)
    uv = np.full_like(x, zc)
    lv[:, 1:] = x[:, :-1]
    uv[1:] = x[:-1]
    a, b = np.abs(lv - zc) >> sh, np.abs(uv - zc) >> sh
    f = _values(
        x,
        np.full_like(x, zc),
        top,
        R.UNARY_MAX,
        R.INTRA_ZERO + _cls(a) * 5 + _cls(b),
        R.INTRA_SIGN + _sgn3(lv - zc) * 3 + _sgn3(uv - zc),
        R.INTRA_MAG + _cls(np.maximum(a, b)),
        5,
    )
    return _finish({k: np.broadcast_to(v, codes.shape).reshape(-1) for k, v in f.items()}), np.zeros(
        codes.shape, np.int8
    )


def _block_order(shape, flags, block) -> np.ndarray:
    """Flat element indices of the flagged blocks: block raster, then element order."""
    h, w, c = shape
    by, bx = np.divmod(np.arange(h * w), w)
    by, bx = by // block, bx // block
    bid = by * flags.shape[1] + bx
    pixels = np.argsort(bid, kind="stable")
    pixels = pixels[flags.reshape(-1)[bid[pixels]]]
    return (pixels[:, None] * c + np.arange(c)).reshape(-1)


def pred_records(
    mvs, p: int, flags, pred, recon, dref, block: int, n_bits: int, head: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A predicted frame's section (6.2.3) as records: the vector components, then (with
    ``flags``) the block flags and the coded blocks' elements. Returns (records, change
    map), as :func:`temposplit.codec.ctx.encode_pred`; ``head`` False: the coded blocks'
    elements alone (a slice after the first, 6.2.6)."""
    mvs = np.asarray(mvs, np.int32)
    if not head:
        mvs = mvs[:0]
    nby, nbx, lanes, _ = mvs.shape
    v = mvs.reshape(-1)
    left = np.zeros_like(mvs)
    left[:, 1:] = mvs[:, :-1]
    k = np.broadcast_to(np.arange(2), mvs.shape).reshape(-1)
    parts = [
        _values(
            v + p,
            np.full_like(v, p),
            np.full_like(v, 2 * p),
            p - 1,
            R.MV_ZERO + k * 2 + (left.reshape(-1) != 0),
            R.MV_SIGN + k,
            R.MV_MAG + k * 4,
            1,
        )
    ]
    pred = np.asarray(pred, np.uint8)
    changes = np.zeros(pred.shape, np.int8)
    if flags is not None:
        fl = np.asarray(flags, bool).astype(np.int32)
        up, lf = _shifted(fl, 0), _shifted(fl, 1)
        f = fl.reshape(-1)[: fl.size if head else 0]
        parts.append(
            _values(f, np.zeros_like(f), np.ones_like(f), 0, R.FLAG + (lf + up).reshape(-1)[: f.size], 0, 0, 0)
        )
        order = _block_order(pred.shape, fl.astype(bool), block)
        dref = np.zeros(pred.shape, np.int8) if dref is None else np.asarray(dref, np.int8)
        e, changes = _temporal(np.asarray(recon, np.uint8), pred, dref, order, n_bits, residual=True)
        parts.append(e)
    return _finish(_cat(parts)), changes


def section_records(kind: str, args) -> tuple[np.ndarray, np.ndarray]:
    """(records, change map) of a section given by the codec call's arguments: ``kind``
    ``anchor`` (:func:`anchor_records`) or ``pred`` (:func:`pred_records`)."""
    return (anchor_records if kind == "anchor" else pred_records)(*args)


def record_bins(records):
    """The bins of records, in order: (bit, context or None for a bypass bin, last)."""
    f = unpack(records)
    for i in range(len(f["m"])):
        r = {name: int(a[i]) for name, a in f.items()}
        bins = [(1 - r["zero"], r["z_ctx"])]
        if not r["zero"]:
            if r["has_sign"]:
                bins.append((r["neg"], r["s_ctx"]))
            for j in range(r["unary_n"]):
                bins.append((int(r["m"] > j), r["mag_base"] + min(j, 3) * r["mag_step"]))
                if r["m"] == j:
                    break
            else:
                rest = r["m"] - R.UNARY_MAX
                bins += [((rest >> j) & 1, None) for j in range(r["suffix_w"] - 1, -1, -1)]
        for j, (bit, ctx) in enumerate(bins):
            yield bit, ctx, bool(r["last"]) and j == len(bins) - 1


def encode_records(records) -> bytes:
    """The section the records stand for, through the readable range coder."""
    enc = R.RangeEncoder()
    contexts = [R.Context() for _ in range(R.N_CONTEXTS)]
    for bit, ctx, _ in record_bins(records):
        enc.bit(None if ctx is None else contexts[ctx], bit)
    return enc.finish()


# ----------------------------------------------------------------------------- stream words

# Most values of a predicted frame are one zero bin: a *run word* carries up to RUN_MAX of
# them, consecutive, by their zero contexts alone (docs/fabric.md, "Value records").
RUN_FLAG = 63  # bit 63 set: a run word; clear: one record in bits 0-49
RUN_COUNT = (60, 3)  # bits 60-62: how many zero values, 1..RUN_MAX
RUN_MAX = 6
RUN_CTX_BITS = 9  # value i's zero context in bits 9i .. 9i + 8


def words(records) -> np.ndarray:
    """The stream words of a section's records: each run of consecutive zero values (a
    record with ``zero`` set) in run words of up to RUN_MAX, every other record a word of
    its own, in order."""
    r = np.asarray(records, np.uint64)
    f = unpack(r)
    z = f["zero"].astype(bool)
    n = len(r)
    idx = np.arange(n)
    # position of a zero value within its run of zeros (0 at the run's first)
    run_start = np.where(z & ~np.concatenate([[False], z[:-1]]), idx, 0)
    np.maximum.accumulate(run_start, out=run_start)
    slot = np.where(z, (idx - run_start) % RUN_MAX, 0)
    new_word = ~z | (slot == 0)
    w = np.cumsum(new_word) - 1
    out = np.where(new_word & ~z, r, np.uint64(0)).astype(np.uint64)
    out = out[new_word]  # one entry per word: the full records in place, zero for run words
    zw = w[z]
    fields = (f["z_ctx"][z].astype(np.uint64) << (np.uint64(RUN_CTX_BITS) * slot[z].astype(np.uint64))).astype(
        np.uint64
    )
    np.add.at(out, zw, fields)  # disjoint bit ranges: the sum is the or
    count = np.bincount(zw, minlength=len(out)).astype(np.uint64)
    run = count > 0
    out[run] |= (count[run] << np.uint64(RUN_COUNT[0])) | (np.uint64(1) << np.uint64(RUN_FLAG))
    return out


def records_of_words(stream_words) -> np.ndarray:
    """The records a section's stream words stand for (a run word's values as records with
    ``zero`` set and only their zero context); the inverse of :func:`words` for the bins."""
    out = []
    for word in (int(x) for x in np.asarray(stream_words, np.uint64)):
        if word >> RUN_FLAG & 1:
            count = word >> RUN_COUNT[0] & ((1 << RUN_COUNT[1]) - 1)
            if not 1 <= count <= RUN_MAX:
                raise ValueError(f"a run word of {count} values")
            ctxs = [word >> (RUN_CTX_BITS * i) & ((1 << RUN_CTX_BITS) - 1) for i in range(count)]
            out += [int(pack(z_ctx=[c], **_ZERO_FIELDS)[0]) for c in ctxs]
        else:
            out.append(word)
    records = np.array(out, np.uint64)
    records[:-1] &= ~np.uint64(1 << FIELDS["last"][0])
    records[-1] |= np.uint64(1 << FIELDS["last"][0])
    return records


_ZERO_FIELDS = {name: [0] for name in FIELDS if name != "z_ctx"} | {"zero": [1]}
