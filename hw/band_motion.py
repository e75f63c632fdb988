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

Structure: :class:`BandMotion` is the controller (the pass, group, slice and block FSM,
the band's load into the reference RAM, each block's candidates) around three components
joined by streams and memory-port signatures (``wiring.connect``):

- :class:`ChunkAddresses`, the address generator: the current block's stream words in,
  chunks out, each with its offset in the band;
- :class:`SadPipeline`: each chunk against the candidates, one per cycle, through the
  reference RAM's read port, into the 9 accumulators;
- :class:`StateUpdate`: at a block's end the partial costs (block buffer), the golden
  order's comparison, the block's centre and best cost (state RAM), its record.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out, flipped

from temposplit.codec.motion import (
    TSS_ORDER,
    block_extent,
    centred_cur,
    centred_ref,
    element_cost,
    is_valid,
    last_block,
    tss_first_step,
    tss_next_step,
)
from temposplit.hw.regmap import DEFAULT, Params

# Candidate 0 is the centre (scored in the first step only), 1..8 the neighbours in the
# golden order (multiples of the step).
CANDIDATES = ((0, 0), *TSS_ORDER)
NCAND = len(CANDIDATES)

# Cycles of the FSM's states (the cycle model, cyclemodel.band_cycles, counts with these).
INIT_CYCLES = 1  # INIT
STEP_CYCLES = 1  # STEP
GROUP_CYCLES = 3  # GROUP, GROUP2, GROUP3
SLICE_CYCLES = 1  # SLICE
BLOCK_HEAD_CYCLES = 2  # BSTART, BSTATE
CAND_CYCLES = NCAND  # BCAND: the candidates' addresses (the first chunk arrives meanwhile)
CHUNKS_TAIL_CYCLES = 2  # CHUNKS: the first take, the cycle that sees the last issue
DRAIN_CYCLES = 4  # DRAIN: from a candidate's read to its accumulator (SadPipeline's stages)
NEXT_CYCLES = 1  # NEXT
STORE_CYCLES = 1  # BSTORE (last slice)
EMIT_CYCLES = 1  # EMIT (last step, last slice)

AW = 24  # address arithmetic width (signed intermediate values)
STATE_BITS = 44  # state RAM word: best cost (32), centre dy (6), dx (6)

# A motion record (MOTION and BAND_MOTION): dy (byte 0), dx (byte 1), cost (bytes 4..7).
record_layout = data.StructLayout({"data": unsigned(64), "last": unsigned(1)})


def chunk_layout(params: Params) -> data.StructLayout:
    """A chunk of the current block: ``band_bytes`` bytes of one pixel, its offset in the
    band (in chunks) and whether it is the block's last."""
    return data.StructLayout({"data": unsigned(8 * params.band_bytes), "offset": unsigned(AW), "last": unsigned(1)})


def _offset(m, index, step, name):
    """(dy, dx) multiples of ``step`` of candidate ``index`` (CANDIDATES, generated)."""
    oy = Signal(signed(2), name=f"{name}_oy")
    ox = Signal(signed(2), name=f"{name}_ox")
    with m.Switch(index):
        for i, (a, b) in enumerate(CANDIDATES):
            with m.Case(i):
                m.d.comb += [oy.eq(a), ox.eq(b)]
    return Mux(oy < 0, -step, Mux(oy > 0, step, 0)), Mux(ox < 0, -step, Mux(ox > 0, step, 0))


class ChunkAddresses(wiring.Component):
    """The address generator: a block's stream words in (block order, the slice's
    channels), chunks out, each with its offset in the band (the row's start plus the
    chunk's place in the block row) and the block's last flagged.

    ``restart`` (one cycle, before the block's words may arrive) loads ``rows`` (the
    block's height); ``seg`` (chunks per block row) and ``row_chunks`` (chunks per band
    row) are stable for the block; words are taken while ``enable``.
    """

    def __init__(self, params: Params = DEFAULT):
        self.params = params
        super().__init__(
            {
                "cur": In(stream.Signature(unsigned(8 * params.lanes))),
                "o": Out(stream.Signature(chunk_layout(params))),
                "enable": In(1),
                "restart": In(1),
                "rows": In(7),
                "seg": In(19),
                "row_chunks": In(22),
            }
        )

    def elaborate(self, platform):
        m = Module()
        R = self.params.band_words
        fill = [Signal(8 * self.params.lanes, name=f"fill{i}") for i in range(R)]
        fill_w = Signal(range(R))
        filled_all = Signal()
        row_start = Signal(AW)  # r * row_chunks of the chunk being filled
        kk = Signal(19)  # chunk within the block row being filled
        rows_left = Signal(7)
        accept = Signal()
        m.d.comb += [
            self.o.p.data.eq(Cat(*fill)),
            self.cur.ready.eq(self.enable & ~filled_all & (~self.o.valid | self.o.ready)),
            accept.eq(self.cur.valid & self.cur.ready),
        ]
        with m.If(accept):
            with m.Switch(fill_w):
                for i in range(R):
                    with m.Case(i):
                        m.d.sync += fill[i].eq(self.cur.payload)
            with m.If(fill_w == R - 1):
                m.d.sync += [fill_w.eq(0), self.o.p.offset.eq(row_start + kk)]
                with m.If(kk + 1 == self.seg):
                    m.d.sync += [kk.eq(0), row_start.eq(row_start + self.row_chunks), rows_left.eq(rows_left - 1)]
                    with m.If(rows_left == 1):
                        m.d.sync += [filled_all.eq(1), self.o.p.last.eq(1)]
                    with m.Else():
                        m.d.sync += self.o.p.last.eq(0)
                with m.Else():
                    m.d.sync += [kk.eq(kk + 1), self.o.p.last.eq(0)]
            with m.Else():
                m.d.sync += fill_w.eq(fill_w + 1)
        with m.If(accept & (fill_w == R - 1)):
            m.d.sync += self.o.valid.eq(1)
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.restart):
            m.d.sync += [
                fill_w.eq(0),
                self.o.valid.eq(0),
                filled_all.eq(0),
                kk.eq(0),
                row_start.eq(0),
                rows_left.eq(self.rows),
            ]
        return m


class SadPipeline(wiring.Component):
    """Each chunk against the candidates of the step, one per cycle: the candidate's chunk
    read through the reference RAM's ``band_bytes``-wide port (``ref``), the cost
    |((a - z_N) << k) - (c - z8)| of every byte, partial sums of 8, the total into the
    candidate's accumulator (DRAIN_CYCLES from the read). ``origin`` and ``valid`` hold the
    candidates' first-chunk addresses and validity; candidates from ``first_cand`` to 8 are
    issued; a chunk is taken while ``scoring``; ``done`` rises when the block's last chunk
    is issued (cleared by ``restart``); ``clear`` zeroes the accumulators.
    """

    def __init__(self, params: Params = DEFAULT):
        self.params = params
        ref_depth = params.ref_bytes // params.band_bytes
        super().__init__(
            {
                "i": In(stream.Signature(chunk_layout(params))),
                "ref": In(
                    memory.ReadPort.Signature(addr_width=(ref_depth - 1).bit_length(), shape=8 * params.band_bytes)
                ),
                "origin": In(data.ArrayLayout(signed(AW), NCAND)),
                "valid": In(NCAND),
                "first_cand": In(4),
                "scoring": In(1),
                "restart": In(1),
                "clear": In(1),
                "acc": Out(data.ArrayLayout(unsigned(32), NCAND)),
                "done": Out(1),
                "n_bits": In(4),
                "z8": In(8),
                "zn_ref": In(9),
            }
        )

    def elaborate(self, platform):
        m = Module()
        CB = self.params.band_bytes
        k = Signal(3)
        m.d.comb += k.eq(8 - self.n_bits)
        hold = Signal(8 * CB)
        hold_off = Signal(AW)
        hold_last = Signal()
        sc_busy = Signal()
        sc_i = Signal(4)
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(self.scoring & (~sc_busy | ((sc_i == NCAND - 1) & ~hold_last))),
            take.eq(self.i.valid & self.i.ready),
        ]

        # issue: one candidate per cycle; the chunk travels down the pipeline with it
        p1_v = Signal()
        p1_i = Signal(4)
        p1_cur = Signal(8 * CB)
        m.d.comb += self.ref.addr.eq((self.origin[sc_i] + hold_off)[: len(self.ref.addr)])
        m.d.sync += [p1_v.eq(0)]
        with m.If(sc_busy):
            m.d.sync += [p1_v.eq(self.valid.bit_select(sc_i, 1)), p1_i.eq(sc_i), p1_cur.eq(hold), sc_i.eq(sc_i + 1)]
            with m.If(sc_i == NCAND - 1):
                with m.If(hold_last):
                    m.d.sync += [sc_busy.eq(0), self.done.eq(1)]
                with m.Elif(~take):
                    m.d.sync += sc_busy.eq(0)
        with m.If(take):
            m.d.sync += [
                hold.eq(self.i.p.data),
                hold_off.eq(self.i.p.offset),
                hold_last.eq(self.i.p.last),
                sc_busy.eq(1),
                sc_i.eq(self.first_cand),
            ]
        with m.If(self.restart):
            m.d.sync += self.done.eq(0)

        # the cost of each byte, then partial sums of 8, then the total
        p2_v = Signal()
        p2_i = Signal(4)
        diffs = [Signal(11, name=f"bdiff{j}") for j in range(CB)]
        m.d.sync += [p2_v.eq(p1_v), p2_i.eq(p1_i)]
        for j in range(CB):
            a = self.ref.data.word_select(j, 8)
            c = p1_cur.word_select(j, 8)
            ac = Signal(signed(12), name=f"bref{j}")
            cc = Signal(signed(10), name=f"bcur{j}")
            m.d.comb += [ac.eq(centred_ref(a, self.zn_ref, k)), cc.eq(centred_cur(c, self.z8))]
            m.d.sync += diffs[j].eq(element_cost(ac, cc))
        ngroups = -(-CB // 8)
        p3_v = Signal()
        p3_i = Signal(4)
        parts = [Signal(14, name=f"bpart{g}") for g in range(ngroups)]
        m.d.sync += [p3_v.eq(p2_v), p3_i.eq(p2_i)]
        for g in range(ngroups):
            m.d.sync += parts[g].eq(sum(diffs[8 * g : 8 * g + 8]))
        total = Signal(14 + ngroups.bit_length())
        m.d.comb += total.eq(sum(parts))
        for i in range(NCAND):
            with m.If(self.clear):
                m.d.sync += self.acc[i].eq(0)
            with m.Elif(p3_v & (p3_i == i)):
                m.d.sync += self.acc[i].eq(self.acc[i] + total)
        return m


class StateUpdate(wiring.Component):
    """A block's search state across slices and steps.

    ``load`` (BSTATE): the block's centre and best cost from the state RAM (``state_rd``,
    addressed by ``block_index`` a cycle before), or (0, 0) and 0 in the first step.
    ``prime`` then ``run`` (BEND): for candidates ``first_cand`` .. 8 read the partial cost
    of the earlier slices (``cost_rd`` at ``cost_base`` + candidate; 0 in the first slice),
    add the accumulator, and write it back (``cost_wr``), or in the last slice compare in
    the golden order (the centre first, then a valid neighbour replaces the best only when
    strictly lower); ``done`` marks the last candidate. ``store`` (BSTORE) writes the
    state; ``record`` is the block's MOTION record (dy, dx, cost).
    """

    def __init__(self, params: Params = DEFAULT):
        self.params = params
        super().__init__(
            {
                "cost_rd": In(
                    memory.ReadPort.Signature(addr_width=(params.block_words - 1).bit_length(), shape=8 * params.lanes)
                ),
                "cost_wr": In(
                    memory.WritePort.Signature(addr_width=(params.block_words - 1).bit_length(), shape=8 * params.lanes)
                ),
                "state_rd": In(
                    memory.ReadPort.Signature(addr_width=(params.band_blocks - 1).bit_length(), shape=STATE_BITS)
                ),
                "state_wr": In(
                    memory.WritePort.Signature(addr_width=(params.band_blocks - 1).bit_length(), shape=STATE_BITS)
                ),
                "acc": In(data.ArrayLayout(unsigned(32), NCAND)),
                "valid": In(NCAND),
                "block_index": In(range(params.band_blocks + 1)),
                "cost_base": In(range(params.block_words + 16)),
                "first_cand": In(4),
                "first_step": In(1),
                "first_slice": In(1),
                "last_slice": In(1),
                "step": In(5),
                "load": In(1),
                "prime": In(1),
                "run": In(1),
                "store": In(1),
                "done": Out(1),
                "cy": Out(signed(6)),
                "cx": Out(signed(6)),
                "record": Out(64),
            }
        )

    def elaborate(self, platform):
        m = Module()
        best = Signal(32)
        best_dy = Signal(signed(6))
        best_dx = Signal(signed(6))
        ci = Signal(4)  # the candidate whose partial cost is read
        e_v = Signal()
        e_i = Signal(4)  # the candidate being added and compared
        tot = Signal(32)
        m.d.comb += [
            self.cost_rd.addr.eq(self.cost_base + ci),
            tot.eq(Mux(self.first_slice, 0, self.cost_rd.data[:32]) + self.acc[e_i]),
            self.cost_wr.addr.eq(self.cost_base + e_i),
            self.cost_wr.data.eq(tot),
        ]
        edy, edx = _offset(m, e_i, self.step, "e")
        m.d.comb += [
            self.state_rd.addr.eq(self.block_index),
            self.state_wr.addr.eq(self.block_index),
            self.state_wr.data.eq(Cat(best, best_dy, best_dx)),
            self.state_wr.en.eq(self.store),
        ]
        dy8 = Signal(signed(8))
        dx8 = Signal(signed(8))
        m.d.comb += [
            dy8.eq(best_dy),
            dx8.eq(best_dx),
            self.record.eq(Cat(dy8, dx8, Const(0, 16), best)),
        ]
        with m.If(self.load):
            with m.If(self.first_step):
                m.d.sync += [self.cy.eq(0), self.cx.eq(0), best.eq(0), best_dy.eq(0), best_dx.eq(0)]
            with m.Else():
                st = self.state_rd.data
                m.d.sync += [
                    best.eq(st[:32]),
                    self.cy.eq(st[32:38]),
                    self.cx.eq(st[38:44]),
                    best_dy.eq(st[32:38]),
                    best_dx.eq(st[38:44]),
                ]
        with m.If(self.prime):
            m.d.sync += [ci.eq(self.first_cand), e_v.eq(0)]
        with m.If(self.run):
            m.d.sync += [e_v.eq(ci <= NCAND - 1), e_i.eq(ci), ci.eq(ci + 1)]
            with m.If(e_v):
                m.d.comb += [self.cost_wr.en.eq(~self.last_slice), self.done.eq(e_i == NCAND - 1)]
                with m.If(self.last_slice):
                    with m.If(e_i == 0):
                        m.d.sync += [best.eq(tot), best_dy.eq(self.cy + edy), best_dx.eq(self.cx + edx)]
                    with m.Elif(self.valid.bit_select(e_i, 1) & (tot < best)):
                        m.d.sync += [best.eq(tot), best_dy.eq(self.cy + edy), best_dx.eq(self.cx + edx)]
        return m


class BandMotion(wiring.Component):
    """The BAND_MOTION engine: the controller and its three components. The reference RAM
    and the partial-cost RAM are the motion estimator's (port signatures below), the state
    RAM is its own."""

    def __init__(self, params: Params = DEFAULT):
        self.params = params
        P = params
        ref_depth = P.ref_bytes // P.band_bytes
        super().__init__(
            {
                "cur": In(stream.Signature(unsigned(8 * P.lanes))),
                "rec": Out(stream.Signature(record_layout)),
                "start": In(1),
                "busy": Out(1),
                # the reference RAM (band_bytes wide, written one stream word at a time)
                "ref_wr": In(
                    memory.WritePort.Signature(
                        addr_width=(ref_depth - 1).bit_length(), shape=8 * P.band_bytes, granularity=8 * P.lanes
                    )
                ),
                "ref_rd": In(
                    memory.ReadPort.Signature(addr_width=(ref_depth - 1).bit_length(), shape=8 * P.band_bytes)
                ),
                # the partial-cost RAM (the block buffer, 8 * lanes bits wide)
                "cost_wr": In(
                    memory.WritePort.Signature(addr_width=(P.block_words - 1).bit_length(), shape=8 * P.lanes)
                ),
                "cost_rd": In(
                    memory.ReadPort.Signature(addr_width=(P.block_words - 1).bit_length(), shape=8 * P.lanes)
                ),
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
        R = P.band_words
        CB = P.band_bytes
        cshift = CB.bit_length() - 1
        ref_depth = P.ref_bytes // CB

        m.submodules.addr = addr = ChunkAddresses(P)
        m.submodules.sad = sad = SadPipeline(P)
        m.submodules.update = upd = StateUpdate(P)
        m.submodules.state = state = memory.Memory(shape=unsigned(STATE_BITS), depth=P.band_blocks, init=[])
        wiring.connect(m, state.read_port(transparent_for=()), upd.state_rd)
        wiring.connect(m, state.write_port(), upd.state_wr)
        wiring.connect(m, flipped(self.cost_rd), upd.cost_rd)
        wiring.connect(m, flipped(self.cost_wr), upd.cost_wr)
        wiring.connect(m, flipped(self.ref_rd), sad.ref)
        wiring.connect(m, flipped(self.cur), addr.cur)  # the band's words are taken in REF (below)
        wiring.connect(m, addr.o, sad.i)

        # ------------------------------------------------------------ per-operation constants
        cwb = Signal(12)  # chunks per pixel of a slice: Cs / band_bytes
        row_chunks = Signal(22)  # chunks per reference row of a slice: W * cwb
        gb = Signal(17)  # rows per group: G * B
        m.d.comb += cwb.eq(self.slice >> cshift)
        step = Signal(5)
        first_step = Signal()
        last_step = Signal()
        m.d.comb += last_step.eq(tss_next_step(step) == 0)

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
            bh.eq(block_extent(y0, self.block, self.height, Mux)),
            bw.eq(block_extent(x0, self.block, self.width, Mux)),
        ]
        bg = Signal(range(P.block_words))  # block within the group
        gbase = Signal(range(P.band_blocks + 1))  # blocks before the group
        bg9 = Signal(range(P.block_words + 16))

        # ------------------------------------------------------------ the block's candidates
        origin = Signal(data.ArrayLayout(signed(AW), NCAND))
        valid = Signal(NCAND)
        base = Signal(signed(AW))
        seg = Signal(19)  # chunks per block row: bw * cwb
        ci = Signal(4)  # candidate index of the set-up
        first_cand = Signal(4)
        m.d.comb += first_cand.eq(Mux(first_step, 0, 1))
        ody, odx = _offset(m, ci, step, "c")
        cdy = Signal(signed(7))
        cdx = Signal(signed(7))
        m.d.comb += [cdy.eq(upd.cy + ody), cdx.eq(upd.cx + odx)]
        cvalid = Signal()
        m.d.comb += cvalid.eq(is_valid(y0, x0, bh, bw, cdy, cdx, self.height, self.width))

        m.d.comb += [
            addr.rows.eq(bh),
            addr.seg.eq(seg),
            addr.row_chunks.eq(row_chunks),
            sad.origin.eq(origin),
            sad.valid.eq(valid),
            sad.first_cand.eq(first_cand),
            sad.n_bits.eq(self.n_bits),
            sad.z8.eq(self.z8),
            sad.zn_ref.eq(self.zn_ref),
            upd.acc.eq(sad.acc),
            upd.valid.eq(valid),
            upd.block_index.eq(gbase + bg),
            upd.cost_base.eq(bg9),
            upd.first_cand.eq(first_cand),
            upd.first_step.eq(first_step),
            upd.first_slice.eq(ch_off == 0),
            upd.last_slice.eq(last_slice),
            upd.step.eq(step),
            self.rec.p.data.eq(upd.record),
            self.rec.p.last.eq(last_block(y0, self.block, self.height) & last_block(x0, self.block, self.width)),
        ]

        ref_ptr = Signal(range(ref_depth + 1))
        ref_w = Signal(range(R))
        m.d.comb += [
            self.ref_wr.addr.eq(ref_ptr),
            self.ref_wr.data.eq(Cat(*([self.cur.payload] * R))),
        ]
        drain = Signal(3)
        mul_a = Signal(signed(AW))

        with m.FSM(name="band"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [step.eq(tss_first_step(self.search)), first_step.eq(1)]
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
                    m.d.comb += self.ref_wr.en.eq((Const(1, R) << ref_w)[:R] if R > 1 else 1)
                    m.d.sync += ref_w.eq(ref_w + 1)
                    with m.If(ref_w == R - 1):
                        m.d.sync += [ref_w.eq(0), ref_ptr.eq(ref_ptr + 1)]
                        with m.If(ref_ptr + 1 == ref_total):
                            m.next = "BSTART"
            with m.State("BSTART"):  # state read (address gbase + bg), block geometry
                m.d.comb += [self.busy.eq(1), sad.clear.eq(1), sad.restart.eq(1), addr.restart.eq(1)]
                m.d.sync += [seg.eq(bw * cwb), mul_a.eq((y0 - r0) * row_chunks), ci.eq(0)]
                m.next = "BSTATE"
            with m.State("BSTATE"):
                m.d.comb += [self.busy.eq(1), upd.load.eq(1)]
                m.d.sync += base.eq(mul_a + x0 * cwb)
                m.next = "BCAND"
            with m.State("BCAND"):  # candidate ci: its validity and first chunk's address
                m.d.comb += [self.busy.eq(1), addr.enable.eq(1)]
                with m.Switch(ci):
                    for i in range(NCAND):
                        with m.Case(i):
                            m.d.sync += [
                                origin[i].eq(
                                    base
                                    + cdy * Cat(row_chunks, Const(0, 1)).as_signed()
                                    + cdx * Cat(cwb, Const(0, 1)).as_signed()
                                ),
                                valid[i].eq(cvalid & ((ci != 0) | first_step)),
                            ]
                m.d.sync += ci.eq(ci + 1)
                with m.If(ci == NCAND - 1):
                    m.next = "CHUNKS"
            with m.State("CHUNKS"):
                m.d.comb += [self.busy.eq(1), addr.enable.eq(1), sad.scoring.eq(1)]
                with m.If(sad.done):
                    m.d.sync += drain.eq(DRAIN_CYCLES - 1)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [self.busy.eq(1), upd.prime.eq(1)]
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.next = "BEND"
            with m.State("BEND"):  # partial costs, the golden order's comparison (StateUpdate)
                m.d.comb += [self.busy.eq(1), upd.run.eq(1)]
                with m.If(upd.done):
                    with m.If(last_slice):
                        m.next = "BSTORE"
                    with m.Else():
                        m.next = "NEXT"
            with m.State("BSTORE"):
                m.d.comb += [self.busy.eq(1), upd.store.eq(1)]
                with m.If(last_step):
                    m.next = "EMIT"
                with m.Else():
                    m.next = "NEXT"
            with m.State("EMIT"):
                m.d.comb += [self.busy.eq(1), self.rec.valid.eq(1)]
                with m.If(self.rec.ready):
                    m.next = "NEXT"
            with m.State("NEXT"):  # the next block, slice, group, step
                m.d.comb += self.busy.eq(1)
                m.d.sync += [bg.eq(bg + 1), bg9.eq(bg9 + NCAND)]
                m.next = "BSTART"
                with m.If(last_block(x0, self.block, self.width)):
                    m.d.sync += [x0.eq(0), y0.eq(y0 + self.block)]
                    with m.If(last_block(y0, self.block, y_e)):  # the group's blocks are done
                        m.next = "SLICE"
                        m.d.sync += ch_off.eq(ch_off + self.slice)
                        with m.If(last_slice):
                            m.d.sync += [gbase.eq(gbase + bg + 1), y_g.eq(y_e)]
                            m.next = "GROUP"
                            with m.If(y_e >= self.height):
                                m.d.sync += [step.eq(tss_next_step(step)), first_step.eq(0)]
                                m.next = "STEP"
                                with m.If(last_step):
                                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += x0.eq(x0 + self.block)
        return m
