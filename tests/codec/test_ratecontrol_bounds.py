"""Rate control's bounds (codec/ratecontrol.py, docs/bitstream.md section 4): the default ladder
reaches the structure's group, the leaky bucket's debt is capped, a budget per frame of 0 is
refused, and bad arguments to RateController and Structure.make are ConfigurationErrors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features
from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
from temposplit.codec.errors import ConfigurationError
from temposplit.codec.ratecontrol import RateController, default_ladder
from temposplit.codec.structure import MAX_GROUP, Structure
from temposplit.codec.synthetic import correlated_clip


def _frame(seed=0, shape=(16, 16, 16)):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, shape, dtype=np.uint8), 128)]


def _feature_file(tmp_path, frames=12, shape=(8, 12, 12)):
    rng = np.random.default_rng(0)
    codes = np.stack(correlated_clip(rng, frames, shape))
    path = tmp_path / "f.npz"
    features.save(str(path), features.FeatureClip(["t"], [codes], [0.1], [3], [4]))
    return path, codes


# ---------------------------------------------------------------- the ladder's largest group


@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_the_default_ladder_reaches_every_group_the_structure_allows(kind):
    """--structure uni-3 gave groups of at most 2 (uni-12: 8, bi-13: 9): only the ladder's fixed
    sizes were kept. Its largest group is the structure's, its groups ascend, odd for bi."""
    for group in range(1, MAX_GROUP + 1, 2 if kind == "bi" else 1):
        ladder = default_ladder(kind, group)
        groups = list(dict.fromkeys(g for _, g in ladder))
        assert max(groups) == group, (kind, group)
        assert groups == sorted(groups) and len(set(groups)) == len(groups)
        assert kind == "uni" or all(g % 2 for g in groups)
        assert ladder[-1] == (4, group)  # the cheapest point: N = 4 at the longest group


def test_the_default_ladder_refuses_a_group_the_structure_would():
    with pytest.raises(ConfigurationError, match="odd size"):
        default_ladder("bi", 4)
    for group in (0, MAX_GROUP + 1, 2.5, "3", None, True):
        with pytest.raises(ConfigurationError):
            default_ladder("uni", group)


@pytest.mark.parametrize("structure", ["uni-3", "uni-12", "bi-13"])
def test_an_unreachable_rate_codes_the_structures_own_group(structure):
    """Out of reach, the controller takes the cheapest point: the longest group --structure
    allows (what encode's warning says), announced in the header."""
    group = int(structure.split("-")[1])
    spec = TensorSpec("t", (8, 12, 12), 0.1, 3, 4)
    enc = Encoder(CodecConfig([spec], structure=structure, rate_target=1e-9, fps=10.0))
    assert enc.header.group == group
    rng = np.random.default_rng(0)
    enc.encode([[c] for c in correlated_clip(rng, 2 * group, (8, 12, 12))])
    anchors = sorted(f.index for f in enc.frames if f.kind != "pred")
    offset = (group - 1) // 2 if structure.startswith("bi") else 0
    assert anchors == [offset, group + offset]


# ---------------------------------------------------------------- the bucket's debt


def _recovery(overshoot_groups: int) -> tuple[int, float, float]:
    """Groups of 4 frames, each spending 10 budgets a frame (out of reach), then frames cheap
    enough for the best point: the groups until it is chosen again, the debt at its peak and
    the controller's cap."""
    frame = _frame()
    anchor = {n: RateController(1.0, 1.0, "raw", [(n, 1)]).estimate_anchor(frame, n) for n in (8, 4)}
    pred = 10
    budget = 1.2 * (anchor[8] + 3 * pred) / 4  # the best point fits, with no debt
    rc = RateController(budget / 1e6, 1.0, "raw", [(8, 4), (4, 4)])
    rc.pred_bytes = {8: pred, 4: pred}
    peak = 0.0
    for _ in range(overshoot_groups):
        rc.choose(frame)
        rc.update(int(40 * budget), 4, [pred] * 3, 4)
        peak = max(peak, rc.debt)
    for groups in range(1, 10_000):
        n, g = rc.choose(frame)
        if (n, g) == (8, 4):
            return groups, peak, rc.max_debt
        rc.update(int(anchor[n] + 3 * pred), 4, [pred] * 3, n)
    raise AssertionError("the best point never came back")


def test_an_overshoot_out_of_reach_is_not_repaid_for_longer_than_a_few_groups():
    """The debt had no cap (the credit has one): 300 frames above the target held the frames
    after them at the ladder's floor for ~400 frames. Capped, the groups the best point takes
    to come back do not grow with the overshoot's length."""
    short, short_peak, cap = _recovery(2)
    long, long_peak, _ = _recovery(200)
    assert long == short <= 2 * 4  # a few groups: the debt at its cap is 4 groups' budget
    assert long_peak == short_peak == cap  # the cap, reached by both
    # At the cap (payback_groups of the longest groups' budget) only the cheapest point is left.
    rc = RateController(0.001, 1.0, "raw", [(8, 4), (4, 4)])
    rc.update(10**9, 4, [], 4)
    assert rc.debt == rc.max_debt == rc.payback_groups * 4 * rc.budget
    assert rc.choose(_frame()) == (4, 4)


def test_the_credit_stays_capped_at_two_frames_budget():
    rc = RateController(0.001, 1.0, "raw", [(8, 4), (4, 4)])
    rc.update(0, 1000, [], 4)
    assert rc.debt == -2 * rc.budget


# ---------------------------------------------------------------- a budget per frame of 0


@pytest.mark.parametrize("target, fps", [(0.1, math.inf), (5e-324, 4294967.0), (1e300, 1e-10)])
def test_a_budget_per_frame_of_zero_or_infinity_is_refused(target, fps):
    """fps = inf, or a target that underflows to 0 bytes a frame: ZeroDivisionError in
    after_pred (its share of the budget 0)."""
    with pytest.raises(ConfigurationError):
        RateController(target, fps, "raw", [(8, 1), (4, 4)])


def test_a_budget_of_a_few_subnormals_does_not_divide_by_zero():
    """0.05 of a budget of a few of the least floats rounds to 0: a predicted frame's share must not."""
    rc = RateController(5e-324, 2e5, "raw", [(8, 1), (4, 4)])
    assert rc.budget > 0 and 0.05 * rc.budget == 0
    rc.steer_residual = True
    n, g = rc.choose(_frame())
    rc.start_group(100, g, n)
    rc.after_pred(10)
    assert 0 < rc.gain(n) <= 4096


def test_encode_refuses_a_rate_of_zero_bytes_a_frame_in_one_line(tmp_path, capsys):
    path, _ = _feature_file(tmp_path)
    out = tmp_path / "s.tsp"
    assert main(["encode", str(path), str(out), "--rate", "5e-324", "--fps", "4294967"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bytes a frame" in err and "Traceback" not in err, err
    assert not out.exists()


# ---------------------------------------------------------------- typed errors


L = [(8, 1), (4, 4)]


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("1", 30.0, "raw", L), {}),
        ((None, 30.0, "raw", L), {}),
        ((1.0, "30", "raw", L), {}),
        ((1.0, None, "raw", L), {}),
        ((True, 30.0, "raw", L), {}),
        ((math.nan, 30.0, "raw", L), {}),
        ((1.0, math.nan, "raw", L), {}),
        ((1.0, 30.0, "raw", [(8,)]), {}),
        ((1.0, 30.0, "raw", [8, 4]), {}),
        ((1.0, 30.0, "raw", [(8, 1, 2)]), {}),
        ((1.0, 30.0, "raw", [(8, "a")]), {}),
        ((1.0, 30.0, "raw", [(8, math.nan)]), {}),
        ((1.0, 30.0, "raw", [(8, 2.0)]), {}),
        ((1.0, 30.0, "raw", [(8, 0)]), {}),
        ((1.0, 30.0, "raw", [(8, MAX_GROUP + 1)]), {}),
        ((1.0, 30.0, "raw", [(8, True)]), {}),
        ((1.0, 30.0, "raw", [(9, 1)]), {}),
        ((1.0, 30.0, "raw", 5), {}),
        ((1.0, 30.0, "raw", []), {}),
        ((1.0, 30.0, "raw", L), dict(payback_groups=0)),
        ((1.0, 30.0, "raw", L), dict(payback_groups=2.5)),
        ((1.0, 30.0, "raw", L), dict(payback_groups=None)),
        ((1.0, 30.0, "raw", L), dict(payback_groups=True)),
    ],
)
def test_rate_controller_refuses_bad_arguments_typed(args, kwargs):
    with pytest.raises(ConfigurationError):
        RateController(*args, **kwargs)


def test_rate_controller_takes_numpy_numbers_as_plain_ones():
    rc = RateController(np.float32(0.5), np.int64(30), "raw", [(np.int64(8), np.uint8(4))], payback_groups=np.int8(2))
    assert rc.ladder == [(8, 4)] and all(type(v) is int for p in rc.ladder for v in p)
    assert type(rc.budget) is float and type(rc.payback_groups) is int


def test_after_pred_before_start_group_is_a_clear_error():
    rc = RateController(0.1, 30.0, "raw", L)
    with pytest.raises(ConfigurationError, match="start_group"):
        rc.after_pred(10)


@pytest.mark.parametrize("group", [2.5, 3.0, "3", None, math.nan, True, np.float64(3)])
def test_structure_make_refuses_a_group_that_is_not_an_integer(group):
    with pytest.raises(ConfigurationError):
        Structure.make("uni", group)


def test_structure_make_takes_a_numpy_integer_as_a_plain_one():
    s = Structure.make("bi", np.int64(3))
    assert s == Structure("bi", 3) and type(s.group) is int
    assert s.groups(7) == [(0, 3), (3, 3), (6, 1)]
    with pytest.raises(ConfigurationError):
        Structure.make(np.array(["uni"]), 3)
