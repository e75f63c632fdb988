"""A decoded video frame as the RGB picture a player shows (docs/models.md, "Data", "Colour").

:func:`frame_rgb` turns a PyAV frame into sRGB/BT.709 RGB uint8 (H, W, 3):

* the YCbCr matrix is the stream's tag (BT.601, BT.709, BT.2020, ...); an untagged (or
  nonsensical) one is guessed as players guess it (mpv, and VLC and SDL/ffplay by height):
  BT.2020 where the primaries say BT.2020, else BT.709 for a picture at least 1280 wide or
  more than 576 high, else BT.601. swscale alone takes every untagged picture as BT.601;
* the range is the tag, else limited, full for the ``yuvj`` formats (swscale's rule, and
  the players');
* a picture in BT.2020 or Display P3 primaries, or with an HDR transfer (PQ, HLG), is
  converted to BT.709 SDR in linear light (:func:`to_bt709`): its transfer undone (PQ,
  HLG with its OOTF at a 1000 cd/m2 display, else BT.1886's gamma 2.4), reference white
  (203 cd/m2, ITU-R BT.2408) taken as RGB white, the primaries converted, what lies
  outside BT.709 or above reference white clipped, and BT.1886's gamma applied again.

RGB, grey and palette pictures are converted as swscale converts them.
"""

from __future__ import annotations

import functools

import numpy as np

# FFmpeg's AVColorSpace, AVColorPrimaries and AVColorTransferCharacteristic values (the
# codes of ITU-T H.273, which the frames carry).
SPC_BT709, SPC_UNSPECIFIED, SPC_BT470BG, SPC_SMPTE170M, SPC_SMPTE240M = 1, 2, 5, 6, 7
SPC_YCGCO, SPC_BT2020_NCL, SPC_BT2020_CL = 8, 9, 10
PRI_BT709, PRI_BT2020, PRI_SMPTE432 = 1, 9, 12
TRC_SMPTE2084, TRC_ARIB_STD_B67 = 16, 18

RANGE_JPEG = 2  # AVColorRange: full

# The matrices a tag may name (others mean no sensible matrix: guessed). swscale applies
# each but YCgCo (FFmpeg's sws_scale_frame refuses a frame tagged YCgCo, or tagged with any
# code it does not know, with EOPNOTSUPP): a YCgCo picture is read in NumPy (:func:`to_bt709`).
_KNOWN_MATRICES = {SPC_BT709, SPC_BT470BG, SPC_SMPTE170M, SPC_SMPTE240M, SPC_YCGCO, SPC_BT2020_NCL, SPC_BT2020_CL}
# (Kr, Kb) of the matrices swscale applies, which the linear-light path applies itself too
# (BT.2020's constant-luminance matrix is taken as its non-constant one, as swscale takes it).
_KR_KB = {
    SPC_BT709: (0.2126, 0.0722),
    SPC_BT470BG: (0.299, 0.114),
    SPC_SMPTE170M: (0.299, 0.114),
    SPC_SMPTE240M: (0.212, 0.087),
    SPC_BT2020_NCL: (0.2627, 0.0593),
    SPC_BT2020_CL: (0.2627, 0.0593),
}

# Chromaticities (x, y) of red, green, blue and the white point: ITU-R BT.709, BT.2020,
# SMPTE EG 432-1 (Display P3, D65).
_D65 = (0.3127, 0.3290)
_PRIMARIES = {
    PRI_BT709: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), _D65),
    PRI_BT2020: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), _D65),
    PRI_SMPTE432: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), _D65),
}

REFERENCE_WHITE = 203.0  # cd/m2: HDR reference (graphics) white, ITU-R BT.2408, shown as RGB white
HLG_PEAK = 1000.0  # cd/m2: the nominal HLG display (ITU-R BT.2100), system gamma 1.2
_SDR_GAMMA = 2.4  # ITU-R BT.1886
_STRIP = 1 << 18  # pixels converted at once in linear light (whole rows): bounds the float temporaries


def is_hd(width: int, height: int) -> bool:
    """True for a picture players take as HD when its matrix is untagged: at least 1280
    wide or more than 576 high (mpv; VLC and SDL, ffplay's renderer, look at the height)."""
    return width >= 1280 or height > 576


def _is_ycbcr(frame) -> bool:
    """A YCbCr picture (three components or more, not RGB; PyAV's ``is_chroma`` is false
    for 4:4:4's chroma, so it cannot tell)."""
    fmt = frame.format
    return not fmt.is_rgb and not fmt.has_palette and len(fmt.components) >= 3


def matrix_of(frame) -> int:
    """The YCbCr matrix (an AVColorSpace) the frame is shown with: its tag, else the guess."""
    tagged = int(frame.colorspace)
    if tagged in _KNOWN_MATRICES:
        return tagged
    if int(frame.color_primaries) == PRI_BT2020:
        return SPC_BT2020_NCL
    return SPC_BT709 if is_hd(frame.width, frame.height) else SPC_BT470BG


def primaries_of(frame, matrix: int) -> int:
    """The primaries (an AVColorPrimaries) of the frame's RGB: its tag, else BT.2020 for a
    BT.2020 matrix, else BT.709 (the SD primaries are left as BT.709: they differ little)."""
    tagged = int(frame.color_primaries)
    if tagged in _PRIMARIES:
        return tagged
    return PRI_BT2020 if matrix in (SPC_BT2020_NCL, SPC_BT2020_CL) else PRI_BT709


def frame_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as the BT.709 SDR RGB uint8 (H, W, 3) picture a player shows
    (module docstring). A frame swscale already read right (a tagged SDR BT.709 or BT.601
    frame, an untagged SD one) is converted exactly as ``to_ndarray("rgb24")`` converts it."""
    if not _is_ycbcr(frame):
        return frame.to_ndarray(format="rgb24")
    matrix = matrix_of(frame)
    transfer = int(frame.color_trc)
    primaries = primaries_of(frame, matrix)
    if matrix not in _KR_KB or primaries != PRI_BT709 or transfer in (TRC_SMPTE2084, TRC_ARIB_STD_B67):
        return to_bt709(frame, matrix, primaries, transfer)
    tagged = int(frame.colorspace)
    if tagged == matrix or (tagged == SPC_UNSPECIFIED and matrix == SPC_BT470BG):  # what swscale reads alone
        return frame.to_ndarray(format="rgb24")
    # A guess swscale would not make, or a tag it refuses (reserved, ICtCp, ...): the matrix named.
    return frame.reformat(format="rgb24", src_colorspace=_sws_colorspace(matrix)).to_ndarray()


def _sws_colorspace(matrix: int) -> int:
    """The swscale ``SWS_CS_*`` code of an AVColorSpace matrix (PyAV's ``src_colorspace``)."""
    from av.video.reformatter import Colorspace

    return {
        SPC_BT709: Colorspace.ITU709,
        SPC_SMPTE240M: Colorspace.SMPTE240M,
        SPC_BT2020_NCL: Colorspace.BT2020,
        SPC_BT2020_CL: Colorspace.BT2020,
    }.get(matrix, Colorspace.ITU601)


def to_bt709(frame, matrix: int, primaries: int, transfer: int) -> np.ndarray:
    """A wide-gamut or HDR frame (or a YCgCo one) as BT.709 SDR RGB uint8, in linear light
    (module docstring).

    swscale only unpacks the planes (and upsamples the chroma) to 16 bits, told that the
    matrix and the range stay what they are (it would otherwise turn an untagged ``yuvj``
    frame to limited range, and refuse a tag it does not know); the matrix and range are
    applied here: swscale's own 10-bit to 16-bit RGB reads 0.4 % dark, which PQ's steep
    curve makes up to 30 levels of 255 near black after the primaries' conversion."""
    from av.video.reformatter import ColorRange

    bits = frame.format.components[0].bits
    full = int(frame.color_range) == RANGE_JPEG or frame.format.name.startswith("yuvj")
    same = _sws_colorspace(matrix)
    kept = ColorRange.JPEG if full else ColorRange.MPEG
    # One thread: FFmpeg 8's sliced unpack of an odd-sized (e.g. 1921x1081) 10-bit frame
    # garbles a few pixels at a slice's edge, differently from run to run.
    unpacked = frame.reformat(
        format="yuv444p16le",
        src_colorspace=same,
        dst_colorspace=same,
        src_color_range=kept,
        dst_color_range=kept,
        threads=1,
    )
    height, width = unpacked.height, unpacked.width
    # The three planes, uint16 shifted to 16 bits, as views of the unpacked frame (no copy).
    planes = [np.frombuffer(p, np.uint16).reshape(-1, p.line_size // 2)[:height, :width] for p in unpacked.planes]
    if full:
        y_scale = c_scale = 1 / ((2**bits - 1) << (16 - bits))
        y_offset, c_offset = 0.0, -32768 * c_scale
    else:  # limited: Y' = (Y / 256 - 16) / 219, C = (C / 256 - 128) / 224 at any depth, once shifted to 16 bits
        y_scale, c_scale = 1 / (256 * 219), 1 / (256 * 224)
        y_offset, c_offset = -16 / 219, -128 / 224
    to_linear = _to_linear_lut(transfer)
    convert = _conversion(primaries).astype(np.float32).T
    luma = _luma(primaries).astype(np.float32)
    encode = _encode_lut()
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, _STRIP // width)
    for top in range(0, height, rows):
        y, cb, cr = (plane[top : top + rows].astype(np.float32) for plane in planes)
        y, cb, cr = y * y_scale + y_offset, cb * c_scale + c_offset, cr * c_scale + c_offset
        if matrix == SPC_YCGCO:  # ITU-T H.273: Cb carries Cg, Cr carries Co
            t = y - cb
            coded = np.stack([t + cr, y + cb, t - cr], axis=-1)
        else:
            kr, kb = _KR_KB[matrix]
            r, b = y + (2 - 2 * kr) * cr, y + (2 - 2 * kb) * cb
            coded = np.stack([r, (y - kr * r - kb * b) / (1 - kr - kb), b], axis=-1)
        light = to_linear[np.clip(coded * 65535 + 0.5, 0, 65535).astype(np.uint16)]
        if transfer == TRC_ARIB_STD_B67:  # the HLG OOTF: display light from scene light
            scene_y = np.maximum(light @ luma, 0.0)
            light *= (HLG_PEAK / REFERENCE_WHITE * scene_y ** np.float32(0.2))[..., None]
        light = light @ convert
        np.clip(light, 0.0, 1.0, out=light)
        out[top : top + rows] = encode[(np.sqrt(light) * (len(encode) - 1) + 0.5).astype(np.intp)]
    return out


@functools.lru_cache(maxsize=4)
def _to_linear_lut(transfer: int) -> np.ndarray:
    """float32[65536]: a 16-bit R'G'B' code to linear light, 1.0 at reference white (PQ),
    to HLG's scene light (0..1; the OOTF follows), or to BT.1886 display light (else)."""
    e = np.arange(65536, dtype=np.float64) / 65535
    if transfer == TRC_SMPTE2084:  # SMPTE ST 2084 EOTF
        m1, m2 = 2610 / 16384, 2523 / 4096 * 128
        c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        p = e ** (1 / m2)
        light = 10000 / REFERENCE_WHITE * (np.maximum(p - c1, 0) / (c2 - c3 * p)) ** (1 / m1)
    elif transfer == TRC_ARIB_STD_B67:  # ITU-R BT.2100 HLG inverse OETF
        a = 0.17883277
        b, c = 1 - 4 * a, 0.5 - a * np.log(4 * a)
        light = np.where(e <= 0.5, e * e / 3, (np.exp((e - c) / a) + b) / 12)
    else:
        light = e**_SDR_GAMMA
    return light.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _encode_lut() -> np.ndarray:
    """uint8[4096]: BT.1886's inverse (gamma 1/2.4) of linear light, indexed by its square
    root (fine steps near black, where the curve is steep)."""
    root = np.linspace(0, 1, 4096)
    return np.rint(255 * root ** (2 / _SDR_GAMMA)).astype(np.uint8)


def _rgb_to_xyz(primaries: int) -> np.ndarray:
    (xr, yr), (xg, yg), (xb, yb), (xw, yw) = _PRIMARIES[primaries]
    columns = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in ((xr, yr), (xg, yg), (xb, yb))]).T
    white = np.array([xw / yw, 1.0, (1 - xw - yw) / yw])
    return columns * np.linalg.solve(columns, white)


@functools.lru_cache(maxsize=4)
def _conversion(primaries: int) -> np.ndarray:
    """3x3: linear RGB in ``primaries`` to linear BT.709 RGB (the same D65 white)."""
    return np.linalg.solve(_rgb_to_xyz(PRI_BT709), _rgb_to_xyz(primaries))


def _luma(primaries: int) -> np.ndarray:
    """The luminance weights of linear RGB in ``primaries`` (XYZ's Y row)."""
    return _rgb_to_xyz(primaries)[1]
