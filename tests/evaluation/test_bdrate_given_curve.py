"""``bd_rate(..., hull=False)`` takes the points as the curve: they must be finite, with
rates > 0, and rise strictly in both accuracy and rate. A falling curve gave a number
(-25.8 % in the review's case) and a NaN reached scipy's ValueError."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("bjontegaard")

from temposplit.errors import ConfigError  # noqa: E402
from temposplit.evaluation.bdrate import bd_rate  # noqa: E402

ANCHOR_RATES, ANCHOR_ACC = [1000.0, 2000.0, 4000.0, 9000.0], [0.6, 0.7, 0.8, 0.9]


@pytest.mark.parametrize(
    "rates, acc, what",
    [
        ([9000.0, 4000.0, 2000.0, 1000.0], ANCHOR_ACC, "rates falling as accuracy rises"),
        ([1000.0, 2000.0, 2000.0, 9000.0], ANCHOR_ACC, "a repeated rate"),
        ([1000.0, math.nan, 4000.0, 9000.0], ANCHOR_ACC, "a NaN rate"),
        (ANCHOR_RATES, [0.6, math.nan, 0.8, 0.9], "a NaN accuracy"),
        ([1000.0, 2000.0, 4000.0, math.inf], ANCHOR_ACC, "an infinite rate"),
        (ANCHOR_RATES, [0.6, 0.7, 0.8, math.inf], "an infinite accuracy"),
    ],
)
@pytest.mark.parametrize("side", ["anchor", "test"])
def test_a_curve_given_as_it_is_must_rise_strictly_and_be_finite(rates, acc, what, side):
    args = (rates, acc, ANCHOR_RATES, ANCHOR_ACC) if side == "anchor" else (ANCHOR_RATES, ANCHOR_ACC, rates, acc)
    with pytest.raises(ConfigError, match=f"the {side} curve's rates and accuracies must be finite"):
        bd_rate(*args, hull=False)


def test_a_rising_curve_given_as_it_is_still_gives_its_bd_rate():
    half = [r / 2 for r in ANCHOR_RATES]
    assert bd_rate(ANCHOR_RATES, ANCHOR_ACC, half, ANCHOR_ACC, hull=False).bd_rate == pytest.approx(-50.0, abs=1e-9)
