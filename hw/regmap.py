"""The fabric's register map and stream formats: the single source of truth.

Everything that must agree about the accelerator's interface derives from the data in
this module: the Amaranth top (:mod:`temposplit.hw.top` decodes the AXI-Lite addresses
and builds its registers from :data:`REGISTERS`), the driver
(:mod:`temposplit.hw.driver` reads offsets and field positions from here), the docs
(``docs/fabric.md``'s tables come from :func:`markdown`) and the Vivado side
(:func:`address_map_json`, :func:`c_header` and :func:`hwh_fragment`, written by
``python -m temposplit.hw.generate``).

Nothing here imports Amaranth, so the driver runs on the board's plain Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from temposplit.codec.ctx import MAX_SLICES

# ----------------------------------------------------------------------------- build parameters


# Bytes per AXI-Stream word (the 64-bit HP port) and SAD lanes of MOTION. Fixed: MOTION's
# 8-byte record is one stream word, and the DMA, the .hwh and the block design assume 64 bits.
LANES = 8


MAX_CTX_ENGINES = 4  # the engine index is two bits of a stream word (docs/fabric.md, "Slices")
MAX_CTX_LANES = 2  # sections per engine side by side (C-slow); the lane is one bit of a stream word
MAX_CTX_SLICES = MAX_SLICES  # CTX_SLICES.S: the bitstream's largest slice count
MAX_REF_BYTES = 1 << 26  # COUNT's 26 bits: no operation stores more codes in the reference
MAX_BLOCK_BYTES = 1 << 22  # BAND_PARAMS.GROUP_BLOCKS (block_words // 9) in its 16 bits


@dataclass(frozen=True)
class Params:
    """Elaboration parameters of one build of the accelerator (the run-time maxima).

    The stream is fixed at :data:`LANES` bytes per word (a 64-bit HP port; MOTION's
    8-byte record is one word), available as ``lanes``.

    Parameters
    ----------
    ref_bytes : int
        Capacity of the on-chip reference (the anchor's N-bit codes, one byte each).
    block_bytes : int
        Capacity of the current-block buffer of the motion estimator (B * B * C at most).
    max_alphabet : int
        Entries of the Huffman table and of the histogram (256 covers N = 8).
    band_bytes : int
        BAND_MOTION (maps over ``ref_bytes``): bytes of a chunk, the width of the reference
        RAM's port and of the SAD (a multiple of ``lanes``; the channel slice Cs is a
        multiple of it).
    band_blocks : int
        BAND_MOTION: blocks of a map whose TSS state (centre, best cost) is kept on chip.
    line_elements : int
        CTX: entries of the anchor coder's row buffer (the code and change of each element
        of a row: W x C at most this; a power of two).
    ctx_engines : int
        CTX with FLAGS.RECORDS: range coders E that code a pass's slices side by side (1..4;
        engine 0 is the anchor coder's, the others a records front and a range coder each).
    ctx_lanes : int
        CTX: sections each engine codes side by side (1 or 2; 2: a
        :class:`~temposplit.hw.dual_range_coder.DualRangeEncoder` per engine, each lane a
        bin every two cycles; slice i on lane unit i mod (E x lanes)).
    ctx_fifo_depth : int
        CTX slices: stream words each lane's input FIFO holds (a power of two).
    """

    ref_bytes: int = 256 * 1024
    block_bytes: int = 32 * 1024
    max_alphabet: int = 256
    band_bytes: int = 32
    band_blocks: int = 1024
    line_elements: int = 16384
    ctx_engines: int = 3
    ctx_lanes: int = 2
    ctx_fifo_depth: int = 16

    def __post_init__(self):
        for name in ("ref_bytes", "block_bytes"):
            v = getattr(self, name)
            if v <= 0 or v % self.lanes or (v // self.lanes) & (v // self.lanes - 1):
                raise ValueError(f"{name} must be lanes times a power of two, not {v}")
        if self.ref_bytes > MAX_REF_BYTES:
            raise ValueError(f"ref_bytes must be at most {MAX_REF_BYTES} (COUNT's 26 bits), not {self.ref_bytes}")
        if self.block_bytes > MAX_BLOCK_BYTES:
            raise ValueError(
                f"block_bytes must be at most {MAX_BLOCK_BYTES} (BAND_PARAMS.GROUP_BLOCKS's 16 bits), "
                f"not {self.block_bytes}"
            )
        r = self.band_bytes // self.lanes
        if self.band_bytes % self.lanes or r < 1 or r & (r - 1):
            raise ValueError(f"band_bytes must be lanes times a power of two, not {self.band_bytes}")
        if self.ref_words % r:
            raise ValueError(f"ref_bytes must be a multiple of band_bytes ({self.band_bytes}), not {self.ref_bytes}")
        if self.band_blocks < 1 or self.band_blocks & (self.band_blocks - 1):
            raise ValueError(f"band_blocks must be a power of two, not {self.band_blocks}")
        if self.line_elements < 1 or self.line_elements & (self.line_elements - 1):
            raise ValueError(f"line_elements must be a power of two, not {self.line_elements}")
        if not 1 <= self.ctx_engines <= MAX_CTX_ENGINES:
            raise ValueError(f"ctx_engines must be 1..{MAX_CTX_ENGINES}, not {self.ctx_engines}")
        if not 1 <= self.ctx_lanes <= MAX_CTX_LANES:
            raise ValueError(f"ctx_lanes must be 1..{MAX_CTX_LANES}, not {self.ctx_lanes}")
        if self.ctx_fifo_depth < 2 or self.ctx_fifo_depth & (self.ctx_fifo_depth - 1):
            raise ValueError(f"ctx_fifo_depth must be a power of two >= 2, not {self.ctx_fifo_depth}")
        if self.max_alphabet != 256:
            raise ValueError(f"max_alphabet must be 256 (N up to 8), not {self.max_alphabet}")

    @property
    def lanes(self) -> int:
        """Bytes per stream word and SAD lanes of MOTION: :data:`LANES`, not a build option."""
        return LANES

    @property
    def ref_words(self) -> int:
        return self.ref_bytes // self.lanes

    @property
    def block_words(self) -> int:
        return self.block_bytes // self.lanes

    @property
    def band_words(self) -> int:
        """Stream words per band chunk (and per word of the reference RAM)."""
        return self.band_bytes // self.lanes

    @property
    def ctx_units(self) -> int:
        """CTX slices coded side by side: every engine's lanes (slice i on unit i mod this;
        unit v is engine v mod E's lane v div E)."""
        return self.ctx_engines * self.ctx_lanes

    def params_word(self) -> int:
        """The PARAMS register's value of this build: what the top reads out and the driver
        probes (a build with HISTOGRAM, CTX, slices and lanes)."""
        return pack(
            "PARAMS",
            LANES=self.lanes,
            REF_LOG2=self.ref_bytes.bit_length() - 1,
            BLOCK_LOG2=self.block_bytes.bit_length() - 1,
            LINE_LOG2=self.line_elements.bit_length() - 1,
            HISTOGRAM=1,
            ENGINES=self.ctx_engines,
            CTX_LANES=self.ctx_lanes,
        )

    @property
    def band_group_blocks(self) -> int:
        """BAND_MOTION: blocks of one group (its partial costs, 9 per block, live in the block buffer)."""
        return self.block_words // 9


DEFAULT = Params()

# Run-time limits the driver checks before it programs anything (docs/requirements.md section 7: they
# cover 200x272x256 and every SSD cut). Shapes above ref_bytes are coded (modes ENCODE,
# REQUANT); their motion search is BAND_MOTION (the reference streamed from DDR in bands).
MAX_WIDTH = 1023
MAX_HEIGHT = 1023
MAX_CHANNELS = 4095
MAX_ELEMENTS = (1 << 26) - 1
CTX_MAX_WORDS = MAX_ELEMENTS // 8  # stream words of a CTX pass of value records (COUNT = 8 x them)
MAX_BLOCK = 64
SEARCH_RANGES = (3, 7, 15)
ID_MAGIC = 0x54535031  # "TSP1"


def ctx_passes(slice_words: list[int]) -> tuple[list[list[int]], list[int]]:
    """How a tensor's ctx slices (``slice_words[k]``: slice k's stream words of value records)
    go into CTX passes: consecutive slices in one pass while their words fit
    :data:`CTX_MAX_WORDS`, so as few passes as that allows (one for every map but the
    largest). Returns (the passes, each a list of slice indices; the slices over one pass on
    their own, coded in software)."""
    passes, alone, batch, words = [], [], [], 0
    for k, n in enumerate(slice_words):
        if n > CTX_MAX_WORDS:
            alone.append(k)
            continue
        if batch and words + n > CTX_MAX_WORDS:
            passes.append(batch)
            batch, words = [], 0
        batch.append(k)
        words += n
    if batch:
        passes.append(batch)
    return passes, alone


# ----------------------------------------------------------------------------- modes

MODES = {
    # name: (value, what the input stream carries -> what the output stream carries)
    "ENCODE": (
        0,
        "COUNT symbols (bytes) -> Huffman bit section; histogram counted; codes kept as reference if STORE_REF",
    ),
    "REQUANT": (1, "COUNT quint8 codes -> COUNT N-bit codes (one byte each); kept as reference if STORE_REF"),
    "LOAD_REF": (
        2,
        "COUNT N-bit codes of the anchor -> nothing (one empty TLAST word); written to the on-chip reference",
    ),
    "MOTION": (3, "the current frame's quint8 codes in block order -> one record per block (vector and cost)"),
    "BAND_MOTION": (
        4,
        "TSS of a map over the on-chip reference: per step, group and channel slice the "
        "reference band's N-bit codes then the current blocks (BAND stream order) -> one "
        "record per block, as MOTION",
    ),
    "CTX": (
        5,
        "COUNT quint8 codes (FLAGS.REQUANT; else N-bit codes), with FLAGS.TEMPORAL each word of them followed "
        "by the reference's word of N-bit codes and its word of changes (D_R + 1, one byte each) -> the "
        "anchor's ctx section (docs/bitstream.md 6.2.3: intra, or temporal against that reference); BITS = "
        "8 x its bytes; the codes kept as reference if STORE_REF. With FLAGS.RECORDS: COUNT / 8 stream words of "
        "value records (any section: a predicted frame's vectors, flags and residual blocks, or an anchor) -> "
        "that ctx section",
    ),
    "HISTOGRAM": (
        6,
        "COUNT quint8 codes (FLAGS.REQUANT; else symbols) -> nothing (one empty TLAST word); the histogram of "
        "the (N-bit) codes counted a stream word a cycle (HIST_DATA), the codes kept as reference if STORE_REF",
    ),
}


def mode(name: str) -> int:
    return MODES[name][0]


# ----------------------------------------------------------------------------- registers


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    doc: str

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """A 32-bit register. ``access``: ``rw`` (configuration, read back), ``ro`` (status),
    ``wo`` (write strobe: a write triggers an action, reads return 0)."""

    name: str
    offset: int
    access: str
    doc: str
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name}")

    @property
    def width(self) -> int:
        return max((f.lsb + f.width for f in self.fields), default=32)


def _r(name, offset, access, doc, *fields):
    return Register(name, offset, access, doc, tuple(Field(*f) for f in fields))


REGISTERS: tuple[Register, ...] = (
    _r("ID", 0x00, "ro", "Magic 0x54535031 ('TSP1'): the accelerator and the register map version", ("ID", 0, 32, "")),
    _r(
        "PARAMS",
        0x04,
        "ro",
        "Build parameters",
        ("LANES", 0, 5, "bytes per stream word / SAD lanes"),
        ("REF_LOG2", 8, 5, "log2 of the on-chip reference capacity in bytes"),
        ("BLOCK_LOG2", 16, 5, "log2 of the current-block buffer capacity in bytes"),
        ("LINE_LOG2", 24, 5, "log2 of the CTX coder's row buffer in elements (0: no CTX)"),
        ("HISTOGRAM", 5, 1, "the HISTOGRAM mode (0: a build before it)"),
        ("ENGINES", 29, 3, "CTX range coders for slices of value records (0: one, a build before slices)"),
        ("CTX_LANES", 13, 2, "CTX sections each range coder codes side by side (0: one, a build before lanes)"),
    ),
    _r(
        "CTRL",
        0x08,
        "wo",
        "Write START=1 to run the configured MODE (ignored while BUSY)",
        ("START", 0, 1, "start an operation"),
        ("MODE", 4, 3, "ENCODE=0, REQUANT=1, LOAD_REF=2, MOTION=3, BAND_MOTION=4, CTX=5, HISTOGRAM=6"),
    ),
    _r(
        "STATUS",
        0x0C,
        "ro",
        "Operation status",
        ("BUSY", 0, 1, "an operation runs"),
        ("DONE", 1, 1, "the last operation finished (cleared by START)"),
    ),
    _r(
        "FLAGS",
        0x10,
        "rw",
        "Options of ENCODE, REQUANT, CTX and HISTOGRAM",
        (
            "REQUANT",
            0,
            1,
            "ENCODE/CTX/HISTOGRAM: requantize the input (quint8 -> N bits) before coding (counting); 0: the input "
            "bytes are the symbols",
        ),
        ("STORE_REF", 1, 1, "ENCODE/REQUANT/CTX/HISTOGRAM: also write the N-bit codes into the on-chip reference"),
        (
            "TEMPORAL",
            2,
            1,
            "CTX: a temporal anchor (mode 1 of 6.2.3), the reference's codes and changes interleaved in the input",
        ),
        (
            "RECORDS",
            3,
            1,
            "CTX: the input is the stream words of value records (any section: docs/fabric.md, Value records); "
            "REQUANT, STORE_REF and TEMPORAL are ignored",
        ),
    ),
    _r("NBITS", 0x14, "rw", "N, bits per requantized code (2..8)", ("N", 0, 4, "")),
    _r(
        "Z8",
        0x18,
        "rw",
        "quint8 zero point of the input frame (requantizer and MOTION's current frame)",
        ("Z8", 0, 8, ""),
    ),
    _r(
        "ZN_REF",
        0x1C,
        "rw",
        "z_N of the reference (anchor) codes, for MOTION, and of the anchor's codes for CTX (may equal 2^N)",
        ("ZN", 0, 9, ""),
    ),
    _r(
        "COUNT",
        0x20,
        "rw",
        "Symbols (elements) in the input of ENCODE / REQUANT / LOAD_REF / CTX / HISTOGRAM",
        ("COUNT", 0, 26, ""),
    ),
    _r("WIDTH", 0x24, "rw", "Map width W (MOTION, CTX)", ("W", 0, 10, "")),
    _r("HEIGHT", 0x28, "rw", "Map height H (MOTION)", ("H", 0, 10, "")),
    _r(
        "CHANNELS",
        0x2C,
        "rw",
        "Map channels C (MOTION: a multiple of LANES; CTX: W x C at most the build's line buffer)",
        ("C", 0, 12, ""),
    ),
    _r("BLOCK", 0x30, "rw", "Block size B (MOTION)", ("B", 0, 7, "")),
    _r("SEARCH", 0x34, "rw", "Search range p in {3, 7, 15} (MOTION)", ("P", 0, 4, "")),
    _r(
        "TABLE_INDEX",
        0x38,
        "rw",
        "Symbol whose Huffman code TABLE_DATA writes next (auto-increments)",
        ("INDEX", 0, 8, ""),
    ),
    _r(
        "TABLE_DATA",
        0x3C,
        "wo",
        "Write the code of symbol TABLE_INDEX (canonical code, MSB first)",
        ("CODE", 0, 15, "code bits, right-aligned"),
        ("LENGTH", 16, 4, "code length 1..15 (0: no code)"),
    ),
    _r("HIST_INDEX", 0x40, "rw", "Symbol whose count HIST_DATA reads", ("INDEX", 0, 8, "")),
    _r(
        "HIST_DATA",
        0x44,
        "ro",
        "Count of symbol HIST_INDEX in the last ENCODE or HISTOGRAM (whichever ran last)",
        ("COUNT", 0, 32, ""),
    ),
    _r(
        "BITS",
        0x48,
        "ro",
        "Bits of the last ENCODE's section (the data bytes are ceil(BITS/8)); CTX: 8 x the section's bytes "
        "(slices: 8 x all the sections' bytes)",
        ("BITS", 0, 32, ""),
    ),
    _r("CYCLES", 0x4C, "ro", "Clock cycles from START to DONE of the last operation", ("CYCLES", 0, 32, "")),
    _r(
        "BAND_PARAMS",
        0x50,
        "ro",
        "Build parameters of BAND_MOTION (0: no band engine)",
        ("CHUNK_LOG2", 0, 5, "log2 of the chunk (reference RAM word, SAD width) in bytes"),
        ("BLOCKS_LOG2", 8, 5, "log2 of the blocks whose TSS state is kept"),
        ("GROUP_BLOCKS", 16, 16, "blocks of one group at most (partial costs on chip)"),
    ),
    _r(
        "BAND_SLICE",
        0x54,
        "rw",
        "Channels per slice Cs (BAND_MOTION; divides C, a multiple of the chunk)",
        ("CS", 0, 12, ""),
    ),
    _r("BAND_GROUP", 0x58, "rw", "Block rows per group G (BAND_MOTION)", ("G", 0, 10, "")),
    _r(
        "CTX_SLICES",
        0x5C,
        "rw",
        "Slices S of a CTX pass with FLAGS.RECORDS (1..32; 0 acts as 1): S independent sections coded on "
        "E x L lanes (PARAMS.ENGINES, PARAMS.CTX_LANES), slice i on lane unit i mod (E x L); 1: one section, the "
        "plain stream formats",
        ("S", 0, 6, ""),
    ),
)

REG = {r.name: r for r in REGISTERS}
ADDRESS_BITS = 8  # AXI-Lite address width (the window is 256 bytes)
# Where the PS sees the registers (the Vivado address map, the .hwh, the PYNQ driver): PYNQ's
# usual first AXI-Lite slot on M_AXI_GP0, a 64 KiB segment (the 256-byte window repeats in it).
BASE_ADDRESS = 0x43C00000
SEGMENT_RANGE = 0x10000
VLNV = "temposplit:hls:temposplit_accel:1.0"  # the packaged IP's name; PYNQ binds its driver by it


def check_unique() -> None:
    offsets = [r.offset for r in REGISTERS]
    if len(set(offsets)) != len(offsets) or any(o % 4 for o in offsets):
        raise AssertionError("register offsets must be distinct multiples of 4")
    if max(offsets) >= 1 << ADDRESS_BITS:
        raise AssertionError("a register lies outside the AXI-Lite window")


check_unique()


def pack(reg: str, **values: int) -> int:
    """The word that sets the named fields of a register (others 0)."""
    r = REG[reg]
    word = 0
    for name, v in values.items():
        f = r.field(name)
        if not 0 <= int(v) < (1 << f.width):
            raise ValueError(f"{reg}.{name} = {v} does not fit in {f.width} bits")
        word |= int(v) << f.lsb
    return word


def unpack(reg: str, word: int) -> dict[str, int]:
    return {f.name: (word >> f.lsb) & ((1 << f.width) - 1) for f in REG[reg].fields}


# ----------------------------------------------------------------------------- stream formats

# CTX slices (docs/fabric.md "Slices"): the tag bits of a stream word, the one definition the
# driver (hw/driver.py), the top's dealer (hw/top.py) and the engines' packers
# (hw/ctx_coder.py SlicePacker) use. A value record ends at bit 49 and a run word's contexts
# at bit 53 (codec/ctx_records.py), so the input's tags are free bits of either word.
SLICE_LANE_BIT = 56  # input: the engine's lane (a build of two lanes an engine)
SLICE_LAST_BIT = 57  # input: the slice's last word
SLICE_ENGINE_LSB, SLICE_ENGINE_BITS = 58, 2  # input: the engine
SLICE_PAYLOAD_BYTES = 7  # output: payload bytes 0-6 (bits 0-55)
SLICE_COUNT_LSB, SLICE_COUNT_BITS = 8 * SLICE_PAYLOAD_BYTES, 3  # output: how many payload bytes count (1-7)
SLICE_OUT_ENGINE_LSB = SLICE_COUNT_LSB + SLICE_COUNT_BITS  # output: the engine (SLICE_ENGINE_BITS bits)
SLICE_OUT_LAST_BIT = SLICE_OUT_ENGINE_LSB + SLICE_ENGINE_BITS  # output: the slice's last word
SLICE_OUT_LANE_BIT = SLICE_OUT_LAST_BIT + 1  # output: the engine's lane; bit 63 zero


def _bits(lsb: int, width: int = 1) -> str:
    return f"bit {lsb}" if width == 1 else f"bits {lsb}-{lsb + width - 1}"


STREAM_FORMATS = {
    "input": (
        "AXI-Stream, LANES bytes per word (tdata bit 8i..8i+7 is byte i: little-endian, as the DMA reads "
        "memory). ENCODE/REQUANT/LOAD_REF/HISTOGRAM: COUNT bytes in the map's element order (channel-last raster: row, "
        "column, channel fastest), the last word padded. MOTION: the current frame's quint8 codes in block "
        "order: blocks in raster order, each block's rows top-down, each row the bw*C bytes of its columns "
        "(channel fastest) -- a run of bw*C contiguous bytes of the map, so the DMA's scatter-gather "
        "descriptors fetch a block row each. BAND_MOTION: for each TSS step s = (p+1)/2 .. 1, each group "
        "of G block rows (rows y_g .. y_e of the map, y_e = min(y_g + G*B, H)), each channel slice j of Cs "
        "channels: the reference's N-bit codes of rows max(0, y_g - p) .. min(H, y_e + p) - 1, all columns, "
        "channels j*Cs .. j*Cs + Cs - 1 (row, column, channel fastest), then the current frame's blocks of "
        "the group in block order with the slice's channels (each block row bw*Cs bytes). "
        "CTX: COUNT bytes in element order as ENCODE; with FLAGS.TEMPORAL in groups of three words per "
        "LANES elements: the anchor's codes, the reference's N-bit codes of the same elements, their "
        "changes D_R + 1 (0, 1, 2; one byte each), the last group's words padded; with FLAGS.RECORDS "
        "stream words of value records (a record in bits 0-49, or with bit 63 set a run of 1-6 zero values: "
        "the count in bits 60-62, their zero contexts 9 bits each from bit 0; the last word of COUNT / 8 "
        "ends the section, whatever a record's own last bit); with CTX_SLICES.S > 1 the S slices' words "
        "interleaved in any order that keeps each slice's own, each word tagged with its lane unit "
        "v = slice mod (E x L) (PARAMS.ENGINES, PARAMS.CTX_LANES): the engine v mod E in "
        f"{_bits(SLICE_ENGINE_LSB, SLICE_ENGINE_BITS)}, the lane v div E in {_bits(SLICE_LANE_BIT)} (0 on a build "
        f"of one lane an engine), {_bits(SLICE_LAST_BIT)} set on a slice's last word (COUNT / 8 "
        "the words of all slices). "
        "TLAST on the input is ignored (the counts rule)."
    ),
    "output": (
        "AXI-Stream, LANES bytes per word, little-endian bytes, TKEEP marks the bytes of the last word, TLAST "
        "on the last word of every operation. ENCODE: the Huffman section's bytes (bits MSB first, bytes "
        "filled from bit 7 down, the last byte zero-padded; BITS gives the exact bit count). REQUANT: COUNT "
        "N-bit codes, one byte each. LOAD_REF and HISTOGRAM: one word of zeros with TKEEP=0 (so that every "
        "operation ends with a TLAST). MOTION and BAND_MOTION: one 8-byte record per block in raster order (see "
        "MOTION_RECORD). "
        "CTX: the ctx section's bytes (docs/bitstream.md 6.2), BITS / 8 of them; with CTX_SLICES.S > 1 "
        f"tagged words instead, every TKEEP set: payload bytes 0-{SLICE_PAYLOAD_BYTES - 1} "
        f"({_bits(0, SLICE_COUNT_LSB)}), in {_bits(SLICE_COUNT_LSB, SLICE_COUNT_BITS)} how many of "
        f"them count (1-{SLICE_PAYLOAD_BYTES}), {_bits(SLICE_OUT_ENGINE_LSB, SLICE_ENGINE_BITS)} the engine, "
        f"{_bits(SLICE_OUT_LAST_BIT)} set on its slice's last word, {_bits(SLICE_OUT_LANE_BIT)} the engine's "
        "lane (0 on a build of one lane an engine), bit 63 zero; each lane unit's words in order, the units' "
        "interleaved; TLAST on the word that ends the S-th slice."
    ),
}

# Byte offset, width in bytes and meaning of a MOTION output record's fields.
MOTION_RECORD = (
    ("DY", 0, 1, "vertical component, int8 (two's complement)"),
    ("DX", 1, 1, "horizontal component, int8"),
    ("RESERVED", 2, 2, "zero"),
    ("COST", 4, 4, "the winning candidate's cost, uint32 little-endian"),
)
MOTION_RECORD_BYTES = 8


# ----------------------------------------------------------------------------- derived forms


def markdown() -> str:
    """The register and stream tables of docs/fabric.md."""
    lines = ["| offset | register | access | fields | meaning |", "| --- | --- | --- | --- | --- |"]
    for r in REGISTERS:
        fields = ", ".join(f"{f.name}[{f.lsb + f.width - 1}:{f.lsb}]" for f in r.fields)
        lines.append(f"| 0x{r.offset:02X} | {r.name} | {r.access} | {fields} | {r.doc} |")
    lines += ["", "| mode | value | input -> output |", "| --- | --- | --- |"]
    lines += [f"| {name} | {v} | {doc} |" for name, (v, doc) in MODES.items()]
    lines += ["", "| MOTION record field | byte | bytes | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {o} | {w} | {d} |" for n, o, w, d in MOTION_RECORD]
    lines += ["", *(f"- **{k} stream**: {v}" for k, v in STREAM_FORMATS.items())]
    return "\n".join(lines) + "\n"


def address_map(params: Params = DEFAULT) -> dict:
    return {
        "name": "temposplit_accel",
        "vlnv": VLNV,
        "s_axil": {"range": 1 << ADDRESS_BITS, "data_width": 32},
        "s_axis": {"data_width": 8 * params.lanes},
        "m_axis": {"data_width": 8 * params.lanes},
        "params": {
            "lanes": params.lanes,
            "ref_bytes": params.ref_bytes,
            "block_bytes": params.block_bytes,
            "band_bytes": params.band_bytes,
            "band_blocks": params.band_blocks,
            "line_elements": params.line_elements,
        },
        "registers": [
            {
                "name": r.name,
                "offset": r.offset,
                "access": r.access,
                "doc": r.doc,
                "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "doc": f.doc} for f in r.fields],
            }
            for r in REGISTERS
        ],
        "modes": {k: v for k, (v, _) in MODES.items()},
    }


def address_map_json(params: Params = DEFAULT) -> str:
    return json.dumps(address_map(params), indent=2) + "\n"


def c_header(params: Params = DEFAULT) -> str:
    out = ["/* Generated from temposplit/hw/regmap.py -- do not edit. */", "#pragma once", ""]
    for r in REGISTERS:
        out.append(f"#define TSP_{r.name}_OFFSET 0x{r.offset:02X}u")
        for f in r.fields:
            out.append(f"#define TSP_{r.name}_{f.name}_LSB {f.lsb}u")
            out.append(f"#define TSP_{r.name}_{f.name}_MASK 0x{f.mask:08X}u")
    out += [f"#define TSP_MODE_{k} {v}u" for k, (v, _) in MODES.items()]
    out.append(f"#define TSP_LANES {params.lanes}u")
    return "\n".join(out) + "\n"


_ACCESS = {"rw": "read-write", "ro": "read-only", "wo": "write-only"}


def hwh_fragment(params: Params = DEFAULT, base: int = BASE_ADDRESS) -> str:
    """The accelerator's MODULE entry in PYNQ's .hwh dialect (registers and address block),
    for a hand-made overlay description until Vivado writes the real one."""
    regs = "\n".join(
        f'          <REGISTER NAME="{r.name}">\n'
        f'            <PROPERTY NAME="ADDRESS_OFFSET" VALUE="0x{r.offset:X}"/>\n'
        f'            <PROPERTY NAME="SIZE" VALUE="32"/>\n'
        f'            <PROPERTY NAME="ACCESS" VALUE="{_ACCESS[r.access]}"/>\n'
        f'            <PROPERTY NAME="DESCRIPTION" VALUE="{r.doc}"/>\n'
        f"          </REGISTER>"
        for r in REGISTERS
    )
    return (
        f'<MODULE FULLNAME="/temposplit_accel_0" INSTANCE="temposplit_accel_0" MODTYPE="temposplit_accel" '
        f'VLNV="{VLNV}">\n'
        f"  <MEMORYMAP>\n"
        f'    <MEMRANGE ADDRESSBLOCK="reg0" BASENAME="C_BASEADDR" BASEVALUE="0x{base:08X}" '
        f'HIGHNAME="C_HIGHADDR" HIGHVALUE="0x{base + SEGMENT_RANGE - 1:08X}" INSTANCE="temposplit_accel_0" '
        f'INTERFACE="s_axil" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axil"/>\n'
        f"  </MEMORYMAP>\n"
        f"  <ADDRESSBLOCKS>\n"
        f'    <ADDRESSBLOCK NAME="reg0" INTERFACE="s_axil" RANGE="{1 << ADDRESS_BITS}" USAGE="register">\n'
        f"      <REGISTERS>\n{regs}\n      </REGISTERS>\n"
        f"    </ADDRESSBLOCK>\n"
        f"  </ADDRESSBLOCKS>\n"
        f"</MODULE>\n"
    )
