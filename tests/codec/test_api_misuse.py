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
    capsys.readouterr()
    assert main(["decode", str(stream), "/dev/null"]) == 0
    assert "3 frames decoded -> /dev/null" in capsys.readouterr().err  # not a regular file: the summary on stderr


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


def test_bench_refuses_frames_of_a_shape_past_its_memory_bound():
    """A shape within the stream's limits, 256 frames of it made in memory: 4.3 GB at 2^24
    elements. Refused before any frame is made; the default shapes and frames pass."""
    from temposplit.codec.bench import SHAPES, check_memory

    with pytest.raises(ConfigurationError, match="GiB of memory to make"):
        check_memory(parse_shapes("4096x64x64"), 256)
    check_memory(parse_shapes("4096x64x64"), 16)
    check_memory(SHAPES, None)


def test_the_bench_memory_bound_is_what_making_the_frames_takes():
    """The bound counted the frames (a byte an element), but the synthetic maps are drawn
    padded by frames + 2 cells on each side, in float: 256 frames of 512 x 16 x 16 were 32
    MiB of frames and passed, and took 1.7 GiB to make. The bound now holds what making them
    takes (traced here at a small shape) and refuses that shape."""
    import tracemalloc

    from temposplit.codec.bench import check_memory, make_bytes

    with pytest.raises(ConfigurationError, match="drawn 258 cells wider"):
        check_memory(parse_shapes("512x16x16"), 256)
    for shape, frames in [((16, 8, 8), 64), ((8, 40, 30), 9)]:
        tracemalloc.start()
        try:
            correlated_clip(np.random.default_rng(0), frames, shape, dx=1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= make_bytes(shape, frames), (shape, frames, peak)
        assert peak > 4 * frames * np.prod(shape)  # (what a bound of the frames alone missed)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("zero_points", 3.7, "zero_point/a: must be a whole number"),  # was saved as 3
        ("blocks", 2.7, "block/a: must be a whole number"),  # was saved as 2
        ("scales", None, "scale/a: must be one real number"),  # was saved as NaN
        ("scales", "x", "scale/a: must be one real number"),  # was a ValueError
        ("scales", True, "scale/a: must be one real number"),  # (load refuses a bool array too)
        ("zero_points", 2**40, "zero_point/a: 1099511627776 is outside int32"),  # was an OverflowError
        ("scales", 1e-50, "scale/a: 1e-50 is 0.0 as float32"),  # was saved as 0.0
        ("scales", 1e40, r"scale/a: 1e\+40 is inf as float32"),
    ],
)
def test_features_save_refuses_a_value_load_would_refuse_or_its_type_would_change(tmp_path, field, value, needle):
    fields = {"scales": [0.1], "zero_points": [3], "blocks": [4], field: [value]}
    clip = features.FeatureClip(["a"], [np.zeros((2, 3, 4, 4), np.uint8)], **fields)
    with pytest.raises(ConfigurationError, match=needle):
        features.save(str(tmp_path / "f.npz"), clip)
    assert os.listdir(tmp_path) == []  # nothing written


def test_features_save_keeps_what_load_reads_back():
    """What save takes, load gives back: whole numbers of any integer or float type, a
    scale to float32 rounding, a one-element array as its number."""
    import io

    clip = features.FeatureClip(["a"], [np.zeros((1, 1, 2, 2), np.uint8)], [np.float64(0.1)], [np.float32(3.0)], [[8]])
    buf = io.BytesIO()
    features.save(buf, clip)
    buf.seek(0)
    back = features.load(buf)
    assert back.scales == [float(np.float32(0.1))] and back.zero_points == [3] and back.blocks == [8]


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


# ---------------------------------------------------------------- an encoder codes one stream


def _frames(n=6, shape=(4, 8, 8)):
    return [[f] for f in correlated_clip(np.random.default_rng(0), n, shape)]


def _decodes_whole(data: bytes, n: int) -> None:
    from temposplit.codec.decoder import DecodedFrame

    _, frames = decode_stream(data)
    assert all(isinstance(f, DecodedFrame) for f in frames), frames
    assert sorted(f.index for f in frames) == list(range(n))


@pytest.mark.parametrize("coder", ["huffman", "ctx", "raw"])
def test_a_second_encode_on_one_encoder_is_refused(coder):
    """The second stream started with its own header but went on with the first stream's
    state (derived tables, ctx references, no KEY): the decoder could not decode it."""
    clip = _frames()
    enc = Encoder(CodecConfig([_spec()], structure="uni-3", coder=coder))
    first = enc.encode(clip)
    _decodes_whole(first, 6)
    with pytest.raises(ConfigurationError, match="make a new Encoder"):
        enc.encode(clip)
    with pytest.raises(ConfigurationError, match="make a new Encoder"):
        enc.push(clip[0])
    assert Encoder(CodecConfig([_spec()], structure="uni-3", coder=coder)).encode(clip) == first


def test_encode_after_push_is_refused_and_a_refused_frame_does_not_count():
    clip = _frames()
    enc = Encoder(CodecConfig([_spec()], structure="uni-3"))
    with pytest.raises(ConfigurationError, match="uint8"):
        enc.push([clip[0][0].astype(np.int16)])  # refused before any state changed
    data = enc.encode(clip)  # so the encoder is still unused
    _decodes_whole(data, 6)
    enc = Encoder(CodecConfig([_spec()], structure="uni-3"))
    enc.push(clip[0])
    with pytest.raises(ConfigurationError, match="already pushed frames: make a new Encoder"):
        enc.encode(clip)
    enc = Encoder(CodecConfig([_spec()], structure="uni-3"))
    with pytest.raises(ConfigurationError, match="uint8"):
        enc.encode([[clip[0][0].astype(np.int16)], *clip[1:]])  # a first frame refused: nothing coded
    _decodes_whole(enc.encode(clip), 6)
    enc = Encoder(CodecConfig([_spec()], structure="uni-3"))
    with pytest.raises(ConfigurationError, match="uint8"):
        enc.encode([*clip[:2], [clip[2][0].astype(np.int16)]])  # refused part way: the state moved on
    with pytest.raises(ConfigurationError, match="part of one before a frame was refused"):
        enc.encode(clip)


def test_an_encoder_is_not_changed_by_its_configuration_changed_afterwards():
    """The encoder read its CodecConfig by reference: a sweep that changed one shared config
    after making an encoder (N, the reference) broke the first encoder's stream."""
    clip = _frames()
    config = CodecConfig([_spec()], n_bits=4, structure="uni-3", coder="huffman")
    enc = Encoder(config)
    expected = Encoder(CodecConfig([_spec()], n_bits=4, structure="uni-3", coder="huffman")).encode(clip)
    config.n_bits, config.reference, config.table_policy = 6, "chain", "own"
    data = enc.encode(clip)
    assert data == expected
    _decodes_whole(data, 6)


def test_an_encoder_takes_a_codec_config():
    with pytest.raises(ConfigurationError, match="takes a CodecConfig"):
        Encoder({"tensors": [_spec()]})


# ---------------------------------------------------------------- iterables and flags


def test_tensors_ladder_and_frames_may_be_any_iterable():
    """A generator ladder was read by the check and then replaced by the default ladder; a
    NumPy ladder raised a bare ValueError; generator tensors and frames a TypeError."""
    clip = _frames()
    config = CodecConfig((t for t in [_spec()]), structure="uni-3", rate_target=1.0, ladder=(p for p in [(5, 3)]))
    assert config.tensors == [_spec()] and config.ladder == [(5, 3)]
    enc = Encoder(config)
    assert enc.rate.ladder == [(5, 3)]
    data = enc.encode(f for f in clip)
    assert data == Encoder(CodecConfig([_spec()], structure="uni-3", rate_target=1.0, ladder=[(5, 3)])).encode(clip)
    assert Encoder(
        CodecConfig([_spec()], structure="uni-3", rate_target=1.0, ladder=np.array([[5, 3]]))
    ).rate.ladder == [(5, 3)]
    config = CodecConfig([_spec()], structure="uni-3", rate_target=1.0)
    config.ladder = (p for p in [(6, 2), (4, 3)])  # set after construction: read once too
    assert Encoder(config).rate.ladder == [(6, 2), (4, 3)]


def test_a_generator_ladder_the_structure_cannot_code_is_still_refused():
    with pytest.raises(ConfigurationError, match="'intra' codes groups of 1 frame"):
        Encoder(CodecConfig([_spec()], structure="intra", rate_target=1.0, ladder=(p for p in [(4, 8)])))


@pytest.mark.parametrize("ladder", [[(4, 3)], [], (p for p in [(4, 3)])])
def test_a_ladder_without_a_rate_target_is_refused(ladder):
    """It was ignored: N and the group size stay fixed without rate control."""
    with pytest.raises(ConfigurationError, match="ladder needs rate_target"):
        Encoder(CodecConfig([_spec()], structure="uni-3", ladder=ladder))


@pytest.mark.parametrize("bad", [5, object()])
def test_tensors_or_frames_that_are_not_iterable_are_configuration_errors(bad):
    with pytest.raises(ConfigurationError, match="tensors"):
        Encoder(CodecConfig(bad))
    with pytest.raises(ConfigurationError, match="list of frames"):
        Encoder(CodecConfig([_spec()])).encode(bad)


@pytest.mark.parametrize("value", ["no", "", 2, None, [True]])
def test_yes_no_parameters_take_booleans(value):
    """refine_vectors="no" and keep_reconstruction="no" were taken as True."""
    with pytest.raises(ConfigurationError, match="refine_vectors must be True or False"):
        ResidualConfig(refine_vectors=value)
    with pytest.raises(ConfigurationError, match="keep_reconstruction must be True or False"):
        Encoder(CodecConfig([_spec()]), keep_reconstruction=value)
    assert ResidualConfig(refine_vectors=np.bool_(True)).refine_vectors is True
    assert Encoder(CodecConfig([_spec()]), keep_reconstruction=1).keep_reconstruction is True


@pytest.mark.parametrize(
    "options, flag",
    [
        (["--dead-zone", "2"], "--dead-zone"),
        (["--residual-threshold", "2"], "--residual-threshold"),
        (["--lam", "1"], "--lam"),
        (["--refine-vectors"], "--refine-vectors"),
    ],
)
@pytest.mark.parametrize("no_residual", [["--residual", "none"], ["--preset", "thesis"]])
def test_residual_options_without_a_residual_mode_are_refused(tmp_path, capsys, options, flag, no_residual):
    """They were ignored silently (while --hysteresis was refused)."""
    path = _feature_file(tmp_path / "f.npz", 2)
    _one_line_error(capsys, ["encode", path, tmp_path / "s.tsp", *no_residual, *options], flag, "residual mode")
    assert sorted(os.listdir(tmp_path)) == ["f.npz"]


@pytest.mark.parametrize(
    "options, flag",
    [
        (["--lam", "2"], "--lam applies to --residual rd"),  # the recommended preset: threshold
        (["--residual", "threshold", "--lam", "2"], "--lam applies to --residual rd"),
        (["--residual", "rd", "--residual-threshold", "2"], "--residual-threshold applies to --residual threshold"),
    ],
)
def test_an_option_of_the_other_residual_mode_is_refused(tmp_path, capsys, options, flag):
    """--lam under the threshold mode (and --residual-threshold under rd) was accepted and ignored."""
    path = _feature_file(tmp_path / "f.npz", 2)
    _one_line_error(capsys, ["encode", path, tmp_path / "s.tsp", *options], flag)
    assert sorted(os.listdir(tmp_path)) == ["f.npz"]


def test_residual_options_with_a_residual_mode_still_reach_it(tmp_path):
    import argparse

    from temposplit.codec.cli import add_codec_options, config_from_args

    parser = argparse.ArgumentParser()
    add_codec_options(parser)
    args = ["--preset", "thesis", "--residual", "rd", "--lam", "2", "--dead-zone", "3", "--refine-vectors"]
    res = config_from_args(parser.parse_args(args), [_spec()]).residual
    assert (res.mode, res.lam, res.dead_zone, res.refine_vectors, res.threshold) == ("rd", 2.0, 3.0, True, 1.5)
    res = config_from_args(parser.parse_args([]), [_spec()]).residual  # the recommended preset's
    assert (res.mode, res.lam, res.dead_zone, res.refine_vectors, res.threshold) == ("threshold", 4.0, 0.0, False, 4.0)


# ---------------------------------------------------------------- scales whose values are finite


def test_dequantized_values_are_finite_at_every_n_for_every_scale_the_encoder_takes():
    """s8 near the float32 maximum: s_N overflowed to inf at small N and a code equal to z_N
    dequantized to 0 * inf = NaN (the others to +-inf)."""
    from temposplit.codec import quantize

    largest = float(np.nextafter(np.float32(2.0**120), np.float32(0)))
    q8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    for z8 in (0, 3, 128, 255):
        data = Encoder(CodecConfig([TensorSpec("x", (1, 16, 16), largest, z8, 4)], structure="intra", n_bits=8))
        data = data.encode([[q8]])
        frame = decode_stream(data)[1][0]
        assert np.isfinite(frame.dequantize()[0]).all()
        for n in range(2, 9):
            values = quantize.dequantize(quantize.requantize(q8, z8, n), largest, z8, n)
            assert np.isfinite(values).all(), (z8, n)
            z_n = quantize.zero_point_n(z8, n)
            extremes = np.array([0, (1 << n) - 1] + ([z_n] if z_n < 1 << n else []), np.uint8)
            assert np.isfinite(quantize.dequantize(extremes, largest, z8, n)).all(), (z8, n)
    for scale in (2.0**120, 3.0e38, float(np.finfo(np.float32).max)):
        with pytest.raises(ConfigurationError, match="below 2\\^120"):
            Encoder(CodecConfig([TensorSpec("x", (1, 16, 16), scale, 0, 4)]))


@pytest.mark.parametrize("scale", [2.0**120, 3.0e38, float("nan")])
def test_the_decoder_refuses_a_header_scale_whose_values_overflow(scale):
    from temposplit.codec.bitstream import StreamHeader, TensorInfo
    from temposplit.codec.errors import BitstreamError

    head = StreamHeader("intra", 1, "raw", 7, 8, (TensorInfo("x", 1, 2, 2, scale, 0, 4),)).to_bytes()
    with pytest.raises(BitstreamError, match="invalid scale"):
        StreamHeader.from_bytes(head)
    with pytest.raises(BitstreamError, match="invalid scale"):
        decode_stream(head)
