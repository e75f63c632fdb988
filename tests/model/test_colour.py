"""Frames in the colours a player shows them (docs/models.md, "Data", "Colour").

Each clip is made here with PyAV from a known picture, a chart of flat saturated and grey
patches, turned into Y'CbCr by an exact NumPy encoder (the matrix, range and, for HDR, the
transfer and primaries of ITU-R BT.601, BT.709, BT.2020 and BT.2100), coded losslessly (or
nearly: MJPEG), and read back through ``read_video``; the error is measured inside the
patches, away from the chroma's edges.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from temposplit.model import colour
from temposplit.model.data import first_frame

PATCH = 32
_COLOURS = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0),
    (191, 0, 0), (0, 191, 0), (0, 0, 191), (255, 255, 255), (0, 0, 0), (128, 128, 128),
    (224, 172, 105), (141, 85, 36), (255, 128, 0), (60, 90, 180), (32, 160, 64), (20, 20, 60),
]  # fmt: skip
_KR_KB = {"601": (0.299, 0.114), "709": (0.2126, 0.0722), "2020": (0.2627, 0.0593)}
# Linear BT.709 RGB to linear BT.2020 RGB (ITU-R BT.2087).
_709_TO_2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
LOSSLESS = {"libx264": {"qp": "0"}, "libx265": {"x265-params": "lossless=1:log-level=error"}, "mjpeg": {"qscale": "1"}}


def chart(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The chart (RGB uint8) and the mask of its patches' insides."""
    picture = np.zeros((height, width, 3), np.uint8)
    inside = np.zeros((height, width), bool)
    spots = [(y, x) for y in range(0, height - PATCH + 1, PATCH) for x in range(0, width - PATCH + 1, PATCH)]
    for i, (y, x) in enumerate(spots):
        picture[y : y + PATCH, x : x + PATCH] = _COLOURS[i % len(_COLOURS)]
        inside[y + 4 : y + PATCH - 4, x + 4 : x + PATCH - 4] = True
    return picture, inside


def ycbcr(coded: np.ndarray, matrix: str, full: bool, bits: int, chroma: str) -> list[np.ndarray]:
    """The Y, Cb, Cr planes of R'G'B' in [0, 1] (H, W, 3): ``chroma`` "420", "422" or "444"."""
    kr, kb = _KR_KB[matrix]
    r, g, b = np.moveaxis(coded, -1, 0)
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 - 2 * kb), (r - y) / (2 - 2 * kr)
    if chroma != "444":
        rows = 2 if chroma == "420" else 1
        cb, cr = (c.reshape(c.shape[0] // rows, rows, c.shape[1] // 2, 2).mean(axis=(1, 3)) for c in (cb, cr))
    top = 2**bits - 1
    if full:
        planes = (y * top, cb * top + 2 ** (bits - 1), cr * top + 2 ** (bits - 1))
    else:
        scale = 2 ** (bits - 8)
        planes = ((16 + 219 * y) * scale, (128 + 224 * cb) * scale, (128 + 224 * cr) * scale)
    return [np.clip(np.rint(p), 0, top).astype(np.uint8 if bits == 8 else np.uint16) for p in planes]


def write_clip(path, planes, pix_fmt, codec, tags=None, frames=2) -> None:
    """A clip of ``frames`` copies of the planes; ``tags``: the frames' and the stream's colour
    tags (``colorspace``, ``color_range``, ``color_trc``, ``color_primaries``), none if None."""
    tags = tags or {}
    height, width = planes[0].shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = LOSSLESS[codec]
        for name, value in tags.items():
            setattr(stream.codec_context, name, value)
        for i in range(frames):
            frame = av.VideoFrame(width, height, pix_fmt)
            for plane, values in zip(frame.planes, planes, strict=True):
                rows = np.zeros((values.shape[0], plane.line_size // values.itemsize), values.dtype)
                rows[:, : values.shape[1]] = values
                plane.update(rows.tobytes()[: plane.buffer_size])
            for name, value in tags.items():
                setattr(frame, name, value)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def error(got: np.ndarray, want: np.ndarray, inside: np.ndarray) -> tuple[float, int]:
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))[inside]
    return float(diff.mean()), int(diff.max())


def sdr_clip(tmp_path, size, matrix, tags=None, codec="libx264", pix_fmt="yuv420p", full=False, ext="mp4"):
    """An SDR chart of ``size`` (H, W) coded with ``matrix``; the chart, the inside and the frame read."""
    picture, inside = chart(*size)
    chroma = {"yuv420p": "420", "yuvj420p": "420", "yuv422p": "422", "yuv444p": "444"}[pix_fmt]
    path = tmp_path / f"chart.{ext}"
    write_clip(path, ycbcr(picture / 255.0, matrix, full, 8, chroma), pix_fmt, codec, tags)
    return picture, inside, first_frame(path)


@pytest.mark.parametrize(
    ("size", "matrix"),
    [((480, 640), "601"), ((576, 720), "601"), ((720, 1280), "709"), ((544, 1280), "709"), ((1080, 1920), "709")],
    ids=["640x480", "720x576", "1280x720", "1280x544", "1920x1080"],
)
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_an_untagged_clip_is_read_with_the_matrix_players_guess_from_its_size(tmp_path, size, matrix, pix_fmt):
    """No colour tags: BT.709 from 1280 wide or more than 576 high (mpv; VLC and ffplay by the
    height), else BT.601. swscale alone read every untagged picture as BT.601: an HD chart
    came out 5.5 levels off on average, 31 at worst (saturated blue and red)."""
    picture, inside, got = sdr_clip(tmp_path, size, matrix, pix_fmt=pix_fmt)
    mean, worst = error(got, picture, inside)
    assert mean < 1.0 and worst <= 3, (mean, worst)


@pytest.mark.parametrize(
    ("size", "matrix", "tag"),
    [((720, 1280), "601", 6), ((720, 1280), "601", 5), ((480, 640), "709", 1)],
    ids=["HD tagged smpte170m", "HD tagged bt470bg", "SD tagged bt709"],
)
def test_a_tagged_matrix_wins_over_the_size(tmp_path, size, matrix, tag):
    picture, inside, got = sdr_clip(tmp_path, size, matrix, {"colorspace": tag, "color_range": 1})
    mean, worst = error(got, picture, inside)
    assert mean < 1.0 and worst <= 3, (mean, worst)


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "tags", "matrix"),
    [
        ("libx264", "yuvj420p", None, "709"),
        ("libx264", "yuv420p", {"color_range": 2}, "709"),
        ("mjpeg", "yuvj420p", None, "601"),
    ],
    ids=["yuvj420p", "tagged pc", "MJPEG"],
)
def test_full_range_is_read_as_full_range_and_mjpeg_as_bt601_at_any_size(tmp_path, codec, pix_fmt, tags, matrix):
    """Full range where the format (``yuvj``) or the tag says so, the matrix by the same rule
    as any other (an untagged HD picture is BT.709); JPEG's Y'CbCr is BT.601 (JFIF) at every
    size, and FFmpeg's decoder tags it bt470bg, so an HD MJPEG clip (a webcam's) stays BT.601."""
    picture, inside, got = sdr_clip(tmp_path, (720, 1280), matrix, tags, codec, pix_fmt, full=True, ext="avi")
    mean, worst = error(got, picture, inside)
    assert mean < 1.0 and worst <= 3, (mean, worst)


# HDR: an SDR BT.709 picture carried in BT.2100, its white at reference white (203 cd/m2, ITU-R
# BT.2408), written with the standards' encoding formulas (the inverse of what colour.py does).
def _pq_encode(nits: np.ndarray) -> np.ndarray:
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 32, 3424 / 4096, 2413 / 128, 2392 / 128
    y = np.clip(nits / 10000, 0, 1) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def _hlg_encode(nits: np.ndarray) -> np.ndarray:
    """BT.2100 HLG: display light (1000 cd/m2 display, system gamma 1.2) to the signal."""
    a = 0.17883277
    b, c = 1 - 4 * a, 0.5 - a * np.log(4 * a)
    display_y = np.maximum(nits @ np.array([0.2627, 0.6780, 0.0593]), 1e-9)
    scene = nits / (1000 * ((display_y / 1000) ** (1 / 1.2))[..., None] ** 0.2)
    scene = np.clip(scene, 0, 1)
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene), a * np.log(np.maximum(12 * scene - b, 1e-12)) + c)


def wide_clip(tmp_path, picture, transfer, nits=203.0):
    """``picture`` (SDR BT.709) in BT.2020 primaries, 10-bit H.265: PQ, HLG, or BT.2020's SDR curve."""
    linear = (picture / 255.0) ** 2.4 @ _709_TO_2020.T
    if transfer == "pq":
        coded, trc = _pq_encode(nits * linear), 16
    elif transfer == "hlg":
        coded, trc = _hlg_encode(nits * linear), 18
    else:
        coded, trc = linear ** (1 / 2.4), 14
    path = tmp_path / "wide.mkv"
    tags = {"colorspace": 9, "color_range": 1, "color_trc": trc, "color_primaries": 9}
    write_clip(path, ycbcr(coded, "2020", False, 10, "420"), "yuv420p10le", "libx265", tags)
    return first_frame(path)


@pytest.mark.parametrize("transfer", ["pq", "hlg", "bt2020-10"])
def test_wide_gamut_and_hdr_video_is_converted_to_bt709_sdr(tmp_path, transfer):
    """A phone's HDR clip (BT.2020, PQ or HLG) and a BT.2020 SDR one: shown in BT.709 SDR with
    reference white as white. Read as before (the BT.2020 matrix only) the HDR chart came out
    dark and grey, 62 (PQ) and 40 (HLG) levels off on average, the BT.2020 SDR one 28. What is
    left is 10-bit rounding, which the steep curves near black make a few levels at worst."""
    picture, inside = chart(240, 320)
    got = wide_clip(tmp_path, picture, transfer)
    mean, worst = error(got, picture, inside)
    assert mean < 2.5 and worst <= 30, (mean, worst)
    white = np.all(picture == 255, axis=-1) & inside
    assert np.abs(got[white].astype(int) - 255).max() <= 2


def test_hdr_above_reference_white_is_clipped_to_white(tmp_path):
    """Highlights above reference white (here the whole chart 4x brighter, 812 cd/m2): what
    lies above white is clipped (no tone mapping), never wrapped or darkened."""
    picture, inside = chart(240, 320)
    got = wide_clip(tmp_path, picture, "pq", nits=4 * 203.0)
    white = np.all(picture == 255, axis=-1) & inside
    assert got[white].min() >= 253
    grey = np.all(picture == 128, axis=-1) & inside  # 4x its light: 0.216 * 4 of white, gamma 2.4
    assert abs(float(got[grey].mean()) - 255 * (4 * (128 / 255) ** 2.4) ** (1 / 2.4)) < 3


def test_a_ycgco_clip_is_read_with_its_matrix(tmp_path):
    """H.264 / HEVC may tag YCgCo (matrix 8), which swscale refuses (EOPNOTSUPP, which came
    out of ``read_video`` as an OSError: an internal error): it is read in NumPy."""
    picture, inside = chart(240, 320)
    r, g, b = np.moveaxis(picture / 255.0, -1, 0)
    y, cg, co = 0.5 * g + 0.25 * (r + b), 0.5 * g - 0.25 * (r + b), 0.5 * (r - b)  # ITU-T H.273
    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (16 + 219 * y, 128 + 224 * cg, 128 + 224 * co)]
    write_clip(tmp_path / "ycgco.mp4", planes, "yuv444p", "libx264", {"colorspace": 8, "color_range": 1})
    mean, worst = error(first_frame(tmp_path / "ycgco.mp4"), picture, inside)
    assert mean < 1.0 and worst <= 3, (mean, worst)


def _frame(pix_fmt: str, width: int, height: int, **tags) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, pix_fmt)
    rng = np.random.default_rng(1)
    for plane in frame.planes:
        plane.update(rng.integers(0, 256, plane.buffer_size, dtype=np.uint8).tobytes())
    for name, value in tags.items():
        setattr(frame, name, value)
    return frame


@pytest.mark.parametrize(
    ("pix_fmt", "size", "tags"),
    [
        ("yuv420p", (640, 480), {}),
        ("yuv420p", (1280, 720), {}),
        ("yuv420p10le", (1280, 720), {"color_primaries": 9, "color_trc": 16, "color_range": 1}),
        ("yuv420p10le", (640, 480), {"color_trc": 18, "color_range": 1}),
    ],
    ids=["SD", "HD", "HD PQ BT.2020", "SD HLG"],
)
@pytest.mark.parametrize("tag", [3, 14], ids=["reserved", "ICtCp"])
def test_a_matrix_tag_swscale_refuses_is_guessed_as_an_untagged_one(pix_fmt, size, tags, tag):
    """A reserved or unsupported matrix code (swscale refuses the frame: EOPNOTSUPP) is read
    as an untagged matrix is, never an error."""
    got = colour.frame_rgb(_frame(pix_fmt, *size, colorspace=tag, **tags))
    want = colour.frame_rgb(_frame(pix_fmt, *size, colorspace=2, **tags))
    assert (got == want).all()


def test_an_untagged_full_range_yuvj_hdr_frame_stays_full_range():
    """A ``yuvj`` frame is full range with or without its range tag: the planes are unpacked
    as they are (swscale, told nothing, turned an untagged one to limited range first)."""
    tags = {"colorspace": 9, "color_primaries": 9, "color_trc": 16}
    got = colour.frame_rgb(_frame("yuvj420p", 320, 240, color_range=0, **tags))
    want = colour.frame_rgb(_frame("yuvj420p", 320, 240, color_range=2, **tags))
    assert np.abs(got.astype(int) - want).max() <= 1


def test_an_odd_sized_hdr_frame_is_converted_the_same_every_time():
    """1921x1081 10-bit PQ: swscale's threaded unpack garbled 8 pixels at a slice's edge
    (27264 of 65535 off), differently from run to run; one thread reads them right."""
    frame = _frame("yuv420p10le", 1921, 1081, colorspace=9, color_primaries=9, color_trc=16, color_range=1)
    first = colour.frame_rgb(frame)
    for _ in range(8):
        assert (colour.frame_rgb(frame) == first).all()


def test_the_linear_light_path_holds_a_bounded_strip_beside_its_output():
    """A 4K HDR frame: NumPy holds the output and one strip of float temporaries (whole rows of
    at most 2**18 pixels), not a copy of the unpacked planes and 256 full rows."""
    import tracemalloc

    frame = _frame("yuv420p10le", 3840, 2160, colorspace=9, color_primaries=9, color_trc=16, color_range=1)
    colour.frame_rgb(frame)  # the look-up tables, once
    tracemalloc.start()
    try:
        out = colour.frame_rgb(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes + 40 * 2**20, (peak, out.nbytes)


def test_the_hd_rule_is_the_players():
    assert colour.is_hd(1280, 544) and colour.is_hd(720, 577) and colour.is_hd(1920, 1080)
    assert not colour.is_hd(720, 576) and not colour.is_hd(1024, 576) and not colour.is_hd(640, 480)


def test_rgb_and_grey_frames_are_converted_as_swscale_does():
    grey = av.VideoFrame.from_ndarray(np.arange(64, dtype=np.uint8).reshape(8, 8), format="gray")
    assert (colour.frame_rgb(grey) == grey.to_ndarray(format="rgb24")).all()
    rgb = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    assert (colour.frame_rgb(av.VideoFrame.from_ndarray(rgb, format="rgb24")) == rgb).all()
