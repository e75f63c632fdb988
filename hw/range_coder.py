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

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
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

    def __init__(self, line_elements: int = 16384, fifo_depth: int = 16):
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
