"""A review of the edge's video sources (``edge``, ``edge --replay``, ``features``, ``demo``):
a file whose header undercounts its frames, a replay's memory, an output folder that takes
no file, ``--frames`` past any count, a ``.npy`` that is no array of frames, the demo's
summary and log, and a signal the process ignores. No model, no server here."""

from __future__ import annotations

import os
import signal
import struct
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from replays import synthetic_replay
from test_demo_options import demo_stand_ins
from test_edge_inputs import _Model  # an M1 stand-in: one 4x6x6 tensor per frame

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.protocol import MAX_FRAMES

SERVER = ["--server", "127.0.0.1:9"]


@pytest.fixture(autouse=True)
def no_connection(monkeypatch):
    import temposplit.host.edge as edge

    monkeypatch.setattr(edge.socket, "create_connection", lambda *a, **k: pytest.fail("the edge connected"))


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: every check here comes before it."""
    import temposplit.host.cli as host_cli
    import temposplit.host.pipeline as pipeline

    monkeypatch.setattr(host_cli, "_edge_model", lambda *a: pytest.fail("the model was loaded"))
    monkeypatch.setattr(pipeline, "EdgeModel", lambda *a, **k: pytest.fail("the model was loaded"))


def _frames(n, h=48, w=64):
    return [np.full((h, w, 3), 20 + 20 * i, np.uint8) for i in range(n)]


def _npy(path, n=3):
    np.save(path, np.stack(_frames(n)) if n else np.zeros((0, 48, 64, 3), np.uint8))
    return str(path)


def _mkv(path, n=5):
    """An MKV: its container announces no frame count."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in _frames(n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    return str(path)


def _undercounted_avi(path, frames: int, announced: int) -> str:
    """An AVI of ``frames`` frames whose headers (avih's total, the stream's length) say
    ``announced``, as a recorder that crashed leaves one: PyAV and OpenCV believe the header,
    and every frame decodes."""
    import av

    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in _frames(frames):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.index(b"avih") + 8 + 16, announced)  # MainAVIHeader.dwTotalFrames
    struct.pack_into("<I", data, data.index(b"strh") + 8 + 32, announced)  # AVIStreamHeader.dwLength
    path.write_bytes(bytes(data))
    return str(path)


# ---------------------------------------------------------------------------- 1: a header that undercounts


def _edge_total(monkeypatch, argv) -> tuple[int | None, int]:
    """(the total ``temposplit edge argv`` gives the encoder, the frames it streams)."""
    import temposplit.host.cli as host_cli
    import temposplit.host.edge as edge

    seen = {}

    def run(self, frames, video=None, total=None, positions=True):
        seen["total"], seen["frames"] = total, sum(1 for _ in frames)
        raise SystemExit(7)

    monkeypatch.setattr(edge.Edge, "run", run)
    monkeypatch.setattr(host_cli, "_edge_model", lambda *a: SimpleNamespace())
    with pytest.raises(SystemExit, match="7"):
        main(["edge", *argv, *SERVER])
    return seen["total"], seen["frames"]


def test_a_header_that_undercounts_its_frames_streams_them_all(tmp_path, monkeypatch):
    """The header's count is given to the encoder although the file holds more frames: it
    coded every frame past it as an anchor of its own (2x the bytes there); it now takes
    the count as a hint and codes the rest as a clip of unknown length (tests/codec/
    test_announced_count.py). Every frame is streamed; --frames caps them."""
    from temposplit.host.sources import open_source

    clip = _undercounted_avi(tmp_path / "u.avi", frames=8, announced=3)
    assert open_source(clip).count == 3  # what the header says; 8 decode
    state = ["--state", str(tmp_path / "state")]
    total, streamed = _edge_total(monkeypatch, [clip, *state])
    assert (total, streamed) == (3, 8)  # the header's word, and every frame the file holds
    total, streamed = _edge_total(monkeypatch, [clip, "--frames", "6", *state])
    assert (total, streamed) == (3, 6)  # --frames caps them; the header's count stays a hint
    # A count that is the frames' own (a .npy's shape, a feature file's) is given as it is.
    assert _edge_total(monkeypatch, [_npy(tmp_path / "v.npy", 4), *state]) == (4, 4)
    replay = synthetic_replay(tmp_path / "r.npz", 5)
    assert _edge_total(monkeypatch, ["--replay", replay, *state]) == (5, 5)
    assert _edge_total(monkeypatch, ["--replay", replay, "--frames", "2", *state]) == (2, 2)


# ---------------------------------------------------------------------------- 2: a replay's memory


def _feature_file(path, frames: int, shape=(64, 38, 38), compressed=True) -> str:
    from temposplit.codec import features

    codes = np.empty((frames, *shape), np.uint8)
    codes[:] = (np.arange(frames) % 251).astype(np.uint8)[:, None, None, None]
    codes[:, 0, :4, :4] = np.random.default_rng(0).integers(0, 256, (frames, 4, 4), dtype=np.uint8)
    identity = {
        "model": np.array("ssd-mobilenet-v2"),
        "cut": np.array("features.10"),
        "model_hash": np.zeros(32, np.uint8),
        "frame_size": np.array([480, 640], np.int32),
        "fps": np.float64(30.0),
    }
    clip = features.FeatureClip(["features.10"], [codes], [0.05], [0], [4])
    if compressed:
        features.save(str(path), clip, identity)
    else:  # np.savez: the members stored, not deflated
        members = {"codes/t": codes, "scale/t": np.float32(0.05), "zero_point/t": np.int32(0), "block/t": np.int32(4)}
        np.savez(path, **{k.replace("/t", "/features.10"): v for k, v in members.items()}, **identity)
    return str(path)


@pytest.mark.parametrize("compressed", [True, False], ids=["deflated", "stored"])
def test_a_replay_holds_one_frame_in_memory_whatever_the_files_length(tmp_path, compressed):
    """Replay() read every codes array whole (features.load): 20,000 frames at the default
    cut were 484 MB of memory before the first frame was sent (an hour of a camera, 2.5 GB;
    `bench server` holds many). The codes are now read a frame at a time as they stream."""
    import tracemalloc

    from temposplit.codec import features
    from temposplit.host.sources import open_replay

    path = _feature_file(tmp_path / "long.npz", 400, compressed=compressed)  # 37 MB of codes
    tracemalloc.start()
    try:
        replay = open_replay(path)
        firsts = [int(f.tensors[0].codes[1, 0, 0]) for f in replay.frames()]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert replay.count == 400 and firsts == [t % 251 for t in range(400)]
    assert peak < 4 << 20, peak  # a frame is 92 kB; the clip 37 MB
    # The same codes as the whole file read at once, and streamed again from the start.
    whole = features.load(path).codes[0]
    for frame in replay.frames():
        assert frame.tensors[0].shape == (64, 38, 38)
        assert np.array_equal(frame.tensors[0].codes, whole[frame.index])


def test_a_replay_member_damaged_part_way_is_the_files_error_on_that_frame(tmp_path):
    """Read a frame at a time, a member whose data is damaged past its header shows only when
    it is reached: a ConfigError naming the file (the edge ends the stream there, as on a
    failing camera), never an internal error. A stored member's bad CRC shows at its end:
    the error names the frame where the damage was found, no longer as if the damage were
    there (it said "(at frame 59)" of a byte in frame 29), and says that the frames before
    it may have gone out."""
    from temposplit.host.sources import open_replay

    path = tmp_path / "damaged.npz"
    _feature_file(path, 60, compressed=False)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("codes/features.10.npy")
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len  # the member's data
    data[start + info.compress_size // 2] ^= 0xFF  # in frame 29 of 60
    path.write_bytes(bytes(data))
    replay = open_replay(str(path))  # its headers are sound
    given = []
    with pytest.raises(ConfigError) as caught:
        for frame in replay.frames():
            given.append(frame.index)
    assert given == list(range(59))  # the damaged frame 29 among them: only the CRC at the end tells
    line = str(caught.value)
    assert "damaged.npz: codes/features.10: not readable (Bad CRC-32" in line, line
    assert line.endswith(
        ": found reading frame 59, but the damage may lie in any frame from 0 to 59 "
        "(the frames before 59 may have been streamed already)"
    ), line


# ---------------------------------------------------------------------------- 3: an output that cannot be written


def test_features_into_a_folder_that_takes_no_file_says_so_before_the_model(tmp_path, no_model, one_line):
    """The spool (tempfile.TemporaryFile beside the output) was the first write, after the
    model had loaded (a minute on a first run), and the error named its random file
    (`/sys/tmpdaxxb1bv: Permission denied`)."""
    video = _npy(tmp_path / "v.npy")
    outs = ["/proc/x.npz"]  # no file can be made there, root or not
    if os.geteuid() != 0:  # root writes a folder whatever its mode
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        outs.append(str(locked / "x.npz"))
    for out in outs:
        assert main(["features", video, out, "--frames", "3"]) == 2
        line = one_line(f"cannot write {out}: ")
        assert "tmp" not in line.split(out)[1], line


@pytest.mark.parametrize("where", ["open", "write"])
def test_a_spool_that_cannot_be_written_names_the_output(tmp_path, monkeypatch, where):
    """A spool refused, or a disk that fills while frames are spooled: a ConfigError naming
    the output, not an OSError naming a temporary file or none."""
    import tempfile

    from temposplit.host import features as host_features

    real = tempfile.TemporaryFile

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def spool(*a, **k):
        if where == "open":
            raise PermissionError(13, "Permission denied", os.path.join(k.get("dir") or "/tmp", "tmpdaxxb1bv"))
        return Full(real(*a, **k))

    monkeypatch.setattr(tempfile, "TemporaryFile", spool)
    out = str(tmp_path / "out.npz")
    why = "Permission denied" if where == "open" else "No space left on device"
    with pytest.raises(ConfigError, match=f"cannot write {out}: {why}"):
        host_features.write_features(out, _Model(), _frames(3), 10.0)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- 5: --frames past any count


@pytest.mark.parametrize("frames", ["99999999999999999999", str(MAX_FRAMES + 1)])
@pytest.mark.parametrize("command", ["edge", "edge --replay", "features", "demo"])
def test_frames_past_the_stream_formats_count_is_one_line_before_the_model(
    tmp_path, no_model, one_line, command, frames
):
    """Past sys.maxsize, islice's ValueError was an internal error once the model had loaded."""
    video = _npy(tmp_path / "v.npy")
    argv = {
        "edge": ["edge", video, *SERVER],
        "edge --replay": ["edge", "--replay", synthetic_replay(tmp_path / "r.npz"), *SERVER],
        "features": ["features", video, str(tmp_path / "o.npz")],
        "demo": ["demo", "--video", _mkv(tmp_path / "v.mkv"), "--out", str(tmp_path / "out")],
    }[command]
    assert main([*argv, "--frames", frames]) == 2
    one_line(f"--frames must be at most {MAX_FRAMES}, not {frames}")
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["edge", "features"])
def test_calibration_frames_past_the_bound_are_one_line_before_the_model(tmp_path, no_model, one_line, command):
    """--calibrate-on-clip --calibration N held N frames in memory (past sys.maxsize,
    islice's internal error after the source opened)."""
    from temposplit.host.cli import MAX_CALIBRATION

    video = _npy(tmp_path / "v.npy")
    argv = {"edge": ["edge", video, *SERVER], "features": ["features", video, str(tmp_path / "o.npz")]}[command]
    big = str(10**20)
    assert main([*argv, "--calibrate-on-clip", "--calibration", big]) == 2
    one_line(f"--calibration must be at most {MAX_CALIBRATION}, not {big}")


def test_the_demo_api_bounds_its_frames_too(tmp_path, no_model):
    from temposplit.host.demo import run_demo

    with pytest.raises(ConfigError, match=f"frames must be 1 to {MAX_FRAMES}"):
        run_demo(frames=10**20, out=str(tmp_path / "out"))


# ---------------------------------------------------------------------------- 6: a .npy that is no array of frames


def test_an_npz_named_npy_and_an_npy_of_no_frames_are_refused_at_open(tmp_path, no_model, one_line):
    """np.load gives an NpzFile for a zip whatever its name (`.dtype`: an AttributeError, an
    internal error); an .npy of 0 frames passed the open and was refused only once the model
    had loaded ("the video has no frames")."""
    from temposplit.host.sources import open_source

    fake = tmp_path / "fake.npy"
    with open(fake, "wb") as f:  # (np.savez would add ".npz" to the name)
        np.savez(f, a=np.zeros((2, 48, 64, 3), np.uint8))
    empty = _npy(tmp_path / "empty.npy", 0)
    with pytest.raises(ConfigError, match="fake.npy: an .npz archive, not an .npy of frames"):
        open_source(str(fake))
    with pytest.raises(ConfigError, match=r"empty.npy has no frames"):
        open_source(empty)
    for path, said in ((str(fake), "an .npz archive"), (empty, "has no frames")):
        assert main(["features", path, str(tmp_path / "o.npz")]) == 2
        one_line(path, said)
        assert main(["edge", path, *SERVER]) == 2
        one_line(path, said)


# ---------------------------------------------------------------------------- 7, 8: the demo's summary and log


def _demo_run(monkeypatch, tmp_path, count, detections, frames=120):
    """demo._run with stand-ins for the model, the server and the edge (nothing of theirs is
    under test): the clip streams ``len(detections)`` frames answered, and recorded as the
    server records them (the demo's figures are the records'), with those detections.
    Returns (summary, log lines)."""
    import temposplit.host.edge as edge_module
    from temposplit.host import demo
    from temposplit.server.outputs import DetectionLog

    demo_stand_ins(monkeypatch)
    n = len(detections)

    class Edge:
        stop = None

        def __init__(self, *a, progress=None, **k):
            self.progress = progress

        def run(self, frames, video=None, total=None):
            report = SimpleNamespace(
                frames=0, bytes=0, packets=0, acked=0, tensor_bytes=[], packets_sent=[], latency_ms={}, errors={},
                detections={}, m1_ms=[], encode_ms=[], decode_ms=[], m2_ms=[], reconnects=0, key_requests=0,
                summary=None,
            )  # fmt: skip
            (tmp_path / "v").mkdir(exist_ok=True)
            log = DetectionLog(tmp_path / "v" / "detections.jsonl")
            for i, _ in enumerate(frames):
                report.frames = report.packets = report.acked = i + 1
                report.bytes += 100
                report.tensor_bytes.append([90])
                report.packets_sent.append((i, 100))
                report.detections[i] = detections[i]
                log.write({"frame": i, "kind": "pred", "n_bits": 4, "bytes": 100, "detections": detections[i]})
                self.progress(i + 1, report)
            log.close()
            return report

    monkeypatch.setattr(edge_module, "Edge", Edge)
    source = SimpleNamespace(count=count, size=(48, 64), stamped=lambda: iter(_frames(n)))
    lines: list[str] = []
    with demo._Signals(lines.append) as signals:
        summary = demo._run(
            "v.mkv", source, frames, 25.0, str(tmp_path), None, "golden", None, 8, False, lines.append, signals
        )
    return summary, lines


def test_the_demos_summary_tells_frames_decoded_from_frames_with_detections(tmp_path, monkeypatch, capsys):
    """Every frame answered was called a frame "with detections": 5 of them, where 1 record
    held a detection and 4 were empty."""
    from temposplit.host.demo import print_summary

    box = [{"bbox": [1, 2, 3, 4], "score": 0.9, "category_id": 1}]
    summary, _ = _demo_run(monkeypatch, tmp_path, None, [box, [], [], [], []])
    assert (summary["frames"], summary["decoded"], summary["with_detections"], summary["errors"]) == (5, 5, 1, 0)
    print_summary(summary)
    assert "frames                 5 (5 decoded, 1 with detections, 0 errors)" in capsys.readouterr().out


def test_the_demo_says_up_to_frames_where_the_clip_announces_no_count(tmp_path, monkeypatch):
    """An MKV of 5 frames was logged as `120 frames at 25 fps`, its progress `n/120`."""
    _, lines = _demo_run(monkeypatch, tmp_path, None, [[]] * 12)
    assert "video v.mkv: up to 120 frames at 25 fps (the file does not say how many it holds)" in lines
    assert any(line.startswith("  frame 10 of up to 120: ") for line in lines), lines
    _, lines = _demo_run(monkeypatch, tmp_path, 5, [[]] * 5)  # a count: the frames streamed
    assert "video v.mkv: 5 frames at 25 fps" in lines
    assert any(line.startswith("  frame 5/5: ") for line in lines), lines


# ---------------------------------------------------------------------------- 9: an ignored signal


def test_the_edge_leaves_an_ignored_signal_ignored():
    """`temposplit edge ... &` in a script (SIGINT ignored, as POSIX has a background job)
    stopped on `kill -INT`, where the demo kept it ignored. SIGTERM, not ignored, still
    ends the stream."""
    from temposplit.host.cli import _stopped_by_signals

    earlier = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term = signal.getsignal(signal.SIGTERM)
    try:
        edge = SimpleNamespace(stop=None)
        with _stopped_by_signals([edge]) as got:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert got == [] and edge.stop is None
            signal.raise_signal(signal.SIGTERM)
            assert got == [signal.SIGTERM] and edge.stop == "stopped by SIGTERM"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == term
    finally:
        signal.signal(signal.SIGINT, earlier)


# ---------------------------------------------------------------------------- 4: Ctrl-C on a silent network source


def test_an_interrupt_ends_a_silent_network_sources_wait_at_once(monkeypatch):
    """Ctrl-C on an edge whose network source had gone silent: the stop was looked at only
    between frames, and the wait for a picture lasted out --source-timeout (up to an hour;
    50 s in the review). Source.interrupt, the signal handler's call, ends it at once."""
    import threading
    import time

    from temposplit.host.sources import Source

    gone = threading.Event()

    def stalls(self):
        yield np.zeros((48, 64, 3), np.uint8), None
        gone.wait(30)  # the camera says nothing more (its timeout: 30 s)

    monkeypatch.setattr(Source, "_pictures_av", stalls)
    monkeypatch.setattr("temposplit.model.data.upright_rgb", lambda picture: picture)  # (an av.VideoFrame's)
    source = Source("rtsp://camera/stream", 25.0, None, False, url="rtsp://camera/stream", timeout=30.0)
    frames = source.stamped()
    assert next(frames).picture.shape == (48, 64, 3)
    threading.Timer(0.3, source.interrupt).start()
    t0 = time.monotonic()
    assert next(frames, None) is None  # the end of the source, not the camera's failure
    assert time.monotonic() - t0 < 3
    gone.set()
