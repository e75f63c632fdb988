"""The simulated side of ``sim/pynqsim.py``: the Verilated top as the PS sees it through an
AXI interconnect and an AXI DMA. Imported only inside the simulator.

One cocotb test, ``dma_server``, connects back to the pytest process (the protocol of
:mod:`temposplit.hw.simbridge`) and serves, until ``close``:

- ``("write", offset, value)`` / ``("read", offset)``: AXI4-Lite on ``s_axil`` (the GP0 path);
- ``("mm2s_start", data)``: the DMA's MM2S channel streams ``data`` into ``s_axis`` (TLAST on
  its last word, TKEEP on a partial one), with random idle cycles;
- ``("s2mm_start", )``: the S2MM channel takes one packet (up to TLAST) from ``m_axis``, with
  random back-pressure; TREADY is low while no receive is running, as on the DMA;
- ``("poll", channel, cycles)``: run up to ``cycles`` clocks or until the channel's transfer
  ends; answers ``("busy", None)``, ``("done", bytes received or None)`` or ``("idle", None)``;
- ``("reset_dma", )``: drop the running transfers (the DMA's soft reset).

Nothing of the DMA's registers lives here: ``pynqsim.AxiDmaModel`` keeps them in the
pytest process and calls these requests.
"""

from __future__ import annotations

import os
import random
from multiprocessing.connection import Client

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource


def pauses(rng: random.Random, busy: float):
    """Runs of idle cycles with probability ``busy`` (the DMA's gaps and HP-port stalls)."""
    while True:
        if rng.random() < busy:
            for _ in range(rng.randint(1, 4)):
                yield True
        else:
            for _ in range(rng.randint(4, 24)):
                yield False


@cocotb.test()
async def dma_server(dut):
    Clock(dut.clk, 10, unit="ns").start()
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_"), dut.clk, dut.rst)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_"), dut.clk, dut.rst)
    for log in (axil.write_if.log, axil.read_if.log, source.log, sink.log):
        log.setLevel("WARNING")
    seed = int(os.environ.get("TSP_SEED", "1"))
    busy = float(os.environ.get("TSP_DMA_STALLS", "0.2"))
    rng = random.Random(seed)
    if busy:
        source.set_pause_generator(pauses(random.Random(seed + 17), busy))
    sink.pause = True  # no receive running: TREADY low
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    async def send(data: bytes):
        await source.send(AxiStreamFrame(data))
        await source.wait()
        return None

    async def receive():
        if busy:
            sink.set_pause_generator(pauses(random.Random(rng.random()), busy))
        else:
            sink.pause = False
        frame = await sink.recv()
        sink.clear_pause_generator()
        sink.pause = True
        return bytes(frame.tdata)

    tasks = {}
    host, port = os.environ["TSP_BRIDGE_ADDR"].rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ["TSP_BRIDGE_KEY"]))
    try:
        while True:
            req = conn.recv()  # no simulated time passes while the program thinks
            op = req[0]
            if op == "close":
                break
            try:
                answer = None
                if op == "write":
                    await axil.write_dword(req[1], int(req[2]))
                elif op == "read":
                    answer = int(await axil.read_dword(req[1]))
                elif op == "mm2s_start":
                    tasks["mm2s"] = cocotb.start_soon(send(bytes(req[1])))
                elif op == "s2mm_start":
                    tasks["s2mm"] = cocotb.start_soon(receive())
                elif op == "poll":
                    task = tasks.get(req[1])
                    if task is None:
                        answer = ("idle", None)
                    else:
                        if not task.done():
                            await First(task.complete, ClockCycles(dut.clk, int(req[2])))
                        if task.done():
                            del tasks[req[1]]
                            answer = ("done", task.result())
                        else:
                            answer = ("busy", None)
                elif op == "reset_dma":
                    for task in tasks.values():
                        task.cancel()
                    tasks.clear()
                    sink.clear_pause_generator()
                    sink.pause = True
                else:
                    raise ValueError(f"unknown request {op!r}")
                conn.send(("ok", answer))
            except Exception as exc:  # noqa: BLE001 - sent back to the program
                conn.send(("error", repr(exc)))
    finally:
        conn.close()
