"""Bjøntegaard delta rate between rate-accuracy curves, and the Pareto front that makes a curve.

A curve is a set of (bytes per frame, accuracy) points. Before any comparison each curve is
reduced to its **Pareto front** (its "hull" in the reports): the points a user would pick,
those that no other point beats (none as accurate or more for as few bytes or fewer), from
the cheapest point up to the most accurate one. The front is strictly increasing in both
accuracy and rate, which is what an interpolation of log rate as a function of accuracy
needs, and it is taken the same way for the features (over every cut, N, method and
setting) and for each frame codec (over its crf values). (Until 2026-12-07 it was the lower
convex hull in (accuracy, log10 bytes), which drops measured points above the chords
between others and so stands for bytes no setting reaches: it favoured the curve with the
most points, the features; docs/evaluation.md, "BD-rates and intervals".)

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

__all__ = ["BdResult", "bd_rate", "pareto_front"]

INTERPOLATION = "pchip"


def pareto_front(rates: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (none as accurate or more for as few bytes
    or fewer, better in one of the two), from the cheapest to the most accurate: rate and
    accuracy strictly increasing.

    Points with a rate <= 0 or a NaN are ignored. Of equal accuracies only the cheapest
    point is kept, of equal rates only the most accurate (the first in input order on a tie
    of both).
    """
    pts = [
        (math.log10(float(r)), float(a), i)
        for i, (r, a) in enumerate(zip(rates, accuracies, strict=True))
        if r is not None and a is not None and math.isfinite(float(a)) and math.isfinite(float(r)) and float(r) > 0
    ]
    pts.sort(key=lambda p: (p[0], -p[1], p[2]))
    front: list[int] = []
    best = -math.inf
    for _, a, i in pts:
        if a > best:  # more accurate than every cheaper (or equally cheap) point
            front.append(i)
            best = a
    return front


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

    With ``hull`` (the default) each curve is first reduced to its Pareto front; without,
    the points must already be finite, with rates > 0, and strictly increasing in accuracy
    and rate (else a :class:`ConfigError`).
    """
    curves = []
    for rates, acc, what in ((anchor_rates, anchor_accuracy, "anchor"), (test_rates, test_accuracy, "test")):
        rates, acc = list(rates), list(acc)
        if len(rates) != len(acc):
            raise ConfigError(f"the {what} curve has {len(rates)} rates and {len(acc)} accuracies")
        if hull:
            idx = pareto_front(rates, acc)
            rates, acc = [rates[i] for i in idx], [acc[i] for i in idx]
        r, a = np.asarray(rates, np.float64), np.asarray(acc, np.float64)
        # Without the hull the points are the curve as given: finite, rates > 0, and rate and
        # accuracy both rising strictly (a falling curve gave a number; a NaN, scipy's ValueError).
        # Comparisons written as "> 0" so that a NaN fails them.
        rising = (r > 0).all() and (np.diff(a) > 0).all() and (np.diff(r) > 0).all()
        if not hull and r.size and not (np.isfinite(r).all() and np.isfinite(a).all() and rising):
            raise ConfigError(
                f"the {what} curve's rates and accuracies must be finite, its rates positive, and both rise "
                "strictly (hull=False takes the points as the curve)"
            )
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
