"""The v2 coder's binary range encoder with its context table on chip (docs/bitstream.md 6.2.1, 6.2.2).

:class:`RangeEncoder` takes one *bin* per cycle -- the bin, its context index (0..422, the
table of section 6.2.5) or a bypass flag, and whether it is the section's last -- and
gives the section's bytes, bit for bit those of :class:`temposplit.codec.ctx_reference.RangeEncoder`
with :class:`~temposplit.codec.ctx_reference.Context` states:

- the *context table* is a 512 x 18 block RAM (12-bit probability, 6-bit count), read
  when a bin is taken and written back with the update on the next cycle; the read port
  is transparent to the write, so back-to-back bins of one context see each other's
  update. A 423-bit register marks the contexts a section has touched, so every context
  starts afresh (prob 2048, count 0) at a section's start without clearing the RAM;
- the *coder* (``low`` 33 bits, ``range`` 32, ``cache``, ``pending``) codes the bin and
  renormalizes (at most two byte shifts per bin) in the same cycle; each shift that
  settles the top byte produces an *output record*: the held byte plus the carry, then
  ``pending - 1`` copies of 0xFF plus the carry (a run of 0xFF held back for a carry);
- records go through a FIFO to the *byte emitter*, one byte per cycle, which drops the
  section's first byte (always 0) and marks the last. After a section's last bin the
  coder makes the termination's five shifts (three cycles), then starts afresh.

The input stalls only when the FIFO is full (the output back-pressured, or a run of
records faster than a byte per cycle); a bin behind a section's last waits for the
termination. A section codes at least one bin.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

PROB_BITS = 12
N_CONTEXTS = 423  # the context table of docs/bitstream.md 6.2.5
COUNT_MAX = 62
PENDING_BITS = 32
TERMINATION_SHIFTS = 5

bin_layout = data.StructLayout({"bit": unsigned(1), "ctx": unsigned(9), "bypass": unsigned(1), "last": unsigned(1)})
byte_layout = data.StructLayout({"data": unsigned(8), "last": unsigned(1)})
record_layout = data.StructLayout(
    {"first": unsigned(8), "run": unsigned(PENDING_BITS), "fill": unsigned(8)}  # first, then run x fill
)
# what one cycle of the coder produces: up to two records, the second the section's end
event_layout = data.StructLayout({"n": unsigned(2), "rec0": record_layout, "rec1": record_layout, "last": unsigned(1)})


def context_update(m: Module, prob, n, bit, name: str = "ctx"):
    """The adaptation of 6.2.2 (comb): the new (prob, n) of a context after bin ``bit``."""
    s = Signal(3, name=f"{name}_s")
    with m.If(n < 2):
        m.d.comb += s.eq(1)
    with m.Elif(n < 6):
        m.d.comb += s.eq(2)
    with m.Elif(n < 14):
        m.d.comb += s.eq(3)
    with m.Elif(n < 30):
        m.d.comb += s.eq(4)
    with m.Elif(n < COUNT_MAX):
        m.d.comb += s.eq(5)
    with m.Else():
        m.d.comb += s.eq(6)
    new_prob = Signal(PROB_BITS, name=f"{name}_prob")
    new_n = Signal(6, name=f"{name}_n")
    m.d.comb += [
        new_prob.eq(Mux(bit, prob - (prob >> s), prob + ((4096 - prob) >> s))),
        new_n.eq(Mux(n < COUNT_MAX, n + 1, n)),
    ]
    return new_prob, new_n


def shift_low(m: Module, do, low, cache, pending, name: str):
    """One ``shift_low()`` of 6.2.1 when ``do`` (comb): the new state and the record it settles."""
    settle = Signal(name=f"{name}_settle")
    carry = Signal(name=f"{name}_carry")
    rec = Signal(record_layout, name=f"{name}_rec")
    emit = Signal(name=f"{name}_emit")
    low2 = Signal(33, name=f"{name}_low")
    cache2 = Signal(8, name=f"{name}_cache")
    pending2 = Signal(PENDING_BITS, name=f"{name}_pending")
    m.d.comb += [
        settle.eq((low < 0xFF000000) | low[32]),
        carry.eq(low[32]),
        rec.first.eq(cache + carry),
        rec.run.eq(pending - 1),
        rec.fill.eq(0xFF + carry),
        emit.eq(do & settle),
        low2.eq(Mux(do, Cat(Const(0, 8), low[:24]), low)),
        cache2.eq(Mux(emit, low[24:32], cache)),
        pending2.eq(Mux(do, Mux(settle, 1, pending + 1), pending)),
    ]
    return low2, cache2, pending2, emit, rec


class RangeEncoder(wiring.Component):
    """Bins in (``i``: bit, context, bypass, last), the sections' bytes out (``o``: byte, last).

    Parameters
    ----------
    fifo_depth : int
        Records buffered between the coder and the byte emitter.
    """

    def __init__(self, fifo_depth: int = 16):
        self.fifo_depth = fifo_depth
        super().__init__({"i": In(stream.Signature(bin_layout)), "o": Out(stream.Signature(byte_layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = memory.Memory(shape=unsigned(PROB_BITS + 6), depth=512, init=[])
        wr = table.write_port()
        rd = table.read_port(transparent_for=(wr,))
        m.submodules.events = events = fifo.SyncFIFOBuffered(width=event_layout.size, depth=self.fifo_depth)

        # ------------------------------------------------------------ stage 1: the bin taken, its context read
        s1_valid = Signal()
        s1 = Signal(bin_layout)
        touched = Signal(N_CONTEXTS + 1)  # +1: indices 423..511 are never touched (not in the table)
        flushing = Signal()
        flush_left = Signal(range(TERMINATION_SHIFTS + 1))
        fire = Signal()  # stage 2 codes the bin in stage 1 this cycle
        take = Signal()
        m.d.comb += [
            fire.eq(s1_valid & events.w_rdy),
            self.i.ready.eq(~flushing & (~s1_valid | (fire & ~s1.last))),
            take.eq(self.i.valid & self.i.ready),
            rd.addr.eq(Mux(take, self.i.p.ctx, s1.ctx)),
        ]
        with m.If(take):
            m.d.sync += [s1_valid.eq(1), s1.eq(self.i.payload)]
        with m.Elif(fire):
            m.d.sync += s1_valid.eq(0)

        # ------------------------------------------------------------ stage 2: code, update, renormalize
        low = Signal(33)
        rng = Signal(32, init=0xFFFFFFFF)
        cache = Signal(8)
        pending = Signal(PENDING_BITS, init=1)

        fresh = Signal()
        prob = Signal(PROB_BITS)
        count = Signal(6)
        m.d.comb += [
            fresh.eq(~(touched >> s1.ctx)[0]),
            prob.eq(Mux(fresh, 2048, rd.data[:PROB_BITS])),
            count.eq(Mux(fresh, 0, rd.data[PROB_BITS:])),
        ]
        new_prob, new_n = context_update(m, prob, count, s1.bit)
        p = Signal(PROB_BITS)
        bound = Signal(32)
        low1 = Signal(33)
        rng1 = Signal(32)
        m.d.comb += [
            p.eq(Mux(s1.bypass, 2048, prob)),
            bound.eq((rng >> PROB_BITS) * p),
            low1.eq(Mux(s1.bit, low + bound, low)),
            rng1.eq(Mux(s1.bit, rng - bound, bound)),
            wr.addr.eq(s1.ctx),
            wr.data.eq(Cat(new_prob, new_n)),
            wr.en.eq(fire & ~s1.bypass),
        ]
        with m.If(fire & ~s1.bypass):
            m.d.sync += touched.eq(touched | (Const(1, N_CONTEXTS + 1) << s1.ctx))

        # renormalization: one shift while the range is under 2^24, a second under 2^16; the
        # termination makes two shifts a cycle (then one)
        sh1 = Signal()
        sh2 = Signal()
        with m.If(flushing):
            m.d.comb += [sh1.eq(1), sh2.eq(flush_left >= 2)]
        with m.Else():
            m.d.comb += [sh1.eq(fire & (rng1 < (1 << 24))), sh2.eq(fire & (rng1 < (1 << 16)))]
        low_in = Signal(33)
        m.d.comb += low_in.eq(Mux(flushing, low, low1))
        la, ca, pa, emit_a, rec_a = shift_low(m, sh1, low_in, cache, pending, "sa")
        lb, cb, pb, emit_b, rec_b = shift_low(m, sh2, la, ca, pa, "sb")

        ev = Signal(event_layout)
        ending = Signal()
        m.d.comb += [
            ending.eq(flushing & (flush_left <= 2)),
            ev.n.eq(emit_a + emit_b),
            ev.rec0.eq(Mux(emit_a, rec_a, rec_b)),
            ev.rec1.eq(rec_b),
            ev.last.eq(ending),
            events.w_data.eq(ev),
            events.w_en.eq((fire | flushing) & (ev.n != 0)),
        ]
        with m.If(fire):
            m.d.sync += [low.eq(lb), cache.eq(cb), pending.eq(pb)]
            m.d.sync += rng.eq(Mux(sh2, rng1 << 16, Mux(sh1, rng1 << 8, rng1)))
            with m.If(s1.last):
                m.d.sync += [flushing.eq(1), flush_left.eq(TERMINATION_SHIFTS)]
        with m.If(flushing & events.w_rdy):
            m.d.sync += [low.eq(lb), cache.eq(cb), pending.eq(pb), flush_left.eq(flush_left - 2)]
            with m.If(ending):  # the section is out: the coder and the contexts start afresh
                m.d.sync += [
                    flushing.eq(0),
                    low.eq(0),
                    rng.eq(0xFFFFFFFF),
                    cache.eq(0),
                    pending.eq(1),
                    touched.eq(0),
                ]
        # (the termination's fifth shift always settles: low is 0 by then, so the last
        # event of a section is never empty and carries the section's last byte)

        # ------------------------------------------------------------ the byte emitter
        cur = Signal(event_layout)
        have = Signal()
        idx = Signal()  # the record within the event
        in_run = Signal()  # emitting the record's run (else its first byte)
        left = Signal(PENDING_BITS)
        first_of_section = Signal(init=1)
        rec = Signal(record_layout)
        m.d.comb += [
            events.r_en.eq(~have),
            rec.eq(Mux(idx, cur.rec1, cur.rec0)),
        ]
        with m.If(events.r_en & events.r_rdy):
            m.d.sync += [have.eq(1), cur.eq(events.r_data), idx.eq(0), in_run.eq(0)]
        byte = Signal(8)
        rec_done = Signal()  # this byte is the record's last
        m.d.comb += [
            byte.eq(Mux(in_run, rec.fill, rec.first)),
            rec_done.eq(Mux(in_run, left == 1, rec.run == 0)),
        ]
        event_done = Signal()
        m.d.comb += event_done.eq(rec_done & ((idx == 1) | (cur.n == 1)))
        advance = Signal()
        drop = Signal()
        m.d.comb += [
            drop.eq(first_of_section & ~in_run & (idx == 0)),
            self.o.valid.eq(have & ~drop),
            self.o.p.data.eq(byte),
            self.o.p.last.eq(event_done & cur.last),
            advance.eq(have & (drop | self.o.ready)),
        ]
        with m.If(advance):
            m.d.sync += first_of_section.eq(0)
            with m.If(rec_done):
                m.d.sync += [in_run.eq(0), idx.eq(1)]
                with m.If(event_done):
                    m.d.sync += have.eq(0)
                    with m.If(cur.last):
                        m.d.sync += first_of_section.eq(1)
            with m.Elif(~in_run):
                m.d.sync += [in_run.eq(1), left.eq(rec.run)]
            with m.Else():
                m.d.sync += left.eq(left - 1)
        return m
