"""The edge's ``rtl`` back end: the codec's Encoder with the fabric (Verilated RTL behind
the synchronous bridge) as its engine makes the same packets as the software encoder, on
the one-pass anchor path (one ENCODE per anchor with the fabric's histogram and STORE_REF;
no REQUANT, no LOAD_REF)."""

from pathlib import Path

import numpy as np
import pytest
import stimulus

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def _software_and_fabric(accel_build, config, frames):
    """Encode ``frames`` in software and with the fabric (Verilated, through the bridge) as
    the engine; the streams must be byte-identical with no fallback. Returns the software
    encoder and the fabric engine (its passes)."""
    from temposplit.codec.encoder import Encoder
    from temposplit.hw.backend import FabricEngine
    from temposplit.hw.driver import Accelerator
    from temposplit.hw.simbridge import BridgeTransport

    soft = Encoder(config)
    with BridgeTransport(accel_build.params, root=accel_build.dir.parent) as transport:
        engine = FabricEngine(Accelerator(transport))
        hard = Encoder(config, engine=engine)
        s_out, h_out = soft.encode(frames), hard.encode(frames)
    assert not engine.fallbacks, engine.fallbacks
    assert h_out == s_out
    return soft, engine


def test_rtl_encoder_matches_software(accel_build):
    from temposplit.codec.encoder import CodecConfig, TensorSpec

    rng = np.random.default_rng(7)
    z8 = 4
    frames = []
    a, b = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(1, 0))
    _, c = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(0, -1))
    d, e = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(-1, 1))
    for f in (a, b, c, d, e):
        frames.append([np.ascontiguousarray(f.transpose(2, 0, 1))])  # (C, H, W) as M1 gives
    config = CodecConfig(
        tensors=[TensorSpec("t", (16, 12, 14), 0.05, z8, block=4)],
        n_bits=4,
        structure="bi-3",
        coder="huffman",
        search_range=7,
    )
    soft, engine = _software_and_fabric(accel_build, config, frames)
    # 2 anchors (the first a KEY: its own table, so a HISTOGRAM pass first, which stores
    # the reference), 3 predicted frames searched over the reference each anchor stored
    assert dict(engine.passes) == {"HISTOGRAM": 1, "ENCODE": 2, "MOTION": 3}, engine.passes


def test_rtl_encoder_pads_a_reference_whose_z_n_is_2_to_the_n_with_z_n(accel_build):
    """C = 5 (padded to the 8 lanes), z8 = 250 at N = 4: z_N = 16 = 2^N, which the
    requantizer clamps to 15, so the padded reference is stored by a LOAD_REF of the codes
    padded with z_N (a REQUANT pass would store pads of 15, each then costing 16 in MOTION).
    The costs feed the refresh decision (threshold 23 between the golden mean cost, about
    18, and what the padding would add, 9.6 an element): the stream is the software
    encoder's, byte for byte, with the same frame kinds and mean costs."""
    from temposplit.codec.encoder import CodecConfig, TensorSpec
    from temposplit.codec.quantize import lut, zero_point_n

    z8, n_bits = 250, 4
    assert zero_point_n(z8, n_bits) == 1 << n_bits and lut(z8, n_bits)[z8] == (1 << n_bits) - 1
    rng = np.random.default_rng(3)
    a, b = stimulus.moving_pair(rng, 12, 12, 5, z8, shift=(1, 0))
    _, c = stimulus.moving_pair(rng, 12, 12, 5, z8, shift=(0, -1))
    d, e = stimulus.moving_pair(rng, 12, 12, 5, z8, shift=(-1, 1))
    frames = [[np.ascontiguousarray(f.transpose(2, 0, 1))] for f in (a, b, c, d, e)]
    config = CodecConfig(
        tensors=[TensorSpec("t", (5, 12, 12), 0.05, z8, block=4)],
        n_bits=n_bits,
        structure="uni-3",
        coder="huffman",
        search_range=7,
        refresh_threshold=23.0,
    )
    soft, engine = _software_and_fabric(accel_build, config, frames)
    assert [f.kind for f in soft.frames] == ["key", "pred", "pred", "anchor", "pred"]
    assert all(13 < f.cost_per_element < 23 for f in soft.frames if f.kind == "pred")
    # the KEY's HISTOGRAM and the anchor's ENCODE each store the reference, padded by a LOAD_REF
    assert dict(engine.passes) == {"HISTOGRAM": 1, "ENCODE": 2, "LOAD_REF (padded reference)": 2, "MOTION": 3}


FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "features"


def test_rtl_ctx_encoder_matches_software(accel_build):
    """The recommended preset (coder ctx, chain, residuals, N = 5) with groups of 2 on a real
    SSD map (the features.10 fixture, C = 33, not a multiple of the lanes: its reference
    stored padded): a KEY (intra) and two temporal anchors, each one CTX pass,
    byte-identical to the software encoder; no ctx fallback. (C a multiple of the lanes,
    features.6's C = 8 among them: tb_accel's test_ctx_anchor and test_ctx_cycles.)"""
    from temposplit.codec.encoder import PRESETS, CodecConfig, TensorSpec

    for cut, extra in (("features.10", {"REQUANT (padded reference)": 3}),):
        fx = np.load(FIXTURES / f"ssd-{cut}.npz")
        codes, z8, scale = fx["codes_0"], int(fx["zero_point_0"]), float(fx["scale_0"])
        frames = [[codes[i]] for i in (0, 1, 2, 1, 0)]
        preset = dict(PRESETS["recommended"], structure="uni-2")
        config = CodecConfig(tensors=[TensorSpec(cut, codes.shape[1:], scale, z8, block=4)], **preset)
        assert config.coder == "ctx"
        soft, engine = _software_and_fabric(accel_build, config, frames)
        assert [f.kind for f in soft.frames] == ["key", "pred", "anchor", "pred", "anchor"]
        # frames 0, 2, 4 are anchors (0 a KEY, intra; 2 and 4 temporal against the frame
        # before), 1 and 3 predicted from them (their anchor's codes on chip: no LOAD_REF),
        # their sections one CTX pass of value records each
        assert dict(engine.passes) == {"CTX": 3, "MOTION": 2, "CTX (records)": 2, **extra}, engine.passes


def test_rtl_ctx_encoder_codes_an_anchor_whose_buffers_are_refused_in_software(accel_build):
    """The second anchor's DMA buffers refused (the board's CMA pool full for a moment): the
    driver refuses before its START, that anchor is coded in software, and the predicted
    frame after it is searched over that anchor's codes, loaded first (LOAD_REF: the chip
    still holds the KEY's). The stream is the software encoder's, byte for byte. Before, the
    refused anchor stopped the encoder."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, TensorSpec
    from temposplit.hw.backend import FabricEngine
    from temposplit.hw.driver import Accelerator, AcceleratorLimitError
    from temposplit.hw.simbridge import BridgeTransport

    fx = np.load(FIXTURES / "ssd-features.10.npz")
    codes, z8, scale = fx["codes_0"], int(fx["zero_point_0"]), float(fx["scale_0"])
    frames = [[codes[i]] for i in (0, 1, 2, 1)]
    preset = dict(PRESETS["recommended"], structure="uni-2")
    config = CodecConfig(tensors=[TensorSpec("features.10", codes.shape[1:], scale, z8, block=4)], **preset)
    with BridgeTransport(accel_build.params, root=accel_build.dir.parent) as transport:
        engine = FabricEngine(Accelerator(transport))
        refuse, calls = [False], []

        def reserve(nbytes_in, max_out):
            if refuse[0]:
                refuse[0] = False
                raise AcceleratorLimitError("the DMA's input buffer could not be allocated (test)")

        transport.reserve = reserve
        ctx_anchor = engine.accel.ctx_anchor

        def second_refused(*args, **kwargs):
            calls.append(1)
            refuse[0] = len(calls) == 2
            return ctx_anchor(*args, **kwargs)

        engine.accel.ctx_anchor = second_refused
        hard = Encoder(config, engine=engine).encode(frames)
    soft = Encoder(config)
    assert hard == soft.encode(frames)
    assert [f.kind for f in soft.frames] == ["key", "pred", "anchor", "pred"]
    assert dict(engine.fallbacks) == {"ctx anchor over the fabric's limits": 1}
    assert dict(engine.passes) == {
        "CTX": 1,
        "REQUANT (padded reference)": 1,
        "LOAD_REF": 1,
        "MOTION": 2,
        "CTX (records)": 2,
    }


def test_rtl_ctx_encoder_codes_wide_anchors_as_records(accel_build):
    """A map whose row (W x C = 18,432) exceeds the anchor coder's row buffer (16,384):
    its anchors are coded from value records too (then loaded as the reference, LOAD_REF),
    byte-identical to the software encoder, with no fallback."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, TensorSpec
    from temposplit.codec.synthetic import correlated_clip

    shape = (2048, 2, 9)
    assert shape[2] * shape[0] > accel_build.params.line_elements  # W x C (the spec is C, H, W)
    frames = [[f] for f in correlated_clip(np.random.default_rng(5), 3, shape)]
    config = CodecConfig(
        tensors=[TensorSpec("wide", shape, 0.05, 0, block=2)], **dict(PRESETS["recommended"], structure="uni-2")
    )
    soft, engine = _software_and_fabric(accel_build, config, frames)
    assert [f.kind for f in soft.frames] == ["key", "pred", "anchor"]
    assert dict(engine.passes) == {"CTX (records)": 3, "LOAD_REF": 2, "MOTION": 1}, engine.passes


def test_rtl_ctx_encoder_codes_slices_side_by_side(accel_build):
    """A version 2.2 stream (ctx slices, docs/bitstream.md 6.2.6): the features.10 fixture
    (C = 33) in 7 slices through the recommended preset. Every anchor and predicted frame
    is one CTX pass of value records whose slices the fabric's lane units (3 engines of 2
    lanes: the 7th slice follows the 1st on its unit) code side by side (the anchors then
    loaded as the reference), byte-identical to the software encoder."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, TensorSpec

    assert accel_build.params.ctx_units == 6
    fx = np.load(FIXTURES / "ssd-features.10.npz")
    codes, z8, scale = fx["codes_0"], int(fx["zero_point_0"]), float(fx["scale_0"])
    frames = [[codes[i]] for i in (0, 1, 2, 1, 0)]
    preset = dict(PRESETS["recommended"], structure="uni-2", ctx_slices=7)
    config = CodecConfig(tensors=[TensorSpec("features.10", codes.shape[1:], scale, z8, block=4)], **preset)
    soft, engine = _software_and_fabric(accel_build, config, frames)
    assert soft.header_bytes()[4:6] == b"\x02\x02" and soft.header.ctx_slices == 7
    assert [f.kind for f in soft.frames] == ["key", "pred", "anchor", "pred", "anchor"]
    assert dict(engine.passes) == {"CTX (records)": 5, "LOAD_REF": 3, "MOTION": 2}, engine.passes


VECTORS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "vectors"


def _coder(coder: str):
    return (
        {f"{coder} anchor", f"{coder} section"},  # code_anchor's fallback calls anchor_section: both counted
        f"coder {coder}: the fabric codes Huffman (ENCODE) and ctx (CTX) sections only; {coder} anchors are "
        "coded by the golden software",
    )


_PER_CHANNEL = (
    {"per-channel TSS"},
    "per-channel vectors: MOTION searches one vector per block shared by all channels; a vector per "
    "channel is searched by the golden software",
)

# The frozen streams the fabric cannot code alone: name -> (the engine.fallbacks kinds it must
# show, why). Every other stream is coded with no fallback. Rate control (N changing in mid
# stream, a refresh KEY), ctx slices and p = 15 need none.
NOT_ON_FABRIC = {
    "v1-raw-intra": _coder("raw"),
    "v1-zvc-uni2": _coder("zvc"),
    "v1-zrl-uni8-chain-residual": _coder("zrl"),
    "v2-ctx-bi3-per-channel": _PER_CHANNEL,
    "v2.2-ctx-slices4-bi3-per-channel": _PER_CHANNEL,
    "v1-zvc-uni3-residual-no-zero": _coder("zvc"),
    "v1-huffman-uni4-per-channel-residual-no-zero": _PER_CHANNEL,
    "v1-zrl-intra-no-zero-long-runs": _coder("zrl"),
}


def test_rtl_encoder_writes_the_frozen_vectors(accel_build):
    """Every frozen stream of tests/fixtures/vectors (docs/bitstream.md section 14): its input
    frames and CodecConfig as codec/vectors.py makes them, coded with the fabric as the engine,
    are the frozen NAME.tsp byte for byte. A stream the fabric cannot code alone is named in
    NOT_ON_FABRIC with the fallbacks it must show (its bytes still the frozen ones); every
    other stream falls back for nothing, so a new vector is never skipped silently. The
    streams share one simulation (a fresh driver and engine each)."""
    from temposplit.codec.encoder import Encoder
    from temposplit.codec.vectors import STREAMS, stream_input
    from temposplit.hw.backend import FabricEngine
    from temposplit.hw.driver import Accelerator
    from temposplit.hw.simbridge import BridgeTransport

    assert set(NOT_ON_FABRIC) <= set(STREAMS), set(NOT_ON_FABRIC) - set(STREAMS)
    wrong, fell_back, idle = {}, {}, []
    with BridgeTransport(accel_build.params, root=accel_build.dir.parent) as transport:
        for name, options in STREAMS.items():
            config, frames = stream_input(options)
            engine = FabricEngine(Accelerator(transport))
            data = Encoder(config, engine=engine).encode(frames)
            frozen = (VECTORS / f"{name}.tsp").read_bytes()
            if data != frozen:
                at = next(
                    (i for i, (a, b) in enumerate(zip(data, frozen, strict=False)) if a != b),
                    min(len(data), len(frozen)),
                )
                wrong[name] = f"{len(data)} bytes against {len(frozen)}, first difference at byte {at}"
            if engine.fallbacks:
                fell_back[name] = set(engine.fallbacks)
            elif not engine.passes:
                idle.append(name)
    assert not wrong, wrong
    assert not idle, f"no fabric operation: {idle}"
    assert fell_back == {name: kinds for name, (kinds, _) in NOT_ON_FABRIC.items()}
