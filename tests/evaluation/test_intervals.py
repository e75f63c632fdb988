"""The bootstrap intervals: block resamples, and the per-frame COCO outcome that rescoring a
resample needs, checked against pycocotools on the frames actually repeated."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from temposplit.evaluation import bootstrap  # noqa: E402
from temposplit.evaluation.metrics import Detections, ImageEvals, coco_map  # noqa: E402


def _clip(seed: int, frames: int = 40):
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for _ in range(frames):
        n = int(rng.integers(0, 6))
        corner = rng.uniform(0, 200, (n, 2))
        boxes = np.hstack([corner, corner + rng.uniform(10, 80, (n, 2))]).astype(np.float32)
        cats = rng.choice([1, 3, 8, 10], n)
        gts.append(Detections.make(boxes, np.ones(n, np.float32), cats))
        m = int(rng.integers(0, 8))
        if n:
            pick = rng.integers(0, n, m)
            db, dc = boxes[pick] + rng.normal(0, 6, (m, 4)), cats[pick]
        else:
            db, dc = rng.uniform(0, 200, (m, 4)), rng.choice([1, 3], m)
        dc = np.where(rng.random(m) < 0.1, 5, dc)  # some detections of a category without ground truth
        dts.append(Detections.make(db.astype(np.float32), rng.random(m).astype(np.float32), dc))
    return dts, gts


@pytest.mark.parametrize("seed", [0, 1])
def test_every_frame_once_gives_pycocotools_scores(seed):
    dts, gts = _clip(seed)
    m = coco_map(dts, gts)
    m50, m5095, freq = m.images.scores(np.ones(len(gts)), frequent=[1, 3])
    assert m50 == pytest.approx(m.map50, abs=1e-12) and m5095 == pytest.approx(m.map50_95, abs=1e-12)
    assert freq == pytest.approx(m.subset([1, 3])[0], abs=1e-12)


@pytest.mark.parametrize("seed", [2, 3])
def test_a_resample_scores_as_pycocotools_on_the_repeated_frames(seed):
    dts, gts = _clip(seed)
    m = coco_map(dts, gts)
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 3, len(gts))
    taken = [i for i in range(len(gts)) for _ in range(w[i])]
    direct = coco_map([dts[i] for i in taken], [gts[i] for i in taken])
    m50, m5095, _ = m.images.scores(w)
    assert m50 == pytest.approx(direct.map50, abs=1e-12) and m5095 == pytest.approx(direct.map50_95, abs=1e-12)


def test_the_per_frame_outcome_survives_its_file(tmp_path):
    dts, gts = _clip(4)
    m = coco_map(dts, gts)
    np.savez_compressed(tmp_path / "e.npz", **m.images.to_npz())
    with np.load(tmp_path / "e.npz") as z:
        back = ImageEvals.from_npz(z)
    w = np.random.default_rng(0).integers(0, 3, len(gts))
    assert back.scores(w, [3]) == m.images.scores(w, [3])


def test_without_detections_every_resample_scores_zero():
    _, gts = _clip(5)
    m = coco_map([Detections.make(np.zeros((0, 4)), [], []) for _ in gts], gts)
    assert m.map50 == 0.0
    assert m.images.scores(np.ones(len(gts)))[:2] == (0.0, 0.0)


def test_block_resamples_are_runs_of_consecutive_frames_and_repeatable():
    idx = bootstrap.block_resamples(95, block=10, replicates=50, seed=7)
    assert idx.shape == (50, 95) and idx.min() >= 0 and idx.max() <= 94
    for row in idx:
        for start in range(0, 95, 10):
            block = row[start : start + 10]
            assert np.all(np.diff(block) == 1)  # one block: consecutive frames
    assert np.array_equal(idx, bootstrap.block_resamples(95, block=10, replicates=50, seed=7))
    w = bootstrap.resample_weights(idx, 95)
    assert w.shape == (50, 95) and np.all(w.sum(axis=1) == 95)
    assert bootstrap.block_resamples(3, block=10, replicates=2).shape == (2, 3)  # a block longer than the clip


def test_interval_is_the_central_95_percent():
    values = np.arange(1001, dtype=float)
    lo, hi = bootstrap.interval(values)
    assert lo == pytest.approx(25.0) and hi == pytest.approx(975.0)
    assert all(math.isnan(v) for v in bootstrap.interval([np.nan] * 10 + [1.0]))
