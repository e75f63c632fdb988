"""Standard post-training quantization methods on the float SSD, before eager int8.

Each method rewrites the float network's weights and biases (a copy) so that the int8
recipe of :mod:`temposplit.model.quantize` — unchanged: per-channel symmetric int8
weights, per-tensor quint8 activations, qnnpack — quantizes it with less error. The int8
model keeps its structure, so the export and the NumPy board M1 run it code for code.

* :func:`equalize_ranges` — activation range equalization into depthwise convolutions:
  a ReLU6 producer (``features.0``, each block's 1x1 expansion except features.14's,
  whose output M2 reads) whose output channel i never reaches 6 on the calibration set
  (its largest pre-activation is ``m_i < 6``) is
  scaled by ``k_i = min(K_MAX, 6 / (HEADROOM * m_i))`` (weights and bias of row i), and
  the depthwise convolution that reads it by ``1 / k_i`` (channel i). ReLU6 commutes with
  the scaling while ``k_i * z <= 6``, so the float network is unchanged on calibration
  data (up to float rounding); per-channel weights make the scaling free for both
  layers' weight rounding, and every channel uses more of the per-tensor activation codes.
* :func:`equalize_depthwise_project` — cross-layer equalization (Nagel et al., 2019) of
  each depthwise (ReLU6) -> 1x1 projection pair: channel i of the depthwise output is
  divided by ``s_i`` and column i of the projection multiplied by it, with
  ``s_i = sqrt(a_i / (lam * r_i))`` (``a_i``: the channel's largest activation, ``r_i``:
  the column's largest |weight|, ``lam`` normalising both), bounded so that ReLU6 still
  commutes (a channel that reaches 6 keeps ``s_i = 1``; one that does not may grow only
  up to 6).
* :func:`equalize_streams` — range equalization of the residual streams: the linear
  (no activation) tensors that the blocks' 1x1 projections write and the residual adds
  carry (``features.1``'s 16 channels; blocks 2-3, 4-6, 7-10, 11-13, 14-16: 24, 32, 64,
  96, 160; ``features.17``'s 320). One gain ``k_c`` per stream channel, shared by every
  tensor of the stream (the skip connections carry a channel unchanged from block to
  block): each projection writing the stream has its output row c (weights and bias)
  multiplied by ``k_c``, each 1x1 convolution reading it (the next blocks' expansions,
  ``features.18``) its input column c divided by it; the adds are linear, so the float
  network is unchanged. ``k_c = min(K_MAX, min over the stream's tensors t of
  min(hi_t / hi_tc, lo_t / lo_tc))`` (at least 1), ``hi_tc`` / ``lo_tc`` the channel's
  largest / smallest value on the calibration set and ``hi_t`` / ``lo_t`` the tensor's:
  each channel is widened until one of its tensors reaches that tensor's range, so the
  per-tensor quint8 codes are shared by more of the channels. A stream whose last
  tensor is an SSD cut tensor (``features.3``, ``.6``, ``.10``, ``.13``) is left alone:
  M2 (the float model's, on the server) reads the cut tensor unscaled, and the gain
  cannot be undone inside the int8 M1 without a layer after the last add
  (``at_cuts=True`` scales those too, for measurement: the gains are then kept in
  ``net.stream_gains`` and the cut tensor must be divided by them).
* :func:`adaround` — AdaRound (Nagel et al., 2020): each convolution's rounding (down or
  up, per weight) learned on the calibration set to minimize the layer's output error;
  the float weights are then set to the chosen grid points ``code * s`` (``s = max |w| /
  127.5``), except each channel's largest |weight|, which keeps its value: the int8
  recipe then finds the same scale, and its round-to-nearest returns exactly the chosen
  codes. Only ``features.0`` to ``features.3`` (``ADAROUND_LAST``), where the sensitivity
  study finds the weight rounding error.
* :func:`adaround_quantized` (``adaround-q``) — AdaRound of every backbone convolution up
  to ``features.18`` on the inputs the quantized network gives it (the recipe's rounding
  of every earlier activation and weight, the learned codes included), against the float
  layer's output on the float input (AdaRound's asymmetric reconstruction); the codes are
  written back as by :func:`adaround`. Measured worse than the default at the deep cuts
  on the calibration set (docs/int8-log.md, "AdaRound on the quantized network's inputs").
* :func:`correct_bias` — empirical bias correction: each convolution's expected output
  error from its rounded weights, ``(W_q - W) E[x]`` with E[x] the input channel means on
  the calibration set, is subtracted from its bias.

All of them read the calibration frames only.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

K_MAX = 16.0  # largest range-equalization gain
HEADROOM = 1.25  # margin over the calibration maximum left for unseen content
SAMPLES_PER_LAYER = 8192  # input positions per layer kept for AdaRound
ADAROUND_ITERS = 600
ADAROUND_LAST = 3  # up to features.3: where the sensitivity study finds the weight rounding error
ADAROUND_Q_SAMPLES = 4096  # input positions per layer for adaround-q (every layer to features.18)
ADAROUND_Q_ITERS = 300


def backbone_convs(net: nn.Module, last: int = 18) -> list[tuple[str, nn.Module]]:
    """(name, ConvAct) of the backbone's convolutions up to ``features.<last>``, in order."""
    from temposplit.model.ssd import ConvAct

    out = []
    for k, block in enumerate(net.features):
        if k > last:
            break
        if isinstance(block, ConvAct):
            out.append((f"features.{k}", block))
            continue
        for part in ("expand", "depthwise", "project"):
            mod = getattr(block, part)
            if isinstance(mod, ConvAct):
                out.append((f"features.{k}.{part}", mod))
    return out


def weight_grid(w: torch.Tensor) -> torch.Tensor:
    """The per-channel scale of the int8 recipe's weights: ``max |w| / 127.5`` (O, 1, 1, 1)."""
    amax = w.abs().flatten(1).amax(1).clamp(min=1e-12)
    return (amax / 127.5).reshape(-1, 1, 1, 1)


def round_weights(w: torch.Tensor) -> torch.Tensor:
    """Round to nearest on the recipe's grid (codes -128..127), in float32 as the int8
    network rounds its float32 weights; returned in ``w``'s dtype."""
    w32 = w.float()
    s = weight_grid(w32)
    return (torch.clamp(torch.round(w32 / s), -128, 127) * s).to(w.dtype)


def network_input(detector, net: nn.Module, frames) -> torch.Tensor:
    """The preprocessed frames in the dtype of ``net``'s weights (a recipe computes in
    float64: :data:`temposplit.model.quantize.CALIBRATION_DTYPE`)."""
    return detector.preprocess(frames).tensor.to(next(net.parameters()).dtype)


def _run_hooked(detector, net, frames, hooks, batch_size: int) -> None:
    """Run the float network over the frames in batches, then remove the forward hooks
    that collect what its caller measures (also when the run fails)."""
    try:
        for s in range(0, len(frames), batch_size):
            net(network_input(detector, net, frames[s : s + batch_size]))
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def _collect(detector, net, frames, convs, want: str, batch_size: int = 8, seed: int = 0):
    """Per conv: ``max`` (largest pre-activation per output channel), ``mean`` (input channel
    means), ``amax`` (largest output per channel, after the activation) or ``patches``
    (sampled unfolded input patches, and the input's padding applied)."""
    gen = torch.Generator().manual_seed(seed)
    stats: dict[str, dict] = {name: {} for name, _ in convs}
    hooks = []
    per_frame = max(1, SAMPLES_PER_LAYER // max(1, len(frames)))

    def hook(name, mod):
        def fn(m, inputs, z):
            st = stats[name]
            x = inputs[0]
            if want == "max":
                v = z.transpose(0, 1).flatten(1).amax(1)
                st["max"] = v if "max" not in st else torch.maximum(st["max"], v)
            elif want == "mean":
                v = x.transpose(0, 1).flatten(1).sum(1)
                st["sum"] = v if "sum" not in st else st["sum"] + v
                st["n"] = st.get("n", 0) + x.numel() // x.shape[1]
            elif want == "patches":
                conv = mod.conv
                cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # (N, C*k*k, L)
                n, _, length = cols.shape
                idx = torch.randint(0, length, (n, per_frame), generator=gen)
                picked = torch.gather(cols, 2, idx[:, None, :].expand(-1, cols.shape[1], -1))
                st.setdefault("patches", []).append(picked.permute(0, 2, 1).reshape(-1, cols.shape[1]))

        return fn

    for name, mod in convs:
        hooks.append(mod.conv.register_forward_hook(hook(name, mod)))
    _run_hooked(detector, net, frames, hooks, batch_size)
    return stats


def _pairs(net):
    """(producer, depthwise, projection) ConvActs of the backbone: features.0 feeds
    features.1's depthwise; each expansion feeds its block's depthwise."""
    blocks = list(net.features)
    out = [(blocks[0], blocks[1].depthwise, blocks[1].project)]
    for block in blocks[2:18]:
        out.append((block.expand, block.depthwise, block.project))
    return out


@torch.no_grad()
def equalize_ranges(detector, net, frames) -> dict:
    """Range equalization of ReLU6 producers into depthwise convolutions (see the module)."""
    # features.14's expansion output is a tensor M2 reads (the first head, a cut): left alone.
    pairs = [pair for pair in _pairs(net) if pair[0] is not net.features[14].expand]
    producers = [(f"p{i}", p) for i, (p, _, _) in enumerate(pairs)]
    stats = _collect(detector, net, frames, producers, "max")
    gains = []
    for (name, prod), (_, dw, _) in zip(producers, pairs, strict=True):
        m = stats[name]["max"]
        # A channel that never turns on (m_i <= 0) or already reaches 6 keeps k_i = 1.
        live = (m > 0) & (m < 6.0)
        k = torch.where(live, 6.0 / (HEADROOM * m.clamp(min=6.0 / K_MAX / HEADROOM)), torch.ones_like(m))
        k = k.clamp(min=1.0, max=K_MAX)
        prod.conv.weight.mul_(k.reshape(-1, 1, 1, 1))
        prod.conv.bias.mul_(k)
        dw.conv.weight.div_(k.reshape(-1, 1, 1, 1))
        gains.append(float(k.mean()))
    return {"mean_gain": gains}


@torch.no_grad()
def equalize_depthwise_project(detector, net, frames) -> dict:
    """Cross-layer equalization of depthwise -> projection pairs, ReLU6-aware (see the module)."""
    dws = [(f"d{i}", dw) for i, (_, dw, _) in enumerate(_pairs(net))]
    stats = _collect(detector, net, frames, dws, "max")
    out = []
    for (name, dw), (_, _, proj) in zip(dws, _pairs(net), strict=True):
        z = stats[name]["max"]  # largest pre-activation per channel
        a = z.clamp(min=1e-6, max=6.0)  # largest activation
        r = proj.conv.weight.abs().amax(dim=(0, 2, 3)).clamp(min=1e-12)  # per input column
        clipping = z >= 6.0
        lam = float(torch.median(a / r))
        s = torch.sqrt(a / (lam * r))
        # ReLU6 still commutes: a clipping channel keeps s = 1; another may not exceed 6.
        s = torch.where(clipping, torch.ones_like(s), torch.maximum(s, a / 6.0))
        s = s.clamp(min=1.0 / K_MAX, max=K_MAX)
        dw.conv.weight.div_(s.reshape(-1, 1, 1, 1))
        dw.conv.bias.div_(s)
        proj.conv.weight.mul_(s.reshape(1, -1, 1, 1))
        out.append(float(s.log().abs().mean().exp()))
    return {"mean_factor": out}


def residual_streams(net) -> list[dict]:
    """The backbone's residual streams in order: ``blocks`` (the block indices whose
    projections write it; all but the first add their input), ``readers`` (the 1x1
    ConvActs that read it: the next blocks' expansions, or ``features.18``), ``last`` (the
    stage whose output is the stream's last tensor)."""
    from temposplit.model.ssd import ConvAct, InvertedResidual

    feats = list(net.features)
    streams = []
    k = 1
    while k < len(feats) and isinstance(feats[k], InvertedResidual):
        blocks = [k]
        while k + 1 < len(feats) and isinstance(feats[k + 1], InvertedResidual) and feats[k + 1].use_residual:
            k += 1
            blocks.append(k)
        after = feats[k + 1] if k + 1 < len(feats) else None
        readers = [feats[b].expand for b in blocks[1:]]
        if isinstance(after, InvertedResidual):
            readers.append(after.expand)
        elif isinstance(after, ConvAct):
            readers.append(after)
        assert all(isinstance(r, ConvAct) and r.conv.kernel_size == (1, 1) for r in readers)
        streams.append({"blocks": blocks, "readers": readers, "last": f"features.{k}"})
        k += 1
    return streams


@torch.no_grad()
def _stream_ranges(detector, net, frames, streams, batch_size: int = 8):
    """Per stream, per tensor (each projection's output, each add's output): the channels'
    smallest and largest values on the frames, (lo (C,), hi (C,))."""
    ranges: dict[tuple[int, str], list] = {}
    hooks = []

    def hook(key):
        def fn(m, inputs, out):
            lo = out.transpose(0, 1).flatten(1).amin(1)
            hi = out.transpose(0, 1).flatten(1).amax(1)
            if key in ranges:
                lo, hi = torch.minimum(ranges[key][0], lo), torch.maximum(ranges[key][1], hi)
            ranges[key] = [lo, hi]

        return fn

    for i, stream in enumerate(streams):
        for b in stream["blocks"]:
            block = net.features[b]
            hooks.append(block.project.register_forward_hook(hook((i, f"features.{b}.project"))))
            if block.use_residual:
                # FloatFunctional.add passes its sum through activation_post_process (an identity in float).
                hooks.append(
                    block.skip_add.activation_post_process.register_forward_hook(hook((i, f"features.{b}.add")))
                )
    _run_hooked(detector, net, frames, hooks, batch_size)
    return ranges


@torch.no_grad()
def equalize_streams(detector, net, frames, at_cuts: bool = False) -> dict:
    """Range equalization of the residual streams (see the module). Streams whose last
    tensor is a cut tensor of the detector are left alone unless ``at_cuts``; the gains
    applied are kept in ``net.stream_gains`` (the stream's last stage -> k (C,))."""
    cut_stages = {c.stage for c in detector.cuts}
    streams = [s for s in residual_streams(net) if at_cuts or s["last"] not in cut_stages]
    ranges = _stream_ranges(detector, net, frames, streams)
    gains = {}
    report = {}
    for i, stream in enumerate(streams):
        k = None
        for (j, _), (lo, hi) in ranges.items():
            if j != i:
                continue
            lo_t, hi_t = float(lo.min()), float(hi.max())
            inf = torch.full_like(hi, math.inf)
            g = torch.minimum(
                torch.where(hi > 0, hi_t / hi.clamp(min=1e-12), inf),
                torch.where(lo < 0, lo_t / lo.clamp(max=-1e-12), inf),
            )
            k = g if k is None else torch.minimum(k, g)
        k = torch.where(torch.isfinite(k), k, torch.ones_like(k)).clamp(min=1.0, max=K_MAX)
        for b in stream["blocks"]:
            proj = net.features[b].project.conv
            proj.weight.mul_(k.reshape(-1, 1, 1, 1))
            proj.bias.mul_(k)
        for reader in stream["readers"]:
            reader.conv.weight.div_(k.reshape(1, -1, 1, 1))
        gains[stream["last"]] = k.clone()
        report[stream["last"]] = round(float(k.log().mean().exp()), 3)
    net.stream_gains = gains
    return {"geo_mean_gain": report}


def _h(v, zeta=1.1, gamma=-0.1):
    return torch.clamp(torch.sigmoid(v) * (zeta - gamma) + gamma, 0, 1)


def _adaround_layer(
    w: torch.Tensor,
    x: torch.Tensor,
    depthwise: bool,
    iters: int,
    seed: int,
    target: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    act: bool = False,
) -> torch.Tensor:
    """Learned rounding of one layer's weights (O, I, kh, kw) on input patches ``x``
    (samples, I*kh*kw); returns the float weights on the grid. The reconstruction target
    is the float weights' output on ``x`` (linear, no bias), or ``target`` (samples, O):
    then the rounded layer's output is ``x`` times the weights plus ``bias``, through
    ReLU6 if ``act`` (the asymmetric reconstruction of :func:`adaround_quantized`)."""
    torch.manual_seed(seed)
    s = weight_grid(w)
    w_floor = torch.floor(w / s)
    rest = w / s - w_floor
    keep = (w.abs() == w.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1)).flatten(1)  # the scale-setting weights
    # V initialised so that h(V) equals the fractional part: the start is the float weights.
    v = torch.log((rest - -0.1) / (1.1 - rest).clamp(min=1e-6)).clamp(-8, 8).flatten(1).clone().requires_grad_(True)
    wf = w.flatten(1)
    fl = w_floor.flatten(1)
    sf = s.flatten(1)
    if depthwise:  # x: (samples, C*taps) -> per channel (samples, C, taps)
        xx = x.reshape(x.shape[0], w.shape[0], -1)

        def out(weights):
            return torch.einsum("sct,ct->sc", xx, weights)
    else:

        def out(weights):
            return x @ weights.t()

    if target is None:
        target = out(wf)
        layer = out
    else:

        def layer(weights):
            y = out(weights) + bias
            return y.clamp(0.0, 6.0) if act else y

    opt = torch.optim.Adam([v], lr=1e-2)
    norm = float(target.pow(2).mean()) + 1e-12
    for it in range(iters):
        beta = 20 - (20 - 2) * it / max(1, iters - 1)
        h = _h(v)
        wq = (fl + h) * sf
        rec = (layer(wq) - target).pow(2).mean() / norm
        reg = (1 - (2 * h - 1).abs().pow(beta)).sum() / h.numel()
        loss = rec + (0.0 if it < iters // 5 else 0.01) * reg
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        # -127..127: a code of -128 would exceed max |w| (127.5 steps) and move the scale.
        codes = torch.clamp(fl + (_h(v) >= 0.5).float(), -127, 127)
        # The scale-setting weights keep their float value, so that the recipe's observer
        # finds the same max |w| and scale, and rounds every other weight to its code.
        return torch.where(keep, wf, codes * sf).reshape(w.shape)


def adaround(
    detector, net, frames, last: int = ADAROUND_LAST, iters: int = ADAROUND_ITERS, log=None, wide=frozenset()
) -> dict:
    """AdaRound of the backbone's convolutions up to ``features.<last>`` (see the module);
    the int16-weight ones (``wide``) round to nearest on their own grid and are left out."""
    convs = [(n, m) for n, m in backbone_convs(net, last) if n not in wide]
    stats = _collect(detector, net, frames, convs, "patches")
    gains = {}
    for i, (name, mod) in enumerate(convs):
        x = torch.cat(stats[name].pop("patches"))
        w = mod.conv.weight.detach()
        depthwise = mod.conv.groups > 1
        new = _adaround_layer(w, x, depthwise, iters, seed=i)
        with torch.no_grad():
            if depthwise:
                xx = x.reshape(x.shape[0], w.shape[0], -1)
                err_near = (torch.einsum("sct,ct->sc", xx, (round_weights(w) - w).flatten(1))).pow(2).mean()
                err_ada = (torch.einsum("sct,ct->sc", xx, (new - w).flatten(1))).pow(2).mean()
            else:
                err_near = (x @ (round_weights(w) - w).flatten(1).t()).pow(2).mean()
                err_ada = (x @ (new - w).flatten(1).t()).pow(2).mean()
            mod.conv.weight.copy_(new)
        gains[name] = round(10 * math.log10(float(err_near) / max(float(err_ada), 1e-30)), 2)
        if log:
            log(f"adaround {name}: output error {gains[name]:+.2f} dB below round-to-nearest")
    return {"gain_db": gains}


class _Stop(Exception):
    """Raised by a hook once the layer's input is captured: the rest of the network is not run."""


@torch.no_grad()
def _layer_patches(detector, net, frames, conv, samples: int, seed: int, batch_size: int = 8) -> torch.Tensor:
    """Unfolded input patches of ``conv`` (a module of ``net``) at sampled positions,
    (samples, I*kh*kw); the same seed samples the same positions in any network of the
    same shapes. The network is run only up to the layer."""
    gen = torch.Generator().manual_seed(seed)
    per_frame = max(1, samples // max(1, len(frames)))
    got = []

    def fn(m, inputs):
        cols = F.unfold(inputs[0], m.kernel_size, padding=m.padding, stride=m.stride)  # (N, C*k*k, L)
        n, _, length = cols.shape
        idx = torch.randint(0, length, (n, per_frame), generator=gen)
        picked = torch.gather(cols, 2, idx[:, None, :].expand(-1, cols.shape[1], -1))
        got.append(picked.permute(0, 2, 1).reshape(-1, cols.shape[1]))
        raise _Stop

    h = conv.register_forward_pre_hook(fn)
    try:
        for s in range(0, len(frames), batch_size):
            try:
                net(network_input(detector, net, frames[s : s + batch_size]))
            except _Stop:
                pass
    finally:
        h.remove()
    return torch.cat(got)


def adaround_quantized(
    detector,
    net,
    frames,
    observer: str = "histogram",
    last: int = 18,
    iters: int = ADAROUND_Q_ITERS,
    samples: int = ADAROUND_Q_SAMPLES,
    log=None,
    wide=frozenset(),
) -> dict:
    """AdaRound of every backbone convolution up to ``features.<last>`` on the inputs the
    quantized network gives it (``adaround-q``; AdaRound's asymmetric reconstruction).

    Layer by layer in network order: the input patches come from the network as the
    recipe rounds it so far (:class:`temposplit.model.sensitivity.FakeQuantSSD`: the
    input and every activation and residual add quantized per tensor with ``observer``'s
    ranges from the calibration frames, every weight on its grid: int8 round-to-nearest,
    int16 for ``wide``, the learned codes for the layers already done); the target is the
    float network's output of that layer (bias and ReLU6 included) on the float input.
    The learned codes are written back as in :func:`adaround` (float weights on the grid
    points, the scale-setting weights kept), so the recipe's rounding returns them. The
    ``wide`` layers are rounded on their int16 grid and not learned."""
    from temposplit.model.sensitivity import FakeQuantSSD, weight_fake_quant

    convs = [(n, m) for n, m in backbone_convs(net, last) if n not in wide]
    float_net = copy.deepcopy(net).eval()
    float_convs = dict(backbone_convs(float_net, last))
    twin = copy.copy(detector)
    twin.net = net
    sim = FakeQuantSSD(twin, observer)
    sim.set_wide(sorted(wide))
    sim.calibrate(frames)
    everything = [p.name for p in sim.points]
    gains = {}
    try:
        for i, (name, mod) in enumerate(convs):
            sim.set_enabled(everything)  # the quantized weights (the learned ones so far) into net
            xq = _layer_patches(twin, net, frames, mod.conv, samples, seed=i)
            sim.restore()
            xf = _layer_patches(twin, float_net, frames, float_convs[name].conv, samples, seed=i)
            w = sim.float_weights[f"{name}:w"]
            b = mod.conv.bias.detach()
            act = isinstance(mod.act, nn.ReLU6)
            depthwise = mod.conv.groups > 1

            def out(x, weights, depthwise=depthwise, b=b, act=act):
                if depthwise:
                    y = torch.einsum("sct,ct->sc", x.reshape(x.shape[0], weights.shape[0], -1), weights.flatten(1))
                else:
                    y = x @ weights.flatten(1).t()
                y = y + b
                return y.clamp(0.0, 6.0) if act else y

            with torch.no_grad():
                target = out(xf, w)
            new = _adaround_layer(w, xq, depthwise, iters, seed=i, target=target, bias=b, act=act)
            with torch.no_grad():
                err_near = float((out(xq, weight_fake_quant(w)) - target).pow(2).mean())
                err_ada = float((out(xq, weight_fake_quant(new)) - target).pow(2).mean())
            sim.float_weights[f"{name}:w"] = new.clone()
            sim.quant_weights[f"{name}:w"] = weight_fake_quant(new)
            gains[name] = round(10 * math.log10(err_near / max(err_ada, 1e-30)), 2)
            if log:
                log(f"adaround-q {name}: output error {gains[name]:+.2f} dB below round-to-nearest")
    finally:
        sim.restore()  # net: the float weights, the learned layers' on their grid points
    return {"gain_db": gains}


@torch.no_grad()
def correct_bias(detector, net, frames, last: int = 18, wide=frozenset()) -> dict:
    """Empirical bias correction of the backbone's convolutions (see the module); the
    convolutions named in ``wide`` keep int16 weights, whose rounding is corrected instead."""
    from temposplit.model.wide import round_wide

    convs = backbone_convs(net, last)
    stats = _collect(detector, net, frames, convs, "mean")
    shifts = {}
    for name, mod in convs:
        mean = stats[name]["sum"] / stats[name]["n"]  # (I,)
        w = mod.conv.weight
        dw = (round_wide(w) if name in wide else round_weights(w)) - w
        if mod.conv.groups > 1:
            err = dw.flatten(1).sum(1) * mean
        else:
            err = (dw.sum(dim=(2, 3)) * mean[None, :]).sum(1)
        mod.conv.bias.sub_(err)
        shifts[name] = float(err.abs().max())
    return {"max_shift": shifts}


def apply(detector, net, frames, methods, log=None, wide=frozenset(), observer: str = "histogram") -> dict:
    """Apply the named methods in the fixed order range equalization, CLE, stream
    equalization, AdaRound, AdaRound on the quantized inputs, bias correction (each
    measured on the network the previous ones produced). ``wide``: the convolutions that
    will keep int16 weights (:mod:`temposplit.model.wide`); ``observer``: the recipe's
    activation observer (``adaround-q`` quantizes the activations with it)."""
    report = {}
    order = ("equalize", "cle", "streams", "adaround", "adaround-q", "bias")
    for m in order:
        if m not in methods:
            continue
        if log:
            log(f"ptq: {m}")
        if m == "equalize":
            report[m] = equalize_ranges(detector, net, frames)
        elif m == "cle":
            report[m] = equalize_depthwise_project(detector, net, frames)
        elif m == "streams":
            report[m] = equalize_streams(detector, net, frames)
        elif m == "adaround":
            report[m] = adaround(detector, net, frames, log=log, wide=wide)
        elif m == "adaround-q":
            report[m] = adaround_quantized(detector, net, frames, observer=observer, log=log, wide=wide)
        else:
            report[m] = correct_bias(detector, net, frames, wide=wide)
    return report


def check_equivalence(detector, net_a, net_b, frames) -> float:
    """Largest relative difference of the two networks' raw outputs on frames (float)."""
    with torch.no_grad():
        a = torch.cat([t.flatten() for t in net_a(network_input(detector, net_a, frames))])
        b = torch.cat([t.flatten() for t in net_b(network_input(detector, net_b, frames))])
    return float((a - b).abs().max() / a.abs().max())


__all__ = [
    "adaround",
    "adaround_quantized",
    "apply",
    "check_equivalence",
    "correct_bias",
    "equalize_depthwise_project",
    "equalize_ranges",
    "equalize_streams",
    "residual_streams",
]
