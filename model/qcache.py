"""The calibrated int8 SSD network, kept on disk by everything that determines it.

Calibrating with the default recipe takes a minute or more on the 2-core reference
machine and is deterministic: the same float weights, recipe, batch size, calibration
frames, PyTorch and temposplit code give the same int8 network, on any CPU kind and at any
thread count (the recipe computes in float64: docs/models.md, "Reproducibility").
:func:`temposplit.model.quantize.quantize` looks the network up here first, so an edge,
a demo or an evaluation that calibrates as an earlier run did starts in seconds.

The key is a SHA-256 over: this format's version, PyTorch's and NumPy's versions
(:func:`~temposplit.model.fingerprint.calibration_platform`), the source of the code
that makes the network (:func:`~temposplit.model.fingerprint.model_source_digest`: the
modules it imports, transitively; any change to them is a new key), the recipe as
parsed, the batch size, the float weights (:func:`weights_digest`), their memory layout,
and each calibration frame's shape and bytes. An entry is the converted network as
``torch.save`` writes it (a pickle: read back only from this cache, which only this
user's runs write) followed by the SHA-256 of those bytes (an entry damaged on disk is
recomputed, never loaded), under ``$TEMPOSPLIT_CACHE/int8/`` (default
``~/.cache/temposplit/int8/``), written to a temporary file and renamed, so parallel runs
never read half an entry, and made under a lock per key, so two runs that need the same
calibration at once make it once; the newest ``KEEP`` entries stay (about 17 MB each).
``TEMPOSPLIT_INT8_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

FORMAT = 4  # 2: the CPU kind in the key, calibration at fixed threads; 3: float64 calibration, no CPU kind;
# 4: the entry ends with the SHA-256 of its bytes
KEEP = 16
_DIGEST = 32  # the SHA-256 that ends an entry


def enabled() -> bool:
    return os.environ.get("TEMPOSPLIT_INT8_CACHE", "1") != "0"


def folder() -> Path:
    from temposplit.model.ssd import cache_dir

    return cache_dir() / "int8"


def key(net: nn.Module, frames: list[np.ndarray], recipe: tuple, batch_size: int) -> str:
    """The entry's name for calibrating ``net`` (the float network) on ``frames``."""
    from temposplit.model.fingerprint import calibration_platform, model_source_digest, weights_digest

    h = hashlib.sha256(f"temposplit-int8-cache {FORMAT}\0{calibration_platform()}\0numpy {np.__version__}\0".encode())
    h.update(model_source_digest())
    h.update(repr((recipe, int(batch_size))).encode())
    h.update(weights_digest(net))
    first = next(net.parameters())
    h.update(b"channels_last" if first.dim() == 4 and not first.is_contiguous() else b"contiguous")
    for frame in frames:
        a = np.ascontiguousarray(frame)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def _repair(net: nn.Module) -> nn.Module:
    """PyTorch's quantized modules restore their own state from a pickle but not the
    bookkeeping every ``nn.Module`` has (hook tables, ``_parameters``...): give each module
    what it lacks, empty, as a new module has it."""
    fresh = nn.Module().__dict__
    for module in net.modules():
        for name, value in fresh.items():
            if name not in module.__dict__:
                module.__dict__[name] = copy.copy(value)
    return net.eval()


def load(name: str) -> nn.Module | None:
    path = folder() / f"{name}.pt"
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        body, digest = data[:-_DIGEST], data[-_DIGEST:]
        if len(data) <= _DIGEST or hashlib.sha256(body).digest() != digest:
            raise ValueError("damaged entry")  # truncated, or bytes changed on disk
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the quantized modules' pickles use TypedStorage
            net = torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
        if not isinstance(net, nn.Module):
            raise TypeError(f"an entry holding a {type(net).__name__}")
    except Exception:  # noqa: BLE001 - a damaged entry is recomputed, never fatal
        with contextlib.suppress(OSError):  # (kept where the cache is read-only)
            path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # newest use: kept longest
    return _repair(net)


def store(name: str, net: nn.Module) -> None:
    """Write an entry (best effort: a full or read-only disk only costs the next run time)."""
    root = folder()
    tmp = root / f"{name}.{os.getpid()}.tmp"
    try:
        buf = io.BytesIO()
        torch.save(net, buf)
        root.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(buf.getvalue() + hashlib.sha256(buf.getvalue()).digest())
        os.replace(tmp, root / f"{name}.pt")
        entries = sorted(root.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".lock").unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - the network is made; keeping it is a bonus
        pass
    finally:  # (an interrupted write too)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(name: str):
    """An exclusive lock on one key (none where the folder cannot be written)."""
    try:
        folder().mkdir(parents=True, exist_ok=True)
        f = open(folder() / f"{name}.lock", "w")  # noqa: SIM115 - held across the yield
    except OSError:
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def cached(
    net: nn.Module, frames: list[np.ndarray], recipe: tuple, batch_size: int, make: Callable[[], nn.Module], log=None
) -> nn.Module:
    """The int8 network ``make()`` returns for these inputs: from the cache, or made and kept."""
    if not enabled():
        return make()
    name = key(net, frames, recipe, batch_size)
    with _locked(name):  # a run that made it while we waited leaves it to load
        found = load(name)
        if found is not None:
            if log:
                log(f"int8 network from the calibration cache ({folder() / name}.pt)")
            return found
        made = make()
        store(name, made)
    return made
