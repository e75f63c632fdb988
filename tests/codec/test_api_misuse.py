"""The codec as a library user and a command-line user meet it: findings of a robustness probe.

Each test names the behaviour it holds: a clear, typed error (``ConfigurationError``,
``BitstreamError``) and nothing lost, never a wrong picture or a stream the decoder refuses.
"""

import dataclasses
import os

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features
from temposplit.codec.bench import parse_shapes
from temposplit.codec.decoder import Decoder, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import ConfigurationError
from temposplit.codec.ratecontrol import RateController
from temposplit.codec.structure import Structure
from temposplit.codec.synthetic import correlated_clip


def _spec(shape=(4, 8, 8), name="x"):
    return TensorSpec(name, shape, 0.05, 0, 4)


def _feature_file(path, frames: int, shape=(4, 8, 8)):
    """A feature file of ``frames`` synthetic frames (scale 0.1, zero point 0, B = 4)."""
    codes = np.stack(correlated_clip(np.random.default_rng(0), frames, shape))
    features.save(str(path), features.FeatureClip(["t"], [codes], [0.1], [0], [4]))
    return path


def _one_line_error(capsys, argv, *needles) -> None:
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "internal error" not in lines[0], lines
    assert all(n in lines[0] for n in needles), lines


# ---------------------------------------------------------------- frames the caller still owns


@pytest.mark.parametrize("layout", ["one channel", "channel-last view"])
def test_a_frame_waiting_for_its_anchor_is_not_changed_by_the_callers_next_frame(rng, layout):
    """bi-3 holds frame 0 until frame 1 (its anchor) arrives. A caller that reuses one buffer
    for every frame must not change the frame held: it was kept as a view of the buffer
    when the buffer's channel-last transpose was already contiguous."""
    shape = (1, 8, 8) if layout == "one channel" else (4, 8, 8)
    clip = correlated_clip(rng, 3, shape)
    config = CodecConfig([_spec(shape)], structure="bi-3", n_bits=8, coder="raw")
    expected = Encoder(config).encode([[f] for f in clip])
    enc = Encoder(config)
    enc.set_total_frames(3)
    if layout == "one channel":
        buf = np.empty(shape, np.uint8)
    else:
        buf = np.empty((shape[1], shape[2], shape[0]), np.uint8).transpose(2, 0, 1)  # (C, H, W) of an HWC map
    data = enc.header_bytes()
    for f in clip:
        buf[...] = f
        data += b"".join(p.to_bytes() for p in enc.push([buf]))
    data += b"".join(p.to_bytes() for p in enc.flush())
    assert data == expected


def test_decoded_codes_are_read_only_views_of_the_decoders_references(rng):
    """A frame's codes are the reference of later frames: an edit in place silently changed
    the next frames' pictures (bi-3) or failed valid packets (ctx). They are read-only now."""
    clip = correlated_clip(rng, 6, (4, 8, 8))
    enc = Encoder(CodecConfig([_spec()], structure="bi-3"))
    enc.set_total_frames(len(clip))
    packets = [p for f in clip for p in enc.push([f])] + enc.flush()
    _, frames = decode_stream(enc.header_bytes() + b"".join(p.to_bytes() for p in packets))
    expected = {f.index: np.array(f.codes[0]) for f in frames}
    dec = Decoder(enc.header)
    for p in packets:
        d = dec.decode(p)
        assert np.array_equal(d.codes[0], expected[d.index])  # earlier frames' edits were refused
        with pytest.raises(ValueError, match="read-only"):
            d.codes[0][...] = 0


def test_kept_reconstructions_are_read_only(rng):
    """``keep_reconstruction``: the encoder's own references, as the decoder's codes."""
    clip = correlated_clip(rng, 4, (4, 8, 8))
    enc = Encoder(CodecConfig([_spec()], structure="uni-4"), keep_reconstruction=True)
    enc.push([clip[0]])
    with pytest.raises(ValueError):
        enc.frames[0].reconstruction[0][...] = 0
    enc.push([clip[1]])  # the next frame is predicted from the untouched reference
    assert enc.frames[1].reference == 0


# ---------------------------------------------------------------- configurations refused up front


@pytest.mark.parametrize(
    "structure, ladder, needle",
    [
        ("intra", [(4, 8)], "'intra' codes groups of 1 frame"),
        ("bi-3", [(4, 2)], "odd group sizes"),
        ("uni-8", [(9, 2)], "N (bits per code)"),
        ("uni-8", [4], "a pair (N, g)"),
        ("uni-8", [(4, 2.5)], "group size must be an integer"),
    ],
)
def test_a_ladder_the_structure_cannot_code_is_refused_before_any_packet(structure, ladder, needle):
    """An intra stream with a ladder of longer groups wrote predicted frames into an
    all-anchor stream (refused by the decoder) or failed at the first group ('a table coder
    needs a Huffman table'); the other points failed with unrelated messages."""
    for coder in ("raw", "huffman", "ctx"):
        with pytest.raises(ConfigurationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            Encoder(CodecConfig([_spec()], structure=structure, coder=coder, rate_target=1.0, ladder=ladder))


@pytest.mark.parametrize("model_hash", [b"x", bytes(33), "x" * 32, None])
def test_a_model_hash_that_is_not_32_bytes_is_refused(model_hash):
    """The header's 32-byte field padded a short hash and cut a long one, silently."""
    with pytest.raises(ConfigurationError, match="model_hash must be 32 bytes"):
        Encoder(CodecConfig([_spec()], model_hash=model_hash))


def test_two_tensors_of_one_name_are_refused():
    """A feature file keys tensors by name: decoding such a stream lost one of them."""
    with pytest.raises(ConfigurationError, match="two tensors are named 'a'"):
        Encoder(CodecConfig([_spec(name="a"), _spec((2, 4, 4), name="a")]))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(residual={"mode": "threshold"}), "residual must be a ResidualConfig"),
        (dict(residual=True), "residual must be a ResidualConfig"),
        (dict(key_interval=1.5), "key_interval must be an integer"),
        (dict(key_interval=None), "key_interval must be an integer"),
        (dict(refresh_threshold="1"), "refresh_threshold must be a number"),
        (dict(rate_target="1"), "rate_target must be a number"),
        (dict(tensors=[("x", (4, 8, 8), 0.05, 0, 4)]), "TensorSpecs, not tuple"),
        (dict(tensors=[TensorSpec("x", None, 0.05, 0, 4)]), "shape must be (C, H, W)"),
    ],
)
def test_parameters_of_the_wrong_type_are_configuration_errors(kwargs, needle):
    """These were an AttributeError or a TypeError, some only at the first push."""
    kwargs = {"tensors": [_spec()], **kwargs}
    with pytest.raises(ConfigurationError) as info:
        Encoder(CodecConfig(**kwargs))
    assert needle in str(info.value)


def test_residual_thresholds_of_the_wrong_type_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="residual threshold must be a number"):
        ResidualConfig(threshold="1")


def test_a_structure_with_a_group_of_thousands_of_digits_is_a_configuration_error():
    """int() refuses over 4300 digits with a bare ValueError: the CLI called it an internal error."""
    with pytest.raises(ConfigurationError, match="group size must be in 1..255"):
        Structure.parse("uni-" + "9" * 5000)
    assert Structure.parse("uni-0008") == Structure("uni", 8)


def test_the_cli_refuses_a_structure_of_thousands_of_digits_in_one_line(tmp_path, capsys):
    path = _feature_file(tmp_path / "f.npz", 2)
    _one_line_error(capsys, ["encode", path, tmp_path / "s.tsp", "--structure", "uni-" + "9" * 5000], "group size")


# ---------------------------------------------------------------- the encoder's state


def test_a_push_past_the_u32_frame_index_is_refused_before_it_is_coded(rng):
    """Frame 2^32 was coded, and its packet failed only at to_bytes() with a struct.error."""
    clip = correlated_clip(rng, 2, (4, 8, 8))
    enc = Encoder(CodecConfig([_spec()], structure="uni-2"), first_index=0xFFFFFFFF)
    assert [p.index for p in enc.push([clip[0]])] == [0xFFFFFFFF]
    with pytest.raises(ConfigurationError, match="u32 frame index"):
        enc.push([clip[1]])
    assert [f.index for f in enc.frames] == [0xFFFFFFFF] and enc.next_index == 1 << 32


@pytest.mark.parametrize("n", [-1, 2.7, "3", None])
def test_the_clips_frame_count_must_be_a_whole_number(n):
    enc = Encoder(CodecConfig([_spec()]))
    with pytest.raises(ConfigurationError, match="frame count must be a whole number"):
        enc.set_total_frames(n)


# ---------------------------------------------------------------- rate control on short clips


def test_rate_control_counts_a_group_the_clips_end_cuts_short():
    """The estimate spread a group's anchor over g frames even when the clip had fewer left:
    a 1-frame clip took N = 8 "in a group of 4" (a quarter of the anchor a frame)."""
    rc = RateController(0.003, 1.0, "raw", [(8, 1), (8, 4), (4, 1)])  # 3,000 bytes a frame
    frame = [(np.arange(4096, dtype=np.int64).astype(np.uint8).reshape(16, 16, 16), 0)]  # 4,096 bytes at N = 8
    assert rc.choose(frame) == (8, 4)  # a long clip: the group's anchor over 4 frames fits
    rc = RateController(0.003, 1.0, "raw", [(8, 1), (8, 4), (4, 1)])
    assert rc.choose(frame, frames_left=1) == (4, 1)  # the last frame: its anchor alone must fit


def test_a_rate_control_overshoot_warning_names_what_was_chosen(tmp_path, capsys):
    """On a short clip the controller may choose a fine N that came out above the target;
    the warning said the ladder's points "do not reach" a target its cheapest point reaches.
    (Frames that turn to noise after the first: no estimate made at the first foresees them.)"""
    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    codes = np.stack(correlated_clip(rng, 3, (8, 12, 12)))
    codes[1:] = rng.integers(0, 256, codes[1:].shape, dtype=np.uint8)
    features.save(str(path), features.FeatureClip(["t"], [codes], [0.1], [3], [4]))
    out = tmp_path / "s.tsp"
    assert main(["encode", str(path), str(out), "--rate", "0.01", "--structure", "uni-8"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "the rate control chose N = " in err[0], err
    assert "do not reach" not in err[0]


# ---------------------------------------------------------------- the command line


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_decode_to_dev_null_checks_the_stream_and_writes_nothing(tmp_path, capsys):
    """/dev/null accepts a seek and tells 0: zipfile's end record failed ('argument out of
    range', an internal error), though docs/bitstream.md 12 names /dev/null as an output."""
    path = _feature_file(tmp_path / "f.npz", 3)
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(path), str(stream)]) == 0
    assert main(["decode", str(stream), "/dev/null"]) == 0
    assert "3 frames decoded -> /dev/null" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_an_empty_output_name_is_refused_in_one_line(tmp_path, capsys, command, monkeypatch):
    """An empty name meant the working folder: the file was written beside it, the rename failed."""
    path = _feature_file(tmp_path / "f.npz", 2)
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(path), str(stream)]) == 0
    capsys.readouterr()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _one_line_error(capsys, [command, path if command == "encode" else stream, ""], "output file name is empty")
    assert sorted(os.listdir(tmp_path)) == ["f.npz", "s.tsp", "work"]


def test_decode_refuses_a_stream_that_names_a_tensor_twice(tmp_path, capsys):
    """The feature file held two members of one name (zipfile's warnings) and lost a tensor."""
    rng = np.random.default_rng(0)
    a, b = correlated_clip(rng, 2, (4, 8, 8)), correlated_clip(rng, 2, (2, 4, 4))
    enc = Encoder(CodecConfig([_spec(name="a"), _spec((2, 4, 4), name="b")]))
    data = enc.encode([[x, y] for x, y in zip(a, b, strict=True)])
    first, second = enc.header.tensors
    twice = dataclasses.replace(enc.header, tensors=(first, dataclasses.replace(second, name="a")))
    head = twice.to_bytes()
    assert len(head) == len(enc.header_bytes())
    stream = tmp_path / "s.tsp"
    stream.write_bytes(head + data[len(head) :])
    _one_line_error(capsys, ["decode", stream, tmp_path / "d.npz"], "names two tensors 'a'")
    assert sorted(os.listdir(tmp_path)) == ["s.tsp"]


def test_bench_refuses_a_shape_past_the_stream_limits_before_making_frames():
    """--shapes 8192x4096x4096 made 137 G elements of synthetic maps before the encoder
    refused them: out of memory, or a machine brought to a halt."""
    with pytest.raises(ConfigurationError, match="more than a stream carries"):
        parse_shapes("4x8x8,8192x4096x4096")
    assert parse_shapes("4x8x8:2") == [((4, 8, 8), 2)]


@pytest.mark.parametrize(
    "check, value",
    [("check_block", True), ("check_search_range", True), ("check_zero_point", True), ("check_bits", np.bool_(True))],
)
def test_a_boolean_is_no_block_size_search_range_zero_point_or_n(check, value):
    """True is 1 to Python: it ran a motion search with B = 1 instead of being refused."""
    from temposplit.codec import motion, quantize

    fn = getattr(motion, check, None) or getattr(quantize, check)
    with pytest.raises(ConfigurationError):
        fn(value)


def test_features_save_refuses_tensors_of_different_frame_counts(tmp_path):
    """save wrote them; load then refused the file ("every tensor must have the same number of frames")."""
    clip = features.FeatureClip(
        ["a", "b"], [np.zeros((2, 1, 2, 2), np.uint8), np.zeros((3, 1, 2, 2), np.uint8)], [0.1, 0.1], [0, 0], [2, 2]
    )
    with pytest.raises(ConfigurationError, match="every tensor must have the same number of frames"):
        features.save(str(tmp_path / "f.npz"), clip)
    assert not (tmp_path / "f.npz").exists()
