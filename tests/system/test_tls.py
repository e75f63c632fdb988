"""TLS with client authentication over loopback (compression is not encryption)."""

import shutil
import subprocess

import pytest

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
    for name in ("server", "edge"):
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
            f"/CN={'localhost' if name == 'server' else 'edge1'}",
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
