"""``temposplit serve`` and ``bench server`` as an operator configures them: an option or a
file that cannot work fails at start in one line (never a prompt, never plaintext instead of
TLS, never every address instead of one), and a stopped bench leaves no server behind."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError, TemposplitError
from temposplit.protocol import TLSConfig


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A self-signed certificate and key, the key encrypted too, and certificates of the
    same key valid only in the past and only in the future (``openssl ca`` sets the dates)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "k.key", "-out", "c.pem", "-days", "2", "-subj", "/CN=localhost", cwd=d)
    _openssl("pkey", "-in", "k.key", "-aes256", "-passout", "pass:secret", "-out", "enc.key", cwd=d)
    _openssl("req", "-new", "-key", "k.key", "-out", "c.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "db").mkdir()
    (d / "db" / "index.txt").write_text("")
    (d / "db" / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndir = ./db\ndatabase = $dir/index.txt\nserial = $dir/serial\n"
        "new_certs_dir = $dir\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n"
    )
    dates = {"expired": ("20200101000000Z", "20200102000000Z"), "future": ("20400101000000Z", "20410101000000Z")}
    for name, (start, end) in dates.items():
        sign = ["ca", "-batch", "-selfsign", "-config", "ca.cnf", "-keyfile", "k.key", "-in", "c.csr", "-notext"]
        _openssl(*sign, "-out", f"{name}.pem", "-startdate", start, "-enddate", end, cwd=d)
    return d


# Not this machine's address: a server that took the option under test would fail to listen
# (in one line), never serve for ever in the test.
UNREACHABLE = ("--host", "192.0.2.1")


def _serve(tmp_path, *options):
    return ["serve", "--port", "0", "--out", str(tmp_path / "out"), *options]


def test_an_encrypted_key_fails_at_start_without_a_passphrase_prompt(pki, tmp_path):
    """OpenSSL's own prompt reads the controlling terminal: a server (or edge) given an
    encrypted key must say so in one line, not wait there for a passphrase."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()

    def own_terminal():  # the pty as the child's controlling terminal, as a shell's would be
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    argv = _serve(tmp_path, "--tls-cert", str(pki / "c.pem"), "--tls-key", str(pki / "enc.key"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "temposplit", *argv], stdin=slave, stdout=slave, stderr=slave, preexec_fn=own_terminal
    )
    os.close(slave)
    try:
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    text = out.decode(errors="replace")
    assert rc == 2, text
    assert "is encrypted" in text and "pass phrase" not in text.lower(), text
    with pytest.raises(TemposplitError, match="is encrypted"):  # the edge's side, in the API
        TLSConfig(str(pki / "c.pem"), str(pki / "enc.key"), str(pki / "c.pem")).client_context()


@pytest.mark.parametrize(
    "name, message", [("expired", "expired on 2020-01-02 00:00:00 UTC"), ("future", "not valid before 2040-01-01")]
)
def test_a_certificate_out_of_its_validity_fails_at_start(pki, tmp_path, capsys, name, message):
    """Every edge would refuse it: the server says so once, at start, not per connection."""
    own = ("--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / "k.key"))
    assert main(_serve(tmp_path, *UNREACHABLE, *own)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(TemposplitError, match=message):  # the edge's own certificate too
        TLSConfig(str(pki / f"{name}.pem"), str(pki / "k.key"), str(pki / "c.pem")).client_context()
    assert not (tmp_path / "out").exists()  # a server that did not start leaves no folder


def test_certificate_validity_reads_the_dates(pki):
    from temposplit.protocol import certificate_validity

    der = TLSConfig(str(pki / "future.pem")).own_certificate()
    not_before, not_after = certificate_validity(der)
    assert time.gmtime(not_before)[:6] == (2040, 1, 1, 0, 0, 0)
    assert time.gmtime(not_after)[:6] == (2041, 1, 1, 0, 0, 0)


@pytest.mark.parametrize("option", ["--tls-cert", "--tls-key", "--tls-client-ca"])
def test_an_empty_tls_option_is_an_error_not_plaintext_or_no_client_check(pki, tmp_path, capsys, option):
    """``--tls-cert "$CERT"`` with the variable unset: never a server in plaintext (nor one
    that takes any client's certificate, for an empty --tls-client-ca)."""
    given = {"--tls-cert": str(pki / "c.pem"), "--tls-key": str(pki / "k.key"), "--tls-client-ca": str(pki / "c.pem")}
    given[option] = ""
    assert main(_serve(tmp_path, *UNREACHABLE, *(x for item in given.items() for x in item))) == 2
    err = capsys.readouterr().err
    assert f"{option} is empty" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ConfigError, match="--tls-cert is empty"):
        TLSConfig.for_server("", "", None)


@pytest.mark.parametrize(
    "ca, cert, key, server_name, message",
    [
        ("", None, None, "localhost", "--tls-ca is empty"),
        ("ca.pem", "", "", "localhost", "--tls-cert is empty"),
        ("ca.pem", None, None, "", "--tls-server-name is empty"),
    ],
)
def test_an_empty_tls_option_of_the_edge_is_an_error(ca, cert, key, server_name, message):
    """An empty --tls-ca was plaintext; an empty --tls-server-name an internal error."""
    with pytest.raises(ConfigError, match=message):
        TLSConfig.for_client(ca, cert, key, server_name)


def test_an_empty_host_or_out_is_an_error_not_every_address_or_this_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's rejection: one line, status 2
        main(["serve", "--port", "0", "--host", "", "--out", str(tmp_path / "out"), "--tls-cert", "/nonexistent"])
    assert stop.value.code == 2
    assert "--host: an address to listen on" in capsys.readouterr().err
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # (a TLS file that fails after --out's check: the server never starts, fixed or not)
        assert main(["serve", "--port", "0", "--out", "", "--tls-cert", "/nonexistent", "--tls-key", "/x"]) == 2
    finally:
        os.chdir(cwd)
    assert "--out is empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not any(tmp_path.iterdir())


def test_an_ipv6_host_in_brackets_is_the_address():
    """``--host [::1]``, written as the edge's ``--server [::1]:7300`` writes it."""
    from temposplit.server.cli import _host

    assert _host("[::1]") == "::1"
    assert _host("::") == "::"
    assert _host("127.0.0.1") == "127.0.0.1"


def test_the_started_server_does_not_outlive_an_interrupted_start(tmp_path, monkeypatch):
    """An interrupt while ``bench server`` waits for its server to start (loading, binding)
    stops that server: it was left running, on its port, with no parent."""
    from temposplit.server import bench

    started = []
    popen = subprocess.Popen

    class Interrupted:
        """The server's output, whose first read is interrupted (Ctrl-C while bench waits for
        the server's first line: the server itself, started, goes on starting)."""

        def __init__(self, stream):
            self.stream = stream

        def readline(self):
            raise KeyboardInterrupt

        def __iter__(self):
            return iter(self.stream)

    def recording_popen(*args, **kwargs):
        proc = popen(*args, **kwargs)
        started.append(proc)
        proc.stdout = Interrupted(proc.stdout)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    try:
        with pytest.raises(KeyboardInterrupt):
            bench.start_server(tmp_path / "out")
        assert len(started) == 1 and started[0].poll() is not None  # stopped, and reaped
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_bench_server_stopped_by_sigterm_stops_its_server_and_says_so(tmp_path, monkeypatch, capsys):
    """SIGTERM's default ended the bench at once and left its started server running (and
    its temporary folder): it now unwinds as an interrupt, one line, exit status 143."""
    from temposplit.server import bench

    seen = {}

    def run_bench(*args, **kwargs):
        seen["tmp"] = args[6]
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the signal's exception
        finally:
            seen["cleaned_up"] = True  # where run_bench stops its server
        raise AssertionError("SIGTERM did not interrupt the bench")

    def outside(signum, frame):  # (SIGTERM's default would end the test run itself)
        raise RuntimeError("SIGTERM reached the handler outside the bench")

    monkeypatch.setattr(bench, "run_bench", run_bench)
    before = signal.signal(signal.SIGTERM, outside)
    try:
        rc = main(["bench", "server", "--clients", "1", "--frames", "1", "--features", str(tmp_path / "f.npz")])
        assert signal.getsignal(signal.SIGTERM) is outside  # restored
    finally:
        signal.signal(signal.SIGTERM, before)
    assert rc == 143
    assert seen["cleaned_up"] and not os.path.exists(seen["tmp"])
    assert capsys.readouterr().err.strip() == "temposplit bench server: terminated"


@pytest.fixture
def started(monkeypatch):
    """The keyword arguments of each CloudServer ``serve`` makes (none is started)."""
    import temposplit.server.server as server_module

    made = []

    class Started:
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            self.address = ("127.0.0.1", 1)
            self.metrics = None

        def serve_forever(self):
            pass

    monkeypatch.setattr(server_module, "CloudServer", Started)
    return made


def test_the_session_linger_is_the_detached_sessions_expiry(tmp_path, started):
    """``serve --session-linger S`` is how long the server keeps a detached session (the
    expiry measured in tests/system/test_server_hostile.py); without it, 120 s."""
    from temposplit import protocol as P

    assert main(["serve", "--port", "0", "--out", str(tmp_path / "a"), "--session-linger", "900"]) == 0
    assert main(["serve", "--port", "0", "--out", str(tmp_path / "b")]) == 0
    assert started[0]["linger"] == 900.0 and "linger" not in started[1]
    assert P.LINGER == 120.0  # CloudServer's default


def test_the_metrics_port_and_host_reach_the_server(tmp_path, started):
    assert main(["serve", "--port", "0", "--out", str(tmp_path / "a"), "--metrics-port", "9730"]) == 0
    assert (
        main(["serve", "--port", "0", "--out", str(tmp_path / "b"), "--metrics-port", "0", "--metrics-host", "::1"])
        == 0
    )
    assert main(["serve", "--port", "0", "--out", str(tmp_path / "c")]) == 0
    assert [k.get("metrics") for k in started] == [("127.0.0.1", 9730), ("::1", 0), None]
