"""The context-adaptive coder ``ctx`` (bitstream v2): one range-coded section per tensor
and packet (docs/bitstream.md, section 6.2).

- An anchor's section holds its N-bit codes in element order, coded relative to the
  co-located code of a reference reconstruction (temporal contexts) or, intra, relative
  to the zero point (spatial contexts).
- A predicted frame's section holds its vectors, then (residual mode) the block flags
  and the coded blocks' codes relative to the motion-compensated prediction (temporal
  contexts, with the residual zero contexts).

This module calls the compiled kernels (:mod:`temposplit.codec._ctx_kernels`); the
readable definition they are tested equal to is :mod:`temposplit.codec.ctx_reference`.
"""

from __future__ import annotations

import numpy as np

from temposplit.codec import _ctx_kernels as X
from temposplit.codec.errors import BitstreamError, TruncatedError
from temposplit.codec.motion import grid_shape

MODE_INTRA, MODE_TEMPORAL = X.MODE_INTRA, X.MODE_TEMPORAL


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


def encode_pred(mvs, p: int, flags, pred, recon, dref, block: int, n_bits: int) -> tuple[bytes, np.ndarray]:
    """A predicted frame: (section bytes, change map). ``mvs`` (nby, nbx, lanes, 2); with
    ``flags`` (nby, nbx) bool, the flags and the flagged blocks of ``recon`` relative to
    the prediction ``pred``, with the reference's change map ``dref`` as context."""
    mvs = np.ascontiguousarray(mvs, np.int8)
    ctx = X.new_contexts()
    sign = np.zeros(pred.shape, np.int8)
    out = np.zeros(mvs.size + 64, np.uint8)
    es, out = X.encode_vectors(X.enc_start(), out, ctx, mvs, p)
    if flags is not None:
        flags = np.ascontiguousarray(flags, np.bool_)
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


_ERRORS = {
    X.ERR_TRUNCATED: TruncatedError("coded data ends before the values it must hold"),
    X.ERR_RANGE: BitstreamError("a decoded value lies outside its range"),
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
            raise BitstreamError(str(_ERRORS[status]))

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


def decode_pred_residual(dec: SectionDecoder, pred: np.ndarray, dref, block: int, n_bits: int):
    """(flags, reconstruction, change map) of a predicted frame, after its vectors."""
    nby, nbx = grid_shape(pred.shape[0], pred.shape[1], block)
    flags = dec.flags(nby, nbx)
    recon = pred.copy()
    sign = np.zeros(pred.shape, np.int8)
    dec.elements(recon, pred, flags, block, X.MODE_RESIDUAL, n_bits, 0, _changes(dref, pred.shape), sign)
    return flags, recon, sign
