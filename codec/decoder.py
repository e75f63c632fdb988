"""The decoder: a stream's header and packets in, frames of N-bit codes out.

It trusts no field (docs/bitstream.md, "Decoding untrusted input"): sizes are checked
against the header's limits before allocation; a damaged packet gives a
:class:`~temposplit.codec.errors.BitstreamError` and the decoder drops what depends on
it, resuming at the next anchor whose tables it can rebuild (a KEY anchor always).

It holds the references a predicted frame may name: the group's anchor, the latest
refresh anchor and the two latest reconstructions; nothing else survives a packet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from temposplit.codec import _kernels as K
from temposplit.codec.bitstream import (
    FLAG_GROUP_START,
    KEY,
    PRED,
    Packet,
    StreamHeader,
    find_next_packet,
    header_length,
    packet_span,
    parse_packet,
)
from temposplit.codec.entropy import Alphabet
from temposplit.codec.errors import BitstreamError, ConfigurationError, LimitError, ReferenceMissingError
from temposplit.codec.payload import Held, add_residual, read_anchor, read_pred, read_pred_ctx
from temposplit.codec.quantize import dequantize, to_quint8

CRC_BUDGET = 16  # the CRC bytes iter_stream checks, at most, per byte of the stream


@dataclass
class DecodedFrame:
    index: int
    kind: str  # "key", "anchor" or "pred"
    n_bits: int
    reference: int | None
    codes: list[np.ndarray]  # per tensor, (C, H, W) uint8 N-bit codes (read-only: the decoder's references)
    header: StreamHeader

    def dequantize(self) -> list[np.ndarray]:
        """Float32 tensors (q_N - z_N) * s_N, (C, H, W)."""
        return [
            dequantize(c, t.scale, t.zero_point, self.n_bits)
            for c, t in zip(self.codes, self.header.tensors, strict=True)
        ]

    def quint8(self) -> list[np.ndarray]:
        """The codes on the 8-bit grid (scale s8, zero point z8), for an int8 M2."""
        return [to_quint8(c, t.zero_point, self.n_bits) for c, t in zip(self.codes, self.header.tensors, strict=True)]


@dataclass
class FrameError:
    """A packet that could not be decoded, and why. ``index`` is the frame it named, if known."""

    index: int | None
    error: BitstreamError


class Decoder:
    def __init__(self, header: StreamHeader | bytes):
        if not isinstance(header, StreamHeader):
            header = StreamHeader.from_bytes(_stream_bytes(header, "Decoder takes a StreamHeader or a stream's bytes"))
        self.header = header
        self.max_payload = header.max_payload()
        n = len(header.tensors)
        self.previous: list[tuple[int, np.ndarray] | None] = [None] * n
        self.previous_index: int | None = None  # the anchor `previous` was taken from
        self.tables: list[tuple[np.ndarray | None, np.ndarray | None]] | None = None
        self.tables_bits: int | None = None  # the N of the anchor the tables came from
        self.group_anchor: tuple[int, Held] | None = None  # (index, N and HWC codes)
        self.refresh_anchor: tuple[int, Held] | None = None
        self.recent: OrderedDict[int, Held] = OrderedDict()

    def reset(self) -> None:
        """Forget every reference (after a loss): only a self-contained anchor decodes next."""
        self.previous = [None] * len(self.header.tensors)
        self.previous_index = None
        self.tables = self.tables_bits = None
        self.group_anchor = self.refresh_anchor = None
        self.recent.clear()

    def decode(self, packet: Packet) -> DecodedFrame:
        """Decode one packet. On error the state that depended on it is dropped."""
        if not isinstance(packet, Packet):
            raise ConfigurationError(
                f"decode takes a Packet (bitstream.parse_packet of the bytes), not {type(packet).__name__}"
            )
        try:
            if len(packet.payload) > self.max_payload:
                raise BitstreamError("a packet's payload is larger than this stream allows")
            if packet.type == PRED:
                return self._pred(packet)
            return self._anchor(packet)
        except BitstreamError:
            if packet.type != PRED:
                self.reset()  # a lost anchor breaks the table chain and the group
            raise

    def _anchor(self, packet: Packet) -> DecodedFrame:
        h = self.header
        # An anchor's derived tables come from the anchor its reference field names.
        usable = packet.type != KEY and self.previous_index is not None and packet.reference == self.previous_index
        previous = self.previous if usable else [None] * len(h.tensors)
        reference = None
        if h.coder == "ctx" and packet.type != KEY and packet.reference != packet.index:
            try:
                reference = self._lookup(packet.reference)
            except ReferenceMissingError:
                reference = None  # fails in read_anchor if a tensor needs it
        n_bits, _, tensors = read_anchor(h, packet.payload, previous, reference)
        codes = [a.codes for a in tensors]
        held = Held(n_bits, codes, [a.changes for a in tensors])
        self.previous = [(n_bits, a.histogram) if a.histogram is not None else None for a in tensors]
        self.previous_index = packet.index
        self.tables = [(a.mv_table, a.residual_table) for a in tensors]
        self.tables_bits = n_bits
        if packet.flags & FLAG_GROUP_START:
            self.group_anchor = (packet.index, held)
            self.refresh_anchor = None
            self.recent.clear()
        else:
            self.refresh_anchor = (packet.index, held)
        self._remember(packet.index, held)
        return self._frame(packet, n_bits, None, codes)

    def _lookup(self, index: int) -> Held:
        for slot in (self.group_anchor, self.refresh_anchor):
            if slot is not None and slot[0] == index:
                return slot[1]
        if index in self.recent:
            return self.recent[index]
        raise ReferenceMissingError(f"frame {index} is not held by the decoder (lost, or never sent)")

    def _remember(self, index, held: Held) -> None:
        self.recent[index] = held
        while len(self.recent) > 2:
            self.recent.popitem(last=False)

    def _pred(self, packet: Packet) -> DecodedFrame:
        h = self.header
        if h.structure == "intra":
            raise BitstreamError("a predicted frame in an all-anchor stream")
        held = self._lookup(packet.reference)
        n_bits, ref = held.n_bits, held.codes
        if h.coder == "ctx":
            tensors = read_pred_ctx(h, packet.payload, held)
            codes = [pt.recon for pt in tensors]
            self._remember(packet.index, Held(n_bits, codes, [pt.changes for pt in tensors]))
            return self._frame(packet, n_bits, packet.reference, codes)
        if self.tables is None:
            raise ReferenceMissingError("no anchor has given this group's tables")
        if h.residual and self.tables_bits != n_bits:
            # The residual table covers the last anchor's N (docs/bitstream.md, 7 and 11).
            raise ReferenceMissingError(
                f"frame {packet.reference} has N = {n_bits}; the last anchor's residual tables are for "
                f"N = {self.tables_bits}"
            )
        mv_tables = [m for m, _ in self.tables]
        res_tables = [r for _, r in self.tables]
        tensors = read_pred(h, packet.payload, n_bits, mv_tables, res_tables)
        codes = []
        for t, pt, r in zip(h.tensors, tensors, ref, strict=True):
            if np.abs(pt.mvs.astype(np.int16)).max(initial=0) > h.search_range:
                raise BitstreamError("a motion vector is longer than the search range")
            comp = K.compensate_per_channel if h.per_channel else K.compensate_shared
            pred, bad = comp(r, pt.mvs, t.block)
            if bad >= 0:
                raise BitstreamError(f"tensor {t.name!r}: a motion vector moves block {bad} outside the map")
            if pt.coded is not None and pt.coded.any():
                # In place, no copy of the map: 2^24 residuals can come from a few bytes of zero runs.
                zero, top = Alphabet.residual(n_bits).zero, (1 << n_bits) - 1
                if add_residual(pred, pt.coded, t.block, pt.symbols, zero, top) >= 0:
                    raise BitstreamError(f"tensor {t.name!r}: a residual leaves the N-bit code range")
            codes.append(pred)
        self._remember(packet.index, Held(n_bits, codes, [None] * len(codes)))
        return self._frame(packet, n_bits, packet.reference, codes)

    def _frame(self, packet, n_bits, ref, codes) -> DecodedFrame:
        # Read-only views: the decoder keeps these codes as the reference of later frames, so
        # an edit in place would silently change those frames (copy a frame to change it).
        views = [c.transpose(2, 0, 1) for c in codes]
        for v in views:
            v.flags.writeable = False
        return DecodedFrame(packet.index, packet.kind, n_bits, ref, views, self.header)


def _stream_bytes(data, what: str) -> bytes:
    """``data`` (bytes-like) as bytes, or a :class:`ConfigurationError`: ``what``, not its type (a str, None)."""
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise ConfigurationError(f"{what}, not {type(data).__name__}") from None


def decode_stream(data: bytes) -> tuple[StreamHeader, list[DecodedFrame | FrameError]]:
    """Decode a whole stream held in memory: the header, then each packet in order.

    A damaged packet gives a :class:`FrameError` in its place and the reader moves to the
    next packet boundary (the next magic whose packet passes its CRC); frames that depend
    on a lost one give errors too, until an anchor restores the state.
    """
    data = _stream_bytes(data, "decode_stream takes the stream's bytes")
    header = StreamHeader.from_bytes(data)
    return header, list(iter_stream(data, header))


def iter_stream(data, header: StreamHeader) -> Iterator[DecodedFrame | FrameError]:
    """What :func:`decode_stream` returns, one packet at a time, from ``data`` (bytes, or an
    ``mmap`` of a stream file: nothing is copied but the packet being decoded) that starts
    with ``header``'s bytes. Only the decoder's references are held between packets."""
    decoder = Decoder(header)
    pos = header_length(data)
    # The CRCs checked in all cover at most CRC_BUDGET times the data (a whole stream takes one):
    # packet magics that each announce a packet reaching the end of the data would otherwise
    # cost time quadratic in its length (docs/bitstream.md, 11).
    budget = CRC_BUDGET * len(data)
    while pos < len(data):
        try:
            span = packet_span(data, pos, decoder.max_payload)
            if span > budget:
                break
            budget -= span
            packet, end = parse_packet(data, pos, decoder.max_payload)
        except BitstreamError as exc:
            # What depended on the lost packet fails its reference checks; the rest decodes.
            yield FrameError(None, _bare(exc))
            pos = find_next_packet(data, pos + 1)
            continue
        pos = end
        try:
            frame = decoder.decode(packet)
        except BitstreamError as exc:
            yield FrameError(packet.index, _bare(exc))
            continue
        yield frame
    else:
        return
    limit = f"the CRCs checked would pass {CRC_BUDGET} times the data's length at byte {pos}: the rest is skipped"
    yield FrameError(None, LimitError(limit))


def _bare(exc: BitstreamError) -> BitstreamError:
    """The error without its traceback and chained causes: a kept error must not hold the
    frames (and the arrays in them) it was raised from (docs/bitstream.md, 11)."""
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None
    return exc
