"""Feature files: cut tensors of a clip in one ``.npz`` (the CLI's input and output).

Layout (docs/bitstream.md, "Feature files"): for each tensor, in file order,

- ``codes/<name>``: uint8 array (T, C, H, W), T frames of quint8 codes (or N-bit codes
  in a decoded file);
- ``scale/<name>``, ``zero_point/<name>``: the quint8 parameters (scalars);
- ``block/<name>`` (optional): the block size B for this tensor.

A decoded file adds ``index`` (frame indices), ``n_bits`` (per frame) and, per tensor,
``values/<name>`` (float32 dequantized values).

:func:`load` trusts no member: each array's ``.npy`` header is read and checked (dtype,
shape, and a size no larger than the member holds) before its data is allocated, and
every failure is a :class:`~temposplit.codec.errors.ConfigurationError` naming the file
and the member.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from temposplit.codec.errors import ConfigurationError

# Deflate expands at most 1032:1 (258 bytes per 2-bit code, in the limit); a member that
# claims more than this over its compressed size (plus a little) lies about its size.
DEFLATE_MAX_RATIO = 1032
# The most bytes of arrays :func:`load` reads from one feature file (docs/bitstream.md, 12):
# 256 frames of the largest frame the stream format carries (2^24 codes).
MAX_FEATURE_BYTES = 1 << 32
_NPY_HEADER_MAX = 10_000  # NumPy's own default bound on an .npy header


@dataclass
class FeatureClip:
    names: list[str]
    codes: list[np.ndarray]  # (T, C, H, W) uint8 per tensor (LazyCodes where load was lazy)
    scales: list[float]
    zero_points: list[int]
    blocks: list[int | None]
    n_bits: np.ndarray | None = None  # a decoded file's N per frame: its codes are N-bit

    @property
    def frames(self) -> int:
        return self.codes[0].shape[0]

    def frame(self, t: int) -> list[np.ndarray]:
        return [c[t] for c in self.codes]


class LazyCodes:
    """A ``codes/<name>`` array of a feature file (uint8 (T, C, H, W)), its header checked
    (:func:`load` with ``lazy``), its frames read from the file in order, one at a time, as
    :meth:`frames` is iterated: memory holds a frame whatever the file's length (an hour of
    a camera is gigabytes). A member that turns out damaged part way (its data short, a bad
    CRC, deflate's error) is a :class:`ConfigurationError` naming the file and the member."""

    dtype = np.dtype(np.uint8)

    def __init__(self, path, key: str, info: zipfile.ZipInfo, shape: tuple[int, ...], start: int):
        self.path, self.key, self._info, self.shape, self._start = path, key, info, tuple(shape), start

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def frames(self):
        """Each frame's (C, H, W) codes, a new array each, from the first to the last."""
        size = math.prod(self.shape[1:])
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self._info) as fp:
                if len(fp.read(self._start)) != self._start:  # the .npy header (checked by load)
                    raise EOFError("the member ends in its header")
                for _ in range(self.shape[0]):
                    frame = np.empty(self.shape[1:], np.uint8)
                    if fp.readinto(memoryview(frame).cast("B")) != size:
                        raise EOFError("the member ends before its last frame")
                    yield frame
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise ConfigurationError(f"{self.path}: {self.key}: not readable ({exc or type(exc).__name__})") from exc


class _Members:
    """The ``.npy`` members of a zip, each read only after its header was checked."""

    def __init__(self, path: str, zf: zipfile.ZipFile):
        self.path = path
        self.zf = zf
        self.file_size = os.path.getsize(path)
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self.infos.setdefault(key, info)
        self.budget = MAX_FEATURE_BYTES

    @property
    def files(self) -> list[str]:
        return list(self.infos)

    def _fail(self, key: str, what: str) -> ConfigurationError:
        return ConfigurationError(f"{self.path}: {key}: {what}")

    def header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        """(shape, fortran_order, dtype) of member ``key``, checked against the member's size."""
        return self._header(key)[:3]

    def _header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """:meth:`header`, and where the array's data starts in the member."""
        info = self.infos[key]
        if not info.filename.endswith(".npy"):
            raise self._fail(key, "not a NumPy array (the member is not an .npy file)")
        if info.flag_bits & 0x1:
            raise self._fail(key, "the zip entry is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._fail(key, f"compressed with zip method {info.compress_type} (NumPy writes stored or deflate)")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
        limit = ratio * info.compress_size
        if info.compress_size > self.file_size or info.file_size > limit + 4096:
            raise self._fail(key, f"the zip entry announces {info.file_size} bytes, more than its data can hold")
        try:
            with self.zf.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=_NPY_HEADER_MAX)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=_NPY_HEADER_MAX)
                else:
                    raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
                start = fp.tell()
        except (ValueError, TypeError, EOFError, OSError, zipfile.BadZipFile, zlib.error, SyntaxError) as exc:
            raise self._fail(key, f"not a readable .npy array ({exc or type(exc).__name__})") from exc
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise self._fail(key, f"holds {dtype} values (objects or records are not read)")
        nbytes = math.prod(shape) * dtype.itemsize
        if start + nbytes > info.file_size:
            raise self._fail(key, f"announces {shape} {dtype}: {nbytes} bytes, more than the member holds")
        if nbytes > self.budget:
            raise self._fail(key, f"the arrays pass {MAX_FEATURE_BYTES} bytes, the most a feature file may hold")
        return shape, fortran, dtype, start

    def lazy(self, key: str) -> LazyCodes | None:
        """Member ``key``'s array, to be read a frame at a time (:class:`LazyCodes`), or None
        where it cannot be (an array in Fortran order, a file object given for a name)."""
        shape, fortran, dtype, start = self._header(key)
        if fortran or not isinstance(self.path, (str, os.PathLike)):
            return None
        self.budget -= math.prod(shape) * dtype.itemsize  # the bound of what a file may hold, as read()'s
        return LazyCodes(self.path, key, self.infos[key], shape, start)

    def read(self, key: str) -> np.ndarray:
        self.header(key)
        try:
            with self.zf.open(self.infos[key]) as fp:
                array = np.lib.format.read_array(fp, allow_pickle=False, max_header_size=_NPY_HEADER_MAX)
        except (ValueError, TypeError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise self._fail(key, f"not a readable .npy array ({exc or type(exc).__name__})") from exc
        except MemoryError as exc:
            raise self._fail(key, "too large for this machine's memory") from exc
        self.budget -= array.nbytes
        return array

    def scalar(self, key: str, integer: bool) -> float | int:
        """A 0-d real number (a one-element array too); ``integer``: a whole number."""
        shape, _, dtype = self.header(key)
        if math.prod(shape) != 1 or dtype.kind not in "iuf":
            raise self._fail(key, f"must be one real number, not {dtype} of shape {shape}")
        value = self.read(key).reshape(()).item()
        if integer:
            if not (math.isfinite(value) and value == int(value)):
                raise self._fail(key, f"must be a whole number, not {value!r}")
            return int(value)
        return float(value)


def load(path: str, lazy: bool = False) -> FeatureClip:
    """A feature file's tensors, every field checked (a :class:`ConfigurationError` otherwise).
    ``lazy``: the codes as :class:`LazyCodes` (where they can be: a file name, arrays in C
    order), read a frame at a time as they are iterated, not into memory now."""
    if not isinstance(path, (str, os.PathLike)) and not hasattr(path, "read"):
        raise ConfigurationError(f"features.load takes a file name, not {type(path).__name__}")
    try:
        zf = zipfile.ZipFile(path)
    except OSError as exc:  # missing, a folder, no permission: what the system said
        raise ConfigurationError(f"{path}: {exc.strerror or exc}") from exc
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error) as exc:
        raise ConfigurationError(f"{path}: not a readable .npz feature file ({exc or type(exc).__name__})") from exc
    with zf:
        npz = _Members(path, zf)
        names = [k.split("/", 1)[1] for k in npz.files if k.startswith("codes/")]
        if not names:
            raise ConfigurationError(f"{path}: no 'codes/<name>' arrays (see docs/bitstream.md, Feature files)")
        clip = FeatureClip(names, [], [], [], [])
        for n in names:
            shape, _, dtype = npz.header(f"codes/{n}")
            if dtype != np.uint8 or len(shape) != 4:
                raise ConfigurationError(f"{path}: codes/{n} must be uint8 (T, C, H, W), not {dtype} {shape}")
            if shape[0] == 0:
                raise ConfigurationError(f"{path}: codes/{n} has no frames")
            for key in (f"scale/{n}", f"zero_point/{n}"):
                if key not in npz.files:
                    raise ConfigurationError(f"{path}: missing {key}")
            clip.scales.append(npz.scalar(f"scale/{n}", integer=False))
            clip.zero_points.append(npz.scalar(f"zero_point/{n}", integer=True))
            clip.blocks.append(npz.scalar(f"block/{n}", integer=True) if f"block/{n}" in npz.files else None)
            codes = npz.lazy(f"codes/{n}") if lazy else None
            clip.codes.append(codes if codes is not None else npz.read(f"codes/{n}"))
        if "n_bits" in npz.files:
            shape, _, dtype = npz.header("n_bits")
            if dtype.kind not in "iu" or shape != (clip.codes[0].shape[0],):
                raise ConfigurationError(f"{path}: n_bits must be whole numbers, one per frame, not {dtype} {shape}")
            clip.n_bits = npz.read("n_bits")
    if len({c.shape[0] for c in clip.codes}) != 1:
        raise ConfigurationError(f"{path}: every tensor must have the same number of frames")
    return clip


def save(path, clip: FeatureClip, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write ``clip`` as a feature file (docs/bitstream.md section 12), refusing what :func:`load` would."""
    fields = (clip.codes, clip.scales, clip.zero_points, clip.blocks)
    if any(len(f) != len(clip.names) for f in fields):
        raise ConfigurationError(f"a FeatureClip needs codes, scale, zero point and block for each of {clip.names}")
    for n, c in zip(clip.names, clip.codes, strict=True):
        c = np.asarray(c)
        if c.dtype != np.uint8 or c.ndim != 4 or c.shape[0] == 0:
            raise ConfigurationError(f"codes of {n!r} must be uint8 (T, C, H, W) with T >= 1, not {c.dtype} {c.shape}")
    if len({np.shape(c)[0] for c in clip.codes}) > 1:
        counts = [len(c) for c in clip.codes]
        raise ConfigurationError(f"every tensor must have the same number of frames, not {counts}")
    arrays: dict[str, np.ndarray] = {}
    for i, n in enumerate(clip.names):
        arrays[f"codes/{n}"] = clip.codes[i]
        arrays[f"scale/{n}"] = np.float32(clip.scales[i])
        arrays[f"zero_point/{n}"] = np.int32(clip.zero_points[i])
        if clip.blocks[i] is not None:
            arrays[f"block/{n}"] = np.int32(clip.blocks[i])
    arrays.update(extra or {})
    np.savez_compressed(path, **arrays)
