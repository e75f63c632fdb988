import numpy as np
import pytest

from temposplit.codec import quantize
from temposplit.codec.decoder import DecodedFrame, Decoder, FrameError, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import ConfigurationError
from temposplit.codec.motion import grid_shape, motion_compensate
from temposplit.codec.structure import Structure, group_plan
from temposplit.codec.synthetic import correlated_clip

SHAPES = [(16, 19, 23), (8, 10, 10)]


def two_tensor_clip(rng, n):
    a = correlated_clip(rng, n, SHAPES[0], dx=1)
    b = correlated_clip(rng, n, SHAPES[1], dy=1)
    return [[x, y] for x, y in zip(a, b, strict=True)]


def specs(block=(4, 3)):
    return [TensorSpec("a", SHAPES[0], 0.1, 20, block[0]), TensorSpec("b", SHAPES[1], 0.05, 3, block[1])]


def run(config, frames, total=None):
    enc = Encoder(config, keep_reconstruction=True)
    if total:
        enc.set_total_frames(total)
    data = enc.header_bytes()
    for f in frames:
        for p in enc.push(f):
            data += p.to_bytes()
    for p in enc.flush():
        data += p.to_bytes()
    return enc, data


def test_structures_follow_the_spec():
    assert Structure.parse("bi-3").groups(8) == [(0, 3), (3, 3), (6, 2)]
    s = Structure.parse("bi-5")
    assert [s.anchor_offset(n) for n in (5, 4, 3, 2, 1)] == [2, 1, 1, 0, 0]
    assert Structure.parse("uni-2").anchor_offset(2) == 0
    assert group_plan(6, 5, 2, "anchor") == [(8, None), (7, 8), (6, 8), (9, 8), (10, 8)]
    assert group_plan(6, 5, 2, "chain") == [(8, None), (7, 8), (6, 7), (9, 8), (10, 9)]
    for bad in ("bi-4", "uni-0", "tri-3", ""):
        with pytest.raises(ConfigurationError):
            Structure.parse(bad)


@pytest.mark.parametrize("structure", ["intra", "uni-2", "uni-4", "bi-3", "bi-5"])
@pytest.mark.parametrize("coder", ["raw", "zvc", "huffman", "zrl"])
def test_anchors_decode_exactly_and_predicted_frames_equal_the_compensated_anchor(rng, structure, coder):
    frames = two_tensor_clip(rng, 11)
    enc, data = run(CodecConfig(specs(), n_bits=5, structure=structure, coder=coder), frames, total=11)
    header, out = decode_stream(data)
    assert sorted(d.index for d in out) == list(range(11))
    decoded = {d.index: d for d in out}
    kinds = {}
    for d in out:
        assert isinstance(d, DecodedFrame)
        kinds[d.index] = d.kind
        if d.kind != "pred":
            for codes, q8, t in zip(d.codes, frames[d.index], header.tensors, strict=True):
                assert (codes == quantize.requantize(q8, t.zero_point, 5)).all()
        else:
            ref = decoded[d.reference]
            assert ref.kind != "pred"  # the thesis's mode: predicted from the anchor
            vectors = next(e.vectors for e in enc.frames if e.index == d.index)
            for codes, anchor, t, mvs in zip(d.codes, ref.codes, header.tensors, vectors, strict=True):
                expect = motion_compensate(anchor.transpose(1, 2, 0), mvs, t.block).transpose(2, 0, 1)
                assert (codes == expect).all()
    s = Structure.parse(structure)
    for start, length in s.groups(11):
        anchor = start + s.anchor_offset(length)
        assert kinds[anchor] in ("key", "anchor")
        assert all(kinds[f] == "pred" for f in range(start, start + length) if f != anchor)


@pytest.mark.parametrize("reference", ["anchor", "chain"])
@pytest.mark.parametrize("mode", ["threshold", "rd"])
def test_residual_mode_is_closed_loop_and_improves_fidelity(rng, reference, mode):
    frames = two_tensor_clip(rng, 9)
    base = CodecConfig(specs(), n_bits=6, structure="uni-9", coder="zrl", reference=reference)
    plain_enc, plain = run(base, frames)
    res_cfg = CodecConfig(**{**base.__dict__, "residual": ResidualConfig(mode=mode, threshold=0.3, lam=1.0)})
    res_enc, coded = run(res_cfg, frames)
    _, out = decode_stream(coded)
    recon = {e.index: e.reconstruction for e in res_enc.frames}
    for d in out:  # the decoder rebuilds exactly what the encoder predicted from
        for a, b in zip(d.codes, recon[d.index], strict=True):
            assert (a == b).all()

    def error(enc):
        errs = []
        for e in enc.frames:
            for r, q8, t in zip(e.reconstruction, frames[e.index], specs(), strict=True):
                errs.append(np.abs(r.astype(int) - quantize.requantize(q8, t.zero_point, 6)).mean())
        return float(np.mean(errs))

    assert error(res_enc) < error(plain_enc)
    assert len(coded) > len(plain)
    assert sum(e.coded_blocks for e in res_enc.frames) > 0


def test_residual_threshold_is_per_active_element(rng):
    """On a sparse (ReLU-like) tensor a block's error is diluted by its zeros: the threshold is
    scaled by the frame's activity, so a block whose active elements are off by more than the
    threshold is coded, and one off by less is not, whatever the share of zeros."""
    c, h, w, b = 8, 16, 16, 4
    x = rng.integers(1, 200, (c, h, w)).astype(np.uint8)
    x[rng.random((c, h, w)) < 0.8] = 0  # z8 = 0: 80 % zeros
    active = x != 0
    y = x.copy()
    blocks = [(0, 0), (1, 2), (3, 3)]  # off by 3 8-bit steps on their active elements
    for by, bx in blocks:
        sl = (slice(None), slice(by * b, by * b + b), slice(bx * b, bx * b + b))
        y[sl] = np.where(active[sl], x[sl] + 3, 0)
    y[:, 8:12, 0:4] = np.where(active[:, 8:12, 0:4], x[:, 8:12, 0:4] + 1, 0)  # off by 1: below the threshold
    spec = [TensorSpec("relu", (c, h, w), 0.05, 0, b)]
    cfg = CodecConfig(spec, n_bits=8, structure="uni-2", coder="zrl", residual=ResidualConfig("threshold", 2.0))
    enc, _ = run(cfg, [[x], [y]])
    pred = enc.frames[1]
    assert pred.kind == "pred" and not pred.vectors[0].any()  # the zero vector: random content
    # Block means over all elements are about 3 x 0.2 = 0.6 < 2: a plain mean would code nothing.
    assert pred.coded_blocks == len(blocks)
    assert (
        pred.reconstruction[0]
        == np.where(
            np.isin(np.arange(h)[:, None] // b * 4 + np.arange(w) // b, [by * 4 + bx for by, bx in blocks]), y, x
        )
    ).all()


def test_dead_zone_drops_small_residuals_and_stays_closed_loop(rng):
    frames = two_tensor_clip(rng, 9)
    base = CodecConfig(specs(), n_bits=6, structure="uni-9", coder="zrl", reference="chain")

    def with_residual(**kw):
        return CodecConfig(**{**base.__dict__, "residual": ResidualConfig("threshold", 0.3, **kw)})

    exact_enc, exact = run(with_residual(), frames)
    _, below = run(with_residual(dead_zone=3.9), frames)  # under one 6-bit step (4 8-bit steps)
    assert below == exact
    dz_enc, dz = run(with_residual(dead_zone=4), frames)  # drops +-1 at N = 6
    assert len(dz) < len(exact)
    _, out = decode_stream(dz)
    recon = {e.index: e.reconstruction for e in dz_enc.frames}
    for d in out:  # the decoder rebuilds what the encoder predicted from
        for a, b in zip(d.codes, recon[d.index], strict=True):
            assert (a == b).all()
    assert sum(e.coded_blocks for e in dz_enc.frames) <= sum(e.coded_blocks for e in exact_enc.frames)
    with pytest.raises(ConfigurationError, match="dead zone"):
        ResidualConfig(dead_zone=-1)


def test_dead_zone_keeps_large_residuals_and_skips_blocks_left_empty(rng):
    c, h, w, b = 8, 16, 16, 4
    x = rng.integers(20, 230, (c, h, w)).astype(np.uint8)
    y = x.astype(np.int16)
    y[:, 0:4, 0:4] += 1  # flicker only: dropped, the block skipped
    y[:, 4:8, 8:12] += 3  # kept
    y[:, 12:16, 4:8] += np.where(rng.random((c, 4, 4)) < 0.5, 1, -5).astype(np.int16)  # mixed
    y = y.astype(np.uint8)
    spec = [TensorSpec("t", (c, h, w), 0.05, 128, b)]
    res = ResidualConfig("threshold", 0.1, dead_zone=2)
    cfg = CodecConfig(spec, n_bits=8, structure="uni-2", coder="zrl", residual=res)
    enc, data = run(cfg, [[x], [y]])
    pred = enc.frames[1]
    assert pred.kind == "pred" and not pred.vectors[0].any()
    assert pred.coded_blocks == 2
    want = x.astype(np.int16)
    want[:, 4:8, 8:12] = y[:, 4:8, 8:12]
    mixed = y[:, 12:16, 4:8].astype(np.int16)
    want[:, 12:16, 4:8] = np.where(mixed < x[:, 12:16, 4:8], mixed, x[:, 12:16, 4:8])
    assert (pred.reconstruction[0] == want).all()
    _, out = decode_stream(data)
    assert (out[1].codes[0] == want).all()


def test_refresh_turns_a_badly_predicted_frame_into_an_anchor(rng):
    frames = two_tensor_clip(rng, 6)
    for f in range(3, 6):  # a scene cut before frame 3
        frames[f] = [np.ascontiguousarray(np.flip(x, axis=(1, 2))) for x in frames[f]]
    cfg = CodecConfig(specs(), structure="uni-6", refresh_threshold=15.0)
    enc, data = run(cfg, frames)
    kinds = [e.kind for e in enc.frames]
    assert kinds[0] == "key" and kinds[3] == "key" and kinds.count("pred") == 4
    assert [e.reference for e in enc.frames][4] == 3  # later frames use the refresh anchor
    _, out = decode_stream(data)
    assert all(isinstance(d, DecodedFrame) for d in out)


def test_rate_control_meets_a_target(rng):
    frames = two_tensor_clip(rng, 30)
    fps = 30.0
    raw_rate = sum(np.prod(s) for s in SHAPES) * fps / 1e6  # MB/s of 8-bit features
    for fraction in (0.5, 0.2):
        cfg = CodecConfig(specs(), structure="bi-15", coder="huffman", rate_target=raw_rate * fraction, fps=fps)
        enc, data = run(cfg, frames)
        rate = sum(e.packet_bytes for e in enc.frames) / len(frames) * fps / 1e6
        # Met from both sides: the controller reaches ~0.99x and ~0.9x of these targets, while
        # always taking the ladder's cheapest point would land ~17x under the 0.5 target.
        assert raw_rate * fraction * 0.75 <= rate <= raw_rate * fraction * 1.15, (fraction, rate)
        _, out = decode_stream(data)
        assert all(isinstance(d, DecodedFrame) for d in out) and len(out) == 30
    ns = {e.n_bits for e in enc.frames}
    assert ns <= set(range(4, 9))


def test_per_channel_vectors_round_trip(rng):
    frames = two_tensor_clip(rng, 5)
    enc, data = run(CodecConfig(specs(), structure="bi-5", per_channel=True), frames)
    header, out = decode_stream(data)
    assert header.per_channel
    assert sorted(d.index for d in out) == list(range(5))
    recon = {e.index: e.reconstruction for e in enc.frames}
    decoded = {d.index: d for d in out}
    differ = False
    for e in enc.frames:
        if e.kind != "pred":
            continue
        d = decoded[e.index]
        for codes, anchor, t, mvs in zip(d.codes, decoded[d.reference].codes, header.tensors, e.vectors, strict=True):
            assert mvs.shape == (*grid_shape(t.height, t.width, t.block), t.channels, 2)  # per block and channel
            differ |= bool((mvs != mvs[:, :, :1]).any())
            expect = motion_compensate(anchor.transpose(1, 2, 0), mvs, t.block).transpose(2, 0, 1)
            assert (codes == expect).all()
    assert differ  # the channels' vectors are not all one shared vector
    for d in out:
        for a, b in zip(d.codes, recon[d.index], strict=True):
            assert (a == b).all()


def test_bi_structure_has_one_frame_of_latency(rng):
    frames = two_tensor_clip(rng, 4)
    enc = Encoder(CodecConfig(specs(), structure="bi-3"))
    assert enc.push(frames[0]) == []
    out = enc.push(frames[1])
    assert [(p.kind, p.index) for p in out] == [("key", 1), ("pred", 0)]
    assert [(p.kind, p.index) for p in enc.push(frames[2])] == [("pred", 2)]
    assert enc.push(frames[3]) == []
    assert [(p.kind, p.index) for p in enc.flush()] == [("anchor", 3)]


def test_a_lost_predicted_frame_costs_only_that_frame(rng):
    frames = two_tensor_clip(rng, 9)
    enc = Encoder(CodecConfig(specs(), structure="bi-3"))
    header = enc.header_bytes()
    packets = [p for f in frames for p in enc.push(f)] + enc.flush()
    lost = next(i for i, p in enumerate(packets) if p.kind == "pred" and p.index == 3)
    data = header + b"".join(p.to_bytes() for i, p in enumerate(packets) if i != lost)
    _, out = decode_stream(data)
    assert sorted(d.index for d in out) == [i for i in range(9) if i != 3]
    assert all(isinstance(d, DecodedFrame) for d in out)


def test_a_lost_anchor_breaks_its_group_and_decoding_resumes_at_a_key(rng):
    frames = two_tensor_clip(rng, 15)
    enc = Encoder(CodecConfig(specs(), structure="bi-3", key_interval=3))
    header = enc.header_bytes()
    packets = [p for f in frames for p in enc.push(f)] + enc.flush()
    assert [p.kind for p in packets if p.is_anchor] == ["key", "anchor", "anchor", "key", "anchor"]
    blob = bytearray(header + b"".join(p.to_bytes() for p in packets))
    second_anchor = next(p for p in packets if p.kind == "anchor")
    offset = len(header) + sum(len(p) for p in packets[: packets.index(second_anchor)])
    blob[offset + 30] ^= 0xFF  # damage the payload of frame 4's anchor
    _, out = decode_stream(bytes(blob))
    good = {d.index for d in out if isinstance(d, DecodedFrame)}
    errors = [d for d in out if isinstance(d, FrameError)]
    assert good == {0, 1, 2, 9, 10, 11, 12, 13, 14}  # group 3..5 and the anchors deriving from it are lost
    assert len(errors) == 6


def test_decoder_refuses_a_stream_from_another_version(rng):
    enc = Encoder(CodecConfig(specs()))
    data = bytearray(enc.header_bytes())
    data[4] = 9
    import zlib

    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    from temposplit.codec.errors import BitstreamError

    with pytest.raises(BitstreamError, match="version"):
        Decoder(bytes(data))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_bits": 9}, "N"),
        ({"structure": "bi-4"}, "odd"),
        ({"coder": "lz4"}, "coder"),
        ({"search_range": 5}, "search range"),
        ({"reference": "previous"}, "reference"),
        ({"tensors": []}, "at least one tensor"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(kwargs, message):
    cfg = CodecConfig(**{"tensors": specs(), **kwargs})
    with pytest.raises(ConfigurationError, match=message):
        Encoder(cfg)


def test_frames_of_the_wrong_shape_or_type_are_refused(rng):
    enc = Encoder(CodecConfig(specs()))
    frame = two_tensor_clip(rng, 1)[0]
    with pytest.raises(ConfigurationError, match="shape"):
        enc.push([frame[0][:, :5], frame[1]])
    with pytest.raises(ConfigurationError, match="uint8"):
        enc.push([frame[0].astype(np.float32), frame[1]])
    with pytest.raises(ConfigurationError, match="tensors"):
        enc.push([frame[0]])


def test_an_engine_takes_over_requantization_coding_and_search(rng):
    from temposplit.codec.encoder import SoftwareEngine

    class Counting(SoftwareEngine):
        calls = {"requantize": 0, "anchor_section": 0, "motion_search": 0}

        def requantize(self, *a):
            self.calls["requantize"] += 1
            return super().requantize(*a)

        def anchor_section(self, *a):
            self.calls["anchor_section"] += 1
            return super().anchor_section(*a)

        def motion_search(self, *a):
            self.calls["motion_search"] += 1
            return super().motion_search(*a)

    frames = two_tensor_clip(rng, 6)
    cfg = CodecConfig(specs(), structure="bi-3")
    _, reference = run(cfg, frames)
    engine = Counting()
    enc = Encoder(cfg, engine=engine)
    data = enc.header_bytes() + b"".join(p.to_bytes() for f in frames for p in enc.push(f))
    data += b"".join(p.to_bytes() for p in enc.flush())
    assert data == reference
    assert engine.calls == {"requantize": 4, "anchor_section": 4, "motion_search": 8}


def test_rate_control_scales_the_residual_threshold_to_meet_a_target(rng):
    # With coded residuals at a low threshold, N and g alone cannot reach a tight target.
    frames = two_tensor_clip(rng, 48)
    fps = 30.0
    raw_rate = sum(np.prod(s) for s in SHAPES) * fps / 1e6
    target = raw_rate * 0.12
    cfg = CodecConfig(
        specs(),
        structure="uni-16",
        coder="zrl",
        reference="chain",
        fps=fps,
        residual=ResidualConfig(threshold=0.05),
        rate_target=target,
    )
    enc, data = run(cfg, frames)
    second_half = enc.frames[len(enc.frames) // 2 :]
    rate = sum(e.packet_bytes for e in second_half) / len(second_half) * fps / 1e6
    # Met from both sides (the controller reaches ~0.88x): a threshold scaled past what the
    # target needs would drop residuals it could afford.
    assert target * 0.75 <= rate <= target * 1.2, (rate, target)
    assert max(enc.rate.gains.values()) > 1.0
    _, out = decode_stream(data)
    assert len(out) == 48 and all(isinstance(d, DecodedFrame) for d in out)


@pytest.mark.parametrize(
    "options",
    [
        {"structure": "uni-64", "coder": "raw"},
        {"structure": "uni-64", "coder": "ctx", "reference": "chain"},
        {"structure": "bi-31", "coder": "zrl", "reference": "chain", "refresh_threshold": 0.5},
    ],
    ids=["anchor", "ctx-chain", "bi-chain-refresh"],
)
def test_a_long_group_holds_only_the_reconstructions_later_frames_reference(options):
    """The encoder kept every reconstruction of the group until it ended: a group of 255
    frames of a stream's largest tensor held 4 GiB (8 with ctx's change maps). Now the
    group's anchor, its refresh anchors and the frame just coded, and each frame decodes to
    the encoder's own reconstruction as before."""
    from temposplit.codec.decoder import decode_stream

    frames = correlated_clip(np.random.default_rng(4), 60, (8, 12, 16), dx=1, noise=3.0)
    config = CodecConfig([TensorSpec("x", (8, 12, 16), 0.05, 3, 4)], n_bits=4, **options)
    enc = Encoder(config, keep_reconstruction=True)
    held = []
    packets = []
    for f in frames:
        packets += enc.push([f])
        if enc.group is not None:
            held.append(len(enc.group.recon))
    packets += enc.flush()
    assert max(held) <= 4, max(held)  # the anchor, a refresh anchor a side, the frame just coded
    _, decoded = decode_stream(enc.header_bytes() + b"".join(p.to_bytes() for p in packets))
    ours = {r.index: r.reconstruction for r in enc.frames}
    assert len(decoded) == 60 and all(np.array_equal(d.codes[0], ours[d.index][0]) for d in decoded)
