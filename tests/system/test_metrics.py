"""``serve --metrics-port``: the server's figures over HTTP in Prometheus's text format
(server/metrics.py, docs/deployment.md "Monitoring"), and the responder against clients
that misbehave: none of them costs more than a socket for seconds."""

import socket
import time
import urllib.request

import pytest
from rawclient import Raw, closed_now, wait_for

from temposplit import protocol as P
from temposplit.errors import ConfigError
from temposplit.host.edge import Edge

pytestmark = [pytest.mark.slow, pytest.mark.models]

CODEC = {"n_bits": 4, "structure": "uni-4", "coder": "huffman", "fps": 10.0}


def scrape(srv) -> dict[str, float]:
    """Every sample of GET /metrics: 'name{labels}' -> value; every family has HELP and TYPE."""
    host, port = srv.metrics.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            assert key.split("{")[0] in typed, line  # declared before its samples
            samples[key] = float(value)
    return samples


def test_the_figures_follow_the_streams_and_outlive_them(make_server, edge_model, vtest_frames, coded_stream):
    srv = make_server(metrics=("127.0.0.1", 0), linger=60.0)
    before = scrape(srv)
    assert before["temposplit_up"] == 1 and before["temposplit_frames_recorded_total"] == 0
    assert before['temposplit_streams{state="attached"}'] == 0

    edge = Edge(edge_model, CODEC, srv.address, "cam-1")
    report = edge.run(vtest_frames[:5], total=5)
    assert report.acked == 5
    wait_for(lambda: "cam-1" not in srv.sessions, "the finished stream dropped from memory")
    after = scrape(srv)
    assert after["temposplit_frames_recorded_total"] == 5  # the finished stream's frames stay counted
    assert after["temposplit_frames_failed_total"] == 0
    assert after["temposplit_packet_bytes_total"] == report.bytes
    assert after['temposplit_m2_frames_total{device="cpu"}'] == 5
    assert after['temposplit_worker_seconds_total{device="cpu",stage="m2"}'] > 0
    assert not any(k.startswith("temposplit_stream_") for k in after)  # no finished stream's gauges

    # A stream left detached (its edge gone): its own gauges, counted as detached.
    header, packets = coded_stream
    c = Raw(srv.address)
    assert c.hello(header, "cam-2").type == P.WELCOME
    assert len(c.packets_acknowledged(packets[:3])) == 3
    c.close()
    wait_for(lambda: srv.sessions.get("cam-2") is not None and srv.sessions["cam-2"].conn is None, "detached")
    now = scrape(srv)
    assert now['temposplit_streams{state="detached"}'] == 1
    assert now['temposplit_stream_frames_recorded{stream="cam-2"}'] == 3
    assert now["temposplit_frames_recorded_total"] == 8
    assert 0 <= now['temposplit_stream_seconds_since_record{stream="cam-2"}'] < 60


def test_a_misbehaving_scraper_is_answered_or_closed_and_the_next_is_served(make_server, monkeypatch):
    from temposplit.server import metrics

    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 0.5)
    srv = make_server(metrics=("127.0.0.1", 0))
    address = srv.metrics.address

    def ask(data: bytes) -> bytes:
        with socket.create_connection(address, timeout=10) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    assert ask(b"GET /other HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404")
    assert ask(b"POST /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 405")
    assert ask(b"\x16\x03\x01 not http\r\n\r\n").startswith(b"HTTP/1.0 400")
    assert ask(b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.0 431")
    silent = socket.create_connection(address, timeout=10)  # says nothing: closed after the timeout
    t0 = time.monotonic()
    assert silent.recv(10) == b"" and time.monotonic() - t0 < 5
    silent.close()
    crowd = [  # from as many addresses (one address may hold MAX_PER_ADDRESS)
        socket.create_connection(address, timeout=10, source_address=(f"127.0.0.{10 + k}", 0))
        for k in range(metrics.MAX_CLIENTS)
    ]
    wait_for(lambda: srv.metrics.clients == metrics.MAX_CLIENTS, "the crowd accepted")
    one_more = socket.create_connection(address, timeout=10, source_address=("127.0.0.100", 0))
    try:
        assert one_more.recv(10) == b""  # closed at once (reset): at most MAX_CLIENTS at a time
    except ConnectionResetError:
        pass
    one_more.close()
    for c in crowd:
        c.close()
    wait_for(lambda: srv.metrics.clients == 0, "the crowd gone")
    assert scrape(srv)["temposplit_up"] == 1


def test_one_addresss_silent_sockets_leave_the_scraper_served(make_server):
    """A connection held 5 s by saying nothing, 16 at once: one address's silent sockets,
    opened again as they closed, kept the scraper out. One address now holds at most
    MAX_PER_ADDRESS of them; a scrape from another address is answered."""
    import http.client

    from temposplit.server import metrics

    srv = make_server(metrics=("127.0.0.1", 0))
    address = srv.metrics.address
    silent = [socket.create_connection(address, timeout=10) for _ in range(metrics.MAX_CLIENTS)]

    def settled() -> bool:  # every silent socket held or refused (closed)
        return srv.metrics.clients + sum(map(closed_now, silent)) == len(silent)

    try:
        wait_for(settled, "every socket held or refused")
        scraper = http.client.HTTPConnection(*address, timeout=10, source_address=("127.0.0.2", 0))
        scraper.request("GET", "/metrics")
        answer = scraper.getresponse()
        assert answer.status == 200 and b"temposplit_up 1" in answer.read()
        scraper.close()
        assert sum(not closed_now(s) for s in silent) <= 2  # one address holds two at most (docs/deployment.md)
    finally:
        for s in silent:
            s.close()


def test_a_metrics_port_in_use_fails_the_start(make_server):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1:.* for the metrics"):
            make_server(metrics=("127.0.0.1", taken.getsockname()[1]))
    finally:
        taken.close()


def test_the_totals_never_go_down_when_an_expiring_stream_is_resumed(make_server, coded_stream):
    """A resume waits for the expired session's files, then its new session takes the name,
    and the old one's _closed may run only after that (slowed here by a second): the old
    session's counts were then in neither the table nor the totals, for good (3 -> 0)."""
    srv = make_server(metrics=("127.0.0.1", 0), linger=1.0)
    worker = srv.workers[0]
    closed = worker.on_closed

    def late(s):
        time.sleep(1.0)
        closed(s)

    worker.on_closed = late
    header, packets = coded_stream
    c = Raw(srv.address)
    token = c.hello(header, "cam").json()["token"]
    assert len(c.packets_acknowledged(packets[:3])) == 3
    c.close()
    wait_for(lambda: srv.sessions.get("cam") is not None and srv.sessions["cam"].closing, "expiring")

    def records() -> float:
        now = scrape(srv)
        return now["temposplit_frames_recorded_total"] + now["temposplit_frames_failed_total"]

    seen = [records()]
    again = Raw(srv.address)
    assert again.hello(header, "cam", resume=True, token=token).type == P.WELCOME
    for _ in range(12):  # across the late _closed
        seen.append(records())
        time.sleep(0.1)
    assert len(again.packets_acknowledged(packets[3:5])) == 2  # (not from a KEY anchor: recorded as errors)
    seen.append(records())
    assert seen == sorted(seen) and seen[0] == 3 and seen[-1] == 5, seen


def test_a_live_streams_lag_is_its_last_pictures_age_at_its_record(make_server, coded_stream):
    """Frames stamped with a utc 5 s old (pictures that came to the edge 5 s before): the lag
    says 5 s and a little; a stream whose frames have no utc (a file) has no lag."""
    srv = make_server(metrics=("127.0.0.1", 0))
    header, packets = coded_stream
    live, file = Raw(srv.address), Raw(srv.address)
    assert live.hello(header, "live").type == P.WELCOME and file.hello(header, "file").type == P.WELCOME
    for p in packets[:3]:
        live.chan.send(P.packet_at(p, None, round((time.time() - 5.0) * 1e6)))
        file.chan.send(P.packet_at(p, 0, None))
    for c in (live, file):
        assert sum(m.type == P.ACK for m in (c.chan.recv() for _ in range(3))) == 3
    now = scrape(srv)
    assert 5.0 <= now['temposplit_stream_lag_seconds{stream="live"}'] < 15.0
    assert 'temposplit_stream_lag_seconds{stream="file"}' not in now


def test_serve_says_where_its_metrics_are_and_serves_them(tmp_path):
    """`temposplit serve --metrics-port 0` as a process: its second line names the URL, which
    answers; SIGTERM stops both ports (no model is loaded before a stream's HELLO)."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "temposplit", "serve", "--port", "0", "--metrics-port", "0", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith("temposplit server on 127.0.0.1:"), (first, proc.stderr.read() if not second else "")
        assert second.startswith("metrics on http://127.0.0.1:") and second.rstrip().endswith("/metrics"), second
        with urllib.request.urlopen(second.split(" ", 2)[2].strip(), timeout=10) as r:
            assert b"temposplit_up 1\n" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "temposplit server stopped" in out, err


def test_a_counter_of_seconds_is_written_exactly_after_weeks(make_server):
    """Floats were written with 6 significant digits: after a day of M2 its seconds counter
    moved by whole seconds (1234567.891 read 1234570), which rate() shows as noise."""
    srv = make_server(metrics=("127.0.0.1", 0))
    srv.workers[0].seconds["m2"] = 1234567.891
    assert scrape(srv)['temposplit_worker_seconds_total{device="cpu",stage="m2"}'] == 1234567.891


def test_metrics_on_every_address_answer_both_families(make_server):
    """`--metrics-host ::` listens on IPv6 and, where the system allows one socket both, on
    IPv4 too, as the stream port does (it was IPv6 alone on a system that binds v6 only)."""
    if not socket.has_dualstack_ipv6():
        pytest.skip("this system cannot take IPv4 and IPv6 on one socket")
    srv = make_server(metrics=("::", 0))
    port = srv.metrics.address[1]
    assert not srv.metrics.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    for url in (f"http://127.0.0.1:{port}/metrics", f"http://[::1]:{port}/metrics"):
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"temposplit_up 1\n" in r.read()
