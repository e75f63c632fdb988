"""Block motion estimation (Three-Step-Search, full search) and motion compensation.

Maps here are channel-last, ``(H, W, C)``: the bitstream's element order, and the
layout that lets a compiled kernel read a block row of all channels as one run.

The rules (docs/bitstream.md, section 3):

- Blocks tile the map from (0, 0) in B x B squares, raster order; the last row and
  column of blocks are truncated to the map.
- Cost of a candidate (dy, dx): the sum over the block (and over all channels, or one
  channel with per-channel vectors) of |ref[y+dy, x+dx] - cur[y, x]|, where ``ref`` is
  the reference's N-bit codes centred on the 8-bit grid, ((a_N - z_N) << k), and
  ``cur`` the current frame's quint8 codes centred, (c8 - z8); see
  :func:`temposplit.codec.quantize.centred`.
- A candidate is valid only if the displaced block lies entirely inside the map.
- TSS with search range p in {3, 7, 15}: step s = (p+1)/2, halving down to 1. At each
  step the centre (cost carried from the step before) and its 8 neighbours at
  (dy, dx) in {-s, 0, s}^2, in the order (-s,-s), (-s,0), (-s,s), (0,-s), (0,s),
  (s,-s), (s,0), (s,s); a candidate replaces the best only when its cost is strictly
  lower; the centre of the next step is the best so far. The first centre is (0, 0).
- Full search scans dy, dx in -p..p in raster order (dy outer) with the same strict
  rule; it is the reference that TSS never beats.

The functions named here are the readable definition. :mod:`temposplit.codec._kernels`
holds the compiled fast path, tested equal to these. They are also the one definition of
TSS (order, steps, tiling, validity, cost) for the fabric: the gateware generators
(``hw/motion_estimator.py``, ``hw/band_motion.py``) and the cycle model
(``hw/cyclemodel.py``) import them, and the step, tiling, validity and cost rules are
written so that they evaluate on Python integers, NumPy arrays and Amaranth values alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from temposplit.codec.errors import ConfigurationError

SEARCH_RANGES = (3, 7, 15)
MAX_BLOCK = 64

# The 8 neighbours of a TSS centre, in the fixed order, as multiples of the step.
TSS_ORDER = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def check_block(block: int) -> int:
    if (
        isinstance(block, (bool, np.bool_))
        or not isinstance(block, (int, np.integer))
        or not 1 <= int(block) <= MAX_BLOCK
    ):
        raise ConfigurationError(f"block size B must be an integer in 1..{MAX_BLOCK}, not {block!r}")
    return int(block)


def check_search_range(p: int) -> int:
    # An integer, as check_block and check_bits require: 7.0 and 7+0j equal 7 but are no
    # search range (and True == 1 is none either).
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or int(p) not in SEARCH_RANGES:
        raise ConfigurationError(f"search range p must be an integer, one of {SEARCH_RANGES}, not {p!r}")
    return int(p)


def tss_first_step(p):
    """The first step of TSS for search range p: (p+1)/2."""
    return (p + 1) >> 1


def tss_next_step(s):
    """The step after step s (halving); 0 when s was the last step."""
    return s >> 1


def tss_steps(p: int) -> list[int]:
    """Step sizes of TSS for search range p: (p+1)/2, halving down to 1."""
    s = tss_first_step(check_search_range(p))
    steps = []
    while s >= 1:
        steps.append(s)
        s = tss_next_step(s)
    return steps


def tss_candidates(p: int, first: bool = True) -> int:
    """Candidates a TSS step scores: the centre and its 8 neighbours in the first step,
    the 8 neighbours after (the centre's cost is carried)."""
    return len(TSS_ORDER) + (1 if first else 0)


def grid_shape(height: int, width: int, block: int) -> tuple[int, int]:
    """Number of block rows and columns tiling an H x W map."""
    return -(-height // block), -(-width // block)


def block_extent(origin, block, size, select=None):
    """Rows (or columns) of the block starting at ``origin``: B, truncated at the map's edge.
    ``select(cond, a, b)`` picks for symbolic values (Amaranth's ``Mux``); default ``min``."""
    rest = size - origin
    return min(block, rest) if select is None else select(rest < block, rest, block)


def last_block(origin, block, size):
    """Whether the block at ``origin`` is the last of its row (column) of blocks."""
    return origin + block >= size


def blocks(height: int, width: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """(y0, x0, bh, bw) of each block in raster order."""
    for y0 in range(0, height, block):
        for x0 in range(0, width, block):
            yield y0, x0, block_extent(y0, block, height), block_extent(x0, block, width)


def valid_window(y0, x0, bh, bw, height, width):
    """The displacements that keep the block inside the map, (dy_lo, dy_hi, dx_lo, dx_hi):
    dy in [-y0, height - bh - y0], dx in [-x0, width - bw - x0] (the block's own terms, so
    hardware can hold them in registers for the block's candidates)."""
    return -y0, height - bh - y0, -x0, width - bw - x0


def window_tests(dy, dx, window):
    """The four bounds of a :func:`valid_window` that (dy, dx) must meet, each alone (so
    hardware can register them before their AND)."""
    dy_lo, dy_hi, dx_lo, dx_hi = window
    return (dy_lo <= dy), (dy <= dy_hi), (dx_lo <= dx), (dx <= dx_hi)


def in_window(dy, dx, window):
    """Whether (dy, dx) lies in a :func:`valid_window`: all of :func:`window_tests`."""
    lo_y, hi_y, lo_x, hi_x = window_tests(dy, dx, window)
    return lo_y & hi_y & lo_x & hi_x


def is_valid(y0, x0, bh, bw, dy, dx, height, width):
    """Whether the block displaced by (dy, dx) lies entirely inside the map."""
    return in_window(dy, dx, valid_window(y0, x0, bh, bw, height, width))


def centred_ref(a_n, z_n, k):
    """A reference code on the 8-bit grid, centred: (a_N - z_N) << k (k = 8 - N)."""
    return (a_n - z_n) << k


def centred_cur(c8, z8):
    """A current-frame code centred: c8 - z8."""
    return c8 - z8


def element_cost(ref_c, cur_c):
    """One element's cost: |ref - cur| of the centred codes (:func:`centred_ref`, :func:`centred_cur`)."""
    return abs(ref_c - cur_c)


def block_cost(ref: np.ndarray, cur: np.ndarray, y0: int, x0: int, bh: int, bw: int, dy: int, dx: int) -> int:
    a = ref[y0 + dy : y0 + dy + bh, x0 + dx : x0 + dx + bw].astype(np.int64)
    c = cur[y0 : y0 + bh, x0 : x0 + bw].astype(np.int64)
    return int(element_cost(a, c).sum())


def _check_pair(ref: np.ndarray, cur: np.ndarray) -> None:
    if ref.ndim != 3 or ref.shape != cur.shape:
        raise ConfigurationError(
            f"reference and current maps must be (H, W, C) of one shape, not {ref.shape} and {cur.shape}"
        )


def _search_block(ref, cur, y0, x0, bh, bw, p, full):
    height, width = ref.shape[:2]
    best = block_cost(ref, cur, y0, x0, bh, bw, 0, 0)
    best_v = (0, 0)
    if full:
        best, best_v = None, None
        for dy in range(-p, p + 1):
            for dx in range(-p, p + 1):
                if is_valid(y0, x0, bh, bw, dy, dx, height, width):
                    c = block_cost(ref, cur, y0, x0, bh, bw, dy, dx)
                    if best is None or c < best:
                        best, best_v = c, (dy, dx)
        return best_v, best
    for s in tss_steps(p):
        cy, cx = best_v
        for oy, ox in TSS_ORDER:
            dy, dx = cy + oy * s, cx + ox * s
            if is_valid(y0, x0, bh, bw, dy, dx, height, width):
                c = block_cost(ref, cur, y0, x0, bh, bw, dy, dx)
                if c < best:
                    best, best_v = c, (dy, dx)
    return best_v, best


def _search(ref, cur, block, p, per_channel, full):
    _check_pair(ref, cur)
    block, p = check_block(block), check_search_range(p)
    height, width, channels = ref.shape
    nby, nbx = grid_shape(height, width, block)
    lanes = [(slice(c, c + 1)) for c in range(channels)] if per_channel else [slice(None)]
    mvs = np.zeros((nby, nbx, len(lanes), 2), np.int8)
    costs = np.zeros((nby, nbx, len(lanes)), np.int64)
    for li, lane in enumerate(lanes):
        r, c = ref[:, :, lane], cur[:, :, lane]
        for y0, x0, bh, bw in blocks(height, width, block):
            v, cost = _search_block(r, c, y0, x0, bh, bw, p, full)
            mvs[y0 // block, x0 // block, li] = v
            costs[y0 // block, x0 // block, li] = cost
    if not per_channel:
        return mvs[:, :, 0], costs[:, :, 0]
    return mvs, costs


def three_step_search(ref: np.ndarray, cur: np.ndarray, block: int, p: int, per_channel: bool = False):
    """TSS motion vectors of ``cur`` against ``ref`` (both centred int16 ``(H, W, C)``).

    Returns ``(mvs, costs)``: int8 ``(nby, nbx, 2)`` vectors (dy, dx) and int64
    ``(nby, nbx)`` costs; with ``per_channel`` an extra channel axis before the last:
    ``(nby, nbx, C, 2)`` and ``(nby, nbx, C)``.
    """
    return _search(ref, cur, block, p, per_channel, full=False)


def full_search(ref: np.ndarray, cur: np.ndarray, block: int, p: int, per_channel: bool = False):
    """Exhaustive search over the same window; same return values as :func:`three_step_search`."""
    return _search(ref, cur, block, p, per_channel, full=True)


def motion_compensate(ref_codes: np.ndarray, mvs: np.ndarray, block: int) -> np.ndarray:
    """The predicted map: each block copied from ``ref_codes`` (``(H, W, C)``) at its vector.

    ``mvs`` is ``(nby, nbx, 2)`` (shared by the channels) or ``(nby, nbx, C, 2)``.
    Raises :class:`ConfigurationError` if a vector displaces a block outside the map.
    """
    height, width, channels = ref_codes.shape
    nby, nbx = grid_shape(height, width, block)
    per_channel = mvs.ndim == 4
    expected = (nby, nbx, channels, 2) if per_channel else (nby, nbx, 2)
    if mvs.shape != expected:
        raise ConfigurationError(f"motion vectors must have shape {expected}, not {mvs.shape}")
    out = np.empty_like(ref_codes)
    for y0, x0, bh, bw in blocks(height, width, block):
        vs = mvs[y0 // block, x0 // block]
        for c, (dy, dx) in enumerate(vs if per_channel else [vs]):
            dy, dx = int(dy), int(dx)
            if not is_valid(y0, x0, bh, bw, dy, dx, height, width):
                raise ConfigurationError(f"vector ({dy}, {dx}) moves block ({y0}, {x0}) outside the map")
            lane = slice(c, c + 1) if per_channel else slice(None)
            out[y0 : y0 + bh, x0 : x0 + bw, lane] = ref_codes[y0 + dy : y0 + dy + bh, x0 + dx : x0 + dx + bw, lane]
    return out


def _coding_cost(ref, cur, y0, x0, bh, bw, dy, dx, rcost, vcost) -> int:
    """A block's residual cost with the vector (dy, dx) plus the vector's (:func:`refine_vectors`)."""
    r = cur[y0 : y0 + bh, x0 : x0 + bw] - ref[y0 + dy : y0 + dy + bh, x0 + dx : x0 + dx + bw]
    return int(rcost[np.abs(r)].sum()) + int(vcost[abs(dy)] + vcost[abs(dx)])


def refine_vectors(
    ref_n: np.ndarray,
    cur_n: np.ndarray,
    mvs: np.ndarray,
    coded: np.ndarray,
    block: int,
    p: int,
    radius: int,
    rcost: np.ndarray,
    vcost: np.ndarray,
) -> np.ndarray:
    """Vectors for the coded blocks chosen for the cost of coding them, not for SAD
    (encoder-side; the readable definition of :func:`temposplit.codec._kernels.refine_shared`).

    ``ref_n``, ``cur_n``: the reference's and the current frame's N-bit codes (H, W, C);
    ``mvs`` (nby, nbx, 2): the search's vectors; ``coded`` (nby, nbx): the blocks whose
    residual is sent. A coded block's cost with vector v is the sum of ``rcost[|r|]`` over
    its residual r = cur_N - ref_N displaced by v, plus ``vcost[|dy|] + vcost[|dx|]``.
    Blocks in raster order; candidates in order: the given vector, (0, 0), the final
    vectors of the blocks to the left and above, every vector within ``radius`` of the
    given one (dy outer); a candidate must lie within +-p and keep the block in the map,
    and replaces the best only when strictly cheaper. Blocks not coded keep their vector.
    """
    height, width, _ = ref_n.shape
    ref = ref_n.astype(np.int64)
    cur = cur_n.astype(np.int64)
    out = mvs.copy()
    for y0, x0, bh, bw in blocks(height, width, block):
        by, bx = y0 // block, x0 // block
        if not coded[by, bx]:
            continue

        gy, gx = int(mvs[by, bx, 0]), int(mvs[by, bx, 1])
        candidates = [(0, 0)]
        if bx > 0:
            candidates.append(tuple(int(v) for v in out[by, bx - 1]))
        if by > 0:
            candidates.append(tuple(int(v) for v in out[by - 1, bx]))
        candidates += [(gy + a, gx + b) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)]
        best, best_v = _coding_cost(ref, cur, y0, x0, bh, bw, gy, gx, rcost, vcost), (gy, gx)
        for dy, dx in candidates:
            if max(abs(dy), abs(dx)) > p or not is_valid(y0, x0, bh, bw, dy, dx, height, width):
                continue
            c = _coding_cost(ref, cur, y0, x0, bh, bw, dy, dx, rcost, vcost)
            if c < best:
                best, best_v = c, (dy, dx)
        out[by, bx] = best_v
    return out
