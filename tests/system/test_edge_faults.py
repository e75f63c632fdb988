"""Faults while streaming, as a deployment meets them: a peer that is no temposplit server or
stops answering, a server whose output folder breaks under it, an edge stopped by a signal,
an edge that streams for hours. Real sockets on loopback; the edge as a process where its
exit status and its stderr are what is checked."""

import dataclasses
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from rawclient import Raw, refused, wait_for
from replays import synthetic_replay, tiled_replay

from temposplit import protocol as P
from temposplit.codec.bitstream import StreamHeader
from temposplit.codec.encoder import PRESETS
from temposplit.errors import TemposplitError
from temposplit.host.edge import Edge
from temposplit.host.sources import open_replay

CODEC = {**PRESETS["recommended"], "fps": 10.0}


def needs_models(fn):
    """A test against a real server: its M2, and M1's outputs for the model hash."""
    return pytest.mark.slow(pytest.mark.models(fn))


# ---------------------------------------------------------------------------- helpers


def _edge(replay: str, address, *options: str, timeout: float = 60.0) -> tuple[int, str, float]:
    """``temposplit edge --replay`` as a process: its exit status, its stderr and its seconds."""
    t0 = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "temposplit",
            "edge",
            "--replay",
            replay,
            "--server",
            f"{address[0]}:{address[1]}",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stderr, time.monotonic() - t0


def _one_line(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("temposplit edge: "), stderr
    assert "internal error" not in lines[0] and "Traceback" not in stderr, stderr
    for w in words:
        assert w in lines[0], stderr
    return lines[0]


def _message(mtype: int, obj: dict) -> bytes:
    return P.control(mtype, obj)


WELCOME = _message(P.WELCOME, {"protocol": 2, "stream": "s", "token": "ab" * 16, "next_frame": 0, "recorded": []})


class Peer:
    """A listening socket on loopback whose every connection is served by ``serve(sock)``
    in its own thread; counts the connections."""

    def __init__(self, serve):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.accepted = 0
        self.serve = serve
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.serve(conn)
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def acking_server(damaged: set, summary):
    """A fake server's side of one connection: WELCOME, an ACK of each packet (an error for
    the frames in ``damaged``), and at END the SUMMARY ``summary(frames)``."""
    from temposplit.codec.bitstream import parse_packet

    def serve(conn):
        chan = P.Channel(conn)
        assert chan.recv().type == P.HELLO
        conn.sendall(WELCOME)
        while True:
            msg = chan.recv()
            if msg.type == P.PACKET_AT:
                index = parse_packet(P.split_packet_at(msg.body)[2], 0, 1 << 24)[0].index
                bad = index in damaged
                conn.sendall(_message(P.ACK, {"frame": index, "error": "damaged"} if bad else {"frame": index}))
            elif msg.type == P.END:
                conn.sendall(_message(P.SUMMARY, summary(msg.json()["frames"])))
                return

    return serve


def _drain(conn):
    while conn.recv(1 << 16):
        pass


# ---------------------------------------------------------------------------- peers that are no server


def test_an_edge_gives_up_on_a_server_that_welcomes_but_never_acknowledges(tmp_path, peer):
    """Silence after WELCOME with frames unacknowledged: one new connection (the old one may
    be half-open), then the edge stops with one line, in about two answer timeouts; it once
    reconnected for ever."""

    def welcome_then_nothing(conn):
        conn.recv(1 << 16)
        conn.sendall(WELCOME)
        _drain(conn)

    p = peer(welcome_then_nothing)
    rc, err, seconds = _edge(synthetic_replay(tmp_path / "r.npz", 100), p.address, "--timeout", "1", timeout=30)
    assert rc == 2
    _one_line(err, "no answer from the server for 1 s")
    assert seconds < 15 and p.accepted == 2


def test_an_edge_gives_up_on_a_server_that_accepts_and_never_answers_the_hello(tmp_path, peer):
    """Two silent HELLOs end it (one may be a busy server): not eleven answer timeouts, and
    the line says the server was reached, not that it could not be."""
    p = peer(_drain)
    rc, err, seconds = _edge(synthetic_replay(tmp_path / "r.npz", 3), p.address, "--timeout", "1", timeout=60)
    assert rc == 2
    _one_line(err, "accepted the connection but did not answer within 1 s")
    assert seconds < 15 and p.accepted == 2


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"\x16\x03\x01\x00\x02\x02\x28"],
    ids=["http", "tls"],
)
def test_an_edge_names_a_peer_that_is_no_temposplit_server_at_once(tmp_path, peer, answer):
    def foreign(conn):
        conn.recv(1 << 16)
        conn.sendall(answer)
        _drain(conn)

    p = peer(foreign)
    rc, err, seconds = _edge(synthetic_replay(tmp_path / "r.npz", 3), p.address, timeout=60)
    assert rc == 2
    _one_line(err, f"127.0.0.1:{p.address[1]} does not answer as a temposplit server")
    assert p.accepted == 1  # not retried


@pytest.mark.parametrize("frame", ["zz", None, -1, 1.5, [0]])
def test_a_malformed_ack_is_one_line_not_an_internal_error(tmp_path, peer, frame):
    def bad_ack(conn):
        conn.recv(1 << 16)
        conn.sendall(WELCOME)
        conn.recv(1 << 16)
        obj = {"detections": []} if frame is None else {"frame": frame, "detections": []}
        conn.sendall(_message(P.ACK, obj))
        _drain(conn)

    p = peer(bad_ack)
    rc, err, _ = _edge(synthetic_replay(tmp_path / "r.npz", 3), p.address, "--timeout", "5", timeout=60)
    assert rc == 2
    _one_line(err, "the server sent an ACK with no valid frame number")


# ---------------------------------------------------------------------------- the server's files


def _records(path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


@needs_models
def test_a_streams_folder_removed_while_streaming_fails_the_stream_not_silently(make_server, replay_file, tmp_path):
    """The log's file removed under the server (its folder deleted by hand or by a cleaner):
    records written to it are nowhere, so the edge gets ERROR naming it, not ACKs and a
    SUMMARY of frames the server no longer has."""
    srv = make_server()
    replay = open_replay(tiled_replay(replay_file, tmp_path / "r40.npz", 40))
    folder = srv.out_dir / "gone"

    def remove(index, chan):
        if index == 20 and folder.exists():
            wait_for(lambda: _records(folder / "detections.jsonl") >= 5, "5 records")
            shutil.rmtree(folder)

    edge = Edge(replay, CODEC, srv.address, "gone", timeout=20)
    edge.fault = remove
    with pytest.raises(TemposplitError, match="internal server error: FileNotFoundError"):
        edge.run(replay.frames(), total=replay.count)


@needs_models
def test_an_end_whose_state_cannot_be_saved_is_not_confirmed(make_server, replay_file, tmp_path):
    """END closes the stream's files and marks it finished in session.json: when that cannot
    be written, the edge gets ERROR, not a SUMMARY it would print as '0 errors'."""
    srv = make_server()
    replay = open_replay(tiled_replay(replay_file, tmp_path / "r12.npz", 12))
    folder = srv.out_dir / "stuck"

    def block_the_state(index, chan):
        if index == 5:
            (folder / "session.json.tmp").mkdir(exist_ok=True)  # the state's next write fails

    edge = Edge(replay, CODEC, srv.address, "stuck", timeout=20)
    edge.fault = block_the_state
    with pytest.raises(TemposplitError, match="internal server error: IsADirectoryError"):
        edge.run(replay.frames(), total=replay.count)
    assert json.loads((folder / "session.json").read_text())["finished"] is False


@needs_models
def test_a_detached_streams_refusal_says_when_its_name_is_free(make_server, coded_stream):
    """An edge killed mid-stream takes its token with it: a new run of the same name is
    refused, saying when a new stream may take the name (docs/protocol.md), as it says
    once the session has expired."""
    header, packets = coded_stream
    srv = make_server(resume_window=300.0)
    began = time.monotonic()  # before any activity of the stream
    first = Raw(srv.address)
    assert first.hello(header, "killed").type == P.WELCOME
    assert len(first.packets_acknowledged(packets[:1])) == 1
    first.close()
    wait_for(lambda: "killed" in srv.sessions and srv.sessions["killed"].conn is None, "the session detached")
    again = Raw(srv.address)
    msg = again.hello(header, "killed")
    idle = time.monotonic() - began  # the most the stream can have been idle at the refusal
    assert refused(msg, "stream 'killed' is in use (it can be resumed with its token"), msg.json()
    said = re.search(r"may take the name after 300 s without activity, in (\d+) s\)", msg.json()["message"])
    assert said, msg.json()
    assert 300 - idle - 1 <= int(said.group(1)) <= 300, (idle, msg.json())  # the window less the idle time


@needs_models
def test_a_stream_whose_welcome_was_lost_is_given_to_the_same_edge_asking_again(make_server, coded_stream):
    """The connection drops after the HELLO and before the edge reads its WELCOME: the edge
    has no token, and its next HELLO, a new stream of the same name, was refused for the
    resume window (600 s). A detached stream to which nothing arrived after its HELLO is
    taken by a HELLO of the same header at once (its empty outputs moved aside, as after an
    expiry); one of other settings is still refused, and so is the name once a frame came."""
    header, packets = coded_stream
    srv = make_server(resume_window=300.0)
    lost = Raw(srv.address)
    lost.send_hello(header, "cam")
    wait_for(lambda: "cam" in srv.sessions, "the stream opened")
    lost.close()  # the WELCOME unread
    wait_for(lambda: srv.sessions.get("cam") is not None and srv.sessions["cam"].conn is None, "detached")
    other = Raw(srv.address)  # the same name, other settings (another fps): not the edge that lost its WELCOME
    changed = dataclasses.replace(StreamHeader.from_bytes(header), fps=12.5).to_bytes()
    assert refused(other.hello(changed, "cam"), "stream 'cam' is in use")
    again = Raw(srv.address)
    welcome = again.hello(header, "cam")
    assert welcome.type == P.WELCOME and len(welcome.json()["token"]) == 32, welcome.json()
    assert (srv.out_dir / "cam.1" / "session.json").exists()  # the unused stream's outputs, moved aside
    assert len(again.packets_acknowledged(packets[:1])) == 1
    again.close()
    wait_for(lambda: srv.sessions.get("cam") is not None and srv.sessions["cam"].conn is None, "detached")
    late = Raw(srv.address)
    assert refused(late.hello(header, "cam"), "stream 'cam' is in use")  # a frame came: the name is held


# ---------------------------------------------------------------------------- the edge stopped, the edge's memory


@needs_models
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_edge_stopped_by_a_signal_ends_its_stream_and_frees_the_name(make_server, replay_file, tmp_path, sig):
    """Ctrl-C or a service manager's SIGTERM mid-stream: the edge answers for what it sent,
    ENDs the stream, exits 128 + the signal with one line; the server has one record per
    frame sent and the stream finished, so the next run of that name is accepted (it was
    refused for the resume window, 600 s)."""
    srv = make_server()
    long = tiled_replay(replay_file, tmp_path / "long.npz", 2000)
    log = srv.out_dir / "cam" / "detections.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "temposplit", "edge", "--replay", long, "--server", f"{srv.address[0]}:{srv.address[1]}"]
        + ["--stream", "cam"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _records(log) >= 8, "8 records", seconds=60)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + sig
    line = _one_line(err, f"stopped by {signal.Signals(sig).name}; the stream 'cam' was ended there")
    state = json.loads((srv.out_dir / "cam" / "session.json").read_text())
    assert state["finished"] is True
    frames = [json.loads(x)["frame"] for x in log.read_text().splitlines()]
    assert sorted(frames) == list(range(len(frames))) and len(frames) < 2000  # each frame sent, once
    assert f"{len(frames)} of its {len(frames)} frame(s) recorded" in line
    rc, err, _ = _edge(str(replay_file), srv.address, "--stream", "cam", timeout=60)
    assert rc == 0, err


@needs_models
def test_a_cli_edge_keeps_no_per_frame_records(make_server, replay_file, tmp_path, monkeypatch):
    """`temposplit edge` may stream a camera for days: its report keeps counts, not each
    frame's detections and figures (37 KB a frame with the SSD's detections), and the
    encoder's per-frame statistics are trimmed as it goes."""
    srv = make_server()
    replay = open_replay(tiled_replay(replay_file, tmp_path / "r40.npz", 40))
    edge = Edge(replay, CODEC, srv.address, "counts", keep_frames=False)
    report = edge.run(replay.frames(), total=replay.count)
    assert report.acked == 40 and not report.errors and report.summary["recorded"] == [[0, 40]]
    assert report.detections == {} and report.latency_ms == {} and report.kinds == {}
    assert report.tensor_bytes == [] and report.encode_ms == [] and report.m2_ms == []
    assert len(edge.encoder.frames) <= 1
    # ... and the command line streams so.
    import temposplit.host.edge as edge_module
    from temposplit.cli import main

    seen = []

    def run(self, frames, video=None, total=None, positions=True):
        seen.append(self.keep_frames)
        raise SystemExit(7)

    monkeypatch.setattr(edge_module.Edge, "run", run)
    with pytest.raises(SystemExit, match="7"):
        main(["edge", "--replay", str(replay_file), "--server", "127.0.0.1:9"])
    assert seen == [False]


def test_a_stream_that_ends_with_frames_recorded_as_errors_exits_with_partial(tmp_path, peer):
    """A file streamed to its end whose server recorded a frame as an error: the edge exits
    with PARTIAL (3), which its service unit does not restart, not 1 (a defect of ours,
    restarted: the file was streamed again as a new stream, its losses repeated)."""
    from replays import synthetic_replay

    from temposplit.cli import PARTIAL

    def summary(n):
        counts = {"stream": "s", "frames": n, "decoded": n - 1, "errors": 1, "bytes": 0}
        return {**counts, "recorded": [[0, n]], "failed": [[1, 2]]}

    replay = synthetic_replay(tmp_path / "r.npz", 3)
    rc, err, _ = _edge(str(replay), peer(acking_server({1}, summary)).address, "--state", str(tmp_path / "state"))
    assert rc == PARTIAL == 3, err
    assert err == ""  # a completed run: its summary on stdout, no error line


@needs_models
def test_a_live_stream_that_is_full_goes_on_in_a_new_stream_of_the_same_name(
    make_server, replay_file, tmp_path, monkeypatch, capsys
):
    """A camera streaming for days reached 2^24 frames, the most a stream carries: the
    server refused the next frame, and the edge, restarted by its unit, resumed the stream
    at that frame and was refused again, for ever, recording nothing more. The edge now ends
    the full stream and goes on in a new one of the same name with the next frame (here
    with a stream of 10 frames at most): no frame lost, the full ones' outputs kept beside."""
    from temposplit.host.cli import stream_on

    monkeypatch.setattr(P, "MAX_FRAMES", 10)
    srv = make_server()
    replay = open_replay(tiled_replay(replay_file, tmp_path / "r25.npz", 25))
    made = []

    def make_edge():
        made.append(Edge(replay, CODEC, srv.address, "cam", timeout=20))
        return made[-1]

    current = [make_edge()]
    report = stream_on(current, make_edge, replay.frames(), {"fps": replay.fps}, None, live=True)
    assert len(made) == 3 and current[0] is made[-1]
    assert report.frames == 5 and not report.errors and not report.full
    for folder, count in (("cam.1", 10), ("cam.2", 10), ("cam", 5)):
        state = json.loads((srv.out_dir / folder / "session.json").read_text())
        assert state["finished"] is True, folder
        log = (srv.out_dir / folder / "detections.jsonl").read_text().splitlines()
        assert sorted(json.loads(x)["frame"] for x in log) == list(range(count)), folder
    out = capsys.readouterr().out
    assert out.count("stream 'cam' is full (10 frames, the most a stream carries)") == 2


@needs_models
def test_a_files_stream_that_is_full_ends_there_and_says_so(make_server, replay_file, tmp_path, monkeypatch):
    """A file of more frames than a stream carries: its frame i is the stream's frame i (a
    resume finds its place by it), so it does not go on in a new stream; it ends full, and
    `temposplit edge` says so and exits 3 (which its unit does not restart)."""
    from temposplit.host.cli import stream_on

    monkeypatch.setattr(P, "MAX_FRAMES", 10)
    srv = make_server()
    replay = open_replay(tiled_replay(replay_file, tmp_path / "r14.npz", 14))
    edge = Edge(replay, CODEC, srv.address, "file", timeout=20)
    report = stream_on([edge], None, replay.frames(), {"fps": replay.fps}, replay.count, live=False)
    assert report.full and report.frames == 10 and not report.errors
    log = (srv.out_dir / "file" / "detections.jsonl").read_text().splitlines()
    assert len(log) == 10 and json.loads((srv.out_dir / "file" / "session.json").read_text())["finished"]


@needs_models
def test_a_source_ended_by_the_signal_ends_the_stream_as_the_signal(make_server, replay_file):
    """A signal while the edge waits for a network source's picture ends the source at once
    (Source.interrupt): that end is the signal's, not the source's own (exit 130, not 0)."""
    srv = make_server()
    replay = open_replay(str(replay_file))
    edge = Edge(replay, CODEC, srv.address, "sig", timeout=20)

    def frames():
        yield from list(replay.frames())[:3]
        edge.stop = "stopped by SIGINT"  # what the handler sets, as it interrupts the source

    with pytest.raises(TemposplitError, match=r"stopped by SIGINT; the stream 'sig' was ended there: 3 of its 3"):
        edge.run(frames(), positions=False)


@needs_models
def test_a_full_stream_whose_end_was_lost_is_ended_on_resume_and_goes_on(
    make_server, replay_file, tmp_path, monkeypatch
):
    """The edge killed after a full stream's last frame, before its END: the rerun resumed
    the stream at frame 2^24, sent it, was refused, kept its token and exited 2, for ever.
    A resumed full stream now sends nothing: it is ended, and the camera goes on in a new
    stream with its next picture."""
    from temposplit.host.cli import stream_on
    from temposplit.host.resume import ResumeState

    monkeypatch.setattr(P, "MAX_FRAMES", 10)
    srv = make_server()
    replay = open_replay(tiled_replay(replay_file, tmp_path / "r16.npz", 16))

    def make_edge():
        state = ResumeState(tmp_path / "state", "srv", "cam")
        return Edge(replay, CODEC, srv.address, "cam", timeout=20, resume_state=state, source_id="camera")

    class Killed(BaseException):
        pass

    first = make_edge()

    def killed():  # every frame answered (recorded on the server), then gone before END
        deadline = time.monotonic() + 60
        while first.pending and time.monotonic() < deadline:
            first._handle(block=True, timeout=0.5)
        raise Killed

    first._finish = killed
    with pytest.raises(Killed):
        first.run(replay.frames(), video={"fps": replay.fps}, positions=False)
    first.chan.close()
    wait_for(lambda: srv.sessions.get("cam") is not None and srv.sessions["cam"].conn is None, "detached")
    current = [make_edge()]
    report = stream_on(current, make_edge, replay.frames(), {"fps": replay.fps}, None, live=True)
    assert report.frames == 6 and not report.errors  # 16 pictures: the resumed stream took none
    for folder, count in (("cam.1", 10), ("cam.2", 10), ("cam", 6)):
        state = json.loads((srv.out_dir / folder / "session.json").read_text())
        assert state["finished"] is True, folder
        assert len((srv.out_dir / folder / "detections.jsonl").read_text().splitlines()) == count, folder
