"""ctx slices (docs/bitstream.md 6.2.6): a tensor's section split by channel ranges, each
slice coded as the section of its channels alone, in a version 2.2 stream."""

import dataclasses
import os
import struct
import time
import zlib

import numpy as np
import pytest

from temposplit.codec import ctx, ctx_records, ctx_reference
from temposplit.codec.bitstream import StreamHeader, header_length
from temposplit.codec.decoder import decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec, default_ctx_slices
from temposplit.codec.errors import BitstreamError, ConfigurationError
from temposplit.codec.motion import grid_shape
from temposplit.codec.synthetic import correlated_clip

SHAPES = [(7, 9, 11), (3, 4, 6)]


def _maps(seed=1, shape=(9, 11, 7), n=4):
    rng = np.random.default_rng(seed)
    top = (1 << n) - 1
    codes = rng.integers(0, top + 1, shape).astype(np.uint8)
    ref = np.clip(codes.astype(int) + rng.integers(-1, 2, shape), 0, top).astype(np.uint8)
    dref = rng.integers(-1, 2, shape).astype(np.int8)
    return codes, ref, dref


def _cut(a, c0, c1):
    return None if a is None else np.ascontiguousarray(a[..., c0:c1])


def test_slice_bounds_split_the_channels_as_the_rule_says():
    assert ctx.slice_bounds(5, 2) == [(0, 2), (2, 5)]
    assert ctx.slice_bounds(2048, 3) == [(0, 682), (682, 1365), (1365, 2048)]
    assert ctx.slice_bounds(3, 4) == [(0, 1), (1, 2), (2, 3)]  # S > C: a channel each
    assert ctx.slice_bounds(6, 1) == [(0, 6)]


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("slices", [1, 2, 3, 7, 9])
def test_an_anchor_slice_is_the_section_of_its_channels_alone(slices, temporal):
    codes, ref, dref = _maps()
    ref, dref = (ref, dref) if temporal else (None, None)
    sections, changes = ctx.encode_anchor_slices(codes, ref, dref, 4, 8, slices)
    bounds = ctx.slice_bounds(codes.shape[2], slices)
    assert len(sections) == len(bounds)
    whole_changes = np.zeros_like(changes)
    for data, (c0, c1) in zip(sections, bounds, strict=True):
        want, part = ctx_reference.encode_anchor(_cut(codes, c0, c1), _cut(ref, c0, c1), _cut(dref, c0, c1), 4, 8)
        assert data == want
        records, _ = ctx_records.anchor_records(_cut(codes, c0, c1), _cut(ref, c0, c1), _cut(dref, c0, c1), 4, 8)
        assert ctx_records.encode_records(records) == data  # what the fabric's engines code
        whole_changes[..., c0:c1] = part
    assert (changes == whole_changes).all()
    got, got_changes = ctx.decode_anchor_slices(sections, codes.shape, ref, dref, 4, 8)
    assert (got == codes).all() and (got_changes == changes).all()


def _pred_case(seed=2, block=4):
    codes, ref, dref = _maps(seed)
    rng = np.random.default_rng(seed)
    nby, nbx = grid_shape(codes.shape[0], codes.shape[1], block)
    mvs = rng.integers(-1, 2, (nby, nbx, 1, 2)).astype(np.int8)
    flags = rng.random((nby, nbx)) < 0.5
    recon = ref.copy()
    for by, bx in zip(*np.nonzero(flags), strict=True):
        window = np.s_[by * block : (by + 1) * block, bx * block : (bx + 1) * block]
        recon[window] = codes[window]
    return mvs, flags, ref, recon, dref, block


@pytest.mark.parametrize("slices", [1, 2, 3, 7])
def test_a_predicted_frame_in_slices_codes_the_head_once_and_each_slice_its_channels(slices):
    mvs, flags, pred, recon, dref, block = _pred_case()
    keep = pred.copy()
    sections, changes = ctx.encode_pred_slices(mvs, 3, flags, pred, recon, dref, block, 4, slices)
    bounds = ctx.slice_bounds(pred.shape[2], slices)
    assert len(sections) == len(bounds)
    for k, (data, (c0, c1)) in enumerate(zip(sections, bounds, strict=True)):
        args = (mvs, 3, flags, _cut(pred, c0, c1), _cut(recon, c0, c1), _cut(dref, c0, c1), block, 4, k == 0)
        assert data == ctx_reference.encode_pred(*args)[0]
        assert ctx_records.encode_records(ctx_records.pred_records(*args)[0]) == data
    dec = ctx.SectionDecoder(sections[0])
    assert (dec.vectors(*flags.shape, 1, 3) == mvs).all()
    got_flags, got, got_changes = ctx.decode_pred_residual(dec, pred, dref, block, 4, sections[1:])
    dec.finish()
    assert (got_flags == flags).all() and (got == recon).all() and (got_changes == changes).all()
    assert (pred == keep).all()  # the prediction is not written


def test_a_slice_with_no_coded_block_is_the_empty_section():
    mvs, flags, pred, _, dref, block = _pred_case()
    none = np.zeros_like(flags)
    sections, _ = ctx.encode_pred_slices(mvs, 3, none, pred, pred, dref, block, 4, 3)
    assert sections[1:] == [ctx.empty_section()] * 2


def test_a_damaged_further_slice_is_a_bitstream_error():
    mvs, flags, pred, recon, dref, block = _pred_case()
    sections, _ = ctx.encode_pred_slices(mvs, 3, flags, pred, recon, dref, block, 4, 2)
    dec = ctx.SectionDecoder(sections[0])
    dec.vectors(*flags.shape, 1, 3)
    with pytest.raises(BitstreamError):
        ctx.decode_pred_residual(dec, pred, dref, block, 4, [sections[1] + b"\x00\x00"])


def _frames(seed=3, count=10):
    rng = np.random.default_rng(seed)
    a = correlated_clip(rng, count, SHAPES[0], dx=1)
    b = correlated_clip(rng, count, SHAPES[1], dy=1)
    return [[x, y] for x, y in zip(a, b, strict=True)]


def _encode(slices, **options):
    specs = [TensorSpec("a", SHAPES[0], 0.1, 12, 4), TensorSpec("b", SHAPES[1], 0.05, 0, 2)]
    return Encoder(CodecConfig(specs, coder="ctx", ctx_slices=slices, **options)).encode(_frames())


@pytest.mark.parametrize(
    "options",
    [
        dict(structure="uni-8", reference="chain", residual=ResidualConfig(threshold=0.3)),
        dict(structure="bi-3", per_channel=True, search_range=3, residual=ResidualConfig(threshold=0.3)),
        dict(structure="intra", key_interval=4),
        dict(structure="uni-4"),
    ],
    ids=["uni8-chain-residual", "bi3-per-channel-residual", "intra", "uni4"],
)
def test_a_stream_in_slices_decodes_to_the_codes_of_the_stream_without(options):
    plain = _encode(None, **options)
    assert plain[4:6] == b"\x02\x01" and plain[15] == 0  # S = 1: version 2.1 as before
    _, want = decode_stream(plain)
    for slices in (2, 4):
        data = _encode(slices, **options)
        header, got = decode_stream(data)
        assert data[4:6] == b"\x02\x02" and data[15] == slices and header.ctx_slices == slices
        assert len(data) > len(plain)  # each slice pays its length, termination and learning
        for f, g in zip(got, want, strict=True):
            assert f.index == g.index and all((x == y).all() for x, y in zip(f.codes, g.codes, strict=True))


def _with_byte(data: bytes, offset: int, value: int) -> bytes:
    length = struct.unpack_from("<H", data, 6)[0]
    out = bytearray(data)
    out[offset] = value
    struct.pack_into("<I", out, length - 4, zlib.crc32(bytes(out[: length - 4])))
    return bytes(out)


@pytest.mark.parametrize(
    "offset,value,message",
    [(15, 1, "ctx slices"), (15, 33, "ctx slices"), (5, 3, "newer than this decoder"), (10, 2, "without the coder")],
    ids=["one-slice", "too-many", "minor-3", "huffman"],
)
def test_a_header_with_a_bad_slice_count_or_version_is_refused(offset, value, message):
    data = _encode(2, structure="uni-4")
    with pytest.raises(BitstreamError, match=message):
        StreamHeader.from_bytes(_with_byte(data, offset, value))


def test_the_slice_byte_is_ignored_before_version_2_2():
    data = _with_byte(_encode(None, structure="uni-4"), 15, 7)
    assert StreamHeader.from_bytes(data).ctx_slices == 1


def test_the_default_slice_count_is_one_below_2_19_elements_and_the_fabric_lanes_above():
    def spec(c, h, w):
        return TensorSpec("t", (c, h, w), 0.1, 0)

    assert default_ctx_slices([spec(576, 19, 19), spec(24, 75, 75)]) == 1  # every SSD cut
    assert default_ctx_slices([spec(511, 32, 32)]) == 1  # just under 2^19
    assert default_ctx_slices([spec(512, 32, 32)]) == 2  # 2^19
    assert default_ctx_slices([spec(1024, 32, 32)]) == 4  # 2^20
    assert default_ctx_slices([spec(2048, 25, 34)]) == 6  # ResNet-50 layer4, 1.74 M: 3 engines x 2 lanes
    assert default_ctx_slices([spec(256, 200, 272)]) == 6
    huffman = CodecConfig([spec(2048, 25, 34)], coder="huffman")
    assert huffman.header().ctx_slices == 1  # only ctx has slices


@pytest.mark.parametrize("slices", [0, 33, 2.0, True, np.int64(40)])
def test_a_bad_slice_count_is_a_configuration_error(slices):
    with pytest.raises(ConfigurationError, match="ctx_slices"):
        CodecConfig([TensorSpec("t", (4, 5, 6), 0.1, 0)], coder="ctx", ctx_slices=slices).header()


def test_slices_need_the_ctx_coder():
    with pytest.raises(ConfigurationError, match="needs the coder 'ctx'"):
        CodecConfig([TensorSpec("t", (4, 5, 6), 0.1, 0)], coder="huffman", ctx_slices=2).header()


def test_a_numpy_integer_slice_count_is_taken():
    config = CodecConfig([TensorSpec("t", (4, 5, 6), 0.1, 0)], coder="ctx", ctx_slices=np.int64(2))
    assert config.header().ctx_slices == 2


def test_a_header_refuses_to_write_a_slice_count_it_could_not_read():
    header = CodecConfig([TensorSpec("t", (4, 5, 6), 0.1, 0)], coder="ctx").header()
    for slices, coder in ((33, "ctx"), (0, "ctx"), (2, "huffman")):
        with pytest.raises(ValueError, match="ctx_slices"):
            dataclasses.replace(header, ctx_slices=slices, coder=coder).to_bytes()


def test_a_predicted_frame_without_residuals_is_one_section_in_any_stream():
    plain, sliced = _encode(None, structure="uni-4"), _encode(4, structure="uni-4")
    pred = [p for p in _packets(plain) if p[4] == 3]
    assert pred and pred == [p for p in _packets(sliced) if p[4] == 3]  # PRED packets byte for byte


def _packets(data: bytes) -> list[bytes]:
    pos, out = header_length(data), []
    while pos < len(data):
        end = pos + 24 + struct.unpack_from("<I", data, pos + 16)[0]
        out.append(data[pos:end])
        pos = end
    return out


def test_slices_on_threads_give_the_bytes_and_codes_of_slices_in_turn(monkeypatch):
    codes, ref, dref = _maps(shape=(16, 20, 24))
    threaded = ctx.encode_anchor_slices(codes, ref, dref, 4, 8, 5)
    back = ctx.decode_anchor_slices(threaded[0], codes.shape, ref, dref, 4, 8)
    monkeypatch.setattr(ctx, "COMPILED", False)  # _each runs the slices in turn
    serial = ctx.encode_anchor_slices(codes, ref, dref, 4, 8, 5)
    assert threaded[0] == serial[0] and (threaded[1] == serial[1]).all()
    assert (back[0] == codes).all() and (back[1] == threaded[1]).all()


@pytest.mark.skipif(not ctx.COMPILED, reason="without numba the slices run in turn anyway")
@pytest.mark.parametrize("threads, on_pool", [(1, False), (2, True), (None, True)])
def test_slice_threads_bounds_the_threads_the_slices_run_on(monkeypatch, threads, on_pool):
    """ctx.SLICE_THREADS = 1 codes the slices in turn on the calling thread (what `bench
    codec` measures: one core), whatever the cores; None: as many as the cores."""
    import threading

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(ctx, "SLICE_THREADS", threads)
    names = ctx._each(lambda k: threading.current_thread().name, [0, 1, 2, 3])
    assert all(n.startswith("ctx-slice") for n in names) if on_pool else set(names) == {"MainThread"}, names


def test_a_failing_slice_raises_only_after_every_slice_has_stopped():
    done = []

    def work(k):
        if k == 0:
            raise BitstreamError("slice 0")
        time.sleep(0.05)
        done.append(k)
        return k

    with pytest.raises(BitstreamError, match="slice 0"):
        ctx._each(work, [0, 1, 2, 3])
    if ctx.COMPILED and len(os.sched_getaffinity(0)) > 1:
        assert sorted(done) == [1, 2, 3]
