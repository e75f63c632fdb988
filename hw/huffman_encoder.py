"""Huffman encoder, bit packer, histogram counter and the word-to-symbol serializer.

The golden model is :func:`temposplit.codec.entropy.encode` with the ``huffman`` coder:
each symbol's canonical code (``temposplit.codec.huffman.canonical_codes``) written MSB
first, bytes filled from bit 7 down, the last byte zero-padded. The PS loads the table
(code and length per symbol, computed in software from the previous anchor's
histogram); the fabric counts this map's histogram while it codes, so the PS builds the
next anchor's table (``huffman.table_lengths``) without a second pass over the map.

Throughput: one symbol per cycle through every stage (serializer, table lookup with the
histogram update, packer); the packer emits at most one word per cycle, and a word holds
at least ``8 * lanes / 15`` symbols, so it never limits the rate.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw.histogram import RAM_STYLE, count_stages
from temposplit.hw.register_slice import FifoSlice
from temposplit.hw.requantizer import word_layout

MAX_CODE_LENGTH = 15
# Pipeline depths (cycles from a word's last symbol to the word of bits that completes it;
# the cycle model's ENCODE tail): the serializer's word and output registers, the table lookup and
# its register, then the packer's position, placement and word stages.
SERIALIZER_STAGES = 2
LOOKUP_STAGES = 2
PACKER_STAGES = 3

symbol_layout = data.StructLayout({"symbol": unsigned(8), "last": unsigned(1)})
field_layout = data.StructLayout({"code": unsigned(MAX_CODE_LENGTH), "length": unsigned(4), "last": unsigned(1)})


def out_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(8 * lanes), "keep": unsigned(lanes), "last": unsigned(1)})


class Serializer(wiring.Component):
    """Words of ``lanes`` bytes (``nbytes`` valid) to one byte per cycle, low byte first,
    into an output register. A word is taken into a word register, and a second one into a
    skid register while the first is being sent, so the input's ready is a register (the
    stream's ready chain from the encoder ends here); SERIALIZER_STAGES cycles from a word
    to its first byte on the output.

    ``last`` of the output marks the last valid byte of a word flagged ``last``.
    """

    def __init__(self, lanes: int = 8):
        self.lanes = lanes
        super().__init__(
            {
                "i": In(stream.Signature(word_layout(lanes))),
                "o": Out(stream.Signature(symbol_layout)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cur = Signal(word_layout(self.lanes))  # the word being sent
        cur_valid = Signal()
        nxt = Signal(word_layout(self.lanes))  # the skid: the word after it
        nxt_valid = Signal()
        idx = Signal(range(self.lanes + 1))
        end = Signal()
        load = Signal()  # the output register takes the next byte
        done = Signal()  # ... the word's last
        take = Signal()
        m.d.comb += [
            end.eq(idx + 1 >= cur.nbytes),
            load.eq(cur_valid & (~self.o.valid | self.o.ready)),
            done.eq(load & end),
            self.i.ready.eq(~nxt_valid),
            take.eq(self.i.valid & ~nxt_valid),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(load):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.p.symbol.eq(cur.data.word_select(idx, 8)),
                self.o.p.last.eq(end & cur.last),
                idx.eq(0 if self.lanes == 1 else idx + 1),
            ]
            with m.If(end):
                m.d.sync += idx.eq(0)
        free = Signal()  # the word register is free (or frees this cycle)
        src = Signal(word_layout(self.lanes))  # what it takes: the skid's word, else the input's
        m.d.comb += [free.eq(~cur_valid | done), src.eq(Mux(nxt_valid, nxt, self.i.payload))]
        # (the skid follows the input while empty: its enable is its own valid, not the
        # input's valid and the word register's state -- r21 seed 2, 11 late inputs)
        with m.If(~nxt_valid):
            m.d.sync += nxt.eq(self.i.payload)
        with m.If(free):
            m.d.sync += [cur.eq(src), cur_valid.eq(nxt_valid | take), nxt_valid.eq(0)]
        with m.Elif(take):
            m.d.sync += nxt_valid.eq(1)
        return m


class Histogram(wiring.Component):
    """256 counters at one symbol a cycle (``strobe``, ``symbol``), in a RAM with one
    synchronous read port and one write port (LUT RAM on the xc7z020, block RAM on the
    ECP5 proxy, as the histogram pass's banks): the symbol's count read, registered, then
    written back plus one, forwarding from the two writes the read misses
    (:func:`~temposplit.hw.histogram.count_stages`), so runs of equal symbols count right.
    The read port is the counting's while ``strobe`` is high and ``rd_addr``'s otherwise:
    ``rd_data`` is the count at the ``rd_addr`` of the cycle before.

    ``clear`` (a pulse) zeroes the counters in 256 cycles while ``busy`` is high.
    """

    def __init__(self, size: int = 256, count_width: int = 32):
        self.size = size
        self.count_width = count_width
        super().__init__(
            {
                "clear": In(1),
                "busy": Out(1),
                "strobe": In(1),
                "symbol": In(8),
                "rd_addr": In(8),
                "rd_data": Out(count_width),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.histbank = mem = memory.Memory(
            shape=unsigned(self.count_width), depth=self.size, init=[], attrs=RAM_STYLE
        )
        rd = mem.read_port()
        wr = mem.write_port()
        ptr = Signal(range(self.size + 1))
        count = Signal()
        m.d.comb += [
            count.eq(self.strobe & ~self.busy & ~self.clear),
            rd.addr.eq(Mux(self.strobe, self.symbol, self.rd_addr)),
            self.rd_data.eq(rd.data),
        ]
        b_v, b_sym, b_new = count_stages(m, en=count, sym=self.symbol, read_data=rd.data, kill=self.clear, name="count")
        with m.If(self.clear):
            m.d.sync += [self.busy.eq(1), ptr.eq(0)]
        with m.Elif(self.busy):
            m.d.comb += [wr.addr.eq(ptr), wr.data.eq(0), wr.en.eq(1)]
            m.d.sync += ptr.eq(ptr + 1)
            with m.If(ptr == self.size - 1):
                m.d.sync += self.busy.eq(0)
        with m.Elif(b_v):
            m.d.comb += [wr.addr.eq(b_sym), wr.data.eq(b_new), wr.en.eq(1)]
        return m


class BitPacker(wiring.Component):
    """Variable-length fields (MSB first) to ``lanes``-byte words, one field per cycle.

    Bits fill bytes from bit 7 down; byte j of the bit stream is byte j of the words
    (little-endian within a word, as the DMA writes memory). The field flagged ``last``
    flushes the remainder as a final word with ``keep`` set on its bytes and ``last`` high
    (a zero-padded last byte). ``bits`` counts the bits since ``clear``.

    Three stages (PACKER_STAGES), all advancing together while the output has room (a
    two-word :class:`FifoSlice`, written where an output register would be):
    *position* (the field's bit position in the word being filled, whether it fills it,
    and the code left-aligned), *placement* (the code shifted to its position in a window
    of two words) and *word* (the window's first word ORed into the word being filled;
    a filled word goes out and the window's second word starts the next). A last field
    that overflows a word sends two words, the second a cycle later (the input waits).
    """

    def __init__(self, lanes: int = 8):
        self.lanes = lanes
        super().__init__(
            {
                "i": In(stream.Signature(field_layout)),
                "o": Out(stream.Signature(out_layout(lanes))),
                "clear": In(1),
                "bits": Out(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        w = 8 * self.lanes
        L = MAX_CODE_LENGTH

        def swap(value):  # MSB-first bit string -> little-endian byte lanes
            return Cat(*[value.word_select(self.lanes - 1 - j, 8) for j in range(self.lanes)])

        def keep_for(nbits):  # bytes that hold nbits bits
            return Cat(*[nbits > 8 * j for j in range(self.lanes)])

        # the output through a two-word FIFO (its words written as the output register's
        # were, cycle for cycle): the consumer's ready -- the top's output select across the
        # die -- reaches only its pointers, and the pipeline's advance is registers (the FIFO's
        # room and ``flush``), not that ready through the table lookup's skid into the input
        # registers' enables (r27 seed 2 on the ECP5 proxy: 31 late inputs at up to 11.4 ns)
        m.submodules.out = out = FifoSlice(out_layout(self.lanes))
        wiring.connect(m, out.o, wiring.flipped(self.o))
        o = out.i
        flush = Signal()  # a final partial word is still to be sent
        adv = Signal()  # the pipeline moves
        take = Signal()
        m.d.comb += [
            adv.eq(o.ready & ~flush),
            self.i.ready.eq(adv),
            take.eq(self.i.valid & adv),
            out.clear.eq(0),  # (a word out survives a clear, as in the output register it replaces)
        ]

        # position
        pos = Signal(range(w))  # bits already in the word being filled
        end = Signal(range(w + L + 1))
        lsh = Signal(range(L + 1))  # the code's left shift to align its first bit
        m.d.comb += [end.eq(pos + self.i.p.length), lsh.eq(L - self.i.p.length)]
        a_v, a_last, a_fill = Signal(), Signal(), Signal()
        a_pos = Signal(range(w))
        a_rem = Signal(range(w + 1))  # bits in the word being filled after this field
        a_code = Signal(L)  # the code, its first bit at bit L - 1
        # placement
        b_v, b_last, b_fill = Signal(), Signal(), Signal()
        b_rem = Signal(range(w + 1))
        b_win = Signal(2 * w)  # the code at its place: window bit 2w - 1 is the word's first bit
        # word
        word = Signal(w)  # the word being filled, its first bit at bit w - 1

        with m.If(self.clear):
            m.d.sync += [pos.eq(0), a_v.eq(0), b_v.eq(0), word.eq(0), flush.eq(0), self.bits.eq(0)]
        with m.Elif(flush):
            with m.If(o.ready):
                m.d.comb += [o.valid.eq(1), o.p.data.eq(swap(word)), o.p.keep.eq(keep_for(b_rem)), o.p.last.eq(1)]
                m.d.sync += [word.eq(0), flush.eq(0)]
        with m.Elif(adv):
            m.d.sync += [a_v.eq(take), b_v.eq(a_v)]
            with m.If(take):
                m.d.sync += [
                    a_last.eq(self.i.p.last),
                    a_pos.eq(pos),
                    a_fill.eq(end >= w),
                    a_rem.eq(Mux(end >= w, end - w, end)),
                    a_code.eq(self.i.p.code << lsh),
                    pos.eq(Mux(self.i.p.last, 0, Mux(end >= w, end - w, end))),
                    self.bits.eq(self.bits + self.i.p.length),
                ]
            m.d.sync += [
                b_last.eq(a_last),
                b_fill.eq(a_fill),
                b_rem.eq(a_rem),
                b_win.eq(Cat(Const(0, 2 * w - L), a_code) >> a_pos),
            ]
            top = Signal(w)
            m.d.comb += top.eq(word | b_win[w:])
            with m.If(b_v):
                with m.If(b_fill):
                    m.d.comb += [
                        o.valid.eq(1),
                        o.p.data.eq(swap(top)),
                        o.p.keep.eq(Const((1 << self.lanes) - 1, self.lanes)),
                        o.p.last.eq(b_last & (b_rem == 0)),
                    ]
                    m.d.sync += [word.eq(b_win[:w]), flush.eq(b_last & (b_rem != 0))]
                with m.Elif(b_last):
                    m.d.comb += [o.valid.eq(1), o.p.data.eq(swap(top)), o.p.keep.eq(keep_for(b_rem)), o.p.last.eq(1)]
                    m.d.sync += word.eq(0)
                with m.Else():
                    m.d.sync += word.eq(top)
        return m


class HuffmanEncoder(wiring.Component):
    """Symbols in, packed Huffman bit words out; histogram counted on the way.

    Latency: LOOKUP_STAGES (table lookup, registered twice) plus the packer's. Throughput: one
    symbol per cycle. ``start`` (a pulse) clears the histogram (256 cycles, input held
    off meanwhile) and the bit counter.

    Attributes
    ----------
    i : In(stream of ``symbol_layout``)
    o : Out(stream of :func:`out_layout`)
    table_we, table_addr, table_code, table_length : In
        Table write port (from the AXI-Lite registers).
    hist_addr : In(8), hist_data : Out(32)
        Histogram read port.
    bits : Out(32)
        Bits written since ``start``.
    """

    def __init__(self, lanes: int = 8):
        self.lanes = lanes
        super().__init__(
            {
                "i": In(stream.Signature(symbol_layout)),
                "o": Out(stream.Signature(out_layout(lanes))),
                "start": In(1),
                "table_we": In(1),
                "table_addr": In(8),
                "table_code": In(MAX_CODE_LENGTH),
                "table_length": In(4),
                "hist_addr": In(8),
                "hist_data": Out(32),
                "bits": Out(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.hist = hist = Histogram()
        m.submodules.packer = packer = BitPacker(self.lanes)
        m.submodules.table = table = memory.Memory(
            shape=unsigned(MAX_CODE_LENGTH + 4), depth=256, init=[], attrs=RAM_STYLE
        )
        # a synchronous read whose data register is the lookup stage's (it holds while the
        # stage does not load): LUT RAM with its output register on the xc7z020, a block
        # RAM on the ECP5 proxy (an asynchronous 256-deep read was its path there)
        lookup = table.read_port()
        wr = table.write_port()
        m.d.comb += [
            wr.en.eq(self.table_we),
            wr.addr.eq(self.table_addr),
            wr.data.eq(Cat(self.table_code, self.table_length)),
            hist.clear.eq(self.start),
            packer.clear.eq(self.start),
            hist.rd_addr.eq(self.hist_addr),
            self.hist_data.eq(hist.rd_data),
            self.bits.eq(packer.bits),
        ]
        wiring.connect(m, packer.o, wiring.flipped(self.o))

        # LOOKUP_STAGES: the table lookup into a register, then into the packer's input
        # register (so that no arithmetic follows the table's read), histogram update. A skid
        # register holds a symbol taken while the lookup register could not move, so the
        # input's ready is a register (the stream's ready chain ends here).
        f = packer.i
        l_valid = Signal()
        l_data = lookup.data
        l_last = Signal()
        l_move = Signal()
        l_free = Signal()
        sk_valid = Signal()
        sk_symbol = Signal(8)
        sk_last = Signal()
        take = Signal()
        m.d.comb += [
            l_move.eq(l_valid & (~f.valid | f.ready)),
            l_free.eq(~l_valid | l_move),
            self.i.ready.eq(~sk_valid & ~hist.busy & ~self.start),
            take.eq(self.i.valid & self.i.ready),
            lookup.addr.eq(Mux(sk_valid, sk_symbol, self.i.p.symbol)),
            lookup.en.eq((sk_valid | take) & l_free & ~self.start),
            hist.symbol.eq(self.i.p.symbol),
            hist.strobe.eq(take),
        ]
        with m.If(self.start):
            m.d.sync += [f.valid.eq(0), l_valid.eq(0), sk_valid.eq(0)]
        with m.Else():
            with m.If(f.valid & f.ready):
                m.d.sync += f.valid.eq(0)
            with m.If(l_move):
                m.d.sync += [
                    l_valid.eq(0),
                    f.valid.eq(1),
                    f.p.code.eq(l_data[:MAX_CODE_LENGTH]),
                    f.p.length.eq(l_data[MAX_CODE_LENGTH:]),
                    f.p.last.eq(l_last),
                ]
            with m.If(sk_valid & l_free):
                m.d.sync += [l_valid.eq(1), l_last.eq(sk_last), sk_valid.eq(0)]
            with m.Elif(take & l_free):
                m.d.sync += [l_valid.eq(1), l_last.eq(self.i.p.last)]
            with m.Elif(take):
                m.d.sync += [sk_valid.eq(1), sk_symbol.eq(self.i.p.symbol), sk_last.eq(self.i.p.last)]
        return m
