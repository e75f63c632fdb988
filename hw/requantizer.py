"""The requantizer: quint8 codes to N-bit codes, ``lanes`` codes per cycle (docs/requirements.md section 4).

The integer formula of :func:`temposplit.codec.quantize.requantize`, with k = 8 - N::

    z_N = (z8 + 2^(k-1)) >> k                      (z_N = z8 when k = 0)
    q_N = clamp(((q8 - z8 + 2^(k-1)) >> k) + z_N, 0, 2^N - 1)

Latency one cycle, throughput one word (``lanes`` codes) per cycle. The word's side-band
(``nbytes``, ``last``) passes through unchanged. With ``bypass`` high the bytes pass
unchanged (the symbols of motion vectors, or codes that are already N-bit).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def word_layout(lanes: int) -> data.StructLayout:
    """A stream word: ``lanes`` bytes (byte i in bits 8i..8i+7), how many are valid, last flag."""
    return data.StructLayout({"data": unsigned(8 * lanes), "nbytes": unsigned(5), "last": unsigned(1)})


def requantize_expr(m: Module, q8, z8, n_bits, name: str = "q"):
    """Amaranth expression of one lane's N-bit code (the spec's formula, comb logic)."""
    k = Signal(unsigned(3), name=f"{name}_k")
    half = Signal(unsigned(7), name=f"{name}_half")
    z_n = Signal(unsigned(9), name=f"{name}_zn")
    d = Signal(signed(10), name=f"{name}_d")
    s = Signal(signed(10), name=f"{name}_s")
    v = Signal(signed(11), name=f"{name}_v")
    top = Signal(unsigned(9), name=f"{name}_top")
    out = Signal(unsigned(8), name=f"{name}_out")
    m.d.comb += [
        k.eq(8 - n_bits),
        half.eq((Const(1, 8) << k) >> 1),
        z_n.eq((z8 + half) >> k),
        d.eq(q8 - z8 + half),
        s.eq(d >> k),  # arithmetic: d is signed
        v.eq(s + z_n),
        top.eq((Const(1, 9) << n_bits) - 1),
    ]
    with m.If(v < 0):
        m.d.comb += out.eq(0)
    with m.Elif(v > top):
        m.d.comb += out.eq(top)
    with m.Else():
        m.d.comb += out.eq(v)
    return out


class Requantizer(wiring.Component):
    """quint8 -> N-bit codes on a stream of ``lanes``-byte words.

    Parameters
    ----------
    lanes : int
        Codes per word (and per cycle).

    Attributes
    ----------
    i : In(stream of :func:`word_layout`)
        quint8 codes, from the originator.
    o : Out(stream of :func:`word_layout`)
        N-bit codes (one byte each), registered.
    n_bits, z8 : In
        Configuration, stable during an operation (N in 2..8, the input's zero point).
    bypass : In(1)
        Pass the bytes unchanged.
    """

    def __init__(self, lanes: int = 8):
        if lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes}")
        self.lanes = lanes
        super().__init__(
            {
                "i": In(stream.Signature(word_layout(lanes))),
                "o": Out(stream.Signature(word_layout(lanes))),
                "n_bits": In(4),
                "z8": In(8),
                "bypass": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        codes = [
            requantize_expr(m, self.i.p.data.word_select(i, 8), self.z8, self.n_bits, name=f"lane{i}")
            for i in range(self.lanes)
        ]
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.p.data.eq(Mux(self.bypass, self.i.p.data, Cat(*codes))),
                self.o.p.nbytes.eq(self.i.p.nbytes),
                self.o.p.last.eq(self.i.p.last),
            ]
        return m
