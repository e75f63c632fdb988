"""Scoring: M2 on reconstructed features, each distinct frame once, and the COCO scores.

* :meth:`Scorer.m2` runs the float M2 on reconstructed frames (N-bit codes, or float
  values), once per distinct frame reconstruction at a cut and N (a predicted frame whose
  vectors are all zero is its anchor again; an intra frame at N = 8 is the 8-bit features).
* :meth:`Scorer.scores` is the fidelity score of per-frame detections: COCO mAP@0.5 and
  mAP@[.5:.95] against the float reference, and the same over the frequent categories (at
  least ``FREQUENT_MIN_BOXES`` reference boxes in the scored frames), read off one COCO
  evaluation; against real boxes where the clip has them (the labelme frames).
* :meth:`Scorer.score_features` scores one reconstruction of a whole clip, once per
  distinct reconstruction (rows that share it share its scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temposplit.evaluation.cache import (
    FRAME_BATCH,
    FRAME_BATCH_BYTES,
    Clip,
    CutData,
    Models,
    chunks,
    digest,
    write_atomic,
)
from temposplit.evaluation.plan import FREQUENT_MIN_BOXES, M2_BATCH


def accuracy(scores: dict) -> dict:
    """The row fields of a scoring."""
    return {
        "map50": scores["map50"],
        "map50_95": scores["map50_95"],
        "map50_frequent": scores.get("map50_frequent"),
        "map50_95_frequent": scores.get("map50_95_frequent"),
        "evals": scores.get("evals"),
    }


class Scorer:
    """M2 and COCO scoring with their caches (per clip name, cut, N and reconstruction)."""

    def __init__(self, models: Models, evals: Path | None = None):
        self.models = models
        self.evals = Path(evals) if evals is not None else None  # where each scoring's per-frame outcome goes
        self.tag = ""  # the run identity: a file of another run's scoring is never taken for this one's
        self._m2_cache: dict[tuple, object] = {}  # (clip, cut, n, frame hash) -> Detections
        self._score_cache: dict[tuple, dict] = {}  # (clip, cut, signature) -> scores

    def m2(self, clip: Clip, cut: str, cut_data: CutData, n_bits, frames: dict[int, list[np.ndarray]]):
        """Detections of reconstructed frames (N-bit codes, or float values when n_bits is None),
        M2 run once per distinct frame reconstruction."""
        import torch

        from temposplit.codec.quantize import dequantize

        self.models.float_layout(channels_last=True)
        split = self.models.detector.split(cut)
        out, todo = {}, []
        for i, tensors in frames.items():
            key = (clip.name, cut, n_bits, digest(*tensors))
            hit = self._m2_cache.get(key)
            if hit is None:
                todo.append((i, key, tensors))
            else:
                out[i] = hit
        for s in range(0, len(todo), M2_BATCH):
            chunk = todo[s : s + M2_BATCH]
            inputs = []
            for t in range(len(cut_data.names)):
                if n_bits is None:
                    arr = np.stack([tensors[t] for _, _, tensors in chunk]).astype(np.float32)
                else:
                    arr = dequantize(
                        np.stack([tensors[t] for _, _, tensors in chunk]),
                        cut_data.scales[t],
                        cut_data.zero_points[t],
                        n_bits,
                    )
                x = torch.from_numpy(arr)
                inputs.append(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)
            with torch.no_grad():
                dets = split.m2(inputs, clip.meta([i for i, _, _ in chunk]))
            for (i, key, _), d in zip(chunk, dets, strict=True):
                self._m2_cache[key] = d
                out[i] = d
        self.models.m2_frames += len(todo)
        return out

    def forget(self, clip_name: str) -> None:
        """Drop the caches of a finished clip (its reconstructions never come back)."""
        self._m2_cache = {k: v for k, v in self._m2_cache.items() if k[0] != clip_name}
        self._score_cache = {k: v for k, v in self._score_cache.items() if k[0] != clip_name}

    @staticmethod
    def frequent(clip: Clip) -> list[int]:
        """Categories with at least FREQUENT_MIN_BOXES fidelity ground-truth boxes in the scored frames."""
        ids = np.concatenate([r.above(0.5).category_ids for r in clip.reference] or [np.zeros(0, np.int64)])
        cats, counts = np.unique(ids, return_counts=True)
        return [int(c) for c, n in zip(cats, counts, strict=True) if n >= FREQUENT_MIN_BOXES]

    def scores(self, clip: Clip, detections: dict[int, object], eval_id: str | None = None) -> dict:
        """The scores; with ``eval_id`` the evaluation's per-frame outcome is also saved (for the
        bootstrap intervals) as ``<evals>/<clip>/<run>-<clip identity>-<eval_id>.npz``, named in
        ``scores["evals"]``: the run (:attr:`tag`) and the clip's content (:attr:`Clip.identity`)
        in the name, so another file under the clip's name never overwrites it."""
        from temposplit.evaluation.metrics import coco_map, fidelity_map

        dets = [detections[i] for i in clip.scored]
        if clip.ground_truth is not None:
            m = coco_map(dets, clip.ground_truth)
            return {"map50": m.map50, "map50_95": m.map50_95, "gt_boxes": m.n_ground_truth}
        m = fidelity_map(dets, clip.reference)
        out = {"map50": m.map50, "map50_95": m.map50_95, "gt_boxes": m.n_ground_truth}
        if eval_id is not None and self.evals is not None and m.images is not None:
            name = f"{clip.name}/{''.join(f'{p}-' for p in (self.tag, clip.identity) if p)}{eval_id}.npz"
            path = self.evals / name
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = m.images.to_npz()
            write_atomic(path, lambda f: np.savez_compressed(f, **arrays))
            out["evals"] = name
        # COCO's mean over categories gives a category seen once (one bicycle) the weight of 1579
        # persons; the same score over the frequent categories alone is far steadier. COCO scores
        # each category on its own, so it is read off the same evaluation.
        freq = self.frequent(clip)
        f50, f50_95 = m.subset(freq)
        out.update(map50_frequent=f50, map50_95_frequent=f50_95, frequent_categories=freq)
        return out

    def score_features(self, clip: Clip, cut: str, cut_data: CutData, n_bits, recon: list[list[np.ndarray]]):
        """Scores of one reconstruction of the whole clip (per frame a list of tensors)."""
        signature = digest(n_bits, *[digest(*r) for r in recon])
        key = (clip.name, cut, signature)
        if key not in self._score_cache:
            frames = {i: recon[i] for i in clip.scored}
            dets = self.m2(clip, cut, cut_data, n_bits, frames)
            self._score_cache[key] = self.scores(clip, dets, eval_id=f"{cut}-{signature}")
        return signature, self._score_cache[key]

    def detect_decoded(self, frames, clip: Clip) -> dict:
        """The whole float detector on the scored frames of a decoded clip."""
        det = self.models.detector
        wanted = set(clip.scored)
        out = {}
        scored = ((i, frame) for i, frame in enumerate(frames) if i in wanted)
        for batch in chunks(scored, FRAME_BATCH, FRAME_BATCH_BYTES, nbytes=lambda item: item[1].nbytes):
            for (i, _), d in zip(batch, det.detect([f for _, f in batch]), strict=True):
                out[i] = d
        self.models.m2_frames += len(out)
        return out
