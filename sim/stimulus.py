"""Stimulus for the fabric's testbenches: correlated random feature maps, moving pairs,
Huffman tables, and the SSD feature-map fixtures (issue 3) when they are present.

Maps are channel-last ``(H, W, C)`` uint8 quint8 codes, like the codec's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temposplit.codec import huffman

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "features"


def smooth_field(rng, h, w, c, cell=4):
    """A spatially correlated field: a coarse random grid, bilinearly upsampled, plus noise."""
    gh, gw = h // cell + 2, w // cell + 2
    coarse = rng.normal(0, 1, (gh, gw, c))
    ys = np.arange(h) / cell
    xs = np.arange(w) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    return f + rng.normal(0, 0.15, f.shape)


def activation_codes(field, z8, scale=40.0, relu=True):
    """Quint8 codes of a field: a ReLU-like tap piles codes on the zero point."""
    v = field * scale
    if relu:
        v = np.maximum(v, 0)
    return np.clip(np.round(v) + z8, 0, 255).astype(np.uint8)


def random_map(rng, h, w, c, z8=None, relu=None):
    z8 = int(rng.integers(0, 256)) if z8 is None else z8
    relu = bool(rng.integers(0, 2)) if relu is None else relu
    return activation_codes(smooth_field(rng, h, w, c), z8, relu=relu), z8


def moving_pair(rng, h, w, c, z8, shift=(1, -2), noise=0.05):
    """Two frames of one scene, the second moved by ``shift`` (dy, dx) with fresh noise."""
    pad = 8
    field = smooth_field(rng, h + 2 * pad, w + 2 * pad, c)
    dy, dx = shift
    a = field[pad : pad + h, pad : pad + w]
    b = field[pad - dy : pad - dy + h, pad - dx : pad - dx + w] + rng.normal(0, noise, (h, w, c))
    return activation_codes(a, z8), activation_codes(b, z8)


def table_for(rng, alphabet, kind="random"):
    """Code lengths over an alphabet: from a random histogram, a skewed one (codes up to
    15 bits), or a flat one."""
    if kind == "skewed":
        hist = (2.0 ** -np.arange(alphabet) * 1e9).astype(np.int64)
    elif kind == "flat":
        hist = np.full(alphabet, 10, np.int64)
    else:
        hist = rng.geometric(0.05, alphabet).astype(np.int64) * rng.integers(0, 50, alphabet)
    return huffman.table_lengths(hist)


def fixtures() -> list[dict]:
    """The SSD feature-map fixtures (``temposplit models fixtures``): one dict per tensor
    with ``name``, ``frames`` (list of (H, W, C) uint8, channel-last) and ``zero_point``.
    Empty if none are present."""
    out = []
    if not FIXTURES.is_dir():
        return out
    for path in sorted(FIXTURES.glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            i = 0
            while f"codes_{i}" in z.files:
                codes = z[f"codes_{i}"]  # (T, C', H, W)
                zp = int(np.asarray(z[f"zero_point_{i}"]).reshape(-1)[0]) if f"zero_point_{i}" in z.files else 0
                name = str(z[f"name_{i}"]) if f"name_{i}" in z.files else str(i)
                frames = [np.ascontiguousarray(f.transpose(1, 2, 0)) for f in codes]
                out.append({"name": f"{path.stem}:{name}", "frames": frames, "zero_point": zp})
                i += 1
    return out


def preset_ctx_sections(codes, scale: float, zero_point: int, frames=(0, 1, 2, 1, 0, 1, 2, 1, 0, 1)):
    """Every ``ctx`` section the recommended preset (chain, residual blocks) writes for a
    fixture tensor's frames (``codes`` (T, C, H, W), played in the order ``frames``):
    (kind, the codec call's arguments, its section) with kind ``anchor`` or ``pred``, seen
    by wrapping the codec's two section coders while the encoder runs."""
    from temposplit.codec import ctx
    from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, TensorSpec

    calls = []
    originals = {"anchor": ctx.encode_anchor, "pred": ctx.encode_pred}

    def spy(kind):
        def call(*args):
            out = originals[kind](*args)
            calls.append((kind, args, out[0]))
            return out

        return call

    ctx.encode_anchor, ctx.encode_pred = spy("anchor"), spy("pred")
    try:
        enc = Encoder(CodecConfig([TensorSpec("f", codes.shape[1:], scale, zero_point, 4)], **PRESETS["recommended"]))
        for i in frames:
            enc.push([np.ascontiguousarray(codes[i])])
        enc.flush()
    finally:
        ctx.encode_anchor, ctx.encode_pred = originals["anchor"], originals["pred"]
    return calls


def ctx_value_cases(rng):
    """Random predicted frames (vectors, flags, residual blocks, at N = 2..8 with search
    ranges 1..15, shared and per-channel vectors) and anchors, as (records, section)."""
    from temposplit.codec import ctx
    from temposplit.codec import ctx_records as V
    from temposplit.codec.synthetic import ctx_section_inputs

    out = []
    for setting in (
        (2, 1, 4, (9, 7, 3), False),
        (4, 7, 2, (8, 8, 16), False),
        (5, 15, 3, (7, 11, 4), True),
        (8, 3, 4, (5, 9, 6), False),
    ):
        for kind, args in ctx_section_inputs(rng, *setting):
            section = (ctx.encode_anchor if kind == "anchor" else ctx.encode_pred)(*args)[0]
            out.append((V.section_records(kind, args)[0], section))
    return out
