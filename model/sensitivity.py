"""Per-layer int8 sensitivity of the SSD's M1: which quantization point costs what.

``temposplit models sensitivity`` simulates the int8 M1 in float ("fake quantization"):
each *point* rounds one thing the int8 M1 rounds, as the project's eager int8 recipe does:

* ``<layer>:w`` — a convolution's weights, per output channel, symmetric int8 (scale
  ``max |w| / 127.5``, codes -128..127: PyTorch's per-channel weight observer);
* ``<layer>:a`` — a convolution's output (after its ReLU6, if any), per tensor, quint8
  0..255 over the range an observer found on the calibration set;
* ``input:a`` — the network input; ``features.k.add:a`` — a residual add's output.

Layers are the backbone's convolutions up to ``features.18`` (every SSD cut's M1 is a
prefix of it): ``features.0``, ``features.k.expand`` / ``.depthwise`` / ``.project``,
``features.18``. A *configuration* is the set of points rounded; everything else stays
float (M2 is always float). Each is scored by fidelity mAP@0.5 and mAP@[.5:.95] against
the float model on the same frames (:func:`temposplit.evaluation.metrics.fidelity_map`,
mean over the clips) and by the SQNR of every SSD cut tensor (signal: the float tensor;
noise: the simulated int8 one minus it; over the first frames of each clip).

Configurations: nothing, everything, all weights, all activations, and per group (one
point, or a stage's weights or activations): *only* that group, and *all but* that group.

``method`` simulates an int8 recipe instead of the plain observer (:func:`recipe_simulator`):
its post-training methods rewrite a copy of the float network, its int16-weight layers
round on the int16 grid, and the reference stays the untouched float model. ``last``
keeps the points up to one stage (a cut's M1), so that "all" is that cut's int8 M1.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from temposplit.errors import ConfigError

SQNR_FRAMES_PER_CLIP = 8  # frames per clip whose cut tensors are kept for the SQNR
OBSERVERS = ("histogram", "minmax", "percentile", "mse")


@dataclass
class Point:
    """One rounding the int8 M1 does: ``kind`` "w" (weights) or "a" (activation)."""

    name: str  # e.g. "features.1.project:w"
    layer: str  # e.g. "features.1.project"
    stage: str  # the cut table's stage, e.g. "features.1", "features.14.expand"
    kind: str
    module: nn.Module  # the ConvAct (w and a), or the module whose output is rounded


def stage_index(stage: str) -> int:
    """Network order of a stage: -1 for the input, else its place in the cut table's SSD
    stages (``features.14.expand`` between ``features.13`` and ``features.14``)."""
    from temposplit.model.cuts import SSD, model_info

    if stage == "input":
        return -1
    stages = model_info(SSD).stages
    if stage not in stages:
        raise ConfigError(f"unknown stage {stage!r} (input, features.0 .. features.18, features.14.expand)")
    return stages.index(stage)


def _stage_of(layer: str) -> str:
    parts = layer.split(".")
    if parts[0] == "input":
        return "input"
    k = int(parts[1])
    if k == 14 and len(parts) > 2 and parts[2] == "expand":
        return "features.14.expand"
    return f"features.{k}"


def quant_points(net: nn.Module) -> list[Point]:
    """The M1 points of the SSD network, in network order."""
    from temposplit.model.ssd import ConvAct, InvertedResidual

    points = [Point("input:a", "input", "input", "a", net.quant)]
    for k, block in enumerate(net.features):
        if isinstance(block, ConvAct):
            layer = f"features.{k}"
            points += [Point(f"{layer}:w", layer, layer, "w", block), Point(f"{layer}:a", layer, layer, "a", block)]
            continue
        assert isinstance(block, InvertedResidual)
        for part in ("expand", "depthwise", "project"):
            mod = getattr(block, part)
            if not isinstance(mod, ConvAct):
                continue
            layer = f"features.{k}.{part}"
            stage = _stage_of(layer)
            points += [Point(f"{layer}:w", layer, stage, "w", mod), Point(f"{layer}:a", layer, stage, "a", mod)]
        if block.use_residual:
            layer = f"features.{k}.add"
            points.append(Point(f"{layer}:a", layer, f"features.{k}", "a", block.skip_add.activation_post_process))
    return points


# --------------------------------------------------------------------------- rounding


def weight_fake_quant(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8, as ``default_per_channel_weight_observer``."""
    amax = w.detach().abs().flatten(1).amax(1).clamp(min=1e-12)
    scale = (amax / 127.5).to(torch.float32)
    zp = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -128, 127)


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """quint8 affine parameters of a range (0 included), as PyTorch's observers compute them."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, float(torch.finfo(torch.float32).eps))
    zp = int(min(255, max(0, 0 - round(lo / scale))))
    return scale, zp


class RangeObserver:
    """An activation range from calibration data: ``histogram`` (PyTorch's
    HistogramObserver, the project's default), ``minmax``, ``percentile`` (the 99.99th
    percentile of |x| per side), or ``mse`` (the clipping range among 100 candidates that
    minimizes the rounding plus clipping error on the calibration samples)."""

    def __init__(self, kind: str):
        if kind not in OBSERVERS:
            raise ConfigError(f"unknown observer {kind!r} (choose from {', '.join(OBSERVERS)})")
        self.kind = kind
        self.lo, self.hi = math.inf, -math.inf
        self.samples: list[torch.Tensor] = []
        self.hist = torch.ao.quantization.HistogramObserver(reduce_range=False) if kind == "histogram" else None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        if self.hist is not None:
            self.hist(x)
        elif self.kind in ("percentile", "mse"):
            flat = x.flatten()
            idx = torch.randint(
                0, flat.numel(), (min(flat.numel(), 200_000),), generator=torch.Generator().manual_seed(0)
            )
            self.samples.append(flat[idx])

    def qparams(self) -> tuple[float, int]:
        if self.kind == "minmax":
            return _qparams(self.lo, self.hi)
        if self.kind == "histogram":
            scale, zp = self.hist.calculate_qparams()
            return float(scale), int(zp)
        s = torch.cat(self.samples)
        if self.kind == "percentile":
            q = torch.quantile(s[:1_000_000].double(), torch.tensor([1e-4, 1 - 1e-4], dtype=torch.float64))
            return _qparams(float(q[0]), float(q[1]))
        best, best_err = None, math.inf
        for frac in np.linspace(0.3, 1.0, 100):
            scale, zp = _qparams(self.lo * frac, self.hi * frac)
            err = float(((torch.fake_quantize_per_tensor_affine(s, scale, zp, 0, 255) - s) ** 2).mean())
            if err < best_err:
                best, best_err = (scale, zp), err
        return best


# --------------------------------------------------------------------------- the simulator


class FakeQuantSSD:
    """The float SSD with switchable rounding points (forward hooks and swapped weights)."""

    def __init__(self, detector, observer: str = "histogram", observers: dict | None = None):
        self.detector = detector
        self.net = detector.net
        self.points = quant_points(self.net)
        self.by_name = {p.name: p for p in self.points}
        self.observer = observer
        self.observer_of = dict(observers or {})  # point name -> observer kind (overrides)
        self.qparams: dict[str, tuple[float, int]] = {}
        self.float_weights = {p.name: p.module.conv.weight.detach().clone() for p in self.points if p.kind == "w"}
        self.quant_weights = {n: weight_fake_quant(w) for n, w in self.float_weights.items()}
        self.wide: tuple[str, ...] = ()  # layers whose weights round on the int16 grid
        self.enabled: set[str] = set()
        self._hooks = []

    def set_wide(self, layers) -> None:
        """Round these layers' weights as int16 (:func:`temposplit.model.wide.round_wide`)."""
        from temposplit.model.wide import round_wide

        for layer in layers:
            name = f"{layer}:w"
            if name not in self.float_weights:
                raise ConfigError(f"no weights point {name!r}")
            self.quant_weights[name] = round_wide(self.float_weights[name])
        self.wide = tuple(layers)

    # -- calibration

    @torch.no_grad()
    def calibrate(self, frames, batch_size: int = 8) -> None:
        """Activation ranges of every ``:a`` point, on the float network."""
        obs = {p.name: RangeObserver(self.observer_of.get(p.name, self.observer)) for p in self.points if p.kind == "a"}
        hooks = []
        for p in self.points:
            if p.kind == "a":
                hooks.append(p.module.register_forward_hook(lambda m, i, o, name=p.name: obs[name].update(o)))
        try:
            for s in range(0, len(frames), batch_size):
                self.net(self.detector.preprocess(frames[s : s + batch_size]).tensor)
        finally:
            for h in hooks:
                h.remove()
        self.qparams = {name: o.qparams() for name, o in obs.items()}

    # -- switching

    def set_enabled(self, names) -> None:
        names = set(names)
        unknown = names - set(self.by_name)
        if unknown:
            raise ConfigError(f"unknown quantization point(s): {', '.join(sorted(unknown))}")
        for h in self._hooks:
            h.remove()
        self._hooks = []
        with torch.no_grad():
            for n, w in self.float_weights.items():
                self.by_name[n].module.conv.weight.copy_(self.quant_weights[n] if n in names else w)
        for n in names:
            p = self.by_name[n]
            if p.kind == "a":
                scale, zp = self.qparams[n]
                self._hooks.append(
                    p.module.register_forward_hook(
                        lambda m, i, o, s=scale, z=zp: torch.fake_quantize_per_tensor_affine(o, s, z, 0, 255)
                    )
                )
        self.enabled = names

    def restore(self) -> None:
        self.set_enabled(())


def recipe_simulator(detector, method: str, calibration_frames, log=None) -> FakeQuantSSD:
    """The simulator of an int8 recipe (``quantize(..., method=)``, e.g. ``"default"``): the
    recipe's post-training methods applied to a copy of the float network (the detector is
    not touched), its int16-weight layers, its observer, calibrated on the frames."""
    from temposplit.model.quantize import parse_method, recipe_float_net

    if "lsq" in parse_method(method)[1]:
        raise ConfigError("the simulator takes the observers' ranges: score a recipe with lsq by `models accuracy`")
    if "qat" in parse_method(method)[1]:  # its layers after a cut would run as M2, which the server never does
        raise ConfigError("the simulator runs one network for M1 and M2: score default+qat by `models accuracy`")
    calibration_frames = list(calibration_frames)
    twin = copy.copy(detector)
    observer, twin.net, wide = recipe_float_net(detector, calibration_frames, method, log=log)
    sim = FakeQuantSSD(twin, observer)
    sim.set_wide(wide)
    sim.calibrate(calibration_frames)
    return sim


# --------------------------------------------------------------------------- the study


def _sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    noise = float(((test - ref) ** 2).sum())
    signal = float((ref**2).sum())
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


class Study:
    """Scores configurations of a :class:`FakeQuantSSD` on clips' frames."""

    def __init__(self, sim: FakeQuantSSD, clips: dict[str, list], batch_size: int = 16, reference=None):
        """``reference``: the float detector scored against (default: the simulator's own
        network with every point off; a recipe's simulator passes the untouched model)."""
        self.sim = sim
        self.det = sim.detector
        self.batch_size = batch_size
        self.cut_names = [c.name for c in self.det.cuts]
        self.inputs = {
            name: [self._batch(frames[s : s + batch_size]) for s in range(0, len(frames), batch_size)]
            for name, frames in clips.items()
        }
        self.sim.restore()
        self.reference = {}
        self.ref_cuts = {}
        for name in self.inputs:
            dets, cuts = self._run(name, reference or self.det)
            self.reference[name] = dets
            self.ref_cuts[name] = cuts

    def _batch(self, frames):
        return self.det.preprocess(frames)

    @torch.no_grad()
    def _run(self, clip: str, det=None):
        """Detections of every frame and the cut tensors of the first SQNR frames."""
        det = det or self.det
        net = det.net
        dets, cuts = [], {c: [] for c in self.cut_names}
        kept = 0
        for batch in self.inputs[clip]:
            captured = {}
            hooks = []
            if kept < SQNR_FRAMES_PER_CLIP:
                for c in self.cut_names:
                    mod = net.features[14].expand if c == "features.14.expand" else net.features[int(c.split(".")[1])]
                    hooks.append(mod.register_forward_hook(lambda m, i, o, c=c, d=captured: d.__setitem__(c, o)))
            try:
                dets.extend(det.forward(batch))
            finally:
                for h in hooks:
                    h.remove()
            if captured:
                take = min(SQNR_FRAMES_PER_CLIP - kept, batch.tensor.shape[0])
                for c in self.cut_names:
                    cuts[c].append(captured[c][:take].clone())
                kept += take
        return dets, {c: torch.cat(v) for c, v in cuts.items()}

    def score(self, enabled) -> dict:
        from temposplit.evaluation.metrics import fidelity_map

        self.sim.set_enabled(enabled)
        per_clip = {}
        noise = {c: 0.0 for c in self.cut_names}
        signal = {c: 0.0 for c in self.cut_names}
        try:
            for clip in self.inputs:
                dets, cuts = self._run(clip)
                r = fidelity_map(dets, self.reference[clip])
                per_clip[clip] = (r.map50, r.map50_95)
                for c in self.cut_names:
                    ref = self.ref_cuts[clip][c]
                    noise[c] += float(((cuts[c] - ref) ** 2).sum())
                    signal[c] += float((ref**2).sum())
        finally:
            self.sim.restore()
        sqnr = {c: (None if noise[c] == 0 else round(10 * math.log10(signal[c] / noise[c]), 2)) for c in self.cut_names}
        vals = [v for v in per_clip.values() if not math.isnan(v[0])]
        return {
            "map50": round(float(np.mean([v[0] for v in vals])), 4),
            "map50_95": round(float(np.mean([v[1] for v in vals])), 4),
            "per_clip": {k: [round(v[0], 4), round(v[1], 4)] for k, v in per_clip.items()},
            "sqnr_db": sqnr,
        }


def groups(points: list[Point], granularity: str) -> list[tuple[str, list[str]]]:
    """(label, point names) to study one at a time: ``point`` (each point), ``stage`` (a
    stage's weights, a stage's activations)."""
    if granularity == "point":
        return [(p.name, [p.name]) for p in points]
    if granularity != "stage":
        raise ConfigError(f"granularity must be 'point' or 'stage', not {granularity!r}")
    out: dict[str, list[str]] = {}
    for p in points:
        out.setdefault(f"{p.stage}:{p.kind}", []).append(p.name)
    return list(out.items())


def run_study(
    detector,
    clips: dict[str, list],
    calibration_frames: list,
    granularity: str = "stage",
    observer: str = "histogram",
    only_points: list[str] | None = None,
    log=None,
    configs: tuple[str, ...] = ("only", "all but"),
    method: str | None = None,
    last: str | None = None,
) -> list[dict]:
    """Score the configurations (see the module docstring); one dict per configuration:
    the global ones, then every group's "only" configuration, then every group's "all but".
    ``method``: simulate that int8 recipe (``observer`` is then the recipe's); ``last``: only
    the points up to that stage."""
    t0 = time.perf_counter()
    bound = stage_index(last) if last else None
    # The groups asked for exist (checked before the slow calibration).
    studied = [p for p in quant_points(detector.net) if bound is None or stage_index(p.stage) <= bound]
    known = {label for label, _ in groups(studied, granularity)}
    unknown = sorted(set(only_points or ()) - known)
    if unknown:
        raise ConfigError(f"no {granularity} group {', '.join(unknown)} (up to {last or 'features.18'})")
    if method:
        sim = recipe_simulator(detector, method, calibration_frames)
        observer = sim.observer
        study = Study(sim, clips, reference=detector)
    else:
        sim = FakeQuantSSD(detector, observer)
        sim.calibrate(calibration_frames)
        study = Study(sim, clips)
    points = [p for p in sim.points if bound is None or stage_index(p.stage) <= bound]
    available = groups(points, granularity)
    names = [p.name for p in points]
    weights = [p.name for p in points if p.kind == "w"]
    acts = [p.name for p in points if p.kind == "a"]
    rows = []

    def add(config, group, enabled):
        row = {"config": config, "group": group, "points": len(enabled), "observer": observer}
        if method:
            row["method"] = method
        if last:
            row["last"] = last
        row.update(study.score(enabled))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        if log:
            log(row)

    add("all", "-", names)
    add("weights", "-", weights)
    add("activations", "-", acts)
    chosen = [(label, m) for label, m in available if not only_points or label in only_points]
    if "only" in configs:
        for label, members in chosen:
            add("only", label, members)
    if "all but" in configs:
        for label, members in chosen:
            add("all but", label, [n for n in names if n not in members])
    return rows
