"""amaranth.sim unit tests of the Huffman encoder (table, histogram, bit packer) against
the golden model, with random gaps on the input and back-pressure on the output."""

import random

import numpy as np
import pytest

pytest.importorskip("amaranth")
from amaranth.sim import Simulator  # noqa: E402

from temposplit.codec import entropy, huffman  # noqa: E402
from temposplit.hw.huffman_encoder import HuffmanEncoder  # noqa: E402


def run_encoder(symbols, lengths, lanes=8, seed=0, stall=0.3):
    dut = HuffmanEncoder(lanes)
    codes = huffman.canonical_codes(lengths)
    rng = random.Random(seed)
    out = bytearray()
    hist = []
    state = {"done": False, "bits": 0}

    async def producer(ctx):
        for s, ln in enumerate(lengths):
            ctx.set(dut.table_we, 1)
            ctx.set(dut.table_addr, s)
            ctx.set(dut.table_code, int(codes[s]))
            ctx.set(dut.table_length, int(ln))
            await ctx.tick()
        ctx.set(dut.table_we, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for i, sym in enumerate(symbols):
            while rng.random() < stall:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.p.symbol, int(sym))
            ctx.set(dut.i.p.last, int(i == len(symbols) - 1))
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while True:
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, int(ready))
            sampled = await ctx.tick().sample(dut.o.valid, dut.o.p.data, dut.o.p.keep, dut.o.p.last)
            _, _, valid, data, keep, last = sampled
            if ready and valid:
                raw = int(data).to_bytes(lanes, "little")
                out.extend(raw[j] for j in range(lanes) if (int(keep) >> j) & 1)
                if last:
                    break
        state["bits"] = ctx.get(dut.bits)
        for s in range(len(lengths)):  # (a synchronous read: the count a cycle after its address)
            ctx.set(dut.hist_addr, s)
            await ctx.tick()
            hist.append(ctx.get(dut.hist_data))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return bytes(out), state["bits"], np.array(hist)


@pytest.mark.parametrize(
    "size,alphabet,kind,lanes",
    [
        (1, 16, "random", 8),
        (5, 16, "skewed", 8),
        (64, 256, "skewed", 8),
        (200, 16, "random", 4),
        (300, 15, "random", 8),
        (257, 64, "flat", 16),
    ],
)
def test_encoder_matches_golden(size, alphabet, kind, lanes):
    rng = np.random.default_rng(size)
    if kind == "skewed":
        hist = (2.0 ** -np.arange(alphabet) * 1e9).astype(np.int64)
    elif kind == "flat":
        hist = np.ones(alphabet, np.int64)
    else:
        hist = rng.integers(0, 1000, alphabet)
    lengths = huffman.table_lengths(hist)
    symbols = rng.integers(0, alphabet, size)
    data, bits, hist_hw = run_encoder(symbols, lengths, lanes=lanes, seed=size)
    g_data, g_bits = entropy.encode("huffman", symbols, entropy.Alphabet(alphabet, 0, 8), lengths)
    assert bits == g_bits
    assert data == g_data
    np.testing.assert_array_equal(hist_hw, np.bincount(symbols, minlength=alphabet))


def test_serializer_sends_every_valid_byte_in_order_under_stalls():
    """Words of 1..8 valid bytes, random input gaps and output stalls: the bytes come out
    one per cycle at most, low byte first, each once, ``last`` on the last byte of the last
    word (the word and skid registers keep a word the stalled output could not take)."""
    from temposplit.hw.huffman_encoder import Serializer

    dut = Serializer(8)
    rnd = random.Random(3)
    words = [(bytes(rnd.randrange(256) for _ in range(8)), rnd.randint(1, 8)) for _ in range(200)]
    expected = [
        (b, int(i == len(words) - 1 and j == n - 1)) for i, (w, n) in enumerate(words) for j, b in enumerate(w[:n])
    ]
    got = []

    async def bench(ctx):
        k = 0
        for _ in range(5000):
            if len(got) == len(expected):
                break
            valid = k < len(words) and rnd.random() < 0.7
            if k < len(words):
                w, n = words[k]
                ctx.set(dut.i.p.data, int.from_bytes(w, "little"))
                ctx.set(dut.i.p.nbytes, n)
                ctx.set(dut.i.p.last, int(k == len(words) - 1))
            ctx.set(dut.i.valid, int(valid))
            ctx.set(dut.o.ready, int(rnd.random() < 0.7))
            *_, taken, o_valid, o_ready, symbol, last = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.p.symbol, dut.o.p.last
            )
            k += int(valid and taken)
            if o_valid and o_ready:
                got.append((symbol, last))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected
