"""amaranth.sim tests of the v2 coder's range encoders (hw/range_coder.py; with its fronts,
hw/ctx_coder.py; the two-lane one, hw/dual_range_coder.py) against the readable
definition (codec/ctx_reference.py): random and skewed bins over the context table,
back-to-back bins of one context, bypass bins, carries through runs of 0xFF, several
sections in a row, random input gaps, output back-pressure and a reset in the middle of a
section; for the two-lane encoder the lanes together and alone, back-pressure on one, and
its rate."""

import random

import pytest

pytest.importorskip("amaranth")
from amaranth import ClockDomain, Module, Signal  # noqa: E402
from amaranth.sim import Simulator  # noqa: E402

from temposplit.codec import ctx_reference as ref  # noqa: E402
from temposplit.hw.ctx_binarizer import CONFIG_CYCLES  # noqa: E402
from temposplit.hw.dual_range_coder import LANES, DualRangeEncoder  # noqa: E402
from temposplit.hw.range_coder import CREDIT, N_CONTEXTS, RangeEncoder  # noqa: E402


def reference_section(bins):
    enc = ref.RangeEncoder()
    contexts = [ref.Context() for _ in range(N_CONTEXTS)]
    for bit, ctx, bypass in bins:
        enc.bit(None if bypass else contexts[ctx], bit)
    return enc.finish()


def random_section(rng, n, kind):
    """(bit, ctx, bypass) bins: 'random' over the whole table; 'skewed' few contexts with
    strongly biased bins (long runs, extreme probabilities, carries); 'repeat' one context;
    'few' three contexts, so that a context comes back 1, 2, 3 or more bins later (the
    pipeline's forwarding of the updates in flight)."""
    bins = []
    hot = [rng.randrange(N_CONTEXTS) for _ in range(4)]
    for _ in range(n):
        if kind == "random":
            bins.append((rng.randrange(2), rng.randrange(N_CONTEXTS), int(rng.random() < 0.1)))
        elif kind == "skewed":
            ctx = rng.choice(hot)
            bit = int(rng.random() < (0.02 if ctx == hot[0] else 0.97))
            bins.append((bit, ctx, int(rng.random() < 0.05)))
        elif kind == "few":
            bins.append((int(rng.random() < 0.2), rng.choice(hot[:3]), int(rng.random() < 0.1)))
        else:
            bins.append((int(rng.random() < 0.3), hot[0], 0))
    return bins


def _simulate(dut, sections, put, seed, gaps, stall, reset_after, cycles_per_item, must_finish):
    """Feed ``sections`` (lists of items; ``put(ctx, item, last)`` drives the input's
    payload) through a stream DUT with random idle input (``gaps``) and output back-pressure
    (``stall``); returns each section's bytes it finished (``reset_after``: a reset after
    that many items, the section cut there is dropped). ``simulate.ticks``: the producer's
    cycles."""
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    rng = random.Random(seed)
    got = []
    expected = len(sections) - (reset_after is not None)  # the section cut never ends
    stats = {"ticks": 0}

    async def producer(ctx):
        count = 0
        for items in sections:
            for j, item in enumerate(items):
                while rng.random() < gaps:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                put(ctx, item, j == len(items) - 1)
                while True:
                    _, _, ready = await ctx.tick().sample(dut.i.ready)
                    stats["ticks"] += 1
                    if ready:
                        break
                count += 1
                if count == reset_after:
                    ctx.set(dut.i.valid, 0)
                    ctx.set(cd.rst, 1)
                    await ctx.tick()
                    ctx.set(cd.rst, 0)
                    break
        ctx.set(dut.i.valid, 0)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(byte_sink(dut.o, rng, stall, got, cd.rst), background=True)

    async def deadline(ctx):  # the simulation runs until every section is out, or gives up
        total = sum(len(s) for s in sections)
        for _ in range(int(cycles_per_item / (1 - stall)) * total + 2000):
            if len(got) >= expected:
                return
            await ctx.tick()
        if must_finish:  # a lost item or byte would hang: fail instead
            raise AssertionError(f"{len(got)} of {expected} sections out before the deadline")

    sim.add_testbench(deadline)
    sim.run()
    _simulate.ticks = stats["ticks"]
    return got


def run(sections, seed=0, gaps=0.3, stall=0.3, reset_after=None, fifo_depth=32):
    """Feed the sections' bins (bit, context, bypass) to :class:`RangeEncoder`; returns the
    bytes of each section it finished."""

    def put(ctx, item, last):
        bit, c, bypass = item
        ctx.set(dut.i.p.bit, bit)
        ctx.set(dut.i.p.ctx, c)
        ctx.set(dut.i.p.bypass, bypass)
        ctx.set(dut.i.p.last, int(last))

    dut = RangeEncoder(fifo_depth)
    got = _simulate(dut, sections, put, seed, gaps, stall, reset_after, cycles_per_item=8, must_finish=False)
    run.ticks = _simulate.ticks
    return got


@pytest.mark.parametrize("kind", ["random", "skewed", "repeat", "few"])
def test_range_encoder_matches_reference(kind):
    rng = random.Random(kind)
    sections = [random_section(rng, n, kind) for n in (1, 2, 37, 600, 1500)]
    got = run(sections, seed=len(kind))
    assert got == [reference_section(s) for s in sections]


@pytest.mark.parametrize("gaps", [0.0, 0.5])
def test_range_encoder_forwarding(gaps):
    """A context back after 1, 2, 3 ... bins, with and without idle cycles between: the
    RAM read misses the updates of the two cycles before; they come from the forwarding
    registers (or, in a new section, from neither)."""
    rng = random.Random(17)
    sections = [random_section(rng, n, "few") for n in (3, 5, 800)]
    got = run(sections, seed=4, gaps=gaps, stall=0.0)
    assert got == [reference_section(s) for s in sections]


def test_range_encoder_heavy_back_pressure(monkeypatch):
    """The output ready one cycle in ten, the smallest FIFO: the input's credit must stop
    the bins before the record FIFO overflows (an event lost would change the bytes). The
    run fills the FIFO up to its credit: with 5 entries less of it (9: the credit covers
    the termination's events and the worst case, which this run does not reach) an event is
    lost and the bytes change, so a credit short by that much fails here."""
    from temposplit.hw import range_coder
    from temposplit.hw.range_coder import CREDIT

    rng = random.Random(23)
    # 150 contexts trained on 30 one bins, then a zero bin on each: about 7 bits a bin
    # at the bottom of the interval (no 0xFF runs), an event almost every bin
    contexts = rng.sample(range(N_CONTEXTS), 150)
    costly = [(1, c, 0) for c in contexts for _ in range(30)] + [(0, c, 0) for c in contexts]
    sections = [costly, random_section(rng, 300, "skewed"), random_section(rng, 2, "random")]
    want = [reference_section(s) for s in sections]
    assert run(sections, seed=6, gaps=0.0, stall=0.9, fifo_depth=CREDIT + 4) == want
    monkeypatch.setattr(range_coder, "CREDIT", CREDIT - 5)
    assert run(sections, seed=6, gaps=0.0, stall=0.9, fifo_depth=CREDIT + 4) != want


def test_range_encoder_fifo_depth_checked():
    from temposplit.hw.range_coder import CREDIT

    with pytest.raises(ValueError):
        RangeEncoder(CREDIT + 3)


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


def reachable_probabilities():
    """Every probability a context reaches from the start (p = 2048, n = 0) under 6.2.2's
    update, over all bin sequences."""
    seen, todo = set(), [(2048, 0)]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        for bit in (0, 1):
            c = ref.Context()
            c.prob, c.n = state
            c.update(bit)
            todo.append((c.prob, c.n))
    return {prob for prob, _ in seen}


def test_one_renormalization_shift_per_bin_suffices():
    """The range loop (stage C) forms the new range for none or one shift only, though
    6.2.1's loop allows two: every factor q a bin can have (p, 4096 - p of a reachable
    probability, or 2048) keeps ``(range >> 12) * q`` (range >= 2^24) at or above 2^16,
    so one shift brings it back to >= 2^24."""
    probs = reachable_probabilities()
    q_min = min(min(probs), min(4096 - p for p in probs), 2048)
    assert (1 << 12) * q_min >= 1 << 16, q_min


def test_range_encoder_extreme_probabilities():
    """Contexts driven to their smallest and largest probabilities, then the unlikely bin:
    the smallest factors q, the smallest new ranges (one shift each)."""
    rng = random.Random(31)
    # fresh contexts: 40 one bins take p to its floor (26), then a zero bin codes at q = p;
    # 40 zero bins take it to its ceiling (4070), then a one bin codes at q = 4096 - p
    down = [b for c in range(20) for b in [(1, c, 0)] * 40 + [(0, c, 0)]]
    up = [b for c in range(20, 40) for b in [(0, c, 0)] * 40 + [(1, c, 0)]]
    mixed = random_section(rng, 400, "skewed")
    sections = [down, up, down + up + mixed]
    got = run(sections, seed=8, gaps=0.1, stall=0.1)
    assert got == [reference_section(s) for s in sections]


# ----------------------------------------------------------------------------- anchors


async def feed_anchor(ctx, dut, section, rng, gaps, stats=None):
    """Stream one anchor section ((codes, reference codes or None, change map or None,
    n_bits, z_n)) into ``dut.i`` with random idle cycles, its configuration set first;
    ``stats["ticks"]`` counts the cycles the elements wait on."""
    import numpy as np

    codes, refc, dref, n_bits, z_n = section
    h, w, c = codes.shape
    for name, value in (("width", w), ("channels", c), ("n_bits", n_bits), ("z_n", z_n)):
        ctx.set(getattr(dut, name), value)
    ctx.set(dut.temporal, int(refc is not None))
    ctx.set(dut.i.valid, 0)
    await ctx.tick().repeat(CONFIG_CYCLES)  # (the configuration's terms are registers)
    pred = refc if refc is not None else np.zeros_like(codes)
    t = (dref if dref is not None else np.zeros(codes.shape, np.int8)).astype(np.int16) + 1
    flat = list(zip(codes.reshape(-1), pred.reshape(-1), t.reshape(-1), strict=True))
    for k, (xv, pv, tv) in enumerate(flat):
        while rng.random() < gaps:
            ctx.set(dut.i.valid, 0)
            await ctx.tick()
        ctx.set(dut.i.valid, 1)
        for field, value in (("x", xv), ("p", pv), ("t", tv)):
            ctx.set(getattr(dut.i.p, field), int(value))
        ctx.set(dut.i.p.last, int(k == len(flat) - 1))
        while True:
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            if stats is not None:
                stats["ticks"] += 1
            if ready:
                break
    ctx.set(dut.i.valid, 0)


def run_anchor(sections, seed=0, gaps=0.2, stall=0.2):
    """``sections``: (codes (H, W, C), reference codes or None, reference change map or
    None, n_bits, z_n); returns each section's bytes from the RTL."""

    from temposplit.hw.ctx_coder import AnchorCoder

    dut = AnchorCoder(line_elements=1024)
    rng = random.Random(seed)
    got = []
    stats = {"ticks": 0}

    async def producer(ctx):
        for si, section in enumerate(sections):
            await feed_anchor(ctx, dut, section, rng, gaps, stats)
            while len(got) < si + 1:  # the configuration changes between sections
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(byte_sink(dut.o, rng, stall, got), background=True)

    async def deadline(ctx):  # a lost element or event would hang the producer: fail instead
        total = sum(c.size for c, *_ in sections)
        for _ in range(int(60 / (1 - stall)) * total + 2000):
            await ctx.tick()
        raise AssertionError(f"{len(got)} of {len(sections)} sections out before the deadline")

    sim.add_testbench(deadline, background=True)
    sim.run()
    run_anchor.ticks = stats["ticks"]
    return got


def _anchor_cases(rng_np, shape, n_bits):
    import numpy as np

    top = (1 << n_bits) - 1
    z_n = int(rng_np.integers(0, top + 2))  # z_N may equal 2^N
    base = rng_np.integers(0, top + 1, shape).astype(np.uint8)
    skew = np.where(rng_np.random(shape) < 0.7, min(z_n, top), base).astype(np.uint8)
    refc = np.clip(skew.astype(np.int16) + rng_np.integers(-1, 2, shape), 0, top).astype(np.uint8)
    dref = rng_np.integers(-1, 2, shape).astype(np.int8)
    return [(skew, None, None, n_bits, z_n), (skew, refc, dref, n_bits, z_n), (base, refc, dref, n_bits, z_n)]


@pytest.mark.parametrize("n_bits", [2, 4, 6, 8])
def test_anchor_coder_matches_reference(n_bits):
    import numpy as np

    rng_np = np.random.default_rng(n_bits)
    sections = _anchor_cases(rng_np, (5, 7, 3), n_bits) + _anchor_cases(rng_np, (3, 4, 16), n_bits)
    got = run_anchor(sections, seed=n_bits)
    assert got == [ref.encode_anchor(c, r, d, n, z)[0] for c, r, d, n, z in sections]


@pytest.mark.parametrize("gaps", [0.0, 0.5])
def test_anchor_coder_one_channel(gaps):
    """C = 1 (the left neighbour is the element before) and W x C = 1 (so is the upper
    one): the buffers' words come from the write forwarded to the next element's read
    (or, after an idle cycle, from the RAM)."""
    import numpy as np

    rng_np = np.random.default_rng(31)
    sections = _anchor_cases(rng_np, (4, 9, 1), 4) + _anchor_cases(rng_np, (7, 1, 1), 6)
    got = run_anchor(sections, seed=5, gaps=gaps, stall=0.0)
    assert got == [ref.encode_anchor(c, r, d, n, z)[0] for c, r, d, n, z in sections]


def test_anchor_coder_heavy_back_pressure():
    """The output ready one cycle in ten: the coder's input stops, the element FIFO
    fills; the binarizer's credit must stop the elements before it overflows."""
    import numpy as np

    rng_np = np.random.default_rng(37)
    sections = _anchor_cases(rng_np, (4, 5, 6), 8)[1:]
    got = run_anchor(sections, seed=8, gaps=0.0, stall=0.9)
    assert got == [ref.encode_anchor(c, r, d, n, z)[0] for c, r, d, n, z in sections]


def test_anchor_coder_on_ssd_features():
    """Real codes: a corner of the SSD's features[13] fixture, requantized to N = 4, intra
    (its first frame) and temporal (the second against the first)."""
    from pathlib import Path

    import numpy as np

    from temposplit.codec.quantize import lut, zero_point_n

    fx = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "features" / "ssd-features.13.npz")
    key = next(k for k in fx.files if fx[k].dtype == np.uint8 and fx[k].ndim == 4)
    frames = fx[key]
    zkey = next((k for k in fx.files if "zero" in k), None)
    z8 = int(np.asarray(fx[zkey]).reshape(-1)[0]) if zkey else 0
    a, b = (np.ascontiguousarray(f.transpose(1, 2, 0)[:6, :6, :8]) for f in frames[:2])
    qa, qb = lut(z8, 4)[a], lut(z8, 4)[b]
    z_n = zero_point_n(z8, 4)
    _, da = ref.encode_anchor(qa, None, None, 4, z_n)
    sections = [(qa, None, None, 4, z_n), (qb, qa, da, 4, z_n)]
    got = run_anchor(sections, seed=1)
    assert got == [ref.encode_anchor(c, r, d, n, z)[0] for c, r, d, n, z in sections]


def test_anchor_coder_one_bin_per_cycle(monkeypatch):
    """Without gaps or back-pressure the elements go in at the bins' rate: one bin a cycle."""
    import numpy as np

    bins = []
    original = ref.RangeEncoder.bit

    def counted(self, ctx, b):
        bins.append(b)
        return original(self, ctx, b)

    rng_np = np.random.default_rng(11)
    codes, refc, dref, n_bits, z_n = _anchor_cases(rng_np, (6, 6, 24), 4)[1]
    monkeypatch.setattr(ref.RangeEncoder, "bit", counted)
    expected = ref.encode_anchor(codes, refc, dref, n_bits, z_n)[0]
    monkeypatch.setattr(ref.RangeEncoder, "bit", original)
    got = run_anchor([(codes, refc, dref, n_bits, z_n)], gaps=0.0, stall=0.0)
    assert got == [expected]
    # the producer's ticks: every element but the last leaves after its bins, plus the
    # pipeline's fill (2 cycles)
    assert run_anchor.ticks <= len(bins) + 2, (run_anchor.ticks, len(bins))


# ----------------------------------------------------------------------------- value records


def run_values(sections, seed=0, gaps=0.2, stall=0.2, reset_after=None):
    """``sections``: the stream words of value records (codec/ctx_records.py ``words``);
    returns each section's bytes from :class:`ValueCoder`."""
    from temposplit.hw.ctx_coder import ValueCoder

    def put(ctx, word, last):
        ctx.set(dut.i.p.word, int(word))
        ctx.set(dut.i.p.last, int(last))

    dut = ValueCoder()
    got = _simulate(dut, sections, put, seed, gaps, stall, reset_after, cycles_per_item=60, must_finish=True)
    run_values.ticks = _simulate.ticks
    return got


def _value_sections(seed):
    """Predicted frames (vectors, flags, residual blocks; shared and per-channel vectors)
    and anchors (intra, temporal) as the stream words of their records (runs of zero
    values and single records), with the sections the codec writes."""
    import numpy as np

    from temposplit.codec import ctx
    from temposplit.codec import ctx_records as V
    from temposplit.codec.synthetic import ctx_section_inputs

    rng = np.random.default_rng(seed)
    out = []
    for setting in ((4, 7, 2, (5, 6, 3), False), (8, 3, 3, (7, 4, 2), True)):
        for kind, args in ctx_section_inputs(rng, *setting):
            records = V.section_records(kind, args)[0]
            out.append((V.words(records), (ctx.encode_pred if kind == "pred" else ctx.encode_anchor)(*args)[0]))
    assert any(w >> V.RUN_FLAG for words, _ in out for w in words.tolist())  # run words among them
    return out


@pytest.mark.parametrize("gaps,stall", [(0.0, 0.0), (0.3, 0.3), (0.0, 0.9)])
def test_value_coder_matches_the_codec(gaps, stall):
    sections = _value_sections(3)
    got = run_values([r for r, _ in sections], seed=7, gaps=gaps, stall=stall)
    assert got == [s for _, s in sections]


def test_value_coder_reset_mid_section():
    sections = _value_sections(4)
    got = run_values([r for r, _ in sections[:3]], seed=2, reset_after=len(sections[0][0]) // 2)
    assert got == [s for _, s in sections[1:3]]


def test_value_coder_one_bin_per_cycle():
    """Without gaps or back-pressure the words go in at the bins' rate (a run word's values
    one a cycle, like any value's bins)."""
    from temposplit.codec import ctx_records as V

    words, section = _value_sections(5)[0]
    bins = len(list(V.record_bins(V.records_of_words(words))))
    queued = len(list(V.record_bins(V.records_of_words(words[-6:]))))  # held in the FIFO and stages
    assert run_values([words], gaps=0.0, stall=0.0) == [section]
    assert bins - queued <= run_values.ticks <= bins + 4


# ----------------------------------------------------------------------------- two sections at once


def byte_sink(port, rng, stall, got, rst=None):
    """A testbench taking a byte stream's sections (``last`` ends one) into ``got``, with
    random back-pressure (``stall``); ``rst``: a reset signal that drops the section in
    progress."""

    rst = Signal() if rst is None else rst  # (never set)

    async def take(ctx):
        cur = bytearray()
        while True:
            ready = rng.random() >= stall
            ctx.set(port.ready, int(ready))
            _, _, reset, valid, data, last = await ctx.tick().sample(rst, port.valid, port.p.data, port.p.last)
            if reset:
                cur = bytearray()
                continue
            if ready and valid:
                cur.append(int(data))
                if last:
                    got.append(bytes(cur))
                    cur = bytearray()

    return take


def lanes_deadline(got, expected, cycles):
    """A testbench that ends the simulation once every lane has its expected sections
    (``got[k]`` against ``expected[k]``), and fails it after ``cycles`` (a lost bin or
    event would hang it)."""

    async def deadline(ctx):
        for _ in range(cycles):
            if all(len(g) >= e for g, e in zip(got, expected, strict=True)):
                return
            await ctx.tick()
        raise AssertionError(f"{[len(g) for g in got]} of {expected} sections out before the deadline")

    return deadline


def run_dual(lanes, seed=0, gaps=(0.3, 0.3), stall=(0.3, 0.3), reset_after=None, fifo_depth=32, cycles=None):
    """Feed each lane's sections (lists of (bit, context, bypass) bins) to
    :class:`DualRangeEncoder` side by side; returns, per lane, the bytes of each section it
    finished. ``reset_after``: a reset after that many of lane 0's bins; the section each
    lane is in then is dropped by its producer and never ends. ``run_dual.ticks``: each
    producer's cycles, from the first bin to the handshake of its last. ``cycles``: the
    deadline (by default far more than the sections need)."""
    dut = DualRangeEncoder(fifo_depth)
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    rng = random.Random(seed)
    got = [[] for _ in range(LANES)]
    expected = [len(s) - (reset_after is not None) for s in lanes]
    state = {"reset": False, "ticks": [0] * LANES}

    def producer(k):
        port = dut.i[k]

        async def feed(ctx):
            count = 0
            for items in lanes[k]:
                seen_reset = state["reset"]
                for j, (bit, c, bypass) in enumerate(items):
                    while rng.random() < gaps[k] and state["reset"] == seen_reset:
                        ctx.set(port.valid, 0)
                        await ctx.tick()
                    if state["reset"] != seen_reset:  # this section was cut: on to the next
                        for _ in range(2):
                            await ctx.tick()
                        break
                    ctx.set(port.valid, 1)
                    ctx.set(port.p.bit, bit)
                    ctx.set(port.p.ctx, c)
                    ctx.set(port.p.bypass, bypass)
                    ctx.set(port.p.last, int(j == len(items) - 1))
                    while True:
                        _, _, ready = await ctx.tick().sample(port.ready)
                        state["ticks"][k] += 1
                        if ready or state["reset"] != seen_reset:
                            break
                    if state["reset"] != seen_reset:  # this section was cut: on to the next
                        ctx.set(port.valid, 0)
                        for _ in range(2):  # past the reset's cycle, whichever side of it
                            await ctx.tick()
                        break
                    count += 1
                    if k == 0 and count == reset_after:
                        ctx.set(port.valid, 0)
                        ctx.set(cd.rst, 1)
                        state["reset"] = True
                        await ctx.tick()
                        ctx.set(cd.rst, 0)
                        break
            ctx.set(port.valid, 0)

        return feed

    sim = Simulator(top)
    sim.add_clock(1e-8)
    for k in range(LANES):
        sim.add_testbench(producer(k))
        sim.add_testbench(byte_sink(dut.o[k], rng, stall[k], got[k], cd.rst), background=True)

    total = sum(len(s) for sections in lanes for s in sections)
    sim.add_testbench(lanes_deadline(got, expected, cycles or int(16 / (1 - max(stall))) * total + 4000))
    sim.run()
    run_dual.ticks = state["ticks"]
    return got


def want_dual(lanes):
    return [[reference_section(s) for s in sections] for sections in lanes]


@pytest.mark.parametrize("kind", ["random", "skewed", "repeat", "few"])
def test_dual_range_encoder_matches_reference(kind):
    """Both lanes busy, sections of different lengths, so that one lane's sections end
    (and its termination runs) while the other's bins go on."""
    rng = random.Random(kind)
    lanes = [[random_section(rng, n, kind) for n in sizes] for sizes in ((1, 37, 600, 2), (500, 2, 1, 300))]
    assert run_dual(lanes, seed=len(kind)) == want_dual(lanes)


@pytest.mark.parametrize("gaps", [0.0, 0.5])
def test_dual_range_encoder_forwarding(gaps):
    """A context back after 1, 2, 3 ... of its lane's bins, the two lanes on the same
    context numbers (their tables are apart: a lane's update must not reach the other)."""
    rng = random.Random(17)
    hot = random_section(rng, 800, "few")
    lanes = [[random_section(rng, n, "few") for n in (3, 5)] + [hot], [[(1 - b, c, y) for b, c, y in hot]]]
    assert run_dual(lanes, seed=4, gaps=(gaps, gaps), stall=(0.0, 0.0)) == want_dual(lanes)


def test_dual_range_encoder_one_lane_alone():
    """Lane 1 idle: lane 0 codes as RangeEncoder does, a bin every two cycles; then lane 0
    idle and lane 1 alone."""
    rng = random.Random(3)
    lanes = [[random_section(rng, 700, "skewed")], []]
    assert run_dual(lanes, gaps=(0.0, 0.0), stall=(0.0, 0.0)) == want_dual(lanes)
    assert 2 * 700 - 4 <= run_dual.ticks[0] <= 2 * 700, run_dual.ticks
    lanes = [[], [random_section(rng, 300, "random"), random_section(rng, 40, "repeat")]]
    assert run_dual(lanes, seed=2) == want_dual(lanes)


def test_dual_range_encoder_a_bin_a_cycle():
    """Both lanes fed without gaps or back-pressure: a bin of each every two cycles, so the
    two lanes' 2 x 3000 bins enter in about 6000 cycles (less the two a lane's input
    register slice holds)."""
    rng = random.Random(5)
    lanes = [[random_section(rng, 3000, "skewed")], [random_section(rng, 3000, "random")]]
    assert run_dual(lanes, gaps=(0.0, 0.0), stall=(0.0, 0.0)) == want_dual(lanes)
    assert all(2 * 3000 - 4 <= t <= 2 * 3000 for t in run_dual.ticks), run_dual.ticks


@pytest.mark.slow  # about 100 s: the short credit's run goes on to its deadline
def test_dual_range_encoder_back_pressure_on_one_lane(monkeypatch):
    """Lane 0's output ready one cycle in ten, the smallest FIFO, lane 1's always: lane 0's
    credit must stop its bins before its record FIFO overflows, and lane 1 must go on. A
    lane has half RangeEncoder's bins in flight: this run needs a credit of 6 (measured);
    with 5 an event is lost, and the section's bytes change or it never ends, so the run
    can fail."""
    from temposplit.hw import dual_range_coder

    rng = random.Random(23)
    contexts = rng.sample(range(N_CONTEXTS), 150)
    costly = [(1, c, 0) for c in contexts for _ in range(30)] + [(0, c, 0) for c in contexts]
    lanes = [[costly, random_section(rng, 300, "skewed")], [random_section(rng, 4000, "random")]]
    expect = want_dual(lanes)
    assert run_dual(lanes, seed=6, gaps=(0.0, 0.0), stall=(0.9, 0.0), fifo_depth=CREDIT + 4) == expect
    # lane 1 was not held back by lane 0's output: its bins went in a bin every two cycles
    assert run_dual.ticks[1] <= 2 * 4000 + 8, run_dual.ticks
    lanes = [[costly], []]
    expect = want_dual(lanes)
    monkeypatch.setattr(dual_range_coder, "CREDIT", 6)
    assert run_dual(lanes, seed=6, gaps=(0.0, 0.0), stall=(0.9, 0.0), fifo_depth=CREDIT + 4) == expect
    monkeypatch.setattr(dual_range_coder, "CREDIT", 5)
    with pytest.raises(AssertionError):
        assert (
            run_dual(lanes, seed=6, gaps=(0.0, 0.0), stall=(0.9, 0.0), fifo_depth=CREDIT + 4, cycles=80_000) == expect
        )


def test_dual_range_encoder_extreme_probabilities():
    down = [b for c in range(20) for b in [(1, c, 0)] * 40 + [(0, c, 0)]]
    up = [b for c in range(20, 40) for b in [(0, c, 0)] * 40 + [(1, c, 0)]]
    lanes = [[down, up], [up + down]]
    assert run_dual(lanes, seed=8, gaps=(0.1, 0.2), stall=(0.1, 0.2)) == want_dual(lanes)


def test_dual_range_encoder_reset_mid_section():
    """A reset after 200 of lane 0's bins cuts both lanes' sections: the sections after it
    come out as if the encoder had just started."""
    rng = random.Random(9)
    lanes = [
        [random_section(rng, 400, "random"), random_section(rng, 50, "skewed"), random_section(rng, 700, "few")],
        [random_section(rng, 2000, "random"), random_section(rng, 600, "skewed")],
    ]
    got = run_dual(lanes, seed=3, reset_after=200)
    expect = want_dual(lanes)
    assert got[0][-2:] == expect[0][-2:]
    assert got[1][-1:] == expect[1][-1:]


def test_dual_range_encoder_fifo_depth_checked():
    with pytest.raises(ValueError):
        DualRangeEncoder(CREDIT + 3)


def run_dual_ctx(anchors, lane1, records0=None, seed=0, gaps=0.2, stall=0.2):
    """:class:`DualCtxCoder`: lane 0 codes ``anchors`` ((codes, reference codes or None,
    change map or None, n_bits, z_n), as run_anchor) or, given ``records0``, those value
    records' stream words; lane 1 at the same time ``lane1``'s stream words. Returns each
    lane's sections' bytes."""

    from temposplit.hw.ctx_coder import DualCtxCoder

    dut = DualCtxCoder(line_elements=1024)
    rng = random.Random(seed)
    got = [[], []]
    expected = [len(anchors) if records0 is None else len(records0), len(lane1)]

    async def feed_words(ctx, port, sections):
        for words in sections:
            for j, word in enumerate(words.tolist()):
                while rng.random() < gaps:
                    ctx.set(port.valid, 0)
                    await ctx.tick()
                ctx.set(port.valid, 1)
                ctx.set(port.p.word, int(word))
                ctx.set(port.p.last, int(j == len(words) - 1))
                await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def lane0(ctx):
        if records0 is not None:
            ctx.set(dut.records, 1)
            await feed_words(ctx, dut.v[0], records0)
            return
        for si, section in enumerate(anchors):
            await feed_anchor(ctx, dut, section, rng, gaps)
            while len(got[0]) < si + 1:  # the configuration changes between sections
                await ctx.tick()

    async def lane_1(ctx):
        await feed_words(ctx, dut.v[1], lane1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(lane0)
    sim.add_testbench(lane_1)
    for k in range(2):
        sim.add_testbench(byte_sink(dut.o[k], rng, stall, got[k]), background=True)

    sim.add_testbench(lanes_deadline(got, expected, 400_000))
    sim.run()
    return got


def test_dual_ctx_coder_anchor_beside_records():
    """Lane 0 an anchor's elements (intra and temporal, contexts computed by the front),
    lane 1 value records at the same time; then lane 0 value records too."""
    import numpy as np

    rng_np = np.random.default_rng(21)
    anchors = _anchor_cases(rng_np, (5, 7, 12), 4) + _anchor_cases(rng_np, (3, 4, 40), 6)[:1]
    values = _value_sections(8)
    got = run_dual_ctx(anchors, [w for w, _ in values[:4]], seed=5)
    assert got[0] == [ref.encode_anchor(*a)[0] for a in anchors]
    assert got[1] == [s for _, s in values[:4]]
    got = run_dual_ctx([], [w for w, _ in values[4:]], records0=[w for w, _ in values[:4]], seed=6)
    assert got == [[s for _, s in values[:4]], [s for _, s in values[4:]]]


@pytest.mark.parametrize("gaps", [0.0, 0.4])
def test_dual_range_encoder_short_sections_on_both_lanes(gaps):
    """Sections of 1-5 bins on both lanes, so that the two lanes' sections end within a
    few cycles of each other: a lane's input reopens only after its own termination (the
    other lane's must not reopen it early, or its next section's bins would meet the
    termination still running)."""
    rng = random.Random(41 + int(gaps * 10))
    lanes = [[random_section(rng, rng.randint(1, 5), "few") for _ in range(40)] for _ in range(2)]
    assert run_dual(lanes, seed=9, gaps=(gaps, gaps), stall=(0.0, 0.1)) == want_dual(lanes)
