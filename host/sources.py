"""Frame sources for the edge: a video file or a camera, through PyAV (V4L2 cameras on
Linux), or OpenCV where PyAV is not installed (the PYNQ image ships OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Source:
    path: str
    fps: float
    count: int | None
    camera: bool
    backend: str = "av"

    def frames(self):
        """RGB uint8 frames (H, W, 3)."""
        if self.backend == "cv2":
            yield from self._frames_cv2()
            return
        import av

        opts = {"format": "v4l2"} if self.camera else {}
        try:
            container = av.open(self.path, **opts)
        except (OSError, av.error.FFmpegError) as exc:
            raise ConfigError(f"cannot open {self.path}: {exc}") from exc
        with container:
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")

    def _frames_cv2(self):
        import cv2

        cap = cv2.VideoCapture(int(self.path[len("/dev/video") :]) if self.camera else self.path)
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
    camera = path.startswith("/dev/video")
    if not camera and not Path(path).is_file():
        raise MissingDependencyError(f"video {path} not found")
    backend = backend or _backend()
    if backend == "cv2":
        import cv2

        cap = cv2.VideoCapture(int(path[len("/dev/video") :]) if camera else path)
        if not cap.isOpened():
            raise ConfigError(f"cannot open {path} as a video")
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        cap.release()
        return Source(path, float(fps), None if camera else count, camera, "cv2")
    import av

    try:
        with av.open(path, **({"format": "v4l2"} if camera else {})) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate) if s.average_rate else 30.0
            count = s.frames or None
    except (OSError, av.error.FFmpegError, IndexError) as exc:
        raise ConfigError(f"cannot open {path} as a video: {exc}") from exc
    return Source(path, fps, None if camera else count, camera, "av")
