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
  digits, the product of the range shifted and of the range not shifted each two
  carry-save steps and one add, the shift (an 8-bit zero test of the register, beside the
  table selects) picking one of the two sums; no multiplier;
- D: what a 1 bin adds to ``low``: the old range minus the new one, registered;
- E: ``low`` (33 bits) plus that, shifted; after a section's last bin, the termination's
  five shifts (three cycles);
- F: what the shifts settle: a shift that settles the top byte produces an *output
  record*, the held byte (``cache``) plus the carry, then ``pending - 1`` copies of 0xFF
  plus the carry (a run of 0xFF held back for a carry); a cycle's records (at most two)
  are one *event*, registered, into the record FIFO.

The *byte emitter* after the FIFO sends one byte per cycle, drops the section's first
byte (always 0) and marks the last, through a register slice (hw/register_slice.py). The
input takes a bin while the FIFO has room for the events of every bin in flight
(``CREDIT``, the FIFO's level a cycle ago): it stalls only when the output is
back-pressured or records come faster than a byte per cycle; a bin behind a section's
last waits for that section's termination. A section codes at least one bin.

The bins come from the fronts of :mod:`temposplit.hw.ctx_binarizer` (an anchor's elements,
or value records the PS computed); :mod:`temposplit.hw.ctx_coder` joins them to this
encoder (:class:`~temposplit.hw.ctx_coder.CtxCoder`, the top's engine, has both fronts
and one range encoder).
"""

from __future__ import annotations

import contextlib
import operator
from functools import reduce

from amaranth import Cat, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw.register_slice import FifoSlice

PROB_BITS = 12
N_CONTEXTS = 459  # the context table of docs/bitstream.md 6.2.5
COUNT_MAX = 62
PENDING_BITS = 32
TERMINATION_SHIFTS = 5
TOUCHED_GROUPS = 29  # 29 x 16 touched-bits >= 459 contexts


def group_hot(ctx):
    """A context's touched-bits group (``ctx`` >> 4) one-hot, TOUCHED_GROUPS bits: decoded
    as a bin is taken, so that the group's 16 bits are an AND-OR of the groups with a
    register each, not a 29-way select by a binary index (ABC mapped that one as a chain
    of five LUTs: r28 on the ECP5 proxy, the dual coders' `a_group`, 11.2-11.3 ns)."""
    return Cat(*(ctx[4:] == g for g in range(TOUCHED_GROUPS)))


def touched_group(touched, hot):
    """The 16 touched-bits of the group that ``hot`` (:func:`group_hot`, a register) picks."""
    return reduce(operator.or_, (Mux(hot[g], touched.word_select(g, 16), 0) for g in range(TOUCHED_GROUPS)))


CREDIT = 14  # free FIFO entries a bin needs to be taken: the events of the bins in flight

# How the range loop picks its table words (``u[j] = tab[digit]``, a 16:1 select of 16-bit
# words; :func:`table_select`): "logic", the select as logic (simulation, and the xc7z020,
# whose LUT6 with MUXF7 and MUXF8 make a 16:1 mux one slice), or "ecp5", each output bit as
# one ECP5 PFU's wide-function cells (8 LUT4, 4 PFUMX, 3 L6MUX21: how Yosys builds a LUT7).
# Yosys's ABC9 maps the select onto the ECP5 as two or three levels of wide LUTs, which
# left the loop at 84-88 MHz on the timing proxy; hw/synth.py's ECP5 flow builds its netlist
# under ``ecp5_table_select()``, and tests/hw/test_synth.py proves the cells equal to the
# select.
TABLE_SELECT = "logic"


@contextlib.contextmanager
def ecp5_table_select():
    """Elaborate range encoders with the ECP5 cells' table select (the timing proxy's)."""
    global TABLE_SELECT
    before, TABLE_SELECT = TABLE_SELECT, "ecp5"
    try:
        yield
    finally:
        TABLE_SELECT = before


def table_select(m: Module, words, digit, name: str) -> Signal:
    """``words[digit]`` for 16 words of 16 bits and a 4-bit digit (see ``TABLE_SELECT``)."""
    out = Signal(16, name=name)
    if TABLE_SELECT == "logic":
        m.d.comb += out.eq(words[digit])
        return out
    for b in range(16):
        d = [words[v][b] for v in range(16)]
        f = [Signal(name=f"{name}_b{b}_f{i}") for i in range(8)]
        g = [Signal(name=f"{name}_b{b}_g{i}") for i in range(4)]
        h = [Signal(name=f"{name}_b{b}_h{i}") for i in range(2)]
        for i in range(8):  # Z = C ? B : A
            m.submodules[f"{name}_b{b}_lut{i}"] = Instance(
                "LUT4", p_INIT=Const(0xCACA, 16), i_A=d[2 * i], i_B=d[2 * i + 1], i_C=digit[0], i_D=0, o_Z=f[i]
            )
        for i in range(4):  # Z = C0 ? ALUT : BLUT
            m.submodules[f"{name}_b{b}_pfumx{i}"] = Instance(
                "PFUMX", i_ALUT=f[2 * i + 1], i_BLUT=f[2 * i], i_C0=digit[1], o_Z=g[i]
            )
        for i in range(2):  # Z = SD ? D1 : D0
            m.submodules[f"{name}_b{b}_l6mux{i}"] = Instance(
                "L6MUX21", i_D0=g[2 * i], i_D1=g[2 * i + 1], i_SD=digit[2], o_Z=h[i]
            )
        m.submodules[f"{name}_b{b}_l7mux"] = Instance("L6MUX21", i_D0=h[0], i_D1=h[1], i_SD=digit[3], o_Z=out[b])
    return out


def csa(m: Module, x, y, z, name: str):
    sum_, car = Signal(32, name=f"{name}_s"), Signal(32, name=f"{name}_c")
    m.d.comb += [sum_.eq(x ^ y ^ z), car.eq(((x & y) | (x & z) | (y & z)) << 1)]
    return sum_, car


def product_rows3(m: Module, words, low, name: str):
    """(range >> 12) * q (+ range mod 4096 for a 1 bin) from the range's five table words
    (``words[k]``: the range's hex digit k times q) as three rows: four rows (words four
    digits apart do not overlap), the first three's carry-save step and the fourth."""
    rows = [
        Cat(words[0], words[4]),
        Cat(Const(0, 4), words[1]),
        Cat(Const(0, 8), words[2]),
        Cat(low, words[3]),
    ]
    s1, c1 = csa(m, rows[0], rows[1], rows[2], f"{name}_1")
    return s1, c1, rows[3]


def product_rows(m: Module, words, low, name: str):
    """:func:`product_rows3` as a carry-save pair (a second carry-save step): their sum is
    the product."""
    s1, c1, row3 = product_rows3(m, words, low, name)
    return csa(m, s1, c1, row3, f"{name}_2")


def range_tables(m: Module, tab, rng1, name: str = "u"):
    """The table word of each of the loop register's hex digits 1..7 (digit 0 is never a
    digit of ``range >> 12``)."""
    return {j: table_select(m, tab, rng1[4 * j : 4 * j + 4], f"{name}{j}") for j in range(1, 8)}


def multiples_of(m: Module, g_q, name: str = "q12"):
    """v * q for every hex digit v (stage G's table), as shifts and adds of q."""
    q1, q2, q4, q8, q16 = g_q, g_q << 1, g_q << 2, g_q << 3, g_q << 4
    q12 = Signal(16, name=name)
    m.d.comb += q12.eq(q8 + q4)
    multiples = [0, q1, q2, q1 + q2, q4, q4 + q1, q4 + q2, q8 - q1]
    multiples += [q8, q8 + q1, q8 + q2, q12 - q1, q12, q12 + q1, q16 - q2, q16 - q1]
    return multiples


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
    m.d.comb += [shrink.eq(Mux(bit, st.prob, st.cprob)), grow.eq(Mux(bit, st.cprob, st.prob))]
    return sides_update(m, shrink, grow, st.n, st.s, bit, name)


def sides_update(m: Module, shrink, grow, n, s, bit, name: str = "ctx"):
    """:func:`context_update` from the state's two sides already picked by the bin
    (``shrink``: p for a 1 bin, 4096 - p for a 0; ``grow`` the other), its count ``n`` and
    shift ``s``."""
    delta = Signal(PROB_BITS, name=f"{name}_delta")
    m.d.comb += delta.eq(shrink >> s)
    return delta_update(m, shrink, grow, delta, n, bit, name)


def delta_update(m: Module, shrink, grow, delta, n, bit, name: str = "ctx"):
    """:func:`sides_update` with its step ``delta`` (``shrink >> s``) already computed."""
    new = Signal(ctx_word, name=f"{name}_new")
    m.d.comb += [
        new.prob.eq(Mux(bit, shrink - delta, grow + delta)),
        new.cprob.eq(Mux(bit, grow + delta, shrink - delta)),
    ]
    # the next count and its shift straight from the count (a table of 63, LUTs): no
    # increment and compares in series (carry chains on the ECP5) beside the update
    with m.Switch(n):
        for k in range(COUNT_MAX + 1):
            with m.Case(k):
                nxt = min(k + 1, COUNT_MAX)
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
        m.submodules.emitter = emitter = ByteEmitter(self.fifo_depth)

        # ------------------------------------------------------------ the input: credit, no stall after it
        # A bin is taken only while the record FIFO has room for every event the bins in
        # flight can still make (one each, three more for a section's termination): past
        # the input register nothing stalls. ``room`` is a register (the level a cycle ago).
        room = Signal(init=1)
        closing = Signal()  # a section's last bin is in: the next waits for its termination
        take = Signal()
        m.d.sync += room.eq(emitter.level <= self.fifo_depth - CREDIT)
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
        t_hot = Signal(TOUCHED_GROUPS)  # t's group, one-hot
        with m.If(take):
            m.d.sync += t_hot.eq(group_hot(self.i.p.ctx))
        m.d.comb += rd.addr.eq(t.ctx)
        group_sel = Signal(16)
        m.d.comb += group_sel.eq(touched_group(touched, t_hot))

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
        multiples = multiples_of(m, g_q)
        m.d.sync += [c_valid.eq(g_valid), c.eq(g), [tab[v].eq(x) for v, x in enumerate(multiples)]]

        # ------------------------------------------------------------ C: the range
        # range' = (range >> 12) * q + (bit ? range mod 4096 : 0): for a 1 bin that is
        # range - (range >> 12) * p. The register holds range' before its shift: at most
        # one byte brings it back to >= 2^24, never two (6.2.1's loop allows two, but every
        # probability a context reaches lies in 26..4070, so q >= 26 and range' >= 2^12 x 26
        # > 2^16; tests/hw/test_range_coder.py checks the reachable set). The range's hex
        # digit k (0..4, of range >> 12) is the register's digit 3 + k, or 1 + k after a
        # shift: the table word of each register digit (u[j]: digit j times q), both
        # products (words 3..7 and 1..5) summed by two carry-save steps and an add each, the
        # shift (rng1 < 2^24, an 8-bit zero test) picking one sum. The only loop that must
        # close in one cycle.
        rng1 = Signal(32, init=0xFFFFFFFF)
        shift = Signal()  # rng1 < 2^24: one byte's shift before this bin
        rng = Signal(32)  # the range before this bin: rng1 shifted
        m.d.comb += [
            shift.eq(rng1[24:] == 0),
            rng.eq(Mux(shift, rng1 << 8, rng1)),
        ]
        u = range_tables(m, tab, rng1)

        # both products, the range shifted and not, and the shift's pick after the adds: the
        # 8-bit zero test runs beside the table selects instead of in front of the rows
        sums = []
        for name, first, low in (
            ("nxt_shifted", 1, Mux(c.bit, Cat(Const(0, 8), rng1[:4]), 0)),
            ("nxt_kept", 3, Mux(c.bit, rng1[:PROB_BITS], 0)),
        ):
            s2, c2 = product_rows(m, [u[first + k] for k in range(5)], low, name)
            total = Signal(32, name=f"{name}_sum")
            m.d.comb += total.eq(s2 + c2)
            sums.append(total)
        nxt = Signal(32)
        m.d.comb += nxt.eq(Mux(shift, sums[0], sums[1]))
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
        e_sum, e_do, e_end, e_out, low_upd = low_step(m, low, e_valid, e_bound, e_ns, flushing, flush_step)
        with m.If(e_valid | flushing):
            m.d.sync += low.eq(low_upd)
        with m.If(e_valid & e_last):
            m.d.sync += [flushing.eq(1), flush_step.eq(0)]
        with m.If(flushing):
            m.d.sync += flush_step.eq(flush_step + 1)
            with m.If(e_end):  # the section is out: the coder starts afresh, the input opens
                m.d.sync += [flushing.eq(0), low.eq(0), closing.eq(0)]
        f_valid, f_low, f_do, f_end, f_settle = stage_f(m, e_out, e_sum, e_do, e_end)

        # ------------------------------------------------------------ F: the shifts' records
        cache = Signal(8)
        pending = Signal(PENDING_BITS, init=1)
        ev, cache_next, pending_next = shift_records(m, f_low, f_do, cache, pending, f_settle)
        m.d.comb += ev.last.eq(f_end)
        # the event into the FIFO through a register (its records' arithmetic, pending - 1
        # and the selects, is not in front of the FIFO's RAM write; CREDIT counts it)
        m.d.sync += [emitter.w_data.eq(ev), emitter.w_en.eq(f_valid & (ev.n != 0))]
        with m.If(f_valid):
            with m.If(f_end):
                m.d.sync += [cache.eq(0), pending.eq(1)]
            with m.Else():
                m.d.sync += [cache.eq(cache_next), pending.eq(pending_next)]
        # (the termination's fifth shift always settles: low is 0 by then, so the last
        # event of a section is never empty and carries the section's last byte)
        wiring.connect(m, emitter.o, wiring.flipped(self.o))
        return m


def low_step(m: Module, low, e_valid, e_bound, e_ns, flushing, flush_step):
    """Stage E's arithmetic (comb): ``low`` plus what a 1 bin adds (``e_bound``, with
    ``e_valid``), the shifts to do (``e_do``: the bin's renormalization ``e_ns``, or while
    ``flushing`` the termination's 2, 2, 1 by ``flush_step``), whether this is the
    termination's last step (``e_end``), whether stage F gets a step (``e_out``), and
    ``low`` after the shifts (a shift only moves bits: what they settle is F's)."""
    e_sum = Signal(33, name="e_sum")
    e_do = Signal(2, name="e_do")
    e_end = Signal(name="e_end")
    e_out = Signal(name="e_out")
    low_upd = Signal(33, name="low_upd")
    m.d.comb += e_sum.eq(low + Mux(e_valid, e_bound, 0))
    with m.If(e_valid):
        m.d.comb += [e_do.eq(e_ns), e_out.eq(1)]
    with m.Elif(flushing):
        m.d.comb += [e_do.eq(Mux(flush_step == 2, 1, 2)), e_end.eq(flush_step == 2), e_out.eq(1)]
    m.d.comb += low_upd.eq(Mux(e_do[1], e_sum[:16] << 16, Mux(e_do[0], e_sum[:24] << 8, e_sum)))
    return e_sum, e_do, e_end, e_out, low_upd


def stage_f(m: Module, e_out, e_sum, e_do, e_end):
    """Stage E's results registered for stage F: whether F has a step, the sum, the shifts to
    do, whether it is the termination's last, and :func:`settle_bits` of the sum."""
    f_valid = Signal(name="f_valid")
    f_low = Signal(33, name="f_low")
    f_do = Signal(2, name="f_do")
    f_end = Signal(name="f_end")
    f_settle = Signal(2, name="f_settle")
    m.d.sync += [
        f_valid.eq(e_out),
        f_low.eq(e_sum),
        f_do.eq(e_do),
        f_end.eq(e_end),
        f_settle.eq(Cat(*settle_bits(e_sum))),
    ]
    return f_valid, f_low, f_do, f_end, f_settle


def settle_bits(low):
    """Whether the first and the second shift of ``low`` (stage E's sum) settle: its top
    byte is not 0xFF or it carries; its next byte is not 0xFF (:func:`shift_records`'s
    tests, computed a stage ahead and registered beside the sum)."""
    return (low[24:32] != 0xFF) | low[32], low[16:24] != 0xFF


def shift_records(m: Module, f_low, f_do, cache, pending, settle):
    """Stage F's arithmetic (comb): shift_low() of 6.2.1 once or twice (``f_do``: 0, 1 or
    2) on the sum stage E registered, written out as an event (``last`` left to the
    caller), and the ``cache`` and ``pending`` after it. The first shift settles unless the
    top byte is 0xFF without a carry, the second (of a low under 2^32 after the first)
    unless the next byte is 0xFF (``settle``: the two tests, :func:`settle_bits` of the sum
    registered with it, so that the compares are not in front of pending's adders);
    pending + 1, + 2 and - 1 side by side, no adder after another."""
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
        settle_a.eq(settle[0]),
        settle_b.eq(settle[1]),
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
    ]
    cache_next = Signal(8)
    pending_next = Signal(PENDING_BITS)
    m.d.comb += [cache_next.eq(cache), pending_next.eq(pending)]
    with m.If(do_b):
        m.d.comb += [
            cache_next.eq(Mux(emit_b, f_low[16:24], cache_a)),
            pending_next.eq(Mux(settle_b, 1, Mux(settle_a, 2, pending + 2))),
        ]
    with m.Elif(do_a):
        m.d.comb += [cache_next.eq(cache_a), pending_next.eq(Mux(settle_a, 1, pending + 1))]
    return ev, cache_next, pending_next


class ByteEmitter(wiring.Component):
    """A range coder's events in (``w_data`` when ``w_en``: a FIFO of ``depth`` events;
    ``level`` its fill), its section's bytes out (``o``): a byte a cycle, the section's
    first byte (always 0) dropped, the last marked, through a register slice (what takes
    them, a packer across the die, is timed apart from the record select)."""

    def __init__(self, depth: int):
        self.depth = depth
        super().__init__(
            {
                "w_data": In(event_layout),
                "w_en": In(1),
                "level": Out(range(depth + 1)),
                "o": Out(stream.Signature(byte_layout)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.events = events = fifo.SyncFIFOBuffered(width=event_layout.size, depth=self.depth)
        m.d.comb += [events.w_data.eq(self.w_data), events.w_en.eq(self.w_en), self.level.eq(events.level)]
        m.submodules.out_slice = out_slice = FifoSlice(byte_layout)
        emit = out_slice.i
        wiring.connect(m, out_slice.o, wiring.flipped(self.o))
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
        # the compares behind ``rec_done`` as registers set with what they test (a record's
        # run == 0 when its event is taken, left == 1 with left), so that the emitter's
        # enables are not behind a select and two wide compares (r21 seed 2: `left` and
        # the FIFO's read, 15-21 late inputs at 10.3-11.0 ns)
        run_zero = Signal(2)  # rec0's, rec1's run is 0
        left_one = Signal()
        ev_in = Signal(event_layout)
        m.d.comb += ev_in.eq(events.r_data)
        with m.If(events.r_en & events.r_rdy):
            m.d.sync += [
                have.eq(1),
                cur.eq(events.r_data),
                idx.eq(0),
                in_run.eq(0),
                run_zero.eq(Cat(ev_in.rec0.run == 0, ev_in.rec1.run == 0)),
            ]
        byte = Signal(8)
        rec_done = Signal()  # this byte is the record's last
        m.d.comb += [
            byte.eq(Mux(in_run, rec.fill, rec.first)),
            rec_done.eq(Mux(in_run, left_one, run_zero.bit_select(idx, 1))),
        ]
        event_done = Signal()
        m.d.comb += event_done.eq(rec_done & ((idx == 1) | (cur.n == 1)))
        advance = Signal()
        drop = Signal()
        m.d.comb += [
            drop.eq(first_of_section & ~in_run & (idx == 0)),
            emit.valid.eq(have & ~drop),
            emit.p.data.eq(byte),
            emit.p.last.eq(event_done & cur.last),
            advance.eq(have & (drop | emit.ready)),
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
                m.d.sync += [in_run.eq(1), left.eq(rec.run), left_one.eq(rec.run == 1)]
            with m.Else():
                m.d.sync += [left.eq(left - 1), left_one.eq(left == 2)]
        return m
