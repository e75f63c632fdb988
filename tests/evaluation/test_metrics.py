"""COCO mAP on hand-made boxes, the degenerate cases, and the rate helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temposplit.evaluation.metrics import (
    Detections,
    bits_per_element,
    bits_per_pixel,
    coco_map,
    compression_ratio,
    fidelity_map,
    mb_per_s,
    psnr,
)


def dets(boxes=(), scores=None, ids=None) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    scores = np.full(n, 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    ids = np.ones(n, np.int64) if ids is None else np.asarray(ids, np.int64)
    return Detections(boxes, scores, ids, [str(i) for i in ids])


def shifted(d: Detections, dx: float) -> Detections:
    return dets(d.boxes + np.array([dx, 0, dx, 0], np.float32), d.scores, d.category_ids)


# Three frames: people (1) and cars (3), 100x100 boxes well apart.
GT = [
    dets([[10, 10, 110, 110], [300, 50, 400, 150]], ids=[1, 3]),
    dets([[20, 10, 120, 110]], ids=[1]),
    dets([[200, 200, 300, 300], [400, 20, 500, 120], [10, 300, 110, 400]], ids=[3, 1, 1]),
]


def test_identical_detections_score_one():
    r = coco_map(GT, GT)
    assert r.map50 == pytest.approx(1.0)
    assert r.map50_95 == pytest.approx(1.0)
    assert (r.n_frames, r.n_ground_truth, r.n_detections) == (3, 6, 6)


def test_shifted_boxes_lose_map_50_95_before_map_50():
    # A 100-wide box shifted by dx overlaps with IoU (100 - dx) / (100 + dx).
    results = [coco_map([shifted(d, dx) for d in GT], GT) for dx in (0, 5, 18, 30, 40)]
    map50 = [r.map50 for r in results]
    map50_95 = [r.map50_95 for r in results]
    assert map50[:4] == pytest.approx([1.0] * 4)  # IoU 0.90, 0.69, 0.54 still match at 0.5
    assert map50[4] == pytest.approx(0.0)  # IoU 0.43
    assert all(a > b for a, b in zip(map50_95, map50_95[1:4], strict=False))
    # IoU 0.695 passes the thresholds 0.50, 0.55, 0.60, 0.65: 4 of 10.
    assert map50_95[2] == pytest.approx(0.4)
    assert map50_95[3] == pytest.approx(0.1)  # IoU 0.538: only 0.50


def test_a_missing_class_halves_the_mean():
    only_people = [dets(d.boxes[d.category_ids == 1], ids=d.category_ids[d.category_ids == 1]) for d in GT]
    r = coco_map(only_people, GT)
    assert r.map50 == pytest.approx(0.5)  # people 1.0, cars 0.0
    assert r.map50_95 == pytest.approx(0.5)


def test_detections_of_a_class_without_ground_truth_are_ignored():
    extra = [
        dets(
            np.vstack([d.boxes, [[600, 600, 650, 650]]]),
            np.append(d.scores, 0.99),
            np.append(d.category_ids, 18),
        )
        for d in GT
    ]
    assert coco_map(extra, GT).map50 == pytest.approx(1.0)


def test_empty_frames():
    with_empty = [GT[0], dets(), GT[1], dets(), GT[2]]
    assert coco_map(with_empty, with_empty).map50 == pytest.approx(1.0)
    # A confident false positive on a frame without ground truth costs precision.
    test = [GT[0], dets([[5, 5, 105, 105]], scores=[0.99]), GT[1], dets(), GT[2]]
    r = coco_map(test, with_empty)
    assert r.map50 < 1.0
    assert r.map50 > 0.5


def test_degenerate_cases_are_nan_or_zero():
    no_detections = coco_map([dets()] * 3, GT)
    assert (no_detections.map50, no_detections.map50_95) == (0.0, 0.0)
    no_ground_truth = coco_map(GT, [dets()] * 3)
    assert math.isnan(no_ground_truth.map50) and math.isnan(no_ground_truth.map50_95)
    nothing = coco_map([dets()] * 2, [dets()] * 2)
    assert math.isnan(nothing.map50)
    assert coco_map([], []).n_frames == 0
    below_threshold = [dets(d.boxes, np.full(len(d), 0.04), d.category_ids) for d in GT]
    r = coco_map(below_threshold, GT)
    assert r.n_detections == 0 and r.map50 == 0.0
    assert coco_map(below_threshold, GT, score_threshold=0.01).map50 == pytest.approx(1.0)


def test_fidelity_ground_truth_keeps_only_confident_reference_detections():
    # The reference has confident boxes and weak ones (0.3); the weak ones are not ground truth.
    reference = [
        dets(np.vstack([d.boxes, [[600, 0, 700, 100]]]), np.append(d.scores, 0.3), np.append(d.category_ids, 1))
        for d in GT
    ]
    r = fidelity_map(reference, reference)
    assert r.n_ground_truth == 6 and r.n_detections == 9
    assert r.map50 == pytest.approx(1.0)  # the reference scores 1.0 by construction
    # Finding only the weak boxes scores 0; lowering the reference threshold makes them count.
    weak_only = [dets([[600, 0, 700, 100]], [0.3], [1]) for _ in GT]
    assert fidelity_map(weak_only, reference).map50 == pytest.approx(0.0)
    assert fidelity_map(weak_only, reference, reference_threshold=0.2).map50 < 1.0
    assert fidelity_map(weak_only, reference, reference_threshold=0.2).map50 > 0.0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="3 frames of detections but 2"):
        coco_map(GT, GT[:2])
    with pytest.raises(ValueError, match="must be Detections"):
        coco_map([np.zeros((1, 4))], [GT[0]])
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        coco_map([Detections(np.zeros((2, 4), np.float32), np.ones(1), np.ones(2, np.int64), [])], [GT[0]])


def test_rate_helpers():
    # The thesis's JPEG frames: 13 MB/s at 1280x960 and 30 frames/s is about 2.8 bits per pixel.
    bytes_per_frame = 13e6 / 30
    assert mb_per_s(bytes_per_frame) == pytest.approx(13.0)
    assert mb_per_s(bytes_per_frame, fps=10) == pytest.approx(13.0 / 3)
    assert bits_per_pixel(bytes_per_frame, 1280, 960) == pytest.approx(2.82, abs=0.01)
    assert bits_per_element(25 * 34 * 2048, 25 * 34 * 2048) == 8.0
    assert mb_per_s(25 * 34 * 2048) == pytest.approx(52.2, abs=0.1)  # the thesis's layer4 figure
    assert compression_ratio(1000, 250) == 4.0 and compression_ratio(1, 0) == math.inf
    with pytest.raises(ValueError):
        mb_per_s(1, fps=0)


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == math.inf
    b = a + np.uint8(1)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2))
    with pytest.raises(ValueError):
        psnr(a, a[:2])


def _random_frames(rng, n_frames, categories, jitter):
    """Ground truth and noisy detections of random boxes (some missed, some false, mixed sizes)."""
    gts, tests = [], []
    for _ in range(n_frames):
        k = int(rng.integers(0, 8))
        xy = rng.uniform(0, 500, (k, 2))
        wh = rng.uniform(8, 200, (k, 2))  # small, medium and large COCO areas
        boxes = np.hstack([xy, xy + wh])
        ids = rng.choice(categories, k)
        gts.append(dets(boxes, ids=ids))
        keep = rng.random(k) > 0.2
        noisy = boxes[keep] + rng.normal(0, jitter, (int(keep.sum()), 4))
        extra = int(rng.integers(0, 3))
        fxy = rng.uniform(0, 500, (extra, 2))
        noisy = np.vstack([noisy, np.hstack([fxy, fxy + 40])])
        test_ids = np.concatenate([ids[keep], rng.choice(categories, extra)])
        tests.append(dets(noisy, rng.uniform(0.05, 1.0, len(noisy)), test_ids))
    return tests, gts


def test_scores_equal_pycocotools_default_summary():
    """Evaluating only the "all" area range gives pycocotools' own AP and AP50 (stats[0], [1])."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    tests, gts = _random_frames(rng, 40, [1, 3, 18], jitter=6.0)
    r = coco_map(tests, gts)
    images, gt_anns, dt_anns = [], [], []
    for i, (g, t) in enumerate(zip(gts, tests, strict=True), 1):
        images.append({"id": i})
        for b, c in zip(g.boxes, g.category_ids, strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b, s, c in zip(t.boxes, t.scores, t.category_ids, strict=True):
            if s >= 0.05:
                box = [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
                dt_anns.append({"image_id": i, "category_id": int(c), "bbox": box, "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": gt_anns, "categories": [{"id": c} for c in (1, 3, 18)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dt_anns), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.2 < r.map50 < 0.95  # a real mix of hits and misses
    assert r.map50_95 == pytest.approx(ev.stats[0], abs=1e-12)
    assert r.map50 == pytest.approx(ev.stats[1], abs=1e-12)


def test_category_subset_equals_scoring_that_subset_alone():
    rng = np.random.default_rng(4)
    tests, gts = _random_frames(rng, 30, [1, 2, 3, 44], jitter=5.0)
    full = coco_map(tests, gts)
    assert set(full.per_category) == {1, 2, 3, 44}

    def only(d, cats):
        keep = np.isin(d.category_ids, cats)
        return dets(d.boxes[keep], d.scores[keep], d.category_ids[keep])

    for cats in ([1], [1, 3], [2, 3, 44]):
        alone = coco_map([only(t, cats) for t in tests], [only(g, cats) for g in gts])
        assert full.subset(cats) == pytest.approx((alone.map50, alone.map50_95), abs=1e-12)
        # the same from the per-frame outcomes (what the bootstrap resamples), every frame once
        assert full.images.all_scores(np.ones(30), cats)[2:] == pytest.approx(full.subset(cats), abs=1e-12)
    assert all(math.isnan(v) for v in full.subset([77]))  # no ground truth: undefined
    rows = full.categories()  # (id, boxes, AP@0.5, AP@[.5:.95]) of each, by id
    assert [c for c, *_ in rows] == [1, 2, 3, 44]
    assert [n for _, n, _, _ in rows] == [sum(int((g.category_ids == c).sum()) for g in gts) for c in (1, 2, 3, 44)]
    assert np.mean([a for *_, a, _ in rows]) == pytest.approx(full.map50, abs=1e-12)
    assert np.mean([b for *_, b in rows]) == pytest.approx(full.map50_95, abs=1e-12)
    assert coco_map([dets()] * 3, GT).subset([1, 3]) == (0.0, 0.0)  # ground truth, nothing found
