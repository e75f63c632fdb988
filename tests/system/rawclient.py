"""A client that speaks the protocol by hand, for the tests of the server against clients
that misbehave (``test_server_hostile.py``, ``test_server_abuse.py``)."""

import json
import socket
import struct
import threading
import time

from temposplit import protocol as P

FRAME = [576, 768]


class Raw:
    """One connection from ``source`` (a loopback address), sending ``first`` before
    anything (e.g. a PROXY protocol header); ``rcvbuf``: a tiny receive buffer and small
    segments, as a client that means never to read sets."""

    def __init__(self, address, timeout=30.0, source=None, first=b"", rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            self.sock.bind((source, 0))
        if rcvbuf is not None:  # before connecting: the window and segment size are agreed then
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        if first:
            self.sock.sendall(first)
        self.chan = P.Channel(self.sock)

    def hello(self, header: bytes, stream: str, **info) -> P.Message:
        self.send_hello(header, stream, **info)
        return self.chan.recv()

    def send_hello(self, header: bytes, stream: str, **info) -> None:
        obj = {"protocol": P.PROTOCOL_VERSION, "stream": stream, "frame_size": FRAME, **info}
        raw = json.dumps(obj, ensure_ascii=False).encode()  # UTF-8: 4 bytes an emoji, 12 once escaped
        self.sock.sendall(P.encode(P.HELLO, struct.pack("<I", len(raw)) + raw + header))

    def send(self, mtype, obj) -> None:
        self.chan.send(P.control(mtype, obj))

    def packets_acknowledged(self, packets) -> set[int]:
        """Send ``packets`` (a stream's, as bytes) and wait for an ACK of each; returns the
        frames acknowledged (other messages meanwhile are passed over)."""
        for p in packets:
            self.chan.send(P.encode(P.PACKET, p))
        done: set[int] = set()
        while len(done) < len(packets):
            m = self.chan.recv()
            if m.type == P.ACK:
                done.add(m.json()["frame"])
        return done

    def answers_until(self, wanted) -> list[P.Message]:
        out = []
        while True:
            m = self.chan.recv()
            out.append(m)
            if m.type in wanted:
                return out

    def close(self) -> None:
        self.chan.close()


def refused(msg: P.Message, words: str) -> bool:
    return msg.type == P.ERROR and words in msg.json()["message"]


def closed_now(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (reset or not), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def wait_for(predicate, what: str, seconds: float = 20.0) -> None:
    """Poll ``predicate`` every 50 ms, for at most ``seconds``."""
    for _ in range(int(seconds / 0.05)):  # bounded
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def cut_connection_at(edge, index: int) -> list:
    """Make ``edge`` cut its own connection once, right after it has sent frame ``index``
    (both directions shut: the server and the edge each see it lost). Returns the list
    the cut is recorded in (empty until it happened)."""
    cut: list[int] = []

    def fault(i, chan):
        if i == index and not cut:
            cut.append(i)
            chan.sock.shutdown(socket.SHUT_RDWR)

    edge.fault = fault
    return cut


def hold_control(worker, kinds=None, seconds: float = 60.0) -> threading.Event:
    """Hold ``worker``'s control items (of ``kinds``, e.g. {"end"}; None: every one) until the
    returned gate is set (or ``seconds`` pass): it orders a test's steps against the worker."""
    gate, real = threading.Event(), worker._control

    def held(item):
        if kinds is None or item.kind in kinds:
            gate.wait(seconds)
        real(item)

    worker._control = held
    return gate
