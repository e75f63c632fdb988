"""amaranth.sim unit tests of the histogram pass's counter (:class:`WordHistogram`): every
lane counted a cycle, against ``np.bincount``, with random gaps on the input; runs of
equal symbols in a lane (the forwarding), the last word's padding, passes one after
another (the clear), and its cycles against the module's constants."""

import random

import numpy as np
import pytest

pytest.importorskip("amaranth")
from amaranth.sim import Simulator  # noqa: E402

from temposplit.hw import histogram as H  # noqa: E402
from temposplit.hw.histogram import WordHistogram  # noqa: E402


def run_passes(passes, lanes=8, seed=0, gap=0.3, size=256):
    """Each pass (a uint8 array) through the counter; its histogram read back after ``done``,
    and the cycles from ``start`` to ``done``."""
    dut = WordHistogram(lanes, size=size)
    rng = random.Random(seed)
    results = []

    async def bench(ctx):
        for symbols in passes:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            words = [symbols[k : k + lanes] for k in range(0, len(symbols), lanes)]
            for n, w in enumerate(words):
                while rng.random() < gap:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                    cycles += 1
                ctx.set(dut.i.valid, 1)
                ctx.set(
                    dut.i.p.data, int.from_bytes(bytes(w) + bytes([rng.randrange(256)] * (lanes - len(w))), "little")
                )
                ctx.set(dut.i.p.nbytes, len(w))
                ctx.set(dut.i.p.last, int(n == len(words) - 1))
                while True:
                    _, _, ready = await ctx.tick().sample(dut.i.ready)
                    cycles += 1
                    if ready:
                        break
            ctx.set(dut.i.valid, 0)
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            hist = []
            for s in range(size):  # (a synchronous read: the count a cycle after its address)
                ctx.set(dut.rd_addr, s)
                await ctx.tick()
                hist.append(ctx.get(dut.rd_data))
            results.append((np.array(hist), cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("lanes", [8, 4, 1, 3])
def test_counts_match_bincount_under_gaps(lanes):
    rng = np.random.default_rng(lanes)
    passes = [
        rng.integers(0, 16, 1000).astype(np.uint8),  # N = 4 codes
        np.full(37, 5, np.uint8),  # one symbol: every lane forwards a cycle after another
        rng.integers(0, 256, 257).astype(np.uint8),  # a padded last word
        np.repeat(rng.integers(0, 4, 60), 7).astype(np.uint8),  # runs across words and lanes
        np.array([255], np.uint8),
    ]
    for symbols, (hist, _) in zip(passes, run_passes(passes, lanes, seed=lanes), strict=True):
        np.testing.assert_array_equal(hist, np.bincount(symbols, minlength=256))


def test_a_word_a_cycle_and_the_constants():
    lanes = 8
    rng = np.random.default_rng(3)
    passes = [rng.integers(0, 32, n).astype(np.uint8) for n in (8, 800, 8 * 1000 + 3)]
    for symbols, (hist, cycles) in zip(passes, run_passes(passes, lanes, gap=0.0), strict=True):
        np.testing.assert_array_equal(hist, np.bincount(symbols, minlength=256))
        words = -(-symbols.size // lanes)
        # start, the clear, a word a cycle, the input and count stages, the fold, done
        want = 1 + H.CLEAR_CYCLES + words + H.INPUT_STAGES + H.COUNT_STAGES - 1 + H.FOLD_CYCLES
        assert cycles == want, (symbols.size, cycles, want)


def test_bank_widths():
    from amaranth.hdl import Fragment

    dut = WordHistogram(8)
    Fragment.get(dut, None)
    assert dut.bank_width == 24 and dut.sum_width == 26  # 2^23 a lane, 2^26 - 1 in all
