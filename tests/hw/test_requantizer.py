"""amaranth.sim unit test of the requantizer: every (q8, z8) against the golden model."""

import numpy as np
import pytest

pytest.importorskip("amaranth")
from amaranth.sim import Simulator  # noqa: E402

from temposplit.codec.quantize import requantize  # noqa: E402
from temposplit.hw import requantizer  # noqa: E402
from temposplit.hw.requantizer import Requantizer  # noqa: E402


def test_clamp_decided_on_q8_equals_the_clamp_of_the_sum():
    """The RTL's clamp tests (q8 < lo, q8 >= hi, the module's docstring) against the
    formula's clamp of s + z_N, for every N, z8 and q8."""
    q8 = np.arange(256)
    for n in range(2, 9):  # (N is 2..8, codec.quantize)
        k, top = 8 - n, (1 << n) - 1
        half = (1 << k) >> 1
        for z8 in range(256):
            zn, base = (z8 + half) >> k, z8 - half
            lo, hi = base - (zn << k), base + ((top + 1 - zn) << k)
            v = ((q8 - base) >> k) + zn
            want = np.clip(v, 0, top)
            got = np.where(q8 < lo, 0, np.where(q8 >= hi, top, v))
            np.testing.assert_array_equal(got, want, err_msg=f"N={n} z8={z8}")
            np.testing.assert_array_equal(want, requantize(q8.astype(np.uint8), z8, n))


@pytest.mark.parametrize("n_bits", [2, 3, 4, 5, 6, 7, 8])
def test_requantizer_matches_golden(n_bits):
    dut = Requantizer(lanes=8)
    rng = np.random.default_rng(n_bits)
    z8s = [0, 1, 127, 128, 200, 254, 255] + list(rng.integers(0, 256, 3))
    q8 = np.arange(256, dtype=np.uint8)
    got = {}

    async def bench(ctx):
        ctx.set(dut.n_bits, n_bits)
        ctx.set(dut.o.ready, 1)
        for z8 in z8s:
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.z8, int(z8))
            # the pipeline drains, the configuration settles
            await ctx.tick().repeat(max(requantizer.STAGES, requantizer.CONFIG_CYCLES) + 1)
            out = []
            w = 0
            for _ in range(32 + 2 * requantizer.STAGES):  # a word a cycle in, its codes STAGES cycles later
                if len(out) == q8.size:
                    break
                ctx.set(dut.i.valid, int(w < 32))
                ctx.set(dut.i.p.data, int.from_bytes(q8[8 * w : 8 * w + 8].tobytes(), "little") if w < 32 else 0)
                *_, taken, valid, data = await ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.p.data)
                w += int(w < 32 and taken)
                if valid:
                    out += list(int(data).to_bytes(8, "little"))
            got[int(z8)] = out

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for z8 in z8s:
        expected = requantize(q8, int(z8), n_bits)
        np.testing.assert_array_equal(np.array(got[int(z8)], np.uint8), expected, err_msg=f"z8={z8}")


def test_requantizer_keeps_every_word_under_back_pressure():
    """Random input gaps and output stalls: every word comes out once, in order, requantized
    (the skid register beside stage 1 holds a word the stalled output could not take)."""
    import random

    dut = Requantizer(lanes=8)
    rnd = random.Random(5)
    n_bits, z8 = 4, 117
    words = [bytes(rnd.randrange(256) for _ in range(8)) for _ in range(300)]
    got = []

    async def bench(ctx):
        ctx.set(dut.n_bits, n_bits)
        ctx.set(dut.z8, z8)
        await ctx.tick().repeat(requantizer.CONFIG_CYCLES)
        w = 0
        for _ in range(3000):
            if len(got) == len(words):
                break
            valid = w < len(words) and rnd.random() < 0.7
            ctx.set(dut.i.valid, int(valid))
            ctx.set(dut.i.p.data, int.from_bytes(words[w], "little") if w < len(words) else 0)
            ctx.set(dut.o.ready, int(rnd.random() < 0.6))
            *_, taken, o_valid, o_ready, data = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.p.data
            )
            w += int(valid and taken)
            if o_valid and o_ready:
                got.append(int(data).to_bytes(8, "little"))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = [requantize(np.frombuffer(x, np.uint8), z8, n_bits).tobytes() for x in words]
    assert got == expected
