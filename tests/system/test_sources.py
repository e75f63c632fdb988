import itertools

import numpy as np
import pytest

from temposplit.host.sources import open_source
from temposplit.model import data


@pytest.mark.parametrize("backend", ["av", "cv2"])
def test_both_readers_give_the_same_rgb_frames(backend):
    path = data.vtest_path()
    if not path.is_file():
        pytest.skip("data/vtest.avi is not fetched (run `make data`)")
    src = open_source(str(path), backend)
    assert src.fps == pytest.approx(10.0) and src.count == 795
    frames = list(itertools.islice(src.frames(), 3))
    ref = list(itertools.islice(data.read_video(path), 3))
    for a, b in zip(frames, ref, strict=True):
        assert a.shape == (576, 768, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0  # decoders may differ by rounding


def test_npy_frames_are_read_with_numpy_alone(tmp_path):
    """Decoded frames in a .npy (the emulated board's source): the same arrays back, in order."""
    frames = np.random.default_rng(1).integers(0, 256, (4, 6, 8, 3)).astype(np.uint8)
    path = tmp_path / "frames.npy"
    np.save(path, frames)
    src = open_source(str(path))
    assert src.backend == "npy" and src.count == 4 and not src.camera
    got = list(src.frames())
    assert len(got) == 4 and all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))


@pytest.mark.parametrize(
    "array", [np.zeros((2, 6, 8, 3), np.float32), np.zeros((6, 8, 3), np.uint8), np.zeros((2, 0, 0, 3), np.uint8)]
)
def test_npy_of_no_frames_is_refused(tmp_path, array):
    from temposplit.errors import ConfigError

    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ConfigError, match=r"\(N, H, W, 3\) uint8"):
        open_source(str(path))


def _phone_clip(path, degrees, hflip=False, vflip=False):
    """A landscape-stored clip with a display rotation, as phones write portrait video:
    a 64x32 picture, white in its top-left 16x8 corner, shown turned by ``degrees``."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        picture = np.zeros((32, 64, 3), np.uint8)
        picture[:8, :16] = 255
        for _ in range(2):
            for p in s.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return picture


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize(("hflip", "vflip"), [(True, False), (False, True)])
def test_a_mirrored_clip_is_read_as_players_show_it(tmp_path, degrees, hflip, vflip):
    # The display matrix's eight orientations (EXIF's): turned counter-clockwise, then
    # mirrored, as FFmpeg's av_display_matrix_flip composes them. OpenCV reads only the
    # rotation, so the cv2 backend is not asked.
    path = tmp_path / "mirrored.mp4"
    shown = np.rot90(_phone_clip(path, degrees, hflip, vflip), degrees // 90)
    shown = shown[:, ::-1] if hflip else shown[::-1]
    for frames in (data.read_video(path), open_source(str(path)).frames()):
        for frame in frames:
            assert frame.shape == shown.shape
            assert np.abs(frame.astype(int) - shown.astype(int)).mean() < 8  # where the white corner is


@pytest.mark.parametrize("degrees", [90, -90, 180, 0])
@pytest.mark.parametrize("backend", ["av", "cv2"])
def test_a_phone_clip_is_read_upright_as_players_show_it(tmp_path, degrees, backend):
    path = tmp_path / f"phone{degrees}.mp4"
    upright = np.rot90(_phone_clip(path, degrees), degrees // 90)  # counter-clockwise, as the matrix says
    readers = {"read_video": data.read_video(path), "source": open_source(str(path), backend).frames()}
    for name, frames in readers.items():
        frames = list(frames)
        assert len(frames) == 2
        for frame in frames:
            assert frame.shape == upright.shape, name
            assert np.abs(frame.astype(int) - upright.astype(int)).mean() < 8, name  # where the white corner is


def _resolution_change(path):
    """Two MPEG-TS parts joined byte for byte: 64x48, then 320x240 (5 frames each)."""
    import av

    parts = []
    for w, h in ((64, 48), (320, 240)):
        part = path.with_suffix(f".{w}.ts")
        with av.open(str(part), "w", format="mpegts") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(5):
                rgb = np.full((h, w, 3), 40 * i, np.uint8)
                c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            c.mux(s.encode(None))
        parts.append(part.read_bytes())
    path.write_bytes(b"".join(parts))


def test_a_clip_that_changes_size_part_way_is_refused_at_the_change(tmp_path):
    from temposplit.errors import ConfigError

    path = tmp_path / "change.ts"
    _resolution_change(path)
    src = open_source(str(path))
    assert src.size == (48, 64)
    got = []
    with pytest.raises(ConfigError, match="frame 5 is 320x240, the clip started at 64x48"):
        for frame in src.frames():
            got.append(frame)
    assert [f.shape for f in got] == [(48, 64, 3)] * 5  # every frame before the change


def test_the_video_is_read_not_a_cover_picture_stored_before_it(tmp_path):
    """A file whose first video stream is a one-picture cover (as taggers write them):
    the frames are the video's, as players show it."""
    import av

    path = tmp_path / "cover.mkv"
    with av.open(str(path), "w") as c:
        cover = c.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 160, 120, "yuvj420p"
        video = c.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 200, np.uint8), format="rgb24")
        c.mux(cover.encode(picture.reformat(format="yuvj420p")))
        c.mux(cover.encode(None))
        for i in range(6):
            c.mux(video.encode(av.VideoFrame.from_ndarray(np.full((240, 320, 3), 30 * i, np.uint8), format="rgb24")))
        c.mux(video.encode(None))
    src = open_source(str(path))
    assert src.size == (240, 320) and src.fps == 25
    assert [f.shape for f in src.frames()] == [(240, 320, 3)] * 6
