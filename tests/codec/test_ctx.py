"""The v2 coder ctx: the compiled kernels equal the readable reference; streams round-trip;
the coder keeps today's reconstruction and takes fewer bytes on real SSD cut tensors."""

import numpy as np
import pytest

from temposplit.codec import _ctx_kernels as X
from temposplit.codec import _kernels as K
from temposplit.codec import ctx, ctx_reference
from temposplit.codec.decoder import DecodedFrame, decode_stream
from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import BitstreamError
from temposplit.codec.synthetic import correlated_clip

FIXTURES = "tests/fixtures/features"


def _pair(rng, shape, n_bits, change=0.3):
    top = (1 << n_bits) - 1
    a = rng.integers(0, top + 1, shape).astype(np.uint8)
    step = rng.integers(-3, 4, shape) * (rng.random(shape) < change)
    b = np.clip(a.astype(int) + step, 0, top).astype(np.uint8)
    return a, b


@pytest.mark.parametrize("n_bits", range(2, 9))
@pytest.mark.parametrize("temporal", [False, True])
def test_anchor_kernels_equal_the_reference_both_ways(rng, n_bits, temporal):
    shape = (4, 5, 3)
    a, b = _pair(rng, shape, n_bits)
    dref = rng.integers(-1, 2, shape).astype(np.int8) if temporal else None
    ref = a if temporal else None
    z_n = int(rng.integers(0, (1 << n_bits) + 1))  # z_N may be 2^N
    fast, fast_changes = ctx.encode_anchor(b, ref, dref, n_bits, z_n)
    slow, slow_changes = ctx_reference.encode_anchor(b, ref, dref, n_bits, z_n)
    assert fast == slow
    assert (fast_changes == slow_changes).all()
    assert (ctx.decode_anchor(fast, shape, ref, dref, n_bits, z_n)[0] == b).all()
    assert (ctx_reference.decode_anchor(fast, shape, ref, dref, n_bits, z_n)[0] == b).all()


@pytest.mark.parametrize("lanes", [1, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_predicted_frame_kernels_equal_the_reference(rng, lanes, residual):
    shape, block, p, n_bits = (7, 9, 3), 3, 7, 5
    a, b = _pair(rng, shape, n_bits)
    nby, nbx = 3, 3
    mvs = np.zeros((nby, nbx, lanes, 2), np.int8)
    mvs[1, 1] = (1, -1)
    mvs[2, 0] = (-3, 0)  # still inside the map
    comp = K.compensate_per_channel if lanes > 1 else K.compensate_shared

    def compensate(v):
        pred, bad = comp(a, v if lanes > 1 else v.reshape(nby, nbx, 2), block)
        assert bad < 0
        return pred

    pred = compensate(mvs)
    flags = (rng.random((nby, nbx)) < 0.5) if residual else None
    recon = pred.copy()
    if residual:
        mask = np.repeat(np.repeat(flags, block, 0), block, 1)[: shape[0], : shape[1]]
        recon[mask] = b[mask]
    dref = rng.integers(-1, 2, shape).astype(np.int8)
    fast, changes = ctx.encode_pred(mvs, p, flags, pred, recon, dref, block, n_bits)
    slow, slow_changes = ctx_reference.encode_pred(mvs, p, flags, pred, recon, dref, block, n_bits)
    assert fast == slow and (changes == slow_changes).all()
    got = ctx_reference.decode_pred(fast, nby, nbx, lanes, p, compensate, residual, dref, block, n_bits)
    assert (got[0] == mvs).all() and (got[2] == recon).all() and (got[3] == changes).all()
    dec = ctx.SectionDecoder(fast)
    assert (dec.vectors(nby, nbx, lanes, p) == mvs).all()
    if residual:
        got_flags, got_recon, got_changes = ctx.decode_pred_residual(dec, pred, dref, block, n_bits)
        assert (got_flags == flags).all() and (got_recon == recon).all() and (got_changes == changes).all()
    dec.finish()


def test_a_carry_propagates_through_held_bytes():
    """Long runs of unlikely bins push low past 2^32 while 0xFF bytes are held back: the
    reference counts the carries; the kernels must write the same bytes."""
    rng = np.random.default_rng(5)
    carries = 0
    for trial in range(40):
        shape = (6, 6, 8)
        a = rng.integers(0, 16, shape).astype(np.uint8)
        b = a.copy()
        b.reshape(-1)[rng.random(a.size) < 0.02 * (trial % 5 + 1)] ^= 5
        enc = ctx_reference.RangeEncoder()
        seen = []
        original = enc._shift_low

        def spy(enc=enc, original=original, seen=seen):
            seen.append(enc.low >= 1 << 32)
            original()

        enc._shift_low = spy
        coder = ctx_reference.Coder()
        changes = np.zeros(shape, np.int8)
        flags, block = np.ones((1, 1), bool), 6
        ctx_reference._code_elements(enc, coder, b, a, flags, block, True, 4, 0, np.zeros(shape, np.int8), changes)
        slow = enc.finish()
        carries += sum(seen)
        assert ctx.encode_anchor(b, a, None, 4, 0)[0] == slow
    assert carries > 0


@pytest.mark.parametrize("n_bits", [2, 4, 8])
def test_edge_cases_round_trip(n_bits):
    top = (1 << n_bits) - 1
    for codes in (
        np.zeros((3, 4, 5), np.uint8),
        np.full((3, 4, 5), top, np.uint8),
        np.zeros((1, 1, 1), np.uint8),
        np.full((1, 1, 1), top, np.uint8),
        (np.indices((3, 4, 5)).sum(0) * (top // 8 + 1) % (top + 1)).astype(np.uint8),  # a ramp
    ):
        for ref in (None, np.full(codes.shape, top, np.uint8), np.zeros(codes.shape, np.uint8)):
            data, _ = ctx.encode_anchor(codes, ref, None, n_bits, 0)
            assert data == ctx_reference.encode_anchor(codes, ref, None, n_bits, 0)[0]
            assert (ctx.decode_anchor(data, codes.shape, ref, None, n_bits, 0)[0] == codes).all()


def test_a_section_must_be_used_exactly(rng):
    a, b = _pair(rng, (4, 4, 4), 4)
    data, _ = ctx.encode_anchor(b, a, None, 4, 0)
    with pytest.raises(BitstreamError):
        ctx.decode_anchor(data + b"\0", b.shape, a, None, 4, 0)
    with pytest.raises(BitstreamError):
        ctx.decode_anchor(data[:-1], b.shape, a, None, 4, 0)
    with pytest.raises(BitstreamError):
        ctx.decode_anchor(b"\xff\xff\xff\xff", b.shape, a, None, 4, 0)  # code >= range


def _stream(config, frames):
    enc = Encoder(config, keep_reconstruction=True)
    return enc, enc.encode(frames)


@pytest.mark.parametrize(
    "options",
    [
        dict(structure="intra"),
        dict(structure="uni-4", residual=ResidualConfig(threshold=0.2), reference="chain"),
        dict(structure="bi-3"),
        dict(structure="bi-5", residual=ResidualConfig(threshold=0.2, dead_zone=8), n_bits=6),
        dict(structure="uni-4", per_channel=True, residual=ResidualConfig(threshold=0.2), refresh_threshold=6.0),
        dict(structure="uni-4", residual=ResidualConfig(threshold=0.2), rate_target=0.01, fps=10.0),
    ],
)
def test_ctx_streams_decode_to_the_encoders_reconstruction(rng, options):
    shapes = [(6, 9, 11), (3, 5, 4)]
    clips = [correlated_clip(rng, 9, s, dx=1) for s in shapes]
    frames = [list(f) for f in zip(*clips, strict=True)]
    specs = [TensorSpec("a", shapes[0], 0.1, 9, 4), TensorSpec("b", shapes[1], 0.2, 0, 2)]
    enc, data = _stream(CodecConfig(specs, coder="ctx", **options), frames)
    assert data[4:6] == bytes([2, 1])  # version 2.1
    _, out = decode_stream(data)
    assert all(isinstance(d, DecodedFrame) for d in out)
    want = {f.index: f.reconstruction for f in enc.frames}
    assert sorted(d.index for d in out) == list(range(9))
    for d in out:
        assert all((a == b).all() for a, b in zip(d.codes, want[d.index], strict=True))


def test_the_first_ctx_format_2_0_is_refused():
    """2.1 changed the residual zero bins' contexts: a 2.0 stream would decode wrongly, so it
    is refused (the header's minor byte set back to 0, its CRC recomputed)."""
    import struct
    import zlib
    from pathlib import Path

    from temposplit.codec.bitstream import StreamHeader, header_length

    vectors = Path(__file__).resolve().parents[1] / "fixtures" / "vectors"
    data = bytearray((vectors / "v2-ctx-intra-conditional.tsp").read_bytes())
    StreamHeader.from_bytes(bytes(data))  # 2.1 reads
    n = header_length(bytes(data))
    data[5] = 0
    struct.pack_into("<I", data, n - 4, zlib.crc32(bytes(data[: n - 4])))
    with pytest.raises(BitstreamError, match="2.0"):
        StreamHeader.from_bytes(bytes(data))


def test_a_stream_without_ctx_stays_version_1(rng):
    frames = [[f] for f in correlated_clip(rng, 3, (4, 5, 6))]
    _, data = _stream(CodecConfig([TensorSpec("x", (4, 5, 6), 0.1, 0)], coder="zrl"), frames)
    assert data[4:6] == bytes([1, 0])


def _fixture(name):
    npz = np.load(f"{FIXTURES}/ssd-{name}.npz")
    codes = npz["codes_0"]
    return [TensorSpec(name, codes.shape[1:], float(npz["scale_0"]), int(npz["zero_point_0"]), 4)], codes


@pytest.mark.parametrize("cut", ["features.6", "features.13"])
def test_on_ssd_cuts_ctx_keeps_the_reconstruction_and_takes_fewer_bytes(cut):
    specs, codes = _fixture(cut)
    frames = [[c] for c in np.concatenate([codes, codes[::-1], codes])]  # 9 frames of real features
    sizes, recons = {}, {}
    for coder in ("zrl", "ctx"):
        options = {**PRESETS["recommended"], "coder": coder}
        enc, data = _stream(CodecConfig(specs, **options), frames)
        sizes[coder] = len(data)
        recons[coder] = [f.reconstruction[0] for f in enc.frames]
    assert all((a == b).all() for a, b in zip(recons["zrl"], recons["ctx"], strict=True))
    assert sizes["ctx"] < 0.8 * sizes["zrl"]


def test_after_a_lost_frame_ctx_decodes_again_from_the_next_key(rng):
    from temposplit.codec.bitstream import header_length, parse_packet
    from temposplit.codec.decoder import Decoder, FrameError
    from temposplit.codec.errors import ReferenceMissingError

    frames = [[f] for f in correlated_clip(rng, 12, (4, 6, 6), dx=1)]
    options = dict(structure="uni-3", coder="ctx", reference="chain", key_interval=2)
    enc, data = _stream(CodecConfig([TensorSpec("x", (4, 6, 6), 0.1, 3, 2)], **options), frames)
    dec = Decoder(data)
    pos, packets = header_length(data), []
    while pos < len(data):
        packet, pos = parse_packet(data, pos, dec.max_payload)
        packets.append(packet)
    lost = 1  # the first predicted frame
    kinds = [p.kind for p in packets]
    assert kinds[:4] == ["key", "pred", "pred", "anchor"]
    results = []
    for p in packets[:lost] + packets[lost + 1 :]:
        try:
            results.append((p.kind, dec.decode(p)))
        except ReferenceMissingError as exc:
            results.append((p.kind, FrameError(p.index, exc)))
    first_key = next(i for i, (k, _) in enumerate(results) if i > 0 and k == "key")
    assert all(isinstance(r, FrameError) for _, r in results[1:first_key])
    assert all(isinstance(r, DecodedFrame) for _, r in results[first_key:])


def _touched(temporal, residual, rng):
    """Indices of the contexts a section of random codes touches (the reference's coder)."""
    shape = (6, 7, 5)
    a, b = _pair(rng, shape, 4)
    coder = ctx_reference.Coder()
    flags, block = np.ones((1, 1), bool), 7
    dref = rng.integers(-1, 2, shape).astype(np.int8)
    ref = a if temporal else None
    enc = ctx_reference.RangeEncoder()
    changes = np.zeros(shape, np.int8)
    ctx_reference._code_elements(enc, coder, b, ref, flags, block, temporal, 4, 3, dref, changes, residual=residual)
    return {i for i, c in enumerate(coder.ctx) if c.n > 0}


def test_anchors_need_only_the_first_423_contexts_and_residuals_have_their_own_zero_contexts(rng):
    """Anchors use only the first 423 contexts; a predicted frame's residual elements take
    their zero bins from the 36 contexts after them (docs 6.2.5); the whole table fits the
    fabric's 512-entry context RAM."""
    assert ctx_reference.N_CONTEXTS == X.N_CONTEXTS == 459 <= 512
    assert ctx_reference.RES_ZERO == X.C_RES_ZERO == 423
    temporal_zero = set(range(X.C_TEMP_ZERO, X.C_TEMP_SIGN))
    for temporal in (False, True):
        assert max(_touched(temporal, False, rng)) < 423
    residual = _touched(True, True, rng)
    assert residual & set(range(423, 459))
    assert not residual & temporal_zero
    assert residual & set(range(X.C_TEMP_SIGN, X.C_TEMP_MAG))  # sign bins: the temporal contexts
