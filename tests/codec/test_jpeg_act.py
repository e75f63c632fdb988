"""JPEG-ACT baseline: tables, exact entropy layer, error bounds, sizes, unsigned handling, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from temposplit.codec import jpeg_act
from temposplit.codec.jpeg_act import (
    compress,
    decode_coefficients,
    decompress,
    encode_coefficients,
    quant_table,
    quantized_coefficients,
)

TABLES = ("optL", "optH", "optsL", "optsH", "jpeg10", "jpeg50", "jpeg90", "jpeg100")


def smooth_tensor(shape, seed=0, amplitude=2.0, relu=False):
    """Spatially smooth activations (sums of low-frequency waves per channel) in fix35's range."""
    rng = np.random.default_rng(seed)
    *lead, h, w = shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.zeros(shape, np.float64)
    for index in np.ndindex(*lead):
        for _ in range(3):
            fy, fx = rng.uniform(0, 0.4, 2)
            phase = rng.uniform(0, 2 * np.pi)
            out[index] += rng.uniform(0.2, 1.0) * np.cos(fy * yy + fx * xx + phase)
    out = amplitude * out / max(np.abs(out).max(), 1e-9)
    if relu:
        out = np.maximum(out - 0.3, 0)
    return out.astype(np.float32)


def fix35(x):
    return np.clip(np.rint(x * 32), -128, 127)


# --------------------------------------------------------------------------- tables


def test_tables_follow_the_reference():
    assert quant_table("optL")[0].tolist() == [8, 7, 7, 7, 7, 6, 6, 6]
    assert quant_table("optH")[:, 0].tolist() == [8, 26, 26, 25, 25, 24, 23, 22]
    for name, base in (("optsL", "optL"), ("optsH", "optH")):
        t, b = quant_table(name), quant_table(base)
        assert np.all(np.log2(t) == np.rint(np.log2(t)))  # powers of two
        assert np.all((t / b <= math.sqrt(2)) & (b / t <= math.sqrt(2)))  # the nearest one, in log scale
    assert quant_table("jpeg50")[0].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert np.all(quant_table("jpeg100") == 1)
    assert quant_table("jpeg1").max() == 255 and quant_table("jpeg1").min() >= 1
    tables = [quant_table(f"jpeg{q}") for q in (5, 25, 50, 75, 95)]
    assert all(np.all(a >= b) and np.any(a > b) for a, b in zip(tables, tables[1:], strict=False))


# --------------------------------------------------------------------------- entropy layer


def sparse_coefficients(rng, n_blocks, density):
    q = rng.integers(-128, 128, (n_blocks, 64)).astype(np.int8)
    q[rng.random((n_blocks, 64)) > density] = 0
    return q


def edge_blocks():
    """Blocks that exercise EOB omission, ZRL chains, the extreme values and all-zero blocks."""
    blocks = np.zeros((6, 64), np.int8)
    blocks[1, :] = np.arange(64) % 255 - 127  # every coefficient non-zero except one: no trailing EOB
    blocks[1, blocks[1] == 0] = -128
    blocks[2, jpeg_act.ZIGZAG[63]] = 127  # 63 zeros, then a value in the last position: 3 ZRL + value
    blocks[3, jpeg_act.ZIGZAG[0]] = -128
    blocks[3, jpeg_act.ZIGZAG[16]] = 1  # exactly 15 zeros before a value, then exactly 16
    blocks[3, jpeg_act.ZIGZAG[33]] = -1
    blocks[4, jpeg_act.ZIGZAG[62]] = -2
    blocks[5, jpeg_act.ZIGZAG[47]] = 64
    return blocks


@pytest.mark.parametrize("coder", ["jpeg", "zvc"])
def test_entropy_round_trip_is_exact_on_edge_blocks(coder):
    q = edge_blocks()
    assert np.array_equal(decode_coefficients(encode_coefficients(q, coder), coder, q.shape[0]), q)


@pytest.mark.parametrize("coder", ["jpeg", "zvc"])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_blocks=st.integers(1, 300), density=st.floats(0.0, 1.0))
def test_entropy_round_trip_is_exact(coder, seed, n_blocks, density):
    q = sparse_coefficients(np.random.default_rng(seed), n_blocks, density)
    data = encode_coefficients(q, coder)
    decoded = decode_coefficients(data, coder, n_blocks)
    assert decoded.dtype == np.int8
    assert np.array_equal(decoded, q)


@pytest.mark.parametrize("coder", ["jpeg", "zvc"])
@pytest.mark.parametrize("table", ["optL", "optH", "jpeg75"])
def test_compressed_stream_holds_the_quantized_coefficients(coder, table):
    x = smooth_tensor((2, 5, 13, 21), seed=3)
    c = compress(x, table=table, coder=coder)
    assert c.shape == x.shape and c.coder == coder and c.table == table
    expected = quantized_coefficients(x, table)
    assert np.array_equal(decode_coefficients(c.data, coder, c.n_blocks), expected)


def test_zvc_size_formula_holds_exactly():
    for shape, seed in (((16, 19, 19), 0), ((1, 3, 8, 8), 1), ((96, 19, 19), 2)):
        x = smooth_tensor(shape, seed=seed, relu=True)
        for table in ("optL", "optH", "jpeg50"):
            c = compress(x, table=table, coder="zvc")
            q = quantized_coefficients(x, table)
            assert c.nbytes == math.ceil(q.size / 8) + np.count_nonzero(q)


def test_huffman_size_of_an_all_zero_tensor_is_one_bit_per_block():
    x = np.zeros((4, 16, 24), np.float32)
    c = compress(x, coder="jpeg", unsigned=False)
    n_blocks = 4 * 16 // 8 * 24 // 8
    # 16 length counts + one symbol (EOB) with a 1-bit code, then one bit per block.
    assert c.nbytes == 16 + 1 + math.ceil(n_blocks / 8)
    assert np.array_equal(decompress(c), x)


def test_huffman_beats_zvc_and_raw_on_smooth_features():
    x = smooth_tensor((96, 19, 19), seed=5)
    for table in ("optL", "optH"):
        jpeg = compress(x, table=table, coder="jpeg").nbytes
        zvc = compress(x, table=table, coder="zvc").nbytes
        assert jpeg < zvc < x.size  # x.size bytes = the tensor at 8 bits per element
    assert compress(x, table="optH").nbytes < compress(x, table="optL").nbytes


# --------------------------------------------------------------------------- reconstruction


# Coefficients reach 8 * 128 = 1024 in magnitude: the tables with entries below 8 can
# saturate int8 at full scale, so they are checked on smaller inputs.
BOUND_CASES = [(t, 3.9) for t in ("optL", "optH", "optsL", "optsH", "jpeg10", "jpeg50")]
BOUND_CASES += [("jpeg90", 0.45), ("jpeg100", 0.45)]


@pytest.mark.parametrize(("table", "amplitude"), BOUND_CASES)
def test_reconstruction_error_is_within_the_worst_case_bound(table, amplitude):
    # Per block, |Y - q*T| <= T - 1/2 per coefficient (rounding, then truncation), so the
    # spatial error (orthonormal DCT) is at most the L2 norm of that, plus 1/2 for rounding.
    rng = np.random.default_rng(11)
    x = rng.uniform(-amplitude, amplitude, (3, 17, 29)).astype(np.float32)
    c = compress(x, table=table, coder="jpeg")
    assert c.n_saturated == 0 and c.n_clipped == 0
    y = decompress(c)
    assert y.dtype == np.float32 and y.shape == x.shape
    t = quant_table(table).astype(np.float64)
    bound = math.floor(math.sqrt(np.sum((t - 0.5) ** 2)) + 0.5)
    assert np.abs(y * 32 - fix35(x)).max() <= bound


def test_lossless_table_errs_only_by_rounding():
    x = smooth_tensor((8, 19, 19), seed=2, amplitude=0.45)
    c = compress(x, table="jpeg100")
    assert c.n_saturated == 0
    y = decompress(c)
    assert np.abs(y * 32 - fix35(x)).max() <= 4  # the bound above for T = 1
    assert np.mean(y * 32 == fix35(x)) > 0.9


def test_coefficient_saturation_is_counted():
    x = np.full((1, 8, 8), 3.0, np.float32)  # DC = 8 * 96 = 768: over int8 for T < 7
    for table, saturates in (("optL", False), ("jpeg100", True), ("jpeg90", True)):
        c = compress(x, table=table)
        assert (c.n_saturated > 0) == saturates
        assert (np.abs(decompress(c) - x).max() > 0.5) == saturates


def test_error_grows_with_coarser_tables():
    x = smooth_tensor((32, 19, 19), seed=4)

    def err(table):
        return float(np.mean(np.abs(decompress(compress(x, table=table)) - x)))

    assert err("optL") < err("optH")
    assert err("optsL") < err("optsH")
    assert err("jpeg90") < err("jpeg50") < err("jpeg10")
    assert err("optL") < 0.1  # a few fix35 steps (1/32) on average


def test_shapes_three_and_four_d_and_out_of_range_values():
    for shape in ((1, 1, 1), (3, 7, 9), (2, 3, 8, 16), (1, 96, 19, 19)):
        x = smooth_tensor(shape, seed=1)
        y = decompress(compress(x))
        assert y.shape == shape and y.dtype == np.float32
    x = smooth_tensor((2, 8, 8), seed=1, amplitude=6.0)  # fix35 holds [-4, 3.97]
    c = compress(x)
    assert c.n_clipped == np.count_nonzero((x * 32 > 127.5) | (x * 32 < -128.5))
    assert c.n_clipped > 0
    assert decompress(c).max() <= 127 / 32 and decompress(c).min() >= -4


def test_fewer_fraction_bits_widen_the_range():
    x = smooth_tensor((8, 19, 19), seed=12, amplitude=15.0)  # like the SSD's default cut (+-19)
    fix35 = compress(x, table="optL")
    fix53 = compress(x, table="optL", frac_bits=3)  # range [-16, 15.9], step 1/8
    assert fix35.frac_bits == 5 and fix53.frac_bits == 3
    assert fix35.n_clipped > x.size // 2 and fix53.n_clipped == 0
    err35 = np.abs(decompress(fix35) - x).max()
    err53 = np.abs(decompress(fix53) - x).max()
    assert err53 < 2.0 < err35
    for bad in (-1, 8, 2.5):
        with pytest.raises(ValueError, match="frac_bits"):
            compress(x, frac_bits=bad)


# --------------------------------------------------------------------------- unsigned tensors


def test_unsigned_zeros_come_back_as_zeros():
    x = smooth_tensor((64, 19, 19), seed=9, relu=True)
    zeros = x == 0
    assert 0.2 < zeros.mean() < 0.9
    c = compress(x, table="optH")
    assert c.unsigned  # detected: no negative element
    y = decompress(c)
    assert y.min() >= 0
    assert np.mean(y[zeros] == 0) > 0.99
    forced = decompress(compress(x, table="optH", unsigned=False))
    assert forced.min() < 0  # without the shift and the clamp, the plateau rings
    assert np.mean(forced[zeros] == 0) < np.mean(y[zeros] == 0)
    assert np.mean(np.abs(y - x)) < np.mean(np.abs(forced - x))


def test_signed_tensor_is_not_clamped():
    x = smooth_tensor((8, 19, 19), seed=6)
    c = compress(x)
    assert not c.unsigned
    assert decompress(c).min() < -1


def test_all_zero_unsigned_tensor():
    x = np.zeros((2, 8, 16), np.float32)
    c = compress(x)
    assert c.unsigned
    assert np.array_equal(decompress(c), x)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": np.zeros((2, 8, 8), np.float64)}, "float32 tensor, not float64"),
        ({"x": np.zeros((2, 8, 8), np.int8)}, "float32 tensor, not int8"),
        ({"x": [[[0.0]]]}, "numpy array, not list"),
        ({"x": np.zeros((8, 8), np.float32)}, r"\(C, H, W\) or \(N, C, H, W\) tensor, not 2-D"),
        ({"x": np.zeros((1, 1, 2, 8, 8), np.float32)}, "not 5-D"),
        ({"x": np.zeros((2, 0, 8), np.float32)}, "at least 1"),
        ({"x": np.full((1, 8, 8), np.nan, np.float32)}, "NaN or infinite"),
        ({"table": "optX"}, "unknown JPEG-ACT quantization table 'optX'"),
        ({"table": "jpeg0"}, "unknown JPEG-ACT quantization table 'jpeg0'"),
        ({"table": "jpeg101"}, "unknown JPEG-ACT quantization table"),
        ({"coder": "huffman"}, "unknown JPEG-ACT coder 'huffman'"),
        ({"x": -np.ones((1, 8, 8), np.float32), "unsigned": True}, "negative values"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    args = {"x": np.ones((1, 8, 8), np.float32)} | kwargs
    with pytest.raises(ValueError, match=message):
        compress(**args)


def test_corrupt_streams_raise_value_error():
    x = smooth_tensor((4, 19, 19), seed=8)
    c = compress(x, coder="jpeg")
    n = c.n_blocks
    with pytest.raises(ValueError, match="ends before the last block"):
        decode_coefficients(c.data[: len(c.data) // 2], "jpeg", n)
    with pytest.raises(ValueError, match="left over"):
        decode_coefficients(c.data + b"\x00", "jpeg", n)
    with pytest.raises(ValueError, match="16-byte table header"):
        decode_coefficients(b"\x01\x02", "jpeg", n)
    bad_table = bytearray(c.data)
    bad_table[0] = 255  # 255 one-bit codes: over the 256-symbol alphabet with the rest
    with pytest.raises(ValueError, match="symbols|over-subscribed|twice|canonical"):
        decode_coefficients(bytes(bad_table), "jpeg", n)
    z = compress(x, coder="zvc")
    with pytest.raises(ValueError, match="value bytes"):
        decode_coefficients(z.data[:-1], "zvc", n)
    with pytest.raises(ValueError, match="mask"):
        decode_coefficients(z.data[:10], "zvc", n)
    with pytest.raises(ValueError, match="n_blocks"):
        decode_coefficients(c.data, "jpeg", 0)
    # Damaged streams never crash the compiled decoder: they decode to something or raise ValueError.
    rng = np.random.default_rng(0)
    header = 16 + int(np.frombuffer(c.data[:16], np.uint8).sum())
    for _ in range(300):
        damaged = np.frombuffer(c.data, np.uint8).copy()
        at = rng.integers(header, damaged.size, rng.integers(1, 4))
        damaged[at] ^= rng.integers(1, 256, at.size, dtype=np.uint8)
        cut = rng.integers(header, damaged.size + 1)
        try:
            q = decode_coefficients(damaged[:cut].tobytes(), "jpeg", n)
        except ValueError:
            continue
        assert q.shape == (n, 64)
