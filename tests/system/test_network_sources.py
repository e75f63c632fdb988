"""Network cameras as the edge's source (docs/deployment.md, "Network cameras"): MPEG-TS
served over TCP, HTTP and UDP on loopback by a sender process (this file, run as a
script), read by host.sources' Source and by the edge against a real server. A source
that stays silent or stops part way ends within its timeout; a camera faster than the
edge builds no backlog; credentials never leave the URL the user typed."""

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.host.resume import source_identity
from temposplit.host.sources import input_options, is_url, open_source, redact

H, W = 96, 128
BITS = 40  # a frame's index (16 bits) and the sender's clock when it made it (24 bits of ms), as blocks


# ---------------------------------------------------------------------------- the sender (a process)


def _picture(index: int, stamp_ms: int) -> np.ndarray:
    """A frame carrying ``index`` and ``stamp_ms`` as 16x16 white blocks (they survive the coding)."""
    f = np.full((H, W, 3), (40, 90, 140), np.uint8)
    value = (index & 0xFFFF) | ((stamp_ms & 0xFFFFFF) << 16)
    for b in range(BITS):
        if (value >> b) & 1:
            r, c = divmod(b, 8)
            f[8 + r * 16 : 24 + r * 16, c * 16 : c * 16 + 16] = 255
    return f


def _marks(rgb: np.ndarray) -> tuple[int, int]:
    """The index and the sender's clock (ms, mod 2^24) a frame carries."""
    value = 0
    for b in range(BITS):
        r, c = divmod(b, 8)
        if rgb[16 + r * 16, c * 16 + 8].mean() > 160:
            value |= 1 << b
    return value & 0xFFFF, value >> 16


def _now_ms() -> int:
    return int(time.monotonic() * 1000) & 0xFFFFFF  # CLOCK_MONOTONIC: the same clock in every process


def _send(out, fps: float, frames: int, fmt: str = "mpegts") -> None:
    """``frames`` frames as MPEG-TS (MPEG-2 video, a key frame every 15, no B frames) to
    ``out``, at ``fps`` frames a second (0: as fast as it goes), each packet written at once."""
    import av

    with av.open(out, "w", format=fmt, container_options={"flush_packets": "1"}) as c:
        s = c.add_stream("mpeg2video", rate=Fraction(fps or 30).limit_denominator(1001))
        s.width, s.height, s.pix_fmt, s.bit_rate = W, H, "yuv420p", 2_000_000
        s.codec_context.options = {"bf": "0", "g": "15"}
        t0 = time.monotonic()
        for i in range(frames):
            if fps:
                time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
            for p in s.encode(av.VideoFrame.from_ndarray(_picture(i, _now_ms()), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _serve_tcp(fps: float, frames: int, after: str) -> None:
    """Each connection gets the stream from frame 0 (in a thread of its own); then the
    sender closes it, or (``hang``) keeps it open and sends nothing more."""
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)

    def serve(conn):
        try:
            with conn.makefile("wb", buffering=0) as f:
                _send(f, fps, frames)
            if after == "hang":
                time.sleep(3600)
        except Exception:  # the reader went away (the probe's connection): OSError, or PyAV's callback error
            pass
        conn.close()

    while True:
        threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()


def _serve_http(fps: float, frames: int, credentials: str) -> None:
    """``GET /cam.ts`` with HTTP basic authentication as ``credentials`` (user:password): the stream."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    expected = "Basic " + base64.b64encode(credentials.encode()).decode()

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                _send(self.wfile, fps, frames)
            except Exception:  # the reader went away
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Sender:
    """The sender process: ``Sender("tcp", fps, frames, "close")`` and its ``port``."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.port = int(self.proc.stdout.readline())

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def sender():
    made = []
    yield lambda *args: made.append(Sender(*args)) or made[-1]
    for s in made:
        s.stop()


@pytest.fixture
def silent():
    """A TCP port on loopback that accepts connections and never sends a byte."""
    sock = socket.create_server(("127.0.0.1", 0))
    conns = []

    def accept():
        while True:
            try:
                conns.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield sock.getsockname()[1]
    sock.close()
    for c in conns:
        c.close()


def _read_all(source) -> tuple[list, ConfigError | None]:
    """Every frame of ``source`` and the error it ended with (None: it ended)."""
    frames = []
    try:
        for f in source.frames():
            frames.append(f)
    except ConfigError as exc:
        return frames, exc
    return frames, None


# ---------------------------------------------------------------------------- what is a URL, what is shown


def test_a_url_is_a_scheme_and_two_slashes_a_name_with_a_colon_is_a_file():
    assert all(is_url(u) for u in ("rtsp://cam/1", "HTTP://cam", "udp://0.0.0.0:5000", "ftp://x"))
    assert not any(is_url(n) for n in ("x:y.mp4", "file:v.mp4", "pipe:0", "./rtsp://x", "/dev/video0", "c.mp4"))


@pytest.mark.parametrize(
    "url, shown",
    [
        ("rtsp://admin:secret@10.0.0.2:554/stream1", "rtsp://admin:***@10.0.0.2:554/stream1"),
        ("rtsp://admin:p@ss/w0rd@cam/s", "rtsp://admin:***@cam/s"),  # unescaped: hidden whole all the same
        ("rtsp://admin:pa?ss#@cam/s", "rtsp://admin:***@cam/s"),
        ("http://cam/a?mail=a@b.com", "http://***@b.com"),  # an '@' past the host: more hidden, never less
        ("https://t0ken@cam/live.m3u8", "https://***@cam/live.m3u8"),
        ("http://cam/video.cgi?user=admin&pwd=secret&res=hd", "http://cam/video.cgi?user=admin&pwd=***&res=hd"),
        ("srt://cam:9000?mode=caller&passphrase=secret", "srt://cam:9000?mode=caller&passphrase=***"),
        ("http://cam/a?access_token=secret", "http://cam/a?access_token=***"),
        ("udp://0.0.0.0:5000", "udp://0.0.0.0:5000"),
        ("x:y.mp4", "x:y.mp4"),
    ],
)
def test_credentials_are_redacted_and_the_rest_kept(url, shown):
    assert redact(url) == shown
    assert source_identity(url) == shown  # what the resume state keeps


def test_two_cameras_have_two_identities_the_same_camera_with_another_password_one():
    a, b = "rtsp://u:one@cam1/s", "rtsp://u:one@cam2/s"
    assert source_identity(a) != source_identity(b)
    assert source_identity(a) == source_identity("rtsp://u:two@cam1/s")


def test_input_options_are_key_value_pairs():
    assert input_options(["rtsp_transport=udp", "headers=X-A: b=c"]) == {
        "rtsp_transport": "udp",
        "headers": "X-A: b=c",
    }
    for bad in (["rtsp_transport"], ["=tcp"], ["a b=c"], ["k=1", "k=2"]):
        with pytest.raises(ConfigError, match="--input-option"):
            input_options(bad)


# ---------------------------------------------------------------------------- reading a network source


def test_a_tcp_camera_is_read_live_and_its_end_is_a_failure(sender):
    """A camera serving 40 frames at once: the probe reads the first, the stream connects
    again; every picture is either taken or dropped, the newest kept, numbered as taken;
    the camera closing its connection stops the stream naming the frame."""
    cam = sender("tcp", 0, 40, "close")
    src = open_source(f"TCP://127.0.0.1:{cam.port}")  # (a scheme in capitals, as URLs allow)
    assert src.live and src.count is None and src.size == (H, W) and src.fps == 30
    taken, err = [], None
    try:
        for f in src.frames():
            taken.append(_marks(f)[0])
            time.sleep(0.02)
    except ConfigError as exc:
        err = exc
    assert err is not None and f"the stream stopped at frame {len(taken)}: the source closed it" in str(err)
    assert taken == sorted(taken) and taken[-1] == 39
    assert len(taken) + src.dropped == 40


def test_a_camera_faster_than_the_edge_builds_no_backlog(sender):
    """30 frames/s to a reader taking 5 a second: read as a file is, the frame taken fell
    0.83 s further behind every second (17 s after 20 s); the newest are taken instead."""
    cam = sender("tcp", 30, 100000, "close")
    src = open_source(f"tcp://127.0.0.1:{cam.port}")
    lags, start = [], time.monotonic()
    frames = src.frames()
    for f in frames:
        lags.append((_now_ms() - _marks(f)[1]) % (1 << 24))
        if time.monotonic() - start > 4:
            break
        time.sleep(0.2)
    frames.close()
    assert len(lags) >= 12 and max(lags[2:]) < 600, lags  # (the first: what was buffered while connecting)
    assert src.dropped > 50


def test_a_cameras_pictures_carry_the_time_they_came_not_the_time_they_were_taken(sender):
    """A network camera's frames are stamped in UTC when they come to the edge (its reader's
    thread), not when a slow edge takes them: a picture that waited among the newest 4 says
    when it came (made + the sender's coding, the loopback and the decoder's delay)."""
    cam = sender("tcp", 30, 100000, "close")
    src = open_source(f"tcp://127.0.0.1:{cam.port}")
    offset = time.time() - time.monotonic()  # the sender marks its pictures with CLOCK_MONOTONIC
    came, waited, stamps, start = [], [], [], time.monotonic()
    frames = src.stamped()
    for item in frames:
        taken = time.time()
        age = ((_now_ms() - _marks(item.picture)[1]) % (1 << 24)) / 1000
        assert item.time is None
        came.append(item.utc - (offset + time.monotonic() - age))  # came - made
        waited.append(taken - item.utc)
        stamps.append(item.utc)
        if time.monotonic() - start > 3:
            break
        time.sleep(0.3)
    frames.close()
    assert len(came) >= 8 and stamps == sorted(stamps)
    assert all(-0.05 < d < 0.25 for d in came[1:]), came  # (the first: what was buffered while connecting)
    assert sorted(waited[1:])[len(waited) // 2] > 0.06, waited  # 3 newer pictures came while it waited


def test_a_source_that_accepts_and_sends_nothing_is_refused_within_its_timeout(silent):
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"cannot open tcp://127.0.0.1:{silent}: nothing received for 1 s"):
        open_source(f"tcp://127.0.0.1:{silent}", timeout=1.0)
    assert time.monotonic() - t0 < 4


def test_an_http_camera_that_answers_and_then_sends_nothing_is_refused_within_its_timeout():
    sock = socket.create_server(("127.0.0.1", 0))

    def answer_then_hang():
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
        time.sleep(30)

    threading.Thread(target=answer_then_hang, daemon=True).start()
    port = sock.getsockname()[1]
    t0 = time.monotonic()
    try:
        with pytest.raises(ConfigError) as e:
            open_source(f"http://u:secret@127.0.0.1:{port}/cam.ts", timeout=1.0)
    finally:
        sock.close()
    assert (
        str(e.value) == f"cannot open http://u:***@127.0.0.1:{port}/cam.ts: nothing received for 1 s (--source-timeout)"
    )
    assert time.monotonic() - t0 < 4


def test_a_camera_that_stalls_mid_stream_stops_the_stream_within_its_timeout(sender):
    cam = sender("tcp", 0, 12, "hang")
    src = open_source(f"tcp://127.0.0.1:{cam.port}", timeout=1.0)
    t0 = time.monotonic()
    frames, err = _read_all(src)
    assert err is not None and f"the stream stopped at frame {len(frames)}: nothing received for 1 s" in str(err)
    assert len(frames) >= 1 and len(frames) + src.dropped >= 11  # (the last frame's end is never seen)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "url, words",
    [("rtsp://u:secret@127.0.0.1:{port}/s", "Connection refused"), ("srt://127.0.0.1:{port}", "no srt protocol")],
)
def test_a_refused_url_is_one_error_naming_it_without_its_password(url, words):
    port = _free_port()
    with pytest.raises(ConfigError) as e:
        open_source(url.format(port=port))
    assert words in str(e.value) and "secret" not in str(e.value)


def serve_folder(folder):
    """An HTTP server on loopback serving ``folder``, quietly, in a thread: (the server, its
    base URL). The caller shuts it down."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_a_source_of_known_duration_is_read_whole_and_ends(tmp_path):
    """A file served over HTTP (Matroska: its duration in its header): FFmpeg knows its
    duration, so nothing is dropped for a slow reader and its end is the end of the stream;
    its frames carry the file's own times (30 frames/s), not when the reader took them."""
    _send(str(tmp_path / "clip.mkv"), 0, 20, "matroska")
    server, base = serve_folder(tmp_path)
    try:
        src = open_source(f"{base}/clip.mkv")
        assert src.finite and not src.live  # a file read over the network: positional (test_file_sources.py)
        taken, times = [], []
        for f in src.stamped():
            taken.append(_marks(f.picture)[0])
            times.append((f.time, f.utc))
            time.sleep(0.03)
    finally:
        server.shutdown()
    assert taken == list(range(20)) and src.dropped == 0
    assert [(round(t, 3), utc) for t, utc in times] == [(round(i / 30, 3), None) for i in range(20)]


@pytest.mark.parametrize("backend", ["av", "cv2"])
def test_an_mjpeg_camera_over_http_is_read(backend):
    """The commonest HTTP camera: JPEG pictures in a multipart/x-mixed-replace response, 30 a second."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import cv2

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for i in range(300):
                    jpg = cv2.imencode(".jpg", _picture(i, _now_ms())[:, :, ::-1])[1].tobytes()
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                    self.wfile.write(head + jpg + b"\r\n")
                    time.sleep(1 / 30)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = open_source(f"http://127.0.0.1:{server.server_address[1]}/video.mjpg", backend)
        assert src.live and src.size == (H, W)
        frames = src.frames()
        taken = []
        for _ in range(5):
            taken.append(_marks(next(frames))[0])
            time.sleep(0.15)
        frames.close()
    finally:
        server.shutdown()
    assert taken == sorted(taken) and len(set(taken)) == 5 and src.dropped > 0


def test_a_udp_camera_is_read(sender):
    port = _free_port(socket.SOCK_DGRAM)
    cam = Sender("udp", 30, 150, port)
    try:
        src = open_source(f"udp://127.0.0.1:{port}", timeout=3.0)
        frames = src.frames()
        taken = [_marks(next(frames))[0] for _ in range(8)]
        frames.close()
    finally:
        cam.stop()
    assert taken == sorted(taken) and len(set(taken)) == 8


def test_opencvs_reader_takes_a_url_and_its_timeout(sender, silent):
    cam = sender("tcp", 0, 20, "close")
    src = open_source(f"tcp://127.0.0.1:{cam.port}", "cv2")
    assert src.backend == "cv2" and src.live and src.size == (H, W)
    frames, err = _read_all(src)
    assert err is not None and "the stream stopped at frame" in str(err)
    assert [_marks(f)[0] for f in frames][-1] == 19 and len(frames) + src.dropped == 20
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=f"cannot open tcp://127.0.0.1:{silent}"):
        open_source(f"tcp://127.0.0.1:{silent}", "cv2", timeout=1.0)
    assert time.monotonic() - t0 < 5


def test_a_v4l2_camera_takes_input_options(monkeypatch):
    """``--input-option video_size=...`` reaches FFmpeg's v4l2 demuxer, when probed and when read."""
    from types import SimpleNamespace

    import av

    opened = []

    class Camera:
        streams = SimpleNamespace(video=[SimpleNamespace(average_rate=25)])

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def decode(self, stream):
            return iter(())

    def fake_open(path, format=None, **kwargs):
        opened.append((path, format, kwargs.get("container_options")))
        return Camera()

    monkeypatch.setattr(av, "open", fake_open)
    src = open_source("/dev/video0", options={"video_size": "640x480"})
    assert src.live
    with pytest.raises(ConfigError, match="the camera stopped at frame 0"):  # a camera has no end
        list(src.frames())
    assert opened == [("/dev/video0", "v4l2", {"video_size": "640x480"})] * 2


# ---------------------------------------------------------------------------- the command line


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["rtsp://admin:secret@127.0.0.1:{port}/s"], ["rtsp://admin:***@127.0.0.1:{port}/s", "Connection refused"]),
        (["ftp://u:secret@127.0.0.1/x"], ["ftp://u:***@127.0.0.1/x", "not ftp"]),
        (["tcp://127.0.0.1:{port}", "--input-option", "rtsp_transport"], ["must be KEY=VALUE"]),
        (["tcp://127.0.0.1:{port}", "--source-timeout", "0"], ["--source-timeout must be positive"]),
        (["{clip}", "--input-option", "video_size=64x48"], ["not the file"]),
        (["--replay", "{clip}", "--input-option", "a=b"], ["--input-option and --source-timeout do not apply"]),
    ],
)
def test_the_edge_refuses_a_bad_source_in_one_line_before_the_model_loads(
    argv, words, monkeypatch, capsys, one_line, tmp_path
):
    import temposplit.host.cli as cli

    monkeypatch.setattr(cli, "_edge_model", _no_model)
    port, clip = _free_port(), tmp_path / "c.ts"
    with open(clip, "wb") as f:
        _send(f, 0, 2)
    argv = [a.format(port=port, clip=clip) for a in argv]
    assert main(["edge", *argv, "--server", "127.0.0.1:9"]) == 2
    line = one_line(*(w.format(port=port) for w in words))
    assert "secret" not in line


def test_the_demo_refuses_a_url_without_showing_its_password(capsys, one_line):
    assert main(["demo", "--video", "rtsp://u:secret@127.0.0.1:9/s"]) == 2
    assert "secret" not in one_line("rtsp://u:***@127.0.0.1:9/s", "the demo takes a video file")


def test_the_edge_streams_a_url_as_a_live_source_redacted(sender, monkeypatch):
    """What the command gives the Edge: the frames numbered on at a resume, the URL redacted."""
    import temposplit.host.cli as cli
    import temposplit.host.edge as edge_module

    cam = sender("http", 0, 5, "user:secret")
    monkeypatch.setattr(cli, "_edge_model", lambda *a: object())
    seen = {}

    def run(self, frames, video=None, total=None, positions=True):
        seen.update(video=video, positions=positions, source=self.source_id, total=total)
        raise SystemExit(7)

    monkeypatch.setattr(edge_module.Edge, "run", run)
    with pytest.raises(SystemExit, match="7"):
        main(["edge", f"http://user:secret@127.0.0.1:{cam.port}/cam.ts", "--server", "127.0.0.1:9", "--frames", "3"])
    shown = f"http://user:***@127.0.0.1:{cam.port}/cam.ts"
    assert seen == {"video": {"video": shown, "fps": 30.0}, "positions": False, "source": shown, "total": 3}


def test_the_edge_takes_its_source_from_the_environment_off_its_command_line(sender, monkeypatch, capsys, one_line):
    """``$TEMPOSPLIT_SOURCE`` stands for the source argument (what deploy/systemd's units
    use): a process's environment is readable by its owner alone, its argv by every user."""
    import temposplit.host.cli as cli
    import temposplit.host.edge as edge_module

    cam = sender("http", 0, 5, "user:secret")
    monkeypatch.setattr(cli, "_edge_model", lambda *a: object())
    seen = {}

    def run(self, frames, video=None, total=None, positions=True):
        seen.update(video=video, source=self.source_id)
        raise SystemExit(7)

    monkeypatch.setattr(edge_module.Edge, "run", run)
    monkeypatch.setenv("TEMPOSPLIT_SOURCE", f"http://user:secret@127.0.0.1:{cam.port}/cam.ts")
    with pytest.raises(SystemExit, match="7"):
        main(["edge", "--server", "127.0.0.1:9", "--frames", "3"])
    assert seen["source"] == f"http://user:***@127.0.0.1:{cam.port}/cam.ts"
    # A source on the command line wins; --replay takes no source at all.
    monkeypatch.setattr(cli, "_edge_model", _no_model)
    assert main(["edge", "rtsp://u:other@127.0.0.1:9/s", "--server", "127.0.0.1:9"]) == 2
    assert "other" not in one_line("rtsp://u:***@127.0.0.1:9/s")
    monkeypatch.delenv("TEMPOSPLIT_SOURCE")
    assert main(["edge", "--server", "127.0.0.1:9"]) == 2
    one_line("give either a video source (or $TEMPOSPLIT_SOURCE) or --replay FILE")


def test_wrong_credentials_are_one_line_naming_the_url_redacted(sender, monkeypatch, capsys, one_line):
    import temposplit.host.cli as cli

    monkeypatch.setattr(cli, "_edge_model", _no_model)
    cam = sender("http", 0, 5, "user:secret")
    assert main(["edge", f"http://user:wrong@127.0.0.1:{cam.port}/cam.ts", "--server", "127.0.0.1:9"]) == 2
    assert "wrong" not in one_line(f"http://user:***@127.0.0.1:{cam.port}/cam.ts", "401")


# ---------------------------------------------------------------------------- end to end: a camera, an edge, a server


@pytest.fixture
def edge_from(monkeypatch, edge_model, tmp_path):
    """``run(*argv)``: ``temposplit edge`` in this process with the session's M1, the resume
    state file's text kept when the edge clears it; returns (status, stdout, stderr, state)."""
    import temposplit.host.cli as cli
    from temposplit.host.resume import ResumeState

    monkeypatch.setattr(cli, "_edge_model", lambda *a: edge_model)
    states = []
    clear = ResumeState.clear

    def kept(self):
        states.append(self.path.read_text() if self.path.is_file() else None)
        clear(self)

    monkeypatch.setattr(ResumeState, "clear", kept)

    def run(capsys, *argv):
        status = main(["edge", *argv, "--state", str(tmp_path / "state")])
        out, err = capsys.readouterr()
        return status, out, err, states[-1] if states else None

    return run


@pytest.mark.models
def test_an_http_camera_with_credentials_streams_to_the_server_which_never_sees_them(
    sender, make_server, edge_from, capsys
):
    log = []
    srv = make_server(local_video=True, log=log.append)
    cam = sender("http", 15, 600, "user:secret")
    url = f"http://user:secret@127.0.0.1:{cam.port}/cam.ts"
    where = f"{srv.address[0]}:{srv.address[1]}"
    status, out, err, state = edge_from(capsys, url, "--server", where, "--stream", "cam", "--frames", "6")
    assert status == 0, err
    assert "6 frames" in out and "0 errors" in out and "dropped at the source" in out
    shown = f"http://user:***@127.0.0.1:{cam.port}/cam.ts"
    assert json.loads(state)["source"] == shown
    session = json.loads((srv.out_dir / "cam" / "session.json").read_text())
    assert session["info"]["video"] == shown and session["finished"] is True
    records = [json.loads(x) for x in (srv.out_dir / "cam" / "detections.jsonl").read_text().splitlines()]
    assert sorted(r["frame"] for r in records) == list(range(6)) and all("detections" in r for r in records)
    everything = out + err + state + "\n".join(log)
    everything += "".join(p.read_text(errors="replace") for p in (srv.out_dir / "cam").iterdir() if p.suffix != ".mp4")
    assert "secret" not in everything and shown in "\n".join(log)  # the server names it, redacted


@pytest.mark.models
def test_a_camera_that_dies_mid_stream_ends_the_stream_with_the_frames_sent(sender, make_server, edge_from, capsys):
    srv = make_server()
    cam = sender("tcp", 10, 15, "close")
    where = f"{srv.address[0]}:{srv.address[1]}"
    status, out, err, _ = edge_from(capsys, f"tcp://127.0.0.1:{cam.port}", "--server", where, "--stream", "cam")
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "the source closed it; the stream 'cam' was ended there" in lines[0], err
    sent = int(lines[0].split("the stream stopped at frame ")[1].split(":")[0])
    assert 1 <= sent <= 15 and f"{sent} of its {sent} frame(s) recorded by the server" in lines[0]
    assert json.loads((srv.out_dir / "cam" / "session.json").read_text())["finished"] is True
    records = [json.loads(x) for x in (srv.out_dir / "cam" / "detections.jsonl").read_text().splitlines()]
    assert sorted(r["frame"] for r in records) == list(range(sent))


def _free_port(kind=socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":  # the sender: tcp FPS FRAMES close|hang, http FPS FRAMES USER:PASSWORD, udp FPS FRAMES PORT
    mode, fps, frames, extra = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if mode == "tcp":
        _serve_tcp(fps, frames, extra)
    elif mode == "http":
        _serve_http(fps, frames, extra)
    else:
        print(extra, flush=True)
        _send(f"udp://127.0.0.1:{extra}?pkt_size=1316", fps, frames)
