"""Quantization-aware fine-tuning by distillation of the detector's outputs (``qat``).

The post-training methods leave the int8 M1's error spread over many activations, none
alone (docs/models.md, "Every stage under the default recipe"). ``qat`` trains the M1's
weights and biases and every activation's quint8 scale together, through the int8
rounding (straight-through gradients: the weights' per-channel int8 rounding as the
recipe converts them, ``features.1``'s depthwise on the int16 grid, every activation
point as :mod:`temposplit.model.lsq` rounds it), to bring the detector's outputs (the
heads' class scores and boxes, :func:`temposplit.model.lsq.output_loss`) at each of the
six SSD cuts, the int8 M1 up to the cut and the *untouched* float M2 after it, to the
float model's. No label and no evaluated frame: the fixed calibration set, cropped,
mirrored and brightened at random. The int8 network keeps its layers, its arithmetic and
the cut's quint8 per-tensor format; the NumPy board M1 still equals it code for code.

The fine-tuned M1 is learned once (on a GPU in minutes, on this repository's 2 cores in
hours) and shipped as a file (:func:`save`, ``model/weights/``): per layer the int8
codes, each channel's largest weight, the float32 bias and every activation's range.
:func:`restore` puts it into a recipe's float network so that the recipe's own
conversion returns those codes.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STEPS = 1000  # Adam steps (the shipped file: 998, what its GPU time allowed)
BATCH = 16  # frames a step
LR_WEIGHTS = 2e-5  # Adam on the weights and biases, cosine decay to 0
LR_SCALES = 2e-3  # Adam on the log of each activation scale, same decay
SEED = 0
LAST_STAGE = "features.18"  # the deepest SSD cut: every M1 weight up to it is trained


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def _int8_scale(w: torch.Tensor) -> torch.Tensor:
    """Each output channel's int8 scale as the recipe's weight observer computes it
    (``default_per_channel_weight_observer``): ``max |w| / 127.5``, at least float32's eps."""
    amax = w.detach().abs().flatten(1).amax(1).float()
    return torch.clamp(amax / 127.5, min=torch.finfo(torch.float32).eps)


def round_int8(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 as the recipe converts (PyTorch's own rounding,
    which :func:`torch.quantize_per_channel` shares), no gradient."""
    zp = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w.detach().float(), _int8_scale(w), zp, 0, -128, 127)


class _Rounded(nn.Module):
    """A weight parametrization: the rounded weight forward, the float one's gradient back."""

    def __init__(self, wide: bool):
        super().__init__()
        self.wide = wide

    def forward(self, w):
        if self.wide:
            from temposplit.model.wide import round_wide

            return _ste(w, round_wide(w))
        return _ste(w, round_int8(w))


@dataclass
class Result:
    """What :func:`learn` returns: the trained float32 weights and biases of every M1
    convolution (``layer -> (weight, bias)``), every activation point's (scale, zero
    point), and the training's record."""

    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]
    qparams: dict[str, tuple[float, int]]
    history: list[dict] = field(default_factory=list)


def _augment(frames: list[torch.Tensor], rng: np.random.Generator, count: int, size, device) -> torch.Tensor:
    """``count`` network inputs (N, 3, *size) in [-1, 1]: random crops of 60-100 % a
    side, mirrored half the time, brightness and contrast within 20 %."""
    out = []
    for i in rng.choice(len(frames), count, replace=len(frames) < count):
        f = frames[i]  # (3, H, W) uint8 on the device
        h, w = f.shape[1:]
        s = rng.uniform(0.6, 1.0)
        ch, cw = max(1, int(h * s)), max(1, int(w * s))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = f[:, y : y + ch, x : x + cw].float()
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        crop = F.interpolate(crop[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
        mean = crop.mean()
        crop = (crop - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
        out.append(crop.clamp(0, 255))
    return torch.stack(out) * (2.0 / 255.0) - 1.0


class _Student:
    """The recipe's float network with rounding at every M1 point, run up to a cut and
    continued by the float teacher."""

    def __init__(self, net: nn.Module, teacher: nn.Module, wide, qparams: dict[str, tuple[float, int]]):
        from torch.nn.utils import parametrize

        from temposplit.model.sensitivity import quant_points, stage_index

        self.net = net
        self.teacher = teacher
        self.stages = list(net.STAGES)
        last = self.stages.index(LAST_STAGE)
        self.points = [p for p in quant_points(net) if stage_index(p.stage) <= last]
        self.convs = {p.layer: p.module.conv for p in self.points if p.kind == "w"}
        for layer, conv in self.convs.items():
            parametrize.register_parametrization(conv, "weight", _Rounded(layer in set(wide)))
        acts = [p for p in self.points if p.kind == "a"]
        missing = [p.name for p in acts if p.name not in qparams]
        if missing:
            raise ValueError(f"no starting range for {', '.join(missing)}")
        device = next(net.parameters()).device
        self.log_scale = {
            p.name: torch.tensor([math.log(qparams[p.name][0])], device=device, requires_grad=True) for p in acts
        }
        self.zero = {p.name: float(qparams[p.name][1]) for p in acts}
        # A ReLU6 output's range ends at 6 at most: the int8 network's saturation is its clamp.
        self.cap = {
            p.name: 6.0 / 255.0 if isinstance(getattr(p.module, "act", None), nn.ReLU6) else math.inf for p in acts
        }
        from temposplit.model.lsq import _fake_quant

        self.hooks = [
            p.module.register_forward_hook(lambda m, i, o, n=p.name: _fake_quant(o, self.scale(n), self.zero[n]))
            for p in acts
        ]

    def scale(self, name):
        return self.log_scale[name].exp().clamp(max=self.cap[name])

    def parameters(self):
        weights = [p for conv in self.convs.values() for p in (conv.parametrizations.weight.original, conv.bias)]
        return weights, list(self.log_scale.values())

    def outputs(self, x, cuts: list[int]) -> list:
        """The heads' outputs with the int8 M1 up to each stage index in ``cuts``."""
        from temposplit.model.lsq import cut_outputs

        return cut_outputs(self.net, self.teacher, x, cuts)

    def result(self, history) -> Result:
        def cpu(t):
            return t.detach().float().cpu().clone()

        weights = {}
        for name, conv in self.convs.items():
            weights[name] = (cpu(conv.parametrizations.weight.original), cpu(conv.bias))
        qp = {n: (float(self.scale(n).detach().cpu()), int(self.zero[n])) for n in self.log_scale}
        return Result(weights, qp, history)

    def close(self):
        for h in self.hooks:
            h.remove()


def learn(
    teacher_net: nn.Module,
    start_net: nn.Module,
    wide,
    frames: list[np.ndarray],
    qparams: dict[str, tuple[float, int]],
    cuts: list[str],
    steps: int | None = None,
    batch: int = BATCH,
    lr_weights: float = LR_WEIGHTS,
    lr_scales: float = LR_SCALES,
    seed: int = SEED,
    device: str = "cpu",
    held_out: list[np.ndarray] | None = None,
    log=None,
) -> Result:
    """Fine-tune ``start_net`` (the recipe's float network; copied) against ``teacher_net``
    (the float model; copied, frozen) on augmented ``frames`` (RGB uint8), starting from
    the observers' ``qparams``, with the loss summed over ``cuts`` (stage names). With
    ``held_out`` frames, the history records their loss (whole frames, no augmentation)."""
    from temposplit.model.lsq import _frozen, output_loss
    from temposplit.model.ssd import INPUT_SIZE, preprocess

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    steps = STEPS if steps is None else steps
    teacher = _frozen(teacher_net).to(device)
    net = copy.deepcopy(start_net).float().to(device).eval()
    student = _Student(net, teacher, wide, qparams)
    stage_of = {name: i for i, name in enumerate(student.stages)}
    cut_idx = [stage_of[c] for c in cuts]
    images = [torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).to(device) for f in frames]
    held = preprocess(held_out).to(device) if held_out else None
    w_params, s_params = student.parameters()
    opt = torch.optim.Adam([{"params": w_params, "lr": lr_weights}, {"params": s_params, "lr": lr_scales}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / max(1, steps))))
    norm: list[float] = []
    history: list[dict] = []

    def held_out_loss():
        if held is None:
            return None
        with torch.no_grad():
            ref = teacher(held)
            return [float(output_loss(o, ref)) for o in student.outputs(held, cut_idx)]

    try:
        start = time.time()
        history.append({"step": 0, "held_out": held_out_loss()})
        for step in range(steps):
            x = _augment(images, rng, batch, INPUT_SIZE, device)
            with torch.no_grad():
                ref = teacher(x)
            opt.zero_grad(set_to_none=True)
            losses = [output_loss(o, ref) for o in student.outputs(x, cut_idx)]
            if not norm:  # each cut's loss on the first batch: the cuts weigh alike
                norm = [max(float(v.detach()), 1e-9) for v in losses]
            total = sum(v / n for v, n in zip(losses, norm, strict=True)) / len(losses)
            total.backward()
            opt.step()
            sched.step()
            if (step + 1) % 100 == 0 or step + 1 == steps:
                rec = {"step": step + 1, "train": float(total.detach()), "seconds": round(time.time() - start, 1)}
                if (step + 1) % 500 == 0 or step + 1 == steps:
                    rec["held_out"] = held_out_loss()
                history.append(rec)
                if log:
                    log(f"qat step {step + 1}/{steps}: {rec}")
        return student.result(history)
    finally:
        student.close()


def fine_tune(
    detector, frames: list[np.ndarray], steps: int | None = None, device: str = "cpu", held_out=None, log=None
):
    """The shipped network's recipe: the default recipe's float network and observer
    ranges on ``frames`` (float64, as ``quantize`` makes them), then :func:`learn` against
    the detector's float network on the same frames, summed over every SSD cut. Returns
    (:class:`Result`, the names of the int16-weight layers)."""
    import warnings

    from temposplit.model import lsq
    from temposplit.model.quantize import DEFAULT_METHOD, observe, recipe_float_net
    from temposplit.model.sensitivity import quant_points

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observer, net, wide = recipe_float_net(detector, frames, DEFAULT_METHOD, log=log)
        start = copy.deepcopy(net)
        qnet = observe(detector, net, observer, frames)
    qparams = lsq.observed_qparams(qnet, [p.name for p in quant_points(start) if p.kind == "a"])
    cuts = [c.name for c in detector.cuts]
    result = learn(detector.net, start, wide, frames, qparams, cuts, steps, device=device, held_out=held_out, log=log)
    return result, wide


# --------------------------------------------------------------------------- the shipped file

FILE = "ssd-qat.npz"  # in model/weights/: the network `default+qat` converts
FORMAT = 1
MAX_BYTES = 64 << 20  # a qat file larger is refused unread (the shipped one: 2.2 MB)


def weights_path():
    """The shipped file, or ``$TEMPOSPLIT_QAT_WEIGHTS`` (another one learned by ``models
    qat``, e.g. on a calibration fold: docs/models.md)."""
    import os
    from pathlib import Path

    env = os.environ.get("TEMPOSPLIT_QAT_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parent / "weights" / FILE


def _snap(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 codes, each channel's index of its largest |w|, that weight) of a float32 weight."""
    w = w.detach().float()
    flat = w.flatten(1)
    codes = torch.round(round_int8(w).flatten(1) / _int8_scale(w)[:, None]).to(torch.int8)
    idx = flat.abs().argmax(1)
    return codes.numpy().reshape(w.shape), idx.numpy().astype(np.int32), flat[torch.arange(len(idx)), idx].numpy()


def _unsnap(codes: np.ndarray, idx: np.ndarray, extreme: np.ndarray) -> torch.Tensor:
    """A float32 weight whose per-channel int8 rounding gives ``codes``: each code times its
    channel's scale, the channel's largest weight kept exactly (so the scale is the same)."""
    rows = torch.arange(len(idx))
    cols = torch.from_numpy(idx.astype(np.int64))
    amax = torch.from_numpy(np.abs(extreme).astype(np.float32))
    s = _int8_scale(amax[:, None])[:, None]
    w = torch.from_numpy(codes.astype(np.float32)).flatten(1) * s
    w = torch.where(w.abs() > amax[:, None], torch.sign(w) * amax[:, None], w)  # a tie at -128: -amax exactly
    w[rows, cols] = torch.from_numpy(extreme.astype(np.float32))
    return w.reshape(codes.shape)


def save(result: Result, path, wide, meta: dict) -> None:
    """Write a :class:`Result` as the shipped file: per layer the int8 codes, each
    channel's largest weight and its index, the float32 bias (an int16-weight layer:
    its float32 weight), every activation point's float32 scale and zero point, and
    ``meta`` (how it was learned). Checks that :func:`restore` gives the same codes."""
    import json

    arrays: dict[str, np.ndarray] = {}
    for layer, (w, b) in result.weights.items():
        if layer in set(wide):
            arrays[f"{layer}:weight"] = w.numpy().astype(np.float32)
        else:
            codes, idx, extreme = _snap(w)
            back = round_int8(_unsnap(codes, idx, extreme))
            if not torch.equal(back, round_int8(w.float())):
                raise ValueError(f"{layer}: the stored codes do not round back")
            arrays[f"{layer}:codes"], arrays[f"{layer}:index"], arrays[f"{layer}:extreme"] = codes, idx, extreme
        arrays[f"{layer}:bias"] = b.numpy().astype(np.float32)
    points = sorted(result.qparams)
    arrays["points"] = np.array(points)
    arrays["scales"] = np.array([result.qparams[p][0] for p in points], np.float32)
    arrays["zero_points"] = np.array([result.qparams[p][1] for p in points], np.int32)
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, **meta}, sort_keys=True))
    from temposplit.files import output_file

    with output_file(str(path)) as f:  # whole or not at all: a run killed while it saves leaves the old file
        np.savez_compressed(f, **arrays)


@dataclass
class Shipped:
    """The shipped file read back: ``weights`` layer -> (float32 weight, bias) to load
    into a recipe's float network, ``qparams`` point -> (scale, zero point), ``meta``."""

    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]
    qparams: dict[str, tuple[float, int]]
    meta: dict
    digest: str


def _read(path) -> bytes:
    """The bytes of a qat file: one that is missing, unreadable or not a regular file (a
    pipe, a device: refused before any read) is a ``MissingDependencyError``, one larger than
    :data:`MAX_BYTES` a ``ConfigError``."""
    import os
    import stat

    from temposplit.errors import ConfigError, MissingDependencyError

    try:  # non-blocking: opening a FIFO waits for no writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise MissingDependencyError(f"the qat network {path} cannot be read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MissingDependencyError(f"the qat network {path} is not a regular file (a device or a pipe)")
        if st.st_size > MAX_BYTES:
            raise ConfigError(f"{path} is not a qat network file ({st.st_size} bytes, more than {MAX_BYTES})")
        try:
            raw = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise MissingDependencyError(f"the qat network {path} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:  # grew since its size was read
        raise ConfigError(f"{path} is not a qat network file (more than {MAX_BYTES} bytes)")
    return raw


def _check_snapped(path, layer: str, codes: np.ndarray, index: np.ndarray, extreme: np.ndarray) -> None:
    """A layer's stored codes, index and largest weights agree: else a ``ConfigError``
    naming the layer and the array."""
    from temposplit.errors import ConfigError

    if codes.ndim != 4:
        raise ConfigError(f"{path}: {layer}:codes has shape {codes.shape}, not a convolution's (out, in, h, w)")
    for name, a in ((f"{layer}:index", index), (f"{layer}:extreme", extreme)):
        if a.shape != codes.shape[:1]:
            raise ConfigError(f"{path}: {name} has shape {a.shape}, {layer}:codes has {codes.shape[0]} channels")
    if index.dtype.kind not in "iu" or not ((0 <= index) & (index < codes[0].size)).all():
        raise ConfigError(f"{path}: {layer}:index is not an index into each channel's {codes[0].size} weights")


def load(path=None) -> Shipped:
    """Read the shipped file (default :func:`weights_path`); a missing file (or one that
    is not a regular file) is a ``MissingDependencyError``, one that is not such a file a
    ``ConfigError``."""
    import hashlib
    import io
    import json
    import zipfile
    import zlib

    from temposplit.errors import ConfigError

    path = weights_path() if path is None else path
    raw = _read(path)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict) or type(meta.get("format")) is not int or meta["format"] != FORMAT:
                given = meta.get("format") if isinstance(meta, dict) else meta
                raise ConfigError(f"{path}: qat file format {given!r}, this code reads {FORMAT}")
            layers = sorted({k.rsplit(":", 1)[0] for k in z.files if ":" in k})
            weights = {}
            for layer in layers:
                if f"{layer}:weight" in z.files:
                    w = torch.from_numpy(z[f"{layer}:weight"].astype(np.float32))
                else:
                    codes, index, extreme = z[f"{layer}:codes"], z[f"{layer}:index"], z[f"{layer}:extreme"]
                    _check_snapped(path, layer, codes, index, extreme)
                    w = _unsnap(codes, index, extreme)
                weights[layer] = (w, torch.from_numpy(z[f"{layer}:bias"].astype(np.float32)))
            points, scales, zps = z["points"], z["scales"], z["zero_points"]
            if zps.dtype.kind not in "iu":  # (a fraction would be cut to an integer silently)
                raise ConfigError(f"{path}: zero_points must be integers, not {zps.dtype}")
            qparams = {str(p): (float(s), int(zp)) for p, s, zp in zip(points, scales, zps, strict=True)}
    except ConfigError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OSError, EOFError) as exc:
        raise ConfigError(f"{path} is not a qat network file ({type(exc).__name__}: {exc})") from None
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise ConfigError(f"{path} is not a qat network file ({type(exc).__name__}: {exc})") from None
    _check(path, weights, qparams)
    return Shipped(weights, qparams, meta, hashlib.sha256(raw).hexdigest())


def _check(path, weights, qparams) -> None:
    """Every M1 layer and activation point up to :data:`LAST_STAGE`, of the SSD's shapes,
    finite positive scales and zero points in 0..255: else a ``ConfigError``."""
    from temposplit.errors import ConfigError
    from temposplit.model.sensitivity import quant_points, stage_index
    from temposplit.model.ssd import SSDMobileNetV2

    net = SSDMobileNetV2()
    last = stage_index(LAST_STAGE)
    points = [p for p in quant_points(net) if stage_index(p.stage) <= last]
    convs = {p.layer: p.module.conv for p in points if p.kind == "w"}
    acts = {p.name for p in points if p.kind == "a"}
    if set(weights) != set(convs) or set(qparams) != acts:
        raise ConfigError(f"{path}: its layers and points are not the SSD M1's up to {LAST_STAGE}")
    for layer, (w, b) in weights.items():
        conv = convs[layer]
        if w.shape != conv.weight.shape:
            raise ConfigError(f"{path}: {layer} has shape {tuple(w.shape)}, the SSD's is {tuple(conv.weight.shape)}")
        if b.shape != conv.bias.shape:
            raise ConfigError(f"{path}: {layer}:bias has shape {tuple(b.shape)}, the SSD's is {tuple(conv.bias.shape)}")
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise ConfigError(f"{path}: {layer} has weights that are not finite")
    for name, (scale, zp) in qparams.items():
        if not (math.isfinite(scale) and scale > 0 and 0 <= zp <= 255):
            raise ConfigError(f"{path}: {name} has scale {scale} and zero point {zp}")


def restore(net: nn.Module, shipped: Shipped) -> None:
    """Put the shipped weights into a float SSD network (in its dtype), in place."""
    from temposplit.errors import ConfigError
    from temposplit.model.sensitivity import quant_points

    convs = {p.layer: p.module.conv for p in quant_points(net) if p.kind == "w"}
    missing = sorted(set(shipped.weights) - set(convs))
    if missing:
        raise ConfigError(f"the qat network names layers this network lacks: {', '.join(missing)}")
    with torch.no_grad():
        for layer, (w, b) in shipped.weights.items():
            conv = convs[layer]
            if conv.weight.shape != w.shape:
                raise ConfigError(f"{layer}: shape {tuple(w.shape)} does not fit {tuple(conv.weight.shape)}")
            if conv.bias.shape != b.shape:
                raise ConfigError(f"{layer}: bias shape {tuple(b.shape)} does not fit {tuple(conv.bias.shape)}")
            conv.weight.copy_(w.to(conv.weight.dtype))
            conv.bias.copy_(b.to(conv.bias.dtype))
