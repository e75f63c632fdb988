"""The cycle model's table and the ``temposplit bench fabric`` command."""

import json

from temposplit.hw import cyclemodel
from temposplit.hw import motion_estimator as me


def test_targets_met_at_the_required_cuts():
    rows = cyclemodel.table()
    targets = [r for r in rows if r.name.startswith("ssd") or r.shape == (25, 34, 2048)]
    assert len(targets) == 7
    for r in targets:
        assert min(r.anchor_fps, r.pred_fps, r.group_fps) >= 30, r
        assert cyclemodel.CLOCK_HZ / r.key_cycles >= 30, r  # a KEY: HISTOGRAM, then ENCODE
        assert r.fits(), r


def test_key_is_a_histogram_pass_at_a_word_a_cycle_then_encode():
    from temposplit.hw import histogram as hist

    (r,) = [r for r in cyclemodel.table() if r.shape == (25, 34, 2048)]
    n = 25 * 34 * 2048
    words = n // 8
    assert (
        cyclemodel.hist_cycles(n)
        == 1
        + hist.CLEAR_CYCLES
        + words
        + hist.INPUT_STAGES
        + hist.COUNT_STAGES
        + (hist.SIZE + hist.FOLD_STAGES)
        + 1
        + cyclemodel.PORT_OUT  # the empty TLAST word through the output port's slice
    )
    assert r.key_cycles == r.anchor_cycles + cyclemodel.hist_cycles(n)
    assert r.key_cycles < 1.13 * r.anchor_cycles


def test_motion_cycles_count_skipped_candidates():
    # a 1-block map: every neighbour is outside it, so only the centre is scored
    one = cyclemodel.motion_cycles((4, 4, 8), 4, 7)
    assert (
        one
        == max(cyclemodel.START_LATENCY + cyclemodel.PORT_IN + cyclemodel.ME_IN, 1 + me.BLOCK_CYCLES)
        + 16
        + me.EMIT_CYCLES
        + (me.SETUP_CYCLES + 16 + me.DRAIN_CYCLES + me.COMPARE_CYCLES)
        + 3 * 8 * me.INVALID_CYCLES
    )


def test_bench_fabric_prints_json(capsys):
    from temposplit.cli import main

    assert main(["bench", "fabric", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {d["name"] for d in lines} >= {"ssd features[13]", "r50 layer4"}


def test_ctx_bins_match_the_reference_coder():
    """The cycle model's bin count of a ctx anchor is the number of bins
    codec/ctx_reference.py codes: N = 2..8, z_N at the edges (0, 2^N - 1, 2^N), intra and
    temporal, maps with large magnitudes (suffix bins)."""
    import numpy as np

    from temposplit.codec import ctx_reference as ref

    count = [0]
    original = ref.RangeEncoder.bit

    def counted(self, ctx, b):
        count[0] += 1
        return original(self, ctx, b)

    rng = np.random.default_rng(3)
    ref.RangeEncoder.bit = counted
    try:
        for n in (2, 4, 5, 8):
            top = (1 << n) - 1
            for z in (0, 3, top, top + 1):
                codes = rng.integers(0, top + 1, (3, 4, 5)).astype(np.uint8)
                refc = rng.integers(0, top + 1, (3, 4, 5)).astype(np.uint8)
                dref = rng.integers(-1, 2, (3, 4, 5)).astype(np.int8)
                for r, d in ((None, None), (refc, dref)):
                    count[0] = 0
                    ref.encode_anchor(codes, r, d, n, z)
                    assert cyclemodel.ctx_bins(codes, r, n, z) == count[0], (n, z, r is None)
    finally:
        ref.RangeEncoder.bit = original


def test_ctx_rows():
    rows = {r.name: r for r in cyclemodel.table()}
    r = rows["ssd features[10]"]
    elements = 19 * 19 * 64
    # engine 0's lane 0: a bin every two cycles (the default build's two lanes an engine)
    assert cyclemodel.CTX_LANES == 2
    assert r.ctx_anchor_fps == cyclemodel.CLOCK_HZ / (
        cyclemodel.CTX_FILL + cyclemodel.CTX_TEMPORAL_FILL + 2 * int(elements * cyclemodel.CTX_BINS_TEMPORAL)
    )
    assert r.ctx_key_fps < r.ctx_anchor_fps
    # a predicted frame: its MOTION, then its records' words at the DMA's rate (a word a cycle)
    words, bins = int(elements * cyclemodel.CTX_PRED_WORDS), int(elements * cyclemodel.CTX_PRED_BINS)
    assert r.ctx_pred_fps == cyclemodel.CLOCK_HZ / (r.pred_cycles + cyclemodel.CTX_RECORDS_FILL + max(2 * bins, words))
    assert r.ctx_slices == 1
    # a row of 34 x 2048 is over the row buffer: an anchor's records (the bins bound both
    # the KEY's 4.52 and a temporal anchor's 1.58 a element against their words' 2 x 0.99
    # and 2 x 0.28 cycles), then LOAD_REF of nothing (the map is over the on-chip
    # reference: BAND_MOTION keeps it on the PS)
    # ... in S = 6 channel slices on the default build's 3 engines of 2 lanes (1.74 M
    # elements >= 6 x 2^18): each lane unit a sixth of the bins at a bin every two cycles,
    # and the KEY's and the predicted frame's 30 frames/s
    r50 = rows["r50 layer4"]
    n = 25 * 34 * 2048
    assert (r50.ctx_slices, r50.ctx_engines, r50.ctx_lanes) == (6, 3, 2)
    fill = cyclemodel.CTX_SLICES_FILL
    sixth = int(int(n * cyclemodel.CTX_BINS_INTRA) * 342 / 2048)  # slices 1, 3, 5: 342 channels
    assert r50.ctx_key_fps == cyclemodel.CLOCK_HZ / (fill + max(2 * sixth, int(int(n * cyclemodel.CTX_WORDS_INTRA))))
    assert r50.ctx_key_fps >= 30 and r50.ctx_anchor_fps >= 30 and r50.ctx_pred_fps >= 30


def test_a_ctx_key_over_one_records_pass_is_counted_as_the_passes_it_takes():
    """200x272x256's KEY is 13.8 M stream words, over one pass's 2^23 - 1: the engine codes
    its six slices in two passes of three (regmap.ctx_passes), and the table counts both
    (it counted one pass: 4.7 frames/s instead of 2.4)."""
    from temposplit.hw import regmap

    n, c = 200 * 272 * 256, 256
    words = cyclemodel._channel_split(int(n * cyclemodel.CTX_WORDS_INTRA), c, 6)
    bins = cyclemodel._channel_split(int(n * cyclemodel.CTX_BINS_INTRA), c, 6)
    passes, alone = regmap.ctx_passes(words)
    assert passes == [[0, 1, 2], [3, 4, 5]] and alone == []
    each = [cyclemodel.ctx_slices_cycles([bins[k] for k in p], [words[k] for k in p], 3, 1.0, 2) for p in passes]
    r = {r.name: r for r in cyclemodel.table()}["r50 layer1"]
    word_cycles = cyclemodel.LANES * cyclemodel.CLOCK_HZ / cyclemodel.DMA_MM2S_BPS
    assert word_cycles == 1.0
    assert r.ctx_key_fps == cyclemodel.CLOCK_HZ / sum(each)  # no LOAD_REF: over the on-chip reference
    assert r.ctx_key_fps < cyclemodel.CLOCK_HZ / max(each)


def test_ctx_records_cycles():
    f = cyclemodel.CTX_RECORDS_FILL
    assert cyclemodel.ctx_records_cycles(100, 40, lanes=1) == f + 100
    assert cyclemodel.ctx_records_cycles(100, 40) == f + 200  # a lane: a bin every two cycles
    assert cyclemodel.ctx_records_cycles(100, 80, word_cycles=3.0) == f + 240


def test_ctx_slices_cycles():
    f, g = cyclemodel.CTX_SLICES_FILL, cyclemodel.CTX_SLICE_GAP
    # S = 1 is the plain records pass
    assert cyclemodel.ctx_slices_cycles([100], [40]) == cyclemodel.ctx_records_cycles(100, 40)
    # one lane an engine, S <= E: the slowest engine
    assert cyclemodel.ctx_slices_cycles([100, 300, 200], [10, 10, 10], engines=3, lanes=1) == f + 300
    # S > E: slice i on engine i mod E, one after another, a gap each
    assert cyclemodel.ctx_slices_cycles([100, 300, 200, 50, 10], [1] * 5, engines=3, lanes=1) == f + 300 + 10 + g
    # two lanes: slice i on unit i mod 2E, a bin every two cycles
    assert cyclemodel.ctx_slices_cycles([100, 300, 200, 50, 10], [1] * 5, engines=3) == f + 600
    assert cyclemodel.ctx_slices_cycles([100, 10, 10, 10, 10, 10, 250], [1] * 7, engines=3) == f + 700 + g
    # the words: at most one a cycle (or every word_cycles)
    assert cyclemodel.ctx_slices_cycles([10, 10], [400, 400], engines=3) == f + 800
    assert cyclemodel.ctx_slices_cycles([10, 10], [400, 400], engines=3, word_cycles=2.0) == f + 1600
    sizes = ((1 << 19) - 1, 1 << 19, 3 << 18, 6 << 18, 1 << 24)
    assert [cyclemodel.ctx_slices_for(n) for n in sizes] == [1, 2, 3, 6, 6]


def test_a_map_no_band_plan_fits_is_software_tss_not_a_crash(capsys):
    from temposplit.cli import main

    r = cyclemodel.row("r50 layer1", (200, 272, 256), 8, search=15)  # a 38-row band does not fit
    assert "no plan" in r.design
    assert r.pred_cycles is None and r.pred_fps is None and r.group_fps is None and r.ctx_pred_fps is None
    assert r.anchor_fps > 0  # anchors are still the fabric's
    assert main(["bench", "fabric", "--search", "15"]) == 0
    out = capsys.readouterr().out
    assert "no plan (TSS in software)" in out and "software" in out
    # --json: no figure is null, not 0.0 frames/s (which read as a fabric that never finishes)
    assert main(["bench", "fabric", "--search", "15", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    soft = rows["r50 layer1"]
    assert [soft[k] for k in ("pred_cycles", "pred_fps", "group_fps", "ctx_pred_fps")] == [None] * 4
    assert soft["anchor_fps"] > 0 and soft["ctx_key_fps"] > 0
    assert all(r["pred_fps"] > 0 and r["pred_cycles"] > 0 for name, r in rows.items() if name != "r50 layer1")


def _fabric_doc() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "docs" / "fabric.md").read_text()


def test_the_documented_throughput_block_is_what_the_bench_prints(capsys):
    """docs/fabric.md's "Throughput" block is ``temposplit bench fabric``'s output, as it is."""
    import re

    from temposplit.cli import main

    assert main(["bench", "fabric"]) == 0
    printed = capsys.readouterr().out
    (block,) = re.findall(r"```\n(cut .*?)```", _fabric_doc(), re.S)
    assert block == printed, "docs/fabric.md's Throughput block differs from `temposplit bench fabric`: paste it again"


def test_the_documented_fills_and_histogram_pass_are_the_models():
    """The figures docs/fabric.md gives in words are the model's constants: a ctx anchor's
    fill (CTX_FILL, temporal CTX_TEMPORAL_FILL more), the histogram pass's fold
    (FOLD_CYCLES) and the pass's sum (HIST_HEAD, HIST_TAIL: the output port's slice
    included), and the "What 30 frames/s ... needs" table's last column, which it says is
    the table's 25x34x2048 row."""
    import re

    from temposplit.hw import histogram as hist

    doc = " ".join(_fabric_doc().split())  # a figure split over two lines reads as one
    fill, temporal = map(int, re.search(r"plus (\d+) cycles of fill \((\d+) temporal", doc).groups())
    assert (fill, temporal) == (cyclemodel.CTX_FILL, cyclemodel.CTX_FILL + cyclemodel.CTX_TEMPORAL_FILL)
    clear, fold = map(
        int, re.search(r"after a (\d+)-cycle clear and then (\d+) cycles of the banks' fold", doc).groups()
    )
    assert (clear, fold) == (hist.CLEAR_CYCLES, hist.FOLD_CYCLES)
    terms = re.search(r"a pass is ([\w\s+()']*?) cycles \(`cyclemodel.hist_cycles`", doc).group(1)
    terms = re.sub(r"\([^)]*\)", "", terms).replace("a word a cycle", "0").split("+")
    assert sum(int(t) for t in terms) == cyclemodel.HIST_HEAD + cyclemodel.HIST_TAIL
    (r,) = [r for r in cyclemodel.table() if r.shape == (25, 34, 2048)]
    for frame, fps in (("KEY", r.ctx_key_fps), ("temporal anchor", r.ctx_anchor_fps), ("predicted", r.ctx_pred_fps)):
        cells = re.search(rf"\| {frame}\b[^|]*(\|[^|]*){{5}}\|", doc).group(1)
        assert cells.strip("| *") == f"{fps:.1f}", (frame, cells)
