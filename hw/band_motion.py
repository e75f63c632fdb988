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
    last_block,
    tss_first_step,
    tss_next_step,
    valid_window,
    window_tests,
)
from temposplit.hw.register_slice import KEEP
from temposplit.hw.regmap import DEFAULT, Params

# Candidate 0 is the centre (scored in the first step only), 1..8 the neighbours in the
# golden order (multiples of the step).
CANDIDATES = ((0, 0), *TSS_ORDER)
NCAND = len(CANDIDATES)

# Cycles of the FSM's states (the cycle model, cyclemodel.band_cycles, counts with these).
INIT_CYCLES = 1  # INIT
STEP_CYCLES = 1  # STEP
GROUP_CYCLES = 5  # GROUP, GROUP2, GROUP3 (band rows), GROUP4 (band chunks), GROUP5 (registered)
SLICE_CYCLES = 1  # SLICE
BLOCK_HEAD_CYCLES = 4  # BSTART, BSTART2 (products), BSTATE, BSTATE2 (the state's read registered)
# BCAND: the candidates' addresses, one per cycle through a 4-stage pipeline (offsets,
# products and validity, their registers, sum); the first chunk arrives meanwhile
CAND_STAGES = 4
CAND_CYCLES = NCAND + CAND_STAGES - 1
CHUNKS_TAIL_CYCLES = 2  # CHUNKS: the first take, the cycle that sees the last issue
# SadPipeline's stages from a candidate's issue to its accumulator: the address register,
# its copies beside groups of the reference's banks and beside each bank (the motion
# estimator's, FAN_COPIES and REF_BANKS), the RAM's read, its output register, the centred
# reference (its offset, then its shift), |diff|, three adder levels (sums of 4, of 16, the
# total), the accumulator
SAD_STAGES = ("addr", "fan", "bank", "read", "ram", "centre", "shift", "absdiff", "sum4", "sum16", "total", "acc")
CONST_GROUP = 8  # lanes of the SAD per copy of the centring's constants
# DRAIN: what remains of them after CHUNKS sees the last issue, less what StateUpdate's
# first BEND cycle covers (it reads the first accumulator one cycle after BEND starts)
DRAIN_CYCLES = len(SAD_STAGES) - 2
# BEND: candidates + the partial cost's read address register (beside the block buffer, in
# the motion estimator), the read's output register, the first slice's zero, the sum, the
# compare/write
UPDATE_STAGES = 6
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
    block's height); ``seg`` (chunks per block row; already the block's at ``restart``)
    and ``row_chunks`` (chunks per band row) are stable for the block; words are taken
    while ``enable``.
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
        # kk + 1 == seg, a register set with kk (the increment and the compare were in
        # front of kk's and row_start's enables: r16 seed 1, 12.2 ns)
        kk_end = Signal()
        rows_left = Signal(7)
        accept = Signal()
        m.d.comb += [
            self.o.p.data.eq(Cat(*fill)),
            self.cur.ready.eq(self.enable & ~filled_all & (~self.o.valid | self.o.ready)),
            accept.eq(self.cur.valid & self.cur.ready),
        ]
        # (the word being filled follows the input while the chunk registers are not an
        # output that waits, so that its enable is registers -- the fill pointer, the
        # output's valid and the band engine's ready, itself a register -- not the input's
        # valid through ``accept``: r21 seed 2, those enables, 139 late inputs at 11.3 ns)
        for i in range(R):
            with m.If((fill_w == i) & (~self.o.valid | self.o.ready)):
                m.d.sync += fill[i].eq(self.cur.payload)
        # A chunk's last word sets the output (its offset, whether it is the block's last)
        # from registers; the counters move a cycle later (``upd``, a register: R >= 2
        # words come between two chunk ends), so that their enables are not the input's
        # valid through ``accept`` (r22 seed 1: `kk`, `row_start`, `rows_left`, 39 late
        # inputs at up to 11.7 ns). ``rows_one`` is rows_left == 1, set with it.
        rows_one = Signal()
        chunk_end = Signal()
        m.d.comb += chunk_end.eq(accept & (fill_w == R - 1))
        if R > 1:
            upd = Signal()
            m.d.sync += upd.eq(chunk_end & ~self.restart)
        else:
            upd = chunk_end
        with m.If(accept):
            m.d.sync += fill_w.eq(Mux(fill_w == R - 1, 0, fill_w + 1))
        with m.If(chunk_end):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.p.offset.eq(row_start + kk),
                self.o.p.last.eq(kk_end & rows_one),
                filled_all.eq(kk_end & rows_one),
            ]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(upd):
            with m.If(kk_end):
                m.d.sync += [
                    kk.eq(0),
                    kk_end.eq(self.seg == 1),
                    row_start.eq(row_start + self.row_chunks),
                    rows_left.eq(rows_left - 1),
                    rows_one.eq(rows_left == 2),
                ]
            with m.Else():
                m.d.sync += [kk.eq(kk + 1), kk_end.eq(kk + 2 == self.seg)]
        with m.If(self.restart):
            m.d.sync += [
                fill_w.eq(0),
                self.o.valid.eq(0),
                filled_all.eq(0),
                kk.eq(0),
                kk_end.eq(self.seg == 1),
                row_start.eq(0),
                rows_left.eq(self.rows),
                rows_one.eq(self.rows == 1),
            ]
        return m


class SadPipeline(wiring.Component):
    """Each chunk against the candidates of the step, one per cycle: the candidate's chunk
    read through the reference RAM's ``band_bytes``-wide port (``ref``; its data arrive
    registered, four cycles after the address: its copies beside groups of the RAM's banks
    and beside each bank, the read, the output register), the cost
    |((a - z_N) << k) - (c - z8)| of every byte, sums of 4, of 16, the total into the
    candidate's accumulator (SAD_STAGES from the issue). ``origin`` and ``valid`` hold the
    candidates' first-chunk addresses and validity; candidates from ``first_cand`` to 8 are
    issued; a chunk is taken while ``scoring``; ``done`` rises when the block's last chunk
    is issued (cleared by ``restart``); ``clear`` zeroes the accumulators (a cycle later).
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
        # the centring's constants: copies of the configuration registered beside the lanes
        # (it is written before START and holds through the operation), so that the
        # register file's fields do not fan out across the die into every lane (the top's
        # path on the ECP5 proxy, r13 seed 2: ZN_REF into a lane's centred reference, 10.9 ns
        # of routing). A copy per CONST_GROUP lanes, kept apart (``KEEP``): Yosys merged
        # one copy with the motion estimator's twin, one register for every lane of both
        # (r16 seed 1: `k` into a lane's centred reference, 13.5 ns of routing).
        # The copies have no reset and take k from a register of its own, so each is a
        # flip-flop fed by a register, with no logic of its own in front: with a reset (or
        # k's subtraction) in front, Yosys shared the one LUT among the copies and the
        # motion estimator's, which put every copy behind one placed cell (r21 seed 1:
        # `c_zn` into the copies, 14.7 ns).
        groups = -(-CB // CONST_GROUP)
        k_src = Signal(3, name="c_k_src", attrs=KEEP, reset_less=True)
        m.d.sync += k_src.eq(8 - self.n_bits)
        ks = [Signal(3, name=f"c_k{g}", attrs=KEEP, reset_less=True) for g in range(groups)]
        z8s = [Signal.like(self.z8, name=f"c_z8_{g}", attrs=KEEP, reset_less=True) for g in range(groups)]
        zns = [Signal.like(self.zn_ref, name=f"c_zn{g}", attrs=KEEP, reset_less=True) for g in range(groups)]
        for g in range(groups):
            m.d.sync += [ks[g].eq(k_src), z8s[g].eq(self.z8), zns[g].eq(self.zn_ref)]
        hold = Signal(data.ArrayLayout(signed(10), CB))  # the chunk's bytes, centred (c - z8)
        hold_off = Signal(AW)
        hold_last = Signal()
        sc_busy = Signal()
        sc_i = Signal(4)
        take = Signal()
        # free: a chunk may be taken (none held, or the held one's last candidate is issued
        # now and it is not the block's last), a register computed a cycle ahead from the
        # same updates as sc_busy, sc_i and hold_last below, so that the input's ready is a
        # register and an AND (the ready chain back through the address generator into the
        # stream starts there, not at sc_i's compare)
        free = Signal(init=1)
        m.d.comb += [
            self.i.ready.eq(self.scoring & free),
            take.eq(self.i.valid & self.i.ready),
        ]
        # (and a copy of it per CONST_GROUP lanes, kept apart: the held chunk's bytes of the
        # group follow the input while it is free -- the held chunk is then unused or read
        # for the last time -- so that their enable is a register beside them, not one
        # LUT's ``take`` fanned out into 320 registers: r24 seed 1, 45 late inputs at up
        # to 11.2 ns)
        frees = [free] + [Signal(init=1, name=f"free{g}", attrs=KEEP) for g in range(1, groups)]
        with m.If(take):
            m.d.sync += [f.eq((self.first_cand == NCAND - 1) & ~self.i.p.last) for f in frees]
        with m.Else():
            m.d.sync += [f.eq(~sc_busy | (sc_i == NCAND - 1) | ((sc_i == NCAND - 2) & ~hold_last)) for f in frees]

        # stage "addr": one candidate per cycle, its read address into a register; the
        # chunk travels down the pipeline with it
        cur_layout = data.ArrayLayout(signed(10), CB)
        n = len(SAD_STAGES)
        pv = [Signal(name=f"sad_v{j}") for j in range(n)]  # pv[j]: stage j's register holds a candidate
        pi = [Signal(4, name=f"sad_i{j}") for j in range(n)]
        ncur = SAD_STAGES.index("absdiff")  # the chunk travels with its candidate up to |diff|
        pcur = [Signal(cur_layout, name=f"sad_cur{j}") for j in range(ncur)]
        raddr = Signal(len(self.ref.addr))
        m.d.comb += self.ref.addr.eq(raddr)
        # (the candidate's index, chunk and read address load every cycle, meaningful only
        # with pv[0]: an enable on them, sc_busy, was the top's largest group of late inputs
        # on the ECP5 proxy, r16 seed 1: 212 at 14.0 ns)
        m.d.sync += [
            pv[0].eq(sc_busy & self.valid.bit_select(sc_i, 1)),
            pi[0].eq(sc_i),
            pcur[0].eq(hold),
            raddr.eq((self.origin[sc_i] + hold_off)[: len(raddr)]),
        ]
        with m.If(sc_busy):
            m.d.sync += sc_i.eq(sc_i + 1)
            with m.If(sc_i == NCAND - 1):
                with m.If(hold_last):
                    m.d.sync += [sc_busy.eq(0), self.done.eq(1)]
                with m.Elif(~take):
                    m.d.sync += sc_busy.eq(0)
        for j in range(CB):
            with m.If(frees[j // CONST_GROUP]):
                m.d.sync += hold[j].eq(centred_cur(self.i.p.data.word_select(j, 8), z8s[j // CONST_GROUP]))
        with m.If(take):
            m.d.sync += [
                hold_off.eq(self.i.p.offset),
                hold_last.eq(self.i.p.last),
                sc_busy.eq(1),
                sc_i.eq(self.first_cand),
            ]
        with m.If(self.restart):
            m.d.sync += self.done.eq(0)
        for j in range(1, n):
            m.d.sync += [pv[j].eq(pv[j - 1]), pi[j].eq(pi[j - 1])]
        for j in range(1, len(pcur)):
            m.d.sync += pcur[j].eq(pcur[j - 1])

        # stages "fan" and "bank": the address's copies beside groups of the reference's banks
        # and beside each bank; "read": the RAM reads; "ram": its output registered (by the
        # motion estimator, which shares the register with MOTION: ``ref``'s data come four
        # cycles after the address); "centre" and "shift": the reference centred; "absdiff":
        # the cost of each byte; then sums of 4, of 16, the total
        rdat = self.ref.data  # registered by the RAM's owner (stage "ram")
        diffs = [Signal(11, name=f"bdiff{j}") for j in range(CB)]
        for j in range(CB):
            # centred_ref in two stages, "centre" (the offset) and "shift": in one, the
            # subtraction and the variable shift behind the RAM's output register were r28's
            # `bref`, 10.4 ns
            dc = Signal(signed(9), name=f"bcen{j}")
            ac = Signal(signed(12), name=f"bref{j}")
            g = j // CONST_GROUP
            m.d.sync += dc.eq(centred_ref(rdat.word_select(j, 8), zns[g], 0))
            m.d.sync += ac.eq(dc << ks[g])
            m.d.sync += diffs[j].eq(element_cost(ac, pcur[-1][j]))
        sum4 = [Signal(13, name=f"bsum4_{g}") for g in range(-(-CB // 4))]
        for g, sg in enumerate(sum4):
            m.d.sync += sg.eq(sum(diffs[4 * g : 4 * g + 4]))
        sum16 = [Signal(15, name=f"bsum16_{g}") for g in range(-(-len(sum4) // 4))]
        for g, sg in enumerate(sum16):
            m.d.sync += sg.eq(sum(sum4[4 * g : 4 * g + 4]))
        total = Signal(15 + len(sum16).bit_length())
        m.d.sync += total.eq(sum(sum16))
        # the accumulators' enables from registers: the candidate's one-hot ``hit`` decoded
        # a stage ahead (it equals pv[n - 2] & pi[n - 2] == i) and ``clear`` a cycle late
        # (BSTART clears; no chunk is in flight until CHUNKS): the decode and the
        # controller's state were the accumulators' enables (r18 seed 1: 95 late inputs)
        hit = Signal(NCAND)
        clear_r = Signal()
        m.d.sync += [hit.eq(Cat(*(pv[n - 3] & (pi[n - 3] == i) for i in range(NCAND)))), clear_r.eq(self.clear)]
        for i in range(NCAND):
            with m.If(clear_r):
                m.d.sync += self.acc[i].eq(0)
            with m.Elif(hit[i]):
                m.d.sync += self.acc[i].eq(self.acc[i] + total)
        return m


class StateUpdate(wiring.Component):
    """A block's search state across slices and steps.

    ``load`` (BSTATE2): the block's centre and best cost from the state RAM (``state_rd``,
    addressed by ``block_index`` two cycles before, its data registered), or (0, 0) and 0
    in the first step.
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
        # UPDATE_STAGES: candidate ci's partial cost's address out and its accumulator taken
        # (s), the address in the block buffer's read register (q, the motion estimator's),
        # the RAM's output registered as it is (r: nothing between the block RAM and a
        # register), the first slice's zero chosen (t), the sum (u: the partial cost's write,
        # and the sum compared with the best and with the candidate before it), then the
        # best chosen (v). The running minimum's loop holds no comparison: a candidate at v
        # is lower than the best it meets there iff it was lower at u than the best then
        # (``c_best``) when the one before it did not win, else lower than that one
        # (``c_prev``), and ``won`` says which (r22 seed 1 on the ECP5 proxy: the
        # comparison and the candidate's vector in front of the best's 44 registers, 15 late
        # inputs at 11.3 ns)
        ci = Signal(4)  # the candidate whose partial cost is read
        s_v, q_v, r_v, t_v, u_v = Signal(), Signal(), Signal(), Signal(), Signal()
        s_i, q_i, r_i, t_i, u_i = Signal(4), Signal(4), Signal(4), Signal(4), Signal(4)
        s_acc, q_acc, r_acc, t_acc = Signal(32), Signal(32), Signal(32), Signal(32)
        r_cost = Signal(32)
        t_cost = Signal(32)
        tot = Signal(32)
        m.d.comb += [
            self.cost_rd.addr.eq(self.cost_base + ci),
            self.cost_wr.addr.eq(self.cost_base + u_i),
            self.cost_wr.data.eq(tot),
        ]
        # the candidate's vector, its validity and whether it is the centre, registered with
        # stage u from t_i (in front of the best's enable, they were with the comparison:
        # r21 seed 1 on the ECP5 proxy, the state's write data, 37 late inputs at 12.2 ns)
        edy, edx = _offset(m, t_i, self.step, "e")
        u_dy = Signal(signed(6))
        u_dx = Signal(signed(6))
        u_ok = Signal()  # a valid candidate
        u_centre = Signal()
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
        # (the state RAM's read into a register first, a cycle before ``load`` takes it:
        # nothing between the block RAM and a register, as everywhere; r24 seed 2, the RAM
        # through the best's select, 34 late inputs at 11.9 ns)
        st = Signal.like(self.state_rd.data)
        m.d.sync += st.eq(self.state_rd.data)
        with m.If(self.load):
            with m.If(self.first_step):
                m.d.sync += [self.cy.eq(0), self.cx.eq(0), best.eq(0), best_dy.eq(0), best_dx.eq(0)]
            with m.Else():
                m.d.sync += [
                    best.eq(st[:32]),
                    self.cy.eq(st[32:38]),
                    self.cx.eq(st[38:44]),
                    best_dy.eq(st[32:38]),
                    best_dx.eq(st[38:44]),
                ]
        v_v, v_i, v_tot = Signal(name="v_v"), Signal(4, name="v_i"), Signal(32, name="v_tot")
        v_dy, v_dx = Signal(signed(6), name="v_dy"), Signal(signed(6), name="v_dx")
        v_ok, v_centre = Signal(name="v_ok"), Signal(name="v_centre")
        c_best = Signal()  # the candidate at v was lower than the best when it was at u
        c_prev = Signal()  # ... lower than the candidate before it
        won = Signal()  # the candidate before the one at v took the best
        win = Signal()
        m.d.comb += win.eq(v_v & self.last_slice & (v_centre | (v_ok & Mux(won, c_prev, c_best))))
        with m.If(self.prime):
            m.d.sync += [
                ci.eq(self.first_cand),
                s_v.eq(0),
                q_v.eq(0),
                r_v.eq(0),
                t_v.eq(0),
                u_v.eq(0),
                v_v.eq(0),
                won.eq(0),
            ]
        with m.If(self.run):
            m.d.sync += [
                s_v.eq(ci <= NCAND - 1),
                s_i.eq(ci),
                s_acc.eq(self.acc[ci]),
                ci.eq(ci + 1),
                q_v.eq(s_v),
                q_i.eq(s_i),
                q_acc.eq(s_acc),
                r_v.eq(q_v),
                r_i.eq(q_i),
                r_acc.eq(q_acc),
                r_cost.eq(self.cost_rd.data[:32]),
                t_v.eq(r_v),
                t_i.eq(r_i),
                t_acc.eq(r_acc),
                t_cost.eq(Mux(self.first_slice, 0, r_cost)),
                u_v.eq(t_v),
                u_i.eq(t_i),
                u_dy.eq(self.cy + edy),
                u_dx.eq(self.cx + edx),
                u_ok.eq(self.valid.bit_select(t_i, 1)),
                u_centre.eq(t_i == 0),
                tot.eq(t_cost + t_acc),
                v_v.eq(u_v),
                v_i.eq(u_i),
                v_tot.eq(tot),
                v_dy.eq(u_dy),
                v_dx.eq(u_dx),
                v_ok.eq(u_ok),
                v_centre.eq(u_centre),
                c_best.eq(_less(tot, best)),
                c_prev.eq(_less(tot, v_tot)),
                won.eq(win),
            ]
            with m.If(u_v):
                m.d.comb += self.cost_wr.en.eq(~self.last_slice)
            with m.If(v_v):
                m.d.comb += self.done.eq(v_i == NCAND - 1)
            with m.If(win):
                m.d.sync += [best.eq(v_tot), best_dy.eq(v_dy), best_dx.eq(v_dx)]
        return m


def _less(a, b):
    """``a < b`` (unsigned, equal widths) as two half-width comparisons and an equality:
    two carry chains side by side instead of one as long as both (r37 seed 1 on the ECP5
    proxy: the 32-bit ``tot < best`` into ``c_best``, 10.5 ns)."""
    h = len(a) // 2
    return (a[h:] < b[h:]) | ((a[h:] == b[h:]) & (a[:h] < b[:h]))


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
        # W * cwb and G * B from the configuration, free-running with registered operands
        # (the configuration holds from before START: INIT takes them), so that neither
        # product has a register's fan-out and a multiplier in one cycle (r21 seed 2:
        # `row_chunks`, 16 late inputs at 10.7 ns)
        cfg_w = Signal.like(self.width, reset_less=True)
        cfg_cwb = Signal.like(cwb, reset_less=True)
        cfg_g = Signal.like(self.group, reset_less=True)
        cfg_b = Signal.like(self.block, reset_less=True)
        cfg_rc = Signal.like(row_chunks, reset_less=True)
        cfg_gb = Signal.like(gb, reset_less=True)
        m.d.sync += [
            cfg_w.eq(self.width),
            cfg_cwb.eq(cwb),
            cfg_g.eq(self.group),
            cfg_b.eq(self.block),
            cfg_rc.eq(cfg_w * cfg_cwb),
            cfg_gb.eq(cfg_g * cfg_b),
        ]
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
        last_slice = Signal()  # registered in SLICE (ch_off changes before it)
        last_group = Signal()  # registered in GROUP2
        first_slice = Signal()
        x_last = Signal()  # the block is the last of its row (registered in BSTART)
        y_last = Signal()  # ... of its group's column
        ref_total = Signal(range(ref_depth + 1))
        ref_prod = Signal.like(ref_total)  # nrows * row_chunks, registered before ref_total
        y0 = Signal(11)
        x0 = Signal(11)
        bh = Signal(7)  # the block's extent (registered in BSTART)
        bw = Signal(7)
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
        # the set-up's pipeline (CAND_STAGES): candidate ci's vector (q), its row and column
        # products and validity (p), the same registered again (r), its first chunk's address
        # and validity into origin, valid
        ody, odx = _offset(m, ci, step, "c")
        q_v, p_v, r_v = Signal(name="q_v"), Signal(name="p_v"), Signal(name="r_v")
        q_i, p_i, r_i = Signal(4, name="q_i"), Signal(4, name="p_i"), Signal(4, name="r_i")
        q_dy, q_dx = Signal(signed(7), name="q_dy"), Signal(signed(7), name="q_dx")
        p_my, p_mx = Signal(signed(AW), name="p_my"), Signal(signed(AW), name="p_mx")
        r_my, r_mx = Signal(signed(AW), name="r_my"), Signal(signed(AW), name="r_mx")
        p_ok = Signal(5, name="p_ok")  # the window's four tests and the candidate's own, apart
        r_ok = Signal(name="r_ok")
        # the block's window of valid vectors, registers set in BSTART2: a candidate's
        # validity is then four compares of its vector with them (with the block's origin,
        # extent and the map's size added up in front of the compares it was r27 seed 2's
        # path, 11.7 ns)
        window = [Signal(signed(13), name=f"win_{n}") for n in ("dy_lo", "dy_hi", "dx_lo", "dx_hi")]
        m.d.sync += [
            q_v.eq(0),
            q_i.eq(ci),
            q_dy.eq(upd.cy + ody),
            q_dx.eq(upd.cx + odx),
            # (the products into registers, then a register beside the sum: a product's
            # DSP into the sum's register was r30's path, 11.8 ns)
            p_v.eq(q_v),
            p_i.eq(q_i),
            p_my.eq(q_dy * Cat(row_chunks, Const(0, 1)).as_signed()),
            p_mx.eq(q_dx * Cat(cwb, Const(0, 1)).as_signed()),
            # (their AND a stage later: the compares and the AND were r34 seed 2's `p_ok`,
            # 9.9 ns)
            p_ok.eq(Cat(*window_tests(q_dy, q_dx, window), (q_i != 0) | first_step)),
            r_v.eq(p_v),
            r_i.eq(p_i),
            r_my.eq(p_my),
            r_mx.eq(p_mx),
            r_ok.eq(p_ok.all()),
        ]
        with m.If(r_v):
            with m.Switch(r_i):
                for i in range(NCAND):
                    with m.Case(i):
                        m.d.sync += [origin[i].eq(base + r_my + r_mx), valid[i].eq(r_ok)]

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
            upd.first_slice.eq(first_slice),
            upd.last_slice.eq(last_slice),
            upd.step.eq(step),
            self.rec.p.data.eq(upd.record),
            self.rec.p.last.eq(x_last & y_last & last_group),  # the map's last block
        ]

        ref_ptr = Signal(range(ref_depth + 1))
        ref_w = Signal(range(R))
        m.d.comb += [
            self.ref_wr.addr.eq(ref_ptr),
            self.ref_wr.data.eq(Cat(*([self.cur.payload] * R))),
        ]
        # ref_ptr + 1 == ref_total, a register set with ref_ptr (the add and the compare
        # were in front of the state's enable)
        ref_end = Signal()
        drain = Signal(range(DRAIN_CYCLES))
        mul_a = Signal(signed(AW))
        dyr = Signal(11)  # y0 - r0: the block's first row in the band
        x0c = Signal(AW)  # x0 * cwb
        nrows = Signal(11)  # rows of the band

        # the address generator's enable (BCAND, CHUNKS) and the SAD's ``scoring`` (CHUNKS) as
        # registers set and cleared beside the state's own moves (below), equal to the
        # state's decode cycle for cycle: decoded from the state they were in front of the
        # address generator's take and the chunk's registers' enables (r28, 28 late inputs
        # at up to 10.8 ns)
        in_cand = Signal()
        in_chunks = Signal()
        m.d.comb += [addr.enable.eq(in_cand), sad.scoring.eq(in_chunks)]
        # (and so the update's strobes: BSTATE2's load, DRAIN's prime, BEND's run, BSTORE's
        # store; r28, the state's write data behind the state's decode, 10.3 ns)
        in_load, in_drain, in_bend, in_store = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [upd.load.eq(in_load), upd.prime.eq(in_drain), upd.run.eq(in_bend), upd.store.eq(in_store)]
        # (and REF's input ready: in_ref, over the address generator's; r31, the state's
        # decode into the input slice's pointers, 10.2 ns)
        in_ref = Signal()
        with m.If(in_ref):
            m.d.comb += self.cur.ready.eq(1)
        # REF's last word is taken: in_ref (REF itself), the input's valid, ref_w at its
        # last word (``ref_w_last``, a register set with ref_w) and ref_end, so that in_ref's
        # clear is not behind the state's decode and ref_w's compare (r33 seed 1, 11.2 ns)
        ref_w_last = Signal()
        ref_done = Signal()
        m.d.comb += ref_done.eq(in_ref & self.cur.valid & ref_w_last & ref_end)
        # NEXT's conditions as registers set in BSTART2 (x_last, y_last, last_slice and
        # last_group hold from then to NEXT): the block ends its group's row, its group's
        # blocks, the slice's, the group's (r31, NEXT's `gbase` enable, 10.3 ns)
        e_y, e_s, e_g = Signal(name="end_rows"), Signal(name="end_slice"), Signal(name="end_group")
        with m.FSM(name="band"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [step.eq(tss_first_step(self.search)), first_step.eq(1)]
                    m.next = "INIT"
            with m.State("INIT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [row_chunks.eq(cfg_rc), gb.eq(cfg_gb)]
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
                m.d.sync += [
                    r1.eq(Mux(y_e + self.search > self.height, self.height, y_e + self.search)),
                    last_group.eq(y_e >= self.height),
                ]
                m.next = "GROUP3"
            with m.State("GROUP3"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += nrows.eq(r1 - r0)
                m.next = "GROUP4"
            with m.State("GROUP4"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += ref_prod.eq(nrows * row_chunks)
                m.next = "GROUP5"
            with m.State("GROUP5"):  # (the product a register first: r28, the DSP into `ref_total`, 10.9 ns)
                m.d.comb += self.busy.eq(1)
                m.d.sync += ref_total.eq(ref_prod)
                m.next = "SLICE"
            with m.State("SLICE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [ref_ptr.eq(0), ref_w.eq(0), y0.eq(y_g), x0.eq(0), bg.eq(0), bg9.eq(0)]
                m.d.sync += [ref_end.eq(ref_total == 1), ref_w_last.eq(R == 1)]
                m.d.sync += [last_slice.eq(ch_off + self.slice >= self.channels), first_slice.eq(ch_off == 0)]
                m.d.sync += in_ref.eq(1)
                m.next = "REF"
            with m.State("REF"):  # the band of the reference, this slice's channels
                m.d.comb += self.busy.eq(1)
                with m.If(self.cur.valid):
                    m.d.comb += self.ref_wr.en.eq((Const(1, R) << ref_w)[:R] if R > 1 else 1)
                    m.d.sync += [ref_w.eq(ref_w + 1), ref_w_last.eq(ref_w == R - 2)]
                    with m.If(ref_w_last):
                        m.d.sync += [
                            ref_w.eq(0),
                            ref_w_last.eq(R == 1),
                            ref_ptr.eq(ref_ptr + 1),
                            ref_end.eq(ref_ptr + 2 == ref_total),
                        ]
                with m.If(ref_done):
                    m.d.sync += in_ref.eq(0)
                    m.next = "BSTART"
            with m.State("BSTART"):  # state read (address gbase + bg), block geometry
                m.d.comb += [self.busy.eq(1), sad.clear.eq(1), sad.restart.eq(1)]
                m.d.sync += [
                    bh.eq(block_extent(y0, self.block, self.height, Mux)),
                    bw.eq(block_extent(x0, self.block, self.width, Mux)),
                    dyr.eq(y0 - r0),
                    x_last.eq(last_block(x0, self.block, self.width)),
                    y_last.eq(last_block(y0, self.block, y_e)),
                    x0c.eq(x0 * cwb),
                    ci.eq(0),
                ]
                m.next = "BSTART2"
            with m.State("BSTART2"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [seg.eq(bw * cwb), mul_a.eq(dyr * row_chunks)]
                m.d.sync += [
                    e_y.eq(x_last & y_last),
                    e_s.eq(x_last & y_last & last_slice),
                    e_g.eq(x_last & y_last & last_slice & last_group),
                ]
                wide = [Cat(v, Const(0, 1)).as_signed() for v in (y0, x0, bh, bw, self.height, self.width)]
                m.d.sync += [w.eq(v) for w, v in zip(window, valid_window(*wide), strict=True)]
                m.next = "BSTATE"
            with m.State("BSTATE"):  # (the address generator takes the block's height and seg)
                m.d.comb += [self.busy.eq(1), addr.restart.eq(1)]
                m.d.sync += [base.eq(mul_a + x0c), in_load.eq(1)]
                m.next = "BSTATE2"
            with m.State("BSTATE2"):  # the state's read, registered, into the update's state
                m.d.comb += self.busy.eq(1)
                m.d.sync += [in_load.eq(0), in_cand.eq(1)]
                m.next = "BCAND"
            with m.State("BCAND"):  # candidate ci into the set-up's pipeline (above)
                m.d.comb += self.busy.eq(1)
                m.d.sync += [q_v.eq(ci <= NCAND - 1), ci.eq(ci + 1)]
                with m.If(ci == CAND_CYCLES - 1):
                    m.d.sync += in_chunks.eq(1)
                    m.next = "CHUNKS"
            with m.State("CHUNKS"):
                m.d.comb += self.busy.eq(1)
                with m.If(sad.done):
                    m.d.sync += [drain.eq(DRAIN_CYCLES - 1), in_cand.eq(0), in_chunks.eq(0), in_drain.eq(1)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.d.sync += [in_drain.eq(0), in_bend.eq(1)]
                    m.next = "BEND"
            with m.State("BEND"):  # partial costs, the golden order's comparison (StateUpdate)
                m.d.comb += self.busy.eq(1)
                with m.If(upd.done):
                    m.d.sync += in_bend.eq(0)
                    with m.If(last_slice):
                        m.d.sync += in_store.eq(1)
                        m.next = "BSTORE"
                    with m.Else():
                        m.next = "NEXT"
            with m.State("BSTORE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += in_store.eq(0)
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
                with m.If(x_last):
                    m.d.sync += [x0.eq(0), y0.eq(y0 + self.block)]
                with m.Else():
                    m.d.sync += x0.eq(x0 + self.block)
                with m.If(e_y):  # the group's blocks are done
                    m.next = "SLICE"
                    m.d.sync += ch_off.eq(ch_off + self.slice)
                    with m.If(e_s):
                        m.d.sync += [gbase.eq(gbase + bg + 1), y_g.eq(y_e)]
                        m.next = "GROUP"
                        with m.If(e_g):
                            m.d.sync += [step.eq(tss_next_step(step)), first_step.eq(0)]
                            m.next = "STEP"
                            with m.If(last_step):
                                m.next = "IDLE"
        return m
