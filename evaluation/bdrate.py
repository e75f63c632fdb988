"""Bjøntegaard delta rate between rate-accuracy curves, and the lower convex hull that makes a curve.

A curve is a set of (bytes per frame, accuracy) points. Before any comparison each curve is
reduced to its **lower convex hull** in (accuracy, log10 bytes): the points a user would pick,
from the cheapest point up to the most accurate one, with no point of the set below the
segments between them. The hull is strictly increasing in both accuracy and rate, which is
what an interpolation of log rate as a function of accuracy needs, and it is taken the same
way for the features (over every cut, N, method and setting) and for each frame codec
(over its crf values).

:func:`bd_rate` is the Bjøntegaard delta rate of a test curve against an anchor curve: the
mean difference of their log10 rates over the accuracy range where both are defined (the
overlap of their accuracy ranges), as a percentage (negative: the test needs fewer bytes at
equal accuracy). The interpolation is the ``bjontegaard`` package's (PyPI, 1.3.0),
piecewise cubic Hermite (``pchip``: monotone, no overshoot, defined from two points). When
the two accuracy ranges do not overlap the answer is NaN and :class:`BdResult` says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from temposplit.errors import ConfigError

__all__ = ["BdResult", "bd_rate", "lower_hull"]

INTERPOLATION = "pchip"


def lower_hull(rates: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the points on the lower convex hull of (accuracy, log10 rate), from the
    cheapest point to the most accurate one (rate and accuracy strictly increasing).

    Points with a rate <= 0 or a NaN are ignored. Among points of equal accuracy only the
    cheapest can be on the hull; a point that costs more than a more accurate one never is.
    """
    pts = [
        (float(a), math.log10(float(r)), i)
        for i, (r, a) in enumerate(zip(rates, accuracies, strict=True))
        if r is not None and a is not None and math.isfinite(float(a)) and math.isfinite(float(r)) and float(r) > 0
    ]
    if not pts:
        return []
    pts.sort(key=lambda p: (p[0], p[1]))
    # Monotone chain, lower part (x = accuracy, y = log rate).
    hull: list[tuple[float, float, int]] = []
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            continue  # same accuracy, not cheaper (sorted by rate within an accuracy)
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:
                hull.pop()  # hull[-1] lies on or above the segment hull[-2] -> p
            else:
                break
        hull.append(p)
    # Only the rising part: start at the cheapest point.
    start = min(range(len(hull)), key=lambda k: (hull[k][1], -hull[k][0]))
    return [p[2] for p in hull[start:]]


@dataclass(frozen=True)
class BdResult:
    """A BD-rate and the accuracy range it was computed over.

    ``bd_rate`` is in percent (NaN when the ranges do not overlap or a curve has fewer than
    two hull points); ``overlap`` is (low, high) of accuracy or None; ``note`` says why NaN.
    """

    bd_rate: float
    overlap: tuple[float, float] | None
    anchor_points: int
    test_points: int
    note: str = ""

    @property
    def defined(self) -> bool:
        return math.isfinite(self.bd_rate)


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_accuracy: Sequence[float],
    test_rates: Sequence[float],
    test_accuracy: Sequence[float],
    hull: bool = True,
) -> BdResult:
    """BD-rate (%) of the test curve against the anchor, over their overlapping accuracy range.

    With ``hull`` (the default) each curve is first reduced to its lower convex hull; without,
    the points must already be strictly increasing in accuracy and rate.
    """
    curves = []
    for rates, acc, what in ((anchor_rates, anchor_accuracy, "anchor"), (test_rates, test_accuracy, "test")):
        rates, acc = list(rates), list(acc)
        if len(rates) != len(acc):
            raise ConfigError(f"the {what} curve has {len(rates)} rates and {len(acc)} accuracies")
        if hull:
            idx = lower_hull(rates, acc)
            rates, acc = [rates[i] for i in idx], [acc[i] for i in idx]
        r, a = np.asarray(rates, np.float64), np.asarray(acc, np.float64)
        if not hull and r.size and (np.any(np.diff(a) <= 0) or np.any(r <= 0)):
            raise ConfigError(f"the {what} curve's accuracies must rise strictly and its rates be positive")
        curves.append((r, a))
    (ra, aa), (rt, at) = curves
    if aa.size < 2 or at.size < 2:
        return BdResult(math.nan, None, int(aa.size), int(at.size), "fewer than two points on a hull")
    lo, hi = max(aa.min(), at.min()), min(aa.max(), at.max())
    if hi <= lo:
        return BdResult(
            math.nan,
            None,
            int(aa.size),
            int(at.size),
            f"no overlap: anchor {aa.min():.3f}..{aa.max():.3f}, test {at.min():.3f}..{at.max():.3f}",
        )
    import bjontegaard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns of a small overlap: the range is reported instead
        value = bjontegaard.bd_rate(ra, aa, rt, at, method=INTERPOLATION, require_matching_points=False, min_overlap=0)
    return BdResult(float(value), (float(lo), float(hi)), int(aa.size), int(at.size))
