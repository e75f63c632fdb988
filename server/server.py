"""The cloud server: many edge streams at once; decode, motion-compensate, M2, store.

Each connection is a thread; each stream (named by the edge) is a session that outlives
a dropped connection, so an edge that reconnects goes on where it was. Every frame index
gets a detections record or an explicit error record; nothing is silently dropped.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from temposplit import protocol as P
from temposplit.codec.bitstream import StreamHeader, parse_packet
from temposplit.codec.decoder import Decoder
from temposplit.codec.errors import BitstreamError, ReferenceMissingError
from temposplit.errors import TemposplitError
from temposplit.server.outputs import AnnotatedVideo, DetectionLog, detection_records

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class Session:
    """One edge stream: its decoder, outputs and bookkeeping (bounded memory)."""

    name: str
    header: StreamHeader
    out_dir: Path
    info: dict
    m2: object
    log: DetectionLog
    video: AnnotatedVideo | None
    decoder: Decoder
    done: set = field(default_factory=set)  # frame indices with a record (detections or error)
    ok: int = 0
    errors: int = 0
    bytes: int = 0
    recent_bytes: deque = field(default_factory=lambda: deque(maxlen=30))
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    key_requested_at: float = 0.0


class CloudServer:
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
    ):
        from temposplit.server.m2 import CloudModels

        self.out_dir = Path(out_dir)
        self.models = models or CloudModels()
        self.tls = tls.server_context() if tls else None
        self.local_video = local_video
        self.max_streams = max_streams
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self.log = log or (lambda msg: None)
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.5)
        self.address = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            t = threading.Thread(target=self._connection, args=(conn, addr), daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True)
        t.start()
        return t

    def shutdown(self) -> None:
        """Stop accepting, wait for the connections, and close every stream's outputs."""
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(timeout=10)
        with self.lock:
            for s in self.sessions.values():
                self._finish(s, None)

    # ------------------------------------------------------------------ a connection

    def _connection(self, conn: socket.socket, addr) -> None:
        chan = None
        session = None
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(120)
            chan = P.Channel(conn)
            session = self._hello(chan, chan.recv())
            while True:
                msg = chan.recv()
                if msg.type == P.PACKET:
                    self._packet(chan, session, msg.body)
                elif msg.type == P.SKIP:
                    obj = msg.json()
                    with session.lock:
                        self._record_error(session, int(obj.get("frame", -1)), f"edge: {obj.get('error', 'skipped')}")
                elif msg.type == P.END:
                    total = int(msg.json().get("frames", 0))
                    summary = self._finish(session, total)
                    chan.send(P.control(P.SUMMARY, summary))
                    return
                else:
                    raise P.ProtocolError(f"unexpected {msg.name} from the edge")
        except P.ConnectionClosed:
            if session is not None:
                self.log(f"[{session.name}] connection lost; the stream waits for the edge to reconnect")
        except (P.ProtocolError, TemposplitError, BitstreamError, OSError, ValueError) as exc:
            self.log(f"connection from {addr[0]}: {exc}")
            if chan is not None:
                try:
                    chan.send(P.control(P.ERROR, {"message": str(exc)}))
                except P.ProtocolError:
                    pass
        finally:
            if chan is not None:
                chan.close()

    def _hello(self, chan: P.Channel, msg: P.Message) -> Session:
        if msg.type != P.HELLO:
            raise P.ProtocolError(f"expected HELLO, got {msg.name}")
        info = msg.json()
        if info.get("protocol") != P.PROTOCOL_VERSION:
            raise P.ProtocolError(f"protocol version {info.get('protocol')} is not supported ({P.PROTOCOL_VERSION})")
        name = str(info.get("stream", ""))
        if not STREAM_NAME.fullmatch(name):
            raise P.ProtocolError(f"invalid stream name {name!r}")
        header = StreamHeader.from_bytes(msg.stream_header())
        with self.lock:
            session = self.sessions.get(name)
            if session is not None and not session.finished:
                if session.header.to_bytes() != header.to_bytes():
                    raise P.ProtocolError(f"stream {name!r} resumed with a different stream header")
                self.log(f"[{name}] edge reconnected")
            else:
                if sum(not s.finished for s in self.sessions.values()) >= self.max_streams:
                    raise P.ProtocolError("the server is at its stream limit")
                session = self._new_session(name, header, info)
                self.sessions[name] = session
        next_frame = 0
        while next_frame in session.done:
            next_frame += 1
        chan.send(
            P.control(
                P.WELCOME,
                {
                    "protocol": P.PROTOCOL_VERSION,
                    "stream": name,
                    "next_frame": next_frame,
                    "outputs": str(session.out_dir),
                },
            )
        )
        return session

    def _new_session(self, name: str, header: StreamHeader, info: dict) -> Session:
        model, cut = header.model_id, header.cut_id
        self.models.check_hash(model, cut, header)
        height, width = (int(v) for v in info.get("frame_size", (300, 300)))
        m2 = self.models.m2_runner(model, cut, (height, width))
        out = self.out_dir / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "detections.jsonl").unlink(missing_ok=True)
        frames = None
        if self.local_video and info.get("video"):
            from temposplit.model.data import read_video

            frames = read_video(info["video"], max_frames=info.get("max_frames"), step=int(info.get("step", 1)))
        video = AnnotatedVideo(out / "annotated.mp4", width, height, header.fps, frames)
        self.log(f"[{name}] new stream: {model} at {cut}, {len(header.tensors)} tensor(s), {header.structure}")
        return Session(name, header, out, info, m2, DetectionLog(out / "detections.jsonl"), video, Decoder(header))

    # ------------------------------------------------------------------ frames

    def _packet(self, chan: P.Channel, s: Session, body: bytes) -> None:
        t0 = time.perf_counter()
        with s.lock:
            try:
                packet, end = parse_packet(body, 0, s.decoder.max_payload)
                if end != len(body):
                    raise BitstreamError("bytes after the packet's CRC")
            except BitstreamError as exc:
                # The frame index is unreliable: the gap is recorded when the stream ends.
                self._ask_key(chan, s, f"damaged packet: {exc}")
                return
            index = packet.index
            if index in s.done:  # a frame resent after a reconnect
                chan.send(P.control(P.ACK, {"frame": index, "duplicate": True}))
                return
            try:
                decoded = s.decoder.decode(packet)
            except BitstreamError as exc:
                self._record_error(s, index, str(exc))
                chan.send(P.control(P.ACK, {"frame": index, "error": str(exc)}))
                if isinstance(exc, ReferenceMissingError) or packet.is_anchor:
                    self._ask_key(chan, s, str(exc))
                return
            t1 = time.perf_counter()
            det = s.m2(decoded)
            t2 = time.perf_counter()
            s.bytes += len(body)
            s.recent_bytes.append(len(body))
            rate = sum(s.recent_bytes) / len(s.recent_bytes) * s.header.fps / 1e6
            record = {
                "frame": index,
                "kind": decoded.kind,
                "n_bits": decoded.n_bits,
                "bytes": len(body),
                "detections": detection_records(det),
            }
            s.log.write(record)
            s.done.add(index)
            s.ok += 1
            if s.video is not None:
                heat = decoded.dequantize()[-1].mean(axis=0)
                s.video.add(
                    index, det, heat, f"{s.name}  frame {index}  {decoded.kind}  N={decoded.n_bits}  {rate:.3f} MB/s"
                )
        chan.send(
            P.control(
                P.ACK,
                {
                    "frame": index,
                    "detections": record["detections"],
                    "decode_ms": round((t1 - t0) * 1000, 3),
                    "m2_ms": round((t2 - t1) * 1000, 3),
                },
            )
        )

    def _ask_key(self, chan: P.Channel, s: Session, reason: str) -> None:
        now = time.monotonic()
        if now - s.key_requested_at > 0.05:
            s.key_requested_at = now
            chan.send(P.control(P.KEY_REQUEST, {"reason": reason}))

    def _record_error(self, s: Session, index: int, message: str) -> None:
        if index < 0 or index in s.done:
            return
        s.log.write({"frame": index, "error": message})
        s.done.add(index)
        s.errors += 1
        if s.video is not None:
            s.video.add(index, error=f"frame {index}: error")

    def _finish(self, s: Session, total: int | None) -> dict:
        with s.lock:
            if not s.finished:
                end = total if total is not None else (max(s.done) + 1 if s.done else 0)
                for i in range(end):
                    if i not in s.done:
                        self._record_error(s, i, "never received (lost in transmission)")
                if s.video is not None:
                    s.video.finish(end)
                s.log.close()
                s.finished = True
            return {
                "stream": s.name,
                "frames": s.ok + s.errors,
                "decoded": s.ok,
                "errors": s.errors,
                "bytes": s.bytes,
                "detections": str(s.log.path),
                "video": str(s.video.path) if s.video else None,
            }
