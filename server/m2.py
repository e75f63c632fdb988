"""M2 on the server: the detector after the cut, run on the decoded tensors."""

from __future__ import annotations

import threading

import numpy as np

from temposplit.errors import ConfigError


class CloudModels:
    """Loads each detector once and serves M2 for any of its cuts; one M2 runs at a time
    per detector (torch already uses the cores), so streams share it fairly."""

    def __init__(self, weights: dict[str, str] | None = None, int8: bool = False):
        self.weights = weights or {}
        self._detectors: dict[str, tuple] = {}
        self._lock = threading.Lock()
        if int8:
            raise ConfigError("an int8 M2 on the server is not available yet: use the float M2 (the default)")

    def get(self, model: str):
        with self._lock:
            if model not in self._detectors:
                from temposplit.model import load_detector
                from temposplit.model.fingerprint import weights_digest

                det = load_detector(model, self.weights.get(model))
                self._detectors[model] = (det, weights_digest(det.net), threading.Lock())
            return self._detectors[model]

    def m2_runner(self, model: str, cut: str, frame_size: tuple[int, int]):
        """A function: decoded frame -> Detections, for one stream."""
        import torch

        det, _, lock = self.get(model)
        split = det.split(cut)
        meta = det.preprocess([np.zeros((frame_size[0], frame_size[1], 3), np.uint8)]).meta

        def run(decoded):
            tensors = [torch.from_numpy(x)[None] for x in decoded.dequantize()]
            with lock, torch.no_grad():
                return split.m2(tensors, meta)[0]

        return run

    def check_hash(self, model: str, cut: str, header) -> None:
        from temposplit.model.fingerprint import stream_hash

        _, digest, _ = self.get(model)
        expect = stream_hash(digest, model, cut, [(t.scale, t.zero_point) for t in header.tensors])
        if expect != header.model_hash:
            raise ConfigError(
                f"the stream was made with other weights than this server's {model} (model hash mismatch)"
            )
