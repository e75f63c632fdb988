"""What the server writes per stream: detections as JSON lines, and an annotated MP4."""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from temposplit import protocol as P


def detection_records(det) -> list[dict]:
    """COCO-style records ([x, y, w, h] boxes) of a Detections object."""
    out = []
    for (x1, y1, x2, y2), s, c, label in zip(det.boxes, det.scores, det.category_ids, det.labels, strict=True):
        out.append(
            {
                "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                "score": round(float(s), 5),
                "category_id": int(c),
                "label": label,
            }
        )
    return out


@dataclass
class RecordedDetections:
    """A frame's detections read back from its record (what :class:`AnnotatedVideo` draws):
    ``boxes`` x1, y1, x2, y2 in source-frame pixels, ``scores``, ``labels``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list


def recorded_detections(records: list[dict]) -> RecordedDetections:
    """The inverse of :func:`detection_records`: COCO-style records ([x, y, w, h]) as boxes."""
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)], np.float32)
    scores = np.array([r["score"] for r in records], np.float32)
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):  # NaN in JSON: a record edited by hand
        raise ValueError("a box or score that is not a finite number")
    return RecordedDetections(boxes.reshape(-1, 4), scores, [str(r.get("label", "")) for r in records])


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def time_fields(time_us: int | None, utc_us: int | None) -> dict:
    """A record's times (docs/protocol.md, "Frame times"): ``time``, seconds into the source
    (6 decimals), and ``utc``, when a live source gave the picture (ISO 8601, milliseconds);
    each only where the edge sent it."""
    out: dict = {}
    if time_us is not None:
        out["time"] = round(time_us / 1e6, 6)
    if utc_us is not None:
        when = EPOCH + datetime.timedelta(milliseconds=utc_us // 1000)
        out["utc"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return out


def shown_at(time_us: int | None, utc_us: int | None) -> float | None:
    """When a frame is shown in the annotated video, in seconds on the clock of its times
    (the source's, or UTC for a live source), or None where the edge sent no time."""
    if time_us is not None:
        return time_us / 1e6
    return None if utc_us is None else utc_us / 1e6


def recorded_at(rec: dict) -> float | None:
    """:func:`shown_at` of a record read back (its ``time``, else its ``utc``), or None."""
    when = rec.get("time")
    if isinstance(when, (int, float)) and not isinstance(when, bool) and abs(when) < P.MAX_TIME_US / 1e6:
        return float(when)  # (not NaN, nor a number edited in past the protocol's range)
    try:
        return datetime.datetime.fromisoformat(str(rec["utc"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError, OverflowError):
        return None


# A line as DetectionLog.write writes it: the frame, its times where known, then the bytes
# and detections, or the error.
WRITTEN = re.compile(
    rb'\{"frame":(0|[1-9][0-9]*),(?:"time":-?[0-9.e+-]+,)?(?:"utc":"[0-9TZ:.-]+",)?'
    rb'(?:"kind":"[a-z]*","n_bits":[0-9]+,"bytes":([0-9]+),"detections":\[.*\]'
    rb'|"error":"(?:[^"\\]|\\.)*")\}\n\Z',
    re.S,
)


def _record(line: bytes) -> dict | None:
    """One log line as a record, or None: not JSON, or a frame number no stream can have
    (e.g. a line edited by hand)."""
    try:
        rec = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    frame = rec.get("frame") if isinstance(rec, dict) else None
    if isinstance(frame, int) and not isinstance(frame, bool) and 0 <= frame < P.MAX_FRAMES:
        return rec
    return None


class DetectionLog:
    """One JSON object per line and per frame: detections, or an explicit error.

    The file is only appended to, a record at a time and whole or not at all: its bytes go
    to the OS unbuffered before it is acknowledged (none waits in this process), so a killed
    server keeps every acknowledged record; a write that fails part way (a full disk) is cut
    back to where the record began, so that no half line stays for the next record to be
    glued to. Records go only to the file the path names: a log removed, renamed or replaced
    (rotated) while in use fails the next record, and so does one emptied or cut short in
    place (logrotate's ``copytruncate``): the records before would then be in the copy only,
    and a resume from the files would not know them.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._torn: int | None = None  # where to cut the file back to: a failed write's undoing failed too
        self._size = os.fstat(self._fd).st_size  # what this log holds: the file is never shorter
        self._lock = threading.Lock()

    @staticmethod
    def read(path: Path) -> list[dict]:
        """The records of an existing log, as a list (:meth:`records` reads them one by one)."""
        return list(DetectionLog.records(path))

    @staticmethod
    def records(path: Path, after: int = -1):
        """The records of an existing log of frames past ``after``, one at a time
        (:meth:`_lines`); a line as :meth:`write` writes it of a frame up to ``after`` is
        passed over unparsed."""
        for line in DetectionLog._lines(path):
            m = WRITTEN.match(line) if after >= 0 else None
            if m is not None and int(m[1]) <= after:
                continue
            rec = _record(line)
            if rec is not None and rec["frame"] > after:
                yield rec

    @staticmethod
    def frames(path: Path):
        """``(frame, error, bytes)`` of each record of an existing log, one at a time: what a
        resume needs. A line as :meth:`write` writes it is read from its head, its detections
        passed over (about 20 times faster than parsing them: a resume's HELLO is answered
        within the edge's timeout); any other line is parsed."""
        for line in DetectionLog._lines(path):
            m = WRITTEN.match(line)
            if m is not None:
                frame = int(m[1])
                if frame < P.MAX_FRAMES:
                    yield frame, m[2] is None, int(m[2] or 0)
                continue
            rec = _record(line)
            if rec is not None:
                yield rec["frame"], "error" in rec, 0 if "error" in rec else int(rec.get("bytes", 0) or 0)

    @staticmethod
    def _lines(path: Path):
        """The complete lines of an existing log, one at a time: a line in memory, never the
        file (a stream of a day at 30 frames/s logs gigabytes). A last line cut short by a
        crash (no newline) is not a record: it is cut off the file so that appending starts
        on a fresh line."""
        if not path.is_file():
            return
        with open(path, "r+b") as f:
            end = size = f.seek(0, os.SEEK_END)
            while end > 0:  # back to the last newline, a block at a time
                start = max(0, end - (1 << 16))
                f.seek(start)
                cut = f.read(end - start).rfind(b"\n")
                if cut >= 0:
                    end = start + cut + 1
                    break
                end = start
            if end < size:
                f.truncate(end)
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield line

    def write(self, record: dict) -> None:
        """Append ``record`` as one line, whole or not at all: on any error the file is cut
        back to its size before the record, and the error raised (the record is not written)."""
        data = memoryview((json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"))
        with self._lock:
            if self._fd < 0:
                raise ValueError("the detections log is closed")
            if self._torn is not None:  # an earlier record's part is still there: cut it first
                os.ftruncate(self._fd, self._torn)
                self._torn = None
            self._check_path()
            size = os.fstat(self._fd).st_size
            if size < self._size:
                raise OSError(
                    errno.ESTALE,
                    f"the detections log was cut short in place while in use ({size} of its {self._size} bytes "
                    "left; it must not be rotated while its stream is open)",
                    str(self.path),
                )
            try:
                while data:  # a short write (the disk filling) goes on where it stopped, or raises
                    data = data[os.write(self._fd, data) :]
            except BaseException:
                try:
                    os.ftruncate(self._fd, size)
                except OSError:
                    self._torn = size  # cut before the next record is written
                raise
            self._size = os.fstat(self._fd).st_size

    def _check_path(self) -> None:
        """Raise FileNotFoundError unless the open file is the one the path names."""
        st = os.fstat(self._fd)
        if st.st_nlink == 0:  # removed (its folder too): a record would be nowhere
            raise FileNotFoundError(errno.ENOENT, "the detections log was removed while in use", str(self.path))
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):  # renamed: rotated
            raise FileNotFoundError(
                errno.ENOENT,
                "the detections log was renamed or replaced while in use (it must not be rotated while its "
                "stream is open)",
                str(self.path),
            )

    def close(self) -> None:
        """Sync and close; the file is closed even when the sync fails (which is raised)."""
        with self._lock:
            if self._fd < 0:
                return
            fd, self._fd = self._fd, -1
            try:
                if self._torn is not None:
                    os.ftruncate(fd, self._torn)
                os.fsync(fd)
            finally:
                os.close(fd)

    def abort(self) -> None:
        """Close without syncing, raising nothing (the stream's setup failed: the log goes)."""
        with self._lock:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


MILLISECOND = Fraction(1, 1000)  # the annotated video's time base
MAX_GAP_MS = 60_000  # a longer gap between two pictures' times is the clock stepping (AnnotatedVideo, "Timing")
# The annotated video's colour (FFmpeg's AVColorPrimaries, AVColorTransferCharacteristic,
# AVColorSpace and AVColorRange codes): BT.709 primaries, transfer and matrix, limited range.
COLOUR_TAGS = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}


# Pictures the annotated video holds back for an earlier frame still to come (decode order):
# past that, the earlier one is drawn lost.
REORDER_WINDOW = 64


class AnnotatedVideo:
    """Frames in display order with boxes, labels and the running rate drawn on them.

    The server sees features, not pixels: the picture is the source frame when the
    server may read the edge's video (``frames`` given: a local file, as in the demo),
    else a heat map of the decoded cut tensor's mean activation. Results arrive in
    decode order; a bounded reorder window puts them back in display order, and a frame
    that never comes is drawn as lost ("Gaps"). The picture's longer side is at most ``max_side``
    (boxes are scaled with it); the MP4 is fragmented, so a killed server leaves a
    playable file; one encoder thread per video. ``start`` is the first frame index of
    this segment (a resumed stream's video goes on in a new file).

    Timing: each picture is shown at its frame's time (``add``'s ``when``, seconds on the
    clock of the frame's times), counted from the segment's first, so a clip of variable
    rate, or a live source whose reader dropped pictures, plays as the scene happened; a
    frame without a time (lost, or from an edge that sent none) comes one frame period
    (the stream's rate, rounded to whole frames a second) after the picture before. A time
    not after the last picture's, or more than MAX_GAP_MS after it (the edge's clock
    stepped: an NTP correction, a board without a real-time clock setting its time) is
    shown one period after the last picture and sets the clock from there. Times are in
    milliseconds.

    Gaps: a run of frames without a picture of their own (lost, or an error record without
    a time: a SKIP, END's "never received") is held, and drawn once it ends as one picture
    naming the run, shown at its first frame's time and again at its last's: two pictures
    however long the run, at the times its frames would have had. (Drawn one by one, a
    stream that announced 4096x4096 frames and sent a SKIP of frame 255 and an END, about
    250 bytes, made the worker encode 256 pictures of 1280x1280: 8 s in which every stream
    waited.) A ``written`` counter counts the pictures encoded.

    Colour: the RGB picture is converted to YCbCr with the BT.709 matrix in limited range
    (:data:`COLOUR_TAGS`), and the stream is tagged so (BT.709 primaries, transfer and
    matrix, tv range), so that every player shows what was drawn; swscale's default, the
    BT.601 matrix untagged, is read as BT.709 by players at 1280x720 (docs/models.md,
    "Colour"): pure green came out as 0,215,0.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        frames=None,
        window: int = REORDER_WINDOW,
        min_score: float = 0.5,
        start: int = 0,
        max_side: int = 1280,
    ):
        import av

        self.scale = min(1.0, max_side / max(width, height))
        width, height = max(2, round(width * self.scale)), max(2, round(height * self.scale))
        self.path, self.width, self.height = path, width - width % 2, height - height % 2
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"})
        self.rate = max(1, round(fps))
        self.stream = self.container.add_stream("libx264", rate=self.rate)
        self.stream.time_base = self.stream.codec_context.time_base = MILLISECOND
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.options = {"crf": "23", "preset": "veryfast", "tune": "zerolatency", "threads": "1"}
        self.stream.codec_context.thread_count = 1
        for name, value in COLOUR_TAGS.items():  # the H.264 stream's VUI and the MP4's colr box
            setattr(self.stream.codec_context, name, value)
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()  # one swscale context for the whole video
        self.frames = frames  # iterator of RGB frames in display order, or None
        self.pending: dict[int, tuple] = {}
        self.next = start
        self.window = window
        self.min_score = min_score
        self.written = 0  # pictures encoded
        self.held: tuple[int, int, str] | None = None  # a run of frames without a picture: first, last, text
        self.origin: float | None = None  # the clock's time (s) at the segment's pts 0
        self.pts: int | None = None  # the last picture's, in ms
        self.anchor, self.untimed = 0, 0  # the last picture on the clock (ms), and the untimed ones since

    def add(
        self,
        index: int,
        detections=None,
        heat: np.ndarray | None = None,
        caption: str = "",
        error: str = "",
        when: float | None = None,
    ):
        if index < self.next or index in self.pending:
            return
        self.pending[index] = (detections, heat, caption, error, when)
        while self.next in self.pending or len(self.pending) > self.window:
            self._draw_next(self.pending.pop(self.next, None))

    def finish(self, total: int | None = None) -> None:
        end = max([total or 0, self.next, *(k + 1 for k in self.pending)])
        while self.next < end:
            self._draw_next(self.pending.pop(self.next, None))
        self._draw_held()
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()  # a generator over the source video: its decoder and file go now

    def _draw_next(self, item) -> None:
        """Frame ``self.next``'s picture (``item``; None: it never came). A frame without a
        picture of its own (lost, or an error record without a time) joins the run held
        (class docstring, "Gaps"), drawn once the run ends."""
        index, self.next = self.next, self.next + 1
        if item is None or (item[0] is None and item[1] is None and item[3] and item[4] is None):
            text = "frame lost" if item is None else item[3]
            first = self.held[0] if self.held is not None else index
            self.held = (first, index, text if first == index else f"frames {first}-{index} lost or failed")
            return
        self._draw_held()
        self._write(item)

    def _draw_held(self) -> None:
        """The run of frames held (``_draw_next``), however long: its first frame's picture,
        and where the run is longer, the same picture again at its last frame's time."""
        if self.held is None:
            return
        first, last, text = self.held
        self.held = None
        img = self._write((None, None, "", text, None))
        if last > first:
            self._skip_source(last - first)
            self.untimed += last - first - 1  # the run's periods, as if each frame were drawn
            self._encode(img, self._next_pts(None))

    def abort(self) -> None:
        """Close without finishing, raising nothing (the stream's setup failed: the file goes)."""
        try:
            self.container.close()
        except Exception:  # e.g. its header cannot be written on a full disk
            pass
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()

    def _next_pts(self, when: float | None) -> int:
        """The next picture's pts in ms (class docstring, "Timing")."""
        if when is not None and math.isfinite(when) and self.origin is not None:
            pts = round((when - self.origin) * 1000)
            if self.pts < pts <= self.pts + MAX_GAP_MS:  # on the clock: shown at its time
                self.pts, self.anchor, self.untimed = pts, pts, 0
                return pts
        pts = self._after_last()
        if when is not None and math.isfinite(when):  # the first time, or the clock stepped: it sets the clock
            self.origin, self.anchor, self.untimed = when - pts / 1000, pts, 0
        self.pts = pts
        return pts

    def _after_last(self) -> int:
        """A period after the last picture, counted from the last one on the clock (the
        periods of many untimed pictures do not add up their rounding)."""
        if self.pts is None:
            return 0
        self.untimed += 1
        return max(self.pts + 1, self.anchor + round(self.untimed * 1000 / self.rate))

    def _picture(self, heat) -> np.ndarray:
        import cv2

        frame = None
        if self.frames is not None:
            try:
                frame = next(self.frames, None)
            except Exception:  # the source stopped decoding part way: the features from here on
                self.frames = None
        if frame is not None:
            return np.ascontiguousarray(cv2.resize(frame, (self.width, self.height)))
        if heat is not None:
            h = heat.astype(np.float32)
            h = (255 * (h - h.min()) / (np.ptp(h) + 1e-9)).astype(np.uint8)
            rgb = cv2.applyColorMap(
                cv2.resize(h, (self.width, self.height), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_VIRIDIS
            )
            return np.ascontiguousarray(rgb[..., ::-1])
        return np.zeros((self.height, self.width, 3), np.uint8)

    def _skip_source(self, n: int) -> None:
        """Pass over the source video's next ``n`` frames (a held run's, drawn with its first)."""
        for _ in range(n):
            if self.frames is None:
                return
            try:
                if next(self.frames, None) is None:
                    return
            except Exception:  # as in _picture: the features from here on
                self.frames = None

    def _write(self, item) -> np.ndarray:
        """Draw and encode one picture at its time; returns the picture."""
        import cv2

        detections, heat, caption, error, when = item
        img = self._picture(heat)
        if detections is not None:
            k = self.scale
            for (x1, y1, x2, y2), s, label in zip(detections.boxes, detections.scores, detections.labels, strict=True):
                if s < self.min_score:
                    continue
                p1, p2 = (int(x1 * k), int(y1 * k)), (int(x2 * k), int(y2 * k))
                cv2.rectangle(img, p1, p2, (255, 64, 32), 2)
                cv2.putText(
                    img,
                    f"{label} {s:.2f}",
                    (p1[0], max(12, p1[1] - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.45,
                    (255, 255, 0),
                    1,
                    cv2.LINE_AA,
                )
        text = error or caption
        if text:
            cv2.putText(
                img,
                text,
                (8, self.height - 10),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                (255, 60, 60) if error else (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
        self._encode(img, self._next_pts(when))
        return img

    def _encode(self, img: np.ndarray, pts: int) -> None:
        import av
        from av.video.reformatter import ColorRange, Colorspace

        frame = self._reformatter.reformat(
            av.VideoFrame.from_ndarray(img, format="rgb24"),
            format="yuv420p",
            dst_colorspace=Colorspace.ITU709,
            dst_color_range=ColorRange.MPEG,
            threads=1,
        )
        frame.pts, frame.time_base = pts, MILLISECOND
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.written += 1
