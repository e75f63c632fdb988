"""Milliseconds to read one decoded frame as players show it (``temposplit bench colour``):
:func:`temposplit.model.colour.frame_rgb` on synthetic frames of the kinds a source gives
(docs/models.md, "Colour"): SDR tagged and untagged (swscale alone), HDR10 (PQ, BT.2020) and
HLG (the NumPy path), 10-bit 4:2:0, at 1280x720, 1920x1080 and 3840x2160. Each figure is the
median of ``repeats`` timed calls after one warm-up, on the calling thread (the NumPy path
runs on one).
"""

from __future__ import annotations

import time

import numpy as np

# (name, pixel format, width, height, tags: colorspace, color_primaries, color_trc, color_range)
CASES = (
    ("sdr-bt709", "yuv420p", 1920, 1080, (1, 1, 1, 1)),
    ("sdr-untagged", "yuv420p", 1280, 720, None),
    ("hdr10-pq", "yuv420p10le", 1280, 720, (9, 9, 16, 1)),
    ("hdr10-pq", "yuv420p10le", 1920, 1080, (9, 9, 16, 1)),
    ("hlg", "yuv420p10le", 1920, 1080, (9, 9, 18, 1)),
    ("hdr10-pq", "yuv420p10le", 3840, 2160, (9, 9, 16, 1)),
)


def synthetic_frame(pix_fmt: str, width: int, height: int, tags):
    """A PyAV frame of ramps in limited range (each plane shifted, so chroma varies), tagged."""
    import av

    frame = av.VideoFrame(width, height, pix_fmt)
    wide = "10" in pix_fmt
    dtype, low, high = (np.uint16, 64, 940) if wide else (np.uint8, 16, 235)
    for i, plane in enumerate(frame.planes):
        ramp = np.linspace(low, high, plane.width).astype(dtype)
        rows = np.tile(np.roll(ramp, 37 * i), (plane.height, 1))
        padded = np.zeros((plane.height, plane.line_size // np.dtype(dtype).itemsize), dtype)
        padded[:, : plane.width] = rows
        plane.update(padded.tobytes())
    if tags is not None:
        frame.colorspace, frame.color_primaries, frame.color_trc, frame.color_range = tags
    return frame


def bench_colour(repeats: int = 15, log=print) -> list[dict]:
    from temposplit.model.colour import frame_rgb

    rows = []
    for name, pix_fmt, width, height, tags in CASES:
        frame = synthetic_frame(pix_fmt, width, height, tags)
        frame_rgb(frame)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            frame_rgb(frame)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        row = {"kind": name, "size": f"{width}x{height}", "ms": round(times[len(times) // 2], 2)}
        rows.append(row)
        log(row)
    return rows
