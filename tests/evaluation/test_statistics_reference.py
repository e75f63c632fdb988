"""The evaluation's statistics against independent implementations written from their
definitions (NumPy only): the Bjøntegaard delta rate with piecewise cubic Hermite
interpolation, the Pareto front, COCO mAP (and its rescoring on a resample), the
block bootstrap and its percentile intervals, the pooled mean; and the committed reports
against their own rows."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bjontegaard")
pytest.importorskip("pycocotools")

from temposplit.errors import ConfigError  # noqa: E402
from temposplit.evaluation import bootstrap  # noqa: E402
from temposplit.evaluation.bdrate import bd_rate, pareto_front  # noqa: E402
from temposplit.evaluation.metrics import Detections, coco_map  # noqa: E402
from temposplit.evaluation.summary import NO_FREQUENT, bd_cell, pooled, summarize_clip  # noqa: E402

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"

# --------------------------------------------------------------------------- references


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives as in Moler's ``pchip``: a weighted harmonic mean of the
    neighbouring secants inside (0 at a local extremum), a shape-preserving three-point
    formula at the ends; a line through two points."""
    h, m = np.diff(x), np.diff(y) / np.diff(x)
    if len(x) == 2:
        return np.array([m[0], m[0]])
    d = np.zeros(len(x))
    for k in range(1, len(x) - 1):
        if m[k - 1] * m[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])

    def end(h0, h1, m0, m1):
        e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(e) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(e) > abs(3 * m0):
            return 3 * m0
        return e

    d[0] = end(h[0], h[1], m[0], m[1])
    d[-1] = end(h[-1], h[-2], m[-1], m[-2])
    return d


def _hermite(x, y, d, q: np.ndarray) -> np.ndarray:
    k = np.clip(np.searchsorted(x, q, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    t = (q - x[k]) / h
    return (
        (2 * t**3 - 3 * t**2 + 1) * y[k]
        + (t**3 - 2 * t**2 + t) * h * d[k]
        + (-2 * t**3 + 3 * t**2) * y[k + 1]
        + (t**3 - t**2) * h * d[k + 1]
    )


def _integral(f, lo: float, hi: float, knots) -> float:
    """The integral of a piecewise cubic over [lo, hi]: 3-point Gauss-Legendre (exact for
    degree 5) on each piece between the knots."""
    edges = np.unique(np.concatenate([[lo, hi], [k for k in knots if lo < k < hi]]))
    nodes, weights = np.polynomial.legendre.leggauss(3)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        total += 0.5 * (b - a) * float(np.sum(weights * f(0.5 * (b - a) * nodes + 0.5 * (a + b))))
    return total


def ref_bd_rate(anchor_rates, anchor_acc, test_rates, test_acc, fit="pchip") -> float:
    """BD-rate (%): the mean difference of the interpolated log10 rates over the common accuracy range."""
    ends = []
    fits = []
    for rates, acc in ((anchor_rates, anchor_acc), (test_rates, test_acc)):
        x, y = np.asarray(acc, float), np.log10(np.asarray(rates, float))
        ends.append((x.min(), x.max()))
        if fit == "pchip":
            d = _pchip_slopes(x, y)
            fits.append((lambda q, x=x, y=y, d=d: _hermite(x, y, d, q), x))
        else:  # the original Bjøntegaard fit: a cubic polynomial
            c = np.polyfit(x, y, 3)
            fits.append((lambda q, c=c: np.polyval(c, q), x))
    lo, hi = max(ends[0][0], ends[1][0]), min(ends[0][1], ends[1][1])
    (ft, xt), (fa, xa) = fits[1], fits[0]
    mean_log = (_integral(ft, lo, hi, xt) - _integral(fa, lo, hi, xa)) / (hi - lo)
    return (10**mean_log - 1) * 100


def ref_front(rates, acc) -> list[int]:
    """By brute force: the points that no other point beats (as accurate or more for as few
    bytes or fewer, better in one; of exact duplicates the first), by rising accuracy."""
    pts = [(a, r, i) for i, (r, a) in enumerate(zip(rates, acc, strict=True)) if r > 0 and math.isfinite(a)]
    keep = []
    for a, r, i in pts:
        beaten = any((a2 >= a and r2 <= r) and (a2 > a or r2 < r or j < i) for a2, r2, j in pts if j != i)
        if not beaten:
            keep.append((a, i))
    return [i for _, i in sorted(keep)]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def ref_coco(dets, gts, score_min=0.05, max_dets=100) -> tuple[float, float]:
    """COCO mAP@0.5 and mAP@[.5:.95] from the definition: per category with ground truth, per
    frame the detections by score (the top 100) each matched greedily to the unmatched
    ground-truth box of highest IoU >= t; over the frames, precision at each of the 101 recall
    points is the best precision at that recall or beyond (0 if never reached)."""
    cats = sorted({int(c) for g in gts for c in g.category_ids})
    ious = np.linspace(0.5, 0.95, 10)
    aps50, aps = [], []
    for c in cats:
        npig = sum(int(np.sum(g.category_ids == c)) for g in gts)
        per_t = []
        for t in ious:
            scored = []
            for g, d in zip(gts, dets, strict=True):
                gb = [np.asarray(b, float) for b, k in zip(g.boxes, g.category_ids, strict=True) if k == c]
                keep = [
                    (float(s), np.asarray(b, float))
                    for b, s, k in zip(d.boxes, d.scores, d.category_ids, strict=True)
                    if k == c and s >= score_min
                ]
                keep = sorted(keep, key=lambda e: -e[0])[:max_dets]
                taken = set()
                for s, b in keep:
                    best, best_iou = None, t
                    for j, box in enumerate(gb):
                        if j not in taken and _iou(b, box) >= best_iou:
                            best, best_iou = j, _iou(b, box)
                    if best is not None:
                        taken.add(best)
                    scored.append((s, best is not None))
            scored.sort(key=lambda e: -e[0])
            tp = np.cumsum([m for _, m in scored], dtype=float)
            fp = np.cumsum([not m for _, m in scored], dtype=float)
            recall = tp / npig
            precision = tp / np.maximum(tp + fp, 1e-300)
            envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(scored) else precision
            at = [
                envelope[np.argmax(recall >= r)] if len(scored) and recall[-1] >= r else 0.0
                for r in np.linspace(0, 1, 101)
            ]
            per_t.append(float(np.mean(at)))
        aps50.append(per_t[0])
        aps.append(float(np.mean(per_t)))
    return float(np.mean(aps50)), float(np.mean(aps))


# --------------------------------------------------------------------------- BD-rate

CURVED_RATES = [300.0, 900.0, 2400.0, 9000.0, 40000.0]
CURVED_ACC = [0.42, 0.71, 0.83, 0.93, 0.985]


def test_half_the_bytes_at_every_accuracy_is_exactly_minus_50_percent():
    r = bd_rate(CURVED_RATES, CURVED_ACC, [0.5 * x for x in CURVED_RATES], CURVED_ACC)
    assert r.bd_rate == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(CURVED_RATES, CURVED_ACC, CURVED_RATES, CURVED_ACC).bd_rate == pytest.approx(0.0, abs=1e-12)
    # The sign: negative when the test curve (the features) needs fewer bytes.
    assert bd_rate([0.5 * x for x in CURVED_RATES], CURVED_ACC, CURVED_RATES, CURVED_ACC).bd_rate == pytest.approx(
        100.0, abs=1e-9
    )


def test_a_constant_ratio_at_other_accuracies_and_a_partial_overlap_is_exact():
    # log10 rate linear in accuracy: any piecewise cubic Hermite fit reproduces it, so the
    # curves sampled at different accuracies still differ by exactly log10(0.7).
    anchor_acc = [0.50, 0.62, 0.71, 0.85, 0.90]
    test_acc = [0.55, 0.66, 0.80, 0.97]
    anchor = [10 ** (2 + 3 * a) for a in anchor_acc]
    test = [0.7 * 10 ** (2 + 3 * a) for a in test_acc]
    r = bd_rate(anchor, anchor_acc, test, test_acc, hull=False)
    assert r.bd_rate == pytest.approx(-30.0, abs=1e-9)
    assert r.overlap == (0.55, 0.90)


@pytest.mark.parametrize("seed", range(8))
def test_bd_rate_is_the_mean_log_rate_difference_of_pchip_fits_over_the_overlap(seed):
    rng = np.random.default_rng(seed)

    def curve(lo, hi, n):
        acc = np.sort(rng.uniform(lo, hi, n))
        rates = 100 * np.cumprod(rng.uniform(1.2, 4.0, n))
        return rates.tolist(), acc.tolist()

    while True:
        ra, aa = curve(0.3, 0.9, int(rng.integers(2, 8)))
        rt, at = curve(0.5, 1.0, int(rng.integers(2, 8)))
        if min(aa[-1], at[-1]) > max(aa[0], at[0]):
            break
    r = bd_rate(ra, aa, rt, at, hull=False)
    assert r.overlap == (max(aa[0], at[0]), min(aa[-1], at[-1]))
    assert r.bd_rate == pytest.approx(ref_bd_rate(ra, aa, rt, at), rel=1e-9, abs=1e-9)


def test_the_fit_is_pchip_not_the_cubic_polynomial():
    # An S-shaped curve where the two fits differ by several points of BD-rate.
    anchor_rates, anchor_acc = [100, 150, 2000, 2500, 30000], [0.50, 0.60, 0.65, 0.80, 0.95]
    test_rates, test_acc = [80, 500, 900, 20000], [0.52, 0.61, 0.78, 0.94]
    got = bd_rate(anchor_rates, anchor_acc, test_rates, test_acc, hull=False).bd_rate
    pchip, cubic = (
        ref_bd_rate(anchor_rates, anchor_acc, test_rates, test_acc),
        ref_bd_rate(anchor_rates, anchor_acc, test_rates, test_acc, fit="cubic"),
    )
    assert abs(pchip - cubic) > 5
    assert got == pytest.approx(pchip, abs=1e-9)


def test_two_points_are_a_line_and_fewer_give_no_number():
    r = bd_rate([100, 1000], [0.6, 0.8], [50, 500], [0.6, 0.8])
    assert r.bd_rate == pytest.approx(-50.0, abs=1e-9)
    two = bd_rate([100, 1000], [0.6, 0.8], [100, 400], [0.7, 0.9])
    assert two.bd_rate == pytest.approx(ref_bd_rate([100, 1000], [0.6, 0.8], [100, 400], [0.7, 0.9]), abs=1e-9)
    for rates, acc in (([100.0], [0.7]), ([100.0, 200.0, 300.0], [0.7, 0.7, 0.7])):
        r = bd_rate(CURVED_RATES, CURVED_ACC, rates, acc)
        assert math.isnan(r.bd_rate) and "fewer than two" in r.note and r.overlap is None


@pytest.mark.parametrize(
    "test_acc",
    [[0.10, 0.30], [0.985, 0.99], [0.40, 0.42]],  # below, above, touching at one accuracy
)
def test_curves_that_do_not_overlap_give_no_number_and_say_so(test_acc):
    r = bd_rate(CURVED_RATES, CURVED_ACC, [100.0, 200.0], test_acc)
    assert math.isnan(r.bd_rate) and not r.defined and r.overlap is None
    assert r.note.startswith("no overlap")
    cell = bd_cell({"bd_rate": r.bd_rate, "lo": math.nan, "hi": math.nan, "note": r.note, "replicates": []})
    assert cell.startswith("no overlap") and "%" not in cell


def test_a_non_monotone_curve_is_its_hull():
    rates = [500, 700, 650, 3000, 2000, 9000, 8000, 20000]
    acc = [0.60, 0.55, 0.75, 0.80, 0.85, 0.90, 0.95, 0.93]
    h = ref_front(rates, acc)
    r = bd_rate(rates, acc, CURVED_RATES, CURVED_ACC)
    assert r.anchor_points == len(h)
    expect = ref_bd_rate([rates[i] for i in h], [acc[i] for i in h], CURVED_RATES, CURVED_ACC)
    assert r.bd_rate == pytest.approx(expect, abs=1e-9)
    with pytest.raises(ConfigError):
        bd_rate(rates, acc, CURVED_RATES, CURVED_ACC, hull=False)


# --------------------------------------------------------------------------- hull


@pytest.mark.parametrize("seed", range(20))
def test_the_hull_is_the_brute_force_pareto_front(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 30))
    acc = rng.uniform(0.2, 1.0, n)
    rates = 10 ** (2 + 2 * acc + rng.normal(0, 0.4, n))
    assert pareto_front(rates.tolist(), acc.tolist()) == ref_front(rates.tolist(), acc.tolist())


def test_the_hull_keeps_the_cheapest_of_equal_accuracy_and_the_most_accurate_of_equal_rate():
    rates = [100, 120, 100, 200, 1000, 1000]
    acc = [0.5, 0.5, 0.6, 0.8, 0.9, 0.95]
    idx = pareto_front(rates, acc)
    assert idx == ref_front(rates, acc) == [2, 3, 5]  # 100 @ 0.6 beats both 0.5 points; 1000 @ 0.95 beats 1000 @ 0.9


# --------------------------------------------------------------------------- COCO mAP


def _frames(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for f in range(n):
        k = 0 if f in (1, 6) else int(rng.integers(1, 5))  # frames 1 and 6: no reference box
        corner = rng.uniform(0, 250, (k, 2))
        boxes = np.hstack([corner, corner + rng.uniform(15, 90, (k, 2))])
        cats = rng.choice([1, 3, 44], k)
        if f == 0:
            cats[:] = 18  # category 18 (dog): reference boxes on frame 0 only, never detected
        gts.append(Detections.make(boxes, np.ones(k), cats))
        if f in (2, 9):  # no detection at all
            dts.append(Detections.make(np.zeros((0, 4)), [], []))
            continue
        m = int(rng.integers(0, 7))
        pick = rng.integers(0, max(k, 1), m)
        db = (
            boxes[pick] + rng.normal(0, 7, (m, 4))
            if k
            else np.hstack([rng.uniform(0, 250, (m, 2))] * 2) + [0, 0, 40, 40]
        )
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 4)  # a detector's boxes have a positive size
        dc = cats[pick] if k else rng.choice([1, 3], m)
        dc = np.where(dc == 18, 1, dc)
        dc = np.where(rng.random(m) < 0.2, 62, dc)  # category 62 (chair): detected, never in the reference
        dts.append(Detections.make(db, rng.uniform(0.01, 1.0, m), dc))
    return dts, gts


def _pycocotools_defaults(dts, gts) -> tuple[float, float]:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, res = [], [], []
    for f, (d, g) in enumerate(zip(dts, gts, strict=True), start=1):
        images.append({"id": f})
        for b, c in zip(g.boxes.astype(float), g.category_ids, strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {"id": len(anns) + 1, "image_id": f, "category_id": int(c), "bbox": [b[0], b[1], w, h], "area": w * h}
                | {"iscrowd": 0}
            )
        for b, s, c in zip(d.boxes.astype(float), d.scores, d.category_ids, strict=True):
            if s >= 0.05:
                res.append({"image_id": f, "category_id": int(c), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
                res[-1]["score"] = float(s)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        cats = sorted({a["category_id"] for a in anns} | {r["category_id"] for r in res})
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), iouType="bbox")  # every default: four area ranges, 1/10/100 detections
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_pycocotools_and_the_definition(seed):
    dts, gts = _frames(seed)
    m = coco_map(dts, gts)
    assert 18 in m.per_category and 62 not in m.per_category  # absent from the reference: not in the mean
    assert m.per_category[18] == (0.0, 0.0)
    ref50, ref = ref_coco(dts, gts)
    coco50, coco = _pycocotools_defaults(dts, gts)
    assert m.map50 == pytest.approx(ref50, abs=1e-12) and m.map50_95 == pytest.approx(ref, abs=1e-12)
    assert m.map50 == pytest.approx(coco50, abs=1e-12) and m.map50_95 == pytest.approx(coco, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_a_resample_rescores_as_the_definition_on_the_repeated_frames(seed):
    dts, gts = _frames(seed)
    m = coco_map(dts, gts)
    w = np.random.default_rng(seed).integers(0, 3, len(gts))
    w[0] = 0  # drops category 18's only reference boxes: it leaves the mean
    w[2] = 2  # a frame without detections, twice
    taken = [i for i in range(len(gts)) for _ in range(w[i])]
    ref50, ref = ref_coco([dts[i] for i in taken], [gts[i] for i in taken])
    got50, got, _ = m.images.scores(w)
    assert got50 == pytest.approx(ref50, abs=1e-12) and got == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------------------- bootstrap


def test_interval_is_the_2_5th_and_97_5th_percentile():
    v = np.random.default_rng(0).normal(size=200)
    s = np.sort(v)

    def pct(q):  # linear interpolation between order statistics
        pos = q / 100 * (len(s) - 1)
        lo = int(math.floor(pos))
        return s[lo] + (pos - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])

    assert bootstrap.interval(v) == pytest.approx((pct(2.5), pct(97.5)), abs=1e-12)
    some = np.where(np.arange(200) < 80, np.nan, v)  # 40 % undefined: the rest give the interval
    kept = np.sort(v[80:])
    assert bootstrap.interval(some) == pytest.approx(tuple(np.percentile(kept, [2.5, 97.5])), abs=1e-12)
    assert all(math.isnan(x) for x in bootstrap.interval(np.where(np.arange(200) < 120, np.nan, v)))


def test_circular_blocks_are_consecutive_frames_and_weigh_every_frame_alike():
    n, block = 50, 10
    idx = bootstrap.block_resamples(n, block, replicates=4000, seed=1, circular=True)
    assert idx.shape == (4000, n)
    runs = idx.reshape(4000, n // block, block)
    assert np.all(np.diff(runs, axis=2) % n == 1)  # each block: consecutive frames (wrapping at the end)
    mean = bootstrap.resample_weights(idx, n).mean(axis=0)
    assert np.all(np.abs(mean - 1) < 0.1)  # every frame equally likely; moving blocks: 0.12 at the ends
    moving = bootstrap.resample_weights(bootstrap.block_resamples(n, block, 4000, seed=1), n).mean(axis=0)
    assert moving[0] == pytest.approx((n // block) / (n - block + 1), abs=0.03)


def test_percentile_intervals_of_block_resamples_cover_a_known_mean():
    # AR(1) frames with a known mean of 0: how often the 95 % interval of the mean covers it.
    rng = np.random.default_rng(7)
    covered, trials = 0, 300
    for t in range(trials):
        e = rng.normal(size=150)
        x = np.zeros(150)
        for i in range(1, 150):
            x[i] = 0.5 * x[i - 1] + e[i]
        x = x[100:]
        idx = bootstrap.block_resamples(50, bootstrap.BLOCK, bootstrap.REPLICATES, seed=t, circular=True)
        lo, hi = bootstrap.interval(x[idx].mean(axis=1))
        covered += lo <= 0 <= hi
    # About 0.82 (docs/evaluation.md, "BD-rates and intervals"): below 0.95 with 5 blocks a
    # resample, far above what the wrong percentiles (about 0.5 for the 25th-75th) would give.
    assert 0.74 <= covered / trials <= 0.92


def _box_rows(
    tmp_path: Path,
    clip: str,
    noise: dict[str, float],
    rates: dict[str, float],
    n: int = 40,
    boxes=(1, 5),
    frequent: bool = False,
):
    """Rows of one clip whose per-frame outcomes are saved as the harness saves them
    (``<tmp_path>/evals``): ``noise`` names each row ``method:variant`` with the box noise of
    its detections, ``rates`` its bytes per frame. Every reference box is of category 1,
    ``boxes`` a frame; ``frequent``: the rows carry the frequent-category scores."""
    rng = np.random.default_rng(11)
    gts = []
    for _ in range(n):
        k = int(rng.integers(*boxes))
        corner = rng.uniform(0, 200, (k, 2))
        gts.append(Detections.make(np.hstack([corner, corner + rng.uniform(20, 80, (k, 2))]), np.ones(k), [1] * k))
    root = tmp_path / "evals"
    (root / clip).mkdir(parents=True, exist_ok=True)
    rows = []
    for name, sigma in noise.items():
        r = np.random.default_rng(int(sigma * 1000))
        dts = [
            Detections.make(g.boxes + r.normal(0, sigma, g.boxes.shape), r.uniform(0.5, 1, len(g)), [1] * len(g))
            for g in gts
        ]
        m = coco_map(dts, gts)
        np.savez(root / clip / f"{name}.npz", **m.images.to_npz())
        method, variant = name.split(":", 1)
        rows.append(
            {
                "key": f"{clip}|{name}",
                "clip": clip,
                "method": method,
                "variant": variant,
                "cut": "features.10" if method == "chain+residual" else None,
                "n_bits": None,
                "coder": None,
                "frames": n,
                "scored_frames": n,
                "bytes_per_frame": float(rates[name]),
                "mb_per_s": rates[name] * 30 / 1e6,
                "map50": m.map50,
                "map50_95": m.map50_95,
                "map50_frequent": m.map50 if frequent else math.nan,
                "map50_95_frequent": m.map50_95 if frequent else math.nan,
                "evals": f"{clip}/{name}.npz",
            }
        )
    return rows, root


NOISE = {"h264:crf=43": 9.0, "h264:crf=33": 5.0, "h264:crf=23": 2.5, "h264:crf=13": 1.0}


def test_paired_resamples_keep_a_constant_rate_ratio_exact_on_every_resample(tmp_path):
    # The features' rows have the same per-frame outcomes as H.264's at half its bytes: on a
    # paired resample every row is rescored on the same frames, so every resample is -50 %.
    noise = dict(NOISE) | {f"chain+residual:{k}": v for k, v in NOISE.items()}
    rates = {k: (0.5 if k.startswith("chain") else 1.0) * 1000 * 2 ** (i % 4) for i, k in enumerate(noise)}
    rows, root = _box_rows(tmp_path, "clipa", noise, rates)
    s = summarize_clip(rows, root, replicates=50)
    e = s.bd[("map50_95", "h264")]
    assert e["bd_rate"] == pytest.approx(-50.0, abs=1e-9)
    finite = e["replicates"][np.isfinite(e["replicates"])]
    assert finite.size > 25 and np.allclose(finite, -50.0, atol=1e-9)
    assert (e["lo"], e["hi"]) == pytest.approx((-50.0, -50.0), abs=1e-9)


def test_every_frame_of_a_clip_is_as_likely_in_a_resample(tmp_path):
    # One row: the frames' outcome is 1 everywhere except on the last frame, whose one box is
    # missed. A resample's mAP is below 1 exactly when it holds the last frame: about 2/3 of
    # circular resamples (n = 40, 4 blocks of 10), 4 * 1/31 = 12 % of moving-block ones.
    n = 40
    gts = [Detections.make([[10, 10, 60, 60]], [1], [1]) for _ in range(n)]
    dts = [Detections.make([[10, 10, 60, 60]], [0.9], [1]) for _ in range(n - 1)]
    dts.append(Detections.make(np.zeros((0, 4)), [], []))
    m = coco_map(dts, gts)
    (tmp_path / "evals" / "c").mkdir(parents=True)
    np.savez(tmp_path / "evals" / "c" / "f.npz", **m.images.to_npz())
    row = {
        "key": "c|f", "clip": "c", "method": "chain+residual", "variant": "", "cut": "features.10", "n_bits": 4,
        "frames": n, "scored_frames": n, "bytes_per_frame": 100.0, "map50": m.map50, "map50_95": m.map50_95,
        "map50_frequent": math.nan, "map50_95_frequent": math.nan, "evals": "c/f.npz",
    }  # fmt: skip
    s = summarize_clip([row], tmp_path / "evals", replicates=400)
    holds_last = np.mean(s.intervals["c|f"][:, 0] < 1)
    assert 0.55 < holds_last < 0.8


def test_clips_are_resampled_independently_and_the_mean_takes_one_resample_of_each(tmp_path):
    noise = dict(NOISE) | {"chain+residual:a": 3.0, "chain+residual:b": 0.5, "chain+residual:c": 7.0}
    rates = dict(zip(noise, [800, 1600, 3200, 9000, 500, 4000, 300], strict=True))
    summaries = []
    for clip in ("one", "two"):
        rows, root = _box_rows(tmp_path, clip, noise, rates)
        summaries.append(summarize_clip(rows, root, replicates=60))
    a, b = (s.bd[("map50_95", "h264")] for s in summaries)
    assert a["bd_rate"] == b["bd_rate"]  # the same rows under two names ...
    assert not np.array_equal(a["replicates"], b["replicates"], equal_nan=True)  # ... resampled apart
    p = pooled(summaries)[("map50_95", "h264")]
    assert p["clips"] == 2 and p["bd_rate"] == pytest.approx(a["bd_rate"])
    assert (p["lo"], p["hi"]) == pytest.approx(bootstrap.interval((a["replicates"] + b["replicates"]) / 2), abs=1e-12)


# --------------------------------------------------------------------------- the committed reports


def _bdrate_csv(folder: Path) -> dict:
    with open(folder / "bdrate.csv", newline="") as f:
        return {(r["clip"], r["metric"], r["anchor"]): r for r in csv.DictReader(f)}


@pytest.mark.parametrize("folder", ["", "holdout"])
def test_the_pooled_table_follows_from_the_per_clip_figures(folder):
    table = _bdrate_csv(RESULTS / folder)
    clips = sorted({c for c, _, _ in table if c != "mean"})
    metrics = ["map50", "map50_95", "map50_frequent", "map50_95_frequent"]
    report = (RESULTS / folder / "report.md").read_text()
    pooled_lines = report.split("## BD-rate of the features against each frame codec, mean over the clips")[1]
    pooled_lines = pooled_lines.split("\n## ")[0].strip().splitlines()[2:]
    assert pooled_lines
    for line in pooled_lines:
        anchor, *cells = [c.strip() for c in line.strip("|").split("|")]
        for metric, cell in zip(metrics, cells, strict=True):
            defined = [
                float(table[(c, metric, anchor)]["bd_rate_pct"])
                for c in clips
                if table[(c, metric, anchor)]["bd_rate_pct"]
            ]
            mean = table[("mean", metric, anchor)]
            assert mean["note"] == f"mean over {len(defined)} clip(s) where defined"
            if not defined:
                assert cell.startswith("not defined on any clip") and not mean["bd_rate_pct"]
                continue
            assert float(mean["bd_rate_pct"]) == pytest.approx(np.mean(defined), abs=0.05)  # 4 significant digits
            figure, count = re.fullmatch(r"([+-]\d+) % .*\((\d+) clips?\)", cell).groups()
            assert int(count) == len(defined)
            assert int(figure) == round(float(mean["bd_rate_pct"]))


@pytest.mark.parametrize("folder", ["", "holdout"])
def test_the_committed_bd_rates_rebuild_from_their_rows(tmp_path, folder):
    from temposplit.evaluation.report import write_report

    doc = json.loads((RESULTS / folder / "results.json").read_text())
    out = tmp_path / "out"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps(doc["meta"]))
    write_report(out, doc["rows"], figures=False, replicates=0)
    committed, rebuilt = _bdrate_csv(RESULTS / folder), _bdrate_csv(out)
    assert committed.keys() == rebuilt.keys()
    for key, row in committed.items():
        for col in ("bd_rate_pct", "overlap_low", "overlap_high", "anchor_hull_points", "feature_hull_points", "note"):
            a, b = row[col], rebuilt[key][col]
            if col == "note" and a == "fewer than two points on a hull" and b == NO_FREQUENT:
                # A clip without a frequent category (no row has a frequent score): the committed
                # reports were written when its note was the empty hulls' one.
                assert key[1].endswith("_frequent") and row["anchor_hull_points"] == "0", key
                continue
            if col in ("note", "anchor_hull_points", "feature_hull_points") or not a or not b:
                assert a == b, (key, col)
            elif col == "bd_rate_pct":  # from rows of 6 significant digits: a BD-rate moves by hundredths
                assert float(a) == pytest.approx(float(b), rel=2e-3, abs=0.1), (key, col)
            else:  # the rows of results.json keep 6 significant digits, the csv 4
                assert float(a) == pytest.approx(float(b), rel=1e-3, abs=2e-4), (key, col)
