"""The v2 coder's binary range encoder with its context table on chip (docs/bitstream.md 6.2.1, 6.2.2).

:class:`RangeEncoder` takes one *bin* per cycle -- the bin, its context index (0..422, the
table of section 6.2.5) or a bypass flag, and whether it is the section's last -- and
gives the section's bytes, bit for bit those of :class:`temposplit.codec.ctx_reference.RangeEncoder`
with :class:`~temposplit.codec.ctx_reference.Context` states. A pipeline of seven stages
that never stalls once a bin is in (the input's credit keeps room for its records):

- T: the bin registered; the *context table* (512 x 33 block RAM: the probability p of a
  0 bin, 4096 - p, the count, the adaptation shift) read at its context, and 1 of 27
  groups of 16 *touched-bits* (a context this section has coded: every context starts
  afresh, p = 2048, at a section's start without clearing the RAM);
- A: the RAM's word registered, the touched-bit picked in its group, and whether the
  bin's context is the one written back in either of the two cycles before B (writes
  the RAM read missed);
- B: the context's state (forwarded from the last or the one before last write, fresh,
  or the RAM's), its update written back; the interval's factor q (p for a 0 bin,
  4096 - p for a 1, 2048 for a bypass bin) registered;
- C: the range, the one loop of one cycle: ``range' = (range >> 12) * q`` (+ ``range mod
  4096`` for a 1 bin), then the shifts (0, 1 or 2 bytes) that bring it back to >= 2^24;
- D: what a 1 bin adds to ``low``: the old range minus the new one, registered;
- E: ``low`` (33 bits) plus that, shifted; after a section's last bin, the termination's
  five shifts (three cycles);
- F: what the shifts settle: a shift that settles the top byte produces an *output
  record*, the held byte (``cache``) plus the carry, then ``pending - 1`` copies of 0xFF
  plus the carry (a run of 0xFF held back for a carry); a cycle's records (at most two)
  are one *event* into the record FIFO.

The *byte emitter* after the FIFO sends one byte per cycle, drops the section's first
byte (always 0) and marks the last. The input takes a bin while the FIFO has room for
the events of every bin in flight (``CREDIT``, the FIFO's level a cycle ago): it stalls
only when the output is back-pressured or records come faster than a byte per cycle; a
bin behind a section's last waits for that section's termination. A section codes at
least one bin.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

PROB_BITS = 12
N_CONTEXTS = 423  # the context table of docs/bitstream.md 6.2.5
COUNT_MAX = 62
PENDING_BITS = 32
TERMINATION_SHIFTS = 5
TOUCHED_GROUPS = 27  # 27 x 16 touched-bits >= 423 contexts
CREDIT = 13  # free FIFO entries a bin needs to be taken: the events of the bins in flight

bin_layout = data.StructLayout({"bit": unsigned(1), "ctx": unsigned(9), "bypass": unsigned(1), "last": unsigned(1)})
byte_layout = data.StructLayout({"data": unsigned(8), "last": unsigned(1)})
record_layout = data.StructLayout(
    {"first": unsigned(8), "run": unsigned(PENDING_BITS), "fill": unsigned(8)}  # first, then run x fill
)
# what one cycle of the coder produces: up to two records, the second the section's end
event_layout = data.StructLayout({"n": unsigned(2), "rec0": record_layout, "rec1": record_layout, "last": unsigned(1)})


# a context's state in the table: the probability of a 0 bin and its complement 4096 - p
# (so that neither a 1 bin's factor nor the update subtracts from 4096), the count of
# bins coded and the adaptation shift it gives
ctx_word = data.StructLayout(
    {"prob": unsigned(PROB_BITS), "cprob": unsigned(PROB_BITS), "n": unsigned(6), "s": unsigned(3)}
)
FRESH = ctx_word.const({"prob": 2048, "cprob": 2048, "n": 0, "s": 1})
fwd_layout = data.StructLayout({"valid": unsigned(1), "ctx": unsigned(9), "word": ctx_word})


def adapt_shift(m: Module, n, name: str):
    """floor(log2(n + 2)), at most 6 (6.2.2), comb."""
    s = Signal(3, name=name)
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
    return s


def context_update(m: Module, st, bit, name: str = "ctx"):
    """The adaptation of 6.2.2 (comb): the context's new word after bin ``bit``. The side
    the bin did not take shrinks by its own ``>> s`` and the other grows by as much:
    a 0 bin, p += (4096 - p) >> s; a 1 bin, p -= p >> s."""
    shrink = Signal(PROB_BITS, name=f"{name}_shrink")
    grow = Signal(PROB_BITS, name=f"{name}_grow")
    delta = Signal(PROB_BITS, name=f"{name}_delta")
    new = Signal(ctx_word, name=f"{name}_new")
    m.d.comb += [
        shrink.eq(Mux(bit, st.prob, st.cprob)),
        grow.eq(Mux(bit, st.cprob, st.prob)),
        delta.eq(shrink >> st.s),
        new.n.eq(Mux(st.n < COUNT_MAX, st.n + 1, st.n)),
    ]
    m.d.comb += [
        new.prob.eq(Mux(bit, shrink - delta, grow + delta)),
        new.cprob.eq(Mux(bit, grow + delta, shrink - delta)),
        new.s.eq(adapt_shift(m, new.n, f"{name}_s")),
    ]
    return new


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
        Events (a cycle's records) buffered between the coder and the byte emitter; at
        least ``CREDIT + 4``.
    """

    def __init__(self, fifo_depth: int = 32):
        if fifo_depth < CREDIT + 4:
            self._MustUse__used = True  # (refused: not an unused elaboratable)
            raise ValueError(f"fifo_depth must be at least {CREDIT + 4}")
        self.fifo_depth = fifo_depth
        super().__init__({"i": In(stream.Signature(bin_layout)), "o": Out(stream.Signature(byte_layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = memory.Memory(shape=ctx_word, depth=512, init=[])
        wr = table.write_port()
        rd = table.read_port()  # not transparent: the two writes it misses are forwarded
        m.submodules.events = events = fifo.SyncFIFOBuffered(width=event_layout.size, depth=self.fifo_depth)

        # ------------------------------------------------------------ the input: credit, no stall after it
        # A bin is taken only while the record FIFO has room for every event the bins in
        # flight can still make (one each, three more for a section's termination): past
        # the input register nothing stalls. ``room`` is a register (the level a cycle ago).
        room = Signal(init=1)
        closing = Signal()  # a section's last bin is in: the next waits for its termination
        take = Signal()
        m.d.sync += room.eq(events.level <= self.fifo_depth - CREDIT)
        m.d.comb += [
            self.i.ready.eq(room & ~closing),
            take.eq(self.i.valid & self.i.ready),
        ]

        # ------------------------------------------------------------ T: the bin registered, its context read
        t_valid = Signal()
        t = Signal(bin_layout)
        m.d.sync += t_valid.eq(take)
        with m.If(take):
            m.d.sync += t.eq(self.i.payload)
            with m.If(self.i.p.last):
                m.d.sync += closing.eq(1)
        touched = Signal(TOUCHED_GROUPS * 16)  # a context touched in this section (423 used)
        groups = Signal(16 * TOUCHED_GROUPS)
        m.d.comb += [rd.addr.eq(t.ctx), groups.eq(touched)]
        group_sel = Signal(16)
        m.d.comb += group_sel.eq(groups.word_select(t.ctx[4:], 16))

        # ------------------------------------------------------------ A: RAM word out, touched bit, forwarding
        a_valid = Signal()
        a = Signal(bin_layout)
        a_group = Signal(16)
        m.d.sync += [a_valid.eq(t_valid), a.eq(t), a_group.eq(group_sel)]
        # B (the bin ahead) writes this cycle, w1 wrote the cycle before: the RAM read of
        # the bin in A (issued a cycle ago) saw neither
        b_valid = Signal()
        b = Signal(bin_layout)
        w1 = Signal(fwd_layout)
        w2 = Signal(fwd_layout)
        b_valid_ctx = Signal()
        m.d.comb += b_valid_ctx.eq(b_valid & ~b.bypass)
        b_word = Signal(ctx_word)
        b_fresh = Signal()
        b_m1 = Signal()
        b_m2 = Signal()
        m.d.sync += [
            b_valid.eq(a_valid),
            b.eq(a),
            b_word.eq(rd.data),
            b_fresh.eq(~a_group.bit_select(a.ctx[:4], 1)),
            b_m1.eq(b_valid_ctx & (b.ctx == a.ctx)),
            b_m2.eq(w1.valid & (w1.ctx == a.ctx)),
        ]

        # ------------------------------------------------------------ B: the context's state, its update
        st = Signal(ctx_word)
        with m.If(b_m1):
            m.d.comb += st.eq(w1.word)
        with m.Elif(b_m2):
            m.d.comb += st.eq(w2.word)
        with m.Elif(b_fresh):
            m.d.comb += st.eq(FRESH)
        with m.Else():
            m.d.comb += st.eq(b_word)
        new = context_update(m, st, b.bit)
        m.d.comb += [
            wr.addr.eq(b.ctx),
            wr.data.eq(new),
            wr.en.eq(b_valid_ctx),
        ]
        m.d.sync += [w1.valid.eq(b_valid_ctx), w1.ctx.eq(b.ctx), w1.word.eq(new), w2.eq(w1)]
        with m.If(b_valid_ctx):
            m.d.sync += touched.eq(touched | (Const(1, len(touched)) << b.ctx))
        with m.If(b_valid & b.last):  # the section's contexts are done: the next starts afresh
            m.d.sync += [touched.eq(0), w1.valid.eq(0), w2.valid.eq(0)]
        # the interval's factor: p for a 0 bin, 4096 - p for a 1 (section 6.2.1)
        c_valid = Signal()
        c = Signal(bin_layout)
        c_q = Signal(PROB_BITS)
        m.d.sync += [
            c_valid.eq(b_valid),
            c.eq(b),
            c_q.eq(Mux(b.bypass, 2048, Mux(b.bit, st.cprob, st.prob))),
        ]

        # ------------------------------------------------------------ C: the range
        # range' = (range >> 12) * q + (bit ? range mod 4096 : 0): for a 1 bin that is
        # range - (range >> 12) * p. Then the shifts that bring it back to >= 2^24.
        rng = Signal(32, init=0xFFFFFFFF)
        rng1 = Signal(32)
        ns = Signal(2)
        m.d.comb += [
            rng1.eq((rng >> PROB_BITS) * c_q + Mux(c.bit, rng[:PROB_BITS], 0)),
            ns.eq(Mux(rng1[16:] == 0, 2, Mux(rng1[24:] == 0, 1, 0))),
        ]
        with m.If(c_valid):
            m.d.sync += rng.eq(Mux(c.last, 0xFFFFFFFF, Mux(ns[1], rng1 << 16, Mux(ns[0], rng1 << 8, rng1))))
        d_valid = Signal()
        d = Signal(bin_layout)
        d_rng = Signal(32)
        d_rng1 = Signal(32)
        d_ns = Signal(2)
        m.d.sync += [d_valid.eq(c_valid), d.eq(c), d_rng.eq(rng), d_rng1.eq(rng1), d_ns.eq(ns)]

        # ------------------------------------------------------------ D: what a 1 bin adds to low
        e_valid = Signal()
        e_last = Signal()
        e_bound = Signal(32)
        e_ns = Signal(2)
        m.d.sync += [
            e_valid.eq(d_valid),
            e_last.eq(d.last),
            e_bound.eq(Mux(d.bit, d_rng - d_rng1, 0)),
            e_ns.eq(d_ns),
        ]

        # ------------------------------------------------------------ E: low, and the termination
        # low += bound, then its shifts (a shift only moves bits: what they settle is F's).
        # After a section's last bin, the termination's five shifts: 2, 2, 1 (three cycles).
        low = Signal(33)
        flushing = Signal()
        flush_step = Signal(2)
        e_sum = Signal(33)
        e_do = Signal(2)
        e_end = Signal()
        e_out = Signal()
        m.d.comb += e_sum.eq(low + Mux(e_valid, e_bound, 0))
        with m.If(e_valid):
            m.d.comb += [e_do.eq(e_ns), e_out.eq(1)]
        with m.Elif(flushing):
            m.d.comb += [e_do.eq(Mux(flush_step == 2, 1, 2)), e_end.eq(flush_step == 2), e_out.eq(1)]
        with m.If(e_valid | flushing):
            m.d.sync += low.eq(Mux(e_do[1], e_sum[:16] << 16, Mux(e_do[0], e_sum[:24] << 8, e_sum)))
        with m.If(e_valid & e_last):
            m.d.sync += [flushing.eq(1), flush_step.eq(0)]
        with m.If(flushing):
            m.d.sync += flush_step.eq(flush_step + 1)
            with m.If(e_end):  # the section is out: the coder starts afresh, the input opens
                m.d.sync += [flushing.eq(0), low.eq(0), closing.eq(0)]
        f_valid = Signal()
        f_low = Signal(33)
        f_do = Signal(2)
        f_end = Signal()
        m.d.sync += [f_valid.eq(e_out), f_low.eq(e_sum), f_do.eq(e_do), f_end.eq(e_end)]

        # ------------------------------------------------------------ F: the shifts' records
        cache = Signal(8)
        pending = Signal(PENDING_BITS, init=1)
        la, ca, pa, emit_a, rec_a = shift_low(m, f_do != 0, f_low, cache, pending, "sa")
        lb, cb, pb, emit_b, rec_b = shift_low(m, f_do[1], la, ca, pa, "sb")
        ev = Signal(event_layout)
        m.d.comb += [
            ev.n.eq(emit_a + emit_b),
            ev.rec0.eq(Mux(emit_a, rec_a, rec_b)),
            ev.rec1.eq(rec_b),
            ev.last.eq(f_end),
            events.w_data.eq(ev),
            events.w_en.eq(f_valid & (ev.n != 0)),
        ]
        with m.If(f_valid):
            m.d.sync += [cache.eq(cb), pending.eq(pb)]
            with m.If(f_end):
                m.d.sync += [cache.eq(0), pending.eq(1)]
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


# ----------------------------------------------------------------------------- anchors (6.2.3-6.2.5)

# first context of each group (docs/bitstream.md 6.2.5; codec/ctx_reference.py)
INTRA_ZERO, INTRA_SIGN, INTRA_MAG = 0, 25, 34
TEMP_ZERO, TEMP_SIGN, TEMP_MAG = 54, 246, 390
UNARY_MAX = 14
MAX_CHANNELS = 4096  # C of a map (the CHANNELS register's 12 bits)

element_layout = data.StructLayout(
    {"x": unsigned(8), "p": unsigned(8), "t": unsigned(2), "last": unsigned(1)}
)  # the code, the reference's co-located code (temporal), the reference's change + 1


def _cls(m, v, name):
    out = Signal(3, name=name)
    with m.If(v < 2):
        m.d.comb += out.eq(v)
    with m.Elif(v < 4):
        m.d.comb += out.eq(2)
    with m.Elif(v < 8):
        m.d.comb += out.eq(3)
    with m.Else():
        m.d.comb += out.eq(4)
    return out


def _sgn3(m, v, name):
    out = Signal(2, name=name)
    m.d.comb += out.eq(Mux(v < 0, 0, Mux(v == 0, 1, 2)))
    return out


def _bitlength(m, v, width, name):
    out = Signal(range(width + 1), name=name)
    for i in range(width):
        with m.If(v[i]):
            m.d.comb += out.eq(i + 1)
    return out


class AnchorBinarizer(wiring.Component):
    """An anchor's elements in (element order: its N-bit code ``x``, for a temporal anchor
    the reference's co-located code ``p`` and change ``t`` - 1), bins out, one per cycle:
    each value's zero, sign, unary magnitude and suffix bins (6.2.4) with the intra or
    temporal context of 6.2.5. The upper neighbours come from a line buffer of one row
    (``line_elements`` >= W x C entries: the code and the change of each element), the
    left ones from a buffer of one pixel (C entries), the previous channel's change from a
    register.

    Configuration (stable during a section): ``width``, ``channels``, ``n_bits``, ``z_n``,
    ``temporal``.
    """

    def __init__(self, line_elements: int = 16384):
        self.line_elements = line_elements
        super().__init__(
            {
                "i": In(stream.Signature(element_layout)),
                "o": Out(stream.Signature(bin_layout)),
                "width": In(10),
                "channels": In(12),
                "n_bits": In(4),
                "z_n": In(9),
                "temporal": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        LE = self.line_elements
        # the row above (indexed by x * C + c) and the pixel to the left (indexed by c): two
        # simple dual-port RAMs, each read when an element is taken, written as one moves on
        m.submodules.line = line = memory.Memory(shape=unsigned(10), depth=LE, init=[])
        m.submodules.left = left = memory.Memory(shape=unsigned(10), depth=MAX_CHANNELS, init=[])
        wr = line.write_port()
        rd_u = line.read_port(transparent_for=(wr,))
        wr_l = left.write_port()
        rd_l = left.read_port(transparent_for=(wr_l,))

        top = Signal(8)
        sh = Signal(3)
        zc = Signal(8)
        m.d.comb += [
            top.eq((Const(1, 9) << self.n_bits) - 1),
            sh.eq(Mux(self.n_bits > 4, self.n_bits - 4, 0)),
            zc.eq(Mux(self.z_n > top, top, self.z_n)),
        ]

        # ------------------------------------------------------------ stage 0: position, line buffer read
        pos_c = Signal(12)
        pos_x = Signal(10)
        pos_y = Signal(10)
        pos_a = Signal(range(LE))
        s0_valid = Signal()
        s0_data = Signal()  # its line-buffer words are on the read ports
        s0 = Signal(element_layout)
        s0_c = Signal(12)
        s0_x = Signal(10)
        s0_y = Signal(10)
        s0_a = Signal(range(LE))
        move = Signal()  # stage 0 -> stage 1
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(~s0_valid | move),
            take.eq(self.i.valid & self.i.ready),
            rd_u.addr.eq(Mux(take, pos_a, s0_a)),
            rd_l.addr.eq(Mux(take, pos_c, s0_c)),
        ]
        with m.If(take):
            m.d.sync += [s0_valid.eq(1), s0_data.eq(1), s0.eq(self.i.payload)]
            m.d.sync += [s0_c.eq(pos_c), s0_x.eq(pos_x), s0_y.eq(pos_y), s0_a.eq(pos_a)]
            with m.If(self.i.p.last):
                m.d.sync += [pos_c.eq(0), pos_x.eq(0), pos_y.eq(0), pos_a.eq(0)]
            with m.Elif(pos_c + 1 == self.channels):
                m.d.sync += pos_c.eq(0)
                with m.If(pos_x + 1 == self.width):
                    m.d.sync += [pos_x.eq(0), pos_y.eq(pos_y + 1), pos_a.eq(0)]
                with m.Else():
                    m.d.sync += [pos_x.eq(pos_x + 1), pos_a.eq(pos_a + 1)]
            with m.Else():
                m.d.sync += [pos_c.eq(pos_c + 1), pos_a.eq(pos_a + 1)]
        with m.Elif(move):
            m.d.sync += s0_valid.eq(0)

        # the element's prediction and change; its line-buffer word is written as it moves on
        p = Signal(8)
        change = Signal(signed(2))
        m.d.comb += [
            p.eq(Mux(self.temporal, s0.p, zc)),
            change.eq(Mux(self.temporal, Mux(s0.x > s0.p, 1, Mux(s0.x < s0.p, -1, 0)), 0)),
            wr.addr.eq(s0_a),
            wr.data.eq(Cat(s0.x, change)),
            wr.en.eq(move),
            wr_l.addr.eq(s0_c),
            wr_l.data.eq(Cat(s0.x, change)),
            wr_l.en.eq(move),
        ]
        prev_change = Signal(signed(2))
        with m.If(move):
            m.d.sync += prev_change.eq(Mux(s0.last, 0, change))

        # contexts of the element in stage 0 (from its neighbours)
        lv = Signal(8)
        uv = Signal(8)
        sl = Signal(signed(2))
        su = Signal(signed(2))
        sp = Signal(signed(2))
        m.d.comb += [
            lv.eq(Mux(s0_x > 0, rd_l.data[:8], zc)),
            uv.eq(Mux(s0_y > 0, rd_u.data[:8], zc)),
            sl.eq(Mux(s0_x > 0, rd_l.data[8:10], 0)),
            su.eq(Mux(s0_y > 0, rd_u.data[8:10], 0)),
            sp.eq(Mux(s0_c > 0, prev_change, 0)),
        ]
        dl = Signal(signed(10))
        du = Signal(signed(10))
        m.d.comb += [dl.eq(lv - zc), du.eq(uv - zc)]
        a = Signal(8)
        b = Signal(8)
        m.d.comb += [a.eq(abs(dl) >> sh), b.eq(abs(du) >> sh)]
        cls_a, cls_b = _cls(m, a, "cls_a"), _cls(m, b, "cls_b")
        cls_ab = _cls(m, Mux(a > b, a, b), "cls_ab")
        nn = Signal(2)
        m.d.comb += nn.eq((sl != 0) + (su != 0) + (sp != 0))
        pc = Signal(8)
        m.d.comb += pc.eq(s0.p >> sh)
        ssum = Signal(signed(3))
        m.d.comb += ssum.eq(sl + su)
        z_ctx = Signal(9)
        s_ctx = Signal(9)
        mag_base = Signal(9)  # the context of unary bin i: mag_base + min(i, 3) * mag_step
        mag_step = Signal(3)
        with m.If(self.temporal):
            m.d.comb += [
                z_ctx.eq(TEMP_ZERO + (pc * 4 + nn) * 3 + s0.t),
                s_ctx.eq(TEMP_SIGN + (pc * 3 + _sgn3(m, ssum, "sg_t")) * 3 + s0.t),
                mag_base.eq(TEMP_MAG + nn),
                mag_step.eq(4),
            ]
        with m.Else():
            m.d.comb += [
                z_ctx.eq(INTRA_ZERO + cls_a * 5 + cls_b),
                s_ctx.eq(INTRA_SIGN + _sgn3(m, dl, "sg_l") * 3 + _sgn3(m, du, "sg_u")),
                mag_base.eq(INTRA_MAG + cls_ab),
                mag_step.eq(5),
            ]
        # the value's binarization (6.2.4)
        d = Signal(signed(10))
        neg = Signal()
        mm = Signal(8)  # m = |d| - 1
        mmax = Signal(8)
        m.d.comb += [
            d.eq(s0.x - p),
            neg.eq(d < 0),
            mm.eq(abs(d) - 1),
            mmax.eq(Mux(neg, p - 1, top - p - 1)),
        ]

        # ------------------------------------------------------------ stage 1: the bins
        s1_valid = Signal()
        e = Signal(
            data.StructLayout(
                {
                    "zero": unsigned(1),
                    "has_sign": unsigned(1),
                    "neg": unsigned(1),
                    "m": unsigned(8),
                    "mmax": unsigned(8),
                    "z_ctx": unsigned(9),
                    "s_ctx": unsigned(9),
                    "mag_base": unsigned(9),
                    "mag_step": unsigned(3),
                    "last": unsigned(1),
                }
            )
        )
        phase = Signal(2)  # 0 zero bin, 1 sign, 2 unary, 3 suffix
        idx = Signal(5)  # unary bin i, or suffix bit j (counting down)
        unary_n = Signal(5)  # min(mmax, 14)
        suffix_w = Signal(4)
        rest = Signal(8)
        m.d.comb += [
            unary_n.eq(Mux(e.mmax < UNARY_MAX, e.mmax, UNARY_MAX)),
            rest.eq(e.m - UNARY_MAX),
        ]
        bl = _bitlength(m, e.mmax - UNARY_MAX, 8, "suffix_bits")
        m.d.comb += suffix_w.eq(Mux(e.mmax > UNARY_MAX, bl, 0))

        bit = Signal()
        ctxi = Signal(9)
        bypass = Signal()
        final = Signal()  # this bin is the element's last
        imin = Signal(2)
        m.d.comb += imin.eq(Mux(idx > 3, 3, idx))
        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += [
                    bit.eq(~e.zero),
                    ctxi.eq(e.z_ctx),
                    final.eq(e.zero | (~e.has_sign & (unary_n == 0) & (suffix_w == 0))),
                ]
            with m.Case(1):
                m.d.comb += [bit.eq(e.neg), ctxi.eq(e.s_ctx), final.eq((unary_n == 0) & (suffix_w == 0))]
            with m.Case(2):
                m.d.comb += [
                    bit.eq(e.m > idx),
                    ctxi.eq(e.mag_base + imin * e.mag_step),
                    final.eq((e.m == idx) | ((idx + 1 == unary_n) & (suffix_w == 0))),
                ]
            with m.Case(3):
                m.d.comb += [bit.eq((rest >> idx)[0]), bypass.eq(1), final.eq(idx == 0)]
        m.d.comb += [
            self.o.valid.eq(s1_valid),
            self.o.p.bit.eq(bit),
            self.o.p.ctx.eq(ctxi),
            self.o.p.bypass.eq(bypass),
            self.o.p.last.eq(final & e.last),
        ]
        done = Signal()
        m.d.comb += [
            done.eq(s1_valid & self.o.ready & final),
            move.eq(s0_valid & s0_data & (~s1_valid | done)),
        ]
        with m.If(s1_valid & self.o.ready & ~final):
            with m.Switch(phase):
                with m.Case(0):
                    m.d.sync += [phase.eq(Mux(e.has_sign, 1, Mux(unary_n != 0, 2, 3))), idx.eq(0)]
                    with m.If(~e.has_sign & (unary_n == 0)):
                        m.d.sync += idx.eq(suffix_w - 1)
                with m.Case(1):
                    m.d.sync += [phase.eq(Mux(unary_n != 0, 2, 3)), idx.eq(Mux(unary_n != 0, 0, suffix_w - 1))]
                with m.Case(2):
                    with m.If(idx + 1 == unary_n):
                        m.d.sync += [phase.eq(3), idx.eq(suffix_w - 1)]
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
                with m.Case(3):
                    m.d.sync += idx.eq(idx - 1)
        with m.If(done):
            m.d.sync += s1_valid.eq(0)
        with m.If(move):
            m.d.sync += [
                s1_valid.eq(1),
                phase.eq(0),
                idx.eq(0),
                e.zero.eq(d == 0),
                e.has_sign.eq((p != 0) & (p != top)),
                e.neg.eq(neg),
                e.m.eq(mm),
                e.mmax.eq(mmax),
                e.z_ctx.eq(z_ctx),
                e.s_ctx.eq(s_ctx),
                e.mag_base.eq(mag_base),
                e.mag_step.eq(mag_step),
                e.last.eq(s0.last),
            ]
        return m


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
                "width": In(10),
                "channels": In(12),
                "n_bits": In(4),
                "z_n": In(9),
                "temporal": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.bins = bins = AnchorBinarizer(self.line_elements)
        m.submodules.coder = coder = RangeEncoder(self.fifo_depth)
        wiring.connect(m, wiring.flipped(self.i), bins.i)
        wiring.connect(m, bins.o, coder.i)
        wiring.connect(m, coder.o, wiring.flipped(self.o))
        for name in ("width", "channels", "n_bits", "z_n", "temporal"):
            m.d.comb += getattr(bins, name).eq(getattr(self, name))
        return m
