"""TLS with client authentication over loopback (compression is not encryption)."""

import shutil
import subprocess

import pytest
from rawclient import closed_now, wait_for  # tests/system's helpers

from temposplit.errors import TemposplitError
from temposplit.host.edge import Edge
from temposplit.protocol import TLSConfig

pytestmark = [pytest.mark.slow, pytest.mark.models]

CODEC = {"n_bits": 4, "structure": "bi-3", "coder": "huffman", "fps": 10.0}


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _self_signed_ca(folder, name, subject):
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        subject,
        cwd=folder,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=temposplit test CA",
        cwd=d,
    )
    for name in ("server", "edge", "edge2"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={ {'server': 'localhost', 'edge': 'edge1'}.get(name, name) }",
            cwd=d,
        )
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return d


@pytest.fixture
def tls_server(tmp_path, cloud_models, pki):
    from temposplit.server.server import CloudServer

    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models, tls=tls)
    srv.start()
    yield srv
    srv.shutdown()


def test_an_edge_with_a_certificate_streams_over_tls(tls_server, edge_model, vtest_frames, pki):
    tls = TLSConfig(str(pki / "edge.pem"), str(pki / "edge.key"), str(pki / "ca.pem"))
    report = Edge(edge_model, CODEC, tls_server.address, "tls", tls=tls).run(vtest_frames[:3], total=3)
    assert report.acked == 3 and not report.errors


def test_an_edge_without_a_client_certificate_is_refused(tls_server, edge_model, vtest_frames, pki):
    tls = TLSConfig(None, None, str(pki / "ca.pem"))
    edge = Edge(edge_model, CODEC, tls_server.address, "nocert", tls=tls, reconnect_attempts=1, timeout=10)
    with pytest.raises(TemposplitError):
        edge.run(vtest_frames[:2], total=2)


def test_an_edge_refuses_a_server_it_cannot_verify(tls_server, edge_model, vtest_frames, pki, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "o.key",
        "-out",
        "o.pem",
        "-days",
        "2",
        "-subj",
        "/CN=other CA",
        cwd=other,
    )
    tls = TLSConfig(str(pki / "edge.pem"), str(pki / "edge.key"), str(other / "o.pem"))
    edge = Edge(edge_model, CODEC, tls_server.address, "badca", tls=tls, reconnect_attempts=1, timeout=10)
    with pytest.raises(TemposplitError):
        edge.run(vtest_frames[:2], total=2)


# --------------------------------------------------------------------------- the server's TLS options and handshake


@pytest.mark.parametrize(
    "cert, key, ca",
    [
        (None, "server.key", None),
        (None, None, "ca.pem"),
        ("server.pem", None, "ca.pem"),
        (None, "server.key", "ca.pem"),
    ],
)
def test_partial_tls_options_are_an_error_not_plaintext(pki, cert, key, ca):
    from temposplit.errors import ConfigError

    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        TLSConfig.for_server(*(str(pki / x) if x else None for x in (cert, key, ca)))


def test_partial_tls_options_on_the_command_line_give_one_line(pki, capsys):
    from temposplit.cli import main

    assert main(["serve", "--port", "0", "--tls-client-ca", str(pki / "ca.pem")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tls-cert" in err[0]
    assert main(["edge", "/nonexistent/clip.avi", "--server", "localhost:1", "--tls-cert", str(pki / "edge.pem")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tls-key" in err[0]  # checked before the source opens


def test_tls_without_client_authentication_warns(pki):
    warnings = []
    tls = TLSConfig.for_server(str(pki / "server.pem"), str(pki / "server.key"), None, warn=warnings.append)
    assert tls is not None and len(warnings) == 1 and "any client" in warnings[0]


def test_a_tls_server_that_cannot_start_says_so_in_one_line_without_the_warning(pki, tmp_path, capsys):
    from temposplit.cli import main

    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key\n")
    rc = main(["serve", "--port", "0", "--out", str(tmp_path / "out"), "--tls-cert", str(pki / "server.pem"),
               "--tls-key", str(bad_key)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "any client" not in err[0]


def test_a_silent_tls_client_is_dropped_after_the_handshake_timeout(tmp_path, cloud_models, pki):
    import socket

    from temposplit.server.server import CloudServer

    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models, tls=tls, handshake_timeout=0.5)
    srv.start()
    try:
        with socket.create_connection(srv.address, timeout=30) as s:
            assert s.recv(1) == b""  # closed by the server, long before this socket's 30 s
    finally:
        srv.shutdown()


def test_one_addresss_silent_tls_sockets_take_its_own_slots_not_every_one(tmp_path, cloud_models, pki, coded_stream):
    """Under TLS a socket counted toward its address's limit only after the look at its first
    bytes (up to the handshake timeout): one address's silent sockets took every connection
    slot of the server, and another client's was refused at accept."""
    import socket

    from temposplit import protocol as P
    from temposplit.server.server import CloudServer

    header, _ = coded_stream
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = CloudServer(
        out_dir=tmp_path / "out",
        models=cloud_models,
        tls=tls,
        max_connections=4,
        max_connections_per_client=2,
        handshake_timeout=60,
    )
    srv.start()
    silent, refused = [], 0
    for _ in range(6):
        try:
            silent.append(socket.create_connection(srv.address, timeout=30, source_address=("127.0.0.1", 0)))
        except ConnectionResetError:  # refused at accept: the reset came during the connect
            refused += 1

    def settled() -> bool:  # every silent socket counted (held) or refused (closed)
        return srv.accepting + sum(srv.per_client.values()) + sum(map(closed_now, silent)) + refused == 6

    try:
        wait_for(settled, "every silent socket counted or refused")
        ctx = TLSConfig(str(pki / "edge.pem"), str(pki / "edge.key"), str(pki / "ca.pem")).client_context()
        sock = socket.create_connection(srv.address, timeout=30, source_address=("127.0.0.2", 0))
        chan = P.Channel(ctx.wrap_socket(sock, server_hostname="localhost"))
        chan.send(P.hello({"protocol": P.PROTOCOL_VERSION, "stream": "other", "frame_size": [576, 768]}, header))
        assert chan.recv().type == P.WELCOME
        chan.close()
        assert srv.per_client.get("127.0.0.1") == 2  # its own two slots, the rest refused at accept
    finally:
        for s in silent:
            s.close()
        srv.shutdown()


def test_the_servers_own_certificate_is_refused_as_a_clients(tls_server, edge_model, vtest_frames, pki):
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    edge = Edge(edge_model, CODEC, tls_server.address, "impostor", tls=tls, reconnect_attempts=1, timeout=10)
    with pytest.raises(TemposplitError, match="own certificate"):
        edge.run(vtest_frames[:2], total=2)


def test_a_stream_belongs_to_its_client_certificate(tls_server, edge_model, vtest_frames, pki):
    tls = TLSConfig(str(pki / "edge.pem"), str(pki / "edge.key"), str(pki / "ca.pem"))
    report = Edge(edge_model, CODEC, tls_server.address, "bound", tls=tls).run(vtest_frames[:2], total=2)
    assert report.acked == 2
    state = (tls_server.out_dir / "bound" / "session.json").read_text()
    assert "commonName=edge1" in state  # the TLS identity a resume must present again


def test_under_mutual_tls_the_stream_limit_counts_per_certificate_not_per_address(
    tmp_path, cloud_models, pki, coded_stream
):
    import socket

    from temposplit import protocol as P
    from temposplit.server.server import CloudServer

    header, _ = coded_stream
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models, tls=tls, max_streams_per_client=1)
    srv.start()

    def hello(name: str, cert: str, source: str) -> P.Message:
        ctx = TLSConfig(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"), str(pki / "ca.pem")).client_context()
        sock = socket.create_connection(srv.address, timeout=30, source_address=(source, 0))
        chan = P.Channel(ctx.wrap_socket(sock, server_hostname="localhost"))
        chan.send(P.hello({"protocol": P.PROTOCOL_VERSION, "stream": name, "frame_size": [576, 768]}, header))
        held.append(chan)
        return chan.recv()

    held = []
    try:
        assert hello("one", "edge", "127.0.0.1").type == P.WELCOME
        again = hello("two", "edge", "127.0.0.2")  # the same certificate from another address
        assert (
            again.type == P.ERROR
            and "subject commonName=edge1) is at its stream limit (1 attached)" in again.json()["message"]
        )
        assert hello("three", "edge2", "127.0.0.1").type == P.WELCOME  # another certificate, the same address
    finally:
        for chan in held:
            chan.close()
        srv.shutdown()


# --------------------------------------------------------------------------- the metrics endpoint under TLS


def test_a_tls_servers_metrics_are_https_for_a_client_certificate_of_its_ca(tmp_path, cloud_models, pki):
    """`serve --metrics-port` beside TLS: the figures name every stream, so they take the stream
    port's TLS (its certificate, its client CA); they were plain HTTP for anyone on the port."""
    import socket
    import ssl
    import urllib.error
    import urllib.request

    from temposplit.server.server import CloudServer

    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models, tls=tls, metrics=("127.0.0.1", 0))
    srv.start()
    try:
        url = srv.metrics.url
        assert url.startswith("https://127.0.0.1:")
        scraper = TLSConfig(str(pki / "edge.pem"), str(pki / "edge.key"), str(pki / "ca.pem")).client_context()
        scraper.check_hostname = False  # the certificate names localhost; the URL its address
        with urllib.request.urlopen(url, timeout=10, context=scraper) as r:
            assert b"temposplit_up 1\n" in r.read()
        anonymous = TLSConfig(None, None, str(pki / "ca.pem")).client_context()
        anonymous.check_hostname = False
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, timeout=10, context=anonymous).read()
        with socket.create_connection(srv.metrics.address, timeout=30) as s:  # plain HTTP: no answer
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            assert b"temposplit_up" not in data
        with urllib.request.urlopen(url, timeout=10, context=scraper) as r:  # and the next is served
            assert r.status == 200
    finally:
        srv.shutdown()


def test_a_tls_scraper_that_never_closes_holds_no_socket_past_the_timeout(tmp_path, cloud_models, pki, monkeypatch):
    """A TLS close waits for the client's close_notify (30 s in asyncio): a scraper that read
    its answer and kept the connection open held a server socket that the 16-client limit no
    longer counted, so a loop of them could take every descriptor the streams need."""
    import os
    import socket
    import time

    from temposplit.server import metrics
    from temposplit.server.server import CloudServer

    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 1.0)
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models, tls=tls, metrics=("127.0.0.1", 0))
    srv.start()
    held = []
    try:
        scraper = TLSConfig(str(pki / "edge.pem"), str(pki / "edge.key"), str(pki / "ca.pem")).client_context()
        scraper.check_hostname = False
        before = len(os.listdir("/proc/self/fd"))
        for k in range(12):  # under the 16 at once, which these count against until closed (2 an address)
            source = (f"127.0.0.{10 + k}", 0)
            s = scraper.wrap_socket(socket.create_connection(srv.metrics.address, timeout=10, source_address=source))
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while b"temposplit_up 1" not in data:
                data += s.recv(65536)
            held.append(s)  # answered, and never closed by this client
        deadline = time.monotonic() + 10
        while len(os.listdir("/proc/self/fd")) > before + len(held) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(os.listdir("/proc/self/fd")) <= before + len(held)  # the server's ends are gone
        assert srv.metrics.clients == 0
    finally:
        for s in held:
            s.close()
        srv.shutdown()


def test_plain_metrics_open_beyond_this_machine_warn(tmp_path):
    """`--metrics-host 0.0.0.0` without TLS serves, and says on stderr who can read it."""
    import signal
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "temposplit", "serve", "--port", "0", "--out", str(tmp_path), "--metrics-port", "0"]
        + ["--metrics-host", "0.0.0.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        warning = proc.stderr.readline()
        assert warning.startswith("warning: metrics on 0.0.0.0 without TLS"), warning
        assert proc.stdout.readline().startswith("temposplit server on ")
        line = proc.stdout.readline()
        assert line.startswith("metrics on http://0.0.0.0:"), line
        port = line.rstrip().rsplit(":", 1)[1].split("/")[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # it serves
            assert b"temposplit_up 1\n" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
