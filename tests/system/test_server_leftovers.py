"""What a server leaves behind, and what it holds: a new stream whose outputs cannot be made
(a full disk) leaves no folder to be taken for a finished stream's and tells the edge why;
a PROXY protocol header sent to a server without --proxy-protocol is named as one; a
stream's recorded frames cost bytes per stream, not per frame; a stopped soak benchmark
stops the server it started."""

import dataclasses
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import test_tls as tls_tests
from rawclient import Raw, hold_control, refused, wait_for  # tests/system's hand-speaking client

from temposplit import protocol as P
from temposplit.frameset import FrameSet
from temposplit.server import session as session_module
from temposplit.server.proxy_header import V2_SIGNATURE
from temposplit.server.session import Session

pki = tls_tests.pki  # test_tls's certificates (a CA, the server's, an edge's)

NO_SPACE = "No space left on device"


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, NO_SPACE)


def break_outputs(monkeypatch, stream: str, step: str) -> dict:
    """Make one step of opening ``stream``'s outputs fail as on a full disk, while the
    returned switch's ``on`` is true: its folder, its log, its video, or its session.json
    (after the temporary file is begun, as a failing fsync leaves it)."""
    switch = {"on": True}

    def failing(path) -> bool:
        return switch["on"] and Path(path).parent.name == stream

    if step == "folder":
        mkdir = Path.mkdir

        def broken_mkdir(self, *args, **kwargs):
            if switch["on"] and self.name == stream:
                raise _no_space()
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", broken_mkdir)
    elif step in ("log", "video"):
        name = "DetectionLog" if step == "log" else "AnnotatedVideo"
        real = getattr(session_module, name)

        def broken(path, *args, **kwargs):
            if failing(path):
                raise _no_space()
            return real(path, *args, **kwargs)

        monkeypatch.setattr(session_module, name, broken)
    else:
        write_state = Session.write_state

        def broken_state(self, **kwargs):
            if failing(self.out_dir / "session.json"):
                (self.out_dir / "session.json.tmp").write_text('{"stream": ')
                raise _no_space()
            return write_state(self, **kwargs)

        monkeypatch.setattr(Session, "write_state", broken_state)
    return switch


def folders(srv) -> list[str]:
    return sorted(p.name for p in srv.out_dir.glob("*"))


def held_sessions(srv) -> int:
    return sum(w.sessions for w in srv.workers)


def end_stream(c: Raw, frames: int = 0) -> dict:
    c.send(P.END, {"frames": frames})
    answers = c.answers_until({P.SUMMARY, P.ERROR})
    assert answers[-1].type == P.SUMMARY, answers[-1].body
    c.close()
    return answers[-1].json()


STEPS = ["folder", "log", "video", "state"]


# --------------------------------------------------------------------------- outputs that cannot be made


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("step", STEPS)
def test_a_new_stream_whose_outputs_cannot_be_made_leaves_nothing_and_says_why(
    make_server, coded_stream, monkeypatch, step
):
    """The folder made for it (empty, or a log, a video and half a session.json) was left,
    and the next HELLO moved it aside as "the finished stream's outputs"."""
    header, _ = coded_stream
    lines = []
    srv = make_server(log=lines.append)
    full = break_outputs(monkeypatch, "cam", step)
    c = Raw(srv.address)
    m = c.hello(header, "cam")
    with pytest.raises(P.ConnectionClosed):
        c.chan.recv()  # closed after its answer
    c.close()
    assert folders(srv) == []
    assert "cam" not in srv.sessions and not srv.opening and held_sessions(srv) == 0
    assert m.type == P.ERROR
    assert m.json() == {"message": f"the server cannot create the outputs of stream 'cam': {NO_SPACE}"}
    (line,) = [line for line in lines if line.startswith("[cam] a new stream's outputs cannot be made")]
    assert NO_SPACE in line
    assert line.endswith("what was made for it is removed") == (step != "folder"), line

    full["on"] = False  # space again: the name is free, nothing is moved aside
    c = Raw(srv.address)
    assert c.hello(header, "cam").type == P.WELCOME
    assert end_stream(c)["frames"] == 0
    assert folders(srv) == ["cam"]
    assert json.loads((srv.out_dir / "cam" / "session.json").read_text())["finished"] is True
    assert not [line for line in lines if " moved to " in line]


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("step", STEPS)
def test_a_finished_streams_folder_moved_aside_for_a_stream_that_fails_is_put_back(
    make_server, coded_stream, monkeypatch, step
):
    header, _ = coded_stream
    lines = []
    srv = make_server(log=lines.append)
    c = Raw(srv.address)
    assert c.hello(header, "cam").type == P.WELCOME
    end_stream(c)
    before = {p.name: p.read_bytes() for p in (srv.out_dir / "cam").iterdir()}

    full = break_outputs(monkeypatch, "cam", step)
    c = Raw(srv.address)
    m = c.hello(header, "cam")
    c.close()
    assert folders(srv) == ["cam"]  # the finished stream's, as it was
    assert {p.name: p.read_bytes() for p in (srv.out_dir / "cam").iterdir()} == before
    assert held_sessions(srv) == 0
    assert refused(m, f"the server cannot create the outputs of stream 'cam': {NO_SPACE}")
    (line,) = [line for line in lines if line.startswith("[cam] a new stream's outputs cannot be made")]
    assert line.endswith("cam.1 moved back to cam"), line

    full["on"] = False
    c = Raw(srv.address)
    assert c.hello(header, "cam").type == P.WELCOME
    end_stream(c)
    assert folders(srv) == ["cam", "cam.1"]
    assert {p.name: p.read_bytes() for p in (srv.out_dir / "cam.1").iterdir()} == before


@pytest.mark.slow
@pytest.mark.models
def test_a_resume_from_files_that_cannot_be_written_keeps_them_and_says_why(make_server, coded_stream, monkeypatch):
    """A restarted server that cannot write a resumed stream's files refuses the resume
    with the system's reason and holds nothing of it; its files stay resumable."""
    header, packets = coded_stream
    first = make_server()
    c = Raw(first.address)
    token = c.hello(header, "cam").json()["token"]
    c.packets_acknowledged(packets[:4])
    c.close()
    first.shutdown()
    before = {p.name: p.read_bytes() for p in (first.out_dir / "cam").iterdir()}

    srv = make_server()  # the same --out
    full = break_outputs(monkeypatch, "cam", "state")
    c = Raw(srv.address)
    m = c.hello(header, "cam", resume=True, token=token)
    c.close()
    assert "cam" not in srv.sessions and held_sessions(srv) == 0
    assert m.type == P.ERROR
    assert m.json() == {"message": f"the server cannot open the outputs of stream 'cam': {NO_SPACE}"}
    after = {p.name: p.read_bytes() for p in (srv.out_dir / "cam").iterdir()}
    assert {k: after[k] for k in before} == before  # (a new video segment begun may stay: it is rewritten)

    full["on"] = False
    c = Raw(srv.address)
    welcome = c.hello(header, "cam", resume=True, token=token).json()
    assert welcome["next_frame"] + len(P.from_ranges(welcome["recorded"])) == 4 and held_sessions(srv) == 1
    c.close()


# --------------------------------------------------------------------------- a PROXY header, unexpected


PROXY_MESSAGE = (
    "the connection starts with a PROXY protocol header, but the server was not started with --proxy-protocol"
)


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize(
    "first",
    [
        b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 7300\r\n",
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 12]) + bytes([198, 51, 100, 9, 10, 0, 0, 1]) + bytes([0, 1, 0, 2]),
    ],
    ids=["v1", "v2"],
)
def test_a_proxy_header_to_a_server_without_proxy_protocol_is_named(make_server, first):
    """It was logged and answered as "unknown message type 80" (or 13)."""
    lines = []
    srv = make_server(log=lines.append)
    c = Raw(srv.address, first=first)
    m = c.chan.recv()
    assert m.type == P.ERROR and m.json() == {"message": PROXY_MESSAGE}
    with pytest.raises(P.ConnectionClosed):
        c.chan.recv()
    c.close()
    wait_for(lambda: any("PROXY" in line for line in lines), "the log line")
    logged = [line for line in lines if line.startswith("connection from")]
    assert logged == [f"connection from 127.0.0.1: {PROXY_MESSAGE}"]


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("first", [b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 7300\r\n", V2_SIGNATURE], ids=["v1", "v2"])
def test_a_proxy_header_to_a_tls_server_without_proxy_protocol_is_named(make_server, pki, first):
    """Under TLS the header met the handshake, logged as OpenSSL's "wrong version number";
    the server now looks at the first bytes before the handshake (a ClientHello starts with
    0x16) and names the header (edges over TLS, through the same look: tests/system/test_tls.py)."""
    import socket

    from temposplit.protocol import TLSConfig

    lines = []
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = make_server(log=lines.append, tls=tls)
    with socket.create_connection(srv.address, timeout=30) as s:
        s.sendall(first)
        try:
            got = s.recv(1)
        except ConnectionResetError:  # the server aborts the socket (as at every refusal at accept)
            got = b""
        assert got == b""  # closed, nothing sent back (a PROXY peer speaks no TLS)
    wait_for(lambda: any("PROXY" in line for line in lines), "the log line")
    assert [line for line in lines if line.startswith("connection from")] == [
        f"connection from 127.0.0.1: {PROXY_MESSAGE}"
    ]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_proxys_health_check_to_a_tls_server_is_not_logged(make_server, pki, how):
    """HAProxy's check behind --proxy-protocol with TLS: a PROXY header (v2, LOCAL) and the
    connection gone. Each was logged as "Connection reset by peer" from the TLS handshake,
    every 5 s a server line (17,000 lines a day, burying the errors); without TLS, or
    without the header, such a check was already silent."""
    import socket
    import struct

    from temposplit.protocol import TLSConfig

    lines = []
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = make_server(log=lines.append, tls=tls, proxy_protocol=True)
    served, serve = [], srv._serve

    async def counted(sock, peer):  # each accepted socket's task (its lines said in it), counted once ended
        try:
            await serve(sock, peer)
        finally:
            served.append(peer)

    srv._serve = counted  # (looked up at each accept)
    for _ in range(3):
        s = socket.create_connection(srv.address, timeout=30)
        s.sendall(V2_SIGNATURE + bytes([0x20, 0x00, 0, 0]))  # LOCAL: the proxy's own connection
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    wait_for(lambda: len(served) == 3, "the three checks accepted and done", seconds=20)
    assert [line for line in lines if line.startswith("connection from")] == []


def test_the_look_before_tls_and_the_handshake_share_one_timeout(make_server, pki):
    """A client that sends a byte just before the handshake timeout, then nothing: the look at
    its first bytes and the TLS handshake together take the timeout (2 s here), not each its
    own (it held a connection slot 1.5 + 2 s)."""
    import socket

    from temposplit.protocol import TLSConfig

    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = make_server(tls=tls, handshake_timeout=2.0)
    with socket.create_connection(srv.address, timeout=30) as s:
        t0 = time.monotonic()
        time.sleep(1.5)
        s.sendall(b"\x16")  # a ClientHello's first byte, and no more
        try:
            s.recv(1)
        except ConnectionResetError:
            pass
        closed_after = time.monotonic() - t0
    assert closed_after < 3.0, f"closed after {closed_after:.1f} s"


# --------------------------------------------------------------------------- the recorded frames' memory


def _session_frames() -> FrameSet:
    """A new session's recorded set, as the session makes it."""
    (field,) = [f for f in dataclasses.fields(Session) if f.name == "recorded"]
    return field.default_factory()


def _traced_growth(fill) -> tuple[int, object]:
    """Bytes still allocated after ``fill()`` (its result kept), measured with tracemalloc."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = fill()
        return tracemalloc.get_traced_memory()[0] - base, kept
    finally:
        tracemalloc.stop()


def test_a_million_frames_recorded_in_order_take_a_few_bytes():
    """A set of ints held about 60 bytes a frame: 2^24 frames, a stream's most, were 1 GB."""

    def fill():
        frames = _session_frames()
        for i in range(1_000_000):
            frames.add(i)
        return frames

    grown, frames = _traced_growth(fill)
    assert grown < 16_000, grown
    assert len(frames) == 1_000_000 and frames.ranges() == [[0, 1_000_000]]
    assert 999_999 in frames and 1_000_000 not in frames


def _nearly_in_order(n: int) -> list[int]:
    """Frames 0..n-1 as a stream records them: each group of 64 in a shuffled (decode)
    order, and one frame in 100 recorded 200 frames late (resent after a reconnect)."""
    rng = random.Random(7)
    out, late = [], []
    for start in range(0, n, 64):
        group = list(range(start, min(n, start + 64)))
        rng.shuffle(group)
        for i in group:
            if i % 100 == 50:
                late.append((len(out) + 200, i))
                continue
            out.append(i)
            while late and late[0][0] <= len(out):
                out.append(late.pop(0)[1])
    return out + [i for _, i in late]


def test_frames_recorded_nearly_in_order_take_a_few_bytes():
    order = _nearly_in_order(200_000)
    assert sorted(order) == list(range(200_000)) and order != sorted(order)

    def fill():
        frames = _session_frames()
        for i in order:
            frames.add(i)
        return frames

    grown, frames = _traced_growth(fill)
    assert grown < 16_000, grown
    assert frames.ranges() == [[0, 200_000]]


def test_the_frame_set_behaves_as_a_set_out_of_order_and_with_duplicates():
    rng = random.Random(3)
    for _ in range(500):
        frames, expected = FrameSet(), set()
        top = rng.randint(1, 80)
        for _ in range(rng.randint(0, 120)):
            i = rng.randrange(top)
            if rng.random() < 0.75:
                assert frames.add(i) is (i not in expected)  # a duplicate adds nothing
                expected.add(i)
            else:
                assert frames.discard(i) is (i in expected)
                expected.discard(i)
            assert len(frames) == len(expected) and list(frames) == sorted(expected)
            assert frames.ranges() == P.to_ranges(expected)
        assert all((i in frames) == (i in expected) for i in range(-1, top + 2))
        assert frames == expected
        other = {rng.randrange(top) for _ in range(rng.randint(0, 40))}
        assert (frames | FrameSet(other)).ranges() == P.to_ranges(expected | other)
        for i in range(top + 1):
            run_end = i
            while run_end in expected:
                run_end += 1
            assert frames.run_end(i) == run_end
        lo, hi = sorted(rng.randrange(top + 2) for _ in range(2))
        assert frames.ranges(start=lo) == P.to_ranges({i for i in expected if i >= lo})  # WELCOME's
        assert frames.ranges(below=hi) == P.to_ranges({i for i in expected if i < hi})  # a cut SUMMARY's
        assert frames.ranges(below=lo, start=hi) == []
        assert frames.ranges(below=hi, start=lo) == P.to_ranges({i for i in expected if lo <= i < hi})
        assert P.from_ranges(frames.ranges()) == expected and FrameSet.from_spans(frames.spans()) == frames
        frames -= FrameSet(other)  # the failed ones removed
        assert frames.ranges() == P.to_ranges(expected - other) and len(frames) == len(expected - other)
    with pytest.raises(ValueError):
        FrameSet().add(-1)


def test_a_session_reads_its_frames_back_out_of_order_duplicated_and_failed(tmp_path):
    """The log of a resumed stream, in decode order, a frame twice, a frame with both a
    detections and an error record (edited by hand: the error stands)."""
    frames = [0, 3, 1, 2, 6, 4, 5, 2, 9, 7, 8, 12, 10]
    records = [{"frame": i, "kind": "P", "bytes": 10, "detections": []} for i in frames]
    records += [{"frame": 5, "error": "edited"}, {"frame": 14, "error": "never received"}]
    (tmp_path / "detections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    s = Session("cam", tmp_path, None, "0" * 64, None, {}, None)
    s.load_records()
    assert isinstance(s.recorded, FrameSet) and isinstance(s.failed, FrameSet)
    assert s.recorded.ranges() == [[0, 5], [6, 11], [12, 13]]
    assert s.failed.ranges() == [[5, 6], [14, 15]]
    assert s.next_frame == 11 and s.max_seen == 14 and s.bytes == 10 * len(frames)
    summary = s.summary()
    assert (summary["frames"], summary["decoded"], summary["errors"]) == (13, 11, 2)
    assert summary["recorded"] == [[0, 5], [6, 11], [12, 13]] and summary["failed"] == [[5, 6], [14, 15]]


# --------------------------------------------------------------------------- the soak benchmark, stopped


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="finds the started server in Linux's /proc")
@pytest.mark.parametrize(
    ("sig", "status", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_stopped_soak_stops_the_server_it_started(replay_file, tmp_path, sig, status, word):
    """SIGTERM ended the soak at once and left its `temposplit serve` running, with no parent."""
    out = tmp_path / "out"
    soak = subprocess.Popen(
        [sys.executable, "-m", "temposplit.server.soak", "--streams", "100000", "--frames", "1"]
        + ["--features", str(replay_file), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    servers = []
    try:
        deadline = time.monotonic() + 300
        while not (out / "soak2").is_dir():  # streaming: the server started and serving
            assert soak.poll() is None, soak.communicate()
            assert time.monotonic() < deadline, "the soak never streamed"
            time.sleep(0.1)
        servers = _children(soak.pid)
        assert len(servers) == 1
        soak.send_signal(sig)
        stdout, stderr = soak.communicate(timeout=120)
        assert not _alive(servers[0])  # stopped, and reaped
        assert soak.returncode == status
        assert stdout == "" and stderr == f"python -m temposplit.server.soak: {word}\n"
    finally:
        for pid in [soak.pid, *servers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        soak.communicate()


def test_an_edge_silent_after_welcome_is_told_it_may_resume(make_server, coded_stream):
    """The idle timeout's ERROR after WELCOME carries retry (the session detaches, kept for
    its token: an edge whose back end took minutes to start resumes); before HELLO it does not."""
    srv = make_server(idle_timeout=0.5, hello_timeout=0.5)
    header, _ = coded_stream
    c = Raw(srv.address, timeout=30)
    assert c.hello(header, "quiet").type == P.WELCOME
    reply = c.chan.recv()
    assert reply.type == P.ERROR and reply.json() == {"message": "nothing received for 0.5 s", "retry": True}
    silent = Raw(srv.address, timeout=30)  # never a HELLO: no stream to resume
    reply = silent.chan.recv()
    assert reply.type == P.ERROR and "retry" not in reply.json()


def test_the_frame_set_is_read_whole_while_the_worker_records():
    """A resuming edge's WELCOME lists the frames (a pool thread) while the worker thread may
    still record the old connection's: every union read meanwhile is a valid set of ranges
    (without the set's lock, a reader between two of an insert's steps met arrays of
    different lengths: IndexError, or a wrong list of recorded frames)."""
    import threading

    recorded, failed = FrameSet(), FrameSet()
    n = 200_000

    def worker():
        for i in range(n):  # every third frame an error: many ranges in each set
            (failed if i % 3 == 0 else recorded).add(i)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    t = threading.Thread(target=worker)
    t.start()
    problems, reads = [], 0
    try:
        while t.is_alive() or not reads:
            try:
                ranges = (recorded | failed).ranges()
            except Exception as exc:  # noqa: BLE001 - what a torn read raised
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            reads += 1
            ends = [x for r in ranges for x in r]  # sorted, disjoint, never touching, within 0..n
            if ends != sorted(set(ends)) or (ends and (ends[0] < 0 or ends[-1] > n)):
                problems.append(f"not a set's ranges: {ranges[:4]}")
    finally:
        t.join()
        sys.setswitchinterval(interval)
    assert not problems, problems[:3]
    assert (recorded | failed).ranges() == [[0, n]] and len(recorded) + len(failed) == n


@pytest.mark.parametrize("frame", [-1, 2**64, P.MAX_FRAMES, True])
def test_a_log_line_with_a_frame_no_stream_can_have_is_no_record(tmp_path, frame):
    """A hand-edited or damaged detections log (a negative, huge or boolean frame number)
    made every resume of the stream fail (the recorded frames' set refuses such an index):
    the line is not a record, the others are read."""
    from temposplit.server.outputs import DetectionLog

    log = tmp_path / "detections.jsonl"
    log.write_text(
        json.dumps({"frame": 0, "detections": []}) + "\n" + json.dumps({"frame": frame, "error": "x"}) + "\n"
    )
    assert [r["frame"] for r in DetectionLog.read(log)] == [0]
    frames = FrameSet()
    for r in DetectionLog.read(log):
        frames.add(r["frame"])
    assert frames.ranges() == [[0, 1]]


def test_a_resume_while_the_end_is_being_finished_waits_and_is_told_the_stream_finished(make_server, coded_stream):
    """A resume that came while the worker was finishing an END took the stream over: the
    ending connection got "resumed on another connection" instead of its SUMMARY, the
    resumed one a WELCOME onto a closing session whose END then got no answer, and its
    connection was never closed (the server counted it for good)."""
    header, packets = coded_stream
    srv = make_server(max_batch=1)
    a = Raw(srv.address)
    token = a.hello(header, "cam").json()["token"]
    assert len(a.packets_acknowledged(packets)) == len(packets)
    a.send(P.END, {"frames": len(packets) + 255})  # 255 "never received" records to write: a long finish
    time.sleep(0.05)
    b = Raw(srv.address, timeout=30)
    answer = b.hello(header, "cam", resume=True, token=token)
    assert answer.type == P.ERROR and answer.json().get("gone") is True, (answer.name, answer.body[:200])
    m = a.chan.recv()
    while m.type == P.KEY_REQUEST:
        m = a.chan.recv()
    assert m.type == P.SUMMARY and m.json()["frames"] == len(packets) + 255
    for c in (a, b):
        c.chan.close()
    wait_for(lambda: not srv.connections, "the connections closed", seconds=10)


def test_an_end_dropped_with_its_connection_leaves_the_stream_to_resume_at_once(make_server, coded_stream):
    """An END queued, then its connection broken before the worker came to it (here an
    earlier message of it refused; a killed edge whose ACKs cannot be written likewise):
    the worker passed the END over and the stream stayed "ending", so every resume waited
    60 s for a finish that never came, was told "still closing", and so on until the
    session expired (120 s, or a day), each wait holding one of the two HELLO threads."""

    header, packets = coded_stream
    srv = make_server()
    gate = hold_control(srv.workers[0], seconds=30)  # the worker comes to the SKIP once the END is queued behind it
    a = Raw(srv.address)
    token = a.hello(header, "cam").json()["token"]
    assert len(a.packets_acknowledged(packets[:2])) == 2
    a.send(P.SKIP, {"frame": 100_000})  # past the 256 holes a stream may have: refused, the connection failed
    a.send(P.END, {"frames": 100_001})
    wait_for(lambda: srv.sessions["cam"].ending, "the END queued")
    gate.set()
    wait_for(lambda: srv.sessions["cam"].conn is None, "the connection closed")
    t0 = time.monotonic()
    b = Raw(srv.address, timeout=90)
    answer = b.hello(header, "cam", resume=True, token=token)
    if answer.type == P.ERROR and answer.json().get("retry"):  # its first try may come as the END is passed over
        b = Raw(srv.address, timeout=90)
        answer = b.hello(header, "cam", resume=True, token=token)
    assert answer.type == P.WELCOME, (answer.name, answer.body[:200])
    assert time.monotonic() - t0 < 10
    w = answer.json()  # the two frames acknowledged, nothing of the END (below next_frame: all recorded)
    assert w["next_frame"] + len(P.from_ranges(w["recorded"])) == 2
    assert not srv.sessions["cam"].ending


@pytest.mark.parametrize("hole", [2, 1990])
def test_a_resume_from_files_redraws_at_most_the_videos_window_after_a_hole(tmp_path, hole):
    """One old hole (a camera's lost frame, the stream gone on past it) made a resume from the
    files hold every record after it and redraw them all in the HELLO: 1.3 GB and minutes for
    a day's stream. The earlier segment drew them (the hole as lost once the video's window
    passed it): the resumed segment starts at most a window before the highest frame."""
    from temposplit.server.outputs import REORDER_WINDOW

    folder = tmp_path / "cam"
    folder.mkdir()
    with open(folder / "detections.jsonl", "w") as f:
        for i in range(2000):
            if i != hole:
                f.write(json.dumps({"frame": i, "kind": "pred", "n_bits": 4, "bytes": 100, "detections": []}) + "\n")
    s = Session("cam", folder, None, "x", None, {"frame_size": [576, 768]}, None)
    s.load_records()
    assert s.next_frame == hole  # the edge's resend point is unchanged
    start = max(hole, 2000 - REORDER_WINDOW)
    assert s.video_start == start and [r["frame"] for r in s.ahead] == [i for i in range(start, 2000) if i != hole]


def test_a_stop_during_a_resume_from_the_files_closes_that_streams_files_too(
    tmp_path, cloud_models, coded_stream, monkeypatch
):
    """A resume reading its files in its HELLO thread when the server stopped put its session
    in the table after the stop had closed the others: its log and video stayed open (no
    annotated.1.mp4), and "resumed from its files" was logged after "stopping"."""
    import threading

    from temposplit.server.server import CloudServer

    header, packets = coded_stream
    first = CloudServer(out_dir=tmp_path / "out", models=cloud_models)
    first.start()
    c = Raw(first.address)
    token = c.hello(header, "cam").json()["token"]
    assert len(c.packets_acknowledged(packets[:4])) == 4
    c.chan.close()
    first.shutdown()  # the stream stays unfinished in its files

    reading = threading.Event()
    real = Session.load_records

    def slow(self):
        reading.set()
        time.sleep(1.5)  # a long log
        real(self)

    monkeypatch.setattr(Session, "load_records", slow)
    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models)
    srv.start()
    c = Raw(srv.address, timeout=30)
    c.send_hello(header, "cam", resume=True, token=token)
    assert reading.wait(30)
    srv.shutdown()
    c.chan.close()
    assert not srv.sessions  # closed, and dropped from memory
    import av

    with av.open(str(tmp_path / "out" / "cam" / "annotated.1.mp4")) as video:  # the resumed segment, finished
        assert video.streams.video[0].frames >= 0


def test_a_welcome_names_the_records_from_next_frame_on_only():
    """WELCOME listed every range of a resumed stream's records: a long stream of isolated
    errors (2 million frames, every other one) was 30 MB of ranges, past the 16 MiB an edge
    reads, so the stream could never be resumed. Below next_frame every frame has a record;
    from it on there are at most MAX_LEAD holes: those ranges alone are sent."""
    import json as json_module
    from types import SimpleNamespace

    from temposplit.server.server import CloudServer

    n = 2_000_000
    recorded = FrameSet.from_spans((i, i + 1) for i in range(0, n, 2))
    failed = FrameSet.from_spans((i, i + 1) for i in range(1, n - 4, 2))  # n - 3 and n - 1: no record yet
    recorded.add(n + 5)
    s = SimpleNamespace(name="cam", next_frame=n - 3, recorded=recorded, failed=failed, out_dir="out/cam")
    welcome = CloudServer._welcome(None, s, None, P.PROTOCOL_VERSION)
    assert welcome["next_frame"] == n - 3
    assert welcome["recorded"] == [[n - 2, n - 1], [n + 5, n + 6]]
    assert len(json_module.dumps(welcome)) < 300
