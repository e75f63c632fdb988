"""The ECP5 proxy's harness: a design's ports inside the fabric, not on package pins.

On the PYNQ-Z2 the accelerator's ports are not pins: its AXI-Lite slave hangs off the
PS's GP0 interconnect and its two streams off the AXI DMA (hw/vivado.py's block design),
all of them logic in the programmable fabric, so its port registers sit where the placer
wants them, next to the logic they feed. Placed as it is on the ECP5 proxy, the top's 256
port bits would be package pins (256 of the LFE5U-85F's 365 I/O, spread around the whole
perimeter), and each port register would be pulled to its pin, away from the logic it
feeds: a placement the real part never sees.

:func:`fabric_ports` keeps the ports in the fabric: every input bit comes from a register
of its own that toggles with one input pin (``din``; a register per bit, each fed by
itself and marked keep, so synthesis neither merges the twins nor sees that they hold
the same value), every output bit goes into a register,
and the output registers are folded by exclusive-or, four bits a level and a register
after each, into one output pin (``dout``), so that every output bit has a load and no
fold is longer than one LUT. Its own logic is about one flip-flop per port bit and a LUT
per four output bits; its paths are register to register, one LUT deep, timed with the
rest. Only the clock, the reset, ``din`` and ``dout`` are pins (as before, the paths
from and to pins are not timed).
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, Value
from amaranth.lib.wiring import In

from temposplit.hw.register_slice import KEEP

FOLD = 4  # output bits per exclusive-or of the fold (one LUT4 on the ECP5)


def fabric_ports(component) -> tuple[Module, list[Signal]]:
    """``component`` (a ``wiring.Component``) with its ports driven and loaded by fabric
    registers; returns the harness and its two pins (``din``, ``dout``)."""
    m = Module()
    m.submodules.dut = component
    din = Signal(name="din")
    dout = Signal(name="dout")
    sinks = []
    for path, member, value in component.signature.flatten(component):
        inner = Value.cast(value)
        name = "_".join(str(p) for p in path)
        if member.flow == In:
            src = Signal(len(inner), name=f"src_{name}", attrs=KEEP)
            m.d.sync += src.eq(src ^ din.replicate(len(inner)))
            m.d.comb += inner.eq(src)
        else:
            sink = Signal(len(inner), name=f"sink_{name}")
            m.d.sync += sink.eq(inner)
            sinks.append(sink)
    if not sinks:
        raise ValueError("the component has no output port to load")
    bits = Cat(*sinks)
    level = 0
    while len(bits) > 1:
        folded = Signal(-(-len(bits) // FOLD), name=f"fold{level}")
        m.d.sync += [folded[k].eq(bits[FOLD * k : FOLD * (k + 1)].xor()) for k in range(len(folded))]
        bits, level = folded, level + 1
    m.d.comb += dout.eq(bits[0])
    return m, [din, dout]
