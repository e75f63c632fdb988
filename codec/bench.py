"""Codec speed at the ResNet-50 cut shapes: ``temposplit bench codec [--json]``.

bi-3 + Huffman, N = 4, p = 7, on temporally correlated synthetic maps (a smooth,
partly-zero map shifted one cell per frame, plus noise). Frames of a group count alike:
frames/s = frames / (seconds for all of them). One core: every kernel is single-threaded.
"""

from __future__ import annotations

import json
import time

import numpy as np

SHAPES = [((256, 200, 272), 8), ((512, 100, 136), 8), ((1024, 50, 68), 4), ((2048, 25, 34), 4)]


def parse_shapes(text: str):
    if text == "all":
        return SHAPES
    if text == "small":
        return SHAPES[2:]
    out = []
    for part in text.split(","):
        dims, _, b = part.partition(":")
        c, h, w = (int(v) for v in dims.lower().split("x"))
        out.append(((c, h, w), int(b or 4)))
    return out


def bench_shape(shape, block, frames=9, seed=0):
    from temposplit.codec.bitstream import parse_packet
    from temposplit.codec.decoder import Decoder
    from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
    from temposplit.codec.synthetic import correlated_clip

    rng = np.random.default_rng(seed)
    clip = correlated_clip(rng, frames, shape, dx=1)
    cfg = CodecConfig(
        [TensorSpec("x", shape, 0.05, 0, block)], n_bits=4, structure="bi-3", coder="huffman", search_range=7
    )
    # Warm the compiled kernels on a small map first (numba caches them on disk).
    warm = Encoder(CodecConfig([TensorSpec("x", (4, 8, 8), 0.05, 0, block)], structure="bi-3"))
    for f in correlated_clip(rng, 3, (4, 8, 8)):
        warm.push([f])
    warm.flush()

    enc = Encoder(cfg)
    enc.set_total_frames(frames)
    packets = []
    t0 = time.perf_counter()
    for f in clip:
        packets += enc.push([f])
    packets += enc.flush()
    t_enc = time.perf_counter() - t0
    blobs = [p.to_bytes() for p in packets]

    dec = Decoder(enc.header_bytes())
    t0 = time.perf_counter()
    for b in blobs:
        packet, _ = parse_packet(b, 0, dec.max_payload)
        dec.decode(packet)
    t_dec = time.perf_counter() - t0
    total = sum(len(b) for b in blobs)
    return {
        "shape": list(shape),
        "block": block,
        "frames": frames,
        "encode_fps": round(frames / t_enc, 2),
        "decode_fps": round(frames / t_dec, 2),
        "bits_per_element": round(8 * total / (np.prod(shape) * frames), 4),
        "bytes_per_frame": round(total / frames),
    }


def main(args) -> int:
    for shape, block in parse_shapes(args.shapes):
        r = bench_shape(shape, block, frames=args.frames)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            c, h, w = r["shape"]
            print(
                f"{h}x{w}x{c} B={block}: encode {r['encode_fps']:.1f} frames/s, decode {r['decode_fps']:.1f} "
                f"frames/s, {r['bits_per_element']:.3f} bits/element",
                flush=True,
            )
    return 0
