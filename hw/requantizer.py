"""The requantizer: quint8 codes to N-bit codes, ``lanes`` codes per cycle (docs/requirements.md section 4).

The integer formula of :func:`temposplit.codec.quantize.requantize`, with k = 8 - N::

    z_N = (z8 + 2^(k-1)) >> k                      (z_N = z8 when k = 0)
    q_N = clamp(((q8 - z8 + 2^(k-1)) >> k) + z_N, 0, 2^N - 1)

Three stages (STAGES): the difference (q8 - z8 + 2^(k-1)) and the clamp's two tests, its
shift by k, then the offset and the clamp's select. The clamp is decided on q8 itself,
beside the difference:
with d = q8 - b, b = z8 - 2^(k-1) and s = d >> k = floor(d / 2^k),

    s + z_N < 0          <=>  q8 <  b - z_N * 2^k                 (lo)
    s + z_N > 2^N - 1    <=>  q8 >= b + (2^N - z_N) * 2^k          (hi)

so the second stage is one add and a select, not an add and then the compares on its sum
(tests/hw/test_requantizer.py checks the equivalence for every N, z8 and q8). The terms
that depend on the configuration only (k, z_N, b, 2^N - 1, then lo and hi from them) are
registers, copied into a register beside each lane, so they follow a change of NBITS or Z8
CONFIG_CYCLES later (the configuration is written before an operation starts). Throughput
one word (``lanes`` codes) per cycle. The word's side-band (``nbytes``, ``last``) passes
through unchanged. With ``bypass`` high the bytes pass unchanged (the symbols of motion
vectors, or codes that are already N-bit).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from temposplit.hw.register_slice import KEEP, FifoSlice

STAGES = 3  # cycles from a word's acceptance to its codes on the output
CONFIG_CYCLES = 5  # cycles from a change of n_bits or z8 to the lanes' copies of the terms


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
        N-bit codes (one byte each), from a two-word FIFO (:class:`FifoSlice`).
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
        # the configuration's terms (requantize_expr's), registered
        k = Signal(unsigned(3))
        half = Signal(unsigned(7))
        z_n = Signal(unsigned(9))
        base = Signal(signed(10))  # z8 - 2^(k-1)
        top = Signal(unsigned(9))
        lo = Signal(signed(10))  # q8 < lo: the code clamps to 0 (-128..0)
        hi = Signal(signed(10))  # q8 >= hi: the code clamps to 2^N - 1 (128..256)
        kk = Signal(unsigned(3))
        hh = Signal(unsigned(7))
        m.d.comb += [kk.eq(8 - self.n_bits), hh.eq((Const(1, 8) << kk) >> 1)]
        zk = Signal(signed(10))  # z_N << k
        lo_c = Signal(signed(10))
        m.d.comb += lo_c.eq(base - zk)
        # z_N for each k, (z8 + 2^(k-1)) >> k: an add of a constant and a fixed shift each,
        # registered beside k; z_N is then the one k picks (with z_N from the registered k
        # and half, an add and a variable shift, it was r34 seed 2's `rq.z_n`, 10.4 ns)
        zn_k = [Signal(unsigned(9), name=f"zn_k{j}") for j in range(8)]
        m.d.sync += [zn_k[j].eq((self.z8 + ((1 << j) >> 1)) >> j) for j in range(8)]
        m.d.sync += [
            k.eq(kk),
            half.eq(hh),
            # (z_N and the base from registers: from n_bits through the subtraction, the
            # shifts and the add into z_N it was r27 seed 2's `rq.z_n`, 11.0 ns)
            z_n.eq(Cat(*zn_k).word_select(k, 9)),
            base.eq(self.z8 - half),
            top.eq((Const(1, 9) << self.n_bits) - 1),
            # (from the registers above: a cycle later; lo and hi a cycle after that, so
            # that a subtraction, a shift and an add are not one path: r22 seed 1, `hi`,
            # 11.1 ns). hi = b + (2^N - z_N) 2^k = b - z_N 2^k + 2^(N+k) = lo + 256, as
            # N + k = 8 (no (2^N - z_N) << k of its own: r34 seed 2, `rq.span`, 9.9 ns)
            zk.eq(z_n << k),
            lo.eq(lo_c),
            hi.eq(lo_c + 256),
        ]
        # stage 1: the difference and the clamp's tests; stage 2: the shift; stage 3: the
        # offset and the clamp's select, into a two-word FIFO (a FifoSlice) whose words are
        # the output. A skid register beside stage 1 takes a word when stage 1 cannot, so
        # the input's ready is a register. Every wide register's enable is a function of
        # this module's own registers: the skid follows the input while empty, stages 1
        # and 2 load whenever they are free (their valids say whether the word is one),
        # the FIFO's words follow stage 3 while free. The consumers' ready -- an AND-OR of
        # readies from across the die -- reaches only the FIFO's pointers and counts
        # (before, it reached the output register's enables: r21 seed 1 on the ECP5 proxy,
        # 64 + 28 late inputs there and stage 1's lanes behind them, 13.4 ns).
        m.submodules.out = out = FifoSlice(word_layout(self.lanes), ready_copies=self.lanes)
        wiring.connect(m, out.o, wiring.flipped(self.o))

        # each lane's copy of the terms (no reset, no logic in front, kept apart: a
        # register beside the lane, not one register's fan-out into eight lanes' shifters,
        # compares and adders across the stage; r22 seed 1: the lanes' shift registers,
        # 60 late inputs at up to 11.7 ns)
        def copy(sig, name):
            c = Signal.like(sig, name=name, reset_less=True, attrs=KEEP)
            m.d.sync += c.eq(sig)
            return c

        lk = [copy(k, f"lane{i}_k") for i in range(self.lanes)]
        lbase = [copy(base, f"lane{i}_base") for i in range(self.lanes)]
        llo = [copy(lo, f"lane{i}_lo_at") for i in range(self.lanes)]
        lhi = [copy(hi, f"lane{i}_hi_at") for i in range(self.lanes)]
        lzn = [copy(z_n, f"lane{i}_zn") for i in range(self.lanes)]
        ltop = [copy(top, f"lane{i}_top") for i in range(self.lanes)]
        # stage 1 (``a``): the difference and the clamp's tests; stage 2 (``s1``): the
        # shift (r25 on the ECP5 proxy: the skid's select, the difference and the shift in
        # one stage, 11 cells, were the top's path at 12.3 ns)
        a_valid = Signal()
        a = Signal(word_layout(self.lanes))
        a_bypass = Signal()
        a_d = [Signal(signed(10), name=f"lane{i}_d") for i in range(self.lanes)]
        a_under = [Signal(name=f"lane{i}_alo") for i in range(self.lanes)]
        a_over = [Signal(name=f"lane{i}_ahi") for i in range(self.lanes)]
        s1_valid = Signal()
        s1 = Signal(word_layout(self.lanes))
        s1_bypass = Signal()
        shifted = [Signal(signed(10), name=f"lane{i}_s") for i in range(self.lanes)]
        under = [Signal(name=f"lane{i}_lo") for i in range(self.lanes)]  # the code clamps to 0
        over = [Signal(name=f"lane{i}_hi") for i in range(self.lanes)]  # ... to 2^N - 1
        sk_valid = Signal()
        sk = Signal(word_layout(self.lanes))
        sk_bypass = Signal()
        src = Signal(word_layout(self.lanes))  # the word stage 1 takes: the skid's, else the input's
        src_bypass = Signal()
        a_free = Signal()
        s1_free = Signal()
        take = Signal()
        m.d.comb += [
            s1_free.eq(~s1_valid | out.i.ready),
            a_free.eq(~a_valid | s1_free),
            self.i.ready.eq(~sk_valid),
            take.eq(self.i.valid & ~sk_valid),
            src.eq(Mux(sk_valid, sk, self.i.payload)),
            src_bypass.eq(Mux(sk_valid, sk_bypass, self.bypass)),
        ]
        # each lane's stage enables from copies of its own of the two stages' valids and of
        # the output FIFO's ready, updated as the originals are (one a_free into the
        # stages' 170 registers across the eight lanes was r37 seed 2's path, 10.4 ns)
        la_valid = [Signal(name=f"lane{i}_a_valid", attrs=KEEP) for i in range(self.lanes)]
        ls1_valid = [Signal(name=f"lane{i}_s1_valid", attrs=KEEP) for i in range(self.lanes)]
        with m.If(~sk_valid):
            m.d.sync += [sk.eq(self.i.payload), sk_bypass.eq(self.bypass)]
        with m.If(a_free):
            m.d.sync += [a_valid.eq(sk_valid | take), a.nbytes.eq(src.nbytes), a.last.eq(src.last)]
            m.d.sync += [a_bypass.eq(src_bypass), sk_valid.eq(0)]
        with m.Elif(take):
            m.d.sync += sk_valid.eq(1)
        with m.If(s1_free):
            m.d.sync += [s1_valid.eq(a_valid), s1.nbytes.eq(a.nbytes), s1.last.eq(a.last), s1_bypass.eq(a_bypass)]
        for i in range(self.lanes):
            l_s1_free = ~ls1_valid[i] | out.ready_copy[i]
            with m.If(~la_valid[i] | l_s1_free):
                q8 = src.data.word_select(i, 8)
                m.d.sync += [la_valid[i].eq(sk_valid | take), a.data.word_select(i, 8).eq(q8)]
                m.d.sync += [a_d[i].eq(q8 - lbase[i]), a_under[i].eq(q8 < llo[i]), a_over[i].eq(q8 >= lhi[i])]
            with m.If(l_s1_free):
                # (a_d is signed: an arithmetic shift)
                m.d.sync += [ls1_valid[i].eq(la_valid[i]), s1.data.word_select(i, 8).eq(a.data.word_select(i, 8))]
                m.d.sync += [shifted[i].eq(a_d[i] >> lk[i]), under[i].eq(a_under[i]), over[i].eq(a_over[i])]
        codes = []
        for i in range(self.lanes):
            v = Signal(8, name=f"lane{i}_v")  # (its low bits: in range it is 0 .. 2^N - 1)
            q = Signal(unsigned(8), name=f"lane{i}_q")
            m.d.comb += [v.eq(shifted[i] + lzn[i]), q.eq(Mux(under[i], 0, Mux(over[i], ltop[i], v)))]
            codes.append(q)
        m.d.comb += [
            out.i.valid.eq(s1_valid),
            out.i.p.data.eq(Mux(s1_bypass, s1.data, Cat(*codes))),
            out.i.p.nbytes.eq(s1.nbytes),
            out.i.p.last.eq(s1.last),
            out.clear.eq(0),
        ]
        return m
