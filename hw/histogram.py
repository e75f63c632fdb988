"""The histogram pass's counter: the ``lanes`` symbols of a stream word counted in one cycle.

A self-contained anchor (a KEY: its Huffman table from its own histogram) needs the
histogram of its N-bit codes before it is coded. The Huffman encoder counts its symbols
one a cycle behind the serializer (:class:`~temposplit.hw.huffman_encoder.Histogram`),
which made a histogram pass cost a cycle per element; :class:`WordHistogram` counts the
requantizer's words as they come, every lane a cycle, so the pass (mode HISTOGRAM) costs a
cycle per stream word: the DMA's rate.

Structure: one bank of ``size`` counters per lane (a lane's symbols only ever meet its
own bank, so the lanes never conflict), a RAM with one synchronous read port and one write
port, so that it maps to block RAM as well as to LUT RAM (on the ECP5 timing proxy, whose
LUT RAM is 16 deep, 8 banks of 256 counters with asynchronous reads took about 16,000
LUT4s and the top's critical path; docs/fabric.md). Each symbol is counted in three
stages: its bank read at the symbol (the read issued from the input register), the read's
data registered, then written back plus one. The read misses the writes of the two cycles
before its own write, so a symbol equal to either takes the newer one's new count instead
of the RAM's (forwarding: runs of equal symbols count right). Bytes past a word's
``nbytes`` (the last word's padding) are not counted. The bank counters are
``ceil(max_count / lanes)`` wide (24 bits for 2^26 - 1 elements on 8 lanes).

At the end of the pass the banks are folded, symbol by symbol: the lanes' counts read and
registered, then summed by a tree of two-input adders, one level a cycle (FOLD_LEVELS: no
chain of adders in one cycle), and the sum written into bank 0 (as wide as ``max_count``),
which the read port ``rd_addr`` / ``rd_data`` reads afterwards (the HIST_DATA register;
synchronous: ``rd_data`` is the count at the ``rd_addr`` of the cycle before).

Phases: ``start`` (a pulse) clears the banks (CLEAR_CYCLES, the input held off), then one
word is taken a cycle (the input's ready is a register) up to the one flagged ``last``;
once its counts are written the fold runs (FOLD_CYCLES) and ``done`` pulses. The constants
below are what the cycle model (:mod:`temposplit.hw.cyclemodel`, ``hist_cycles``) counts with.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw.register_slice import KEEP
from temposplit.hw.regmap import LANES, MAX_ELEMENTS
from temposplit.hw.requantizer import word_layout

SIZE = 256  # counters per bank: every 8-bit symbol
# LUT RAM on the xc7z020 (64 deep there: a bank of 24-bit counters is 96 RAM64M, about 400
# LUTs), whose block RAM is the resource nearest the 60 % budget (8 RAMB18 more would take
# it from 58.2 to 61.1 %); the ECP5 timing proxy drops it (hw/synth.py ``ECP5_BLOCK_RAM``).
# The Huffman encoder's histogram and table take it too.
RAM_STYLE = {"ram_style": "distributed"}
CLEAR_CYCLES = SIZE  # the banks zeroed, one address a cycle (all banks together)
INPUT_STAGES = 1  # the input register (the stream's ready chain ends at it)
COUNT_STAGES = 3  # the count's read issued, its data registered, then written back plus one


def fold_levels(lanes: int) -> int:
    """Levels of two-input adders that sum ``lanes`` banks (one level a cycle)."""
    return (lanes - 1).bit_length()


# The fold: a read issued, its data registered, then the adder levels, the last one's sum
# written into bank 0; SIZE symbols one a cycle. FOLD_CYCLES: from the fold's start to its
# last write.
FOLD_STAGES = 2 + fold_levels(LANES)
FOLD_CYCLES = SIZE + FOLD_STAGES


def count_stages(m, *, en, sym, read_data, kill, name):
    """A RAM of counters counted at one symbol a cycle: the stages after the read.

    The caller issues a synchronous (not transparent) read at ``sym`` in the cycle ``en``
    is high; ``read_data`` is that read's data a cycle later, registered here; a stage
    later the count is written back plus one (the returned ``(valid, symbol, count)``,
    which the caller puts on the RAM's write port). The read misses the writes of the two
    cycles before its own write (the one in the cycle of the read's clock edge and the one
    after it), so a symbol equal to either takes the newer one's count (forwarding; the
    equalities are registered a stage ahead, so the write stage is a 3:1 select and the
    add). ``kill`` (a pulse: a new pass) empties the stages. COUNT_STAGES counts the read
    and these two."""
    w = len(read_data)
    a_v, a_sym = Signal(name=f"{name}_a_v"), Signal(8, name=f"{name}_a_sym")
    b_v, b_sym = Signal(name=f"{name}_b_v"), Signal(8, name=f"{name}_b_sym")
    b_cnt, b_new = Signal(w, name=f"{name}_b_cnt"), Signal(w, name=f"{name}_b_new")
    b_eq1, b_eq2 = Signal(name=f"{name}_b_eq1"), Signal(name=f"{name}_b_eq2")
    w1_v, w1_sym = Signal(name=f"{name}_w1_v"), Signal(8, name=f"{name}_w1_sym")
    w1_new, w2_new = Signal(w, name=f"{name}_w1_new"), Signal(w, name=f"{name}_w2_new")
    m.d.comb += b_new.eq(Mux(b_eq1, w1_new, Mux(b_eq2, w2_new, b_cnt)) + 1)
    m.d.sync += [
        a_v.eq(en & ~kill),
        a_sym.eq(sym),
        b_v.eq(a_v & ~kill),
        b_sym.eq(a_sym),
        b_cnt.eq(read_data),
        # the writes this read misses: the write stage's now (b), the one before (w1)
        b_eq1.eq(b_v & (b_sym == a_sym)),
        b_eq2.eq(w1_v & (w1_sym == a_sym)),
        w1_v.eq(b_v & ~kill),
        w1_sym.eq(b_sym),
        w1_new.eq(b_new),
        w2_new.eq(w1_new),
    ]
    return b_v, b_sym, b_new


class WordHistogram(wiring.Component):
    """Histogram of a stream of words, all ``lanes`` symbols of a word counted a cycle.

    Attributes
    ----------
    i : In(stream of :func:`~temposplit.hw.requantizer.word_layout`)
        The symbols (``nbytes`` of each word valid, ``last`` on the pass's last word).
    start : In(1)
        A pulse: clear the banks and count a new pass.
    busy : Out(1)
        From ``start`` to ``done``.
    done : Out(1)
        A pulse: the pass's histogram is in bank 0 (readable at ``rd_addr``).
    rd_addr : In(8), rd_data : Out(32)
        The histogram's read port (a count of symbol ``rd_addr``, after ``done``).
    """

    def __init__(self, lanes: int = LANES, size: int = SIZE, max_count: int = MAX_ELEMENTS):
        if lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes}")
        if not 1 <= size <= 256:
            raise ValueError(f"size must be 1..256, not {size}")
        self.lanes = lanes
        self.size = size
        self.bank_width = (-(-max_count // lanes)).bit_length()
        self.sum_width = max_count.bit_length()
        if self.sum_width > 32:
            raise ValueError(f"a count of {max_count} does not fit the 32-bit read port")
        super().__init__(
            {
                "i": In(stream.Signature(word_layout(lanes))),
                "start": In(1),
                "busy": Out(1),
                "done": Out(1),
                "rd_addr": In(8),
                "rd_data": Out(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        L, S = self.lanes, self.size
        widths = [self.sum_width] + [self.bank_width] * (L - 1)
        rd, wr = [], []
        for lane in range(L):
            mem = memory.Memory(shape=unsigned(widths[lane]), depth=S, init=[], attrs=RAM_STYLE)
            m.submodules[f"histbank{lane}"] = mem
            rd.append(mem.read_port())  # synchronous, not transparent: the count, the fold, HIST_DATA
            wr.append(mem.write_port())

        clearing = Signal()
        folding = Signal()  # the fold's read stage issues addresses
        ready = Signal()  # counting: a word taken a cycle
        ptr = Signal(range(S))  # the clear's and the fold's address
        m.d.comb += [self.i.ready.eq(ready), self.rd_data.eq(rd[0].data)]
        m.d.sync += self.done.eq(0)

        # ------------------------------------------------------------ clear
        # (each bank's write port clears from a copy of its own of the phase and the
        # address, kept apart: one ``clearing`` into every bank's write select, placed by
        # the banks across the die, was r37 seed 1's path on the ECP5 proxy, 12.3 ns)
        clr = [Signal(name=f"clear{lane}", attrs=KEEP) for lane in range(L)]
        cptr = [Signal(range(S), name=f"clear{lane}_addr", attrs=KEEP) for lane in range(L)]
        with m.If(self.start):
            m.d.sync += [clearing.eq(1), folding.eq(0), ready.eq(0), ptr.eq(0), self.busy.eq(1)]
            m.d.sync += [*(c.eq(1) for c in clr), *(a.eq(0) for a in cptr)]
        with m.Elif(clearing):
            m.d.sync += ptr.eq(ptr + 1)
            with m.If(ptr == S - 1):
                m.d.sync += [clearing.eq(0), ready.eq(1), ptr.eq(0)]
        for lane in range(L):
            with m.If(~self.start & clr[lane]):
                m.d.comb += [wr[lane].addr.eq(cptr[lane]), wr[lane].data.eq(0), wr[lane].en.eq(1)]
                m.d.sync += cptr[lane].eq(cptr[lane] + 1)
                with m.If(cptr[lane] == S - 1):
                    m.d.sync += clr[lane].eq(0)

        # ------------------------------------------------------------ count
        # the input register: its symbols are the banks' read addresses
        s0_v = Signal()
        s0 = Signal(word_layout(L))
        take = Signal()
        m.d.comb += take.eq(self.i.valid & ready)
        # (the word register loads every cycle, taken or not: only s0_v says it holds one,
        # so the input's valid, which the top selects by mode, is no clock enable of 70
        # flip-flops; the top's path on the proxy was the mode's select into that enable)
        m.d.sync += [s0_v.eq(take & ~self.start), s0.eq(self.i.payload)]
        with m.If(take & self.i.p.last):
            m.d.sync += ready.eq(0)
        a_last = Signal()  # the pass's last word in the read-data stage
        b_last = Signal()  # ... in the write stage
        m.d.sync += [a_last.eq(s0_v & s0.last & ~self.start), b_last.eq(a_last & ~self.start)]
        for lane in range(L):
            b_v, b_sym, b_new = count_stages(
                m,
                en=s0_v & (s0.nbytes > lane),
                sym=s0.data.word_select(lane, 8),
                read_data=rd[lane].data,
                kill=self.start,
                name=f"lane{lane}",
            )
            with m.If(b_v):
                m.d.comb += [wr[lane].addr.eq(b_sym), wr[lane].data.eq(b_new), wr[lane].en.eq(1)]
        with m.If(b_last & ~self.start):
            m.d.sync += [folding.eq(1), ptr.eq(0)]

        # ------------------------------------------------------------ fold
        # read stage: every bank's count of symbol ptr (bank 0's read port is HIST_DATA's
        # otherwise), then registered
        for lane in range(L):
            if lane == 0:
                addr = Mux(folding, ptr, Mux(self.busy, s0.data.word_select(0, 8), self.rd_addr))
            else:
                addr = Mux(folding, ptr, s0.data.word_select(lane, 8))
            m.d.comb += rd[lane].addr.eq(addr)
        with m.If(folding & ~self.start):
            m.d.sync += ptr.eq(ptr + 1)
            with m.If(ptr == S - 1):
                m.d.sync += folding.eq(0)
        r_v = Signal()  # the read's data out of the banks
        r_addr = Signal(range(S))
        f_v = Signal()
        f_addr = Signal(range(S))
        vals = [Signal(self.sum_width, name=f"fold0_{lane}") for lane in range(L)]
        m.d.sync += [r_v.eq(folding & ~self.start), r_addr.eq(ptr), f_v.eq(r_v & ~self.start), f_addr.eq(r_addr)]
        m.d.sync += [v.eq(rd[lane].data) for lane, v in enumerate(vals)]
        # the adder levels, a register each
        level = 0
        while len(vals) > 1:
            level += 1
            nxt = []
            for k in range(0, len(vals), 2):
                s = Signal(self.sum_width, name=f"fold{level}_{k // 2}")
                m.d.sync += s.eq(vals[k] + vals[k + 1] if k + 1 < len(vals) else vals[k])
                nxt.append(s)
            v_n = Signal(name=f"fold{level}_v")
            a_n = Signal(range(S), name=f"fold{level}_addr")
            m.d.sync += [v_n.eq(f_v & ~self.start), a_n.eq(f_addr)]
            vals, f_v, f_addr = nxt, v_n, a_n
        assert level == fold_levels(L)
        # the sum into bank 0 (its counts were read at this address FOLD_STAGES - 1 cycles ago)
        with m.If(f_v):
            m.d.comb += [wr[0].addr.eq(f_addr), wr[0].data.eq(vals[0]), wr[0].en.eq(1)]
            with m.If(f_addr == S - 1):
                m.d.sync += [self.done.eq(1), self.busy.eq(0)]
        return m
