"""COCO mAP of detections (pycocotools), and the float/int8 SSD accuracy study.

Ground truth (SPEC section 6): (a) "fidelity": the float model's own detections on the
uncompressed frames with score >= 0.5 (the float line is 100 by construction); (b) real
boxes where a data set has them (the labelme frames' polygons). Detections under test
are scored with score >= 0.05.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

GT_SCORE = 0.5
TEST_SCORE = 0.05


def coco_map(ground_truth, detections, score_min: float = TEST_SCORE) -> dict:
    """mAP@0.5 and mAP@[.5:.95] in percent.

    ``ground_truth``: per frame a list of (box x1,y1,x2,y2, category_id);
    ``detections``: per frame a :class:`Detections`.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    cats = set()
    for i, (gt, det) in enumerate(zip(ground_truth, detections, strict=False)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for box, cat in gt:
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(cat),
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            cats.add(int(cat))
        keep = det.scores >= score_min
        for box, score, cat in zip(det.boxes[keep], det.scores[keep], det.category_ids[keep], strict=False):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(cat),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
            cats.add(int(cat))
    if not anns:
        return {"map50": float("nan"), "map": float("nan"), "gt_boxes": 0, "frames": len(images)}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in sorted(cats)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            stats = ev.stats
        else:
            stats = np.zeros(12)
    return {
        "map50": round(100 * float(stats[1]), 2),
        "map": round(100 * float(stats[0]), 2),
        "gt_boxes": len(anns),
        "frames": len(images),
    }


def fidelity_ground_truth(float_detections, score_min: float = GT_SCORE):
    """The float model's detections >= 0.5 as ground truth boxes."""
    return [
        [(b, c) for b, s, c in zip(d.boxes, d.scores, d.category_ids, strict=False) if s >= score_min]
        for d in float_detections
    ]


def ssd_study(
    vtest_frames: list, labelme: list, calibration_frames: list, batch_size: int = 8, weights=None, log=print
) -> dict:
    """Float and int8 SSD at every cut: fidelity mAP on the vtest frames, real-box mAP on labelme.

    ``labelme``: list of (frame, [(box, category_id), ...]). Int8 paths: "int8 M1 -> float M2"
    (dequantized tensors; the main path) per cut, and the whole int8 model.
    """
    import torch

    from temposplit.model import load_detector
    from temposplit.model.quantize import quantize

    det = load_detector(weights=weights)
    q = quantize(det, calibration_frames)

    def run(fn, frames):
        out = []
        for s in range(0, len(frames), batch_size):
            batch = det.preprocess(frames[s : s + batch_size])
            with torch.no_grad():
                out.extend(fn(batch))
        return out

    lm_frames = [f for f, _ in labelme]
    lm_gt = [g for _, g in labelme]
    float_v = run(det.forward, vtest_frames)
    gt_v = fidelity_ground_truth(float_v)
    rows = []

    def add(path, cut, dets_v, dets_l):
        row = {"path": path, "cut": cut, "vtest": coco_map(gt_v, dets_v), "labelme": coco_map(lm_gt, dets_l)}
        rows.append(row)
        if log:
            log(
                f"{path:28s} {cut or '-':20s} vtest {row['vtest']['map50']:6.2f} {row['vtest']['map']:6.2f}  "
                f"labelme {row['labelme']['map50']:6.2f} {row['labelme']['map']:6.2f}"
            )

    add("float", None, float_v, run(det.forward, lm_frames))
    add("int8 (whole model)", None, run(q.forward, vtest_frames), run(q.forward, lm_frames))
    for cut in det.cuts:
        split = q.split(cut.name)

        def fn(batch, split=split):
            return split.m2(split.m1(batch.tensor), batch.meta)

        add("int8 M1 -> float M2", cut.name, run(fn, vtest_frames), run(fn, lm_frames))
    return {
        "gt_score": GT_SCORE,
        "test_score": TEST_SCORE,
        "vtest_frames": len(vtest_frames),
        "labelme_frames": len(lm_frames),
        "calibration_frames": len(calibration_frames),
        "rows": rows,
    }
