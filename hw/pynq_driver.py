"""The accelerator's PYNQ driver: ``TemposplitAccel``, bound to the IP by its VLNV.

On the board (``pynq`` from the PYNQ image)::

    from temposplit.hw.pynq_driver import open_overlay
    accel = open_overlay()                       # bitstreams/pynq-z2/temposplit.bit (+ .hwh)
    accel.load_table(lengths)
    res = accel.encode_anchor(q8_hwc, z8=z8, n_bits=4, store_ref=True)
    mvs, costs = accel.motion(q8_next_hwc, z8=z8, n_bits=4, zn_ref=z_n, block=4, search=7)

or, PYNQ's way, ``overlay = pynq.Overlay("temposplit.bit")``: ``overlay.temposplit_accel_0``
is a :class:`TemposplitAccel` (the overlay finds it by ``bindto``, built from the IP's
entry in the ``.hwh``), and ``overlay.temposplit_accel_0.attach(overlay.axi_dma_0)`` makes it
ready. It *is* a :class:`temposplit.hw.driver.Accelerator` (the same operations, register
sequences and checks as the simulated RTL's) over
:class:`~temposplit.hw.driver.PynqTransport`: MMIO for the registers, the AXI DMA with
``pynq.allocate`` buffers for the streams.

``sim/test_pynq.py`` runs this module unchanged against the Verilated RTL with a stand-in
``pynq`` (``sim/pynqsim.py``: Overlay from a ``.hwh``, MMIO, ``allocate``, the AXI DMA's
registers) -- docs/pynq-z2.md says why not ``cocotbpynq``.

One fabric user per board: :func:`open_overlay` takes an exclusive ``flock`` on
``$TEMPOSPLIT_FABRIC_LOCK`` (default ``/run/lock/temposplit-fabric.lock``) before it loads
the overlay and keeps it until the accelerator's :meth:`~TemposplitAccel.close` (or the
process's end). A second process is refused with an :class:`AcceleratorError` naming the
holder's pid instead of reprogramming the fabric under the first (whose engine keeps its
reference on chip). Within one process the lock is shared (counted), as the edge opens a
new accelerator before it closes the old one.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from pynq import DefaultIP, allocate

from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError, PynqTransport

OVERLAY_ENV = "TEMPOSPLIT_OVERLAY"
OVERLAY_NAME = "temposplit.bit"
DMA_VLNV_PREFIX = "xilinx.com:ip:axi_dma:"
LOCK_ENV = "TEMPOSPLIT_FABRIC_LOCK"
DEFAULT_LOCK = "/run/lock/temposplit-fabric.lock"


class FabricLock:
    """This process's hold on the board's fabric: an exclusive, non-blocking ``flock`` on a
    lock file holding the holder's pid, shared by the process's users (counted) and let go
    when the last one releases it (or the process ends: the kernel drops a flock with its
    file)."""

    _held: dict = {}  # lock file -> [fd, users] of this process
    _guard = threading.Lock()

    def __init__(self, path: str):
        self.path = path
        self.released = False

    @staticmethod
    def default_path() -> str:
        return os.environ.get(LOCK_ENV) or DEFAULT_LOCK

    @classmethod
    def acquire(cls, path: str | None = None) -> FabricLock:
        path = os.path.realpath(path or cls.default_path())
        with cls._guard:
            held = cls._held.get(path)
            if held is None:
                held = cls._held[path] = [cls._take(path), 0]
            held[1] += 1
        return cls(path)

    @staticmethod
    def _take(path: str) -> int:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise AcceleratorError(
                f"cannot open the fabric's lock file {path} ({exc.strerror}): set ${LOCK_ENV} to a writable path"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise AcceleratorError(
                f"the fabric is in use by another process (pid {pid}, lock file {path}): one fabric user per board"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise AcceleratorError(f"cannot lock the fabric's lock file {path} ({exc.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def release(self) -> None:
        """Let go of this user's hold (once); the last one unlocks the file."""
        with self._guard:
            if self.released:
                return
            self.released = True
            held = self._held[self.path]
            held[1] -= 1
            if held[1]:
                return
            del self._held[self.path]
            fd = held[0]
            try:
                os.ftruncate(fd, 0)  # no pid left behind for the next one to name
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


class _NoTransport:
    def _fail(self, *args):
        raise AcceleratorError("the accelerator has no DMA yet: call attach(overlay.axi_dma_0) first")

    write = read = stream = _fail


class TemposplitAccel(DefaultIP, Accelerator):
    """Driver of the temposplit accelerator IP (registers from :mod:`temposplit.hw.regmap`).

    PYNQ constructs it with the IP's description; :meth:`attach` gives it the AXI DMA whose
    streams are wired to it, and probes the build's parameters (ID, PARAMS).
    """

    bindto = [regmap.VLNV]

    def __init__(self, description):
        DefaultIP.__init__(self, description)
        Accelerator.__init__(self, _NoTransport())
        self.description = description
        self.dma = None
        self.fabric_lock = None  # open_overlay's FabricLock, released by close()

    def attach(self, dma) -> TemposplitAccel:
        self.dma = dma
        Accelerator.__init__(self, PynqTransport(self.mmio, dma, allocate=allocate))
        self.params = self.probe()
        return self

    @property
    def max_transfer(self) -> int:
        """Bytes one DMA transfer may move (the overlay's c_sg_length_width)."""
        return self.transport.max_transfer

    def close(self) -> None:
        try:
            if isinstance(self.transport, PynqTransport):
                self.transport.close()
        finally:
            if self.fabric_lock is not None:
                self.fabric_lock.release()


def default_bitfile() -> str:
    """Where the overlay is: $TEMPOSPLIT_OVERLAY, ``bitstreams/pynq-z2/`` of a checkout, the
    current folder, else the bare name (PYNQ then looks in its overlays folder)."""
    env = os.environ.get(OVERLAY_ENV)
    if env:
        return env
    for candidate in (
        Path(__file__).resolve().parent.parent / "bitstreams" / "pynq-z2" / OVERLAY_NAME,
        Path.cwd() / OVERLAY_NAME,
    ):
        if candidate.with_suffix(".hwh").exists():
            return str(candidate)
    return OVERLAY_NAME


def open_overlay(bitfile: str | None = None, download: bool = True) -> TemposplitAccel:
    """Load the overlay and return its accelerator, attached to its AXI DMA and probed. The
    board's fabric lock (:class:`FabricLock`) is taken first and held until the
    accelerator's ``close()``: a fabric another process holds is an :class:`AcceleratorError`,
    and the overlay is not loaded under it."""
    import pynq

    # sim/pynqsim.py's stand-in (its DMA's `simulated`): each process's overlay is a
    # simulation of its own, no fabric shared with another process, so no lock
    simulated = getattr(getattr(pynq, "DMA", None), "simulated", False)
    lock = None if simulated else FabricLock.acquire()
    try:
        accel = _load(pynq, bitfile or default_bitfile(), download)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    accel.fabric_lock = lock
    return accel


def _load(pynq, bitfile: str, download: bool) -> TemposplitAccel:
    try:
        overlay = pynq.Overlay(bitfile, download=download)
    except Exception as exc:  # noqa: BLE001 - pynq's own types (a missing .hwh is a ValueError, a damaged one XML's)
        raise AcceleratorError(f"cannot load the overlay {bitfile}: {exc}") from exc
    accels = [name for name, d in overlay.ip_dict.items() if d.get("type") == regmap.VLNV]
    dmas = [name for name, d in overlay.ip_dict.items() if str(d.get("type", "")).startswith(DMA_VLNV_PREFIX)]
    if len(accels) != 1 or len(dmas) != 1:
        raise AcceleratorError(f"the overlay should hold one {regmap.VLNV} and one AXI DMA, not {accels} and {dmas}")
    accel = getattr(overlay, accels[0])
    if not isinstance(accel, TemposplitAccel):
        raise AcceleratorError(f"{accels[0]} is bound to {type(accel).__name__}, not TemposplitAccel")
    accel.overlay = overlay
    return accel.attach(getattr(overlay, dmas[0]))
