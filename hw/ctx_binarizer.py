"""The v2 coder's fronts in RTL: what turns a section's values into bins for
:class:`~temposplit.hw.range_coder.RangeEncoder` (docs/bitstream.md 6.2.3-6.2.5,
docs/fabric.md "The v2 coder `ctx` in RTL" and "Value records").

- :class:`ValueBins`: a value's binarization with its contexts in, its bins out, one a
  cycle (zero, sign, unary magnitude, suffix);
- :class:`AnchorBinarizer`: an anchor's elements in, their contexts (intra or temporal,
  from a row buffer and a pixel buffer) and binarizations computed in the fabric, into
  :class:`ValueBins`;
- :class:`RecordUnpack`: stream words of value records (the PS computed each value's
  binarization and contexts, ``codec/ctx_records.py``) in, one value a cycle out, into
  a :class:`ValueBins` of its own.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.codec.ctx_records import FIELDS as RECORD_FIELDS
from temposplit.codec.ctx_records import RUN_COUNT, RUN_CTX_BITS, RUN_FLAG
from temposplit.hw.range_coder import bin_layout

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
ELEMENT_CREDIT = 7  # free entries of the element FIFO an element needs to be taken (stages P, D, Q, R)

# an anchor section's configuration (stable during a section): the map's W and C, N, z_N
# and whether it is temporal
ANCHOR_CONFIG = {"width": 10, "channels": 12, "n_bits": 4, "z_n": 9, "temporal": 1}
# cycles the configuration is set before a section's first element (its terms are registers)
CONFIG_CYCLES = 3


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
        # final: this bin is the element's last. A register, computed with the next phase
        # and index (or the next element), so that the input's ready and the element
        # register's enable are a gate of registers, not the compares behind them. In the
        # unary phase the compares are against constants: m_rel = m - idx and u_rel =
        # unary_n - idx count down beside idx (no add before a compare).
        final = Signal()
        m_rel = Signal(8)
        u_rel = Signal(4)

        def fresh_final(el):  # a fresh element's zero bin is its last
            return el.zero | (~el.has_sign & (el.unary_n == 0) & (el.suffix_w == 0))

        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += [bit.eq(~e.zero), ctxi.eq(e.z_ctx)]
            with m.Case(1):
                m.d.comb += [bit.eq(e.neg), ctxi.eq(e.s_ctx)]
            with m.Case(2):
                m.d.comb += [bit.eq(e.m > idx), ctxi.eq(e.mag[Mux(idx > 3, 3, idx[:2])])]
            with m.Case(3):
                m.d.comb += [bit.eq((e.rest >> idx)[0]), bypass.eq(1)]
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
        next_phase = Signal(2)
        next_idx = Signal(5)
        m.d.comb += [next_phase.eq(phase), next_idx.eq(idx)]
        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += [next_phase.eq(Mux(e.has_sign, 1, Mux(e.unary_n != 0, 2, 3))), next_idx.eq(0)]
                with m.If(~e.has_sign & (e.unary_n == 0)):
                    m.d.comb += next_idx.eq(e.suffix_w - 1)
            with m.Case(1):
                m.d.comb += [
                    next_phase.eq(Mux(e.unary_n != 0, 2, 3)),
                    next_idx.eq(Mux(e.unary_n != 0, 0, e.suffix_w - 1)),
                ]
            with m.Case(2):
                with m.If(u_rel == 1):  # idx + 1 == unary_n
                    m.d.comb += [next_phase.eq(3), next_idx.eq(e.suffix_w - 1)]
                with m.Else():
                    m.d.comb += next_idx.eq(idx + 1)
            with m.Case(3):
                m.d.comb += next_idx.eq(idx - 1)
        # whether the next bin (next_phase, next_idx) is the element's last, case by case,
        # from registers and constants
        next_final = Signal()
        sw0 = e.suffix_w == 0
        into_unary = (e.m == 0) | ((e.unary_n == 1) & sw0)  # phase 2, index 0
        into_suffix = e.suffix_w == 1  # phase 3, index suffix_w - 1
        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += next_final.eq(
                    Mux(e.has_sign, (e.unary_n == 0) & sw0, Mux(e.unary_n != 0, into_unary, into_suffix))
                )
            with m.Case(1):
                m.d.comb += next_final.eq(Mux(e.unary_n != 0, into_unary, into_suffix))
            with m.Case(2):
                m.d.comb += next_final.eq(Mux(u_rel == 1, into_suffix, (m_rel == 1) | ((u_rel == 2) & sw0)))
            with m.Case(3):
                m.d.comb += next_final.eq(idx == 1)
        with m.If(s1_valid & self.o.ready & ~final):
            m.d.sync += [phase.eq(next_phase), idx.eq(next_idx), final.eq(next_final)]
            with m.If(phase == 2):
                m.d.sync += [m_rel.eq(m_rel - 1), u_rel.eq(u_rel - 1)]
        with m.If(load):
            m.d.sync += [
                s1_valid.eq(self.i.valid),
                phase.eq(0),
                idx.eq(0),
                e.eq(self.i.payload),
                final.eq(fresh_final(self.i.payload)),
                m_rel.eq(self.i.p.m),
                u_rel.eq(self.i.p.unary_n),
            ]
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
        # section and set CONFIG_CYCLES before its first element; zc from the register
        # ``top``, so that the shift and the compare are not one path, and C == 1, W == 1
        # for the counters below: r24 on the ECP5 proxy, `zc` 11.1 ns and the position's
        # enables behind the two compares, 10 late inputs)
        top = Signal(8)
        sh = Signal(3)
        zc = Signal(8)
        temporal = Signal()
        c_one = Signal()
        w_one = Signal()
        # (the fields first into registers here: the register file is across the die; r26
        # seed 2, NBITS into `sh`, 10.9 ns)
        n_bits = Signal.like(self.n_bits, reset_less=True)
        z_n = Signal.like(self.z_n, reset_less=True)
        channels = Signal.like(self.channels, reset_less=True)
        width = Signal.like(self.width, reset_less=True)
        m.d.sync += [n_bits.eq(self.n_bits), z_n.eq(self.z_n), channels.eq(self.channels), width.eq(self.width)]
        m.d.sync += [
            top.eq((Const(1, 9) << n_bits) - 1),
            sh.eq(Mux(n_bits > 4, n_bits - 4, 0)),
            zc.eq(Mux(z_n > top, top, z_n)),
            temporal.eq(self.temporal),
            c_one.eq(channels == 1),
            w_one.eq(width == 1),
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
            c_end.eq(Mux(c0, c_one, c_top)),
            x_end.eq(Mux(x0, w_one, x_top)),
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
                        x_top.eq(pos_x + 2 == width),
                        pos_a.eq(pos_a + 1),
                    ]
            with m.Else():
                m.d.sync += [pos_c.eq(pos_c + 1), c0.eq(0), c_top.eq(pos_c + 2 == channels), pos_a.eq(pos_a + 1)]

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
        p_fwd_dist = Signal(8)  # |x - z_N| of p_fwd's code
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
            p_fwd_dist.eq(_abs_diff(m, pe.x, zc, 8, "dist_p")),
        ]
        prev_change = Signal(signed(2))  # the change of the element before (0 at a section's start)
        with m.If(p_valid):
            m.d.sync += prev_change.eq(Mux(pe.last, 0, change))

        # ------------------------------------------------------------ D: the buffers' words registered
        # as they leave the RAMs (nothing between a block RAM's output and a register: its
        # clock-to-out is about 5.8 ns on the ECP5 proxy, and the neighbour's select behind
        # it was r31's `q_sl`, `q_uv`, 10.6 ns), with what P decided for them
        d_valid = Signal()
        de = Signal(element_layout)
        d_u = Signal(10)
        d_l = Signal(10)
        d_has_l, d_has_u = Signal(), Signal()
        d_fwd_u, d_fwd_l = Signal(), Signal()
        d_fwd = Signal(10)
        d_fwd_dist = Signal(8)
        d_sp = Signal(signed(2))
        m.d.sync += [
            d_valid.eq(p_valid),
            de.eq(pe),
            d_u.eq(rd_u.data),
            d_l.eq(rd_l.data),
            d_has_l.eq(p_has_l),
            d_has_u.eq(p_has_u),
            d_fwd_u.eq(p_fwd_u),
            d_fwd_l.eq(p_fwd_l),
            d_fwd.eq(p_fwd),
            d_fwd_dist.eq(p_fwd_dist),
            d_sp.eq(Mux(p_has_p, prev_change, 0)),
        ]

        # ------------------------------------------------------------ Q: the neighbours registered
        q_valid = Signal()
        qe = Signal(element_layout)
        q_lv = Signal(8)
        q_uv = Signal(8)
        q_sl = Signal(signed(2))
        q_su = Signal(signed(2))
        q_sp = Signal(signed(2))
        q_ld = Signal(8)  # |left - z_N|, |up - z_N|: the distances, before their shift
        q_ud = Signal(8)
        q_pred = Signal(8)  # the value's prediction: the reference's code (temporal), else z_N
        # one select after each RAM's output: its word, or (forwarded, or no neighbour:
        # z_N and no change) a word from registers; the distances the same way, from the
        # RAM's word's or the registers' (the distance of the selected word, its shift
        # after it, were r34 seed 1's `r.a`, 10.2 ns)
        u_word = Signal(10)
        l_word = Signal(10)
        u_alt = Signal(10)
        l_alt = Signal(10)
        u_ram = Signal()
        l_ram = Signal()
        m.d.comb += [
            u_ram.eq(d_has_u & ~d_fwd_u),
            l_ram.eq(d_has_l & ~d_fwd_l),
            u_alt.eq(Mux(d_has_u, d_fwd, zc)),
            l_alt.eq(Mux(d_has_l, d_fwd, zc)),
            u_word.eq(Mux(u_ram, d_u, u_alt)),
            l_word.eq(Mux(l_ram, d_l, l_alt)),
        ]
        u_alt_dist = Mux(d_has_u, d_fwd_dist, 0)
        l_alt_dist = Mux(d_has_l, d_fwd_dist, 0)
        m.d.sync += [
            q_valid.eq(d_valid),
            qe.eq(de),
            q_lv.eq(l_word[:8]),
            q_uv.eq(u_word[:8]),
            q_sl.eq(l_word[8:10]),
            q_su.eq(u_word[8:10]),
            q_sp.eq(d_sp),
            q_ld.eq(Mux(l_ram, _abs_diff(m, d_l[:8], zc, 8, "dist_dl"), l_alt_dist)),
            q_ud.eq(Mux(u_ram, _abs_diff(m, d_u[:8], zc, 8, "dist_du"), u_alt_dist)),
            q_pred.eq(Mux(temporal, de.p, zc)),
        ]

        # ------------------------------------------------------------ Q -> R: distances, the value's difference
        pred = q_pred
        a = Signal(8)
        b = Signal(8)
        m.d.comb += [a.eq(q_ld >> sh), b.eq(q_ud >> sh)]
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
            # |x - pred| - 1 as one add (8 bits; x == pred gives 255, as |0| - 1 did): the
            # difference, then the decrement, were r34 seed 2's `elements.w_data`, 10.0 ns
            r.m.eq(Mux(qe.x >= pred, qe.x + ~pred, pred + ~qe.x)[:8]),
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
        # the word's last value leaves now (~run | slot + 1 == count): a register, set with
        # the word and the slot, so that the input's ready is a gate of registers
        final = Signal()
        r = data.View(value_layout, word[: value_layout.size])
        ev = Signal(element_bins_layout)
        m.d.comb += [
            run.eq(word[RUN_FLAG]),
            count.eq(word[RUN_COUNT[0] : RUN_COUNT[0] + RUN_COUNT[1]]),
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
            m.d.sync += [slot.eq(slot + 1), final.eq(slot + 2 == count)]
            with m.If(final):
                m.d.sync += [held.eq(0), slot.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            w = self.i.p.word
            m.d.sync += [
                word.eq(w),
                word_last.eq(self.i.p.last),
                held.eq(1),
                slot.eq(0),
                final.eq(~w[RUN_FLAG] | (w[RUN_COUNT[0] : RUN_COUNT[0] + RUN_COUNT[1]] == 1)),
            ]
        return m
