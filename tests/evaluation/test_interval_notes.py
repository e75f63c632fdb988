"""Where the reports give no interval, and say why: a clip too short for the block bootstrap,
a missing scoring file, ``--replicates 0``; the note of a clip without a frequent category;
the frame codecs' lines of the per-cut figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bjontegaard")
pytest.importorskip("pycocotools")

from test_statistics_reference import _box_rows  # noqa: E402  (conftest.py: this folder on sys.path)

from temposplit.evaluation import bootstrap  # noqa: E402
from temposplit.evaluation.summary import (  # noqa: E402
    NO_FREQUENT,
    bd_cell,
    bd_rows,
    pooled,
    score_interval,
    summarize_clip,
)

CURVE = {"crf=43": 9.0, "crf=33": 5.0, "crf=23": 2.5, "crf=13": 1.0}
FEATURES = {"a": 3.0, "b": 0.5, "c": 7.0}
RATES = {"crf=43": 800, "crf=33": 1600, "crf=23": 3200, "crf=13": 9000, "a": 500, "b": 4000, "c": 300}


def _rows(tmp_path: Path, clip: str = "clipx", n: int = 40, boxes=(1, 5), codecs=("h264",), frequent=False):
    """One clip's rows (features a, b, c; each codec's curve over four crf values), each
    row's per-frame outcome saved where the harness saves it (``<tmp_path>/evals``).
    Every reference box is of category 1; ``frequent``: the rows carry the frequent-category
    scores (category 1 then needs >= 50 boxes, which ``boxes`` = (1, 5) a frame gives at 40
    frames)."""
    noise = {f"chain+residual:{k}": v for k, v in FEATURES.items()}
    rates = {f"chain+residual:{k}": RATES[k] for k in FEATURES}
    for codec in codecs:
        noise |= {f"{codec}:{k}": v for k, v in CURVE.items()}
        rates |= {f"{codec}:{k}": RATES[k] * (1.1 if codec == "h265" else 1.0) for k in CURVE}
    return _box_rows(tmp_path, clip, noise, rates, n=n, boxes=boxes, frequent=frequent)


def _report(tmp_path: Path, rows, replicates=50) -> str:
    from temposplit.evaluation.report import write_report

    (tmp_path / "meta.json").write_text(json.dumps({"settings": {"cuts": ["features.10"]}}))
    write_report(tmp_path, rows, figures=False, replicates=replicates)
    return (tmp_path / "report.md").read_text()


# --------------------------------------------------------------------------- too few frames


def test_two_blocks_of_frames_are_the_least_an_interval_needs():
    assert not bootstrap.enough_frames(19) and bootstrap.enough_frames(20)
    assert bootstrap.enough_frames(10, block=5)  # 2 blocks of 5
    # One block: every circular resample takes every frame once (the clip rotated).
    w = bootstrap.resample_weights(bootstrap.block_resamples(8, circular=True, replicates=20), 8)
    assert np.all(w == 1)


@pytest.mark.parametrize("n", [10, 19])
def test_a_clip_too_short_for_the_bootstrap_has_no_interval_and_says_so(tmp_path, n):
    rows, root = _rows(tmp_path, n=n)
    s = summarize_clip(rows, root, replicates=50)
    e = s.bd[("map50_95", "h264")]
    assert math.isfinite(e["bd_rate"])
    assert math.isnan(e["lo"]) and math.isnan(e["hi"])  # not the point printed as an interval
    assert e["interval_note"].startswith(bootstrap.TOO_FEW)
    assert f"[{bootstrap.TOO_FEW}" in bd_cell(e)
    assert all(math.isnan(v) for v in score_interval(s, rows[0], "map50"))
    csv_row = next(r for r in bd_rows([s]) if r["clip"] == "clipx" and r["metric"] == "map50_95")
    assert csv_row["ci_note"].startswith(bootstrap.TOO_FEW)
    mean = next(r for r in bd_rows([s]) if r["clip"] == "mean" and r["metric"] == "map50_95")
    assert math.isnan(mean["ci_low"]) and mean["ci_note"].startswith(bootstrap.TOO_FEW)
    md = _report(tmp_path, rows)
    assert f"No intervals on clipx: {bootstrap.TOO_FEW}" in md
    assert "[no interval]" not in md


def test_two_blocks_of_frames_give_an_interval_of_some_width(tmp_path):
    rows, root = _rows(tmp_path, n=20)
    e = summarize_clip(rows, root, replicates=50).bd[("map50_95", "h264")]
    assert e["lo"] < e["hi"] and not e["interval_note"]


# --------------------------------------------------------------------------- a missing scoring file


def test_the_frequent_categories_come_from_any_scoring_file_of_the_clip(tmp_path):
    rows, root = _rows(tmp_path, frequent=True)
    assert summarize_clip(rows, root, replicates=20).frequent == [1]
    (root / rows[0]["evals"]).unlink()  # the first row's file
    s = summarize_clip(rows, root, replicates=20)
    assert s.frequent == [1]
    assert np.all(np.isfinite(s.intervals[rows[-1]["key"]][:, 2:]))  # the frequent scores are resampled


def test_a_row_without_its_scoring_file_takes_the_interval_of_the_bd_rates_that_use_it(tmp_path):
    rows, root = _rows(tmp_path, codecs=("h264", "h265"))
    full = summarize_clip(rows, root, replicates=50)
    gone = next(r for r in rows if r["key"] == "clipx|h264:crf=23")
    (root / gone["evals"]).unlink()
    s = summarize_clip(rows, root, replicates=50)
    assert s.missing == [gone["key"]]
    for metric in ("map50", "map50_95"):
        h264, h265 = s.bd[(metric, "h264")], s.bd[(metric, "h265")]
        assert h264["bd_rate"] == full.bd[(metric, "h264")]["bd_rate"]  # the point keeps the row
        assert math.isnan(h264["lo"]) and "without a scoring file" in h264["interval_note"]
        assert "without a scoring file" in bd_cell(h264)
        # Another curve does not use the row: its interval is the one of the complete clip.
        assert (h265["lo"], h265["hi"]) == (full.bd[(metric, "h265")]["lo"], full.bd[(metric, "h265")]["hi"])
    # A feature row is in every BD-rate of the clip: none keeps an interval.
    (root / rows[0]["evals"]).unlink()
    s = summarize_clip(rows, root, replicates=50)
    for key in (("map50_95", "h264"), ("map50_95", "h265"), ("map50", "h265")):
        assert math.isnan(s.bd[key]["lo"]) and "without a scoring file" in s.bd[key]["interval_note"]
    md = _report(tmp_path, rows)
    assert "Without their scoring file" in md and "`clipx|h264:crf=23`" in md


def test_frequent_categories_that_no_file_can_tell_are_said_to_be_unknown(tmp_path):
    rows, root = _rows(tmp_path, frequent=True)
    for r in rows:
        (root / r["evals"]).unlink()
    s = summarize_clip(rows, root, replicates=20)
    assert s.frequent is None
    assert "Frequent categories (>= 50 reference boxes): could not be determined" in _report(tmp_path, rows)


# --------------------------------------------------------------------------- --replicates 0


def test_without_resamples_the_cells_say_so_and_not_that_most_resamples_were_undefined(tmp_path):
    rows, _ = _rows(tmp_path)
    md = _report(tmp_path, rows, replicates=0)
    pooled_table = md.split("mean over the clips\n")[1].split("\n## ")[0]
    assert "[no interval (--replicates 0)]" in pooled_table and "[no interval]" not in md
    clip_table = md.split("## clipx")[1]
    assert "[no interval (--replicates 0)]" in clip_table
    assert "No intervals: no bootstrap (`--replicates 0`)" in md and "circular block bootstrap (0" not in md


# --------------------------------------------------------------------------- no frequent category


@pytest.mark.parametrize("with_files", [True, False])
def test_a_clip_without_a_frequent_category_says_so(tmp_path, with_files):
    rows, root = _rows(tmp_path, n=20, boxes=(1, 2))  # 20 boxes of category 1: not frequent
    if not with_files:
        for r in rows:
            (root / r["evals"]).unlink()
    s = summarize_clip(rows, root, replicates=20)
    assert s.frequent == []
    for metric in ("map50_frequent", "map50_95_frequent"):
        e = s.bd[(metric, "h264")]
        assert e["note"] == NO_FREQUENT and ">= 50 reference boxes" in e["note"]
        assert "hull" not in bd_cell(e)
    p = pooled([s])[("map50_95_frequent", "h264")]
    assert p["clips"] == 0 and "no clip has a category with >= 50 reference boxes" in p["note"]
    md = _report(tmp_path, rows)
    assert "fewer than two points on a hull" not in md and "no frequent category" in md


# --------------------------------------------------------------------------- per-cut figures


def _sweep_rows():
    rows = []
    for n in (4, 6, 8):
        rows.append(
            {"clip": "c", "cut": "features.10", "method": "chain+residual", "variant": "", "coder": "zrl",
             "n_bits": n, "mb_per_s": 0.01 * n, "map50": 0.8 + 0.02 * n}
        )  # fmt: skip
    for codec in ("h264", "h265"):
        for prefix in ("", "input ", "veryfast ", "input veryfast "):
            for crf in (13, 23, 33, 43):
                rows.append(
                    {"clip": "c", "cut": None, "method": codec, "variant": f"{prefix}crf={crf}", "coder": None,
                     "n_bits": None, "mb_per_s": (2.0 if codec == "h264" else 1.5) * 2 ** ((43 - crf) / 6)
                     + (0.001 if prefix else 0.0), "map50": 0.9}
                )  # fmt: skip
    rows.append({"clip": "c", "cut": None, "method": "jpeg", "variant": "q=75", "coder": None, "n_bits": None,
                 "mb_per_s": 20.0, "map50": 0.95})  # fmt: skip
    return rows


def test_the_per_cut_figure_draws_the_video_codecs_the_sweep_ran():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from temposplit.evaluation.report import cut_figure

    rows = _sweep_rows()
    fig = cut_figure(rows, "features.10")
    try:
        ax_r = fig.axes[0]
        levels = {round(float(line.get_ydata()[0]), 6) for line in ax_r.lines if len(set(line.get_ydata())) == 1}
        texts = [t.get_text() for t in ax_r.texts]
    finally:
        plt.close(fig)
    for codec in ("h264", "h265"):
        native = [r for r in rows if r["method"] == codec and r["variant"].startswith("crf=")]
        assert len(native) == 4
        for r in native:  # every crf of the default curve at the clip's own size
            assert round(r["mb_per_s"], 6) in levels
            assert any(t.startswith(f"{r['variant']}: ") and f"{codec} {r['mb_per_s']:.3g}" in t for t in texts)
        others = [r for r in rows if r["method"] == codec and not r["variant"].startswith("crf=")]
        assert not {round(r["mb_per_s"], 6) for r in others} & levels
    assert not any("input" in t or "veryfast" in t for t in texts)
    assert any(t.startswith("jpeg q=75") for t in texts)


def test_without_the_default_curve_the_figure_takes_another_of_the_codec():
    from temposplit.evaluation.report import _frame_lines

    rows = [r for r in _sweep_rows() if "input" in (r["variant"] or "") or r["method"] != "h264"]
    picked = [r for r in _frame_lines(rows) if r["method"] == "h264"]
    assert sorted(r["variant"] for r in picked) == [f"input crf={c}" for c in (13, 23, 33, 43)]


# --------------------------------------------------------------------------- docs against the committed results

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def _committed(folder: str = "") -> dict:
    import csv

    with open(RESULTS / folder / "bdrate.csv", newline="") as f:
        return {(r["clip"], r["metric"], r["anchor"]): r for r in csv.DictReader(f)}


def _cell(r) -> str:
    return f"{float(r['bd_rate_pct']):+.0f} % [{float(r['ci_low']):+.0f}, {float(r['ci_high']):+.0f}]"


def test_the_docs_quote_the_committed_intervals_and_curves():
    text = " ".join(DOCS.read_text().split())  # the lines joined
    held, main = _committed("holdout"), _committed()
    # "How to read them": the held-out clips' mean against the evaluation clips'.
    a, b = held[("mean", "map50_95", "h265")], main[("mean", "map50_95", "h265")]
    assert f"against H.265, {_cell(a)}, lies outside the evaluation clips' {_cell(b)}" in text
    # carphone's frequent-category BD-rates that the held-out report defines.
    for anchor in ("h265 input", "h265 input veryfast"):
        r = held[("carphone", "map50_95_frequent", anchor)]
        lo, hi = float(r["overlap_low"]), float(r["overlap_high"])
        assert f"{_cell(r)} (`{anchor}`, over {lo:.3f}..{hi:.3f})" in text
    # How many frequent-category mAP@0.5 curves are defined per clip.
    defined = {
        c: sum(1 for (cc, m, _), r in main.items() if cc == c and m == "map50_frequent" and r["bd_rate_pct"])
        for c in ("vtest", "cup", "megamind", "box")
    }
    assert defined == {"vtest": 8, "cup": 8, "megamind": 8, "box": 2}
    assert "8 of the 9 curves are defined on vtest, cup and megamind, 2 on box, none on the held-out clips" in text
    assert not any(r["bd_rate_pct"] for (_, m, _), r in held.items() if m == "map50_frequent")
    # The committed reports' bootstrap is the one their introductions name.
    for folder in ("", "holdout"):
        assert "95 % circular block bootstrap" in (RESULTS / folder / "report.md").read_text()
    assert "The committed reports (2026-12-03" not in text
