"""The encoder and decoder stay in lock-step across the whole configuration space.

Each drawn case is a configuration from everything :class:`CodecConfig` accepts (and a few
things it must refuse) with a clip drawn to stress it. For every case:

1. every frame both decode paths (``decode_stream`` and the packet-at-a-time ``Decoder``)
   give equals the encoder's reconstruction, in packet order;
2. the frames, groups, decode order, references and KEYs follow docs/bitstream.md 4, 7, 9, 10;
3. dropping one packet loses exactly what docs/bitstream.md 11 says, and the rest decodes
   to the encoder's reconstruction;
4. (a separate test, a few cases) the codec without numba writes the same bytes.

A refused configuration is refused with a ConfigurationError at construction, never later.

``CONFIG_SPACE_EXAMPLES=3000 pytest -p no:xdist tests/codec/test_config_space.py`` hunts
with more examples than the suite's default.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from temposplit.codec import entropy
from temposplit.codec.bitstream import ANCHOR, FLAG_GROUP_START, KEY, PRED, header_length, parse_packet
from temposplit.codec.decoder import DecodedFrame, Decoder, FrameError, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import BitstreamError, ConfigurationError
from temposplit.codec.ratecontrol import default_ladder
from temposplit.codec.synthetic import correlated_clip

EXAMPLES = int(os.environ.get("CONFIG_SPACE_EXAMPLES", "150"))
NO_NUMBA_CASES = int(os.environ.get("CONFIG_SPACE_NO_NUMBA_CASES", "24"))

CLIPS = ("static", "noisy", "moving", "cut", "cut", "zeros", "full", "alternating", "extremes")
# the last four are no stream's scale: 0 and below float32's least, at or past 2^120 (docs/bitstream.md, 2)
SCALES = (0.05, 1.0, 1e-45, 1.3e36, 1e-30, 1e30, 0.0, 1e-46, 3.5e38, 3.4e38)
BAD_SCALES = (0.0, 1e-46, 3.5e38, 3.4e38)


# --------------------------------------------------------------------------- drawing cases


class _Hyp:
    """Draws through hypothesis (shrinks to the first option of each choice)."""

    def __init__(self, draw):
        self.draw = draw

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options):
        return self.draw(st.sampled_from(options))

    def maybe_bad(self, valid, bad):
        """Mostly one of ``valid``; now and then one of ``bad`` (a value construction refuses)."""
        return self.choice(bad) if self.int(0, 40) == 0 else self.choice(valid)


class _Rng:
    """Draws from a seeded generator (the same space, for the subprocess test)."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def choice(self, options):
        return self.r.choice(list(options))

    maybe_bad = _Hyp.maybe_bad


def draw_case(d) -> dict:
    """A case: a configuration and a clip, as plain values (JSON: a subprocess rebuilds it)."""
    tensors = []
    for i in range(d.int(1, 3)):
        c, h, w = d.choice((1, 2, 3, 5, 8)), d.int(1, 11), d.int(1, 11)
        block = d.maybe_bad((4, 1, 2, 3, 5, 8, 64), (0, 65))
        z8 = d.choice((0, 255, 128, 7, 248, d.int(0, 255)))
        scale = d.maybe_bad(SCALES[:6], BAD_SCALES)
        tensors.append([f"t{i}", c, h, w, block, z8, scale])
    kind = d.choice(("uni", "bi", "intra", "uni", "bi"))
    group = d.maybe_bad((3, 5, 9, 1, 255) if kind == "bi" else (2, 3, 4, 5, 8, 1, 255), (0, 2, 4))  # bi: g odd
    coder = d.choice(("huffman", "ctx", "raw", "zvc", "zrl"))
    residual = None
    if d.int(0, 2):
        residual = {
            "mode": d.choice(("threshold", "rd")),
            "threshold": d.choice((1.5, 0.0, 0.2, 4.0, 100.0)),
            "lam": d.choice((4.0, 0.0, 0.5, 50.0)),
            "dead_zone": d.maybe_bad((0.0, 4.0, 8.0, 1.0, 100.0), (-1.0,)),
            "refine_vectors": d.choice((False, True)),
            "hysteresis": d.maybe_bad((0, 1, 3, 40, 255), (256,)),
        }
    rate = None
    if not d.int(0, 3):
        ladder = d.choice(("default", "empty", "points"))
        points = None
        if ladder == "points":
            groups = {"intra": (1,), "bi": (1, 3, 5, 9)}.get(kind, (1, 2, 3, 4, 5, 8))
            points = [[d.maybe_bad(range(2, 9), (1,)), d.maybe_bad(groups, (0, 2, 4))] for _ in range(d.int(1, 4))]
        rate = {
            "target": d.choice((0.05, 1e-6, 0.001, 10.0)),
            "fps": d.choice((30.0, 1.0, 1000.0)),
            "ladder": [] if ladder == "empty" else points,
        }
    case = {
        "tensors": tensors,
        "structure": "intra" if kind == "intra" else f"{kind}-{group}",
        "reference": d.choice(("anchor", "chain")),
        "coder": coder,
        "n_bits": d.maybe_bad(range(2, 9), (1,)),  # N = 2..8
        "search_range": d.maybe_bad((7, 3, 15), (5,)),
        "per_channel": d.maybe_bad((False, True, 0, 1), (2,)),  # the header flag is one bit
        "residual": residual,
        "refresh_threshold": d.maybe_bad((None,) * 5 + (0.0, 0.5, 4.0, 12.0, 12.0, 30.0, 100.0), (-1.0,)),
        "key_interval": d.maybe_bad((16, 1, 2, 3, 5), (0,)),
        "table_policy": d.choice(("previous", "own")),
        "rate": rate,
        "ctx_slices": d.maybe_bad((None, None, 1, 2, 3, 5, 32) if coder == "ctx" else (None, 1), (0, 33, 2)),
        "clip": d.choice(CLIPS),
        "frames": d.int(1, 14),
        "seed": d.int(0, 2**16),
        "announce": d.choice((True, False)),
        "drop": d.int(0, 10**6),
        "types": d.choice(("python", "int64", "uint8", "int16")),  # NumPy scalars are numbers too
        "first_index": d.choice((0, 0, 7, 2**32 - 15)),  # a resumed stream; the u32 index's top
    }
    return case


def build_config(case: dict) -> CodecConfig:
    """The case's configuration (raises what construction raises), its numbers as Python's
    or as NumPy scalars of the case's ``types`` (floats then as float32 or float64)."""
    kind = case["types"]

    def i(v):
        if v is None or kind == "python":
            return v
        return np.int64(v) if not 0 <= v <= 127 else getattr(np, kind)(v)

    def f(v):
        if v is None or kind == "python":
            return v
        return (np.float32 if kind == "uint8" else np.float64)(v)

    specs = [TensorSpec(n, (i(c), i(h), i(w)), f(s), i(z), i(b)) for n, c, h, w, b, z, s in case["tensors"]]
    rate = case["rate"] or {}
    res = case["residual"]
    if res is not None:
        res = dict(res, threshold=f(res["threshold"]), lam=f(res["lam"]), dead_zone=f(res["dead_zone"]))
        res = ResidualConfig(**dict(res, hysteresis=i(res["hysteresis"])))
    return CodecConfig(
        specs,
        n_bits=i(case["n_bits"]),
        structure=case["structure"],
        coder=case["coder"],
        search_range=i(case["search_range"]),
        per_channel=case["per_channel"]
        if kind == "python"
        else np.bool_(case["per_channel"])
        if case["per_channel"] in (0, 1)
        else i(case["per_channel"]),
        residual=res,
        reference=case["reference"],
        refresh_threshold=f(case["refresh_threshold"]),
        table_policy=case["table_policy"],
        key_interval=i(case["key_interval"]),
        rate_target=f(rate.get("target")),
        ladder=None if rate.get("ladder") is None else [(i(n), i(g)) for n, g in rate["ladder"]],
        fps=f(rate.get("fps", 30.0)),
        ctx_slices=i(case["ctx_slices"]),
    )


def refused(case: dict) -> bool:
    """Whether docs/bitstream.md (and CodecConfig's documented ranges) refuse the case."""
    kind, _, g = case["structure"].partition("-")
    g = int(g) if g else 1
    res, rate, slices = case["residual"], case["rate"], case["ctx_slices"]
    bad = [
        any(b < 1 or b > 64 or s in BAD_SCALES for _, _, _, _, b, _, s in case["tensors"]),
        case["n_bits"] < 2,
        g < 1 or (kind == "bi" and g % 2 == 0),
        case["search_range"] not in (3, 7, 15),
        case["per_channel"] not in (0, 1),
        case["key_interval"] < 1,
        case["refresh_threshold"] is not None and case["refresh_threshold"] < 0,
        res is not None and (res["dead_zone"] < 0 or res["hysteresis"] > 255),
        slices is not None and (not 1 <= slices <= 32 or (slices > 1 and case["coder"] != "ctx")),
    ]
    if rate and rate["ladder"]:
        for n, pg in rate["ladder"]:
            bad.append(n < 2 or pg < 1 or (kind == "intra" and pg != 1) or (kind == "bi" and pg % 2 == 0))
    return any(bad)


def make_clip(case: dict) -> list[list[np.ndarray]]:
    """The case's frames: one (C, H, W) uint8 array per tensor."""
    rng = np.random.default_rng(case["seed"])
    n, kind = case["frames"], case["clip"]
    per_tensor = []
    for _, c, h, w, *_ in case["tensors"]:
        shape = (c, h, w)
        if kind == "static":
            frames = [correlated_clip(rng, 1, shape)[0]] * n
        elif kind == "noisy":
            frames = list(rng.integers(0, 256, (n, *shape), dtype=np.uint8))
        elif kind == "moving":
            dy, dx = int(rng.integers(-3, 4)), int(rng.integers(-3, 4))
            frames = correlated_clip(rng, n, shape, dy=dy, dx=dx, noise=float(rng.choice([0.0, 1.0, 4.0])))
        elif kind == "cut":
            k = int(rng.integers(0, n + 1))
            a = correlated_clip(rng, n, shape, dx=int(rng.integers(0, 2)), noise=1.0)
            b = [correlated_clip(rng, 1, shape, noise=0.0)[0]] * n  # another scene, still
            frames = a[:k] + b[k:]
        elif kind in ("zeros", "full"):
            frames = [np.full(shape, 0 if kind == "zeros" else 255, np.uint8)] * n
        elif kind == "alternating":
            a, b = rng.integers(0, 256, (2, *shape), dtype=np.uint8)
            frames = [a if f % 2 == 0 else b for f in range(n)]
        else:  # extremes: every element 0 or 255, a new draw each frame
            frames = list((rng.integers(0, 2, (n, *shape)) * 255).astype(np.uint8))
        per_tensor.append(frames)
    return [list(f) for f in zip(*per_tensor, strict=True)]


def encode(case: dict, enc: Encoder):
    """(stream bytes, packets in order) of the case's clip."""
    frames = make_clip(case)
    if case["announce"]:
        enc.set_total_frames(case["first_index"] + len(frames))  # the index the clip ends at
    packets = []
    for f in frames:
        packets += enc.push(f)
    packets += enc.flush()
    return enc.header_bytes() + b"".join(p.to_bytes() for p in packets), packets


# --------------------------------------------------------------------------- the rules


def _same_frame(got: DecodedFrame, want, what: str) -> None:
    assert isinstance(got, DecodedFrame), f"{what}: frame {want.index} failed: {getattr(got, 'error', got)}"
    assert (got.index, got.kind, got.n_bits) == (want.index, want.kind, want.n_bits), what
    assert got.reference == want.reference, what
    for a, b in zip(got.codes, want.reconstruction, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{what}: frame {want.index}")


def packet_by_packet(data: bytes, skip=None) -> list:
    """The packet-at-a-time path (docs/bitstream.md 13): a frame or the BitstreamError."""
    decoder = Decoder(data)
    pos, out = header_length(data), []
    while pos < len(data):
        packet, pos = parse_packet(data, pos, decoder.max_payload)
        try:
            out.append(decoder.decode(packet))
        except BitstreamError as exc:
            out.append(FrameError(packet.index, exc))
    return out


def check_lockstep(packets, frames, data: bytes) -> None:
    """Rule 1: both decode paths give the encoder's reconstruction, packet order."""
    assert [p.index for p in packets] == [f.index for f in frames]
    _, decoded = decode_stream(data)
    assert len(decoded) == len(frames)
    for got, want in zip(decoded, frames, strict=True):
        _same_frame(got, want, "decode_stream")
    for got, want in zip(packet_by_packet(data), frames, strict=True):
        _same_frame(got, want, "Decoder.decode")


def _anchor_offset(kind: str, length: int) -> int:
    return (length - 1) // 2 if kind == "bi" else 0


def check_structure(case: dict, enc: Encoder, packets) -> None:
    """Rule 2: docs/bitstream.md 4 (groups, decode order, references, refresh), 7 (KEYs every
    key_interval anchors, on a refresh), 9 and 10 (the reference fields, N and group length)."""
    n = case["frames"]
    kind, g_max = enc.structure.kind, enc.structure.group
    header = enc.header
    base = case["first_index"]
    assert sorted(p.index for p in packets) == list(range(base, base + n)), "every frame once"
    n += base  # the clip's end, as a frame index
    assert packets[0].type == KEY and packets[0].flags & FLAG_GROUP_START
    rate = case["rate"]
    ladder = None
    if rate is not None:
        ladder = [tuple(p) for p in rate["ladder"] or []] or default_ladder(kind, g_max)
        assert header.group == max(g for _, g in ladder)
    groups = []
    for p in packets:
        if p.flags & FLAG_GROUP_START:
            assert p.type in (KEY, ANCHOR)
            groups.append([p])
        else:
            groups[-1].append(p)
    start = base
    since_key = None
    prev_packet = prev_anchor = None
    n_of = {}
    for gi, group in enumerate(groups):
        anchor = group[0]
        n_bits, planned = anchor.payload[0], anchor.payload[1]
        length = len(group)
        last = gi == len(groups) - 1
        assert sorted(p.index for p in group) == list(range(start, start + length)), "groups tile the clip"
        off = _anchor_offset(kind, planned)
        a = start + off
        assert anchor.index == a, "the anchor's place in its group"
        assert [p.index for p in group] == [a, *range(a - 1, start - 1, -1), *range(a + 1, start + length)]
        assert 1 <= length <= planned <= header.group
        if length < planned:  # only a streaming encoder's last group, its anchor sent, ends early
            assert last and not case["announce"] and length > off
        if kind == "intra":
            assert planned == 1
        if rate is None:
            assert n_bits == case["n_bits"]
            want = min(g_max, n - start) if case["announce"] or n - start <= _anchor_offset(kind, g_max) else g_max
            assert planned == want, "group length"
        else:
            assert n_bits in {m for m, _ in ladder}
            assert planned in {g for _, g in ladder} or (last and planned == n - start)
        refresh = {}  # side -> the latest refresh anchor on that side
        for p in group:
            side = (p.index > a) - (p.index < a)
            first = p is anchor
            if p.type == PRED:
                assert kind != "intra"
                if case["reference"] == "chain":
                    assert p.reference == p.index - side, "chain: the neighbour towards the anchor"
                else:
                    assert p.reference == refresh.get(side, a), "anchor: the group's (or side's refresh) anchor"
                n_of[p.index] = n_of[p.reference]
                assert n_of[p.index] == n_bits
            else:
                assert p.payload[0] == n_bits and p.payload[1] == planned
                if not first:  # a refresh: a KEY, only with a refresh threshold
                    assert case["refresh_threshold"] is not None and p.type == KEY
                    refresh[side] = p.index
                key = since_key is None or since_key + 1 >= case["key_interval"] or not first
                assert (p.type == KEY) == key, f"KEY schedule at frame {p.index}"
                since_key = 0 if key else since_key + 1
                if p.type == KEY:
                    assert p.reference == p.index
                elif case["coder"] == "ctx":  # 10: temporal against the frame coded before, at the same N
                    temporal = n_of[prev_packet.index] == n_bits
                    assert p.reference == (prev_packet.index if temporal else p.index)
                    assert all_modes(p, case) == (1 if temporal else 0)
                else:
                    assert p.reference == prev_anchor.index
                n_of[p.index] = n_bits
                prev_anchor = p
            prev_packet = p
        start += length
    assert start == n
    if case["refresh_threshold"] is not None:
        for f in enc.frames:
            if f.kind == "pred":
                assert f.cost_per_element <= case["refresh_threshold"]
            elif f.cost_per_element:
                assert f.cost_per_element > case["refresh_threshold"]


def all_modes(p, case: dict) -> int:
    """A ctx anchor's mode: every tensor's must be the same (section 10)."""
    # The first tensor's mode byte follows N and the group length; the others come after
    # variable sections, so only the first is read here (the reference field says the rest).
    return p.payload[2]


def depends_on(p, coder: str):
    """The frame a packet needs (docs/bitstream.md 9-11), or None for a self-contained one:
    a PRED its reference; a KEY nothing; an ANCHOR with ctx the frame it is coded against
    (none when intra: its reference names itself), with the table coders the anchor its
    derived tables come from (none when it carries them), with raw and ZVC nothing."""
    if p.type == PRED:
        return p.reference
    if p.type == KEY:
        return None
    if coder == "ctx":
        return None if p.reference == p.index else p.reference
    if entropy.uses_table(coder):
        return None if p.payload[2] == 1 else p.reference
    return None


def check_drop(case: dict, packets, frames, header: bytes) -> None:
    """Rule 3: without packet j, exactly the frames that depend on it (transitively) fail,
    and every other frame, before and after, decodes to the encoder's reconstruction."""
    j = case["drop"] % len(packets)
    lost = {packets[j].index}
    for p in packets[j + 1 :]:
        if depends_on(p, case["coder"]) in lost:
            lost.add(p.index)
    data = header + b"".join(p.to_bytes() for i, p in enumerate(packets) if i != j)
    kept = [f for i, f in enumerate(frames) if i != j]
    _, decoded = decode_stream(data)
    assert len(decoded) == len(kept)
    one_by_one = packet_by_packet(data)
    for got, alone, want in zip(decoded, one_by_one, kept, strict=True):
        if want.index in lost:
            assert isinstance(got, FrameError) and got.index == want.index, f"frame {want.index} should be lost"
            assert isinstance(alone, FrameError), f"frame {want.index} should be lost (Decoder)"
        else:
            _same_frame(got, want, f"decode_stream without frame {packets[j].index}")
            _same_frame(alone, want, f"Decoder without frame {packets[j].index}")


def run_case(case: dict) -> None:
    try:
        enc = Encoder(build_config(case), keep_reconstruction=True, first_index=case["first_index"])
    except ConfigurationError:
        assert refused(case), "a valid configuration was refused"
        return
    assert not refused(case), "an invalid configuration was accepted"
    data, packets = encode(case, enc)  # a ConfigurationError here is a late refusal: the test fails
    check_lockstep(packets, enc.frames, data)
    check_structure(case, enc, packets)
    check_drop(case, packets, enc.frames, enc.header_bytes())


@st.composite
def cases(draw):
    return draw_case(_Hyp(draw))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(case=cases())
def test_encoder_and_decoder_stay_in_lockstep_across_the_configuration_space(case):
    run_case(case)


# --------------------------------------------------------------------------- without numba

NO_NUMBA = """
import json, sys
sys.modules["numba"] = None  # import numba fails, as on the board
sys.path.insert(0, sys.argv[1])
import test_config_space as T
from temposplit.codec import _kernels as K
from temposplit.codec.encoder import Encoder
assert not K.COMPILED
for case in json.loads(sys.stdin.read()):
    data, _ = T.encode(case, Encoder(T.build_config(case), first_index=case["first_index"]))
    sys.stdout.write(data.hex() + "\\n")
"""


def _valid_cases(seed: int, count: int) -> list[dict]:
    d, out = _Rng(seed), []
    while len(out) < count:
        case = draw_case(d)
        if not refused(case):
            out.append(case)
    return out


def test_the_codec_without_numba_writes_the_same_bytes_across_drawn_configurations():
    cases_ = _valid_cases(2024, NO_NUMBA_CASES)
    here = str(Path(__file__).resolve().parent)
    run = subprocess.run(
        [sys.executable, "-c", NO_NUMBA, here], input=json.dumps(cases_), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    for got, case in zip(run.stdout.split(), cases_, strict=True):
        data, _ = encode(case, Encoder(build_config(case), first_index=case["first_index"]))
        assert bytes.fromhex(got) == data, case


# --------------------------------------------------------------------------- regressions (minimized cases)


def _stream(config: CodecConfig, frames) -> bytes:
    return Encoder(config).encode([[f] for f in frames])


@pytest.mark.parametrize(
    ("numpy_kw", "python_kw"),
    [
        # N as np.uint8: 1 << (N + 1) wrapped, the anchor alphabet came out too small, and push()
        # refused the frame ("symbols lie outside the alphabet") after construction accepted it
        (dict(n_bits=np.uint8(8), structure="intra"), dict(n_bits=8, structure="intra")),
        # p as np.uint8: -p wrapped, the vector table's prior was empty
        (dict(search_range=np.uint8(7), structure="uni-3"), dict(search_range=7, structure="uni-3")),
        # np.int64 group sizes from the ladder: the bi anchor's offset became an np.int64 and a
        # predicted frame's side a NumPy boolean difference, a TypeError in push()
        (
            dict(structure="bi-3", rate_target=0.001, ladder=[(np.int64(4), np.int64(3))]),
            dict(structure="bi-3", rate_target=0.001, ladder=[(4, 3)]),
        ),
    ],
)
def test_numpy_scalars_in_a_configuration_code_what_python_numbers_do(numpy_kw, python_kw):
    frames = correlated_clip(np.random.default_rng(5), 5, (3, 8, 8), dx=1)
    spec = TensorSpec("x", (3, 8, 8), 0.1, 0, 4)
    numpy_spec = TensorSpec("x", (np.uint8(3), np.int64(8), np.uint8(8)), np.float32(0.1), np.uint8(0), np.uint8(4))
    want = _stream(CodecConfig([spec], **python_kw), frames)
    assert _stream(CodecConfig([numpy_spec], **numpy_kw), frames) == want
    assert all(isinstance(f, DecodedFrame) for f in decode_stream(want)[1])


@pytest.mark.parametrize("per_channel", [2, 4])
def test_per_channel_other_than_a_bool_is_refused_at_construction(per_channel):
    """per_channel=2 was accepted: the header's flags took 4 * 2, the rate control bit, and
    not the per-channel one, so the decoder read shared vectors and every predicted frame failed."""
    with pytest.raises(ConfigurationError, match="per_channel"):
        Encoder(CodecConfig([TensorSpec("x", (2, 8, 8), 0.1, 0, 4)], structure="uni-3", per_channel=per_channel))


def test_losing_a_predicted_frame_the_next_ctx_anchor_does_not_use_costs_that_frame_alone():
    """docs/bitstream.md 11: with ctx a (temporal) ANCHOR depends on the frame coded just before
    it, not on every frame: uni-4 with the anchor reference, frames 0 (KEY), 1-3 (from 0), 4
    (ANCHOR against 3), 5-7 (from 4). Losing 1 costs 1 alone; losing 3 costs 4 and its group."""
    frames = correlated_clip(np.random.default_rng(0), 8, (3, 6, 6))
    config = CodecConfig([TensorSpec("x", (3, 6, 6), 0.1, 0, 2)], structure="uni-4", coder="ctx")
    enc = Encoder(config)
    packets = [p for f in frames for p in enc.push([f])] + enc.flush()
    assert [(p.kind, p.reference) for p in packets][3:5] == [("pred", 0), ("anchor", 3)]
    for drop, lost in ((1, []), (3, [4, 5, 6, 7]), (4, [5, 6, 7])):
        data = enc.header_bytes() + b"".join(p.to_bytes() for p in packets if p.index != drop)
        out = decode_stream(data)[1]
        assert [f.index for f in out if isinstance(f, FrameError)] == lost
        assert len(out) == 7


@pytest.mark.parametrize("first_index", [7, 2**32 - 5])
def test_an_announced_clip_keeps_its_groups_when_the_stream_starts_past_frame_0(first_index):
    """encode() announced the clip's length as its frame count, which set_total_frames takes for
    the frame index the clip ends at (as the edge resumed at a frame gives it): past frame 0
    every group was cut to one frame, all anchors."""
    frames = correlated_clip(np.random.default_rng(0), 5, (2, 6, 6))
    enc = Encoder(CodecConfig([TensorSpec("x", (2, 6, 6), 0.1, 0, 2)], structure="bi-3"), first_index=first_index)
    data = enc.encode([[f] for f in frames])
    # bi-3: a group of 3 (anchor in the middle), then a final group of 2 (anchor first)
    want = [(1, "key"), (0, "pred"), (2, "pred"), (3, "anchor"), (4, "pred")]
    assert [(f.index - first_index, f.kind) for f in enc.frames] == want
    assert [(f.index - first_index, f.kind) for f in decode_stream(data)[1]] == want


def test_a_resumed_encoder_takes_the_index_the_clip_ends_at_as_the_edge_gives_it():
    """The edge resumed at frame 1000 of a 1005-frame file announces 1005 (host/edge.py); read as
    a count of frames from 1000, the last group was planned as 3 with 2 frames left."""
    frames = correlated_clip(np.random.default_rng(1), 5, (2, 6, 6))
    enc = Encoder(CodecConfig([TensorSpec("x", (2, 6, 6), 0.1, 0, 2)], structure="bi-3"), first_index=1000)
    enc.set_total_frames(1005)
    for f in frames:
        enc.push([f])
    enc.flush()
    assert [(f.index - 1000, f.kind) for f in enc.frames] == [
        (1, "key"),
        (0, "pred"),
        (2, "pred"),
        (3, "anchor"),
        (4, "pred"),
    ]
