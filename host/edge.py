"""The edge program: frames -> int8 M1 -> accelerator -> packets -> server.

It keeps the M1 outputs of the frames the server has not acknowledged (a bounded
window), so that after a dropped connection it reconnects, starts a fresh KEY anchor
and resends them: no frame is lost silently.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import queue
import random
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from temposplit import protocol as P
from temposplit.errors import ConfigError, TemposplitError
from temposplit.frameset import FrameSet
from temposplit.host.backends import make_encoder

MAX_TIMEOUT = 86400.0  # the answer timeout (--timeout): a day at most (a socket refuses an unbounded one)
RECONNECT_ATTEMPTS = 11
RECONNECT_FIRST, RECONNECT_CAP = 0.1, 5.0  # seconds: the back-off doubles from the first up to the cap
# The most the ten waits between eleven attempts take (26.3 s): the attempts end by then too, so a
# server host that drops the connection's SYNs (powered off, firewalled) is given up as soon as one
# that refuses it (docs/protocol.md, "Lost connections").
RECONNECT_SPAN = sum(min(RECONNECT_CAP, RECONNECT_FIRST * 2**a) for a in range(RECONNECT_ATTEMPTS - 1))
CONNECT_TIMEOUT = 10.0  # seconds an attempt's TCP connect waits for the server (at most the answer timeout)
STOP_POLL = 0.1  # seconds: how often a wait while connecting looks for a stop (a signal's handler sets it)
# A socket, or its bind to --source-address, that fails so fails on every attempt: not an address
# of this machine, an IPv6 one without its scope, a family this machine has no sockets of.
FINAL_SOCKET_ERRORS = frozenset((errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT))


def reconnect_delay(attempt: int, rng=random) -> float:
    """Seconds to wait after failed connection attempt ``attempt`` (0 first): exponential
    back-off, each wait drawn from [1/2, 1] of 0.1 * 2^attempt s capped at 5 s. The ten
    waits between eleven attempts span 13-26 s, longer than the server's HELLO timeout
    (10 s), so that the slots a flood of idle sockets holds free up within them; and the
    draw keeps the edges of a restarted server from coming back in step
    (docs/protocol.md, "Lost connections")."""
    return min(RECONNECT_CAP, RECONNECT_FIRST * 2**attempt) * rng.uniform(0.5, 1.0)


class Silent(P.ConnectionClosed):
    """The server sent nothing for the answer timeout (the connection may be half-open)."""


# OpenSSL's names (ssl.SSLError.reason) of the TLS alerts by which a server refuses this
# edge's client certificate, or its lack of one; and of those by which it refuses the
# handshake itself. The same certificate would be refused again: no reason to retry.
CERTIFICATE_ALERTS = frozenset(
    f"{prefix}_ALERT_{name}"
    for prefix, name in [
        ("TLSV13", "CERTIFICATE_REQUIRED"),
        ("SSLV3", "BAD_CERTIFICATE"),
        ("SSLV3", "UNSUPPORTED_CERTIFICATE"),
        ("SSLV3", "CERTIFICATE_REVOKED"),
        ("SSLV3", "CERTIFICATE_EXPIRED"),
        ("SSLV3", "CERTIFICATE_UNKNOWN"),
        ("TLSV1", "UNKNOWN_CA"),
        ("TLSV1", "ACCESS_DENIED"),
        ("TLSV1", "DECRYPT_ERROR"),  # the certificate's key did not sign the handshake
    ]
)
HANDSHAKE_ALERTS = frozenset(
    ("SSLV3_ALERT_HANDSHAKE_FAILURE", "TLSV1_ALERT_PROTOCOL_VERSION", "TLSV1_ALERT_INSUFFICIENT_SECURITY")
)
REQUIRES_CERTIFICATE = "requires a client certificate, and this edge gave none (--tls-cert and --tls-key)"
CHECK_CERTIFICATE = "the certificate must be signed by the CA the server trusts (its --tls-client-ca) and be valid"


def tls_refusal(exc: BaseException | None, where: str, cert: str | None) -> str | None:
    """Why the TLS server at ``where`` refused this edge, in words, when ``exc`` (or an
    exception that caused it) says so: a certificate alert, a handshake the server refused,
    or a server certificate this edge cannot verify. None for anything else (a reset, an
    EOF: a server restarting may cause those, and they are tried again). ``cert``: this
    edge's certificate file, None when it gives none."""
    while exc is not None and not isinstance(exc, ssl.SSLError):
        exc = exc.__cause__
    if exc is None:
        return None
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"cannot verify the server at {where}: {str(exc.verify_message).rstrip('.')}; --tls-ca must name the CA "
            "that signed the server's certificate, and --tls-server-name a name it carries"
        )
    reason = exc.reason or ""
    alert = reason.partition("_ALERT_")[2].lower().replace("_", " ")
    if reason in CERTIFICATE_ALERTS:
        if cert is None:
            return f"the server at {where} {REQUIRES_CERTIFICATE} (TLS alert: {alert})"
        refused = f"refused this edge's client certificate {cert} (TLS alert: {alert})"
        return f"the server at {where} {refused}; {CHECK_CERTIFICATE}"
    if reason in HANDSHAKE_ALERTS:
        hint = "; it may require a client certificate (--tls-cert and --tls-key)" if cert is None else ""
        return f"the server at {where} refused the TLS handshake (TLS alert: {alert}){hint}"
    return None


class Refusal(TemposplitError):
    """The server refused the stream's HELLO for good; ``gone``: a resume of a stream the
    server has finished or does not know (a new stream may then be started)."""

    def __init__(self, message: str, gone: bool = False):
        super().__init__(message)
        self.gone = gone


MIN_FPS = 0.001  # the stream header holds the rate in thousandths of a frame per second (docs/bitstream.md)


def check_timeout(value, option: str = "--timeout") -> float:
    """``value`` as the seconds of the edge's answer timeout: finite, in (0, MAX_TIMEOUT]."""
    from temposplit.host.sources import check_seconds

    return check_seconds(value, option, MAX_TIMEOUT)


def check_fps(value, what: str = "--fps") -> float:
    """``value`` as a stream's frame rate: finite, in [MIN_FPS, protocol.MAX_FPS] (what the server takes)."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        fps = math.nan
    if not (math.isfinite(fps) and MIN_FPS <= fps <= P.MAX_FPS):
        raise ConfigError(f"{what} must be {MIN_FPS:g} to {P.MAX_FPS:g} frames/s (the server's range), not {value}")
    return fps


def check_rate(path, fps: float) -> None:
    """A source's rate (its own, or --fps) against the server's range (docs/protocol.md),
    with the remedy."""
    if not (math.isfinite(fps) and MIN_FPS <= fps <= P.MAX_FPS):
        raise ConfigError(
            f"{path} runs at {fps:g} frames/s, outside the {MIN_FPS:g} to {P.MAX_FPS:g} the server takes: "
            f"give the stream a rate with --fps, e.g. --fps {P.MAX_FPS:g} (the annotated video's rate)"
        )


def check_frame_size(path, size: tuple[int, int] | None) -> None:
    """A source's frame size (H, W) against the sides the server takes (docs/protocol.md);
    None (not known before reading) passes."""
    lo, hi = P.FRAME_SIDE
    if size is not None and not all(lo <= v <= hi for v in size):
        h, w = size
        raise ConfigError(f"{path} is {w}x{h}: the server takes frames of {lo} to {hi} pixels a side")


def _microseconds(seconds: float | None, name: str) -> int | None:
    """A frame's ``time`` or ``utc`` in microseconds as PACKET_AT carries it; None where there
    is none or it is out of the protocol's range (an odd file's: the frame is sent without
    it, never refused)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        return P.check_time(round(seconds * 1e6), name)
    except P.ProtocolError:
        return None


def check_host(host: str) -> str:
    """A host name the resolver can be asked about (IDNA: no empty label, none over 63 characters)."""
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise ConfigError(f"invalid host name {host!r}: {exc}") from None
    return host


def server_address(text: str) -> tuple[str, int]:
    """``--server``'s ``host:port`` (the port 1..65535, the host one the resolver can be asked
    about); an IPv6 address in brackets, ``[::1]:7300``, as URLs write it (the brackets are
    not part of the address the resolver takes)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--server must be host:port with a port in 1..65535, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return check_host(host), int(port)


def _figure(value, default: float = 0.0) -> float:
    """A figure of an ACK (a time, a batch size): a finite number, else ``default`` (the
    report's figures never fail a stream)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return float(value)


@dataclass
class EdgeReport:
    frames: int = 0
    bytes: int = 0
    packets: int = 0
    acked: int = 0  # frames answered with detections (each once, whatever connection its ACK came on)
    errors: dict = field(default_factory=dict)  # frame -> message
    detections: dict = field(default_factory=dict)  # frame -> list of COCO-style records
    latency_ms: dict = field(default_factory=dict)  # frame -> capture-to-detections
    m1_ms: list = field(default_factory=list)
    encode_ms: list = field(default_factory=list)
    decode_ms: list = field(default_factory=list)
    m2_ms: list = field(default_factory=list)
    reconnects: int = 0
    key_requests: int = 0
    summary: dict | None = None
    kinds: dict = field(default_factory=dict)  # frame -> key/anchor/pred
    tensor_bytes: list = field(default_factory=list)  # per packet, bytes per tensor
    packets_sent: list = field(default_factory=list)  # per packet (a resend too): (frame, bytes), as tensor_bytes
    # Frames the server recorded whose answer this edge never received (their ACK lost with a
    # connection: WELCOME's record of them, or a `duplicate` ACK of their resend). Once the
    # stream has ended, those the server recorded as errors are in ``errors`` instead: the
    # rest have detections in the server's detections.jsonl, not in ``detections``.
    unanswered: FrameSet = field(default_factory=FrameSet)
    full: bool = False  # ended at protocol.MAX_FRAMES, the most a stream carries, with frames left


class Edge:
    """One edge stream to a server.

    Parameters
    ----------
    model : an :class:`~temposplit.host.pipeline.EdgeModel`
    codec : keyword arguments of :class:`~temposplit.codec.encoder.CodecConfig` (without tensors)
    address : (host, port) of the server
    stream : the stream's name (the server's output folder)
    keep_frames : keep each frame's detections and figures (stage times, latency, kind,
        bytes per tensor) in the report, as the demo and the benchmarks read them; without
        it (a camera streamed for hours: ``temposplit edge``) the report keeps its counts
        and errors only, and the edge's memory stays bounded
    resume_state : a :class:`~temposplit.host.resume.ResumeState`: the stream's token kept on
        disk while it runs, so that a rerun after the edge stopped resumes the stream
    source_id : the source's identity (:func:`~temposplit.host.resume.source_identity`),
        which a resume must read again
    """

    def __init__(
        self,
        model,
        codec: dict,
        address,
        stream: str,
        backend: str = "golden",
        tls: P.TLSConfig | None = None,
        window: int = 64,
        reconnect_attempts: int = RECONNECT_ATTEMPTS,
        timeout: float = 60.0,
        log=None,
        progress=None,
        source_address: str | None = None,
        keep_frames: bool = True,
        resume_state=None,
        source_id: str = "",
    ):
        self.model = model
        self.source_address = (source_address, 0) if source_address else None  # e.g. for a proxy's affinity
        self.codec = dict(codec)
        self.address = tuple(address)
        self.stream = stream
        self.backend = backend
        self.tls = tls.client_context() if tls else None
        self.server_name = tls.server_name if tls else None
        self.tls_cert = tls.cert if tls else None  # this edge's certificate file (named when it is refused)
        self.window = window
        if reconnect_attempts < 1:
            raise ConfigError(f"reconnect_attempts must be 1 or more, not {reconnect_attempts}")
        self.reconnect_attempts = reconnect_attempts
        self.timeout = timeout
        self.log = log or (lambda msg: None)
        self.progress = progress
        self.report = EdgeReport()
        self.keep_frames = keep_frames
        self.resume_state = resume_state  # a ResumeState (host/resume.py): the token kept on disk
        self.source_id = source_id  # what a resume must read again (ResumeState.save)
        self.pending: dict[int, float] = {}  # unacknowledged frames: capture time
        self.answered = FrameSet()  # frames whose detections arrived (report.acked counts each once)
        self.history: OrderedDict[int, list[np.ndarray]] = OrderedDict()  # recent frames' M1 codes
        self.times: OrderedDict[int, tuple] = OrderedDict()  # their (time_us, utc_us): PACKET_AT's times
        self.taken: tuple = (None, None)  # the times of the frame last taken from the source (_take)
        self.inbox: queue.Queue = queue.Queue()
        self.chan: P.Channel | None = None
        self.token: str | None = None  # the server's resume token for this stream (WELCOME)
        self.silences = 0  # answer timeouts in a row with frames unacknowledged (Silent)
        self.fruitless = 0  # reconnects in a row with no ACK between them
        self.stop: str | None = None  # why to end the stream after the current frame (set by a signal handler)
        self.ending = False  # the frames sent: the stream is being ended (END), a stop no longer cuts a reconnect short
        self.opened = False  # the server welcomed this run's stream (a new one or a resume)
        self.left_over = None  # the source's item after a full stream's last frame (report.full)
        self.fault = None  # fault injection (tests): callable(frame_index, channel) run after each send
        self.tamper = None  # fault injection (tests): callable(frame_index, packet_bytes) -> bytes to send

    # ------------------------------------------------------------------ connection

    def _connect(self, resume: bool) -> None:
        """Connect and send HELLO, up to ``reconnect_attempts`` times with the back-off between
        them, all within RECONNECT_SPAN (the time a connected server takes to answer not
        counted: the answer timeout bounds that), each connect within CONNECT_TIMEOUT. A stop
        (SIGINT, SIGTERM) ends the attempts at once (:meth:`_check_stop`)."""
        last = None
        where = P.hostport(*self.address[:2])
        check_host(self.address[0])  # an IDNA failure is no reason to retry
        unanswered = 0  # connections accepted whose HELLO got no answer within the timeout
        closed_after_tls = 0  # connections in a row the server closed after the TLS handshake, unanswered
        start = time.monotonic()
        deadline = start + RECONNECT_SPAN
        for attempt in range(self.reconnect_attempts):
            connected = handshaken = answered = False
            self._check_stop(where)
            try:
                now = time.monotonic()
                sock = self._dial(now + min(CONNECT_TIMEOUT, self.timeout, deadline - now), where)
                connected, since = True, time.monotonic()
                if self.tls is not None:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.server_name)
                    handshaken = True
                chan = P.Channel(sock)
                hello = {**self.hello_info, "resume": resume}
                if resume:
                    hello["token"] = self.token
                chan.send(P.hello(hello, self.header))
                try:
                    self._await_answer(sock, where)
                    msg = chan.recv()
                    answered = True
                    if msg.type == P.ERROR:
                        refusal = msg.json()
                        if refusal.get("retry") is True:  # e.g. the stream's files still closing on the server
                            raise P.ConnectionClosed(f"the server asks to try again: {refusal.get('message')}")
                        chan.close()  # (the server closes its side after an ERROR)
                        raise Refusal(
                            f"the server refused the stream: {refusal.get('message')}", refusal.get("gone") is True
                        )
                    if msg.type != P.WELCOME:
                        raise P.ProtocolError(f"expected WELCOME, got {msg.name}")
                    welcome = msg.json()
                    recorded = P.from_ranges(welcome.get("recorded", []))  # ranges: no set of millions
                except P.ConnectionClosed:
                    raise
                except P.ProtocolError as exc:  # an HTTP server, a TLS one, another program: no reason to retry
                    chan.close()
                    raise TemposplitError(f"{where} does not answer as a temposplit server: {exc}") from None
                self.welcome = welcome
                if not resume:
                    self.token = self.welcome.get("token")
                # Frames the server recorded (their ACKs may have been lost with the connection).
                nf = welcome.get("next_frame")
                below = nf if isinstance(nf, int) and not isinstance(nf, bool) else 0  # all recorded below it
                for i in [i for i in self.pending if i < below or i in recorded]:
                    self.pending.pop(i)
                    self.report.errors.pop(i, None)
                    self.report.unanswered.add(i)  # until an ACK of it, on the lost connection, is read
                self.chan = chan
                self.opened = True
                threading.Thread(target=self._receive, args=(chan,), daemon=True).start()
                return
            except (OSError, P.ConnectionClosed) as exc:
                last = exc
                if connected:
                    sock.close()
                    deadline += time.monotonic() - since  # the server's answer is the answer timeout's
                refused = tls_refusal(exc, where, self.tls_cert)
                if refused is not None:  # the same certificate would be refused again
                    raise TemposplitError(refused) from None
                # Under TLS 1.3 the server checks the client's certificate after the client's side
                # of the handshake is done: one it refuses closes the connection before any answer
                # (with an alert, or, from Python's asyncio, none). Twice in a row, that is the
                # refusal (once may be a server stopping).
                closed = handshaken and not answered and not isinstance(exc, TimeoutError)
                closed_after_tls = closed_after_tls + 1 if closed else 0
                if closed_after_tls >= 2:
                    raise TemposplitError(self._closed_after_handshake(where)) from None
                if connected and isinstance(exc, TimeoutError):
                    unanswered += 1
                    if unanswered >= 2:  # once may be a busy server; twice, it does not answer
                        raise TemposplitError(
                            f"the server at {where} accepted the connection but did not answer within "
                            f"{self.timeout:g} s, twice (is it a temposplit server?)"
                        ) from None
                wait = reconnect_delay(attempt)
                if attempt + 1 == self.reconnect_attempts or time.monotonic() + wait >= deadline:
                    break
                self._wait(wait, where)
        tried = f"{attempt + 1} attempt(s) in {time.monotonic() - start:.0f} s"
        raise TemposplitError(f"cannot reach the server at {where}: {last} ({tried})")

    def _dial(self, ends: float, where: str) -> socket.socket:
        """``socket.create_connection(self.address, ..., self.source_address)`` by the
        monotonic time ``ends`` (shared by the server's addresses), its wait
        for the server in slices that a stop cuts short (a host that drops the SYNs held a
        SIGTERM for the whole timeout). A connection that can never be made from
        ``--source-address`` (not an address of this machine; of another family than the
        server's) is a TemposplitError: no reason to retry."""
        host, port = self.address[:2]
        source = self.source_address
        family = 0 if source is None else socket.AF_INET6 if ":" in source[0] else socket.AF_INET
        try:
            found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if family and self._resolves(host, port):  # the server has addresses, none of the source's family
                ip = "IPv6" if family == socket.AF_INET6 else "IPv4"
                raise TemposplitError(
                    f"cannot connect from {source[0]} to the server at {where}: it has no {ip} address"
                ) from None
            raise exc from None  # (a name not found: the resolver may not be up yet)
        last: OSError | None = None
        final = True  # every address of the server failed so that it fails again (false: one may not)
        for kind, socktype, proto, _, address in found:
            sock, connecting = None, False
            try:
                sock = socket.socket(kind, socktype, proto)
                if source is not None:
                    sock.bind(source)
                connecting = True
                self._connect_socket(sock, address, ends, where)
                return sock
            except OSError as exc:
                if sock is not None:
                    sock.close()
                last = exc
                # (a connect's errors all may pass: a server restarting, a network coming up)
                final &= not connecting and (isinstance(exc, socket.gaierror) or exc.errno in FINAL_SOCKET_ERRORS)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
        if last is not None and final:
            why = last.strerror or last
            if last.errno == errno.EADDRNOTAVAIL:
                why = f"{why} (not an address of this machine)"
            frm = f" from {source[0]}" if source is not None else ""
            raise TemposplitError(f"cannot connect{frm} to the server at {where}: {why}")
        raise last if last is not None else OSError(f"no address of {host}")

    @staticmethod
    def _resolves(host: str, port: int) -> bool:
        try:
            return bool(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError:
            return False

    def _connect_socket(self, sock: socket.socket, address, ends: float, where: str) -> None:
        """``sock.connect(address)`` by the monotonic time ``ends`` (a TimeoutError past it),
        looking for a stop every STOP_POLL s; the socket then blocks with the answer timeout."""
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            self._poll(sock, selectors.EVENT_WRITE, ends, where, "no answer to the connection")
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        sock.settimeout(self.timeout)

    def _await_answer(self, sock: socket.socket, where: str) -> None:
        """Wait up to the answer timeout for HELLO's answer to begin, looking for a stop
        every STOP_POLL s (a server that accepts and never answers held a signal for the
        whole timeout); the answer itself is then read with the socket's timeout."""
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():  # TLS: bytes already decrypted
            return
        self._poll(sock, selectors.EVENT_READ, time.monotonic() + self.timeout, where, "no answer to HELLO")

    def _poll(self, sock: socket.socket, event, ends: float, where: str, what: str) -> None:
        """Wait for ``event`` on ``sock`` until the monotonic time ``ends`` (a TimeoutError
        saying ``what`` past it), looking for a stop every STOP_POLL s."""
        began = time.monotonic()
        with selectors.DefaultSelector() as sel:
            sel.register(sock, event)
            while not sel.select(max(0.0, min(STOP_POLL, ends - time.monotonic()))):
                self._check_stop(where)
                if time.monotonic() >= ends:
                    raise TimeoutError(f"{what} within {max(0.0, ends - began):.1f} s")

    def _wait(self, seconds: float, where: str) -> None:
        """``time.sleep(seconds)`` between connection attempts, looking for a stop every STOP_POLL s."""
        ends = time.monotonic() + seconds
        while (left := ends - time.monotonic()) > 0:
            self._check_stop(where)
            time.sleep(min(STOP_POLL, left))
        self._check_stop(where)

    def _check_stop(self, where: str) -> None:
        """A stop (``stop``: SIGINT, SIGTERM) while connecting, before the stream is being
        ended: no connection to end the stream on, so a stream opened stays unfinished on the
        server, for a rerun to resume (the edge keeps its token). Once the stream is being
        ended (``ending``: its END to send) the edge reconnects to end it; a second signal
        stops it at once (the CLI's handler)."""
        if self.stop is None or self.ending:
            return
        kept = (
            f"the stream {self.stream!r} stays unfinished on the server: the same command, run again, resumes it"
            if self.token
            else "no stream was opened"
        )
        raise TemposplitError(f"{self.stop} while connecting to the server at {where}; {kept}")

    def _closed_after_handshake(self, where: str) -> str:
        what = "closed the connection right after the TLS handshake, twice, without an answer"
        if self.tls_cert is None:
            return f"the server at {where} {REQUIRES_CERTIFICATE}: it {what}"
        return (
            f"the server at {where} refused this edge's client certificate {self.tls_cert}: it {what}; "
            f"{CHECK_CERTIFICATE}"
        )

    def _receive(self, chan: P.Channel) -> None:
        try:
            while True:
                self.inbox.put((chan, chan.recv()))
        except TimeoutError:
            self.inbox.put((chan, Silent(f"no answer from the server for {self.timeout:g} s")))
        except P.ProtocolError as exc:
            self.inbox.put((chan, exc))
        except OSError as exc:
            self.inbox.put((chan, P.ConnectionClosed(str(exc))))

    def _send(self, data: bytes) -> None:
        self.chan.send(data)

    # ------------------------------------------------------------------ messages

    def _handle(self, block: bool = False, timeout: float | None = None) -> bool:
        """Handle one incoming message; returns False when none came."""
        try:
            chan, msg = self.inbox.get(block=block, timeout=timeout)
        except queue.Empty:
            return False
        if chan is not self.chan:  # from a connection already replaced: only its ACKs still count
            if not isinstance(msg, Exception) and msg.type == P.ACK:
                self._ack(msg.json())
            return True
        if isinstance(msg, Exception):
            if isinstance(msg, Silent) and self.pending:
                self._silent()
            raise msg
        if msg.type in (P.ACK, P.KEY_REQUEST, P.SUMMARY):
            self.silences = 0
            self.fruitless = 0
        if msg.type == P.ACK:
            self._ack(msg.json())
        elif msg.type == P.KEY_REQUEST:
            self.report.key_requests += 1
            self.log(f"server asks for a fresh anchor: {msg.json().get('reason')}")
            self._emit(self.encoder.request_key())
        elif msg.type == P.SUMMARY:
            self.report.summary = msg.json()
        elif msg.type == P.ERROR:
            obj = msg.json()
            if obj.get("retry") is True:  # e.g. this edge was silent past the server's idle timeout: resume
                raise P.ConnectionClosed(f"the server closed the connection: {obj.get('message')}")
            raise TemposplitError(f"server error: {obj.get('message')}")
        return True

    def _silent(self) -> None:
        """The server has sent nothing for the answer timeout with frames unacknowledged: the
        first time, taken for a half-open connection, which is closed (:class:`Silent`, a
        ConnectionClosed: the caller replaces it, a resume); silent again on the new
        connection, the server is given up (docs/protocol.md, "Flow control at the edge").
        Both waits that see it come here: the receiving thread's read (its Silent, handled
        by :meth:`_handle`) and the full window's wait (:meth:`_frame`), started by the same
        answer, and either may end first. One silence counts once: once the connection is
        replaced, what its receiving thread still queues (its Silent, the close) comes from a
        connection no longer ``self.chan``, and :meth:`_handle` takes only its ACKs."""
        self.silences += 1
        what = f"no answer from the server for {self.timeout:g} s"
        if self.silences > 1:  # a half-open connection is replaced once; a silent server is given up
            raise TemposplitError(f"{what}, on a new connection too: giving up")
        self.chan.close()  # (a shutdown first: the receiving thread's read of it, if still waiting, ends)
        raise Silent(what)

    def _ack(self, obj: dict) -> None:
        """An ACK: a fact about the server's record of its frame, taken whatever connection it
        came on (one lost since, its ACKs read after the resume's WELCOME, is no exception).
        Only the main thread handles messages (the receiving threads queue them), and the
        server answers a frame with detections once: ``answered`` keeps even a repeated one
        from being counted twice."""
        i = obj.get("frame")
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < P.MAX_FRAMES:
            raise P.ProtocolError(f"the server sent an ACK with no valid frame number: {str(i)[:80]!r}")
        entry = self.pending.pop(i, None)
        if "error" in obj:
            self.report.errors[i] = obj["error"]
            self.report.unanswered.discard(i)
        elif obj.get("duplicate"):  # recorded before: its answer went to an earlier connection, or comes later
            if entry is not None and i not in self.answered:
                self.report.unanswered.add(i)
        elif self.answered.add(i):
            self.report.errors.pop(i, None)
            self.report.unanswered.discard(i)
            self.report.acked += 1
            if self.keep_frames:
                self.report.detections[i] = obj.get("detections", [])
                self.report.decode_ms.append(_figure(obj.get("decode_ms")))
                # m2_ms is the batch's M2 time: a frame's share is that over the batch's frames.
                batch = max(1, int(_figure(obj.get("batch"), 1)))
                self.report.m2_ms.append(_figure(obj.get("m2_ms")) / batch)
                if entry is not None:
                    self.report.latency_ms[i] = (time.perf_counter() - entry) * 1000

    # ------------------------------------------------------------------ frames

    def _emit(self, packets) -> None:
        for p in packets:
            raw = p.to_bytes()
            if self.tamper is not None:
                raw = self.tamper(p.index, raw)
            data = P.packet_at(raw, *self.times.get(p.index, (None, None)))
            self._send(data)
            self.report.bytes += len(p)
            self.report.packets += 1
            if self.keep_frames:
                self.report.kinds[p.index] = p.kind
                self.report.tensor_bytes.append(list(p.tensor_bytes))
                self.report.packets_sent.append((p.index, len(p)))
            if self.fault is not None:
                self.fault(p.index, self.chan)

    def _push(self, index: int, codes) -> None:
        t0 = time.perf_counter()
        packets = self.encoder.push(codes)
        if self.keep_frames:
            self.report.encode_ms.append((time.perf_counter() - t0) * 1000)
        self._emit(packets)

    def _recover(self) -> None:
        """Reconnect, then resend every unacknowledged frame from a fresh KEY anchor."""
        from temposplit.codec.encoder import Encoder

        self.report.reconnects += 1
        self.fruitless += 1
        if self.fruitless > self.reconnect_attempts:  # each connection accepted, then lost before any answer
            raise TemposplitError(
                f"the server at {P.hostport(*self.address[:2])} lost {self.fruitless - 1} connections in a row "
                "before answering a frame: giving up"
            )
        self.log("connection lost; reconnecting")
        if self.fruitless > 1:  # the back-off of a failed connect, between connections that fail once made
            self._wait(reconnect_delay(self.fruitless - 2), P.hostport(*self.address[:2]))
        # Frames are numbered by the encoder in order: resend every kept frame from the
        # oldest unacknowledged one (the server acknowledges those it has as duplicates).
        first = min([i for i in self.pending if i in self.history], default=self.next_index)
        for i in [i for i in self.pending if i < first]:
            self.pending.pop(i)
            self.report.errors[i] = "lost with the connection (older than the resend window)"
        # A fresh encoder (a KEY anchor at ``first``) on the same engine: the fabric back end's
        # accelerator stays open (a new one was a second simulator, or the overlay downloaded
        # again, on every reconnect); the engine tracks what its RAMs hold itself.
        self.encoder = Encoder(self.config, first_index=first, engine=self.encoder.engine)
        if self.total:
            self.encoder.set_total_frames(self.total)
        self._connect(resume=True)
        for i in range(first, self.next_index):
            self._push(i, self.history[i])

    def _guarded(self, fn, *args) -> None:
        """Run ``fn`` (which must be safe to repeat after a recovery), recovering from drops."""
        for _ in range(self.reconnect_attempts + 1):
            try:
                fn(*args)
                return
            except P.ConnectionClosed:
                self._recover_loop()
        raise TemposplitError("the connection keeps failing")

    def _recover_loop(self) -> None:
        for _ in range(self.reconnect_attempts):
            try:
                self._recover()
                return
            except P.ConnectionClosed:
                continue
        raise TemposplitError("the connection keeps failing")

    def run(
        self, frames: Iterable[np.ndarray], video: dict | None = None, total: int | None = None, positions: bool = True
    ) -> EdgeReport:
        """Stream ``frames`` (RGB uint8) to the server; returns the report once the server
        has answered for every frame. ``positions``: frame i of ``frames`` is the stream's
        frame i (a file; a resumed stream skips the frames before the server's next one),
        else (a camera) a resumed stream numbers the frames on from there."""
        from temposplit.codec.encoder import CodecConfig, Encoder

        # What would fail only once connected (a socket timeout, the header's rate field) fails here.
        check_host(self.address[0])
        check_timeout(self.timeout, "the answer timeout")
        if "fps" in self.codec:
            check_fps(self.codec["fps"], "the stream's rate")
        self.total = total
        self.next_index = 0
        self.positions = positions
        it = iter(frames)
        first = self._take(it)
        if first is None:
            raise TemposplitError("the video has no frames")
        sample = self.model.m1([first])[0]
        specs = self.model.tensor_specs(sample, self.codec.pop("block", None))
        self.config = CodecConfig(
            tensors=specs,
            model_id=self.model.model,
            cut_id=self.model.cut.name,
            model_hash=self.model.model_hash(sample),
            **self.codec,
        )
        # The software encoder checks the settings and gives the stream header now; the back end's
        # own is made once the server has accepted the stream (_start_encoder): a fabric back end
        # takes seconds (the board's overlay) to minutes (the RTL's Verilator build), which an
        # unreachable or refusing server must not wait for.
        self.encoder = Encoder(self.config)
        self.header = self.encoder.header_bytes()
        if total:
            self.encoder.set_total_frames(total)  # a count the encoder refuses, refused before connecting
        if self.resume_state is not None:
            self.resume_state.acquire()
        try:
            return self._stream(first, it, sample, video, total, positions)
        finally:  # the fabric back ends hold a simulator process or the board's DMA buffers
            self.encoder.close()
            if self.resume_state is not None:
                self.resume_state.release()

    def _stream(self, first, it, sample, video: dict | None, total: int | None, positions: bool) -> EdgeReport:
        h, w = first.shape[:2]
        self.hello_info = {
            "protocol": P.PROTOCOL_VERSION,
            "stream": self.stream,
            "frame_size": [h, w],
            **(video or {}),
        }
        capture = time.perf_counter()
        start = self._open()
        # A full stream resumed (its END never completed: the edge killed after its last frame)
        # sends no frame: it is ended now, and a camera goes on in a new stream with the picture
        # taken (stream_on), as at the end of the loop below.
        full = start >= P.MAX_FRAMES
        if start and positions:  # the file's frames before the server's next one are recorded
            for _ in range(start - 1):
                if next(it, None) is None:
                    break
            frame = self._take(it)
            if frame is not None and full:
                self.next_index, self.report.full = start, True
            elif frame is not None:
                capture = time.perf_counter()
                self._frame(start, self.model.m1([frame])[0], capture)
            else:
                self.next_index = start
        elif full:
            self.next_index, self.report.full, self.left_over = start, True, first
        else:  # a new stream's frame 0, or a camera's frame numbered on from the resumed stream's
            self._frame(start, sample, capture)
        broken = None
        while not self.report.full:
            if self.stop is not None:  # asked to stop (SIGINT, SIGTERM): end the stream as a broken source does
                broken = TemposplitError(self.stop)
                break
            if self.next_index >= P.MAX_FRAMES:  # the stream is full (6.5 days at 30 frames/s): ended here
                try:
                    self.left_over = next(it, None)  # the next stream's first frame (a camera goes on in one)
                except TemposplitError as exc:
                    broken = exc
                    break
                self.report.full = self.left_over is not None
                break
            try:
                frame = self._take(it)
            except TemposplitError as exc:  # the source stops part way (a damaged file): end with what was sent
                broken = exc
                break
            if frame is None:
                if self.stop is not None:  # the source interrupted by the signal (Source.interrupt)
                    broken = TemposplitError(self.stop)
                break
            capture = time.perf_counter()
            cut = self.model.m1([frame])[0]
            self._frame(self.next_index, cut, capture)
        self.ending = True
        self.report.frames = self.next_index
        self.report.m1_ms = list(self.model.m1_ms)
        self._guarded(lambda: self._emit(self.encoder.flush()))
        self._finish()
        if self.resume_state is not None:
            self.resume_state.clear()  # finished: a rerun starts a new stream
        if broken is not None:
            summary = self.report.summary or {}
            kept = summary.get("decoded")  # the count; its ranges may be cut (docs/protocol.md, "End of stream")
            if not isinstance(kept, int):
                kept = len(P.from_ranges(summary.get("recorded", [])))
            raise TemposplitError(
                f"{broken}; the stream {self.stream!r} was ended there: {kept} of its {self.next_index} frame(s) "
                "recorded by the server"
            ) from broken
        return self.report

    def _open(self) -> int:
        """Connect: resume the stream whose token the resume state kept (a rerun after this
        edge stopped), else open a new one and keep its token; then start the encoder on the
        back end. Returns the stream's first frame for this run: 0, or the first the server
        has no record of."""
        import hashlib

        rs = self.resume_state
        header = hashlib.sha256(self.header).hexdigest()
        saved = rs.read() if rs is not None else None
        resumed = False
        if saved is not None:
            again = (
                "rerun with them to resume it, name another --stream, or remove the resume state to give it up "
                "(the server lets a new stream take the name once the old one has been idle for its resume window)"
            )
            if saved["header_sha256"] != header:
                raise ConfigError(
                    f"stream {self.stream!r} was left unfinished with other settings (model, cut or codec): "
                    f"{again} (its resume state: {rs.path})"
                )
            if saved["source"] != self.source_id:
                raise ConfigError(
                    f"stream {self.stream!r} was left unfinished reading {saved['source']}: "
                    f"{again} (its resume state: {rs.path})"
                )
            self.token = saved["token"]
            try:
                self._connect(resume=True)
                resumed = True
            except Refusal as exc:
                if not exc.gone:
                    raise
                rs.clear()  # finished, or not known to the server: a new stream
                self.token = None
        start = 0
        if resumed:
            start = int(self.welcome.get("next_frame", 0))
            if not self.positions:
                # A camera's pictures are new: numbered past every recorded index, where a hole
                # (a frame lost before the edge stopped) put next_frame below some of them.
                ranges = self.welcome.get("recorded") or []
                start = max([start, *(int(end) for _, end in ranges)])
            self.log(f"resumed stream {self.stream!r} at frame {start}")
            if start and self.total and not self.positions:  # a camera's count: this run's frames, numbered on
                self.total += start
        else:
            self._connect(resume=False)
            if rs is not None and self.token:
                rs.save(self.token, header, self.source_id)
        self._start_encoder(start)
        return start

    def _start_encoder(self, first: int) -> None:
        """The back end's encoder, its first frame ``first``, made once the server has accepted
        the stream. Where it cannot start (no overlay, a simulator that fails) the connection
        is closed: the stream stays unfinished on the server, for a rerun to resume."""
        if self.backend != "golden" or first:
            try:
                encoder = make_encoder(self.backend, self.config, first_index=first)
            except BaseException:
                self.chan.close()  # (a shutdown first: the receiving thread's recv() holds the socket)
                raise
            self.encoder.close()
            self.encoder = encoder
        if self.total:
            self.encoder.set_total_frames(self.total)

    def _take(self, it):
        """The source's next frame (None at its end), its times kept in ``taken``: a
        :class:`~temposplit.host.sources.Stamped` frame's own, else those its position gives
        (a file: frame / fps) or, for a live source, the clock now."""
        from temposplit.host.sources import Stamped

        item = next(it, None)
        if isinstance(item, Stamped):
            self.taken = (item.time, item.utc)
            item = item.picture
        else:
            self.taken = (None, None) if self.positions else (None, time.time())
        if item is not None and not isinstance(item, np.ndarray) and hasattr(item, "__array_interface__"):
            item = np.asarray(item)  # a Pillow image, as the models take it (their check_frames)
        return item

    def _stamp(self, index: int) -> tuple:
        """Frame ``index``'s (time_us, utc_us) as PACKET_AT carries them (docs/protocol.md, "Frame times")."""
        when, utc = (_microseconds(v, name) for v, name in zip(self.taken, ("time", "utc"), strict=True))
        if when is None and utc is None:  # a file without times of its own: its position at the stream's rate
            when = round(index / self.config.fps * 1e6)
        return when, utc

    def _frame(self, index: int, cut, capture: float) -> None:
        codes = [t.codes for t in cut]
        self.pending[index] = capture
        self.history[index] = codes
        self.times[index] = self._stamp(index)
        while len(self.history) > 2 * self.window:
            self.history.popitem(last=False)
        while len(self.times) > 2 * self.window:
            self.times.popitem(last=False)
        self.next_index = index + 1
        try:
            self._push(index, codes)
        except P.ConnectionClosed:
            self._recover_loop()  # a new encoder resends every kept frame, this one included
        while True:  # take what has arrived; wait while the window is full
            full = len(self.pending) > self.window
            try:
                handled = self._handle(block=full, timeout=self.timeout)
                if not handled and full:  # the server silent for the answer timeout, as the receiver's Silent
                    self._silent()
            except P.ConnectionClosed:
                self._recover_loop()
                continue
            if not handled:
                break
        if not self.keep_frames:  # the per-frame statistics of the model and the encoder: the last kept
            del self.model.m1_ms[:-1]
            del self.encoder.frames[:-1]
        if self.progress:
            self.progress(index + 1, self.report)

    def _finish(self) -> None:
        """Wait for the last answers while they keep coming (10 s of silence at most), then
        END; the server answers with a SUMMARY after recording every frame it never got as
        an error. A busy server is waited for as long as it keeps answering."""
        quiet = time.monotonic()
        while self.pending and time.monotonic() - quiet < min(self.timeout, 10.0):
            try:
                if self._handle(block=True, timeout=0.2):
                    quiet = time.monotonic()
            except P.ConnectionClosed:
                self._recover_loop()
        end = P.control(P.END, {"frames": self.report.frames})
        self._guarded(self._send, end)
        quiet = time.monotonic()
        while self.report.summary is None:
            try:
                if self._handle(block=True, timeout=0.5):
                    quiet = time.monotonic()
                elif time.monotonic() - quiet > self.timeout:
                    raise TemposplitError(f"the server did not confirm the end of the stream ({self.timeout:g} s)")
            except P.ConnectionClosed:
                if self.report.summary is not None:
                    break
                try:
                    self._recover_loop()
                except Refusal as exc:
                    if not exc.gone:
                        raise
                    # END went out and the resume finds no stream: the server finished it and
                    # the SUMMARY was lost with the connection (or its outputs were removed).
                    # Nothing is left to resume: the kept token goes, and the line says so.
                    if self.resume_state is not None:
                        self.resume_state.clear()
                    raise TemposplitError(
                        f"the connection closed after END and the server no longer has stream "
                        f"{self.stream!r} to resume: it has finished it (its SUMMARY was lost with the "
                        "connection; its detections.jsonl has every frame's record), or its outputs "
                        "were removed"
                    ) from None
                self._guarded(self._send, end)
        self._reconcile(self.report.summary)
        if self.chan is not None:
            self.chan.close()

    def _reconcile(self, summary: dict) -> None:
        """The server's record is the truth: a frame is an error exactly when the server
        recorded it as one (or has no record of it), whatever this edge saw. A SUMMARY whose
        ranges were cut (``ranges_cut``: a long stream with many error frames) names the
        frames below ``ranges_below``; past it, the errors are those this edge saw (the
        server's ``errors`` counts them all; its detections.jsonl has every record)."""
        try:
            failed = P.from_ranges(summary.get("failed", []))
            recorded = P.from_ranges(summary.get("recorded", []))
            below = summary.get("ranges_below") if summary.get("ranges_cut") is True else self.report.frames
            if not isinstance(below, int) or isinstance(below, bool) or below < 0:
                raise P.ProtocolError(f"its ranges_below is {below!r}, not a frame count")
        except P.ProtocolError as exc:
            raise TemposplitError(f"the server's SUMMARY is malformed: {exc}") from exc
        below = min(below, self.report.frames)
        errors = {i: why for i, why in self.report.errors.items() if i >= below}
        for i in self.pending:  # past the ranges' cut, a frame never answered has no record either
            if i >= below:
                errors.setdefault(i, "no record on the server")
        # As ranges: a day of a camera is millions of frames (a set of them, 150 MB on the board).
        for i in itertools.chain(failed, recorded.missing(below, failed)):
            errors[i] = self.report.errors.get(i) or (
                "recorded as an error by the server" if i in failed else "no record on the server"
            )
        for i in self.pending:  # recorded, their ACK lost with a connection (END's SUMMARY came)
            if i < below and i in recorded:
                self.report.unanswered.add(i)
        for i in [i for i in self.report.unanswered if i in errors]:  # (few: those in flight at a cut)
            self.report.unanswered.discard(i)
        self.report.errors = dict(sorted(errors.items()))
        self.pending.clear()
