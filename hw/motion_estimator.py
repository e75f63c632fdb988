"""Three-Step-Search motion estimator, one vector per block shared by all channels.

The golden model is :func:`temposplit.codec.motion.three_step_search` (``per_channel``
off), and the gateware is generated from its definitions (the order of the neighbours,
the steps, the tiling, the validity rule and the element cost are imported from
:mod:`temposplit.codec.motion`): for each B x B block (truncated at the map's edges) the centre (0, 0), then for
each step s = (p+1)/2 .. 1 the 8 neighbours of the step's centre in the fixed order,
skipping candidates whose displaced block leaves the map, a candidate replacing the
best only when its cost is strictly lower. The cost of a candidate sums, over the
block's pixels and all channels, |((a_N - z_N) << k) - (c8 - z8)|.

Buffering (see docs/fabric.md): the reference (the anchor's N-bit codes, one byte
each, channel-last raster, ``lanes`` bytes per word) lives whole in on-chip RAM,
written while the anchor is coded (or by LOAD_REF) and kept for all the predicted
frames of its group; the current frame arrives in block order and one block
(B * B * C bytes at most ``block_bytes``) is buffered while its candidates are scored.
C must be a multiple of ``lanes`` so every block row starts on a word. The reference RAM
is ``band_bytes`` wide (MOTION reads one ``lanes``-byte word of a RAM word per cycle):
it is shared with :class:`~temposplit.hw.band_motion.BandMotion` (BAND_MOTION, maps
over ``ref_bytes``), which also uses the block buffer for its partial costs.

Throughput: ``lanes`` bytes of SAD per cycle; a candidate costs bh * bw * C / lanes
cycles plus the set-up, drain and compare states below; a block's load costs its words.
:mod:`temposplit.hw.cyclemodel` counts exactly this, with the constants of this module.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

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
from temposplit.hw.band_motion import KEEP, BandMotion, record_layout
from temposplit.hw.regmap import DEFAULT, Params

# Cycles of the FSM's states around one candidate (the cycle model counts with these).
BLOCK_CYCLES = 2  # BLOCK, BLOCK2: the block's extent, then its words per row
SETUP_CYCLES = 2  # SETUP (row and column products), SETUP2 (the candidate's first word)
# DRAIN: from the last word's read to the accumulator, one register per stage of the SAD
# pipeline (SAD_STAGES): the read address's FAN_COPIES copies, each beside a group of the
# reference's banks, its copy beside each bank, the RAMs' outputs, the stream word's lanes
# picked from the reference's RAM word (a 4:1 select of the shared 256-bit register: before
# the centring's subtract and shift it was the engine's path on the ECP5 proxy, 83.5 MHz),
# the centred codes (the offset, then the shift), |diff|, two adder levels, the sum of 8,
# the accumulator.
SAD_STAGES = ("fan", "bank", "ram", "word", "centre", "shift", "absdiff", "pairs", "sum", "acc")
# The reference RAM is REF_BANKS column banks, each with its own copy of the read address and
# of the write (address, enables, data) in registers that synthesis keeps apart (``keep``;
# hw/synth.py): one register driving all of the reference's block RAMs spans the die (on the
# ECP5 proxy 11-16 ns of routing alone); a copy per bank is placed beside its RAMs.
REF_BANKS = 32
# ... and the read address and the write reach the banks' registers through FAN_COPIES
# registered copies (stage "fan"), each driving REF_BANKS / FAN_COPIES banks: from the
# MOTION/BAND_MOTION select to all 32 banks in one cycle they were the top's path on the ECP5
# proxy (the read address 10.2 ns of routing from the select to one bank's register, the
# write address 13.4 ns; static placer, seed 1).
FAN_COPIES = 4
# The block buffer (block_words x 8 lanes bytes) likewise: BLK_BANKS column banks, each with
# its own copy of the read address and of the write (one address register for all of its
# block RAMs was the top's path on the ECP5 proxy, 14.6 ns of routing alone).
BLK_BANKS = 4
DRAIN_CYCLES = len(SAD_STAGES)
COMPARE_CYCLES = 3  # COMPARE, COMPARE2, NEXT
PICK_CYCLES = 2  # PICK: the next neighbour's vector; PICK2: its block origin
INVALID_CYCLES = PICK_CYCLES + 1 + 1  # PICK, PICK2, SETUP (invalid: no scan), NEXT
EMIT_CYCLES = 1  # EMIT: the record (without back-pressure)


class MotionEstimator(wiring.Component):
    """TSS over an on-chip reference; the current frame streams in block order.

    Attributes
    ----------
    cur : In(stream of ``8 * lanes`` bits)
        The current frame's quint8 codes, block order (from the originator).
    rec : Out(stream of ``record_layout``)
        One 64-bit record per block: dy (byte 0), dx (byte 1), cost (bytes 4..7).
    ref_we, ref_addr, ref_data : In
        Write port of the reference RAM (word i holds elements lanes*i .. lanes*i + lanes-1).
    start : In(1)
        Pulse: search a frame with the configuration below (stable while ``busy``).
    """

    def __init__(self, params: Params = DEFAULT):
        self.params = params
        L = params.lanes
        super().__init__(
            {
                "cur": In(stream.Signature(unsigned(8 * L))),
                "rec": Out(stream.Signature(record_layout)),
                "ref_we": In(1),
                "ref_addr": In(range(params.ref_words)),
                "ref_data": In(8 * L),
                "start": In(1),
                "busy": Out(1),
                "band": In(1),  # BAND_MOTION: the band engine owns the streams and the RAMs
                "band_start": In(1),
                "band_slice": In(12),
                "band_group": In(10),
                "width": In(10),
                "height": In(10),
                "channels": In(12),
                "block": In(7),
                "search": In(4),
                "n_bits": In(4),
                "z8": In(8),
                "zn_ref": In(9),
            }
        )

    def elaborate(self, platform):
        m = Module()
        P = self.params
        L = P.lanes
        shift = L.bit_length() - 1

        # The reference RAM is band_bytes wide (R stream words per RAM word, written one word
        # at a time): BAND_MOTION reads a whole chunk per cycle, MOTION one word of it. It is
        # REF_BANKS column banks in FAN_COPIES groups; the read address reaches each bank
        # through its group's register (stage "fan") and then its own (stage "bank"), the
        # write (address, enables, data) likewise after one register of the selected write
        # (``ref_w_q``: the input slice's word and the engines' select are not in front of
        # the groups' copies across the die; r33 seed 1, `reffan*_wdata`, 10.9 ns), so it
        # reaches the RAMs three cycles late, a cycle after a read issued with it: nothing
        # reads a word within three cycles of its write (BAND_MOTION reads its band from
        # CHUNKS on, MOTION and the reference tap's writes are other operations).
        R = P.band_words
        rshift = R.bit_length() - 1
        depth = P.ref_bytes // P.band_bytes
        width = 8 * P.band_bytes
        unit = 8 * L  # the write's granularity: one stream word
        nbanks = min(REF_BANKS, width)
        bank_bits = width // nbanks
        ref_rd = wiring.Signature({"addr": Out((depth - 1).bit_length()), "data": Out(width)}).create(path=("ref_rd",))
        ref_wr = wiring.Signature({"en": Out(R), "addr": Out(len(ref_rd.addr)), "data": Out(width)}).create(
            path=("ref_wr",)
        )
        ref_w_q = wiring.Signature({"en": Out(R), "addr": Out(len(ref_rd.addr)), "data": Out(width)}).create(
            path=("ref_w_q",)
        )
        m.d.sync += [ref_w_q.en.eq(ref_wr.en), ref_w_q.addr.eq(ref_wr.addr), ref_w_q.data.eq(ref_wr.data)]
        bank_data = []
        groups = min(FAN_COPIES, nbanks)
        assert nbanks % groups == 0
        group_bits = width // groups
        fan = []  # each group's (read address, write address, write data, write enables)
        for g in range(groups):
            copy = (
                Signal(len(ref_rd.addr), name=f"reffan{g}_raddr", attrs=KEEP, reset_less=True),
                Signal(len(ref_wr.addr), name=f"reffan{g}_waddr", attrs=KEEP, reset_less=True),
                Signal(group_bits, name=f"reffan{g}_wdata", attrs=KEEP, reset_less=True),
                Signal(R, name=f"reffan{g}_wen", attrs=KEEP),
            )
            m.d.sync += [
                copy[0].eq(ref_rd.addr),
                copy[1].eq(ref_w_q.addr),
                copy[2].eq(ref_w_q.data[g * group_bits : (g + 1) * group_bits]),
                copy[3].eq(ref_w_q.en),
            ]
            fan.append(copy)
        for b in range(nbanks):
            lo = b * bank_bits
            g = b * groups // nbanks
            f_raddr, f_waddr, f_wdata, f_wen = fan[g]
            bank = memory.Memory(shape=unsigned(bank_bits), depth=depth, init=[])
            m.submodules[f"ref{b}"] = bank
            gran = min(unit, bank_bits)
            wp = bank.write_port(granularity=gran) if gran < bank_bits else bank.write_port()
            rp = bank.read_port(transparent_for=())
            raddr = Signal(len(rp.addr), name=f"refbank{b}_raddr", attrs=KEEP, reset_less=True)
            waddr = Signal(len(wp.addr), name=f"refbank{b}_waddr", attrs=KEEP, reset_less=True)
            wdata = Signal(bank_bits, name=f"refbank{b}_wdata", attrs=KEEP, reset_less=True)
            wen = Signal(len(wp.en), name=f"refbank{b}_wen", attrs=KEEP)
            m.d.sync += [
                raddr.eq(f_raddr),
                waddr.eq(f_waddr),
                wdata.eq(f_wdata[lo - g * group_bits : lo - g * group_bits + bank_bits]),
                wen.eq(f_wen[lo // unit : -(-(lo + bank_bits) // unit)]),
            ]
            m.d.comb += [rp.addr.eq(raddr), wp.addr.eq(waddr), wp.data.eq(wdata), wp.en.eq(wen)]
            bank_data.append(rp.data)
        m.d.comb += ref_rd.data.eq(Cat(*bank_data))
        # The block buffer: BLK_BANKS column banks as the reference's, each with its own
        # registers of the read address (stage "bank"; MOTION's address a register earlier,
        # for stage "fan", BAND_MOTION's partial costs without it) and of the write, which
        # the banks' copies take from one register of the selected write (``blk_w``: the
        # state's decode and the engines' select are not in front of the copies across the
        # die; r25 seed 2, `tss_state` into the banks' write registers, 13.0 ns). The writes
        # reach the RAMs two cycles late: nothing reads a word within two cycles of its
        # write (the block's scan starts after SETUP and SETUP2 and reads the block's words
        # in the order they were written; a partial cost is read a slice after its write).
        blk_addr_bits = (P.block_words - 1).bit_length()
        blk_wr = wiring.Signature({"en": Out(1), "addr": Out(blk_addr_bits), "data": Out(8 * L)}).create(
            path=("blk_wr",)
        )
        blk_next = Signal(blk_addr_bits)  # the read address, a cycle before the banks' registers
        blk_w_en = Signal()
        blk_w_addr = Signal(blk_addr_bits, reset_less=True)
        blk_w_data = Signal(8 * L, reset_less=True)
        m.d.sync += [blk_w_en.eq(blk_wr.en), blk_w_addr.eq(blk_wr.addr), blk_w_data.eq(blk_wr.data)]
        blk_banks = min(BLK_BANKS, L)
        blk_bits = 8 * L // blk_banks
        blk_data = []
        for b in range(blk_banks):
            bank = memory.Memory(shape=unsigned(blk_bits), depth=P.block_words, init=[])
            m.submodules[f"blk{b}"] = bank
            wp = bank.write_port()
            rp = bank.read_port(transparent_for=())
            raddr = Signal(blk_addr_bits, name=f"blkbank{b}_raddr", attrs=KEEP, reset_less=True)
            waddr = Signal(blk_addr_bits, name=f"blkbank{b}_waddr", attrs=KEEP, reset_less=True)
            wdata = Signal(blk_bits, name=f"blkbank{b}_wdata", attrs=KEEP, reset_less=True)
            wen = Signal(name=f"blkbank{b}_wen", attrs=KEEP)
            m.d.sync += [
                raddr.eq(blk_next),
                waddr.eq(blk_w_addr),
                wdata.eq(blk_w_data[b * blk_bits : (b + 1) * blk_bits]),
                wen.eq(blk_w_en),
            ]
            m.d.comb += [rp.addr.eq(raddr), wp.addr.eq(waddr), wp.data.eq(wdata), wp.en.eq(wen)]
            blk_data.append(rp.data)
        blk_rd_data = Cat(*blk_data)
        m.d.comb += [
            ref_wr.en.eq(Mux(self.ref_we, Const(1, R) << self.ref_addr[:rshift] if R > 1 else 1, 0)),
            ref_wr.addr.eq(self.ref_addr >> rshift),
            ref_wr.data.eq(Cat(*([self.ref_data] * R))),
        ]
        m.submodules.band_engine = bm = BandMotion(P)

        # Per-frame constants.
        cw = Signal(9)  # words per pixel, C / lanes
        row_words = Signal(range(P.ref_words + 1))  # words per map row
        m.d.comb += cw.eq(self.channels >> shift)

        # Block position and extent (registered in BLOCK).
        y0 = Signal(10)
        x0 = Signal(10)
        bh = Signal(7)
        bw = Signal(7)
        seg = Signal(range(64 * 512 + 1))  # words per block row: bw * cw

        # Search state.
        best = Signal(32)
        best_dy = Signal(signed(6))
        best_dx = Signal(signed(6))
        cy = Signal(signed(6))
        cx = Signal(signed(6))
        step = Signal(5)
        nb = Signal(3)  # neighbour index
        dy = Signal(signed(6))
        dx = Signal(signed(6))
        first = Signal()  # the candidate being scored is the centre (0, 0)
        valid = Signal()
        oy = Signal(signed(2))
        ox = Signal(signed(2))
        with m.Switch(nb):
            for i, (a, b) in enumerate(TSS_ORDER):
                with m.Case(i):
                    m.d.comb += [oy.eq(a), ox.eq(b)]
        ndy = Signal(signed(6))
        ndx = Signal(signed(6))
        m.d.comb += [
            ndy.eq(cy + Mux(oy < 0, -step, Mux(oy > 0, step, 0))),
            ndx.eq(cx + Mux(ox < 0, -step, Mux(ox > 0, step, 0))),
        ]
        ty = Signal(signed(12))  # the candidate's block origin, y0 + dy and x0 + dx (registered with dy, dx)
        tx = Signal(signed(12))
        m.d.comb += valid.eq(is_valid(ty, tx, bh, bw, 0, 0, self.height, self.width))

        # Scan counters and the SAD pipeline (SAD_STAGES): the read address is a register
        # (ref_word, the candidate's current word; row_base, its row's first), the RAMs'
        # outputs are registered before any arithmetic, the centring, |diff| and the adder
        # tree each have their own stage.
        row_base = Signal(range(P.ref_words + 1))  # ref word of the candidate's current row
        ref_word = Signal(range(P.ref_words + 1))  # ref word read this cycle
        col = Signal(range(64 * 512 + 1))
        rows = Signal(7)
        # col + 1 == seg and rows == 1 as registers, set with col and rows (their compares
        # were in front of the scan's and the load's enables: r21 seed 1 on the ECP5 proxy,
        # `tx`, `ty`, `row_base` and `ref_word` among the late inputs, up to 11.4 ns)
        col_end = Signal()
        rows_one = Signal()
        seg_one = Signal()  # seg == 1: bw == 1 and cw == 1
        lt = Signal()  # the candidate's cost is lower than the best (registered in COMPARE)
        cptr = Signal(range(P.block_words + 1))
        issue = Signal()
        acc = Signal(32)
        # the block buffer's read address into its banks' registers (stage "bank", as the
        # reference's copies): MOTION's word pointer or BAND_MOTION's partial-cost address,
        # selected by the mode (selected and routed to the RAMs in one cycle it was the
        # top's path on the ECP5 proxy, 13.2 ns of routing)
        # (MOTION's block word a register later, as its reference word through stage "fan")
        cptr_fan = Signal.like(cptr)
        m.d.sync += cptr_fan.eq(cptr)
        m.d.comb += [ref_rd.addr.eq(ref_word >> rshift), blk_next.eq(cptr_fan)]
        v = [Signal(name=f"sad_v{j}") for j in range(DRAIN_CYCLES)]  # v[j]: stage j holds a word
        m.d.sync += [v[0].eq(issue), *[v[j].eq(v[j - 1]) for j in range(1, DRAIN_CYCLES)]]
        # the word's place in the RAM word, down to stage "ram"
        sel = [Signal(max(rshift, 1), name=f"sel{j}") for j in range(SAD_STAGES.index("ram") + 2)]
        m.d.sync += [sel[0].eq(ref_word[:rshift] if R > 1 else 0), *[sel[j].eq(sel[j - 1]) for j in range(1, len(sel))]]
        ref_r = Signal(8 * P.band_bytes)  # stage "ram": the RAMs' outputs
        blk_r = Signal(8 * L)  # the block buffer's word (its address registered at stage "bank")
        m.d.sync += [ref_r.eq(ref_rd.data), blk_r.eq(blk_rd_data)]
        ref_q = Signal(8 * L)  # stage "word"
        blk_q = Signal(8 * L)
        m.d.sync += [ref_q.eq(ref_r.word_select(sel[-1], 8 * L) if R > 1 else ref_r), blk_q.eq(blk_r)]
        diffs = [Signal(11, name=f"absdiff{i}") for i in range(L)]
        # the centring's constants registered beside the lanes, as the band engine's (the
        # configuration holds through an operation)
        # (kept apart from the band engine's copies; no reset, k from a register of its
        # own: no logic in front that Yosys could share with them, as the band engine's)
        k_src = Signal(3, attrs=KEEP, reset_less=True)
        c_k = Signal(3, attrs=KEEP, reset_less=True)
        c_z8 = Signal.like(self.z8, attrs=KEEP, reset_less=True)
        c_zn = Signal.like(self.zn_ref, attrs=KEEP, reset_less=True)
        m.d.sync += [k_src.eq(8 - self.n_bits), c_k.eq(k_src), c_z8.eq(self.z8), c_zn.eq(self.zn_ref)]
        for i in range(L):
            a = ref_q.word_select(i, 8)
            c = blk_q.word_select(i, 8)
            # centred_ref in two stages, "centre" (the offset) and "shift" (in one they were
            # r30's `ref_c`, 11.4 ns); the current code's centring waits the shift's cycle
            ad = Signal(signed(9), name=f"ref_d{i}")  # stage "centre"
            cd = Signal(signed(10), name=f"cur_d{i}")
            ac = Signal(signed(12), name=f"ref_c{i}")  # stage "shift"
            cc = Signal(signed(10), name=f"cur_c{i}")
            m.d.sync += [ad.eq(centred_ref(a, c_zn, 0)), cd.eq(centred_cur(c, c_z8))]
            m.d.sync += [ac.eq(ad << c_k), cc.eq(cd)]
            m.d.sync += diffs[i].eq(element_cost(ac, cc))  # stage "absdiff"
        pairs = [Signal(12 + 1, name=f"sad_pair{j}") for j in range((L + 3) // 4)]  # stage "pairs": sums of 4
        for j, ps in enumerate(pairs):
            m.d.sync += ps.eq(sum(diffs[4 * j : 4 * j + 4]))
        sad = Signal(11 + shift)  # stage "sum"
        m.d.sync += sad.eq(sum(pairs))
        with m.If(v[DRAIN_CYCLES - 1]):  # stage "acc"
            m.d.sync += acc.eq(acc + sad)

        nby_last = Signal()  # the block is the last of its column, of its row (registered in BLOCK)
        nbx_last = Signal()
        drain = Signal(range(DRAIN_CYCLES))
        dy8 = Signal(signed(8))
        dx8 = Signal(signed(8))
        m.d.comb += [
            dy8.eq(best_dy),
            dx8.eq(best_dx),
            self.rec.p.data.eq(Cat(dy8, dx8, Const(0, 16), best)),
            self.rec.p.last.eq(nby_last & nbx_last),
        ]

        ty_rw = Signal(range(P.ref_words + 1))
        tx_cw = Signal(range(P.ref_words + 1))
        # LOAD's input ready as a register set and cleared with the state's moves (decoded
        # from the state it was in front of the input slice's pointers: r31, 10.2 ns)
        in_load = Signal()
        m.d.comb += self.cur.ready.eq(in_load)
        with m.FSM(name="tss"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [y0.eq(0), x0.eq(0), row_words.eq(self.width * cw)]
                    m.next = "BLOCK"
            with m.State("BLOCK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    bh.eq(block_extent(y0, self.block, self.height, Mux)),
                    bw.eq(block_extent(x0, self.block, self.width, Mux)),
                    nby_last.eq(last_block(y0, self.block, self.height)),
                    nbx_last.eq(last_block(x0, self.block, self.width)),
                    col.eq(0),
                    cptr.eq(0),
                ]
                m.next = "BLOCK2"
            with m.State("BLOCK2"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    seg.eq(bw * cw),
                    rows.eq(bh),
                    rows_one.eq(bh == 1),
                    seg_one.eq((bw == 1) & (cw == 1)),
                    col_end.eq((bw == 1) & (cw == 1)),
                    in_load.eq(1),
                ]
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [
                    self.busy.eq(1),
                    blk_wr.addr.eq(cptr),
                    blk_wr.data.eq(self.cur.payload),
                    blk_wr.en.eq(self.cur.valid),
                ]
                with m.If(self.cur.valid):
                    m.d.sync += cptr.eq(cptr + 1)
                    with m.If(col_end):
                        m.d.sync += [col.eq(0), col_end.eq(seg_one), rows.eq(rows - 1), rows_one.eq(rows == 2)]
                        with m.If(rows_one):
                            m.d.sync += [dy.eq(0), dx.eq(0), ty.eq(y0), tx.eq(x0), first.eq(1), in_load.eq(0)]
                            m.d.sync += step.eq(tss_first_step(self.search))
                            m.next = "SETUP"
                    with m.Else():
                        m.d.sync += [col.eq(col + 1), col_end.eq(col + 2 == seg)]
            with m.State("SETUP"):  # candidate (dy, dx): its first row's and column's words
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    ty_rw.eq(ty * row_words),
                    tx_cw.eq(tx * cw),
                    rows.eq(bh),
                    rows_one.eq(bh == 1),
                    col.eq(0),
                    col_end.eq(seg_one),
                    cptr.eq(0),
                    acc.eq(0),
                ]
                with m.If(valid):
                    m.next = "SETUP2"
                with m.Else():
                    m.next = "NEXT"
            with m.State("SETUP2"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [row_base.eq(ty_rw + tx_cw), ref_word.eq(ty_rw + tx_cw)]
                m.next = "SCAN"
            with m.State("SCAN"):
                m.d.comb += [self.busy.eq(1), issue.eq(1)]
                m.d.sync += [cptr.eq(cptr + 1), ref_word.eq(ref_word + 1)]
                with m.If(col_end):
                    m.d.sync += [
                        col.eq(0),
                        col_end.eq(seg_one),
                        rows.eq(rows - 1),
                        rows_one.eq(rows == 2),
                        row_base.eq(row_base + row_words),
                        ref_word.eq(row_base + row_words),
                    ]
                    with m.If(rows_one):
                        m.d.sync += drain.eq(DRAIN_CYCLES - 1)
                        m.next = "DRAIN"
                with m.Else():
                    m.d.sync += [col.eq(col + 1), col_end.eq(col + 2 == seg)]
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.next = "COMPARE"
            with m.State("COMPARE"):  # the comparison into a register (then its result's enables)
                m.d.comb += self.busy.eq(1)
                m.d.sync += lt.eq(first | (acc < best))
                m.next = "COMPARE2"
            with m.State("COMPARE2"):
                m.d.comb += self.busy.eq(1)
                with m.If(lt):
                    m.d.sync += [best.eq(acc), best_dy.eq(dy), best_dx.eq(dx)]
                m.next = "NEXT"
            with m.State("NEXT"):  # choose the next candidate
                m.d.comb += self.busy.eq(1)
                m.d.sync += first.eq(0)
                with m.If(first):
                    # after the centre: the first neighbour of the first step
                    m.d.sync += [cy.eq(0), cx.eq(0), nb.eq(0)]
                    m.next = "PICK"
                with m.Elif(nb == 7):
                    m.d.sync += [step.eq(tss_next_step(step)), nb.eq(0), cy.eq(best_dy), cx.eq(best_dx)]
                    with m.If(tss_next_step(step) == 0):
                        m.next = "EMIT"
                    with m.Else():
                        m.next = "PICK"
                with m.Else():
                    m.d.sync += nb.eq(nb + 1)
                    m.next = "PICK"
            with m.State("PICK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [dy.eq(ndy), dx.eq(ndx)]
                m.next = "PICK2"
            with m.State("PICK2"):  # (the vector's add and the origin's in series were r27's `tx`, 10.8 ns)
                m.d.comb += self.busy.eq(1)
                m.d.sync += [ty.eq(y0 + dy), tx.eq(x0 + dx)]
                m.next = "SETUP"
            with m.State("EMIT"):
                m.d.comb += [self.busy.eq(1), self.rec.valid.eq(1)]
                with m.If(self.rec.ready):
                    with m.If(nbx_last):
                        m.d.sync += [x0.eq(0), y0.eq(y0 + self.block)]
                        with m.If(nby_last):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "BLOCK"
                    with m.Else():
                        m.d.sync += x0.eq(x0 + self.block)
                        m.next = "BLOCK"

        # BAND_MOTION: the band engine's configuration, and its use of the streams and RAMs
        m.d.comb += [
            bm.start.eq(self.band_start),
            bm.width.eq(self.width),
            bm.height.eq(self.height),
            bm.channels.eq(self.channels),
            bm.block.eq(self.block),
            bm.search.eq(self.search),
            bm.n_bits.eq(self.n_bits),
            bm.z8.eq(self.z8),
            bm.zn_ref.eq(self.zn_ref),
            bm.slice.eq(self.band_slice),
            bm.group.eq(self.band_group),
            bm.cur.payload.eq(self.cur.payload),
            bm.cur.valid.eq(self.cur.valid & self.band),
            bm.ref_rd.data.eq(ref_r),  # registered: the band engine's stage "ram"
            bm.cost_rd.data.eq(blk_rd_data),
            bm.rec.ready.eq(self.rec.ready & self.band),
        ]
        with m.If(self.band):  # the RAMs' ports and the streams switch to the band engine
            m.d.comb += [
                self.busy.eq(bm.busy),
                self.cur.ready.eq(bm.cur.ready),
                self.rec.valid.eq(bm.rec.valid),
                self.rec.payload.eq(bm.rec.payload),
                ref_wr.en.eq(bm.ref_wr.en),
                ref_wr.addr.eq(bm.ref_wr.addr),
                ref_wr.data.eq(bm.ref_wr.data),
                ref_rd.addr.eq(bm.ref_rd.addr),
                blk_wr.en.eq(bm.cost_wr.en),
                blk_wr.addr.eq(bm.cost_wr.addr),
                blk_wr.data.eq(bm.cost_wr.data),
                blk_next.eq(bm.cost_rd.addr),
            ]
        return m
