"""`temposplit models accuracy`'s intervals are the evaluation's: the circular block bootstrap
of evaluation/bootstrap.py (every frame as likely in a resample). No network: the
detector's output is given."""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("pycocotools")
pytest.importorskip("torchvision")

from temposplit.evaluation import bootstrap  # noqa: E402
from temposplit.evaluation.metrics import fidelity_map  # noqa: E402
from temposplit.model import accuracy  # noqa: E402
from temposplit.model.detections import Detections  # noqa: E402

CUT = "features.10"


def _study(monkeypatch, n: int, missed: int, replicates: int = 200):
    """cut_accuracy's int8 row on n frames of one box each, whose last ``missed`` frames the
    int8 path misses: the hard stretch at the clip's end that moving blocks under-weigh."""
    reference = [Detections.make([[10, 10, 60, 60]], [0.9], [1]) for _ in range(n)]
    found = [Detections.make([[11, 10, 60, 61]], [0.8], [1]) for _ in range(n - missed)]
    tested = found + [Detections.make(np.zeros((0, 4)), [], []) for _ in range(missed)]
    monkeypatch.setattr(accuracy, "_detections", lambda det, frames, fn, batch_size: tested)
    det = types.SimpleNamespace(get_cut=lambda c: types.SimpleNamespace(name=c), split=lambda c: None)
    quantized = types.SimpleNamespace(split=lambda c: None)
    (row,) = accuracy.cut_accuracy(
        det, quantized, [None] * n, [CUT], {}, paths=("int8",), replicates=replicates, reference=reference
    )
    return row, tested, reference


def test_the_intervals_are_the_evaluations_circular_block_bootstrap(monkeypatch):
    n, reps = 60, 200
    row, tested, reference = _study(monkeypatch, n, missed=6, replicates=reps)
    m = fidelity_map(tested, reference)
    idx = bootstrap.block_resamples(n, replicates=reps, seed=bootstrap.SEED, circular=True)
    values = np.array([m.images.all_scores(w) for w in bootstrap.resample_weights(idx, n)])
    for k, key in enumerate(("map50_ci", "map50_95_ci")):
        lo, hi = bootstrap.interval(values[:, k])
        assert row[key] == pytest.approx([round(lo, 4), round(hi, 4)], abs=1e-12), key
    # Moving blocks (starts in 0..n-10) take the missed last frames far less often: another interval.
    moving = bootstrap.block_resamples(n, replicates=reps, seed=bootstrap.SEED)
    lo, hi = bootstrap.interval([m.images.all_scores(w)[0] for w in bootstrap.resample_weights(moving, n)])
    assert row["map50_ci"][0] < round(lo, 4) - 0.02


def test_too_few_frames_give_no_interval_and_say_so(monkeypatch):
    """10 frames are one block: every circular resample is the clip rotated, and the
    "interval" was the point itself printed as if it were certain."""
    row, _, _ = _study(monkeypatch, 10, missed=2)
    assert row["map50"] is not None
    assert row["map50_ci"] == [None, None] == row["map50_95_ci"]
    assert row["ci_note"] == bootstrap.TOO_FEW
    row, _, _ = _study(monkeypatch, 20, missed=2)  # two blocks: an interval, no note
    assert None not in row["map50_ci"] and "ci_note" not in row
