"""Packet payloads: the per-tensor sections of anchor and predicted frames.

One module writes and reads both directions, so the layout (docs/bitstream.md,
"Payloads") is defined in one place. Maps are channel-last (H, W, C); elements are
coded in raster order with the channel fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from temposplit.codec import _kernels as K
from temposplit.codec import ctx, entropy, huffman
from temposplit.codec.bitstream import Reader, StreamHeader, TensorInfo, section
from temposplit.codec.errors import BitstreamError, ReferenceMissingError
from temposplit.codec.motion import grid_shape
from temposplit.codec.quantize import MAX_BITS, MIN_BITS, zero_point_n


def anchor_alphabet(t: TensorInfo, n_bits: int) -> entropy.Alphabet:
    return entropy.Alphabet.anchor(n_bits, zero_point_n(t.zero_point, n_bits))


def mv_lanes(header: StreamHeader, t: TensorInfo) -> tuple[int, int, int]:
    nby, nbx = grid_shape(t.height, t.width, t.block)
    return nby, nbx, (t.channels if header.per_channel else 1)


def mv_coder(header: StreamHeader) -> str:
    """Vectors are Huffman coded with the table coders, written raw otherwise."""
    return "huffman" if entropy.uses_table(header.coder) else "raw"


def has_group_tables(header: StreamHeader) -> bool:
    return entropy.uses_table(header.coder) and header.structure != "intra"


@dataclass
class AnchorTensor:
    codes: np.ndarray  # (H, W, C) uint8 N-bit codes
    table: np.ndarray | None  # the anchor table used (lengths), None for raw/zvc
    carried: bool  # the table is in the packet (else derived from the previous anchor)
    histogram: np.ndarray | None  # token histogram of these codes (the next anchor's table source)
    mv_table: np.ndarray | None
    residual_table: np.ndarray | None
    section: tuple[bytes, int] | None = None  # the coded codes, when an engine (the fabric) made them
    mode: int = 0  # ctx: 0 intra, 1 temporal (against the packet's reference frame)
    changes: np.ndarray | None = None  # ctx: the change map (H, W, C) int8 (docs/bitstream.md, 6.2.5)
    slices: list[bytes] | None = None  # ctx: the sections, one per slice (6.2.6)


@dataclass
class Held:
    """A reconstruction the decoder holds: N, per tensor the (H, W, C) codes and (ctx) change maps."""

    n_bits: int
    codes: list[np.ndarray]
    changes: list[np.ndarray | None]


# ----------------------------------------------------------------------------- anchors


def write_anchor(header: StreamHeader, n_bits: int, group_length: int, tensors: list[AnchorTensor]):
    """Payload of a KEY/ANCHOR packet; returns (bytes, bytes per tensor)."""
    out = bytearray([n_bits, group_length])
    sizes = []
    for t, a in zip(header.tensors, tensors, strict=True):
        start = len(out)
        alphabet = anchor_alphabet(t, n_bits)
        if header.coder == "ctx":
            out.append(a.mode)
            out += _ctx_sections(t, a.slices, len(header.slices(t)))
            sizes.append(len(out) - start)
            continue
        if entropy.uses_table(header.coder):
            out.append(1 if a.carried else 0)
            if a.carried:
                out += huffman.pack_lengths(a.table)
            if has_group_tables(header):
                out += huffman.pack_lengths(a.mv_table)
                if header.residual:
                    out += huffman.pack_lengths(a.residual_table)
        data, nbits = a.section or entropy.encode(header.coder, a.codes.reshape(-1), alphabet, a.table)
        out += section(data, nbits)
        sizes.append(len(out) - start)
    return bytes(out), sizes


def read_anchor(
    header: StreamHeader, payload: bytes, previous: list[tuple[int, np.ndarray] | None], reference: Held | None = None
):
    """Parse an anchor payload. ``previous[i]`` is (N, token histogram) of tensor i's
    previous anchor, or None where the decoder holds none; ``reference`` (ctx) is the
    frame the packet's reference field names, if the decoder holds it. Returns (N, group
    length, list of AnchorTensor)."""
    r = Reader(payload)
    n_bits, group_length = r.u8(), r.u8()
    if not MIN_BITS <= n_bits <= MAX_BITS:
        raise BitstreamError(f"an anchor announces N = {n_bits}")
    if not 1 <= group_length <= header.group:
        raise BitstreamError(f"an anchor announces a group of {group_length} frames (at most {header.group})")
    out = []
    mv_alpha = entropy.Alphabet.motion(header.search_range)
    if header.coder == "ctx":
        return n_bits, group_length, _read_anchor_ctx(header, r, n_bits, reference)
    for i, t in enumerate(header.tensors):
        alphabet = anchor_alphabet(t, n_bits)
        size = entropy.token_alphabet(header.coder, alphabet)
        table = mv_table = res_table = None
        carried = False
        if entropy.uses_table(header.coder):
            flag = r.u8()
            if flag not in (0, 1):
                raise BitstreamError(f"invalid table flag {flag}")
            carried = flag == 1
            if carried:
                table = huffman.unpack_lengths(r.take(huffman.packed_size(size)), size)
            else:
                prev = previous[i]
                if prev is None or prev[0] != n_bits:
                    raise ReferenceMissingError(
                        f"tensor {t.name!r}: the anchor's table derives from a previous anchor the decoder lacks"
                    )
                table = huffman.table_lengths(prev[1])
            if has_group_tables(header):
                mv_table = huffman.unpack_lengths(r.take(huffman.packed_size(mv_alpha.size)), mv_alpha.size)
                if header.residual:
                    rsize = entropy.token_alphabet(header.coder, entropy.Alphabet.residual(n_bits))
                    res_table = huffman.unpack_lengths(r.take(huffman.packed_size(rsize)), rsize)
        data, nbits = r.section()
        symbols = entropy.decode(header.coder, data, nbits, t.elements, alphabet, table)
        codes = symbols.astype(np.uint8).reshape(t.height, t.width, t.channels)
        hist = entropy.histogram(header.coder, symbols, alphabet) if table is not None else None
        out.append(AnchorTensor(codes, table, carried, hist, mv_table, res_table))
    r.done()
    return n_bits, group_length, out


def _read_anchor_ctx(header: StreamHeader, r: Reader, n_bits: int, reference: Held | None) -> list[AnchorTensor]:
    out = []
    for i, t in enumerate(header.tensors):
        mode = r.u8()
        if mode not in (ctx.MODE_INTRA, ctx.MODE_TEMPORAL):
            raise BitstreamError(f"invalid ctx anchor mode {mode}")
        ref = dref = None
        if mode == ctx.MODE_TEMPORAL:
            if reference is None:
                raise ReferenceMissingError(f"tensor {t.name!r}: the anchor is coded against a frame the decoder lacks")
            if reference.n_bits != n_bits:
                raise BitstreamError("an anchor is coded against a frame of another N")
            ref, dref = reference.codes[i], reference.changes[i]
        sections = [_ctx_section(r) for _ in header.slices(t)]
        codes, changes = ctx.decode_anchor_slices(
            sections, (t.height, t.width, t.channels), ref, dref, n_bits, zero_point_n(t.zero_point, n_bits)
        )
        out.append(AnchorTensor(codes, None, True, None, None, None, None, mode, changes))
    r.done()
    return out


def _ctx_section(r: Reader) -> bytes:
    data, nbits = r.section()
    if nbits != 8 * len(data) or len(data) < 4:
        raise BitstreamError(f"a ctx section of {len(data)} bytes announces {nbits} bits")
    return data


def _ctx_sections(t: TensorInfo, slices: list[bytes], count: int) -> bytes:
    """A tensor's ctx sections: ``count``, one per slice (6.2.6)."""
    if len(slices) != count:
        raise ValueError(f"tensor {t.name!r}: {len(slices)} ctx sections where the stream has {count}")
    return b"".join(section(data, 8 * len(data)) for data in slices)


# ----------------------------------------------------------------------------- predicted frames


@dataclass
class PredTensor:
    mvs: np.ndarray | None  # (nby, nbx, 2) or (nby, nbx, C, 2) int8; None from read_pred_ctx (never held whole)
    coded: np.ndarray | None  # (nby, nbx) bool: blocks with a coded residual (residual mode)
    residual: np.ndarray | None  # int32 residual values of the coded blocks, block raster order (written)
    slices: list[bytes] | None = None  # ctx: the tensor's sections, one per slice (6.2.6)
    recon: np.ndarray | None = None  # ctx (decoded): the reconstruction (H, W, C)
    changes: np.ndarray | None = None  # ctx: the change map (H, W, C) int8
    # v1 coders (read): the residual section's symbols r + 2^N - 1 (uint16, the order of
    # `residual`), applied in place by :func:`add_residual`; `residual` is then None
    symbols: np.ndarray | None = None


def write_pred(header: StreamHeader, n_bits: int, tensors: list[PredTensor], mv_tables, res_tables):
    out = bytearray()
    sizes = []
    p = header.search_range
    mv_alpha = entropy.Alphabet.motion(p)
    for i, pt in enumerate(tensors):
        start = len(out)
        if header.coder == "ctx":
            t = header.tensors[i]
            out += _ctx_sections(t, pt.slices, len(header.slices(t)) if header.residual else 1)
            sizes.append(len(out) - start)
            continue
        symbols = pt.mvs.astype(np.int32).reshape(-1) + p
        data, nbits = entropy.encode(mv_coder(header), symbols, mv_alpha, mv_tables[i])
        out += section(data, nbits)
        if header.residual:
            flags = pt.coded.reshape(-1).astype(np.int32)
            data, nbits = entropy.encode("raw", flags, entropy.Alphabet(2, 0, 1))
            out += section(data, nbits)
            alpha = entropy.Alphabet.residual(n_bits)
            data, nbits = entropy.encode(header.coder, pt.residual + alpha.zero, alpha, res_tables[i])
            out += section(data, nbits)
        sizes.append(len(out) - start)
    return bytes(out), sizes


def read_pred(header: StreamHeader, payload: bytes, n_bits: int, mv_tables, res_tables) -> list[PredTensor]:
    r = Reader(payload)
    p = header.search_range
    mv_alpha = entropy.Alphabet.motion(p)
    out = []
    for i, t in enumerate(header.tensors):
        nby, nbx, lanes = mv_lanes(header, t)
        data, nbits = r.section()
        symbols = entropy.decode(mv_coder(header), data, nbits, nby * nbx * lanes * 2, mv_alpha, mv_tables[i])
        mvs = symbols.astype(np.int8)  # symbols are below 2p + 1 <= 31
        mvs -= p
        mvs = mvs.reshape(nby, nbx, lanes, 2) if header.per_channel else mvs.reshape(nby, nbx, 2)
        coded = residual = None
        if header.residual:
            data, nbits = r.section()
            coded = entropy.decode("raw", data, nbits, nby * nbx, entropy.Alphabet(2, 0, 1)).astype(bool)
            coded = coded.reshape(nby, nbx)
            count = coded_elements(t, coded)
            alpha = entropy.Alphabet.residual(n_bits)
            data, nbits = r.section()
            # Kept as the coder's symbols (uint16): a few bytes of zero runs can announce 2^24
            # of them, and the decoder adds them into the prediction in place (add_residual).
            residual = entropy.decode(header.coder, data, nbits, count, alpha, res_tables[i])
        out.append(PredTensor(mvs, coded, None, symbols=residual))
    r.done()
    return out


def read_pred_ctx(header: StreamHeader, payload: bytes, reference: Held) -> list[PredTensor]:
    """Parse and reconstruct a ctx predicted frame against the reference it names. The
    vectors are compensated a band at a time as they are decoded (2 bytes per block and lane
    held whole would be 32 MB for 2^24 one-element blocks) and the residual is decoded into
    the prediction in place (docs/bitstream.md, 11): the returned tensors' ``mvs`` are None."""
    r = Reader(payload)
    p = header.search_range
    out = []
    for i, t in enumerate(header.tensors):
        lanes = mv_lanes(header, t)[2]
        dec = ctx.SectionDecoder(_ctx_section(r))
        pred, bad = ctx.decode_prediction(dec, reference.codes[i], lanes, p, t.block)
        if bad >= 0:
            raise BitstreamError(f"tensor {t.name!r}: a motion vector moves block {bad} outside the map")
        coded = None
        if header.residual:
            more = [_ctx_section(r) for _ in header.slices(t)[1:]]
            coded, recon, changes = ctx.decode_pred_residual(
                dec, pred, reference.changes[i], t.block, reference.n_bits, more, in_place=True
            )
        else:
            recon, changes = pred, np.zeros(pred.shape, np.int8)
        dec.finish()
        out.append(PredTensor(None, coded, None, None, recon, changes))
    r.done()
    return out


def coded_elements(t: TensorInfo, coded: np.ndarray) -> int:
    """Number of residual values the coded blocks hold (edge blocks are truncated)."""
    b = t.block
    heights = np.minimum(b, t.height - b * np.arange(coded.shape[0], dtype=np.int64))
    last = t.width - b * (coded.shape[1] - 1)  # the width of the last block column
    # Per block row: b per coded block, less what the last column lacks (no array of the blocks' sizes).
    widths = coded.sum(axis=1, dtype=np.int64) * b - coded[:, -1] * (b - last)
    return int(widths @ heights) * t.channels


def gather_blocks(arr: np.ndarray, coded: np.ndarray, block: int) -> np.ndarray:
    """Concatenate the coded blocks of an (H, W, C) array, raster order, each block's
    elements in raster order with the channel fastest."""
    parts = [
        arr[by * block : (by + 1) * block, bx * block : (bx + 1) * block].reshape(-1)
        for by, bx in zip(*np.nonzero(coded), strict=True)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, arr.dtype)


def scatter_blocks(dst: np.ndarray, values: np.ndarray, coded: np.ndarray, block: int) -> None:
    """Inverse of :func:`gather_blocks`: write the values into the coded blocks of ``dst``."""
    pos = 0
    for by, bx in zip(*np.nonzero(coded), strict=True):
        view = dst[by * block : (by + 1) * block, bx * block : (bx + 1) * block]
        n = view.size
        view[...] = values[pos : pos + n].reshape(view.shape)
        pos += n


def add_residual(codes: np.ndarray, coded: np.ndarray, block: int, symbols: np.ndarray, zero: int, top: int) -> int:
    """Add the residuals ``symbols - zero`` (the order of :func:`gather_blocks`) into the coded
    blocks of ``codes`` (H, W, C), contiguous uint8, in place, with no copy of the map. Returns
    -1, or the position of the first value whose code would leave 0..``top`` (the values
    before it are added; the caller drops the map). Compiled:
    :func:`temposplit.codec._kernels.add_residual`; without numba its NumPy definition,
    :func:`add_residual_reference`."""
    if codes.dtype != np.uint8 or not codes.flags.c_contiguous or not codes.flags.writeable:
        raise ValueError("add_residual rebuilds a contiguous, writeable uint8 map in place")
    coded = np.ascontiguousarray(coded, np.bool_)
    if K.COMPILED:
        first = int(K.add_residual(codes, coded, block, symbols, zero, top))
    else:
        first = add_residual_reference(codes, coded, block, symbols, zero, top)
    if first == -2:
        raise BitstreamError(f"{symbols.size} residual values do not fill the coded blocks")
    return first


def add_residual_reference(codes, coded, block: int, symbols, zero: int, top: int) -> int:
    """The readable definition of :func:`add_residual`: gather the coded blocks, add, check,
    scatter back the values before the first one out of range (-2: a wrong symbol count)."""
    base = gather_blocks(codes, coded, block).astype(np.int16)
    if base.size != symbols.size:
        return -2
    rebuilt = base + symbols.astype(np.int16) - np.int16(zero)
    bad = np.flatnonzero((rebuilt < 0) | (rebuilt > top))
    first = int(bad[0]) if bad.size else -1
    if first >= 0:
        rebuilt[first:] = base[first:]
    scatter_blocks(codes, rebuilt.astype(np.uint8), coded, block)
    return first
