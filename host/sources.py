"""Frame sources for the edge: a video file, or a camera through PyAV (V4L2 on Linux)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from temposplit.errors import ConfigError, MissingDependencyError


@dataclass
class Source:
    path: str
    fps: float
    count: int | None
    camera: bool

    def frames(self):
        import av

        opts = {"format": "v4l2"} if self.camera else {}
        try:
            container = av.open(self.path, **opts)
        except (OSError, av.error.FFmpegError) as exc:
            raise ConfigError(f"cannot open {self.path}: {exc}") from exc
        with container:
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")


def open_source(path: str) -> Source:
    import av

    camera = path.startswith("/dev/video")
    if not camera and not Path(path).is_file():
        raise MissingDependencyError(f"video {path} not found")
    try:
        with av.open(path, **({"format": "v4l2"} if camera else {})) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate) if s.average_rate else 30.0
            count = s.frames or None
    except (OSError, av.error.FFmpegError, IndexError) as exc:
        raise ConfigError(f"cannot open {path} as a video: {exc}") from exc
    return Source(path, fps, None if camera else count, camera)
