"""Faults of the fabric and its DMA, without a board: a stalled stream ends in an
AcceleratorError after a bounded wait and a DMA reset (PYNQ's own ``wait()`` would spin for
ever), a channel's error is reported at once, the reset's own waits are bounded, and the
engine falls back to software only for the driver's limit refusals, never for a fault.

The DMA is a fake of PYNQ's simple-mode driver (channels with ``idle``/``running``/``error``,
``transfer``/``wait``/``start``, the DMACR/DMASR registers behind ``mmio``); where PYNQ
would spin for ever (``wait()`` on a busy channel, ``start()`` on a halted one) it raises
:class:`_Hang` instead, so a driver that would hang fails the test rather than hanging it.
The stand-in of ``sim/pynqsim.py`` is also run over a simulation bridge that never
finishes a transfer (no Verilator)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError, AcceleratorLimitError, PynqTransport

ROOT = Path(__file__).resolve().parents[2]


class _Hang(Exception):
    """Where PYNQ's driver would spin for ever."""


class _Buffer(np.ndarray):
    def flush(self):
        pass

    def invalidate(self):
        pass

    def freebuffer(self):
        pass


def _allocate(shape, dtype):
    return np.zeros(shape, dtype).view(_Buffer)


class _Channel:
    """One channel as PYNQ 3's ``_SDMAChannel`` shows it (state kept here, not in registers)."""

    def __init__(self, dma, name, offset):
        self.dma, self.name, self.offset = dma, name, offset
        self.busy = False  # a transfer pending
        self.finishes = True  # a pending transfer completes at its next status read
        self.halted = False
        self.error_bits = 0  # DMASR's DMAIntErr / DMASlvErr / DMADecErr
        self.wait_error = None  # what wait() raises on an idle channel (PYNQ: RuntimeError on an error state)
        self.on_poll = None  # called at each status read (another channel's error, a driver's own limit)
        self.nbytes = self.transferred = 0
        self.starts = self.waits = 0

    @property
    def idle(self):
        self.dma.polls += 1
        if self.on_poll is not None:
            self.on_poll()
        if self.busy and self.finishes and not self.halted:
            self.busy = False
        return not self.busy and not self.halted

    @property
    def running(self):
        return not self.halted

    @property
    def error(self):
        return bool(self.error_bits)

    def transfer(self, array, start=0, nbytes=0):
        if self.halted:
            raise RuntimeError("DMA channel not started")
        self.busy, self.nbytes = True, nbytes

    def wait(self):
        self.waits += 1
        if self.on_poll is not None:
            self.on_poll()
        if self.busy and self.finishes and not self.halted:  # PYNQ's spin would end
            self.busy = False
        if self.busy or self.halted:
            raise _Hang(f"PYNQ's {self.name} wait() would spin here for ever")
        if self.wait_error is not None:
            raise self.wait_error
        self.transferred = self.nbytes

    def start(self):
        self.dma.mmio.write(self.offset, 0x1)
        if self.halted:
            raise _Hang(f"PYNQ's {self.name} start() would spin here for ever")
        self.starts += 1


class _DmaRegisters:
    """DMACR (reset bit 2 clears when done, RS bit 0 starts a halted channel) and DMASR."""

    def __init__(self, dma):
        self.dma = dma
        self.log = []
        self.reset_sticks = False  # the soft reset never completes
        self.restarts = True  # a halted channel starts when RS is written

    def _channel(self, offset):
        return self.dma.sendchannel if offset < 0x30 else self.dma.recvchannel

    def write(self, offset, value):
        self.log.append((offset, value))
        if offset in (0x00, 0x30) and value & 0x4:
            self.dma.in_reset = self.reset_sticks
            for ch in (self.dma.sendchannel, self.dma.recvchannel):
                ch.halted, ch.busy, ch.error_bits = True, False, 0
        elif offset in (0x00, 0x30) and value & 0x1 and self.restarts and not self.dma.in_reset:
            self._channel(offset).halted = False

    def read(self, offset):
        if offset in (0x00, 0x30):
            return 0x4 if self.dma.in_reset else 0x1 - int(self._channel(offset).halted)
        if offset in (0x04, 0x34):
            ch = self._channel(offset)
            return int(ch.halted) | (0x2 * int(not ch.busy and not ch.halted)) | ch.error_bits
        if offset == 0x58:
            return self.dma.recvchannel.transferred
        return 0


class _Dma:
    def __init__(self):
        self.buffer_max_size = (1 << 26) - 1
        self.polls = 0
        self.in_reset = False
        self.sendchannel = _Channel(self, "MM2S", 0x00)
        self.recvchannel = _Channel(self, "S2MM", 0x30)
        self.mmio = _DmaRegisters(self)

    def was_reset(self):
        return any(off == 0x00 and v & 0x4 for off, v in self.mmio.log)


def _transport(dma, **kw):
    return PynqTransport(SimpleNamespace(read=lambda off: 0, write=lambda off, v: None), dma, allocate=_allocate, **kw)


def test_a_stream_that_ends_returns_the_received_bytes():
    dma = _Dma()
    assert _transport(dma).stream(b"\1" * 64, 24) == bytes(24)
    assert dma.sendchannel.waits == 1 and dma.recvchannel.waits == 1
    assert not dma.was_reset()


@pytest.mark.parametrize(
    ("stuck", "match"),
    [
        ("sendchannel", r"input \(it took no more\) stalled: the DMA's MM2S transfer did not finish within 0.05 s"),
        ("recvchannel", r"output \(its packet did not end\) stalled: the DMA's S2MM transfer did not finish"),
    ],
)
def test_a_stalled_stream_is_an_accelerator_error_after_its_timeout_and_the_dma_is_reset(stuck, match):
    dma = _Dma()
    getattr(dma, stuck).finishes = False
    transport = _transport(dma, timeout_s=0.05)
    began = time.monotonic()
    with pytest.raises(AcceleratorError, match=match) as err:
        transport.stream(b"\1" * 64, 24)
    assert time.monotonic() - began < 2
    assert "the DMA was reset" in str(err.value)
    assert dma.was_reset()
    assert dma.sendchannel.starts == dma.recvchannel.starts == 1  # started again (bounded), ready for a transfer
    assert dma.polls > 1
    getattr(dma, stuck).finishes = True  # the fabric answers again: so does the transport
    assert transport.stream(b"\1" * 64, 24) == bytes(24)


def test_the_default_timeout_has_a_floor_and_grows_with_the_bytes():
    dma = _Dma()
    t = _transport(dma)
    floor = PynqTransport.STALL_FLOOR_S
    assert floor >= 5
    assert t.stall_timeout(0) == floor
    assert t.stall_timeout(64 << 20) == pytest.approx(floor + (64 << 20) / PynqTransport.STALL_BYTES_PER_S)
    assert t.stall_timeout(64 << 20) > floor + 60
    assert _transport(dma, timeout_s=2.5).stall_timeout(1 << 30) == 2.5
    dma.simulated = True  # sim/pynqsim.py's DMA: its own limit in simulated cycles
    assert _transport(dma).stall_timeout(0) == float("inf")
    assert _transport(dma, timeout_s=np.int64(3)).stall_timeout(0) == 3.0
    for bad in (0, -1, "10", True, np.bool_(True), float("nan")):
        with pytest.raises(AcceleratorError, match="timeout"):
            _transport(dma, timeout_s=bad)


def test_a_channel_error_is_reported_at_once_naming_the_channel_and_its_status():
    dma = _Dma()
    dma.sendchannel.finishes = False  # the input backs up behind the failed output
    transport = _transport(dma, timeout_s=30)

    def overflow():  # the S2MM packet is longer than the receive: DMAIntErr, the channel halts
        dma.recvchannel.error_bits, dma.recvchannel.halted = 0x10, True

    dma.sendchannel.on_poll = overflow
    began = time.monotonic()
    with pytest.raises(AcceleratorError, match=r"S2MM channel stopped with an error \(DMASR 0x00000011: internal") as e:
        transport.stream(b"\1" * 64, 24)
    assert time.monotonic() - began < 5
    assert "c_sg_length_width" in str(e.value) and "the DMA was reset" in str(e.value)
    assert dma.was_reset()


def test_pynqs_runtime_error_from_wait_resets_the_dma_as_before():
    dma = _Dma()
    dma.recvchannel.wait_error = RuntimeError("DMA Internal Error (transfer length 0?)")
    with pytest.raises(AcceleratorError, match="DMA Internal Error .*c_sg_length_width"):
        _transport(dma).stream(b"\1" * 8, 8)
    assert dma.was_reset()


def test_a_dma_drivers_timeout_error_is_an_accelerator_error_and_resets_the_dma():
    """sim/pynqsim.py's channels raise TimeoutError (an OSError) for a stalled stream."""
    dma = _Dma()

    dma.sendchannel.finishes = False

    def stand_in_limit():
        raise TimeoutError("the DMA's MM2S transfer did not finish in 1000 polls (a stalled stream)")

    dma.sendchannel.on_poll = stand_in_limit
    with pytest.raises(AcceleratorError, match=r"the AXI DMA stalled \(the DMA's MM2S transfer did not finish"):
        _transport(dma).stream(b"\1" * 8, 8)
    assert dma.was_reset()


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ("reset_sticks", "the AXI DMA's soft reset did not complete within 0.05 s: reload the overlay"),
        ("no_restart", "the AXI DMA's MM2S channel did not start after its reset within 0.05 s: reload the overlay"),
    ],
)
def test_the_dma_reset_is_bounded_too(fault, match, monkeypatch):
    monkeypatch.setattr(PynqTransport, "RESET_TIMEOUT_S", 0.05)
    dma = _Dma()
    dma.recvchannel.wait_error = RuntimeError("DMA Decode Error (invalid address)")
    if fault == "reset_sticks":
        dma.mmio.reset_sticks = True
    else:
        dma.mmio.restarts = False
    began = time.monotonic()
    with pytest.raises(AcceleratorError, match=match) as e:
        _transport(dma).stream(b"\1" * 8, 8)
    assert time.monotonic() - began < 2
    assert "DMA Decode Error" in str(e.value)  # what went wrong first is still said


# ----------------------------------------------------------------------------- the pynq stand-in


def _load_pynqsim():
    spec = importlib.util.spec_from_file_location("pynqsim_faults", ROOT / "sim" / "pynqsim.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Bridge:
    """The simulation's side of sim/pynqsim.py: a fabric that never ends a transfer until told."""

    def __init__(self):
        self.calls = []
        self.stalled = True
        self.payload = b""

    def call(self, op, *args):
        self.calls.append(op)
        if op == "poll":
            if self.stalled:
                return "busy", None
            return "done", (self.payload if args[0] == "s2mm" else None)
        return None


def test_a_stall_on_the_pynq_stand_in_is_an_accelerator_error_and_the_dma_works_after_it(monkeypatch):
    sim = _load_pynqsim()
    bridge = _Bridge()
    monkeypatch.setattr(sim, "_sim", bridge)
    monkeypatch.setattr(sim.AxiDmaModel, "MAX_POLLS", 50)
    base = 0x40400000
    sim._bus.append((base, 0x10000, sim.AxiDmaModel(26)))
    params = {
        "c_include_sg": "0",
        "c_sg_length_width": "26",
        "c_include_mm2s": "1",
        "c_include_s2mm": "1",
        "c_m_axi_mm2s_data_width": "64",
        "c_m_axi_s2mm_data_width": "64",
    }
    dma = sim.DMA({"phys_addr": base, "addr_range": 0x10000, "parameters": params})
    transport = _transport(dma)
    transport._allocate = sim.allocate  # buffers in the stand-in's DDR model
    assert transport.stall_timeout(1 << 20) == float("inf")  # the stand-in's limit is in simulated cycles
    with pytest.raises(AcceleratorError, match=r"the AXI DMA stalled \(the DMA's MM2S transfer did not finish in 50"):
        transport.stream(b"\1" * 64, 64)
    assert "reset_dma" in bridge.calls
    bridge.stalled, bridge.payload = False, b"\7" * 16
    assert transport.stream(b"\1" * 64, 64) == b"\7" * 16


# ----------------------------------------------------------------------------- the engine's fallback


class _Registers:
    """The accelerator's registers in a dict (a default build); a pass's output as long as asked."""

    def __init__(self, fault=None):
        self.fault = fault
        self.regs, self.log = {}, []

    def write(self, offset, value):
        if self.fault == "closed":
            raise AcceleratorError("the accelerator's PYNQ transport is closed (open the overlay again)")
        self.regs[offset] = value
        self.log.append(("write", offset, value))

    def read(self, offset):
        answers = {
            "ID": regmap.ID_MAGIC,
            "PARAMS": regmap.DEFAULT.params_word(),
            "STATUS": regmap.pack("STATUS", DONE=0 if self.fault == "status" else 1),
        }
        for name, value in answers.items():
            if offset == regmap.REG[name].offset:
                return value
        return 0

    def stream(self, data, max_out):
        self.log.append(("stream", len(data), max_out))
        mode = regmap.unpack("CTRL", self.regs[regmap.REG["CTRL"].offset])["MODE"]
        if self.fault == "dma" and mode == regmap.mode("MOTION"):
            raise AcceleratorError("the AXI DMA's S2MM channel stopped with an error (DMASR 0x00010011)")
        return bytes(max_out)


TENSOR = SimpleNamespace(name="t", zero_point=3, block=4)


@pytest.mark.parametrize(
    ("fault", "match"), [("dma", "DMASR"), ("status", "did not finish"), ("closed", "transport is closed")]
)
def test_a_fault_in_the_motion_search_propagates_instead_of_falling_back_to_software(fault, match):
    from temposplit.hw.backend import FabricEngine

    t = _Registers()
    engine = FabricEngine(Accelerator(t))
    t.fault = fault
    ref = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(AcceleratorError, match=match) as e:
        engine.motion_search(TENSOR, ref, ref, 4, 7, False)
    assert not isinstance(e.value, AcceleratorLimitError)
    assert not engine.fallbacks


def test_the_motion_search_falls_back_for_a_limit_refused_before_any_register_is_written():
    from temposplit.hw.backend import FabricEngine

    t = _Registers()
    engine = FabricEngine(Accelerator(t))
    ref = np.zeros((8, 8, 8), np.uint8)
    mvs, _ = engine.motion_search(TENSOR, ref, ref, 4, 7, False)  # fits: on the fabric
    assert mvs.shape == (2, 2, 2) and not engine.fallbacks
    big = np.zeros((64, 64, 136), np.uint8)  # over the reference RAM (no band engine), B = 16 over the block buffer
    t.log.clear()
    with pytest.raises(AcceleratorLimitError):
        engine.accel.load_reference(big, zn_ref=8)
    with pytest.raises(AcceleratorLimitError):
        engine.accel.motion(big[:8, :8], z8=3, n_bits=4, zn_ref=8, block=16, search=7)
    assert t.log == []  # refused before any register was written
    engine.motion_search(TENSOR, big, big, 4, 7, False)
    assert engine.fallbacks == {"TSS over the fabric's limits": 1}


def test_the_limit_refusals_are_accelerator_errors():
    assert issubclass(AcceleratorLimitError, AcceleratorError)
