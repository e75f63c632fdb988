"""The edge-server protocol (docs/protocol.md): framed messages over one TCP (or TLS) stream.

A message is ``u8 type``, ``u32 length`` (little-endian), then ``length`` bytes. Control
messages carry a UTF-8 JSON object; PACKET carries one codec packet (with its CRC), and
PACKET_AT (version 3) the frame's times before it; HELLO carries a JSON object followed by
the codec's stream header.
"""

from __future__ import annotations

import calendar
import json
import re
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from temposplit.errors import ConfigError, TemposplitError

PROTOCOL_VERSION = 3  # what the edge sends
SUPPORTED_VERSIONS = (2, 3)  # what the server takes: version 2 is version 3 without PACKET_AT

HELLO, WELCOME, PACKET, ACK, KEY_REQUEST, SKIP, END, SUMMARY, ERROR, PACKET_AT = range(1, 11)
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
    PACKET_AT: "PACKET_AT",
}
# Limits (docs/protocol.md, "Framing"): checked on the announced length, before the body is read.
MAX_HELLO = 128 << 10  # the only message before WELCOME: JSON (at most 16 KiB) + stream header (< 64 KiB)
MAX_HELLO_JSON = 16 << 10
MAX_CONTROL = 64 << 10  # a SKIP or END from the edge
PACKET_SLACK = 64  # a PACKET: the stream header's max_payload() + this
MAX_FROM_SERVER = 16 << 20  # anything the edge reads
MAX_MESSAGE = MAX_FROM_SERVER  # default limit of Channel.recv


def hostport(host: str, port: int) -> str:
    """An address as messages and URLs write it: ``[::1]:7300`` for IPv6, ``host:7300`` else."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# A stream's name: the server's output folder (docs/protocol.md, "Handshake").
STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Frame indices and sizes (docs/protocol.md, "Streaming" and "Handshake").
MAX_FRAMES = 1 << 24  # frame indices are below this
MAX_LEAD = 256  # at most this many indices below a stream's highest without a PACKET or SKIP ("holes")
FRAME_SIDE = (16, 4096)  # frame_size [H, W]: each side in this range
MAX_FPS = 240.0

# Timeouts in seconds (docs/protocol.md, "Sessions, timeouts and limits").
HANDSHAKE_TIMEOUT = 10.0
HELLO_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
WRITE_TIMEOUT = 30.0
LINGER = 120.0
RESUME_WINDOW = 600.0  # an unfinished stream's name is kept for its token this long after its last activity

_HEAD = struct.Struct("<BI")
HEAD_SIZE = _HEAD.size

# A PACKET_AT's times (docs/protocol.md, "Frame times"): microseconds, this value where absent.
_TIMES = struct.Struct("<qq")
TIMES_SIZE = _TIMES.size
NO_TIME = -(1 << 63)
MAX_TIME_US = 1 << 53  # |time| and utc below this: exact as a double (utc: until the year 2255)


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
        limit = MAX_FROM_SERVER
        if self.type == HELLO:
            data = data[4 : 4 + self._hello_json_length()]
            limit = MAX_HELLO_JSON
        if len(data) > limit:
            raise ProtocolError(f"a {self.name} message of {len(data)} bytes is too long")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # not UTF-8 or JSON, nested too deep, a number too long
            raise ProtocolError(f"a {self.name} message is not valid JSON") from exc
        if not isinstance(obj, dict):
            raise ProtocolError(f"a {self.name} message must hold a JSON object")
        return obj

    def stream_header(self) -> bytes:
        """The codec stream header carried by a HELLO."""
        return self.body[4 + self._hello_json_length() :]

    def _hello_json_length(self) -> int:
        if len(self.body) < 4:
            raise ProtocolError(f"a HELLO of {len(self.body)} bytes is too short")
        (n,) = struct.unpack_from("<I", self.body)
        if n > len(self.body) - 4:
            raise ProtocolError("a HELLO announces more JSON than it carries")
        return n


def unpack_head(head: bytes, limit: int) -> tuple[int, int]:
    """(type, body length) of a message head, checked before any body byte is read."""
    mtype, length = _HEAD.unpack(head)
    if mtype not in NAMES:
        raise ProtocolError(f"unknown message type {mtype}")
    if length > limit:
        raise ProtocolError(f"a {NAMES[mtype]} message announces {length} bytes (at most {limit} here)")
    return mtype, length


def to_ranges(frames) -> list[list[int]]:
    """A set of frame indices as sorted, disjoint half-open ranges [[start, end], ...]."""
    out: list[list[int]] = []
    for i in sorted(frames):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def from_ranges(ranges, limit: int = MAX_FRAMES):
    """The frame indices of ``to_ranges``' form, as a :class:`~temposplit.frameset.FrameSet`
    (held as ranges: a long stream's millions of frames are a few ranges, not a set of ints);
    malformed or out-of-range input is a ProtocolError."""
    from temposplit.frameset import FrameSet

    spans = []
    try:
        for start, end in ranges:
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= limit):
                raise ProtocolError(f"a frame range [{start}, {end}] is invalid")
            spans.append((start, end))
    except (TypeError, ValueError) as exc:
        raise ProtocolError("frame ranges must be [[start, end], ...]") from exc
    return FrameSet.from_spans(spans)


def encode(mtype: int, body: bytes) -> bytes:
    return _HEAD.pack(mtype, len(body)) + body


def control(mtype: int, obj: dict) -> bytes:
    return encode(mtype, json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def packet_at(packet: bytes, time_us: int | None, utc_us: int | None) -> bytes:
    """A PACKET_AT message: the frame's ``time_us`` (microseconds into the source) and
    ``utc_us`` (microseconds since the Unix epoch, when a live source gave the picture),
    either None where not known, then its codec packet."""
    times = (NO_TIME if v is None else check_time(v, name) for v, name in ((time_us, "time"), (utc_us, "utc")))
    return encode(PACKET_AT, _TIMES.pack(*times) + packet)


def check_time(value: int, name: str) -> int:
    """A frame time in microseconds as PACKET_AT carries it, or a ProtocolError."""
    low = -1 if name == "utc" else -MAX_TIME_US  # utc in [0, 2^53), time in (-2^53, 2^53)
    if not (isinstance(value, int) and low < value < MAX_TIME_US):
        raise ProtocolError(f"a frame's {name} of {value} microseconds is out of range")
    return value


def split_packet_at(body: bytes) -> tuple[int | None, int | None, bytes]:
    """(time_us, utc_us, codec packet) of a PACKET_AT's body; a ProtocolError where the times
    are cut short or out of range."""
    if len(body) < TIMES_SIZE:
        raise ProtocolError(f"a PACKET_AT of {len(body)} bytes is too short for its times")
    time_us, utc_us = _TIMES.unpack_from(body)
    times = [None if v == NO_TIME else check_time(v, name) for v, name in ((time_us, "time"), (utc_us, "utc"))]
    return times[0], times[1], body[TIMES_SIZE:]


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

    def recv(self, limit: int = MAX_MESSAGE) -> Message:
        mtype, length = unpack_head(self._read(HEAD_SIZE), limit)
        return Message(mtype, self._read(length))

    def close(self) -> None:
        """End the connection: shut it down, then close the socket. A close alone sends no
        FIN while another thread is blocked reading the socket (the edge's receiver): the
        kernel keeps the connection until that read returns, and the peer holds its side
        open until its idle timeout."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected, or already shut down by the peer
            pass
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

    @staticmethod
    def for_server(cert: str | None, key: str | None, client_ca: str | None, warn=None) -> TLSConfig | None:
        """The server's TLS options, checked: None (plaintext) when none is given; partial
        options are an error (never plaintext); TLS without client authentication warns."""
        _given("--tls-cert", cert), _given("--tls-key", key), _given("--tls-client-ca", client_ca)
        if not (cert or key or client_ca):
            return None
        if not cert or not key:
            options = (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca))
            given = ", ".join(n for n, v in options if v)
            raise ConfigError(f"TLS needs both --tls-cert and --tls-key (given: {given})")
        if not client_ca and warn is not None:
            warn("warning: TLS without --tls-client-ca: any client can stream to this server")
        return TLSConfig(cert, key, client_ca)

    @staticmethod
    def for_client(ca: str | None, cert: str | None, key: str | None, server_name: str) -> TLSConfig | None:
        """The edge's TLS options, checked: a certificate needs its key and the other way round."""
        _given("--tls-ca", ca), _given("--tls-cert", cert), _given("--tls-key", key)
        if not (ca or cert or key):
            return None
        if not server_name:
            raise ConfigError("--tls-server-name is empty: the name the server's certificate must carry")
        if bool(cert) != bool(key):
            raise ConfigError("a client certificate needs both --tls-cert and --tls-key")
        return TLSConfig(cert, key, ca, server_name)

    def own_certificate(self) -> bytes | None:
        """The DER bytes of the first certificate in ``cert`` (the server refuses it from a client)."""
        try:
            text = open(self.cert, encoding="ascii", errors="replace").read()
            start = text.index("-----BEGIN CERTIFICATE-----")
            end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
            return ssl.PEM_cert_to_DER_cert(text[start:end])
        except (OSError, ValueError):
            return None

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_own(ctx)
        if self.ca:
            _tls_load(f"CA file {self.ca}", ctx.load_verify_locations, self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca:
            _tls_load(f"CA file {self.ca}", ctx.load_verify_locations, self.ca)
        else:
            _tls_load("the system's CA certificates", ctx.load_default_certs)
        if self.cert:
            self._load_own(ctx)
        return ctx

    def _load_own(self, ctx: ssl.SSLContext) -> None:
        """This side's certificate and key into ``ctx``: never a passphrase prompt (OpenSSL's
        own reads the terminal, where a service would wait for ever), and refused when the
        certificate is out of its validity period, which every peer that checks it refuses."""
        what = f"certificate {self.cert} with key {self.key}"

        def no_passphrase():
            raise TemposplitError(
                f"TLS setup failed: the key {self.key} is encrypted; give its decrypted form "
                "(openssl pkey -in KEY -out PLAIN.key), readable by this user only"
            )

        _tls_load(what, ctx.load_cert_chain, self.cert, self.key, no_passphrase)
        der = self.own_certificate()
        if der is None:
            return
        try:
            not_before, not_after = certificate_validity(der)
        except (IndexError, ValueError):  # OpenSSL took it: a form this reader does not know
            return
        now = time.time()
        if now > not_after:
            raise TemposplitError(f"TLS setup failed: certificate {self.cert} expired on {_utc(not_after)}")
        if now < not_before:
            raise TemposplitError(
                f"TLS setup failed: certificate {self.cert} is not valid before {_utc(not_before)} "
                f"(this machine's clock: {_utc(now)})"
            )


def _given(option: str, value: str | None) -> None:
    """An option given empty (``--tls-cert "$CERT"`` with the variable unset) is an error,
    never taken for the option left out (which would mean plaintext, or no client check)."""
    if value is not None and not value.strip():
        raise ConfigError(f"{option} is empty: name a PEM file")


def certificate_validity(der: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) of a DER X.509 certificate, in seconds since the epoch (RFC 5280
    4.1: Certificate -> TBSCertificate -> [version], serial, signature, issuer, validity)."""
    _, cert, _ = _der_item(der, 0)
    _, tbs, _ = _der_item(cert, 0)
    fields, i = [], 0
    while len(fields) < 5:
        tag, value, i = _der_item(tbs, i)
        if tag != 0xA0:  # the optional version
            fields.append(value)
    tag1, first, j = _der_item(fields[3], 0)
    tag2, second, _ = _der_item(fields[3], j)
    return _der_time(tag1, first), _der_time(tag2, second)


def _der_item(data: bytes, i: int) -> tuple[int, bytes, int]:
    """The DER item at ``i``: (tag, contents, where the next item starts)."""
    tag, n = data[i], data[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(data[i : i + k], "big")
        i += k
    if i + n > len(data):
        raise ValueError("a DER item runs past its container")
    return tag, data[i : i + n], i + n


def _der_time(tag: int, value: bytes) -> float:
    """A UTCTime (0x17, YYMMDDHHMMSSZ: 50..99 are 19xx) or GeneralizedTime (0x18) in UTC."""
    text = value.decode("ascii")
    if tag == 0x17:
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    elif tag != 0x18:
        raise ValueError(f"DER tag {tag:#x} is not a time")
    return float(calendar.timegm(time.strptime(text, "%Y%m%d%H%M%SZ")))


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _tls_load(what: str, load, *args) -> None:
    """``load(*args)``, a failure one line naming ``what`` and why (the file missing, or not
    PEM that OpenSSL takes: its own words, e.g. ``[SSL] PEM lib``, name neither)."""
    try:
        load(*args)
    except ssl.SSLError as exc:
        raise TemposplitError(f"TLS setup failed: {what}: not a PEM certificate, key or CA that fit ({exc})") from exc
    except OSError as exc:
        raise TemposplitError(f"TLS setup failed: {what}: {exc.strerror or exc}") from exc
