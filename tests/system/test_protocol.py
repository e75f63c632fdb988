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
