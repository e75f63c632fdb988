"""cocotb testbenches of the accelerator's top (Verilator), driven through the driver.

Every test runs the driver's :class:`~temposplit.hw.driver.AsyncAccelerator` over a
:class:`~temposplit.hw.driver.SimTransport` (cocotbext-axi's AXI-Lite master and
AXI-Stream source/sink), so the same register and stream sequence that the board will
run is what is checked here, bit for bit against the golden model
(:mod:`temposplit.codec`). Idle gaps on the input and back-pressure on the output are
random unless a test says otherwise; TSP_SEED picks the seed.

Run through pytest (``sim/test_accel.py``, ``test_accel_real.py``, ``test_accel_band.py``),
which build the Verilog once per design.
"""

from __future__ import annotations

import os
import random

import cocotb
import numpy as np
import stimulus
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamSink, AxiStreamSource

from temposplit.codec import entropy, huffman
from temposplit.codec.motion import three_step_search
from temposplit.codec.quantize import centred, requantize, zero_point_n
from temposplit.hw import cyclemodel, regmap
from temposplit.hw.driver import AsyncAccelerator, SimTransport

SEED = int(os.environ.get("TSP_SEED", "1"))


def pauses(rng: random.Random, busy: float):
    """An endless pause pattern: runs of idle cycles with probability ``busy``."""
    while True:
        if rng.random() < busy:
            for _ in range(rng.randint(1, 6)):
                yield True
        else:
            for _ in range(rng.randint(1, 12)):
                yield False


class TB:
    def __init__(self, dut, stalls=True, seed=SEED):
        self.dut = dut
        self.log = dut._log
        Clock(dut.clk, 10, unit="ns").start()
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_"), dut.clk, dut.rst)
        self.accel = AsyncAccelerator(SimTransport(self.axil, self.source, self.sink))
        self.rng = np.random.default_rng(seed)
        self.stalls(stalls, seed)

    def stalls(self, on: bool, seed: int = SEED):
        if on:
            self.source.set_pause_generator(pauses(random.Random(seed), 0.3))
            self.sink.set_pause_generator(pauses(random.Random(seed + 1), 0.3))
        else:
            self.source.clear_pause_generator()
            self.sink.clear_pause_generator()

    async def reset(self, cycles=4):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def interrupt(self, operation, cycles: int, running: bool = True):
        """Start ``operation`` (a coroutine), reset the accelerator ``cycles`` cycles later
        (``running``: asserting it has not finished), and empty the stream models."""
        task = cocotb.start_soon(operation)
        await ClockCycles(self.dut.clk, cycles)
        if running:
            assert not task.done(), "the operation ended before the reset"
        task.cancel()
        await self.reset()
        self.source.clear()
        self.sink.clear()

    def check_idle(self):
        assert self.sink.empty(), "the output stream holds data nobody asked for"


# ----------------------------------------------------------------------------- golden helpers


def golden_anchor(q8, z8, n_bits, lengths):
    codes = requantize(q8, z8, n_bits).reshape(-1)
    alpha = entropy.Alphabet.anchor(n_bits, zero_point_n(z8, n_bits))
    data, bits = entropy.encode("huffman", codes, alpha, lengths)
    return data, bits, np.bincount(codes, minlength=1 << n_bits)


async def check_anchor(tb, q8, z8, n_bits, lengths, store_ref=False):
    await tb.accel.load_table(lengths)
    res = await tb.accel.encode_anchor(q8, z8=z8, n_bits=n_bits, store_ref=store_ref)
    data, bits, hist = golden_anchor(q8, z8, n_bits, lengths)
    assert res.bits == bits, f"bit count {res.bits} != golden {bits}"
    assert res.data == data, f"section differs from byte {_first_diff(res.data, data)}"
    np.testing.assert_array_equal(res.histogram, hist)
    return res


async def check_motion(tb, ref_q8, ref_z8, cur_q8, cur_z8, n_bits, block, search, load="encode"):
    """Reference in (by coding it as an anchor with STORE_REF, or LOAD_REF), TSS, compare."""
    ref_codes = requantize(ref_q8, ref_z8, n_bits)
    zn = zero_point_n(ref_z8, n_bits)
    if load == "encode":
        lengths = huffman.table_lengths(np.bincount(ref_codes.reshape(-1), minlength=1 << n_bits))
        await check_anchor(tb, ref_q8, ref_z8, n_bits, lengths, store_ref=True)
    elif load == "requant":
        got = await tb.accel.requantize(ref_q8, z8=ref_z8, n_bits=n_bits, store_ref=True)
        np.testing.assert_array_equal(got, ref_codes)
    else:
        await tb.accel.load_reference(ref_codes, zn)
    mvs, costs = await tb.accel.motion(cur_q8, z8=cur_z8, n_bits=n_bits, zn_ref=zn, block=block, search=search)
    ref_c = centred(ref_codes, ref_z8, n_bits)
    cur_c = cur_q8.astype(np.int16) - np.int16(cur_z8)
    g_mvs, g_costs = three_step_search(ref_c, cur_c, block, search)
    np.testing.assert_array_equal(mvs, g_mvs)
    np.testing.assert_array_equal(costs, g_costs)
    return mvs, tb.accel.ops.last_cycles


def _first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


# ----------------------------------------------------------------------------- tests


@cocotb.test()
async def test_registers(dut):
    tb = TB(dut, stalls=False)
    await tb.reset()
    params = await tb.accel.probe()
    assert params.lanes == regmap.LANES
    for reg in regmap.REGISTERS:
        if reg.access != "rw" or reg.name in ("TABLE_INDEX", "HIST_INDEX"):
            continue
        value = (0x5A5A5A5A ^ reg.offset) & ((1 << reg.width) - 1)
        await tb.axil.write_dword(reg.offset, value)
        got = await tb.axil.read_dword(reg.offset)
        assert got == value, f"{reg.name}: wrote {value:#x}, read {got:#x}"
    status = regmap.unpack("STATUS", await tb.axil.read_dword(regmap.REG["STATUS"].offset))
    assert status == {"BUSY": 0, "DONE": 0}


@cocotb.test()
async def test_requantize(dut):
    tb = TB(dut)
    await tb.reset()
    for size in (1, 7, 8, 9, 255, 1000):
        for n_bits in (2, 4, 7, 8):
            z8 = int(tb.rng.integers(0, 256))
            q8 = tb.rng.integers(0, 256, size, dtype=np.uint8)
            got = await tb.accel.requantize(q8, z8=z8, n_bits=n_bits)
            np.testing.assert_array_equal(got, requantize(q8, z8, n_bits), err_msg=f"size {size} N {n_bits} z8 {z8}")
    tb.check_idle()


class OverlongTransport(SimTransport):
    """The testbench's transport, sending ``extra`` after each operation's input."""

    extra = b""

    async def stream(self, data, max_out):
        return await super().stream(bytes(data) + self.extra, max_out)


@cocotb.test()
async def test_overlong_input(dut):
    """Words sent past COUNT never reach the next operation: the input's register slice is
    cleared at START (docs/fabric.md, "The ports' register slices"). A REQUANT is sent its
    codes and then 3, 8 or 16 bytes more, which the slice takes while the operation runs;
    the next REQUANT must return its own codes only. (No stalls: every extra byte enters
    the slice before the operation ends, so none is left in the stream model.)"""
    tb = TB(dut, stalls=False)
    await tb.reset()
    overlong = OverlongTransport(tb.axil, tb.source, tb.sink)
    sloppy = AsyncAccelerator(overlong)
    for size, extra in ((61, 3), (64, 8), (40, 16)):
        q8 = tb.rng.integers(0, 256, size, dtype=np.uint8)
        z8 = int(tb.rng.integers(0, 256))
        overlong.extra = tb.rng.integers(0, 256, extra, dtype=np.uint8).tobytes()
        got = await sloppy.requantize(q8, z8=z8, n_bits=4)
        np.testing.assert_array_equal(got, requantize(q8, z8, 4))
        await ClockCycles(dut.clk, 20)
        assert tb.source.empty(), "the DUT did not take every extra byte while busy"
        nxt = tb.rng.integers(0, 256, 24, dtype=np.uint8)
        got = await tb.accel.requantize(nxt, z8=z8, n_bits=4)
        np.testing.assert_array_equal(got, requantize(nxt, z8, 4), err_msg=f"after {extra} extra bytes")
    tb.check_idle()


@cocotb.test()
async def test_encode_random(dut):
    """Anchor sections: random maps, tables from another map (the one-pass policy), skewed
    tables (15-bit codes), lengths around the word size."""
    tb = TB(dut)
    await tb.reset()
    cases = [
        (1, 4, "random"),
        (7, 8, "flat"),
        (8, 2, "random"),
        (9, 8, "skewed"),
        (63, 4, "skewed"),
        (64, 6, "random"),
        (65, 8, "random"),
        (1000, 4, "random"),
        (3001, 8, "skewed"),
        (4096, 5, "random"),
    ]
    for size, n_bits, kind in cases:
        q8, z8 = stimulus.random_map(tb.rng, 1, size, 1)
        lengths = stimulus.table_for(tb.rng, 1 << n_bits, kind)
        await check_anchor(tb, q8.reshape(-1), z8, n_bits, lengths)
    # symbols without requantization (the motion-vector alphabet)
    for p in (3, 7, 15):
        sym = np.clip(np.round(tb.rng.normal(p, p / 3, 500)), 0, 2 * p).astype(np.uint8)
        lengths = stimulus.table_for(tb.rng, 2 * p + 1)
        await tb.accel.load_table(lengths)
        res = await tb.accel.encode(sym, 2 * p + 1)
        data, bits = entropy.encode("huffman", sym, entropy.Alphabet.motion(p), lengths)
        assert (res.data, res.bits) == (data, bits)
        np.testing.assert_array_equal(res.histogram, np.bincount(sym, minlength=2 * p + 1))
    tb.check_idle()


async def check_histogram(tb, q8, z8, n_bits, store_ref=False, requant=True):
    """A HISTOGRAM pass through the driver against np.bincount of the golden codes."""
    res = await tb.accel.histogram(q8, z8=z8, n_bits=n_bits, store_ref=store_ref, requant=requant)
    codes = requantize(q8, z8, n_bits) if requant else q8
    want = np.bincount(codes.reshape(-1), minlength=1 << n_bits)
    np.testing.assert_array_equal(res.histogram, want, err_msg=f"{q8.shape} N {n_bits} z8 {z8}")
    return res


@cocotb.test()
async def test_histogram(dut):
    """HISTOGRAM (a KEY's histogram, a stream word a cycle) through the driver: sizes around
    the word edges, N = 2..8, quint8 in (requantized) or the symbols themselves, skewed and
    constant maps (runs of one symbol in every lane), random idle input and back-pressure;
    HIST_DATA switching between an ENCODE's counts and a HISTOGRAM's; STORE_REF (C a
    multiple of the lanes or not) checked by a MOTION against the stored codes; a reset in
    the middle of a pass; then, with a source that never starves, CYCLES against
    ``cyclemodel.hist_cycles``."""
    tb = TB(dut)
    await tb.reset()
    rng = tb.rng
    for size in (1, 7, 8, 9, 63, 255, 1000, 4097):
        n_bits = int(rng.integers(2, 9))
        q8, z8 = stimulus.random_map(rng, 1, size, 1)
        await check_histogram(tb, q8.reshape(-1), z8, n_bits)
    await check_histogram(tb, np.full(100, 77, np.uint8), 77, 4)  # one symbol: every lane forwards
    await check_histogram(tb, rng.integers(0, 256, 777, dtype=np.uint8), 0, 8, requant=False)
    skew = np.clip(rng.normal(3, 1, 2000), 0, 255).astype(np.uint8)
    await check_histogram(tb, skew, 0, 8, requant=False)
    # HIST_DATA follows the last of ENCODE and HISTOGRAM
    q8, z8 = stimulus.random_map(rng, 8, 8, 16)
    await check_histogram(tb, q8, z8, 5)
    await check_anchor(tb, q8[:4], z8, 5, stimulus.table_for(rng, 32))
    await check_histogram(tb, q8[4:], z8, 5)
    # STORE_REF: the KEY's path (HISTOGRAM stores the reference, ENCODE with its table does not)
    for (h, w, c), n_bits, block, search in (((9, 11, 16), 4, 4, 7), ((10, 5, 20), 6, 3, 3)):
        z8 = int(rng.integers(0, 256))
        a, b = stimulus.moving_pair(rng, h, w, c, z8, shift=(1, -1))
        res = await check_histogram(tb, a, z8, n_bits, store_ref=True)
        await check_anchor(tb, a, z8, n_bits, huffman.table_lengths(res.histogram), store_ref=False)
        zn = zero_point_n(z8, n_bits)
        mvs, costs = await tb.accel.motion(b, z8=z8, n_bits=n_bits, zn_ref=zn, block=block, search=search)
        g_mvs, g_costs = three_step_search(
            centred(requantize(a, z8, n_bits), z8, n_bits), b.astype(np.int16) - np.int16(z8), block, search
        )
        np.testing.assert_array_equal(mvs, g_mvs)
        np.testing.assert_array_equal(costs, g_costs)
    # a reset in the middle of a pass, then a clean one
    q8, z8 = stimulus.random_map(rng, 16, 16, 64)
    await tb.interrupt(tb.accel.histogram(q8, z8=z8, n_bits=4), 600)
    await ClockCycles(dut.clk, 4)
    await check_histogram(tb, q8, z8, 4)
    tb.check_idle()

    tb.stalls(False)  # (a pause the generators were in stays: lift it)
    tb.source.pause = tb.sink.pause = False
    misses = []
    for size in (8, 1000, 19 * 19 * 96, 38 * 38 * 32 + 5):
        q8, z8 = stimulus.random_map(rng, 1, size, 1)
        res = await check_histogram(tb, q8.reshape(-1), z8, 4)
        model = cyclemodel.hist_cycles(size)
        log_cycles(tb, "histogram", (1, size, 1), 0, 0, res.cycles)
        misses += [(size, res.cycles, model)] if abs(res.cycles - model) > 2 else []
    assert not misses, f"HISTOGRAM's cycles (count, CYCLES, model) off the cycle model: {misses}"
    tb.check_idle()


@cocotb.test()
async def test_motion_small(dut):
    """TSS on small maps: truncated edge blocks, every p, B from 1 to 8, three ways to load
    the reference, different zero points for the reference and the current frame."""
    tb = TB(dut)
    await tb.reset()
    cases = [
        ((5, 7, 8), 2, 3, "load"),
        ((9, 11, 16), 4, 7, "encode"),
        ((12, 12, 24), 3, 15, "requant"),
        ((8, 8, 8), 8, 7, "encode"),
        ((6, 9, 8), 1, 3, "load"),
        ((17, 13, 16), 4, 15, "load"),
        ((7, 9, 12), 4, 7, "load"),
        ((6, 6, 3), 2, 3, "encode"),
        ((10, 5, 20), 3, 7, "requant"),
    ]
    for (h, w, c), block, search, load in cases:
        n_bits = int(tb.rng.choice([4, 6, 8]))
        z_ref, z_cur = int(tb.rng.integers(0, 256)), int(tb.rng.integers(0, 256))
        shift = (int(tb.rng.integers(-3, 4)), int(tb.rng.integers(-3, 4)))
        a, b = stimulus.moving_pair(tb.rng, h, w, c, 0, shift=shift)
        ref_q8 = np.clip(a.astype(np.int16) + z_ref, 0, 255).astype(np.uint8)
        cur_q8 = np.clip(b.astype(np.int16) + z_cur, 0, 255).astype(np.uint8)
        if load == "load":  # unrelated random data too
            cur_q8 = tb.rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        await check_motion(tb, ref_q8, z_ref, cur_q8, z_cur, n_bits, block, search, load)
    tb.check_idle()


@cocotb.test()
async def test_motion_ssd_shape(dut):
    """The default SSD cut's shape (19x19x96), B = 4, p = 7, a moving scene; reports cycles."""
    tb = TB(dut, stalls=False)  # the cycle model counts a DMA that never starves the input
    await tb.reset()
    for (h, w, c), z8, n_bits, block, search in (
        ((19, 19, 96), 0, 4, 4, 7),
        ((19, 19, 64), 5, 8, 4, 15),
        ((13, 10, 32), 9, 4, 2, 3),
    ):
        a, b = stimulus.moving_pair(tb.rng, h, w, c, z8, shift=(1, -2))
        mvs, cycles = await check_motion(tb, a, z8, b, z8, n_bits, block, search, "encode")
        log_cycles(tb, "motion", (h, w, c), block, search, cycles)
        ref_c = centred(requantize(a, z8, n_bits), z8, n_bits)
        model = cyclemodel.motion_cycles((h, w, c), block, search, ref_c, b.astype(np.int16) - z8)
        assert abs(cycles - model) <= 2, f"MOTION took {cycles} cycles, the cycle model says {model}"
    q8, z8 = stimulus.random_map(tb.rng, 19, 19, 96)
    res = await check_anchor(tb, q8, z8, 4, stimulus.table_for(tb.rng, 16))
    model = cyclemodel.encode_cycles(q8.size)
    log_cycles(tb, "encode", q8.shape, 0, 0, res.cycles)
    assert abs(res.cycles - model) <= 2, f"ENCODE took {res.cycles} cycles, the cycle model says {model}"
    tb.check_idle()


@cocotb.test()
async def test_motion_ssd_large(dut):
    """The SSD's largest cuts: 19x19x576 (B = 4, p = 7) and 10x10x1280 (B = 2, p = 3)."""
    tb = TB(dut)
    await tb.reset()
    for (h, w, c), block, search in (((19, 19, 576), 4, 7), ((10, 10, 1280), 2, 3)):
        z8 = int(tb.rng.integers(0, 40))
        a, b = stimulus.moving_pair(tb.rng, h, w, c, z8, shift=(0, 1))
        _, cycles = await check_motion(tb, a, z8, b, z8, 5, block, search, "requant")
        log_cycles(tb, "motion", (h, w, c), block, search, cycles)
    tb.check_idle()


def log_cycles(tb, op, shape, block, search, cycles):
    """Measured cycles, for the cycle model's check (TSP_CYCLES_LOG names the file)."""
    tb.log.info("%s %s B=%d p=%d: %d cycles", op, shape, block, search, cycles)
    path = os.environ.get("TSP_CYCLES_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{op} {shape[0]} {shape[1]} {shape[2]} {block} {search} {cycles}\n")


@cocotb.test()
async def test_reset_midstream(dut):
    """Reset during an ENCODE (data half sent, output back-pressured), then a clean run."""
    tb = TB(dut)
    await tb.reset()
    q8, z8 = stimulus.random_map(tb.rng, 16, 16, 16)
    lengths = stimulus.table_for(tb.rng, 16)
    await tb.accel.load_table(lengths)
    await tb.interrupt(tb.accel.encode_anchor(q8, z8=z8, n_bits=4, store_ref=False), 400)
    await ClockCycles(dut.clk, 4)
    await check_anchor(tb, q8, z8, 4, lengths)  # the table is reloaded: reset keeps no state
    # and a reset in the middle of MOTION
    a, b = stimulus.moving_pair(tb.rng, 12, 12, 16, z8)
    await check_motion(tb, a, z8, b, z8, 8, 4, 7, "load")
    await tb.interrupt(check_motion(tb, a, z8, b, z8, 8, 4, 7, "load"), 300, running=False)
    await check_motion(tb, a, z8, b, z8, 8, 4, 7, "load")
    tb.check_idle()


@cocotb.test()
async def test_fixtures(dut):
    """The SSD feature-map fixtures (issue 3): the first frame coded as an anchor (its own
    table), kept as the reference, the next frames motion-searched against it; then the
    next anchor coded with the table of the first one's histogram (the one-pass policy).
    The fixtures take the two settings (N = 4, B = 4, p = 7 and N = 6, B = 2, p = 3) in
    turn, so each setting meets several real maps within the suite's time."""
    fx = stimulus.fixtures()
    tb = TB(dut, stalls=bool(fx))
    if not fx:
        tb.log.warning("no fixtures under %s: nothing to check", stimulus.FIXTURES)
        return
    await tb.reset()
    limit = int(os.environ.get("TSP_FIXTURE_ELEMENTS", "40000"))
    settings = ((4, 4, 7), (6, 2, 3))
    checked = 0
    for f in fx:
        frames, z8 = f["frames"], f["zero_point"]
        if frames[0].size > limit or len(frames) < 2:
            tb.log.info("fixture %s %s: over the simulation budget, skipped", f["name"], frames[0].shape)
            continue
        for n_bits, block, search in (settings[checked % len(settings)],):
            codes = requantize(frames[0], z8, n_bits)
            # the KEY's path: its histogram in a HISTOGRAM pass (which stores the reference),
            # then the ENCODE pass with its own table
            hist = await check_histogram(tb, frames[0], z8, n_bits, store_ref=True)
            own = huffman.table_lengths(hist.histogram)
            res = await check_anchor(tb, frames[0], z8, n_bits, own, store_ref=False)
            zn = zero_point_n(z8, n_bits)
            for cur in frames[1:]:
                mvs, costs = await tb.accel.motion(cur, z8=z8, n_bits=n_bits, zn_ref=zn, block=block, search=search)
                g_mvs, g_costs = three_step_search(
                    centred(codes, z8, n_bits), cur.astype(np.int16) - np.int16(z8), block, search
                )
                np.testing.assert_array_equal(mvs, g_mvs)
                np.testing.assert_array_equal(costs, g_costs)
            await check_anchor(tb, frames[-1], z8, n_bits, huffman.table_lengths(res.histogram))
            checked += 1
            tb.log.info("fixture %s %s N=%d B=%d p=%d: bit-exact", f["name"], frames[0].shape, n_bits, block, search)
    assert checked >= len(settings), "fixtures are present but not every setting was checked"
    tb.check_idle()


@cocotb.test()
async def test_group_through_driver(dut):
    """A bi-3-like group through the driver's whole API: anchor with STORE_REF, two
    predicted frames, their vectors Huffman-coded with a motion table; no stalls."""
    tb = TB(dut, stalls=False)
    await tb.reset()
    z8, n_bits, block, p = 3, 6, 4, 7
    a, b = stimulus.moving_pair(tb.rng, 16, 20, 32, z8, shift=(2, 1))
    _, c = stimulus.moving_pair(tb.rng, 16, 20, 32, z8, shift=(-1, 0))
    lengths = huffman.table_lengths(np.bincount(requantize(a, z8, n_bits).reshape(-1), minlength=64))
    await check_anchor(tb, a, z8, n_bits, lengths, store_ref=True)
    mv_lengths = stimulus.table_for(tb.rng, 2 * p + 1)
    zn = zero_point_n(z8, n_bits)
    for cur in (b, c):
        mvs, costs = await tb.accel.motion(cur, z8=z8, n_bits=n_bits, zn_ref=zn, block=block, search=p)
        ref_c = centred(requantize(a, z8, n_bits), z8, n_bits)
        g_mvs, _ = three_step_search(ref_c, cur.astype(np.int16) - z8, block, p)
        np.testing.assert_array_equal(mvs, g_mvs)
        data, bits = await tb.accel.encode_motion_vectors(mvs, search=p, lengths=mv_lengths)
        g = entropy.encode("huffman", mvs.astype(np.int32).reshape(-1) + p, entropy.Alphabet.motion(p), mv_lengths)
        assert (data, bits) == g
    tb.check_idle()


# ----------------------------------------------------------------------------- BAND_MOTION
# Run on a test build with a small on-chip reference (sim/test_accel_band.py's build:
# 16 KiB), so that maps of a few tens of kB already take the band path.


async def check_band(tb, ref_q8, ref_z8, cur_q8, cur_z8, n_bits, block, search):
    """The reference kept by the driver (load_reference over the on-chip limit), BAND_MOTION,
    vectors and costs against the golden TSS."""
    ref_codes = requantize(ref_q8, ref_z8, n_bits)
    zn = zero_point_n(ref_z8, n_bits)
    await tb.accel.load_reference(ref_codes, zn)
    assert tb.accel.ops.band_reference is not None, "the map should take the band path"
    mvs, costs = await tb.accel.motion(cur_q8, z8=cur_z8, n_bits=n_bits, zn_ref=zn, block=block, search=search)
    g_mvs, g_costs = three_step_search(
        centred(ref_codes, ref_z8, n_bits), cur_q8.astype(np.int16) - np.int16(cur_z8), block, search
    )
    np.testing.assert_array_equal(mvs, g_mvs)
    np.testing.assert_array_equal(costs, g_costs)
    tb.log.info(
        "band %s B=%d p=%d plan %s: %d cycles, %d non-zero vectors",
        cur_q8.shape,
        block,
        search,
        tb.accel.ops.last_plan,
        tb.accel.ops.last_cycles,
        int(np.any(mvs != 0, axis=2).sum()),
    )
    return mvs, tb.accel.ops.last_cycles


@cocotb.test()
async def test_band_random(dut):
    """BAND_MOTION on maps over the (16 KiB) on-chip reference: one group and several groups
    of block rows, several channel slices, C padded to the chunk, truncated edge blocks,
    p = 3, 7, 15, moving and unrelated frames, z_N = 2^N; random gaps and back-pressure."""
    tb = TB(dut)
    await tb.reset()
    params = await tb.accel.probe()
    assert tb.accel.ops.band and params.ref_bytes <= 16384, "the band tests need the small-reference build"
    cases = [
        ((19, 19, 96), 4, 7, "moving", 4),
        ((25, 34, 64), 2, 3, "moving", 6),
        ((21, 23, 40), 3, 15, "random", 8),
        ((30, 20, 48), 4, 7, "moving", 5),
        ((17, 40, 32), 5, 3, "moving", 4),
    ]
    for (h, w, c), block, search, kind, n_bits in cases:
        z_ref, z_cur = int(tb.rng.integers(0, 256)), int(tb.rng.integers(0, 256))
        shift = (int(tb.rng.integers(-min(search, 6), min(search, 6) + 1)), int(tb.rng.integers(-3, 4)))
        a, b = stimulus.moving_pair(tb.rng, h, w, c, 0, shift=shift)
        ref_q8 = np.clip(a.astype(np.int16) + z_ref, 0, 255).astype(np.uint8)
        cur_q8 = np.clip(b.astype(np.int16) + z_cur, 0, 255).astype(np.uint8)
        if kind == "random":
            cur_q8 = tb.rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        await check_band(tb, ref_q8, z_ref, cur_q8, z_cur, n_bits, block, search)
    # z_N = 2^N (z8 = 255 at N = 4): the padding must still add nothing
    a, b = stimulus.moving_pair(tb.rng, 19, 19, 72, 0, shift=(1, 1))
    ref_q8 = np.clip(a.astype(np.int16) + 255, 0, 255).astype(np.uint8)
    await check_band(tb, ref_q8, 255, b, 9, 4, 4, 7)
    tb.check_idle()


@cocotb.test()
async def test_band_cycles(dut):
    """BAND_MOTION's CYCLES against the cycle model (a DMA that never starves the input)."""
    tb = TB(dut, stalls=False)
    await tb.reset()
    params = await tb.accel.probe()
    from temposplit.hw.driver import band_plan

    off = []
    for (h, w, c), block, search in (((19, 19, 96), 4, 7), ((25, 34, 64), 2, 3), ((21, 23, 40), 3, 15)):
        z8 = int(tb.rng.integers(0, 40))
        a, b = stimulus.moving_pair(tb.rng, h, w, c, z8, shift=(1, -2))
        _, cycles = await check_band(tb, a, z8, b, z8, 4, block, search)
        plan = band_plan((h, w, c), block, search, params)
        model = cyclemodel.band_cycles((h, w, c), block, search, plan, band_bytes=params.band_bytes)
        log_cycles(tb, "band", (h, w, c), block, search, cycles)
        off.append((cycles, model))
    assert all(abs(c - m) <= 2 for c, m in off), f"BAND_MOTION's cycles and the model's (measured, model): {off}"
    tb.check_idle()


@cocotb.test()
async def test_band_reset_and_fixtures(dut):
    """A reset in the middle of a BAND_MOTION, then a clean run; then real data: the SSD
    fixture 19x19x33 (features[13]'s first 33 channels, three consecutive frames) with its
    channels repeated three times (19x19x99, 36 kB: over the 16 KiB reference)."""
    tb = TB(dut)
    await tb.reset()
    await tb.accel.probe()
    a, b = stimulus.moving_pair(tb.rng, 19, 19, 96, 3, shift=(2, -1))
    codes = requantize(a, 3, 5)
    zn = zero_point_n(3, 5)
    await tb.accel.load_reference(codes, zn)
    await tb.interrupt(tb.accel.motion(b, z8=3, n_bits=5, zn_ref=zn, block=4, search=7), 3000)
    await ClockCycles(dut.clk, 4)
    await check_band(tb, a, 3, b, 3, 5, 4, 7)
    fx = [f for f in stimulus.fixtures() if f["frames"][0].shape == (19, 19, 33)]
    if not fx:
        tb.log.warning("no 19x19x33 fixture under %s: the real-data case is skipped", stimulus.FIXTURES)
        return
    f = fx[0]
    frames, z8 = [np.ascontiguousarray(np.concatenate([x] * 3, axis=2)) for x in f["frames"]], f["zero_point"]
    for cur in frames[1:]:
        for n_bits, block, search in ((4, 4, 7), (6, 2, 3)):
            await check_band(tb, frames[0], z8, cur, z8, n_bits, block, search)
    tb.check_idle()


# ----------------------------------------------------------------------------- CTX


def ctx_golden(codes, refc, dref, n_bits, z_n):
    """The software's ctx anchor section and change map (codec/ctx.py)."""
    from temposplit.codec import ctx

    return ctx.encode_anchor(codes, refc, dref, n_bits, z_n)


@cocotb.test()
async def test_ctx_anchor(dut):
    """CTX through the driver: maps whose C is a multiple of the lanes or not and whose
    size is not a whole number of words, N = 2..8, intra and temporal (the reference's
    words interleaved), quint8 in (requantized) or N-bit codes in, random idle input and
    back-pressure; each section and change map against codec/ctx.py, and the codes stored
    (STORE_REF; padded by a REQUANT pass when C is not a multiple of the lanes) checked by
    a MOTION against them."""
    tb = TB(dut)
    await tb.reset()
    rng = tb.rng
    for (h, w, c), n_bits in (((5, 7, 8), 2), ((6, 5, 13), 4), ((9, 9, 33), 5), ((3, 4, 1), 8), ((1, 1, 1), 6)):
        z8 = int(rng.integers(0, 256))
        zn = zero_point_n(z8, n_bits)
        a, b = stimulus.moving_pair(rng, h, w, c, z8, shift=(1, 0))
        code_a, code_b = requantize(a, z8, n_bits), requantize(b, z8, n_bits)
        # intra, quint8 in
        res = await tb.accel.ctx_anchor(a, z8=z8, n_bits=n_bits)
        want, changes = ctx_golden(code_a, None, None, n_bits, zn)
        assert res.data == want, ("intra", (h, w, c), n_bits, _first_diff(res.data, want))
        np.testing.assert_array_equal(res.changes, changes)
        # temporal against a against code_a with a random change map, quint8 in, stored
        dref = rng.integers(-1, 2, (h, w, c)).astype(np.int8)
        res = await tb.accel.ctx_anchor(b, z8=z8, n_bits=n_bits, ref=code_a, ref_changes=dref)
        want, changes = ctx_golden(code_b, code_a, dref, n_bits, zn)
        assert res.data == want, ("temporal", (h, w, c), n_bits, _first_diff(res.data, want))
        np.testing.assert_array_equal(res.changes, changes)
        if h >= 2 and w >= 2:  # the stored reference is code_b: a MOTION against it
            cur = stimulus.moving_pair(rng, h, w, c, z8, shift=(0, 1))[1]
            mvs, costs = await tb.accel.motion(cur, z8=z8, n_bits=n_bits, zn_ref=zn, block=2, search=3)
            g_mvs, g_costs = three_step_search(centred(code_b, z8, n_bits), cur.astype(np.int16) - np.int16(z8), 2, 3)
            np.testing.assert_array_equal(mvs, g_mvs)
            np.testing.assert_array_equal(costs, g_costs)
        # temporal, N-bit codes in (FLAGS.REQUANT off), not stored
        res = await tb.accel.ctx_anchor(
            code_b, z8=z8, n_bits=n_bits, ref=code_a, ref_changes=dref, requant=False, store_ref=False
        )
        assert res.data == want, ("temporal, codes in", (h, w, c), n_bits)
    tb.check_idle()


@cocotb.test()
async def test_ctx_records(dut):
    """CTX with FLAGS.RECORDS through the driver: random predicted frames' sections
    (vectors, flags, residual blocks; N = 2..8, shared and per-channel vectors) and anchors
    as value records, random idle input and back-pressure, each section against codec/ctx.py;
    a records pass between an anchor's STORE_REF and a MOTION leaves the reference as it was."""
    tb = TB(dut)
    await tb.reset()
    rng = tb.rng
    for k, (records, section) in enumerate(stimulus.ctx_value_cases(rng)):
        res = await tb.accel.ctx_records(records)
        assert res.data == section, (k, _first_diff(res.data, section))
        assert res.changes is None
    h, w, c, n_bits = 6, 6, 8, 4
    z8 = int(rng.integers(0, 256))
    zn = zero_point_n(z8, n_bits)
    a, cur = stimulus.moving_pair(rng, h, w, c, z8, shift=(1, 0))
    await tb.accel.ctx_anchor(a, z8=z8, n_bits=n_bits)  # stored
    records, section = stimulus.ctx_value_cases(rng)[1]
    assert (await tb.accel.ctx_records(records)).data == section
    mvs, costs = await tb.accel.motion(cur, z8=z8, n_bits=n_bits, zn_ref=zn, block=2, search=3)
    g_mvs, g_costs = three_step_search(
        centred(requantize(a, z8, n_bits), z8, n_bits), cur.astype(np.int16) - np.int16(z8), 2, 3
    )
    np.testing.assert_array_equal(mvs, g_mvs)
    np.testing.assert_array_equal(costs, g_costs)
    tb.check_idle()


def ctx_fixture_frames():
    """(name, H x W x C quint8 frames, z8) of the SSD fixtures that the default build's row
    buffer holds (features.6 and .10: C = 8 and 33)."""
    for fx in stimulus.fixtures():
        if fx["name"].split(":")[0] in ("ssd-features.6", "ssd-features.10"):
            yield fx["name"], fx["frames"], fx["zero_point"]


@cocotb.test()
async def test_ctx_cycles(dut):
    """CTX's CYCLES against the cycle model (one bin per cycle after the pipeline's fill),
    a source that never starves and no back-pressure: the SSD fixtures' frames, intra then
    temporal against the frame before, N = 5."""
    tb = TB(dut, stalls=False)
    await tb.reset()
    n_bits = 5
    seen = 0
    misses = []
    for name, frames, z8 in ctx_fixture_frames():
        zn = zero_point_n(z8, n_bits)
        prev = dprev = None
        for q8 in frames:
            codes = requantize(q8, z8, n_bits)
            res = await tb.accel.ctx_anchor(q8, z8=z8, n_bits=n_bits, ref=prev, ref_changes=dprev)
            want, changes = ctx_golden(codes, prev, dprev, n_bits, zn)
            assert res.data == want, name
            bins = cyclemodel.ctx_bins(codes, prev, n_bits, zn)
            model = cyclemodel.ctx_cycles(bins, q8.size, prev is not None, tb.accel.ops.params.ctx_lanes)
            tb.log.info(
                "ctx %s %s %s: %d bins, %d cycles (model %d), %.4f bins/cycle",
                name,
                q8.shape,
                "temporal" if prev is not None else "intra",
                bins,
                res.cycles,
                model,
                bins / res.cycles,
            )
            misses += [(name, prev is not None, res.cycles, model)] if abs(res.cycles - model) > 2 else []
            prev, dprev = codes, changes
            seen += 1
    assert seen >= 6, "the SSD fixtures are missing"
    # FLAGS.RECORDS: the recommended preset's sections of the same fixtures as value records
    from temposplit.codec import ctx_records

    for name, frames, z8 in ctx_fixture_frames():
        codes = np.stack([f.transpose(2, 0, 1) for f in frames])
        for kind, args, section in stimulus.preset_ctx_sections(codes, 0.05, z8, frames=(0, 1, 2, 1)):
            records = ctx_records.section_records(kind, args)[0]
            res = await tb.accel.ctx_records(records)
            assert res.data == section, (name, kind)
            bins = sum(1 for _ in ctx_records.record_bins(records))
            model = cyclemodel.ctx_records_cycles(
                bins, len(ctx_records.words(records)), lanes=tb.accel.ops.params.ctx_lanes
            )
            tb.log.info(
                "ctx records %s %s: %d records, %d bins, %d cycles (model %d)",
                name,
                kind,
                len(records),
                bins,
                res.cycles,
                model,
            )
            misses += [(name, kind, res.cycles, model)] if abs(res.cycles - model) > 2 else []
            seen += 1
    assert not misses, f"CTX's cycles (tensor, kind, CYCLES, model) off the cycle model: {misses}"
    tb.check_idle()


def channel_slices(c: int, s: int):
    """The codec's channel slices of C channels into S: [floor(k C / S), floor((k + 1) C / S))."""
    return [((k * c) // s, ((k + 1) * c) // s) for k in range(s)]


def sliced_anchor_records(codes, ref, dref, n_bits, zn, s):
    from temposplit.codec import ctx_records

    return [
        ctx_records.anchor_records(
            codes[..., c0:c1],
            None if ref is None else ref[..., c0:c1],
            None if dref is None else dref[..., c0:c1],
            n_bits,
            zn,
        )[0]
        for c0, c1 in channel_slices(codes.shape[-1], s)
    ]


@cocotb.test()
async def test_ctx_slices(dut):
    """CTX with FLAGS.RECORDS and CTX_SLICES = 1, 2, 3, 5, 6, 7 through the driver (the
    default build's 3 engines of 2 lanes: 7 puts two slices on engine 0's lane 0): an SSD
    fixture's anchors (intra, temporal) cut into channel slices, and random predicted
    frames' and anchors' records as slices; every section against
    ``ctx_records.encode_records``, random idle input and back-pressure; then, with a
    source that never starves, CYCLES against ``cyclemodel.ctx_slices_cycles``."""
    from temposplit.codec import ctx_records

    tb = TB(dut)
    await tb.reset()
    n_bits = 5
    name, frames, z8 = next(f for f in ctx_fixture_frames() if f[0].startswith("ssd-features.10"))
    zn = zero_point_n(z8, n_bits)
    codes = [requantize(q8, z8, n_bits) for q8 in frames[:2]]
    dref = np.sign(codes[1].astype(np.int16) - codes[0].astype(np.int16)).astype(np.int8)  # any change map
    cases = []
    for s in (1, 2, 3, 5, 6, 7):
        cases.append(("intra", s, sliced_anchor_records(codes[0], None, None, n_bits, zn, s)))
    cases.append(("temporal", 6, sliced_anchor_records(codes[1], codes[0], dref, n_bits, zn, 6)))
    rand = [r for r, _ in stimulus.ctx_value_cases(tb.rng)]
    cases = [("random", 7, rand[:7]), ("random", 2, rand[7:9])] + cases
    for kind, s, slices in cases:
        tb.log.info("ctx slices %s S=%d: %s records", kind, s, [len(r) for r in slices])
        res = await tb.accel.ctx_records(slices)
        assert len(res.sections) == s
        for i, (got, r) in enumerate(zip(res.sections, slices, strict=True)):
            want = ctx_records.encode_records(r)
            assert got == want, (kind, s, i, _first_diff(got, want))
    # a single array after a sliced pass: today's format
    records, section = stimulus.ctx_value_cases(tb.rng)[0]
    assert (await tb.accel.ctx_records(records)).data == section
    tb.check_idle()

    tb.stalls(False)  # (a pause the generators were in stays: lift it)
    tb.source.pause = tb.sink.pause = False
    misses = []
    for kind, s, slices in cases[2:]:
        res = await tb.accel.ctx_records(slices)
        words = [len(ctx_records.words(r)) for r in slices]
        bins = [sum(1 for _ in ctx_records.record_bins(r)) for r in slices]
        params = tb.accel.ops.params
        model = cyclemodel.ctx_slices_cycles(bins, words, params.ctx_engines, lanes=params.ctx_lanes)
        tb.log.info(
            "ctx slices %s %s S=%d: bins %s, words %s, %d cycles (model %d)",
            name,
            kind,
            s,
            bins,
            words,
            res.cycles,
            model,
        )
        misses += [(kind, s, res.cycles, model)] if abs(res.cycles - model) > 4 else []
    assert not misses, f"CTX slices' cycles (kind, S, CYCLES, model) off the cycle model: {misses}"
    tb.check_idle()
