"""``temposplit bench fabric``: the fabric's throughput table (cycle model, 100 MHz).

Imports only :mod:`argparse` at load time; the model is imported by the handler.
"""

from __future__ import annotations

import argparse


def register_bench(bench_subparsers) -> None:
    p = bench_subparsers.add_parser(
        "fabric",
        help="fabric throughput: cycles per frame for every cut, frames/s at 100 MHz, DDR traffic",
        description="Cycles per frame of the fabric for every cut shape (the on-chip design's counts are "
        "checked against the Verilated RTL; the ResNet-50 maps use the band design, BAND_MOTION), frames/s "
        "at 100 MHz and the DMA traffic against the PYNQ-Z2's limits.",
    )
    p.add_argument("--search", type=int, default=7, choices=(3, 7, 15), help="TSS search range p")
    p.add_argument("--n-bits", type=int, default=4, help="N, bits per anchor code (2..8)")
    p.add_argument("--json", action="store_true", help="one JSON line per cut instead of the table")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from temposplit.codec.errors import CodecError
    from temposplit.codec.quantize import check_bits
    from temposplit.errors import ConfigError
    from temposplit.hw import cyclemodel

    try:  # N outside 2..8: one line, not figures for a code width the fabric has not
        check_bits(args.n_bits)
    except CodecError as exc:
        raise ConfigError(f"--n-bits: {exc}") from None
    rows = cyclemodel.table(search=args.search, n_bits=args.n_bits)
    if args.json:
        for r in rows:
            print(json.dumps({"bench": "fabric", **asdict(r)}))
        return 0
    print(cyclemodel.format_table(rows, args.search))
    targets = [r for r in rows if r.name.startswith("ssd") or r.shape == (25, 34, 2048)]
    key_fps = {r.name: cyclemodel.CLOCK_HZ / r.key_cycles for r in targets}

    def at_least(v, floor=30):  # None: predicted frames in software, which meets no fabric target
        return v is not None and v >= floor

    ok = all(
        at_least(r.group_fps) and at_least(r.pred_fps) and r.anchor_fps >= 30 and key_fps[r.name] >= 30 for r in targets
    )
    print(
        f"targets (>= 30 frames/s at 25x34x2048 and every SSD cut, KEY and other anchors and predicted frames), "
        f"Huffman: "
        f"{'met' if ok else 'NOT met'} (SSD cuts: the implemented on-chip design, counts checked against "
        f"the RTL; ResNet-50 cuts: the band design (BAND_MOTION), its counts checked against the RTL on "
        f"small maps, at the DMA's rate)"
    )
    fps = {"KEY": "ctx_key_fps", "temporal anchors": "ctx_anchor_fps", "predicted frames": "ctx_pred_fps"}
    slow = [
        f"{r.name} {what} {cyclemodel.fps_text(getattr(r, key))}"
        for r in targets
        for what, key in fps.items()
        if not at_least(getattr(r, key))
    ]
    print(
        "targets with the coder ctx (the recommended preset: KEY and temporal anchors, predicted frames): "
        + ("met" if not slow else "NOT met: " + ", ".join(slow))
    )
    for r in targets:
        if r.ctx_slices > 1:
            vals = [getattr(r, key) for key in fps.values()]
            print(
                f"{r.name} ({'x'.join(map(str, r.shape))}) with ctx, S = {r.ctx_slices} slices on E = "
                f"{r.ctx_engines} engines of {r.ctx_lanes} lanes, a stream word a cycle: "
                f"KEY {vals[0]:.1f}, temporal anchor {vals[1]:.1f}, "
                f"predicted {cyclemodel.fps_text(vals[2])} frames/s: "
                + ("all >= 30" if all(at_least(v) for v in vals) else "NOT all >= 30")
            )
    slow_keys = [r for r in targets if key_fps[r.name] < 30]
    slowest = min(targets, key=lambda r: key_fps[r.name])
    print(
        "KEY anchors (a HISTOGRAM pass, a stream word a cycle, before the ENCODE pass; one anchor in key_interval) "
        + (
            "under 30 frames/s: " + ", ".join(f"{r.name} {key_fps[r.name]:.1f}" for r in slow_keys)
            if slow_keys
            else f">= 30 frames/s at every target: the slowest {slowest.name} {key_fps[slowest.name]:.1f}"
        )
    )
    return 0
