"""``temposplit serve --metrics-port``: the server's figures over HTTP in Prometheus's text
format (docs/deployment.md, "Monitoring"), for a scraper or ``curl``.

One small HTTP/1.0 responder on the server's event loop: ``GET /metrics`` and nothing else.
It reads at most MAX_REQUEST bytes of a request head within REQUEST_TIMEOUT, serves at most
MAX_CLIENTS connections at once, at most MAX_PER_ADDRESS of them from one address (more are
closed at accept: one address's silent sockets once held every slot, the scraper shut out),
and closes each connection after its answer, so a client that misbehaves costs a socket for
seconds, never the stream server's time or memory, nor another address's scrape. A server
with TLS serves its metrics over TLS too, with the same certificate and, under
``--tls-client-ca``, the same demand for a client certificate.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

from temposplit.errors import ConfigError
from temposplit.protocol import hostport

MAX_REQUEST = 8 << 10  # bytes of a request's head
REQUEST_TIMEOUT = 5.0  # seconds for the head, and for the answer to be taken
MAX_CLIENTS = 16  # connections at once
MAX_PER_ADDRESS = 2  # connections at once from one address
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    """A label value as the text format escapes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(server) -> str:
    """The server's figures now, in the text format (one HELP and TYPE per family)."""
    with server.table:
        sessions = list(server.sessions.values())
        retired = dict(server.retired)
        opening = len(server.opening)
    now = time.monotonic()
    totals = dict(retired)
    for s in sessions:
        for k, v in s.counts.items():
            totals[k] = totals.get(k, 0) + v
    attached = sum(s.conn is not None for s in sessions)
    closing = sum(s.conn is None and s.closing for s in sessions)
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples) -> None:
        lines.append(f"# HELP temposplit_{name} {text}")
        lines.append(f"# TYPE temposplit_{name} {kind}")
        for labels, value in samples:
            shown = "{" + ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items()) + "}" if labels else ""
            lines.append(f"temposplit_{name}{shown} {value!r}")  # a float's shortest exact form

    family("up", "gauge", "1 while the server serves.", [({}, 1)])
    family(
        "connections",
        "gauge",
        "Open edge connections (their sockets counted until closed).",
        [({}, len(server.connections))],
    )
    family(
        "streams",
        "gauge",
        "Streams in memory: attached to a connection, detached (waiting for a resume), closing their files "
        "(expired), or names being opened.",
        [
            ({"state": "attached"}, attached),
            ({"state": "detached"}, len(sessions) - attached - closing),
            ({"state": "closing"}, closing),
            ({"state": "opening"}, opening),
        ],
    )
    family(
        "frames_recorded_total",
        "counter",
        "Frames recorded with detections by this process.",
        [({}, totals.get("frames", 0))],
    )
    family(
        "frames_failed_total",
        "counter",
        "Frames recorded as errors by this process (a damaged or lost packet, a frame the edge skipped or never sent).",
        [({}, totals.get("errors", 0))],
    )
    family(
        "packet_bytes_total",
        "counter",
        "Codec packet bytes of the frames recorded with detections.",
        [({}, totals.get("bytes", 0))],
    )
    family(
        "m2_batches_total", "counter", "M2 batches run.", [({"device": w.device}, w.batches) for w in server.workers]
    )
    family(
        "m2_frames_total", "counter", "Frames through M2.", [({"device": w.device}, w.frames) for w in server.workers]
    )
    family(
        "worker_seconds_total",
        "counter",
        "Worker time by stage (decode, M2, writing the records).",
        [
            ({"device": w.device, "stage": k}, float(w.seconds[k]))
            for w in server.workers
            for k in ("decode", "m2", "record")
        ],
    )
    family(
        "worker_queue_items",
        "gauge",
        "Items waiting in a worker's queue (its bound: the server's queue size).",
        [({"device": w.device}, w.queued()) for w in server.workers],
    )
    family(
        "stream_frames_recorded",
        "gauge",
        "A stream's frames recorded with detections (this process).",
        [({"stream": s.name}, s.counts["frames"]) for s in sessions],
    )
    family(
        "stream_frames_failed",
        "gauge",
        "A stream's frames recorded as errors (this process).",
        [({"stream": s.name}, s.counts["errors"]) for s in sessions],
    )
    family(
        "stream_seconds_since_record",
        "gauge",
        "Seconds since a stream's last record (or since it was opened): a camera that stalled shows here.",
        [({"stream": s.name}, float(now - s.last_record)) for s in sessions],
    )
    family(
        "stream_lag_seconds",
        "gauge",
        "A live stream's last record: seconds from its picture coming to the edge (the frame's utc) to the "
        "record, on the two machines' clocks (keep them synchronised).",
        [({"stream": s.name}, float(s.lag)) for s in sessions if s.lag is not None],
    )
    return "\n".join(lines) + "\n"


class MetricsEndpoint:
    """The responder; its socket is bound when it is made (a port in use is a ConfigError at
    the server's start, not a log line later). ``tls``: the stream server's context (HTTPS
    then, its handshake within REQUEST_TIMEOUT and counted among MAX_CLIENTS), or None."""

    def __init__(self, server, host: str, port: int, tls: ssl.SSLContext | None = None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        both = family == socket.AF_INET6 and host == "::" and socket.has_dualstack_ipv6()  # as the stream port
        try:
            self.sock = socket.create_server((host, port), family=family, backlog=64, dualstack_ipv6=both)
        except OSError as exc:
            where = hostport(host, port)
            raise ConfigError(f"cannot listen on {where} for the metrics: {exc.strerror or exc}") from None
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.server = server
        self.tls = tls
        self.clients = 0
        self.per_address: dict[str, int] = {}  # open connections by peer address

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{hostport(*self.address)}/metrics"

    async def serve(self) -> None:
        """Answer until cancelled (the server's stop); the socket is closed then."""
        srv = await asyncio.start_server(self._handle, sock=self.sock, limit=MAX_REQUEST)
        try:
            await asyncio.Event().wait()
        finally:
            srv.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if self.clients >= MAX_CLIENTS or self.per_address.get(address, 0) >= MAX_PER_ADDRESS:
            writer.transport.abort()
            return
        self.clients += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        try:
            if self.tls is not None:  # after the count: a flood of handshakes is bounded like requests
                await writer.start_tls(self.tls, ssl_handshake_timeout=REQUEST_TIMEOUT)
            status, body = await self._answer(reader)
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, OSError, ConnectionError):  # ssl.SSLError is an OSError
            writer.transport.abort()
        finally:
            try:  # counted until really closed: a TLS close waits for the client's close_notify
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)
            except (TimeoutError, OSError, ConnectionError):
                writer.transport.abort()
            finally:
                self.clients -= 1
                left = self.per_address.pop(address) - 1
                if left:
                    self.per_address[address] = left

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            return "431 Request Header Fields Too Large", b"request head too large\n"
        except asyncio.IncompleteReadError:
            return "400 Bad Request", b"incomplete request\n"
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", b"not an HTTP request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return "404 Not Found", b"GET /metrics\n"
        if method != b"GET":
            return "405 Method Not Allowed", b"GET /metrics\n"
        return "200 OK", exposition(self.server).encode("utf-8")
