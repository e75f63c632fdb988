"""amaranth.sim unit test of the stream register slices (RegisterSlice and its two-word FIFO
form, FifoSlice): every word once, in order, under random input gaps and output
back-pressure; ready and valid are registers; clear drops; the two are the same cycle for
cycle."""

import numpy as np
import pytest

pytest.importorskip("amaranth")
from amaranth.lib import data  # noqa: E402
from amaranth.sim import Simulator  # noqa: E402

from temposplit.hw import register_slice  # noqa: E402
from temposplit.hw.register_slice import FifoSlice, RegisterSlice  # noqa: E402

SLICES = pytest.mark.parametrize("cls", [RegisterSlice, FifoSlice])


def _run(cls, p_valid, p_ready, n_words=400, cycles=3000, seed=0, trace=None):
    dut = cls(16)
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << 16, n_words)
    got = []

    async def bench(ctx):
        sent = 0
        for _ in range(cycles):
            offer = sent < n_words and rng.random() < p_valid
            ctx.set(dut.i.valid, int(offer))
            ctx.set(dut.i.payload, int(words[sent]) if sent < n_words else 0)
            ctx.set(dut.o.ready, int(rng.random() < p_ready))
            *_, i_ready, o_valid, o_ready, o_data = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload
            )
            if trace is not None:
                trace.append((i_ready, o_valid, int(o_data) if o_valid else None))
            if o_valid and o_ready:
                got.append(int(o_data))
            if offer and i_ready:
                sent += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return words, got


@SLICES
@pytest.mark.parametrize("p_valid,p_ready", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.4), (0.7, 0.6), (0.3, 0.3)])
def test_every_word_once_in_order(cls, p_valid, p_ready):
    words, got = _run(cls, p_valid, p_ready, seed=int(10 * p_valid + 100 * p_ready))
    assert got == [int(w) for w in words]


@pytest.mark.parametrize("p_valid,p_ready", [(0.7, 0.6), (1.0, 0.3), (0.4, 0.9)])
def test_fifo_slice_is_the_register_slice_cycle_for_cycle(p_valid, p_ready):
    """The same traffic through both: the same readies, valids and output words every cycle."""
    traces = []
    for cls in (RegisterSlice, FifoSlice):
        traces.append([])
        _run(cls, p_valid, p_ready, n_words=200, cycles=800, seed=5, trace=traces[-1])
    assert traces[0] == traces[1]


def test_fifo_slice_struct_payload():
    """A layout's words pass whole (the select after the registers takes views)."""
    layout = data.StructLayout({"word": 12, "last": 1})
    dut = FifoSlice(layout)
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        for k in range(2):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"word": 100 + k, "last": k})
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        for _ in range(3):
            *_, v, w, la = await ctx.tick().sample(dut.o.valid, dut.o.p.word, dut.o.p.last)
            if v:
                got.append((w, la))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [(100, 0), (101, 1)]


@SLICES
def test_full_throughput_and_latency(cls):
    """A word a cycle passes with the output always ready, LATENCY cycles behind its input."""
    dut = cls(8)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for cyc in range(40):
            ctx.set(dut.i.valid, int(cyc < 32))
            ctx.set(dut.i.payload, cyc & 0xFF)
            await ctx.tick()
            seen.append((cyc, ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.o.payload)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert all(r for _, r, _, _ in seen), "the input was not ready every cycle"
    outs = [(c, d) for c, _, v, d in seen if v]
    assert [d for _, d in outs] == list(range(32))
    # the word sent in cycle c is on the output after the tick ending cycle c + LATENCY - 1
    assert outs[0][0] == register_slice.LATENCY - 1


@SLICES
def test_ready_and_valid_are_registers(cls):
    """No combinational path through the slice: the input's ready does not follow the
    output's ready, nor the output's valid the input's valid, within a cycle."""
    dut = cls(8)

    async def bench(ctx):
        # fill: the output stalls, two words go in (the output register, then the skid)
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        await ctx.tick().repeat(2)
        assert ctx.get(dut.i.ready) == 0
        ctx.set(dut.o.ready, 1)  # the output moves: ready comes back only after the edge
        assert ctx.get(dut.i.ready) == 0
        await ctx.tick()
        assert ctx.get(dut.i.ready) == 1
        # empty it, then offer a word: valid appears only after the edge
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.o.valid) == 0
        ctx.set(dut.i.valid, 1)
        assert ctx.get(dut.o.valid) == 0
        await ctx.tick()
        assert ctx.get(dut.o.valid) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@SLICES
def test_clear_drops_what_it_holds(cls):
    dut = cls(8)

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 7)
        await ctx.tick().repeat(2)
        assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.i.ready) == 0
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert ctx.get(dut.o.valid) == 0 and ctx.get(dut.i.ready) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_fifo_slice_ready_copies_follow_ready():
    """Every copy of ``i.ready`` (``ready_copy``) equals it in every cycle: under random
    traffic, back-pressure and clears."""
    dut = FifoSlice(8, ready_copies=3)
    rng = np.random.default_rng(3)
    seen = []

    async def bench(ctx):
        for _ in range(600):
            ctx.set(dut.i.valid, int(rng.random() < 0.7))
            ctx.set(dut.o.ready, int(rng.random() < 0.5))
            ctx.set(dut.clear, int(rng.random() < 0.03))
            *_, ready, copies = await ctx.tick().sample(dut.i.ready, dut.ready_copy)
            seen.append((ready, copies))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert {r for r, _ in seen} == {0, 1}, "the traffic never filled the slice"
    assert all(c == (0b111 if r else 0) for r, c in seen)
