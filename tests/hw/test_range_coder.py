"""amaranth.sim tests of the v2 coder's range encoder (hw/range_coder.py) against the
readable definition (codec/ctx_reference.py): random and skewed bins over the context
table, back-to-back bins of one context, bypass bins, carries through runs of 0xFF,
several sections in a row, random input gaps, output back-pressure and a reset in the
middle of a section."""

import random

import pytest

pytest.importorskip("amaranth")
from amaranth import ClockDomain, Module  # noqa: E402
from amaranth.sim import Simulator  # noqa: E402

from temposplit.codec import ctx_reference as ref  # noqa: E402
from temposplit.hw.range_coder import N_CONTEXTS, RangeEncoder  # noqa: E402


def reference_section(bins):
    enc = ref.RangeEncoder()
    contexts = [ref.Context() for _ in range(N_CONTEXTS)]
    for bit, ctx, bypass in bins:
        enc.bit(None if bypass else contexts[ctx], bit)
    return enc.finish()


def random_section(rng, n, kind):
    """(bit, ctx, bypass) bins: 'random' over the whole table; 'skewed' few contexts with
    strongly biased bins (long runs, extreme probabilities, carries); 'repeat' one context."""
    bins = []
    hot = [rng.randrange(N_CONTEXTS) for _ in range(4)]
    for _ in range(n):
        if kind == "random":
            bins.append((rng.randrange(2), rng.randrange(N_CONTEXTS), int(rng.random() < 0.1)))
        elif kind == "skewed":
            ctx = rng.choice(hot)
            bit = int(rng.random() < (0.02 if ctx == hot[0] else 0.97))
            bins.append((bit, ctx, int(rng.random() < 0.05)))
        else:
            bins.append((int(rng.random() < 0.3), hot[0], 0))
    return bins


def run(sections, seed=0, gaps=0.3, stall=0.3, reset_after=None):
    """Feed the sections' bins; returns the bytes of each section the DUT finished
    (``reset_after``: a reset after that many bins, the section cut there is dropped)."""
    dut = RangeEncoder()
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    rng = random.Random(seed)
    got = []
    expected_sections = len(sections)
    stats = {"ticks": 0}

    async def producer(ctx):
        count = 0
        for bins in sections:
            for j, (bit, c, bypass) in enumerate(bins):
                while rng.random() < gaps:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.p.bit, bit)
                ctx.set(dut.i.p.ctx, c)
                ctx.set(dut.i.p.bypass, bypass)
                ctx.set(dut.i.p.last, int(j == len(bins) - 1))
                while True:
                    _, _, ready = await ctx.tick().sample(dut.i.ready)
                    stats["ticks"] += 1
                    if ready:
                        break
                count += 1
                if reset_after is not None and count == reset_after:
                    ctx.set(dut.i.valid, 0)
                    ctx.set(cd.rst, 1)
                    await ctx.tick()
                    ctx.set(cd.rst, 0)
                    break
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cur = bytearray()
        while len(got) < expected_sections:
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, int(ready))
            _, _, rst, valid, data, last = await ctx.tick().sample(cd.rst, dut.o.valid, dut.o.p.data, dut.o.p.last)
            if rst:
                cur = bytearray()
                continue
            if ready and valid:
                cur.append(int(data))
                if last:
                    got.append(bytes(cur))
                    cur = bytearray()

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer, background=True)

    async def deadline(ctx):
        total = sum(len(s) for s in sections)
        for _ in range(8 * total + 2000):
            await ctx.tick()  # (a reset does not end the wait)

    sim.add_testbench(deadline)
    sim.run()
    run.ticks = stats["ticks"]
    return got


@pytest.mark.parametrize("kind", ["random", "skewed", "repeat"])
def test_range_encoder_matches_reference(kind):
    rng = random.Random(kind)
    sections = [random_section(rng, n, kind) for n in (1, 2, 37, 600, 1500)]
    got = run(sections, seed=len(kind))
    assert got == [reference_section(s) for s in sections]


def test_range_encoder_one_bin_per_cycle_without_stalls():
    rng = random.Random(5)
    sections = [random_section(rng, 3000, "skewed")]
    got = run(sections, gaps=0.0, stall=0.0)
    assert got == [reference_section(s) for s in sections]
    # one bin a cycle: the producer's ticks are the bins (the termination comes after)
    assert run.ticks == 3000, run.ticks


def test_range_encoder_reset_mid_section():
    rng = random.Random(9)
    cut = random_section(rng, 400, "random")
    after = [random_section(rng, n, "skewed") for n in (50, 700)]
    # the reset lands after 200 bins of the first section: that section never ends, the
    # next ones come out as if the encoder had just started
    got = run([cut, *after], seed=3, reset_after=200)
    assert got[-2:] == [reference_section(s) for s in after]
