"""The accelerator's top level: AXI-Lite registers, an AXI-Stream in and out for an AXI DMA.

The registers and the stream formats are those of :mod:`temposplit.hw.regmap`; this
module builds its register file from that table (a register missing from either side
fails elaboration). Data path per mode::

    s_axis -> Requantizer --+--> Serializer -> HuffmanEncoder (table, histogram) -> m_axis   ENCODE
                            +--> m_axis                                                      REQUANT
                            +--> reference RAM (STORE_REF, LOAD_REF)
                            +--> WordHistogram (a bank per lane) -> one empty word       HISTOGRAM
    s_axis -> MotionEstimator (reference RAM, block buffer) -> records -> m_axis            MOTION
    s_axis -> BandMotion (the same RAMs: band, partial costs; state RAM) -> records -> m_axis BAND_MOTION
    s_axis -> Requantizer -> element serializer (x; p, t from the input's reference words)
              -> DualCtxCoder lane 0 (row buffer, context table) -> byte packer -> m_axis  CTX
                            +--> reference RAM (STORE_REF: the codes)
    s_axis -> (requantizer bypassed) -> DualCtxCoder lane 0's records -> byte packer      CTX, FLAGS.RECORDS
              -> m_axis
    s_axis -> (bypassed) -> dealer -> E x L input FIFOs -> E engines of L lanes           CTX, FLAGS.RECORDS,
              (DualCtxCoder, DualValueCoder...) -> E x L SlicePackers -> tagged words    CTX_SLICES > 1
              -> m_axis

CTX (a ``ctx`` anchor section, docs/bitstream.md 6.2.3, in one pass): the requantizer makes
the N-bit codes of each word; with FLAGS.TEMPORAL each such word is followed on the input
by the reference's word of codes and its word of changes (D_R + 1 a byte), which pass the
requantizer unchanged (its bypass is taken per word). The three words of a group meet in
staging registers, the element serializer gives :class:`~temposplit.hw.ctx_coder.CtxCoder`
one element (x, p, t) per cycle, and its bytes are packed into stream words (TKEEP,
TLAST on the section's last byte). With FLAGS.RECORDS each input word is a value record
(any section, docs/fabric.md "Value records") into the same coder's record port; with
CTX_SLICES > 1 each word carries its engine (bits 58-59), its lane (bit 56) and a slice's
end (bit 57), is dealt into that lane unit's input FIFO, and the units' bytes leave as
tagged words (docs/fabric.md "Slices"). With ``Params.ctx_lanes`` 2 (the default) each
engine is a two-lane range coder (docs/fabric.md "Two sections on one range coder"): a
section codes a bin every two cycles, two side by side a bin a cycle together.

HISTOGRAM (a KEY's histogram before its ENCODE pass): the requantizer's words go to
:class:`~temposplit.hw.histogram.WordHistogram`, which counts every lane of a word in a
cycle (a bank of counters per lane, summed into one at the end), so the pass runs at the
stream's rate; HIST_DATA then reads its counts (an ENCODE's after an ENCODE).

Every operation ends with a TLAST on m_axis (LOAD_REF sends one empty word), which is
what an AXI DMA's S2MM channel needs to complete a transfer; STATUS.DONE rises then. Both
stream ports go through a register slice (:mod:`temposplit.hw.register_slice`; docs/fabric.md
"The ports' register slices"): s_axis is ready only while BUSY, and START clears its slice.
Clock ``clk``, reset ``rst`` active high (Vivado: proc_sys_reset's peripheral_reset).
"""

from __future__ import annotations

import operator
from functools import reduce

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw import regmap
from temposplit.hw.ctx_coder import (
    BytePacker,
    CtxCoder,
    DualCtxCoder,
    DualValueCoder,
    SlicePacker,
    ValueCoder,
    slice_word_layout,
)
from temposplit.hw.histogram import WordHistogram
from temposplit.hw.huffman_encoder import HuffmanEncoder, Serializer
from temposplit.hw.motion_estimator import MotionEstimator
from temposplit.hw.range_coder import table_select
from temposplit.hw.register_slice import KEEP, SELECT_BITS, FifoSlice
from temposplit.hw.regmap import Params
from temposplit.hw.requantizer import Requantizer

# An input word's slice tag (hw/regmap.py, the one definition): its engine, its lane, and the
# slice's last word, bits _TAG_LO.._TAG_HI - 1, cleared from the word the dealer passes on.
_TAG_LO = regmap.SLICE_LANE_BIT
_TAG_HI = regmap.SLICE_ENGINE_LSB + regmap.SLICE_ENGINE_BITS
assert {regmap.SLICE_LANE_BIT, regmap.SLICE_LAST_BIT, *range(regmap.SLICE_ENGINE_LSB, _TAG_HI)} == set(
    range(_TAG_LO, _TAG_HI)
), "the slice tag's bits are one contiguous field"


def _word_engine(word):
    return word[regmap.SLICE_ENGINE_LSB : regmap.SLICE_ENGINE_LSB + regmap.SLICE_ENGINE_BITS]


def _word_lane(word):
    return word[regmap.SLICE_LANE_BIT]


def axi_lite_signature(addr_width: int = regmap.ADDRESS_BITS) -> wiring.Signature:
    """AXI4-Lite, as seen from the manager (the PS's GP port)."""
    return wiring.Signature(
        {
            "awaddr": Out(addr_width),
            "awprot": Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata": Out(32),
            "wstrb": Out(4),
            "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2),
            "bvalid": In(1),
            "bready": Out(1),
            "araddr": Out(addr_width),
            "arprot": Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata": In(32),
            "rresp": In(2),
            "rvalid": In(1),
            "rready": Out(1),
        }
    )


def axi_stream_signature(lanes: int) -> wiring.Signature:
    """AXI4-Stream, as seen from the transmitter."""
    return wiring.Signature(
        {
            "tdata": Out(8 * lanes),
            "tkeep": Out(lanes),
            "tlast": Out(1),
            "tvalid": Out(1),
            "tready": In(1),
        }
    )


class Accelerator(wiring.Component):
    """The temposplit fabric accelerator (one build of :class:`~temposplit.hw.regmap.Params`)."""

    def __init__(self, params: Params = regmap.DEFAULT):
        self.params = params
        super().__init__(
            {
                "s_axil": In(axi_lite_signature()),
                "s_axis": In(axi_stream_signature(params.lanes)),
                "m_axis": Out(axi_stream_signature(params.lanes)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        P = self.params
        L = P.lanes
        shift = L.bit_length() - 1
        modes = {k: v for k, (v, _) in regmap.MODES.items()}

        m.submodules.rq = rq = Requantizer(L)
        m.submodules.ser = ser = Serializer(L)
        m.submodules.enc = enc = HuffmanEncoder(L)
        m.submodules.hist = hist = WordHistogram(L)
        m.submodules.me = me = MotionEstimator(P)
        NL = P.ctx_lanes

        def by_lane(port):
            """A ctx engine's port as a list, one per lane (a two-lane engine's is an array)."""
            return [port[k] for k in range(NL)] if NL == 2 else [port]

        # engine 0 (two lanes: on a two-lane range coder); its lane 0 is the single-section path
        m.submodules.ctx = ctx = DualCtxCoder(P.line_elements) if NL == 2 else CtxCoder(P.line_elements)
        ctx_v0, ctx_o0 = by_lane(ctx.v)[0], by_lane(ctx.o)[0]
        # the ports' register slices: the DMA's handshakes meet the engines' only in registers
        # (two-word FIFOs: a ready reaches only their pointers, not the 64-bit words' enables,
        # which on the ECP5 proxy sit by the pins across the die -- r23 seed 1, the output
        # word's enable, 25 late inputs at 12.3 ns)
        m.submodules.in_slice = in_slice = FifoSlice(8 * L)
        m.submodules.out_slice = out_slice = FifoSlice(data.StructLayout({"data": 8 * L, "keep": L, "last": 1}))

        # ------------------------------------------------------------ register file
        rw = {r.name: Signal(r.width, name=f"reg_{r.name.lower()}") for r in regmap.REGISTERS if r.access == "rw"}
        busy = Signal()
        done = Signal()
        hist_last = Signal()  # HIST_DATA reads the HISTOGRAM pass's counts (the last of ENCODE, HISTOGRAM)
        bits = Signal(32)
        cycles = Signal(32)
        hist_data = Signal(32)  # the count at HIST_INDEX, registered
        m.d.sync += hist_data.eq(Mux(hist_last, hist.rd_data, enc.hist_data))
        ro = {
            "ID": Const(regmap.ID_MAGIC, 32),
            "PARAMS": Const(P.params_word(), 32),
            "STATUS": Cat(busy, done),
            "HIST_DATA": hist_data,
            "BITS": bits,
            "CYCLES": cycles,
            "BAND_PARAMS": Const(
                regmap.pack(
                    "BAND_PARAMS",
                    CHUNK_LOG2=P.band_bytes.bit_length() - 1,
                    BLOCKS_LOG2=P.band_blocks.bit_length() - 1,
                    GROUP_BLOCKS=P.band_group_blocks,
                ),
                32,
            ),
        }
        for r in regmap.REGISTERS:
            if r.access == "ro" and r.name not in ro:
                raise AssertionError(f"read-only register {r.name} has no source in the top")
        unknown = set(ro) - {r.name for r in regmap.REGISTERS}
        if unknown:
            raise AssertionError(f"registers {unknown} are not in the register map")

        def fld(reg, name):
            f = regmap.REG[reg].field(name)
            return rw[reg][f.lsb : f.lsb + f.width]

        bus = self.s_axil
        wstrobe = {r.name: Signal(name=f"wr_{r.name.lower()}") for r in regmap.REGISTERS}
        wdata = Signal(32)
        # Write, in three cycles: address and data taken together into registers; then the
        # address decoded into one register per register of the map; then the write, the
        # strobes and the answer (OKAY). So no path runs from the bus's pins into the
        # registers a write starts, and the strobes (START and every clear at START among
        # them) are registers, not a decode, in front of their wide fan-out: on the ECP5
        # proxy the top's ports are pins across the die (r27: the decode of `w_addr` into
        # START's clears and the histogram's read address, 12.1-12.3 ns)
        w_pending = Signal()  # the address and data are in w_addr, wdata
        w_commit = Signal()  # the decode is in w_hit: the write happens now
        w_addr = Signal(len(bus.awaddr) - 2)
        w_hit = {r.name: Signal(name=f"w_hit_{r.name.lower()}") for r in regmap.REGISTERS}
        m.d.comb += [bus.bresp.eq(0), bus.rresp.eq(0)]
        take_w = Signal()
        m.d.comb += [
            take_w.eq(bus.awvalid & bus.wvalid & ~bus.bvalid & ~w_pending & ~w_commit),
            bus.awready.eq(take_w),
            bus.wready.eq(take_w),
        ]
        # (the address and data follow the bus while no write is under way, so their enable
        # is registers, not the bus's valids through the handshake: r21 seed 1, their enable
        # from the pins' logic, 12.6 ns)
        with m.If(~w_pending & ~w_commit & ~bus.bvalid):
            m.d.sync += [w_addr.eq(bus.awaddr[2:]), wdata.eq(bus.wdata)]
        m.d.sync += [w_pending.eq(take_w), w_commit.eq(w_pending)]
        for r in regmap.REGISTERS:
            m.d.sync += w_hit[r.name].eq(w_pending & (w_addr == r.offset >> 2))
            m.d.comb += wstrobe[r.name].eq(w_hit[r.name])
            if r.access == "rw":
                with m.If(w_hit[r.name]):
                    m.d.sync += rw[r.name].eq(wdata[: r.width])
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        with m.If(w_commit):
            m.d.sync += bus.bvalid.eq(1)
        # Read, in three cycles: the address into a register, then decoded into a register
        # for each register of the map, then an AND-OR of the registers into rdata (the
        # decode and a 40-way select in one cycle were r31 seed 2's `rdata`, 10.4 ns).
        # (HIST_DATA's source is itself a register, a cycle behind HIST_INDEX: a read taken
        # in the cycle after a write's response still sees the write.)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        ar_v = Signal()  # the address is in ar_a
        ar_d = Signal()  # the decode is in ar_hit
        ar_a = Signal(len(bus.araddr) - 2)
        ar_hit = {r.name: Signal(name=f"ar_hit_{r.name.lower()}") for r in regmap.REGISTERS if r.access in ("rw", "ro")}
        m.d.comb += bus.arready.eq(~bus.rvalid & ~ar_v & ~ar_d)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += ar_a.eq(bus.araddr[2:])
        m.d.sync += [ar_v.eq(bus.arvalid & bus.arready), ar_d.eq(ar_v)]
        for r in regmap.REGISTERS:
            if r.name in ar_hit:
                m.d.sync += ar_hit[r.name].eq(ar_v & (ar_a == r.offset >> 2))
        with m.If(ar_d):
            m.d.sync += [
                bus.rvalid.eq(1),
                bus.rdata.eq(
                    reduce(
                        operator.or_,
                        (
                            Mux(h, (rw if r.access == "rw" else ro)[r.name], 0)
                            for r in regmap.REGISTERS
                            if (h := ar_hit.get(r.name)) is not None
                        ),
                    )
                ),
            ]

        # Huffman table writes (TABLE_INDEX auto-increments) and histogram reads.
        hist_index = Signal(8)
        with m.If(wstrobe["TABLE_DATA"]):
            m.d.sync += rw["TABLE_INDEX"].eq(rw["TABLE_INDEX"] + 1)
        m.d.comb += [
            enc.table_we.eq(wstrobe["TABLE_DATA"]),
            enc.table_addr.eq(rw["TABLE_INDEX"]),
            enc.table_code.eq(wdata[0:15]),
            enc.table_length.eq(wdata[16:20]),
            # (both histograms are synchronous reads: their address is HIST_INDEX's next
            # value, so a read right after HIST_INDEX's write sees it)
            hist_index.eq(Mux(wstrobe["HIST_INDEX"], wdata, rw["HIST_INDEX"])),
            enc.hist_addr.eq(hist_index),
            hist.rd_addr.eq(hist_index),
        ]

        # ------------------------------------------------------------ control
        mode = Signal(regmap.REG["CTRL"].field("MODE").width)
        start = Signal()
        ctrl = regmap.REG["CTRL"]
        # START and the mode it starts, decoded a cycle before the write (one register per
        # mode): START is a register and ~busy, the mode tests are registers
        w_start = Signal()
        new_is = {name: Signal(name=f"new_is_{name.lower()}") for name in modes}
        new_field = wdata[ctrl.field("MODE").lsb :][: len(mode)]
        m.d.sync += w_start.eq(w_pending & (w_addr == ctrl.offset >> 2) & wdata[ctrl.field("START").lsb])
        for name, value in modes.items():
            m.d.sync += new_is[name].eq(new_field == value)
        m.d.comb += start.eq(w_start & ~busy)
        count = fld("COUNT", "COUNT")
        words_left = Signal(count.shape().width - shift + 1)
        last_word = Signal()  # words_left == 1, a register (the compare is not in front of the take)
        last_nbytes = Signal(5)
        ref_ptr = Signal(range(P.ref_words))
        empty_pending = Signal()
        # CTX: the input word's, the requantizer's output word's (for the reference tap) and
        # CTX's input word's (after its register slice) place in a temporal group (0: the
        # anchor's codes, 1: the reference's codes, 2: its changes)
        in_phase = Signal(2)
        tap_phase = Signal(2)
        out_phase = Signal(2)
        # CTX's input word completes a group (~temporal | out_phase == 2): a register, set
        # with out_phase
        final_word = Signal(init=1)
        ctx_bytes = Signal(29)
        m.d.comb += bits.eq(Mux(mode == modes["CTX"], Cat(Const(0, 3), ctx_bytes), enc.bits))
        with m.If(start):
            m.d.sync += [
                mode.eq(new_field),
                busy.eq(1),
                done.eq(0),
                cycles.eq(0),
                words_left.eq((count + (L - 1)) >> shift),
                last_word.eq(((count + (L - 1)) >> shift) == 1),
                last_nbytes.eq(((count - 1) & (L - 1)) + 1),
                empty_pending.eq(0),
                in_phase.eq(0),
                tap_phase.eq(0),
                out_phase.eq(0),
                ctx_bytes.eq(0),
            ]
        with m.Elif(busy):
            m.d.sync += cycles.eq(cycles + 1)
        # the encoder's start through a register (its clear is 256 cycles long anyway): it
        # gates the encoder's input, at the end of the stream's ready chain
        m.d.sync += enc.start.eq(start & new_is["ENCODE"])
        m.d.sync += hist.start.eq(start & new_is["HISTOGRAM"])
        with m.If(start & new_is["ENCODE"]):
            m.d.sync += hist_last.eq(0)
        with m.If(start & new_is["HISTOGRAM"]):
            m.d.sync += hist_last.eq(1)
        # START a cycle late for what sits across the die and has the time: MOTION's start
        # (its first block's set-up runs while the first word is on its way) and the
        # reference tap's pointer (its first write is cycles after the first word): the
        # decode of the AXI-Lite write into their enables was among r24 seed 2's late
        # inputs (`row_words`, `x0`, `y0`, `ref_addr`: 51 at up to 12.2 ns)
        start_r = Signal()
        me_start = Signal()
        m.d.sync += [start_r.eq(start), me_start.eq(start & new_is["MOTION"])]
        with m.If(start_r):
            m.d.sync += ref_ptr.eq(0)
        m.d.comb += [
            me.start.eq(me_start),
            me.band_start.eq(start & new_is["BAND_MOTION"]),
        ]
        # MOTION or BAND_MOTION: the input goes to the motion estimator; BAND_MOTION: its
        # band engine (registers set at START, as MODE is: no decode in front of the input's
        # valid and the band engine's enables)
        searching = Signal()
        band = Signal()
        with m.If(start):
            m.d.sync += [
                searching.eq(new_is["MOTION"] | new_is["BAND_MOTION"]),
                band.eq(new_is["BAND_MOTION"]),
            ]

        # ------------------------------------------------------------ configuration
        store_ref = fld("FLAGS", "STORE_REF")
        is_ctx = Signal()
        temporal = Signal()  # CTX with the reference's words in the input
        records = Signal()  # CTX with value records in the input, one a word
        ctx_elements = Signal()  # CTX with an anchor's elements in the input (not records)
        sliced = Signal()  # CTX with value records of CTX_SLICES > 1 slices: tagged words in and out
        n_slices = Signal(6)
        # (decoded once, at START, from the mode and the configuration it starts with: the
        # decodes are registers, not logic in front of everything they select)
        new_ctx = new_is["CTX"]
        # the requantizer's consumer, one-hot, also registered at START: its output's ready
        # is an AND-OR of these and the consumers' readies (no decode of MODE in front of the
        # requantizer's output registers' enables)
        to_ser, to_ma, to_hist, to_sink = Signal(init=1), Signal(), Signal(), Signal()  # (MODE resets to ENCODE)
        with m.If(start):
            m.d.sync += [
                to_ser.eq(new_is["ENCODE"]),
                to_ma.eq(new_is["REQUANT"]),
                to_hist.eq(new_is["HISTOGRAM"]),
                to_sink.eq(new_is["LOAD_REF"] | new_is["MOTION"] | new_is["BAND_MOTION"]),
            ]
        new_records = new_ctx & fld("FLAGS", "RECORDS")
        bypass = Signal()  # the requantizer passes the words unchanged (but a temporal group's phase)
        with m.If(start):
            m.d.sync += [
                bypass.eq(
                    new_is["LOAD_REF"]
                    | ((new_is["ENCODE"] | new_is["HISTOGRAM"] | new_ctx) & ~fld("FLAGS", "REQUANT"))
                    | new_records
                ),
                is_ctx.eq(new_ctx),
                records.eq(new_records),
                ctx_elements.eq(new_ctx & ~new_records),
                temporal.eq(new_ctx & fld("FLAGS", "TEMPORAL") & ~new_records),
                final_word.eq(~(new_ctx & fld("FLAGS", "TEMPORAL") & ~new_records)),
                sliced.eq(new_records & (rw["CTX_SLICES"] > 1)),
            ]
        m.d.comb += n_slices.eq(rw["CTX_SLICES"])
        m.d.comb += [
            rq.n_bits.eq(rw["NBITS"]),
            rq.z8.eq(rw["Z8"]),
            # (taken per word: a temporal group's reference words pass unchanged)
            rq.bypass.eq(bypass | (temporal & (in_phase != 0))),
            me.width.eq(rw["WIDTH"]),
            me.height.eq(rw["HEIGHT"]),
            me.channels.eq(rw["CHANNELS"]),
            me.block.eq(rw["BLOCK"]),
            me.search.eq(rw["SEARCH"]),
            me.n_bits.eq(rw["NBITS"]),
            me.z8.eq(rw["Z8"]),
            me.zn_ref.eq(rw["ZN_REF"]),
            me.band.eq(band),
            me.band_slice.eq(rw["BAND_SLICE"]),
            me.band_group.eq(rw["BAND_GROUP"]),
            ctx.width.eq(rw["WIDTH"]),
            ctx.channels.eq(rw["CHANNELS"]),
            ctx.n_bits.eq(rw["NBITS"]),
            ctx.z_n.eq(rw["ZN_REF"]),
            ctx.temporal.eq(temporal),
            ctx.records.eq(records),
        ]

        # ------------------------------------------------------------ input side
        # The input port into its slice while an operation runs (the slice is cleared at
        # START: words left over from an over-long input never reach an operation); the
        # slice's words to the requantizer while the count lasts, or to the estimator.
        port_in = self.s_axis
        m.d.comb += [
            in_slice.i.valid.eq(port_in.tvalid & busy),
            in_slice.i.payload.eq(port_in.tdata),
            port_in.tready.eq(in_slice.i.ready & busy),
            in_slice.clear.eq(start),
        ]
        sa = in_slice.o
        # the motion estimator's input through its own register slice (cleared at START): its
        # valid reaches the band engine's wide chunk registers' enables from a register beside
        # them, not from the port's slice across the die (before, the top's largest group of
        # late inputs on the ECP5 proxy: those enables, 250 inputs at up to 12.6 ns); a
        # FifoSlice, so that the estimator's ready reaches only its pointers (r21 seed 1:
        # the LOAD state's ready into the slice's word enable)
        m.submodules.me_in = me_in = FifoSlice(8 * L)
        coded = Signal()  # busy, not searching, words left: a register (it enables stage 1)
        with m.If(start):
            m.d.sync += coded.eq((count != 0) & ~new_is["MOTION"] & ~new_is["BAND_MOTION"])
        m.d.comb += [
            rq.i.valid.eq(sa.valid & coded),
            rq.i.p.data.eq(sa.payload),
            rq.i.p.last.eq(last_word),
            rq.i.p.nbytes.eq(Mux(last_word, last_nbytes, L)),
            me_in.i.valid.eq(sa.valid & busy & searching),
            me_in.i.payload.eq(sa.payload),
            sa.ready.eq(Mux(searching, me_in.i.ready & busy, rq.i.ready & coded)),
        ]
        m.d.comb += [
            me_in.clear.eq(start),
            me.cur.valid.eq(me_in.o.valid),
            me.cur.payload.eq(me_in.o.payload),
            me_in.o.ready.eq(me.cur.ready),
        ]
        with m.If(rq.i.valid & rq.i.ready):
            with m.If(temporal):  # a group is three words: its codes, the reference's, the changes
                m.d.sync += in_phase.eq(Mux(in_phase == 2, 0, in_phase + 1))
            with m.If(~temporal | (in_phase == 2)):
                m.d.sync += [words_left.eq(words_left - 1), last_word.eq(words_left == 2)]
                with m.If(last_word):
                    m.d.sync += coded.eq(0)

        # The reference tap: N-bit codes into the estimator's RAM as they pass (through a
        # register: the take ends the stream's ready chain).
        rq_take = Signal()
        ref_we = Signal()
        ref_data = Signal(8 * L)
        code_word = Signal()  # the requantizer's output word is codes (not a temporal group's reference words)
        m.d.comb += [rq_take.eq(rq.o.valid & rq.o.ready), code_word.eq(~temporal | (tap_phase == 0))]
        with m.If(is_ctx & ~records & temporal & rq_take):
            m.d.sync += tap_phase.eq(Mux(tap_phase == 2, 0, tap_phase + 1))
        m.d.sync += [
            ref_we.eq(rq_take & code_word & ((mode == modes["LOAD_REF"]) | (store_ref & ~records))),
            ref_data.eq(rq.o.p.data),
        ]
        m.d.comb += [me.ref_we.eq(ref_we), me.ref_addr.eq(ref_ptr), me.ref_data.eq(ref_data)]
        with m.If(ref_we):
            m.d.sync += ref_ptr.eq(ref_ptr + 1)

        ma = out_slice.i  # the operations' output words, into the output port's slice
        port_out = self.m_axis
        m.d.comb += [
            port_out.tvalid.eq(out_slice.o.valid),
            port_out.tdata.eq(out_slice.o.p.data),
            port_out.tkeep.eq(out_slice.o.p.keep),
            port_out.tlast.eq(out_slice.o.p.last),
            out_slice.o.ready.eq(port_out.tready),
        ]
        ma_ready_ctx = Signal()  # the output takes the packer's word (CTX)
        m.d.comb += ma_ready_ctx.eq(ma.ready & is_ctx)

        # ------------------------------------------------------------ CTX: elements in, bytes out
        # The requantizer's words reach CTX through a register slice (``cw``; cleared at
        # START), so that CTX's readies -- the element serializer's, the value records'
        # front, the slices' dealer, each a few cells deep -- end there and the requantizer's
        # output registers see a register (before, the value records' front's ready reached
        # them across the die: the top's path on the ECP5 proxy, 14.3 ns). A FifoSlice: those
        # readies reach only its pointers, not its words' enables (r21 seed 1: 63 late
        # inputs at 11.4 ns, the words' enable through the dealer's ready).
        # Beside each word, its slice's lane unit one-hot (``unit``, bit v: engine bits
        # 58-59 == v mod E and lane bit 56 == v div E; meaningful with slices), decoded on
        # the way in, so that the dealer's write enables and ready (below) are not behind
        # the select and a decode of the word (r23 seed 1: FIFO 0's read pointer through
        # the select and the decode into the dealer's ready and the lane FIFOs' write
        # enables, 14.1 ns, about 400 late inputs).
        E = P.ctx_engines
        U = E * NL
        # Two such slices side by side, one a mode: elements (``cw``: the staging registers
        # and the serializer's banks) and value records (``rw_``: the records front and the
        # slices' dealer). Each one's word goes only to its own consumers (one slice's
        # select fanned out to both sets across the die: r30 seed 2, `x_s`, `el_bank`,
        # `ctx_v0_in`, up to 11.3 ns, one cell and its routing).
        m.submodules.ctx_in = ctx_in = FifoSlice(rq.o.payload.shape())
        m.submodules.ctx_rec_in = rec_in = FifoSlice(data.StructLayout({"w": rq.o.payload.shape(), "unit": U}))
        cw = ctx_in.o
        cwp = cw.payload
        rw_ = rec_in.o
        rwp = rw_.p.w
        # (so an element word's take is the element serializer's ready, ``ctx_ready``, and
        # the slices' dealer's ready is not in front of the banks' and the phase's enables,
        # as it was through one slice's ready: r27 seed 1, `b_valid` 5 cells behind the
        # slice's word, 10.1 ns)
        ctx_ready = Signal()  # the element serializer takes CTX's input word (below)
        cw_take = Signal()
        m.d.comb += [
            ctx_in.clear.eq(start),
            ctx_in.i.valid.eq(rq.o.valid & ctx_elements),
            ctx_in.i.payload.eq(rq.o.payload),
            rec_in.clear.eq(start),
            rec_in.i.valid.eq(rq.o.valid & records),
            rec_in.i.p.w.eq(rq.o.payload),
            rec_in.i.p.unit.eq(
                Cat(*((_word_engine(rq.o.p.data) == v % E) & (_word_lane(rq.o.p.data) == v // E) for v in range(U)))
            ),
            cw_take.eq(cw.valid & ctx_ready),
        ]
        # A group's words meet in staging registers (the anchor's codes, the reference's);
        # its last word (the changes; intra: the codes) moves the group into one of the
        # element serializer's two banks, which gives the coder one element per cycle. A
        # bank follows the input while it is empty and the next to be written, so that the
        # banks' enables are registers (r18 seed 1: one bank's enable through the coder's
        # ready, 64 late inputs at 11.8 ns); the serializer reads the banks in turn.
        x_s = Signal(8 * L)
        p_s = Signal(8 * L)
        bank_layout = data.StructLayout(
            {"x": 8 * L, "p": 8 * L, "t": 2 * L, "n": 5, "last": 1, "one": 1}  # one: n <= 1
        )
        banks = [Signal(bank_layout, name=f"el_bank{k}") for k in range(2)]
        b_valid = Signal(2)
        wb = Signal()  # the bank the next group goes into
        rb = Signal()  # the bank the serializer reads
        cur = Signal(bank_layout)
        el = Signal(range(L))
        el_end = Signal()
        el_take = Signal()
        # The element's code and reference code: bank rb's element el, a 16:1 select of
        # 16-bit words at 8 lanes, which the ECP5 flow builds as one PFU's wide-function
        # cells a bit (hw/range_coder.py ``table_select``; as the bank's select, then the
        # element's, then a select by TEMPORAL, it was r34 seed 1's `ctx.anchor.pe`, 10.3
        # ns). The anchor binarizer reads p and t only in temporal mode.
        m.d.comb += [
            cur.eq(Mux(rb, banks[1].as_value(), banks[0].as_value())),
            ctx.i.valid.eq(b_valid.bit_select(rb, 1)),
            ctx.i.p.t.eq(cur.t.word_select(el, 2)),
            ctx.i.p.last.eq(cur.last & el_end),
            el_take.eq(ctx.i.valid & ctx.i.ready),
            ctx_ready.eq(Mux(final_word, ~b_valid.bit_select(wb, 1), 1)),
        ]
        if 2 * L == 16:
            xp_words = Signal(data.ArrayLayout(16, 16))  # word v: bank v // L's element v % L
            for v in range(2 * L):
                bank = banks[v // L]
                m.d.comb += xp_words[v].eq(Cat(bank.x.word_select(v % L, 8), bank.p.word_select(v % L, 8)))
            xp = table_select(m, xp_words, Cat(el, rb), "el_xp")
            m.d.comb += [ctx.i.p.x.eq(xp[:8]), ctx.i.p.p.eq(xp[8:])]
        else:
            m.d.comb += [ctx.i.p.x.eq(cur.x.word_select(el, 8)), ctx.i.p.p.eq(cur.p.word_select(el, 8))]
        in_one = cwp.nbytes <= 1
        for k in range(2):
            with m.If(~b_valid[k] & (wb == k)):
                m.d.sync += [
                    banks[k].x.eq(Mux(temporal, x_s, cwp.data)),
                    banks[k].p.eq(p_s),
                    banks[k].t.eq(Cat(*(cwp.data.word_select(i, 8)[:2] for i in range(L)))),
                    banks[k].n.eq(cwp.nbytes),
                    banks[k].last.eq(cwp.last),
                    banks[k].one.eq(in_one),
                ]
        take_group = Signal()
        m.d.comb += take_group.eq(cw_take & final_word)
        set_v = Mux(take_group, Mux(wb, 0b10, 0b01), 0)
        clr_v = Mux(el_take & el_end, Mux(rb, 0b10, 0b01), 0)
        m.d.sync += b_valid.eq((b_valid | set_v) & ~clr_v)
        with m.If(take_group):
            m.d.sync += wb.eq(~wb)
        # el_end (el + 1 >= the bank's n) is a register: set with the next el, from the next
        # bank's flag (or the input's, while the read bank is empty and follows the input)
        other_one = Mux(rb, banks[0].one, banks[1].one)
        with m.If(el_take):
            m.d.sync += el.eq(Mux(el_end, 0, el + 1))
            with m.If(el_end):
                m.d.sync += [rb.eq(~rb), el_end.eq(Mux(b_valid.bit_select(~rb, 1), other_one, in_one))]
            with m.Else():
                m.d.sync += el_end.eq(el + 2 >= cur.n)
        with m.Elif(~b_valid.bit_select(rb, 1)):
            m.d.sync += el_end.eq(in_one)
        # value records (FLAGS.RECORDS): the requantizer's bypassed word is a stream word of
        # records (a record or a run of zero values), the count's last word ends the section
        # slices (CTX_SLICES > 1): the dealer puts each word into its lane unit's input FIFO
        # (engine bits 58-59, lane bit 56; bit 57 the slice's last word; those bits cleared).
        # Unit v is engine v mod E's lane v div E; engine 0 is the ctx coder's (its lane 0
        # the records front of the single-section path), the others a ValueCoder each (two
        # lanes: a DualValueCoder); a word for a unit the build lacks is dropped
        unit = rw_.p.unit
        deal_word = Signal(64)
        deal_ready = Signal()
        m.d.comb += deal_word.eq(Cat(rwp.data[:_TAG_LO], Const(0, _TAG_HI - _TAG_LO), rwp.data[_TAG_HI:64]))
        lanes_in, lanes_out = [], []  # each engine's records ports and bytes ports, by lane
        for e in range(E):
            coder = ctx if e == 0 else (DualValueCoder() if NL == 2 else ValueCoder())
            if e:
                m.submodules[f"ctx{e}"] = coder
            lanes_in.append(by_lane(coder.v if e == 0 else coder.i))
            lanes_out.append(by_lane(coder.o))
        ins = [lanes_in[v % E][v // E] for v in range(U)]  # unit order
        outs = [lanes_out[v % E][v // E] for v in range(U)]
        fifos = []
        rooms = []
        v0_ready = Signal()  # unit 0's register slice (below) takes a word
        for v in range(U):
            q = fifo.SyncFIFOBuffered(width=65, depth=P.ctx_fifo_depth)
            m.submodules[f"ctx_in{v}"] = q
            fifos.append(q)
            # room: the FIFO had room for two words a cycle ago (so for one now), a register
            # for the dealer's ready (the FIFO's w_rdy is a compare of its level: with it,
            # the dealer's ready was r28's path through CTX's input slice, 10.9 ns)
            room = Signal(name=f"ctx_room{v}")
            m.d.sync += room.eq(q.level < P.ctx_fifo_depth - 1)
            rooms.append(room)
            m.d.comb += [
                q.w_data.eq(Cat(deal_word, rwp.data[regmap.SLICE_LAST_BIT])),
                q.w_en.eq(rw_.valid & sliced & unit[v] & room),
            ]
            if v:
                port = ins[v]
                m.d.comb += [port.valid.eq(q.r_rdy), port.p.word.eq(q.r_data[:64]), port.p.last.eq(q.r_data[64])]
                m.d.comb += q.r_en.eq(port.ready)
            else:
                m.d.comb += q.r_en.eq(v0_ready & sliced)
        # (a word for a unit the build lacks, no bit of ``unit`` set, is taken and dropped)
        m.d.comb += deal_ready.eq((unit == 0) | reduce(operator.or_, (unit[v] & rooms[v] for v in range(U))))
        # (unit 0: the FIFO when sliced, else the requantizer's word directly, as before;
        # through a register slice, so that FIFO 0's output register and the input's slice
        # see a register for the records front's ready, not the front's ready through the
        # select: r19 seed 1, FIFO 0's output enable 57 late inputs)
        m.submodules.ctx_v0_in = v0_in = FifoSlice(ctx_v0.payload.shape())
        wiring.connect(m, v0_in.o, ctx_v0)
        m.d.comb += [
            v0_in.clear.eq(start),
            v0_in.i.valid.eq(Mux(sliced, fifos[0].r_rdy, rw_.valid)),
            v0_in.i.p.word.eq(Mux(sliced, fifos[0].r_data[:64], rwp.data)),
            v0_in.i.p.last.eq(Mux(sliced, fifos[0].r_data[64], rwp.last)),
            v0_ready.eq(v0_in.i.ready),
        ]
        # (the staging registers follow the input word while their phase lasts, so that
        # their enables are registers: the phase moves on only when the word is taken, and
        # a word that is not its group's last is always taken -- r17 seed 1: their enables
        # through the input's ready, 10.6-11.1 ns)
        with m.If(~final_word & (out_phase == 0)):
            m.d.sync += x_s.eq(cwp.data)
        with m.If(~final_word & (out_phase == 1)):
            m.d.sync += p_s.eq(cwp.data)
        with m.If(cw_take):
            with m.If(temporal):
                m.d.sync += [out_phase.eq(Mux(out_phase == 2, 0, out_phase + 1)), final_word.eq(out_phase == 1)]
        # the byte packer: the coder's bytes into words, low byte first; a word goes out when
        # full or at the section's last byte (TKEEP its bytes, TLAST)
        # (a BytePacker: its words through a two-word FIFO, so the output's ready, from the
        # output port's slice across the die, reaches only the FIFO's pointers, not the
        # words' enables -- r21 seed 2, the packer's enables, 120 late inputs at up to 12.7 ns)
        m.submodules.ctx_pack = pk = BytePacker(L)
        pk_valid = pk.o.valid
        pk_data = pk.o.p.data
        pk_keep = pk.o.p.keep
        pk_last = pk.o.p.last
        b_take = Signal()
        m.d.comb += [
            b_take.eq(ctx_o0.valid & ctx_o0.ready & ~sliced),
            pk.i.valid.eq(ctx_o0.valid & ~sliced),
            pk.i.payload.eq(ctx_o0.payload),
            pk.o.ready.eq(ma_ready_ctx & ~sliced),
        ]
        # slices: each unit's bytes into a SlicePacker's tagged words; the words go out by
        # a registered grant (below; together at most U/14 words a cycle), TLAST on the word
        # that ends the S-th slice; BITS counts every unit's bytes
        packers = []
        takes = []
        for v in range(U):
            sp = SlicePacker(v % E, v // E)
            m.submodules[f"ctx_pack{v}"] = sp
            packers.append(sp)
            if v:
                wiring.connect(m, outs[v], sp.i)
            else:
                m.d.comb += [sp.i.valid.eq(ctx_o0.valid & sliced), sp.i.payload.eq(ctx_o0.payload)]
            t = Signal(name=f"ctx_byte{v}")
            m.d.comb += t.eq(outs[v].valid & outs[v].ready & (sliced if v == 0 else 1))
            takes.append(t)
        m.d.comb += ctx_o0.ready.eq(Mux(sliced, packers[0].i.ready, pk.i.ready))
        # BITS counts the bytes taken two cycles late (each take into a register of its own,
        # then their sum into another: the sum is not behind the packers' ready chain --
        # r27 seed 1, `byte_takes` 6 cells behind the handshakes, 10.1 ns); the last is
        # counted before DONE, which waits for the last word through the packer and the
        # output's slice
        takes_r = [Signal(name=f"ctx_take{v}") for v in range(U)]
        b_take_r = Signal()
        m.d.sync += [*(r.eq(t) for r, t in zip(takes_r, takes, strict=True)), b_take_r.eq(b_take)]
        byte_takes = Signal(range(U + 2))
        m.d.sync += byte_takes.eq(Mux(sliced, sum(takes_r), b_take_r))
        with m.If(~start & (byte_takes != 0)):
            m.d.sync += ctx_bytes.eq(ctx_bytes + byte_takes)
        # the packers' words out by a registered grant (``sl_sel``: the first packer with a
        # word, other than one whose word goes out now, a cycle ahead), so that a packer's
        # ready is the grant's decode and a register, not a priority chain over every
        # packer's valid (r16 seed 1: the packers' output enables among the late inputs);
        # the granted word through a register slice (``sl_out``) before the output's
        # sources meet (r17 seed 1: the grant's 6-way select of 64-bit words into the output
        # slice was the top's path, 12.8 ns, 11.1 ns routing); a FifoSlice, so that the
        # select goes into its words with no skid select after it (r27: the grant through
        # the packers' FIFOs and the slice's skid select, 10.6 ns)
        m.submodules.ctx_slices_out = sl_out = FifoSlice(slice_word_layout)
        slices_done = Signal(6)
        # (the grant in a copy per SELECT_BITS bits of the word besides the one for the
        # handshakes and TLAST, kept apart: one register into every select of the 65-bit
        # word was r37's path on both seeds, 10.0 / 10.5 ns)
        n_sel = -(-64 // SELECT_BITS)
        sl_sels = [Signal(range(max(U, 2)), name=f"sl_sel{j}" if j else "sl_sel", attrs=KEEP) for j in range(1 + n_sel)]
        sl_sel = sl_sels[0]
        sl_next = Signal.like(sl_sel)
        for v in range(U):
            m.d.comb += packers[v].o.ready.eq(sl_out.i.ready & sliced & (sl_sel == v))
            with m.If(sl_sel == v):
                m.d.comb += [sl_out.i.valid.eq(packers[v].o.valid & sliced), sl_out.i.p.last.eq(packers[v].o.p.last)]
        m.d.comb += sl_out.i.p.word.eq(
            Cat(
                *(
                    Cat(*(packers[v].o.p.word[SELECT_BITS * j : SELECT_BITS * (j + 1)] for v in range(U))).word_select(
                        sl_sels[1 + j], SELECT_BITS
                    )
                    for j in range(n_sel)
                )
            )
        )
        for v in reversed(range(U)):
            with m.If(packers[v].o.valid & ~packers[v].o.ready):
                m.d.comb += sl_next.eq(v)
        m.d.sync += [s.eq(sl_next) for s in sl_sels]
        sl_valid = sl_out.o.valid
        sl_word = sl_out.o.p.word
        sl_end = sl_out.o.p.last
        m.d.comb += [sl_out.clear.eq(start), sl_out.o.ready.eq(ma_ready_ctx & sliced)]
        # sl_final: the next slice to end is the S-th (slices_done + 1 == S), a register set
        # with slices_done (the add and the compare were in front of the output's last)
        sl_final = Signal()
        with m.If(start):
            m.d.sync += [slices_done.eq(0), sl_final.eq(n_slices == 1)]
        with m.Elif(sl_valid & ma_ready_ctx & sliced & sl_end):
            m.d.sync += [slices_done.eq(slices_done + 1), sl_final.eq(slices_done + 2 == n_slices)]

        # ------------------------------------------------------------ output side
        wiring.connect(m, ser.o, enc.i)
        # the requantizer's words go to the serializer (ENCODE), the output (REQUANT), the
        # histogram pass (HISTOGRAM), the ctx front (CTX) or nowhere (LOAD_REF, MOTION and
        # BAND_MOTION: the reference tap or the motion estimator take them)
        m.d.comb += [
            ser.i.payload.eq(rq.o.payload),
            hist.i.payload.eq(rq.o.payload),
            ser.i.valid.eq(rq.o.valid & to_ser),
            hist.i.valid.eq(rq.o.valid & to_hist),
            cw.ready.eq(ctx_ready),
            rw_.ready.eq(Mux(sliced, deal_ready, v0_ready)),
            rq.o.ready.eq(
                (to_ser & ser.i.ready)
                | (to_ma & ma.ready)
                | (to_hist & hist.i.ready)
                | (records & rec_in.i.ready)
                | (ctx_elements & ctx_in.i.ready)
                | to_sink
            ),
        ]
        # The output word's source, one-hot registers loaded at START (as the requantizer's
        # consumer above): the slice's input is an AND-OR of them, and each source's ready
        # the slice's (a register) and its flag, with no decode of MODE in between.
        # CTX's two sources (the slices' words, the byte packer's) are two flags too (with
        # one flag and a select by ``sliced`` behind the slices' FIFO select: r30 seed 2,
        # the output slice's word, 10.8 ns)
        from_enc, from_empty, from_me = Signal(init=1), Signal(), Signal()  # (MODE resets to ENCODE)
        from_pk = Signal()  # CTX without slices: the byte packer ("sliced" flags the slices)
        with m.If(start):
            m.d.sync += [
                from_enc.eq(new_is["ENCODE"]),
                from_empty.eq(new_is["LOAD_REF"] | new_is["HISTOGRAM"]),
                from_me.eq(new_is["MOTION"] | new_is["BAND_MOTION"]),
                from_pk.eq(new_ctx & ~(new_records & (rw["CTX_SLICES"] > 1))),
            ]
        sources = [  # (flag, valid, data, keep, last): ENCODE, REQUANT, LOAD_REF/HISTOGRAM, CTX, the motion engines
            (from_enc, enc.o.valid & busy, enc.o.p.data, enc.o.p.keep, enc.o.p.last),
            (to_ma, rq.o.valid, rq.o.p.data, (Const(1, L + 1) << rq.o.p.nbytes) - 1, rq.o.p.last),
            (from_empty, empty_pending, 0, 0, 1),
            (sliced, sl_valid, sl_word, (1 << L) - 1, sl_end & sl_final),
            (from_pk, pk_valid, pk_data, pk_keep, pk_last),
            (from_me, me.rec.valid, me.rec.p.data, (1 << L) - 1, me.rec.p.last),
        ]
        m.d.comb += [
            ma.valid.eq(reduce(operator.or_, (f & v for f, v, _, _, _ in sources))),
            ma.p.data.eq(reduce(operator.or_, (Mux(f, d, 0) for f, _, d, _, _ in sources))),
            ma.p.keep.eq(reduce(operator.or_, (Mux(f, k, 0) for f, _, _, k, _ in sources))),
            ma.p.last.eq(reduce(operator.or_, (f & la for f, _, _, _, la in sources))),
            enc.o.ready.eq(from_enc & ma.ready),
            me.rec.ready.eq(from_me & ma.ready),
        ]
        with m.If((mode == modes["LOAD_REF"]) & rq_take & rq.o.p.last):
            m.d.sync += empty_pending.eq(1)
        with m.If((mode == modes["HISTOGRAM"]) & hist.done):
            m.d.sync += empty_pending.eq(1)
        with m.If(from_empty & ma.valid & ma.ready):
            m.d.sync += empty_pending.eq(0)
        # (done when the last word leaves the port, not when it enters the slice)
        with m.If(busy & port_out.tvalid & port_out.tready & port_out.tlast):
            m.d.sync += [busy.eq(0), done.eq(1)]
        return m
