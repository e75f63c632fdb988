"""Cycle model of the fabric: cycles per operation, frames/s at 100 MHz, DDR traffic.

Two designs are counted:

- **on-chip** (implemented in RTL): the reference lives whole in BRAM, the current frame
  streams in block order, one block buffered; the motion estimator scores one candidate
  at a time over ``lanes`` bytes per cycle. The counts below follow the estimator's FSM
  state by state (``motion_estimator.py``) and are checked against the Verilated RTL's
  CYCLES register in ``sim/tb_accel.py`` (exact when the DMA never starves the input).
- **band** (modelled only, for the ResNet-50 cuts whose maps exceed the BRAM): one pass
  over the map per TSS step, the 8 (9 in the first step) candidates of every block scored
  in parallel by ``units`` SAD units of ``lanes`` bytes each over a line buffer of
  (B + 2p) reference rows per channel slice, partial costs accumulated per block and
  candidate across slices; see docs/fabric.md, "Maps larger than the BRAM".

The Huffman encoder codes one symbol per cycle (after a 256-cycle histogram clear), the
requantizer ``lanes`` codes per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLOCK_HZ = 100e6
# Zynq-7020 DMA limits (TOOLCHAIN.md): AXI DMA at 100 MHz, 32 bits; an HP port's theory.
DMA_MM2S_BPS = 400e6
DMA_S2MM_BPS = 300e6
HP_PORT_BPS = 1200e6

# The estimator's FSM (motion_estimator.py): states around one candidate's scan.
SETUP = 2  # SETUP, SETUP2
DRAIN = 4  # DRAIN states: memory read, |diff| register, sum register, accumulate
CENTRE_TAIL = 2  # COMPARE, NEXT
NEIGHBOUR_HEAD = 1  # PICK
INVALID = 3  # PICK, SETUP, NEXT
BLOCK_HEAD = 1  # BLOCK
EMIT = 1
# Cycles from START to the first input word and from the last record to DONE, as the
# cocotb testbench drives it (AXI-Lite write response, the source's first beat).
START_LATENCY = 3
ENCODE_HEAD = 256  # histogram clear (the first input words arrive meanwhile)
ENCODE_TAIL = 2  # lookup register, packer output register


def steps(p: int) -> list[int]:
    s, out = (p + 1) // 2, []
    while s >= 1:
        out.append(s)
        s //= 2
    return out


def _blocks(h, w, b):
    for y0 in range(0, h, b):
        for x0 in range(0, w, b):
            yield y0, x0, min(b, h - y0), min(b, w - x0)


def _valid(y0, x0, bh, bw, dy, dx, h, w):
    return 0 <= y0 + dy and y0 + dy + bh <= h and 0 <= x0 + dx and x0 + dx + bw <= w


ORDER = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def motion_cycles(shape, block, search, lanes=8, ref=None, cur=None) -> int:
    """Cycles of one MOTION operation on the on-chip design.

    With ``ref`` and ``cur`` (the centred int16 (H, W, C) maps of the golden model) the
    TSS path is replayed, so invalid candidates are counted exactly; without them every
    step's centre is taken as (0, 0) (what ~99 % of real blocks do, SPEC section 6).
    """
    h, w, c = shape
    cw = -(-c // lanes)
    total = START_LATENCY
    for y0, x0, bh, bw in _blocks(h, w, block):
        words = bh * bw * cw
        total += BLOCK_HEAD + words + EMIT
        best_v = (0, 0)
        best = None
        if ref is not None:
            best = _cost(ref, cur, y0, x0, bh, bw, 0, 0)
        total += SETUP + words + DRAIN + CENTRE_TAIL
        for s in steps(search):
            cy, cx = best_v
            for oy, ox in ORDER:
                dy, dx = cy + oy * s, cx + ox * s
                if _valid(y0, x0, bh, bw, dy, dx, h, w):
                    total += NEIGHBOUR_HEAD + SETUP + words + DRAIN + CENTRE_TAIL
                    if ref is not None:
                        cost = _cost(ref, cur, y0, x0, bh, bw, dy, dx)
                        if cost < best:
                            best, best_v = cost, (dy, dx)
                else:
                    total += INVALID
    return total


def _cost(ref, cur, y0, x0, bh, bw, dy, dx):
    a = ref[y0 + dy : y0 + dy + bh, x0 + dx : x0 + dx + bw].astype(np.int64)
    return int(np.abs(a - cur[y0 : y0 + bh, x0 : x0 + bw]).sum())


def encode_cycles(count: int) -> int:
    """ENCODE of ``count`` symbols: one per cycle after the histogram clear."""
    return ENCODE_HEAD + count + ENCODE_TAIL


def requant_cycles(count: int, lanes: int = 8) -> int:
    return START_LATENCY + -(-count // lanes) + 2


def band_motion_cycles(shape, block, search, lanes=16, units=8) -> int:
    """The band design (modelled): per TSS step one pass over the map; ``units`` SAD units
    of ``lanes`` bytes each score the step's candidates of a block together, so a pass
    costs ceil(candidates / units) * H * W * C / lanes cycles (the first step has 9)."""
    h, w, c = shape
    per_pass = h * w * -(-c // lanes)
    total = 0
    for i, _ in enumerate(steps(search)):
        cands = 9 if i == 0 else 8
        total += -(-cands // units) * per_pass
    return total


# ----------------------------------------------------------------------------- the table

# Every cut the project knows (SPEC section 3): the SSD's on 300x300, the R50 FPN's on
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
    anchor_cycles: int
    pred_cycles: int
    anchor_fps: float
    pred_fps: float
    group_fps: float  # bi-3: one anchor and two predicted frames
    ddr_mb_per_frame: float  # DMA traffic of an average frame of the group
    ddr_mbps_at_30: float

    def fits(self) -> bool:
        return self.ddr_mbps_at_30 * 1e6 <= DMA_MM2S_BPS


def row(name, shape, block, search=7, n_bits=4, lanes=8, ref_bytes=256 * 1024, band_lanes=16, band_units=8) -> Row:
    h, w, c = shape
    elements = h * w * c
    anchor = encode_cycles(elements)
    if elements <= ref_bytes:
        design = f"on-chip, {lanes} lanes"
        pred = motion_cycles(shape, block, search, lanes)
        # anchor: the map in, the section out (~n_bits/8 of it, upper bound N bits/element);
        # predicted: the current frame in, 8 bytes per block out.
        nb = -(-h // block) * -(-w // block)
        traffic = ((elements + elements * n_bits / 8) + 2 * (elements + 8 * nb)) / 3
    else:
        design = f"band (model), {band_units}x{band_lanes} lanes"
        nst = len(steps(search))
        ref_bytes_n = elements * n_bits / 8  # the anchor's N-bit codes kept packed in DDR
        # anchor: map in, section out, N-bit codes written back for the reference;
        # predicted: per step one pass of the current frame and the reference band.
        traffic = ((elements + 2 * ref_bytes_n) + 2 * nst * (elements + ref_bytes_n)) / 3
        # a pass is bound by the DMA (MM2S) when the SAD units outrun it
        dma_pass = (elements + ref_bytes_n) / (DMA_MM2S_BPS / CLOCK_HZ)
        pred = max(band_motion_cycles(shape, block, search, band_lanes, band_units), int(nst * dma_pass))
    anchor = max(anchor, int(elements / (DMA_MM2S_BPS / CLOCK_HZ)))
    anchor_fps = CLOCK_HZ / anchor
    pred_fps = CLOCK_HZ / pred
    group_fps = 3 * CLOCK_HZ / (anchor + 2 * pred)
    return Row(name, shape, block, design, anchor, pred, anchor_fps, pred_fps, group_fps,
               traffic / 1e6, traffic * 30 / 1e6)


def table(search=7, n_bits=4, lanes=8, ref_bytes=256 * 1024) -> list[Row]:
    return [row(n, s, b, search, n_bits, lanes, ref_bytes) for n, s, b in SSD_CUTS + R50_CUTS]


def format_table(rows: list[Row], search=7) -> str:
    head = (f"{'cut':26} {'H x W x C':>14} {'B':>2} {'design':28} {'anchor cyc':>11} {'pred cyc':>11} "
            f"{'anchor f/s':>10} {'pred f/s':>9} {'bi-3 f/s':>9} {'DDR MB/fr':>9} {'MB/s @30':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        h, w, c = r.shape
        lines.append(
            f"{r.name:26} {f'{h}x{w}x{c}':>14} {r.block:>2} {r.design:28} {r.anchor_cycles:>11,} "
            f"{r.pred_cycles:>11,} {r.anchor_fps:>10.1f} {r.pred_fps:>9.1f} {r.group_fps:>9.1f} "
            f"{r.ddr_mb_per_frame:>9.2f} {r.ddr_mbps_at_30:>9.1f}"
        )
    lines.append(
        f"100 MHz; p = {search}; TSS one vector per block; Huffman 1 symbol/cycle; DMA limits "
        f"MM2S {DMA_MM2S_BPS / 1e6:.0f} MB/s, S2MM {DMA_S2MM_BPS / 1e6:.0f} MB/s (AXI DMA, 32 bit); "
        f"HP port {HP_PORT_BPS / 1e6:.0f} MB/s."
    )
    return "\n".join(lines)
