"""Bad input to ``temposplit encode`` and ``decode``: one line, exit status 2, nothing lost.

Each test names the review finding it covers (A: data loss, B: tracebacks in encode,
E: decode's memory, G: decode's output name).
"""

import dataclasses
import io
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import cli as codec_cli
from temposplit.codec import features
from temposplit.codec.bitstream import StreamHeader, TensorInfo
from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
from temposplit.codec.errors import ConfigurationError, LimitError
from temposplit.codec.synthetic import correlated_clip


@pytest.fixture
def feature_file(tmp_path):
    rng = np.random.default_rng(0)
    a = np.stack(correlated_clip(rng, 5, (8, 12, 12)))
    path = tmp_path / "f.npz"
    features.save(str(path), features.FeatureClip(["t"], [a], [0.1], [3], [4]))
    return path


def _refused(capsys, argv, *needles) -> str:
    """Run the CLI: exit status 2 and one line on stderr that holds every needle."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "internal error" not in lines[0], err
    assert all(n in lines[0] for n in needles), err
    return lines[0]


def _folder(path) -> list[str]:
    return sorted(os.listdir(path))


def _npz(path, arrays: dict, raw: dict | None = None) -> None:
    """An .npz of ``arrays`` (np.savez) plus members of ``raw`` bytes."""
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as zf:
        for name, data in (raw or {}).items():
            zf.writestr(name, data)


def _npy_header(shape, dtype="|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


GOOD = {"scale/t": np.float32(0.1), "zero_point/t": np.int32(3)}


def _codes(frames=3):
    return np.zeros((frames, 2, 4, 4), np.uint8)


# ---------------------------------------------------------------- A1: output == input


@pytest.mark.parametrize("how", ["same", "hard link", "symbolic link"])
def test_encode_refuses_an_output_that_is_its_input(tmp_path, feature_file, capsys, how):
    before = feature_file.read_bytes()
    out = feature_file
    if how == "hard link":
        out = tmp_path / "hard.tsp"
        os.link(feature_file, out)
    elif how == "symbolic link":
        out = tmp_path / "sym.tsp"
        out.symlink_to(feature_file.name)
    _refused(capsys, ["encode", feature_file, out], "is the input file")
    assert feature_file.read_bytes() == before


def test_decode_refuses_an_output_that_is_its_input(tmp_path, feature_file, capsys):
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream)]) == 0
    before = stream.read_bytes()
    _refused(capsys, ["decode", stream, stream], "is the input file")
    assert stream.read_bytes() == before
    assert _folder(tmp_path) == ["f.npz", "s.tsp"]  # no s.tsp.npz either


# ---------------------------------------------------------------- A2: failed encode keeps the old output


@pytest.mark.parametrize(
    "options",
    [["--fps", "inf"], ["--fps", "1e9"], ["--fps", "1e-9"]],
)
def test_a_refused_encode_leaves_the_existing_output_as_it_was(tmp_path, feature_file, capsys, options):
    out = tmp_path / "keep.tsp"
    out.write_bytes(b"the previous result")
    _refused(capsys, ["encode", feature_file, out, *options], "fps")
    assert out.read_bytes() == b"the previous result"
    assert _folder(tmp_path) == ["f.npz", "keep.tsp"]


def test_an_encode_that_fails_while_writing_leaves_no_partial_output(tmp_path, feature_file, monkeypatch, capsys):
    out = tmp_path / "keep.tsp"
    out.write_bytes(b"the previous result")
    pushed = []
    push = Encoder.push

    def failing_push(self, frame):
        pushed.append(1)
        if len(pushed) == 3:
            raise ConfigurationError("failed in the middle")
        return push(self, frame)

    monkeypatch.setattr(Encoder, "push", failing_push)
    _refused(capsys, ["encode", feature_file, out, "--structure", "intra"], "failed in the middle")
    assert out.read_bytes() == b"the previous result"
    assert _folder(tmp_path) == ["f.npz", "keep.tsp"]  # the temporary file is gone
    (tmp_path / "keep.tsp").unlink()
    pushed.clear()
    _refused(capsys, ["encode", feature_file, out, "--structure", "intra"], "failed in the middle")
    assert _folder(tmp_path) == ["f.npz"]  # nothing half-written under the name


def test_encode_keeps_the_permissions_of_the_file_it_replaces(tmp_path, feature_file):
    out = tmp_path / "s.tsp"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    assert main(["encode", str(feature_file), str(out)]) == 0
    assert out.read_bytes()[:4] == b"TSPS" and (os.stat(out).st_mode & 0o777) == 0o640


# ---------------------------------------------------------------- A3 + B1: the encoder applies the decoder's limits


def _spec(shape=(2, 4, 4), scale=0.1, name="t"):
    return TensorSpec(name, shape, scale, 3)


@pytest.mark.parametrize(
    "config, needle",
    [
        (dict(tensors=[_spec(name=f"t{i}") for i in range(9)]), "9 tensors"),
        (dict(tensors=[_spec(name=f"t{i}") for i in range(300)]), "300 tensors"),
        (dict(tensors=[_spec((9000, 1, 1))]), "past the stream's limits"),
        (dict(tensors=[_spec((70000, 1, 1))]), "past the stream's limits"),
        (dict(tensors=[_spec((1, 1, 5000))]), "past the stream's limits"),
        (dict(tensors=[_spec((2000, 100, 100))]), "20000000 elements"),
        (dict(tensors=[_spec((1024, 128, 128), name="a"), _spec((1, 1, 1), name="b")]), "a frame of"),
        (dict(tensors=[_spec(scale=1e-50)]), "scale"),
        (dict(tensors=[_spec(scale=1e300)]), "scale"),
        (dict(tensors=[_spec(scale=3.5e38)]), "scale"),
        (dict(tensors=[_spec(scale="0.1")]), "scale"),
        (dict(tensors=[_spec(name="x" * 65)]), "65 bytes"),
        (dict(tensors=[_spec(name="\udcff")]), "UTF-8"),
        (dict(tensors=[_spec()], model_id="m" * 65), "model id"),
        (dict(tensors=[_spec((2.5, 4, 4))]), "shape"),
        (dict(tensors=[_spec()], fps=1e-9), "fps"),
        (dict(tensors=[_spec()], fps=0.0004), "fps"),
        (dict(tensors=[_spec()], fps=1e9), "fps"),
        (dict(tensors=[_spec()], fps=float("inf")), "fps"),
        (dict(tensors=[_spec()], fps=float("nan")), "fps"),
    ],
)
def test_the_encoder_refuses_what_the_decoder_would_refuse(config, needle):
    with pytest.raises(ConfigurationError, match=needle):
        Encoder(CodecConfig(**config))


def test_a_header_at_the_limits_is_written_and_read_back():
    tensors = [_spec((8192, 1, 1), name="c"), _spec((1, 4096, 1), name="h"), _spec((1, 1, 4096), name="w")]
    header = CodecConfig(tensors, fps=4294967.295, model_id="m" * 64).header()
    back = StreamHeader.from_bytes(header.to_bytes())
    assert [t.shape for t in back.tensors] == [(8192, 1, 1), (1, 4096, 1), (1, 1, 4096)]
    assert back.fps == pytest.approx(4294967.295) and back.model_id == "m" * 64


def test_packing_a_header_past_its_fields_is_a_configuration_error():
    t = TensorInfo("t", 70000, 1, 1, 0.1, 3, 4)
    header = StreamHeader("intra", 1, "raw", 7, 4, (t,), fps=1e9)
    with pytest.raises(ConfigurationError):
        header.to_bytes()


def test_encoder_refuses_a_first_index_past_the_u32_field():
    with pytest.raises(ConfigurationError, match="first_index"):
        Encoder(CodecConfig([_spec()]), first_index=1 << 32)


def _tensors(n):
    arrays = {}
    for i in range(n):
        arrays |= {f"codes/t{i}": _codes(), f"scale/t{i}": 0.1, f"zero_point/t{i}": 3}
    return arrays


@pytest.mark.parametrize(
    "arrays, needle",
    [
        (_tensors(9), "9 tensors"),
        ({"codes/t": np.zeros((2, 1, 1, 5000), np.uint8), **GOOD}, "past the stream's limits"),
        ({"codes/t": np.zeros((2, 9000, 1, 1), np.uint8), **GOOD}, "past the stream's limits"),
        ({"codes/t": _codes(), "scale/t": 1e-50, "zero_point/t": 3}, "scale"),
        ({"codes/t": _codes(), "scale/t": 1e300, "zero_point/t": 3}, "scale"),
    ],
)
def test_encode_refuses_a_feature_file_the_stream_cannot_carry(tmp_path, capsys, arrays, needle):
    path = tmp_path / "f.npz"
    _npz(path, arrays)
    _refused(capsys, ["encode", path, tmp_path / "s.tsp"], needle)
    assert _folder(tmp_path) == ["f.npz"]


@pytest.mark.parametrize("fps", ["inf", "1e9", "1e-9", "0.0004", "nan"])
def test_encode_refuses_a_frame_rate_the_header_cannot_carry(tmp_path, feature_file, capsys, fps):
    _refused(capsys, ["encode", feature_file, tmp_path / "s.tsp", "--fps", fps], "fps")
    assert _folder(tmp_path) == ["f.npz"]


def test_every_stream_encode_writes_decodes(tmp_path, capsys):
    """At the limits the CLI accepts, what encode writes, decode reads."""
    path = tmp_path / "f.npz"
    arrays = {f"codes/t{i}": np.zeros((2, 1, 1, 4096), np.uint8) for i in range(8)}
    arrays |= {f"scale/t{i}": np.float64(1e-40) for i in range(8)} | {f"zero_point/t{i}": 0 for i in range(8)}
    _npz(path, arrays)
    assert main(["encode", str(path), str(tmp_path / "s.tsp"), "--fps", "0.001"]) == 0
    assert main(["decode", str(tmp_path / "s.tsp"), str(tmp_path / "d.npz")]) == 0


# ---------------------------------------------------------------- B2: the feature-file loader


def _member_bytes(shape, data: bytes, dtype="|u1") -> bytes:
    return _npy_header(shape, dtype) + data


BAD_FILES = {
    "scale vector": ({"codes/t": _codes(), "scale/t": np.array([1.0, 2.0]), "zero_point/t": 3}, {}, "scale/t"),
    "scale empty": ({"codes/t": _codes(), "scale/t": np.array([]), "zero_point/t": 3}, {}, "scale/t"),
    "scale string": ({"codes/t": _codes(), "scale/t": "abc", "zero_point/t": 3}, {}, "scale/t"),
    "scale complex": ({"codes/t": _codes(), "scale/t": np.complex64(1), "zero_point/t": 3}, {}, "scale/t"),
    "zero point NaN": ({"codes/t": _codes(), "scale/t": 0.1, "zero_point/t": np.float32("nan")}, {}, "zero_point/t"),
    "zero point 2.5": ({"codes/t": _codes(), "scale/t": 0.1, "zero_point/t": 2.5}, {}, "zero_point/t"),
    "zero point string": ({"codes/t": _codes(), "scale/t": 0.1, "zero_point/t": "x"}, {}, "zero_point/t"),
    "block vector": ({"codes/t": _codes(), **GOOD, "block/t": np.array([4, 4])}, {}, "block/t"),
    "block string": ({"codes/t": _codes(), **GOOD, "block/t": "four"}, {}, "block/t"),
    "block bool": ({"codes/t": _codes(), **GOOD, "block/t": True}, {}, "block/t"),
    "codes object": (GOOD, {"codes/t.npy": _member_bytes((1, 1, 1, 1), b"x" * 16, "|O")}, "codes/t"),
    "scale object": (
        {"codes/t": _codes(), "zero_point/t": 3},
        {"scale/t.npy": _member_bytes((), b"", "|O")},
        "scale/t",
    ),
    "codes short": (GOOD, {"codes/t.npy": _member_bytes((10, 8, 12, 12), bytes(100))}, "codes/t"),
    "codes not npy": (GOOD, {"codes/t.npy": b"garbage, not an array"}, "codes/t"),
    "codes without .npy": (GOOD, {"codes/t": _member_bytes((1, 1, 1, 1), b"\0")}, "codes/t"),
    "codes record": (GOOD, {"codes/t.npy": _member_bytes((1,), b"\0" * 2, [("a", "|u1"), ("b", "|u1")])}, "codes/t"),
    "huge header": (GOOD, {"codes/t.npy": _member_bytes((100_000, 1000, 1000, 1000), bytes(100))}, "codes/t"),
    "zero frames": ({"codes/t": np.zeros((0, 2, 4, 4), np.uint8), **GOOD}, {}, "codes/t"),
    # A header past NumPy's 10,000-byte bound: NumPy's message runs to three lines.
    "header past the bound": (
        GOOD,
        {"codes/t.npy": b"\x93NUMPY\x01\x00" + struct.pack("<H", 20_000) + b"{" + b" " * 19_998 + b"\n"},
        "codes/t",
    ),
    "codes 3-d": ({"codes/t": np.zeros((2, 4, 4), np.uint8), **GOOD}, {}, "codes/t"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_feature_file_is_one_line_naming_the_file_and_field(tmp_path, capsys, case):
    arrays, raw, field = BAD_FILES[case]
    path = tmp_path / "bad.npz"
    _npz(path, arrays, raw)
    with pytest.raises(ConfigurationError, match=field):
        features.load(str(path))
    _refused(capsys, ["encode", path, tmp_path / "s.tsp"], str(path), field)
    assert _folder(tmp_path) == ["bad.npz"]


def _damage(path, how) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "crc":  # a byte of the stored array data
        i = data.index(b"\x93NUMPY", data.index(b"codes/t.npy")) + 200
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "crc", "deflate"])
def test_a_damaged_zip_is_one_line(tmp_path, capsys, how):
    path = tmp_path / "bad.npz"
    codes = np.random.default_rng(1).integers(0, 255, (3, 8, 12, 12), dtype=np.uint8)
    if how == "deflate":
        np.savez_compressed(path, **{"codes/t": codes}, **GOOD)
        data = bytearray(path.read_bytes())
        start = data.index(b"codes/t.npy") + len(b"codes/t.npy")
        for i in range(start + 40, start + 80):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))
    else:
        np.savez(path, **{"codes/t": codes}, **GOOD)
        _damage(path, how)
    with pytest.raises(ConfigurationError):
        features.load(str(path))
    _refused(capsys, ["encode", path, tmp_path / "s.tsp"], str(path))


def _zip_field(path, offset: int, value: int, all_entries: bool) -> None:
    """Set a 16-bit field of the central directory's entries (the first, or every one)."""
    data, i = bytearray(path.read_bytes()), 0
    while (i := data.find(b"PK\x01\x02", i)) >= 0:
        struct.pack_into("<H", data, i + offset, value(struct.unpack_from("<H", data, i + offset)[0]))
        i += 4
        if not all_entries:
            break
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "offset, value, needle",
    [
        (6, lambda v: 99, "zip file version 9.9"),  # "version needed to extract"
        (8, lambda v: v | 0x20, "holds compressed patched data"),
        (8, lambda v: v | 0x40, "is strongly encrypted"),
    ],
    ids=["version 9.9", "flag 0x20", "flag 0x40"],
)
def test_a_zip_that_zipfile_does_not_read_is_one_line(tmp_path, capsys, offset, value, needle):
    """zipfile raises NotImplementedError for them: an internal error and a traceback."""
    path = tmp_path / "bad.npz"
    _npz(path, {"codes/t": _codes(), **GOOD})
    _zip_field(path, offset, value, all_entries=True)
    for lazy in (False, True):  # (lazy: `edge --replay`'s)
        with pytest.raises(ConfigurationError, match=needle):
            features.load(str(path), lazy=lazy)
    _refused(capsys, ["encode", path, tmp_path / "s.tsp"], str(path), needle)


@pytest.mark.parametrize("shape", [(-1, 2, 4, 4), (-2, -1, 4, 4)])
def test_a_negative_dimension_is_refused_by_the_lazy_loader_too(tmp_path, shape):
    """NumPy's header parser takes (-1, 2, 4, 4): a lazy load (`edge --replay`) gave a clip of -1 frames."""
    path = tmp_path / "bad.npz"
    _npz(path, GOOD, {"codes/t.npy": _member_bytes(shape, bytes(64))})
    for lazy in (False, True):
        with pytest.raises(ConfigurationError, match="codes/t: announces a negative dimension"):
            features.load(str(path), lazy=lazy)


def test_the_loader_takes_a_file_object_as_its_docstring_says(tmp_path, feature_file):
    """load let file objects past its check, then asked os.path.getsize for their size: a TypeError."""
    want = features.load(str(feature_file))
    for lazy in (False, True):
        got = features.load(io.BytesIO(feature_file.read_bytes()), lazy=lazy)
        assert got.names == want.names and (got.codes[0] == want.codes[0]).all() and got.scales == want.scales
    with open(feature_file, "rb") as f:
        assert (features.load(f).codes[0] == want.codes[0]).all()
    _npz(tmp_path / "bad.npz", {"codes/t": _codes(), "scale/t": "x", "zero_point/t": 3})
    with pytest.raises(ConfigurationError, match=r"^<BytesIO>: scale/t: must be one real number"):
        features.load(io.BytesIO((tmp_path / "bad.npz").read_bytes()))
    with pytest.raises(ConfigurationError, match=r"a file name, not int \(or a binary file object"):
        features.load(3)


def test_a_forged_header_is_refused_before_anything_is_allocated(tmp_path):
    """A .npy header announcing 90 TiB in a file of a few hundred bytes."""
    path = tmp_path / "bomb.npz"
    _npz(path, GOOD, {"codes/t.npy": _member_bytes((100_000, 1000, 1000, 1000), bytes(100))})
    with pytest.raises(ConfigurationError, match="more than the member holds"):
        features.load(str(path))


def test_a_member_claiming_more_than_deflate_can_expand_is_refused(tmp_path):
    path = tmp_path / "forged.npz"
    _npz(path, GOOD, {"codes/t.npy": _member_bytes((1, 1, 1, 1), b"\0")})
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the last entry's central record: codes/t.npy
    struct.pack_into("<I", data, central + 24, 0xFFFF_FF00)  # its uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigurationError, match="more than its data can hold"):
        features.load(str(path))


def test_the_feature_file_cap_is_checked_before_reading(tmp_path, feature_file, monkeypatch):
    monkeypatch.setattr(features, "MAX_FEATURE_BYTES", 1000)
    with pytest.raises(ConfigurationError, match="the most a feature file may hold"):
        features.load(str(feature_file))


def test_the_loader_still_reads_what_save_writes(tmp_path, feature_file):
    clip = features.load(str(feature_file))
    assert clip.names == ["t"] and clip.codes[0].shape == (5, 8, 12, 12)
    assert clip.scales == [pytest.approx(0.1)] and clip.zero_points == [3] and clip.blocks == [4]
    assert isinstance(clip.zero_points[0], int) and isinstance(clip.blocks[0], int)


# ---------------------------------------------------------------- B3: zero frames


def test_zero_frames_is_one_line_and_no_output(tmp_path, capsys):
    path = tmp_path / "f.npz"
    _npz(path, {"codes/t": np.zeros((0, 8, 12, 12), np.uint8), **GOOD})
    out = tmp_path / "keep.tsp"
    out.write_bytes(b"previous")
    _refused(capsys, ["encode", path, out], "no frames")
    assert out.read_bytes() == b"previous"
    out.unlink()
    _refused(capsys, ["encode", path, out], "no frames")
    assert not out.exists()


# ---------------------------------------------------------------- E1: decode's memory

BOMB_SCRIPT = """
import sys
import numpy as np
from temposplit.cli import main
from temposplit.codec.fuzz import peak_rss
from temposplit.codec.bitstream import Packet
from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec

if sys.argv[1] == "make":
    shape = (1024, 128, 128)  # 2^24 codes a frame
    config = CodecConfig([TensorSpec("x", shape, 1.0, 0, 64)], structure="uni-8", coder="ctx", fps=10.0)
    enc = Encoder(config)
    z = np.zeros(shape, np.uint8)
    packets = [p for _ in range(2) for p in enc.push([z])] + enc.flush()
    key, pred = packets[0], [p for p in packets if p.kind == "pred"][0]
    data = enc.header_bytes() + key.to_bytes()
    for i in range(1, int(sys.argv[3])):  # the same 8-byte predicted frame, again and again
        data += Packet(pred.type, i, pred.reference, pred.payload, pred.flags).to_bytes()
    assert len(data) < 20_000
    open(sys.argv[2] + "/bomb.tsp", "wb").write(data)
else:
    assert main(["decode", sys.argv[2] + "/bomb.tsp", sys.argv[2] + "/out.npz"]) == 0
    print(peak_rss() >> 20)
"""


def test_decode_of_a_small_stream_of_huge_frames_stays_within_a_frame_or_so_of_memory(tmp_path):
    """10 frames of 2^24 codes from a stream of under 20 KB: the frames are spooled and
    written member by member, so the peak does not grow with the frame count (it grew by
    about 170 MB a frame: codes and float32 values of every frame held, then stacked)."""
    for mode in ("make", "decode"):
        run = subprocess.run(
            [sys.executable, "-c", BOMB_SCRIPT, mode, str(tmp_path), "10"], capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, run.stderr
    peak = int(run.stdout.split()[-1])
    print(f"decode peak: {peak} MB")
    assert peak < 768, run.stdout  # MB at peak; all 10 frames held took 1.7 GB
    with np.load(tmp_path / "out.npz") as npz:
        assert npz["codes/x"].shape == (10, 1024, 128, 128) and list(npz["index"]) == list(range(10))


def test_decode_refuses_an_output_past_the_cap_and_writes_nothing(tmp_path, feature_file, monkeypatch, capsys):
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream)]) == 0
    capsys.readouterr()
    out = tmp_path / "d.npz"
    out.write_bytes(b"previous")
    monkeypatch.setattr(codec_cli, "MAX_DECODED_BYTES", 5 * 8 * 12 * 12 * 3)  # 3 of the 5 frames
    _refused(capsys, ["decode", stream, out], "would pass")
    assert out.read_bytes() == b"previous"
    assert _folder(tmp_path) == ["d.npz", "f.npz", "s.tsp"]


def test_decode_output_is_what_decode_stream_gives(tmp_path):
    from temposplit.codec.decoder import decode_stream

    # Two tensors with different scales and zero points: each must keep its own.
    rng = np.random.default_rng(0)
    a, b = np.stack(correlated_clip(rng, 5, (8, 12, 12))), np.stack(correlated_clip(rng, 5, (4, 8, 8)))
    feature_file, stream, out = tmp_path / "f.npz", tmp_path / "s.tsp", tmp_path / "d.npz"
    features.save(str(feature_file), features.FeatureClip(["t", "u"], [a, b], [0.1, 0.25], [3, 40], [4, 4]))
    assert main(["encode", str(feature_file), str(stream), "--preset", "thesis"]) == 0
    assert main(["decode", str(stream), str(out)]) == 0
    header, frames = decode_stream(stream.read_bytes())
    assert [(t.name, t.scale, t.zero_point) for t in header.tensors] == [
        ("t", float(np.float32(0.1)), 3),
        ("u", float(np.float32(0.25)), 40),
    ]
    frames = sorted(frames, key=lambda d: d.index)
    with np.load(out) as npz:
        assert list(npz["index"]) == [d.index for d in frames] == list(range(5))
        assert npz["values/t"].dtype == np.float32 and list(npz["n_bits"]) == [d.n_bits for d in frames]
        for i, t in enumerate(header.tensors):
            assert (npz[f"codes/{t.name}"] == np.stack([d.codes[i] for d in frames])).all(), t.name
            assert (npz[f"values/{t.name}"] == np.stack([d.dequantize()[i] for d in frames])).all(), t.name
            assert npz[f"scale/{t.name}"] == np.float32(t.scale) and npz[f"zero_point/{t.name}"] == t.zero_point


def test_decode_keeps_the_first_copy_of_a_repeated_frame(tmp_path, feature_file, capsys):
    stream, out = tmp_path / "s.tsp", tmp_path / "d.npz"
    assert main(["encode", str(feature_file), str(stream), "--structure", "intra", "--coder", "raw"]) == 0
    data = stream.read_bytes()
    hlen = struct.unpack_from("<H", data, 6)[0]
    first = data[hlen:]
    plen = struct.unpack_from("<I", first, 16)[0]
    stream.write_bytes(data + first[: 24 + plen])  # frame 0 again, at the end
    assert main(["decode", str(stream), str(out)]) == 3
    assert "1 packets repeat a frame already decoded (first: frame 0)" in capsys.readouterr().err
    with np.load(out) as npz:
        assert list(npz["index"]) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- E2: endless input


def test_decode_of_an_endless_input_fails_on_its_magic(tmp_path):
    """/dev/zero: refused after its first bytes (under a 1 GB address space, which reading it
    whole would exhaust)."""
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from temposplit.cli import main\n"
        "sys.exit(main(['decode', '/dev/zero', sys.argv[1]]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "o.npz")], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 2, run.stderr
    assert "bad magic" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert _folder(tmp_path) == []


def test_a_piped_stream_is_read_up_to_a_cap(tmp_path, feature_file, monkeypatch):
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream)]) == 0
    data = stream.read_bytes()
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    monkeypatch.setattr(codec_cli, "MAX_PIPED_STREAM", len(data) - 1)
    with os.fdopen(r, "rb") as f, pytest.raises(LimitError, match="pipe"):
        codec_cli._read_stream(f)


# ---------------------------------------------------------------- G: decode's output name


def test_decode_writes_exactly_the_name_given(tmp_path, feature_file, capsys):
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream)]) == 0
    out = tmp_path / "decoded"
    assert main(["decode", str(stream), str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"-> {out}")
    assert _folder(tmp_path) == ["decoded", "f.npz", "s.tsp"]
    with np.load(out) as npz:
        assert npz["codes/t"].shape[0] == 5


def test_decode_refuses_a_folder_as_its_output(tmp_path, feature_file, capsys):
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream)]) == 0
    (tmp_path / "out").mkdir()
    _refused(capsys, ["decode", stream, tmp_path / "out"], "is a folder")
    assert _folder(tmp_path) == ["f.npz", "out", "s.tsp"]


@pytest.mark.parametrize("shapes", ["bogus", "1x2", "0x0x0", "8x8x8:x", "8x8x8:0"])
def test_bench_codec_shapes_that_cannot_be_parsed_are_one_line(shapes, capsys):
    from temposplit.cli import main

    assert main(["bench", "codec", "--shapes", shapes]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("temposplit bench codec: error:"), line


def test_a_stored_block_of_0_is_refused_as_block_0_is(tmp_path, capsys):
    """0 in a feature file's block/<name> is not "the default" (that is a missing member)."""
    a = np.stack(correlated_clip(np.random.default_rng(0), 3, (8, 12, 12)))
    path = tmp_path / "zero.npz"
    features.save(str(path), features.FeatureClip(["t"], [a], [0.1], [3], [0]))
    _refused(capsys, ["encode", path, tmp_path / "s.tsp"], "block")
    assert not (tmp_path / "s.tsp").exists()


def test_an_output_with_a_long_name_in_a_multibyte_script_is_written(tmp_path, feature_file):
    """The temporary name beside it stays under the file system's 255 bytes."""
    out = tmp_path / ("\N{GRINNING FACE}" * 62 + ".tsp")  # 252 bytes of UTF-8 in 66 characters: a valid name
    assert main(["encode", str(feature_file), str(out)]) == 0
    assert out.is_file() and _folder(tmp_path) == sorted(["f.npz", out.name])


def test_encode_refuses_a_decoded_stream_whose_codes_are_n_bit(tmp_path, feature_file, one_line):
    path = feature_file
    assert main(["encode", str(path), str(tmp_path / "s.tsp"), "-n", "4"]) == 0
    assert main(["decode", str(tmp_path / "s.tsp"), str(tmp_path / "d.npz")]) == 0
    assert main(["encode", str(tmp_path / "d.npz"), str(tmp_path / "again.tsp")]) == 2
    one_line("a decoded stream (N = 4 bits)", "d.npz")
    assert not (tmp_path / "again.tsp").exists()
    # At N = 8 the decoded codes are the 8-bit codes: such a file encodes again.
    assert main(["encode", str(path), str(tmp_path / "s8.tsp"), "-n", "8"]) == 0
    assert main(["decode", str(tmp_path / "s8.tsp"), str(tmp_path / "d8.npz")]) == 0
    assert main(["encode", str(tmp_path / "d8.npz"), str(tmp_path / "again8.tsp")]) == 0


# ---------------------------------------------------------------- names a feature file holds


@pytest.mark.parametrize("name", ["x\x00", "a\x00b", "line\nbreak", "\x1b[31m", "del\x7f", "c1\x85"])
def test_a_name_with_a_control_character_is_refused_by_the_encoder(name):
    """A NUL in a tensor's name cut the feature file's zip member names short: decode wrote a
    broken file (members 'codes/a' twice) and exited 0."""
    with pytest.raises(ConfigurationError, match="control character"):
        Encoder(CodecConfig([_spec(name=name)]))
    with pytest.raises(ConfigurationError, match="model id holds the control character"):
        Encoder(CodecConfig([_spec()], model_id=name))
    with pytest.raises(ConfigurationError, match="cut id holds the control character"):
        Encoder(CodecConfig([_spec()], cut_id=name))


@pytest.mark.parametrize("where", ["tensor", "model id", "cut id"])
def test_a_header_name_with_a_control_character_is_refused_by_the_decoder(tmp_path, capsys, where):
    """A foreign stream: its header is refused (BitstreamError), and decode writes nothing."""
    from temposplit.codec.decoder import decode_stream
    from temposplit.codec.errors import BitstreamError

    enc = Encoder(CodecConfig([_spec(name="ab")], model_id="mm", cut_id="cc", structure="intra"))
    data = enc.encode([[_codes(1)[0]]])
    good = enc.header_bytes()
    header = StreamHeader.from_bytes(good)
    forged = {
        "tensor": lambda h: dataclasses.replace(h, tensors=(dataclasses.replace(h.tensors[0], name="a\x00"),)),
        "model id": lambda h: dataclasses.replace(h, model_id="m\n"),
        "cut id": lambda h: dataclasses.replace(h, cut_id="\x7fc"),
    }[where](header).to_bytes()
    assert len(forged) == len(good)
    with pytest.raises(BitstreamError, match="control character"):
        decode_stream(forged + data[len(good) :])
    stream = tmp_path / "s.tsp"
    stream.write_bytes(forged + data[len(good) :])
    _refused(capsys, ["decode", stream, tmp_path / "d.npz"], "control character")
    assert _folder(tmp_path) == ["s.tsp"]


def test_names_a_feature_file_holds_go_through_encode_and_decode(tmp_path, capsys):
    """'/' (the layout's separator, kept after the first), '.npy', a backslash and an empty
    name are all member names a feature file reads back."""
    names = ["a/b", "/abs", "x.npy", "a\\b", "", "é ü"]
    codes = [np.full((2, 1, 4, 4), 40 * i, np.uint8) for i in range(len(names))]
    path = tmp_path / "f.npz"
    features.save(str(path), features.FeatureClip(names, codes, [0.1] * 6, [0] * 6, [4] * 6))
    assert main(["encode", str(path), str(tmp_path / "s.tsp"), "--preset", "thesis"]) == 0
    assert main(["decode", str(tmp_path / "s.tsp"), str(tmp_path / "d.npz")]) == 0
    back = features.load(str(tmp_path / "d.npz"))
    assert back.names == names
    assert [int(c.max()) for c in back.codes] == [(40 * i + 8) >> 4 for i in range(len(names))]  # N = 4


# ---------------------------------------------------------------- the summary never joins the output


def _cli(args, stdout):
    return subprocess.run(
        [sys.executable, "-m", "temposplit", *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, timeout=600
    )


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="no /dev/stdout")
@pytest.mark.parametrize("into", ["pipe", "file"])
def test_encode_and_decode_to_dev_stdout_write_only_their_output_there(tmp_path, feature_file, into):
    """`encode f.npz /dev/stdout | cat > s.tsps` appended the summary line to the stream (and
    `decode s.tsps /dev/stdout` after the zip)."""
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream)]) == 0
    runs = {}
    for command, source in (("encode", feature_file), ("decode", stream)):
        if into == "pipe":
            run = _cli([command, source, "/dev/stdout"], subprocess.PIPE)
            out = run.stdout
        else:
            target = tmp_path / f"{command}.out"
            with open(target, "wb") as f:
                run = _cli([command, source, "/dev/stdout"], f)
            out = target.read_bytes()
        assert run.returncode == 0, run.stderr
        runs[command] = (out, run.stderr.decode())
    out, err = runs["encode"]
    assert out == stream.read_bytes()
    assert "5 frames, " in err and "-> /dev/stdout" in err
    out, err = runs["decode"]
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert zf.testzip() is None
    assert out[-22:-18] == b"PK\x05\x06"  # the zip's end record (no comment) ends the output: nothing after it
    with np.load(io.BytesIO(out)) as npz:
        assert list(npz["index"]) == [0, 1, 2, 3, 4]
    assert "5 frames decoded -> /dev/stdout" in err


@pytest.mark.skipif(not os.path.exists("/dev/stderr"), reason="no /dev/stderr")
def test_encode_to_dev_stderr_puts_its_summary_on_stdout(tmp_path, feature_file):
    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream)]) == 0
    run = subprocess.run(
        [sys.executable, "-m", "temposplit", "encode", str(feature_file), "/dev/stderr"],
        capture_output=True,
        timeout=600,
    )
    assert run.returncode == 0 and run.stderr == stream.read_bytes()  # the stream alone
    assert b"5 frames, " in run.stdout


def test_the_summary_stays_on_stdout_for_a_regular_output_file(tmp_path, feature_file, capsys):
    assert main(["encode", str(feature_file), str(tmp_path / "s.tsp"), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "5 frames, " in out and "  pred: " in out
    assert main(["decode", str(tmp_path / "s.tsp"), str(tmp_path / "d.npz")]) == 0
    assert "5 frames decoded" in capsys.readouterr().out
