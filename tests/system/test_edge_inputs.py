"""Bad input to ``edge``, ``edge --replay`` and ``features`` (host/): one line on stderr and
exit status 2, before any connection or model, and no file lost. No model, no server here."""

import os
import zipfile
import zlib

import numpy as np
import pytest
from replays import synthetic_replay

from temposplit.cli import main
from temposplit.errors import ConfigError

SERVER = ["--server", "127.0.0.1:9"]


@pytest.fixture(autouse=True)
def no_connection(monkeypatch):
    """Every refusal here comes before the edge connects."""
    import temposplit.host.edge as edge

    monkeypatch.setattr(edge.socket, "create_connection", lambda *a, **k: pytest.fail("the edge connected"))


def _replay(path, **identity):
    return synthetic_replay(path, 3, **identity)


# ---------------------------------------------------------------------------- C1: rates and timeouts


@pytest.mark.parametrize("fps", ["inf", "-inf", "nan", "1e9", "241", "1e-9", "0", "-1"])
def test_edge_refuses_an_fps_outside_the_servers_range_before_connecting(tmp_path, capsys, fps, one_line):
    replay = _replay(tmp_path / "r.npz")
    assert main(["edge", "--replay", replay, *SERVER, f"--fps={fps}"]) == 2
    one_line("--fps")


@pytest.mark.parametrize("name", ["", "bad name", "-x", ".hidden", "a/b", "é", "x" * 65])
def test_edge_refuses_a_stream_name_the_server_would_before_connecting(tmp_path, capsys, name, one_line):
    """The server's refusal came only after the model loaded, or after 20 s of retries
    against a server out of reach."""
    replay = _replay(tmp_path / "r.npz")
    with pytest.raises(SystemExit) as exc:  # argparse's: its one line, status 2
        main(["edge", "--replay", replay, *SERVER, f"--stream={name}"])
    assert exc.value.code == 2
    one_line("is not a stream name")


@pytest.mark.parametrize("timeout", ["inf", "1e300", "nan", "86401", "0", "-5"])
def test_edge_refuses_an_unbounded_timeout_before_connecting(tmp_path, capsys, timeout, one_line):
    replay = _replay(tmp_path / "r.npz")
    assert main(["edge", "--replay", replay, *SERVER, f"--timeout={timeout}"]) == 2
    one_line("--timeout must be positive, at most 86400")


@pytest.mark.parametrize("fps, message", [(1e9, "e.g. --fps 240"), (np.inf, "invalid fps"), (np.nan, "invalid fps")])
def test_the_rate_of_a_replay_file_is_checked_before_connecting(tmp_path, capsys, fps, message, one_line):
    replay = _replay(tmp_path / "r.npz", fps=np.float64(fps))
    assert main(["edge", "--replay", replay, *SERVER]) == 2
    one_line(replay, message)


def test_a_replay_file_of_a_high_rate_streams_at_the_rate_given(tmp_path, monkeypatch):
    """--fps replaces the file's rate: the check is on the stream's rate, not the file's."""
    import temposplit.host.edge as edge

    replay = _replay(tmp_path / "r.npz", fps=np.float64(1000.0))

    def run(self, frames, video=None, total=None, positions=True):
        assert self.codec["fps"] == 30.0
        raise SystemExit(7)

    monkeypatch.setattr(edge.Edge, "run", run)
    with pytest.raises(SystemExit, match="7"):
        main(["edge", "--replay", replay, *SERVER, "--fps", "30"])


@pytest.mark.parametrize(
    "codec, timeout, message",
    [({"fps": 1e9}, 60.0, "the stream's rate"), ({"fps": 10.0}, float("inf"), "the answer timeout")],
)
def test_the_edge_api_checks_the_rate_and_timeout_before_connecting(tmp_path, codec, timeout, message):
    """What ``bench server`` builds: Edge(...).run() refuses before any socket."""
    from temposplit.host.edge import Edge
    from temposplit.host.sources import open_replay

    replay = open_replay(_replay(tmp_path / "r.npz"))
    with pytest.raises(ConfigError, match=message):
        Edge(replay, codec, ("127.0.0.1", 9), "s", timeout=timeout).run(replay.frames(), total=3)


# ---------------------------------------------------------------------------- C2: damaged replay files


@pytest.mark.parametrize(
    "identity, message",
    [
        ({"frame_size": np.int32(5)}, "frame_size must be two integers"),  # 0-d: was TypeError
        ({"frame_size": np.array([576, 768, 3], np.int32)}, "frame_size must be two integers"),
        ({"frame_size": np.array(["a", "b"])}, "frame_size must be two integers"),
        ({"frame_size": np.array([100000, 100000], np.int32)}, "16 to 4096"),
        ({"fps": np.array([1.0, 2.0])}, "fps must be a number"),  # was TypeError
        ({"fps": np.array("fast")}, "fps must be a number"),
        ({"model_hash": np.arange(32, dtype=np.float64)}, "model_hash must be 32 bytes"),
        ({"model_hash": np.zeros((32, 2), np.uint8)}, "model_hash must be 32 bytes"),
        ({"model": np.array(["a", "b"])}, "model must be a text scalar"),
        ({"model": np.frombuffer(b"ab", np.uint8)}, "model must be a text scalar"),
        ({"fps": None}, "no fps"),
    ],
)
def test_replay_identity_fields_of_another_type_or_shape(tmp_path, capsys, identity, message, one_line):
    replay = _replay(tmp_path / "r.npz", **identity)
    assert main(["edge", "--replay", replay, *SERVER]) == 2
    one_line(replay, message)


def test_a_truncated_or_damaged_replay_file(tmp_path, capsys, one_line):
    good = _replay(tmp_path / "good.npz")
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    text = tmp_path / "text.npz"
    text.write_text("not a zip\n")
    for path in (trunc, empty, text):
        assert main(["edge", "--replay", str(path), *SERVER]) == 2
        one_line(str(path))


@pytest.mark.parametrize(
    "exc",
    [
        zipfile.BadZipFile("Bad CRC-32 for file 'codes/t.npy'"),
        zlib.error("Error -3 while decompressing data"),
        TypeError("only 0-dimensional arrays can be converted to Python scalars"),
        AttributeError("'bytes' object has no attribute 'dtype'"),
        MemoryError("Unable to allocate 90.9 TiB"),
        ValueError("EOF: reading array data"),
        EOFError("No data left in file"),
        KeyError("codes/t"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_whatever_the_feature_loader_raises_is_one_config_error_naming_the_file(
    tmp_path, capsys, monkeypatch, exc, one_line
):
    """The boundary of host/: the shared loader (codec/features.py) may raise any of these
    for a damaged file; the edge converts them, naming the file."""
    from temposplit.codec import features
    from temposplit.host.sources import open_replay

    replay = _replay(tmp_path / "r.npz")

    def load(path, **kwargs):
        raise exc

    monkeypatch.setattr(features, "load", load)
    with pytest.raises(ConfigError, match="r.npz: not a readable feature file"):
        open_replay(replay)
    assert main(["edge", "--replay", replay, *SERVER]) == 2
    one_line(replay, type(exc).__name__)


def test_the_identity_fields_read_past_a_damaged_member(tmp_path, monkeypatch):
    """np.load's members (the identity's) failing with zlib.error is the file's error too."""
    from temposplit.host.sources import open_replay

    replay = _replay(tmp_path / "r.npz")
    real = np.load

    class Damaged:
        def __init__(self, npz):
            self.npz, self.files = npz, npz.files

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.npz.close()

        def __getitem__(self, key):
            if key == "fps":
                raise zlib.error("Error -3 while decompressing data: invalid distance too far back")
            return self.npz[key]

    monkeypatch.setattr(np, "load", lambda *a, **k: Damaged(real(*a, **k)))
    with pytest.raises(ConfigError, match=r"r.npz: not a readable feature file \(error"):
        open_replay(replay)


# ---------------------------------------------------------------------------- C3: host names


@pytest.mark.parametrize("host", ["foo..bar", "x" * 64 + ".com", "\udcff"])
def test_a_host_name_idna_cannot_encode(tmp_path, capsys, host, one_line):
    replay = _replay(tmp_path / "r.npz")
    assert main(["edge", "--replay", replay, "--server", f"{host}:7300"]) == 2
    one_line("invalid host name")


def test_the_edge_api_refuses_such_a_host_without_retrying(tmp_path):
    from temposplit.host.edge import Edge
    from temposplit.host.sources import open_replay

    replay = open_replay(_replay(tmp_path / "r.npz"))
    with pytest.raises(ConfigError, match="invalid host name"):
        Edge(replay, {"fps": 10.0}, ("foo..bar", 9), "s").run(replay.frames(), total=3)


# ---------------------------------------------------------------------------- A1: features' output


def test_features_refuses_to_write_over_its_input(tmp_path, capsys, monkeypatch, one_line):
    import temposplit.host.cli as host_cli

    monkeypatch.setattr(host_cli, "_edge_model", lambda *a: pytest.fail("the model was loaded"))
    video = tmp_path / "v.avi"
    video.write_bytes(b"a video's bytes")
    link = tmp_path / "link.npz"
    link.symlink_to(video)
    for out in (video, link, tmp_path / "." / "v.avi"):
        assert main(["features", str(video), str(out), "--frames", "3"]) == 2
        one_line("is the input")
    assert video.read_bytes() == b"a video's bytes"


class _Model:
    """An M1 stand-in: one 4x6x6 tensor per frame."""

    model = "ssd-mobilenet-v2"

    class cut:
        name = "features.10"

    def m1(self, frames):
        from temposplit.model.numpy_m1 import Codes

        return [[Codes("t", (4, 6, 6), 0.1, 3, np.full((4, 6, 6), f[0, 0, 0], np.uint8))] for f in frames]

    def tensor_specs(self, sample, block=None):
        from temposplit.codec.encoder import TensorSpec

        return [TensorSpec(t.name, t.shape, t.scale, t.zero_point, block or 2) for t in sample]

    def model_hash(self, sample):
        return bytes(32)


def _frames(n):
    return [np.full((32, 48, 3), i, np.uint8) for i in range(n)]


def test_features_writes_its_output_whole_or_not_at_all(tmp_path, monkeypatch):
    from temposplit.codec import features
    from temposplit.host.features import write_features

    out = tmp_path / "out.npz"
    out.write_bytes(b"the previous result")
    real_save = features.save

    def failing_save(f, clip, extra=None):
        f.write(b"PK\x03\x04 part of an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        write_features(str(out), _Model(), _frames(3), 10.0)
    assert out.read_bytes() == b"the previous result"  # neither truncated nor partly written
    assert sorted(os.listdir(tmp_path)) == ["out.npz"]  # and no temporary file left

    monkeypatch.setattr(features, "save", real_save)
    s = write_features(str(out), _Model(), _frames(3), 10.0)
    assert s["frames"] == 3 and sorted(os.listdir(tmp_path)) == ["out.npz"]
    assert features.load(str(out)).frames == 3
    from temposplit.host.sources import open_replay

    replay = open_replay(str(out))  # and edge --replay reads what it wrote
    assert (replay.count, replay.frame_size, replay.fps, replay.hash) == (3, (32, 48), 10.0, bytes(32))


def test_a_source_failing_midway_leaves_the_frames_before_it_written(tmp_path):
    """A camera that goes away (or a file damaged) after 5 frames: the 5 frames are written
    and the source's error, its type kept, says so; before, nothing was written. A source
    that fails before its first frame writes nothing."""
    from temposplit.codec import features
    from temposplit.errors import ConfigError
    from temposplit.host.features import write_features

    def camera(failing_after):
        yield from _frames(failing_after)
        raise ConfigError("cam: the camera stopped at frame 5: it gives no more pictures")

    out = tmp_path / "cam.npz"
    with pytest.raises(ConfigError, match=r"pictures; the 5 frame\(s\) before it are written"):
        write_features(str(out), _Model(), camera(5), 10.0)
    assert features.load(str(out)).frames == 5
    with pytest.raises(ConfigError, match=r"gives no more pictures$"):
        write_features(str(tmp_path / "none.npz"), _Model(), camera(0), 10.0)
    assert not (tmp_path / "none.npz").exists()


def test_features_holds_one_frame_in_memory_whatever_the_frame_count(tmp_path):
    """Every frame's codes were kept in lists and then stacked (twice the clip in memory at
    the end): `features /dev/video0 --frames N` grew without bound over a long capture.
    They now go to a spool file as they come."""
    import tracemalloc

    from temposplit.codec import features
    from temposplit.host.features import write_features

    class Big(_Model):
        def m1(self, frames):
            from temposplit.model.numpy_m1 import Codes

            return [[Codes("t", (64, 38, 38), 0.1, 3, np.full((64, 38, 38), f[0, 0, 0], np.uint8))] for f in frames]

    def frames():  # 1,300 frames of 92 kB codes: 120 MB of codes in all
        for i in range(1300):
            yield np.full((32, 48, 3), i % 251, np.uint8)

    out = tmp_path / "long.npz"
    tracemalloc.start()
    try:
        write_features(str(out), Big(), frames(), 10.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # NumPy writes an array into the zip in 16 MiB pieces: about 32 MiB at most, not the
    # clip's 120 MB (240 MB once stacked)
    assert peak < 48 << 20, peak
    clip = features.load(str(out))
    assert clip.frames == 1300 and [int(clip.codes[0][i, 0, 0, 0]) for i in (0, 250, 1299)] == [0, 250, 44]


def test_features_to_dev_null_spools_in_the_temporary_folder_not_in_dev(monkeypatch):
    """/dev is in RAM: a spool "beside" /dev/null, which root may write, held the whole clip
    in memory after all."""
    import tempfile

    from temposplit.host.features import write_features

    made = []
    real = tempfile.TemporaryFile

    def spy(*a, dir=None, **k):
        made.append(dir)
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    write_features("/dev/null", _Model(), _frames(3), 10.0)
    assert made == [None]  # the system's temporary folder


# ---------------------------------------------------------------------------- D2: --m1 files


def _m1(path, graph=None, raw=None, **arrays):
    import json

    blob = raw if raw is not None else json.dumps(graph).encode()
    np.savez(path, graph=np.frombuffer(blob, np.uint8), **arrays)
    return str(path)


def _raw(path, data: bytes):
    path.write_bytes(data)
    return str(path)


M1 = {"format": "temposplit-numpy-m1", "version": 2}
# what a graph needs to load (one node: the input quantized) besides the fields a test changes
_LOADS = {
    "model": "ssd-mobilenet-v2",
    "cut": "features.10",
    "input": {"kind": "ssd-rgb"},
    "nodes": [{"name": "q", "op": "quantize", "inputs": ["input"], "scale": 0.1, "zero_point": 0, "inv_scale": 10.0}],
    "output_names": ["features.10"],
    "outputs": ["q"],
    "weights_digest": "00" * 32,
}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _raw(p, b""), "EOFError"),
        (lambda p: _raw(p, b"PK\x03\x04 cut"), "BadZipFile"),
        (lambda p: _m1(p, [1, 2]), "a JSON list"),
        (lambda p: _m1(p, "hello"), "a JSON str"),
        (lambda p: _m1(p, {**M1, "version": [2]}), "not a whole number"),
        (lambda p: _m1(p, raw=b"\xff\xfe"), "not JSON"),
        (lambda p: _m1(p, {**M1, "output_names": [], "outputs": [], "nodes": "abc"}), "not a valid M1 graph"),
        (lambda p: _m1(p, {**M1, "output_names": [], "outputs": [], "nodes": [], "input": "x"}), "'input'"),
        (
            lambda p: _m1(
                p,
                {
                    **M1,
                    "output_names": [],
                    "outputs": [],
                    "nodes": [],
                    "input": {"kind": "ssd-rgb"},
                    "weights_digest": 5,
                },
            ),
            "not hexadecimal",
        ),
        (  # no tensor at the cut: `features` failed at its first frame with an IndexError
            lambda p: _m1(p, {**M1, **_LOADS, "output_names": [], "outputs": []}),
            "no tensor at its cut",
        ),
        (  # a cut that is no name: features labelled with cut None
            lambda p: _m1(p, {**M1, **_LOADS, "cut": None}),
            "names no model or cut",
        ),
    ],
)
def test_an_m1_file_that_is_not_an_export_is_one_config_error(tmp_path, make, message):
    from temposplit.host.pipeline import NumpyEdgeModel

    path = make(tmp_path / "m1.npz")
    with pytest.raises(ConfigError, match="not an exported M1|not hexadecimal|names no model or cut") as e:
        NumpyEdgeModel(path)
    assert str(e.value).startswith(path) and message in str(e.value)


@pytest.mark.parametrize(
    "exc", [EOFError("No data left"), zipfile.BadZipFile("bad"), TypeError("t"), AttributeError("a"), MemoryError()]
)
def test_whatever_the_m1_loader_raises_is_one_config_error(tmp_path, monkeypatch, exc):
    from temposplit.host.pipeline import NumpyEdgeModel
    from temposplit.model import numpy_m1

    def load(path):
        raise exc

    monkeypatch.setattr(numpy_m1, "load", load)
    with pytest.raises(ConfigError, match="m1.npz: not an exported M1"):
        NumpyEdgeModel(str(tmp_path / "m1.npz"))


def test_edge_with_a_bad_m1_gives_one_line(tmp_path, capsys, one_line):
    from temposplit.model import data

    if not data.vtest_path().is_file():
        pytest.skip("data/vtest.avi is not fetched (run `make data`)")
    m1 = _m1(tmp_path / "m1.npz", [1, 2])
    assert main(["edge", str(data.vtest_path()), *SERVER, "--m1", m1]) == 2
    one_line(m1, "not an exported M1")


def test_an_identity_member_that_is_no_array(tmp_path, capsys, one_line):
    """NumPy returns the raw bytes of a zip member without the .npy header."""
    import zipfile as zf

    replay = _replay(tmp_path / "r.npz", fps=None)
    with zf.ZipFile(replay, "a") as z:
        z.writestr("fps.npy", b"garbage, not an array")
    assert main(["edge", "--replay", replay, *SERVER]) == 2
    one_line(replay, "fps: not an array")


def test_a_stored_block_of_0_is_refused_as_block_0_is(tmp_path):
    from temposplit.codec.encoder import CodecConfig
    from temposplit.codec.errors import ConfigurationError
    from temposplit.codec.features import FeatureClip, save
    from temposplit.host.sources import Replay

    path = tmp_path / "zero.npz"
    codes = np.zeros((2, 8, 12, 12), np.uint8)
    identity = {"model": np.array("m"), "cut": np.array("c"), "model_hash": np.arange(32, dtype=np.uint8)}
    save(
        str(path),
        FeatureClip(["t"], [codes], [0.1], [3], [0]),
        {**identity, "frame_size": np.array([64, 64]), "fps": np.float64(10.0)},
    )
    replay = Replay(str(path))
    (spec,) = replay.tensor_specs(next(replay.frames()).tensors)
    assert spec.block == 0
    with pytest.raises(ConfigurationError, match="block"):
        CodecConfig(tensors=[spec]).validate()


def test_a_back_end_this_machine_cannot_run_is_one_line_before_the_model_loads(monkeypatch, one_line):
    import importlib.util

    import temposplit.host.cli as host_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pynq" else real(name, *a))
    monkeypatch.setattr(host_cli, "_edge_model", lambda *a: pytest.fail("the model loaded before the check"))
    vtest = os.path.join(os.path.dirname(__file__), "..", "..", "data", "vtest.avi")
    assert main(["edge", vtest, "--server", "127.0.0.1:1", "--backend", "pynq"]) == 2
    one_line("the pynq back end needs pynq", "PYNQ-Z2")


def test_an_accelerator_that_cannot_open_is_a_missing_dependency_not_a_defect(monkeypatch):
    from temposplit.errors import MissingDependencyError
    from temposplit.host import backends
    from temposplit.hw import backend as hw_backend
    from temposplit.hw.driver import AcceleratorError

    monkeypatch.setattr(backends, "check_backend", lambda b: None)

    def no_overlay(*a, **k):
        raise AcceleratorError("the overlay should hold one temposplit accelerator and one AXI DMA, not [] and []")

    monkeypatch.setattr(hw_backend, "make_encoder", no_overlay)
    with pytest.raises(MissingDependencyError, match="cannot open the accelerator"):
        backends.make_encoder("pynq", None)


def test_a_cut_other_than_the_exported_m1s_is_refused_not_ignored(monkeypatch):
    import argparse
    from types import SimpleNamespace

    import temposplit.host.cli as host_cli
    import temposplit.host.pipeline as pipeline

    class FakeM1:  # an exported M1 up to features.10, as `models export-m1` writes by default
        def __init__(self, path, log=None):
            self.model, self.cut = "ssd-mobilenet-v2", SimpleNamespace(name="features.10")

    monkeypatch.setattr(pipeline, "NumpyEdgeModel", FakeM1)
    args = argparse.Namespace(m1="m1.npz", cut="features.13", model="ssd-mobilenet-v2")
    with pytest.raises(ConfigError, match=r"m1.npz is the M1 up to features.10"):
        host_cli._edge_model(args, "clip.avi", None)
    for same in ("features.10", None):  # the file's own cut, or none given: it runs
        args.cut = same
        assert host_cli._edge_model(args, "clip.avi", None).cut.name == "features.10"


def test_a_fabric_engine_closes_its_accelerators_transport_once_and_tolerates_a_dead_one():
    from temposplit.hw.backend import FabricEngine
    from temposplit.hw.driver import Accelerator

    class Transport:
        closed = 0

        def close(self):
            Transport.closed += 1

    accel = Accelerator(Transport())
    accel.probe = lambda: None  # no device: only close is exercised here
    FabricEngine(accel).close()
    assert Transport.closed == 1

    def dead():
        raise BrokenPipeError("the simulator stopped")

    accel.transport.close = dead
    FabricEngine(accel).close()  # nothing left to release: no error
