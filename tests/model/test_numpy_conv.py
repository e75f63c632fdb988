"""The exact convolution kernels of the NumPy M1 (model/numpy_conv.py): the float32 bound,
the reduction's slices on worst-case weights and inputs, and the sums against int64."""

from __future__ import annotations

import numpy as np
import pytest

from temposplit.model import numpy_conv as nc


def _reference_conv(x, w, bias, stride):
    """int64 direct convolution: x (N, C, H, W) codes, w (O, C, kh, kw), no padding."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, o, ho, wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch.astype(np.int64), w[:, :, i, j].astype(np.int64))
    return out + bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("value", [127, -128])
def test_slices_hold_the_bound_on_the_worst_case_and_are_maximal(value):
    """All weights at an int8 extreme, codes at 255: every slice's bound stays below 2**24 and
    one more column would break it (greedy), and the slices tile the reduction."""
    k = 2000
    w = np.full((3, k), value, np.int64)
    slices = nc.reduction_slices(w)
    assert slices[0][0] == 0 and slices[-1][1] == k
    assert all(a1 == b0 for (_, a1), (b0, _) in zip(slices, slices[1:], strict=False))
    per_col = abs(value) * 255
    for a, b in slices:
        assert (b - a) * per_col < nc.EXACT_F32
    for a, b in slices[:-1]:
        assert (b - a + 1) * per_col >= nc.EXACT_F32
    assert len(slices) == -(-k // ((nc.EXACT_F32 - 1) // per_col))


def test_float32_without_slices_is_not_exact_on_the_worst_case():
    """What the slices prevent: a sequential float32 sum of 127 * 255 terms past 2**24 rounds."""
    terms = np.full(2000, 127 * 255, np.float32)
    sequential = np.add.accumulate(terms, dtype=np.float32)[-1]
    assert int(sequential) != 2000 * 127 * 255
    sliced = sum(int(np.add.accumulate(terms[a:b], dtype=np.float32)[-1]) for a, b in nc.reduction_slices(terms[None]))
    assert sliced == 2000 * 127 * 255


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["max", "min", "alternating", "random"])
def test_exact_gemm_equals_int64(case, dtype):
    rng = np.random.default_rng(len(case))
    o, k, p = 5, 1500, 7
    if case == "max":
        w, x = np.full((o, k), 127), np.full((2, k, p), 255)
    elif case == "min":
        w, x = np.full((o, k), -128), np.full((2, k, p), 255)
    elif case == "alternating":  # large partial sums of both signs in any summation order
        w = np.where(np.arange(k) < k // 2, 127, -128)[None].repeat(o, 0)
        x = np.where(rng.random((2, k, p)) < 0.9, 255, 0)
    else:
        w, x = rng.integers(-128, 128, (o, k)), rng.integers(0, 256, (2, k, p))
    bias = rng.integers(-(2**31) + 1, 2**31, o)
    gemm = nc.ExactGemm(w, bias, dtype=dtype)
    cols = np.concatenate([x, np.ones((2, gemm.extra, p))], axis=1).astype(dtype)
    acc = gemm(cols)
    if gemm.bias_inside:
        got = acc.astype(np.int64)
    else:
        got = acc.astype(np.int64) + gemm.bias.astype(np.int64)[:, None]
    ref = np.matmul(w.astype(np.int64), x.astype(np.int64)) + bias[:, None]
    assert np.array_equal(got, ref)
    if dtype == np.float32 and case != "random":
        assert len(gemm.slices) > 1  # these bounds need slices in float32
    if dtype == np.float64:
        assert gemm.bias_inside and len(gemm.slices) == 1


def test_bias_rides_in_the_gemm_only_within_the_bound():
    w = np.full((2, 16), 100)
    small = nc.ExactGemm(w, np.array([5, -5]))
    assert small.bias_inside and small.extra == 1 and small.w.shape == (2, 17)
    large = nc.ExactGemm(w, np.array([2**24, 0]))
    assert not large.bias_inside and large.extra == 0 and large.bias.dtype == np.int32
    with pytest.raises(ValueError):
        nc.ExactGemm(w, np.array([2**31, 0]))


@pytest.mark.parametrize("k,stride", [(1, 1), (1, 2), (3, 1), (3, 2)])
def test_conv_gemm_equals_direct_int64(monkeypatch, k, stride):
    """im2col in several row strips (a tiny strip size) and the 1x1 path, weights at the
    int8 extremes so that the 3x3 layer with 600 input channels needs slices."""
    monkeypatch.setattr(nc, "IM2COL_ELEMENTS", 600 * 9 * 4)
    rng = np.random.default_rng(k * 10 + stride)
    c = 600 if k == 3 else 40
    x = rng.integers(200, 256, (2, c, 9, 11)).astype(np.uint8)
    w = rng.choice(np.array([-128, 127]), (6, c, k, k))
    bias = rng.integers(-(2**20), 2**20, 6)
    gemm = nc.ExactGemm(w.reshape(6, -1), bias)
    ho, wo = (9 - k) // stride + 1, (11 - k) // stride + 1
    acc = nc.conv_gemm(x, gemm, k, k, (stride, stride), ho, wo)
    got = acc.astype(np.int64) + (0 if gemm.bias_inside else gemm.bias.astype(np.int64).reshape(1, -1, 1, 1))
    assert np.array_equal(got, _reference_conv(x, w, bias, stride))
    if k == 3:
        assert len(gemm.slices) > 1


@pytest.mark.parametrize("block", [1 << 16, 9 * 4 * 3])
@pytest.mark.parametrize("bias_scale", [2**10, 2**28])
@pytest.mark.parametrize("bits", [8, 16])
def test_depthwise_equals_int64_on_the_worst_case(monkeypatch, bias_scale, block, bits):
    """Extreme taps (int8, or int16: split into two float32 halves joined in int32) and
    codes, the bias inside or not, one block of channels or several."""
    monkeypatch.setattr(nc, "DEPTHWISE_BLOCK", block)
    rng = np.random.default_rng(bias_scale % 97)
    c = 8
    top = 2 ** (bits - 1) - 1
    taps = rng.choice(np.array([-top - (bits == 8), top]), (c, 9))
    bias = rng.integers(-bias_scale, bias_scale, c)
    x = np.full((1, c, 7, 9), 255, np.uint8)
    x[0, ::2, ::3] = 0
    dw = nc.ExactDepthwise(taps, bias)
    assert dw.dtype == np.float32 and dw.split == (bits == 16)
    assert dw.bias_inside == (bits == 8 and bias_scale < 2**20)
    for stride in (1, 2):
        ho, wo = (7 - 3) // stride + 1, (9 - 3) // stride + 1
        acc = dw(x, 3, 3, (stride, stride), ho, wo)
        got = acc.astype(np.int64) + (0 if dw.bias_inside else dw.bias.astype(np.int64).reshape(1, -1, 1, 1))
        ref = np.zeros((1, c, ho, wo), np.int64)
        for ch in range(c):
            one = np.zeros((c, c, 3, 3), np.int64)
            one[ch, ch] = taps[ch].reshape(3, 3)
            ref[:, ch] = _reference_conv(x, one, np.zeros(c, np.int64), stride)[:, ch]
        assert np.array_equal(got, ref + bias.reshape(1, -1, 1, 1))


def test_depthwise_taps_too_wide_to_split_sum_in_float64_exactly():
    """Taps whose halves' sums would pass 2**24 (not int16 weights) fall back on float64."""
    rng = np.random.default_rng(5)
    taps = rng.integers(-(2**22), 2**22, (3, 9))
    x = rng.integers(0, 256, (1, 3, 5, 6)).astype(np.uint8)
    dw = nc.ExactDepthwise(taps)
    assert dw.dtype == np.float64 and not dw.split
    acc = dw(x, 3, 3, (1, 1), 3, 4)
    for ch in range(3):
        one = np.zeros((3, 3, 3, 3), np.int64)
        one[ch, ch] = taps[ch].reshape(3, 3)
        ref = _reference_conv(x, one, np.zeros(3, np.int64), 1)[:, ch]
        assert np.array_equal(acc[:, ch].astype(np.int64), ref)


def test_int16_depthwise_with_a_bias_near_the_int32_limit_sums_in_float64():
    """Split sums are joined, and the bias added, in int32: a bias that could take the sum
    past 2**31 keeps the float64 path."""
    taps = np.full((1, 9), 32767)
    assert nc.ExactDepthwise(taps, np.array([1000])).split
    dw = nc.ExactDepthwise(taps, np.array([2**31 - 1000]))
    assert not dw.split and dw.dtype == np.float64 and dw.bias_inside


def test_a_product_over_the_float32_range_is_refused():
    with pytest.raises(ValueError):
        nc.reduction_slices(np.array([[2**20]]))
    with pytest.raises(ValueError):
        nc.ExactDepthwise(np.full((1, 4), 2**46))  # beyond float64's exact integers
