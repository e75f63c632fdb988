"""BAND_MOTION: Three-Step-Search of maps larger than the on-chip reference.

The golden model is the same as :mod:`temposplit.hw.motion_estimator`'s
(:func:`temposplit.codec.motion.three_step_search`, one vector per block shared by all
channels); what changes is where the reference lives. A map over ``ref_bytes`` (the
ResNet-50 cuts: 25x34x2048 is 1.7 MB at one byte per code) stays in DDR and streams in,
and the search is reorganised so that the fabric never needs more than a band of it:

- one *pass* over the map per TSS step (a step's candidates depend on the previous
  step's winner); the centres and best costs of every block are kept on chip between
  passes (the state RAM, ``band_blocks`` x 44 bits);
- in a pass, the map is cut into *groups* of G block rows and *channel slices* of Cs
  channels; for each group and slice the stream carries first the reference's rows of
  the group plus a halo of p rows above and below (clipped to the map) for the slice's
  channels, written into the reference RAM, then the current frame's blocks of the
  group (block order, the slice's channels);
- the current frame is scored *as it streams*: every chunk (``band_bytes`` bytes of one
  pixel, ``band_words`` stream words) is compared with the same chunk of each of the
  step's candidates (9 in the first step, 8 after) through the RAM's ``band_bytes``-wide
  read port, one candidate per cycle, into 9 accumulators;
- after a block's chunks, its 9 partial costs are added to those of the earlier slices
  (the partial-cost RAM, 9 words per block of the group, in the on-chip design's
  block buffer, idle in this mode); after the last slice the totals are compared in the
  golden order (the centre first, then the 8 neighbours, strictly lower wins) and the
  winner becomes the block's centre for the next step; after the last step the block's
  record goes out.

Nothing of the current frame is buffered beyond two chunks, so the on-chip memories are
those of the on-chip design (the reference RAM holds the band, the block buffer the
partial costs) plus the state RAM. Cycle counts: :func:`temposplit.hw.cyclemodel.band_cycles`.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw.regmap import DEFAULT, Params

# Candidate 0 is the centre (scored in the first step only), 1..8 the neighbours in the
# golden order (multiples of the step).
CANDIDATES = ((0, 0), (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
PIPE = 4  # cycles from a candidate's read to its accumulator


class BandMotion(wiring.Component):
    """The BAND_MOTION engine; the reference RAM and the partial-cost RAM are the motion
    estimator's (ports below), the state RAM is its own."""

    def __init__(self, params: Params = DEFAULT):
        self.params = params
        P = params
        ref_depth = P.ref_bytes // P.band_bytes
        super().__init__(
            {
                "cur": In(stream.Signature(unsigned(8 * P.lanes))),
                "rec_valid": Out(1),
                "rec_ready": In(1),
                "rec_data": Out(64),
                "rec_last": Out(1),
                "start": In(1),
                "busy": Out(1),
                # the reference RAM (band_bytes wide)
                "ref_waddr": Out(range(ref_depth)),
                "ref_wen": Out(P.band_words),
                "ref_wdata": Out(8 * P.band_bytes),
                "ref_raddr": Out(range(ref_depth)),
                "ref_rdata": In(8 * P.band_bytes),
                # the partial-cost RAM (the block buffer, 8 * lanes bits wide)
                "cost_waddr": Out(range(P.block_words)),
                "cost_wen": Out(1),
                "cost_wdata": Out(8 * P.lanes),
                "cost_raddr": Out(range(P.block_words)),
                "cost_rdata": In(8 * P.lanes),
                # configuration (stable while busy)
                "width": In(10),
                "height": In(10),
                "channels": In(12),
                "block": In(7),
                "search": In(4),
                "n_bits": In(4),
                "z8": In(8),
                "zn_ref": In(9),
                "slice": In(12),
                "group": In(10),
            }
        )

    def elaborate(self, platform):
        m = Module()
        P = self.params
        L = P.lanes
        R = P.band_words
        CB = P.band_bytes
        cshift = CB.bit_length() - 1
        ref_depth = P.ref_bytes // CB
        AW = 24  # address arithmetic width (signed intermediate values)

        m.submodules.state = state = memory.Memory(shape=unsigned(44), depth=P.band_blocks, init=[])
        st_wr = state.write_port()
        st_rd = state.read_port(transparent_for=())

        # ------------------------------------------------------------ per-operation constants
        k = Signal(3)
        cwb = Signal(12)  # chunks per pixel of a slice: Cs / band_bytes
        row_chunks = Signal(22)  # chunks per reference row of a slice: W * cwb
        gb = Signal(17)  # rows per group: G * B
        m.d.comb += [k.eq(8 - self.n_bits), cwb.eq(self.slice >> cshift)]
        step = Signal(5)
        first_step = Signal()
        last_step = Signal()
        m.d.comb += last_step.eq(step == 1)

        # group, slice, block position
        y_g = Signal(11)
        y_e = Signal(11)
        r0 = Signal(11)
        r1 = Signal(11)
        ch_off = Signal(13)
        last_slice = Signal()
        m.d.comb += last_slice.eq(ch_off + self.slice >= self.channels)
        ref_total = Signal(range(ref_depth + 1))
        y0 = Signal(11)
        x0 = Signal(11)
        bh = Signal(7)
        bw = Signal(7)
        m.d.comb += [
            bh.eq(Mux(self.height - y0 < self.block, self.height - y0, self.block)),
            bw.eq(Mux(self.width - x0 < self.block, self.width - x0, self.block)),
        ]
        bg = Signal(range(P.block_words))  # block within the group
        gbase = Signal(range(P.band_blocks + 1))  # blocks before the group
        bg9 = Signal(range(P.block_words + 16))

        # ------------------------------------------------------------ the block's candidates
        cy = Signal(signed(6))
        cx = Signal(signed(6))
        best = Signal(32)
        best_dy = Signal(signed(6))
        best_dx = Signal(signed(6))
        origin = Array(Signal(signed(AW), name=f"origin{i}") for i in range(9))
        valid = Array(Signal(name=f"valid{i}") for i in range(9))
        acc = Array(Signal(32, name=f"acc{i}") for i in range(9))
        base = Signal(signed(AW))
        seg = Signal(19)  # chunks per block row: bw * cwb
        ci = Signal(4)  # candidate index (set-up, issue and compare loops)
        oy = Signal(signed(2))
        ox = Signal(signed(2))
        with m.Switch(ci):
            for i, (a, b) in enumerate(CANDIDATES):
                with m.Case(i):
                    m.d.comb += [oy.eq(a), ox.eq(b)]
        cdy = Signal(signed(7))
        cdx = Signal(signed(7))
        m.d.comb += [
            cdy.eq(cy + Mux(oy < 0, -step, Mux(oy > 0, step, 0))),
            cdx.eq(cx + Mux(ox < 0, -step, Mux(ox > 0, step, 0))),
        ]
        ty = Signal(signed(13))
        tx = Signal(signed(13))
        m.d.comb += [ty.eq(y0 + cdy), tx.eq(x0 + cdx)]
        cvalid = Signal()
        m.d.comb += cvalid.eq((ty >= 0) & (ty + bh <= self.height) & (tx >= 0) & (tx + bw <= self.width))
        first_cand = Signal(4)
        m.d.comb += first_cand.eq(Mux(first_step, 0, 1))

        # ------------------------------------------------------------ chunk fill and scoring
        fill_l = [Signal(8 * L, name=f"fill{i}") for i in range(R)]
        fill = Array(fill_l)
        fill_w = Signal(range(R))
        fill_full = Signal()
        fill_off = Signal(AW)
        fill_last = Signal()
        filled_all = Signal()
        row_start = Signal(AW)  # r * row_chunks of the chunk being filled
        kk = Signal(19)  # chunk within the block row being filled
        rows_left = Signal(7)
        hold = Signal(8 * CB)
        hold_off = Signal(AW)
        hold_last = Signal()
        sc_busy = Signal()
        sc_i = Signal(4)
        issued_all = Signal()

        take = Signal()
        accept = Signal()
        chunks_phase = Signal()  # the block's chunks may arrive (from its set-up on)
        scoring = Signal()  # the candidates' addresses are ready
        chunk_ready = Signal()
        m.d.comb += [
            take.eq(scoring & fill_full & (~sc_busy | ((sc_i == 8) & ~hold_last))),
            chunk_ready.eq(chunks_phase & ~filled_all & (~fill_full | take)),
            self.cur.ready.eq(chunk_ready),
            accept.eq(self.cur.valid & chunk_ready),
        ]
        with m.If(accept):
            m.d.sync += fill[fill_w].eq(self.cur.payload)
            with m.If(fill_w == R - 1):
                m.d.sync += [fill_w.eq(0), fill_off.eq(row_start + kk)]
                with m.If(kk + 1 == seg):
                    m.d.sync += [kk.eq(0), row_start.eq(row_start + row_chunks), rows_left.eq(rows_left - 1)]
                    with m.If(rows_left == 1):
                        m.d.sync += [filled_all.eq(1), fill_last.eq(1)]
                    with m.Else():
                        m.d.sync += fill_last.eq(0)
                with m.Else():
                    m.d.sync += [kk.eq(kk + 1), fill_last.eq(0)]
            with m.Else():
                m.d.sync += fill_w.eq(fill_w + 1)
        with m.If(accept & (fill_w == R - 1)):
            m.d.sync += fill_full.eq(1)
        with m.Elif(take):
            m.d.sync += fill_full.eq(0)

        # issue: one candidate per cycle; the chunk travels down the pipeline with it
        p1_v = Signal()
        p1_i = Signal(4)
        p1_cur = Signal(8 * CB)
        m.d.comb += self.ref_raddr.eq((origin[sc_i] + hold_off)[: len(self.ref_raddr)])
        m.d.sync += [p1_v.eq(0)]
        with m.If(sc_busy):
            m.d.sync += [p1_v.eq(valid[sc_i]), p1_i.eq(sc_i), p1_cur.eq(hold), sc_i.eq(sc_i + 1)]
            with m.If(sc_i == 8):
                with m.If(hold_last):
                    m.d.sync += [sc_busy.eq(0), issued_all.eq(1)]
                with m.Elif(~take):
                    m.d.sync += sc_busy.eq(0)
        with m.If(take):
            m.d.sync += [
                hold.eq(Cat(*fill_l)),
                hold_off.eq(fill_off),
                hold_last.eq(fill_last),
                sc_busy.eq(1),
                sc_i.eq(first_cand),
            ]

        # |((a - zN) << k) - (c - z8)| for each byte, then partial sums of 8, then the total
        nb = CB
        p2_v = Signal()
        p2_i = Signal(4)
        diffs = [Signal(11, name=f"bdiff{j}") for j in range(nb)]
        m.d.sync += [p2_v.eq(p1_v), p2_i.eq(p1_i)]
        for j in range(nb):
            a = self.ref_rdata.word_select(j, 8)
            c = p1_cur.word_select(j, 8)
            ac = Signal(signed(12), name=f"bref{j}")
            cc = Signal(signed(10), name=f"bcur{j}")
            d = Signal(signed(13), name=f"bd{j}")
            m.d.comb += [ac.eq((a - self.zn_ref) << k), cc.eq(c - self.z8), d.eq(ac - cc)]
            m.d.sync += diffs[j].eq(Mux(d < 0, -d, d))
        ngroups = -(-nb // 8)
        p3_v = Signal()
        p3_i = Signal(4)
        parts = [Signal(14, name=f"bpart{g}") for g in range(ngroups)]
        m.d.sync += [p3_v.eq(p2_v), p3_i.eq(p2_i)]
        for g in range(ngroups):
            m.d.sync += parts[g].eq(sum(diffs[8 * g : 8 * g + 8]))
        total = Signal(14 + ngroups.bit_length())
        m.d.comb += total.eq(sum(parts))
        clear_acc = Signal()
        for i in range(9):
            with m.If(clear_acc):
                m.d.sync += acc[i].eq(0)
            with m.Elif(p3_v & (p3_i == i)):
                m.d.sync += acc[i].eq(acc[i] + total)

        # ------------------------------------------------------------ block end: partial costs
        e_v = Signal()
        e_i = Signal(4)
        tot = Signal(32)
        m.d.comb += [
            self.cost_raddr.eq(bg9 + ci),
            tot.eq(Mux(ch_off == 0, 0, self.cost_rdata[:32]) + acc[e_i]),
            self.cost_waddr.eq(bg9 + e_i),
            self.cost_wdata.eq(tot),
        ]
        # the candidate being compared: (cy, cx) + offset of e_i
        ey = Signal(signed(2))
        ex = Signal(signed(2))
        with m.Switch(e_i):
            for i, (a, b) in enumerate(CANDIDATES):
                with m.Case(i):
                    m.d.comb += [ey.eq(a), ex.eq(b)]
        edy = Signal(signed(7))
        edx = Signal(signed(7))
        m.d.comb += [
            edy.eq(cy + Mux(ey < 0, -step, Mux(ey > 0, step, 0))),
            edx.eq(cx + Mux(ex < 0, -step, Mux(ex > 0, step, 0))),
        ]

        # ------------------------------------------------------------ records
        dy8 = Signal(signed(8))
        dx8 = Signal(signed(8))
        m.d.comb += [
            dy8.eq(best_dy),
            dx8.eq(best_dx),
            self.rec_data.eq(Cat(dy8, dx8, Const(0, 16), best)),
            self.rec_last.eq((y0 + self.block >= self.height) & (x0 + self.block >= self.width)),
        ]
        m.d.comb += [
            st_wr.addr.eq(gbase + bg),
            st_wr.data.eq(Cat(best, best_dy, best_dx)),
            st_rd.addr.eq(gbase + bg),
        ]

        ref_ptr = Signal(range(ref_depth + 1))
        ref_w = Signal(range(R))
        m.d.comb += [
            self.ref_waddr.eq(ref_ptr),
            self.ref_wdata.eq(Cat(*([self.cur.payload] * R))),
        ]
        drain = Signal(3)
        mul_a = Signal(signed(AW))

        with m.FSM(name="band"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [step.eq((self.search + 1) >> 1), first_step.eq(1)]
                    m.next = "INIT"
            with m.State("INIT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [row_chunks.eq(self.width * cwb), gb.eq(self.group * self.block)]
                m.next = "STEP"
            with m.State("STEP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [y_g.eq(0), gbase.eq(0)]
                m.next = "GROUP"
            with m.State("GROUP"):
                m.d.comb += self.busy.eq(1)
                ye = Signal(12)
                m.d.comb += ye.eq(y_g + gb)
                m.d.sync += [
                    y_e.eq(Mux(ye > self.height, self.height, ye)),
                    r0.eq(Mux(y_g > self.search, y_g - self.search, 0)),
                    ch_off.eq(0),
                ]
                m.next = "GROUP2"
            with m.State("GROUP2"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += r1.eq(Mux(y_e + self.search > self.height, self.height, y_e + self.search))
                m.next = "GROUP3"
            with m.State("GROUP3"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += ref_total.eq((r1 - r0) * row_chunks)
                m.next = "SLICE"
            with m.State("SLICE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [ref_ptr.eq(0), ref_w.eq(0), y0.eq(y_g), x0.eq(0), bg.eq(0), bg9.eq(0)]
                m.next = "REF"
            with m.State("REF"):  # the band of the reference, this slice's channels
                m.d.comb += [self.busy.eq(1), self.cur.ready.eq(1)]
                with m.If(self.cur.valid):
                    m.d.comb += self.ref_wen.eq((Const(1, R) << ref_w)[:R] if R > 1 else 1)
                    m.d.sync += ref_w.eq(ref_w + 1)
                    with m.If(ref_w == R - 1):
                        m.d.sync += [ref_w.eq(0), ref_ptr.eq(ref_ptr + 1)]
                        with m.If(ref_ptr + 1 == ref_total):
                            m.next = "BSTART"
            with m.State("BSTART"):  # state read (address gbase + bg), block geometry
                m.d.comb += [self.busy.eq(1), clear_acc.eq(1)]
                m.d.sync += [
                    seg.eq(bw * cwb),
                    mul_a.eq((y0 - r0) * row_chunks),
                    ci.eq(0),
                    fill_w.eq(0),
                    fill_full.eq(0),
                    filled_all.eq(0),
                    kk.eq(0),
                    row_start.eq(0),
                    rows_left.eq(bh),
                    issued_all.eq(0),
                ]
                m.next = "BSTATE"
            with m.State("BSTATE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += base.eq(mul_a + x0 * cwb)
                with m.If(first_step):
                    m.d.sync += [cy.eq(0), cx.eq(0), best.eq(0), best_dy.eq(0), best_dx.eq(0)]
                with m.Else():
                    m.d.sync += [
                        best.eq(st_rd.data[:32]),
                        cy.eq(st_rd.data[32:38]),
                        cx.eq(st_rd.data[38:44]),
                        best_dy.eq(st_rd.data[32:38]),
                        best_dx.eq(st_rd.data[38:44]),
                    ]
                m.next = "BCAND"
            with m.State("BCAND"):  # candidate ci: its validity and first chunk's address
                m.d.comb += [self.busy.eq(1), chunks_phase.eq(1)]
                m.d.sync += [
                    origin[ci].eq(
                        base + cdy * Cat(row_chunks, Const(0, 1)).as_signed() + cdx * Cat(cwb, Const(0, 1)).as_signed()
                    ),
                    valid[ci].eq(cvalid & ((ci != 0) | first_step)),
                    ci.eq(ci + 1),
                ]
                with m.If(ci == 8):
                    m.next = "CHUNKS"
            with m.State("CHUNKS"):
                m.d.comb += [self.busy.eq(1), chunks_phase.eq(1), scoring.eq(1)]
                with m.If(issued_all):
                    m.d.sync += drain.eq(PIPE - 1)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [drain.eq(drain - 1), ci.eq(first_cand), e_v.eq(0)]
                with m.If(drain == 0):
                    m.next = "BEND"
            with m.State("BEND"):  # read partial ci, add e_i's, compare in the golden order
                m.d.comb += self.busy.eq(1)
                m.d.sync += [e_v.eq(ci <= 8), e_i.eq(ci), ci.eq(ci + 1)]
                with m.If(e_v):
                    m.d.comb += self.cost_wen.eq(~last_slice)
                    with m.If(last_slice):
                        with m.If(e_i == 0):
                            m.d.sync += [best.eq(tot), best_dy.eq(edy), best_dx.eq(edx)]
                        with m.Elif(valid[e_i] & (tot < best)):
                            m.d.sync += [best.eq(tot), best_dy.eq(edy), best_dx.eq(edx)]
                    with m.If(e_i == 8):
                        with m.If(last_slice):
                            m.next = "BSTORE"
                        with m.Else():
                            m.next = "NEXT"
            with m.State("BSTORE"):
                m.d.comb += [self.busy.eq(1), st_wr.en.eq(1)]
                with m.If(last_step):
                    m.next = "EMIT"
                with m.Else():
                    m.next = "NEXT"
            with m.State("EMIT"):
                m.d.comb += [self.busy.eq(1), self.rec_valid.eq(1)]
                with m.If(self.rec_ready):
                    m.next = "NEXT"
            with m.State("NEXT"):  # the next block, slice, group, step
                m.d.comb += self.busy.eq(1)
                m.d.sync += [bg.eq(bg + 1), bg9.eq(bg9 + 9)]
                m.next = "BSTART"
                with m.If(x0 + self.block >= self.width):
                    m.d.sync += [x0.eq(0), y0.eq(y0 + self.block)]
                    with m.If(y0 + self.block >= y_e):  # the group's blocks are done
                        m.next = "SLICE"
                        m.d.sync += ch_off.eq(ch_off + self.slice)
                        with m.If(last_slice):
                            m.d.sync += [gbase.eq(gbase + bg + 1), y_g.eq(y_e)]
                            m.next = "GROUP"
                            with m.If(y_e >= self.height):
                                m.d.sync += [step.eq(step >> 1), first_step.eq(0)]
                                m.next = "STEP"
                                with m.If(last_step):
                                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += x0.eq(x0 + self.block)
        return m
