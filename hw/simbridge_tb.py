"""The cocotb side of :mod:`temposplit.hw.simbridge`: serve transport requests from a
synchronous program until it says ``close``. Imported only inside the simulator."""

from __future__ import annotations

import os
from multiprocessing.connection import Client

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamSink, AxiStreamSource

from temposplit.hw.driver import SimTransport


@cocotb.test()
async def bridge_server(dut):
    Clock(dut.clk, 10, unit="ns").start()
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_"), dut.clk, dut.rst)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_"), dut.clk, dut.rst)
    for log in (axil.write_if.log, axil.read_if.log, source.log, sink.log):
        log.setLevel("WARNING")
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    transport = SimTransport(axil, source, sink)
    host, port = os.environ["TSP_BRIDGE_ADDR"].rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ["TSP_BRIDGE_KEY"]))
    try:
        while True:
            req = conn.recv()  # blocks the simulator: no time passes while the program thinks
            if req[0] == "close":
                break
            try:
                conn.send(("ok", await getattr(transport, req[0])(*req[1:])))
            except Exception as exc:  # noqa: BLE001 - sent back to the program
                conn.send(("error", repr(exc)))
    finally:
        conn.close()
