"""Frozen test vectors of the bitstream (docs/bitstream.md, section 14).

    python -m temposplit.codec.vectors --out tests/fixtures/vectors

writes, once, streams of version 1, 2.1 and 2.2 with the codes they must decode to, and ctx
sections of edge cases (all zero, maximal values, one element, N = 2..8, carries).
It writes only the vectors missing from the folder: one whose files are there is never
written again, so a stream added to STREAMS adds its files and leaves the others' bytes.
The tests decode the files in the repository, never regenerate them: a change made
alike in the encoder and the decoder changes the bytes or the codes and fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from temposplit.codec import ctx_reference
from temposplit.codec.decoder import DecodedFrame, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.synthetic import correlated_clip

SHAPES = [(5, 9, 11), (3, 4, 6)]
SPECS = [TensorSpec("a", SHAPES[0], 0.1, 12, 4), TensorSpec("b", SHAPES[1], 0.05, 0, 2)]
CLIPS = [dict(dx=1), dict(dy=1)]
# z8 = 248 requantizes to z_N = 2^N at N <= 4: no zero symbol (6.1); its codes sit near 255.
NO_ZERO = [TensorSpec("a", SHAPES[0], 0.1, 248, 4), SPECS[1]]
NO_ZERO_CLIPS = [dict(dx=1, flip=True), dict(dy=1)]
LARGE = [TensorSpec("a", (4, 20, 24), 0.1, 12, 4), TensorSpec("b", (3, 12, 16), 0.05, 0, 2)]
# A ReLU6-like tensor (zero point 0, 6 at code 255: zero, steep slopes, plateaus at the top
# code with flicker at their edges), moving; a still one whose z_N is the top code.
SATURATED = [TensorSpec("a", SHAPES[0], 6 / 255, 0, 4), TensorSpec("b", LARGE[1].shape, 0.05, 248, 2)]
SATURATED_CLIPS = [dict(dx=1, gain=3), dict(dx=0, dy=0, flip=True)]

# name -> CodecConfig's options, with ``tensors`` (default SPECS) and ``content`` (stream_frames'
# options; default 10 frames of CLIPS). The tests check the version and the slice count by
# the name's prefix "v1"/"v2"/"v2.2" and "slicesS".
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
    # Added later (the files above stay as they were): tensor a without a zero symbol at
    # N = 4 (z8 = 248) under zvc, huffman and zrl; residuals under zvc and huffman;
    # per-channel vectors with huffman; intra with zrl, whose tensor b (12 x 16, mostly zero)
    # has runs of 32 and more zeros; rate control changing N (6 -> 3 with huffman, the
    # table carried at the change and derived after; 3 -> 5 with ctx, the anchor then
    # intra) and a refresh KEY in mid-group at a scene cut; a sliced stream without
    # residuals, with p = 15 on maps where vector components reach 15.
    "v1-zvc-uni3-residual-no-zero": dict(
        structure="uni-3",
        coder="zvc",
        residual=ResidualConfig(threshold=0.3),
        tensors=NO_ZERO,
        content=dict(clips=NO_ZERO_CLIPS),
    ),
    "v1-huffman-uni4-per-channel-residual-no-zero": dict(
        structure="uni-4",
        coder="huffman",
        per_channel=True,
        residual=ResidualConfig(threshold=0.3),
        tensors=NO_ZERO,
        content=dict(clips=NO_ZERO_CLIPS),
    ),
    "v1-zrl-intra-no-zero-long-runs": dict(
        structure="intra",
        coder="zrl",
        tensors=[NO_ZERO[0], LARGE[1]],
        content=dict(frames=6, clips=[dict(dx=1, flip=True), dict(dy=1, zero_fraction=0.8)]),
    ),
    "v1-huffman-uni4-rate-control-refresh": dict(
        structure="uni-4",
        coder="huffman",
        residual=ResidualConfig(threshold=0.3),
        rate_target=0.002,
        ladder=[(6, 4), (5, 4), (4, 4), (3, 4)],
        refresh_threshold=20.0,
        content=dict(frames=14, clips=[dict(dx=1, cut_at=10), dict(dy=1, cut_at=10)]),
    ),
    "v2.2-ctx-slices2-uni4-p15-rate-control": dict(
        structure="uni-4",
        coder="ctx",
        search_range=15,
        ctx_slices=2,
        rate_target=0.003,
        ladder=[(5, 4), (4, 4), (3, 4)],
        tensors=LARGE,
        content=dict(frames=8, clips=[dict(dx=5, dy=-4), dict(dx=-5, dy=2)]),
    ),
    # Added later still: predictions at the top code and at 0 in one section (the residual
    # zero contexts of edge(p) = 1 and 0, 6.2.5), and with them every context of the coder at
    # least once (tests/codec/test_vectors.py checks). N = 5: p >> 1 = 15 then holds a code
    # below the top too, whose sign bin is coded.
    "v2-ctx-uni2-saturated-residual": dict(
        structure="uni-2",
        coder="ctx",
        n_bits=5,
        residual=ResidualConfig(threshold=0.1),
        tensors=SATURATED,
        content=dict(seed=4, clips=SATURATED_CLIPS),
    ),
}


def _clip(
    rng: np.random.Generator, frames: int, shape, flip: bool = False, cut_at: int | None = None, gain: int = 1, **kw
):
    """One tensor's maps: :func:`correlated_clip` (``kw``), from frame ``cut_at`` on another
    map (a scene cut), ``flip``: 255 - codes (most codes near 255, as a tensor whose zero
    point is there), ``gain``: codes times ``gain``, saturating at 255 (as a ReLU6's)."""
    maps = correlated_clip(rng, frames, shape, **kw)
    if cut_at is not None:
        maps = maps[:cut_at] + correlated_clip(rng, frames - cut_at, shape, **kw)
    if gain != 1:
        maps = [np.minimum(m.astype(np.int32) * gain, 255).astype(np.uint8) for m in maps]
    return [255 - m for m in maps] if flip else maps


def stream_frames(seed: int = 2026, frames: int = 10, shapes=SHAPES, clips=CLIPS):
    """The frames of a stream: per tensor a clip drawn by :func:`_clip` with ``clips``' options."""
    rng = np.random.default_rng(seed)
    per_tensor = [_clip(rng, frames, shape, **kw) for shape, kw in zip(shapes, clips, strict=True)]
    return [list(maps) for maps in zip(*per_tensor, strict=True)]


def stream_input(options: dict) -> tuple[CodecConfig, list]:
    """A stream's CodecConfig and input frames: ``options`` are CodecConfig's (``tensors``
    defaults to SPECS), and ``content``: :func:`stream_frames`' options (``seed``,
    ``frames``, ``clips``). ``Encoder(config).encode(frames)`` is the stream's bytes."""
    options = dict(options)
    specs = list(options.pop("tensors", SPECS))
    content = dict(options.pop("content", {}))
    config = CodecConfig(specs, model_id="vectors", cut_id="c", fps=10.0, **options)
    return config, stream_frames(shapes=[t.shape for t in specs], **content)


def make_stream(options: dict) -> bytes:
    """A stream's bytes: :func:`stream_input`'s frames through the software encoder."""
    config, frames = stream_input(options)
    return Encoder(config).encode(frames)


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


def _missing(paths: list[Path]) -> bool:
    """Whether to write a vector's files: none of them there (True) or all (False); some
    but not all is refused, since the missing one would not be frozen with the others."""
    there = [p.exists() for p in paths]
    if all(there):
        return False
    if any(there):
        have = ", ".join(p.name for p, t in zip(paths, there, strict=True) if t)
        raise FileExistsError(f"{have} is there without the rest of its vector: remove it to write the vector again")
    return True


def write(out: Path) -> list[Path]:
    """Write the vectors missing from ``out``; a vector whose files are there is kept as it
    is, never written again (the frozen bytes are the point). Returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    vectors = [[out / f"{name}.tsp", out / f"{name}.npz"] for name in STREAMS]
    sections = [out / "ctx-sections.npz", out / "ctx-sections.json"]
    missing = [_missing(paths) for paths in (*vectors, sections)]  # a half-there vector refuses all, first
    written = []
    for options, paths, write_it in zip(STREAMS.values(), vectors, missing[:-1], strict=True):
        if not write_it:
            continue
        data = make_stream(options)
        _, frames = decode_stream(data)
        assert all(isinstance(f, DecodedFrame) for f in frames)
        arrays = {"index": np.array([f.index for f in frames]), "n_bits": np.array([f.n_bits for f in frames])}
        for i in range(len(frames[0].codes)):
            arrays[f"codes{i}"] = np.stack([f.codes[i] for f in frames])
        paths[0].write_bytes(data)
        np.savez_compressed(paths[1], **arrays)
        written += paths
    paths = sections
    if missing[-1]:
        sections, index = {}, []
        for name, codes, ref, n, z_n in section_cases():
            data, changes = ctx_reference.encode_anchor(codes, ref, None, n, z_n)
            sections[f"{name}/data"] = np.frombuffer(data, np.uint8)
            sections[f"{name}/codes"] = codes
            sections[f"{name}/changes"] = changes
            if ref is not None:
                sections[f"{name}/ref"] = ref
            index.append({"name": name, "n_bits": n, "z_n": z_n, "temporal": ref is not None})
        np.savez_compressed(paths[0], **sections)
        paths[1].write_text(json.dumps(index, indent=1) + "\n")
        written += paths
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/vectors")
    try:
        written = write(Path(ap.parse_args(argv).out))
    except OSError as ex:
        print(f"vectors: {ex}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    if not written:
        print("every vector is there already; nothing written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
