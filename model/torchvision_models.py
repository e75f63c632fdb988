"""The thesis's three torchvision detectors as cuttable detectors.

Faster R-CNN ResNet-50 FPN, Faster R-CNN MobileNetV3-Large FPN and RetinaNet ResNet-50
FPN. The backbone's ``body`` (an ``IntermediateLayerGetter``) is walked stage by stage;
M2 rebuilds the FPN's input dict from the tensors crossing the cut and the stages after
it, then runs the FPN, the RPN / heads and torchvision's own postprocessing exactly as
the models' ``forward`` does in eval mode.

Weights: ``"DEFAULT"`` / ``"COCO_V1"`` through torchvision's weights API (downloads once
into torch's hub cache), a local ``.pth`` state dict, or None for random weights (tests:
exactness and plumbing only, never figures).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from temposplit.errors import ConfigError, MissingDependencyError
from temposplit.model import cuts as cut_table
from temposplit.model.detections import Detections
from temposplit.model.detectors import UNREADABLE_WEIGHTS, Detector, weights_error
from temposplit.model.split import Batch, BatchMeta, check_batch

_BUILDERS = {
    cut_table.FRCNN_R50: ("fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights"),
    cut_table.FRCNN_MBV3: ("fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights"),
    cut_table.RETINANET_R50: ("retinanet_resnet50_fpn", "RetinaNet_ResNet50_FPN_Weights"),
}


def build_model(name: str, weights: str | None = None, min_size: int = 800, max_size: int = 1333):
    """The torchvision model in eval mode. Never downloads unless ``weights`` names a
    torchvision weights enum member."""
    import torchvision.models.detection as tvd

    fn_name, enum_name = _BUILDERS[name]
    fn = getattr(tvd, fn_name)
    kwargs = {"min_size": min_size, "max_size": max_size}
    if weights is None:
        model = fn(weights=None, weights_backbone=None, **kwargs)
    elif Path(weights).suffix in (".pth", ".pt") or Path(weights).is_file():
        if not Path(weights).is_file():
            raise MissingDependencyError(f"weights file {weights} not found")
        model = fn(weights=None, weights_backbone=None, **kwargs)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except UNREADABLE_WEIGHTS as exc:
            raise weights_error(weights, exc, "a weights file") from exc
        if not isinstance(state, dict):
            raise ConfigError(f"{weights}: holds a {type(state).__name__}, not a state dict of {name}'s weights")
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError, AttributeError) as exc:  # other keys or shapes
            raise weights_error(weights, exc, f"{name} weights") from exc
    else:
        enum = getattr(tvd, enum_name)
        try:
            member = enum.DEFAULT if weights.upper() == "DEFAULT" else enum[weights.upper()]
        except KeyError:
            raise ConfigError(
                f"{name}: unknown weights {weights!r} (DEFAULT, a member of {enum_name}, or a .pth)"
            ) from None
        model = fn(weights=member, **kwargs)
    return model.eval()


class TorchvisionDetector(Detector):
    """A torchvision detection model, cuttable in its backbone."""

    def __init__(self, name: str, weights=None, min_size: int = 800, max_size: int = 1333, score_threshold=None):
        if name not in _BUILDERS:
            raise ConfigError(f"not a torchvision detector: {name}")
        self.name = name
        self.model = build_model(name, weights, min_size, max_size)
        self.net = self.model
        self.has_real_weights = weights is not None
        if score_threshold is not None:
            if hasattr(self.model, "roi_heads"):
                self.model.roi_heads.score_thresh = score_threshold
            else:
                self.model.score_thresh = score_threshold
        # The padded network input of a frame at (min_size, max_size) is what
        # ``input_size`` reports; the real size follows each frame's aspect ratio.
        self.input_size = cut_table.model_info(name).input_size if min_size == 800 else (min_size, max_size)

    @staticmethod
    def _body(net):
        return net.backbone.body

    def _stage_key(self, name: str) -> str:
        return name.split(".")[1] if name.startswith("features.") else name

    def stage(self, net, name):
        return self._body(net)[self._stage_key(name)]

    def to_images(self, frames) -> list[torch.Tensor]:
        """RGB uint8 frames (H, W, 3) -> float (3, H, W) in [0, 1], what torchvision takes."""
        from temposplit.model.numpy_m1 import check_frames

        out = []
        for f in check_frames(frames, ConfigError, allow=torch.Tensor):
            if isinstance(f, torch.Tensor):
                out.append(f)
            else:
                out.append(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float() / 255.0)
        return out

    @torch.no_grad()
    def preprocess(self, frames) -> Batch:
        images = self.to_images(frames)
        orig = [tuple(int(s) for s in im.shape[-2:]) for im in images]
        image_list, _ = self.model.transform(images)
        meta = BatchMeta(
            tuple(int(s) for s in image_list.tensors.shape[-2:]),
            [tuple(int(s) for s in sz) for sz in image_list.image_sizes],
            orig,
        )
        return Batch(image_list.tensors, meta)

    @torch.no_grad()
    def head(self, net, taps: dict, meta: BatchMeta):
        from torchvision.models.detection.image_list import ImageList

        body = self._body(net)
        features = OrderedDict()
        for stage, key in body.return_layers.items():
            features[key] = taps[f"features.{stage}" if stage.isdigit() else stage]
        features = net.backbone.fpn(features)
        n = next(iter(features.values())).shape[0]
        # The RPN's and RetinaNet's anchor generators read only the padded size of the images.
        images = ImageList(torch.zeros(()).expand(n, 3, *meta.input_size), list(meta.image_sizes))
        if hasattr(net, "rpn"):
            proposals, _ = net.rpn(images, features)
            detections, _ = net.roi_heads(features, proposals, images.image_sizes)
        else:
            detections = self._retinanet_tail(net, images, list(features.values()))
        detections = net.transform.postprocess(detections, images.image_sizes, list(meta.orig_sizes))
        return [_to_detections(d) for d in detections]

    @staticmethod
    def _retinanet_tail(net, images, features):
        """RetinaNet.forward after the backbone, eval branch (torchvision 0.29)."""
        head_outputs = net.head(features)
        anchors = net.anchor_generator(images, features)
        num_anchors_per_level = [x.size(2) * x.size(3) for x in features]
        hw = sum(num_anchors_per_level)
        a = head_outputs["cls_logits"].size(1) // hw
        num_anchors_per_level = [v * a for v in num_anchors_per_level]
        split_head_outputs = {k: list(v.split(num_anchors_per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(x.split(num_anchors_per_level)) for x in anchors]
        return net.postprocess_detections(split_head_outputs, split_anchors, images.image_sizes)

    @torch.no_grad()
    def forward(self, batch: Batch):
        """The uncut model on a preprocessed batch (same modules as M1 + M2)."""
        body = self._body(self.net)
        taps = {}
        x = check_batch(batch).tensor
        for stage in body.keys():
            x = body[stage](x)
            taps[f"features.{stage}" if stage.isdigit() else stage] = x
        return self.head(self.net, {t: taps[t] for t in self.info.taps}, batch.meta)

    @torch.no_grad()
    def reference(self, frames):
        """torchvision's own ``model(images)``: what M2(M1(x)) must equal exactly."""
        return [_to_detections(d) for d in self.model(self.to_images(frames))]


def _to_detections(d) -> Detections:
    return Detections.make(d["boxes"], d["scores"], d["labels"])
