import numpy as np
import pytest

from temposplit.codec import _kernels, motion, quantize
from temposplit.codec.errors import ConfigurationError


def centred_pair(rng, h, w, c, n, z8, shift=(1, 2)):
    base = rng.integers(0, 256, (h + 8, w + 8, c)).astype(np.uint8)
    a8, c8 = base[:h, :w], base[shift[0] : shift[0] + h, shift[1] : shift[1] + w]
    a_n = quantize.requantize(np.ascontiguousarray(a8), z8, n)
    return a_n, quantize.centred(a_n, z8, n), c8.astype(np.int16) - z8


def test_tss_steps():
    assert motion.tss_steps(3) == [2, 1]
    assert motion.tss_steps(7) == [4, 2, 1]
    assert motion.tss_steps(15) == [8, 4, 2, 1]
    with pytest.raises(ConfigurationError):
        motion.tss_steps(5)


def test_blocks_tile_from_the_origin_and_truncate_at_the_edges():
    got = list(motion.blocks(5, 7, 4))
    assert got == [(0, 0, 4, 4), (0, 4, 4, 3), (4, 0, 1, 4), (4, 4, 1, 3)]
    assert motion.grid_shape(5, 7, 4) == (2, 2)


def test_a_vector_points_from_the_block_to_where_it_is_found_in_the_reference():
    rng = np.random.default_rng(0)
    a = rng.integers(-200, 200, (24, 24, 3)).astype(np.int16)
    cur = np.zeros_like(a)
    cur[4:20, 4:20] = a[3:19, 6:22]  # cur[y, x] = a[y - 1, x + 2]
    mvs, costs = motion.full_search(a, cur, 4, 7)
    assert tuple(mvs[2, 2]) == (-1, 2) and costs[2, 2] == 0


def test_tss_follows_a_smooth_map_to_a_shift():
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = (((yy - 15.0) ** 2 + (xx - 17.0) ** 2) * 0.6).astype(np.int16)[..., None]
    cur = np.zeros_like(smooth)
    cur[8:24, 8:24] = smooth[11:27, 6:22]  # cur[y, x] = smooth[y + 3, x - 2]
    mvs, costs = motion.three_step_search(smooth, cur, 8, 7)
    assert tuple(mvs[1, 1]) == (3, -2) and costs[1, 1] == 0


def test_tss_order_and_strict_ties_prefer_the_zero_vector():
    flat = np.zeros((12, 12, 2), np.int16)  # every candidate costs 0: the first centre stays
    mvs, costs = motion.three_step_search(flat, flat, 4, 7)
    assert (mvs == 0).all() and (costs == 0).all()


def test_tss_skips_candidates_outside_the_map():
    rng = np.random.default_rng(1)
    ref = rng.integers(-50, 50, (9, 9, 1)).astype(np.int16)
    cur = rng.integers(-50, 50, (9, 9, 1)).astype(np.int16)
    mvs, _ = motion.three_step_search(ref, cur, 4, 15)
    for y0, x0, bh, bw in motion.blocks(9, 9, 4):
        dy, dx = mvs[y0 // 4, x0 // 4]
        assert motion.is_valid(y0, x0, bh, bw, int(dy), int(dx), 9, 9)


@pytest.mark.parametrize("seed", range(25))
def test_kernels_equal_the_readable_definition_and_tss_never_beats_full_search(seed):
    rng = np.random.default_rng(seed)
    h, w, c = (int(v) for v in rng.integers(1, 14, 3))
    c = min(c, 4)
    block, p, n = int(rng.integers(1, 6)), int(rng.choice([3, 7, 15])), int(rng.integers(2, 9))
    z8 = int(rng.integers(0, 256))
    a_n, ref, cur = centred_pair(rng, h, w, c, n, z8)
    for per_channel in (False, True):
        kernel = _kernels.tss_per_channel if per_channel else _kernels.tss_shared
        m1, c1 = motion.three_step_search(ref, cur, block, p, per_channel)
        f1, fc1 = motion.full_search(ref, cur, block, p, per_channel)
        m2, c2 = kernel(np.ascontiguousarray(ref), np.ascontiguousarray(cur), block, p, False)
        f2, fc2 = kernel(np.ascontiguousarray(ref), np.ascontiguousarray(cur), block, p, True)
        assert (m1 == m2).all() and (c1 == c2).all()
        assert (f1 == f2).all() and (fc1 == fc2).all()
        assert (fc1 <= c1).all()
        comp = _kernels.compensate_per_channel if per_channel else _kernels.compensate_shared
        p1 = motion.motion_compensate(a_n, m1, block)
        p2, bad = comp(a_n, m1, block)
        assert bad == -1 and (p1 == p2).all()


def test_cost_is_computed_on_the_8_bit_grid():
    # One pixel: anchor code a_N against current c8, |((a_N - z_N) << k) - (c8 - z8)|
    z8, n = 130, 4
    a_n = quantize.requantize(np.array([[[200]]], np.uint8), z8, n)
    ref = quantize.centred(a_n, z8, n)
    cur = np.array([[[190]]], np.int16) - z8
    _, cost = motion.three_step_search(ref, cur, 1, 3)
    zn = quantize.zero_point_n(z8, n)
    assert cost[0, 0] == abs(((int(a_n[0, 0, 0]) - zn) << 4) - (190 - z8))


def test_compensation_refuses_vectors_outside_the_map():
    codes = np.zeros((8, 8, 1), np.uint8)
    mvs = np.zeros((2, 2, 2), np.int8)
    mvs[0, 0] = (-1, 0)
    with pytest.raises(ConfigurationError, match="outside"):
        motion.motion_compensate(codes, mvs, 4)
