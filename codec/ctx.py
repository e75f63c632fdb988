"""The context-adaptive coder ``ctx`` (bitstream v2): one range-coded section per tensor
and packet, or per slice of it (docs/bitstream.md, sections 6.2 and 6.2.6).

- An anchor's section holds its N-bit codes in element order, coded relative to the
  co-located code of a reference reconstruction (temporal contexts) or, intra, relative
  to the zero point (spatial contexts).
- A predicted frame's section holds its vectors, then (residual mode) the block flags
  and the coded blocks' codes relative to the motion-compensated prediction (temporal
  contexts, with the residual zero contexts).
- In a version 2.2 stream a tensor is coded in slices, channel ranges each its own
  section (6.2.6): :func:`slice_bounds`, :func:`encode_anchor_slices`,
  :func:`encode_pred_slices` and their decoders.

This module calls the compiled kernels (:mod:`temposplit.codec._ctx_kernels`); the
readable definition they are tested equal to is :mod:`temposplit.codec.ctx_reference`.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from temposplit.codec import _ctx_kernels as X
from temposplit.codec._kernels import COMPILED
from temposplit.codec.errors import BitstreamError, TruncatedError
from temposplit.codec.motion import grid_shape

MODE_INTRA, MODE_TEMPORAL = X.MODE_INTRA, X.MODE_TEMPORAL
MAX_SLICES = 32  # a version 2.2 stream's slice count S is 2..MAX_SLICES (6.2.6)


def slice_bounds(channels: int, slices: int) -> list[tuple[int, int]]:
    """The channel ranges [c0, c1) of a tensor's ``min(slices, channels)`` slices (6.2.6)."""
    s = max(1, min(slices, channels))
    return [(k * channels // s, (k + 1) * channels // s) for k in range(s)]


# The most threads a tensor's slices are coded and decoded on; None: the cores the process
# may use. 1 codes them in turn on the calling thread (`temposplit bench codec`: one core).
SLICE_THREADS: int | None = None
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (the process that made it, its threads, the pool)
_POOL_LOCK = threading.Lock()


def _each(fn, items) -> list:
    """``fn`` over ``items``, on threads where that helps: the compiled kernels release
    the GIL, so the slices of a tensor are coded and decoded side by side on the cores
    the process may use, at most :data:`SLICE_THREADS` (one: in turn)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = min(MAX_SLICES, cores, cores if SLICE_THREADS is None else SLICE_THREADS)
    nested = threading.current_thread().name.startswith("ctx-slice")  # never wait on our own pool
    if len(items) < 2 or not COMPILED or threads < 2 or nested:
        return [fn(item) for item in items]
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[:2] != (os.getpid(), threads):  # a forked process gets its own pool
            _POOL = (os.getpid(), threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ctx-slice"))
        pool = _POOL[2]
    futures = [pool.submit(fn, item) for item in items]
    wait(futures)  # every slice has stopped before an error is raised: none holds its arrays on
    return [f.result() for f in futures]


def _part(a, c0: int, c1: int):
    """A slice's contiguous copy of an (H, W, C) array, None stays None."""
    return None if a is None else np.ascontiguousarray(a[..., c0:c1])


def _whole(shape) -> tuple[np.ndarray, int]:
    """One block covering the whole map (anchors are coded in element order)."""
    return np.ones((1, 1), np.bool_), max(shape[0], shape[1])


def _u8(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.uint8)


def _changes(dref, shape) -> np.ndarray:
    return np.zeros(shape, np.int8) if dref is None else np.ascontiguousarray(dref, np.int8)


def encode_anchor(codes, ref, dref, n_bits: int, z_n: int) -> tuple[bytes, np.ndarray]:
    """An anchor's N-bit codes (H, W, C): (section bytes, change map). Temporal when the
    reference's codes ``ref`` and change map ``dref`` are given, intra when ``ref`` is None."""
    codes = _u8(codes)
    flags, block = _whole(codes.shape)
    mode = MODE_TEMPORAL if ref is not None else MODE_INTRA
    pred = _u8(ref) if ref is not None else codes
    sign = np.zeros(codes.shape, np.int8)
    out = np.zeros(codes.size // 4 + 64, np.uint8)
    es, out = X.encode_elements(
        X.enc_start(),
        out,
        X.new_contexts(),
        codes,
        pred,
        flags,
        block,
        mode,
        n_bits,
        z_n,
        _changes(dref, codes.shape),
        sign,
    )
    return X.enc_finish(es, out).tobytes(), sign


def encode_anchor_slices(codes, ref, dref, n_bits: int, z_n: int, slices: int) -> tuple[list[bytes], np.ndarray]:
    """An anchor in slices (6.2.6): (one section per slice, change map); one slice is
    :func:`encode_anchor`'s section."""
    bounds = slice_bounds(codes.shape[2], slices)
    if len(bounds) == 1:
        data, changes = encode_anchor(codes, ref, dref, n_bits, z_n)
        return [data], changes
    changes = np.zeros(codes.shape, np.int8)

    def one(bound):
        c0, c1 = bound
        data, changes[..., c0:c1] = encode_anchor(
            _part(codes, c0, c1), _part(ref, c0, c1), _part(dref, c0, c1), n_bits, z_n
        )
        return data

    return _each(one, bounds), changes


def decode_anchor_slices(sections, shape, ref, dref, n_bits: int, z_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_anchor_slices`: ``sections`` holds one per slice of
    :func:`slice_bounds` (the caller reads that many)."""
    bounds = slice_bounds(shape[2], len(sections))
    if len(bounds) != len(sections):
        raise BitstreamError(f"{len(sections)} ctx slices for a tensor of {shape[2]} channels")
    if len(bounds) == 1:
        return decode_anchor(sections[0], shape, ref, dref, n_bits, z_n)
    codes, changes = np.zeros(shape, np.uint8), np.zeros(shape, np.int8)
    flags, block = _whole(shape)
    mode = MODE_TEMPORAL if ref is not None else MODE_INTRA
    pred = _u8(ref) if ref is not None else codes
    dref = _changes(dref, shape)

    def one(k):
        # Each slice reads and writes only its channels of the maps: the slices decode into
        # the one map side by side, with no copy of their parts (docs/bitstream.md, 11).
        dec = SectionDecoder(sections[k])
        dec.elements(codes, pred, flags, block, mode, n_bits, z_n, dref, changes, bounds[k])
        dec.finish()

    _each(one, range(len(bounds)))
    return codes, changes


def decode_anchor(data: bytes, shape, ref, dref, n_bits: int, z_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_anchor`: ((H, W, C) uint8 codes, change map)."""
    dec = SectionDecoder(data)
    codes = np.zeros(shape, np.uint8)
    sign = np.zeros(shape, np.int8)
    flags, block = _whole(shape)
    mode = MODE_TEMPORAL if ref is not None else MODE_INTRA
    pred = _u8(ref) if ref is not None else codes
    dec.elements(codes, pred, flags, block, mode, n_bits, z_n, _changes(dref, shape), sign)
    dec.finish()
    return codes, sign


def encode_pred(
    mvs, p: int, flags, pred, recon, dref, block: int, n_bits: int, head: bool = True
) -> tuple[bytes, np.ndarray]:
    """A predicted frame: (section bytes, change map). ``mvs`` (nby, nbx, lanes, 2); with
    ``flags`` (nby, nbx) bool, the flags and the flagged blocks of ``recon`` relative to
    the prediction ``pred``, with the reference's change map ``dref`` as context.
    ``head`` False: only the flagged blocks' elements (a slice after the first, 6.2.6)."""
    ctx = X.new_contexts()
    sign = np.zeros(pred.shape, np.int8)
    es = X.enc_start()
    if head:
        mvs = np.ascontiguousarray(mvs, np.int8)
        out = np.zeros(mvs.size + 64, np.uint8)
        es, out = X.encode_vectors(es, out, ctx, mvs, p)
    else:
        out = np.zeros(64, np.uint8)
    if flags is not None:
        flags = np.ascontiguousarray(flags, np.bool_)
        if head:
            es, out = X.encode_flags(es, out, ctx, flags)
        es, out = X.encode_elements(
            es,
            out,
            ctx,
            _u8(recon),
            _u8(pred),
            flags,
            block,
            X.MODE_RESIDUAL,
            n_bits,
            0,
            _changes(dref, pred.shape),
            sign,
        )
    return X.enc_finish(es, out).tobytes(), sign


def encode_pred_slices(
    mvs, p: int, flags, pred, recon, dref, block: int, n_bits: int, slices: int
) -> tuple[list[bytes], np.ndarray]:
    """A predicted frame in slices (6.2.6): (sections, change map). Slice 0 holds the
    vectors, the flags and its channels' coded elements, every further slice only its
    channels' coded elements; without ``flags`` (no residual mode) one section."""
    bounds = slice_bounds(pred.shape[2], slices)
    if flags is None or len(bounds) == 1:
        data, changes = encode_pred(mvs, p, flags, pred, recon, dref, block, n_bits)
        return [data], changes
    changes = np.zeros(pred.shape, np.int8)

    def one(k):
        c0, c1 = bounds[k]
        data, changes[..., c0:c1] = encode_pred(
            mvs, p, flags, _part(pred, c0, c1), _part(recon, c0, c1), _part(dref, c0, c1), block, n_bits, k == 0
        )
        return data

    return _each(one, range(len(bounds))), changes


def empty_section() -> bytes:
    """The section of no value (a slice after the first whose blocks are all skipped)."""
    return X.enc_finish(X.enc_start(), np.zeros(64, np.uint8)).tobytes()


_ERRORS = {
    X.ERR_TRUNCATED: (TruncatedError, "coded data ends before the values it must hold"),
    X.ERR_RANGE: (BitstreamError, "a decoded value lies outside its range"),
}

# A section of L bytes holds fewer than BINS_PER_BYTE * (L - 3) bins (docs/bitstream.md, 11):
# a context's probability of a 0 bin stays within 26..4070 (6.2.2, from 2048), so a bin keeps
# less than 4070/4096 + 26/2^24 of a range of at least 2^24, and the range, started below 2^32
# and left at 2^24 or more, gains 8 bits per byte read past the first four. 872 is the least K
# with (4070/4096 + 26/2^24)^K <= 2^-8 (tests/codec/test_ctx_pred_bounds.py checks it exactly).
BINS_PER_BYTE = 872


def most_bins(size: int) -> int:
    """The most bins a valid ``ctx`` section of ``size`` bytes can hold (strictly fewer)."""
    return BINS_PER_BYTE * (size - 3)


def flagged_elements(flags: np.ndarray, shape, block: int) -> int:
    """The elements of an (H, W, C) map in the blocks ``flags`` (nby, nbx) marks (edge blocks
    truncated), counted without a map of the blocks' sizes."""
    height, width, channels = shape
    nby, nbx = flags.shape
    heights = np.minimum(block, height - block * np.arange(nby, dtype=np.int64))
    last = width - block * (nbx - 1)  # the width of the last block column
    widths = flags.sum(axis=1, dtype=np.int64) * block - flags[:, -1] * np.int64(block - last)
    return int(widths @ heights) * channels


class SectionDecoder:
    """One ``ctx`` section, decoded in parts that share the range decoder and contexts.

    Each part first counts the least number of bins it codes (one per vector component,
    block flag and element, at least) and refuses the section (:class:`TruncatedError`)
    when its length cannot hold them all (:func:`most_bins`), before anything the size
    of the map is allocated: a few bytes announcing a frame of 2^24 vectors cost nothing."""

    def __init__(self, data: bytes):
        self.data = np.frombuffer(bytes(data), np.uint8)
        self.ctx = X.new_contexts()
        self.state = X.dec_start(self.data)
        self.least = 0  # the bins the parts decoded so far code, at least
        if self.state[1] >= self.state[0]:
            raise BitstreamError("a ctx section does not start with a valid code value")

    def _holds(self, bins: int) -> None:
        self.least += bins
        if self.least > most_bins(self.data.size):
            raise TruncatedError(f"a ctx section of {self.data.size} bytes cannot hold the {self.least} bins it codes")

    def _check(self, status: int) -> None:
        if status < 0:
            error, message = _ERRORS[status]
            raise error(message)

    def vectors(self, nby: int, nbx: int, lanes: int, p: int) -> np.ndarray:
        self._holds(2 * nby * nbx * lanes)
        mvs = np.empty((nby, nbx, lanes, 2), np.int8)  # allocated as the maps are (numpy)
        self.state, status = X.decode_vectors_into(self.state, self.data, self.ctx, mvs, p)
        self._check(status)
        return mvs

    def flags(self, nby: int, nbx: int) -> np.ndarray:
        self._holds(nby * nbx)
        flags = np.empty((nby, nbx), np.bool_)
        self.state, status = X.decode_flags_into(self.state, self.data, self.ctx, flags)
        self._check(status)
        return flags

    def elements(self, x, pred, flags, block, mode, n_bits, z_n, dref, sign, channels=None) -> None:
        """The flagged blocks' elements, into ``x`` and ``sign``; with ``channels`` (c0, c1),
        those of the channels c0 .. c1 - 1 alone, a slice's (6.2.6), the rest untouched."""
        c0, c1 = (0, x.shape[2]) if channels is None else channels
        self._holds(flagged_elements(flags, (x.shape[0], x.shape[1], c1 - c0), block))
        self.state, status = X.decode_elements_channels(
            self.state, self.data, self.ctx, x, pred, flags, block, mode, n_bits, z_n, dref, sign, c0, c1
        )
        self._check(status)

    def finish(self) -> None:
        """The section must be used exactly: the decoder read every byte and no more."""
        used = int(self.state[2])
        if used > self.data.size:
            raise TruncatedError(f"a ctx section of {self.data.size} bytes needs {used}")
        if used < self.data.size:
            raise BitstreamError(f"a ctx section of {self.data.size} bytes uses only {used}")


# The most vector components decoded at a time (a band of block rows, 1 MB of int8): a
# predicted frame's vectors are compensated as they come, never held whole.
VECTOR_BAND = 1 << 20


def decode_prediction(dec: SectionDecoder, ref: np.ndarray, lanes: int, p: int, block: int) -> tuple[np.ndarray, int]:
    """(motion-compensated prediction (H, W, C), the first block a vector moves outside the map
    or -1) of a predicted frame against its reference's codes ``ref``, from the vectors that
    start its section (6.2.3). They are decoded a band of block rows at a time and each band is
    compensated as it comes (a vector's contexts look only left, 6.2.5), so the field of 2
    bytes per block and lane (32 MB for 2^24 one-element blocks) is never held whole, and the
    prediction is allocated once the first band has passed the section's length check. The
    result is the compensation of the whole field (:func:`temposplit.codec._kernels.
    compensate_shared` with one lane, ``compensate_per_channel`` with one per channel), its
    first bad block the same."""
    ref = np.ascontiguousarray(ref, np.uint8)
    nby, nbx = grid_shape(ref.shape[0], ref.shape[1], block)
    rows = max(1, VECTOR_BAND // (2 * nbx * lanes))
    out = None
    first_bad = np.full(lanes, -1, np.int64)
    for by0 in range(0, nby, rows):
        mvs = dec.vectors(min(rows, nby - by0), nbx, lanes, p)
        if out is None:  # once the section has passed its first band's length check
            out = np.empty_like(ref)
        X.compensate_rows(out, ref, mvs, block, by0, first_bad)
    bad = first_bad[first_bad >= 0]
    return out, int(bad[0]) if bad.size else -1


def decode_pred_residual(
    dec: SectionDecoder, pred: np.ndarray, dref, block: int, n_bits: int, more=(), in_place: bool = False
):
    """(flags, reconstruction, change map) of a predicted frame, after its vectors; with
    ``more``, the sections of its further slices (6.2.6), each used exactly. ``in_place``:
    the reconstruction is ``pred`` itself, rebuilt where it lies (a contiguous, writeable
    uint8 map the caller gives up): no copy of the map, nor of a slice's part of it, the
    reference's change map or its own (docs/bitstream.md, 11); else ``pred`` is left as it is."""
    nby, nbx = grid_shape(pred.shape[0], pred.shape[1], block)
    bounds = slice_bounds(pred.shape[2], 1 + len(more))
    if len(bounds) != 1 + len(more):
        raise BitstreamError(f"{1 + len(more)} ctx slices for a tensor of {pred.shape[2]} channels")
    if in_place:
        if pred.dtype != np.uint8 or not pred.flags.c_contiguous or not pred.flags.writeable:
            raise ValueError("decode_pred_residual rebuilds a contiguous, writeable uint8 map in place")
        recon = pred
    else:
        recon = pred.copy()
    sign = np.zeros(recon.shape, np.int8)  # kept with the frame: allocated before the passing flags
    flags = dec.flags(nby, nbx)
    dref = _changes(dref, recon.shape)
    decoders = [dec, *(SectionDecoder(data) for data in more)]

    def one(k):
        # An element's prediction is read before its code is written, and no other element's;
        # a slice reads and writes only its own channels: each rebuilds its channels of the
        # map in place, with no copy of its part (docs/bitstream.md, 11).
        d = decoders[k]
        d.elements(
            recon, recon, flags, block, X.MODE_RESIDUAL, n_bits, 0, dref, sign, None if len(bounds) == 1 else bounds[k]
        )
        if k > 0:
            d.finish()

    _each(one, range(len(bounds)))
    return flags, recon, sign
