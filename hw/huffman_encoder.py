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

from amaranth import Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw.requantizer import word_layout

MAX_CODE_LENGTH = 15

symbol_layout = data.StructLayout({"symbol": unsigned(8), "last": unsigned(1)})
field_layout = data.StructLayout({"code": unsigned(MAX_CODE_LENGTH), "length": unsigned(4), "last": unsigned(1)})


def out_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(8 * lanes), "keep": unsigned(lanes), "last": unsigned(1)})


class Serializer(wiring.Component):
    """Words of ``lanes`` bytes (``nbytes`` valid) to one byte per cycle, low byte first.

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
        idx = Signal(range(self.lanes + 1))
        m.d.comb += [
            self.o.valid.eq(self.i.valid),
            self.o.p.symbol.eq(self.i.p.data.word_select(idx, 8)),
        ]
        end = Signal()
        m.d.comb += [
            end.eq(idx + 1 >= self.i.p.nbytes),
            self.o.p.last.eq(end & self.i.p.last),
            self.i.ready.eq(self.o.ready & end),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += idx.eq(0 if self.lanes == 1 else idx + 1)
            with m.If(end):
                m.d.sync += idx.eq(0)
        return m


class Histogram(wiring.Component):
    """256 counters in LUT RAM: an asynchronous read and a synchronous write give a
    one-cycle read-modify-write, so equal symbols back to back need no forwarding.

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
        m.submodules.mem = mem = memory.Memory(shape=unsigned(self.count_width), depth=self.size, init=[])
        upd = mem.read_port(domain="comb")
        rd = mem.read_port(domain="comb")
        wr = mem.write_port()
        ptr = Signal(range(self.size + 1))
        m.d.comb += [rd.addr.eq(self.rd_addr), self.rd_data.eq(rd.data), upd.addr.eq(self.symbol)]
        with m.If(self.clear):
            m.d.sync += [self.busy.eq(1), ptr.eq(0)]
        with m.Elif(self.busy):
            m.d.comb += [wr.addr.eq(ptr), wr.data.eq(0), wr.en.eq(1)]
            m.d.sync += ptr.eq(ptr + 1)
            with m.If(ptr == self.size - 1):
                m.d.sync += self.busy.eq(0)
        with m.Elif(self.strobe):
            m.d.comb += [wr.addr.eq(self.symbol), wr.data.eq(upd.data + 1), wr.en.eq(1)]
        return m


class BitPacker(wiring.Component):
    """Variable-length fields (MSB first) to ``lanes``-byte words, one field per cycle.

    Bits fill bytes from bit 7 down; byte j of the bit stream is byte j of the words
    (little-endian within a word, as the DMA writes memory). The field flagged ``last``
    flushes the remainder as a final word with ``keep`` set on its bytes and ``last`` high
    (a zero-padded last byte). ``bits`` counts the bits since ``clear``.
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
        acc_w = w + MAX_CODE_LENGTH
        acc = Signal(acc_w)  # valid bits right-aligned, cnt of them
        cnt = Signal(range(acc_w + 1))
        flush = Signal()  # a final partial word is still to be sent
        new_acc = Signal(acc_w)
        new_cnt = Signal(range(acc_w + 1))
        free = Signal()
        m.d.comb += [
            free.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(free & ~flush),
            new_acc.eq((acc << self.i.p.length) | self.i.p.code),
            new_cnt.eq(cnt + self.i.p.length),
        ]

        def swap(value):  # MSB-first bit string -> little-endian byte lanes
            return Cat(*[value.word_select(self.lanes - 1 - j, 8) for j in range(self.lanes)])

        def keep_for(nbits):  # bytes that hold nbits bits
            return Cat(*[nbits > 8 * j for j in range(self.lanes)])

        def emit_partial(value, nbits):
            aligned = Signal(w)
            sh = Signal(range(w + 1))
            m.d.comb += [sh.eq(w - nbits), aligned.eq((value << sh)[:w])]
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.p.data.eq(swap(aligned)),
                self.o.p.keep.eq(keep_for(nbits)),
                self.o.p.last.eq(1),
            ]

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.clear):
            m.d.sync += [acc.eq(0), cnt.eq(0), flush.eq(0), self.bits.eq(0)]
        with m.Elif(flush & free):
            emit_partial(acc, cnt)
            m.d.sync += [flush.eq(0), cnt.eq(0)]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [acc.eq(new_acc), self.bits.eq(self.bits + self.i.p.length)]
            with m.If(new_cnt >= w):
                full = Signal(w)
                sh = Signal(range(acc_w + 1))
                m.d.comb += [sh.eq(new_cnt - w), full.eq((new_acc >> sh)[:w])]
                m.d.sync += [
                    self.o.valid.eq(1),
                    self.o.p.data.eq(swap(full)),
                    self.o.p.keep.eq(Const((1 << self.lanes) - 1, self.lanes)),
                    self.o.p.last.eq(self.i.p.last & (new_cnt == w)),
                    cnt.eq(new_cnt - w),
                    flush.eq(self.i.p.last & (new_cnt != w)),
                ]
            with m.Elif(self.i.p.last):
                emit_partial(new_acc, new_cnt)
                m.d.sync += cnt.eq(0)
            with m.Else():
                m.d.sync += cnt.eq(new_cnt)
        return m


class HuffmanEncoder(wiring.Component):
    """Symbols in, packed Huffman bit words out; histogram counted on the way.

    Latency: one cycle (table lookup, registered) plus the packer's. Throughput: one
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
        m.submodules.table = table = memory.Memory(shape=unsigned(MAX_CODE_LENGTH + 4), depth=256, init=[])
        lookup = table.read_port(domain="comb")
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

        # Stage 1: table lookup into a register (the packer's input), histogram update.
        f = packer.i
        m.d.comb += [
            self.i.ready.eq((~f.valid | f.ready) & ~hist.busy & ~self.start),
            lookup.addr.eq(self.i.p.symbol),
            hist.symbol.eq(self.i.p.symbol),
            hist.strobe.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.start):
            m.d.sync += f.valid.eq(0)
        with m.Else():
            with m.If(f.valid & f.ready):
                m.d.sync += f.valid.eq(0)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [
                    f.valid.eq(1),
                    f.p.code.eq(lookup.data[:MAX_CODE_LENGTH]),
                    f.p.length.eq(lookup.data[MAX_CODE_LENGTH:]),
                    f.p.last.eq(self.i.p.last),
                ]
        return m
