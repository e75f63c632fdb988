"""M2 on the server: the detector after the cut, run on decoded tensors, batched across streams."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from temposplit.errors import ConfigError


@dataclass(frozen=True)
class Plan:
    """How one stream's frames go through M2: the split, the per-frame box mapping, and
    the key under which frames of several streams share one batch."""

    key: tuple  # (model, cut, input size): frames with the same key run in one M2 call
    split: object
    meta: object  # a one-frame BatchMeta
    shapes: tuple  # the cut table's (C, H, W) per crossing tensor


class CloudModels:
    """Loads each detector once; checks a stream's header against the model's cut table
    and weights; runs M2 on a batch of frames from any streams of one model and cut."""

    def __init__(self, weights: dict[str, str] | None = None, int8: bool = False):
        self.weights = weights or {}
        self._detectors: dict[str, tuple] = {}
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        if int8:
            raise ConfigError("an int8 M2 on the server is not available yet: use the float M2 (the default)")

    def get(self, model: str):
        """(detector, weights digest) of a model, loaded once."""
        from temposplit.model import cuts

        cuts.model_info(model)  # a ConfigError for an unknown model, before anything loads
        with self._load_lock:
            if model not in self._detectors:
                from temposplit.model import load_detector
                from temposplit.model.fingerprint import weights_digest

                det = load_detector(model, self.weights.get(model))
                self._detectors[model] = (det, weights_digest(det.net))
            return self._detectors[model]

    def plan(self, header, frame_size: tuple[int, int]) -> Plan:
        """Check a stream header against the model's cut table (tensor count and shapes)
        and weights (the model hash); a ConfigError says what differs."""
        from temposplit.model import cuts
        from temposplit.model.fingerprint import stream_hash

        model, cut = header.model_id, header.cut_id
        info = cuts.model_info(model)
        if not any(c.name == cut for c in info.cuts):
            raise ConfigError(f"{model} has no cut {cut!r}")
        for t in header.tensors:
            if not (math.isfinite(t.scale) and t.scale > 0):
                raise ConfigError(f"tensor {t.name}: scale {t.scale} is not a positive number")
        ident = (model, cut, tuple(frame_size))
        with self._lock:
            plan = self._plans.get(ident)
        if plan is None:
            det, _ = self.get(model)
            split = det.split(cut)
            height, width = frame_size
            meta = det.preprocess([np.zeros((height, width, 3), np.uint8)]).meta
            shapes = tuple(tuple(s) for s in split.shapes(meta.input_size))
            plan = Plan((model, cut, tuple(meta.input_size)), split, meta, shapes)
            with self._lock:
                self._plans[ident] = plan
                while len(self._plans) > 64:
                    self._plans.popitem(last=False)
        got = tuple(t.shape for t in header.tensors)
        if got != plan.shapes:
            raise ConfigError(
                f"the stream's tensors {_shapes(got)} are not {model} at {cut} ({_shapes(plan.shapes)}) "
                f"for {frame_size[0]}x{frame_size[1]} frames"
            )
        _, digest = self.get(model)
        expect = stream_hash(digest, model, cut, [(t.scale, t.zero_point) for t in header.tensors])
        if expect != header.model_hash:
            raise ConfigError(
                f"the stream was made with other weights than this server's {model} (model hash mismatch)"
            )
        return plan

    def run(self, plans: list[Plan], frames: list[list[np.ndarray]]) -> list:
        """M2 on frames that share one plan key: ``frames[i]`` is frame i's dequantized
        tensors (C, H, W), mapped to its own source size by ``plans[i]``."""
        import torch

        from temposplit.model.split import BatchMeta

        first = plans[0]
        tensors = [torch.from_numpy(np.stack([f[k] for f in frames])) for k in range(len(frames[0]))]
        meta = BatchMeta(
            first.meta.input_size,
            [s for p in plans for s in p.meta.image_sizes],
            [s for p in plans for s in p.meta.orig_sizes],
        )
        with torch.no_grad():
            return first.split.m2(tensors, meta)


def _shapes(shapes) -> str:
    return ", ".join("x".join(map(str, s)) for s in shapes)
