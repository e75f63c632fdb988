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
and the member. A scale must be finite and greater than 0, a zero point quint8's (0..255).
:func:`save` refuses, before it writes anything, a scale, zero point or block that
:func:`load` would refuse or that its stored type would change.
"""

from __future__ import annotations

import math
import os
import stat
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
# Zip entry flags NumPy never writes and zipfile cannot read (NotImplementedError there).
_ZIP_FLAGS = {0x1: "is encrypted", 0x20: "holds compressed patched data", 0x40: "is strongly encrypted"}
# What zipfile, zlib and NumPy raise on a damaged or foreign member (zipfile's
# NotImplementedError: a zip version, flag or method it does not read).
_UNREADABLE = (ValueError, TypeError, EOFError, OSError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (NumPy's run to several), or its type's name."""
    return " ".join(str(exc).split()) or type(exc).__name__


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
        except _UNREADABLE as exc:
            raise ConfigurationError(f"{self.path}: {self.key}: not readable ({_reason(exc)})") from exc


class _Members:
    """The ``.npy`` members of a zip, each read only after its header was checked."""

    def __init__(self, path, name: str, zf: zipfile.ZipFile, file_size: int):
        self.path, self.name = path, name  # a file name or a binary file object; how messages name it
        self.zf = zf
        self.file_size = file_size
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self.infos.setdefault(key, info)
        self.budget = MAX_FEATURE_BYTES

    @property
    def files(self) -> list[str]:
        return list(self.infos)

    def _fail(self, key: str, what: str) -> ConfigurationError:
        return ConfigurationError(f"{self.name}: {key}: {what}")

    def header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        """(shape, fortran_order, dtype) of member ``key``, checked against the member's size."""
        return self._header(key)[:3]

    def _header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """:meth:`header`, and where the array's data starts in the member."""
        info = self.infos[key]
        if not info.filename.endswith(".npy"):
            raise self._fail(key, "not a NumPy array (the member is not an .npy file)")
        for bit, what in _ZIP_FLAGS.items():
            if info.flag_bits & bit:
                raise self._fail(key, f"the zip entry {what} (flag 0x{bit:x}, which NumPy never writes)")
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
        except (*_UNREADABLE, SyntaxError) as exc:
            raise self._fail(key, f"not a readable .npy array ({_reason(exc)})") from exc
        if any(d < 0 for d in shape):  # NumPy's header parser takes them; frames would be -1
            raise self._fail(key, f"announces a negative dimension, {shape}")
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
        except _UNREADABLE as exc:
            raise self._fail(key, f"not a readable .npy array ({_reason(exc)})") from exc
        except MemoryError as exc:
            raise self._fail(key, "too large for this machine's memory") from exc
        self.budget -= array.nbytes
        return array

    def scalar(self, key: str, integer: bool, rule=None) -> float | int:
        """A 0-d real number (a one-element array too); ``integer``: a whole number; ``rule``:
        a check of the number that raises ValueError (:func:`_check_scale`)."""
        shape, _, dtype = self.header(key)
        try:
            value = _real(shape, dtype, lambda: self.read(key), integer)
            if rule is not None:
                rule(value)
            return value
        except ConfigurationError:  # (read's own, already naming the file and the member)
            raise
        except ValueError as exc:
            raise self._fail(key, str(exc)) from None


def _real(shape, dtype: np.dtype, read, integer: bool) -> float | int:
    """The one real number (``integer``: whole number) an array of ``shape`` and ``dtype``
    holds, ``read()`` giving the array once those pass; a ValueError says what it is not.
    The rule of a scale, zero point and block, for :func:`load` and :func:`save` alike."""
    if math.prod(shape) != 1 or dtype.kind not in "iuf":
        raise ValueError(f"must be one real number, not {dtype} of shape {shape}")
    value = read().reshape(()).item()
    if integer:
        if not (math.isfinite(value) and value == int(value)):
            raise ValueError(f"must be a whole number, not {value!r}")
        return int(value)
    return float(value)


def _check_scale(value: float) -> None:
    """A quint8 scale's rule (docs/bitstream.md, 12), :func:`load`'s and :func:`save`'s."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a finite quint8 scale greater than 0, not {value!r}")


def _check_zero_point(value: int) -> None:
    """A quint8 zero point's rule (docs/bitstream.md, 12), :func:`load`'s and :func:`save`'s."""
    if not 0 <= value <= 255:
        raise ValueError(f"must be a quint8 zero point in 0..255, not {value!r}")


def _file_size(path) -> int:
    """The bytes of a file named, or of a file object (from its end, its position kept)."""
    if isinstance(path, (str, os.PathLike)):
        return os.path.getsize(path)
    here = path.tell()
    size = path.seek(0, os.SEEK_END)
    path.seek(here)
    return size


def load(path, lazy: bool = False) -> FeatureClip:
    """A feature file's tensors, every field checked (a :class:`ConfigurationError` otherwise).
    ``path``: a file name, or a binary file object that can seek (read whole: its codes are
    never lazy; messages name it by its ``name``, if it has one). ``lazy``: the codes as
    :class:`LazyCodes` (where they can be: a file name, arrays in C order), read a frame at a
    time as they are iterated, not into memory now."""
    if isinstance(path, (str, os.PathLike)):
        name = path
    elif all(hasattr(path, a) for a in ("read", "seek", "tell")):
        name = getattr(path, "name", None) or f"<{type(path).__name__}>"
    else:
        raise ConfigurationError(
            f"features.load takes a file name, not {type(path).__name__} (or a binary file object that can seek)"
        )
    if isinstance(path, (str, os.PathLike)):
        # zipfile seeks to the end for the central directory: a device or a pipe (/dev/zero,
        # a FIFO: size 0) would be read to its end, which may never come. Refused before it
        # is opened; a folder, or a name that is not there, gets the system's word below.
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            mode = None
        if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise ConfigurationError(f"{name}: not a readable .npz feature file (not a regular file)")
    try:
        size = _file_size(path)
        zf = zipfile.ZipFile(path)
    except OSError as exc:  # missing, a folder, no permission: what the system said
        raise ConfigurationError(f"{name}: {exc.strerror or _reason(exc)}") from exc
    except _UNREADABLE as exc:
        raise ConfigurationError(f"{name}: not a readable .npz feature file ({_reason(exc)})") from exc
    with zf:
        npz = _Members(path, name, zf, size)
        names = [k.split("/", 1)[1] for k in npz.files if k.startswith("codes/")]
        if not names:
            raise ConfigurationError(f"{name}: no 'codes/<name>' arrays (see docs/bitstream.md, Feature files)")
        clip = FeatureClip(names, [], [], [], [])
        for n in names:
            shape, _, dtype = npz.header(f"codes/{n}")
            if dtype != np.uint8 or len(shape) != 4:
                raise ConfigurationError(f"{name}: codes/{n} must be uint8 (T, C, H, W), not {dtype} {shape}")
            if shape[0] == 0:
                raise ConfigurationError(f"{name}: codes/{n} has no frames")
            for key in (f"scale/{n}", f"zero_point/{n}"):
                if key not in npz.files:
                    raise ConfigurationError(f"{name}: missing {key}")
            clip.scales.append(npz.scalar(f"scale/{n}", integer=False, rule=_check_scale))
            clip.zero_points.append(npz.scalar(f"zero_point/{n}", integer=True, rule=_check_zero_point))
            clip.blocks.append(npz.scalar(f"block/{n}", integer=True) if f"block/{n}" in npz.files else None)
            codes = npz.lazy(f"codes/{n}") if lazy else None
            clip.codes.append(codes if codes is not None else npz.read(f"codes/{n}"))
        if "n_bits" in npz.files:
            shape, _, dtype = npz.header("n_bits")
            if dtype.kind not in "iu" or shape != (clip.codes[0].shape[0],):
                raise ConfigurationError(f"{name}: n_bits must be whole numbers, one per frame, not {dtype} {shape}")
            clip.n_bits = npz.read("n_bits")
    if len({c.shape[0] for c in clip.codes}) != 1:
        raise ConfigurationError(f"{name}: every tensor must have the same number of frames")
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
        arrays[f"scale/{n}"] = _stored(f"scale/{n}", clip.scales[i], np.float32, _check_scale)
        arrays[f"zero_point/{n}"] = _stored(f"zero_point/{n}", clip.zero_points[i], np.int32, _check_zero_point)
        if clip.blocks[i] is not None:
            arrays[f"block/{n}"] = _stored(f"block/{n}", clip.blocks[i], np.int32)
    arrays.update(extra or {})
    np.savez_compressed(path, **arrays)


def _stored(key: str, value, dtype, rule=None) -> np.ndarray:
    """``value`` as :func:`save` stores it (a 0-d ``dtype`` array), refused as :func:`load`
    refuses it (one real number; a whole one for an integer ``dtype``; ``rule``'s check, a
    quint8 scale's or zero point's) or where ``dtype`` would change it: an integer outside
    the type, a scale float32 makes 0 or a finite one it makes infinite (float32 rounding
    otherwise, as the stream's header)."""
    given = np.asarray(value)
    try:
        v = _real(given.shape, given.dtype, lambda: given, integer=np.issubdtype(dtype, np.integer))
    except ValueError as exc:
        raise ConfigurationError(f"{key}: {exc} (given {value!r:.80})") from None
    if np.issubdtype(dtype, np.integer):
        bounds = np.iinfo(dtype)
        if not bounds.min <= v <= bounds.max:
            raise ConfigurationError(f"{key}: {v} is outside {np.dtype(dtype)}, the type a feature file holds")
        _obey(key, v, rule)
        return np.asarray(v, dtype)
    with np.errstate(over="ignore"):
        stored = np.asarray(v, dtype)
    if (v != 0 and stored == 0) or (math.isfinite(v) and not math.isfinite(stored)):
        raise ConfigurationError(f"{key}: {v!r} is {stored.item()} as {np.dtype(dtype)}, the type a feature file holds")
    _obey(key, v, rule)
    return stored


def _obey(key: str, value, rule) -> None:
    """``rule(value)`` (None: no rule), its ValueError a :class:`ConfigurationError` naming ``key``."""
    if rule is None:
        return
    try:
        rule(value)
    except ValueError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None
