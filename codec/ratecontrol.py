"""Rate control: pick N and the group size g per group to meet a target rate.

At the first frame of each group the controller estimates, for every operating point
(N, g) of its ladder, the bytes per frame the group would cost: the anchor's size from
that frame's histogram requantized to N (the entropy of the requantized histogram for
the table coders, a factor of it by N for an intra ``ctx`` anchor, exact sizes for raw
and ZVC), scaled by what the anchors of its kind (intra, or ``ctx``'s temporal anchors
against the previous reconstruction) came to against that estimate so far; plus
(g - 1) predicted frames at the running mean of the predicted frames' measured sizes
(before any, PRED_PRIOR of the anchor). A ``ctx`` anchor at another N than the frame
before it is intra: that premium over a temporal one is spread over the groups that
repay it. It picks the first point of the
ladder (ordered from the best quality down) whose estimate fits the budget, where the
budget is the target minus a correction that pays back what earlier groups overspent
(a leaky bucket, repaid over a few groups). If none fits, the cheapest point is used.
The bucket is bounded both ways: what groups underspent is carried as a credit of at most
2 frames' budget, and what they overspent as a debt of at most ``payback_groups`` of the
ladder's longest groups' budget (the most whose correction, spread over those groups, can
still change a choice: at the cap it takes a whole frame's budget off every frame of the
longest group, which leaves the cheapest point). Debt past that was an overshoot the
cheapest point could not avoid; repaying it would hold later groups at the ladder's floor
long after the clip became cheap enough for better.

With coded residuals the predicted frames' size depends on the residual threshold more
than on N or g, so the controller also scales that threshold per group (an
encoder-side decision the decoder never sees), frame by frame: after each predicted
frame, by how far it missed its share of the budget (the group's budget less its
anchor, spread over its predicted frames), within [1/8, 4096] times the configured
threshold.
Both the predicted frames' size and that factor are kept per N; an N not seen yet
starts from the nearest one's.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from temposplit.codec import entropy
from temposplit.codec.errors import ConfigurationError
from temposplit.codec.quantize import check_bits, lut, zero_point_n
from temposplit.codec.structure import KINDS, MAX_GROUP

# A predicted frame's bytes as a share of its group's anchor, until one has been measured:
# the calibration set's clip (never evaluated) at the recommended preset, features.6 and .10,
# N = 4..8: 0.55-0.66 of a KEY anchor. A clip that moves less costs less (its groups after
# the first then have the difference to spend).
PRED_PRIOR = 0.6
# An anchor estimated under this many bytes does not correct later estimates (see start_group).
MIN_ESTIMATE = 64.0
# The credit (underspending) carried to later groups, in frames' budget (update).
MAX_CREDIT_FRAMES = 2


def default_ladder(kind: str, max_group: int) -> list[tuple[int, int]]:
    """Operating points from the best quality down: every frame an anchor at N = 8..5, then
    longer groups at N = 8..5, then N = 4 (predicted frames without a residual lose much
    accuracy, so fewer bits per anchor come before longer groups). The groups are the fixed
    sizes up to ``max_group`` and ``max_group`` itself, the structure's group (docs/bitstream.md,
    section 4: ``--structure`` gives the ladder's largest group); odd for ``bi``."""
    if kind == "intra":
        return [(n, 1) for n in (8, 7, 6, 5, 4)]
    if isinstance(max_group, bool) or not isinstance(max_group, numbers.Integral) or not 1 <= max_group <= MAX_GROUP:
        raise ConfigurationError(f"group size must be an integer in 1..{MAX_GROUP}, not {max_group!r}")
    max_group = int(max_group)
    if kind == "bi":
        if max_group % 2 == 0:
            raise ConfigurationError(
                f"a bi-directional group has an odd size (its anchor in the middle), not {max_group}"
            )
        fixed = (1, 3, 5, 7, 9, 15, 31, 63, 127, 255)
    elif kind == "uni":
        fixed = (1, 2, 4, 8, 16, 32, 64, 128, 255)
    else:
        raise ConfigurationError(f"structure kind must be one of {KINDS}, not {kind!r}")
    groups = sorted({g for g in fixed if g < max_group} | {max_group})
    ladder = [(n, g) for g in groups for n in (8, 7, 6, 5)]
    ladder += [(4, g) for g in groups]
    return ladder


def _real(what: str, value) -> float:
    """``value`` as a float, where it is a real number (not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{what} must be a number, not {value!r}")
    return float(value)


class RateController:
    """Chooses (N, g) per group; ``target`` in MB/s (10^6 bytes) at ``fps`` frames/s."""

    def __init__(self, target: float, fps: float, coder: str, ladder: list[tuple[int, int]], payback_groups: int = 4):
        target, fps = _real("the target rate", target), _real("the frame rate", fps)
        if not 0 < target < math.inf:
            raise ConfigurationError(f"the target rate must be positive and finite, not {target}")
        if not 0 < fps < math.inf:
            raise ConfigurationError(f"the frame rate must be positive and finite, not {fps}")
        if isinstance(payback_groups, bool) or not isinstance(payback_groups, numbers.Integral) or payback_groups < 1:
            raise ConfigurationError(f"payback_groups must be an integer of at least 1, not {payback_groups!r}")
        try:
            ladder = list(ladder)
        except TypeError:
            raise ConfigurationError(f"the ladder is a list of (N, g) pairs, not {type(ladder).__name__}") from None
        if not ladder:
            raise ConfigurationError("the rate controller needs at least one operating point")
        points = []
        for point in ladder:
            try:
                n, g = point
            except (TypeError, ValueError):
                raise ConfigurationError(f"a rate control operating point is a pair (N, g), not {point!r}") from None
            check_bits(n)
            if isinstance(g, bool) or not isinstance(g, numbers.Integral) or not 1 <= g <= MAX_GROUP:
                raise ConfigurationError(f"operating point {point!r}: group size must be an integer in 1..{MAX_GROUP}")
            points.append((int(n), int(g)))
        self.budget = target * 1e6 / fps  # bytes per frame
        if not 0 < self.budget < math.inf:
            raise ConfigurationError(
                f"the target rate {target:g} MB/s at {fps:.10g} frames/s is {self.budget:g} bytes a frame: "
                "it must be more than 0 (and finite)"
            )
        self.steer_residual = False  # set by an encoder with coded residuals
        self.coder = coder
        self.ladder = points
        self.payback_groups = int(payback_groups)
        self.debt = 0.0  # bytes spent beyond the budget so far (the bucket's fill; below 0: a credit)
        # Its bounds (the module's docstring): a credit of 2 frames' budget, a debt of
        # payback_groups of the longest groups' budget.
        self.min_debt = -MAX_CREDIT_FRAMES * self.budget
        self.max_debt = self.payback_groups * max(g for _, g in points) * self.budget
        self.pred_bytes: dict[int, float] = {}  # per N: running mean of a predicted frame's size
        self.gains: dict[int, float] = {}  # per N: factor on the residual threshold (or lambda)
        self.last_group = 1
        self.anchor_scales: dict[bool, float] = {}  # temporal? -> measured bytes over estimate (running)
        self._chosen: tuple[int, float] | None = None  # (N, estimate) of the group chosen last
        self._pred_share: float | None = None  # bytes a predicted frame of the group may take (start_group)
        self._n_bits: int | None = None  # the group's N (start_group)

    def estimate_anchor(self, frame: list[tuple[np.ndarray, int]], n_bits: int) -> float:
        """Bytes of an anchor at N bits for a frame given as [(quint8 codes, z8), ...]."""
        total = 0.0
        for q8, z8 in frame:
            hist8 = np.bincount(q8.reshape(-1), minlength=256)
            hist = np.bincount(lut(z8, n_bits), weights=hist8, minlength=1 << n_bits)
            alpha = entropy.Alphabet.anchor(n_bits, zero_point_n(z8, n_bits))
            total += entropy.coded_bits_estimate(self.coder, hist, alpha, q8.size) / 8
        return total

    def choose(
        self, frame: list[tuple[np.ndarray, int]], frames_left: int | None = None, temporal_n: int | None = None
    ) -> tuple[int, int]:
        """(N, g) for the group that starts with ``frame``; ``frames_left``: the frames the clip
        has from it on, where known (a group the clip's end cuts short costs its anchor over
        fewer frames; none left, a count the clip went past, is not known); ``temporal_n``:
        the N at which this group's anchor would be coded against the previous reconstruction
        (``ctx``, not a KEY), else None."""
        budget = self.budget - self.debt / max(1, self.payback_groups * self.last_group)
        estimates: dict[int, float] = {}  # per N: the anchor's estimate (as intra)
        anchors: dict[int, float] = {}  # per N: its price
        best, best_cost = None, None
        for n, g in self.ladder:
            if n not in anchors:
                estimates[n] = self.estimate_anchor(frame, n)
                anchors[n] = estimates[n] * self._anchor_scale(n == temporal_n)
                if temporal_n is not None and n != temporal_n and True in self.anchor_scales:
                    # A change of N codes this anchor intra once; the anchors after it are
                    # temporal again: the difference is spread over the groups that repay it.
                    later = estimates[n] * self._anchor_scale(True)
                    anchors[n] = later + (anchors[n] - later) / self.payback_groups
            pred = self._nearest(self.pred_bytes, n, PRED_PRIOR * anchors[n])
            length = g if frames_left is None or frames_left < 1 else min(g, frames_left)
            per_frame = (anchors[n] + (length - 1) * pred) / length
            if per_frame <= budget:
                self.last_group = g
                self._chosen = (n, estimates[n])
                return n, g
            # The cheapest point; among near-equals the longest group (its predicted frames
            # are where the residual threshold can still save).
            if best_cost is None or per_frame < best_cost * 0.98 or (per_frame <= best_cost * 1.02 and g > best[1]):
                best, best_cost = (n, g), min(per_frame, best_cost or per_frame)
        if self.steer_residual:
            # Nothing fits on the estimates, but the predicted frames' size follows the
            # residual threshold: take the leanest point and let the threshold bring it down.
            best = min(self.ladder, key=lambda ng: (ng[0], -ng[1]))
        self.last_group = best[1]
        n = best[0]
        self._chosen = (n, estimates.get(n) or self.estimate_anchor(frame, n))
        return best

    def _anchor_scale(self, temporal: bool) -> float:
        """Measured bytes over estimated bytes of this kind of anchor, one figure for every N (a
        figure per N would keep one that came out badly from ever being measured again); a
        temporal anchor not measured yet is priced as an intra one."""
        return self.anchor_scales.get(temporal, self.anchor_scales.get(False, 1.0))

    @staticmethod
    def _nearest(table: dict[int, float], n: int, default: float) -> float:
        if not table:
            return default
        return table[min(table, key=lambda m: (abs(m - n), m))]

    def gain(self, n_bits: int) -> float:
        """The factor on the residual threshold for groups at N bits."""
        if n_bits not in self.gains:
            if self.gains:
                m = min(self.gains, key=lambda k: (abs(k - n_bits), k))
                self.gains[n_bits] = self.gains[m]
            else:
                self.gains[n_bits] = 1.0
        return self.gains[n_bits]

    def update(self, group_bytes: int, frames: int, pred_bytes: list[int], n_bits: int) -> None:
        """Account for a finished group: its bytes, frame count, predicted frames' sizes and N."""
        self.debt = min(self.max_debt, max(self.min_debt, self.debt + group_bytes - frames * self.budget))
        for b in pred_bytes:
            old = self.pred_bytes.get(n_bits)
            self.pred_bytes[n_bits] = b if old is None else 0.8 * old + 0.2 * b

    def start_group(self, anchor_bytes: int, length: int, n_bits: int, temporal: bool = False) -> None:
        """A group began with an anchor of ``anchor_bytes`` (``temporal``: a ctx anchor coded
        against the previous reconstruction): set its predicted frames' share."""
        if self._chosen is not None and self._chosen[0] == n_bits and self._chosen[1] >= MIN_ESTIMATE:
            # A near-empty frame's estimate (a fade from black) says nothing of the next; one
            # group's surprise counts at most 4x above the running figure (such outliers) and
            # 16x below it (a temporal anchor of a static scene is a few % of its estimate).
            cur = self._anchor_scale(temporal)
            ratio = float(np.clip(anchor_bytes / self._chosen[1], cur / 16, cur * 4))
            old = self.anchor_scales.get(temporal)
            self.anchor_scales[temporal] = ratio if old is None else 0.5 * old + 0.5 * ratio
        self._chosen = None
        spare = self.budget * length - anchor_bytes - self.debt / max(1, self.payback_groups)
        # (at least the least positive float: 0.05 of a budget of a few subnormals rounds to 0)
        self._pred_share = max(0.05 * self.budget, spare / max(1, length - 1), math.ulp(0.0))
        self._n_bits = n_bits

    def after_pred(self, pred_bytes: int) -> None:
        """Steer the residual threshold by how far a predicted frame missed its share."""
        if self._pred_share is None:
            raise ConfigurationError("after_pred() reports a predicted frame of a group: call start_group() first")
        ratio = pred_bytes / self._pred_share
        old = self.gain(self._n_bits)
        self.gains[self._n_bits] = float(np.clip(old * np.clip(ratio, 0.5, 2.0) ** 0.7, 1 / 8, 4096))
