"""The edge's connection attempts (docs/protocol.md, "Lost connections"): a server host that
drops the connection's SYNs is given up within the back-off's 26 s, not after eleven answer
timeouts; a stop (SIGINT, SIGTERM) while connecting ends the edge at once; a connection
that can never be made (a --source-address that is no address of this machine, or of
another family than the server's) is one line at once, not retried. The edge runs a
synthetic feature file (--replay): no model."""

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from replays import synthetic_replay

from temposplit.cli import main
from temposplit.codec.encoder import PRESETS
from temposplit.errors import ConfigError, TemposplitError
from temposplit.host.edge import Edge
from temposplit.host.sources import open_replay

CODEC = {**PRESETS["recommended"], "fps": 10.0}


@pytest.fixture
def blackhole():
    """A loopback port whose accept queue is full: the kernel drops further SYNs, as a
    powered-off or firewalled (DROP) server host does. Yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fill = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fill.append(c)
    time.sleep(0.5)  # the handshakes of those the queue takes complete
    yield port
    for c in fill:
        c.close()
    listener.close()


def _syn_sent(port: int) -> int:
    """The connections to loopback ``port`` that wait for their SYN's answer (Linux's
    /proc/net/tcp): the blackhole's fillers past its queue, then the edge's."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(r[2] == f"0100007F:{port:04X}" and r[3] == "02" for r in rows)


def _wait_for_connect(port: int, before: int, proc=None) -> None:
    """Until the edge's connection to ``port`` waits for its SYN's answer (60 s at most)."""
    deadline = time.monotonic() + 60
    while _syn_sent(port) <= before and time.monotonic() < deadline and (proc is None or proc.poll() is None):
        time.sleep(0.05)
    assert _syn_sent(port) > before, "the edge never connected"


def _edge_process(tmp_path, port: int, *options: str) -> subprocess.Popen:
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    argv = ["edge", "--replay", replay, "--server", f"127.0.0.1:{port}", "--state", str(tmp_path / "state")]
    return subprocess.Popen(
        [sys.executable, "-m", "temposplit", *argv, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _one_line(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("temposplit edge: "), stderr
    assert "Traceback" not in stderr and "internal error" not in lines[0], stderr
    for w in words:
        assert w in lines[0], stderr
    return lines[0]


@pytest.mark.slow
def test_a_server_host_that_drops_the_connections_is_given_up_within_the_back_off(tmp_path, blackhole):
    """Each attempt's connect waited the answer timeout (--timeout 5: eleven of them and the
    back-off, about 80 s; 11 minutes at the default 60 s). Now a connect waits 10 s at most
    and the attempts end within the back-off's 26.3 s (the bound asserted with slack for a
    loaded machine, well under the old 80 s)."""
    proc = _edge_process(tmp_path, blackhole, "--timeout", "5")
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    seconds = time.monotonic() - t0
    assert proc.returncode == 2
    assert seconds < 26.3 + 25, err  # (the back-off's most, host.edge.RECONNECT_SPAN)
    _one_line(err, f"cannot reach the server at 127.0.0.1:{blackhole}: no answer to the connection within", "attempt")


def _streaming(tmp_path, port: int, **options):
    """An Edge streaming a synthetic replay to loopback ``port`` in a thread: (the edge, the
    thread, the list its TemposplitError goes to)."""
    replay = open_replay(synthetic_replay(tmp_path / "r.npz", 3))
    edge = Edge(replay, CODEC, ("127.0.0.1", port), "s", **options)
    outcome: list = []

    def stream():
        try:
            edge.run(replay.frames())
        except TemposplitError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    return edge, worker, outcome


def test_a_stop_while_connecting_ends_the_edge_at_once(tmp_path, blackhole):
    """A stop asked for (what the CLI's signal handler sets) while the edge waits for a
    host that drops its SYNs: the connect's wait looks for it, the edge ends with the stop's
    line (it waited out the connect's whole timeout, 60 s, then retried: 11 minutes)."""
    before = _syn_sent(blackhole)
    edge, worker, outcome = _streaming(tmp_path, blackhole)
    _wait_for_connect(blackhole, before)
    edge.stop = "stopped by SIGTERM"
    worker.join(5)  # (the connect's own timeout is 10 s: a stop it did not look for would outlast it)
    assert not worker.is_alive(), "the stop was not taken while connecting"
    assert len(outcome) == 1
    assert str(outcome[0]) == (
        f"stopped by SIGTERM while connecting to the server at 127.0.0.1:{blackhole}; no stream was opened"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_connecting_exits_with_the_signals_status(tmp_path, blackhole, sig):
    """``temposplit edge`` stopped (Ctrl-C, systemd's SIGTERM) while its server's host
    drops the connection: one line naming the signal, 128 + the signal (it went on
    retrying, and systemd killed it after TimeoutStopSec)."""
    before = _syn_sent(blackhole)
    proc = _edge_process(tmp_path, blackhole, "--timeout", "60")
    try:
        _wait_for_connect(blackhole, before, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=5)  # (under the connect's own 10 s; its connect alone waited 60 s)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + sig
    _one_line(err, f"{signal.Signals(sig).name} while connecting to the server at 127.0.0.1:{blackhole}")


def test_a_stop_while_the_server_has_not_answered_hello_ends_the_edge_at_once(tmp_path):
    """A server that accepts and never answers (a hung process, a proxy whose backend is
    down): a stop while the edge waits for HELLO's answer is taken within STOP_POLL, not
    after the answer timeout (60 s here)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got_hello = threading.Event()

    def hang():
        conn, _ = listener.accept()
        with conn:
            conn.recv(1 << 16)
            got_hello.set()
            time.sleep(60)

    threading.Thread(target=hang, daemon=True).start()
    edge, worker, outcome = _streaming(tmp_path, port, timeout=60)
    try:
        assert got_hello.wait(30)
        edge.stop = "stopped by SIGTERM"
        worker.join(5)
        assert not worker.is_alive(), "the stop was not taken while waiting for HELLO's answer"
    finally:
        listener.close()
    assert len(outcome) == 1 and str(outcome[0]).startswith("stopped by SIGTERM while connecting"), outcome


def test_no_attempt_at_all_is_refused():
    with pytest.raises(ConfigError, match="reconnect_attempts must be 1 or more"):
        Edge(None, CODEC, ("127.0.0.1", 1), "s", reconnect_attempts=0)


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "source, words",
    [
        ("192.0.2.1", "Cannot assign requested address (not an address of this machine)"),  # TEST-NET-1
        ("::1", "it has no IPv6 address"),  # the server is 127.0.0.1
    ],
    ids=["not-local", "other-family"],
)
def test_a_source_address_that_can_never_connect_is_one_line_without_retries(
    tmp_path, monkeypatch, capsys, one_line, source, words
):
    """A bind that fails so fails on every attempt: it was retried with the whole back-off
    (13-26 s) and then said "cannot reach the server"."""
    if source == "192.0.2.1" and _local(source):
        pytest.skip("192.0.2.1 is an address of this machine")
    import temposplit.host.edge as edge_module

    waits = []  # the back-off's, one after each attempt that may be tried again (none waited here)
    monkeypatch.setattr(edge_module, "reconnect_delay", lambda attempt: waits.append(attempt) or 0.0)
    port = _refused_port()
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    argv = ["edge", "--replay", replay, "--server", f"127.0.0.1:{port}", "--source-address", source]
    assert main([*argv, "--state", str(tmp_path / "state")]) == 2
    one_line(f"cannot connect from {source} to the server at 127.0.0.1:{port}: {words}")
    assert waits == []  # refused as final: no second attempt
