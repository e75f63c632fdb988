"""PynqTransport's DMA buffers on a board with a bounded CMA pool (PYNQ-Z2: 128 MiB).

The input is staged through a bounded buffer, so a stream larger than the pool (a
ResNet-50 cut's BAND_MOTION) still runs; an operation's buffers are allocated before its
START, so one the pool cannot hold is an AcceleratorLimitError with the accelerator not
started (the engine does that motion search in software); a buffer being replaced is never
left cached once freed. The DMA is tests/hw/test_driver_faults.py's fake of PYNQ's
simple-mode driver; here its channels read what a transfer moves from the buffer's
flushed (device) copy when the transfer completes, as the DMA would."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError, AcceleratorLimitError, PynqTransport

_spec = importlib.util.spec_from_file_location("driver_faults", Path(__file__).with_name("test_driver_faults.py"))
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)


class _Pool:
    """PYNQ's ``allocate`` over a CMA pool of ``size`` bytes: buffers whose device copy (``flushed``) is what
    ``flush`` wrote, that fail a test when used after ``freebuffer``; an allocation over the
    pool is PYNQ's RuntimeError."""

    def __init__(self, size):
        self.size = size
        self.live = {}
        self.requests = []
        pool = self

        class Buffer(np.ndarray):
            def _check(self, what):
                assert not getattr(self, "freed", False), f"{what} of a freed buffer (unmapped on a board)"

            def flush(self):
                self._check("flush()")
                self.flushed = np.array(self)

            def invalidate(self):
                self._check("invalidate()")

            def freebuffer(self):
                self._check("freebuffer()")
                self.freed = True
                pool.live.pop(id(self))

        self.Buffer = Buffer

    def used(self):
        return sum(self.live.values())

    def __call__(self, shape, dtype):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.requests.append(n)
        if self.used() + n > self.size:
            raise RuntimeError(f"Failed to allocate {n} bytes ({self.used()} of {self.size} in use)")
        buf = np.zeros(shape, dtype).view(self.Buffer)
        self.live[id(buf)] = n
        return buf


class _Dma(faults._Dma):
    """The fake DMA; its MM2S records the bytes each transfer moved (read when it completes)
    and the order of the transfers of both channels."""

    def __init__(self, max_transfer=(1 << 26) - 1):
        super().__init__()
        self.buffer_max_size = max_transfer
        self.sent, self.events = [], []
        dma = self

        class Send(faults._Channel):
            @property
            def idle(self):
                was = self.busy
                done = faults._Channel.idle.fget(self)
                if was and done:  # the DMA read the buffer's flushed copy while it ran
                    array, start, nbytes = self.pending
                    dma.sent.append(bytes(array.flushed[start : start + nbytes]))
                return done

            def transfer(self, array, start=0, nbytes=0):
                dma.events.append(("MM2S", start, nbytes))
                self.pending = (array, start, nbytes)
                super().transfer(array, start=start, nbytes=nbytes)

        class Recv(faults._Channel):
            def transfer(self, array, start=0, nbytes=0):
                dma.events.append(("S2MM", start, nbytes))
                super().transfer(array, start=start, nbytes=nbytes)

        self.sendchannel = Send(self, "MM2S", 0x00)
        self.recvchannel = Recv(self, "S2MM", 0x30)


class _Registers:
    """A default build's registers (BAND_MOTION included), every write logged."""

    def __init__(self):
        self.log = []

    def write(self, offset, value):
        self.log.append((offset, value))

    def read(self, offset):
        p = regmap.DEFAULT
        answers = {
            "ID": regmap.ID_MAGIC,
            "PARAMS": p.params_word(),
            "BAND_PARAMS": regmap.pack(
                "BAND_PARAMS",
                CHUNK_LOG2=p.band_bytes.bit_length() - 1,
                BLOCKS_LOG2=p.band_blocks.bit_length() - 1,
                GROUP_BLOCKS=p.band_group_blocks,
            ),
            "STATUS": regmap.pack("STATUS", DONE=1),
        }
        for name, value in answers.items():
            if offset == regmap.REG[name].offset:
                return value
        return 0

    def started(self):
        return [v for off, v in self.log if off == regmap.REG["CTRL"].offset and regmap.unpack("CTRL", v)["START"]]


def _transport(dma, pool, regs=None):
    return PynqTransport(regs or SimpleNamespace(read=lambda off: 0, write=lambda off, v: None), dma, allocate=pool)


@pytest.mark.parametrize("max_transfer", [(1 << 26) - 1, 4095])
def test_the_input_goes_out_through_a_bounded_staging_buffer(monkeypatch, max_transfer):
    stage = 16 << 10
    monkeypatch.setattr(PynqTransport, "STAGE_BYTES", stage, raising=False)
    dma, pool = _Dma(max_transfer), _Pool(1 << 30)
    data = np.random.default_rng(1).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    assert _transport(dma, pool).stream(data, 24) == bytes(24)
    assert max(pool.requests) <= stage  # the input's size did not set a buffer's
    assert b"".join(dma.sent) == data  # each piece as the DMA read it: flushed, not overwritten before it went
    assert dma.events[0][0] == "S2MM"  # the receive before the first send
    pieces = [e for e in dma.events if e[0] == "MM2S"]
    assert all(nbytes <= min(max_transfer, stage) and start % PynqTransport.ALIGN == 0 for _, start, nbytes in pieces)


def test_a_band_motion_stream_over_the_cma_pool_runs(monkeypatch):
    """The reviewer's case scaled down: 200x272x256's BAND_MOTION stream is 128 MiB, the
    PYNQ-Z2's whole pool; here a stream of ~2 MB over a 1 MiB pool."""
    monkeypatch.setattr(PynqTransport, "STAGE_BYTES", 256 << 10, raising=False)
    dma, pool, regs = _Dma(), _Pool(1 << 20), _Registers()
    accel = Accelerator(_transport(dma, pool, regs))
    cur = np.zeros((40, 40, 256), np.uint8)  # over the 256 KiB reference RAM: BAND_MOTION
    mvs, costs = accel.motion(cur, z8=0, n_bits=4, zn_ref=0, block=8, search=7, reference=cur)
    assert mvs.shape == (5, 5, 2) and costs.shape == (5, 5)
    assert regmap.unpack("CTRL", regs.started()[-1])["MODE"] == regmap.mode("BAND_MOTION")
    assert sum(map(len, dma.sent)) > pool.size  # the stream was larger than the pool
    assert pool.used() <= pool.size


def test_a_buffer_the_pool_cannot_hold_is_a_limit_refused_before_start_and_no_freed_buffer_stays():
    dma, pool, regs = _Dma(), _Pool(64 << 10), _Registers()
    transport = _transport(dma, pool, regs)
    accel = Accelerator(transport)
    accel.probe()
    assert transport.stream(b"\1" * 64, 24) == bytes(24)  # 4 KiB in and out, kept
    regs.log.clear()
    cur = np.zeros((200, 16, 8), np.uint8)  # a MOTION input of 25 kB: fits the pool...
    pool.size = pool.used() + (16 << 10)  # ...that another user has since mostly taken
    with pytest.raises(AcceleratorLimitError, match="input buffer of 32768 bytes could not be allocated"):
        accel.motion(cur, z8=0, n_bits=4, zn_ref=0, block=8, search=7)
    assert regs.log == []  # nothing written: the fabric is as it was, not BUSY
    # the buffer being replaced was dropped, not left cached once freed: the next stream works
    assert transport.stream(b"\1" * 64, 24) == bytes(24)
    pool.size = 1 << 30
    mvs, _ = accel.motion(cur, z8=0, n_bits=4, zn_ref=0, block=8, search=7)
    assert mvs.shape == (25, 2, 2) and len(regs.started()) == 1


def test_an_allocation_failure_in_any_operation_starts_nothing(monkeypatch):
    dma, pool, regs = _Dma(), _Pool(0), _Registers()
    accel = Accelerator(_transport(dma, pool, regs))
    with pytest.raises(AcceleratorLimitError, match="output buffer of 4096 bytes could not be allocated"):
        accel.requantize(np.zeros(100, np.uint8), z8=0, n_bits=4)
    assert regs.started() == []
    assert isinstance(AcceleratorLimitError("x"), AcceleratorError)


def test_the_engine_does_the_motion_search_in_software_when_the_pool_is_full():
    from temposplit.codec.encoder import SoftwareEngine
    from temposplit.hw.backend import FabricEngine

    dma, pool, regs = _Dma(), _Pool(0), _Registers()
    engine = FabricEngine(Accelerator(_transport(dma, pool, regs)))
    t = SimpleNamespace(name="t", zero_point=3, block=4)
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 16, (8, 8, 8), dtype=np.uint8)
    q8 = rng.integers(0, 256, (8, 8, 8), dtype=np.uint8)
    mvs, costs = engine.motion_search(t, ref, q8, 4, 7, False)
    want = SoftwareEngine().motion_search(t, ref, q8, 4, 7, False)
    np.testing.assert_array_equal(mvs, want[0])
    np.testing.assert_array_equal(costs, want[1])
    assert engine.fallbacks == {"TSS over the fabric's limits": 1}
    assert regs.started() == []  # neither LOAD_REF nor MOTION started


@pytest.mark.parametrize("preset", ["thesis", "recommended"])
def test_a_stream_whose_buffers_the_pool_cannot_hold_is_coded_in_software_byte_identical(preset):
    """Every DMA buffer refused (the CMA pool taken by another user): the anchors (the
    Huffman ENCODE pass, the ctx CTX pass), the predicted frames' records and motion
    searches all fall back before any START, and the stream is the software encoder's.
    Before, an anchor's refused buffer stopped the edge program."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, TensorSpec
    from temposplit.hw.backend import FabricEngine

    rng = np.random.default_rng(5)
    base = rng.integers(0, 80, (16, 8, 8), dtype=np.uint8)  # (C, H, W), as M1 gives
    frames = [[np.roll(base, k, axis=2)] for k in range(4)]
    config = CodecConfig(tensors=[TensorSpec("t", base.shape, 0.05, 3, block=4)], **PRESETS[preset])
    dma, pool, regs = _Dma(), _Pool(0), _Registers()
    engine = FabricEngine(Accelerator(_transport(dma, pool, regs)))
    assert Encoder(config, engine=engine).encode(frames) == Encoder(config).encode(frames)
    assert regs.started() == []  # nothing started: every operation refused at its buffers
    anchor = "anchor over the fabric's limits" if preset == "thesis" else "ctx anchor over the fabric's limits"
    assert engine.fallbacks[anchor] >= 1 and engine.fallbacks["TSS over the fabric's limits"] >= 1
    if preset == "recommended":  # the predicted frames' value records
        assert engine.fallbacks["ctx slices over the fabric's limits"] >= 1
