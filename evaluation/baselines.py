"""Raw-frame baselines (docs/requirements.md section 6, items 8 and 9): what a user would send instead of features.

* :func:`encode_jpeg` — each frame as a JPEG image through OpenCV (``cv2.imencode``, its
  bundled libjpeg-turbo): baseline sequential JPEG, standard tables scaled by the quality,
  4:2:0 chroma subsampling, no Huffman optimization (OpenCV's defaults).
  :func:`jpeg_quality_for_bpp` finds the quality whose mean bits per pixel is closest to a
  target (2.8 bpp by default: the thesis's 13 MB/s for 1280x960 frames at 30 frames/s).
* :func:`encode_video` (:func:`encode_h264`, :func:`encode_h265`) — the clip as one real
  video stream through PyAV: libx264 or libx265, constant rate factor ``crf``, preset
  ``medium``, no tune, yuv420p, a key frame at least every ``gop`` = 250 frames (both
  encoders' default; scene cuts may add more), the encoders' default B-frames (3 for x264
  medium, 4 for x265), and ``threads`` = 1 encoding thread so the bitstream does not
  depend on the machine's core count. Sizes are what a decoder needs of the elementary
  stream's packets (:func:`decoder_units`): the picture (VCL) NAL units and the parameter
  sets, each with its start code; not the encoders' SEI messages (x264's and x265's
  encoder information, sent once), as the feature streams leave out their stream header;
  no container. yuv420p needs an even width and height: a frame of odd
  size is padded by repeating its last column or row (as ``ffmpeg -vf
  pad=ceil(iw/2)*2:ceil(ih/2)*2`` users do, here with edge pixels rather than black), coded,
  and cropped back after decoding; rates and bits per pixel count the coded bytes over
  the original size.

Every encoder consumes its frames (RGB uint8, (H, W, 3)) one at a time from any iterable
and keeps only the coded bytes, so a clip of hundreds of frames never sits in memory
decoded: :meth:`CodedClip.decoded` decodes them again, lazily and in display order, each
time it is called (the harness pairs them with the original frames as it goes). The
number of decoded frames is checked against the number encoded, and the video decoders'
frame timestamps against display order.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from temposplit.errors import ConfigError
from temposplit.evaluation.metrics import DEFAULT_FPS, bits_per_pixel, compression_ratio, mb_per_s, psnr

__all__ = [
    "DEFAULT_CRFS",
    "DEFAULT_JPEG_QUALITY",
    "JPEG_TARGET_BPP",
    "CodedClip",
    "encode_h264",
    "encode_h265",
    "encode_jpeg",
    "encode_video",
    "example_table",
    "jpeg_quality_for_bpp",
    "mean_psnr",
]

DEFAULT_JPEG_QUALITY = 75
# 13 MB/s for 1280x960 frames at 30 frames/s (the thesis's JPEG figure) = 2.82 bits per pixel.
JPEG_TARGET_BPP = 2.8
DEFAULT_CRFS = (23, 28, 33, 38)
DEFAULT_PRESET = "medium"
# x264's and x265's presets (the same names), fastest first: another name fails the encoder's open.
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
DEFAULT_GOP = 250
VIDEO_CODECS = {"h264": ("libx264", "h264"), "h265": ("libx265", "hevc")}
# The smallest side each encoder is given; smaller frames are padded with their edge pixels
# up to it, and cropped back after decoding. libx265 refuses 14 pixels and below, and under
# one coding tree unit (64) it corrupted its heap on flat frames 40 and 48 pixels wide (the
# process aborted: "corrupted size vs. prev_size"; PyAV 18's libx265, 2026-12-06), so it
# gets at least 64 a side.
MIN_CODED_SIDE = {"libx264": 2, "libx265": 64}


@dataclass
class CodedClip:
    """A clip coded by one baseline at one setting.

    Attributes
    ----------
    codec : str
        ``"jpeg"``, ``"h264"`` or ``"h265"``.
    settings : dict
        Every encoder setting that was used (quality, crf, preset, gop, ...).
    width, height : int
        Frame size in pixels.
    fps : float
        The clip's frame rate (given to the video encoders' rate control).
    per_frame_bytes : int64 array (n_frames,)
        Coded bytes of each frame in display order (JPEG: the file; video: its packet's
        NAL units that a decoder needs, :func:`decoder_units`).
    """

    codec: str
    settings: dict
    width: int
    height: int
    fps: float
    per_frame_bytes: np.ndarray
    _payloads: list = field(repr=False, default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.per_frame_bytes.size)

    @property
    def total_bytes(self) -> int:
        return int(self.per_frame_bytes.sum())

    @property
    def bytes_per_frame(self) -> float:
        """Mean coded bytes per frame."""
        return self.total_bytes / self.n_frames if self.n_frames else math.nan

    @property
    def bits_per_pixel(self) -> float:
        return bits_per_pixel(self.bytes_per_frame, self.width, self.height)

    @property
    def raw_bytes_per_frame(self) -> int:
        """Uncompressed RGB, 3 bytes per pixel."""
        return 3 * self.width * self.height

    @property
    def compression_ratio(self) -> float:
        """Against the raw RGB frames."""
        return compression_ratio(self.raw_bytes_per_frame, self.bytes_per_frame)

    def mb_per_s(self, fps: float = DEFAULT_FPS) -> float:
        """Rate in MB/s (10^6 bytes) if the clip ran at ``fps`` frames/s (30 by default, as the thesis)."""
        return mb_per_s(self.bytes_per_frame, fps)

    def decoded(self) -> Iterator[np.ndarray]:
        """The decoded frames, RGB uint8 (H, W, 3), in display order, decoded lazily.

        Raises
        ------
        RuntimeError
            The decoder returned frames out of order or not as many frames as were encoded.
        """
        if self.codec == "jpeg":
            yield from _decode_jpeg(self._payloads)
        else:
            for frame in _decode_video(VIDEO_CODECS[self.codec][1], self._payloads, self.n_frames):
                if frame.shape[:2] != (self.height, self.width):  # padded to even sizes: crop back
                    frame = np.ascontiguousarray(frame[: self.height, : self.width])
                yield frame

    def summary(self) -> dict:
        """Plain JSON-ready figures."""
        return {
            "codec": self.codec,
            **self.settings,
            "width": self.width,
            "height": self.height,
            "n_frames": self.n_frames,
            "bytes_per_frame": self.bytes_per_frame,
            "bits_per_pixel": self.bits_per_pixel,
            "mb_per_s_at_30fps": self.mb_per_s(),
            "compression_ratio": self.compression_ratio,
        }


def _frames(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Check each frame (RGB uint8, one size for the clip) as it comes."""
    shape = None
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            what = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ConfigError(f"frame {i} must be an RGB uint8 array (H, W, 3), not {what}")
        if shape is None:
            shape = frame.shape
            if min(shape[:2]) < 1:
                raise ConfigError(f"frames of {shape[1]}x{shape[0]} are empty")
        elif frame.shape != shape:
            raise ConfigError(f"frame {i} is {frame.shape}, the clip's first frame {shape}")
        yield frame


def _check_fps(fps: float) -> float:
    if not fps > 0:
        raise ConfigError(f"fps must be positive, not {fps}")
    return float(fps)


# --------------------------------------------------------------------------- JPEG


def _check_quality(quality: int) -> int:
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality must be an integer in 1..100, not {quality!r}")
    return int(quality)


def _jpeg_bytes(frame: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV refuses only invalid images, which _frames rejects
        raise RuntimeError("OpenCV failed to encode a JPEG frame")
    return buf.tobytes()


def _decode_jpeg(payloads: Sequence[bytes]) -> Iterator[np.ndarray]:
    import cv2

    for i, data in enumerate(payloads):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:  # pragma: no cover - the bytes are OpenCV's own
            raise RuntimeError(f"OpenCV failed to decode JPEG frame {i}")
        yield np.ascontiguousarray(bgr[:, :, ::-1])


def encode_jpeg(
    frames: Iterable[np.ndarray], quality: int = DEFAULT_JPEG_QUALITY, fps: float = DEFAULT_FPS
) -> CodedClip:
    """Each frame as a JPEG file (OpenCV, libjpeg-turbo, 4:2:0) at ``quality`` (1..100)."""
    quality = _check_quality(quality)
    fps = _check_fps(fps)
    payloads, shape = [], None
    for frame in _frames(frames):
        payloads.append(_jpeg_bytes(frame, quality))
        shape = frame.shape
    if shape is None:
        raise ConfigError("no frames to encode")
    return CodedClip(
        codec="jpeg",
        settings={"quality": quality, "library": "opencv", "subsampling": "4:2:0"},
        width=shape[1],
        height=shape[0],
        fps=fps,
        per_frame_bytes=np.array([len(p) for p in payloads], np.int64),
        _payloads=payloads,
    )


def jpeg_quality_for_bpp(frames: Sequence[np.ndarray], target_bpp: float = JPEG_TARGET_BPP) -> tuple[int, float]:
    """The JPEG quality (1..100) whose mean bits per pixel over ``frames`` is closest to the target.

    Returns ``(quality, bits_per_pixel)``. The frames are encoded several times (a binary
    search over the quality, whose rate rises with it): pass a sample of a long clip.
    """
    frames = list(_frames(frames))
    if not frames:
        raise ConfigError("no frames to search the JPEG quality on")
    if not target_bpp > 0:
        raise ConfigError(f"target bits per pixel must be positive, not {target_bpp}")
    pixels = frames[0].shape[0] * frames[0].shape[1]
    cache: dict[int, float] = {}

    def bpp(q: int) -> float:
        if q not in cache:
            cache[q] = 8.0 * float(np.mean([len(_jpeg_bytes(f, q)) for f in frames])) / pixels
        return cache[q]

    lo, hi = 1, 100  # the smallest quality reaching the target lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if bpp(mid) >= target_bpp:
            hi = mid
        else:
            lo = mid + 1
    best = min({max(lo - 1, 1), lo}, key=lambda q: (abs(bpp(q) - target_bpp), q))
    return best, bpp(best)


# --------------------------------------------------------------------------- H.264 / H.265

# The NAL unit types a decoder needs: the pictures (VCL) and the parameter sets (H.264: SPS,
# PPS; H.265: VPS, SPS, PPS). Not counted: SEI messages (H.264 type 6, H.265 39 and 40: x264's
# encoder-information message, some 680 bytes, and x265's, some 2,300, once per stream),
# access unit delimiters, end of sequence or stream, filler.
DECODER_NAL_TYPES = {
    "h264": frozenset({1, 2, 3, 4, 5, 7, 8}),
    "h265": frozenset(range(32)) | {32, 33, 34},
}
# An Annex B start code with the zero bytes before it (a NAL unit never ends with a zero byte).
_START_CODE = re.compile(rb"\x00*\x00\x00\x01")


def nal_type(unit: bytes, codec: str) -> int:
    """The type of an Annex B NAL unit (its start code first) of ``codec``."""
    header = unit[unit.index(b"\x00\x00\x01") + 3]
    return header & 0x1F if codec == "h264" else (header >> 1) & 0x3F


def nal_units(data: bytes) -> list[bytes]:
    """An Annex B packet (what libx264 and libx265 give PyAV: start codes, no length prefixes)
    cut into its NAL units, each with its start code and the zero bytes before it."""
    starts = [m.start() for m in _START_CODE.finditer(data)]
    if not starts or starts[0] != 0:
        raise RuntimeError(f"a packet that does not begin with an Annex B start code ({data[:4].hex()})")
    units = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    if any(u.endswith(b"\x00\x00\x01") for u in units):
        raise RuntimeError("a packet with a start code and no NAL unit after it")
    return units


def decoder_units(data: bytes, codec: str) -> bytes:
    """The NAL units of a packet that a decoder needs (:data:`DECODER_NAL_TYPES`), as the
    packet holds them: what the video baselines count and decode."""
    wanted = DECODER_NAL_TYPES[codec]
    return b"".join(u for u in nal_units(data) if nal_type(u, codec) in wanted)


def encode_video(
    frames: Iterable[np.ndarray],
    fps: float,
    codec: str = "h264",
    crf: int = 28,
    preset: str = DEFAULT_PRESET,
    gop: int = DEFAULT_GOP,
    threads: int = 1,
) -> CodedClip:
    """The clip as one H.264 (libx264) or H.265 (libx265) stream at a constant rate factor."""
    import av
    from av.codec.context import CodecContext

    if codec not in VIDEO_CODECS:
        raise ConfigError(f"unknown video codec {codec!r}: use one of {', '.join(VIDEO_CODECS)}")
    if not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ConfigError(f"crf must be an integer in 0..51, not {crf!r}")
    if preset not in X26X_PRESETS:
        raise ConfigError(f"unknown {codec} preset {preset!r}: use one of {', '.join(X26X_PRESETS)}")
    if not isinstance(gop, (int, np.integer)) or gop < 1:
        raise ConfigError(f"gop must be a positive integer, not {gop!r}")
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ConfigError(f"threads must be a positive integer, not {threads!r}")
    fps = _check_fps(fps)
    rate = Fraction(fps).limit_denominator(1001)
    encoder_name = VIDEO_CODECS[codec][0]
    options = {"crf": str(int(crf)), "preset": preset}
    if encoder_name == "libx264":
        options["threads"] = str(int(threads))
    else:  # libx265 takes its threading (and its log level) through x265-params
        options["x265-params"] = f"log-level=error:pools={int(threads)}:frame-threads={int(threads)}"

    encoder = None
    packets: list[tuple[bytes, int, int]] = []
    n = 0

    def collect(out) -> None:  # the picture NAL units and parameter sets, not the SEI
        for p in out:
            packets.append((decoder_units(bytes(p), codec), int(p.pts), int(p.dts)))

    for frame in _frames(frames):
        height, width = frame.shape[:2]
        # yuv420p: even sizes, and at least the encoder's smallest; padded with the edge pixels, cropped after decoding
        low = MIN_CODED_SIDE[encoder_name]
        pad_h, pad_w = max(height % 2, low - height), max(width % 2, low - width)
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if encoder is None:
            encoder = CodecContext.create(encoder_name, "w")
            encoder.width, encoder.height = frame.shape[1], frame.shape[0]
            encoder.pix_fmt = "yuv420p"
            encoder.time_base = 1 / rate
            encoder.framerate = rate
            encoder.gop_size = int(gop)
            encoder.options = options
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        vf.pts = n
        collect(encoder.encode(vf))
        n += 1
    if encoder is None:
        raise ConfigError("no frames to encode")
    collect(encoder.encode(None))

    per_frame = np.zeros(n, np.int64)
    seen = np.zeros(n, bool)
    for data, pts, _ in packets:
        if not 0 <= pts < n or seen[pts]:
            raise RuntimeError(f"{encoder_name} returned a packet for frame {pts} of {n} twice or out of range")
        seen[pts] = True
        per_frame[pts] = len(data)
    if not seen.all():
        raise RuntimeError(f"{encoder_name} returned {int(seen.sum())} packets for {n} frames")
    settings = {
        "encoder": encoder_name,
        "crf": int(crf),
        "preset": preset,
        "tune": None,
        "gop": int(gop),
        "pix_fmt": "yuv420p",
        "threads": int(threads),
    }
    if (encoder.width, encoder.height) != (width, height):
        settings["coded_size"] = f"{encoder.width}x{encoder.height}"
    return CodedClip(codec, settings, width, height, fps, per_frame, packets)


def encode_h264(frames: Iterable[np.ndarray], fps: float, crf: int = 28, **kwargs) -> CodedClip:
    """:func:`encode_video` with libx264."""
    return encode_video(frames, fps, "h264", crf, **kwargs)


def encode_h265(frames: Iterable[np.ndarray], fps: float, crf: int = 28, **kwargs) -> CodedClip:
    """:func:`encode_video` with libx265."""
    return encode_video(frames, fps, "h265", crf, **kwargs)


def _decode_video(decoder_name: str, packets, n_frames: int) -> Iterator[np.ndarray]:
    import av
    from av.codec.context import CodecContext

    decoder = CodecContext.create(decoder_name, "r")
    count = 0

    def emit(frames):
        nonlocal count
        for vf in frames:
            if vf.pts is not None and vf.pts != count:
                raise RuntimeError(f"{decoder_name} decoder gave frame {vf.pts} where {count} was due")
            count += 1
            if count > n_frames:
                raise RuntimeError(f"{decoder_name} decoder gave more than the {n_frames} frames encoded")
            yield vf.to_ndarray(format="rgb24")

    for data, pts, dts in packets:
        packet = av.Packet(data)
        packet.pts, packet.dts = pts, dts
        yield from emit(decoder.decode(packet))
    yield from emit(decoder.decode(None))
    if count != n_frames:
        raise RuntimeError(f"{decoder_name} decoder gave {count} frames for {n_frames} encoded")


# --------------------------------------------------------------------------- fidelity and the example table


def mean_psnr(originals: Iterable[np.ndarray], clip: CodedClip) -> float:
    """Mean PSNR (dB) of the decoded clip against the original frames, frame by frame."""
    values = [psnr(a, b) for a, b in zip(originals, clip.decoded(), strict=True)]
    return float(np.mean(values))


def example_table(
    frames: Sequence[np.ndarray],
    fps: float,
    crfs: Sequence[int] = DEFAULT_CRFS,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    target_bpp: float = JPEG_TARGET_BPP,
) -> list[dict]:
    """Every baseline's figures on one clip (the rows of docs/baselines.md's example)."""
    searched, _ = jpeg_quality_for_bpp(frames, target_bpp)
    clips = [encode_jpeg(frames, jpeg_quality, fps), encode_jpeg(frames, searched, fps)]
    clips += [encode_video(frames, fps, codec, crf) for codec in ("h264", "h265") for crf in crfs]
    rows = []
    for clip in clips:
        row = clip.summary()
        row["mb_per_s_at_clip_fps"] = clip.mb_per_s(fps)
        row["psnr_db"] = mean_psnr(frames, clip)
        rows.append(row)
    return rows


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusal is one line, as ``temposplit.cli.OneLineParser``'s (not
    imported: this module's source is part of eval's run identity, and the CLI's must not be)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _frame_count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame count >= 1, not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a frame count >= 1, not {v}")
    return v


def _frame_rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected frames per second > 0, not {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected frames per second > 0 (finite), not {text}")
    return v


def main(argv: list[str] | None = None) -> int:
    """``python -m temposplit.evaluation.baselines [VIDEO] --frames 60``: the example table.

    A bad option or input (a missing or unreadable video, --frames 0, --fps 0) is one line on
    stderr and exit status 2, as the ``temposplit`` commands say it."""
    import sys

    from temposplit.errors import TemposplitError

    parser = _OneLineParser(prog="python -m temposplit.evaluation.baselines", description=main.__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", help="video file (default: data/vtest.avi)")
    parser.add_argument("--frames", type=_frame_count, default=60, help="first N frames, N >= 1 (default 60)")
    parser.add_argument("--fps", type=_frame_rate, default=None, help="the clip's frame rate (default: the file's)")
    args = parser.parse_args(argv)
    try:
        _print_example(args.video, args.frames, args.fps)
    except (TemposplitError, OSError) as exc:
        what = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror and exc.filename else exc
        print(f"{parser.prog}: error: {what}", file=sys.stderr)
        return 2
    return 0


def _print_example(video, n_frames: int, fps: float | None) -> None:
    from temposplit.errors import ConfigError
    from temposplit.model.data import probe_video, read_video, vtest_path

    path = video or vtest_path()
    fps = fps if fps is not None else probe_video(path).fps
    frames = list(read_video(path, max_frames=n_frames))
    if not frames:
        raise ConfigError(f"{path}: no frame to read")
    h, w = frames[0].shape[:2]
    print(f"{path}: {len(frames)} frames of {w}x{h} at {fps:g} frames/s")
    print("| codec | setting | bytes/frame | bits/pixel | MB/s at 30 fps | MB/s at clip fps | ratio vs RGB | PSNR dB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in example_table(frames, fps):
        setting = f"q={row['quality']}" if row["codec"] == "jpeg" else f"crf={row['crf']}"
        print(
            f"| {row['codec']} | {setting} | {row['bytes_per_frame']:.0f} | {row['bits_per_pixel']:.3f} | "
            f"{row['mb_per_s_at_30fps']:.3f} | {row['mb_per_s_at_clip_fps']:.3f} | "
            f"{row['compression_ratio']:.1f} | {row['psnr_db']:.2f} |"
        )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
