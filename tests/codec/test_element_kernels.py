"""The encoder's whole-map passes, compiled, equal their NumPy definitions."""

import numpy as np
import pytest

from temposplit.codec import _kernels as K
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.quantize import lut

needs_numba = pytest.mark.skipif(not K.COMPILED, reason="the compiled kernels need numba")


@needs_numba
@pytest.mark.parametrize("shape", [(1,), (7, 5, 3), (19, 19, 96)])
def test_apply_lut_is_the_table_lookup(shape):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, shape, dtype=np.uint8)
    for z8, n in ((0, 4), (128, 5), (37, 8), (255, 2)):
        table = lut(z8, n)
        got = K.apply_lut(codes, table)
        assert got.dtype == np.uint8 and got.shape == codes.shape
        np.testing.assert_array_equal(got, table[codes])


@needs_numba
def test_count_not_counts_the_other_codes():
    codes = np.random.default_rng(1).integers(0, 4, (9, 7, 5), dtype=np.uint8)
    for value in range(5):
        assert K.count_not(codes, value) == np.count_nonzero(codes != value)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_numba)])
def test_centred_is_the_shifted_difference(compiled, monkeypatch):
    monkeypatch.setattr(K, "COMPILED", compiled)  # False: the NumPy path of the board
    codes = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    for zero, shift in ((0, 0), (12, 0), (200, 0), (3, 4), (15, 3), (1, 7)):
        want = (codes.astype(np.int16) - np.int16(zero)) << shift
        got = K.centred(codes, zero, shift)
        assert got.dtype == np.int16
        np.testing.assert_array_equal(got, want)
        out = np.full(codes.shape, 7, np.int16)
        assert K.centred(codes[:, ::-1], zero, shift, out) is out  # a strided input, into out
        np.testing.assert_array_equal(out, want[:, ::-1])
    with pytest.raises(ValueError, match="int16"):
        K.centred(codes, 0, 0, np.zeros((4, 8, 7), np.int16))
    with pytest.raises(ValueError, match="int16"):
        K.centred(codes, 0, 0, np.zeros(codes.shape, np.int32))


def _maps(rng, shape, n_bits, spread):
    top = (1 << n_bits) - 1
    pred = rng.integers(0, top + 1, shape, dtype=np.uint8)
    step = rng.integers(-spread, spread + 1, shape)
    step[rng.random(shape) < 0.6] = 0
    cur = np.clip(pred.astype(np.int64) + step, 0, top).astype(np.uint8)
    return cur, pred


@needs_numba
@pytest.mark.parametrize("seed", range(6))
def test_residual_threshold_equals_the_numpy_decision(seed):
    rng = np.random.default_rng(seed)
    h, w, c = int(rng.integers(1, 23)), int(rng.integers(1, 23)), int(rng.integers(1, 9))
    block = int(rng.choice([2, 4, 8]))
    n_bits = int(rng.integers(2, 9))
    cur, pred = _maps(rng, (h, w, c), n_bits, spread=int(rng.integers(1, 4)))
    coded_seen = skipped_seen = False
    for threshold in (0.0, 0.5, 1.5, 4.0, 1e9):
        for dead_zone in (0.0, 1.0, 2.5, 8.0):
            for activity in (1.0, 0.3):
                cfg = ResidualConfig("threshold", threshold, dead_zone=dead_zone)
                enc = Encoder(CodecConfig([TensorSpec("x", (c, h, w), 0.1, 3, block)], residual=cfg))
                want = enc._residual_numpy(0, enc.tensors[0], cur, pred, n_bits, activity)
                got = K.residual_threshold(cur, pred, block, 8 - n_bits, threshold * activity, dead_zone)
                for g, x in zip(got, want, strict=True):
                    assert g.dtype == x.dtype
                    np.testing.assert_array_equal(g, x)
                coded_seen |= bool(want[0].any())
                skipped_seen |= bool((~want[0]).any())
    assert coded_seen and skipped_seen  # both decisions were compared


@needs_numba
def test_residual_threshold_compares_the_mean_exactly_at_the_limit():
    """A block whose mean equals the limit is skipped (strictly greater codes it)."""
    pred = np.zeros((2, 2, 1), np.uint8)
    cur = np.array([[[1], [0]], [[0], [0]]], np.uint8)  # mean |r| 0.25 steps at N = 8
    coded, values, recon = K.residual_threshold(cur, pred, 2, 0, 0.25, 0.0)
    assert not coded.any() and values.size == 0 and (recon == pred).all()
    coded, values, recon = K.residual_threshold(cur, pred, 2, 0, 0.2499, 0.0)
    assert coded.all() and values.tolist() == [1, 0, 0, 0] and (recon == cur).all()
