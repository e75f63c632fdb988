"""The videos a user feeds ``edge``, ``features`` and ``eval``, beyond those test_sources.py
reads: photos and camera clips with EXIF, file names FFmpeg would take for URLs, OpenCV's
reader (the board's), camera nodes under other names, a camera that fails part way, and
eval's clip names, its paths that are no files and its memory with large frames.
No model, no server here."""

import errno
import os
import struct

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.host.sources import open_source
from temposplit.model import data


def _clip(path, frames, rate=10, codec="libx264", fmt=None):
    """``frames`` (RGB uint8, one size) as a video file."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    return path


def _gray(n, h=48, w=64):
    return [np.full((h, w, 3), 20 + 40 * i, np.uint8) for i in range(n)]


def _exif_jpeg(picture, orientation: int) -> bytes:
    """A JPEG of ``picture`` with an EXIF APP1 holding one tag, its orientation (as cameras
    and phones write them)."""
    import cv2

    ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(picture[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    jpg = jpg.tobytes()
    return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:]


# How a viewer shows the stored picture for each EXIF orientation (TIFF 6.0 / EXIF 2.3).
SHOWN = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _marked():
    """A 32x64 picture, white in its top-left corner and red in its bottom-right one."""
    picture = np.zeros((32, 64, 3), np.uint8)
    picture[:8, :16] = 255
    picture[-8:, -8:] = (255, 0, 0)
    return picture


# ---------------------------------------------------------------------------- EXIF


@pytest.mark.parametrize("orientation", sorted(SHOWN))
def test_a_photo_with_exif_is_read_as_viewers_show_it(tmp_path, orientation):
    """FFmpeg 8 gives a JPEG's EXIF to the frame as side data of a type PyAV 18's list lacks
    (31): reading the display matrix raised ValueError, an internal error from every command."""
    path = tmp_path / f"photo{orientation}.jpg"
    path.write_bytes(_exif_jpeg(_marked(), orientation))
    shown = SHOWN[orientation](_marked())
    for frames in (data.read_video(path), open_source(str(path)).frames()):
        (frame,) = list(frames)
        assert frame.shape == shown.shape
        assert np.abs(frame.astype(int) - shown.astype(int)).mean() < 4


def test_a_camera_mjpeg_clip_whose_frames_carry_exif(tmp_path, capsys, one_line):
    """Still cameras record MJPEG clips of JPEGs with EXIF: every frame is read, and eval's
    check of its clips (which decodes each first frame) passes it."""
    from fractions import Fraction

    import av

    path = tmp_path / "camera.avi"
    pictures = _gray(3)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i, picture in enumerate(pictures):
            packet = av.Packet(_exif_jpeg(picture, 1))
            packet.stream, packet.time_base, packet.pts, packet.dts = s, Fraction(1, 10), i, i
            c.mux(packet)
    src = open_source(str(path))
    assert (src.size, src.count) == ((48, 64), 3)
    got = list(src.frames())
    assert [np.abs(a.astype(int) - b).mean() < 3 for a, b in zip(got, pictures, strict=True)] == [True] * 3
    from temposplit.evaluation.harness import Harness

    assert list(Harness(video=[path], out=tmp_path / "ev").videos()) == ["camera"]


# ---------------------------------------------------------------------------- file names


@pytest.mark.parametrize("name", ["x:y.mp4", "file:v.mp4", "pipe:0"])
@pytest.mark.parametrize("backend", ["av", "cv2"])
def test_a_file_name_ffmpeg_would_take_for_a_url(tmp_path, monkeypatch, name, backend):
    """A relative name of letters and a colon is a URL to FFmpeg (and to OpenCV, through it):
    x:y.mp4 was "Protocol not found", file:v.mp4 read v.mp4, pipe:0 read stdin (a hang at a
    terminal). The file named is read."""
    monkeypatch.chdir(tmp_path)
    _clip(tmp_path / "v.mp4", _gray(2, 32, 32))  # another clip, where file:v.mp4 would lead FFmpeg
    frames = _gray(3)
    _clip(tmp_path / name, frames, fmt="mp4")
    src = open_source(name, backend)
    got = list(src.frames())
    assert src.size == (48, 64) and len(got) == 3
    assert all(np.abs(a.astype(int) - b).mean() < 3 for a, b in zip(got, frames, strict=True))


# ---------------------------------------------------------------------------- OpenCV's reader (the board's)


def test_opencv_keeps_no_frame_count_it_does_not_know(tmp_path):
    """OpenCV says -2^63 frames for an image and a garbage negative for a raw .h264: the edge
    gave it to the encoder, which refused the clip ("frame count must be a whole number")."""
    import cv2

    raw = _clip(tmp_path / "raw.h264", _gray(4), fmt="h264")
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), _gray(1)[0])
    for path, frames in ((raw, 4), (image, 1)):
        src = open_source(str(path), "cv2")
        assert src.count is None or src.count > 0, src.count
        assert len(list(src.frames())) == frames


def test_opencv_gives_the_frame_size_before_the_model_loads(tmp_path):
    """The edge checks the size against the server's range before loading the model and
    connecting, as for PyAV's reader: OpenCV's gave none, and a 2x2 clip reached the server."""
    tiny = _clip(tmp_path / "tiny.mp4", _gray(2, 2, 2))
    phone = tmp_path / "phone.mp4"
    import av

    with av.open(str(phone), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)
        c.mux(s.encode(av.VideoFrame.from_ndarray(_marked(), format="rgb24")))
        c.mux(s.encode(None))
    assert open_source(str(tiny), "cv2").size == (2, 2)
    assert open_source(str(phone), "cv2").size == (64, 32)  # upright, as its frames come
    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as c:  # a header, no frame
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    with pytest.raises(ConfigError, match="empty.mkv"):
        open_source(str(empty), "cv2")


def test_opencv_refuses_a_camera_name_without_a_number_in_one_line():
    """/dev/videoX: int("X") raised a bare ValueError (an internal error) on the board."""
    with pytest.raises(ConfigError, match="cannot open /dev/videofront"):
        open_source("/dev/videofront", "cv2")


# ---------------------------------------------------------------------------- cameras


class _Camera:
    """A stand-in for PyAV's V4L2 container: ``good`` frames, then ``error`` (or the end)."""

    def __init__(self, good=0, error=None):
        import av

        self.good, self.error = good, error
        stream = type("S", (), {"average_rate": 25})()
        self.streams = type("Streams", (), {"video": [stream]})()
        self.frame = av.VideoFrame.from_ndarray(_gray(1)[0], format="rgb24")

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def decode(self, stream):
        for _ in range(self.good):
            yield self.frame
        if self.error is not None:
            raise self.error


def test_a_link_to_a_camera_is_read_as_a_camera(tmp_path, monkeypatch):
    """udev's stable names (/dev/v4l/by-id/...-video-index0) are links to /dev/videoN: they
    were taken for files, "not a regular file (a device or a pipe)" (or "not found")."""
    import av

    opened = []

    def fake_open(path, format=None, **kwargs):
        opened.append((path, format))
        return _Camera(good=2)

    monkeypatch.setattr(av, "open", fake_open)
    link = tmp_path / "usb-Camera-video-index0"
    link.symlink_to("/dev/video7")
    src = open_source(str(link))
    assert src.camera and src.fps == 25 and src.count is None
    got = []
    with pytest.raises(ConfigError, match="the camera stopped at frame 2"):
        got.extend(src.frames())
    assert len(got) == 2
    assert opened == [(str(link), "v4l2")] * 2


@pytest.mark.parametrize("backend", ["av", "cv2"])
def test_a_camera_whose_pictures_end_is_a_failure_not_the_streams_end(monkeypatch, backend):
    """A camera has no end: when its driver stops giving pictures the edge must exit 2, which
    its unit restarts. The readers returned as at a file's end, so the edge exited 0 (or 3)
    and systemd left a dead camera unwatched."""
    if backend == "av":
        import av

        monkeypatch.setattr(av, "open", lambda *a, **k: _Camera(good=3))
    else:
        import cv2

        from temposplit.host import sources

        class Capture:
            left = 3

            def isOpened(self):
                return True

            def get(self, prop):
                return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

            def read(self):
                self.left -= 1
                return (True, np.zeros((4, 6, 3), np.uint8)) if self.left >= 0 else (False, None)

            def release(self):
                pass

        monkeypatch.setattr(sources, "_cv2_capture", lambda *a, **k: Capture())
    src = open_source("/dev/video0", backend)
    got = []
    with pytest.raises(ConfigError, match="/dev/video0: the camera stopped at frame 3"):
        got.extend(src.stamped())
    assert len(got) == 3


def test_a_camera_that_fails_part_way_is_one_error_the_edge_ends_the_stream_on(monkeypatch):
    """A camera unplugged while streaming: PyAV's OSError passed through the edge (which ends
    a stream on a TemposplitError from its source) as an internal error."""
    import av

    failure = av.error.OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr(av, "open", lambda *a, **k: _Camera(good=3, error=failure))
    src = open_source("/dev/video0")
    got = []
    with pytest.raises(ConfigError, match="/dev/video0: the camera failed at frame 3: No such device"):
        for frame in src.frames():
            got.append(frame)
    assert len(got) == 3


# ---------------------------------------------------------------------------- eval


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_eval_names_a_pipe_or_a_device_for_what_it_is(tmp_path, capsys, one_line, kind):
    """eval said "no such video: /dev/null" of a path that is there (edge and features say
    what it is)."""
    if kind == "fifo":
        path = tmp_path / "clip.mp4"
        os.mkfifo(path)
    else:
        path = "/dev/null"
    assert main(["eval", "--video", str(path), "--out", str(tmp_path / "ev"), "--quick"]) == 2
    one_line(f"{path}: not a regular file (a device or a pipe)")
    assert not (tmp_path / "ev").exists()


def test_eval_names_a_clip_whose_file_name_is_no_utf8(tmp_path):
    """A Linux file name may hold any bytes: its clip name held a lone surrogate, and eval
    failed writing results.csv after the whole run (UnicodeEncodeError, an internal error),
    and then the clip's report.md, which names the file."""
    from temposplit.evaluation.harness import Harness, resolve_videos
    from temposplit.evaluation.report import markdown

    path = tmp_path / os.fsdecode(b"take\xff.mp4")
    _clip(path, _gray(2))
    (name,) = resolve_videos([path])
    assert name == "take\\xff"
    name.encode("utf-8")  # the CSV, the report and the clip's folder take it
    assert list(Harness(video=[path], out=tmp_path / "ev").videos()) == [name]
    report = markdown([], {"settings": {"video": str(path)}}, [])  # meta.json keeps the path itself
    assert "clip `take\\xff.mp4`" in report
    report.encode("utf-8")


def test_eval_decodes_large_frames_a_bounded_number_of_bytes_at_a_time():
    """eval gave the float detector and the int8 M1 16 frames at a time, whatever their size:
    3 GB of 8000x8000 frames, 13 GB at FFmpeg's largest (16384 a side). Clips up to 4096x2160
    keep batches of 16."""
    from temposplit.evaluation.cache import FRAME_BATCH, FRAME_BATCH_BYTES, chunks

    def frames(n, h, w):  # views of one byte: the sizes without the memory
        return (np.broadcast_to(np.zeros(1, np.uint8), (h, w, 3)) for _ in range(n))

    assert [len(c) for c in chunks(frames(40, 2160, 4096), FRAME_BATCH, FRAME_BATCH_BYTES)] == [16, 16, 8]
    big = [len(c) for c in chunks(frames(7, 8000, 8000), FRAME_BATCH, FRAME_BATCH_BYTES)]
    assert big == [2, 2, 2, 1]
    huge = [len(c) for c in chunks(frames(3, 16384, 16384), FRAME_BATCH, FRAME_BATCH_BYTES)]
    assert huge == [1, 1, 1]  # one frame over the bound still goes, alone


def test_the_frame_baselines_detector_sees_bounded_batches_of_large_frames():
    """The frame baselines' decoded clip went to the float detector 16 frames at a time too."""
    from types import SimpleNamespace

    from temposplit.evaluation.cache import FRAME_BATCH_BYTES
    from temposplit.evaluation.scoring import Scorer

    batches = []

    def detect(frames):
        batches.append(len(frames))
        assert sum(f.nbytes for f in frames) <= max(FRAME_BATCH_BYTES, frames[0].nbytes)
        return [None] * len(frames)

    scorer = Scorer(SimpleNamespace(detector=SimpleNamespace(detect=detect), m2_frames=0))
    big = (np.broadcast_to(np.zeros(1, np.uint8), (8000, 8000, 3)) for _ in range(10))
    out = scorer.detect_decoded(big, SimpleNamespace(scored=[0, 2, 3, 4, 5, 6, 9]))
    assert sorted(out) == [0, 2, 3, 4, 5, 6, 9] and batches == [2, 2, 2, 1]
    batches.clear()
    small = (np.zeros((48, 64, 3), np.uint8) for _ in range(40))
    scorer.detect_decoded(small, SimpleNamespace(scored=list(range(40))))
    assert batches == [16, 16, 8]
