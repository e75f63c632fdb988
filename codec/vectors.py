"""Frozen test vectors of the bitstream (docs/bitstream.md, section 14).

    python -m temposplit.codec.vectors --out tests/fixtures/vectors

writes, once, streams of version 1, 2.1 and 2.2 with the codes they must decode to, and ctx
sections of edge cases (all zero, maximal values, one element, N = 2..8, carries).
The tests decode the files in the repository, never regenerate them: a change made
alike in the encoder and the decoder changes the bytes or the codes and fails.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from temposplit.codec import ctx_reference
from temposplit.codec.decoder import DecodedFrame, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.synthetic import correlated_clip

STREAMS = {
    "v1-raw-intra": dict(structure="intra", coder="raw", n_bits=3),
    "v1-zvc-uni2": dict(structure="uni-2", coder="zvc"),
    "v1-huffman-bi3": dict(structure="bi-3", coder="huffman"),
    "v1-zrl-uni8-chain-residual": dict(
        structure="uni-8", coder="zrl", reference="chain", residual=ResidualConfig(threshold=0.3)
    ),
    "v2-ctx-uni8-chain-residual": dict(
        structure="uni-8", coder="ctx", reference="chain", residual=ResidualConfig(threshold=0.3)
    ),
    "v2-ctx-intra-conditional": dict(structure="intra", coder="ctx", key_interval=4),
    "v2-ctx-bi3-per-channel": dict(structure="bi-3", coder="ctx", per_channel=True, search_range=3),
    "v2-ctx-n8-dead-zone": dict(
        structure="uni-4", coder="ctx", n_bits=8, residual=ResidualConfig(threshold=0.2, dead_zone=2)
    ),
    # version 2.2, ctx slices (6.2.6): 2 slices of 5 and of 3 channels; 4 slices, 3 of the
    # 3-channel tensor (S > C)
    "v2.2-ctx-slices2-uni8-chain-residual": dict(
        structure="uni-8", coder="ctx", reference="chain", residual=ResidualConfig(threshold=0.3), ctx_slices=2
    ),
    "v2.2-ctx-slices4-bi3-per-channel": dict(
        structure="bi-3",
        coder="ctx",
        per_channel=True,
        search_range=3,
        residual=ResidualConfig(threshold=0.3),
        ctx_slices=4,
    ),
}
SHAPES = [(5, 9, 11), (3, 4, 6)]


def stream_frames(seed: int = 2026, frames: int = 10):
    rng = np.random.default_rng(seed)
    a = correlated_clip(rng, frames, SHAPES[0], dx=1)
    b = correlated_clip(rng, frames, SHAPES[1], dy=1)
    return [[x, y] for x, y in zip(a, b, strict=True)]


def make_stream(options: dict) -> bytes:
    specs = [TensorSpec("a", SHAPES[0], 0.1, 12, 4), TensorSpec("b", SHAPES[1], 0.05, 0, 2)]
    enc = Encoder(CodecConfig(specs, model_id="vectors", cut_id="c", fps=10.0, **options))
    frames = stream_frames()
    return enc.encode(frames)


def section_cases():
    """(name, codes, reference or None, N, z_N): ctx anchor sections of edge cases."""
    rng = np.random.default_rng(7)
    cases = []
    for n in range(2, 9):
        top = (1 << n) - 1
        ramp = (np.indices((3, 4, 5)).sum(0) * max(1, top // 7) % (top + 1)).astype(np.uint8)
        cases.append((f"ramp-intra-n{n}", ramp, None, n, (top + 1) // 2))
        noisy = np.clip(ramp.astype(int) + rng.integers(-2, 3, ramp.shape), 0, top).astype(np.uint8)
        cases.append((f"ramp-temporal-n{n}", noisy, ramp, n, 0))
        cases.append((f"all-zero-n{n}", np.zeros((2, 3, 4), np.uint8), None, n, 0))
        cases.append((f"all-max-n{n}", np.full((2, 3, 4), top, np.uint8), None, n, top + 1))
        cases.append((f"max-against-zero-n{n}", np.full((2, 3, 4), top, np.uint8), np.zeros((2, 3, 4), np.uint8), n, 0))
        cases.append((f"one-element-n{n}", np.full((1, 1, 1), top // 3, np.uint8), None, n, top))
    # Carries: rare changes on a long run push low past 2^32 while 0xFF bytes are held back.
    base = rng.integers(0, 16, (6, 6, 8)).astype(np.uint8)
    for k in range(4):
        cur = base.copy()
        cur.reshape(-1)[rng.random(base.size) < 0.02 * (k + 1)] ^= 5
        cases.append((f"carry-{k}", cur, base, 4, 0))
    return cases


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, options in STREAMS.items():
        data = make_stream(options)
        _, frames = decode_stream(data)
        assert all(isinstance(f, DecodedFrame) for f in frames)
        (out / f"{name}.tsp").write_bytes(data)
        arrays = {"index": np.array([f.index for f in frames]), "n_bits": np.array([f.n_bits for f in frames])}
        for i in range(len(SHAPES)):
            arrays[f"codes{i}"] = np.stack([f.codes[i] for f in frames])
        np.savez_compressed(out / f"{name}.npz", **arrays)
        written += [out / f"{name}.tsp", out / f"{name}.npz"]
    sections, index = {}, []
    for name, codes, ref, n, z_n in section_cases():
        data, changes = ctx_reference.encode_anchor(codes, ref, None, n, z_n)
        sections[f"{name}/data"] = np.frombuffer(data, np.uint8)
        sections[f"{name}/codes"] = codes
        sections[f"{name}/changes"] = changes
        if ref is not None:
            sections[f"{name}/ref"] = ref
        index.append({"name": name, "n_bits": n, "z_n": z_n, "temporal": ref is not None})
    np.savez_compressed(out / "ctx-sections.npz", **sections)
    (out / "ctx-sections.json").write_text(json.dumps(index, indent=1) + "\n")
    written += [out / "ctx-sections.npz", out / "ctx-sections.json"]
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/vectors")
    for path in write(Path(ap.parse_args(argv).out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
