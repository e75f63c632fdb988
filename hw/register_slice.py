"""A stream register slice: a full-throughput skid buffer between two streams.

The output's valid and payload are registers, and so is the input's ready (it is low only
while the skid register holds a word), so no combinational path crosses the slice in either
direction: what drives the input and what takes the output are timed apart. The top puts
one on each AXI4-Stream port (docs/fabric.md, "The ports' register slices"), as an AXI4-Stream
register slice would, so the DMA's and the engines' handshakes meet only in registers; each
range coder's bytes leave through one.

A word taken while the output stalls waits in the skid register and goes out first when the
output moves; a word a cycle passes with the output ready (LATENCY cycles, input to output).
``clear`` drops the words the slice holds (the top clears its input slice at START, so words
left over from an earlier, over-long input never reach an operation).
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

LATENCY = 1  # cycles from the input's handshake to the word on the output


class RegisterSlice(wiring.Component):
    """A skid buffer of ``payload_shape`` words (``i`` in, ``o`` out, ``clear`` drops both)."""

    def __init__(self, payload_shape):
        super().__init__(
            {
                "i": In(stream.Signature(payload_shape)),
                "o": Out(stream.Signature(payload_shape)),
                "clear": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.i.payload)
        out_free = Signal()
        m.d.comb += [out_free.eq(~self.o.valid | self.o.ready), self.i.ready.eq(~skid_valid)]
        # (the skid register follows the input while it is empty, so its enable is its own
        # valid, not the input's valid and the output's ready)
        with m.If(~skid_valid):
            m.d.sync += skid.eq(self.i.payload)
        with m.If(out_free):
            with m.If(skid_valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += skid_valid.eq(1)
        with m.If(self.clear):
            m.d.sync += [self.o.valid.eq(0), skid_valid.eq(0)]
        return m
