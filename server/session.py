"""One edge stream on the server: its decoder, outputs, the frames recorded, and its owner.

A session is written to ``<out>/<stream>/``: ``detections.jsonl`` (appended, one record
per frame), ``annotated.mp4`` (and ``annotated.<k>.mp4`` for each resumed segment) and
``session.json`` (who owns the stream: the SHA-256 of its resume token, the client's TLS
subject and address, the stream header's digest, and whether it is finished). A restarted server
rebuilds a session from these files. Frames are decoded and recorded only by the
session's worker thread (server/worker.py); the event loop reads its counters.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from temposplit import protocol as P
from temposplit.codec.bitstream import StreamHeader
from temposplit.codec.decoder import Decoder
from temposplit.errors import ConfigError
from temposplit.frameset import FrameSet
from temposplit.server.outputs import (
    REORDER_WINDOW,
    AnnotatedVideo,
    DetectionLog,
    detection_records,
    recorded_at,
    recorded_detections,
    shown_at,
    time_fields,
)

STATE = "session.json"
# The bytes of JSON SUMMARY's `recorded` and `failed` ranges may take together: a quarter of
# what the edge reads of a message (protocol.MAX_FROM_SERVER), the rest of it short.
SUMMARY_RANGES = 4 << 20
RANGE_JSON_MAX = 2 * len(str(P.MAX_FRAMES)) + 4  # a range's JSON at most: [start,end],


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# The most source frames a HELLO decodes to reach a resumed segment's first frame where the file
# cannot be sought to it (docs/protocol.md, "--local-video"): about 2 s of a HELLO-pool thread.
MAX_SOURCE_SKIP = 1000


class Source:
    """The source video's frames for the annotated video (``--local-video``): opened, and
    its first frame read, when the HELLO is handled, so that a path that is no readable
    video is refused there and never fails in the worker.

    Frame ``start`` (a resumed segment's first) is reached by decoding at most
    ``MAX_SOURCE_SKIP`` frames: from the start of the file where ``start`` is within that,
    else from the keyframe at or before its time (a seek), the frames known by their times at
    the stream's constant rate. A file whose frames do not bear that out (a variable rate, a
    seek that lands past the frame or too far before it) raises :class:`ConfigError`: that
    segment is drawn on the features."""

    def __init__(self, path, max_frames, start: int):
        from temposplit.model.data import read_video

        if not isinstance(path, str) or not (max_frames is None or isinstance(max_frames, int)):
            raise TypeError("video must be a path and max_frames an integer")
        if start <= MAX_SOURCE_SKIP:
            self.rest = read_video(path, max_frames=max_frames)
            skip = start
        else:
            self.rest = _sought(path, start, None if max_frames is None else max(0, max_frames - start))
            skip = 0
        try:
            for _ in range(skip):
                next(self.rest, None)
            self.first = next(self.rest, None)
            if self.first is None and start == 0:
                raise ValueError("it has no frame to decode")
        except BaseException:
            self.rest.close()
            raise

    def __iter__(self):
        return self

    def __next__(self):
        if self.first is not None:
            frame, self.first = self.first, None
            return frame
        return next(self.rest)

    def close(self) -> None:
        self.first = None
        self.rest.close()


def _sought(path: str, start: int, count: int | None):
    """The frames of video ``path`` from frame ``start`` (at most ``count``; None: to the end),
    reached by a seek (``Source``); raises :class:`ConfigError` where the file's frames cannot
    be known by their times, before yielding any frame."""
    import av

    from temposplit.model.data import _open_video, check_video_file, stream_start

    path = Path(path)
    check_video_file(path)
    container, stream = _open_video(path)
    try:
        rate = stream.average_rate
        if not rate or not stream.time_base or stream.guessed_rate != rate:
            raise ConfigError(f"{path} has no constant frame rate to seek frame {start} by")
        origin = stream_start(stream)

        def index(frame) -> int | None:
            return None if frame.time is None else round((frame.time - origin) * float(rate))

        decoded = container.decode(stream)
        if index(next(decoded)) != 0:  # the first frame shown at the stream's start, as players count
            raise ConfigError(f"{path}: its first frame is not at the stream's start")
        target = int((origin + start / float(rate)) / stream.time_base)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        decoded, last, frame = container.decode(stream), None, None
        for _ in range(MAX_SOURCE_SKIP + 1):
            frame = next(decoded, None)
            i = None if frame is None else index(frame)
            if i is None or (last is not None and i != last + 1) or i > start:
                raise ConfigError(f"{path}: frame {start} cannot be sought (its frames are not at a constant rate)")
            if i == start:
                break
            last = i
        else:
            raise ConfigError(f"{path}: frame {start} is more than {MAX_SOURCE_SKIP} frames past a keyframe")
    except (av.error.FFmpegError, StopIteration) as exc:
        container.close()
        raise ConfigError(f"{path}: cannot seek frame {start}: {exc}") from None
    except BaseException:
        container.close()
        raise
    return _frames_from(container, decoded, frame, count, path, start)


def _frames_from(container, decoded, frame, count: int | None, path, start: int):
    """``frame``, then those of ``decoded``: at most ``count`` in all; closes ``container``."""
    import av

    from temposplit.model.data import upright_rgb

    with container:
        n = 0
        while frame is not None and (count is None or n < count):
            yield upright_rgb(frame)
            n += 1
            try:
                frame = next(decoded, None)
            except av.error.FFmpegError as exc:
                raise ConfigError(f"{path}: cannot decode frame {start + n}: {exc.strerror or exc}") from None


@dataclass(eq=False)
class Session:
    name: str
    out_dir: Path
    header: StreamHeader
    token_hash: str
    identity: str | None
    info: dict
    plan: object  # server.m2.Plan
    recorded: FrameSet = field(default_factory=FrameSet)  # frames with detections (as ranges: temposplit/frameset.py)
    failed: FrameSet = field(default_factory=FrameSet)  # frames with an error record
    bytes: int = 0
    max_seen: int = -1
    segment: int = 0
    finished: bool = False
    decoder: Decoder | None = None
    log: DetectionLog | None = None
    video: AnnotatedVideo | None = None
    recent_bytes: deque = field(default_factory=lambda: deque(maxlen=30))
    key_requested_at: float = 0.0
    client: str | None = None  # the address that opened the stream, or resumed it from its files
    unsaved: Exception | None = None  # why closing did not save its records or state (the video aside)
    ahead: list = field(default_factory=list)  # records past the first frame without one, for a resumed video
    video_start: int | None = None  # a resumed video segment's first frame (None: next_frame)
    video_error: str | None = None  # why this segment's video stopped early (Session._draw), for the SUMMARY
    # What this process recorded of it (server/metrics.py): the worker writes, the event loop reads.
    counts: dict = field(default_factory=lambda: {"frames": 0, "errors": 0, "bytes": 0})
    last_record: float = field(default_factory=time.monotonic)  # or the session's making
    retired: bool = False  # its counts are in the server's totals (it has left the table)
    lag: float | None = None  # seconds from a live frame's utc (its picture came to the edge) to its record
    # Owned by the event loop:
    conn: object = None  # the attached connection, or None (detached)
    detached_at: float = field(default_factory=time.monotonic)
    closing: bool = False
    ending: bool = False  # its END is queued: a resume waits for the finish (and is then "gone")
    used: bool = False  # a message after its HELLO arrived, or it was resumed: its edge had the WELCOME
    closed: threading.Event = field(default_factory=threading.Event)
    worker: object = None

    # ------------------------------------------------------------------ identity

    @property
    def header_digest(self) -> str:
        return digest(self.header.to_bytes())

    def owned_by(self, token: str, identity: str | None, header: StreamHeader) -> str | None:
        """None when a resume with this token, client identity and header may take the
        stream; else why not."""
        if not hmac.compare_digest(digest(str(token)), self.token_hash):
            return f"stream {self.name!r} is in use (a resume needs the stream's token)"
        if self.identity is not None and identity != self.identity:
            return f"stream {self.name!r} belongs to another client certificate"
        if digest(header.to_bytes()) != self.header_digest:
            return f"stream {self.name!r} resumed with a different stream header"
        return None

    def unused_by(self, identity: str | None, header: StreamHeader) -> bool:
        """True when a new stream of this client identity and header may take this detached
        stream's name at once: nothing arrived after its HELLO and it was never resumed, so
        its WELCOME (the token) may have been lost with the connection, and the edge is asking
        again (docs/protocol.md, "Resuming a stream")."""
        return not self.used and identity == self.identity and digest(header.to_bytes()) == self.header_digest

    def has(self, index: int) -> bool:
        return index in self.recorded or index in self.failed

    def lead_error(self, top: int, what: str, pending: int = 0) -> str | None:
        """Why ``top`` may not become the stream's highest frame index (None: it may).
        ``top`` counts as named, and so do ``pending`` frames named but not yet recorded.
        The rule (docs/protocol.md, "Streaming"): at most ``MAX_LEAD`` indices below the
        highest may be without a PACKET or SKIP, so that the "never received" records and
        the video's lost pictures stay within one per message sent, plus ``MAX_LEAD``."""
        if top <= self.max_seen:
            return None
        holes = top - len(self.recorded) - len(self.failed) - pending  # every index named so far is below top
        if top > self.max_seen + P.MAX_LEAD or holes > P.MAX_LEAD:
            return (
                f"{what} is out of range: it would leave {holes} frames below it with no PACKET or SKIP "
                f"(at most {P.MAX_LEAD}; the stream's highest frame is {self.max_seen})"
            )
        return None

    @property
    def next_frame(self) -> int:
        i = 0
        while True:  # from run to run of recorded and failed frames: never frame by frame
            j = self.failed.run_end(self.recorded.run_end(i))
            if j == i:
                return i
            i = j

    # ------------------------------------------------------------------ files

    def write_state(self, keep_time: bool = False) -> None:
        """Save ``session.json``; with ``keep_time`` (a close, which is no activity of the
        stream's) its modification time stays what it was, since :meth:`idle_seconds` reads
        it: an expiry's close restarted the resume window, holding the name for the linger
        and the window both."""
        try:
            before = os.stat(self.out_dir / STATE).st_mtime_ns if keep_time else None
        except OSError:
            before = None
        state = {
            "stream": self.name,
            "token_sha256": self.token_hash,
            "identity": self.identity,
            "client": self.client,
            "header_sha256": self.header_digest,
            "info": self.info,
            "segment": self.segment,
            "finished": self.finished,
        }
        tmp = self.out_dir / (STATE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.out_dir / STATE)
        if before is not None:
            os.utime(self.out_dir / STATE, ns=(time.time_ns(), before))

    @staticmethod
    def read_state(out_dir: Path) -> dict | None:
        try:
            state = json.loads((out_dir / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and isinstance(state.get("token_sha256"), str) else None

    @staticmethod
    def idle_seconds(out_dir: Path) -> float:
        """Seconds since a stream's files last changed (its log or state), by the clock of
        the file system: what a restarted server knows of a stream's last activity."""
        times = []
        for name in (STATE, "detections.jsonl"):
            try:
                times.append((out_dir / name).stat().st_mtime)
            except OSError:
                pass
        return max(0.0, time.time() - max(times)) if times else float("inf")

    def load_records(self) -> None:
        """The frames an earlier server (or connection) recorded, from the log, read a record
        at a time: what a resume holds is the frames' ranges, not the log (a stream of a day
        logs gigabytes, which a list of its records held many times over)."""
        log = self.out_dir / "detections.jsonl"
        for i, error, nbytes in DetectionLog.frames(log):
            if error:
                self.failed.add(i)
            else:
                self.recorded.add(i)
                self.bytes += nbytes
            self.max_seen = max(self.max_seen, i)
        self.recorded -= self.failed  # never both (a log edited by hand): the error stands
        # The records past the first frame without one (a bidirectional structure records out of
        # order): the resumed video segment starts at that frame, and these frames, answered
        # `duplicate` when the edge sends them again, are drawn from their records (open_outputs).
        # A hole further back than the video's reorder window (a camera's lost frame, the stream
        # gone on past it) was drawn lost in the earlier segment, as were the frames after it:
        # the segment starts a window before the highest, so a resume redraws at most a window
        # of records, never the whole log after an old hole.
        start = max(self.next_frame, self.max_seen + 1 - REORDER_WINDOW)
        self.video_start = start
        ahead: dict[int, dict] = {}
        errors: dict[int, dict] = {}
        if self.max_seen >= start:  # a second pass, only where such records exist
            for rec in DetectionLog.records(log, after=start - 1):
                (errors if "error" in rec else ahead)[rec["frame"]] = rec
        ahead.update(errors)
        self.ahead = [ahead[i] for i in sorted(ahead)]

    def open_outputs(self, frames=None) -> None:
        """Open the log for appending and start a video segment (the next one after a
        resume), drawn on ``frames`` (``open_source``) where given, else on the features."""
        self.decoder = Decoder(self.header)
        self.log = DetectionLog(self.out_dir / "detections.jsonl")
        height, width = self.info["frame_size"]
        start = self.next_frame if self.video_start is None else self.video_start
        name = "annotated.mp4" if self.segment == 0 else f"annotated.{self.segment}.mp4"
        self.video = AnnotatedVideo(self.out_dir / name, width, height, self.header.fps, frames, start=start)
        for rec in self.ahead:  # recorded before the resume, past its first frame: drawn as recorded
            i = rec["frame"]
            if "error" in rec:
                self.video.add(i, error=f"frame {i}: error", when=recorded_at(rec))
            else:
                caption = f"{self.name}  frame {i}  {rec.get('kind', '')}  N={rec.get('n_bits', '')}"
                try:
                    detections = recorded_detections(rec.get("detections") or [])
                except (TypeError, ValueError, KeyError):  # a record edited by hand: the picture, without boxes
                    detections, caption = None, caption + "  (its record's boxes unreadable)"
                self.video.add(i, detections, caption=caption, when=recorded_at(rec))
        self.ahead = []

    def discard_outputs(self) -> None:
        """Close what ``open_outputs`` opened, saving nothing and raising nothing: the
        stream's setup failed (a full disk) and it never served a frame."""
        video, log = self.video, self.log
        self.video = self.log = self.decoder = None
        if video is not None:
            video.abort()
        if log is not None:
            log.abort()
        self.closed.set()

    # ------------------------------------------------------------------ records (the worker's thread)

    def record(self, index: int, detections, decoded, nbytes: int, times: tuple = (None, None)) -> dict:
        """Frame ``index``'s record: its detections, with its ``times`` (time_us, utc_us) from
        the edge's PACKET_AT where it sent them (docs/protocol.md, "Frame times")."""
        rec = {
            "frame": index,
            **time_fields(*times),
            "kind": decoded.kind,
            "n_bits": decoded.n_bits,
            "bytes": nbytes,
            "detections": detection_records(detections),
        }
        self.log.write(rec)  # whole or not at all: counted only once written
        self.bytes += nbytes
        self.recent_bytes.append(nbytes)
        self.recorded.add(index)
        self.counts["frames"] += 1
        self.counts["bytes"] += nbytes
        self.last_record = time.monotonic()
        if times[1] is not None:  # a live source's: how far behind its pictures the records are
            self.lag = time.time() - times[1] / 1e6
        if self.video is not None:
            rate = sum(self.recent_bytes) / len(self.recent_bytes) * self.header.fps / 1e6
            heat = decoded.dequantize()[-1].mean(axis=0)
            caption = f"{self.name}  frame {index}  {decoded.kind}  N={decoded.n_bits}  {rate:.3f} MB/s"
            self._draw(index, lambda: self.video.add(index, detections, heat, caption, when=shown_at(*times)))
        return rec

    def record_error(self, index: int, message: str, times: tuple = (None, None)) -> None:
        if index < 0 or self.has(index):
            return
        self.log.write({"frame": index, **time_fields(*times), "error": message})
        self.failed.add(index)
        self.counts["errors"] += 1
        self.last_record = time.monotonic()
        if self.video is not None:
            self._draw(index, lambda: self.video.add(index, error=f"frame {index}: error", when=shown_at(*times)))

    def _draw(self, index: int, step) -> None:
        """Run ``step``, a drawing of frame ``index`` into the video segment. A failure (a full
        disk: its fragments are far larger than a record) stops this segment's video alone:
        logged once, said in the SUMMARY (``video_error``), the segment closed where it got
        to; the records and their ACKs go on (the record is written before it is drawn)."""
        try:
            step()
        except Exception as exc:
            video, self.video = self.video, None
            self.video_error = f"{video.path.name} stopped at frame {index}: {type(exc).__name__}: {exc}"
            video.abort()
            say = getattr(self.worker, "log", None)
            if say is not None:
                say(f"[{self.name}] video: {self.video_error}; the records go on without it")

    def finish(self, total: int) -> list[str]:
        """END: an error record for every index below ``total`` without one; close; mark finished.
        Raises what kept the records or the state from the disk (the stream is then not done:
        its SUMMARY would say it is); returns what else failed (the video)."""
        # The holes, from the ranges, never a question per index; none (the usual case) when the
        # two sets count ``total`` frames, every one of them below it (END's check: above max_seen).
        if len(self.recorded) + len(self.failed) < total:
            for i in self.recorded.missing(total, self.failed):
                self.record_error(i, "never received (lost in transmission)")
        self.finished = True
        errors = self.close(total)
        if self.unsaved is not None:
            raise self.unsaved
        return errors

    def close(self, total: int | None = None) -> list[str]:
        """Close the outputs (video finalised, log synced) and save the state; the session
        stays resumable unless it is finished. Returns what failed instead of raising: one
        stream's broken output must not stop the others from closing."""
        errors = []
        try:
            if self.video is not None:
                try:
                    self.video.finish(total)
                except Exception as exc:
                    errors.append(f"video: {exc}")
                    self.video_error = self.video_error or f"{self.video.path.name} not finished: {exc}"
                self.video = None
            if self.log is not None:
                try:
                    self.log.close()
                except Exception as exc:
                    errors.append(f"log: {exc}")
                    self.unsaved = self.unsaved or exc
            try:
                self.write_state(keep_time=True)
            except Exception as exc:
                errors.append(f"state: {exc}")
                self.unsaved = self.unsaved or exc
        finally:  # whatever failed, the session is closed: a resume never waits for it in vain
            self.decoder = None
            self.closed.set()
        return errors

    def summary(self) -> dict:
        video = "annotated.mp4" if self.segment == 0 else f"annotated.{self.segment}.mp4"
        # every segment of the annotated video (a resumed stream's go on in a new one)
        segments = ["annotated.mp4"] + [f"annotated.{k}.mp4" for k in range(1, self.segment + 1)]
        videos = [str(self.out_dir / v) for v in segments if (self.out_dir / v).is_file()]
        below = self.ranges_below()
        out = {
            "stream": self.name,
            "frames": len(self.recorded) + len(self.failed),
            "decoded": len(self.recorded),
            "errors": len(self.failed),
            "bytes": self.bytes,
            "recorded": self.recorded.ranges(below),
            "failed": self.failed.ranges(below),
            "ranges_cut": below is not None,
            "detections": str(self.out_dir / "detections.jsonl"),
            "video": str(self.out_dir / video),
            "videos": videos,
        }
        if below is not None:
            out["ranges_below"] = below
        if self.video_error is not None:
            out["video_error"] = self.video_error
        return out

    def ranges_below(self) -> int | None:
        """Where SUMMARY's ranges stop (docs/protocol.md, "End of stream"): None when both
        sets' ranges fit SUMMARY_RANGES, their JSON, whole; else the first frame of the first
        range (of either set, in frame order) past that budget, the ranges then holding
        exactly the frames below it. The edge reads at most MAX_FROM_SERVER a message: a day's
        stream with an error every few frames has millions of ranges (about 16 bytes each)."""
        if (self.recorded.range_count() + self.failed.range_count()) * RANGE_JSON_MAX <= SUMMARY_RANGES:
            return None
        size, first = 0, SUMMARY_RANGES // 6 + 1  # a range's JSON takes 6 bytes at least: [0,1],
        for start, end in heapq.merge(self.recorded.spans(first), self.failed.spans(first)):
            size += len(str(start)) + len(str(end)) + 4  # [start,end] and a comma
            if size > SUMMARY_RANGES:
                return start
        return None
