"""The scores of the evaluation harness: detection accuracy (COCO mAP), rates and image fidelity.

Detection accuracy (docs/requirements.md section 6) is COCO mAP@0.5 and mAP@[.5:.95] computed by
pycocotools on per-frame :class:`~temposplit.model.detections.Detections` (boxes x1, y1,
x2, y2 in pixels, scores, COCO category ids):

* :func:`coco_map` scores detections under test (kept if score >= ``score_threshold``,
  default 0.05) against per-frame ground truth (all of its boxes count; scores ignored).
* :func:`fidelity_map` is the same against a reference run's detections with score >=
  ``reference_threshold`` (default 0.5): the "fidelity mAP". Scoring the reference run
  itself gives 1.0 by construction.

COCO conventions apply: each category is scored on its own and the mean is over the
categories that have ground truth somewhere in the clip, so detections of a category with
no ground truth anywhere are ignored (they are not false positives of another category);
detections on a frame without ground truth are false positives of their category; up to
``max_detections`` (100) detections per frame, highest scores first; the "all" area range.

Degenerate cases, always answered the same way:

* no ground-truth box in any frame: both mAPs are **NaN** (nothing to find: undefined,
  not zero; averages across clips should skip it, e.g. ``numpy.nanmean``);
* ground truth but no detection (after the score filter): both mAPs are **0.0**.

The rate helpers follow docs/requirements.md section 6: MB = 10^6 bytes, MB/s at a stated frame rate
(30 frames/s by default, the thesis's), bits per element or pixel, compression ratios.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from temposplit.errors import ConfigError
from temposplit.model.detections import Detections

__all__ = [
    "Detections",
    "ImageEvals",
    "MapResult",
    "bits_per_element",
    "bits_per_pixel",
    "coco_map",
    "compression_ratio",
    "fidelity_map",
    "mb_per_s",
    "psnr",
]

DEFAULT_SCORE_THRESHOLD = 0.05
DEFAULT_REFERENCE_THRESHOLD = 0.5
DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class MapResult:
    """COCO mAP of one run over a clip.

    Attributes
    ----------
    map50 : float
        mAP at IoU 0.5 (NaN when there is no ground truth, see the module docstring).
    map50_95 : float
        mAP averaged over IoU 0.50:0.05:0.95.
    n_frames, n_ground_truth, n_detections : int
        Frames, ground-truth boxes, and detections kept by the score filter.
    per_category : dict
        category id -> (AP@0.5, AP@[.5:.95]) of each category with ground truth.
    """

    map50: float
    map50_95: float
    n_frames: int
    n_ground_truth: int
    n_detections: int
    per_category: dict = field(default_factory=dict, compare=False, repr=False)
    images: ImageEvals | None = field(default=None, compare=False, repr=False)

    def subset(self, categories) -> tuple[float, float]:
        """(mAP@0.5, mAP@[.5:.95]) over the given categories alone: the same numbers as scoring
        the detections and ground truth of those categories only (COCO scores each category on
        its own), without a second evaluation. NaN when none of them has ground truth."""
        aps = [self.per_category[c] for c in categories if c in self.per_category]
        if not aps:
            return math.nan, math.nan
        return float(np.mean([a for a, _ in aps])), float(np.mean([b for _, b in aps]))

    def categories(self) -> list[tuple[int, int, float, float]]:
        """(category id, ground-truth boxes, AP@0.5, AP@[.5:.95]) of each category with ground
        truth, by id: what each one adds to the mean. A category of a few boxes weighs as much
        as one of hundreds, so one lost box of a rare category can move mAP by many points."""
        if self.images is None:
            return []
        boxes = {int(c): int(n) for c, n in zip(self.images.categories, self.images.gt.sum(axis=1), strict=True)}
        return [(c, boxes.get(c, 0), a, b) for c, (a, b) in sorted(self.per_category.items())]

    def as_dict(self) -> dict:
        return {
            "map50": self.map50,
            "map50_95": self.map50_95,
            "n_frames": self.n_frames,
            "n_ground_truth": self.n_ground_truth,
            "n_detections": self.n_detections,
        }


@dataclass
class ImageEvals:
    """The per-frame outcome of one COCO evaluation, enough to score any multiset of its frames
    (a bootstrap resample) without evaluating again: per category, every kept detection's frame,
    score, and whether it matched (and whether it was ignored) at each IoU threshold, and the
    number of non-ignored ground-truth boxes per frame. :meth:`scores` with every frame once
    gives pycocotools' numbers (tested).

    Attributes
    ----------
    categories : int64 (K,)
    n_frames : int
    frame, score : per category, (D,) int64 and float64, detections in pycocotools' order
        (frame by frame, the top ``max_detections`` of each, by score)
    matched, ignored : per category, bool (T, D)
    gt : int64 (K, n_frames), non-ignored ground-truth boxes of each category in each frame
    iou_thresholds, recall_thresholds : float64 (T,), (R,)
    """

    categories: np.ndarray
    n_frames: int
    frame: list
    score: list
    matched: list
    ignored: list
    gt: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray

    @classmethod
    def from_cocoeval(cls, evaluator, n_frames: int) -> ImageEvals:
        p = evaluator.params
        n_img, n_t = len(p.imgIds), len(p.iouThrs)
        frame, score, matched, ignored = [], [], [], []
        gt = np.zeros((len(p.catIds), n_frames), np.int64)
        for k, _cat in enumerate(p.catIds):
            fr, sc, ma, ig = [], [], [], []
            for i in range(n_img):
                e = evaluator.evalImgs[k * len(p.areaRng) * n_img + i]  # area range 0 ("all")
                if e is None:
                    continue
                d = min(len(e["dtScores"]), p.maxDets[-1])
                fr.append(np.full(d, p.imgIds[i] - 1, np.int64))
                sc.append(np.asarray(e["dtScores"][:d], np.float64))
                ma.append(np.asarray(e["dtMatches"][:, :d]) != 0)
                ig.append(np.asarray(e["dtIgnore"][:, :d], bool))
                gt[k, p.imgIds[i] - 1] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            frame.append(np.concatenate(fr) if fr else np.zeros(0, np.int64))
            score.append(np.concatenate(sc) if sc else np.zeros(0))
            matched.append(np.concatenate(ma, axis=1) if ma else np.zeros((n_t, 0), bool))
            ignored.append(np.concatenate(ig, axis=1) if ig else np.zeros((n_t, 0), bool))
        return cls(
            np.asarray(p.catIds, np.int64),
            int(n_frames),
            frame,
            score,
            matched,
            ignored,
            gt,
            np.asarray(p.iouThrs, np.float64),
            np.asarray(p.recThrs, np.float64),
        )

    @classmethod
    def without_detections(cls, gt_anns, n_frames: int) -> ImageEvals:
        """The evaluation of a run without a single detection (every score 0)."""
        cats = sorted({int(a["category_id"]) for a in gt_anns})
        gt = np.zeros((len(cats), n_frames), np.int64)
        for a in gt_anns:
            gt[cats.index(int(a["category_id"])), a["image_id"] - 1] += 1
        t, r = np.linspace(0.5, 0.95, 10), np.linspace(0.0, 1.0, 101)
        empty = [np.zeros((len(t), 0), bool) for _ in cats]
        return cls(
            np.asarray(cats, np.int64),
            n_frames,
            [np.zeros(0, np.int64) for _ in cats],
            [np.zeros(0) for _ in cats],
            empty,
            [e.copy() for e in empty],
            gt,
            t,
            r,
        )

    def to_npz(self) -> dict:
        out = {
            "categories": self.categories,
            "n_frames": np.int64(self.n_frames),
            "gt": self.gt,
            "iou_thresholds": self.iou_thresholds,
            "recall_thresholds": self.recall_thresholds,
        }
        for k in range(len(self.categories)):
            out[f"frame{k}"] = self.frame[k].astype(np.int32)
            s32 = self.score[k].astype(np.float32)
            out[f"score{k}"] = s32 if np.array_equal(s32, self.score[k]) else self.score[k]
            out[f"matched{k}"] = np.packbits(self.matched[k], axis=1)
            out[f"ignored{k}"] = np.packbits(self.ignored[k], axis=1)
        return out

    @classmethod
    def from_npz(cls, z) -> ImageEvals:
        cats = np.asarray(z["categories"], np.int64)
        n = len(cats)
        d = [len(z[f"score{k}"]) for k in range(n)]
        return cls(
            cats,
            int(z["n_frames"]),
            [np.asarray(z[f"frame{k}"], np.int64) for k in range(n)],
            [np.asarray(z[f"score{k}"], np.float64) for k in range(n)],
            [np.unpackbits(z[f"matched{k}"], axis=1, count=d[k]).astype(bool) for k in range(n)],
            [np.unpackbits(z[f"ignored{k}"], axis=1, count=d[k]).astype(bool) for k in range(n)],
            np.asarray(z["gt"], np.int64),
            np.asarray(z["iou_thresholds"]),
            np.asarray(z["recall_thresholds"]),
        )

    def scores(self, weights: np.ndarray, frequent=()) -> tuple[float, float, float]:
        """(mAP@0.5, mAP@[.5:.95], mAP@0.5 over the ``frequent`` categories) of the frames taken
        ``weights[i]`` times each (integers; all ones: the evaluation itself). NaN where no
        category has ground truth. Detections keep pycocotools' order (a frame taken twice
        contributes its detections twice, side by side)."""
        return self.all_scores(weights, frequent)[:3]

    def all_scores(self, weights: np.ndarray, frequent=()) -> tuple[float, float, float, float]:
        """:meth:`scores` and then mAP@[.5:.95] over the ``frequent`` categories, from one pass."""
        ap50, ap_all = self._category_aps(weights)
        if not ap50:
            return math.nan, math.nan, math.nan, math.nan
        freq = [c for c in frequent if c in ap50]
        return (
            float(np.mean(list(ap50.values()))),
            float(np.mean(list(ap_all.values()))),
            float(np.mean([ap50[c] for c in freq])) if freq else math.nan,
            float(np.mean([ap_all[c] for c in freq])) if freq else math.nan,
        )

    def _category_aps(self, weights: np.ndarray) -> tuple[dict, dict]:
        """Per category with ground truth in the weighted frames: AP@0.5 and AP@[.5:.95]."""
        weights = np.asarray(weights, np.float64)
        iou50 = int(np.argmin(np.abs(self.iou_thresholds - 0.5)))
        ap50, ap_all = {}, {}
        for k, cat in enumerate(self.categories):
            npig = float(self.gt[k] @ weights)
            if npig == 0:
                continue  # no ground truth of this category in these frames: not in the mean
            order = np.argsort(-self.score[k], kind="mergesort")
            w = weights[self.frame[k][order]]
            m, ig = self.matched[k][:, order], self.ignored[k][:, order]
            tp = np.cumsum(w * (m & ~ig), axis=1)
            fp = np.cumsum(w * (~m & ~ig), axis=1)
            prec = np.zeros((len(self.iou_thresholds), len(self.recall_thresholds)))
            for t in range(len(self.iou_thresholds)):
                if tp.shape[1] == 0:
                    continue
                rc = tp[t] / npig
                pr = tp[t] / (fp[t] + tp[t] + np.spacing(1))
                pr = np.maximum.accumulate(pr[::-1])[::-1]
                inds = np.searchsorted(rc, self.recall_thresholds, side="left")
                ok = inds < len(pr)
                prec[t, ok] = pr[inds[ok]]
            ap50[int(cat)] = float(prec[iou50].mean())
            ap_all[int(cat)] = float(prec.mean())
        return ap50, ap_all


def _arrays(d: Detections, what: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(d, Detections):
        raise ConfigError(f"{what}[{index}] must be Detections, not {type(d).__name__}")
    boxes = np.asarray(d.boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(d.scores, np.float64).reshape(-1)
    ids = np.asarray(d.category_ids, np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(ids):
        raise ConfigError(f"{what}[{index}] has {len(boxes)} boxes, {len(scores)} scores and {len(ids)} category ids")
    return boxes, scores, ids


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_map(
    detections: Sequence[Detections],
    ground_truth: Sequence[Detections],
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    max_detections: int = 100,
) -> MapResult:
    """COCO mAP@0.5 and mAP@[.5:.95] of per-frame detections against per-frame ground truth.

    ``detections[i]`` and ``ground_truth[i]`` belong to frame i. The COCO objects are built
    in memory and pycocotools' printing is silenced.

    Raises
    ------
    ValueError
        The two sequences differ in length, or an entry is not a consistent Detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections, ground_truth = list(detections), list(ground_truth)
    if len(detections) != len(ground_truth):
        raise ConfigError(f"{len(detections)} frames of detections but {len(ground_truth)} of ground truth")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be at least 1, not {max_detections}")

    images, gt_anns, dt_anns, categories = [], [], [], set()
    for frame, (gt, dt) in enumerate(zip(ground_truth, detections, strict=True), start=1):
        images.append({"id": frame})
        g_boxes, _, g_ids = _arrays(gt, "ground_truth", frame - 1)
        for box, cat in zip(g_boxes, g_ids, strict=True):
            x, y, w, h = _xywh(box)
            # Annotation ids start at 1: pycocotools takes id 0 for "unmatched".
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": frame,
                    "category_id": int(cat),
                    "bbox": [x, y, w, h],
                    "area": max(w, 0.0) * max(h, 0.0),
                    "iscrowd": 0,
                }
            )
            categories.add(int(cat))
        d_boxes, d_scores, d_ids = _arrays(dt, "detections", frame - 1)
        for box, score, cat in zip(d_boxes, d_scores, d_ids, strict=True):
            if score >= score_threshold:
                dt_anns.append({"image_id": frame, "category_id": int(cat), "bbox": _xywh(box), "score": float(score)})
                categories.add(int(cat))

    n_frames, n_gt, n_dt = len(images), len(gt_anns), len(dt_anns)
    if n_gt == 0:
        return MapResult(math.nan, math.nan, n_frames, n_gt, n_dt)
    if n_dt == 0:
        found = {int(a["category_id"]): (0.0, 0.0) for a in gt_anns}
        return MapResult(0.0, 0.0, n_frames, n_gt, n_dt, found, ImageEvals.without_detections(gt_anns, n_frames))

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": gt_anns,
            "categories": [{"id": c, "name": str(c)} for c in sorted(categories)],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt_anns)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        # Only what the two scores read: the "all" area range and the top max_detections. The
        # default small/medium/large ranges would quadruple the work for numbers never used;
        # the "all" range's matching is the same either way (tested against the default).
        evaluator.params.areaRng = [[0.0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.params.maxDets = [int(max_detections)]
        evaluator.evaluate()
        evaluator.accumulate()

    # precision[T, R, K, A, M]: IoU thresholds, recall points, categories, area ranges, maxDets.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    iou50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))

    def mean(p: np.ndarray) -> float:
        valid = p[p > -1]  # -1: a category without ground truth
        return float(valid.mean()) if valid.size else math.nan

    per_category = {
        int(c): (float(precision[iou50, :, k].mean()), float(precision[:, :, k].mean()))
        for k, c in enumerate(evaluator.params.catIds)
        if (precision[:, :, k] > -1).all()
    }
    images = ImageEvals.from_cocoeval(evaluator, n_frames)
    return MapResult(mean(precision[iou50]), mean(precision), n_frames, n_gt, n_dt, per_category, images)


def fidelity_map(
    detections: Sequence[Detections],
    reference: Sequence[Detections],
    *,
    reference_threshold: float = DEFAULT_REFERENCE_THRESHOLD,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    max_detections: int = 100,
) -> MapResult:
    """Fidelity mAP: detections under test against the reference run's detections with
    score >= ``reference_threshold`` (docs/requirements.md section 6, ground truth (a))."""
    reference = [r.above(reference_threshold) for r in reference]
    return coco_map(detections, reference, score_threshold=score_threshold, max_detections=max_detections)


# --------------------------------------------------------------------------- rates


def mb_per_s(bytes_per_frame: float, fps: float = DEFAULT_FPS) -> float:
    """Rate in MB/s (10^6 bytes per second) at ``fps`` frames per second."""
    if fps <= 0:
        raise ConfigError(f"fps must be positive, not {fps}")
    return float(bytes_per_frame) * float(fps) / 1e6


def bits_per_element(nbytes: float, n_elements: int) -> float:
    """Coded bits per tensor element (8.0 for uncompressed 8-bit features)."""
    if n_elements <= 0:
        raise ConfigError(f"n_elements must be positive, not {n_elements}")
    return 8.0 * float(nbytes) / n_elements


def bits_per_pixel(bytes_per_frame: float, width: int, height: int) -> float:
    """Coded bits per pixel of a width x height frame (24.0 for raw RGB)."""
    return bits_per_element(bytes_per_frame, int(width) * int(height))


def compression_ratio(raw_bytes: float, coded_bytes: float) -> float:
    """raw / coded (how many times smaller); infinite for zero coded bytes."""
    return math.inf if coded_bytes == 0 else float(raw_bytes) / float(coded_bytes)


# --------------------------------------------------------------------------- image fidelity


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape images (inf when identical)."""
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ConfigError(f"PSNR of images of shapes {reference.shape} and {test.shape}")
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
