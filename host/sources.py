"""Frame sources for the edge: a video file, a camera or a network camera's URL, through
PyAV (V4L2 cameras on Linux), or OpenCV where PyAV is not installed (the PYNQ image ships
OpenCV); or decoded frames in a ``.npy`` file, (N, H, W, 3) RGB uint8, read with NumPy
alone (the emulated board, whose root has neither: the same frames on every machine,
whatever its decoder).

A network source (docs/deployment.md, "Network cameras") is decoded in a thread of its
own that keeps the newest :data:`LIVE_FRAMES` pictures, so that a camera faster than the
edge builds no backlog; its URL's credentials are redacted (:func:`redact`) wherever it
is shown or stored."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temposplit.errors import ConfigError, MissingDependencyError


def _backend() -> str:
    try:
        import av  # noqa: F401

        return "av"
    except ImportError:
        try:
            import cv2  # noqa: F401

            return "cv2"
        except ImportError as exc:
            raise MissingDependencyError("reading video needs PyAV (`pip install av`) or OpenCV") from exc


V4L2_MAJOR = 81  # Linux's video4linux character devices (/dev/videoN)

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "tcp", "srt", "rtmp", "rtmps")
SOURCE_TIMEOUT = 10.0  # seconds a network source may stay silent (--source-timeout)
MAX_SOURCE_TIMEOUT = 3600.0
LIVE_FRAMES = 4  # the newest pictures a live network source keeps for the edge; older ones are dropped
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred", re.IGNORECASE)
_OPTION = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_-]*)=(.*)", re.DOTALL)


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL: a scheme, then ``://``. ``x:y.mp4``, ``file:v.mp4`` and
    ``pipe:0`` are file names."""
    return bool(_URL.match(path))


def redact(url: str) -> str:
    """``url`` as it may be shown or stored: its user information ``user:***`` (a user name
    alone, possibly a token, ``***``), and ``***`` for the value of each query parameter
    whose name says it is a secret (``pwd``, ``password``, ``token``, ``passphrase``, ...).
    Any other text is returned as it is."""
    match = _URL.match(url)
    if not match:
        return url
    start = match.end()
    # The user information ends at the URL's last '@': a password typed with an unescaped
    # '@', '/', '?' or '#' (which FFmpeg then misreads, and the error names the URL) is
    # hidden whole. An '@' in a path or a query hides more than it must, never less.
    at = url.rfind("@")
    if at >= start:
        user, colon, _ = url[start:at].partition(":")
        shown = f"{user}:***" if colon and "/" not in user and "?" not in user else "***"
        url = url[:start] + shown + url[at:]

    def hide(m: re.Match) -> str:
        return f"{m.group(1)}***" if _SECRET_KEY.search(m.group(2)) else m.group(0)

    head, question, query = url.partition("?")
    if question:
        query = re.sub(r"((?:^|(?<=[&;]))([^=&;#]*)=)([^&;#]*)", hide, query)
    return head + question + query


def check_seconds(value, option: str, maximum: float) -> float:
    """``value`` as a duration in seconds: finite, in (0, ``maximum``], else a ConfigError
    naming ``option``."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= maximum):
        raise ConfigError(f"{option} must be positive, at most {maximum:g} s, not {value}")
    return seconds


def check_source_timeout(value, option: str = "--source-timeout") -> float:
    """``value`` as the seconds a network source may stay silent: finite, in (0, MAX_SOURCE_TIMEOUT]."""
    return check_seconds(value, option, MAX_SOURCE_TIMEOUT)


def input_options(items) -> dict[str, str]:
    """``--input-option KEY=VALUE`` items as FFmpeg's options: a key of letters, digits,
    ``_`` and ``-``, each key once."""
    options: dict[str, str] = {}
    for item in items or ():
        match = _OPTION.fullmatch(item)
        if not match:
            raise ConfigError(
                f"--input-option must be KEY=VALUE (an FFmpeg option, e.g. rtsp_transport=tcp), not {item!r}"
            )
        key, value = match.groups()
        if key in options:
            raise ConfigError(f"--input-option {key} is given twice")
        options[key] = value
    return options


def is_camera(path: str) -> bool:
    """Whether ``path`` names a V4L2 camera: ``/dev/videoN``, or a link to one (udev's stable
    names, ``/dev/v4l/by-id/usb-...-video-index0``), or another character device of video4linux.
    Anything else is a file (a video, an image, decoded frames in a ``.npy``)."""
    if path.startswith("/dev/video") or re.fullmatch(r"/dev/video\d+", os.path.realpath(path)):
        return True
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == V4L2_MAJOR


def _cv2_capture(path: str, camera: bool, url: str | None = None, options: dict | None = None, timeout: float = 0):
    """OpenCV's capture of a camera (by its index where the node is ``/dev/videoN``, else by
    the node's path through V4L2), a file (by its absolute name: FFmpeg, under OpenCV, takes
    a relative one such as ``x:y.mp4`` for a URL) or a network source (``url``, through
    OpenCV's FFmpeg, its ``options`` in ``OPENCV_FFMPEG_CAPTURE_OPTIONS``, ``timeout``
    seconds to open and for each picture)."""
    import cv2

    # FFmpeg's own lines (a damaged file's, by the dozen; a URL's, which may name its
    # credentials): none. OpenCV reads the variable at its first capture in the process.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if url is not None:
        return _cv2_network_capture(cv2, url, path, options or {}, timeout)
    if not camera:
        return cv2.VideoCapture(os.path.abspath(path))
    index = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(path))
    return cv2.VideoCapture(int(index.group(1))) if index else cv2.VideoCapture(path, cv2.CAP_V4L2)


def _cv2_missing_tail(path: str, read: int, counted: int | None) -> str | None:
    """Why a video file that OpenCV stopped reading after ``read`` frames looks cut short,
    or None. Only an AVI tells: its RIFF chunk's size, written when the file was finished,
    is past the file's end, and fewer frames than its header counts (``counted``) were read.
    The frame count alone tells nothing: an AVI or FLV counts the empty entries a held
    picture leaves (a variable rate's), an MP4's edit list hides frames it counts, and a
    Matroska file counts none (OpenCV gives its duration times a rate); those files are
    read as far as they decode."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    riff = int.from_bytes(head[4:8], "little") + 8
    if riff <= size or not counted or read >= counted:
        return None
    return f"the file ends after {read} of the {counted} frames its container announces"


def _cv2_network_capture(cv2, url: str, shown: str, options: dict, timeout: float):
    bad = [k for k, v in options.items() if ";" in v or "|" in v]
    if bad:
        raise ConfigError(f"--input-option {bad[0]}: OpenCV's reader cannot pass a value holding ';' or '|'")
    params = []
    for name in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC"):  # OpenCV 4.5.2 and later
        if hasattr(cv2, name):
            params += [getattr(cv2, name), int(timeout * 1000)]
    before = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join(f"{k};{v}" for k, v in options.items())
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its warnings: a second line
    try:
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    finally:
        cv2.utils.logging.setLogLevel(level)
        if before is None:
            del os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
        else:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = before


def _ffmpeg_why(exc: BaseException, timeout: float, waited: float) -> str:
    """An FFmpeg error, after ``waited`` seconds, as words; never its text (PyAV's names the
    URL, credentials and all). PyAV's interrupt callback (the timeout) is an ExitError,
    or, through a demuxer that gives its own error for it (RTSP: "Invalid data"), any error
    that came after the timeout."""
    import av

    if isinstance(exc, av.error.ExitError) or waited >= timeout:
        return f"nothing received for {timeout:g} s (--source-timeout)"
    return getattr(exc, "strerror", None) or type(exc).__name__


def _open_network(url: str, shown: str, options: dict, timeout: float):
    """PyAV's container of a network source and its video stream, or a ConfigError naming
    ``shown`` (the URL redacted)."""
    import av

    scheme = url.split(":", 1)[0].lower()
    start = time.monotonic()
    try:
        container = av.open(url, container_options=options, timeout=timeout, metadata_errors="replace")
    except av.error.ProtocolNotFoundError:
        raise ConfigError(f"cannot open {shown}: this FFmpeg (PyAV's) has no {scheme} protocol") from None
    except (OSError, av.error.FFmpegError) as exc:
        why = _ffmpeg_why(exc, timeout, time.monotonic() - start)
        raise ConfigError(f"cannot open {shown}: {why}") from None
    if not container.streams.video:
        container.close()
        raise ConfigError(f"{shown} has no video stream")
    return container, container.streams.best("video") or container.streams.video[0]


def _network_pictures(container, stream, timeout: float):
    """The decoded pictures (PyAV frames, each with its presentation time in seconds from
    the stream's start, or None) of an opened network source, until it ends; a
    silence of ``timeout`` seconds (no bytes, or bytes that give no picture) is a
    :class:`_Stopped`. A packet that does not decode (a corrupt or lost one) is skipped, as
    players do: a live stream goes on at its next picture."""
    import av

    heard = seen = time.monotonic()  # the last packet, the last picture (or the edge's last request)
    from temposplit.model.data import stream_start

    origin = stream_start(stream)
    try:
        for packet in container.demux(stream):
            heard = time.monotonic()
            try:
                pictures = packet.decode()
            except av.error.FFmpegError:
                pictures = []
            for picture in pictures:
                yield picture, (None if picture.time is None else picture.time - origin)
                heard = seen = time.monotonic()
            if heard - seen > timeout:
                raise _Stopped(f"no picture for {timeout:g} s")
    except (OSError, av.error.FFmpegError) as exc:
        raise _Stopped(_ffmpeg_why(exc, timeout, time.monotonic() - heard)) from None


def _cv2_time(cap, last: float | None) -> float | None:
    """The presentation time (s, from the stream's start) of the picture OpenCV just read, or
    None where it has none: OpenCV says 0 for a picture without a timestamp (a raw H.264
    stream, a flushed B frame), so a time that does not come after the last one is none."""
    import cv2

    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
    if not math.isfinite(ms) or ms < 0 or (last is not None and ms / 1000 <= last):
        return None
    return ms / 1000


class _Stopped(Exception):
    """A network source that stopped part way: why, in words (no URL)."""


class _Newest:
    """A live source's pictures, decoded in a thread of its own as fast as they come, of
    which the newest ``keep`` wait for the edge: the oldest is dropped (and counted) when a
    new one comes to a full queue. With ``drop`` false (a source of known duration) the
    thread waits for room instead. ``pictures`` is called in the thread (it opens the
    source there: the thread owns it) and yields pictures, raising :class:`_Stopped`."""

    def __init__(self, pictures, keep: int, drop: bool, name: str):
        self._pictures, self._keep, self._drop = pictures, keep, drop
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._done = self._stopped = self._interrupted = False
        self._error: str | None = None
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"source {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        error = None
        try:
            pictures = self._pictures()
            try:
                for picture in pictures:
                    came = time.time()  # when it came: before any wait for room (a source read whole)
                    with self._cond:
                        while not self._drop and len(self._queue) >= self._keep and not self._stopped:
                            self._cond.wait()
                        if self._stopped:
                            return
                        if len(self._queue) >= self._keep:
                            self._queue.popleft()
                            self.dropped += 1
                        self._queue.append((picture, came))
                        self._cond.notify_all()
            finally:
                pictures.close()
        except (_Stopped, ConfigError) as exc:
            error = str(exc)
        except Exception as exc:  # not the text: an FFmpeg error's names the URL
            error = f"the reader failed ({type(exc).__name__})"
        finally:
            with self._cond:
                self._done, self._error = True, error
                self._cond.notify_all()

    def take(self):
        """The oldest picture kept, with the Unix time it came at; None at the source's end,
        or at once once :meth:`interrupt` was called with none kept; :class:`_Stopped` where
        it failed."""
        with self._cond:
            while not self._queue and not self._done and not self._interrupted:
                self._cond.wait(1.0)
            if self._queue:
                picture = self._queue.popleft()
                self._cond.notify_all()
                return picture
            if self._error is not None:
                raise _Stopped(self._error)
            return None

    def interrupt(self) -> None:
        """A waiting :meth:`take` returns None now, not after the source's silence timeout
        (Ctrl-C on an edge whose network source went silent waited it out, up to an hour)."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def stop(self) -> None:
        """Let the thread go: it closes the source at its next picture (or its timeout)."""
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()


@dataclass(frozen=True)
class Stamped:
    """A source's picture with its times (docs/protocol.md, "Frame times"): ``time``, seconds
    into a file (its presentation time), ``utc``, the Unix time at which a live source's
    picture came to the edge; None where not known (the edge then takes a file's position
    at the stream's rate)."""

    picture: np.ndarray
    time: float | None = None
    utc: float | None = None


@dataclass
class Source:
    path: str  # as shown: a network source's URL redacted (:func:`redact`)
    fps: float
    count: int | None
    camera: bool
    backend: str = "av"
    size: tuple[int, int] | None = None  # the first frame's (H, W), where known before reading
    url: str | None = field(default=None, repr=False)  # a network source's URL, credentials and all
    options: dict = field(default_factory=dict, repr=False)  # FFmpeg's options (--input-option)
    timeout: float = SOURCE_TIMEOUT  # seconds a network source may stay silent
    finite: bool = False  # a network source of known duration (a file over HTTP): read whole, none dropped
    dropped: int = 0  # pictures of a live network source dropped for newer ones (so far)
    interrupted: bool = field(default=False, init=False, repr=False)  # interrupt() called: the frames end
    _reader: object = field(default=None, init=False, repr=False)  # a network source's _Newest, while read

    def interrupt(self) -> None:
        """End :meth:`frames` at once, a network source's wait for a picture included (a
        signal handler's call: the edge then ends its stream with what it sent)."""
        self.interrupted = True
        reader = self._reader
        if reader is not None:
            reader.interrupt()

    @property
    def live(self) -> bool:
        """A camera or a network source of no known duration: frames numbered as the edge
        takes them, a resumed stream numbered on (docs/protocol.md, "Frame identity"). A
        file read over the network (``finite``) is read whole from its start, as a local
        file is: its frames keep their positions, and a resume skips those recorded."""
        return self.camera or (self.url is not None and not self.finite)

    def frames(self):
        """RGB uint8 frames (H, W, 3), all of the first frame's size: a frame of another
        size (a stream that changes resolution part way) is a :class:`ConfigError`, since
        the server maps every frame's boxes with the size the stream announced."""
        for item in self.stamped():
            yield item.picture

    def stamped(self):
        """The frames of :meth:`frames`, each a :class:`Stamped` with its times."""
        from temposplit.model.data import one_size

        last: list[Stamped] = []

        def pictures():
            for item in self._frames():
                last[:] = [item]
                yield item.picture

        for picture in one_size(pictures(), self.path):
            yield Stamped(picture, last[0].time, last[0].utc)

    def _frames(self):
        if self.backend == "npy":
            frames = np.load(self.path, mmap_mode="r", allow_pickle=False)
            for i in range(frames.shape[0]):
                yield Stamped(np.array(frames[i]))
            return
        if self.url is not None:
            yield from self._frames_network()
            return
        if self.backend == "cv2":
            yield from self._frames_cv2()
            return
        from temposplit.model.data import read_video, upright_rgb

        if not self.camera:
            for picture, when in read_video(self.path, timed=True):
                yield Stamped(picture, when)
            return
        import av

        try:
            container = av.open(self.path, format="v4l2", metadata_errors="replace", **_av_options(self.options))
        except (OSError, av.error.FFmpegError) as exc:
            raise ConfigError(f"cannot open {self.path}: {exc}") from exc
        with container:
            frames, index = container.decode(container.streams.video[0]), 0
            while True:
                try:  # a camera unplugged or failing part way: the edge ends the stream with what it sent
                    frame = next(frames, None)
                except (OSError, av.error.FFmpegError) as exc:
                    why = getattr(exc, "strerror", None) or exc
                    raise ConfigError(f"{self.path}: the camera failed at frame {index}: {why}") from None
                if frame is None:  # a camera has no end: it stopped (its driver, unplugged)
                    raise ConfigError(f"{self.path}: the camera stopped at frame {index}: it gives no more pictures")
                yield Stamped(upright_rgb(frame), utc=time.time())
                index += 1

    def _frames_cv2(self):
        import cv2

        cap = _cv2_capture(self.path, self.camera)
        if not cap.isOpened():
            raise ConfigError(f"cannot open {self.path}")
        try:
            last, index = None, 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    if self.camera:  # OpenCV tells no error from an end, and a camera has no end
                        raise ConfigError(f"{self.path}: the camera stopped at frame {index}: no picture from it")
                    missing = _cv2_missing_tail(self.path, index, self.count)
                    if missing:  # as PyAV's reader says it (model/data.py's read_video)
                        raise ConfigError(f"{self.path}: cannot decode frame {index}: {missing} (a truncated file?)")
                    return
                index += 1
                if self.camera:
                    yield Stamped(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), utc=time.time())
                    continue
                when = _cv2_time(cap, last)
                last = when if when is not None else last
                yield Stamped(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), when)
        finally:
            cap.release()

    def _frames_network(self):
        """A network source's frames, taken from a :class:`_Newest` reader: connected again
        (the probe's connection was closed while the model loaded). Its end, where its
        duration is not known, and its failure are a ConfigError naming the frame: the edge
        ends the stream there."""
        if self.backend == "cv2":
            import cv2

            pictures, rgb = self._pictures_cv2, lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        else:
            from temposplit.model.data import upright_rgb

            pictures, rgb = self._pictures_av, upright_rgb
        reader = self._reader = _Newest(pictures, LIVE_FRAMES, drop=not self.finite, name=self.path)
        if self.interrupted:
            reader.interrupt()
        index = 0
        try:
            while True:
                try:
                    taken = reader.take()
                except _Stopped as exc:
                    raise ConfigError(f"{self.path}: the stream stopped at frame {index}: {exc}") from None
                finally:
                    self.dropped = reader.dropped
                if taken is None:
                    if self.interrupted:  # a signal: the edge ends the stream with what it sent
                        return
                    if not self.finite:  # a live stream has no end of its own
                        raise ConfigError(f"{self.path}: the stream stopped at frame {index}: the source closed it")
                    return
                (picture, when), came = taken
                # A source of known duration is a file read over the network: its own times;
                # a live one's pictures are timed when they came (docs/protocol.md, "Frame times").
                yield Stamped(rgb(picture), when, None) if self.finite else Stamped(rgb(picture), None, came)
                index += 1
        finally:
            self._reader = None
            reader.stop()

    def _pictures_av(self):
        try:
            container, stream = _open_network(self.url, self.path, self.options, self.timeout)
        except ConfigError as exc:  # gone since the probe
            raise _Stopped(str(exc).removeprefix(f"cannot open {self.path}: ")) from None
        with container:
            yield from _network_pictures(container, stream, self.timeout)

    def _pictures_cv2(self):
        cap = _cv2_capture(self.path, False, self.url, self.options, self.timeout)
        try:
            if not cap.isOpened():
                raise _Stopped("cannot connect again")
            last = None
            while True:
                ok, bgr = cap.read()
                if not ok:  # OpenCV tells neither its timeout nor an error from the end
                    if self.finite:
                        return
                    raise _Stopped(f"no picture (none for {self.timeout:g} s, or the source closed it)")
                when = _cv2_time(cap, last)
                last = when if when is not None else last
                yield bgr, when
        finally:
            cap.release()


def _av_options(options: dict) -> dict:
    """``av.open``'s keyword for FFmpeg's options of the source (none: the call as before)."""
    return {"container_options": dict(options)} if options else {}


def open_source(path: str, backend: str | None = None, options: dict | None = None, timeout: float = SOURCE_TIMEOUT):
    """The source ``path`` names, opened and checked (its rate, count and first frame's size
    read): a file, a ``.npy`` of frames, a V4L2 camera, or a network source's URL
    (:data:`NETWORK_SCHEMES`). ``options``: FFmpeg's options of a camera or a network
    source (``--input-option``); ``timeout``: the seconds a network source may stay silent."""
    options = dict(options or {})
    if is_url(path):
        return _open_url(path, backend, options, check_source_timeout(timeout, "the source timeout"))
    camera = is_camera(path)
    if options and not camera:
        raise ConfigError(f"--input-option is for cameras and network sources, not the file {path}")
    if not camera:
        from temposplit.model.data import check_video_file

        check_video_file(Path(path))
    if not camera and path.endswith(".npy"):
        try:
            frames = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path} as frames: {exc}") from exc
        if not isinstance(frames, np.ndarray):  # NumPy reads a zip (np.savez's) whatever its name
            frames.close()
            raise ConfigError(f"{path}: an .npz archive, not an .npy of frames ((N, H, W, 3) uint8)")
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape[1:3]:
            raise ConfigError(f"{path}: frames must be (N, H, W, 3) uint8, not {frames.dtype} {frames.shape}")
        if frames.shape[0] == 0:
            raise ConfigError(f"{path} has no frames (shape {frames.shape})")
        return Source(path, 30.0, int(frames.shape[0]), False, "npy", tuple(int(v) for v in frames.shape[1:3]))
    backend = backend or _backend()
    if backend == "cv2":
        import cv2

        if options:
            raise ConfigError(f"--input-option: OpenCV's reader takes FFmpeg's options for network sources, not {path}")
        cap = _cv2_capture(path, camera)
        try:
            if not cap.isOpened():
                raise ConfigError(f"cannot open {path} as a video")
            fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
            # OpenCV's count is an estimate, negative where unknown (-2^63 for an image, a raw
            # .h264): the encoder refused it. Only a positive count is kept.
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            count = int(count) if math.isfinite(count) and 1 <= count < 2**63 else None
            size = None
            if not camera:  # the first frame's size, checked before the model loads, as PyAV's reader does
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    raise ConfigError(f"{path} has no frame to decode")
                size = tuple(int(v) for v in bgr.shape[:2])
        finally:
            cap.release()
        return Source(path, float(fps), None if camera else count, camera, "cv2", size)
    if not camera:
        from temposplit.model.data import probe_video

        info = probe_video(path)
        return Source(path, info.fps, info.frames, False, "av", info.size)
    import av

    try:
        with av.open(path, format="v4l2", metadata_errors="replace", **_av_options(options)) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate) if s.average_rate else 30.0
    except (OSError, av.error.FFmpegError, IndexError) as exc:
        raise ConfigError(f"cannot open {path} as a video: {getattr(exc, 'strerror', None) or exc}") from exc
    return Source(path, fps, None, True, "av", options=options)


def _open_url(url: str, backend: str | None, options: dict, timeout: float) -> Source:
    """A network source, probed: connected, its rate and first picture's size read, closed
    again (the edge connects anew once its model is loaded). A URL that is refused,
    unreachable or silent is a ConfigError naming it, its credentials redacted."""
    shown = redact(url)
    scheme = _URL.match(url).group(1).lower()
    url = scheme + url[len(scheme) :]  # (FFmpeg knows its protocols in lower case)
    if scheme not in NETWORK_SCHEMES:
        raise ConfigError(
            f"{shown}: the edge reads network sources of {', '.join(NETWORK_SCHEMES)}, not {scheme} "
            f"(a file of that name is ./{shown})"
        )
    if scheme in ("rtsp", "rtsps"):
        options.setdefault("rtsp_transport", "tcp")  # whole pictures (docs/deployment.md, "Network cameras")
    backend = backend or _backend()
    probe = _probe_cv2 if backend == "cv2" else _probe_av
    fps, size, finite = _waited_for(probe, url, shown, options, timeout)
    return Source(shown, fps, None, False, backend, size, url, options, timeout, finite)


def _waited_for(fn, *args):
    """``fn(*args)`` run in a thread of its own while this one waits: FFmpeg blocks in C,
    where Python's signal handlers cannot run (a Ctrl-C while a silent camera was being
    opened waited out the timeout, then was lost)."""
    done: dict = {}

    def run():
        try:
            done["value"] = fn(*args)
        except BaseException as exc:
            done["error"] = exc

    thread = threading.Thread(target=run, name="source probe", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in done:
        raise done["error"]
    return done["value"]


def _probe_av(url: str, shown: str, options: dict, timeout: float):
    """(rate, first picture's size, whether the duration is known) of a network source, through PyAV."""
    from temposplit.model.data import upright_rgb

    container, stream = _open_network(url, shown, options, timeout)
    with container:
        fps = float(stream.average_rate) if stream.average_rate else 30.0
        finite = container.duration is not None and container.duration > 0
        try:
            with contextlib.closing(_network_pictures(container, stream, timeout)) as pictures:
                first = next(pictures, None)
        except _Stopped as exc:
            raise ConfigError(f"{shown}: {exc}") from None
        if first is None:
            raise ConfigError(f"{shown} has no picture to decode")
        return fps, tuple(int(v) for v in upright_rgb(first[0]).shape[:2]), finite


def _probe_cv2(url: str, shown: str, options: dict, timeout: float):
    """As :func:`_probe_av`, through OpenCV (which tells no reason for a failure)."""
    import cv2

    cap = _cv2_capture(shown, False, url, options, timeout)
    try:
        if not cap.isOpened():
            raise ConfigError(f"cannot open {shown}: refused, unreachable, or no video for {timeout:g} s")
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        ok, bgr = cap.read()
        if not ok or bgr is None:
            raise ConfigError(f"{shown}: no picture for {timeout:g} s")
    finally:
        cap.release()
    fps = float(fps) if math.isfinite(fps) and fps > 0 else 30.0
    return fps, tuple(int(v) for v in bgr.shape[:2]), math.isfinite(count) and 1 <= count < 2**63


@dataclass
class ReplayFrame:
    """One frame of a feature file: the source frame's shape (H, W, 3) and its cut tensors."""

    index: int
    shape: tuple
    tensors: list


class Replay:
    """A feature file written by ``temposplit features`` (docs/bitstream.md, Feature
    files), replayed as the edge's source and M1 at once: its frames are the recorded cut
    tensors, so streaming them loads no model (NumPy only, no PyTorch).

    It has the :class:`~temposplit.host.pipeline.EdgeModel` interface the edge uses
    (``m1``, ``tensor_specs``, ``model_hash``, ``model``, ``cut.name``, ``m1_ms``) and a
    source's (``frames()``, ``fps``, ``count``).
    """

    IDENTITY = ("model", "cut", "model_hash", "frame_size", "fps")

    def __init__(self, path: str):
        import struct
        import zipfile
        import zlib
        from types import SimpleNamespace

        from temposplit.codec import features
        from temposplit.codec.errors import CodecError

        if not Path(path).is_file():
            raise MissingDependencyError(f"feature file {path} not found")
        # Whatever a damaged or foreign file makes NumPy, zipfile or the loader raise is this
        # file's fault: one ConfigError naming it (a MemoryError: a header announcing an
        # array larger than memory).
        damaged = (
            OSError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            IndexError,
            EOFError,
            MemoryError,
            OverflowError,
            struct.error,
            zipfile.BadZipFile,
            zlib.error,
        )
        try:
            self.clip = features.load(path, lazy=True)  # the codes read a frame at a time, as streamed
            if self.clip.frames < 1:
                raise ConfigError(f"{path}: no frames")
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in self.IDENTITY if k not in npz.files]
                if missing:
                    raise ConfigError(
                        f"{path}: no {', '.join(missing)}: not written by `temposplit features` (cannot be replayed)"
                    )
                identity = {k: npz[k] for k in self.IDENTITY}
            odd = [k for k, v in identity.items() if not isinstance(v, np.ndarray)]
            if odd:  # a member that is no .npy array (NumPy then returns its bytes)
                raise ConfigError(f"{path}: {', '.join(odd)}: not an array (a damaged or foreign file)")
        except ConfigError:
            raise
        except CodecError as exc:
            raise ConfigError(str(exc) if path in str(exc) else f"{path}: {exc}") from exc
        except damaged as exc:
            raise ConfigError(f"{path}: not a readable feature file ({type(exc).__name__}: {exc})") from exc
        self.model, cut = (_identity_text(path, k, identity[k]) for k in ("model", "cut"))
        self.hash = _identity_hash(path, identity["model_hash"])
        h, w = _identity_frame_size(path, identity["frame_size"])
        self.fps = _identity_fps(path, identity["fps"])
        self.path = path
        self.cut = SimpleNamespace(name=cut)
        self.frame_size = (h, w)
        self.count = self.clip.frames
        self.m1_ms: list[float] = []

    def frames(self):
        """The file's frames, read from it one at a time (memory holds one frame, whatever
        the file's length); a member found damaged part way is a ConfigError naming the file
        and the frame where the damage was found, on which the edge ends the stream as on a
        failing camera. The damage need not lie there: a bad CRC shows only at the member's
        end, and deflate may pass damaged bytes before it fails, so it may be in any frame up
        to that one, and the frames before it have been given out (streamed) already."""
        from temposplit.codec.errors import CodecError
        from temposplit.model.numpy_m1 import Codes

        readers = [c.frames() if hasattr(c, "frames") else iter(c) for c in self.clip.codes]
        try:
            for t in range(self.count):
                try:
                    codes = [next(r) for r in readers]
                except CodecError as exc:
                    if t == 0:
                        raise ConfigError(f"{exc} (at frame 0)") from exc
                    raise ConfigError(
                        f"{exc}: found reading frame {t}, but the damage may lie in any frame from 0 to {t} "
                        f"(the frames before {t} may have been streamed already)"
                    ) from exc
                tensors = [
                    Codes(n, tuple(c.shape), s, z, c)
                    for n, c, s, z in zip(self.clip.names, codes, self.clip.scales, self.clip.zero_points, strict=True)
                ]
                yield ReplayFrame(t, (*self.frame_size, 3), tensors)
        finally:
            for r in readers:
                if hasattr(r, "close"):
                    r.close()

    def m1(self, frames) -> list:
        """The recorded cut tensors of ``frames`` (no model runs)."""
        return [f.tensors for f in frames]

    def tensor_specs(self, sample, block: int | None = None):
        from temposplit.codec.encoder import TensorSpec
        from temposplit.host.pipeline import default_block

        specs = []
        for t, stored in zip(sample, self.clip.blocks, strict=True):
            b = block if block is not None else stored  # a stored 0 is refused by the encoder, as --block 0 is
            specs.append(
                TensorSpec(t.name, t.shape, t.scale, t.zero_point, b if b is not None else default_block(*t.shape[1:]))
            )
        return specs

    def model_hash(self, sample) -> bytes:
        return self.hash


def open_replay(path: str) -> Replay:
    return Replay(path)


# The identity fields of a feature file (host/features.py writes them), checked one by one:
# a value of another type or shape is the file's error, never a crash later.


def _identity_text(path, key: str, value: np.ndarray) -> str:
    if value.ndim != 0 or value.dtype.kind != "U" or not str(value):
        raise ConfigError(f"{path}: {key} must be a text scalar, not {value.dtype} {value.shape}")
    return str(value)


def _identity_hash(path, value: np.ndarray) -> bytes:
    if value.dtype != np.uint8 or value.shape != (32,):
        raise ConfigError(f"{path}: model_hash must be 32 bytes (uint8), not {value.dtype} {value.shape}")
    return value.tobytes()


def _identity_frame_size(path, value: np.ndarray) -> tuple[int, int]:
    from temposplit import protocol as P

    lo, hi = P.FRAME_SIDE
    if value.dtype.kind not in "iu" or value.shape != (2,):
        raise ConfigError(f"{path}: frame_size must be two integers [H, W], not {value.dtype} {value.shape}")
    h, w = (int(v) for v in value)
    if not (lo <= h <= hi and lo <= w <= hi):
        raise ConfigError(f"{path}: frame size {w}x{h}: the server takes frames of {lo} to {hi} pixels a side")
    return h, w


def _identity_fps(path, value: np.ndarray) -> float:
    import math

    if value.ndim != 0 or value.dtype.kind not in "iuf":
        raise ConfigError(f"{path}: fps must be a number, not {value.dtype} {value.shape}")
    fps = float(value)
    if not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"{path}: invalid fps {fps:g}")
    return fps
