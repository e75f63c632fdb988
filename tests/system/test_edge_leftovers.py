"""What was left of the edge and the command line: a reader that closes stdout early stops a
command quietly; an edge that a server refuses under mutual TLS says why at once instead of
retrying for 13-26 s; a fabric back end (minutes to build under Verilator) is made only once
the server has accepted the stream. Real pipes, real sockets on loopback, `temposplit serve`
and `openssl s_server` as processes."""

import os
import subprocess
import sys

import pytest
import test_cli_errors as cli_tests
import test_edge_faults as faults
import test_server_durability as durability
import test_tls as tls_tests
from rawclient import cut_connection_at, wait_for
from replays import synthetic_replay

from temposplit import protocol as P
from temposplit.cli import main
from temposplit.errors import TemposplitError
from temposplit.host.edge import Edge, Refusal
from temposplit.host.sources import open_replay

# The fixtures of the files these tests share their set-ups with.
pki = tls_tests.pki
processes = durability.processes

RETRIES_TAKE = 13.0  # seconds: the shortest the edge's back-off between its 11 attempts takes


# ---------------------------------------------------------------------------- stdout closed by its reader


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", ["bench codec", "encode"])
def test_a_reader_that_closes_stdout_early_stops_the_command_quietly(tmp_path, command, buffered):
    """`temposplit bench codec --json | head -1`: the reader takes one line and goes; the
    command stops at its next write (400 lines of about 390 bytes: more than a pipe holds),
    with no error line and no traceback, exit status 141 (128 + SIGPIPE, as a shell reports
    a Unix tool that SIGPIPE ended). `encode`, whose reader is gone before its one line:
    block-buffered (stdout on a pipe, PYTHONUNBUFFERED unset), the write comes at the flush,
    which Python's exit reported as "Exception ignored ... BrokenPipeError", exit status 120."""
    if command == "encode":
        argv, lines = ["encode", synthetic_replay(tmp_path / "r.npz", 3), str(tmp_path / "r.tsp")], 0
    else:
        shapes = ",".join(["4x8x8"] * 200)
        argv, lines = ["bench", "codec", "--json", "--no-ssd", "--frames", "1", "--shapes", shapes], 1
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "temposplit", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        taken = [proc.stdout.readline() for _ in range(lines)]
        proc.stdout.close()  # `head -1` exits
        err = proc.stderr.read()
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(line.startswith('{"setting": ') for line in taken), taken
    assert err == "" and rc == 141, (rc, err)


def test_a_command_started_with_stdout_closed_still_succeeds(tmp_path):
    """`temposplit encode ... >&-` (descriptor 1 closed, as some service launchers start a
    program): Python has no sys.stdout and prints nothing, and the command succeeds; the
    flush added for a closed pipe made it an AttributeError traceback, exit 1."""
    out = tmp_path / "r.tsp"
    argv = [sys.executable, "-m", "temposplit", "encode", synthetic_replay(tmp_path / "r.npz", 3), str(out)]
    proc = subprocess.run(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "" and out.stat().st_size > 0, (proc.returncode, proc.stderr)


def _stdout_into_a_pipe(monkeypatch):
    """sys.stdout as a file on a real pipe whose reader is open; returns (the file, the reader)."""
    r, w = os.pipe()
    out = open(w, "w")  # closed by the test
    monkeypatch.setattr(sys, "stdout", out)
    return out, r


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(monkeypatch, capsys, one_line):
    """A BrokenPipeError from elsewhere (a simulator's pipe) while stdout's reader is there:
    one error line and exit status 2, as before; only a closed stdout is quiet."""
    error = BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr("temposplit.cli.build_parser", cli_tests._parser_whose_handler_raises(error))
    out, r = _stdout_into_a_pipe(monkeypatch)
    try:
        rc = main(["boom"])
    finally:
        monkeypatch.undo()
        out.close()
        os.close(r)
    assert rc == 2
    one_line("temposplit boom: error: ", "Broken pipe")


# ---------------------------------------------------------------------------- refused under mutual TLS


@pytest.fixture(scope="module")
def stranger(pki):
    """A certificate and key of a CA the server does not trust."""
    folder = pki / "stranger"
    folder.mkdir(exist_ok=True)
    tls_tests._self_signed_ca(folder, "stranger", "/CN=stranger")
    return folder / "stranger.pem", folder / "stranger.key"


@pytest.fixture
def mutual_tls_server(processes, pki, tmp_path):
    """`temposplit serve` requiring client certificates signed by the test CA."""
    own = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    return processes(tmp_path / "out", options=[*own, "--tls-client-ca", str(pki / "ca.pem")])


def _certificate_options(which: str, stranger) -> list[str]:
    if which == "none":
        return []
    cert, key = stranger
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


REASONS = {
    "none": "requires a client certificate, and this edge gave none (--tls-cert and --tls-key)",
    "stranger": "refused this edge's client certificate",
}


@pytest.mark.parametrize("which", ["none", "stranger"])
def test_an_edge_refused_by_a_mutual_tls_server_says_why_at_once(mutual_tls_server, pki, stranger, tmp_path, which):
    """`temposplit serve --tls-client-ca`: an edge without a client certificate, or with one
    of another CA, is refused in the handshake (Python's server closes the connection with no
    alert, right after the client's side of the TLS 1.3 handshake). The edge stops with one
    line naming the reason, well within the back-off it once spent retrying (13-26 s), and
    the server saw the refusal twice, not eleven times."""
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    options = ["--tls-ca", str(pki / "ca.pem"), *_certificate_options(which, stranger)]
    rc, err, seconds = faults._edge(replay, mutual_tls_server.address, *options, timeout=60)
    assert rc == 2
    line = faults._one_line(err, REASONS[which], f"127.0.0.1:{mutual_tls_server.address[1]}")
    assert seconds < RETRIES_TAKE / 2, (seconds, line)
    if which == "stranger":
        assert str(stranger[0]) in line and "--tls-client-ca" in line
    server_saw = "certificate verify failed" if which == "stranger" else "did not return a certificate"
    wait_for(lambda: sum(server_saw in x for x in mutual_tls_server.lines) >= 2, "the server's two refusals", 10)
    assert sum(server_saw in x for x in mutual_tls_server.lines) == 2, mutual_tls_server.lines


def test_an_edge_that_cannot_verify_the_server_says_so_at_once(mutual_tls_server, pki, stranger, tmp_path):
    """The edge's --tls-ca is not the CA of the server's certificate: the same check would
    fail on every attempt, so it is not retried."""
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    options = ["--tls-ca", str(stranger[0]), "--tls-cert", str(pki / "edge.pem"), "--tls-key", str(pki / "edge.key")]
    rc, err, seconds = faults._edge(replay, mutual_tls_server.address, *options, timeout=60)
    assert rc == 2
    faults._one_line(err, "cannot verify the server at", "--tls-ca must name the CA")
    assert seconds < RETRIES_TAKE / 2, seconds


@faults.needs_models
def test_an_edge_checks_the_servers_certificate_for_the_host_it_connects_to(processes, pki, tmp_path, replay_file):
    """--tls-server-name defaulted to "localhost": a server certificate for its address
    alone (IP:127.0.0.1 here, 192.168.2.1 in deploy/systemd/edge.env) failed every edge set
    up as the docs say, "not valid for 'localhost'". The name is now --server's host."""
    folder = tmp_path / "ip"
    folder.mkdir()
    tls_tests._openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "s.key", "-out", "s.csr", "-subj", "/CN=s", cwd=folder
    )
    (folder / "s.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ca = ["-CA", str(pki / "ca.pem"), "-CAkey", str(pki / "ca.key"), "-CAcreateserial"]
    tls_tests._openssl(
        "x509", "-req", "-in", "s.csr", *ca, "-out", "s.pem", "-days", "2", "-extfile", "s.ext", cwd=folder
    )
    srv = processes(tmp_path / "out", options=["--tls-cert", str(folder / "s.pem"), "--tls-key", str(folder / "s.key")])
    replay = str(replay_file)
    rc, err, _ = faults._edge(replay, srv.address, "--tls-ca", str(pki / "ca.pem"), timeout=60)
    assert rc == 0, err
    rc, err, _ = faults._edge(
        replay,
        srv.address,
        "--tls-ca",
        str(pki / "ca.pem"),
        "--tls-server-name",
        "localhost",
        "--stream",
        "b",
        timeout=60,
    )
    assert rc == 2 and "localhost" in err, err  # a name it does not carry is still refused


@pytest.fixture
def openssl_server(pki, tmp_path, request):
    """`openssl s_server` requiring a client certificate of the test CA, in the TLS version
    ``request.param`` ("tls1_3": the refusal comes after the client's side of the handshake,
    on its first read; "tls1_2": within the handshake). Unlike Python's server, it sends the
    TLS alert of its refusal."""
    log = tmp_path / "s_server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:0", "-www", f"-{request.param}", "-Verify", "1"]
            + ["-verify_return_error", "-cert", str(pki / "server.pem"), "-key", str(pki / "server.key")]
            + ["-CAfile", str(pki / "ca.pem")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "ACCEPT 127.0.0.1:" in log.read_text() or proc.poll() is not None, "s_server listening")
        line = next((x for x in log.read_text().splitlines() if x.startswith("ACCEPT ")), None)
        assert line is not None, log.read_text()
        yield ("127.0.0.1", int(line.rsplit(":", 1)[1]))
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "openssl_server, which, words",
    [
        ("tls1_3", "none", (REASONS["none"], "TLS alert: certificate required")),
        ("tls1_3", "stranger", (REASONS["stranger"], "TLS alert: unknown ca")),
        ("tls1_2", "none", ("refused the TLS handshake (TLS alert: handshake failure)", "--tls-cert and --tls-key")),
        ("tls1_2", "stranger", (REASONS["stranger"], "TLS alert: unknown ca")),
    ],
    indirect=["openssl_server"],
    ids=["tls1.3-no-certificate", "tls1.3-stranger", "tls1.2-no-certificate", "tls1.2-stranger"],
)
def test_a_tls_alert_refusing_the_edge_is_named_and_not_retried(openssl_server, pki, stranger, tmp_path, which, words):
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    options = ["--tls-ca", str(pki / "ca.pem"), *_certificate_options(which, stranger)]
    rc, err, seconds = faults._edge(replay, openssl_server, *options, timeout=60)
    assert rc == 2
    faults._one_line(err, *words)
    assert seconds < RETRIES_TAKE / 2, seconds


# ---------------------------------------------------------------------------- a fabric back end, after the server


CODEC = faults.CODEC


@pytest.fixture
def fabric(monkeypatch):
    """The edge's back-end factory replaced by one that records each fabric encoder it is
    asked for (back end, first frame, what the server had seen by then) and makes the
    software one in its place: the Verilator build is not needed to see when the edge asks.
    Returns (those records, what the server saw, the encoders made)."""
    import temposplit.host.edge as edge_module
    from temposplit.host.backends import make_encoder

    made, built = [], []
    seen: list[str] = []  # what the server got, in order: "hello", "packet"

    def recording(backend, config, first_index=0):
        encoder = make_encoder("golden", config, first_index=first_index)
        if backend != "golden":
            made.append((backend, first_index, list(seen)))
            built.append(encoder)
        return encoder

    monkeypatch.setattr(edge_module, "make_encoder", recording)
    return made, seen, built


def _refusing(conn):
    P.Channel(conn).recv()
    conn.sendall(faults._message(P.ERROR, {"message": "stream 's' is in use"}))
    faults._drain(conn)


def test_a_refusing_server_is_reported_before_the_fabric_back_end_is_built(peer, fabric, tmp_path):
    made, _, _ = fabric
    replay = open_replay(synthetic_replay(tmp_path / "r.npz", 3))
    edge = Edge(replay, CODEC, peer(_refusing).address, "s", backend="rtl", reconnect_attempts=1)
    with pytest.raises(Refusal, match="the server refused the stream: stream 's' is in use"):
        edge.run(replay.frames(), total=replay.count)
    assert made == []  # never built: the refusal came first


def test_an_unreachable_server_is_reported_before_the_fabric_back_end_is_built(fabric, tmp_path):
    import socket

    made, _, _ = fabric
    with socket.create_server(("127.0.0.1", 0)) as s:
        address = s.getsockname()[:2]  # closed: nothing listens there
    replay = open_replay(synthetic_replay(tmp_path / "r.npz", 3))
    edge = Edge(replay, CODEC, address, "s", backend="pynq", reconnect_attempts=2)
    with pytest.raises(TemposplitError, match="cannot reach the server"):
        edge.run(replay.frames(), total=replay.count)
    assert made == []


def test_the_edge_command_with_the_rtl_back_end_is_refused_before_the_simulation(
    peer, fabric, monkeypatch, tmp_path, one_line
):
    """`temposplit edge --backend rtl` against a server that refuses the stream: one line,
    and no simulation built (the back end's own check passes, as on a machine with the hw
    extra)."""
    from temposplit.host import backends

    made, _, _ = fabric
    monkeypatch.setattr(backends, "check_backend", lambda backend: None)
    p = peer(_refusing)
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    argv = ["edge", "--replay", replay, "--backend", "rtl", "--server", f"127.0.0.1:{p.address[1]}"]
    assert main([*argv, "--stream", "s", "--state", str(tmp_path / "state")]) == 2
    one_line("temposplit edge: error: the server refused the stream: stream 's' is in use")
    assert made == []


def test_the_fabric_back_end_is_built_once_the_server_has_accepted_and_codes_the_frames(peer, fabric, tmp_path):
    """After WELCOME, before the first packet: the fabric encoder codes every frame (the
    server here takes the HELLO and one packet, then ends the stream with an ERROR)."""
    made, seen, built = fabric

    def welcome_then_one_packet(conn):
        chan = P.Channel(conn)
        assert chan.recv().type == P.HELLO
        seen.append("hello")
        conn.sendall(faults.WELCOME)
        assert chan.recv().type == P.PACKET_AT
        seen.append("packet")
        conn.sendall(faults._message(P.ERROR, {"message": "enough"}))
        faults._drain(conn)

    replay = open_replay(synthetic_replay(tmp_path / "r.npz", 3))
    edge = Edge(replay, CODEC, peer(welcome_then_one_packet).address, "s", backend="rtl", reconnect_attempts=1)
    with pytest.raises(TemposplitError, match="server error: enough"):
        edge.run(replay.frames(), total=replay.count)
    assert made == [("rtl", 0, ["hello"])] and seen == ["hello", "packet"]
    assert edge.encoder is built[0] and built[0].frames  # the one built after WELCOME coded the frames


def test_a_fabric_back_end_that_cannot_start_after_the_welcome_leaves_the_stream_to_resume(
    peer, monkeypatch, tmp_path, one_line
):
    """The overlay cannot be opened once the server has welcomed the stream: one line saying
    so and that the same command resumes the stream (its token kept), and the connection is
    closed then, not left open to the server's idle timeout."""
    import temposplit.host.edge as edge_module
    from temposplit.errors import MissingDependencyError
    from temposplit.host import backends

    closed = []

    def welcome_then_wait(conn):
        P.Channel(conn).recv()
        conn.sendall(faults.WELCOME)
        faults._drain(conn)
        closed.append(True)  # the edge closed its side

    def no_overlay(backend, config, first_index=0):
        raise MissingDependencyError(f"the {backend} back end cannot open the accelerator: no overlay")

    monkeypatch.setattr(backends, "check_backend", lambda backend: None)
    monkeypatch.setattr(edge_module, "make_encoder", no_overlay)
    p = peer(welcome_then_wait)
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    state = tmp_path / "state"
    argv = ["edge", "--replay", replay, "--backend", "pynq", "--server", f"127.0.0.1:{p.address[1]}"]
    assert main([*argv, "--stream", "s", "--state", str(state)]) == 2
    one_line("cannot open the accelerator: no overlay", "the stream 's' stays unfinished on the server")
    assert len(list(state.glob("*.json"))) == 1  # the token, for the rerun
    wait_for(lambda: closed, "the edge's connection closed", seconds=10)


def test_a_fabric_back_end_slower_to_start_than_the_servers_idle_timeout_loses_no_frame(
    make_server, replay_file, monkeypatch
):
    """A first Verilator build takes minutes, more than the server's idle timeout: the server
    drops the silent connection and the edge resumes the stream once its back end is up;
    every frame is recorded once (a real server with a 1 s idle timeout, a back end that
    takes 2.5 s to start)."""
    import time

    import temposplit.host.edge as edge_module
    from temposplit.host import backends

    def slow(backend, config, first_index=0):
        time.sleep(2.5)
        return backends.make_encoder("golden", config, first_index=first_index)

    monkeypatch.setattr(backends, "check_backend", lambda backend: None)
    monkeypatch.setattr(edge_module, "make_encoder", slow)
    srv = make_server(idle_timeout=1.0)
    replay = open_replay(replay_file)
    edge = Edge(replay, dict(CODEC, fps=replay.fps), srv.address, "slow", backend="pynq")
    report = edge.run(replay.frames(), total=replay.count)
    assert not report.errors and report.reconnects >= 1  # resumed after the server's idle ERROR
    summary = report.summary
    assert summary["decoded"] == replay.count and summary["recorded"] == [[0, replay.count]]


def test_a_reconnect_keeps_the_fabric_back_ends_accelerator(server, replay_file, fabric):
    """A lost connection is resumed on the same engine: the fabric back end is made once (a
    new one per reconnect was a second Verilator simulation, or the board's overlay
    downloaded again), and every frame is recorded once."""
    made, _, built = fabric
    replay = open_replay(replay_file)
    frames = list(replay.frames())
    edge = Edge(replay, dict(CODEC, fps=replay.fps), server.address, "reconnect", backend="rtl")
    killed = cut_connection_at(edge, 4)
    report = edge.run(frames, total=len(frames))
    assert killed and report.reconnects >= 1 and not report.errors
    assert report.summary["recorded"] == [[0, len(frames)]]
    assert len(made) == 1 and edge.encoder.engine is built[0].engine


@pytest.mark.parametrize("ending", ["error with retry", "close"])
def test_an_edge_whose_connections_are_all_lost_before_an_answer_gives_up(peer, tmp_path, ending):
    """A server (or something between) that welcomes each connection and then loses it
    before answering a frame, by an ERROR with retry or a close: each reconnect used to
    start the count afresh, with no pause, for ever (145 connections in 30 s). The edge now
    gives up after its reconnect attempts in a row with no ACK, backing off between them."""
    import time

    def welcome_then_lose(conn):
        P.Channel(conn).recv()
        conn.sendall(faults.WELCOME)
        time.sleep(0.2)
        if ending == "close":
            conn.close()
        else:
            conn.sendall(faults._message(P.ERROR, {"message": "nothing received for 60 s", "retry": True}))
            faults._drain(conn)

    p = peer(welcome_then_lose)
    replay = open_replay(synthetic_replay(tmp_path / "r.npz", 50))
    edge = Edge(replay, CODEC, p.address, "lost", reconnect_attempts=3, timeout=5)
    with pytest.raises(TemposplitError, match="lost 3 connections in a row before answering a frame: giving up"):
        edge.run(replay.frames(), total=replay.count)
    assert p.accepted == 4 and edge.report.reconnects == 4


def test_the_edge_reads_a_long_streams_ranges_as_ranges():
    """The end of a day of a camera (3 million frames): the SUMMARY's ranges were read into
    a set of ints, and every index below the count into another (about 400 MB, on a board
    of 512 MB). They are ranges now (temposplit/frameset.py): a few MB."""
    import tracemalloc
    from types import SimpleNamespace

    from temposplit.host.edge import EdgeReport

    n = 3_000_000
    fake = SimpleNamespace(report=EdgeReport(frames=n), pending={n - 1: 0.0})
    summary = {"recorded": [[0, n - 3], [n - 2, n - 1]], "failed": [[n - 3, n - 2]]}
    tracemalloc.start()
    try:
        Edge._reconcile(fake, summary)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fake.report.errors == {n - 3: "recorded as an error by the server", n - 1: "no record on the server"}
    assert peak < 16 << 20, peak


def test_a_frame_never_answered_past_a_cut_summary_is_an_error():
    """A SUMMARY whose ranges stop at ranges_below: past it the edge counts the errors it
    saw, and a frame it sent but never got an answer for (pending) was dropped: "0 errors",
    exit 0, where the server recorded it as never received."""
    from types import SimpleNamespace

    from temposplit.host.edge import EdgeReport

    fake = SimpleNamespace(report=EdgeReport(frames=1000, errors={700: "damaged"}), pending={999: 0.0, 10: 0.0})
    summary = {"recorded": [[0, 500]], "failed": [], "ranges_cut": True, "ranges_below": 500}
    Edge._reconcile(fake, summary)
    assert fake.report.errors == {700: "damaged", 999: "no record on the server"}  # 10: recorded below the cut
