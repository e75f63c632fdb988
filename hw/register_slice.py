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

from amaranth import Cat, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

LATENCY = 1  # cycles from the input's handshake to the word on the output
KEEP = {"keep": 1}  # a register copy that synthesis must not merge with its twins (hw/synth.py)
SELECT_BITS = 16  # bits of a FifoSlice's word that one copy of its read pointer selects


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


class FifoSlice(RegisterSlice):
    """A register slice as a two-word FIFO: the same ports, throughput, latency and
    registered ``i.ready`` / ``o.valid`` as :class:`RegisterSlice`, cycle for cycle, but
    the consumer's ready reaches only the FIFO's pointers and counts, never the words'
    enables.

    In a RegisterSlice the output word's enable is ``~o.valid | o.ready``: a consumer's
    ready, from wherever the consumer is placed, fans out into every bit of the word (on the
    ECP5 proxy such enables were among the top's largest groups of late inputs, r21: CTX's
    input slice, 63 at 11.4 ns). Here the two words are written in turn, the one at the
    write pointer following the input while it is free (an enable of two registers), and
    ``o.payload`` is the word at the read pointer: a 2:1 select after the registers, the
    pointer kept in a copy per SELECT_BITS bits of the word (one register into every select
    of a 64-bit word, placed by its consumers across the die, was the top's path on the ECP5
    proxy: r26 seed 1, CTX's input slice's pointer into a staging register, 13.0 ns, all
    routing but one cell)."""

    def __init__(self, payload_shape, ready_copies: int = 0):
        """``ready_copies``: that many copies of ``i.ready`` (``ready_copy``), each a register
        of its own, kept apart, for a producer whose stages' enables follow the slice's
        ready: one register's fan-out into many enables, placed across the die, is a long
        route (r37 seed 2 on the ECP5 proxy: the requantizer's stage enables, 10.4 ns)."""
        if ready_copies < 0:
            self._MustUse__used = True  # (refused: not an unused elaboratable)
            raise ValueError(f"ready_copies must be 0 or more, not {ready_copies}")
        self.ready_copies = ready_copies
        members = {"i": In(stream.Signature(payload_shape)), "o": Out(stream.Signature(payload_shape)), "clear": In(1)}
        if ready_copies:
            members["ready_copy"] = Out(ready_copies)
        wiring.Component.__init__(self, members)

    def elaborate(self, platform):
        m = Module()
        words = [Value.cast(Signal.like(self.i.payload, name=f"word{k}")) for k in range(2)]
        width = len(words[0])
        wp = Signal()  # the word the next input goes into
        # the word on the output: its pointer, a copy per SELECT_BITS bits
        rps = [Signal(name=f"rp{j}" if j else "rp", attrs=KEEP) for j in range(max(1, -(-width // SELECT_BITS)))]
        full = Signal()  # both words held (o.valid: at least one)
        take_in = Signal()
        take_out = Signal()
        m.d.comb += [
            self.i.ready.eq(~full),
            take_in.eq(self.i.valid & ~full),
            take_out.eq(self.o.valid & self.o.ready),
            self.o.payload.eq(
                Cat(
                    *(
                        Mux(
                            r,
                            words[1][SELECT_BITS * j : SELECT_BITS * (j + 1)],
                            words[0][SELECT_BITS * j : SELECT_BITS * (j + 1)],
                        )
                        for j, r in enumerate(rps)
                    )
                )
            ),
        ]
        for k in range(2):
            with m.If(~full & (wp == k)):  # (free: it follows the input)
                m.d.sync += words[k].eq(self.i.payload)
        with m.If(take_in):
            m.d.sync += wp.eq(~wp)
        with m.If(take_out):
            m.d.sync += [r.eq(~r) for r in rps]
        # (copies of ``full``, updated as it is: their complements are ``ready_copy``)
        fulls = [Signal(name=f"full_c{j}", attrs=KEEP) for j in range(self.ready_copies)]
        if fulls:
            m.d.comb += self.ready_copy.eq(~Cat(*fulls))
        with m.If(take_in & ~take_out):
            m.d.sync += [self.o.valid.eq(1), full.eq(self.o.valid), *(f.eq(self.o.valid) for f in fulls)]
        with m.Elif(take_out & ~take_in):
            m.d.sync += [full.eq(0), self.o.valid.eq(full), *(f.eq(0) for f in fulls)]
        with m.If(self.clear):
            m.d.sync += [self.o.valid.eq(0), full.eq(0), wp.eq(0), *(r.eq(0) for r in rps), *(f.eq(0) for f in fulls)]
        return m
