"""Cycle model of the fabric: cycles per operation, frames/s at 100 MHz, DDR traffic.

Two designs are counted:

- **on-chip** (implemented in RTL): the reference lives whole in BRAM, the current frame
  streams in block order, one block buffered; the motion estimator scores one candidate
  at a time over ``lanes`` bytes per cycle. The counts below follow the estimator's FSM
  state by state (``motion_estimator.py``) and are checked against the Verilated RTL's
  CYCLES register in ``sim/tb_accel.py`` (exact when the DMA never starves the input).
- **band** (implemented in RTL, ``band_motion.py``, for maps over the on-chip reference:
  the ResNet-50 cuts): one pass per TSS step; per group of block rows and channel slice
  the reference band (the rows plus p rows of halo) then the current blocks stream in; each
  chunk of the current frame is scored against the step's 8 (9) candidates, one per cycle
  through a ``band_bytes``-wide read port; partial costs are accumulated across slices.
  :func:`band_cycles` counts its FSM state by state, checked against the Verilated RTL's
  CYCLES in ``sim/tb_accel.py::test_band_cycles``; :func:`best_band_plan` picks the cut
  (slice Cs, group G) the driver uses.

The Huffman encoder codes one symbol per cycle (after a 256-cycle histogram clear), the
requantizer ``lanes`` codes per cycle; the histogram pass (HISTOGRAM, a KEY's before its
ENCODE) counts a stream word's ``lanes`` codes per cycle (:mod:`temposplit.hw.histogram`),
checked against the Verilated RTL's CYCLES in ``sim/tb_accel.py::test_histogram``.

TSS itself (the order of the neighbours, the steps, the tiling, the validity rule, the
cost) comes from :mod:`temposplit.codec.motion`, the one definition the golden codec and
the gateware generators use too; the cycles per FSM state are the RTL modules' constants
(:mod:`temposplit.hw.motion_estimator`, :mod:`temposplit.hw.band_motion`), so this module
needs Amaranth (the driver imports it only to plan BAND_MOTION).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from temposplit.codec.encoder import ctx_slices_for  # the codec's default slices
from temposplit.codec.motion import TSS_ORDER, block_cost, blocks, is_valid, tss_candidates, tss_steps
from temposplit.hw import band_motion as _band
from temposplit.hw import histogram as _hist
from temposplit.hw import huffman_encoder as _huff
from temposplit.hw import motion_estimator as _me
from temposplit.hw import register_slice as _slice
from temposplit.hw import requantizer as _rq
from temposplit.hw.regmap import LANES, Params, ctx_passes

CLOCK_HZ = 100e6
# Zynq-7020 DMA limits (docs/fabric.md): the AXI DMA at 100 MHz; an HP port's theory. MM2S:
# 64 bits on both sides (hw/vivado.py: c_m_axi_mm2s_data_width and the stream, HP0 64-bit),
# a stream word a cycle, which every mode's input takes (the requantizer and its bypass,
# BAND_MOTION, the records' dealer: the never-starving sims' CYCLES); was 400 MB/s (a word
# every 2 cycles, a 32-bit DMA's rate).
DMA_MM2S_BPS = 800e6
DMA_S2MM_BPS = 300e6
HP_PORT_BPS = 1200e6
# Cycles per LANES-byte stream word at the MM2S's rate (1: a word a cycle), the rate the
# table counts every input at and best_band_plan ranks the band plans at.
DMA_WORD_CYCLES = LANES * CLOCK_HZ / DMA_MM2S_BPS

# Cycles from START to the first input word and from the last record to DONE, as the
# cocotb testbench drives it (AXI-Lite write response, the source's first beat).
START_LATENCY = 3
# The top's ports' register slices (hw/register_slice.py): a word's way in, the last word's
# way out, counted where the simulation showed them (HISTOGRAM, REQUANT, CTX, BAND_MOTION).
# The ENCODE and MOTION models matched the simulation's CYCLES exactly without the output's
# (2026-12-04, tolerance set to 0), so it is not added there; why the output's cycle does
# not show in those two modes was not traced. MOTION counts the input's (below).
PORT_IN = _slice.LATENCY
PORT_OUT = _slice.LATENCY
# CTX's own register slice between the requantizer and its fronts (hw/top.py, ``ctx_in``),
# and the motion estimator's between the input's slice and its input (``me_in``)
CTX_IN = _slice.LATENCY
ME_IN = _slice.LATENCY
ENCODE_HEAD = 1 + 256  # START's register in the top, the histogram clear (the first words arrive meanwhile)
# the last symbol's way to the last word
ENCODE_TAIL = _huff.SERIALIZER_STAGES + _huff.LOOKUP_STAGES + _huff.PACKER_STAGES


def motion_cycles(shape, block, search, ref=None, cur=None) -> int:
    """Cycles of one MOTION operation on the on-chip design.

    With ``ref`` and ``cur`` (the centred int16 (H, W, C) maps of the golden model) the
    TSS path is replayed, so invalid candidates are counted exactly; without them every
    step's centre is taken as (0, 0) (what ~99 % of real blocks do, docs/requirements.md section 6).
    """
    h, w, c = shape
    cw = -(-c // LANES)
    scan = _me.SETUP_CYCLES + _me.DRAIN_CYCLES + _me.COMPARE_CYCLES  # around a candidate's words
    # the first block's BLOCK states run while the first input word is on its way (START,
    # the port's slice, the estimator's; measured exact on the SSD shapes, 2026-12-04)
    total = max(START_LATENCY + PORT_IN + ME_IN, 1 + _me.BLOCK_CYCLES) - _me.BLOCK_CYCLES
    for y0, x0, bh, bw in blocks(h, w, block):
        words = bh * bw * cw
        total += _me.BLOCK_CYCLES + words + _me.EMIT_CYCLES
        best_v = (0, 0)
        best = None
        if ref is not None:
            best = block_cost(ref, cur, y0, x0, bh, bw, 0, 0)
        total += scan + words
        for s in tss_steps(search):
            cy, cx = best_v
            for oy, ox in TSS_ORDER:
                dy, dx = cy + oy * s, cx + ox * s
                if is_valid(y0, x0, bh, bw, dy, dx, h, w):
                    total += _me.PICK_CYCLES + scan + words
                    if ref is not None:
                        cost = block_cost(ref, cur, y0, x0, bh, bw, dy, dx)
                        if cost < best:
                            best, best_v = cost, (dy, dx)
                else:
                    total += _me.INVALID_CYCLES
    return total


def encode_cycles(count: int) -> int:
    """ENCODE of ``count`` symbols: one per cycle after the histogram clear."""
    return ENCODE_HEAD + count + ENCODE_TAIL


# HISTOGRAM: START's register in the top and the banks' clear (the first words wait in the
# requantizer meanwhile), a stream word a cycle, then the last word through the input and
# count stages, the fold of the banks into one and the empty TLAST word.
HIST_HEAD = 1 + _hist.CLEAR_CYCLES
HIST_TAIL = _hist.INPUT_STAGES + _hist.COUNT_STAGES + _hist.FOLD_CYCLES + 1 + PORT_OUT


def hist_cycles(count: int, word_cycles: float = 1.0) -> int:
    """HISTOGRAM of ``count`` symbols: a stream word (``LANES`` symbols) a cycle after the
    banks' clear, or one every ``word_cycles`` at the DMA's rate."""
    return HIST_HEAD + int(math.ceil(-(-count // LANES) * max(1.0, word_cycles))) + HIST_TAIL


def requant_cycles(count: int) -> int:
    return START_LATENCY + PORT_IN + -(-count // LANES) + _rq.STAGES + 1 + PORT_OUT


# ----------------------------------------------------------------------------- CTX

# The ctx engines' lanes (docs/fabric.md "Two sections on one range coder"): with two, each
# engine's range coder takes the two lanes' bins in turn, so a section (a lane) codes a bin
# every CTX_LANES cycles and two sections side by side a bin a cycle together.
CTX_LANES = Params().ctx_lanes  # the default build's

# A ctx anchor (CTX) codes one bin per lane turn once its pipeline is full: from START the
# first word's way through the requantizer (a temporal group's three words), the staging
# register and the element serializer, the binarizer's five stages, its element FIFO and
# bin stage, the two-lane range coder's lane slice and stages; after the last bin the
# termination's cycles, the record FIFO, the byte emitter and the packer's word. CTX_FILL
# is that overhead, measured on the Verilated top (sim/tb_accel.py::test_ctx_cycles checks
# it): 37 cycles (36 before the binarizer's D stage, 2026-12-05 evening; 35 before the
# BytePacker's word waited a cycle in place, 2026-12-05: the requantizer's third stage,
# the same day, did not show; 32 on the one-lane RangeEncoder), the ports' slices and
# CTX's input slice.
CTX_FILL = 37 + PORT_IN + PORT_OUT + CTX_IN
CTX_TEMPORAL_FILL = 2  # a temporal group's first element waits for its reference's two words


def ctx_bins(codes, ref, n_bits: int, z_n: int) -> int:
    """The bins of an anchor's ctx section (docs/bitstream.md 6.2.4): per element a zero
    bin; a non-zero value's sign bin (unless its prediction is 0 or 2^N - 1), its unary
    bins (min(m + 1, min(mmax, 14)) for magnitude m + 1 of a range mmax + 1) and, past 14,
    its suffix (bit length of mmax - 14). ``ref``: a temporal anchor's reference codes (the
    prediction), None for intra (the prediction z_N, clamped to 2^N - 1)."""
    import numpy as np

    top = (1 << n_bits) - 1
    x = np.asarray(codes, np.int64).reshape(-1)
    pred = np.full(x.shape, min(int(z_n), top), np.int64) if ref is None else np.asarray(ref, np.int64).reshape(-1)
    nz = x != pred
    m = np.abs(x - pred) - 1
    mmax = np.where(x < pred, pred - 1, top - pred - 1)
    has_sign = (pred != 0) & (pred != top)
    unary_n = np.minimum(mmax, 14)
    unary = np.minimum(m + 1, unary_n)
    suffix_w = np.where(mmax > 14, np.ceil(np.log2(np.maximum(mmax - 14, 1) + 1)).astype(np.int64), 0)
    suffix = np.where(m >= 14, suffix_w, 0)
    return int(x.size + (nz * (has_sign + unary + suffix)).sum())


# Bins per element of a ctx anchor for the table (the data decide: :func:`ctx_bins`): the
# most measured on the SSD fixtures (tests/fixtures/features, every tensor's three frames,
# intra then temporal against the frame before) at the recommended N = 5: intra 1.54-4.52
# (features.10's 19x19x33 the most), temporal 1.15-1.58.
CTX_BINS_INTRA = 4.52
CTX_BINS_TEMPORAL = 1.58


def ctx_cycles(bins: int, count: int, temporal: bool = False, lanes: int = CTX_LANES) -> int:
    """CTX of ``count`` elements coding ``bins`` bins (:func:`ctx_bins`) on engine 0's lane
    0, a bin every ``lanes`` cycles, a source that never starves (the input, three words
    per 8 elements when temporal, outruns the bins)."""
    return CTX_FILL + (CTX_TEMPORAL_FILL if temporal else 0) + lanes * bins


# CTX with FLAGS.RECORDS: stream words of value records (a record a word, or a run of up to
# six zero values), one value and one bin a cycle; a word has at least one bin, so a
# source of a word a cycle never holds it up, the DMA's rate (a word every LANES / (MM2S
# bytes per cycle) cycles) may. CTX_RECORDS_FILL as CTX_FILL (the requantizer's bypass, the
# word register and the values' FIFO, the bin stage, the range coder, the termination, the
# packer), measured on the Verilated top (sim/tb_accel.py::test_ctx_cycles checks it).
CTX_RECORDS_FILL = 34 + PORT_IN + PORT_OUT + CTX_IN  # (29 on the one-lane RangeEncoder; 32 before 2026-12-05)

# Words and bins per element of a ctx section from records (the data decide): the most
# measured on the SSD fixtures (every tensor's frames through the recommended preset,
# N = 5; codec/ctx_records.py): a predicted frame (vectors, flags, coded blocks) 0.26 words
# and 1.08 bins (features.18's second tensor, 10x10x120; the mean 0.10 and 0.38), a
# temporal anchor 0.28 words, an intra one 0.99.
CTX_PRED_WORDS = 0.26
CTX_PRED_BINS = 1.08
CTX_WORDS_TEMPORAL = 0.28
CTX_WORDS_INTRA = 0.99


def ctx_records_cycles(bins: int, words: int, word_cycles: float = 1.0, lanes: int = CTX_LANES) -> int:
    """CTX of ``words`` stream words of value records coding ``bins`` bins on one lane (a
    bin every ``lanes`` cycles), a word on the input every ``word_cycles`` cycles at most."""
    return CTX_RECORDS_FILL + max(lanes * bins, int(math.ceil(words * word_cycles)))


# CTX with slices (CTX_SLICES = S > 1, docs/fabric.md "Slices"): the S sections on the E x L
# lane units, slice i on unit i mod E x L, a unit's slices one after another; the driver
# deals the words so that every unit stays fed (the least bins sent first). A unit codes a
# bin every L cycles; its slices after the first each wait CTX_SLICE_GAP cycles (the
# termination's shifts, the byte emitter); CTX_SLICES_FILL as CTX_RECORDS_FILL plus the
# dealer's FIFO and the tagged words' packer. Measured on the Verilated top (sim/tb_accel.py::test_ctx_slices).
CTX_ENGINES = Params().ctx_engines  # the default build's
# Two lanes an engine, the packers' words through a grant and a register slice: 37 and 14
# (35 before the packers' words waited a cycle in place, 2026-12-05; the one-lane
# engines' were 32 and 10).
CTX_SLICES_FILL = 37 + PORT_IN + PORT_OUT + CTX_IN
CTX_SLICE_GAP = 14


def ctx_slices_cycles(
    slice_bins, slice_words, engines: int = CTX_ENGINES, word_cycles: float = 1.0, lanes: int = CTX_LANES
) -> int:
    """CTX of S slices (each ``slice_bins[i]`` bins in ``slice_words[i]`` stream words) on
    ``engines`` range coders of ``lanes`` lanes (slice i on unit i mod E x lanes, a bin
    every ``lanes`` cycles), the words on the input at most one every ``word_cycles``:
    S = 1 is :func:`ctx_records_cycles`."""
    if len(slice_bins) != len(slice_words) or not slice_bins:
        raise ValueError("a bins and a words count per slice")
    if len(slice_bins) == 1:
        return ctx_records_cycles(slice_bins[0], slice_words[0], word_cycles, lanes)
    units = engines * lanes
    busy = [0] * units
    for i, b in enumerate(slice_bins):
        busy[i % units] += lanes * b + (CTX_SLICE_GAP if i >= units else 0)
    return CTX_SLICES_FILL + max(max(busy), int(math.ceil(sum(slice_words) * word_cycles)))


def _channel_split(total: int, c: int, s: int) -> list[int]:
    """``total`` (bins or words of a map) split over S channel slices as the codec cuts them."""
    return [int(total * (((k + 1) * c) // s - (k * c) // s) / c) for k in range(s)]


# ----------------------------------------------------------------------------- BAND_MOTION

BAND_START_LATENCY = 0  # as START_LATENCY: the testbench's START to first word, last record to DONE


@dataclass(frozen=True)
class BandPlan:
    """How a BAND_MOTION operation cuts a map: channels padded to ``channels``, slices of
    ``slice`` channels, groups of ``group`` block rows."""

    channels: int
    slice: int
    group: int

    def groups(self, h, block, search):
        """(y_g, y_e, r0, r1) per group: its rows and its reference band's rows."""
        out, y = [], 0
        while y < h:
            ye = min(y + self.group * block, h)
            out.append((y, ye, max(0, y - search), min(h, ye + search)))
            y = ye
        return out


def band_plan_options(shape, block, search, *, band_bytes=32, ref_bytes=256 * 1024, group_blocks=455, band_blocks=1024):
    """Every (slice, group) that fits the build, as :class:`BandPlan`s (empty: none fits)."""
    h, w, c = shape
    cp = -(-c // band_bytes) * band_bytes
    nby, nbx = -(-h // block), -(-w // block)
    if nby * nbx > band_blocks or w > 1023 or h > 1023:
        return []
    out = []
    for cs in range(band_bytes, min(cp, 4095) + 1, band_bytes):
        if cp % cs:
            continue
        for g in range(1, min(nby, 1023) + 1):
            if g * nbx > group_blocks:
                break
            plan = BandPlan(cp, cs, g)
            if max(r1 - r0 for _, _, r0, r1 in plan.groups(h, block, search)) * w * cs > ref_bytes:
                break
            out.append(plan)
    return out


def band_cycles(shape, block, search, plan: BandPlan, *, band_bytes=32, word_cycles=1.0) -> int:
    """Cycles of one BAND_MOTION operation, counted state by state from the band engine's
    FSM (exact against the RTL's CYCLES when the input never starves: ``word_cycles`` = 1).
    ``word_cycles`` > 1 models a DMA that delivers a stream word every ``word_cycles``
    cycles on average (a 32-bit DMA's 400 MB/s = 4 bytes per cycle at 100 MHz: 2 cycles
    per 8-byte word; the 64-bit MM2S, DMA_MM2S_BPS: 1): the reference band's load takes its words' time, and a
    chunk of the current frame the larger of its candidates (one per cycle) and its words."""
    h, w, _ = shape
    rw = band_bytes // LANES
    cwb = plan.slice // band_bytes
    nslices = plan.channels // plan.slice
    fill = rw * word_cycles
    total = BAND_START_LATENCY + _band.INIT_CYCLES + PORT_OUT
    for si, _ in enumerate(tss_steps(search)):
        ncand = tss_candidates(search, first=si == 0)
        last_step = si == len(tss_steps(search)) - 1
        period = max(ncand, fill)
        total += _band.STEP_CYCLES
        for yg, ye, r0, r1 in plan.groups(h, block, search):
            total += _band.GROUP_CYCLES
            for j in range(nslices):
                last_slice = j == nslices - 1
                total += _band.SLICE_CYCLES + int(round((r1 - r0) * w * cwb * rw * word_cycles))
                for y0 in range(yg, ye, block):
                    bh = min(block, h - y0)
                    for x0 in range(0, w, block):
                        bw = min(block, w - x0)
                        nch = bh * bw * cwb
                        total += (
                            _band.BLOCK_HEAD_CYCLES
                            + max(_band.CAND_CYCLES, int(round(fill)))
                            + _band.CHUNKS_TAIL_CYCLES
                            + int(round(nch * period))
                            + _band.DRAIN_CYCLES
                            + ncand
                            + _band.UPDATE_STAGES
                            + _band.NEXT_CYCLES
                        )
                        if last_slice:
                            total += _band.STORE_CYCLES + (_band.EMIT_CYCLES if last_step else 0)
    return total - _band.NEXT_CYCLES  # the last block's NEXT comes after DONE


def band_traffic(shape, block, search, plan: BandPlan) -> int:
    """Bytes streamed in by one BAND_MOTION operation (the records out are 8 per block)."""
    h, w, _ = shape
    band_rows = sum(r1 - r0 for _, _, r0, r1 in plan.groups(h, block, search))
    return len(tss_steps(search)) * (band_rows + h) * w * plan.channels


def best_band_plan(
    shape,
    block,
    search,
    *,
    band_bytes=32,
    ref_bytes=256 * 1024,
    group_blocks=455,
    band_blocks=1024,
    word_cycles=DMA_WORD_CYCLES,
):
    """The plan with the fewest cycles at the DMA's rate (a stream word every ``word_cycles``
    cycles; by default the MM2S's, which the table counts the plan at) (None: the map does not
    fit the band engine: too many blocks, or no band of 2p + 1 rows of one slice fits the
    reference RAM)."""
    opts = band_plan_options(
        shape,
        block,
        search,
        band_bytes=band_bytes,
        ref_bytes=ref_bytes,
        group_blocks=group_blocks,
        band_blocks=band_blocks,
    )
    if not opts:
        return None
    return min(
        opts,
        key=lambda pl: (
            band_cycles(shape, block, search, pl, band_bytes=band_bytes, word_cycles=word_cycles),
            -pl.slice,
        ),
    )


# ----------------------------------------------------------------------------- the table

# Every cut the project knows (docs/requirements.md section 3): the SSD's on 300x300, the R50 FPN's on
# 800x1088 (Faster R-CNN and RetinaNet share them). (name, (H, W, C), block B).
SSD_CUTS = [
    ("ssd features[3]", (75, 75, 24), 4),
    ("ssd features[6]", (38, 38, 32), 4),
    ("ssd features[10]", (19, 19, 64), 4),
    ("ssd features[13]", (19, 19, 96), 4),
    ("ssd block14 expand", (19, 19, 576), 4),
    ("ssd features[18] (10x10)", (10, 10, 1280), 2),
]
R50_CUTS = [
    ("r50 layer1", (200, 272, 256), 8),
    ("r50 layer2", (100, 136, 512), 4),
    ("r50 layer3", (50, 68, 1024), 4),
    ("r50 layer4", (25, 34, 2048), 2),
]


@dataclass
class Row:
    name: str
    shape: tuple
    block: int
    design: str
    anchor_cycles: int  # one ENCODE pass (the table carried from the previous anchor)
    key_cycles: int  # a self-contained anchor (its own table): a HISTOGRAM pass, then ENCODE
    # None (JSON null), with pred_fps, group_fps and ctx_pred_fps: no band plan fits, the
    # predicted frames are TSS in software (the table's "software")
    pred_cycles: int | None
    anchor_fps: float
    pred_fps: float | None
    group_fps: float | None  # bi-3: one anchor and two predicted frames
    ddr_mb_per_frame: float  # DMA traffic of an average frame of the group
    ddr_mbps_at_30: float
    # a ctx anchor (one CTX pass), intra (a KEY) at CTX_BINS_INTRA bins/element (a row over the
    # anchor coder's row buffer: one CTX pass of its value records)
    ctx_key_fps: float = 0.0
    ctx_anchor_fps: float = 0.0  # ... temporal at CTX_BINS_TEMPORAL (the recommended preset's anchors)
    # a ctx predicted frame: its motion search, then one CTX pass of value records
    # (CTX_PRED_WORDS and CTX_PRED_BINS per element, at the DMA's rate)
    ctx_pred_fps: float | None = None
    ctx_slices: int = 1  # S: the codec's slices of a records pass (codec.encoder.ctx_slices_for)
    ctx_engines: int = CTX_ENGINES  # E: the build's range coders for slices
    ctx_lanes: int = CTX_LANES  # L: each range coder's lanes (slices side by side on one)

    def fits(self) -> bool:
        return self.ddr_mbps_at_30 * 1e6 <= DMA_MM2S_BPS


def row(
    name,
    shape,
    block,
    search=7,
    n_bits=4,
    ref_bytes=256 * 1024,
    band_bytes=32,
    band_blocks=1024,
    block_bytes=32 * 1024,
    line_elements=16384,
    ctx_engines=CTX_ENGINES,
    ctx_lanes=CTX_LANES,
) -> Row:
    h, w, c = shape
    elements = h * w * c
    # an anchor is one ENCODE pass (requantize, Huffman, histogram, STORE_REF), bound by one
    # symbol per cycle or the DMA; the PS keeps its copy of the codes by a table lookup
    anchor = max(encode_cycles(elements), int(elements / (DMA_MM2S_BPS / CLOCK_HZ)))
    word_cycles = DMA_WORD_CYCLES  # every input at the MM2S's rate
    # a KEY: its table from its own histogram first, a HISTOGRAM pass at a stream word a
    # cycle (or the DMA's rate), then the ENCODE pass
    key = hist_cycles(elements, word_cycles) + anchor
    nb = -(-h // block) * -(-w // block)
    padded = h * w * -(-c // LANES) * LANES
    if padded <= ref_bytes:
        design = f"on-chip, {LANES} lanes"
        pred = motion_cycles(shape, block, search)
        # anchor: the map in, the section out (~n_bits/8 of it, upper bound N bits/element);
        # predicted: the current frame in, 8 bytes per block out.
        traffic = ((elements + elements * n_bits / 8) + 2 * (elements + 8 * nb)) / 3
    else:
        plan = best_band_plan(
            shape,
            block,
            search,
            band_bytes=band_bytes,
            ref_bytes=ref_bytes,
            group_blocks=block_bytes // LANES // 9,
            band_blocks=band_blocks,
            word_cycles=word_cycles,
        )
        if plan is None:
            # No band plan fits the block buffer (e.g. 200x272x256 at p = 15): the driver
            # refuses the map and the edge's engine runs TSS in software (docs/fabric.md,
            # "Not done (yet)"); only anchors are the fabric's.
            design = "band: no plan (TSS in software)"
            pred = None
            traffic = elements + elements * n_bits / 8
        else:
            design = f"band, Cs {plan.slice} G {plan.group}"
            # predicted: BAND_MOTION at the DMA's rate (DMA_WORD_CYCLES, a cycle per 8-byte word),
            # the rate its plan was chosen at: per step the reference bands and the current
            # frame in, 8 bytes per block out.
            pred = band_cycles(shape, block, search, plan, band_bytes=band_bytes, word_cycles=word_cycles)
            pred_traffic = band_traffic(shape, block, search, plan) + 8 * nb
            traffic = ((elements + elements * n_bits / 8) + 2 * pred_traffic) / 3
    anchor_fps = CLOCK_HZ / anchor
    pred_fps = CLOCK_HZ / pred if pred else None  # None: predicted frames in software
    group_fps = 3 * CLOCK_HZ / (anchor + 2 * pred) if pred else None
    # a ctx anchor: one CTX pass, one bin per cycle (the input, three words per 8 elements
    # when temporal, is well within the DMA's rate); a row over the anchor coder's row
    # buffer: one CTX pass of its value records' stream words at the DMA's rate, then
    # LOAD_REF when the reference fits on chip
    n_slices = ctx_slices_for(elements)

    def sliced(bins_per_element, words_per_element):
        # the records passes of the codec's slices, split by channels (a predicted frame's
        # slice 0 also holds the vectors and block flags: a few bins a block), as many passes
        # as one pass's words allow (regmap.ctx_passes, as the engine cuts them)
        bins = _channel_split(int(elements * bins_per_element), c, n_slices)
        words = _channel_split(int(elements * words_per_element), c, n_slices)
        passes, alone = ctx_passes(words)
        if alone:
            raise ValueError(f"a ctx slice of {max(words)} words is over one CTX pass: coded in software")
        return sum(
            ctx_slices_cycles([bins[k] for k in p], [words[k] for k in p], ctx_engines, word_cycles, ctx_lanes)
            for p in passes
        )

    if w * c <= line_elements:
        ctx_key = ctx_cycles(int(elements * CTX_BINS_INTRA), elements, lanes=ctx_lanes)
        ctx_anchor = ctx_cycles(int(elements * CTX_BINS_TEMPORAL), elements, temporal=True, lanes=ctx_lanes)
    else:
        load = requant_cycles(padded) if padded <= ref_bytes else 0
        ctx_key = load + sliced(CTX_BINS_INTRA, CTX_WORDS_INTRA)
        ctx_anchor = load + sliced(CTX_BINS_TEMPORAL, CTX_WORDS_TEMPORAL)
    ctx_pred = pred + sliced(CTX_PRED_BINS, CTX_PRED_WORDS) if pred else None
    return Row(
        name,
        shape,
        block,
        design,
        anchor,
        key,
        pred,
        anchor_fps,
        pred_fps,
        group_fps,
        traffic / 1e6,
        traffic * 30 / 1e6,
        CLOCK_HZ / ctx_key,
        CLOCK_HZ / ctx_anchor,
        CLOCK_HZ / ctx_pred if ctx_pred else None,
        n_slices,
        ctx_engines,
        ctx_lanes,
    )


def table(search=7, n_bits=4, ref_bytes=256 * 1024) -> list[Row]:
    return [row(n, s, b, search, n_bits, ref_bytes) for n, s, b in SSD_CUTS + R50_CUTS]


def fps_text(v: float | None) -> str:
    """A rate as the tables print it: "software" for None (no band plan: TSS in software)."""
    return f"{v:.1f}" if v else "software"


def _cycles(v: int | None) -> str:
    return f"{v:,}" if v is not None else "software"


def format_table(rows: list[Row], search=7) -> str:
    head = (
        f"{'cut':26} {'H x W x C':>14} {'B':>2} {'design':28} {'anchor cyc':>11} {'pred cyc':>11} "
        f"{'anchor f/s':>10} {'KEY f/s':>8} {'pred f/s':>9} {'bi-3 f/s':>9} {'DDR MB/fr':>9} {'MB/s @30':>9} "
        f"{'ctx S/ExL':>9} {'ctx KEY f/s':>11} {'ctx anc f/s':>11} {'ctx pred f/s':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        h, w, c = r.shape
        lines.append(
            f"{r.name:26} {f'{h}x{w}x{c}':>14} {r.block:>2} {r.design:28} {r.anchor_cycles:>11,} "
            f"{_cycles(r.pred_cycles):>11} {r.anchor_fps:>10.1f} {CLOCK_HZ / r.key_cycles:>8.1f} "
            f"{fps_text(r.pred_fps):>9} "
            f"{fps_text(r.group_fps):>9} "
            f"{r.ddr_mb_per_frame:>9.2f} {r.ddr_mbps_at_30:>9.1f} "
            f"{f'{r.ctx_slices}/{r.ctx_engines}x{r.ctx_lanes}':>9} "
            f"{fps_text(r.ctx_key_fps):>11} {fps_text(r.ctx_anchor_fps):>11} {fps_text(r.ctx_pred_fps):>12}"
        )
    lines.append(
        "A cycle model (counted state by state from the RTL's FSMs, with the RTL modules' own constants), "
        "checked against the Verilated RTL's CYCLES register in simulation (sim/tb_accel.py: MOTION, "
        "ENCODE, HISTOGRAM, BAND_MOTION on small maps); the path it counts is what `temposplit edge --backend "
        "rtl|pynq` runs: an anchor is one ENCODE pass (FLAGS.REQUANT, STORE_REF, the fabric's histogram), "
        "a KEY anchor (its own table) a HISTOGRAM pass (a stream word a cycle: sim/tb_accel.py::test_histogram) and "
        "the ENCODE pass, a predicted frame one MOTION "
        "or BAND_MOTION; with the coder ctx (the recommended preset) an anchor is one CTX pass on engine 0's "
        f"lane 0, a bin every {CTX_LANES} cycles (sim/tb_accel.py::test_ctx_cycles), counted at {CTX_BINS_INTRA} "
        "bins/element for a KEY (intra) and "
        f"{CTX_BINS_TEMPORAL} for a temporal anchor, the most measured on the SSD fixtures at N = 5; a map whose row "
        "W x C is over the CTX row buffer (16,384) is one CTX pass of value records (their stream words at the "
        f"DMA's rate, {CTX_WORDS_INTRA} / {CTX_WORDS_TEMPORAL} per element intra / temporal; then LOAD_REF); a ctx "
        f"predicted frame is its motion search and one CTX pass of value records, counted at {CTX_PRED_WORDS} words "
        f"and {CTX_PRED_BINS} bins per element (the most measured on the SSD fixtures, N = 5); a records pass "
        "of a map of 2^19 elements or more codes the codec's channel slices (a slice per 2^18 elements, at most 6) "
        "side by side on the build's E range coders of L lanes each (ctx S/ExL; sim/tb_accel.py::test_ctx_slices), "
        "its words at the DMA's rate; slices whose words are over one pass (COUNT's 26 bits: 2^23 - 1 words) "
        "take as many passes as they need (200x272x256's KEY: two of three slices)."
    )
    lines.append(
        f"100 MHz; p = {search}; TSS one vector per block; Huffman 1 symbol/cycle, its histogram pass {LANES} "
        f"symbols/cycle; DMA limits "
        f"MM2S {DMA_MM2S_BPS / 1e6:.0f} MB/s, S2MM {DMA_S2MM_BPS / 1e6:.0f} MB/s (AXI DMA, 64 bit); "
        f"HP port {HP_PORT_BPS / 1e6:.0f} MB/s."
    )
    return "\n".join(lines)
