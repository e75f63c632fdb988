"""Under TLS the HELLO is due ``hello_timeout`` after the accept, the TLS handshake included
(docs/protocol.md, "Timeouts"): the clock started once the handshake was done, so that a client
could hold a connection for the handshake timeout plus the HELLO timeout without a word."""

import socket
import time

import pytest
import test_tls as tls_tests  # tests/system's TLS tests: their certificates
from rawclient import wait_for  # tests/system's helpers

from temposplit import protocol as P
from temposplit.protocol import TLSConfig

pki = tls_tests.pki  # a CA, the server's certificate and the edges'

HELLO = 3.0  # the server's HELLO timeout here (10 s in service)
LATE = 1.0  # the client's handshake starts this long after the HELLO was due
# The fixed server closes as soon as the late handshake is done (its HELLO was due before it);
# the unfixed one waited HELLO more. Waited for this long after the handshake: a slack of
# 2 s for a slow machine, 1 s short of the unfixed server's close.
WAIT = HELLO - 1.0


def test_a_late_tls_handshake_leaves_no_time_for_the_hello(tmp_path, pki):
    from temposplit.server.server import CloudServer

    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    logs = []
    srv = CloudServer(
        out_dir=tmp_path / "out", tls=tls, handshake_timeout=60.0, hello_timeout=HELLO, log=logs.append
    )  # no models: nothing here reaches one
    srv.start()
    try:
        ctx = TLSConfig(str(pki / "edge.pem"), str(pki / "edge.key"), str(pki / "ca.pem")).client_context()
        with socket.create_connection(srv.address, timeout=30) as raw:
            wait_for(lambda: srv.per_client.get("127.0.0.1") == 1, "the server accepted the connection")
            time.sleep(HELLO + LATE)  # the client is late: its HELLO is past due before its handshake starts
            tls_sock = ctx.wrap_socket(raw, server_hostname="localhost")  # within the handshake timeout
            tls_sock.settimeout(WAIT)
            chan = P.Channel(tls_sock)
            try:
                answer = chan.recv()
            except TimeoutError:
                pytest.fail(f"still open {WAIT:g} s after a handshake that ended past the HELLO's due time")
            assert answer.type == P.ERROR and answer.json()["message"] == f"nothing received for {HELLO:g} s"
            with pytest.raises(P.ConnectionClosed):  # then closed
                chan.recv()
    finally:
        srv.shutdown()
