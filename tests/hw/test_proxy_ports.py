"""The ECP5 proxy's harness (hw/proxy_ports.py): a design's ports inside the fabric, only
the clock, the reset, ``din`` and ``dout`` on pins; every input bit a register of its own
toggled by ``din``, every output bit folded by exclusive-or into ``dout`` through
registers (amaranth.sim), and an engine alone wrapped the same way."""

import re

import numpy as np
import pytest

pytest.importorskip("amaranth")
from amaranth import Cat, Module  # noqa: E402
from amaranth.back import verilog  # noqa: E402
from amaranth.lib import wiring  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402
from amaranth.sim import Simulator  # noqa: E402

from temposplit.hw import synth  # noqa: E402
from temposplit.hw.proxy_ports import FOLD, fabric_ports  # noqa: E402


class _Toy(wiring.Component):
    a: In(3)
    b: In(1)
    y: Out(5)
    z: Out(2)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.y.eq(Cat(self.a, self.b, ~self.a[0])), self.z.eq(Cat(self.a[1], self.b))]
        return m


def _pins(text, module):
    """The ports of ``module`` in Verilog ``text``, sorted."""
    header = re.search(rf"module {module}\((.*?)\);", text, re.S).group(1)
    return sorted(p.strip() for p in header.split(","))


def test_only_the_clock_reset_din_and_dout_are_pins():
    harness, pins = fabric_ports(_Toy())
    text = verilog.convert(harness, ports=pins, name="h", emit_src=False)
    assert _pins(text, "h") == ["clk", "din", "dout", "rst"]


def test_inputs_toggle_with_din_and_dout_is_the_outputs_parity():
    """Each input bit flips on a cycle after ``din`` was 1; ``dout`` is the parity of every
    output bit, a register and one register per fold level later."""
    toy = _Toy()
    harness, (din, dout) = fabric_ports(toy)
    n_out = 7
    levels = 0
    while n_out > 1:
        n_out, levels = -(-n_out // FOLD), levels + 1
    latency = 1 + levels
    rng = np.random.default_rng(3)
    seen = []

    async def bench(ctx):
        ones = 0
        for _ in range(40):
            bit = int(rng.random() < 0.5)
            ctx.set(din, bit)
            *_, a, b, y, z, out = await ctx.tick().sample(toy.a, toy.b, toy.y, toy.z, dout)
            expected = 0b111 if ones % 2 else 0
            assert (a, b) == (expected, expected & 1)
            seen.append(((bin(y).count("1") + bin(z).count("1")) % 2, out))
            ones += bit

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    parities = [p for p, _ in seen]
    outs = [o for _, o in seen]
    assert outs[latency:] == parities[:-latency]
    assert len(set(parities)) == 2  # the check saw both parities


def test_engine_alone_has_a_register_on_every_port():
    """``--engine``: each of the engine's inputs is a register of the harness and each of its
    outputs loads one, so that its paths from configuration and streams are timed as in the
    top (neither from nor to I/O pins)."""
    from temposplit.hw.regmap import Params
    from temposplit.hw.requantizer import Requantizer

    engine = Requantizer(8)
    text = synth.engine_verilog("requantizer", Params(), "engine_requantizer")
    top = text[text.index("module engine_requantizer(") :]
    top = top[: top.index("endmodule")]
    regs = set(re.findall(r"^\s*reg (?:\[\d+:0\] )?(\S+)", top, re.M))
    instance = re.search(r"dut \((.*?)\);", top, re.S).group(1)
    nets = dict(re.findall(r"\.(\w+)\(([^)]*?)\s*\)", instance))
    for path, member, _ in engine.signature.flatten(engine):
        name = "__".join(map(str, path))
        if member.flow == In:
            assert nets[name] in regs, path
        else:
            assert f"sink_{'_'.join(map(str, path))}" in regs, path


def test_the_proxy_places_an_engine_inside_the_harness():
    """The ECP5 proxy's Verilog (``synth.ecp5_verilog``, the same for the top) has the
    harness's four pins only."""
    from temposplit.hw.regmap import Params

    text = synth.ecp5_verilog(Params(), "engine_requantizer", "requantizer")
    assert _pins(text, "engine_requantizer") == ["clk", "din", "dout", "rst"]
