import numpy as np
import pytest

from temposplit.codec import quantize
from temposplit.codec.errors import ConfigurationError


def reference_requantize(q8, z8, n):
    # docs/requirements.md section 4 transcribed with Python integers (>> floors on negatives)
    k = 8 - n
    if k == 0:
        return q8, z8
    zn = (z8 + (1 << (k - 1))) >> k
    return max(0, min((1 << n) - 1, ((q8 - z8 + (1 << (k - 1))) >> k) + zn)), zn


@pytest.mark.parametrize("n", range(2, 9))
@pytest.mark.parametrize("z8", [0, 1, 7, 8, 100, 128, 200, 247, 248, 255])
def test_requantize_matches_spec_formula_for_every_code(n, z8):
    q8 = np.arange(256, dtype=np.uint8)
    got = quantize.requantize(q8, z8, n)
    expected = np.array([reference_requantize(int(q), z8, n)[0] for q in q8], np.uint8)
    assert (got == expected).all()
    assert quantize.zero_point_n(z8, n) == reference_requantize(0, z8, n)[1]
    assert (quantize.lut(z8, n) == expected).all()


def test_fewer_bits_means_a_larger_step():
    assert quantize.scale_n(0.1, 4) == pytest.approx(1.6)
    assert quantize.scale_n(0.1, 8) == pytest.approx(0.1)


@pytest.mark.parametrize("n", [4, 6])
def test_dequantized_error_is_within_half_a_step(n):
    q8 = np.arange(256, dtype=np.uint8)
    z8, s8 = 37, 0.05
    x8 = (q8.astype(np.float64) - z8) * s8
    xn = quantize.dequantize(quantize.requantize(q8, z8, n), s8, z8, n)
    inside = (q8 >= 8) & (q8 <= 230)  # away from the clamps
    assert np.abs(xn - x8)[inside].max() <= quantize.scale_n(s8, n) / 2 + 1e-6


def test_to_quint8_dequantizes_like_the_n_bit_codes():
    z8, s8, n = 100, 0.02, 5
    qn = quantize.requantize(np.arange(256, dtype=np.uint8), z8, n)
    back = quantize.to_quint8(qn, z8, n)
    assert np.allclose((back.astype(np.float64) - z8) * s8, quantize.dequantize(qn, s8, z8, n), atol=1e-6)


@pytest.mark.parametrize("bad", [1, 9, 4.0, "4"])
def test_bad_bit_width_is_refused(bad):
    with pytest.raises(ConfigurationError, match="N"):
        quantize.requantize(np.zeros(3, np.uint8), 0, bad)


def test_non_uint8_codes_are_refused():
    with pytest.raises(ConfigurationError, match="uint8"):
        quantize.requantize(np.zeros(3, np.int16), 0, 4)
