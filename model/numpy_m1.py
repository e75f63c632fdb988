"""M1 on the edge board without PyTorch: a NumPy int8 runtime for an exported M1 (docs/requirements.md section 8).

The PYNQ-Z2's 32-bit ARM Linux has NumPy 1.x and no PyTorch wheels, so the board runs the
int8 M1 that :mod:`temposplit.model.export` writes (an ``.npz``: int8 weights, int32
biases, float32 requantization scales, the layer graph as JSON; format in
docs/numpy-m1.md) with this module, which needs nothing but NumPy (1.x or 2.x).

The arithmetic is PyTorch's qnnpack int8 M1's (x86 build), so that the codes match it:

* convolution: ``acc = sum (x_q - x_zp) * (w_q - w_zp) + bias_q`` (int32), then
  ``q = clamp(rint(float32(acc) * requant_scale) + out_zp, qmin, qmax)``, the float32
  multiply and the round-half-to-even being what qnnpack's kernels do (fp32
  requantization, not gemmlowp's fixed-point multiplier); a fused ReLU clamps at the
  output zero point, a ReLU6 saturates at code 255 (its calibrated range ends at 6);
* the products are summed by a float32 BLAS ``matmul`` (im2col) or a shifted sum over the
  kernel taps (depthwise). That is exact integer arithmetic: every term and every partial
  sum is an integer below 2**24 in magnitude, which :class:`NumpyM1` checks per layer from
  the weights when it loads (a layer that could exceed it is summed in slices of the
  reduction that cannot). NumPy's integer ``matmul`` has no BLAS and runs far slower;
* residual add: qnnpack's fixed-point kernel (both inputs scaled by integer multipliers
  below 2**22 that share one right shift, rounded half away from zero), which PyTorch
  uses for quint8 adds under the qnnpack engine, channels-last inputs included;
* max pooling on the codes; TF "SAME" padding with the input's zero point (value 0).

Layout is NCHW throughout; a frame's codes at the cut are (C, H, W) uint8 like
:class:`temposplit.model.quantize.CutTensor`'s.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # the exact convolution kernels: a module of the package, or the file beside this one on the board
    from temposplit.model import numpy_conv
except ImportError:  # numpy_m1.py loaded on its own by path: numpy_conv.py sits in the same folder
    import importlib.util as _importlib_util
    import sys as _sys

    _spec = _importlib_util.spec_from_file_location("numpy_conv", Path(__file__).with_name("numpy_conv.py"))
    numpy_conv = _importlib_util.module_from_spec(_spec)
    _sys.modules["numpy_conv"] = numpy_conv
    _spec.loader.exec_module(numpy_conv)

FORMAT = "temposplit-numpy-m1"
VERSION = 2  # 2: a convolution's weights may be int16 (model/wide.py); version 1 files still load
SSD_INPUT_SIZE = (300, 300)
# What a file may declare, refused at load (docs/numpy-m1.md, "Limits of a file"), well above
# every real export: the SSD's at 300x300 has 2.6 MB of members (features.18), its largest
# tensor 2.19 M elements (features.2's padded expansion, 96x151x151); ResNet-50's to layer4 about
# 24 MB, its largest weights 2.36 M elements.
MAX_ARCHIVE_BYTES = 256 * 2**20  # the members' declared (inflated) sizes, summed
MAX_ELEMENTS = 2**24  # any one tensor: an array of the file, a node's output, a padded input, an im2col step
MAX_SIDE = 4096  # an input side (as `temposplit models --input-size`), kernel, stride or padding
ARRAY_KEYS = ("weight", "weight_zero_point", "weight_scale", "bias", "bias_float", "requant_scale")


class FormatError(ValueError):
    """The file is not an M1 export this runtime reads."""


@dataclass
class QTensor:
    """A per-tensor affine quint8 activation: value = (codes - zero_point) * scale."""

    codes: np.ndarray  # uint8 (N, C, H, W)
    scale: float
    zero_point: int


@dataclass
class Codes:
    """One tensor crossing the cut, for one frame (the fields of ``quantize.CutTensor``)."""

    name: str
    shape: tuple
    scale: float
    zero_point: int
    codes: np.ndarray  # uint8 (C, H, W)

    def dequantize(self) -> np.ndarray:
        return (self.codes.astype(np.float32) - self.zero_point) * np.float32(self.scale)


# --------------------------------------------------------------------------- preprocessing


def resize_bilinear_tf1(image: np.ndarray, size=SSD_INPUT_SIZE) -> np.ndarray:
    """TensorFlow 1's ``ResizeBilinear`` (align_corners false, no half-pixel centres), float32.

    The one definition: the PyTorch port (``temposplit.model.ssd``) imports it from here, so
    that this runtime stays one self-contained, torch-free file for the board.
    """
    in_h, in_w = image.shape[:2]
    out_h, out_w = size
    sy = np.arange(out_h, dtype=np.float32) * np.float32(in_h / out_h)
    sx = np.arange(out_w, dtype=np.float32) * np.float32(in_w / out_w)
    y0 = np.floor(sy).astype(np.int64)
    x0 = np.floor(sx).astype(np.int64)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    dy = (sy - y0).astype(np.float32)[:, None, None]
    dx = (sx - x0).astype(np.float32)[None, :, None]
    # Only the four samples of each output pixel become float32 (4 x out_h x out_w pixels),
    # gathered as uint8 first: memory is the output's, whatever the frame's size (a 4K frame
    # took 118 MB when whole, 33 MB as two whole rows per output row, a 4x65536 frame 531 MB;
    # now about 5 MB), on a board of 512 MB. The same values, so the same result bit for bit.
    image = np.asarray(image)
    rows0, rows1, cols0, cols1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    p00, p01 = image[rows0, cols0].astype(np.float32), image[rows0, cols1].astype(np.float32)
    p10, p11 = image[rows1, cols0].astype(np.float32), image[rows1, cols1].astype(np.float32)
    top = p00 + (p01 - p00) * dx
    bottom = p10 + (p11 - p10) * dx
    return (top + (bottom - top) * dy).astype(np.float32)


def check_frames(frames, error=ValueError, allow=()) -> list:
    """``frames`` as a list of RGB uint8 arrays (H, W, 3) (or instances of ``allow``), or ``error``
    naming the first that is not. What NumPy reads as an array (a Pillow image of mode RGB:
    ``__array_interface__``) comes back as that array. One frame passed alone would be read
    as H frames of its rows, each resized to a (300, 300, 300) float32 block: gigabytes, not
    an error."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        raise error(f"one array {frames.shape} is not a list of frames: pass [frame] for one RGB frame")
    try:
        frames = list(frames)
    except TypeError:
        raise error(f"frames must be a list of RGB uint8 arrays (H, W, 3), not {type(frames).__name__}") from None
    if not frames:
        raise error("no frames")
    for i, f in enumerate(frames):
        if isinstance(f, allow):
            continue
        readable = isinstance(f, np.ndarray) or hasattr(f, "__array__") or hasattr(f, "__array_interface__")
        a = np.asarray(f) if readable else None
        if a is None or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
            what = type(f).__name__ if a is None else f"{a.dtype} {a.shape}"
            if isinstance(getattr(f, "mode", None), str):  # a Pillow image of another mode
                what = f"a {f.mode} image (image.convert('RGB') makes it one)"
            raise error(f"frame {i} must be an RGB uint8 array (H, W, 3), not {what}")
        frames[i] = a
    return frames


def preprocess_ssd(frames, size=SSD_INPUT_SIZE) -> np.ndarray:
    """RGB uint8 frames (H, W, 3) -> the SSD's input (N, 3, 300, 300) float32 in [-1, 1]."""
    batch = np.stack([resize_bilinear_tf1(np.asarray(f), size) for f in check_frames(frames)])
    x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    # float32 throughout, as torch computes ``x * (2.0 / 255.0) - 1.0`` on a float32 tensor
    return x * np.float32(2.0 / 255.0) - np.float32(1.0)


# --------------------------------------------------------------------------- the operators


def quantize(x: np.ndarray, inv_scale: float, zero_point: int) -> np.ndarray:
    """Float32 -> quint8 codes: ``clamp(rint(x * inv_scale) + zp, 0, 255)`` (fbgemm's AVX2 path)."""
    q = np.rint(np.asarray(x, dtype=np.float32) * np.float32(inv_scale))
    q += np.float32(zero_point)
    return np.clip(q, 0, 255).astype(np.uint8)


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one axis: the odd row/column goes last."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(codes: np.ndarray, kernel: int, stride: int, zero_point: int) -> np.ndarray:
    """TF "SAME" zero padding of codes (N, C, H, W): padded with the zero point (value 0)."""
    top, bottom = tf_same_pads(codes.shape[2], kernel, stride)
    left, right = tf_same_pads(codes.shape[3], kernel, stride)
    if top == bottom == left == right == 0:
        return codes
    return np.pad(codes, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=zero_point)


def requantize(acc: np.ndarray, bias: np.ndarray, scale: np.ndarray, zero_point: int, qmin: int, qmax: int):
    """int32 accumulators (N, O, ...) + bias -> uint8 codes, as qnnpack's fp32 requantization:
    float32(acc) * scale (one float32 rounding), round half to even, + zero point, clamp.

    ``acc`` may be float32 holding integers, and ``bias`` float32, when their sum is known
    to stay below 2**24 in magnitude (then float32 holds it exactly, as int32 would);
    ``bias`` None: already summed into ``acc``."""
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    if bias is None:  # already in the accumulators (float64 ones, exact integers: rounded once to float32)
        y = acc if acc.dtype == np.float32 else acc.astype(np.float32)
    elif acc.dtype == np.float32:
        y = acc
        y += bias.reshape(shape)
    else:
        y = (acc + bias.reshape(shape)).astype(np.float32)
    y *= scale.reshape(shape)
    np.rint(y, out=y)
    y += np.float32(zero_point)
    np.clip(y, qmin, qmax, out=y)
    return y.astype(np.uint8)


_windows = numpy_conv.windows  # the kernel taps' strided views (max pooling uses them too)


_PER_CHANNEL = {"weight_zero_point": "an integer", "bias": "an integer", "requant_scale": "a floating-point"}


def _channel_array(arrays: dict, name: str, key: str, channels: int) -> np.ndarray:
    """A conv's per-output-channel array: 1-D, one entry per output channel, of its kind
    (integer zero points and bias, floating requantization scales), or a FormatError."""
    a = arrays[f"{name}.{key}"]
    if a.shape != (channels,):
        raise FormatError(f"{name}: {key} of shape {a.shape}, expected ({channels},): one per output channel")
    kind = _PER_CHANNEL[key]
    if not np.issubdtype(a.dtype, np.integer if kind == "an integer" else np.floating):
        raise FormatError(f"{name}: {key} of type {a.dtype}, expected {kind} type")
    return a


class Conv:
    """Quantized convolution (optionally with a fused ReLU), qnnpack's arithmetic.

    ``sum (x - x_zp) * w_c + bias`` is computed as ``sum x * w_c + (bias - x_zp * sum w_c)``
    (the zero point folded into the bias, padding with the zero point), which saves a pass
    over the input and is the same integer.
    """

    def __init__(self, node: dict, arrays: dict):
        name = node["name"]
        w = arrays[f"{name}.weight"]  # int8, or int16 (O, I/g, kh, kw)
        if w.dtype not in (np.int8, np.int16):
            raise FormatError(f"{name}: weights of type {w.dtype}, expected int8 or int16")
        if w.ndim != 4 or 0 in w.shape:
            raise FormatError(f"{name}: weights of shape {w.shape}, expected (O, I/groups, kh, kw)")
        _budget(f"{name}: weights", *w.shape)
        per_channel = {key: _channel_array(arrays, name, key, w.shape[0]) for key in _PER_CHANNEL}
        lo, hi = np.iinfo(w.dtype).min, np.iinfo(w.dtype).max
        if per_channel["weight_zero_point"].min() < lo or per_channel["weight_zero_point"].max() > hi:
            raise FormatError(f"{name}: weight_zero_point outside the {w.dtype} range {lo}..{hi}")
        if per_channel["bias"].min() < -(2**31) or per_channel["bias"].max() >= 2**31:
            raise FormatError(f"{name}: bias out of the int32 range")
        wide = w.dtype == np.int16
        w = w.astype(np.float32)
        wzp = per_channel["weight_zero_point"].astype(np.float32)
        self.node = node
        self.out_channels, cin_g, self.kh, self.kw = (int(n) for n in w.shape)
        self.groups = _whole(node["groups"], f"{name}: groups", 1)
        self.stride = _pair(node["stride"], f"{name}: stride", 1)
        self.padding = _pair(node["padding"], f"{name}: padding", 0)
        if self.kh > MAX_SIDE or self.kw > MAX_SIDE:
            raise FormatError(f"{name}: a {self.kh}x{self.kw} kernel, above {MAX_SIDE} on a side")
        if self.padding[0] >= self.kh or self.padding[1] >= self.kw:
            raise FormatError(f"{name}: padding {list(self.padding)} not smaller than its {self.kh}x{self.kw} kernel")
        self.in_zp = _whole(node["input_zero_point"], f"{name}: input_zero_point", 0, 255)
        self.out_zp = _whole(node["zero_point"], f"{name}: zero_point", 0, 255)
        self.qmin = _whole(node["qmin"], f"{name}: qmin", 0, 255)
        self.qmax = _whole(node["qmax"], f"{name}: qmax", 0, 255)
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused below
            self.scale = per_channel["requant_scale"].astype(np.float32)
        if not (np.isfinite(self.scale).all() and (self.scale > 0).all()):
            raise FormatError(f"{name}: requant_scale holds values that are not finite positive float32 numbers")
        wc = w - wzp.reshape(-1, 1, 1, 1)  # centred weights: small integers, exact in float32
        self.depthwise = self.groups > 1 and cin_g == 1 and self.groups == self.out_channels
        if self.groups > 1 and not self.depthwise:
            raise FormatError(f"{name}: grouped convolution other than depthwise is not supported")
        self.in_channels = self.groups if self.depthwise else cin_g
        flat = wc.reshape(self.out_channels, -1)  # (O, K), K in (c, i, j) order
        bias = per_channel["bias"].astype(np.int64) - self.in_zp * flat.sum(1).astype(np.int64)
        if np.abs(bias).max(initial=0) >= 2**31:
            raise FormatError(f"{name}: bias out of the int32 range")
        # the sums: exact integer arithmetic on the float32 BLAS (model/numpy_conv.py)
        try:
            if self.depthwise:
                self.dw = numpy_conv.ExactDepthwise(flat, bias)  # flat: (C, taps)
            else:
                self.gemm = numpy_conv.ExactGemm(flat, bias, dtype=np.float64 if wide else np.float32)
        except ValueError as exc:
            raise FormatError(f"{name}: {exc}") from exc

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        (sh, sw), (ph, pw) = self.stride, self.padding
        return (h + 2 * ph - self.kh) // sh + 1, (w + 2 * pw - self.kw) // sw + 1

    def macs(self, h: int, w: int) -> int:
        ho, wo = self.out_size(h, w)
        per_out = self.kh * self.kw * (1 if self.depthwise else self.in_channels)
        return self.out_channels * ho * wo * per_out

    def __call__(self, x: QTensor) -> np.ndarray:
        codes = x.codes
        ho, wo = self.out_size(*codes.shape[2:])
        ph, pw = self.padding
        if ph or pw:  # qnnpack pads with the input zero point
            codes = np.pad(codes, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=self.in_zp)
        if self.depthwise:
            acc = self.dw(codes, self.kh, self.kw, self.stride, ho, wo)
            bias = None if self.dw.bias_inside else self.dw.bias
        else:
            acc = numpy_conv.conv_gemm(codes, self.gemm, self.kh, self.kw, self.stride, ho, wo)
            bias = None if self.gemm.bias_inside else self.gemm.bias
        return requantize(acc, bias, self.scale, self.out_zp, self.qmin, self.qmax)


def add(a: QTensor, b: QTensor, node: dict) -> np.ndarray:
    """Quantized add (and add + ReLU), qnnpack's fixed-point kernel (q8vadd):
    ``acc = zpp + a * a_mult + b * b_mult``, shifted right by ``shift`` with rounding half
    away from zero, + output zero point, clamped."""
    # int32 as in qnnpack: |a_mult * (a - a_zp) + b_mult * (b - b_zp)| < 2**31 in this order
    acc = a.codes.astype(np.int32) * np.int32(node["a_multiplier"])
    acc += np.int32(node["zero_point_product"])
    acc += b.codes.astype(np.int32) * np.int32(node["b_multiplier"])
    shift = int(node["shift"])
    mask = (1 << shift) - 1
    rem = (acc & mask) - (acc < 0)
    out = (acc >> shift) + (rem > (mask >> 1))
    out += int(node["zero_point"])
    return np.clip(out, int(node["qmin"]), int(node["qmax"])).astype(np.uint8)


def max_pool(codes: np.ndarray, node: dict) -> np.ndarray:
    """Max pooling on codes (max commutes with the monotone dequantization); padded taps are
    ignored, which padding with code 0 amounts to (every window holds a real element)."""
    kh, kw = node["kernel"]
    sh, sw = node["stride"]
    ph, pw = node["padding"]
    n, c, h, w = codes.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = np.pad(codes, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else codes
    out = None
    for view in _windows(xp, kh, kw, sh, sw, ho, wo):
        out = view.copy() if out is None else np.maximum(out, view, out=out)
    return out


# --------------------------------------------------------------------------- the graph


def _member_key(name: str):
    """The entry an archive member holds (``graph``, ``<node>.<key>``), or None where the format
    names no such member: ``graph.npy`` and ``<node>.<key>.npy`` (``key`` in ARRAY_KEYS), as
    ``np.savez`` names the exporter's entries."""
    if not name.endswith(".npy"):
        return None
    key = name[: -len(".npy")]
    if key == "graph":
        return key
    node, _, field = key.rpartition(".")
    return key if node and field in ARRAY_KEYS else None


def _read_member(z, info) -> np.ndarray:
    """One ``.npy`` member of an archive, its header checked against the member's declared size
    before anything is allocated (a FormatError: shapes of absurd size, objects, wrong sizes)."""
    from numpy.lib import format as npy

    name = info.filename
    with z.open(info) as f:
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(f)
        else:
            raise FormatError(f"{name}: .npy format version {version}, expected 1.0 or 2.0")
        if dtype.hasobject:
            raise FormatError(f"{name}: an array of Python objects (a pickle), not numbers")
        count = 1
        for side in shape:
            if side < 0:
                raise FormatError(f"{name}: shape {shape} has a negative side")
            count *= side
        if count > MAX_ELEMENTS:
            raise FormatError(f"{name}: shape {shape} of {count} elements, above the budget of {MAX_ELEMENTS}")
        size = count * dtype.itemsize
        if size != info.file_size - f.tell():
            raise FormatError(
                f"{name}: shape {shape} of {dtype} is {size} bytes, the member holds {info.file_size - f.tell()}"
            )
        data = bytearray(size)
        if f.readinto(data) != size or f.read(1):  # the read to the end checks the member's CRC
            raise FormatError(f"{name}: shorter than its header says")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")


def read_export(path) -> tuple[dict, dict]:
    """The graph (dict) and the arrays of an exported M1 ``.npz`` (no pickles).

    A file that is no such export (empty, truncated, damaged, not a zip, members the format
    does not name, more than MAX_ARCHIVE_BYTES once inflated, a graph of another shape) raises
    :class:`FormatError` naming it, before the members are inflated where their declared
    sizes already tell; a missing or unreadable file, OSError."""
    import struct
    import zipfile
    import zlib

    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic:  # what np.load said of it
        raise FormatError(f"{path}: not a readable .npz (EOFError: the file is empty)")
    if magic.startswith(b"\x93NUMPY"):
        raise FormatError(f"{path}: a single array, not an .npz archive")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # NumPy: "a pickle"
        raise FormatError(f"{path}: not a readable .npz (no zip archive: it starts with {magic!r})")
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            keys = [_member_key(info.filename) for info in members]
            if "graph" not in keys:  # another .npz (that names it) before its members
                raise FormatError("no 'graph' entry: not an M1 export")
            bad = [info.filename for info, key in zip(members, keys) if key is None]  # noqa: B905
            if bad:
                raise FormatError(f"members the format does not name: {', '.join(map(repr, bad[:5]))}")
            if len(set(keys)) != len(keys):
                raise FormatError("a member appears twice")
            for info in members:
                if info.flag_bits & 1:
                    raise FormatError(f"{info.filename}: encrypted")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise FormatError(
                        f"{info.filename}: compression method {info.compress_type}, not stored or deflated"
                    )
            total = sum(info.file_size for info in members)
            if total > MAX_ARCHIVE_BYTES:
                raise FormatError(f"its members inflate to {total} bytes, above the cap of {MAX_ARCHIVE_BYTES}")
            arrays = {key: _read_member(z, info) for key, info in zip(keys, members)}  # noqa: B905
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    except (
        OSError,  # a member's offset before the file's start, ...
        EOFError,
        ValueError,  # a .npy header NumPy does not read, ...
        OverflowError,
        MemoryError,
        RuntimeError,  # zipfile: "password required"; NotImplementedError, RecursionError are RuntimeErrors
        struct.error,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:
        raise FormatError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from exc
    blob = arrays.pop("graph")
    if blob.dtype != np.uint8:
        raise FormatError(f"{path}: the 'graph' entry is not JSON bytes (uint8)")
    try:
        graph = json.loads(blob.tobytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FormatError(f"{path}: the graph is not JSON ({exc})") from exc
    except RecursionError:  # JSON nested deeper than Python's recursion limit
        raise FormatError(f"{path}: the graph is not JSON (nested too deep)") from None
    if not isinstance(graph, dict):
        raise FormatError(f"{path}: the graph is a JSON {type(graph).__name__}, not an object")
    if graph.get("format") != FORMAT:
        raise FormatError(f"{path}: format {graph.get('format')!r}, expected {FORMAT!r}")
    if "version" not in graph:
        raise FormatError(f"{path}: no format version")
    version = graph["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"{path}: format version {version!r} is not a whole number")
    if version > VERSION:
        raise FormatError(f"{path}: format version {version} is newer than this runtime's {VERSION}")
    if version < 1:
        raise FormatError(f"{path}: format version {version} is not one this runtime reads (1..{VERSION})")
    return graph, arrays


def _whole(value, what: str, lo: int = 0, hi: int | None = None) -> int:
    """A graph's whole number in [lo, hi], or a FormatError (never an OverflowError: a JSON
    1e999 is a float, refused here before any ``int()``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        raise FormatError(f"{what} {value!r} is not a whole number in {lo}..{'' if hi is None else hi}")
    return value


def _real(value, what: str) -> float:
    """A graph's positive number that float32 holds as a positive finite number (a scale, the
    runtime's arithmetic being float32), or a FormatError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise FormatError(f"{what} {value!r} is not a positive number")
    with np.errstate(over="ignore", under="ignore"):
        as_float32 = np.float32(value)
    if not 0 < as_float32 < np.inf:
        raise FormatError(f"{what} {value!r} is not a positive finite float32 number")
    return float(value)


def _budget(what: str, *shape: int) -> None:
    """Refuse a tensor of more than MAX_ELEMENTS elements (a FormatError naming ``what``)."""
    count = 1
    for side in shape:
        count *= side
    if count > MAX_ELEMENTS:
        dims = "x".join(map(str, shape))
        raise FormatError(f"{what} of {dims} = {count} elements is above the budget of {MAX_ELEMENTS} (2**24)")


def _pair(value, what: str, lo: int, hi: int = MAX_SIDE) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise FormatError(f"{what} {value!r} is not a pair")
    return _whole(value[0], what, lo, hi), _whole(value[1], what, lo, hi)


class NumpyM1:
    """An exported int8 M1, run with NumPy.

    Parameters
    ----------
    graph : the export's graph (``read_export``)
    arrays : its arrays

    Attributes
    ----------
    names : the tensors crossing the cut, in M1's order (taps first, the cut tensor last)
    model, cut : what was exported
    input : how the network input is made (``{"kind": "ssd-rgb", "size": [300, 300]}`` for
        the SSD, whose preprocessing this module has; ``{"kind": "tensor"}`` otherwise)
    """

    def __init__(self, graph: dict, arrays: dict):
        self.graph = graph
        self.model = graph.get("model")
        self.cut = graph.get("cut")
        self.input = graph.get("input", {"kind": "tensor"})
        self.names = list(graph["output_names"])
        self.outputs = list(graph["outputs"])
        self.nodes = list(graph["nodes"])
        self._ops = {}
        for node in self.nodes:
            if node["op"] == "conv":
                self._ops[node["name"]] = Conv(node, arrays)
            elif node["op"] not in ("quantize", "pad_same", "add", "max_pool"):
                raise FormatError(f"node {node['name']}: unknown op {node['op']!r}")

    @classmethod
    def load(cls, path) -> NumpyM1:
        graph, arrays = read_export(path)
        try:
            return cls.checked(graph, arrays)
        except FormatError as exc:
            raise FormatError(f"{path}: {exc}") from exc

    @classmethod
    def checked(cls, graph: dict, arrays: dict) -> NumpyM1:
        """The runtime of a graph and its arrays, every check of :meth:`load` passed, or a
        FormatError (without a file's name); the exporter calls it before it writes a file."""
        try:
            m1 = cls(graph, arrays)
            if not isinstance(m1.input, dict):
                raise FormatError(f"'input' is a {type(m1.input).__name__}, not an object")
            if not all(isinstance(n, str) for n in m1.names):
                raise FormatError("'output_names' holds other than names")
            m1._check()
        except KeyError as exc:
            raise FormatError(f"not a valid M1 graph (no {exc.args[0]!r} entry)") from exc
        except (TypeError, AttributeError, IndexError, ValueError, OverflowError) as exc:
            if isinstance(exc, FormatError):
                raise
            # a graph of the right format whose nodes or arrays are of another shape
            raise FormatError(f"not a valid M1 graph ({type(exc).__name__}: {exc})") from exc
        return m1

    def _check(self) -> None:
        """Refuse, at load, a graph that could not run (a FormatError naming what): names that
        are not earlier nodes, fields of the wrong kind or range, tensors of the wrong shape
        for their node (for an SSD export, at its input size); else its first frame fails."""
        for key in ("model", "cut"):
            if self.graph.get(key) is not None and not isinstance(self.graph[key], str):
                raise FormatError(f"'{key}' is {self.graph[key]!r}, not a name")
        shapes = {}  # node -> (channels, h, w); None where the input's size is not known
        zero_points = {"input": None}  # node -> its output's zero point
        if self.input.get("kind") == "ssd-rgb":
            size = self.input.get("size", SSD_INPUT_SIZE)
            if not isinstance(size, (list, tuple)) or len(size) != 2:
                raise FormatError(f"input size {size!r} is not [height, width]")
            shapes["input"] = (3, *(_whole(v, "input size", 1, MAX_SIDE) for v in size))
        else:
            shapes["input"] = None
        for node in self.nodes:
            if not isinstance(node, dict):
                raise FormatError(f"a node is a {type(node).__name__}, not an object")
            name, op, inputs = node["name"], node["op"], node["inputs"]
            if not isinstance(name, str) or name in shapes:
                raise FormatError(f"node name {name!r} is not a new name")
            want = ["input"] if op == "quantize" else [None, None] if op == "add" else [None]
            if not isinstance(inputs, list) or len(inputs) != len(want):
                raise FormatError(f"node {name}: inputs {inputs!r}, expected {len(want)}")
            for i, w in zip(inputs, want):  # noqa: B905 (Python 3.8 on older PYNQ images)
                if (w and i != w) or not isinstance(i, str) or i not in shapes or (not w and i == "input"):
                    raise FormatError(f"node {name}: input {i!r} is not an earlier node")
            try:
                shapes[name] = self._node_shape(node, [shapes[i] for i in inputs], [zero_points[i] for i in inputs])
                if shapes[name] is not None:
                    _budget("its output", *shapes[name])
            except FormatError as exc:
                raise FormatError(f"node {name}: {exc}") from None
            zero_points[name] = node["zero_point"]
        if not isinstance(self.outputs, list) or len(self.outputs) != len(self.names):
            raise FormatError(f"'outputs' {self.outputs!r} does not name one node per output name {self.names}")
        for out in self.outputs:
            if not isinstance(out, str) or out == "input" or out not in shapes:
                raise FormatError(f"output {out!r} is not a node")

    def _node_shape(self, node: dict, ins: list, in_zps: list):
        """The (channels, h, w) of a node's output (None where unknown), checking its fields
        (``in_zps``: the zero points of its inputs' outputs)."""
        op = node["op"]
        _real(node["scale"], "scale")
        _whole(node["zero_point"], "zero_point", 0, 255)
        if op in ("conv", "add"):
            if not _whole(node["qmin"], "qmin", 0, 255) <= _whole(node["qmax"], "qmax", 0, 255):
                raise FormatError(f"qmin {node['qmin']} above qmax {node['qmax']}")
        src = ins[0]
        if op == "quantize":
            _real(node["inv_scale"], "inv_scale")
            return src
        if op == "pad_same":
            k, s = _whole(node["kernel"], "kernel", 1, MAX_SIDE), _whole(node["stride"], "stride", 1, MAX_SIDE)
            if src is None:
                return None
            c, h, w = src
            return c, h + sum(tf_same_pads(h, k, s)), w + sum(tf_same_pads(w, k, s))
        if op == "add":
            # qnnpack's ranges (pytorch_qnnp_compute_add_quantization_params), which keep the
            # int32 accumulator from overflowing: multipliers below 2**22, shift 13..31
            a_mult = _whole(node["a_multiplier"], "a_multiplier", 0, 2**22 - 1)
            b_mult = _whole(node["b_multiplier"], "b_multiplier", 0, 2**22 - 1)
            _whole(node["shift"], "shift", 13, 31)
            product = -(a_mult * in_zps[0] + b_mult * in_zps[1])
            if _whole(node["zero_point_product"], "zero_point_product", -(2**31), 2**31 - 1) != product:
                raise FormatError(
                    f"zero_point_product {node['zero_point_product']} is not -(a_multiplier * {in_zps[0]}"
                    f" + b_multiplier * {in_zps[1]}) = {product} (its inputs' zero points)"
                )
            if src != ins[1]:
                raise FormatError(f"adds tensors of shapes {src} and {ins[1]}")
            return src
        if op == "conv":
            conv = self._ops[node["name"]]
            if conv.in_zp != in_zps[0]:
                raise FormatError(f"input_zero_point {conv.in_zp} is not its input's zero point {in_zps[0]}")
            stride, padding = conv.stride, conv.padding  # checked when it was built (Conv)
            if src is None:
                return None
            c, h, w = src
            if c != conv.in_channels:
                raise FormatError(f"takes {conv.in_channels} channels, its input has {c}")
            ho, wo = conv.out_size(h, w)
            _budget("its padded input", c, h + 2 * padding[0], w + 2 * padding[1])
            taps = conv.kh * conv.kw
            if conv.depthwise:  # one channel's im2col at least (numpy_conv.ExactDepthwise)
                _budget("its im2col of one channel", taps, max(ho, 0), max(wo, 0))
            elif taps > 1 or stride != (1, 1):  # one output row's im2col at least (numpy_conv.conv_gemm)
                _budget("its im2col of one output row", c, taps, max(wo, 0))
        else:  # max_pool
            (kh, kw), (sh, sw) = _pair(node["kernel"], "kernel", 1), _pair(node["stride"], "stride", 1)
            ph, pw = _pair(node["padding"], "padding", 0)
            if ph > kh // 2 or pw > kw // 2:  # PyTorch's rule: every window then holds an element
                raise FormatError(f"padding {[ph, pw]} above half its {kh}x{kw} kernel")
            if src is None:
                return None
            c, h, w = src
            ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            _budget("its padded input", c, h + 2 * ph, w + 2 * pw)
        if ho < 1 or wo < 1:
            raise FormatError(f"an input of {h}x{w} is smaller than its window")
        return (conv.out_channels if op == "conv" else c), ho, wo

    # -- running

    def preprocess(self, frames) -> np.ndarray:
        """RGB uint8 frames (H, W, 3) -> the network input (N, 3, H, W) float32 (SSD only)."""
        if self.input.get("kind") != "ssd-rgb":
            raise FormatError(
                f"{self.model}: this export takes the network input tensor; preprocess the frames "
                "with the detector's own preprocess()"
            )
        return preprocess_ssd(frames, tuple(self.input.get("size", SSD_INPUT_SIZE)))

    def run(self, x: np.ndarray, profile: dict | None = None, trace: dict | None = None) -> list[QTensor]:
        """The network input (N, 3, H, W) float32 -> the quint8 tensors crossing the cut.

        ``profile``: a dict that receives seconds per op kind (``conv``, ``depthwise``, ...);
        ``trace``: a dict that receives every node's output (debugging, parity checks).
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {x.shape}")
        env: dict[str, QTensor] = {}
        for node in self.nodes:
            t0 = time.perf_counter() if profile is not None else 0.0
            op = node["op"]
            ins = [env[i] for i in node["inputs"] if i != "input"]
            if op == "quantize":
                out = quantize(x, node["inv_scale"], int(node["zero_point"]))
            elif op == "pad_same":
                out = pad_same(ins[0].codes, int(node["kernel"]), int(node["stride"]), ins[0].zero_point)
            elif op == "conv":
                out = self._ops[node["name"]](ins[0])
                if self._ops[node["name"]].depthwise:
                    op = "depthwise"
            elif op == "add":
                out = add(ins[0], ins[1], node)
            else:  # max_pool
                out = max_pool(ins[0].codes, node)
            env[node["name"]] = QTensor(out, float(node["scale"]), int(node["zero_point"]))
            if profile is not None:
                profile[op] = profile.get(op, 0.0) + time.perf_counter() - t0
        if trace is not None:
            trace.update(env)
        return [env[name] for name in self.outputs]

    def __call__(self, frames) -> list[QTensor]:
        """RGB uint8 frames -> the tensors crossing the cut (SSD exports)."""
        return self.run(self.preprocess(frames))

    def cut_tensors(self, tensors: list[QTensor], index: int = 0) -> list[Codes]:
        """Frame ``index`` of :meth:`run`'s outputs, as the codec consumes them."""
        if len(tensors) != len(self.names):
            raise ValueError(f"expected {len(self.names)} tensors ({', '.join(self.names)}), got {len(tensors)}")
        out = []
        for name, t in zip(self.names, tensors):  # noqa: B905 (no strict=: Python 3.8 on older PYNQ images)
            codes = t.codes[index]
            out.append(Codes(name, tuple(codes.shape), t.scale, t.zero_point, codes))
        return out

    # -- costs

    def macs(self, input_size) -> int:
        """Multiply-accumulates of one frame at an input size (H, W): convolutions only."""
        return self.work(input_size)["macs"]

    def work(self, input_size) -> dict:
        """What one frame costs this runtime at an input size (H, W), for speed estimates.

        ``gemm_macs`` (float32 BLAS matmuls), ``depthwise_macs`` (per-channel BLAS products
        over an im2col of the taps), ``macs`` (both), and ``element_passes``: the array
        elements the elementwise NumPy passes read or write, counted as this module runs
        them (an input's conversion or im2col copy, 9 per 3x3 depthwise output, 5 for
        requantization, about 14 for an add), a figure for memory-bound estimates.
        """
        sizes = {"input": tuple(input_size)}
        channels = {"input": 3}
        gemm = dw = passes = 0
        for node in self.nodes:
            src = node["inputs"][0]
            h, w = sizes[src]
            c = channels[src]
            op = node["op"]
            if op == "conv":
                conv = self._ops[node["name"]]
                ho, wo = conv.out_size(h, w)
                out = conv.out_channels * ho * wo
                if conv.depthwise:
                    dw += conv.macs(h, w)
                    passes += conv.kh * conv.kw * out + 5 * out  # im2col, requantization
                else:
                    gemm += conv.macs(h, w)
                    taps = conv.kh * conv.kw
                    passes += c * h * w * (1 if taps == 1 else 2) + c * taps * ho * wo + 6 * out
                h, w, c = ho, wo, conv.out_channels
            elif op == "pad_same":
                k, s = int(node["kernel"]), int(node["stride"])
                h, w = h + sum(tf_same_pads(h, k, s)), w + sum(tf_same_pads(w, k, s))
                passes += c * h * w
            elif op == "max_pool":
                (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["padding"]
                h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
                passes += c * (h * w * kh * kw + (h + 2 * ph) * (w + 2 * pw))
            elif op == "add":
                passes += 14 * c * h * w
            elif op == "quantize":
                passes += 5 * c * h * w
            sizes[node["name"]], channels[node["name"]] = (h, w), c
        return {"gemm_macs": gemm, "depthwise_macs": dw, "macs": gemm + dw, "element_passes": passes}

    def summary(self) -> dict:
        """Counts of the graph's ops and parameters."""
        ops: dict[str, int] = {}
        params = 0
        for node in self.nodes:
            kind = node["op"]
            if kind == "conv":
                conv = self._ops[node["name"]]
                kind = "depthwise" if conv.depthwise else "conv"
                params += conv.out_channels * conv.kh * conv.kw * (1 if conv.depthwise else conv.in_channels)
            ops[kind] = ops.get(kind, 0) + 1
        return {"model": self.model, "cut": self.cut, "names": self.names, "ops": ops, "weights": params}


def load(path) -> NumpyM1:
    """Load an exported M1 (``temposplit.model.export.export_m1``) for the NumPy runtime."""
    return NumpyM1.load(path)
