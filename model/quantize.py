"""Int8 static post-training quantization and the cut's uint8 codes (docs/requirements.md section 4).

Path chosen: **eager mode** (``torch.ao.quantization``: QuantStub/DeQuantStub, fuse,
prepare, calibrate, convert) with the **qnnpack** configuration, for the SSD, because

* it yields real quantized tensors at the cut (``quint8``, per-tensor affine, with
  ``q_scale()``/``q_zero_point()``/``int_repr()``), which the codec and the fabric
  consume; PT2E (torchao) yields a float graph with quantize/dequantize nodes instead and
  needs ``torch.export`` with fixed shapes and an extra package;
* M1 and M2 are slices of one converted network, so the int8 M1 the edge runs and the
  int8 M2 the server could run share every scale and zero point;
* qnnpack is what an ARM board runs; its activation observer (a histogram) uses the full
  range 0..255 (``reduce_range=False``), as docs/requirements.md section 4 asks at the cut.

ReLU6: eager fusion knows conv+ReLU, not conv+ReLU6. Each conv+ReLU6 becomes a fused
conv+ReLU whose output observer clamps at 6 (it returns the clamped value during
calibration, so the calibrated network is the float ReLU6 network, and its range ends at
6, so the int8 output saturates at 6): int8 conv+ReLU6 without an extra requantization.

The torchvision backbones (M1 only) use FX graph mode on the stages before the cut
(``prepare_fx``/``convert_fx`` with quantized outputs), which rewrites the residual adds,
the squeeze-and-excitation multiply and hardswish by itself; their ``FrozenBatchNorm2d``
layers are first swapped for equivalent ``BatchNorm2d`` so that conv+BN fusion finds them.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from temposplit.errors import ConfigError
from temposplit.model.split import BatchMeta, Split, check_tensors

ENGINE = "qnnpack"


@dataclass
class CutTensor:
    """One tensor crossing the cut, for one frame, as the codec consumes it.

    Attributes
    ----------
    name : the producing stage (the cut table's name)
    shape : (C, H, W)
    scale : s8 (float)
    zero_point : z8 (int, 0..255)
    codes : uint8 array (C, H, W), per-tensor affine: value = (codes - z8) * s8
    """

    name: str
    shape: tuple[int, int, int]
    scale: float
    zero_point: int
    codes: np.ndarray

    def dequantize(self) -> np.ndarray:
        return (self.codes.astype(np.float32) - self.zero_point) * np.float32(self.scale)


def cut_tensors(names: list[str], tensors: list[torch.Tensor], index: int = 0) -> list[CutTensor]:
    """Frame ``index`` of M1's quint8 outputs as :class:`CutTensor` s (name, shape, s8, z8, codes)."""
    out = []
    if not isinstance(tensors, (list, tuple)) or len(tensors) != len(names):
        raise ConfigError(f"expected the list of m1's {len(names)} tensors ({', '.join(names)}), got {tensors!r:.80}")
    for name, t in zip(names, tensors, strict=True):
        quint8 = isinstance(t, torch.Tensor) and t.is_quantized and t.dtype == torch.quint8
        if not quint8 or t.qscheme() != torch.per_tensor_affine:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"{name}: expected a per-tensor affine quint8 tensor, got {got}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -len(t) <= index < len(t):
            raise ConfigError(f"{name}: frame index {index!r} is not one of the batch's {len(t)} frames")
        codes = t[index].int_repr().numpy().astype(np.uint8, copy=False)
        out.append(CutTensor(name, tuple(codes.shape), float(t.q_scale()), int(t.q_zero_point()), codes))
    return out


# The calibration's float arithmetic (the convolutions the observers and post-training
# methods read, their reductions) depends in its last bits on how many threads split it and
# on the kernels PyTorch picks for the CPU (AVX2, AVX512, ...), and the recipe's choices
# (the MSE observer's best of 100 ranges, the equalization gains) amplify those bits: in
# float32, 1 and 2 threads, or AVX512 and AVX2 kernels, gave networks with 183-190 of 414
# tensors different and int8 mAP@0.5 up to 9 points apart (docs/models.md,
# "Reproducibility"). So a recipe computes in float64 (differences of ~1e-14, which the
# float32 results it keeps round away): a demo, an edge, a test worker and another machine
# get the same network at any thread count (tests/model/test_qcache.py). It runs at
# CALIBRATION_THREADS, or fewer where the caller set fewer: more threads than the process
# was given (two test workers on two cores, each told one) oversubscribe the cores, and
# OpenMP's barriers then wait on descheduled threads (measured: two calibrations side by
# side took 119 s each at 2 threads against 27 s at 1).
CALIBRATION_DTYPE = torch.float64
CALIBRATION_THREADS = 2


@contextlib.contextmanager
def calibration_threads():
    """Run the enclosed calibration at :data:`CALIBRATION_THREADS` intra-op threads, or at
    the caller's count where that is lower."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(CALIBRATION_THREADS, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_engine() -> None:
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise ConfigError(f"this torch build has no {ENGINE} engine")
    torch.backends.quantized.engine = ENGINE


class ReLU6HistogramObserver(torch.ao.quantization.HistogramObserver):
    """qnnpack's activation observer for a fused conv+ReLU standing in for conv+ReLU6."""

    def forward(self, x_orig):
        x = torch.clamp(x_orig, max=6.0)
        super().forward(x)
        return x


# The int8 recipes ``quantize(..., method=)`` knows: an activation observer, optionally
# followed by ``+``-joined post-training methods of :mod:`temposplit.model.ptq`
# (docs/models.md, "Int8 recipes"). "default" is DEFAULT_METHOD; "histogram" alone is the
# recipe before the post-training methods.
OBSERVERS = ("histogram", "minmax", "percentile", "mse")
# int16 weights (model/wide.py) for features.1's depthwise convolution, or for every depthwise one
WIDE_METHODS = {"dw16-first": "first", "dw16": "all"}
PTQ_METHODS = ("equalize", "cle", "streams", "adaround", "adaround-q", "bias", "lsq", "qat", *WIDE_METHODS)
DEFAULT_METHOD = "mse+equalize+cle+bias+dw16-first"  # chosen on the calibration set (docs/models.md)
METHODS = ("default", *OBSERVERS)  # the plain ones; any "observer+method+..." is accepted too


def parse_method(method: str) -> tuple[str, tuple[str, ...]]:
    """``"minmax+equalize+bias"`` -> ("minmax", ("equalize", "bias")); raises ConfigError."""
    parts = [p.strip() for p in str(method).split("+")]
    if parts[0] == "default":  # "default" or "default+<more>"
        parts = DEFAULT_METHOD.split("+") + parts[1:]
    observer = parts[0]
    if observer not in OBSERVERS:
        raise ConfigError(f"unknown int8 observer {parts[0]!r} (choose from default, {', '.join(OBSERVERS)})")
    extra = tuple(parts[1:])
    for m in extra:
        if m not in PTQ_METHODS:
            raise ConfigError(f"unknown post-training method {m!r} (choose from {', '.join(PTQ_METHODS)})")
    if len(set(extra)) != len(extra):
        raise ConfigError(f"method {method!r} names a step twice")
    if len(set(extra) & set(WIDE_METHODS)) > 1:
        raise ConfigError(f"method {method!r}: choose one of {', '.join(WIDE_METHODS)}")
    if "qat" in extra and (observer, tuple(m for m in extra if m != "qat")) != _parse_default():
        raise ConfigError(f"method {method!r}: qat ships a network learned on the default recipe; use default+qat")
    return observer, extra


def _parse_default() -> tuple[str, tuple[str, ...]]:
    parts = DEFAULT_METHOD.split("+")
    return parts[0], tuple(parts[1:])


class SampledObserver(torch.ao.quantization.MinMaxObserver):
    """A per-tensor activation range from sampled calibration values: ``percentile`` (the
    0.01th and 99.99th percentiles) or ``mse`` (of 100 ranges shrunk from min/max, the one
    whose rounding plus clipping error is smallest). The samples are a fixed-seed draw of
    at most 65536 values per batch."""

    def __init__(self, kind: str = "percentile", **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.samples: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(0)

    def forward(self, x_orig):
        x = x_orig.detach().float().flatten()
        n = min(x.numel(), 65536)
        self.samples.append(x[torch.randint(0, x.numel(), (n,), generator=self._gen)])
        return super().forward(x_orig)

    @torch.jit.export
    def calculate_qparams(self):
        if not self.samples:
            return super().calculate_qparams()
        s = torch.cat(self.samples).double()
        lo, hi = float(self.min_val), float(self.max_val)
        if self.kind == "percentile":
            q = torch.quantile(s[:4_000_000], torch.tensor([1e-4, 1 - 1e-4], dtype=torch.float64))
            lo, hi = float(q[0]), float(q[1])
        else:
            best = None
            # The fractions in Python floats: torch.linspace's float32 values differ in the
            # last bit between its vectorized and scalar kernels (a CPU kind's).
            for frac in (0.3 + 0.7 * i / 99 for i in range(100)):
                scale, zp = _affine(lo * frac, hi * frac)
                err = float(((torch.clamp(torch.round(s / scale) + zp, 0, 255) - zp) * scale - s).pow(2).mean())
                if best is None or err < best[0]:
                    best = (err, lo * frac, hi * frac)
            lo, hi = best[1], best[2]
        scale, zp = _affine(lo, hi)
        return torch.tensor([scale], dtype=torch.float32), torch.tensor([zp], dtype=torch.int32)


def _affine(lo: float, hi: float) -> tuple[float, int]:
    """quint8 (0..255) scale and zero point of a range, 0 included, as MinMaxObserver's."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, float(torch.finfo(torch.float32).eps))
    return scale, int(min(255, max(0, 0 - round(lo / scale))))


class ReLU6SampledObserver(SampledObserver):
    def forward(self, x_orig):
        x = torch.clamp(x_orig, max=6.0)
        super().forward(x)
        return x


class ReLU6MinMaxObserver(torch.ao.quantization.MinMaxObserver):
    """The MinMax observer of a fused conv+ReLU standing in for conv+ReLU6."""

    def forward(self, x_orig):
        x = torch.clamp(x_orig, max=6.0)
        super().forward(x)
        return x


def _qconfigs(observer: str = "histogram"):
    """qnnpack's activation observer (histogram, full range) with per-channel symmetric int8
    weights: BN-folded depthwise kernels differ by orders of magnitude between channels,
    and one scale per tensor wipes out the small ones (per-tensor weights turn the SSD's
    detections into noise). Activations, the cut's tensors included, stay per-tensor."""
    from torch.ao.quantization import HistogramObserver, MinMaxObserver, QConfig, default_per_channel_weight_observer

    kwargs = {"reduce_range": False}
    if observer == "minmax":
        act, act6 = MinMaxObserver, ReLU6MinMaxObserver
    elif observer in ("percentile", "mse"):
        act, act6 = SampledObserver, ReLU6SampledObserver
        kwargs["kind"] = observer
    else:
        act, act6 = HistogramObserver, ReLU6HistogramObserver
    base = QConfig(activation=act.with_args(**kwargs), weight=default_per_channel_weight_observer)
    relu6 = QConfig(activation=act6.with_args(**kwargs), weight=base.weight)
    return base, relu6


class QuantizedSplit:
    """The int8 halves of one cut: ``m1`` gives quint8 tensors; ``m2`` is the float M2 on
    their dequantized values (the main path); ``m2_int8`` goes on in int8."""

    def __init__(self, detector, cut, qnet):
        self.detector = detector
        self.float_split = Split(detector, cut, detector.net)
        self.int8_split = Split(detector, cut, qnet)
        self.cut = self.float_split.cut
        self.names = self.float_split.names

    def m1(self, x) -> list[torch.Tensor]:
        return self.int8_split.m1(x)

    def m2(self, tensors, meta: BatchMeta | None = None):
        return self.float_split.m2([t.dequantize() if t.is_quantized else t for t in check_tensors(tensors)], meta)

    def m2_int8(self, tensors, meta: BatchMeta | None = None):
        return self.int8_split.m2(tensors, meta)

    def cut_tensors(self, tensors, index: int = 0) -> list[CutTensor]:
        return cut_tensors(self.names, tensors, index)


class QuantizedDetector:
    """A detector's int8 network (calibrated once; every cut is a slice of it)."""

    def __init__(self, detector, qnet):
        self.detector = detector
        self.net = qnet

    def split(self, cut=None) -> QuantizedSplit:
        return QuantizedSplit(self.detector, self.detector.get_cut(cut), self.net)

    @torch.no_grad()
    def forward(self, batch):
        return self.detector.head(self.net, self._taps(batch.tensor), batch.meta)

    def _taps(self, x):
        x = self.detector.m1_prefix(self.net, x)
        taps = {}
        for name in self.detector.info.stages:
            x = self.detector.stage(self.net, name)(x)
            if name in self.detector.info.taps:
                taps[name] = x
        return taps


def _prepare_ssd(net: nn.Module, observer: str = "histogram", copy_net: bool = True) -> nn.Module:
    from torch.ao.quantization import fuse_modules

    from temposplit.model.ssd import ConvAct

    base, relu6 = _qconfigs(observer)
    qnet = (copy.deepcopy(net) if copy_net else net).eval()
    for module in qnet.modules():
        if isinstance(module, ConvAct) and isinstance(module.act, nn.ReLU6):
            module.act = nn.ReLU()
            fuse_modules(module, [["conv", "act"]], inplace=True)
            module.conv.qconfig = relu6
    qnet.qconfig = base
    # Observers on every module with a qconfig; the fused ones keep their ReLU6 observer.
    torch.ao.quantization.prepare(qnet, inplace=True)
    return qnet


def quantize(
    detector, calibration_frames: Iterable[np.ndarray], batch_size: int = 8, log=None, method: str = "default"
):
    """Calibrate and convert a detector to int8; returns a :class:`QuantizedDetector`.

    ``calibration_frames``: RGB uint8 frames (by default :func:`temposplit.model.calibration.calibration_frames`).
    ``method``: the int8 recipe, ``"default"`` (``DEFAULT_METHOD``) or e.g.
    ``"histogram+equalize+bias"`` (see :func:`parse_method`). Only the SSD is quantized
    whole; for the torchvision detectors use :func:`quantize_m1`. The result is kept on disk
    by its inputs (:mod:`temposplit.model.qcache`): the same calibration again loads it.
    """
    if detector.name != "ssd-mobilenet-v2":
        raise ConfigError(f"{detector.name}: whole-model int8 is for the SSD; use quantize_m1(detector, cut, frames)")
    set_engine()
    from temposplit.model.numpy_m1 import check_frames

    if calibration_frames is None:
        raise ConfigError("no calibration frames: temposplit.model.calibration.calibration_frames() is the fixed set")
    calibration_frames = check_frames(calibration_frames, ConfigError)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
    recipe = parse_method(method)  # a bad name fails here, before any work
    from temposplit.model import qcache

    if "lsq" in recipe[1]:  # its settings are module constants (a test shortens them): keyed too
        from temposplit.model import lsq

        recipe = (*recipe, ("lsq", lsq.STEPS, lsq.BATCH, lsq.LEARNING_RATE, lsq.SEED))
    if "qat" in recipe[1]:  # the shipped network's bytes: keyed too
        from temposplit.model import qat

        recipe = (*recipe, ("qat", qat.load().digest))

    def calibrate():
        with calibration_threads():
            return _calibrate(detector, calibration_frames, batch_size, method, log)

    qnet = qcache.cached(detector.net, calibration_frames, recipe, batch_size, calibrate, log)
    return QuantizedDetector(detector, qnet)


def _calibrate(detector, calibration_frames: list, batch_size: int, method: str, log=None) -> nn.Module:
    """The recipe's float network, observed on the frames and converted: the int8 network."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observer, net, wide = recipe_float_net(detector, calibration_frames, method, log=log)
        learn = "lsq" in parse_method(method)[1]
        float_net = copy.deepcopy(net) if learn else None
        qnet = observe(detector, net, observer, calibration_frames, batch_size, log=log)
        if learn:  # the observers' ranges, then moved against the detector's outputs
            from temposplit.model import lsq
            from temposplit.model.sensitivity import quant_points

            points = [p.name for p in quant_points(float_net) if p.kind == "a"]
            start = lsq.observed_qparams(qnet, points)
            scales = lsq.learn_scales(detector, float_net, wide, calibration_frames, start, log=log)
            lsq.fix_ranges(qnet, scales, {name: zp for name, (_, zp) in start.items()})
        if "qat" in parse_method(method)[1]:  # the ranges learned with the shipped weights
            from temposplit.model import lsq, qat

            shipped = qat.load().qparams
            lsq.fix_ranges(qnet, {n: s for n, (s, _) in shipped.items()}, {n: zp for n, (_, zp) in shipped.items()})
        floats = {name: _float_weights(qnet.get_submodule(name).conv) for name in wide}
        torch.ao.quantization.convert(qnet, inplace=True)
        if wide:
            from temposplit.model.wide import WideConv2d

            for name, (weight, bias) in floats.items():
                module = qnet.get_submodule(name)
                module.conv = WideConv2d.from_float(weight, bias, module.conv)
    return qnet.eval()


def observe(detector, net: nn.Module, observer: str, frames: list, batch_size: int = 8, log=None) -> nn.Module:
    """``net`` (a recipe's float network, taken over) prepared for int8 and calibrated on
    the frames: observers in place, not yet converted. The observers see float64
    activations and keep float32 ranges (MinMaxObserver casts to its buffers' dtype); the
    network converts from its float32 weights."""
    from temposplit.model.ptq import network_input

    qnet = _prepare_ssd(net.to(CALIBRATION_DTYPE), observer, copy_net=False)
    n = 0
    with torch.no_grad():
        for chunk in _chunks(frames, batch_size):
            qnet(network_input(detector, qnet, chunk))
            n += len(chunk)
            if log:
                log(f"calibrated on {n} frames")
    return qnet.float()


def recipe_float_net(detector, calibration_frames: list, method: str, log=None):
    """The float network a recipe quantizes: (observer, a copy of the detector's network
    with the recipe's post-training methods applied, the names of its int16-weight layers).
    The methods compute in :data:`CALIBRATION_DTYPE`; the network returned is float32.
    The detector is not touched."""
    observer, steps = parse_method(method)
    scope = next((WIDE_METHODS[s] for s in steps if s in WIDE_METHODS), None)
    steps = tuple(s for s in steps if s not in WIDE_METHODS)
    net = copy.deepcopy(detector.net).to(CALIBRATION_DTYPE).eval()
    wide = []
    if scope:
        from temposplit.model.wide import depthwise_names

        wide = depthwise_names(net, scope)
    if "qat" in steps:  # every M1 weight up to features.18 from the shipped network (what the
        # methods before it would change is replaced, so they are not run)
        from temposplit.model import qat

        qat.restore(net, qat.load())
    elif steps:
        from temposplit.model import ptq

        ptq.apply(detector, net, calibration_frames, steps, log=log, wide=frozenset(wide), observer=observer)
    return observer, net.float(), wide


def _float_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a prepared, possibly conv+ReLU fused, convolution, before convert."""
    conv = module[0] if isinstance(module, nn.Sequential) else module
    return conv.weight.detach().clone(), conv.bias.detach().clone()


def _chunks(frames, size):
    chunk = []
    for f in frames:
        chunk.append(f)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- torchvision M1


def _swap_frozen_bn(module: nn.Module) -> None:
    """Replace every FrozenBatchNorm2d by an eval-mode BatchNorm2d with the same statistics."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, FrozenBatchNorm2d):
            bn = nn.BatchNorm2d(child.weight.numel(), eps=child.eps)
            with torch.no_grad():
                bn.weight.copy_(child.weight)
                bn.bias.copy_(child.bias)
                bn.running_mean.copy_(child.running_mean)
                bn.running_var.copy_(child.running_var)
            setattr(module, name, bn.eval())
        else:
            _swap_frozen_bn(child)


class _Prefix(nn.Module):
    """The body's stages up to the cut, returning the crossing tensors (FX-traceable)."""

    def __init__(self, body: nn.Module, stages: list[str], keys: list[str], crossing: list[str]):
        super().__init__()
        self.stages = nn.ModuleDict((k, copy.deepcopy(body[k])) for k in keys)
        self.keys = list(keys)
        self.crossing_keys = [keys[stages.index(c)] for c in crossing]

    def forward(self, x):
        outs = {}
        for k in self.keys:
            x = self.stages[k](x)
            outs[k] = x
        return tuple(outs[k] for k in self.crossing_keys)


class QuantizedM1:
    """A torchvision detector's int8 M1 (FX); M2 is the float M2 on dequantized tensors."""

    def __init__(self, detector, cut, module):
        self.detector = detector
        self.float_split = detector.split(cut)
        self.cut = self.float_split.cut
        self.names = self.float_split.names
        self.module = module

    @torch.no_grad()
    def m1(self, x) -> list[torch.Tensor]:
        if hasattr(x, "tensor"):
            x = x.tensor
        return list(self.module(x))

    def m2(self, tensors, meta=None):
        return self.float_split.m2([t.dequantize() if t.is_quantized else t for t in check_tensors(tensors)], meta)

    def cut_tensors(self, tensors, index: int = 0) -> list[CutTensor]:
        return cut_tensors(self.names, tensors, index)


def quantize_m1(detector, cut, calibration_frames, batch_size: int = 2) -> QuantizedM1:
    """Int8 M1 of a torchvision detector at a cut (FX graph mode, qnnpack), calibrated on frames."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from temposplit.model.numpy_m1 import check_frames

    if calibration_frames is None:
        raise ConfigError("no calibration frames: temposplit.model.calibration.calibration_frames() is the fixed set")
    calibration_frames = check_frames(calibration_frames, ConfigError, allow=torch.Tensor)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
    set_engine()
    split = detector.split(cut)
    body = detector.net.backbone.body
    keys = [detector._stage_key(s) for s in split.m1_stages]
    prefix = _Prefix(body, list(split.m1_stages), keys, split.names).eval()
    _swap_frozen_bn(prefix)
    n_out = len(split.names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = (torch.zeros(1, 3, 64, 64),)
        custom = PrepareCustomConfig().set_output_quantized_indexes(list(range(n_out)))
        prepared = prepare_fx(prefix, get_default_qconfig_mapping(ENGINE), example, prepare_custom_config=custom)
        n = 0
        with torch.no_grad(), calibration_threads():
            for chunk in _chunks(calibration_frames, batch_size):
                prepared(detector.preprocess(chunk).tensor)
                n += len(chunk)
        if n == 0:
            raise ConfigError("no calibration frames")
        module = convert_fx(prepared)
    return QuantizedM1(detector, split.cut, module.eval())
