"""The edge-server protocol (docs/protocol.md): framed messages over one TCP (or TLS) stream.

A message is ``u8 type``, ``u32 length`` (little-endian), then ``length`` bytes. Control
messages carry a UTF-8 JSON object; PACKET carries one codec packet (with its CRC);
HELLO carries a JSON object followed by the codec's stream header.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
from dataclasses import dataclass

from temposplit.errors import TemposplitError

PROTOCOL_VERSION = 1

HELLO, WELCOME, PACKET, ACK, KEY_REQUEST, SKIP, END, SUMMARY, ERROR = range(1, 10)
NAMES = {
    HELLO: "HELLO",
    WELCOME: "WELCOME",
    PACKET: "PACKET",
    ACK: "ACK",
    KEY_REQUEST: "KEY_REQUEST",
    SKIP: "SKIP",
    END: "END",
    SUMMARY: "SUMMARY",
    ERROR: "ERROR",
}
MAX_CONTROL = 1 << 20  # bytes of a JSON message
MAX_MESSAGE = 1 << 28  # any message (a codec packet's limit is checked again by the decoder)

_HEAD = struct.Struct("<BI")


class ProtocolError(TemposplitError):
    """The peer broke the protocol or closed the connection."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection (cleanly or not)."""


@dataclass
class Message:
    type: int
    body: bytes

    @property
    def name(self) -> str:
        return NAMES.get(self.type, f"type {self.type}")

    def json(self) -> dict:
        data = self.body
        if self.type == HELLO:
            (n,) = struct.unpack_from("<I", data)
            data = data[4 : 4 + n]
        if len(data) > MAX_CONTROL:
            raise ProtocolError(f"a {self.name} message of {len(data)} bytes is too long")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"a {self.name} message is not valid JSON") from exc
        if not isinstance(obj, dict):
            raise ProtocolError(f"a {self.name} message must hold a JSON object")
        return obj

    def stream_header(self) -> bytes:
        """The codec stream header carried by a HELLO."""
        (n,) = struct.unpack_from("<I", self.body)
        return self.body[4 + n :]


def encode(mtype: int, body: bytes) -> bytes:
    return _HEAD.pack(mtype, len(body)) + body


def control(mtype: int, obj: dict) -> bytes:
    return encode(mtype, json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def hello(obj: dict, stream_header: bytes) -> bytes:
    raw = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return encode(HELLO, struct.pack("<I", len(raw)) + raw + stream_header)


class Channel:
    """A socket with message framing; reads are bounded by MAX_MESSAGE."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionClosed(f"connection lost while sending: {exc}") from exc

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except TimeoutError:
                raise
            except OSError as exc:
                raise ConnectionClosed(f"connection lost: {exc}") from exc
            if not chunk:
                raise ConnectionClosed("the peer closed the connection")
            buf += chunk
        return bytes(buf)

    def recv(self) -> Message:
        mtype, length = _HEAD.unpack(self._read(_HEAD.size))
        if mtype not in NAMES:
            raise ProtocolError(f"unknown message type {mtype}")
        if length > MAX_MESSAGE:
            raise ProtocolError(f"a message announces {length} bytes (at most {MAX_MESSAGE})")
        return Message(mtype, self._read(length))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------- TLS


@dataclass
class TLSConfig:
    """Certificates for TLS. The server requires client certificates signed by ``ca``
    when ``ca`` is given (mutual authentication); the client checks the server against ``ca``."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    server_name: str = "localhost"

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            if self.ca:
                ctx.load_verify_locations(self.ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise TemposplitError(f"TLS setup failed: {exc}") from exc
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.ca:
                ctx.load_verify_locations(self.ca)
            else:
                ctx.load_default_certs()
            if self.cert:
                ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TemposplitError(f"TLS setup failed: {exc}") from exc
        return ctx
