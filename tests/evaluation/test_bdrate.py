"""BD-rate and the Pareto front: known shifts give known BD-rates, dominated points are
never on a front, curves that do not overlap say so."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("bjontegaard")

from temposplit.errors import ConfigError  # noqa: E402
from temposplit.evaluation.bdrate import bd_rate, pareto_front  # noqa: E402

ANCHOR_RATES = [700.0, 1400.0, 3300.0, 6800.0, 15000.0]
ANCHOR_ACC = [0.60, 0.80, 0.90, 0.95, 0.98]


def test_a_curve_with_a_fifth_fewer_bytes_everywhere_is_minus_20_percent():
    r = bd_rate(ANCHOR_RATES, ANCHOR_ACC, [0.8 * x for x in ANCHOR_RATES], ANCHOR_ACC)
    assert r.bd_rate == pytest.approx(-20.0, abs=1e-9)
    assert r.overlap == (0.60, 0.98)
    twice = bd_rate(ANCHOR_RATES, ANCHOR_ACC, [2 * x for x in ANCHOR_RATES], ANCHOR_ACC)
    assert twice.bd_rate == pytest.approx(100.0, abs=1e-9)


def test_the_overlap_is_the_common_accuracy_range():
    test_acc = [0.85, 0.90, 0.95, 0.99]
    test_rates = [0.5 * np.interp(a, ANCHOR_ACC, ANCHOR_RATES) for a in test_acc]
    r = bd_rate(ANCHOR_RATES, ANCHOR_ACC, test_rates, test_acc)
    assert r.overlap == (0.85, 0.98)
    assert -60 < r.bd_rate < -40  # half the bytes, up to the interpolation between points


def test_no_overlap_is_nan_and_says_so():
    r = bd_rate(ANCHOR_RATES, ANCHOR_ACC, [100.0, 200.0], [0.2, 0.4])
    assert math.isnan(r.bd_rate) and not r.defined
    assert "no overlap" in r.note and r.overlap is None
    one = bd_rate(ANCHOR_RATES, ANCHOR_ACC, [100.0], [0.7])
    assert math.isnan(one.bd_rate) and "fewer than two" in one.note


def test_the_front_drops_dominated_points_and_keeps_the_rest():
    rates = [1000, 2000, 1500, 4000, 8000, 3000, 9000, 1800]
    acc = [0.70, 0.90, 0.60, 0.93, 0.95, 0.80, 0.94, 0.75]
    idx = pareto_front(rates, acc)
    # 1500 @ 0.60 costs more than 1000 @ 0.70; 3000 @ 0.80 costs more than 2000 @ 0.90; 9000 @ 0.94
    # is dominated by 8000 @ 0.95. 1800 @ 0.75 lies above the chord 1000 -> 2000 in log rate (a
    # convex hull would drop it) but nothing beats it: it stays.
    assert idx == [0, 7, 1, 3, 4]
    h_rates, h_acc = [rates[i] for i in idx], [acc[i] for i in idx]
    assert all(np.diff(h_rates) > 0) and all(np.diff(h_acc) > 0)


def test_hull_ignores_nan_and_nonpositive_rates():
    assert pareto_front([0, 100, 200], [0.9, 0.5, float("nan")]) == [1]
    assert pareto_front([], []) == []


def test_hull_is_applied_before_the_bd_rate():
    # A noisy anchor (accuracy not monotone in rate) still gives a defined BD-rate: its hull is used.
    noisy_rates = ANCHOR_RATES + [20000.0]
    noisy_acc = ANCHOR_ACC + [0.97]
    r = bd_rate(noisy_rates, noisy_acc, ANCHOR_RATES, ANCHOR_ACC)
    assert r.bd_rate == pytest.approx(0.0, abs=1e-9) and r.anchor_points == 5
    with pytest.raises(ConfigError):
        bd_rate(noisy_rates, noisy_acc, ANCHOR_RATES, ANCHOR_ACC, hull=False)
    with pytest.raises(ConfigError):
        bd_rate([1, 2], [0.5], [1, 2], [0.5, 0.6])
