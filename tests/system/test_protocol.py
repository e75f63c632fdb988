"""Message framing of the edge-server protocol: limits and malformed input."""

import socket
import struct

import pytest

from temposplit import protocol as P


def pair():
    a, b = socket.socketpair()
    return P.Channel(a), P.Channel(b)


def test_messages_round_trip():
    a, b = pair()
    a.send(P.control(P.ACK, {"frame": 3, "detections": []}))
    a.send(P.hello({"protocol": 1, "stream": "x"}, b"TSPS-header"))
    m = b.recv()
    assert m.type == P.ACK and m.json() == {"frame": 3, "detections": []}
    m = b.recv()
    assert m.type == P.HELLO and m.json()["stream"] == "x" and m.stream_header() == b"TSPS-header"


def test_unknown_types_and_oversized_messages_are_refused():
    a, b = pair()
    a.sock.sendall(struct.pack("<BI", 99, 0))
    with pytest.raises(P.ProtocolError, match="unknown message type"):
        b.recv()
    a, b = pair()
    a.sock.sendall(struct.pack("<BI", P.PACKET, P.MAX_MESSAGE + 1))
    with pytest.raises(P.ProtocolError, match="announces"):
        b.recv()


def test_malformed_json_is_a_protocol_error():
    a, b = pair()
    a.send(P.encode(P.ACK, b"\xff\xfe not json"))
    with pytest.raises(P.ProtocolError, match="JSON"):
        b.recv().json()
    a.send(P.encode(P.ACK, b"[1, 2]"))
    with pytest.raises(P.ProtocolError, match="object"):
        b.recv().json()


def test_a_closed_peer_is_reported():
    a, b = pair()
    a.send(P.encode(P.ACK, b"{}")[:3])
    a.close()
    with pytest.raises(P.ConnectionClosed):
        b.recv()


def test_closing_a_channel_that_another_thread_reads_ends_the_connection():
    """The edge closes its channel while its receiving thread is blocked in ``recv`` on it.
    A close alone sends no FIN then (the kernel keeps the socket for that read until it
    returns: the socket's timeout, 60 s for the edge), so the server held the connection,
    and the session attached to it, that long; and the descriptor's number, free again,
    could be taken by the process's next socket while the old read still waited.
    ``Channel.close`` shuts the connection down first: the peer sees its end at once."""
    import threading
    import time

    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=30)
        peer, _ = listener.accept()
        with peer:
            chan = P.Channel(client)
            ended = []
            reader = threading.Thread(target=lambda: ended.append(_read_until_closed(chan)), daemon=True)
            reader.start()
            time.sleep(0.2)  # the reader is blocked in recv
            chan.close()
            peer.settimeout(5)
            assert peer.recv(1) == b"", "the peer saw no end of the connection"
            reader.join(5)
            assert ended and not reader.is_alive()


def _read_until_closed(chan) -> str:
    try:
        chan.recv()
    except (P.ConnectionClosed, OSError) as exc:
        return type(exc).__name__
    return "message"


def test_an_ipv6_address_is_written_in_brackets():
    """`--server '[::1]:1'` was reported as `::1:1`, and a server on `::` as `:::7300`."""
    from temposplit.protocol import hostport

    assert hostport("::1", 7300) == "[::1]:7300" and hostport("127.0.0.1", 7300) == "127.0.0.1:7300"
