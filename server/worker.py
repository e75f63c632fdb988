"""M2 batched across streams: one worker thread per device, fed by a bounded queue.

The connections' readers (on the event loop) put each PACKET, SKIP and END on the queue
of their session's worker, in arrival order; a client holding its share of the queue makes
its readers wait, so they stop reading their sockets and TCP slows those edges
(backpressure). The worker takes a
batch (up to ``max_batch`` frames, waiting at most ``max_delay`` seconds after the first
for more), decodes each frame with its stream's decoder, runs M2 once per group of frames
that share a model, cut and input size, writes the records, and hands every answer back
to its connection. It holds no lock a connection waits on; a slow client only slows its
own connection's writer. The items are taken by the clients' shares of the worker's time
(start-time fair queuing: docs/deployment.md, "The worker's time, shared by cost").
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from temposplit import protocol as P
from temposplit.codec.bitstream import parse_packet
from temposplit.codec.errors import BitstreamError, ReferenceMissingError
from temposplit.server.text import one_line

MAX_EDGE_TEXT = 200  # characters of a SKIP's `error` kept in detections.jsonl


def edge_text(value) -> str:
    """A SKIP's ``error`` as the stream's record keeps it: its whitespace runs (line
    separators included) one space, then :func:`one_line` at MAX_EDGE_TEXT characters, so
    that what an edge uploads as text costs the disk, and a resume that reads the record
    back, no more than a frame's record (a SKIP may carry 64 KiB)."""
    return one_line(" ".join(str(value if value is not None else "").split()), MAX_EDGE_TEXT)


@dataclass(eq=False)
class Item:
    kind: str  # "packet", "skip", "end" or "close"
    session: object
    conn: object = None  # the connection that sent it (answers go there), None for "close"
    body: bytes = b""
    obj: dict | None = None
    times: tuple = (None, None)  # a packet's (time_us, utc_us) from its PACKET_AT (docs/protocol.md, "Frame times")
    start: float = 0.0  # its start tag on the worker's virtual clock (seconds of work)
    charged: float = 0.0  # the work charged when it was taken (an estimate, corrected once measured)
    charged_to: object = None  # the client charged: its session's


COST_WEIGHT = 1 / 8  # the weight of an item's measured cost in its client's running mean


def client_of(item: Item):
    """Whose share an item counts toward: its connection's client (TLS subject or address);
    None for the server's own items (a close)."""
    return getattr(item.conn, "client", None)


def never_ends(item: Item) -> None:
    """An END that will not run (its connection broke first, while the END waited for a
    slot in the queue or in it, or its step failed): the stream is not ending after all, so
    that a resume takes it over again instead of waiting for a finish that never comes
    (docs/protocol.md, "A stream belongs to its client")."""
    if item.kind == "end" and not item.session.closed.is_set():
        item.session.ending = False


def failure(exc: BaseException) -> str:
    """What the edge is told of a server-side failure: the kind, and for a system error the
    system's reason (a full disk, a folder removed), never a path or a traceback."""
    name = type(exc).__name__
    return f"{name} ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else name


class Worker:
    def __init__(self, models, log, on_closed, device: str = "cpu", queue_size=256, max_batch=16, max_delay=0.01):
        self.models = models
        self.log = log
        self.on_closed = on_closed  # called (in this thread) with a session whose outputs are closed
        self.device = device
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue_size = queue_size  # the items queued at once, shared out among the clients
        # The queue (docs/deployment.md, "The worker's time, shared by cost"): one FIFO per
        # session (its items run in the order they came, whichever connection or client
        # sent them), each charged to the client that last sent it an item; guarded by
        # _lock, which the event loop (put, _grant) and the worker thread (_take) hold for a
        # few dictionary operations, never across a wait or a step.
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # the worker thread waits on it for items
        self._queued: dict[object, deque] = {}  # session -> its items, in the order picked last (a round)
        self._owner: dict[object, object] = {}  # session -> the client its items are charged to
        self._total = 0  # items queued
        self._held: dict[object, int] = {}  # client -> its items queued, and slots granted to its readers
        self._waiters: dict[object, deque] = {}  # client -> its readers waiting for room, in arrival order
        self._stopping = False
        # Start-time fair queuing (the worker thread's alone): the virtual clock (the start
        # tag of the last item taken), each client's finish tag (where its next item starts,
        # if ahead of the clock) and its mean cost of an item.
        self._vtime = 0.0
        self._finish: dict[object, float] = {}
        self._cost: dict[object, float] = {}
        self._mean_cost = 0.0  # over every client's items: a new client's estimate
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"temposplit-m2-{device}")
        self.batches = 0
        self.frames = 0
        self.seconds = {"decode": 0.0, "m2": 0.0, "record": 0.0}  # time spent per step (figures)
        self.sessions = 0  # sessions assigned (for placing new ones on the least loaded worker)
        self._failing: set = set()  # sessions failed in the batch being processed
        self._spent: defaultdict = defaultdict(float)  # item -> seconds of work, in the batch being processed

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread.start()

    def queued(self) -> int:
        """Items queued (the metrics' gauge)."""
        return self._total

    async def put(self, item: Item) -> None:
        """Queue an item (event loop). A client may hold its share of the queue,
        ``queue_size`` over the clients with items queued or waiting (one at least); past
        it its readers wait, in arrival order, so its connections take turns. The worker
        takes the items by the clients' shares of its time (:meth:`_pick`), so a client
        gets the same work time as any other however many connections it has and however
        much each of its items costs, and none is starved."""
        client = client_of(item)
        with self._lock:
            if client not in self._waiters and self._room(client):
                self._held[client] = self._held.get(client, 0) + 1
                self._enqueue(client, item)
                return
            turn = self.loop.create_future()
            self._waiters.setdefault(client, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            with self._lock:
                if turn.done() and not turn.cancelled():  # granted, then cancelled: the slot goes back
                    self._release(client)
                else:
                    self._forget(client, turn)
            self._grant()
            raise
        with self._lock:
            self._enqueue(client, item)  # its slot was counted when granted

    def _room(self, client) -> bool:
        """Whether ``client`` holds less than its share (the lock held)."""
        active = len(self._held.keys() | self._waiters.keys() | {client})
        return self._held.get(client, 0) < max(1, self.queue_size // active)

    def _enqueue(self, client, item: Item) -> None:
        """Put ``item`` on its session's queue (the lock held; its slot counted)."""
        session = item.session
        if session not in self._queued:
            self._queued[session] = deque()
        self._queued[session].append(item)
        if item.conn is not None or session not in self._owner:
            self._owner[session] = client  # the server's own items (a close) keep the client's charge
        self._total += 1
        self._ready.notify()

    def _release(self, client) -> None:
        held = self._held[client] - 1
        if held:
            self._held[client] = held
        else:
            del self._held[client]

    def _forget(self, client, turn) -> None:
        waiting = self._waiters.get(client)
        if waiting is not None and turn in waiting:
            waiting.remove(turn)
            if not waiting:
                del self._waiters[client]

    def _grant(self) -> None:
        """Give room to the waiting readers of every client under its share (event loop)."""
        with self._lock:
            for client in list(self._waiters):
                waiting = self._waiters[client]
                while waiting and self._room(client):
                    turn = waiting.popleft()
                    if not turn.done():
                        self._held[client] = self._held.get(client, 0) + 1
                        turn.set_result(None)
                if not waiting:
                    del self._waiters[client]

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread once every item queued has run (within ``timeout``)."""
        with self._lock:
            self._stopping = True
            self._ready.notify()
        self.thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _pick(self) -> Item:
        """The next item (the lock held, one queued): the head of the session whose client's
        next item starts earliest on the virtual clock (of equal ones, the session picked
        longest ago), charged its client's mean cost of an item (corrected by
        :meth:`_served` once measured)."""
        session = min(self._queued, key=lambda s: self._next_start(self._owner[s]))
        items = self._queued.pop(session)
        item = items.popleft()
        client = self._owner[session]
        if items:
            self._queued[session] = items  # to the end: its next turn after the others'
        else:
            del self._owner[session]
        self._total -= 1
        self._release(client_of(item))
        item.start = self._vtime = self._next_start(client)
        item.charged = self._cost.get(client, self._mean_cost)
        self._finish[client] = item.start + item.charged
        item.charged_to = client
        return item

    def _next_start(self, client) -> float:
        return max(self._vtime, self._finish.get(client, self._vtime))

    def _served(self, done: list[tuple]) -> None:
        """The measurements of a batch (worker thread): ``done`` holds (client, seconds it
        took, estimate charged) per item. Each client's finish tag moves by what its items
        really cost, and the tags behind the clock are dropped (a client that was idle
        starts at the clock again: no credit for the past, so the tables stay as small as
        the clients with work ahead)."""
        with self._lock:
            for client, seconds, charged in done:
                self._finish[client] = self._finish.get(client, self._vtime) + seconds - charged
                mean = self._cost.get(client, self._mean_cost)
                self._cost[client] = mean + COST_WEIGHT * (seconds - mean)
                self._mean_cost += COST_WEIGHT * (seconds - self._mean_cost)
            owners = set(self._owner.values())
            for client in [c for c, f in self._finish.items() if f <= self._vtime and c not in owners]:
                del self._finish[client]
                self._cost.pop(client, None)

    def _take(self) -> list | None:
        """A batch: up to ``max_batch`` frames, waiting at most ``max_delay`` after the first
        for more; None once stopping with nothing queued."""
        with self._ready:
            while not self._total and not self._stopping:
                self._ready.wait()
            if not self._total:
                return None
            batch = [self._pick()]
            frames = batch[0].kind == "packet"
            deadline = time.monotonic() + self.max_delay
            while frames < self.max_batch:
                remaining = deadline - time.monotonic()
                if not self._total and (remaining <= 0 or self._stopping or not self._ready.wait(remaining)):
                    break
                if self._total:
                    batch.append(self._pick())
                    frames += batch[-1].kind == "packet"
        self._post(self._grant)
        return batch

    def _post(self, callback, *args) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # the loop is closed (shutdown)
                pass

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._spent = defaultdict(float)
            try:
                self._process(batch)
            except Exception as exc:  # a bug outside any one stream's step: log it, answer, go on
                self.log(f"worker {self.device}: {type(exc).__name__}: {exc}")
                for item in batch:
                    never_ends(item)
                    if item.conn is not None:
                        item.conn.fail(f"internal server error: {failure(exc)}")
                    elif item.kind == "close" and not item.session.closed.is_set():
                        self._close(item.session, item.session.close)  # never dropped: a resume waits for it
            finally:  # what each item took, charged to its client's share
                self._served([(item.charged_to, self._spent[item], item.charged) for item in batch])

    def _process(self, batch: list[Item]) -> None:
        """Each item's step runs apart: one stream's failure (a bug, a full disk, a broken
        output) fails that stream's connection alone; every other item of the batch, other
        streams' frames, ENDs and closes, still runs."""
        staged: list[tuple] = []
        seen: set = set()
        self._failing = set()
        for item in batch:
            if item.conn is not None and item.conn.broken:
                never_ends(item)
                continue
            if item.kind == "packet":
                t0 = time.perf_counter()
                self._apart(item, self._decode, item, staged, seen)
            else:
                self._m2(staged)
                staged, seen = [], set()
                t0 = time.perf_counter()
                self._apart(item, self._control, item)
            self._spent[item] += time.perf_counter() - t0
        self._m2(staged)

    def _apart(self, item: Item, step, *args) -> bool:
        """Run ``step(*args)`` for ``item``; an exception fails ``item``'s stream only."""
        try:
            step(*args)
            return True
        except Exception as exc:
            self._failed(item, exc)
            return False

    def _refuse(self, s, conn, why: str) -> None:
        """A message the stream's rules refuse: ERROR to the edge, and the same line in the log."""
        self.log(f"[{s.name}] refused: {why}")
        conn.fail(why)

    def _failed(self, item: Item, exc: Exception) -> None:
        s = item.session
        never_ends(item)
        self._failing.add(s)
        self.log(f"[{s.name}] worker {self.device}: {type(exc).__name__}: {exc}")
        if item.conn is not None:
            item.conn.fail(f"internal server error: {failure(exc)}")

    def _decode(self, item: Item, staged: list, seen: set) -> None:
        s, conn = item.session, item.conn
        if s.decoder is None:  # closed meanwhile (expired, shut down): the edge resends after resuming
            conn.post(None)
            return
        t0 = time.perf_counter()
        try:
            packet, end = parse_packet(item.body, 0, s.decoder.max_payload)
            if end != len(item.body):
                raise BitstreamError("bytes after the packet's CRC")
        except BitstreamError as exc:
            # The frame index is unreliable: the gap is recorded when the stream ends.
            self._ask_key(conn, s, f"damaged packet: {exc}")
            conn.post(None)
            return
        index = packet.index
        why = s.lead_error(index, f"frame {index}", sum(1 for t, _ in seen if t is s))
        if index >= P.MAX_FRAMES or why:
            self._refuse(s, conn, why or f"frame {index} is out of range (below {P.MAX_FRAMES})")
            return
        s.max_seen = max(s.max_seen, index)
        if s.has(index) or (s, index) in seen:  # a frame resent after a reconnect
            # Decoded again, neither recorded nor run through M2: a restarted server holds no
            # reconstruction, and the frames after this one may be predicted from it.
            try:
                s.decoder.decode(packet)
            except BitstreamError:
                pass  # its record stands; a frame that needed it asks for a KEY as usual
            conn.post(P.control(P.ACK, {"frame": index, "duplicate": True}))
            return
        try:
            frame = s.decoder.decode(packet)
        except BitstreamError as exc:
            s.record_error(index, str(exc), item.times)
            conn.post(P.control(P.ACK, {"frame": index, "error": str(exc)}))
            if isinstance(exc, ReferenceMissingError) or packet.is_anchor:
                self._ask_key(conn, s, str(exc))
            return
        seen.add((s, index))
        dt = time.perf_counter() - t0
        self.seconds["decode"] += dt
        staged.append((item, index, frame, dt * 1000))

    def _m2(self, staged: list) -> None:
        groups = defaultdict(list)
        for entry in staged:
            groups[entry[0].session.plan.key].append(entry)
        for entries in groups.values():
            t1 = time.perf_counter()
            try:
                dets = self.models.run(
                    [e[0].session.plan for e in entries], [frame.dequantize() for _, _, frame, _ in entries]
                )
            except Exception as exc:  # M2 itself failed: each frame gets an explicit error
                self.log(f"M2 failed on a batch of {len(entries)}: {type(exc).__name__}: {exc}")
                share = (time.perf_counter() - t1) / len(entries)
                for item, index, _, _ in entries:
                    self._spent[item] += share
                    self._apart(item, self._m2_failed, item, index, exc)
                continue
            t2 = time.perf_counter()
            m2_ms = round((t2 - t1) * 1000, 3)
            self.seconds["m2"] += t2 - t1
            self.batches += 1
            self.frames += len(entries)
            for (item, index, frame, decode_ms), det in zip(entries, dets, strict=True):
                t3 = time.perf_counter()
                self._spent[item] += (t2 - t1) / len(entries)  # a batch's M2 shared by its frames
                self._record(item, index, frame, decode_ms, det, m2_ms, len(entries))
                self._spent[item] += time.perf_counter() - t3
            self.seconds["record"] += time.perf_counter() - t2

    def _record(self, item: Item, index: int, frame, decode_ms: float, det, m2_ms: float, batch: int) -> None:
        """A frame's record written and its ACK posted."""
        if item.session in self._failing:  # its stream failed earlier in this batch
            if not item.conn.broken:  # another connection of it (a resume): told too, never left waiting
                item.conn.fail("internal server error: an earlier step of this stream failed")
            return
        try:
            rec = item.session.record(index, det, frame, len(item.body), item.times)
        except Exception as exc:  # this stream's outputs failed: this stream alone
            self._failed(item, exc)
            return
        ack = {
            "frame": index,
            "detections": rec["detections"],
            "decode_ms": round(decode_ms, 3),
            "m2_ms": m2_ms,
            "batch": batch,
        }
        item.conn.post(P.control(P.ACK, ack))

    @staticmethod
    def _m2_failed(item: Item, index: int, exc: Exception) -> None:
        item.session.record_error(index, f"M2 failed: {exc}", item.times)
        item.conn.post(P.control(P.ACK, {"frame": index, "error": f"M2 failed: {exc}"}))

    def _control(self, item: Item) -> None:
        s, conn = item.session, item.conn
        if item.kind == "close":
            self._close(s, s.close)
            return
        if s.decoder is None:
            if item.kind == "end":  # closed meanwhile (finished by an earlier END, expired): no SUMMARY
                self._refuse(s, conn, "the stream was closed before this END; resume it to learn how it ended")
                return
            conn.post(None)
            return
        if item.kind == "skip":
            index = item.obj["frame"]
            why = s.lead_error(index, f"SKIP of frame {index}")
            if why:
                self._refuse(s, conn, why)
                return
            s.max_seen = max(s.max_seen, index)
            s.record_error(index, f"edge: {edge_text(item.obj.get('error')) or 'skipped'}")
            conn.post(None)
        elif item.kind == "end":
            total = item.obj["frames"]
            why = s.lead_error(total - 1, f"END with {total} frames", -1)  # END names no frame of its own
            if total <= s.max_seen:  # its SUMMARY would count frames beyond the stream's end
                why = f"END with {total} frames, but frame {s.max_seen} was sent"
            if why:
                s.ending = False  # not ending after all: a resume may take it again
                self._refuse(s, conn, why)
                return
            failed = self._close(s, lambda: s.finish(total))
            if failed is None:
                conn.post(P.control(P.SUMMARY, s.summary()), close_after=True)
            else:  # not finished (session.json says so), or its records not all on disk: not done
                conn.fail(f"internal server error: {failure(failed)}")

    def _close(self, s, close) -> Exception | None:
        """Close a session's outputs (``close``: its close or its finish); whatever fails,
        it ends closed and dropped from memory. Returns the exception ``close`` raised, or
        None."""
        try:
            for error in close():
                self.log(f"[{s.name}] closing the outputs: {error}")
            return None
        except Exception as exc:  # e.g. END's error records could not be written
            self.log(f"[{s.name}] closing the outputs: {type(exc).__name__}: {exc}")
            if not s.closed.is_set():
                for error in s.close():
                    self.log(f"[{s.name}] closing the outputs: {error}")
            return exc
        finally:
            self.on_closed(s)

    def _ask_key(self, conn, s, reason: str) -> None:
        now = time.monotonic()
        if now - s.key_requested_at > 0.05:
            s.key_requested_at = now
            conn.post(P.control(P.KEY_REQUEST, {"reason": reason}), release=False)
