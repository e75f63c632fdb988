"""Codec speed at the ResNet-50 cut shapes and the SSD's cuts: ``temposplit bench codec [--json]``.

At the ResNet-50 shapes, on temporally correlated synthetic maps (a smooth, partly-zero
map shifted one cell per frame, plus noise), two settings: ``thesis`` (bi-3 + Huffman,
N = 4, p = 7) and ``recommended-ctx`` (the recommended preset: uni-8, chain reference,
residual blocks, N = 5, with the v2 coder ctx). At the SSD cuts (features.6, .10, .13:
the repository's fixture codes of three vtest frames, their channels tiled to the cut's
full count, played forward, back and forward), the recommended preset with ctx and with
ZRL. Frames of a group count alike: frames/s = frames / (seconds for all of them), on the
wall clock and (``*_cpu_fps``) on this process's CPU time, which a machine shared with other
jobs disturbs less. One core: every kernel is single-threaded, and the ``ctx`` slices of a
large tensor (docs/bitstream.md 6.2.6), which the codec otherwise codes side by side on the
process's cores, are coded in turn on one thread here (``ctx.SLICE_THREADS = 1`` while a row
is measured).

A stream is measured in whole groups of its structure (by default the fewest whole groups
of at least 9 frames: three bi-3 groups, two uni-8 groups), so that anchors take the share
of the frames they take in a long stream: 9 frames of uni-8 would be one group and the next
group's anchor, two anchors in 9 frames where a stream has one in 8. Anchors and predicted
frames are slower and faster than that mean: each row also gives the milliseconds a frame
of each kind takes to decode (``decode_anchor_ms``, ``decode_predicted_ms``) and, where the
encoder returns each frame's packet as it is pushed (uni and intra), to encode.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

SHAPES = [((256, 200, 272), 8), ((512, 100, 136), 8), ((1024, 50, 68), 4), ((2048, 25, 34), 4)]
SETTINGS = ("thesis", "recommended-ctx")
SSD_CUTS = {"features.6": 32, "features.10": 64, "features.13": 96}  # full channel counts


def _fixtures() -> Path:
    """The SSD cuts' fixture codes: ``tests/fixtures/features`` of a source checkout, which an
    installed package carries as ``temposplit/codec/fixtures`` (pyproject.toml's package data)."""
    here = Path(__file__).resolve().parent
    installed = here / "fixtures"
    return installed if installed.is_dir() else here.parent / "tests" / "fixtures" / "features"


FIXTURES = _fixtures()


def parse_shapes(text: str):
    """``--shapes``: 'all', 'small' or CxHxW[:B],... (a ConfigurationError for anything else)."""
    from temposplit.codec.encoder import CodecConfig, TensorSpec
    from temposplit.codec.errors import ConfigurationError
    from temposplit.codec.motion import check_block

    if text == "all":
        return SHAPES
    if text == "small":
        return SHAPES[2:]
    out = []
    for part in text.split(","):
        dims, _, b = part.partition(":")
        try:
            c, h, w = (int(v) for v in dims.lower().split("x"))
            block = int(b or 4)
        except ValueError:
            raise ConfigurationError(
                f"--shapes: {part!r} is not CxHxW[:B] ('all', 'small' or e.g. 64x19x19:4)"
            ) from None
        if min(c, h, w) < 1:
            raise ConfigurationError(f"--shapes: {part!r} has a side under 1")
        check_block(block)
        # The stream's limits, before any frame is made (a shape past them is gigabytes of maps).
        CodecConfig([TensorSpec("x", (c, h, w), 0.05, 0, block)]).validate()
        out.append(((c, h, w), block))
    return out


def options(setting: str) -> dict:
    """CodecConfig keyword arguments of a bench setting."""
    from temposplit.codec.encoder import PRESETS

    if setting == "thesis":
        return dict(n_bits=4, structure="bi-3", coder="huffman", search_range=7)
    return {**PRESETS["recommended"], "coder": setting.rsplit("-", 1)[1]}


def warm_kernels(codec: dict, block: int = 4, frames: int = 10, rng=None) -> None:
    """Encode and decode ``frames`` small synthetic maps with the settings ``codec``
    (CodecConfig's keyword arguments), so that the compiled kernels they use are loaded
    from numba's disk cache, or compiled on a machine's first run (seconds), before
    anything is timed."""
    from temposplit.codec.decoder import Decoder
    from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
    from temposplit.codec.synthetic import correlated_clip

    rng = np.random.default_rng(0) if rng is None else rng
    enc = Encoder(CodecConfig([TensorSpec("x", (4, 8, 8), 0.05, 0, block)], **codec))
    enc.set_total_frames(frames)
    packets = []
    for f in correlated_clip(rng, frames, (4, 8, 8)):
        packets += enc.push([f])
    packets += enc.flush()
    dec = Decoder(enc.header_bytes())
    for p in packets:
        dec.decode(p)


def whole_groups(setting: str, at_least: int = 9) -> int:
    """The fewest frames in whole groups of the setting's structure, at least ``at_least``."""
    from temposplit.codec.structure import Structure

    group = Structure.parse(options(setting)["structure"]).group
    return -(-at_least // group) * group


def _kind_ms(seconds: dict[str, list[float]], kind: str):
    times = seconds.get(kind)
    return round(1000 * sum(times) / len(times), 3) if times else None


def bench_shape(shape, block, frames=None, seed=0, setting="thesis", clip=None, scale=0.05, zero_point=0, name="x"):
    """One row: ``frames`` frames (default :func:`whole_groups`) of ``clip`` (default
    synthetic correlated maps) encoded and decoded with the setting, on one thread."""
    from temposplit.codec import ctx

    threads, ctx.SLICE_THREADS = ctx.SLICE_THREADS, 1
    try:
        return _bench_shape(shape, block, frames, seed, setting, clip, scale, zero_point, name)
    finally:
        ctx.SLICE_THREADS = threads


def _bench_shape(shape, block, frames, seed, setting, clip, scale, zero_point, name):
    from temposplit.codec.bitstream import parse_packet
    from temposplit.codec.decoder import Decoder
    from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
    from temposplit.codec.synthetic import correlated_clip

    rng = np.random.default_rng(seed)
    frames = whole_groups(setting) if frames is None else frames
    if clip is None:
        clip = correlated_clip(rng, frames, shape, dx=1)
    clip = clip[:frames]
    frames = len(clip)
    cfg = CodecConfig([TensorSpec(name, tuple(shape), scale, zero_point, block)], **options(setting))
    warm_kernels(options(setting), block, 3, rng)

    enc = Encoder(cfg)
    enc.set_total_frames(frames)
    packets = []
    enc_s: dict[str, list[float]] = {}  # seconds of each pushed frame whose packet came back alone
    t0, c0 = time.perf_counter(), time.process_time()
    for f in clip:
        t = time.perf_counter()
        out = enc.push([f])
        if len(out) == 1:
            enc_s.setdefault(_kind(out[0]), []).append(time.perf_counter() - t)
        packets += out
    packets += enc.flush()
    t_enc, c_enc = time.perf_counter() - t0, time.process_time() - c0
    blobs = [p.to_bytes() for p in packets]
    if sum(len(v) for v in enc_s.values()) != frames:
        enc_s = {}  # (a bi-directional group comes out at once: no time per frame)

    dec = Decoder(enc.header_bytes())
    dec_s: dict[str, list[float]] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for b in blobs:
        t = time.perf_counter()
        packet, _ = parse_packet(b, 0, dec.max_payload)
        dec.decode(packet)
        dec_s.setdefault(_kind(packet), []).append(time.perf_counter() - t)
    t_dec, c_dec = time.perf_counter() - t0, time.process_time() - c0
    total = sum(len(b) for b in blobs)
    return {
        "setting": setting,
        "shape": list(shape),
        "block": block,
        "frames": frames,
        "encode_fps": round(frames / t_enc, 2),
        "decode_fps": round(frames / t_dec, 2),
        "encode_cpu_fps": round(frames / max(c_enc, 1e-9), 2),
        "decode_cpu_fps": round(frames / max(c_dec, 1e-9), 2),
        "encode_decode_ms_per_frame": round(1000 * (t_enc + t_dec) / frames, 3),
        "bits_per_element": round(8 * total / (np.prod(shape) * frames), 4),
        "bytes_per_frame": round(total / frames),
        "anchors": len(dec_s.get("anchor", [])),
        "encode_anchor_ms": _kind_ms(enc_s, "anchor"),
        "encode_predicted_ms": _kind_ms(enc_s, "predicted"),
        "decode_anchor_ms": _kind_ms(dec_s, "anchor"),
        "decode_predicted_ms": _kind_ms(dec_s, "predicted"),
    }


def _kind(packet) -> str:
    return "anchor" if packet.is_anchor else "predicted"


def check_fixtures() -> None:
    """A :class:`MissingDependencyError` naming the first SSD cut's fixture that is not there."""
    for cut in SSD_CUTS:
        path = FIXTURES / f"ssd-{cut}.npz"
        if not path.is_file():
            from temposplit.errors import MissingDependencyError

            raise MissingDependencyError(f"the SSD cuts' fixture {path} is missing (--no-ssd leaves those rows out)")


def ssd_rows(frames=None):
    """The recommended preset (ctx and ZRL) on the SSD cuts' fixture codes."""
    rows = []
    for cut, channels in SSD_CUTS.items():
        npz = np.load(FIXTURES / f"ssd-{cut}.npz")
        codes = npz["codes_0"]
        reps = -(-channels // codes.shape[1])
        codes = np.concatenate([codes] * reps, axis=1)[:, :channels]
        n = max(frames or 0, *(whole_groups(s) for s in ("recommended-ctx", "recommended-zrl")))
        order = (list(range(len(codes))) + list(range(len(codes) - 1, -1, -1))) * n
        clip = [np.ascontiguousarray(codes[i]) for i in order[:n]]
        for setting in ("recommended-ctx", "recommended-zrl"):
            row = bench_shape(
                codes.shape[1:],
                4,
                frames=frames,
                setting=setting,
                clip=clip,
                scale=float(npz["scale_0"]),
                zero_point=int(npz["zero_point_0"]),
                name=cut,
            )
            rows.append({"cut": cut, **row})
    return rows


MAX_FRAMES = 256  # --frames: every frame of a shape is made before the timing starts
MAX_MAKE_BYTES = 1 << 30  # making a shape's frames (make_bytes): the largest default shape 0.6 GiB


def make_bytes(shape, frames: int) -> int:
    """About the most memory :func:`correlated_clip` (dx = 1) takes to make ``frames`` maps
    of ``shape``. It draws one map padded by ``frames + 2`` cells on each side (its rule:
    ``n_frames * max(|dy|, |dx|) + 2``) and smooths it: 16 bytes a padded element at the
    peak (the float64 draw and its float32 copy, then float32 temporaries; 12-15 measured).
    Then it keeps that map in float32 (4 bytes) and the frames (a byte an element), and
    makes each frame in float (24 bytes an element of one frame)."""
    c, h, w = shape
    pad = frames + 2
    padded = c * (h + 2 * pad) * (w + 2 * pad)
    return max(16 * padded, 4 * padded + (frames + 24) * c * h * w)


def check_memory(shapes, frames: int | None) -> None:
    """Refuse, before any frame is made, a shape whose frames would take more than
    MAX_MAKE_BYTES to make (:func:`make_bytes`; ``--frames 256`` of 512 x 16 x 16 took
    1.7 GiB for 32 MiB of frames)."""
    from temposplit.codec.errors import ConfigurationError

    n = frames if frames is not None else max(whole_groups(s) for s in SETTINGS)
    for (c, h, w), _ in shapes:
        need = make_bytes((c, h, w), n)
        if need > MAX_MAKE_BYTES:
            raise ConfigurationError(
                f"--shapes {c}x{h}x{w} with {n} frames takes about {need / 2**30:.1f} GiB of memory to make "
                f"(the synthetic maps are drawn {n + 2} cells wider on each side, in float), over the bench's "
                f"{MAX_MAKE_BYTES / 2**30:g} GiB: give fewer --frames or a smaller shape"
            )


def main(args) -> int:
    if args.frames is not None and not 1 <= args.frames <= MAX_FRAMES:
        from temposplit.codec.errors import ConfigurationError

        raise ConfigurationError(f"--frames must be 1..{MAX_FRAMES}, not {args.frames} (the frames are made in memory)")
    shapes = parse_shapes(args.shapes)
    check_memory(shapes, args.frames)
    if not getattr(args, "no_ssd", False):
        check_fixtures()  # before any row: not after minutes of them
    for shape, block in shapes:
        for setting in SETTINGS:
            _print(bench_shape(shape, block, frames=args.frames, setting=setting), args.json)
    if not getattr(args, "no_ssd", False):
        for row in ssd_rows(frames=args.frames):
            _print(row, args.json)
    return 0


def _print(r, as_json):
    if as_json:
        print(json.dumps(r), flush=True)
        return
    c, h, w = r["shape"]
    where = f"{r['cut']} " if "cut" in r else ""
    print(
        f"{where}{h}x{w}x{c} B={r['block']} {r['setting']}: encode {r['encode_fps']:.1f} frames/s, decode "
        f"{r['decode_fps']:.1f} frames/s ({r['encode_decode_ms_per_frame']:.2f} ms/frame both), "
        f"{r['bits_per_element']:.3f} bits/element",
        flush=True,
    )
