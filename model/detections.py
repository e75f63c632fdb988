"""What every detector returns for a frame: boxes in original-frame pixels, scores, COCO ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def coco_names() -> list[str]:
    """COCO's 91-entry name list indexed by category id (0 is the background, gaps are 'N/A')."""
    from torchvision.models._meta import _COCO_CATEGORIES

    return list(_COCO_CATEGORIES)


@dataclass
class Detections:
    """Detections of one frame.

    Attributes
    ----------
    boxes : float32 array (K, 4)
        x1, y1, x2, y2 in original-frame pixels.
    scores : float32 array (K,)
        Sorted in decreasing order.
    category_ids : int64 array (K,)
        COCO category ids (the 90-id label map, 1 = person ... 90 = toothbrush).
    labels : list[str]
        The category names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> Detections:
        """The detections whose score is at least ``threshold``."""
        keep = self.scores >= threshold
        return Detections(
            self.boxes[keep],
            self.scores[keep],
            self.category_ids[keep],
            [l for l, k in zip(self.labels, keep, strict=False) if k],
        )

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return {
            "boxes": self.boxes.round(2).tolist(),
            "scores": self.scores.round(5).tolist(),
            "category_ids": self.category_ids.tolist(),
            "labels": list(self.labels),
        }

    @staticmethod
    def make(boxes, scores, category_ids) -> Detections:
        """Build from arrays or tensors; names come from the COCO label map."""
        names = coco_names()
        boxes = np.asarray(_np(boxes), dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(_np(scores), dtype=np.float32).reshape(-1)
        ids = np.asarray(_np(category_ids), dtype=np.int64).reshape(-1)
        labels = [names[i] if 0 <= i < len(names) else str(i) for i in ids.tolist()]
        return Detections(boxes, scores, ids, labels)


def _np(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x
