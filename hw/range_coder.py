"""The v2 coder's binary range encoder with its context table on chip (docs/bitstream.md 6.2.1, 6.2.2).

:class:`RangeEncoder` takes one *bin* per cycle -- the bin, its context index (0..458, the
table of section 6.2.5) or a bypass flag, and whether it is the section's last -- and
gives the section's bytes, bit for bit those of :class:`temposplit.codec.ctx_reference.RangeEncoder`
with :class:`~temposplit.codec.ctx_reference.Context` states. A pipeline of eight stages
that never stalls once a bin is in (the input's credit keeps room for its records):

- T: the bin registered; the *context table* (512 x 33 block RAM: the probability p of a
  0 bin, 4096 - p, the count, the adaptation shift) read at its context, and 1 of 29
  groups of 16 *touched-bits* (a context this section has coded: every context starts
  afresh, p = 2048, at a section's start without clearing the RAM);
- A: the RAM's word registered, the touched-bit picked in its group, and whether the
  bin's context is the one written back in either of the two cycles before B (writes
  the RAM read missed);
- B: the context's state (forwarded from the last or the one before last write, fresh,
  or the RAM's), its update written back; the interval's factor q (p for a 0 bin,
  4096 - p for a 1, 2048 for a bypass bin) registered;
- G: q's multiples v * q for every hex digit v (a table of 16 words, registered);
- C: the range, the one loop of one cycle: ``range' = (range >> 12) * q`` (+ ``range mod
  4096`` for a 1 bin), kept before its shift (none or one byte back to >= 2^24: never two,
  since no context's probability leaves 26..4070): the table words of the register's hex
  digits, the shift (an 8-bit zero test of the register) picks the range's five, two
  carry-save steps, one add; no multiplier;
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

The bins come from :class:`ValueBins`, fed by :class:`AnchorBinarizer` (an anchor's
elements: :class:`AnchorCoder`) or by :class:`RecordUnpack` (value records the PS
computed, any section: :class:`ValueCoder`); :class:`CtxCoder`, the top's engine, has both
fronts and one range encoder.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.codec.ctx_records import FIELDS as RECORD_FIELDS
from temposplit.codec.ctx_records import RUN_COUNT, RUN_CTX_BITS, RUN_FLAG

PROB_BITS = 12
N_CONTEXTS = 459  # the context table of docs/bitstream.md 6.2.5
COUNT_MAX = 62
PENDING_BITS = 32
TERMINATION_SHIFTS = 5
TOUCHED_GROUPS = 29  # 29 x 16 touched-bits >= 459 contexts
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
    ]
    m.d.comb += [
        new.prob.eq(Mux(bit, shrink - delta, grow + delta)),
        new.cprob.eq(Mux(bit, grow + delta, shrink - delta)),
    ]
    # the next count and its shift straight from the count (a table of 63, LUTs): no
    # increment and compares in series (carry chains on the ECP5) beside the update
    with m.Switch(st.n):
        for n in range(COUNT_MAX + 1):
            with m.Case(n):
                nxt = min(n + 1, COUNT_MAX)
                m.d.comb += [new.n.eq(nxt), new.s.eq(min(6, (nxt + 2).bit_length() - 1))]
    return new


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
        touched = Signal(TOUCHED_GROUPS * 16)  # a context touched in this section (459 used)
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
        g_valid = Signal()
        g = Signal(bin_layout)
        g_q = Signal(PROB_BITS)
        m.d.sync += [
            g_valid.eq(b_valid),
            g.eq(b),
            g_q.eq(Mux(b.bypass, 2048, Mux(b.bit, st.cprob, st.prob))),
        ]

        # ------------------------------------------------------------ G: q's multiples
        # v * q for every hex digit v, so that the range's product is a sum of table words
        c_valid = Signal()
        c = Signal(bin_layout)
        tab = Signal(data.ArrayLayout(unsigned(16), 16))
        q1, q2, q4, q8, q16 = g_q, g_q << 1, g_q << 2, g_q << 3, g_q << 4
        q12 = Signal(16)
        m.d.comb += q12.eq(q8 + q4)
        multiples = [0, q1, q2, q1 + q2, q4, q4 + q1, q4 + q2, q8 - q1]
        multiples += [q8, q8 + q1, q8 + q2, q12 - q1, q12, q12 + q1, q16 - q2, q16 - q1]
        m.d.sync += [c_valid.eq(g_valid), c.eq(g), [tab[v].eq(x) for v, x in enumerate(multiples)]]

        # ------------------------------------------------------------ C: the range
        # range' = (range >> 12) * q + (bit ? range mod 4096 : 0): for a 1 bin that is
        # range - (range >> 12) * p. The register holds range' before its shift: at most
        # one byte brings it back to >= 2^24, never two (6.2.1's loop allows two, but every
        # probability a context reaches lies in 26..4070, so q >= 26 and range' >= 2^12 x 26
        # > 2^16; tests/hw/test_range_coder.py checks the reachable set). The range's hex
        # digit k (0..4, of range >> 12) is the register's digit 3 + k, or 1 + k after a
        # shift: the table word of each register digit (u[j]: digit j times q), the shift
        # (rng1 < 2^24, an 8-bit zero test) picks the word for each k, two carry-save steps,
        # one add. The only loop that must close in one cycle.
        rng1 = Signal(32, init=0xFFFFFFFF)
        shift = Signal()  # rng1 < 2^24: one byte's shift before this bin
        rng = Signal(32)  # the range before this bin: rng1 shifted
        m.d.comb += [
            shift.eq(rng1[24:] == 0),
            rng.eq(Mux(shift, rng1 << 8, rng1)),
        ]
        u = {j: Signal(16, name=f"u{j}") for j in range(1, 8)}  # (digit 0 is never one of range >> 12)
        m.d.comb += [u[j].eq(tab[rng1[4 * j : 4 * j + 4]]) for j in u]

        def csa(x, y, z, name):
            sum_, car = Signal(32, name=f"{name}_s"), Signal(32, name=f"{name}_c")
            m.d.comb += [sum_.eq(x ^ y ^ z), car.eq(((x & y) | (x & z) | (y & z)) << 1)]
            return sum_, car

        word = [Signal(16, name=f"word{k}") for k in range(5)]  # (range >> 12)'s digit k times q
        m.d.comb += [word[k].eq(Mux(shift, u[k + 1], u[k + 3])) for k in range(5)]
        low = Signal(PROB_BITS)  # range mod 4096 for a 1 bin
        m.d.comb += low.eq(Mux(c.bit, Mux(shift, Cat(Const(0, 8), rng1[:4]), rng1[:PROB_BITS]), 0))
        # four rows (words four digits apart do not overlap), two carry-save steps
        rows = [
            Cat(word[0], word[4]),
            Cat(Const(0, 4), word[1]),
            Cat(Const(0, 8), word[2]),
            Cat(low, word[3]),
        ]
        s1, c1 = csa(rows[0], rows[1], rows[2], "nxt_1")
        sel_s, sel_c = csa(s1, c1, rows[3], "nxt_2")
        nxt = Signal(32)
        m.d.comb += nxt.eq(sel_s + sel_c)
        with m.If(c_valid):
            m.d.sync += rng1.eq(nxt)
        d_valid = Signal()
        d = Signal(bin_layout)
        d_rng = Signal(32)
        m.d.sync += [d_valid.eq(c_valid), d.eq(c), d_rng.eq(rng)]
        # D reads the bin's new range from the loop's register itself (no second copy at
        # the add's output); after a section's last bin it starts afresh there (no bin
        # of the next section is in C before the termination is done)
        with m.If(d_valid & d.last):
            m.d.sync += rng1.eq(0xFFFFFFFF)

        # ------------------------------------------------------------ D: what a 1 bin adds to low
        e_valid = Signal()
        e_last = Signal()
        e_bound = Signal(32)
        e_ns = Signal(2)
        m.d.sync += [
            e_valid.eq(d_valid),
            e_last.eq(d.last),
            e_bound.eq(Mux(d.bit, d_rng - rng1, 0)),
            e_ns.eq(shift),
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
        # shift_low() of 6.2.1 once or twice on the sum E registered, written out: the
        # first shift settles unless the top byte is 0xFF without a carry, the second
        # (of a low under 2^32 after the first) unless the next byte is 0xFF; pending + 1,
        # + 2 and - 1 side by side, no adder after another
        cache = Signal(8)
        pending = Signal(PENDING_BITS, init=1)
        do_a = Signal()
        do_b = Signal()
        carry = Signal()
        settle_a = Signal()
        settle_b = Signal()
        emit_a = Signal()
        emit_b = Signal()
        cache_a = Signal(8)
        rec_a = Signal(record_layout)
        rec_b = Signal(record_layout)
        m.d.comb += [
            do_a.eq(f_do != 0),
            do_b.eq(f_do[1]),
            carry.eq(f_low[32]),
            settle_a.eq((f_low[24:32] != 0xFF) | carry),
            settle_b.eq(f_low[16:24] != 0xFF),
            emit_a.eq(do_a & settle_a),
            emit_b.eq(do_b & settle_b),
            cache_a.eq(Mux(emit_a, f_low[24:32], cache)),
            rec_a.first.eq(cache + carry),
            rec_a.run.eq(pending - 1),
            rec_a.fill.eq(Mux(carry, 0x00, 0xFF)),
            rec_b.first.eq(cache_a),
            rec_b.run.eq(Mux(settle_a, 0, pending)),  # (pending after the first shift) - 1
            rec_b.fill.eq(0xFF),
        ]
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
            with m.If(f_end):
                m.d.sync += [cache.eq(0), pending.eq(1)]
            with m.Elif(do_b):
                m.d.sync += [
                    cache.eq(Mux(emit_b, f_low[16:24], cache_a)),
                    pending.eq(Mux(settle_b, 1, Mux(settle_a, 2, pending + 2))),
                ]
            with m.Elif(do_a):
                m.d.sync += [cache.eq(cache_a), pending.eq(Mux(settle_a, 1, pending + 1))]
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


def _bitlength(m, v, width, name):
    out = Signal(range(width + 1), name=name)
    for i in range(width):
        with m.If(v[i]):
            m.d.comb += out.eq(i + 1)
    return out


def _abs_diff(m, u, v, width, name):
    """|u - v| of two unsigned values (comb): both differences at once, then a select."""
    out = Signal(width, name=name)
    m.d.comb += out.eq(Mux(u >= v, u - v, v - u))
    return out


def _sign3(m, u, v, name):
    """sgn3(u - v) of two unsigned values: 0 below, 1 equal, 2 above (comb)."""
    out = Signal(2, name=name)
    m.d.comb += out.eq(Mux(u < v, 0, Mux(u == v, 1, 2)))
    return out


# an element with its contexts and its binarization, from the context stages to the bins'
element_bins_layout = data.StructLayout(
    {
        "zero": unsigned(1),
        "has_sign": unsigned(1),
        "neg": unsigned(1),
        "m": unsigned(8),
        "z_ctx": unsigned(9),
        "s_ctx": unsigned(9),
        "mag": data.ArrayLayout(unsigned(9), 4),  # the context of unary bin i, min(i, 3)
        "unary_n": unsigned(4),  # min(mmax, 14)
        "suffix_w": unsigned(4),
        "rest": unsigned(8),  # m - 14, the suffix's value
        "last": unsigned(1),
    }
)
ELEMENT_CREDIT = 6  # free entries of the element FIFO an element needs to be taken

# an anchor section's configuration (stable during a section): the map's W and C, N, z_N
# and whether it is temporal
ANCHOR_CONFIG = {"width": 10, "channels": 12, "n_bits": 4, "z_n": 9, "temporal": 1}


class ValueBins(wiring.Component):
    """Values in (``element_bins_layout``: a value's binarization with its contexts), bins
    out, one per cycle: the zero bin, the sign bin, the unary magnitude bins (stopping
    after the first 0) and the suffix's bypass bins, most significant first (6.2.4). A
    value is taken in the cycle its last bin leaves, so values flow without a gap."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(element_bins_layout)), "o": Out(stream.Signature(bin_layout))})

    def elaborate(self, platform):
        m = Module()
        s1_valid = Signal()
        e = Signal(element_bins_layout)
        phase = Signal(2)  # 0 zero bin, 1 sign, 2 unary, 3 suffix
        idx = Signal(5)  # unary bin i, or suffix bit j (counting down)
        bit = Signal()
        ctxi = Signal(9)
        bypass = Signal()
        final = Signal()  # this bin is the element's last
        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += [
                    bit.eq(~e.zero),
                    ctxi.eq(e.z_ctx),
                    final.eq(e.zero | (~e.has_sign & (e.unary_n == 0) & (e.suffix_w == 0))),
                ]
            with m.Case(1):
                m.d.comb += [bit.eq(e.neg), ctxi.eq(e.s_ctx), final.eq((e.unary_n == 0) & (e.suffix_w == 0))]
            with m.Case(2):
                m.d.comb += [
                    bit.eq(e.m > idx),
                    ctxi.eq(e.mag[Mux(idx > 3, 3, idx[:2])]),
                    final.eq((e.m == idx) | ((idx + 1 == e.unary_n) & (e.suffix_w == 0))),
                ]
            with m.Case(3):
                m.d.comb += [bit.eq((e.rest >> idx)[0]), bypass.eq(1), final.eq(idx == 0)]
        m.d.comb += [
            self.o.valid.eq(s1_valid),
            self.o.p.bit.eq(bit),
            self.o.p.ctx.eq(ctxi),
            self.o.p.bypass.eq(bypass),
            self.o.p.last.eq(final & e.last),
        ]
        done = Signal()
        load = Signal()
        m.d.comb += [
            done.eq(s1_valid & self.o.ready & final),
            load.eq(~s1_valid | done),
            self.i.ready.eq(load),
        ]
        with m.If(s1_valid & self.o.ready & ~final):
            with m.Switch(phase):
                with m.Case(0):
                    m.d.sync += [phase.eq(Mux(e.has_sign, 1, Mux(e.unary_n != 0, 2, 3))), idx.eq(0)]
                    with m.If(~e.has_sign & (e.unary_n == 0)):
                        m.d.sync += idx.eq(e.suffix_w - 1)
                with m.Case(1):
                    m.d.sync += [
                        phase.eq(Mux(e.unary_n != 0, 2, 3)),
                        idx.eq(Mux(e.unary_n != 0, 0, e.suffix_w - 1)),
                    ]
                with m.Case(2):
                    with m.If(idx + 1 == e.unary_n):
                        m.d.sync += [phase.eq(3), idx.eq(e.suffix_w - 1)]
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
                with m.Case(3):
                    m.d.sync += idx.eq(idx - 1)
        with m.If(load):
            m.d.sync += [s1_valid.eq(self.i.valid), phase.eq(0), idx.eq(0), e.eq(self.i.payload)]
        return m


class AnchorBinarizer(wiring.Component):
    """An anchor's elements in (element order: its N-bit code ``x``, for a temporal anchor
    the reference's co-located code ``p`` and change ``t`` - 1), bins out, one per cycle:
    each value's zero, sign, unary magnitude and suffix bins (6.2.4) with the intra or
    temporal context of 6.2.5. The upper neighbours come from a line buffer of one row
    (``line_elements`` >= W x C entries: the code and the change of each element), the
    left ones from a buffer of one pixel (C entries), the previous channel's change from a
    register.

    A pipeline: the element taken, its neighbours read (both buffers written with the
    element a cycle later, that write forwarded to the next element's read); the
    neighbours registered; distances and the value's difference; the contexts and the
    binarization's lengths, into an element FIFO (an element is taken only while the FIFO
    has room for all in flight: nothing stalls before it); then the bins, one per cycle.

    Configuration (stable during a section): ``width``, ``channels``, ``n_bits``, ``z_n``,
    ``temporal``.
    """

    def __init__(self, line_elements: int = 16384, fifo_depth: int = 16):
        if fifo_depth < ELEMENT_CREDIT + 2:
            raise ValueError(f"fifo_depth must be at least {ELEMENT_CREDIT + 2}")
        self.line_elements = line_elements
        self.fifo_depth = fifo_depth
        super().__init__(
            {
                "i": In(stream.Signature(element_layout)),
                "o": Out(stream.Signature(bin_layout)),
                **{name: In(width) for name, width in ANCHOR_CONFIG.items()},
            }
        )

    def elaborate(self, platform):
        m = Module()
        LE = self.line_elements
        # the row above (indexed by x * C + c) and the pixel to the left (indexed by c): two
        # simple dual-port RAMs, read when an element is taken, written a cycle later
        m.submodules.line = line = memory.Memory(shape=unsigned(10), depth=LE, init=[])
        m.submodules.left = left = memory.Memory(shape=unsigned(10), depth=MAX_CHANNELS, init=[])
        wr = line.write_port()
        rd_u = line.read_port()
        wr_l = left.write_port()
        rd_l = left.read_port()
        m.submodules.elements = elements = fifo.SyncFIFOBuffered(width=element_bins_layout.size, depth=self.fifo_depth)

        # the configuration's terms (registers: the configuration is stable during a
        # section, and the first element reaches them two cycles after it is taken)
        top = Signal(8)
        sh = Signal(3)
        zc = Signal(8)
        temporal = Signal()
        m.d.sync += [
            top.eq((Const(1, 9) << self.n_bits) - 1),
            sh.eq(Mux(self.n_bits > 4, self.n_bits - 4, 0)),
            zc.eq(Mux(self.z_n > (Const(1, 9) << self.n_bits) - 1, (Const(1, 9) << self.n_bits) - 1, self.z_n)),
            temporal.eq(self.temporal),
        ]

        # ------------------------------------------------------------ the take: position, buffers read
        room = Signal(init=1)
        take = Signal()
        m.d.sync += room.eq(elements.level <= self.fifo_depth - ELEMENT_CREDIT)
        m.d.comb += [self.i.ready.eq(room), take.eq(self.i.valid & room)]
        pos_c = Signal(12)
        pos_x = Signal(10)
        pos_y = Signal(10)
        pos_a = Signal(range(LE))
        m.d.comb += [rd_u.addr.eq(pos_a), rd_l.addr.eq(pos_c)]
        # whether the element taken is its pixel's last channel, its row's last pixel:
        # from registers (at channel 0 the configuration's C = 1, else whether this
        # channel is C - 1, found when the channel was counted), no add before the
        # counters' enables
        c0 = Signal(init=1)
        x0 = Signal(init=1)
        c_top = Signal()
        x_top = Signal()
        c_end = Signal()
        x_end = Signal()
        m.d.comb += [
            c_end.eq(Mux(c0, self.channels == 1, c_top)),
            x_end.eq(Mux(x0, self.width == 1, x_top)),
        ]
        with m.If(take):
            with m.If(self.i.p.last):
                m.d.sync += [pos_c.eq(0), pos_x.eq(0), pos_y.eq(0), pos_a.eq(0), c0.eq(1), x0.eq(1)]
            with m.Elif(c_end):
                m.d.sync += [pos_c.eq(0), c0.eq(1)]
                with m.If(x_end):
                    m.d.sync += [pos_x.eq(0), x0.eq(1), pos_y.eq(pos_y + 1), pos_a.eq(0)]
                with m.Else():
                    m.d.sync += [
                        pos_x.eq(pos_x + 1),
                        x0.eq(0),
                        x_top.eq(pos_x + 2 == self.width),
                        pos_a.eq(pos_a + 1),
                    ]
            with m.Else():
                m.d.sync += [pos_c.eq(pos_c + 1), c0.eq(0), c_top.eq(pos_c + 2 == self.channels), pos_a.eq(pos_a + 1)]

        # ------------------------------------------------------------ P: the element, its buffers' words
        p_valid = Signal()
        pe = Signal(element_layout)
        p_a = Signal(range(LE))
        p_c = Signal(12)
        p_has_l = Signal()  # x > 0
        p_has_u = Signal()  # y > 0
        p_has_p = Signal()  # c > 0
        # the element in P writes both buffers this cycle: the element taken now reads
        # the old words; where it reads the same word, P's is forwarded
        p_fwd_u = Signal()
        p_fwd_l = Signal()
        p_fwd = Signal(10)
        change = Signal(signed(2))
        word = Signal(10)
        m.d.comb += [
            change.eq(Mux(temporal, Mux(pe.x > pe.p, 1, Mux(pe.x < pe.p, -1, 0)), 0)),
            word.eq(Cat(pe.x, change)),
            wr.addr.eq(p_a),
            wr.data.eq(word),
            wr.en.eq(p_valid),
            wr_l.addr.eq(p_c),
            wr_l.data.eq(word),
            wr_l.en.eq(p_valid),
        ]
        m.d.sync += [
            p_valid.eq(take),
            pe.eq(self.i.payload),
            p_a.eq(pos_a),
            p_c.eq(pos_c),
            p_has_l.eq(pos_x != 0),
            p_has_u.eq(pos_y != 0),
            p_has_p.eq(pos_c != 0),
            p_fwd_u.eq(p_valid & (p_a == pos_a)),
            p_fwd_l.eq(p_valid & (p_c == pos_c)),
            p_fwd.eq(word),
        ]
        prev_change = Signal(signed(2))  # the change of the element before (0 at a section's start)
        with m.If(p_valid):
            m.d.sync += prev_change.eq(Mux(pe.last, 0, change))

        # ------------------------------------------------------------ Q: the neighbours registered
        q_valid = Signal()
        qe = Signal(element_layout)
        q_lv = Signal(8)
        q_uv = Signal(8)
        q_sl = Signal(signed(2))
        q_su = Signal(signed(2))
        q_sp = Signal(signed(2))
        # one select after each RAM's output: its word, or (forwarded, or no neighbour:
        # z_N and no change) a word from registers
        u_word = Signal(10)
        l_word = Signal(10)
        u_alt = Signal(10)
        l_alt = Signal(10)
        m.d.comb += [
            u_alt.eq(Mux(p_has_u, p_fwd, zc)),
            l_alt.eq(Mux(p_has_l, p_fwd, zc)),
            u_word.eq(Mux(p_has_u & ~p_fwd_u, rd_u.data, u_alt)),
            l_word.eq(Mux(p_has_l & ~p_fwd_l, rd_l.data, l_alt)),
        ]
        m.d.sync += [
            q_valid.eq(p_valid),
            qe.eq(pe),
            q_lv.eq(l_word[:8]),
            q_uv.eq(u_word[:8]),
            q_sl.eq(l_word[8:10]),
            q_su.eq(u_word[8:10]),
            q_sp.eq(Mux(p_has_p, prev_change, 0)),
        ]

        # ------------------------------------------------------------ Q -> R: distances, the value's difference
        pred = Signal(8)
        m.d.comb += pred.eq(Mux(temporal, qe.p, zc))
        a = Signal(8)
        b = Signal(8)
        m.d.comb += [
            a.eq(_abs_diff(m, q_lv, zc, 8, "dist_l") >> sh),
            b.eq(_abs_diff(m, q_uv, zc, 8, "dist_u") >> sh),
        ]
        pc = Signal(4)
        m.d.comb += pc.eq(qe.p >> sh)
        nn = Signal(2)
        ssum = Signal(signed(3))
        m.d.comb += [nn.eq((q_sl != 0) + (q_su != 0) + (q_sp != 0)), ssum.eq(q_sl + q_su)]
        r_valid = Signal()
        r = Signal(
            data.StructLayout(
                {
                    "a": unsigned(8),
                    "b": unsigned(8),
                    "sg_l": unsigned(2),
                    "sg_u": unsigned(2),
                    "sg_t": unsigned(2),
                    "nn": unsigned(2),
                    "zt": unsigned(9),  # TEMP_ZERO + pc * 12 + t
                    "st": unsigned(9),  # TEMP_SIGN + pc * 9 + t
                    "zero": unsigned(1),
                    "has_sign": unsigned(1),
                    "neg": unsigned(1),
                    "m": unsigned(8),
                    "mmax": unsigned(8),
                    "last": unsigned(1),
                }
            )
        )
        m.d.sync += [
            r_valid.eq(q_valid),
            r.a.eq(a),
            r.b.eq(b),
            r.sg_l.eq(_sign3(m, q_lv, zc, "sg_l")),
            r.sg_u.eq(_sign3(m, q_uv, zc, "sg_u")),
            r.sg_t.eq(Mux(ssum < 0, 0, Mux(ssum == 0, 1, 2))),
            r.nn.eq(nn),
            r.zt.eq(TEMP_ZERO + (pc << 3) + (pc << 2) + qe.t),  # (no multiplier: a DSP's delay)
            r.st.eq(TEMP_SIGN + (pc << 3) + pc + qe.t),
            r.zero.eq(qe.x == pred),
            r.has_sign.eq((pred != 0) & (pred != top)),
            r.neg.eq(qe.x < pred),
            r.m.eq(_abs_diff(m, qe.x, pred, 8, "dist_x") - 1),
            r.mmax.eq(Mux(qe.x < pred, pred - 1, top - pred - 1)),
            r.last.eq(qe.last),
        ]

        # ------------------------------------------------------------ R: contexts, lengths, into the FIFO
        cls_a, cls_b = _cls(m, r.a, "cls_a"), _cls(m, r.b, "cls_b")
        cls_ab = Signal(3)  # cls(max(a, b)) = max(cls(a), cls(b)): cls does not decrease
        m.d.comb += cls_ab.eq(Mux(cls_a > cls_b, cls_a, cls_b))
        ev = Signal(element_bins_layout)
        with m.If(temporal):
            m.d.comb += [
                ev.z_ctx.eq(r.zt + (r.nn << 1) + r.nn),
                ev.s_ctx.eq(r.st + (r.sg_t << 1) + r.sg_t),
                [ev.mag[i].eq(TEMP_MAG + 4 * i + r.nn) for i in range(4)],
            ]
        with m.Else():
            m.d.comb += [
                ev.z_ctx.eq(INTRA_ZERO + (cls_a << 2) + cls_a + cls_b),
                ev.s_ctx.eq(INTRA_SIGN + (r.sg_l << 1) + r.sg_l + r.sg_u),
                [ev.mag[i].eq(INTRA_MAG + 5 * i + cls_ab) for i in range(4)],
            ]
        bl = _bitlength(m, r.mmax - UNARY_MAX, 8, "suffix_bits")
        m.d.comb += [
            ev.zero.eq(r.zero),
            ev.has_sign.eq(r.has_sign),
            ev.neg.eq(r.neg),
            ev.m.eq(r.m),
            ev.unary_n.eq(Mux(r.mmax < UNARY_MAX, r.mmax, UNARY_MAX)),
            ev.suffix_w.eq(Mux(r.mmax > UNARY_MAX, bl, 0)),
            ev.rest.eq(r.m - UNARY_MAX),
            ev.last.eq(r.last),
            elements.w_data.eq(ev),
            elements.w_en.eq(r_valid),
        ]

        # ------------------------------------------------------------ the bins
        m.submodules.bins = bins = ValueBins()
        m.d.comb += [
            bins.i.valid.eq(elements.r_rdy),
            bins.i.payload.eq(elements.r_data),
            elements.r_en.eq(bins.i.ready),
        ]
        wiring.connect(m, bins.o, wiring.flipped(self.o))
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


# ----------------------------------------------------------------------------- value records

# a value record (codec/ctx_records.py, docs/fabric.md "Value records"): the host computes
# each value's binarization and contexts, the fabric codes its bins
value_layout = data.StructLayout({name: unsigned(width) for name, (_, width) in RECORD_FIELDS.items()})
assert all(value_layout[name].offset == lo for name, (lo, _) in RECORD_FIELDS.items())
# a stream word of records (codec/ctx_records.py ``words``) and whether it is the section's last
word_layout = data.StructLayout({"word": unsigned(64), "last": unsigned(1)})


class RecordUnpack(wiring.Component):
    """Stream words of value records in (``word_layout``: a record, or a run word of up to
    six zero values; ``last`` on the section's last word), their binarizations out
    (``element_bins_layout``: magnitude bin i's context ``mag_base + min(i, 3) * mag_step``,
    the suffix's value ``m - 14``), one value a cycle, through a 4-entry FIFO whose
    registered output feeds :class:`ValueBins`. A word is held in a register while its
    values leave; the next is taken as its last value goes."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(word_layout)), "o": Out(stream.Signature(element_bins_layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.values = values = fifo.SyncFIFOBuffered(width=element_bins_layout.size, depth=4)
        word = Signal(64)
        word_last = Signal()
        held = Signal()  # a word is in the register
        slot = Signal(3)  # the run word's value leaving now
        run = Signal()
        count = Signal(RUN_COUNT[1])
        final = Signal()  # the word's last value leaves now
        r = data.View(value_layout, word[: value_layout.size])
        ev = Signal(element_bins_layout)
        m.d.comb += [
            run.eq(word[RUN_FLAG]),
            count.eq(word[RUN_COUNT[0] : RUN_COUNT[0] + RUN_COUNT[1]]),
            final.eq(~run | (slot + 1 == count)),
        ]
        with m.If(run):  # a zero value: its zero bin, nothing after it
            m.d.comb += [ev.zero.eq(1), ev.z_ctx.eq(word.word_select(slot, RUN_CTX_BITS))]
        with m.Else():
            m.d.comb += [
                ev.zero.eq(r.zero),
                ev.has_sign.eq(r.has_sign),
                ev.neg.eq(r.neg),
                ev.m.eq(r.m),
                ev.z_ctx.eq(r.z_ctx),
                ev.s_ctx.eq(r.s_ctx),
                [
                    ev.mag[i].eq(r.mag_base + Mux(r.mag_step == 1, i, Mux(r.mag_step == 4, 4 * i, 5 * i)))
                    for i in range(4)
                ],
                ev.unary_n.eq(r.unary_n),
                ev.suffix_w.eq(r.suffix_w),
                ev.rest.eq(r.m - UNARY_MAX),
            ]
        m.d.comb += [
            ev.last.eq(word_last & final),
            values.w_data.eq(ev),
            values.w_en.eq(held),
            self.i.ready.eq(~held | (values.w_rdy & final)),
            self.o.valid.eq(values.r_rdy),
            self.o.payload.eq(values.r_data),
            values.r_en.eq(self.o.ready),
        ]
        with m.If(held & values.w_rdy):
            m.d.sync += slot.eq(slot + 1)
            with m.If(final):
                m.d.sync += [held.eq(0), slot.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(self.i.p.word), word_last.eq(self.i.p.last), held.eq(1), slot.eq(0)]
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
