"""Activation ranges learned against the detector's own outputs (the ``lsq`` recipe step).

The observers choose each activation's quint8 range alone, by what it does to that
tensor (min/max, histogram, MSE). ``lsq`` starts from their ranges and moves every
range's scale, LSQ-style (Esser et al. 2020: the rounding's gradient with respect to the
step size, straight through the rounding), to bring the *detector's outputs* with the
int8 M1 closer to the float model's (the detector's own network, not the recipe's): the
heads' class scores (the Bernoulli KL of each anchor's sigmoid scores) and boxes (L1 of
the box encodings, weighted by the float model's best object score at the anchor), summed
over the six SSD cuts, each the int8 M1 up to the cut and the untouched float M2 after
it, as the evaluation scores them. No label and no
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


def _run_stages(net: torch.nn.Module, names, x, taps: dict, prev):
    """Run the SSD's stages ``names`` from ``x``, as ``SSDMobileNetV2.forward`` does:
    (the last output, the taps so far, ``features.13``'s output for ``features.14``)."""
    for name in names:
        x_in = x
        x = net.run_stage(name, x, prev)
        if name == "features.14.expand":
            prev = x_in
        if name in net.TAPS:
            taps[name] = x
    return x, taps, prev


def cut_outputs(m1: torch.nn.Module, m2: torch.nn.Module, x: torch.Tensor, cuts: list[int]) -> list:
    """The heads' outputs ``(boxes, logits)`` of the split SSD at each stage index in
    ``cuts`` (of ``STAGES``): ``m1`` (its rounding in place) up to the cut, ``m2`` (the
    untouched float network, as the server runs it) after it. ``m1``'s stages run once,
    shared by the cuts."""
    stages = list(m1.STAGES)
    outs = []
    s, taps, prev = m1.quant(x), {}, None
    for i, name in enumerate(stages[: max(cuts) + 1]):
        s, taps, prev = _run_stages(m1, [name], s, taps, prev)
        if i in cuts:  # the float M2 on from here
            _, m2_taps, _ = _run_stages(m2, stages[i + 1 :], s, dict(taps), prev)
            outs.append(m2.head(m2_taps))
    return outs


def _frozen(net: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of ``net`` in eval mode without gradients of its own."""
    net = copy.deepcopy(net).float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


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
    weights round on the int16 grid; ``steps`` defaults to :data:`STEPS`. The teacher is
    the detector's own float network (``detector.net``, untouched: not the recipe's), and
    the layers after each cut are its untouched stages (:func:`cut_outputs`), as the
    evaluation runs the split. Returns point -> scale."""
    from temposplit.model.sensitivity import FakeQuantSSD

    float_net = _frozen(detector.net)
    twin = copy.copy(detector)
    twin.net = _frozen(net)
    sim = FakeQuantSSD(twin)
    sim.set_wide(wide)
    acts = [p for p in sim.points if p.kind == "a"]
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

    with torch.no_grad():  # every weight of the copy rounded: only its stages up to a cut run
        for p in sim.points:
            if p.kind == "w":
                p.module.conv.weight.copy_(sim.quant_weights[p.name])
    stages = list(twin.net.STAGES)
    cuts = [stages.index(c.name) for c in detector.cuts]
    hooks = [p.module.register_forward_hook(lambda m, i, o, n=p.name: _fake_quant(o, scale(n), zero[n])) for p in acts]
    steps = STEPS if steps is None else steps
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(list(log_scale.values()), lr=lr)
    norm: list[float] = []  # each cut's loss on the first batch: the cuts weigh alike
    try:
        for step in range(steps):
            chosen = _crops(frames, rng, batch) if augment else list(frames[:batch])
            x = detector.preprocess(chosen).tensor.float()
            with torch.no_grad():
                teacher = float_net(x)
            opt.zero_grad()
            losses = [output_loss(o, teacher) for o in cut_outputs(twin.net, float_net, x, cuts)]
            if not norm:
                norm = [max(float(v.detach()), 1e-9) for v in losses]
            sum(v / n for v, n in zip(losses, norm, strict=True)).backward()
            opt.step()
            if log and (step % 10 == 0 or step == steps - 1):
                log(f"lsq step {step + 1}/{steps}: loss {sum(float(v) for v in losses) / len(losses):.4f}")
    finally:
        for h in hooks:
            h.remove()
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
