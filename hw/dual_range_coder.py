"""Two sections on one range encoder: the v2 coder's range encoder C-slowed (docs/fabric.md,
"Two sections on one range coder").

:class:`DualRangeEncoder` codes two independent sections at once (CTX slices,
docs/bitstream.md 6.2.6: each slice a section of its own, with its own range coder and
contexts), *lane* 0 and lane 1, each in and out of its own stream, bit for bit what
:class:`~temposplit.hw.range_coder.RangeEncoder` gives for each section alone. The lanes
take turns a cycle each (``ph``, a free-running register): a lane takes a bin every
other cycle, the two together a bin a cycle. The pipeline is RangeEncoder's with every
loop two cycles long instead of one, which is what the alternation buys: a lane's next
bin is two cycles behind its last, so a value that went round a loop in one cycle now
has two, with a register in the middle:

- the range loop (RangeEncoder's stage C) is two stages: C1, the table words of the
  register's hex digits and each product's first carry-save step, registered (three
  rows); C2, the second step, the adds and the shift's pick into the loop register ``R``. In a cycle ``R`` holds the
  range of the lane whose bin is in C1 (the other lane's is in C2's registers), so the
  two lanes' ranges go round one ring of two registers. A slot without a bin carries its
  lane's range through C1 and C2 unchanged (``hold``), or 0xFFFFFFFF after the lane's
  section ended (its last bin is in D beside it);
- the context update (RangeEncoder's stage B) is two stages: B, the context's state
  picked (forwarded from the same lane's bin before, fresh, or the RAM's) and
  registered, with the interval's factor q; U, the update into the table and the
  forwarding register. The lane's bin before is in U while this one is in A, so one
  forwarding source (RangeEncoder has two) covers every update the RAM read missed;
- the state of a section -- the context table (1024 x 33: the lane is the address's top
  bit), the touched-bits, ``low``, ``cache``, ``pending``, the termination's steps, the
  input's credit and closing, the record FIFO and the byte emitter -- is one per lane;
  ``low``, ``cache``, ``pending`` and the termination's state go round a ring of two
  registers each as the range does (the slot's lane's and the other's): no lane select
  in front of their one-cycle updates.

Stages: each lane's register slice, T (the bin registered, the context read), A, B, U
(beside G), G, C1, C2, D, E, F, then the event's register into its lane's FIFO: two
stages more than RangeEncoder. A lane
alone codes a bin every two cycles; the credit (``CREDIT`` free FIFO entries) is more
than a lane's bins in flight need.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw.range_coder import (
    CREDIT,
    FRESH,
    PENDING_BITS,
    PROB_BITS,
    TERMINATION_SHIFTS,
    TOUCHED_GROUPS,
    ByteEmitter,
    bin_layout,
    byte_layout,
    csa,
    ctx_word,
    delta_update,
    group_hot,
    low_step,
    multiples_of,
    product_rows3,
    range_tables,
    shift_records,
    stage_f,
    touched_group,
)
from temposplit.hw.register_slice import KEEP, FifoSlice

LANES = 2
CLEAR_GROUPS = 8  # touched-bits groups (16 bits each) that one copy of a lane's clear resets
assert TERMINATION_SHIFTS == 5  # E's three flush steps: 2, 2, 1


class DualRangeEncoder(wiring.Component):
    """Bins of two sections in (``i[0]``, ``i[1]``: bit, context, bypass, last), each
    section's bytes out of its lane's stream (``o[0]``, ``o[1]``: byte, last).

    Parameters
    ----------
    fifo_depth : int
        Events buffered between the coder and each lane's byte emitter; at least
        ``CREDIT + 4``.
    """

    def __init__(self, fifo_depth: int = 32):
        if fifo_depth < CREDIT + 4:
            self._MustUse__used = True  # (refused: not an unused elaboratable)
            raise ValueError(f"fifo_depth must be at least {CREDIT + 4}")
        self.fifo_depth = fifo_depth
        super().__init__(
            {
                "i": In(stream.Signature(bin_layout)).array(LANES),
                "o": Out(stream.Signature(byte_layout)).array(LANES),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = memory.Memory(shape=ctx_word, depth=512 * LANES, init=[])
        wr = table.write_port()
        rd = table.read_port()  # not transparent: the write it misses is forwarded
        emitters = []
        for k in range(LANES):
            m.submodules[f"emitter{k}"] = e = ByteEmitter(self.fifo_depth)
            wiring.connect(m, e.o, wiring.flipped(self.o[k]))
            emitters.append(e)

        # ------------------------------------------------------------ the input: the slot's lane, credit
        # each lane's bins through a register slice first: the fronts' bin logic (a
        # context's select) is not in front of the lane's pick and T's registers (nor in
        # front of a decode: r35, the touched-bits group decoded on the way into the
        # slice, 10.4-12.6 ns from the fronts' `idx`)
        ins = []
        for k in range(LANES):
            m.submodules[f"in{k}"] = sl = FifoSlice(bin_layout)
            wiring.connect(m, wiring.flipped(self.i[k]), sl.i)
            ins.append(sl.o)
        ph = Signal()  # the lane whose bin the input may take this cycle
        m.d.sync += ph.eq(~ph)
        room = [Signal(init=1, name=f"room{k}") for k in range(LANES)]
        closing = [Signal(name=f"closing{k}") for k in range(LANES)]
        for k in range(LANES):
            m.d.sync += room[k].eq(emitters[k].level <= self.fifo_depth - CREDIT)
            m.d.comb += ins[k].ready.eq((ph == k) & room[k] & ~closing[k])
        take = Signal()
        inp = Signal(bin_layout)
        m.d.comb += [
            take.eq(Mux(ph, ins[1].valid & ins[1].ready, ins[0].valid & ins[0].ready)),
            inp.eq(Mux(ph, ins[1].payload, ins[0].payload)),
        ]

        # every stage's slot lane advances with the slot, a bin in it or not
        def stage(prev_valid, prev_bin, prev_lane, name):
            valid = Signal(name=f"{name}_valid")
            b = Signal(bin_layout, name=name)
            lane = Signal(name=f"{name}_lane")
            m.d.sync += [valid.eq(prev_valid), b.eq(prev_bin), lane.eq(prev_lane)]
            return valid, b, lane

        # ------------------------------------------------------------ T: the bin registered, its context read
        t_valid = Signal()
        t = Signal(bin_layout)
        t_lane = Signal()
        m.d.sync += [t_valid.eq(take), t_lane.eq(ph)]
        # the context's touched-bit group one-hot (:func:`group_hot`), a register for each
        # lane decoded from that lane's own slice (not behind the lanes' pick: r34 seed 1,
        # `t_hot0`, the slice's select, the pick and the decode, 10.6 ns), loaded as the
        # lane takes a bin: in the cycle that bin is in T (``t_lane``), its lane's register
        # holds its group, and T's group of that lane is the one A registers and B reads
        t_hot = [Signal(TOUCHED_GROUPS, name=f"t_hot{k}") for k in range(LANES)]
        for k in range(LANES):
            with m.If(ins[k].valid & ins[k].ready):
                m.d.sync += t_hot[k].eq(group_hot(ins[k].p.ctx))
        with m.If(take):
            m.d.sync += t.eq(inp)
            for k in range(LANES):
                with m.If(inp.last & (ph == k)):
                    m.d.sync += closing[k].eq(1)
        touched = [Signal(TOUCHED_GROUPS * 16, name=f"touched{k}") for k in range(LANES)]
        group = [Signal(16, name=f"group{k}") for k in range(LANES)]
        m.d.comb += rd.addr.eq(Cat(t.ctx, t_lane))
        for k in range(LANES):
            m.d.comb += group[k].eq(touched_group(touched[k], t_hot[k]))

        # ------------------------------------------------------------ A: RAM word out, touched bit, forwarding
        a_valid, a, a_lane = stage(t_valid, t, t_lane, "a")
        a_group = [Signal(16, name=f"a_group{k}") for k in range(LANES)]
        m.d.sync += [a_group[k].eq(group[k]) for k in range(LANES)]
        # U holds the same lane's bin before the one in A (lanes alternate, U is two
        # stages after A): when the bin in A reaches B, that bin's update is in w_u, and the
        # RAM read of the bin in A (issued in T, as that bin was written in U) missed it
        u_valid = Signal()
        u = Signal(bin_layout)
        u_lane = Signal()
        u_n = Signal(6)
        u_valid_ctx = Signal()
        m.d.comb += u_valid_ctx.eq(u_valid & ~u.bypass)
        b_word = Signal(ctx_word)
        b_fresh = Signal()
        b_m = Signal()
        m.d.sync += [
            b_word.eq(rd.data),
            b_fresh.eq(~Mux(a_lane, a_group[1], a_group[0]).bit_select(a.ctx[:4], 1)),
            b_m.eq(u_valid_ctx & (u.ctx == a.ctx)),
        ]

        # ------------------------------------------------------------ B: the context's state picked
        b_valid, b, b_lane = stage(a_valid, a, a_lane, "b")
        w_u = Signal(ctx_word)  # U's update, a cycle ago
        st = Signal(ctx_word)
        with m.If(b_m):
            m.d.comb += st.eq(w_u)
        with m.Elif(b_fresh):
            m.d.comb += st.eq(FRESH)
        with m.Else():
            m.d.comb += st.eq(b_word)
        b_valid_ctx = Signal()
        m.d.comb += b_valid_ctx.eq(b_valid & ~b.bypass)
        # the section's contexts are done (its last bin in B): the lane's touched-bits
        # clear, from registers set as the bin enters B, a copy per CLEAR_GROUPS groups
        # (the clear as B's decode into 464 resets was r34 seed 1's `touched0`, 9.9 ns)
        n_clr = -(-TOUCHED_GROUPS // CLEAR_GROUPS)
        b_clr = [[Signal(name=f"b_clr{k}_{j}", attrs=KEEP) for j in range(n_clr)] for k in range(LANES)]
        # the bin's touched bit set from registers too: its lane's flag, its group one-hot
        # (T's, two stages on) and its bit in the group one-hot, so a touched bit's next
        # value is one LUT (B's context decoded into 464 bits behind ``b``, shared by
        # both lanes, was r36 seed 2's `ctx2.coder.touched0`, 11.6 ns)
        # (the set flag and the bit's one-hot a copy per CLEAR_GROUPS groups, as the clear:
        # one ``b_set`` into the enables of 464 bits was r38 seed 2's path, 10.6 ns, all
        # routing)
        a_lo = Signal(16)
        m.d.sync += a_lo.eq(Const(1, 16) << t.ctx[:4])
        b_set = [[Signal(name=f"b_set{k}_{j}", attrs=KEEP) for j in range(n_clr)] for k in range(LANES)]
        a_hot = [Signal(TOUCHED_GROUPS, name=f"a_hot{k}") for k in range(LANES)]
        b_hot = [Signal(TOUCHED_GROUPS, name=f"b_hot{k}") for k in range(LANES)]
        b_lo = [[Signal(16, name=f"b_lo{k}_{j}", attrs=KEEP) for j in range(n_clr)] for k in range(LANES)]
        for k in range(LANES):
            m.d.sync += [c.eq(a_valid & a.last & (a_lane == k)) for c in b_clr[k]]
            m.d.sync += [c.eq(a_valid & ~a.bypass & (a_lane == k)) for c in b_set[k]]
            m.d.sync += [c.eq(a_lo) for c in b_lo[k]]
            m.d.sync += [a_hot[k].eq(t_hot[k]), b_hot[k].eq(a_hot[k])]
            for g in range(TOUCHED_GROUPS):
                j = g // CLEAR_GROUPS
                word = touched[k].word_select(g, 16)
                with m.If(b_set[k][j]):
                    m.d.sync += word.eq(word | Mux(b_hot[k][g], b_lo[k][j], 0))
                with m.If(b_clr[k][j]):
                    m.d.sync += word.eq(0)
        # (the state's two sides registered already picked by the bin, and the step
        # shrink >> s beside them: U's update is the adds and their pick; with the shift in
        # U it was r38 seed 1's path, `u_shrink` into the table's write data, 11.1 ns)
        u_shrink = Signal(PROB_BITS)
        u_grow = Signal(PROB_BITS)
        u_delta = Signal(PROB_BITS)
        b_shrink = Signal(PROB_BITS)
        m.d.comb += b_shrink.eq(Mux(b.bit, st.prob, st.cprob))
        m.d.sync += [
            u_valid.eq(b_valid),
            u.eq(b),
            u_lane.eq(b_lane),
            u_shrink.eq(b_shrink),
            u_grow.eq(Mux(b.bit, st.cprob, st.prob)),
            u_delta.eq(b_shrink >> st.s),
            u_n.eq(st.n),
        ]

        # ------------------------------------------------------------ U: the context's update
        new = delta_update(m, u_shrink, u_grow, u_delta, u_n, u.bit)
        m.d.comb += [wr.addr.eq(Cat(u.ctx, u_lane)), wr.data.eq(new), wr.en.eq(u_valid_ctx)]
        m.d.sync += w_u.eq(new)

        # the interval's factor: p for a 0 bin, 4096 - p for a 1 (section 6.2.1)
        g_valid, g, g_lane = stage(b_valid, b, b_lane, "g")
        g_q = Signal(PROB_BITS)
        m.d.sync += g_q.eq(Mux(b.bypass, 2048, Mux(b.bit, st.cprob, st.prob)))

        # ------------------------------------------------------------ G: q's multiples
        c1_valid, c1, c1_lane = stage(g_valid, g, g_lane, "c1")
        tab = Signal(data.ArrayLayout(16, 16))
        m.d.sync += [tab[v].eq(x) for v, x in enumerate(multiples_of(m, g_q))]

        # ------------------------------------------------------------ C1: the range loop's first cycle
        # R: the range (before its shift) of the lane whose bin is in C1 this cycle
        r = Signal(32, init=0xFFFFFFFF)
        shift = Signal()
        rng = Signal(32)
        m.d.comb += [shift.eq(r[24:] == 0), rng.eq(Mux(shift, r << 8, r))]
        words = range_tables(m, tab, r)
        c2_valid, c2, c2_lane = stage(c1_valid, c1, c1_lane, "c2")
        c2_shift = Signal()
        c2_rows = []
        for name, first, low in (
            ("shifted", 1, Mux(c1.bit, Cat(Const(0, 8), r[:4]), 0)),
            ("kept", 3, Mux(c1.bit, r[:PROB_BITS], 0)),
        ):
            # (the rows' second carry-save step is C2's: with both here, the table's select
            # and two steps were r34 seed 2's `c2_shifted_c`, 10.3 ns)
            terms = product_rows3(m, [words[first + k] for k in range(5)], low, name)
            rows = tuple(Signal(32, name=f"c2_{name}_{x}") for x in ("s", "c", "r"))
            m.d.sync += [reg.eq(t) for reg, t in zip(rows, terms, strict=True)]
            c2_rows.append(rows)
        # D is this lane's bin before (two stages on): after a section's last bin the
        # lane's range starts afresh
        d_valid = Signal()
        d = Signal(bin_layout)
        hold = Signal(32, init=0xFFFFFFFF)  # the bin's range before it, shifted; a slot without a bin: the lane's range
        m.d.sync += [
            c2_shift.eq(shift),
            hold.eq(Mux(c1_valid, rng, Mux(d_valid & d.last, 0xFFFFFFFF, r))),
        ]

        # ------------------------------------------------------------ C2: the adds, the shift's pick
        sums = []
        for name, (s1, cy1, row3) in zip(("shifted", "kept"), c2_rows, strict=True):
            s2, cy2 = csa(m, s1, cy1, row3, f"{name}_2")
            total = Signal(32, name=f"nxt_{name}")
            m.d.comb += total.eq(s2 + cy2)
            sums.append(total)
        m.d.sync += r.eq(Mux(c2_valid, Mux(c2_shift, sums[0], sums[1]), hold))
        d_lane = Signal()
        d_rng = Signal(32)
        m.d.sync += [d_valid.eq(c2_valid), d.eq(c2), d_lane.eq(c2_lane), d_rng.eq(hold)]

        # ------------------------------------------------------------ D: what a 1 bin adds to low
        # (R holds the bin's new range now; its shift is the renormalization after it)
        e_valid = Signal()
        e_last = Signal()
        e_lane = Signal()
        e_bound = Signal(32)
        e_ns = Signal(2)
        m.d.sync += [
            e_valid.eq(d_valid),
            e_last.eq(d.last),
            e_lane.eq(d_lane),
            e_bound.eq(Mux(d.bit, d_rng - r, 0)),
            e_ns.eq(r[24:] == 0),
        ]

        # ------------------------------------------------------------ E: low, and the termination
        # A ring of two registers per value, as R: ``*_now`` the lane's whose slot is in E,
        # ``*_next`` the other lane's; each cycle the other's moves in and the slot's,
        # updated, waits a cycle (no lane select in front of the add).
        low_now, low_next = Signal(33), Signal(33)
        fl_now, fl_next = Signal(), Signal()  # the lane's termination is running
        step_now, step_next = Signal(2), Signal(2)
        e_sum, e_do, e_end, e_out, low_upd = low_step(m, low_now, e_valid, e_bound, e_ns, fl_now, step_now)
        m.d.sync += [
            low_now.eq(low_next),
            fl_now.eq(fl_next),
            step_now.eq(step_next),
            low_next.eq(Mux(e_end, 0, Mux(e_valid | fl_now, low_upd, low_now))),
            fl_next.eq(Mux(e_valid & e_last, 1, fl_now & ~e_end)),
            step_next.eq(Mux(e_valid & e_last, 0, Mux(fl_now, step_now + 1, step_now))),
        ]
        for k in range(LANES):
            with m.If(e_end & (e_lane == k)):  # the lane's section is out: its input opens
                m.d.sync += closing[k].eq(0)
        f_valid, f_low, f_do, f_end, f_settle = stage_f(m, e_out, e_sum, e_do, e_end)
        f_lane = Signal()
        m.d.sync += f_lane.eq(e_lane)

        # ------------------------------------------------------------ F: the shifts' records
        # cache and pending: a ring of two registers each, as low's
        cache_now, cache_next_lane = Signal(8), Signal(8)
        pending_now, pending_next_lane = Signal(PENDING_BITS, init=1), Signal(PENDING_BITS, init=1)
        ev, cache_upd, pending_upd = shift_records(m, f_low, f_do, cache_now, pending_now, f_settle)
        m.d.comb += ev.last.eq(f_end)
        m.d.sync += [
            cache_now.eq(cache_next_lane),
            pending_now.eq(pending_next_lane),
            cache_next_lane.eq(Mux(f_valid, Mux(f_end, 0, cache_upd), cache_now)),
            pending_next_lane.eq(Mux(f_valid, Mux(f_end, 1, pending_upd), pending_now)),
        ]
        for k in range(LANES):
            # the event into its lane's FIFO through a register (as in RangeEncoder)
            m.d.sync += [emitters[k].w_data.eq(ev), emitters[k].w_en.eq(f_valid & (ev.n != 0) & (f_lane == k))]
        return m
