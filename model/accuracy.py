"""COCO mAP of detections (pycocotools), and the float/int8 SSD accuracy study.

Ground truth (docs/requirements.md section 6): (a) "fidelity": the float model's own detections on the
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
    from temposplit.model import load_detector
    from temposplit.model.quantize import quantize

    det = load_detector(weights=weights)
    q = quantize(det, calibration_frames)

    def run(fn, frames):
        return _detections(det, frames, fn, batch_size)

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


# --------------------------------------------------------------------------- int8 M1 per cut

# The two paths of ``temposplit models accuracy --video``: the int8 M1 then the float M2 on
# its dequantized tensors; and the float M1 with only the tensors crossing the cut rounded
# to 8 bits per tensor (scale and zero point from their min/max over the calibration set),
# the bound that no int8 M1 can beat with per-tensor codes at the cut.
PATHS = ("int8", "cut-only-8bit")


def count_frames(path) -> int:
    """The number of frames a video shows: the count its container announces
    (:func:`temposplit.model.data.probe_video`), else (Matroska, WebM) the frames PyAV
    decodes. A file that holds fewer than it announces fails when its frames are read."""
    from temposplit.model.data import probe_video, read_video

    return probe_video(path).frames or sum(1 for _ in read_video(path))


def spread_indices(total: int, count: int) -> list[int]:
    """The indices of ``count`` of ``total`` frames spread evenly over all of them, from
    frame 0: ``i * total // count`` for i below ``count`` (every frame when there are no
    more than ``count``), so that the last one is within ``total / count`` of the end."""
    from temposplit.errors import ConfigError

    if count < 1:
        raise ConfigError(f"--frames must be a positive integer, not {count}")
    return list(range(total)) if count >= total else [i * total // count for i in range(count)]


MAX_STUDY_BYTES = 4 << 30  # the decoded frames a study holds at once (RGB, full size)


def spread_frames(path, count: int) -> tuple[list, list[int]]:
    """``count`` frames spread evenly over a whole video (:func:`spread_indices`), and their
    indices. All frames when the video has fewer. The frames are held decoded: more than
    :data:`MAX_STUDY_BYTES` of them is a :class:`ConfigError` before any is decoded (``--frames
    100000`` of a long clip asked for hundreds of GB)."""
    from temposplit.errors import ConfigError
    from temposplit.model.data import probe_video, read_video

    spread_indices(0, count)  # a bad count fails before the video is decoded
    size = probe_video(path).size
    total = count_frames(path)
    if size is not None:
        frame_bytes = size[0] * size[1] * 3
        if min(count, total) * frame_bytes > MAX_STUDY_BYTES:
            raise ConfigError(
                f"{min(count, total)} frames of {size[1]}x{size[0]} take "
                f"{min(count, total) * frame_bytes / 1e9:.1f} GB decoded, more than the "
                f"{MAX_STUDY_BYTES / 1e9:.1f} GB a study holds: give at most {MAX_STUDY_BYTES // frame_bytes} frames"
            )
    wanted = spread_indices(total, count)
    if not wanted:
        return [], []
    keep = set(wanted)
    taken = [(i, f) for i, f in enumerate(read_video(path, max_frames=wanted[-1] + 1)) if i in keep]
    return [f for _, f in taken], [i for i, _ in taken]


def spread_list(frames: list, count: int) -> list:
    """``count`` of ``frames`` by the same rule as :func:`spread_frames` (:func:`spread_indices`)."""
    return [frames[i] for i in spread_indices(len(frames), count)]


def cut_ranges(detector, calibration_frames, cut_names, batch_size: int = 8) -> dict[str, tuple[float, float]]:
    """Min and max of every tensor crossing the given cuts, over the calibration frames (float M1)."""
    import torch

    names = {t.name for c in cut_names for t in detector.get_cut(c).crossing}
    deepest = max(cut_names, key=lambda c: detector.info.stages.index(detector.get_cut(c).stage))
    split = detector.split(deepest)
    ranges: dict[str, list[float]] = {}
    x_stages = split.m1_stages
    for s in range(0, len(calibration_frames), batch_size):
        x = detector.preprocess(calibration_frames[s : s + batch_size]).tensor
        with torch.no_grad():
            x = detector.m1_prefix(detector.net, x)
            for name in x_stages:
                x = detector.stage(detector.net, name)(x)
                if name in names:
                    lo, hi = float(x.min()), float(x.max())
                    r = ranges.setdefault(name, [lo, hi])
                    r[0], r[1] = min(r[0], lo), max(r[1], hi)
    return {k: (v[0], v[1]) for k, v in ranges.items()}


def quantize_8bit(x, lo: float, hi: float):
    """Round a float tensor to 8 bits per tensor over [lo, hi] (0 included: quint8, as the
    codec's codes) and back."""
    import torch

    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-12)
    zero_point = int(min(255, max(0, round(-lo / scale))))
    return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).dequantize()


def frequent_categories(reference, min_boxes: int | None = None) -> list[int]:
    """COCO categories with at least ``min_boxes`` fidelity ground-truth boxes (the float
    detections with score >= 0.5) in the frames: the evaluation harness's definition."""
    from collections import Counter

    if min_boxes is None:
        from temposplit.evaluation.plan import FREQUENT_MIN_BOXES as min_boxes
    counts = Counter(int(c) for d in reference for c in d.above(GT_SCORE).category_ids)
    return sorted(c for c, n in counts.items() if n >= min_boxes)


def reference_boxes(reference) -> int:
    """How many fidelity ground-truth boxes (float detections with score >= 0.5) ``reference`` holds."""
    return sum(len(d.above(GT_SCORE).category_ids) for d in reference)


def _json_number(v: float, digits: int = 4):
    """A score for JSON: rounded, None for NaN (no ground truth)."""
    import math

    return None if math.isnan(v) else round(float(v), digits)


def _detections(detector, frames, fn, batch_size: int) -> list:
    """``fn`` (a batch in, one detection list a frame out) over ``frames`` in batches."""
    import torch

    out = []
    for s in range(0, len(frames), batch_size):
        batch = detector.preprocess(frames[s : s + batch_size])
        with torch.no_grad():
            out.extend(fn(batch))
    return out


def float_reference(detector, frames, batch_size: int = 8) -> list:
    """The float model's detections on ``frames``: the ground truth of :func:`cut_accuracy`'s
    fidelity scores. It depends on neither the calibration nor the cut, so a caller scoring
    several calibrations of the same frames computes it once and passes it to each."""
    return _detections(detector, frames, detector.forward, batch_size)


def cut_accuracy(
    detector,
    quantized,
    frames,
    cuts,
    ranges: dict,
    batch_size: int = 8,
    paths=PATHS,
    log=None,
    replicates=200,
    reference=None,
    seed=None,
) -> list[dict]:
    """Fidelity of the int8 M1 at each cut, against the float model on the same frames.

    ``quantized``: a :class:`~temposplit.model.quantize.QuantizedDetector`; ``ranges``:
    :func:`cut_ranges` of the calibration frames (for ``cut-only-8bit``). One row per
    (cut, path): ``cut``, ``path``, ``map50``, ``map50_95``, ``map50_frequent`` (fractions,
    as the evaluation harness reports them), ``map50_95_frequent``, ``frequent_categories``, ``frames``,
    ``ground_truth_boxes``, ``categories`` (every category with ground truth, by id: ``id``,
    ``name``, ``boxes``, ``ap50``, ``ap50_95``; the two means are over these), and with
    ``replicates`` > 0 the 95 % intervals ``map50_ci``, ``map50_95_ci``, ``map50_frequent_ci``,
    ``map50_95_frequent_ci``:
    the evaluation's circular block bootstrap (``evaluation/bootstrap.py``, blocks of
    ``bootstrap.BLOCK`` frames, every frame equally likely in a resample) over the frames in
    their order, the same resamples for every row (paired), seeded by ``seed`` (default
    ``bootstrap.SEED``; a clip's name through ``bootstrap.clip_seed`` for resamples apart
    from another clip's). With fewer than two blocks of frames (``bootstrap.enough_frames``:
    20) every resample is nearly or exactly the frames themselves: no interval is given
    (``[None, None]``, and ``ci_note`` says :data:`bootstrap.TOO_FEW`), as the evaluation
    gives none.
    ``reference``: the float model's detections on ``frames`` (:func:`float_reference`),
    computed here when None.
    """

    from temposplit.evaluation import bootstrap
    from temposplit.evaluation.metrics import fidelity_map
    from temposplit.model.detections import coco_names

    weights = None
    if replicates:
        idx = bootstrap.block_resamples(
            len(frames), replicates=replicates, seed=bootstrap.SEED if seed is None else seed, circular=True
        )
        weights = bootstrap.resample_weights(idx, len(frames))

    def run(fn):
        return _detections(detector, frames, fn, batch_size)

    if reference is None:
        reference = float_reference(detector, frames, batch_size)
    elif len(reference) != len(frames):
        raise ValueError(f"reference has {len(reference)} frames' detections, not {len(frames)}")
    frequent = frequent_categories(reference)
    names = coco_names()
    rows = []
    for cut in cuts:
        for path in paths:
            if path == "int8":
                split = quantized.split(cut)

                def fn(batch, split=split):
                    return split.m2(split.m1(batch.tensor), batch.meta)

            elif path == "cut-only-8bit":
                split = detector.split(cut)

                def fn(batch, split=split):
                    tensors = split.m1(batch.tensor)
                    tensors = [quantize_8bit(t, *ranges[n]) for n, t in zip(split.names, tensors, strict=True)]
                    return split.m2(tensors, batch.meta)

            else:
                from temposplit.errors import ConfigError

                raise ConfigError(f"unknown path {path!r} (choose from {', '.join(PATHS)})")
            result = fidelity_map(run(fn), reference)
            row = {
                "cut": detector.get_cut(cut).name,
                "path": path,
                "map50": _json_number(result.map50),
                "map50_95": _json_number(result.map50_95),
                "map50_frequent": _json_number(result.subset(frequent)[0]) if frequent else None,
                "map50_95_frequent": _json_number(result.subset(frequent)[1]) if frequent else None,
                "frequent_categories": frequent,
                "frames": len(frames),
                "ground_truth_boxes": result.n_ground_truth,
                "categories": [
                    {"id": c, "name": names[c], "boxes": n, "ap50": _json_number(a), "ap50_95": _json_number(b)}
                    for c, n, a, b in result.categories()
                ],
            }
            if weights is not None and (result.images is None or not bootstrap.enough_frames(len(frames))):
                # no ground truth, or too few frames for the bootstrap to measure anything: no interval
                for key in ("map50_ci", "map50_95_ci", "map50_frequent_ci", "map50_95_frequent_ci"):
                    row[key] = [None, None]
                if result.images is not None:
                    row["ci_note"] = bootstrap.TOO_FEW
            elif weights is not None:
                values = np.array([result.images.all_scores(w, frequent) for w in weights])
                keys = ("map50_ci", "map50_95_ci", "map50_frequent_ci", "map50_95_frequent_ci")
                for k, key in enumerate(keys):
                    lo, hi = bootstrap.interval(values[:, k])
                    row[key] = [_json_number(lo), _json_number(hi)]
            rows.append(row)
            if log:
                log(row)
    return rows


def recipe_sqnr(detector, quantized, frames, cuts, batch_size: int = 8) -> dict[str, float]:
    """SQNR in dB of each cut tensor, the int8 M1 (dequantized) against the float M1 on
    ``frames``, summed over them: ``10 log10(sum f^2 / sum (f - q)^2)``. How the int8
    recipes are compared on the calibration set (docs/models.md, "Int8 recipes")."""
    import math

    import torch

    signal = dict.fromkeys(cuts, 0.0)
    noise = dict.fromkeys(cuts, 0.0)
    for s in range(0, len(frames), batch_size):
        x = detector.preprocess(frames[s : s + batch_size]).tensor
        for cut in cuts:
            with torch.no_grad():
                f = detector.split(cut).m1(x)[-1]
                q = quantized.split(cut).m1(x)[-1].dequantize()
            signal[cut] += float((f.double() ** 2).sum())
            noise[cut] += float(((f.double() - q.double()) ** 2).sum())
    return {c: round(10 * math.log10(signal[c] / max(noise[c], 1e-30)), 2) for c in cuts}
