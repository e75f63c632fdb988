"""The v2 coder ``ctx`` in RTL, whole: a front of :mod:`temposplit.hw.ctx_binarizer`
into :class:`~temposplit.hw.range_coder.RangeEncoder`, values in, a section's bytes out
(docs/fabric.md "The v2 coder `ctx` in RTL").

- :class:`AnchorCoder`: an anchor's elements (the front computes their contexts);
- :class:`ValueCoder`: any section from the stream words of its value records;
- :class:`CtxCoder`: the top's engine, both fronts and one range encoder;
- :class:`DualValueCoder`: two sections from value records at once (two CTX slices) on
  one :class:`~temposplit.hw.dual_range_coder.DualRangeEncoder`;
- :class:`DualCtxCoder`: the ctx engine on it: lane 0 as :class:`CtxCoder` (an anchor's
  elements or value records), lane 1 value records;
- :class:`SlicePacker`: an engine's bytes into tagged stream words (CTX slices).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw import regmap
from temposplit.hw.ctx_binarizer import (
    ANCHOR_CONFIG,
    AnchorBinarizer,
    RecordUnpack,
    ValueBins,
    element_layout,
    word_layout,
)
from temposplit.hw.dual_range_coder import LANES, DualRangeEncoder
from temposplit.hw.range_coder import RangeEncoder, byte_layout
from temposplit.hw.register_slice import FifoSlice


class AnchorCoder(wiring.Component):
    """An anchor tensor's ``ctx`` section (6.2.3): :class:`AnchorBinarizer` into
    :class:`RangeEncoder`, elements in, the section's bytes out."""

    def __init__(self, line_elements: int = 16384, fifo_depth: int = 32):
        self.line_elements = line_elements
        self.fifo_depth = fifo_depth
        super().__init__(
            {
                "i": In(stream.Signature(element_layout)),
                "o": Out(stream.Signature(byte_layout)),
                **{name: In(width) for name, width in ANCHOR_CONFIG.items()},
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.bins = bins = AnchorBinarizer(self.line_elements)
        m.submodules.coder = coder = RangeEncoder(self.fifo_depth)
        wiring.connect(m, wiring.flipped(self.i), bins.i)
        wiring.connect(m, bins.o, coder.i)
        wiring.connect(m, coder.o, wiring.flipped(self.o))
        for name in ANCHOR_CONFIG:
            m.d.comb += getattr(bins, name).eq(getattr(self, name))
        return m


class ValueCoder(wiring.Component):
    """A ``ctx`` section from the stream words of its value records (a value a cycle at
    most): :class:`RecordUnpack`, :class:`ValueBins`, :class:`RangeEncoder`; the section's
    bytes out, its end at the word marked ``last``. Any section: a predicted frame's
    vectors, flags and residual blocks, or an anchor of any size."""

    def __init__(self, fifo_depth: int = 32):
        self.fifo_depth = fifo_depth
        super().__init__({"i": In(stream.Signature(word_layout)), "o": Out(stream.Signature(byte_layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unpack = unpack = RecordUnpack()
        m.submodules.bins = bins = ValueBins()
        m.submodules.coder = coder = RangeEncoder(self.fifo_depth)
        wiring.connect(m, wiring.flipped(self.i), unpack.i)
        wiring.connect(m, unpack.o, bins.i)
        wiring.connect(m, bins.o, coder.i)
        wiring.connect(m, coder.o, wiring.flipped(self.o))
        return m


class DualValueCoder(wiring.Component):
    """Two ``ctx`` sections from value records at once (two CTX slices, docs/bitstream.md
    6.2.6): lane k's stream words in ``i[k]`` (:class:`RecordUnpack`, :class:`ValueBins`),
    its section's bytes out of ``o[k]``; the two fronts' bins into one
    :class:`~temposplit.hw.dual_range_coder.DualRangeEncoder`, a bin of each lane every two
    cycles."""

    def __init__(self, fifo_depth: int = 32):
        self.fifo_depth = fifo_depth
        super().__init__(
            {
                "i": In(stream.Signature(word_layout)).array(LANES),
                "o": Out(stream.Signature(byte_layout)).array(LANES),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.coder = coder = DualRangeEncoder(self.fifo_depth)
        for k in range(LANES):
            m.submodules[f"unpack{k}"] = unpack = RecordUnpack()
            m.submodules[f"bins{k}"] = bins = ValueBins()
            wiring.connect(m, wiring.flipped(self.i[k]), unpack.i)
            wiring.connect(m, unpack.o, bins.i)
            wiring.connect(m, bins.o, coder.i[k])
            wiring.connect(m, coder.o[k], wiring.flipped(self.o[k]))
        return m


class CtxCoder(wiring.Component):
    """The top's ``ctx`` engine: an anchor's elements (``i``, :class:`AnchorBinarizer`) or
    value records (``v``, :class:`RecordUnpack` and :class:`ValueBins`; ``records`` set),
    one :class:`RangeEncoder` for both; the section's bytes out. The section's end comes
    with the input (the element's or the record's ``last``)."""

    def __init__(self, line_elements: int = 16384, fifo_depth: int = 32):
        self.line_elements = line_elements
        self.fifo_depth = fifo_depth
        super().__init__(
            {
                "i": In(stream.Signature(element_layout)),
                "v": In(stream.Signature(word_layout)),
                "o": Out(stream.Signature(byte_layout)),
                **{name: In(width) for name, width in ANCHOR_CONFIG.items()},
                "records": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.anchor = anchor = AnchorBinarizer(self.line_elements)
        m.submodules.unpack = unpack = RecordUnpack()
        m.submodules.values = values = ValueBins()
        m.submodules.coder = coder = RangeEncoder(self.fifo_depth)
        wiring.connect(m, wiring.flipped(self.i), anchor.i)
        wiring.connect(m, wiring.flipped(self.v), unpack.i)
        wiring.connect(m, unpack.o, values.i)
        for name in ANCHOR_CONFIG:
            m.d.comb += getattr(anchor, name).eq(getattr(self, name))
        with m.If(self.records):
            m.d.comb += [coder.i.valid.eq(values.o.valid), coder.i.payload.eq(values.o.payload)]
            m.d.comb += values.o.ready.eq(coder.i.ready)
        with m.Else():
            m.d.comb += [coder.i.valid.eq(anchor.o.valid), coder.i.payload.eq(anchor.o.payload)]
            m.d.comb += anchor.o.ready.eq(coder.i.ready)
        wiring.connect(m, coder.o, wiring.flipped(self.o))
        return m


class DualCtxCoder(wiring.Component):
    """:class:`CtxCoder` on a :class:`~temposplit.hw.dual_range_coder.DualRangeEncoder`:
    lane 0 codes an anchor's elements (``i``) or, with ``records`` set, value records
    (``v[0]``), lane 1 value records (``v[1]``), side by side; lane k's bytes out of
    ``o[k]``, each lane a bin every two cycles at most."""

    def __init__(self, line_elements: int = 16384, fifo_depth: int = 32):
        self.line_elements = line_elements
        self.fifo_depth = fifo_depth
        super().__init__(
            {
                "i": In(stream.Signature(element_layout)),
                "v": In(stream.Signature(word_layout)).array(LANES),
                "o": Out(stream.Signature(byte_layout)).array(LANES),
                **{name: In(width) for name, width in ANCHOR_CONFIG.items()},
                "records": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.anchor = anchor = AnchorBinarizer(self.line_elements)
        m.submodules.coder = coder = DualRangeEncoder(self.fifo_depth)
        wiring.connect(m, wiring.flipped(self.i), anchor.i)
        for name in ANCHOR_CONFIG:
            m.d.comb += getattr(anchor, name).eq(getattr(self, name))
        values = []
        for k in range(LANES):
            m.submodules[f"unpack{k}"] = unpack = RecordUnpack()
            m.submodules[f"values{k}"] = vb = ValueBins()
            wiring.connect(m, wiring.flipped(self.v[k]), unpack.i)
            wiring.connect(m, unpack.o, vb.i)
            wiring.connect(m, coder.o[k], wiring.flipped(self.o[k]))
            values.append(vb)
        wiring.connect(m, values[1].o, coder.i[1])
        lane0 = coder.i[0]
        with m.If(self.records):
            m.d.comb += [lane0.valid.eq(values[0].o.valid), lane0.payload.eq(values[0].o.payload)]
            m.d.comb += values[0].o.ready.eq(lane0.ready)
        with m.Else():
            m.d.comb += [lane0.valid.eq(anchor.o.valid), lane0.payload.eq(anchor.o.payload)]
            m.d.comb += anchor.o.ready.eq(lane0.ready)
        return m


# a tagged output word of CTX slices (docs/fabric.md, "Slices"): 7 payload bytes and a header
SLICE_PAYLOAD = regmap.SLICE_PAYLOAD_BYTES
slice_word_layout = data.StructLayout({"word": unsigned(64), "last": unsigned(1)})


def packed_layout(nbytes: int) -> data.StructLayout:
    """A :class:`BytePacker`'s word: ``nbytes`` bytes (low byte first, unused ones 0), how
    many count (1..nbytes), the TKEEP of them, whether the last ends its section."""
    return data.StructLayout(
        {"data": unsigned(8 * nbytes), "count": unsigned(nbytes.bit_length()), "keep": unsigned(nbytes), "last": 1}
    )


class BytePacker(wiring.Component):
    """Bytes (``byte_layout``, ``last`` on a section's last byte) into words of ``nbytes``
    (:func:`packed_layout`): a word goes out when full or at the section's last byte.

    Every byte, the word's last included, goes into its place in ``acc``; the word then
    waits there (``pend``) and goes into a two-word FIFO (:class:`FifoSlice`) the next
    cycle, or when the FIFO has room, ``acc`` cleared as it goes (a byte taken in that
    cycle goes into place 0). So the FIFO's words come from registers with no select in
    front, every enable here is a function of registers (``n``, ``pend``, the FIFO's fill),
    and the output's ready -- a grant or an output slice across the die -- reaches only the
    FIFO's pointers (r21 on the ECP5 proxy: the packers' words' enables through the
    output's ready, 38-120 late inputs; r22: a word's select by the byte count into the
    FIFO, 30 at 11.8 ns). A byte a cycle in while no word waits or the FIFO has room; a
    word leaves two cycles after its last byte (the cycle model's CTX fills count it)."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        super().__init__({"i": In(stream.Signature(byte_layout)), "o": Out(stream.Signature(packed_layout(nbytes)))})

    def elaborate(self, platform):
        m = Module()
        B = self.nbytes
        m.submodules.out = out = FifoSlice(packed_layout(B))
        wiring.connect(m, out.o, wiring.flipped(self.o))
        acc = [Signal(8, name=f"acc{j}") for j in range(B)]
        n = Signal(range(B))  # the place of the next byte
        pend = Signal()  # acc holds a whole word
        pend_n = Signal(range(B))  # its last byte's place
        pend_keep = Signal(B)
        pend_last = Signal()  # it ends the section
        push = Signal()
        take = Signal()
        ends = Signal()  # this byte ends the word
        m.d.comb += [
            push.eq(pend & out.i.ready),
            self.i.ready.eq(~pend | out.i.ready),
            take.eq(self.i.valid & self.i.ready),
            ends.eq((n == B - 1) | self.i.p.last),
            out.i.valid.eq(pend),
            out.i.p.data.eq(Cat(*acc)),
            out.i.p.count.eq(pend_n + 1),
            out.i.p.keep.eq(pend_keep),
            out.i.p.last.eq(pend_last),
            out.clear.eq(0),
        ]
        # (a place follows the input while it is the next one and no word waits; a byte
        # that is not taken is overwritten by the one that is: ``n`` does not move)
        for j in range(B):
            with m.If((n == j) & (~pend | push)):
                m.d.sync += acc[j].eq(self.i.p.data)
            if j:
                with m.Elif(push):
                    m.d.sync += acc[j].eq(0)
        with m.If(take):
            m.d.sync += n.eq(Mux(ends, 0, n + 1))
            with m.If(ends):
                m.d.sync += [pend_n.eq(n), pend_last.eq(self.i.p.last)]
                for j in range(B):
                    with m.If(n == j):
                        m.d.sync += pend_keep.eq((1 << (j + 1)) - 1)
        m.d.sync += pend.eq((pend & ~push) | (take & ends))
        return m


class SlicePacker(wiring.Component):
    """One engine's bytes (``byte_layout``, ``last`` on a slice's last byte) into tagged
    64-bit words: payload bytes 0-6 (low byte first), bits 56-58 how many count (1-7),
    bits 59-60 ``engine``, bit 61 the slice's end (also ``last`` beside the word), bit 62
    the engine's ``lane`` (engines of two lanes). A :class:`BytePacker` of 7 bytes; the
    header is wiring of its word's fields and constants."""

    def __init__(self, engine: int, lane: int = 0):
        self.engine = engine
        self.lane = lane
        super().__init__({"i": In(stream.Signature(byte_layout)), "o": Out(stream.Signature(slice_word_layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bytes = bp = BytePacker(SLICE_PAYLOAD)
        wiring.connect(m, wiring.flipped(self.i), bp.i)
        word = Cat(
            bp.o.p.data,
            bp.o.p.count,
            Const(self.engine, regmap.SLICE_ENGINE_BITS),
            bp.o.p.last,
            Const(self.lane, 1),
            Const(0, 1),
        )
        # the fields where hw/regmap.py puts them (the driver reads them there)
        widths = [len(bp.o.p.data), len(bp.o.p.count), regmap.SLICE_ENGINE_BITS, 1, 1]
        lsbs = [sum(widths[:k]) for k in range(len(widths))]
        assert (
            lsbs[1:]
            == [
                regmap.SLICE_COUNT_LSB,
                regmap.SLICE_OUT_ENGINE_LSB,
                regmap.SLICE_OUT_LAST_BIT,
                regmap.SLICE_OUT_LANE_BIT,
            ]
            and widths[1] == regmap.SLICE_COUNT_BITS
            and len(word) == 64
        ), "the packer's word is hw/regmap.py's"
        m.d.comb += [
            self.o.valid.eq(bp.o.valid),
            bp.o.ready.eq(self.o.ready),
            self.o.p.word.eq(word),
            self.o.p.last.eq(bp.o.p.last),
        ]
        return m
