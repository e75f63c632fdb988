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

    def one(k):
        c0, c1 = bounds[k]
        codes[..., c0:c1], changes[..., c0:c1] = decode_anchor(
            sections[k], (shape[0], shape[1], c1 - c0), _part(ref, c0, c1), _part(dref, c0, c1), n_bits, z_n
        )

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


class SectionDecoder:
    """One ``ctx`` section, decoded in parts that share the range decoder and contexts."""

    def __init__(self, data: bytes):
        self.data = np.frombuffer(bytes(data), np.uint8)
        self.ctx = X.new_contexts()
        self.state = X.dec_start(self.data)
        if self.state[1] >= self.state[0]:
            raise BitstreamError("a ctx section does not start with a valid code value")

    def _check(self, status: int) -> None:
        if status < 0:
            error, message = _ERRORS[status]
            raise error(message)

    def vectors(self, nby: int, nbx: int, lanes: int, p: int) -> np.ndarray:
        self.state, mvs, status = X.decode_vectors(self.state, self.data, self.ctx, nby, nbx, lanes, p)
        self._check(status)
        return mvs

    def flags(self, nby: int, nbx: int) -> np.ndarray:
        self.state, flags, status = X.decode_flags(self.state, self.data, self.ctx, nby, nbx)
        self._check(status)
        return flags

    def elements(self, x, pred, flags, block, mode, n_bits, z_n, dref, sign) -> None:
        self.state, status = X.decode_elements(
            self.state, self.data, self.ctx, x, pred, flags, block, mode, n_bits, z_n, dref, sign
        )
        self._check(status)

    def finish(self) -> None:
        """The section must be used exactly: the decoder read every byte and no more."""
        used = int(self.state[2])
        if used > self.data.size:
            raise TruncatedError(f"a ctx section of {self.data.size} bytes needs {used}")
        if used < self.data.size:
            raise BitstreamError(f"a ctx section of {self.data.size} bytes uses only {used}")


def decode_pred_residual(dec: SectionDecoder, pred: np.ndarray, dref, block: int, n_bits: int, more=()):
    """(flags, reconstruction, change map) of a predicted frame, after its vectors; with
    ``more``, the sections of its further slices (6.2.6), each used exactly."""
    nby, nbx = grid_shape(pred.shape[0], pred.shape[1], block)
    flags = dec.flags(nby, nbx)
    recon = pred.copy()
    sign = np.zeros(pred.shape, np.int8)
    bounds = slice_bounds(pred.shape[2], 1 + len(more))
    if len(bounds) != 1 + len(more):
        raise BitstreamError(f"{1 + len(more)} ctx slices for a tensor of {pred.shape[2]} channels")
    decoders = [dec, *(SectionDecoder(data) for data in more)]

    def one(k):
        c0, c1 = bounds[k]
        p = _part(pred, c0, c1)
        x = p.copy()  # the reconstruction, written in place
        s = np.zeros(x.shape, np.int8)
        d = decoders[k]
        d.elements(x, p, flags, block, X.MODE_RESIDUAL, n_bits, 0, _changes(_part(dref, c0, c1), x.shape), s)
        if k > 0:
            d.finish()
        recon[..., c0:c1], sign[..., c0:c1] = x, s

    _each(one, range(len(bounds)))
    return flags, recon, sign
