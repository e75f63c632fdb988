"""The annotated video's colour (docs/protocol.md, "The outputs"; docs/models.md, "Colour"):
a chart of saturated, skin and grey patches drawn through AnnotatedVideo comes back, read as
a player reads it (``colour.frame_rgb``), as it was drawn, HD or SD, and the MP4 says so
(BT.709 primaries, transfer and matrix, limited range, in the H.264 stream and the colr box)."""

import struct

import av
import numpy as np
import pytest

from temposplit.model.colour import frame_rgb
from temposplit.server.outputs import AnnotatedVideo

PATCHES = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 128, 0),
    (224, 172, 105),  # skin tones, light to dark
    (255, 219, 172),
    (198, 134, 66),
    (141, 85, 36),
    (0, 0, 0),
    (64, 64, 64),
    (128, 128, 128),
    (192, 192, 192),
    (255, 255, 255),
]


def _chart(width: int, height: int):
    """The chart (4x4 flat patches) and a mask of the patches' insides (clear of the 4:2:0
    chroma's and the encoder's blocks across their edges)."""
    img = np.zeros((height, width, 3), np.uint8)
    inside = np.zeros((height, width), bool)
    pw, ph = width // 4, height // 4
    m = pw // 8
    for i, colour in enumerate(PATCHES):
        r, q = divmod(i, 4)
        img[r * ph : (r + 1) * ph, q * pw : (q + 1) * pw] = colour
        inside[r * ph + m : (r + 1) * ph - m, q * pw + m : (q + 1) * pw - m] = True
    return img, inside


def _annotate(path, img: np.ndarray, n: int = 2):
    height, width = img.shape[:2]
    video = AnnotatedVideo(path, width, height, 10.0, frames=iter([img] * n))
    for i in range(n):
        video.add(i)
    video.finish(n)


@pytest.mark.parametrize("size", [(1280, 720), (640, 360)], ids=["hd", "sd"])
def test_chart_comes_back_as_drawn(tmp_path, size):
    width, height = size
    img, inside = _chart(width, height)
    path = tmp_path / "annotated.mp4"
    _annotate(path, img)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        assert (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range) == (1, 1, 1, 1)
        frame = next(container.decode(stream))
        assert (frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range) == (1, 1, 1, 1)
        shown = frame_rgb(frame)
    err = np.abs(shown.astype(np.int16) - img)[inside]
    # Measured: mean 0.56, 0.69, 0.38 and max 2 per channel at both sizes; swscale's BT.601
    # untagged (the old encoding) read pure green at 1280x720 as 0,215,0 (mean 10.3, max 40).
    assert err.mean(axis=0).max() <= 1.0, err.mean(axis=0)
    assert err.max() <= 4, err.max(axis=0)


def test_mp4_colr_box(tmp_path):
    """The MP4's own tag (its 'colr' box, type 'nclx'): primaries, transfer, matrix 1
    (BT.709), then the full-range flag clear (limited range), for players that read the
    container rather than the H.264 stream's VUI."""
    img, _ = _chart(320, 180)
    path = tmp_path / "annotated.mp4"
    _annotate(path, img, n=1)
    data = path.read_bytes()
    at = data.find(b"colrnclx")
    assert at >= 0, "no colr box"
    primaries, transfer, matrix, flags = struct.unpack(">HHHB", data[at + 8 : at + 15])
    assert (primaries, transfer, matrix, flags >> 7) == (1, 1, 1, 0)
