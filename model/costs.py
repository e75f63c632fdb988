"""What each cut costs: tensors crossing it, bytes per frame at 8 bits, M1's and M2's
parameters and multiply-accumulates (``temposplit models --json``).

MACs are counted with forward hooks over one pass at the given input size: convolutions
(``out elements x in_channels / groups x kh x kw``) and linear layers; pooling,
activations, NMS and RoI alignment are not counted. Where every counted layer's size
follows from the input size alone (the SSD; RetinaNet, whose head is dense over the FPN
levels), the pass runs on PyTorch's meta device: shapes only, no activations, so memory
does not grow with the input size. The two Faster R-CNNs' M2 includes the box head over
the RPN's proposals of a real pass (up to 1000; how many survive NMS depends on the
values), so theirs is a float pass over zeros, whose memory grows with the area:
``fasterrcnn-resnet50-fpn`` is refused above ``MAX_REAL_PASS_AREA`` (2048x2048 pixels,
3.6 GB peak there; fasterrcnn-mobilenet-v3-large-fpn peaks at 4.0 GB at 4096x4096, the
largest side allowed, and needs no bound).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from temposplit.errors import ConfigError
from temposplit.model import cuts as cut_table

# Models whose count needs a real float pass (the box head's rows are the RPN's proposals
# that survive NMS), and the input area above which that pass is refused (its peak grows
# with the area: fasterrcnn-resnet50-fpn took 3.6 GB at 2048x2048; a float pass over the
# SSD took 6.3 GB at 4096x4096). The others are counted on the meta device at any allowed size.
REAL_PASS = (cut_table.FRCNN_R50, cut_table.FRCNN_MBV3)
MAX_REAL_PASS_AREA = {cut_table.FRCNN_R50: 2048 * 2048}


def check_input_size(names, input_size: tuple[int, int]) -> None:
    """A ConfigError (one line) where a model among ``names`` (one name or several) cannot be
    counted at ``input_size`` within bounded memory; nothing is loaded or run."""
    names = [names] if isinstance(names, str) else list(names)
    h, w = (int(v) for v in input_size)
    over = [n for n in names if n in MAX_REAL_PASS_AREA and h * w > MAX_REAL_PASS_AREA[n]]
    if over:
        bound = min(MAX_REAL_PASS_AREA[n] for n in over)
        raise ConfigError(
            f"input size {h}x{w} ({h * w} pixels) is too large for {', '.join(over)}: its MACs are counted over"
            f" a real pass (the box head runs on the RPN's proposals), at most {bound} pixels"
            f" ({math.isqrt(bound)}x{math.isqrt(bound)}); give a smaller --input-size, or --model for another model"
        )


def _on_meta(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose parameters and buffers are meta tensors (no weights copied)."""
    memo = {}
    for t in net.parameters():
        memo[id(t)] = nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=False)
    for t in net.buffers():
        memo[id(t)] = torch.empty_like(t, device="meta")
    return copy.deepcopy(net, memo)


def _stage_of(module_name: str, stages: list[str], prefix: str) -> str | None:
    """The backbone stage a module belongs to ('features.14.expand' wins over 'features.14')."""
    if not module_name.startswith(prefix):
        return None
    rest = module_name[len(prefix) :]
    best = None
    for s in stages:
        key = s if prefix == "" else (s.split(".", 1)[1] if s.startswith("features.") else s)
        if rest == key or rest.startswith(key + "."):
            if best is None or len(key) > len(best[1]):
                best = (s, key)
    return best[0] if best else None


def _mbv3_key(stage: str) -> str:
    return stage.split(".", 1)[1]


@torch.no_grad()
def measure(detector, input_size: tuple[int, int]) -> dict:
    """Per-stage parameters and MACs of a detector, and the totals, at an input size."""
    info = detector.info
    net = detector.net
    input_size = tuple(int(v) for v in input_size)
    check_input_size(detector.name, input_size)
    real = detector.name in REAL_PASS
    run_net = net if real else _on_meta(net)
    if detector.name == cut_table.SSD:
        prefix = ""
        names = {s: s for s in info.stages}
    else:
        prefix = "backbone.body."
        names = {s: (_mbv3_key(s) if s.startswith("features.") else s) for s in info.stages}
    stage_of = {}
    for mname, _module in net.named_modules():
        if prefix == "":
            st = _stage_of(mname, list(info.stages), "")
        else:
            st = None
            if mname.startswith(prefix):
                rest = mname[len(prefix) :]
                for s, key in names.items():
                    if rest == key or rest.startswith(key + "."):
                        st = s
        stage_of[mname] = st
    macs: dict[str | None, int] = {}
    hooks = []

    def hook(name):
        def fn(module, inputs, output):
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                n = output.numel() * (module.in_channels // module.groups) * k
            else:
                n = output.numel() * module.in_features
            macs[stage_of[name]] = macs.get(stage_of[name], 0) + int(n)

        return fn

    for mname, module in run_net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(mname)))
    try:
        x = torch.zeros(1, 3, *input_size, device="cpu" if real else "meta")
        if detector.name == cut_table.SSD:
            run_net(x)
        elif not real:  # RetinaNet: backbone (body + FPN) and the dense head; its postprocessing counts nothing
            run_net.head(list(run_net.backbone(x).values()))
        else:
            meta_sizes = [tuple(input_size)]
            from temposplit.model.split import Batch, BatchMeta

            detector.forward(Batch(x, BatchMeta(tuple(input_size), meta_sizes, meta_sizes)))
    finally:
        for h in hooks:
            h.remove()
    params: dict[str | None, int] = {}
    for mname, p in net.named_parameters():
        owner = mname.rsplit(".", 1)[0]
        st = stage_of.get(owner)
        params[st] = params.get(st, 0) + p.numel()
    return {"macs": macs, "params": params}


def report(detector, input_size: tuple[int, int] | None = None) -> dict:
    """The ``models --json`` entry of one model: one record per cut."""
    info = detector.info
    input_size = tuple(input_size or info.input_size)
    m = measure(detector, input_size)
    total_macs = sum(m["macs"].values())
    total_params = sum(m["params"].values())
    records = []
    for cut in info.cuts:
        k = info.stages.index(cut.stage)
        m1_stages = info.stages[: k + 1]
        m1_macs = sum(m["macs"].get(s, 0) for s in m1_stages)
        m1_params = sum(m["params"].get(s, 0) for s in m1_stages)
        shapes = cut.shapes(input_size)
        tensors = [
            {"name": t.name, "shape": list(s), "bytes": s[0] * s[1] * s[2]}
            for t, s in zip(cut.crossing, shapes, strict=False)
        ]
        records.append(
            {
                "cut": cut.name,
                "aliases": list(cut.aliases),
                "description": cut.description,
                "default": cut.name == info.default_cut,
                "tensors": tensors,
                "cut_tensor": cut.cut_tensor.name,
                "bytes_per_frame_cut_tensor": tensors[-1]["bytes"],
                "bytes_per_frame_all": sum(t["bytes"] for t in tensors),
                "m1": {"params": m1_params, "macs": m1_macs},
                "m2": {"params": total_params - m1_params, "macs": total_macs - m1_macs},
            }
        )
    return {
        "model": detector.name,
        "input_size": list(input_size),
        "params": total_params,
        "macs": total_macs,
        "cuts": records,
    }
