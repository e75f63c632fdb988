"""A trimmed MP4 for the tests of the readers of video files (tests/model/test_data.py,
tests/system/test_file_sources.py). Not a test module: each imports it by its path, as the
suite imports in importlib mode (no test folder's parent on sys.path)."""

import fractions

import numpy as np


def write_trimmed_mp4(path, hidden: int = 30, shown: int = 30, faststart: bool = False) -> None:
    """An H.264 MP4 at ``path``: ``hidden + shown`` random 48x32 frames at 10 frames/s, every
    one a key frame, whose edit list hides the first ``hidden`` (their timestamps from
    ``-hidden``: a copy-trim, a phone's trim). The container counts every frame it stores;
    the decoder shows the last ``shown``. ``faststart``: the index first, so that the file
    cut short keeps it."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width, s.pix_fmt = 32, 48, "yuv420p"
        s.codec_context.options = {"bf": "0", "g": "1"}
        for i in range(hidden + shown):  # timestamps from -hidden: the muxer writes an edit list that hides them
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = i - hidden, fractions.Fraction(1, 10)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
