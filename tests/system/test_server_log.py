"""The server's log: each line whole, however many threads write at once, and a client's
errors a few lines at a time, however fast it repeats them."""

import io
import sys
import threading
import time

import pytest
from rawclient import Raw, wait_for  # tests/system's hand-speaking client

from temposplit import protocol as P

PEER_LINES = 5  # an address's connection error lines in 10 s at most (docs/protocol.md)


class _Yielding(io.StringIO):
    """Standard output that lets another thread run after each write: ``print`` writes a
    line's text and its newline apart, and two threads' lines came out merged."""

    def write(self, text: str) -> int:
        n = super().write(text)
        time.sleep(0.0005)
        return n


def test_serves_log_lines_from_several_threads_are_each_whole(tmp_path, monkeypatch):
    from temposplit import cli
    from temposplit.server import server as server_module

    got = {}

    class Stub:  # the server `serve` makes: only its log is wanted here
        def __init__(self, *args, log, **kwargs):
            got["log"] = log
            self.address, self.metrics = ("127.0.0.1", 7300), None

        def serve_forever(self) -> None:
            pass

    monkeypatch.setattr(server_module, "CloudServer", Stub)
    assert cli.main(["serve", "--port", "0", "--out", str(tmp_path / "out")]) == 0
    out = _Yielding()
    monkeypatch.setattr(sys, "stdout", out)
    sent = [f"[cam{k}] line {i}" for k in range(4) for i in range(30)]

    def write(k: int) -> None:
        for i in range(30):
            got["log"](f"[cam{k}] line {i}")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    text = out.getvalue()
    assert text.endswith("\n")
    assert sorted(text[:-1].split("\n")) == sorted(sent)


@pytest.mark.slow
@pytest.mark.models
def test_a_burst_of_junk_connections_from_one_address_logs_a_few_lines(make_server):
    """837 lines a second from one address sending junk heads: now a few lines every 10 s,
    the next one saying how many were passed over."""
    lines: list[str] = []
    srv = make_server(log=lines.append)
    for _ in range(40):
        c = Raw(srv.address)
        c.sock.sendall(b"\xee" + b"\x00" * (P.HEAD_SIZE - 1))  # no message type
        assert c.chan.recv().type == P.ERROR
        c.close()
    other = Raw(srv.address, source="127.0.0.2")  # another address's line is its own
    other.sock.sendall(b"\xee" + b"\x00" * (P.HEAD_SIZE - 1))
    assert other.chan.recv().type == P.ERROR
    wait_for(lambda: any(line.startswith("connection from 127.0.0.2") for line in lines), "the other address logged")
    assert sum(line.startswith("connection from 127.0.0.1") for line in lines) == PEER_LINES
    srv.peer_error.interval = 0.0  # the 10 s over
    c = Raw(srv.address)
    c.sock.sendall(b"\xee" + b"\x00" * (P.HEAD_SIZE - 1))
    assert c.chan.recv().type == P.ERROR
    more = f"(and {40 - PEER_LINES} more from this address since the last such line)"
    wait_for(lambda: any(line.startswith("connection from 127.0.0.1") and more in line for line in lines), more)
