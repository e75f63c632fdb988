"""How close rate control comes to its target: ``temposplit bench rate FEATURES.npz ... [--json]``.

For each feature file (``temposplit features``: a clip's cut tensors) and each target rate,
the clip is coded with rate control (a preset's structure, coder and residuals, N and the
group size chosen per group: docs/bitstream.md, section 4) and three ratios of the bytes
of packets to the target's bytes are printed:

- ``first_group``: the first group of the whole clip's stream, the controller with nothing
  measured yet (its estimates and priors alone);
- ``short``: a clip of the first ``--short`` frames (default 16) coded on its own, its
  length known (what a short stream gets);
- ``whole``: the whole clip, the leaky bucket's long-run aim.

1.00 is on target; a ratio under 1 spends less than it may. A target below what the
ladder's cheapest point costs on the clip is out of reach (the ratios say by how much).
This is the measurement behind docs/bitstream.md, "Measured rate control".
"""

from __future__ import annotations

import json
import sys

DEFAULT_TARGETS = (0.03, 0.05, 0.1, 0.2, 0.3)  # MB/s at 30 frames/s: 1,000-10,000 bytes a frame
DEFAULT_SHORT = 16
MAX_TARGETS = 64


def register_bench(sub) -> None:
    p = sub.add_parser("rate", help="rate control's bytes against its target on feature files (temposplit features)")
    p.add_argument("features", nargs="+", help=".npz feature files (temposplit features CLIP OUT.npz)")
    p.add_argument(
        "--targets",
        type=_targets,
        default=list(DEFAULT_TARGETS),
        help="target rates in MB/s at --fps, comma-separated (default 0.03,0.05,0.1,0.2,0.3)",
    )
    p.add_argument("--fps", type=_positive_real, default=30.0, help="frames per second of the target (default 30)")
    p.add_argument("--short", type=_short, default=DEFAULT_SHORT, help="frames of the short clip, 1..1000 (default 16)")
    p.add_argument(
        "--preset",
        choices=["recommended", "thesis"],
        default="recommended",
        help="the structure, coder and residuals rate control works with (default recommended)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per file and target per line")
    p.set_defaults(handler=_bench)


def _targets(text: str) -> list[float]:
    import argparse
    import math

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or len(values) > MAX_TARGETS or any(not 0 < v < math.inf for v in values):
        raise argparse.ArgumentTypeError(
            f"expected 1..{MAX_TARGETS} positive rates in MB/s such as 0.05,0.1, not {text!r}"
        )
    return values


def _positive_real(text: str) -> float:
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0 < v < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
    return v


def _short(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v <= 1000:
        raise argparse.ArgumentTypeError(f"expected a frame count in 1..1000, not {text!r}")
    return v


def _config(clip, preset: str, target: float, fps: float):
    from temposplit.codec.encoder import PRESETS, CodecConfig, TensorSpec

    tensors = [
        TensorSpec(n, tuple(c.shape[1:]), s, z, b if b is not None else 4)
        for n, c, s, z, b in zip(clip.names, clip.codes, clip.scales, clip.zero_points, clip.blocks, strict=True)
    ]
    settings = {k: v for k, v in PRESETS[preset].items() if k != "n_bits"}  # N is the controller's
    return CodecConfig(tensors=tensors, rate_target=target, fps=fps, **settings)


def _frames(clip, n: int):
    """The clip's first ``n`` frames, a list of tensors each, read from the file as they are
    coded (a lazily loaded clip holds one frame at a time)."""
    readers = [c.frames() if hasattr(c, "frames") else iter(c) for c in clip.codes]
    for _ in range(n):
        yield [next(r) for r in readers]


def _run(clip, config, frames: int) -> tuple[list[int], int]:
    """Code the clip's first ``frames`` frames: each frame's packet bytes (by index) and the
    index the second group starts at (``frames`` when there is one group)."""
    from temposplit.codec.encoder import Encoder

    enc = Encoder(config)
    enc.set_total_frames(frames)
    starts = []
    for frame in _frames(clip, frames):
        enc.push(frame)
        if enc.group is not None and (not starts or starts[-1] != enc.group.start):
            starts.append(enc.group.start)
    enc.flush()
    sizes = [0] * frames
    for f in enc.frames:
        sizes[f.index] = f.packet_bytes
    return sizes, starts[1] if len(starts) > 1 else frames


def measure(path: str, targets, fps: float, short: int, preset: str):
    """The rows of one feature file: a dict per target."""
    from temposplit.codec import features
    from temposplit.codec.errors import ConfigurationError

    clip = features.load(path, lazy=True)
    if clip.n_bits is not None:
        raise ConfigurationError(f"{path}: a decoded file (N-bit codes): rate control codes quint8 features")
    rows = []
    for target in targets:
        config = _config(clip, preset, target, fps)
        budget = target * 1e6 / fps  # bytes a frame
        sizes, second = _run(clip, config, clip.frames)
        n_short = min(short, clip.frames)
        short_sizes, _ = _run(clip, config, n_short)
        rows.append(
            {
                "features": str(path),
                "frames": clip.frames,
                "target_mb_s": target,
                "fps": fps,
                "budget_bytes": budget,
                "first_group_frames": second,
                "first_group": sum(sizes[:second]) / (budget * second),
                "short_frames": n_short,
                "short": sum(short_sizes) / (budget * n_short),
                "whole": sum(sizes) / (budget * clip.frames),
            }
        )
    return rows


def _bench(args) -> int:
    if not args.json:
        print(
            f"{'features':<32} {'frames':>6} {'MB/s':>6} {'first group':>12} {f'{args.short} frames':>10} {'whole':>6}"
        )
    for path in args.features:
        for row in measure(path, args.targets, args.fps, args.short, args.preset):
            if args.json:
                print(json.dumps(row))
            else:
                name = str(path)[-32:]
                print(
                    f"{name:<32} {row['frames']:>6} {row['target_mb_s']:>6g} "
                    f"{row['first_group']:>9.2f}x/{row['first_group_frames']:<2d}"
                    f"{row['short']:>9.2f}x {row['whole']:>5.2f}x"
                )
            sys.stdout.flush()
    return 0
