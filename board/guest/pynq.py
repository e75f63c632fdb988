"""``pynq`` on the emulated board: the stand-in of sim/pynqsim.py, its fabric on the host.

Inside the armhf root (qemu-arm) the edge program's ``--backend pynq`` imports ``pynq``
and gets this module: sim/pynqsim.py's ``Overlay`` (from the ``.hwh`` beside the bitfile),
``MMIO``, ``allocate`` (a DDR model with a separate device copy) and the AXI DMA's
registers in simple mode, all run by the board's Python, 32-bit. Only the accelerator's
RTL is elsewhere: Verilator and cocotb cannot run in the armhf root, so the Verilated top
runs on the host (``board/emu.py``'s fabric server) and this module reaches it over
loopback, as the ARM reaches the fabric over its AXI ports. Each ``Overlay.download``
opens one connection, that is one fresh simulation.

The host's address and key come from ``TEMPOSPLIT_FABRIC`` (host:port) and
``TEMPOSPLIT_FABRIC_KEY`` (hex); sim/pynqsim.py is looked for beside this file.
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pynqsim  # noqa: E402 (beside this file in the root)


class RemoteFabric:
    """The simulation's transport (``call``, ``close``) over a connection to the host."""

    def __init__(self):
        address = os.environ.get("TEMPOSPLIT_FABRIC")
        key = os.environ.get("TEMPOSPLIT_FABRIC_KEY")
        if not address or not key:
            raise RuntimeError("TEMPOSPLIT_FABRIC and TEMPOSPLIT_FABRIC_KEY must name the host's fabric server")
        host, _, port = address.rpartition(":")
        self._conn = Client((host, int(port)), authkey=bytes.fromhex(key))

    def call(self, *request):
        if self._conn is None:
            raise RuntimeError("the fabric connection is closed")
        self._conn.send(request)
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the fabric failed a {request[0]}: {value}")
        return value

    def close(self):
        if self._conn is not None:
            try:
                self._conn.send(("close",))
                self._conn.recv()
            finally:
                self._conn.close()
                self._conn = None


pynqsim.install(None, None, bridge=RemoteFabric)  # sys.modules["pynq"] is now pynqsim
