"""cocotb testbenches of the v2 coder in RTL (``hw/ctx_coder.py``, Verilator), bit for
bit against the codec: the anchor section (:class:`~temposplit.hw.ctx_coder.AnchorCoder`,
tests ``test_ctx_*``, against the readable definition
:mod:`temposplit.codec.ctx_reference`) and any section from value records
(:class:`~temposplit.hw.ctx_coder.ValueCoder`, tests ``test_values_*``, against
:mod:`temposplit.codec.ctx`) and two such sections at once
(:class:`~temposplit.hw.ctx_coder.DualValueCoder`, tests ``test_dual_values_*``): random
maps and the SSD feature fixtures, random idle cycles on the input, random back-pressure
on the output, a reset in the middle of a section.
Run through pytest (``sim/test_ctx.py``), each test on its own top."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
import stimulus
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from temposplit.codec import ctx_reference as ref
from temposplit.codec.quantize import lut, zero_point_n
from temposplit.hw.ctx_binarizer import ANCHOR_CONFIG, CONFIG_CYCLES, MAX_CHANNELS

SEED = int(os.environ.get("TSP_SEED", "1"))
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "features"
VECTORS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "vectors"


class TB:
    """A stream source and sink on the DUT's ``i``/``o`` ports (``lane`` k: its ``i[k]``
    and ``o[k]``), random idle input (``gaps``) and back-pressure (``stall``); ``clock``:
    start the DUT's clock (one of several lanes' benches does)."""

    def __init__(self, dut, gaps=0.3, stall=0.3, seed=SEED, lane=None, clock=True):
        self.dut = dut
        self.rng = random.Random(seed)
        self.gaps, self.stall = gaps, stall
        self.sections: list[bytes] = []
        self.cur = bytearray()
        sfx = "" if lane is None else f"{lane}__"
        self.i_valid, self.i_ready, self.i_payload = (
            getattr(dut, f"i__{sfx}{n}") for n in ("valid", "ready", "payload")
        )
        self.o_valid, self.o_ready, self.o_payload = (
            getattr(dut, f"o__{sfx}{n}") for n in ("valid", "ready", "payload")
        )
        if clock:
            Clock(dut.clk, 10, unit="ns").start()
        self.i_valid.value = 0
        self.o_ready.value = 0
        cocotb.start_soon(self._sink())

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        self.cur = bytearray()
        await RisingEdge(self.dut.clk)

    async def _sink(self):
        dut = self.dut
        while True:
            self.o_ready.value = int(self.rng.random() >= self.stall)
            await ReadOnly()
            if int(dut.rst.value) == 0 and int(self.o_valid.value) and int(self.o_ready.value):
                word = int(self.o_payload.value)
                self.cur.append(word & 0xFF)
                if word >> 8:
                    self.sections.append(bytes(self.cur))
                    self.cur = bytearray()
            elif int(dut.rst.value):
                self.cur = bytearray()
            await RisingEdge(dut.clk)

    async def code(self, codes, refc, dref, n_bits, z_n, stop_after=None):
        """Stream one section; returns its bytes (None when cut by ``stop_after`` elements)."""
        dut = self.dut
        h, w, c = codes.shape
        dut.width.value = w
        dut.channels.value = c
        dut.n_bits.value = n_bits
        dut.z_n.value = z_n
        dut.temporal.value = int(refc is not None)
        for _ in range(CONFIG_CYCLES):  # (the configuration's terms are registers)
            await RisingEdge(dut.clk)
        pred = refc if refc is not None else np.zeros_like(codes)
        t = (dref if dref is not None else np.zeros(codes.shape, np.int8)).astype(np.int64) + 1
        words = codes.astype(np.int64).reshape(-1) | (pred.astype(np.int64).reshape(-1) << 8) | (t.reshape(-1) << 16)
        words[-1] |= 1 << 18
        return await self._send(words.tolist(), stop_after)

    async def records(self, records, stop_after=None):
        """Stream one section's value records (ValueCoder) as stream words, the last one
        flagged; returns its bytes (None when cut by ``stop_after`` words)."""
        from temposplit.codec import ctx_records as V

        words = [int(w) for w in V.words(records)]
        words[-1] |= 1 << 64
        return await self._send(words, stop_after)

    async def _send(self, words, stop_after):
        dut = self.dut
        before = len(self.sections)
        for k, word in enumerate(words):
            if stop_after is not None and k == stop_after:
                self.i_valid.value = 0
                return None
            while self.rng.random() < self.gaps:
                self.i_valid.value = 0
                await RisingEdge(dut.clk)
            self.i_valid.value = 1
            self.i_payload.value = word
            while True:
                await ReadOnly()
                ok = int(self.i_ready.value)
                await RisingEdge(dut.clk)
                if ok:
                    break
        self.i_valid.value = 0
        while len(self.sections) == before:
            await RisingEdge(dut.clk)
        return self.sections[-1]


def cases(rng, shape, n_bits):
    top = (1 << n_bits) - 1
    z_n = int(rng.integers(0, top + 2))
    base = rng.integers(0, top + 1, shape).astype(np.uint8)
    skew = np.where(rng.random(shape) < 0.7, min(z_n, top), base).astype(np.uint8)
    refc = np.clip(skew.astype(np.int16) + rng.integers(-1, 2, shape), 0, top).astype(np.uint8)
    dref = rng.integers(-1, 2, shape).astype(np.int8)
    return [(skew, None, None, n_bits, z_n), (skew, refc, dref, n_bits, z_n), (base, refc, dref, n_bits, z_n)]


@cocotb.test()
async def test_ctx_random(dut):
    tb = TB(dut)
    await tb.reset()
    rng = np.random.default_rng(SEED)
    for n_bits in (2, 4, 6, 8):
        for shape in ((7, 9, 5), (4, 3, 64), (1, 1, 1)):
            for codes, refc, dref, n, z in cases(rng, shape, n_bits):
                got = await tb.code(codes, refc, dref, n, z)
                want = ref.encode_anchor(codes, refc, dref, n, z)[0]
                assert got == want, (shape, n_bits, refc is not None)


def fixture_tensors():
    """Each SSD fixture tensor that fits this build's line buffer: (fixture path, tensor
    index, its frames as H x W x C arrays, its 8-bit zero point)."""
    for path in sorted(FIXTURES.glob("ssd-*.npz")):
        fx = np.load(path)
        for i in range(sum(1 for k in fx.files if k.startswith("codes_"))):
            frames, z8 = fx[f"codes_{i}"], int(fx[f"zero_point_{i}"])
            hwc = [np.ascontiguousarray(f.transpose(1, 2, 0)) for f in frames]
            if hwc[0].shape[1] * hwc[0].shape[2] <= 16384:  # else over the line buffer of this build
                yield path, i, hwc, z8


@cocotb.test()
async def test_ctx_fixtures(dut):
    """Every SSD fixture tensor (three consecutive frames at full H x W, C' channels):
    the first frame intra, the next two temporal against the frame before, N = 6, with
    random idle input and back-pressure (N = 4 on the same tensors: test_ctx_throughput,
    bit for bit too)."""
    tb = TB(dut)
    await tb.reset()
    for path, i, hwc, z8 in fixture_tensors():
        for n_bits in (6,):
            z_n = zero_point_n(z8, n_bits)
            codes = [lut(z8, n_bits)[f] for f in hwc]
            prev = dprev = None
            for q in codes:
                want, changes = ref.encode_anchor(q, prev, dprev, n_bits, z_n)
                got = await tb.code(q, prev, dprev, n_bits, z_n)
                assert got == want, (path.name, i, n_bits, prev is not None)
                prev, dprev = q, changes


def section_vectors():
    """The frozen ``ctx`` anchor sections of tests/fixtures/vectors (docs/bitstream.md
    section 14), each as (name, codes, ref or None, n_bits, z_n, the section's bytes)."""
    cases = json.loads((VECTORS / "ctx-sections.json").read_text())
    npz = np.load(VECTORS / "ctx-sections.npz")
    for case in cases:
        name = case["name"]
        refc = npz[f"{name}/ref"] if case["temporal"] else None
        yield name, npz[f"{name}/codes"], refc, case["n_bits"], case["z_n"], npz[f"{name}/data"].tobytes()


def anchor_limits(codes, n_bits, z_n, line_elements):
    """Why the anchor coder cannot code this map (its configuration's widths, its row
    buffer), or None when it can."""
    _, w, c = codes.shape
    if not 2 <= n_bits <= 8:
        return f"N = {n_bits} outside 2..8"
    if not 0 <= z_n <= 1 << n_bits:
        return f"z_N = {z_n} outside 0..2^N"
    if w >= 1 << ANCHOR_CONFIG["width"] or not 1 <= c <= MAX_CHANNELS:
        return f"W = {w} or C = {c} over the WIDTH / CHANNELS registers"
    if w * c > line_elements:
        return f"W x C = {w * c} over the row buffer ({line_elements})"
    return None


@cocotb.test()
async def test_ctx_vectors(dut):
    """Every frozen ``ctx-sections`` case (all-zero, all-maximal, one element, ramps at
    N = 2..8 intra and temporal, the maximal code against a zero reference, carries through
    0xFF runs): intra with z_N = ``z_n``, or temporal against ``ref`` with its all-zero
    change map; the RTL's bytes equal the frozen ``NAME/data``, with random idle input and
    back-pressure. (The anchor coder outputs no change map: the accelerator's stored
    change map is checked by sim/tb_accel.py::test_ctx_anchor.) A case the coder cannot
    take (:func:`anchor_limits`) is logged with its reason and fails the test too: every
    frozen case is one the fabric must code."""
    from temposplit.hw.ctx_coder import AnchorCoder

    line_elements = AnchorCoder().line_elements  # the build's row buffer (sim/test_ctx.py: the default)
    tb = TB(dut)
    await tb.reset()
    coded, skipped, wrong = [], [], []
    for name, codes, refc, n_bits, z_n, want in section_vectors():
        why = anchor_limits(codes, n_bits, z_n, line_elements)
        if why is not None:
            dut._log.error("%s: the anchor coder cannot take it: %s", name, why)
            skipped.append(name)
            continue
        got = await tb.code(codes, refc, None, n_bits, z_n)
        coded.append(name)
        if got != want:
            wrong.append(name)
            dut._log.error("%s: RTL %s, frozen %s", name, got.hex(), want.hex())
    dut._log.info(
        "ctx-sections: %d coded bit-exact of %d, %d skipped", len(coded) - len(wrong), len(coded), len(skipped)
    )
    assert coded and not wrong and not skipped, (wrong, skipped)


def bins_of(codes, refc, dref, n_bits, z_n):
    """The reference's section and the number of bins it codes."""
    count = [0]
    original = ref.RangeEncoder.bit

    def counted(self, ctx, b):
        count[0] += 1
        return original(self, ctx, b)

    ref.RangeEncoder.bit = counted
    try:
        section, changes = ref.encode_anchor(codes, refc, dref, n_bits, z_n)
    finally:
        ref.RangeEncoder.bit = original
    return section, changes, count[0]


@cocotb.test()
async def test_ctx_throughput(dut):
    """Bins per cycle on the SSD fixtures, N = 4, no idle input, no back-pressure: the
    cycles from a section's first element to its last byte against the bins the
    reference codes (written to throughput.json in the run's directory)."""
    tb = TB(dut, gaps=0.0, stall=0.0)
    await tb.reset()
    rows = []
    for path, i, hwc, z8 in fixture_tensors():
        z_n = zero_point_n(z8, 4)
        codes = [lut(z8, 4)[f] for f in hwc]
        prev = dprev = None
        for k, q in enumerate(codes):
            want, changes, bins = bins_of(q, prev, dprev, 4, z_n)
            t0 = get_sim_time("ns")
            got = await tb.code(q, prev, dprev, 4, z_n)
            cycles = round((get_sim_time("ns") - t0) / 10)
            assert got == want, (path.name, i, k)
            rows.append(
                {
                    "tensor": f"{path.stem}[{i}]",
                    "shape": list(q.shape),
                    "frame": k,
                    "bins": bins,
                    "cycles": cycles,
                    "bins_per_cycle": bins / cycles,
                }
            )
            dut._log.info(
                "%s[%d] %s frame %d: %d bins, %d cycles, %.3f bins/cycle",
                path.stem,
                i,
                q.shape,
                k,
                bins,
                cycles,
                bins / cycles,
            )
            prev, dprev = q, changes
    Path("throughput.json").write_text(json.dumps(rows, indent=1))
    total = sum(r["bins"] for r in rows) / sum(r["cycles"] for r in rows)
    worst = min(r["bins_per_cycle"] for r in rows)
    dut._log.info("all: %.3f bins/cycle, the worst section %.3f", total, worst)
    assert worst >= 0.9, worst


@cocotb.test()
async def test_ctx_reset_midstream(dut):
    tb = TB(dut)
    await tb.reset()
    rng = np.random.default_rng(SEED + 7)
    cut, after = cases(rng, (6, 6, 16), 4)[1], cases(rng, (5, 8, 8), 6)[2]
    assert await tb.code(*cut, stop_after=300) is None
    await tb.reset()
    got = await tb.code(*after)
    assert got == ref.encode_anchor(*after)[0]


# ----------------------------------------------------------------------------- ValueCoder


def preset_cases():
    """Every section the recommended preset writes for each SSD fixture tensor's frames,
    played forward and back (KEY, temporal anchors, predicted frames), as (tensor, kind,
    records, section)."""
    from temposplit.codec import ctx_records as V

    for path in sorted(FIXTURES.glob("ssd-*.npz")):
        fx = np.load(path)
        for i in range(sum(1 for k in fx.files if k.startswith("codes_"))):
            for kind, args, section in stimulus.preset_ctx_sections(
                fx[f"codes_{i}"], float(fx[f"scale_{i}"]), int(fx[f"zero_point_{i}"])
            ):
                records = V.section_records(kind, args)[0]
                yield f"{path.stem}[{i}]", kind, records, section


@cocotb.test()
async def test_values_random(dut):
    tb = TB(dut)
    await tb.reset()
    for k, (records, section) in enumerate(stimulus.ctx_value_cases(np.random.default_rng(SEED))):
        assert await tb.records(records) == section, k


@cocotb.test()
async def test_values_preset(dut):
    """Real data: every section of the recommended preset on the SSD fixtures, with random
    idle input and back-pressure."""
    tb = TB(dut)
    await tb.reset()
    for tensor, kind, records, section in preset_cases():
        assert await tb.records(records) == section, (tensor, kind)


@cocotb.test()
async def test_values_throughput(dut):
    """Bins per cycle of the recommended preset's sections on the SSD fixtures, no idle
    input, no back-pressure (written to throughput.json in the run's directory)."""
    from temposplit.codec import ctx_records as V

    tb = TB(dut, gaps=0.0, stall=0.0)
    await tb.reset()
    rows = []
    for tensor, kind, records, section in preset_cases():
        bins = sum(1 for _ in V.record_bins(records))
        t0 = get_sim_time("ns")
        assert await tb.records(records) == section, (tensor, kind)
        cycles = round((get_sim_time("ns") - t0) / 10)
        rows.append(
            {
                "tensor": tensor,
                "kind": kind,
                "records": len(records),
                "words": len(V.words(records)),
                "bins": bins,
                "cycles": cycles,
            }
        )
    Path("throughput.json").write_text(json.dumps(rows, indent=1))
    for kind in ("anchor", "pred"):
        sel = [r for r in rows if r["kind"] == kind]
        dut._log.info(
            "%s sections: %d, %d bins in %d cycles, %.4f bins/cycle, the worst %.4f",
            kind,
            len(sel),
            sum(r["bins"] for r in sel),
            sum(r["cycles"] for r in sel),
            sum(r["bins"] for r in sel) / sum(r["cycles"] for r in sel),
            min(r["bins"] / r["cycles"] for r in sel),
        )
    big = [r for r in rows if r["bins"] >= 2000]  # past the pipeline's fill and termination
    assert big and min(r["bins"] / r["cycles"] for r in big) >= 0.9


@cocotb.test()
async def test_values_reset_midstream(dut):
    tb = TB(dut)
    await tb.reset()
    cases = stimulus.ctx_value_cases(np.random.default_rng(SEED + 7))
    assert await tb.records(cases[2][0], stop_after=20) is None  # 20 of its words
    await tb.reset()
    assert await tb.records(cases[5][0]) == cases[5][1]


# ----------------------------------------------------------------------------- DualValueCoder


async def lanes_of(dut, gaps, stall):
    """A bench on each of the DUT's two lanes, the DUT reset."""
    lanes = [TB(dut, gaps, stall, seed=SEED + k, lane=k, clock=k == 0) for k in range(2)]
    await lanes[0].reset()
    return lanes


async def side_by_side(lanes, work):
    """Run ``work(k)`` for both lanes at once; returns each lane's result."""
    tasks = [cocotb.start_soon(work(k)) for k in range(len(lanes))]
    return [await t for t in tasks]


@cocotb.test()
async def test_dual_values_random(dut):
    lanes = await lanes_of(dut, 0.3, 0.3)
    cases = stimulus.ctx_value_cases(np.random.default_rng(SEED))

    async def work(k):
        for j, (records, section) in enumerate(cases[k::2]):
            assert await lanes[k].records(records) == section, (k, j)

    await side_by_side(lanes, work)


@cocotb.test()
async def test_dual_values_preset(dut):
    """Real data: every section of the recommended preset on the SSD fixtures, two at a
    time (lane k the k-th of each pair), random idle input and back-pressure on each."""
    lanes = await lanes_of(dut, 0.3, 0.3)
    cases = list(preset_cases())

    async def work(k):
        for tensor, kind, records, section in cases[k::2]:
            assert await lanes[k].records(records) == section, (k, tensor, kind)

    await side_by_side(lanes, work)


@cocotb.test()
async def test_dual_values_throughput(dut):
    """The preset's sections on the SSD fixtures, the two lanes fed side by side without
    idle input or back-pressure: each lane's bins per cycle (a bin every two cycles at
    best), and both lanes' bins over the cycles both were busy (a bin a cycle at best;
    written to throughput.json in the run's directory). A lane waits for a section's last
    byte before it sends the next (the pipeline's drain and termination)."""
    from temposplit.codec import ctx_records as V

    lanes = await lanes_of(dut, 0.0, 0.0)
    # the sections of 2,000 bins or more (past the pipeline's fill and termination), the
    # largest first, so that the lanes' pairs are of about one size
    sized = [(sum(1 for _ in V.record_bins(c[2])), c) for c in preset_cases()]
    cases = [c for bins, c in sorted(sized, key=lambda x: -x[0]) if bins >= 2000]
    rows = []

    async def work(k):
        spans = []
        for tensor, kind, records, section in cases[k::2]:
            t0 = get_sim_time("ns")
            assert await lanes[k].records(records) == section, (k, tensor, kind)
            bins = sum(1 for _ in V.record_bins(records))
            cycles = round((get_sim_time("ns") - t0) / 10)
            rows.append({"lane": k, "tensor": tensor, "kind": kind, "bins": bins, "cycles": cycles})
            spans.append((t0, get_sim_time("ns"), bins))
        return spans

    spans = await side_by_side(lanes, work)
    Path("throughput.json").write_text(json.dumps(rows, indent=1))
    both_end = min(s[-1][1] for s in spans)  # until the first lane ran out of sections
    both = [(t1 - t0, b) for lane in spans for t0, t1, b in lane if t1 <= both_end]
    bins_both = sum(b for _, b in both)
    cycles_both = round((both_end - min(s[0][0] for s in spans)) / 10)
    dut._log.info(
        "both lanes busy: %d bins in %d cycles, %.4f bins/cycle; per lane, the worst large section %.4f",
        bins_both,
        cycles_both,
        bins_both / cycles_both,
        min(r["bins"] / r["cycles"] for r in rows),
    )
    assert len(rows) >= 4 and min(r["bins"] / r["cycles"] for r in rows) >= 0.45
    assert bins_both / cycles_both >= 0.9, bins_both / cycles_both


@cocotb.test()
async def test_dual_values_reset_midstream(dut):
    """Both lanes cut by a reset (lane 0 after 20 of its words, lane 1 within its section
    then); the sections after it come out whole."""
    from temposplit.codec import ctx_records as V

    lanes = await lanes_of(dut, 0.3, 0.3)
    cases = stimulus.ctx_value_cases(np.random.default_rng(SEED + 7))
    long = max(cases, key=lambda c: len(V.words(c[0])))[0]
    cut = cocotb.start_soon(lanes[1].records(long, stop_after=len(V.words(long)) - 1))
    assert await lanes[0].records(cases[2][0], stop_after=20) is None
    cut.cancel()  # lane 1's source stops before the reset (no word of it is taken after)
    lanes[1].i_valid.value = 0
    await lanes[0].reset()
    got = await side_by_side(lanes, lambda k: lanes[k].records(cases[5 + k][0]))
    assert got == [cases[5][1], cases[6][1]]
