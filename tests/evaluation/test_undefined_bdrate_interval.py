"""An undefined BD-rate (no overlap, fewer than two hull points: NaN) has no interval.
bdrate.csv gave ``ci_low``/``ci_high`` on such rows, taken over the resamples where the
BD-rate happened to be defined although the point estimate is not."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("bjontegaard")
pytest.importorskip("pycocotools")

from test_statistics_reference import _box_rows  # noqa: E402  (conftest.py: this folder on sys.path)

from temposplit.evaluation.bdrate import bd_rate  # noqa: E402
from temposplit.evaluation.summary import bd_rows, summarize_clip  # noqa: E402

# A clip whose mAP@[.5:.95] front of the features starts just above the top of the H.264
# curve ("no overlap"), while on most resamples the two ranges meet (found by scanning the
# features' box noise, as the review did; the rows' outcomes are seeded, so the case holds).
CLIP = "c52"
NOISE = {"h264:crf=43": 4.0, "h264:crf=33": 2.0, "chain+residual:x": 2.053, "chain+residual:y": 1.0}
RATES = {"h264:crf=43": 500, "h264:crf=33": 1000, "chain+residual:x": 1500, "chain+residual:y": 3000}
# A JPEG curve over the features' range: its BD-rate is defined and keeps its interval.
NOISE |= {"jpeg:q=50": 2.5, "jpeg:q=90": 0.8}
RATES |= {"jpeg:q=50": 1200, "jpeg:q=90": 4000}
REPLICATES = 200


def test_an_undefined_bd_rate_has_no_interval_though_its_resamples_have_numbers(tmp_path):
    rows, root = _box_rows(tmp_path, CLIP, NOISE, RATES, frequent=True)
    s = summarize_clip(rows, root, replicates=REPLICATES)
    e = s.bd[("map50_95", "h264")]
    assert math.isnan(e["bd_rate"]) and e["note"].startswith("no overlap")  # the case: an undefined point

    # ... whose resamples mostly give a BD-rate: an interval over them would be "defined".
    feats = [r for r in rows if r["method"] == "chain+residual"]
    anchor = [r for r in rows if r["method"] == "h264"]
    k = 1  # map50_95's column of the resampled scores
    resampled = [
        bd_rate(
            [r["bytes_per_frame"] for r in anchor],
            [s.intervals[r["key"]][b, k] for r in anchor],
            [r["bytes_per_frame"] for r in feats],
            [s.intervals[r["key"]][b, k] for r in feats],
        ).bd_rate
        for b in range(REPLICATES)
    ]
    assert np.isfinite(resampled).sum() >= REPLICATES / 2

    assert math.isnan(e["lo"]) and math.isnan(e["hi"])
    row = next(r for r in bd_rows([s]) if (r["clip"], r["metric"], r["anchor"]) == (CLIP, "map50_95", "h264"))
    assert math.isnan(row["bd_rate_pct"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["ci_note"] == ""  # the row's note says why there is no number

    # A defined BD-rate of the same clip keeps its interval.
    defined = s.bd[("map50_95", "jpeg")]
    assert math.isfinite(defined["bd_rate"]) and defined["lo"] <= defined["bd_rate"] <= defined["hi"]
