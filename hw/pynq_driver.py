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
"""

from __future__ import annotations

import os
from pathlib import Path

from pynq import DefaultIP, allocate

from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError, PynqTransport

OVERLAY_ENV = "TEMPOSPLIT_OVERLAY"
OVERLAY_NAME = "temposplit.bit"
DMA_VLNV_PREFIX = "xilinx.com:ip:axi_dma:"


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
        if isinstance(self.transport, PynqTransport):
            self.transport.close()


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
    """Load the overlay and return its accelerator, attached to its AXI DMA and probed."""
    import pynq

    bitfile = bitfile or default_bitfile()
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
