"""Frame sources for the edge: a video file or a camera, through PyAV (V4L2 cameras on
Linux), or OpenCV where PyAV is not installed (the PYNQ image ships OpenCV); or decoded
frames in a ``.npy`` file, (N, H, W, 3) RGB uint8, read with NumPy alone (the emulated
board, whose root has neither: the same frames on every machine, whatever its decoder)."""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
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


def _cv2_capture(path: str, camera: bool):
    """OpenCV's capture of a camera (by its index where the node is ``/dev/videoN``, else by
    the node's path through V4L2) or a file (by its absolute name: FFmpeg, under OpenCV, takes
    a relative one such as ``x:y.mp4`` for a URL)."""
    import cv2

    if not camera:
        return cv2.VideoCapture(os.path.abspath(path))
    index = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(path))
    return cv2.VideoCapture(int(index.group(1))) if index else cv2.VideoCapture(path, cv2.CAP_V4L2)


@dataclass
class Source:
    path: str
    fps: float
    count: int | None
    camera: bool
    backend: str = "av"
    size: tuple[int, int] | None = None  # the first frame's (H, W), where known before reading

    def frames(self):
        """RGB uint8 frames (H, W, 3), all of the first frame's size: a frame of another
        size (a stream that changes resolution part way) is a :class:`ConfigError`, since
        the server maps every frame's boxes with the size the stream announced."""
        from temposplit.model.data import one_size

        yield from one_size(self._frames(), self.path)

    def _frames(self):
        if self.backend == "npy":
            frames = np.load(self.path, mmap_mode="r", allow_pickle=False)
            for i in range(frames.shape[0]):
                yield np.array(frames[i])
            return
        if self.backend == "cv2":
            yield from self._frames_cv2()
            return
        from temposplit.model.data import read_video, upright_rgb

        if not self.camera:
            yield from read_video(self.path)
            return
        import av

        try:
            container = av.open(self.path, format="v4l2", metadata_errors="replace")
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
                if frame is None:
                    return
                yield upright_rgb(frame)
                index += 1

    def _frames_cv2(self):
        import cv2

        cap = _cv2_capture(self.path, self.camera)
        if not cap.isOpened():
            raise ConfigError(f"cannot open {self.path}")
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


def open_source(path: str, backend: str | None = None) -> Source:
    camera = is_camera(path)
    if not camera:
        from temposplit.model.data import check_video_file

        check_video_file(Path(path))
    if not camera and path.endswith(".npy"):
        try:
            frames = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path} as frames: {exc}") from exc
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape[1:3]:
            raise ConfigError(f"{path}: frames must be (N, H, W, 3) uint8, not {frames.dtype} {frames.shape}")
        return Source(path, 30.0, int(frames.shape[0]), False, "npy", tuple(int(v) for v in frames.shape[1:3]))
    backend = backend or _backend()
    if backend == "cv2":
        import cv2

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
        with av.open(path, format="v4l2", metadata_errors="replace") as c:
            s = c.streams.video[0]
            fps = float(s.average_rate) if s.average_rate else 30.0
    except (OSError, av.error.FFmpegError, IndexError) as exc:
        raise ConfigError(f"cannot open {path} as a video: {getattr(exc, 'strerror', None) or exc}") from exc
    return Source(path, fps, None, True, "av")


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
            self.clip = features.load(path)
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
        from temposplit.model.numpy_m1 import Codes

        for t in range(self.count):
            tensors = [
                Codes(n, tuple(c.shape[1:]), s, z, c[t])
                for n, c, s, z in zip(
                    self.clip.names, self.clip.codes, self.clip.scales, self.clip.zero_points, strict=True
                )
            ]
            yield ReplayFrame(t, (*self.frame_size, 3), tensors)

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
