"""The cloud server: many edge streams at once on one asyncio event loop; M2 batched.

docs/protocol.md is the design: why asyncio streams, the limits, the timeouts, how a
stream is bound to its client, and what survives a restart. The event loop reads and
writes every socket; frames go to one worker thread per device (server/worker.py);
sessions (server/session.py) outlive a dropped connection, so an edge that reconnects
with its token goes on where it was, even on a restarted server. Every frame index gets
a detections record or an explicit error record; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import shutil
import signal
import socket
import ssl
import struct
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from temposplit import protocol as P
from temposplit.codec.bitstream import PACKET_OVERHEAD, StreamHeader
from temposplit.codec.errors import BitstreamError
from temposplit.errors import ConfigError, TemposplitError
from temposplit.server.proxy_header import V1_PREFIX, V2_SIGNATURE, read_proxy_header
from temposplit.server.session import Session, Source, digest
from temposplit.server.text import MAX_SHOWN, Throttle, one_line, shown
from temposplit.server.worker import Item, Worker, never_ends

INFLIGHT = 64  # frames of one connection queued or not yet answered
CONNECTIONS_PER_CLIENT = 32  # open connections from one client address (0: no limit)
STREAMS_PER_CLIENT = 16  # attached streams of one client: its certificate's subject, else its address
NEW_STREAMS_PER_CLIENT = 60  # new streams (output folders) of one client per NEW_STREAMS_WINDOW (0: no limit)
NEW_STREAMS_WINDOW = 60.0  # seconds
PEER_LINES = 5  # a client address's connection error lines logged in 10 s at most (Throttle)
ACCEPT_RETRY = 1.0  # seconds before accept() is tried again after it failed (EMFILE and the like)
CLOSE_TIMEOUT = 5.0  # seconds a closing socket may take to flush what is queued for it; then it is reset
# A stop's bounds, one after the other (its unit's TimeoutStopSec= exceeds their sum):
CONNECTIONS_DRAIN = 10.0  # seconds the stop waits for the connections' tasks once cancelled
HELLO_DRAIN = 70.0  # seconds the stop waits for HELLOs in their threads (reading a resumed stream's files)
CLOSING_WAIT = 60.0  # seconds a HELLO waits for its stream's session to close its files (on the event loop)
WORK_DRAIN = 120.0  # seconds each worker has to answer what is queued and close the sessions' files


class Refused(TemposplitError):
    """A HELLO the server answers with ERROR; ``retry``: the same HELLO may succeed later
    (the ERROR says so with ``"retry": true``)."""

    def __init__(self, message: str, retry: bool = False, gone: bool = False):
        super().__init__(message)
        self.retry = retry
        self.gone = gone  # a resume of a stream finished or unknown here: the edge may start a new one


@dataclass(eq=False)
class Hello:
    """A HELLO's checked fields, and what the table said of its name (``CloudServer._claim``)."""

    name: str
    info: dict
    header: StreamHeader
    resume: bool
    token: object
    identity: str | None
    done: tuple | None = None  # the answer at once: a stream resumed in memory, and its WELCOME
    waiting: Session | None = None  # a session whose files close before the name is taken (or resumed)
    detached: Session | None = None  # a detached session a new stream takes (CloudServer._take_idle)
    idle: float | None = None  # how long that session's files had been idle
    unused: bool = False  # nothing arrived after that session's HELLO


class Connection:
    """One socket: a reader (this object's ``run``) and a writer task; answers from the
    worker thread come in through ``post`` and ``fail``, which any thread may call."""

    def __init__(self, server: CloudServer, reader, writer, client: str, accepted: float | None = None):
        self.server, self.reader, self.writer = server, reader, writer
        self.loop = server.loop
        self.peer = client  # the client's address: the socket's peer, or what the PROXY header named
        self.client = client  # whom the per-client stream limit counts: the TLS subject once known, else this
        self.inflight = asyncio.Semaphore(INFLIGHT)
        self.unanswered = 0  # frames queued or not yet answered
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.broken = False  # set (from any thread) when the connection must stop
        self.session: Session | None = None
        self.task: asyncio.Task | None = None
        self.stalled = False  # a write timed out
        # The socket's accept (after its PROXY header): the HELLO's clock, the TLS handshake
        # included. ``accepted`` is when CloudServer._serve took it; this object is made after
        # the look at its first bytes (with TLS, up to the handshake timeout), too late a start.
        self.started = self.loop.time() if accepted is None else accepted
        self.handshake_by: float | None = None  # when the TLS handshake must be done (the loop's clock)
        self.version = P.PROTOCOL_VERSION  # the protocol version its HELLO named (P.SUPPORTED_VERSIONS)

    # ------------------------------------------------------------------ from any thread

    def post(self, data: bytes | None, release: bool = True, close_after: bool = False) -> None:
        """Send ``data`` (None: nothing) and, with ``release``, free the frame's slot."""
        try:
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, (data, release, close_after))
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    def fail(self, message: str, retry: bool = False, gone: bool = False) -> None:
        """Answer ERROR and close; what this connection still has queued is dropped."""
        self.broken = True
        message = one_line(message)  # never a client's text at full length (a reader that never reads)
        obj = {"message": message, "retry": True} if retry else {"message": message}
        if gone:
            obj["gone"] = True
        self.post(P.control(P.ERROR, obj), release=False, close_after=True)

    # ------------------------------------------------------------------ the event loop

    async def recv(
        self,
        limits: dict[int, int],
        timeout: float,
        idle_ok: bool = False,
        deadline: float | None = None,
    ) -> P.Message:
        """The next message. Its first byte within ``timeout`` (for ever, with ``idle_ok``,
        while this connection's frames are unanswered), then the rest of it within
        ``timeout`` of that byte; with ``deadline`` (the loop's clock), the whole message by
        then instead (the HELLO). ``limits``: the largest body per message type (others: 0),
        checked from the head, before any body byte is read; a type not in ``limits`` is refused there."""
        loop = self.loop
        end = deadline if deadline is not None else loop.time() + timeout
        try:
            while True:
                try:
                    first = await _within(self.reader.readexactly(1), end - loop.time())
                    break
                except TimeoutError:
                    # Silence is fine while this connection's frames are still being answered.
                    if deadline is None and idle_ok and self.unanswered > 0:
                        end = loop.time() + timeout
                        continue
                    silent = P.ProtocolError(f"nothing received for {timeout:g} s")
                    # An edge silent after WELCOME (a back end minutes to start, a camera that
                    # stalled) may resume: its session detaches, and the ERROR says retry.
                    silent.retry = deadline is None and self.session is not None
                    raise silent from None
            if self.session is not None:  # its edge had the WELCOME: the name is no longer free to a new HELLO
                self.session.used = True
            if deadline is None:
                end = loop.time() + timeout
            head = first + await _within(self.reader.readexactly(P.HEAD_SIZE - 1), end - loop.time())
            if deadline is not None and head[0] not in P.NAMES and _proxy_header_start(head):
                raise P.ProtocolError(PROXY_WITHOUT_FLAG)
            if head[0] in P.NAMES and head[0] not in limits:  # refused from the head, its body unread
                wanted = " or ".join(P.NAMES[t] for t in limits)
                raise P.ProtocolError(f"expected {wanted}, got {P.NAMES[head[0]]}")
            mtype, length = P.unpack_head(head, limits.get(head[0], 0))
            body = b""
            if length:
                body = await _within(self.reader.readexactly(length), end - loop.time())
        except TimeoutError:
            since = "of connecting" if deadline is not None else "of its first byte"
            raise P.ProtocolError(f"a message stalled: not complete within {timeout:g} s {since}") from None
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            raise P.ConnectionClosed("the peer closed the connection") from exc
        return P.Message(mtype, body)

    async def write_loop(self) -> None:
        srv = self.server
        while True:
            data, release, close_after = await self.outbox.get()
            if data is not None:
                self.writer.write(data)
                try:
                    await _within(self.writer.drain(), srv.write_timeout)
                except (TimeoutError, OSError, ConnectionError) as exc:
                    self.broken = True
                    self.stalled = True  # what is queued will not be read: reset, do not wait for it
                    where = f"[{self.session.name}]" if self.session is not None else f"connection from {self.peer}"
                    if isinstance(exc, TimeoutError):
                        why = f"takes no reply for {srv.write_timeout:g} s: connection reset"
                        srv.peer_error(self.peer, f"{where} {why}")
                    elif self.session is not None:  # the reader, cancelled below, would have said so
                        srv.log(f"{where} connection lost ({exc}); the stream waits for the edge to resume")
                    self.task.cancel()
                    return
            if release:
                self.unanswered -= 1
                self.inflight.release()
            if close_after:
                self.broken = True
                self.task.cancel()
                return

    async def run(self) -> None:
        srv = self.server
        writer_task = asyncio.ensure_future(self.write_loop())
        try:
            identity = await self._tls()
            if identity is not None:
                self.client = f"subject {identity}"
            hello_by = self.started + srv.hello_timeout  # the whole HELLO, counted from the accept
            msg = await self.recv({P.HELLO: P.MAX_HELLO}, srv.hello_timeout, deadline=hello_by)
            self.session, welcome = await srv.open_stream(msg, identity, self)
            self.post(P.control(P.WELCOME, welcome), release=False)
            s = self.session
            packet_limit = s.header.max_payload() + PACKET_OVERHEAD + P.PACKET_SLACK
            limits = {P.PACKET: packet_limit, P.SKIP: P.MAX_CONTROL, P.END: P.MAX_CONTROL}
            if self.version >= 3:
                limits[P.PACKET_AT] = packet_limit + P.TIMES_SIZE
            while not self.broken:
                msg = await self.recv(limits, srv.idle_timeout, idle_ok=True)
                if msg.type == P.PACKET:
                    item = Item("packet", s, self, msg.body)
                elif msg.type == P.PACKET_AT:
                    time_us, utc_us, body = P.split_packet_at(msg.body)
                    item = Item("packet", s, self, body, times=(time_us, utc_us))
                elif msg.type == P.SKIP:
                    obj = msg.json()
                    obj["frame"] = _frame_number(obj.get("frame"), "SKIP's frame")
                    item = Item("skip", s, self, obj=obj)
                elif msg.type == P.END:
                    obj = msg.json()
                    obj["frames"] = _frame_number(obj.get("frames"), "END's frames", P.MAX_FRAMES + 1)
                    item = Item("end", s, self, obj=obj)
                else:
                    raise P.ProtocolError(f"unexpected {msg.name} from the edge")
                await self.inflight.acquire()  # at most INFLIGHT frames per connection
                self.unanswered += 1
                if self.broken:
                    break
                if item.kind == "end":
                    s.ending = True  # queued: a resume from now on waits for the finish, never takes it over
                try:
                    await s.worker.put(item)  # a full queue waits here: backpressure
                except BaseException:  # cancelled while waiting for a slot (the connection broke): never queued
                    never_ends(item)
                    raise
                if item.kind == "end":
                    break
            await writer_task  # the SUMMARY (or an ERROR) is the last message
        except asyncio.CancelledError:
            pass
        except P.ConnectionClosed:
            if self.session is not None:
                srv.log(f"[{self.session.name}] connection lost; the stream waits for the edge to resume")
        except Exception as exc:  # a refusal, a broken protocol, or a bug: ERROR to the edge, never a crash
            where = f"[{self.session.name}]" if self.session is not None else f"connection from {self.peer}"
            known = (P.ProtocolError, TemposplitError, BitstreamError, ssl.SSLError, OSError, ValueError)
            why = str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
            srv.peer_error(self.peer, f"{where}: {why}")
            if not writer_task.done():
                self.fail(str(exc), getattr(exc, "retry", False), getattr(exc, "gone", False))
                try:
                    await asyncio.wait_for(asyncio.shield(writer_task), 2.0)
                except (TimeoutError, asyncio.CancelledError):
                    pass
        finally:
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
            srv.detach(self)
            await self._close()

    async def _close(self) -> None:
        """Close the socket, its descriptor freed within CLOSE_TIMEOUT: asyncio keeps a
        socket open until what is queued for it is flushed, which a peer that does not read
        never allows; so it is reset then (at once after a write timed out). The connection
        stays counted toward the limits until the socket is closed."""
        transport = self.writer.transport
        try:
            if self.stalled and transport.get_write_buffer_size() > 0:
                transport.abort()
            else:
                self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
            except TimeoutError:
                transport.abort()
                await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
        except asyncio.CancelledError:  # the server stops
            transport.abort()
            raise
        except Exception:  # the socket had failed: it is closed
            transport.abort()

    async def _tls(self) -> str | None:
        """The TLS handshake (bounded) and the client's identity: its certificate's subject."""
        srv = self.server
        if srv.tls is None:
            return None
        left = srv.handshake_timeout if self.handshake_by is None else self.handshake_by - self.loop.time()
        await self.writer.start_tls(srv.tls, ssl_handshake_timeout=max(0.001, left))
        obj = self.writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        if der is None:
            return None
        if srv.own_certificate is not None and der == srv.own_certificate:
            raise P.ProtocolError("the server's own certificate is not a client's")
        cert = obj.getpeercert() or {}
        return ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn) or digest(der)


async def _within(aw, seconds: float):
    """``await aw`` within ``seconds`` (TimeoutError past them), as ``asyncio.wait_for``,
    except that a cancellation that comes as ``aw`` completes is never lost: Python 3.11's
    wait_for then returns the result, so a connection's writer cancelled as its last drain
    ended (a client that closed at once after its WELCOME) went on waiting for more to write,
    and the connection, its slot and its attached stream, stayed until the server stopped."""
    async with asyncio.timeout(max(0.0, seconds)):
        return await aw


def _abort(sock: socket.socket) -> None:
    """Close at once with a reset: nothing is owed to a refused socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


PROXY_WITHOUT_FLAG = (
    "the connection starts with a PROXY protocol header, but the server was not started with --proxy-protocol"
)
TLS_HANDSHAKE_RECORD = 0x16  # the first byte of a TLS ClientHello


def _proxy_header_start(head: bytes) -> bool:
    """Whether a message head is the start of a PROXY protocol header (version 1's
    ``PROXY `` or version 2's signature): an L4 proxy in front sends one first."""
    return V1_PREFIX.startswith(head) or V2_SIGNATURE.startswith(head)


def _cannot_write(name: str, what: str, exc: OSError) -> Refused:
    """The refusal of a stream whose outputs the server cannot write: the system's reason
    (a full disk, a read-only folder), not the server's paths."""
    return Refused(f"the server cannot {what} the outputs of stream {name!r}: {exc.strerror or exc}")


def _close_cost(s: Session) -> int:
    """About what closing a session costs: the pictures its video still has to draw (those
    waiting in its reorder window; a run of lost frames is one or two)."""
    video = s.video
    return 0 if video is None else len(video.pending)


def _frame_number(value, what: str, limit: int = P.MAX_FRAMES) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise P.ProtocolError(f"{what} must be an integer in 0..{limit - 1}, not {shown(value)}")
    return value


class CloudServer:
    """The server on ``(host, port)`` (0: any free port), writing under ``out_dir``.

    ``start()`` serves from a background thread, ``serve_forever()`` from this one (and
    handles SIGTERM and SIGINT when it is the main thread); ``shutdown()`` stops
    accepting, drains the queues and closes every session's files.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        out_dir: str | Path = "out/server",
        models=None,
        tls: P.TLSConfig | None = None,
        local_video: bool = False,
        max_streams: int = 64,
        log=None,
        *,
        max_connections: int = 512,
        max_connections_per_client: int = CONNECTIONS_PER_CLIENT,
        max_streams_per_client: int = STREAMS_PER_CLIENT,
        max_new_streams_per_client: int = NEW_STREAMS_PER_CLIENT,
        proxy_protocol: bool = False,
        handshake_timeout: float = P.HANDSHAKE_TIMEOUT,
        hello_timeout: float = P.HELLO_TIMEOUT,
        idle_timeout: float = P.IDLE_TIMEOUT,
        write_timeout: float = P.WRITE_TIMEOUT,
        linger: float = P.LINGER,
        resume_window: float = P.RESUME_WINDOW,
        queue_size: int = 32,
        max_batch: int = 16,
        max_delay: float = 0.01,
        devices: tuple[str, ...] = ("cpu",),
        metrics: tuple[str, int] | None = None,
    ):
        from temposplit.server.m2 import CloudModels

        self.out_dir = Path(out_dir)
        self.models = models or CloudModels()
        self.tls = tls.server_context() if tls else None
        self.own_certificate = tls.own_certificate() if tls else None
        self.local_video = local_video
        self.max_streams = max_streams
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client  # 0: no limit
        self.max_streams_per_client = max_streams_per_client  # 0: no limit
        self.max_new_streams_per_client = max_new_streams_per_client  # per NEW_STREAMS_WINDOW; 0: no limit
        self.new_streams: dict[str, deque] = {}  # client -> when its recent new streams were made
        self.proxy_protocol = proxy_protocol  # every connection starts with a PROXY header
        self.per_client: dict[str, int] = {}  # open connections by client address
        self.accepting = 0  # sockets accepted, reading their PROXY header
        self.tasks: set[asyncio.Task] = set()  # one per accepted socket
        self.handshake_timeout, self.hello_timeout = handshake_timeout, hello_timeout
        self.idle_timeout, self.write_timeout, self.linger = idle_timeout, write_timeout, linger
        self.resume_window = resume_window
        out = log or (lambda msg: None)
        self.log = lambda msg: out(one_line(msg))  # one line each, never a client's text at length
        # (through self.log as it is when a line comes: a caller may replace it)
        self._refusals = Throttle(lambda m: self.log(m), "refused")  # the refusals at accept: a line every 10 s
        # A connection's error line (a junk head, a refused HELLO, a silent TLS socket), by its
        # client address: a few lines per address every 10 s at most, the next saying how many
        # were passed over.
        self.peer_error = Throttle(lambda m: self.log(m), "from this address", burst=PEER_LINES)
        self.sessions: dict[str, Session] = {}
        self.opening: dict[str, str] = {}  # stream names being opened -> the client opening each
        self.table = threading.Lock()  # the sessions table; held only for lookups and updates
        self.connections: set[Connection] = set()
        # An IPv6 address (``::1``; ``::`` also takes IPv4 where the system allows both on one
        # socket) listens on IPv6; anything else, a host name included, on IPv4 as before.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        both = family == socket.AF_INET6 and host == "::" and socket.has_dualstack_ipv6()
        try:
            self.sock = socket.create_server((host, port), family=family, backlog=1024, dualstack_ipv6=both)
        except OSError as exc:  # the port taken, the address not this machine's: the caller's to fix
            raise ConfigError(f"cannot listen on {P.hostport(host, port)}: {exc.strerror or exc}") from None
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.retired: dict[str, int] = {}  # the counts of the sessions dropped from memory (server/metrics.py)
        self.metrics = None  # the metrics endpoint (serve --metrics-port), bound now: a port in use fails here
        if metrics is not None:
            from temposplit.server.metrics import MetricsEndpoint

            try:
                self.metrics = MetricsEndpoint(self, *metrics, tls=self.tls)
            except ConfigError:
                self.sock.close()
                raise
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="temposplit-hello")
        self.workers = [
            Worker(self.models, self.log, self._closed, d, queue_size, max_batch, max_delay) for d in devices
        ]
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:
            self.log(f"the server stopped: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.loop.close()
            self.pool.shutdown(wait=False)
            self._done.set()

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="temposplit-server")
        self._thread.start()
        self._started.wait(30)
        return self._thread

    def request_stop(self) -> None:
        """Stop serving (from any thread, or a signal handler)."""
        self._started.wait(30)
        if self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass

    def shutdown(self, timeout: float = 120.0) -> None:
        """Stop accepting, end the connections, answer what is queued, close every session's files."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        earlier = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                earlier[sig] = signal.getsignal(sig)
                self.loop.add_signal_handler(sig, self._stop.set)
        for w in self.workers:
            w.start(self.loop)
        acceptor = asyncio.ensure_future(self._accept_loop())
        expiry = asyncio.ensure_future(self._expire_loop())
        metrics = asyncio.ensure_future(self.metrics.serve()) if self.metrics is not None else None
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            self.log("stopping: finishing every session's files")
            expiry.cancel()
            acceptor.cancel()
            if metrics is not None:
                metrics.cancel()
            self.sock.close()
            tasks = list(self.tasks)  # every accepted socket's: connected, or still reading its PROXY header
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=CONNECTIONS_DRAIN)
            # A HELLO still in its thread (a resume reading its files) puts its session in the
            # table when it ends, after its task was cancelled: waited for (those not begun are
            # dropped), so that its files are closed with the others.
            hellos = self.loop.run_in_executor(None, lambda: self.pool.shutdown(wait=True, cancel_futures=True))
            await asyncio.wait([hellos], timeout=HELLO_DRAIN)
            with self.table:
                live = [s for s in self.sessions.values() if not s.closing]
                for s in live:
                    s.closing = True
                every = list(self.sessions.values())
            for s in sorted(live, key=_close_cost):  # the cheapest first: a costly close holds none of the others
                await s.worker.put(Item("close", s))
            for w in self.workers:
                await self.loop.run_in_executor(None, w.stop, WORK_DRAIN)
            unclosed = [s.name for s in every if not s.closed.is_set()]
            if unclosed:
                more = f" and {len(unclosed) - 5} more" if len(unclosed) > 5 else ""
                shown_names = ", ".join(unclosed[:5]) + more
                self.log(
                    f"stopping: {len(unclosed)} session(s) left with their files unclosed after {WORK_DRAIN:g} s "
                    f"(their log not synced, their video unfinished): {shown_names}"
                )
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            for sig, handler in earlier.items():  # asyncio's removal leaves SIG_DFL: the caller's goes back
                self.loop.remove_signal_handler(sig)
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _loop_error(self, loop, context) -> None:
        exc = context.get("exception")
        self.log(f"server: {context.get('message')}{f': {exc}' if exc else ''}")

    async def _accept_loop(self) -> None:
        """Accept for ever: a failing accept() (EMFILE and the like) is logged and tried
        again after a pause; each socket is served by its own task."""
        while True:
            try:
                sock, address = await self.loop.sock_accept(self.sock)
            except OSError as exc:
                self.log(f"server: accept() failed: {exc}; trying again in {ACCEPT_RETRY:g} s")
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            if self.accepting + sum(self.per_client.values()) >= self.max_connections:  # every socket held
                self._refuse(sock, f"{self.max_connections} connections are open")
                continue
            self.accepting += 1
            task = asyncio.ensure_future(self._serve(sock, str(address[0])))
            self.tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, sock: socket.socket, peer: str) -> None:
        """One accepted socket: its PROXY header (with ``--proxy-protocol``), the per-client
        connection limit, then (with TLS) a look at its first bytes and the handshake, then
        the connection until it ends. The socket counts toward its client's limit from its
        PROXY header on (from its accept without one), before the look and the handshake
        (each up to the handshake timeout): counted after them, one address's silent sockets
        took every one of the server's connection slots."""
        try:
            sock.setblocking(False)
            client = peer
            if self.proxy_protocol:
                try:
                    named = await _within(read_proxy_header(self._recv_exactly(sock)), self.handshake_timeout)
                except (P.ConnectionClosed, ConnectionResetError):  # gone, as a proxy's TCP health check goes
                    _abort(sock)
                    return
                except (P.ProtocolError, OSError, TimeoutError) as exc:
                    why = "no PROXY header within the timeout" if isinstance(exc, TimeoutError) else exc
                    self.peer_error(peer, f"connection from {peer}: {why}")
                    _abort(sock)
                    return
                client = named or peer
            accepted = self.loop.time()  # the HELLO's clock starts here, before the TLS look and handshake
            limit = self.max_connections_per_client
            if limit and self.per_client.get(client, 0) >= limit:
                self._refuse(sock, f"{limit} connections are open from {client} (--max-connections-per-client)")
                return
        except BaseException:
            _abort(sock)
            raise
        finally:
            self.accepting -= 1
        self.per_client[client] = self.per_client.get(client, 0) + 1  # counted before any await: no race
        try:
            try:
                handshake_by = await self._look(sock, client) if self.tls is not None else None
                if self.tls is not None and handshake_by is None:  # closed
                    return
                reader, writer = await self._streams(sock)
            except BaseException:
                _abort(sock)
                raise
            conn = Connection(self, reader, writer, client, accepted)
            conn.handshake_by = handshake_by
            conn.task = asyncio.current_task()
            self.connections.add(conn)
            try:
                await conn.run()
            finally:
                self.connections.discard(conn)
        finally:
            left = self.per_client.pop(client) - 1
            if left:
                self.per_client[client] = left

    async def _look(self, sock: socket.socket, client: str) -> float | None:
        """With TLS, a look at the socket's first bytes before the handshake: when the
        handshake must be done (the look and it within the handshake timeout), or None
        where the socket is closed (silent, gone, or a PROXY header without the flag)."""
        handshake_by = self.loop.time() + self.handshake_timeout
        try:
            first = await _within(self._peek(sock), self.handshake_timeout)
        except TimeoutError:
            self.peer_error(client, f"connection from {client}: no TLS handshake within {self.handshake_timeout:g} s")
            sock.close()  # closed, as the handshake's own timeout closes it (not reset)
            return None
        except OSError:  # reset before a byte: gone, as a TCP health check goes
            _abort(sock)
            return None
        if not first:  # closed before a byte (a proxy's health check after its PROXY header): not logged
            sock.close()
            return None
        # Without --proxy-protocol, a PROXY header would meet the handshake: "wrong version number".
        if not self.proxy_protocol and first[0] != TLS_HANDSHAKE_RECORD and _proxy_header_start(first[: P.HEAD_SIZE]):
            self.peer_error(client, f"connection from {client}: {PROXY_WITHOUT_FLAG}")
            _abort(sock)
            return None
        return handshake_by

    async def _streams(self, sock: socket.socket):
        """The socket as asyncio streams, server side (as ``asyncio.start_server`` makes
        them: a protocol with a connected callback, so that ``start_tls`` is the server's)."""
        reader = asyncio.StreamReader(limit=1 << 16, loop=self.loop)
        made = self.loop.create_future()
        protocol = asyncio.StreamReaderProtocol(reader, lambda r, w: made.set_result(w), loop=self.loop)
        await self.loop.connect_accepted_socket(lambda: protocol, sock)
        return reader, await made

    async def _peek(self, sock: socket.socket, n: int = 16) -> bytes:
        """The first bytes the peer sent, left in the socket (b"" when it closed)."""
        readable = self.loop.create_future()
        self.loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            self.loop.remove_reader(sock.fileno())
        return sock.recv(n, socket.MSG_PEEK)

    def _recv_exactly(self, sock: socket.socket):
        async def recv(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = await self.loop.sock_recv(sock, n - len(data))
                if not chunk:
                    raise P.ConnectionClosed("the peer closed the connection before its PROXY header ended")
                data += chunk
            return data

        return recv

    def _refuse(self, sock: socket.socket, why: str) -> None:
        """Close a socket at accept; logged at most every 10 s with the count since."""
        _abort(sock)
        self._refusals(None, f"server: a connection refused at accept: {why}")

    # ------------------------------------------------------------------ sessions

    async def open_stream(self, msg: P.Message, identity: str | None, conn: Connection) -> tuple[Session, dict]:
        """A HELLO: its checks and the table (``_claim``, in a pool thread), a wait for a
        session still closing its files (on this loop: in a pool thread, one client's resumes
        of a stream whose END was never queued held both threads a minute each, every HELLO
        waiting behind them), then a new, resumed or reloaded session (``_open_files``, in a
        pool thread). The table lock is held only to look up and reserve the name, never for
        I/O. Cancelled (the server stops) while it waits, it gives back the name it reserved."""
        hello = await self.loop.run_in_executor(self.pool, self._claim, msg, identity, conn)
        if hello.done is not None:
            return hello.done
        name, reserved = hello.name, hello.detached is None  # reserved: the name is in self.opening for it
        try:
            if hello.detached is not None:
                if not await self._expire_for(name, hello.detached, conn):
                    raise Refused(f"stream {name!r} is being resumed or closed; try again", retry=True)
                reserved = True
                if hello.unused:
                    why = "nothing arrived after its HELLO (its WELCOME lost?); the same edge asks again"
                else:
                    why = f"idle for {hello.idle:.0f} s, past the resume window; a new stream takes the name"
                self.log(f"[{name}] expired: {why}")
            # An expiring or ending session: resume it from its files once they are closed,
            # never beside it. An END that will not run after all (its connection broke before
            # the worker came to it) clears ``ending``: the edge tries again at once and takes
            # the stream over, rather than waiting for a finish that never comes.
            waiting = hello.waiting or hello.detached
            if waiting is not None:
                deadline = self.loop.time() + CLOSING_WAIT
                while not waiting.closed.is_set():
                    if not (waiting.closing or waiting.ending):
                        raise Refused(f"stream {name!r} was not ended after all; try again", retry=True)
                    if self.loop.time() > deadline:
                        raise Refused(f"stream {name!r} is still closing its files; try again", retry=True)
                    await asyncio.sleep(0.05)
            opened = self.loop.run_in_executor(self.pool, self._open_files, hello, conn)
            reserved = False  # _open_files gives the name back
        finally:
            if reserved:
                with self.table:
                    self.opening.pop(name, None)
        return await opened

    def _claim(self, msg: P.Message, identity: str | None, conn: Connection) -> Hello:
        """A HELLO's checks, and what the table says of its name (in a pool thread): a stream
        resumed in memory is answered at once (``done``); else the name is reserved for it
        (``opening``), after a session closing its files (``waiting``), or not yet, where it
        names a detached session that it may take (``detached``: ``_take_idle``)."""
        info = msg.json()
        version = info.get("protocol")
        if type(version) is not int or version not in P.SUPPORTED_VERSIONS:  # not True, not 3.0
            supported = " or ".join(map(str, P.SUPPORTED_VERSIONS))
            raise Refused(f"protocol version {shown(version)} is not supported ({supported})")
        conn.version = version
        name = info.get("stream")
        if not isinstance(name, str) or not P.STREAM_NAME.fullmatch(name):
            raise Refused(f"invalid stream name {shown(name)}")
        size = info.get("frame_size")
        lo, hi = P.FRAME_SIDE
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in size)
        ):
            raise Refused(f"frame_size must be [H, W] with integers in {lo}..{hi}, not {shown(size)}")
        resume = info.get("resume") is True
        token = info.get("token")
        if resume and not isinstance(token, str):
            raise Refused("a resume needs the stream's token")
        header = StreamHeader.from_bytes(msg.stream_header())
        if not 0 < header.fps <= P.MAX_FPS:
            raise Refused(f"the stream's fps {header.fps:g} is outside (0, {P.MAX_FPS:g}]")

        hello = Hello(name, info, header, resume, token, identity)
        resumed = taken_from = None
        with self.table:
            s = self.sessions.get(name)
            if name in self.opening:  # a resume may be the owner's again, its first try still waiting
                if resume:
                    raise Refused(f"stream {name!r} is being opened by another connection; try again", retry=True)
                raise Refused(f"stream {name!r} is in use")
            if s is not None and not s.closing and not resume:
                if s.conn is not None:
                    raise Refused(f"stream {name!r} is in use")
                hello.detached = s  # its edge gone (e.g. killed): refused below within the window, else taken
            elif s is not None and not s.closing and not s.ending:
                why = s.owned_by(token, identity, header)
                if why:
                    raise Refused(why)
                if s.conn is None:  # a detached stream attaches again: it counts toward the limits
                    self._check_stream_limits(conn, retry=True)
                elif s.conn.client != conn.client:
                    self._check_stream_limits(conn, retry=True, only_client=True)
                old, s.conn = s.conn, conn
                s.used = True
                if old is not None:
                    old.fail("the stream was resumed on another connection")
                    taken_from = old.peer
                resumed = s
            else:
                self._check_stream_limits(conn)
                self.opening[name] = conn.client
                hello.waiting = s
        if hello.detached is not None:
            self._take_idle(hello)
        if resumed is not None:  # its recorded frames are listed outside the lock: there may be millions
            if taken_from is None:
                self.log(f"[{name}] edge resumed from {conn.peer}")
            else:  # the edge's earlier connection was still attached (e.g. half-open): it is closed
                self.log(f"[{name}] edge resumed from {conn.peer}; its connection from {taken_from} is closed")
            hello.done = resumed, self._welcome(resumed, None, conn.version)
        return hello

    def _open_files(self, hello: Hello, conn: Connection) -> tuple[Session, dict]:
        """A HELLO's session from the files, or a new one (in a pool thread), put in the table
        and the name given back, whatever happens."""
        s = None
        try:
            s, token = self._load_or_create(hello, conn)
        finally:
            with self.table:
                self.opening.pop(hello.name, None)
                if s is not None:
                    s.conn = conn
                    old = self.sessions.get(hello.name)
                    if old is not None and old is not s:  # closed, its _closed perhaps not run yet
                        self._retire(old)
                    self.sessions[hello.name] = s
        return s, self._welcome(s, token, conn.version)

    def _take_idle(self, hello: Hello) -> None:
        """A new stream naming a detached session (its edge gone): refused while the session's
        files were active within the resume window, unless nothing arrived after its HELLO
        and the HELLO is of the same client identity and header (its WELCOME, the token, may
        have been lost with the connection, and the edge asks again: ``Session.unused_by``);
        past the window, or so unused, the session expires now (``open_stream``: a linger
        longer than the window no longer holds the name) and the new stream takes the name
        once its files are closed, as after an expiry. Sets how long its files had been idle,
        and whether it is taken unused."""
        s = hello.detached
        hello.idle = Session.idle_seconds(s.out_dir)  # the files' clock, read outside the lock
        hello.unused = s.unused_by(hello.identity, hello.header)
        if hello.idle < self.resume_window and not hello.unused:
            raise Refused(self._in_use(hello.name, self.resume_window - hello.idle))

    async def _expire_for(self, name: str, s: Session, conn: Connection) -> bool:
        """On the event loop, so that the shutdown's closes and this one are in order: mark
        ``s`` closing, reserve its name for ``conn``'s HELLO and queue its close. False where
        it changed meanwhile (resumed, expired) or the server is stopping. Cancelled while
        the close waits for a slot (the server stops), it undoes both: the stop closes it."""
        if self._stop is None or self._stop.is_set():
            return False
        with self.table:
            if self.sessions.get(name) is not s or s.closing or s.conn is not None or name in self.opening:
                return False
            self._check_stream_limits(conn)
            s.closing = True
            self.opening[name] = conn.client
        try:
            await s.worker.put(Item("close", s))
        except BaseException:
            with self.table:
                s.closing = False
                self.opening.pop(name, None)
            raise
        return True

    def _check_stream_limits(self, conn: Connection, retry: bool = False, only_client: bool = False) -> None:
        """Refuse one more attached stream for ``conn``'s client over the global or the
        per-client limit (the table lock held)."""
        if not only_client:
            attached = sum(x.conn is not None for x in self.sessions.values()) + len(self.opening)
            if attached >= self.max_streams:
                raise Refused("the server is at its stream limit", retry=retry)
        limit = self.max_streams_per_client
        if limit:
            mine = sum(x.conn is not None and x.conn.client == conn.client for x in self.sessions.values())
            mine += sum(c == conn.client for c in self.opening.values())
            if mine >= limit:
                raise Refused(f"this client ({conn.client}) is at its stream limit ({limit} attached)", retry=retry)

    def _load_or_create(self, hello: Hello, conn: Connection) -> tuple[Session, str | None]:
        """The session of a HELLO that no session in memory answers: resumed from the files, or
        a new stream. ``hello.idle``: the files' idle time measured before a lingering session
        was expired for this HELLO (its close wrote them since); ``hello.unused``: that session
        was taken because nothing arrived after its HELLO (``_take_idle``)."""
        name, info, header, resume, token = hello.name, hello.info, hello.header, hello.resume, hello.token
        identity, idle, unused = hello.identity, hello.idle, hello.unused
        peer = conn.peer
        out = self.out_dir / name
        state = Session.read_state(out) if out.is_dir() else None
        unfinished = state is not None and not state.get("finished")
        if idle is None:
            idle = Session.idle_seconds(out) if unfinished else 0.0
        if unfinished and (resume or (idle < self.resume_window and not unused)):
            if not resume:
                raise Refused(self._in_use(name, self.resume_window - idle))
            saved = state.get("info") if isinstance(state.get("info"), dict) else {}
            s = Session(name, out, header, state["token_sha256"], state.get("identity"), saved, None)
            s.used = True  # resumed with its token
            why = s.owned_by(token, identity, header)
            if why:
                raise Refused(why)
            if state.get("header_sha256") != s.header_digest:
                raise Refused(f"stream {name!r} resumed with a different stream header")
            s.info["frame_size"] = info["frame_size"]
            s.plan = self.models.plan(header, tuple(info["frame_size"]))
            s.segment = int(state.get("segment", 0)) + 1
            frames = None
            try:
                s.load_records()
                frames = self._source(name, s.info, s.video_start)  # the segment's own first frame
                s.client = peer
                s.open_outputs(frames)
                s.write_state()
            except BaseException as exc:  # its files stay as they were: the next resume tries again
                s.discard_outputs()
                if frames is not None:
                    frames.close()
                if isinstance(exc, OSError):
                    self.log(f"[{name}] cannot resume from its files: {type(exc).__name__}: {exc}")
                    raise _cannot_write(name, "open", exc) from None
                raise
            self._place(s)
            self.log(f"[{name}] resumed from its files: {len(s.recorded) + len(s.failed)} frame(s) recorded")
            return s, None
        if resume:
            what = "finished" if state is not None else "not known to this server"
            raise Refused(f"stream {name!r} cannot be resumed: it is {what}", gone=True)
        plan = self.models.plan(header, tuple(info["frame_size"]))  # every check before any file is made
        self._count_new_stream(conn.client)  # before the source is opened: a refusal costs nothing
        frames = self._source(name, info, 0)
        s = made = moved = None
        try:
            if out.exists() or out.is_symlink():  # a finished (or abandoned) stream's outputs: kept, renamed
                k = 1
                while (self.out_dir / f"{name}.{k}").exists():
                    k += 1
                shutil.move(str(out), str(self.out_dir / f"{name}.{k}"))
                moved = self.out_dir / f"{name}.{k}"  # only once it is there: the undo moves it back
                if state is None:  # e.g. a server killed while it made them: no stream ever used them
                    what = "outputs without a session.json"
                else:
                    what = "unused" if unused else f"unfinished ({idle:.0f} s idle)" if unfinished else "finished"
                    what = f"the {what} stream's outputs"
                self.log(f"[{name}] {what} moved to {name}.{k}")
            out.mkdir(parents=True)
            made = out
            token = secrets.token_hex(16)
            keep = {k: info[k] for k in ("frame_size", "video", "max_frames") if k in info}
            s = Session(name, out, header, digest(token), identity, keep, plan)
            s.client = peer
            s.open_outputs(frames)
            s.write_state()
        except BaseException as exc:  # a full disk, a read-only folder: nothing of it may stay behind
            self._undo_new_stream(name, exc, s, frames, made, moved)
            if isinstance(exc, OSError):
                raise _cannot_write(name, "create", exc) from None
            raise
        self._place(s)
        self.log(f"[{name}] new stream from {peer}: {header.model_id} at {header.cut_id}, {header.structure}")
        return s, token

    def _undo_new_stream(self, name: str, exc: BaseException, s, frames, made, moved) -> None:
        """A new stream whose outputs could not all be made: close what was opened, remove
        the folder made for it (no stream ever used it: left, it would be taken for a finished
        stream's) and put back an earlier stream's folder moved away for it; one log line."""
        if s is not None:
            s.discard_outputs()
        if frames is not None:
            frames.close()  # (the video closed it already, if it was made)
        done = []
        if made is not None:
            try:
                shutil.rmtree(made)
                done.append("what was made for it is removed")
            except OSError as err:
                done.append(f"{made} could not be removed ({err.strerror or err})")
        if moved is not None:
            try:
                if made is not None and made.exists():
                    raise FileExistsError(errno.EEXIST, "File exists")
                os.rename(moved, self.out_dir / name)
                done.append(f"{moved.name} moved back to {name}")
            except OSError as err:
                done.append(f"the earlier outputs stay in {moved.name} ({err.strerror or err})")
        self.log("; ".join([f"[{name}] a new stream's outputs cannot be made: {type(exc).__name__}: {exc}", *done]))

    def _in_use(self, name: str, left: float) -> str:
        """The refusal of a new stream naming an unfinished one whose edge is gone: ``left``
        seconds until a new stream may take the name."""
        return (
            f"stream {name!r} is in use (it can be resumed with its token; a new stream may take "
            f"the name after {self.resume_window:g} s without activity, in {max(0.0, left):.0f} s)"
        )

    def _count_new_stream(self, client: str) -> None:
        """Refuse a new stream (an output folder, never deleted) over the client's rate:
        at most ``max_new_streams_per_client`` in any NEW_STREAMS_WINDOW seconds."""
        limit = self.max_new_streams_per_client
        if not limit:
            return
        now = time.monotonic()
        with self.table:
            if len(self.new_streams) > 4096:  # clients seen once: forget those out of the window
                for who in [k for k, v in self.new_streams.items() if now - v[-1] > NEW_STREAMS_WINDOW]:
                    del self.new_streams[who]
            made = self.new_streams.setdefault(client, deque())
            while made and now - made[0] > NEW_STREAMS_WINDOW:
                made.popleft()
            if len(made) >= limit:
                wait = NEW_STREAMS_WINDOW - (now - made[0])
                raise Refused(
                    f"this client ({client}) made {limit} new streams in {NEW_STREAMS_WINDOW:g} s "
                    f"(--max-new-streams-per-client); try again in {wait:.0f} s",
                    retry=True,
                )
            made.append(now)

    def _source(self, name: str, info: dict, start: int) -> Source | None:
        """With ``--local-video``, the edge's source video from frame ``start``, opened and its
        first frame read now (never in the worker, where it failed other streams' batches);
        a path that is no readable video here is logged, and the video is drawn on the
        features instead: the stream's detections never depend on it."""
        if not (self.local_video and info.get("video")):
            return None
        try:
            return Source(info["video"], info.get("max_frames"), start)
        except Exception as exc:
            self.log(
                f"[{name}] the source video {shown(info['video'])} cannot be read on this server "
                f"({type(exc).__name__}: {one_line(str(exc), MAX_SHOWN)}); drawing the features"
            )
            return None

    def _place(self, s: Session) -> None:
        s.worker = min(self.workers, key=lambda w: w.sessions)
        s.worker.sessions += 1

    def _welcome(self, s: Session, token: str | None, version: int) -> dict:
        welcome = {
            "protocol": version,  # the edge's: a version 2 edge is answered as version 2
            "stream": s.name,
            "next_frame": s.next_frame,
            # From next_frame on: every frame below it has a record, and past it there are at
            # most MAX_LEAD holes, so the ranges are few whatever the stream's length (all of
            # them, for a long stream of isolated errors, passed the edge's 16 MiB).
            "recorded": (s.recorded | s.failed).ranges(start=s.next_frame),
            "outputs": str(s.out_dir),
        }
        if token is not None:
            welcome["token"] = token
        return welcome

    def detach(self, conn: Connection) -> None:
        s = conn.session
        if s is None:
            return
        with self.table:
            if s.conn is conn:
                s.conn = None
                s.detached_at = time.monotonic()

    def _closed(self, s: Session) -> None:
        """A session's outputs are closed (finished, expired or shut down): drop it from memory."""
        with self.table:
            if self.sessions.get(s.name) is s:
                del self.sessions[s.name]
            self._retire(s)
        s.worker.sessions -= 1

    def _retire(self, s: Session) -> None:
        """Keep a session's counts in the totals once it leaves the table (server/metrics.py),
        once: its close, or a new session of its name taking its place first (the table lock
        held)."""
        if not s.retired:
            s.retired = True
            for k, v in s.counts.items():
                self.retired[k] = self.retired.get(k, 0) + v

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.linger / 4)))  # (a tiny linger: not a busy loop)
            now = time.monotonic()
            with self.table:
                detached = sorted(
                    (s for s in self.sessions.values() if s.conn is None and not s.closing),
                    key=lambda s: s.detached_at,
                )
                over = max(0, len(detached) - self.max_streams)
                expired = [s for k, s in enumerate(detached) if k < over or now - s.detached_at > self.linger]
                for s in expired:
                    s.closing = True
            for s in expired:
                self.log(f"[{s.name}] expired: no resume for {self.linger:g} s; its files are closed")
                await s.worker.put(Item("close", s))

    # ------------------------------------------------------------------ figures

    def stats(self) -> dict:
        return {
            "connections": len(self.connections),
            "sessions": len(self.sessions),
            "batches": sum(w.batches for w in self.workers),
            "frames": sum(w.frames for w in self.workers),
            "seconds": {k: round(sum(w.seconds[k] for w in self.workers), 3) for k in ("decode", "m2", "record")},
        }
