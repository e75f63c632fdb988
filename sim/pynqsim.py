"""A stand-in for ``pynq`` over the Verilated RTL (tests only): ``Overlay``, ``DefaultIP``
(drivers bound by ``bindto``), ``MMIO``, ``allocate`` and the AXI DMA driver, with the same
calls and the same register-level behaviour the board has, so that
:mod:`temposplit.hw.pynq_driver` runs unchanged against the simulated accelerator.

What is modelled, and where:

- ``Overlay(bitfile)`` reads the ``.hwh`` beside the bitfile (PYNQ's way), builds ``ip_dict``
  from the PS7's memory map and binds each IP to the ``DefaultIP`` subclass whose ``bindto``
  lists its VLNV. "Downloading" starts the simulation (Verilator, cocotb; the build is the
  one ``sim/conftest.py`` made) with ``pynqsim_tb.dma_server`` behind it.
- ``MMIO`` decodes physical addresses like the GP0 interconnect: the accelerator's window
  goes to its AXI4-Lite port in the simulation, the DMA's to :class:`AxiDmaModel`.
- ``allocate`` returns :class:`PynqBuffer` arrays in a model of DDR with a *separate device
  copy*: the DMA reads what ``flush`` wrote and the CPU sees what the DMA wrote only after
  ``invalidate``, so a missing cache operation fails a test instead of passing by luck.
- :class:`AxiDmaModel` is the AXI DMA in simple mode, register for register (MM2S/S2MM
  DMACR, DMASR, SA/DA, LENGTH; PG021): writing LENGTH starts a transfer, DMASR reads
  advance the simulation, the S2MM LENGTH reads back the bytes written, a packet longer
  than LENGTH is a DMAIntErr and halts the channel, the length register has
  ``c_sg_length_width`` bits, unaligned addresses are refused.
- :class:`DMA` is the driver PYNQ binds to ``xilinx.com:ip:axi_dma:7.1`` (its API:
  ``sendchannel``/``recvchannel`` with ``transfer(array, start, nbytes)``, ``wait``,
  ``idle``, ``running``, ``error``, ``transferred``, ``start``/``stop``; ``buffer_max_size``),
  written here from the register protocol. Where PYNQ's ``wait`` spins for ever, a DMASR
  read of a transfer still busy after ``AxiDmaModel.MAX_POLLS`` reads raises ``TimeoutError``
  (and ``DMA.simulated`` tells the driver that its wall-clock stall limit does not apply).

Use: ``pynqsim.install(build_params, build_root)`` puts this module in ``sys.modules`` as
``pynq``; ``pynqsim.shutdown()`` ends the simulation.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

_config: dict = {}
_sim = None  # the running BridgeTransport
_bus: list = []  # (base, size, handler) of the PS's GP0 address map
_ip_drivers: dict = {}


def install(params, build_root, test_module: str = "pynqsim_tb", bridge=None) -> None:
    """Make ``import pynq`` give this module; the simulation starts on the first Overlay.

    ``bridge``: a callable returning the simulation's transport (``call(*request)``,
    ``close()``) instead of a local :class:`~temposplit.hw.simbridge.BridgeTransport`: the
    emulated board's, whose simulation runs on the host (board/guest/pynq.py)."""
    _config.update(params=params, root=build_root and Path(build_root), test_module=test_module, bridge=bridge)
    sys.modules["pynq"] = sys.modules[__name__]


def shutdown() -> None:
    global _sim
    if _sim is not None:
        _sim.close()
        _sim = None
    _bus.clear()


def _bridge():
    if _sim is None:
        raise RuntimeError("no overlay is loaded (the simulation is not running)")
    return _sim


# ----------------------------------------------------------------------------- memory


class _Ddr:
    """Physically contiguous buffers (PYNQ's CMA) as seen by the DMA."""

    def __init__(self, base=0x16000000):
        self.next = base
        self.regions: dict[int, bytearray] = {}

    def alloc(self, nbytes: int) -> int:
        addr = self.next
        self.regions[addr] = bytearray(nbytes)
        self.next += (nbytes + 4095) // 4096 * 4096 + 4096
        return addr

    def free(self, addr: int) -> None:
        self.regions.pop(addr, None)

    def _find(self, addr: int, n: int):
        for base, mem in self.regions.items():
            if base <= addr and addr + n <= base + len(mem):
                return mem, addr - base
        raise RuntimeError(f"DMA Decode Error: 0x{addr:08X}+{n} is in no allocated buffer")

    def read(self, addr: int, n: int) -> bytes:
        mem, off = self._find(addr, n)
        return bytes(mem[off : off + n])

    def write(self, addr: int, data: bytes) -> None:
        mem, off = self._find(addr, len(data))
        mem[off : off + len(data)] = data


DDR = _Ddr()


class PynqBuffer(np.ndarray):
    """An ``allocate``d array: the ndarray is the CPU's (cached) view, DDR the device's."""

    def __array_finalize__(self, obj):
        self.physical_address = getattr(obj, "physical_address", None)
        self.coherent = False

    @property
    def device_address(self):
        return self.physical_address

    def flush(self):
        DDR.write(self.physical_address, self.tobytes())

    def invalidate(self):
        raw = np.frombuffer(DDR.read(self.physical_address, self.nbytes), self.dtype).reshape(self.shape)
        np.copyto(np.asarray(self), raw)

    sync_to_device = flush
    sync_from_device = invalidate

    def freebuffer(self):
        DDR.free(self.physical_address)

    def close(self):
        self.freebuffer()


def allocate(shape, dtype="u4", target=None, **kwargs):
    arr = np.zeros(shape, dtype=dtype).view(PynqBuffer)
    arr.physical_address = DDR.alloc(arr.nbytes)
    return arr


# ----------------------------------------------------------------------------- MMIO and the bus


class _AxiLiteWindow:
    """The accelerator's registers: AXI4-Lite transactions on the simulated top."""

    def __init__(self, window: int):
        self.mask = window - 1

    def read(self, offset):
        return _bridge().call("read", offset & self.mask)

    def write(self, offset, value):
        _bridge().call("write", offset & self.mask, value)


class MMIO:
    def __init__(self, base_addr, length=4, **kwargs):
        self.base_addr = int(base_addr)
        self.length = int(length)

    def _target(self, offset):
        if offset % 4:
            raise MemoryError("Unaligned access: offset must be a multiple of 4.")
        if not 0 <= offset < self.length:
            raise ValueError(f"offset 0x{offset:X} outside the {self.length}-byte MMIO window")
        addr = self.base_addr + offset
        for base, size, handler in _bus:
            if base <= addr < base + size:
                return handler, addr - base
        raise RuntimeError(f"bus error: nothing at 0x{addr:08X}")

    def read(self, offset=0, length=4, word_order="little"):
        if length != 4:
            raise ValueError("this stand-in reads 32-bit words only")
        handler, off = self._target(offset)
        return int(handler.read(off)) & 0xFFFFFFFF

    def write(self, offset, data):
        if not isinstance(data, int | np.integer):
            raise ValueError("this stand-in writes 32-bit integers only")
        handler, off = self._target(offset)
        handler.write(off, int(data) & 0xFFFFFFFF)


# ----------------------------------------------------------------------------- the AXI DMA (hardware)


class AxiDmaModel:
    """The AXI DMA's registers in simple mode (PG021), driving the simulated streams."""

    SR_HALTED, SR_IDLE, SR_INTERR, SR_DECERR, SR_IOC = 0x1, 0x2, 0x10, 0x40, 0x1000
    POLL_CYCLES = 2000
    # PYNQ's wait spins for ever, and so would the driver's polling of a simulation (its
    # wall-clock limit is off here: the simulation is far slower than the board). A transfer
    # still busy after this many DMASR reads (each runs POLL_CYCLES: 20 ms of simulated time
    # in all) is a stalled stream: the read raises TimeoutError, the stand-in's "for ever".
    MAX_POLLS = 1000

    def __init__(self, length_width: int):
        self.length_mask = (1 << length_width) - 1
        self.reset()

    def reset(self):
        self.ch = {
            name: {"cr": 0, "sr": self.SR_HALTED, "addr": 0, "length": 0, "busy": False, "polls": 0}
            for name in ("mm2s", "s2mm")
        }

    @staticmethod
    def _channel(offset):
        return ("mm2s", offset) if offset < 0x30 else ("s2mm", offset - 0x30)

    def write(self, offset, value):
        name, reg = self._channel(offset)
        ch = self.ch[name]
        if reg == 0x00:  # DMACR
            if value & 0x4:  # soft reset: both channels
                if _sim is not None:
                    _bridge().call("reset_dma")
                self.reset()
                return
            ch["cr"] = value
            if value & 1:
                ch["sr"] &= ~self.SR_HALTED
            elif not ch["busy"]:
                ch["sr"] |= self.SR_HALTED
        elif reg == 0x04:  # DMASR: interrupt bits are write-one-to-clear
            ch["sr"] &= ~(value & 0x7000)
        elif reg == 0x18:  # SA / DA (low word)
            ch["addr"] = value
        elif reg == 0x1C:
            pass  # upper address word: 32-bit addressing
        elif reg == 0x28:  # LENGTH: starts the transfer
            self._start(name, value & self.length_mask)

    def _start(self, name, nbytes):
        ch = self.ch[name]
        if ch["sr"] & self.SR_HALTED or not ch["cr"] & 1:
            return  # a halted channel ignores LENGTH
        if nbytes == 0:
            ch["sr"] |= self.SR_INTERR | self.SR_HALTED
            return
        ch.update(length=nbytes, busy=True, polls=0)
        ch["sr"] &= ~self.SR_IDLE
        try:
            if name == "mm2s":
                _bridge().call("mm2s_start", DDR.read(ch["addr"], nbytes))
            else:
                DDR.read(ch["addr"], nbytes)  # the destination must be allocated
                _bridge().call("s2mm_start")
        except RuntimeError:
            ch.update(busy=False)
            ch["sr"] |= self.SR_DECERR | self.SR_HALTED

    def read(self, offset):
        name, reg = self._channel(offset)
        ch = self.ch[name]
        if reg == 0x00:
            return ch["cr"]
        if reg == 0x04:
            if ch["busy"]:
                ch["polls"] += 1
                if ch["polls"] > self.MAX_POLLS:
                    raise TimeoutError(
                        f"the DMA's {name.upper()} transfer did not finish in {self.MAX_POLLS} polls (a stalled stream)"
                    )
                self._poll(name)
            return ch["sr"]
        if reg == 0x18:
            return ch["addr"]
        if reg == 0x28:
            return ch["length"]
        return 0

    def _poll(self, name):
        state, payload = _bridge().call("poll", name, self.POLL_CYCLES)
        if state == "busy":
            return
        ch = self.ch[name]
        ch["busy"] = False
        if name == "s2mm" and payload is not None:
            if len(payload) > ch["length"]:  # the packet does not fit: DMAIntErr, channel halts
                DDR.write(ch["addr"], payload[: ch["length"]])
                ch["sr"] |= self.SR_INTERR | self.SR_HALTED
                return
            DDR.write(ch["addr"], payload)
            ch["length"] = len(payload)
        ch["sr"] |= self.SR_IDLE | self.SR_IOC


# ----------------------------------------------------------------------------- drivers


class _RegisterIP(type):
    def __init__(cls, name, bases, attrs):
        for vlnv in attrs.get("bindto", ()):
            _ip_drivers[vlnv] = cls
        super().__init__(name, bases, attrs)


class DefaultIP(metaclass=_RegisterIP):
    """Driver of an IP without a more specific one: its MMIO window."""

    def __init__(self, description):
        self.mmio = MMIO(description["phys_addr"], description["addr_range"])

    def read(self, offset=0):
        return self.mmio.read(offset)

    def write(self, offset, value):
        self.mmio.write(offset, value)


class _SimpleDmaChannel:
    """One channel of the AXI DMA in simple mode, as PYNQ's driver uses the registers."""

    def __init__(self, mmio, offset, max_size, align, flush_before):
        self._mmio = mmio
        self._offset = offset
        self._max_size = max_size
        self._align = align
        self._flush_before = flush_before
        self._active = None
        self._first = True
        self.transferred = 0
        self.start()

    def _sr(self):
        return self._mmio.read(self._offset + 0x04)

    @property
    def running(self):
        return not self._sr() & 0x1

    @property
    def idle(self):
        return bool(self._sr() & 0x2)

    @property
    def error(self):
        return bool(self._sr() & 0x70)

    def start(self):
        self._mmio.write(self._offset, 0x1)
        self._first = True

    def stop(self):
        self._mmio.write(self._offset, 0x0)

    def transfer(self, array, start=0, nbytes=0):
        if not self.running:
            raise RuntimeError("DMA channel not started")
        if not self._first and not self.idle:
            raise RuntimeError("DMA channel not idle")
        if nbytes == 0:
            nbytes = array.nbytes - start
        if nbytes > self._max_size:
            raise ValueError(
                f"Transfer size is {nbytes} bytes, which exceeds the maximum DMA buffer size {self._max_size}."
            )
        if (array.physical_address + start) % self._align:
            raise RuntimeError(
                f"DMA does not support unaligned transfers; Starting address must be aligned to {self._align} bytes."
            )
        if self._flush_before:
            array.flush()
        self.transferred = 0
        self._mmio.write(self._offset + 0x18, (array.physical_address + start) & 0xFFFFFFFF)
        self._mmio.write(self._offset + 0x1C, 0)
        self._mmio.write(self._offset + 0x28, nbytes)
        self._active = array
        self._first = False

    def wait(self):
        if not self.running:
            raise RuntimeError("DMA channel not started")
        while True:  # PYNQ's loop; the model bounds it (AxiDmaModel.MAX_POLLS)
            sr = self._sr()
            if sr & 0x10:
                raise RuntimeError("DMA Internal Error (transfer length 0?)")
            if sr & 0x40:
                raise RuntimeError("DMA Decode Error (invalid address)")
            if sr & 0x2:
                break
        if not self._flush_before:
            self._active.invalidate()
        self.transferred = self._mmio.read(self._offset + 0x28)


class DMA(DefaultIP):
    """The AXI DMA driver (simple mode), parameters from the ``.hwh``."""

    bindto = ["xilinx.com:ip:axi_dma:7.1"]
    # Not PYNQ's: its time is simulated cycles, not the wall clock's, so the driver's
    # wall-clock stall limit (PynqTransport.stall_timeout) is off and the channels report a
    # stalled stream themselves (AxiDmaModel.MAX_POLLS).
    simulated = True

    def __init__(self, description):
        super().__init__(description)
        p = description["parameters"]
        if int(p.get("c_include_sg", 0)):
            raise RuntimeError("this stand-in models the simple (register) mode only")
        self.buffer_max_size = (1 << int(p.get("c_sg_length_width", 26))) - 1
        self.sendchannel = self.recvchannel = None
        if int(p.get("c_include_mm2s", 0)):
            self.sendchannel = _SimpleDmaChannel(
                self.mmio, 0x00, self.buffer_max_size, int(p["c_m_axi_mm2s_data_width"]) // 8, True
            )
        if int(p.get("c_include_s2mm", 0)):
            self.recvchannel = _SimpleDmaChannel(
                self.mmio, 0x30, self.buffer_max_size, int(p["c_m_axi_s2mm_data_width"]) // 8, False
            )


# ----------------------------------------------------------------------------- the overlay


def _parse_hwh(path: Path) -> dict:
    root = ET.parse(path).getroot()
    modules = {m.get("INSTANCE"): m for m in root.iter("MODULE")}
    ps = next((m for m in modules.values() if m.get("MODTYPE") == "processing_system7"), None)
    if ps is None:
        raise RuntimeError(f"{path}: no processing_system7 (only Zynq-7000 overlays are modelled)")
    ip_dict = {}
    for rng in ps.iter("MEMRANGE"):
        name = rng.get("INSTANCE")
        mod = modules[name]
        base, high = int(rng.get("BASEVALUE"), 16), int(rng.get("HIGHVALUE"), 16)
        params = {p.get("NAME"): p.get("VALUE") for p in mod.findall("./PARAMETERS/PARAMETER")}
        block = mod.find(f"./ADDRESSBLOCKS/ADDRESSBLOCK[@NAME='{rng.get('ADDRESSBLOCK')}']")
        registers = {}
        if block is not None:
            for reg in block.iter("REGISTER"):
                props = {q.get("NAME"): q.get("VALUE") for q in reg.findall("PROPERTY")}
                registers[reg.get("NAME")] = {
                    "address_offset": int(props["ADDRESS_OFFSET"], 16),
                    "size": int(props["SIZE"]),
                    "access": props["ACCESS"],
                    "description": props.get("DESCRIPTION", ""),
                    "fields": {},
                }
        ip_dict[name] = {
            "phys_addr": base,
            "addr_range": high - base + 1,
            "type": mod.get("VLNV"),
            "fullpath": name,
            "parameters": params,
            "registers": registers,
            "state": None,
            "interrupts": {},
            "gpio": {},
            "_interrupts": {},
            "_gpio": {},
            "block_range": int(block.get("RANGE")) if block is not None and block.get("RANGE") else None,
        }
    return ip_dict


class Overlay:
    """``pynq.Overlay`` over the simulation: the ``.hwh`` beside ``bitfile`` describes it."""

    def __init__(self, bitfile_name, dtbo=None, download=True, ignore_version=False, device=None, **kwargs):
        self.bitfile_name = str(bitfile_name)
        hwh = Path(self.bitfile_name).with_suffix(".hwh")
        if not hwh.exists():
            raise ValueError(f"Cannot find HWH file {hwh}")
        self.ip_dict = _parse_hwh(hwh)
        self._drivers = {}
        if download:
            self.download()

    def download(self):
        """Start (or restart) the simulation and map every IP's window on the bus."""
        global _sim
        from temposplit.hw.simbridge import BridgeTransport

        shutdown()
        if _config.get("bridge") is not None:
            _sim = _config["bridge"]()
        else:
            _sim = BridgeTransport(
                _config["params"], root=_config["root"], test_module=_config["test_module"], testcase="dma_server"
            )
        for desc in self.ip_dict.values():
            if desc["type"].startswith("xilinx.com:ip:axi_dma:"):
                handler = AxiDmaModel(int(desc["parameters"].get("c_sg_length_width", 14)))
            else:
                handler = _AxiLiteWindow(desc["block_range"] or desc["addr_range"])
            _bus.append((desc["phys_addr"], desc["addr_range"], handler))

    def is_loaded(self):
        return _sim is not None

    def __getattr__(self, name):
        if name.startswith("_") or name not in self.ip_dict:
            raise AttributeError(f"Could not find IP or hierarchy {name} in overlay")
        if name not in self._drivers:
            desc = self.ip_dict[name]
            self._drivers[name] = _ip_drivers.get(desc["type"], DefaultIP)(desc)
        return self._drivers[name]
