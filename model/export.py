"""Export an int8 M1 to a portable ``.npz`` that :mod:`temposplit.model.numpy_m1` runs without
PyTorch (the PYNQ-Z2's ARM: NumPy 1.x only; docs/requirements.md section 8). Format: docs/numpy-m1.md.

Two sources, both converted with the qnnpack engine (:mod:`temposplit.model.quantize`):

* the SSD's eager-mode :class:`~temposplit.model.quantize.QuantizedSplit`: the quant stub,
  then per stage ``ConvAct`` (TF "SAME" pad, ``QuantizedConv2d`` / ``QuantizedConvReLU2d``,
  the ReLU6 being a fused ReLU whose range ends at 6) and ``InvertedResidual`` (expansion,
  depthwise, projection, ``QFunctional`` residual add);
* a torchvision detector's FX-mode :class:`~temposplit.model.quantize.QuantizedM1`: the
  graph's ``quantize_per_tensor``, quantized conv (+ReLU) modules, ``MaxPool2d`` and
  ``quantized.add`` / ``add_relu`` (ResNet-50; MobileNetV3's hardswish and
  squeeze-excitation are not supported).

Every number the runtime needs is computed here, with PyTorch's own rounding: the bias
quantized to int32 at scale ``input_scale * weight_scale`` (``torch.quantize_per_channel``
to qint32, as qnnpack's ``QuantizeBias``), the float32 requantization scale
``(weight_scale * input_scale) * (1 / output_scale)`` (qnnpack's
``generate_requantization_scales``), the ReLU's lower clamp (the output zero point), the
residual add's fixed-point multipliers and shift (qnnpack's
``pytorch_qnnp_compute_add_quantization_params``).
"""

from __future__ import annotations

import json
import operator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from temposplit.errors import ConfigError
from temposplit.model.fingerprint import weights_digest
from temposplit.model.numpy_m1 import FORMAT, SSD_INPUT_SIZE, VERSION


class _Builder:
    """Collects the graph's nodes and arrays; tracks each node's output (scale, zero point)."""

    def __init__(self):
        self.nodes: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.qparams: dict[str, tuple[float, int]] = {}

    def _add(self, node: dict) -> str:
        if node["name"] in self.qparams:
            raise ConfigError(f"duplicate node name {node['name']}")
        self.nodes.append(node)
        self.qparams[node["name"]] = (float(node["scale"]), int(node["zero_point"]))
        return node["name"]

    def quantize(self, name: str, scale: float, zero_point: int) -> str:
        # fbgemm's quantize_per_tensor: rint(x * (1.f / scale)) + zp, all float32
        inv = float(np.float32(1.0) / np.float32(scale))
        return self._add(
            {
                "name": name,
                "op": "quantize",
                "inputs": ["input"],
                "scale": float(scale),
                "zero_point": int(zero_point),
                "inv_scale": inv,
            }
        )

    def pad_same(self, name: str, src: str, kernel: int, stride: int) -> str:
        scale, zp = self.qparams[src]
        return self._add(
            {
                "name": name,
                "op": "pad_same",
                "inputs": [src],
                "kernel": int(kernel),
                "stride": int(stride),
                "scale": scale,
                "zero_point": zp,
            }
        )

    def conv(self, name: str, src: str, mod: nn.Module) -> str:
        from torch.ao.nn.intrinsic.quantized import ConvReLU2d
        from torch.ao.nn.quantized import Conv2d as QConv2d

        from temposplit.model.wide import WideConv2d

        if isinstance(mod, WideConv2d):
            return self.wide_conv(name, src, mod)
        if not isinstance(mod, QConv2d):
            raise ConfigError(f"{name}: expected a quantized Conv2d, got {type(mod).__name__}")
        if tuple(mod.dilation) != (1, 1) or mod.padding_mode != "zeros":
            raise ConfigError(f"{name}: dilation {mod.dilation} / padding mode {mod.padding_mode} not supported")
        in_scale, in_zp = self.qparams[src]
        w = mod.weight()
        out_ch = w.shape[0]
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if w.q_per_channel_axis() != 0:
                raise ConfigError(f"{name}: per-channel weights on axis {w.q_per_channel_axis()}")
            w_scale = w.q_per_channel_scales().to(torch.float64)
            w_zp = w.q_per_channel_zero_points().to(torch.int64)
        else:
            w_scale = torch.full((out_ch,), float(w.q_scale()), dtype=torch.float64)
            w_zp = torch.full((out_ch,), int(w.q_zero_point()), dtype=torch.int64)
        bias = mod.bias()
        if bias is None:
            bias = torch.zeros(out_ch)
        bias = bias.detach().to(torch.float32)
        # qnnpack's QuantizeBias: per channel at scale w_scale * input_scale (double), zero point 0
        qbias = torch.quantize_per_channel(
            bias, w_scale * in_scale, torch.zeros(out_ch, dtype=torch.int64), 0, torch.qint32
        ).int_repr()
        # qnnpack's generate_requantization_scales, in float32
        ws = w_scale.numpy().astype(np.float32)
        requant = (ws * np.float32(in_scale)) * (np.float32(1.0) / np.float32(mod.scale))
        out_scale, out_zp = float(mod.scale), int(mod.zero_point)
        relu = isinstance(mod, ConvReLU2d)
        # activationLimits(RELU): QuantizeValue(scale, zp, 0.0) = zp
        qmin = out_zp if relu else 0
        self.arrays[f"{name}.weight"] = w.int_repr().numpy().astype(np.int8)
        self.arrays[f"{name}.weight_scale"] = ws
        self.arrays[f"{name}.weight_zero_point"] = w_zp.numpy().astype(np.int32)
        self.arrays[f"{name}.bias"] = qbias.numpy().astype(np.int32)
        self.arrays[f"{name}.bias_float"] = bias.numpy()
        self.arrays[f"{name}.requant_scale"] = requant.astype(np.float32)
        return self._conv_node(name, src, mod, out_scale, out_zp, relu, qmin)

    def wide_conv(self, name: str, src: str, mod) -> str:
        """An int16-weight convolution (model/wide.py): the same node, int16 weight codes."""
        in_scale, _ = self.qparams[src]
        try:
            qbias, requant = mod.params(in_scale)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from exc
        out_ch = mod.out_channels
        self.arrays[f"{name}.weight"] = mod.weight_codes.numpy().astype(np.int16)
        self.arrays[f"{name}.weight_scale"] = mod.weight_scale.numpy().astype(np.float32)
        self.arrays[f"{name}.weight_zero_point"] = np.zeros(out_ch, np.int32)
        self.arrays[f"{name}.bias"] = qbias
        self.arrays[f"{name}.bias_float"] = mod.bias_float.numpy().astype(np.float32)
        self.arrays[f"{name}.requant_scale"] = requant
        return self._conv_node(name, src, mod, mod.scale, mod.zero_point, mod.relu, mod.qmin)

    def _conv_node(self, name, src, mod, out_scale, out_zp, relu, qmin) -> str:
        in_scale, in_zp = self.qparams[src]
        return self._add(
            {
                "name": name,
                "op": "conv",
                "inputs": [src],
                "kernel": list(mod.kernel_size),
                "stride": list(mod.stride),
                "padding": list(mod.padding),
                "groups": int(mod.groups),
                "in_channels": int(mod.in_channels),
                "out_channels": int(mod.out_channels),
                "input_scale": in_scale,
                "input_zero_point": in_zp,
                "scale": float(out_scale),
                "zero_point": int(out_zp),
                "relu": bool(relu),
                "qmin": int(qmin),
                "qmax": 255,
            }
        )

    def add(self, name: str, a: str, b: str, scale: float, zero_point: int, relu: bool) -> str:
        (sa, za), (sb, zb) = self.qparams[a], self.qparams[b]
        # qnnpack's add (pytorch_qnnp_compute_add_quantization_params): both input/output scale
        # ratios as fixed-point multipliers < 2**22 sharing one right shift in 13..31.
        a_out = np.float32(sa) / np.float32(scale)
        b_out = np.float32(sb) / np.float32(scale)
        for ratio in (a_out, b_out):
            if not 2.0**-14 <= float(ratio) < 2.0**8:
                raise ConfigError(f"{name}: input/output scale ratio {float(ratio)} outside qnnpack's [2**-14, 2**8)")
        exponent = int(np.array(max(a_out, b_out), dtype=np.float32).view(np.uint32) >> 23) - 127
        shift = 21 - exponent
        factor = np.float32(2.0**shift)
        a_mult = int(np.rint(a_out * factor))  # lrintf: round half to even
        b_mult = int(np.rint(b_out * factor))
        # qnnpack asserts these (shift < 32, multipliers < 2**22), and the runtime's int32
        # arithmetic needs them: the larger ratio below 2**-10 would shift by more than 31
        # (qnnpack's "[13, 31]" comment notwithstanding, its [2**-14, 2**8) check lets those by)
        if not 13 <= shift <= 31 or max(a_mult, b_mult) >= 2**22:
            raise ConfigError(
                f"{name}: input/output scale ratios {float(a_out)}, {float(b_out)} give shift {shift} and multipliers"
                f" {a_mult}, {b_mult}: the NumPy runtime (and qnnpack) need shift 13..31 (the larger ratio at least"
                " 2**-10) and multipliers below 2**22"
            )
        return self._add(
            {
                "name": name,
                "op": "add",
                "inputs": [a, b],
                "a_scale": sa,
                "a_zero_point": za,
                "b_scale": sb,
                "b_zero_point": zb,
                "scale": float(scale),
                "zero_point": int(zero_point),
                "relu": bool(relu),
                "a_multiplier": a_mult,
                "b_multiplier": b_mult,
                "shift": shift,
                "zero_point_product": -(a_mult * za + b_mult * zb),
                "qmin": int(zero_point) if relu else 0,
                "qmax": 255,
            }
        )

    def max_pool(self, name: str, src: str, mod: nn.MaxPool2d) -> str:
        def pair(v):
            return list(v) if isinstance(v, (tuple, list)) else [int(v), int(v)]

        if mod.ceil_mode or pair(mod.dilation) != [1, 1]:
            raise ConfigError(f"{name}: max pooling with ceil_mode or dilation is not supported")
        scale, zp = self.qparams[src]
        return self._add(
            {
                "name": name,
                "op": "max_pool",
                "inputs": [src],
                "kernel": pair(mod.kernel_size),
                "stride": pair(mod.stride if mod.stride is not None else mod.kernel_size),
                "padding": pair(mod.padding),
                "scale": scale,
                "zero_point": zp,
            }
        )


# --------------------------------------------------------------------------- the SSD (eager)


def _ssd_conv_act(b: _Builder, prefix: str, module, src: str) -> str:
    from temposplit.model.ssd import TFSamePad

    if not isinstance(module.act, nn.Identity):
        raise ConfigError(f"{prefix}: activation {type(module.act).__name__} not fused into the convolution")
    if isinstance(module.pad, TFSamePad):
        src = b.pad_same(f"{prefix}.pad", src, module.pad.kernel, module.pad.stride)
    elif not isinstance(module.pad, nn.Identity):
        raise ConfigError(f"{prefix}: unexpected padding module {type(module.pad).__name__}")
    return b.conv(f"{prefix}.conv", src, module.conv)


def _ssd_graph(qsplit) -> tuple[_Builder, dict[str, str]]:
    from temposplit.model.ssd import ConvAct, InvertedResidual

    net = qsplit.int8_split.net
    b = _Builder()
    quant = net.quant
    if not hasattr(quant, "scale"):
        raise ConfigError("the SSD network is not converted to int8 (its quant stub has no scale)")
    x = b.quantize("quant", float(quant.scale), int(quant.zero_point))
    stage_out: dict[str, str] = {}
    for stage in qsplit.int8_split.m1_stages:
        if stage == "features.14.expand":
            x = _ssd_conv_act(b, "features.14.expand", net.features[14].expand, x)
        elif stage == "features.14":
            block = net.features[14]
            if block.use_residual:
                raise ConfigError("features.14 with a residual cannot be cut after its expansion")
            x = _ssd_conv_act(b, "features.14.depthwise", block.depthwise, x)
            x = _ssd_conv_act(b, "features.14.project", block.project, x)
        else:
            module = net.features[int(stage.split(".")[1])]
            if isinstance(module, ConvAct):
                x = _ssd_conv_act(b, stage, module, x)
            elif isinstance(module, InvertedResidual):
                block_in = x
                if not isinstance(module.expand, nn.Identity):
                    x = _ssd_conv_act(b, f"{stage}.expand", module.expand, x)
                x = _ssd_conv_act(b, f"{stage}.depthwise", module.depthwise, x)
                x = _ssd_conv_act(b, f"{stage}.project", module.project, x)
                if module.use_residual:
                    add = module.skip_add
                    x = b.add(f"{stage}.skip_add", block_in, x, float(add.scale), int(add.zero_point), relu=False)
            else:
                raise ConfigError(f"{stage}: unexpected module {type(module).__name__}")
        stage_out[stage] = x
    return b, stage_out


# --------------------------------------------------------------------------- torchvision (FX)


def _scalar(v):
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


def _fx_graph(module) -> tuple[_Builder, list[str]]:
    from torch.ao.nn.quantized import Conv2d as QConv2d

    b = _Builder()
    env: dict[str, object] = {}
    outputs: list[str] = []

    def arg(a):
        return env[a.name] if isinstance(a, torch.fx.Node) else a

    for n in module.graph.nodes:
        name = n.name
        if n.op == "placeholder":
            env[name] = "input"
        elif n.op == "get_attr":
            obj = module
            for part in n.target.split("."):
                obj = getattr(obj, part)
            env[name] = _scalar(obj)
        elif n.op == "call_function":
            args = [arg(a) for a in n.args]
            kwargs = {k: arg(v) for k, v in n.kwargs.items()}
            if n.target is torch.quantize_per_tensor:
                src, scale, zp, dtype = (args + [kwargs.get(k) for k in ("scale", "zero_point", "dtype")])[:4]
                if src != "input" or dtype != torch.quint8:
                    raise ConfigError(f"{name}: quantize_per_tensor of {src} to {dtype} not supported")
                env[name] = b.quantize(name, float(_scalar(scale)), int(_scalar(zp)))
            elif str(n.target).split(".")[:2] in (["quantized", "add"], ["quantized", "add_relu"]):
                a, c = args[0], args[1]
                scale = kwargs.get("scale", args[2] if len(args) > 2 else None)
                zp = kwargs.get("zero_point", args[3] if len(args) > 3 else None)
                env[name] = b.add(
                    name, a, c, float(_scalar(scale)), int(_scalar(zp)), str(n.target).split(".")[1] == "add_relu"
                )
            elif n.target is operator.getitem:
                raise ConfigError(f"{name}: getitem in the M1 graph is not supported")
            else:
                raise ConfigError(f"{name}: function {n.target} is not supported by the NumPy runtime")
        elif n.op == "call_module":
            mod = module.get_submodule(n.target)
            src = arg(n.args[0])
            if isinstance(mod, QConv2d):
                env[name] = b.conv(n.target, src, mod)
            elif isinstance(mod, nn.MaxPool2d):
                env[name] = b.max_pool(n.target, src, mod)
            else:
                raise ConfigError(f"{n.target}: module {type(mod).__name__} is not supported by the NumPy runtime")
        elif n.op == "output":
            res = n.args[0]
            res = list(res) if isinstance(res, (tuple, list)) else [res]
            outputs = [arg(r) for r in res]
        else:
            raise ConfigError(f"{name}: FX op {n.op} not supported")
    return b, outputs


# --------------------------------------------------------------------------- entry points


def m1_graph(quantized) -> tuple[dict, dict[str, np.ndarray]]:
    """The graph (JSON-able dict) and arrays of an int8 M1.

    ``quantized``: a :class:`~temposplit.model.quantize.QuantizedSplit` (the SSD, eager) or a
    :class:`~temposplit.model.quantize.QuantizedM1` (a torchvision detector, FX).
    """
    from temposplit.model.quantize import QuantizedM1, QuantizedSplit

    if isinstance(quantized, QuantizedSplit):
        b, stage_out = _ssd_graph(quantized)
        outputs = [stage_out[n] for n in quantized.names]
        det = quantized.detector
        size = tuple(det.input_size) if det.input_size else SSD_INPUT_SIZE
        input_spec = {"kind": "ssd-rgb", "size": list(size), "note": "TF1 ResizeBilinear, then x * 2/255 - 1"}
    elif isinstance(quantized, QuantizedM1):
        b, outputs = _fx_graph(quantized.module)
        det = quantized.detector
        input_spec = {
            "kind": "tensor",
            "note": "the detector's preprocess(frames).tensor (torchvision's normalized, resized, padded batch)",
        }
    else:
        raise ConfigError(f"cannot export {type(quantized).__name__}: expected a QuantizedSplit or QuantizedM1")
    if len(outputs) != len(quantized.names):
        raise ConfigError(f"M1 returns {len(outputs)} tensors, the cut table lists {len(quantized.names)}")
    graph = {
        "format": FORMAT,
        "version": VERSION,
        "model": det.name,
        "cut": quantized.cut.name,
        "engine": "qnnpack",
        "input": input_spec,
        "outputs": outputs,
        "output_names": list(quantized.names),
        "nodes": b.nodes,
        # The float weights' digest, so that the board can compute the stream's model hash
        # (temposplit.model.fingerprint) without torch.
        "weights_digest": weights_digest(det.net).hex(),
    }
    return graph, b.arrays


def export_m1(quantized, path) -> Path:
    """Write an int8 M1 to ``path`` (``.npz``) for :func:`temposplit.model.numpy_m1.load`.

    ``quantized``: ``quantize(det, frames).split(cut)`` (SSD) or ``quantize_m1(det, cut, frames)``
    (torchvision). The file holds no pickles (``np.load(..., allow_pickle=False)`` reads it).
    """
    graph, arrays = m1_graph(quantized)
    path = Path(path)
    blob = np.frombuffer(json.dumps(graph, indent=None).encode("utf-8"), dtype=np.uint8)
    check_loadable(blob, arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: give the .npz file to write")
    from temposplit.files import output_file

    with output_file(path) as f:  # never a partial file, nor a temporary one left behind
        np.savez_compressed(f, graph=blob, **arrays)
    return path


def check_loadable(blob: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    """A ConfigError where :func:`temposplit.model.numpy_m1.load` would refuse the file of this
    graph (JSON bytes) and these arrays: the exporter writes no file the runtime refuses
    (its caps: members' sizes, tensor sizes, sides; its checks of every field)."""
    from temposplit.model.numpy_m1 import MAX_ARCHIVE_BYTES, FormatError, NumpyM1

    header = 256  # at most, per .npy member (NumPy writes 128 bytes for these shapes)
    total = blob.nbytes + header + sum(a.nbytes + header for a in arrays.values())
    if total > MAX_ARCHIVE_BYTES:
        raise ConfigError(f"the export would hold {total} bytes, above the NumPy runtime's cap of {MAX_ARCHIVE_BYTES}")
    try:
        NumpyM1.checked(json.loads(blob.tobytes().decode("utf-8")), arrays)
    except FormatError as exc:
        raise ConfigError(f"the NumPy runtime would refuse this export: {exc}") from exc


def check_export(model: str | None, cut, weights, have_frames: bool) -> tuple[str, str]:
    """The (model, cut) names :func:`export_cut` exports, or a ConfigError, before anything
    is loaded or calibrated (a mistyped cut cost a whole calibration): an unknown model or
    cut, a torchvision detector without weights (its random weights would be exported as
    if they were a model) or without calibration frames."""
    from temposplit.model import cuts as cut_table

    name = model or cut_table.DEFAULT_MODEL
    cut_name = cut_table.get_cut(name, cut).name
    if name != cut_table.SSD:
        if weights is None:
            raise ConfigError(
                f"{name}: no weights: give 'DEFAULT', 'COCO_V1' or a .pth (--weights W on the command line);"
                " without them its M1 would be exported with random weights"
            )
        if not have_frames:
            raise ConfigError(
                f"{name}: give calibration frames (RGB uint8; --calibration N on the command line) to export"
                " its int8 M1"
            )
    return name, cut_name


def export_cut(out, model: str | None = None, cut=None, weights=None, calibration_frames=None, log=None) -> Path:
    """Load, calibrate (qnnpack int8) and export one cut's M1: what a command line calls.

    ``model``: a detector name (default: the SSD); ``cut``: a cut name or alias (default: the
    model's default cut); ``weights``: as for ``load_detector`` (a torchvision detector's
    must be given: ``"DEFAULT"``, ``"COCO_V1"`` or a ``.pth``); ``calibration_frames``: RGB
    uint8 frames (default for the SSD: the fixed calibration set,
    ``calibration.calibration_frames()``). For a torchvision detector the calibration frames
    must be given. The names are checked (:func:`check_export`) before anything is loaded.
    """
    from temposplit.model import cuts as cut_table
    from temposplit.model import load_detector
    from temposplit.model.quantize import quantize, quantize_m1

    name, cut_name = check_export(model, cut, weights, calibration_frames is not None)
    det = load_detector(name, weights=weights)
    if calibration_frames is None:
        from temposplit.model.calibration import calibration_frames as default_frames

        calibration_frames = default_frames()
    if name == cut_table.SSD:
        quantized = quantize(det, calibration_frames, log=log).split(cut_name)
    else:
        quantized = quantize_m1(det, cut_name, calibration_frames)
    path = export_m1(quantized, out)
    if log:
        log(f"wrote {path} ({name}, cut {quantized.cut.name}, {path.stat().st_size} bytes)")
    return path
