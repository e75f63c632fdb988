"""M1 on the edge: the int8 first half of the detector, and the codec's view of its outputs."""

from __future__ import annotations

import time
import zipfile
import zlib

import numpy as np

from temposplit.errors import ConfigError


def default_block(height: int, width: int) -> int:
    """Block size for a map: 8 for large maps (the ResNet-50 first cuts), 4 for the SSD's
    19x19 maps and the deep ResNet cuts, 2 below."""
    side = min(height, width)
    return 8 if side >= 64 else 4 if side >= 12 else 2


class EdgeModel:
    """A detector's int8 M1 at a cut, calibrated on frames of a video (static PTQ, qnnpack).

    ``m1(frames)`` returns, per frame, the tensors crossing the cut as
    :class:`~temposplit.model.quantize.CutTensor` (uint8 codes (C, H, W), s8, z8).
    """

    def __init__(
        self,
        model: str = "ssd-mobilenet-v2",
        cut: str | None = None,
        weights: str | None = None,
        calibration=(),
        log=None,
    ):
        from temposplit.model import load_detector
        from temposplit.model.fingerprint import weights_digest
        from temposplit.model.quantize import quantize, quantize_m1

        log = log or (lambda msg: None)
        self.detector = (
            load_detector(model, weights, log=log) if model == "ssd-mobilenet-v2" else load_detector(model, weights)
        )
        self.model = model
        self.cut = self.detector.get_cut(cut)
        calibration = list(calibration)
        if not calibration:
            raise ConfigError("int8 calibration needs at least one frame")
        log(f"calibrating int8 M1 on {len(calibration)} frames")
        if model == "ssd-mobilenet-v2":
            self.split = quantize(self.detector, calibration).split(self.cut.name)
        else:
            self.split = quantize_m1(self.detector, self.cut.name, calibration)
        self.digest = weights_digest(self.detector.net)
        self.m1_ms: list[float] = []

    def m1(self, frames) -> list:
        t0 = time.perf_counter()
        batch = self.detector.preprocess(frames)
        outs = self.split.m1(batch)
        result = [self.split.cut_tensors(outs, i) for i in range(len(frames))]
        self.m1_ms.append((time.perf_counter() - t0) * 1000 / max(1, len(frames)))
        return result

    def tensor_specs(self, sample, block: int | None = None):
        """The codec's TensorSpecs from one frame's CutTensors (static quantization: every
        frame has the same s8 and z8)."""
        from temposplit.codec.encoder import TensorSpec

        return [
            TensorSpec(t.name, t.shape, t.scale, t.zero_point, block or default_block(t.shape[1], t.shape[2]))
            for t in sample
        ]

    def model_hash(self, sample) -> bytes:
        from temposplit.model.fingerprint import stream_hash

        return stream_hash(self.digest, self.model, self.cut.name, [(t.scale, t.zero_point) for t in sample])


def as_codes(cut_tensors) -> list[np.ndarray]:
    return [t.codes for t in cut_tensors]


class NumpyEdgeModel:
    """The board's M1: an exported int8 M1 (``temposplit models export-m1``) run with the
    NumPy runtime, without PyTorch; the same interface as :class:`EdgeModel`."""

    def __init__(self, path: str, log=None):
        from types import SimpleNamespace

        from temposplit.model import numpy_m1

        try:
            self.runtime = numpy_m1.load(path)
        except numpy_m1.FormatError as exc:
            message = str(exc).removeprefix(f"{path}: ")
            raise ConfigError(f"{path}: not an exported M1 ({message})") from exc
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
            EOFError,
            MemoryError,
            zipfile.BadZipFile,
            zlib.error,
        ) as exc:  # the boundary: whatever the file makes the loader raise is the file's fault
            raise ConfigError(f"{path}: not an exported M1 ({type(exc).__name__}: {exc})") from exc
        if self.runtime.input.get("kind") != "ssd-rgb":
            raise ConfigError(f"{path}: the NumPy runtime preprocesses frames for the SSD only")
        digest = self.runtime.graph.get("weights_digest")
        if not digest:
            raise ConfigError(f"{path}: exported without the weights digest; export it again")
        try:
            self.digest = bytes.fromhex(digest)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: its weights digest {digest!r} is not hexadecimal") from None
        if not self.runtime.names:
            raise ConfigError(f"{path}: not an exported M1 (no tensor at its cut)")
        if not isinstance(self.runtime.model, str) or not isinstance(self.runtime.cut, str):
            raise ConfigError(f"{path}: names no model or cut; export it again")
        self.model = self.runtime.model
        self.cut = SimpleNamespace(name=self.runtime.cut)
        self.m1_ms: list[float] = []
        if log:
            log(f"NumPy int8 M1 of {self.model} at {self.runtime.cut} from {path}")

    def m1(self, frames) -> list:
        t0 = time.perf_counter()
        outs = self.runtime(frames)
        result = [self.runtime.cut_tensors(outs, i) for i in range(len(frames))]
        self.m1_ms.append((time.perf_counter() - t0) * 1000 / max(1, len(frames)))
        return result

    tensor_specs = EdgeModel.tensor_specs
    model_hash = EdgeModel.model_hash
