"""The byte-level stream format (docs/bitstream.md is its specification).

A stream is a header followed by packets. Every integer is little-endian; every
structure ends with a CRC-32 (zlib's polynomial) over all its preceding bytes. The
decoder trusts no field: each size is checked against the explicit limits below
before anything is allocated.
"""

from __future__ import annotations

import math
import numbers
import re
import struct
import zlib
from dataclasses import dataclass, field

from temposplit.codec import ctx, entropy, huffman
from temposplit.codec.errors import BitstreamError, ChecksumError, ConfigurationError, LimitError, TruncatedError
from temposplit.codec.motion import MAX_BLOCK, SEARCH_RANGES, grid_shape
from temposplit.codec.quantize import MAX_BITS, MIN_BITS
from temposplit.codec.structure import KINDS, MAX_GROUP

VERSION = (2, 2)  # the newest this decoder reads; a stream without a v2 coder is written as 1.0
V2_CODERS = ("ctx",)
HEADER_MAGIC = b"TSPS"
PACKET_MAGIC = b"TSPK"

# Explicit limits, checked before any allocation.
MAX_TENSORS = 8
MAX_NAME = 64
MAX_SIDE = 4096  # H and W
MAX_CHANNELS = 8192
MAX_TENSOR_ELEMENTS = 1 << 24
MAX_FRAME_ELEMENTS = 1 << 24
MAX_HEADER = 4096
MAX_FPS_MILLI = (1 << 32) - 1  # the frame rate's u32 field, in millihertz (0 is refused)
# s8 is below this (a float32 power of two), so that every dequantized value at every N,
# |q_N - z_N| * s8 * 2^(8-N) <= 256 * s8, is a finite float32 (docs/bitstream.md, 2 and 8)
SCALE_LIMIT = 2.0**120
# No name in the header holds a control character (C0, DEL, C1): a tensor's name becomes a
# zip member's name in a feature file, which a NUL cuts short, and names are printed in messages.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

KEY, ANCHOR, PRED = 1, 2, 3
PACKET_TYPES = {KEY: "key", ANCHOR: "anchor", PRED: "pred"}
FLAG_GROUP_START = 0x01

HEADER_FLAG_RESIDUAL = 0x01
HEADER_FLAG_CHAIN = 0x02
HEADER_FLAG_PER_CHANNEL = 0x04
HEADER_FLAG_RATE_CONTROL = 0x08
HEADER_FLAG_REFRESH = 0x10

_HEAD = struct.Struct("<4sBBHBBBBBBBBI32s")  # through the model hash
_TENSOR = struct.Struct("<HHHBBf")  # C, H, W, block, z8, s8
_PKT = struct.Struct("<4sBBHIII")  # magic, type, flags, reserved, index, reference, payload length
PACKET_OVERHEAD = _PKT.size + 4


@dataclass(frozen=True)
class TensorInfo:
    """One tensor crossing the cut: its name, shape (C, H, W), quint8 parameters and block size."""

    name: str
    channels: int
    height: int
    width: int
    scale: float
    zero_point: int
    block: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def elements(self) -> int:
        return self.channels * self.height * self.width

    def blocks(self) -> int:
        nby, nbx = grid_shape(self.height, self.width, self.block)
        return nby * nbx


@dataclass(frozen=True)
class StreamHeader:
    structure: str  # "intra" | "uni" | "bi"
    group: int
    coder: str
    search_range: int
    n_bits: int
    tensors: tuple[TensorInfo, ...]
    residual: bool = False
    chain: bool = False
    per_channel: bool = False
    rate_control: bool = False
    refresh: bool = False
    fps: float = 30.0
    model_id: str = ""
    cut_id: str = ""
    model_hash: bytes = bytes(32)
    ctx_slices: int = 1  # S of 6.2.6: a tensor's ctx section in min(S, C) slices
    version: tuple[int, int] | None = None  # as read; written: wire_version

    @property
    def wire_version(self) -> tuple[int, int]:
        """2.2 for a stream with ctx slices, 2.1 for one with a version 2 coder, else 1.0
        (docs/bitstream.md, 8)."""
        if self.coder not in V2_CODERS:
            return (1, 0)
        return (2, 2) if self.ctx_slices > 1 else (2, 1)

    def slices(self, t: TensorInfo) -> list[tuple[int, int]]:
        """The channel ranges of tensor ``t``'s ctx slices (one range without slices)."""
        return ctx.slice_bounds(t.channels, self.ctx_slices)

    @property
    def flags(self) -> int:
        return (
            HEADER_FLAG_RESIDUAL * self.residual
            | HEADER_FLAG_CHAIN * self.chain
            | HEADER_FLAG_PER_CHANNEL * self.per_channel
            | HEADER_FLAG_RATE_CONTROL * self.rate_control
            | HEADER_FLAG_REFRESH * self.refresh
        )

    def to_bytes(self) -> bytes:
        try:
            return self._to_bytes()
        except (struct.error, OverflowError, TypeError) as exc:  # a field past its wire range
            raise ConfigurationError(f"the stream header cannot carry these fields ({exc})") from exc

    def _to_bytes(self) -> bytes:
        if not 1 <= self.ctx_slices <= ctx.MAX_SLICES or (self.ctx_slices > 1 and self.coder not in V2_CODERS):
            raise ValueError(f"ctx_slices {self.ctx_slices} with the coder {self.coder!r} (1, or 2..32 with ctx)")
        out = bytearray(
            _HEAD.pack(
                HEADER_MAGIC,
                *self.wire_version,
                0,
                KINDS.index(self.structure),
                self.group,
                entropy.STREAM_CODERS.index(self.coder),
                self.flags,
                self.search_range,
                self.n_bits,
                len(self.tensors),
                self.ctx_slices if self.ctx_slices > 1 else 0,
                round(self.fps * 1000),
                self.model_hash,
            )
        )
        out += _pack_str(self.model_id) + _pack_str(self.cut_id)
        for t in self.tensors:
            out += _pack_str(t.name)
            out += _TENSOR.pack(t.channels, t.height, t.width, t.block, t.zero_point, t.scale)
        struct.pack_into("<H", out, 6, len(out) + 4)
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)

    @staticmethod
    def from_bytes(data: bytes) -> StreamHeader:
        """Parse and validate a header from the start of ``data``; see :func:`header_length`."""
        length = header_length(data)
        buf = bytes(data[:length])
        if zlib.crc32(buf[:-4]) != struct.unpack_from("<I", buf, length - 4)[0]:
            raise ChecksumError("the stream header fails its CRC-32")
        (_, major, minor, _, kind, group, coder, flags, p, n_bits, count, slices, fps_milli, mhash) = _HEAD.unpack_from(
            buf
        )
        if major not in (1, VERSION[0]):
            raise BitstreamError(f"stream version {major}.{minor} is not supported (this decoder reads 1.x and 2.x)")
        if (major, minor) == (2, 0):
            raise BitstreamError(
                "stream version 2.0: an early ctx format whose residual contexts changed in 2.1; re-encode it"
            )
        if major == VERSION[0] and minor > VERSION[1]:
            newest = f"{VERSION[0]}.{VERSION[1]}"
            raise BitstreamError(f"stream version {major}.{minor} is newer than this decoder ({newest})")
        if (major, minor) == (2, 2):
            if coder >= len(entropy.STREAM_CODERS) or entropy.STREAM_CODERS[coder] != "ctx":
                raise BitstreamError("a version 2.2 stream (ctx slices) without the coder 'ctx'")
            if not 2 <= slices <= ctx.MAX_SLICES:
                raise BitstreamError(f"a version 2.2 stream announces {slices} ctx slices (2..{ctx.MAX_SLICES})")
        else:
            slices = 1  # the byte is reserved before 2.2
        if kind >= len(KINDS):
            raise BitstreamError(f"unknown prediction structure {kind}")
        if not 1 <= group <= MAX_GROUP or (KINDS[kind] == "bi" and group % 2 == 0):
            raise BitstreamError(f"invalid group size {group}")
        if coder >= len(entropy.STREAM_CODERS):
            raise BitstreamError(f"unknown coder {coder}")
        if entropy.STREAM_CODERS[coder] in V2_CODERS and major < 2:
            raise BitstreamError(f"coder {entropy.STREAM_CODERS[coder]!r} in a version {major} stream")
        if p not in SEARCH_RANGES:
            raise BitstreamError(f"invalid search range {p}")
        if not MIN_BITS <= n_bits <= MAX_BITS:
            raise BitstreamError(f"invalid bit width N = {n_bits}")
        if not 1 <= count <= MAX_TENSORS:
            raise LimitError(f"{count} tensors per frame (1..{MAX_TENSORS} allowed)")
        if fps_milli == 0:
            raise BitstreamError("the frame rate is zero")
        pos = _HEAD.size
        model_id, pos = _read_str(buf, pos, length - 4)
        cut_id, pos = _read_str(buf, pos, length - 4)
        tensors = []
        total = 0
        for _ in range(count):
            name, pos = _read_str(buf, pos, length - 4)
            if pos + _TENSOR.size > length - 4:
                raise TruncatedError("the stream header ends inside a tensor record")
            c, h, w, b, z8, s8 = _TENSOR.unpack_from(buf, pos)
            pos += _TENSOR.size
            if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
                raise LimitError(f"tensor {name!r} has shape {c}x{h}x{w}, past the limits")
            if c * h * w > MAX_TENSOR_ELEMENTS:
                raise LimitError(f"tensor {name!r} has {c * h * w} elements (at most {MAX_TENSOR_ELEMENTS})")
            if not 1 <= b <= MAX_BLOCK:
                raise BitstreamError(f"tensor {name!r} has block size {b}")
            if not 0 < s8 < SCALE_LIMIT:  # NaN fails too
                raise BitstreamError(f"tensor {name!r} has an invalid scale {s8} (0 < s8 < 2^120)")
            total += c * h * w
            tensors.append(TensorInfo(name, c, h, w, float(s8), z8, b))
        if total > MAX_FRAME_ELEMENTS:
            raise LimitError(f"a frame of {total} elements is past the limit of {MAX_FRAME_ELEMENTS}")
        if pos != length - 4:
            raise BitstreamError("the stream header's length does not match its fields")
        return StreamHeader(
            structure=KINDS[kind],
            group=group,
            coder=entropy.STREAM_CODERS[coder],
            search_range=p,
            n_bits=n_bits,
            tensors=tuple(tensors),
            residual=bool(flags & HEADER_FLAG_RESIDUAL),
            chain=bool(flags & HEADER_FLAG_CHAIN),
            per_channel=bool(flags & HEADER_FLAG_PER_CHANNEL),
            rate_control=bool(flags & HEADER_FLAG_RATE_CONTROL),
            refresh=bool(flags & HEADER_FLAG_REFRESH),
            fps=fps_milli / 1000.0,
            model_id=model_id,
            cut_id=cut_id,
            model_hash=mhash,
            ctx_slices=slices,
            version=(major, minor),
        )

    def max_payload(self) -> int:
        """The largest payload a packet of this stream may announce."""
        total = 2 + 64
        for t in self.tensors:
            lanes = t.blocks() * (t.channels if self.per_channel else 1)
            worst_bits = t.elements * 2 * huffman.MAX_CODE_LENGTH + lanes * 2 * huffman.MAX_CODE_LENGTH + t.blocks()
            if self.coder == "ctx":  # 2 + 14 + 8 bins per value, each at most 12 bits, plus each slice's flush
                worst_bits = max(worst_bits, (t.elements + 2 * lanes + t.blocks()) * 24 * 12 + 96 * len(self.slices(t)))
            total += worst_bits // 8 + 64 + 3 * huffman.packed_size(2 ** (MAX_BITS + 1) + entropy.RUN_TOKENS)
        return total


def wire_fps_ok(fps) -> bool:
    """Whether the header's millihertz field carries ``fps`` (and the decoder takes it)."""
    try:
        return isinstance(fps, numbers.Real) and math.isfinite(fps) and 1 <= round(fps * 1000) <= MAX_FPS_MILLI
    except (OverflowError, ValueError, TypeError):
        return False


def wire_scale_ok(scale) -> bool:
    """Whether ``scale`` as the header's float32 is positive and below 2^120 (what the decoder
    takes: every value it dequantizes is then finite)."""
    try:
        (s32,) = struct.unpack("<f", struct.pack("<f", scale))
    except (struct.error, OverflowError, TypeError, ValueError):
        return False
    return 0 < s32 < SCALE_LIMIT


def control_character(name: str) -> str | None:
    """The first control character (U+0000..U+001F, U+007F..U+009F) in ``name``, or None."""
    found = _CONTROL.search(name)
    return None if found is None else found.group()


def header_length(data: bytes) -> int:
    """Length of the header at the start of ``data``, checked against the data and the limit."""
    if len(data) < 8:
        raise TruncatedError("the stream is shorter than its header")
    if bytes(data[:4]) != HEADER_MAGIC:
        raise BitstreamError("not a temposplit stream (bad magic)")
    length = struct.unpack_from("<H", data, 6)[0]
    if not _HEAD.size + 4 <= length <= MAX_HEADER:
        raise LimitError(f"a header length of {length} bytes is invalid")
    if len(data) < length:
        raise TruncatedError(f"the stream header announces {length} bytes, {len(data)} present")
    return length


@dataclass
class Packet:
    """One frame's packet. ``tensor_bytes`` (not serialized) is the payload bytes per tensor."""

    type: int
    index: int
    reference: int
    payload: bytes
    flags: int = 0
    tensor_bytes: list[int] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return PACKET_TYPES[self.type]

    @property
    def is_anchor(self) -> bool:
        return self.type in (KEY, ANCHOR)

    def to_bytes(self) -> bytes:
        head = _PKT.pack(PACKET_MAGIC, self.type, self.flags, 0, self.index, self.reference, len(self.payload))
        body = head + self.payload
        return body + struct.pack("<I", zlib.crc32(body))

    def __len__(self) -> int:
        return PACKET_OVERHEAD + len(self.payload)


def _packet_head(data: bytes, pos: int, max_payload: int) -> tuple[int, int, int, int, int]:
    """(type, flags, index, reference, end) of the packet at ``data[pos:]``, its header's
    fields checked (not its CRC)."""
    if len(data) - pos < _PKT.size:
        raise TruncatedError("the stream ends inside a packet header")
    magic, ptype, flags, _, index, ref, plen = _PKT.unpack_from(data, pos)
    if magic != PACKET_MAGIC:
        raise BitstreamError(f"no packet starts at byte {pos} (bad magic)")
    if ptype not in PACKET_TYPES:
        raise BitstreamError(f"unknown packet type {ptype} at byte {pos}")
    if plen > max_payload:
        raise LimitError(f"a packet announces {plen} payload bytes, more than this stream allows ({max_payload})")
    end = pos + _PKT.size + plen + 4
    if len(data) < end:
        raise TruncatedError(f"the packet at byte {pos} announces {plen} bytes past the end of the data")
    return ptype, flags, index, ref, end


def packet_span(data: bytes, pos: int, max_payload: int) -> int:
    """The bytes the packet at ``data[pos:]`` announces, CRC included: what :func:`parse_packet`
    reads to check it. Raises what parse_packet raises for its header, without the CRC's work."""
    return _packet_head(data, pos, max_payload)[-1] - pos


def parse_packet(data: bytes, pos: int, max_payload: int) -> tuple[Packet, int]:
    """The packet at ``data[pos:]`` and the position after it."""
    ptype, flags, index, ref, end = _packet_head(data, pos, max_payload)
    crc = struct.unpack_from("<I", data, end - 4)[0]
    with memoryview(data) as view, view[pos : end - 4] as body:  # no copy of the bytes checked
        ok = zlib.crc32(body) == crc
    if not ok:
        raise ChecksumError(f"the packet at byte {pos} (frame {index}) fails its CRC-32")
    payload = bytes(data[pos + _PKT.size : end - 4])
    return Packet(ptype, index, ref, payload, flags), end


def find_next_packet(data: bytes, pos: int) -> int:
    """Position of the next packet magic at or after ``pos`` (len(data) if none)."""
    find = data.find if hasattr(data, "find") else bytes(data).find  # bytes and mmap search in place
    i = find(PACKET_MAGIC, pos)
    return len(data) if i < 0 else i


class Reader:
    """Bounded reads from a payload; every read is checked against what remains."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TruncatedError(f"a payload field needs {n} bytes, {len(self.data) - self.pos} remain")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def section(self) -> tuple[bytes, int]:
        """A coded section: u32 bit count, then ceil(bits / 8) bytes."""
        nbits = self.u32()
        return self.take((nbits + 7) // 8), nbits

    def done(self) -> None:
        if self.pos != len(self.data):
            raise BitstreamError(f"{len(self.data) - self.pos} unexpected bytes after the payload's fields")


def section(data: bytes, nbits: int) -> bytes:
    return struct.pack("<I", nbits) + data


def _pack_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > MAX_NAME:
        raise BitstreamError(f"a name of {len(raw)} bytes is too long (at most {MAX_NAME}): {s!r}")
    return bytes([len(raw)]) + raw


def _read_str(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos >= end:
        raise TruncatedError("the stream header ends inside a name")
    n = buf[pos]
    if n > MAX_NAME or pos + 1 + n > end:
        raise LimitError("a name in the stream header is too long or truncated")
    try:
        name = buf[pos + 1 : pos + 1 + n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BitstreamError("a name in the stream header is not UTF-8") from exc
    bad = control_character(name)
    if bad is not None:
        raise BitstreamError(f"a name in the stream header holds the control character U+{ord(bad):04X}: {name!r}")
    return name, pos + 1 + n
