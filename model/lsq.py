"""Activation ranges learned against the detector's own outputs (the ``lsq`` recipe step).

The observers choose each activation's quint8 range alone, by what it does to that
tensor (min/max, histogram, MSE). ``lsq`` starts from their ranges and moves every
range's scale, LSQ-style (Esser et al. 2020: the rounding's gradient with respect to the
step size, straight through the rounding), to bring the *detector's outputs* with the
int8 M1 closer to the float model's: the heads' class scores (the Bernoulli KL of each
anchor's sigmoid scores) and boxes (L1 of the box encodings, weighted by the float
model's best object score at the anchor), summed over the six SSD cuts, each the int8 M1
up to the cut and float M2 after it, as the evaluation scores them. No label and no
evaluated frame: the calibration frames, randomly cropped (60-100 % a side) and
mirrored. Only the scales move (each zero point stays the observer's); the weights, the
network's layers and arithmetic, the cut's quint8 per-tensor format and the NumPy board
M1's equality are untouched: the int8 network converts with the learned ranges in place
of the observers' (:func:`fix_ranges`).

The int8 M1 is simulated in float (:class:`temposplit.model.sensitivity.FakeQuantSSD`'s
points and weight rounding) in float32: unlike the rest of the calibration (float64), the
learned scales can differ in their last bits between CPU kinds (docs/models.md).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

STEPS = 100  # Adam steps
BATCH = 4  # frames a step
LEARNING_RATE = 0.01  # on the log of each scale
SEED = 0


def _fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: float) -> torch.Tensor:
    """quint8 rounding with straight-through gradients to ``x`` (inside the range) and to
    ``scale`` (LSQ's: round(x/s) - x/s inside, the clamp's bound outside)."""
    r = x / scale
    r = r + (torch.round(r) - r).detach()
    return scale * (torch.clamp(r + zero_point, 0.0, 255.0) - zero_point)


def output_loss(student, teacher) -> torch.Tensor:
    """How far the heads' outputs ``(boxes, logits)`` are from the float model's."""
    boxes, logits = student
    ref_boxes, ref_logits = teacher
    p = torch.sigmoid(ref_logits)
    kl = F.binary_cross_entropy_with_logits(logits, p, reduction="none")
    kl = kl - F.binary_cross_entropy_with_logits(ref_logits, p, reduction="none")
    weight = p[..., 1:].amax(-1)  # the anchor's best object score (class 0 is the background)
    box = (weight * (boxes - ref_boxes).abs().sum(-1)).sum() / weight.sum().clamp(min=1e-6)
    return kl.sum(-1).mean() + box


def _crops(frames, rng, count):
    out = []
    for i in rng.choice(len(frames), count, replace=len(frames) < count):
        f = frames[i]
        h, w = f.shape[:2]
        s = rng.uniform(0.6, 1.0)
        ch, cw = max(1, int(h * s)), max(1, int(w * s))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        f = f[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            f = f[:, ::-1]
        out.append(np.ascontiguousarray(f))
    return out


def learn_scales(
    detector,
    net,
    wide,
    frames,
    qparams: dict[str, tuple[float, int]],
    steps: int | None = None,
    batch: int = BATCH,
    lr: float = LEARNING_RATE,
    seed: int = SEED,
    augment: bool = True,
    log=None,
) -> dict[str, float]:
    """Learned scales of the activation points (``"features.3.project:a"``, ...) of the
    float network ``net`` (the recipe's, float32; a copy is used), starting from
    ``qparams`` (point -> (scale, zero point), the observers'). ``wide``: the layers whose
    weights round on the int16 grid; ``steps`` defaults to :data:`STEPS`. Returns point -> scale."""
    from temposplit.model.sensitivity import FakeQuantSSD, stage_index

    twin = copy.copy(detector)
    twin.net = copy.deepcopy(net).float().eval()
    for p in twin.net.parameters():
        p.requires_grad_(False)
    sim = FakeQuantSSD(twin)
    sim.set_wide(wide)
    acts = [p for p in sim.points if p.kind == "a"]
    weights = [p for p in sim.points if p.kind == "w"]
    missing = [p.name for p in acts if p.name not in qparams]
    if missing:
        raise ValueError(f"no starting range for {', '.join(missing)}")
    log_scale = {p.name: torch.tensor([math.log(qparams[p.name][0])], requires_grad=True) for p in acts}
    zero = {p.name: float(qparams[p.name][1]) for p in acts}
    # A ReLU6 output's range ends at 6 at most: the int8 network's saturation is its clamp.
    relu6 = {p.name for p in acts if isinstance(getattr(p.module, "act", None), torch.nn.ReLU6)}
    cap = {p.name: 6.0 / 255.0 if p.name in relu6 else math.inf for p in acts}

    def scale(name):
        return log_scale[name].exp().clamp(max=cap[name])

    bound = {"stage": None}
    order = {p.name: stage_index(p.stage) for p in sim.points}

    def hook(module, inputs, output, name):
        if bound["stage"] is None or order[name] > bound["stage"]:
            return output
        return _fake_quant(output, scale(name), zero[name])

    def int8_up_to(stage):
        bound["stage"] = stage
        with torch.no_grad():
            for p in weights:
                q = stage is not None and order[p.name] <= stage
                p.module.conv.weight.copy_(sim.quant_weights[p.name] if q else sim.float_weights[p.name])

    cuts = [stage_index(c.name) for c in detector.cuts]
    hooks = [p.module.register_forward_hook(lambda m, i, o, n=p.name: hook(m, i, o, n)) for p in acts]
    steps = STEPS if steps is None else steps
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(list(log_scale.values()), lr=lr)
    norm: dict[int, float] = {}  # each cut's loss on the first batch: the cuts weigh alike
    try:
        for step in range(steps):
            chosen = _crops(frames, rng, batch) if augment else list(frames[:batch])
            x = detector.preprocess(chosen).tensor.float()
            int8_up_to(None)
            with torch.no_grad():
                teacher = twin.net(x)
            opt.zero_grad()
            losses = []
            for cut in cuts:
                int8_up_to(cut)
                loss = output_loss(twin.net(x), teacher)
                losses.append(float(loss))
                norm.setdefault(cut, max(losses[-1], 1e-9))
                (loss / norm[cut]).backward()
            opt.step()
            if log and (step % 10 == 0 or step == steps - 1):
                log(f"lsq step {step + 1}/{steps}: loss {sum(losses) / len(losses):.4f}")
    finally:
        for h in hooks:
            h.remove()
        int8_up_to(None)
    return {name: float(scale(name).detach()) for name in log_scale}


def _observed(qnet, point: str) -> torch.nn.Module:
    """The module of a prepared int8 network that holds an activation point's observer."""
    layer = point[: -len(":a")]
    if layer == "input":
        return qnet.quant
    if layer.endswith(".add"):
        return qnet.get_submodule(layer[: -len(".add")] + ".skip_add")
    return qnet.get_submodule(layer).conv


def observed_qparams(qnet, points) -> dict[str, tuple[float, int]]:
    """The calibrated observers' (scale, zero point) of the activation points."""
    out = {}
    for name in points:
        scale, zp = _observed(qnet, name).activation_post_process.calculate_qparams()
        out[name] = (float(scale), int(zp))
    return out


def fix_ranges(qnet, scales: dict[str, float], zero_points: dict[str, int]) -> None:
    """Replace the observers of a calibrated, not yet converted network by fixed ranges."""
    from torch.ao.quantization.observer import FixedQParamsObserver

    for name, scale in scales.items():
        module = _observed(qnet, name)
        module.activation_post_process = FixedQParamsObserver(
            float(np.float32(scale)), int(zero_points[name]), dtype=torch.quint8, quant_min=0, quant_max=255
        )
