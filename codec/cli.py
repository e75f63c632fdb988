"""``temposplit encode``, ``decode`` and ``bench codec``: the codec from the command line."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "encode", help="feature maps (.npz) -> stream", description="Encode a feature file into a stream."
    )
    p.add_argument("input", help=".npz feature file (docs/bitstream.md, Feature files)")
    p.add_argument("output", help="stream file to write")
    add_codec_options(p)
    p.add_argument(
        "--stats",
        action="store_true",
        help="also print the bytes of each kind of frame (KEY, anchor, predicted) and of each tensor",
    )
    p.set_defaults(handler=_encode)

    p = sub.add_parser(
        "decode", help="stream -> feature maps (.npz)", description="Decode a stream into a feature file."
    )
    p.add_argument("input", help="stream file")
    p.add_argument("output", help=".npz file to write")
    p.set_defaults(handler=_decode)


def register_bench(sub) -> None:
    p = sub.add_parser(
        "codec",
        help="codec speed at the ResNet-50 cut shapes (bi-3 + Huffman; the recommended preset with ctx) "
        "and at the SSD cuts",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per shape per line")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per shape (default: the fewest whole groups of at least 9 frames, so that anchors "
        "take their long-stream share: 9 for bi-3, 16 for uni-8)",
    )
    p.add_argument("--shapes", default="all", help="'all', 'small' (the two smaller shapes) or CxHxW[:B],...")
    p.add_argument("--no-ssd", action="store_true", help="leave out the rows of the SSD cuts")
    p.set_defaults(handler=_bench)


def add_codec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        choices=["recommended", "thesis"],
        default="recommended",
        help="starting point: 'recommended' (uni-8, chain, residual over 4 steps, ctx, N=5; the default) or 'thesis' "
        "(bi-3, no residual, huffman, N=4); the options below override it",
    )
    p.add_argument("--bits", "-n", type=int, default=None, help="N, bits per anchor code (2..8)")
    p.add_argument("--structure", default=None, help="intra, uni-G or bi-G")
    p.add_argument("--coder", default=None, help="raw, zvc, huffman, zrl or ctx (bitstream v2)")
    p.add_argument("--search-range", "-p", type=int, default=7, help="TSS search range: 3, 7 or 15 (default 7)")
    p.add_argument(
        "--block", "-B", type=int, default=None, help="block size for every tensor (default: the file's, else 4)"
    )
    p.add_argument("--per-channel", action="store_true", help="one vector per block and channel")
    p.add_argument(
        "--residual",
        choices=["threshold", "rd", "none"],
        default=None,
        help="code residuals of predicted blocks (or not)",
    )
    p.add_argument(
        "--residual-threshold",
        type=float,
        default=None,
        help="code a block whose mean |error| per active element exceeds this, in 8-bit steps "
        "(default: the preset's; 1.5 where it has none)",
    )
    p.add_argument("--lam", type=float, default=4.0, help="rate-distortion lambda for --residual rd")
    p.add_argument(
        "--dead-zone",
        type=float,
        default=0.0,
        help="drop residual values up to this size, in 8-bit steps (default 0: rebuild coded blocks exactly)",
    )
    p.add_argument(
        "--hysteresis",
        type=int,
        default=None,
        metavar="M",
        help="keep a predicted frame's code while its int8 value stays within the code's cell widened by M "
        "8-bit steps (residual modes; default: the preset's, 0 where it has none: fresh codes; "
        "docs/bitstream.md, section 5)",
    )
    p.add_argument(
        "--refine-vectors",
        action="store_true",
        default=None,
        help="give coded residual blocks the vector their residual is cheapest with (encoder only; "
        "same reconstruction; docs/bitstream.md, Measured compression of ctx)",
    )
    p.add_argument("--reference", choices=["anchor", "chain"], default=None, help="what predicted frames use")
    p.add_argument("--refresh", type=float, default=None, help="make a frame an anchor above this mean TSS cost")
    p.add_argument("--rate", type=float, default=None, help="target MB/s at --fps: rate control picks N and g")
    p.add_argument(
        "--fps", type=float, default=None, help="frame rate for rates (default 30; the edge's: its source's)"
    )
    p.add_argument("--table-policy", choices=["previous", "own"], default="previous")
    p.add_argument("--key-interval", type=int, default=16, help="anchors between self-contained KEY anchors")


DEFAULT_FPS = 30.0  # --fps where neither it nor a source gives a rate


def config_from_args(args, tensors):
    """A CodecConfig from a preset and the options given on the command line."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, ResidualConfig
    from temposplit.codec.errors import ConfigurationError

    kwargs = dict(PRESETS[getattr(args, "preset", None) or "recommended"])
    for option, field in (
        ("bits", "n_bits"),
        ("structure", "structure"),
        ("coder", "coder"),
        ("reference", "reference"),
    ):
        if getattr(args, option, None) is not None:
            kwargs[field] = getattr(args, option)
    hysteresis = getattr(args, "hysteresis", None)
    if args.residual == "none":
        kwargs["residual"] = None
    elif args.residual is not None or kwargs.get("residual") is not None:
        preset = kwargs.get("residual")
        mode = args.residual or preset.mode
        threshold = args.residual_threshold
        if threshold is None:
            threshold = preset.threshold if preset is not None else 1.5
        refine = getattr(args, "refine_vectors", None)
        if refine is None:
            refine = preset.refine_vectors if preset is not None else False
        if hysteresis is None:
            hysteresis = preset.hysteresis if preset is not None else 0
        kwargs["residual"] = ResidualConfig(
            mode=mode,
            threshold=threshold,
            lam=args.lam,
            dead_zone=args.dead_zone,
            refine_vectors=refine,
            hysteresis=hysteresis,
        )
    if hysteresis and kwargs.get("residual") is None:
        raise ConfigurationError("--hysteresis applies to a residual mode (--residual threshold or rd)")
    return CodecConfig(
        tensors=tensors,
        search_range=args.search_range,
        per_channel=args.per_channel,
        refresh_threshold=args.refresh,
        table_policy=args.table_policy,
        key_interval=args.key_interval,
        rate_target=args.rate,
        fps=DEFAULT_FPS if args.fps is None else args.fps,
        **kwargs,
    )


def _encode(args) -> int:
    from temposplit.codec.encoder import Encoder, TensorSpec
    from temposplit.codec.motion import check_block

    clip = _load_features(args.input)
    block = args.block
    if block is not None:
        check_block(block)  # 0 is an error, not "the default"
    tensors = [
        TensorSpec(n, tuple(c.shape[1:]), s, z, block or b or 4)
        for n, c, s, z, b in zip(clip.names, clip.codes, clip.scales, clip.zero_points, clip.blocks, strict=True)
    ]
    config = config_from_args(args, tensors)
    enc = Encoder(config)
    enc.set_total_frames(clip.frames)
    with open(args.output, "wb") as f:
        f.write(enc.header_bytes())
        for t in range(clip.frames):
            for p in enc.push(clip.frame(t)):
                f.write(p.to_bytes())
        for p in enc.flush():
            f.write(p.to_bytes())
    total = sum(e.packet_bytes for e in enc.frames)
    elements = sum(c[0].size for c in clip.codes)
    print(
        f"{clip.frames} frames, {total} bytes ({total / clip.frames:.0f} per frame, "
        f"{8 * total / (elements * clip.frames):.3f} bits per element, "
        f"{total / clip.frames * config.fps / 1e6:.3f} MB/s at {config.fps:g} fps) -> {args.output}"
    )
    if args.stats:
        for line in frame_stats(enc.frames, clip.names):
            print(line)
    return 0


def frame_stats(frames, names) -> list[str]:
    """A line per kind of frame: how many, their packets' bytes, and each tensor's section
    bytes per frame (what ``encode --stats`` prints)."""
    lines = []
    for kind in ("key", "anchor", "pred"):
        of_kind = [e for e in frames if e.kind == kind]
        if not of_kind:
            continue
        n = len(of_kind)
        total = sum(e.packet_bytes for e in of_kind)
        per_tensor = ", ".join(
            f"{name} {sum(e.tensor_bytes[i] for e in of_kind) / n:.0f}" for i, name in enumerate(names)
        )
        lines.append(f"  {kind}: {n} frames, {total} bytes ({total / n:.0f} per frame; per tensor: {per_tensor})")
    return lines


def _load_features(path: str):
    """The feature file, or a ConfigurationError for one that is empty or not a zip."""
    import zipfile
    import zlib

    from temposplit.codec import features
    from temposplit.codec.errors import ConfigurationError

    try:
        return features.load(path)
    except (EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ConfigurationError(f"{path}: not a readable .npz feature file ({exc or type(exc).__name__})") from exc


def _decode(args) -> int:
    import sys

    import numpy as np

    from temposplit.codec import features
    from temposplit.codec.decoder import DecodedFrame, decode_stream
    from temposplit.codec.errors import BitstreamError

    with open(args.input, "rb") as f:
        data = f.read()
    header, out = decode_stream(data)
    # A frame index met again (a duplicated packet): the first copy is kept, the stream
    # is reported as damaged (exit status 1), never written with that frame twice.
    seen: set[int] = set()
    frames, repeated = [], []
    for d in out:
        if isinstance(d, DecodedFrame):
            (repeated if d.index in seen else frames).append(d)
            seen.add(d.index)
    frames.sort(key=lambda d: d.index)
    errors = [d for d in out if not isinstance(d, DecodedFrame)]
    if not frames:
        raise BitstreamError(f"no frame could be decoded ({errors[0].error})" if errors else "the stream has no frames")
    names = [t.name for t in header.tensors]
    codes = [np.stack([d.codes[i] for d in frames]) for i in range(len(names))]
    values = [np.stack([d.dequantize()[i] for d in frames]) for i in range(len(names))]
    clip = features.FeatureClip(
        names,
        codes,
        [t.scale for t in header.tensors],
        [t.zero_point for t in header.tensors],
        [t.block for t in header.tensors],
    )
    extra = {"index": np.array([d.index for d in frames]), "n_bits": np.array([d.n_bits for d in frames])}
    extra.update({f"values/{n}": v for n, v in zip(names, values, strict=True)})
    features.save(args.output, clip, extra)
    print(f"{len(frames)} frames decoded -> {args.output}")
    if repeated:
        print(
            f"temposplit decode: {len(repeated)} packets repeat a frame already decoded (first: frame "
            f"{repeated[0].index}); the first copy of each frame was kept",
            file=sys.stderr,
        )
    if errors:
        print(
            f"temposplit decode: {len(errors)} packets could not be decoded; first: {errors[0].error}", file=sys.stderr
        )
    return 1 if errors or repeated else 0


def _bench(args) -> int:
    from temposplit.codec.bench import main

    return main(args)
