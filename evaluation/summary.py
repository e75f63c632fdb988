"""Per clip and pooled: BD-rates of the features against every frame codec curve, with intervals.

For each clip and each accuracy metric (mAP@0.5, mAP@[.5:.95], the frequent-category
mAP@0.5): the features' Pareto front over every cut, N, method and setting of the
rows (``bdrate.pareto_front``, the reports' "hull") against each frame codec curve (one curve per codec, preset
and resolution over its crf values; JPEG over its qualities), each curve also reduced to
its hull; the BD-rate over the overlapping accuracy range (``bdrate.bd_rate``; NaN and
"no overlap" when the ranges do not meet). Pooled: the mean over the clips where it is
defined (the count is given).

Intervals: one set of circular block resamples of each clip's scored frames
(``bootstrap.block_resamples``, seeded by the clip's name: the clips are resampled
independently) is used for every row of that clip (paired). Each row's scores are
recomputed on each resample from its saved per-frame evaluation (``metrics.ImageEvals``),
the hulls are taken again, and the BD-rate recomputed; the pooled mean takes one resample
of every clip at a time. 95 % percentile intervals.

Where there is no interval the entry's ``interval_note`` says why (the reports print it in
brackets, ``bdrate.csv`` in its ``ci_note`` column): ``--replicates 0`` (no bootstrap);
too few scored frames (fewer than two blocks, ``bootstrap.enough_frames``); or a row of
the BD-rate (a feature row or a row of that frame codec curve) without its scoring file
(``evals/<clip>/*.npz`` missing): the point estimate uses every row, and resamples
without that row would come from another front, so the interval is not given. "[no
interval]" alone means fewer than half of the resamples gave a BD-rate. An undefined
BD-rate (NaN: no overlap, fewer than two hull points) has no interval either (``ci_low``,
``ci_high`` empty; its ``note`` says why there is no number).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temposplit.errors import ConfigError
from temposplit.evaluation import bootstrap
from temposplit.evaluation.bdrate import bd_rate, pareto_front
from temposplit.evaluation.plan import FEATURE_METHODS, FREQUENT_MIN_BOXES

METRICS = (
    ("map50", "mAP@0.5"),
    ("map50_95", "mAP@[.5:.95]"),
    ("map50_frequent", "frequent-category mAP@0.5"),
    ("map50_95_frequent", "frequent-category mAP@[.5:.95]"),
)
_METRIC_INDEX = {m: k for k, (m, _) in enumerate(METRICS)}
FREQUENT_METRICS = ("map50_frequent", "map50_95_frequent")

NO_REPLICATES = "no interval (--replicates 0)"
NO_FREQUENT = f"no frequent category (no category with >= {FREQUENT_MIN_BOXES} reference boxes)"
FREQUENT_UNKNOWN = "could not be determined (no scoring file of the clip could be read)"
HALF_UNDEFINED = "fewer than half of the resamples defined"


def missing_note(count: int) -> str:
    """The interval note of a BD-rate with ``count`` rows lacking their scoring file."""
    return f"no interval: {count} row{'s' if count != 1 else ''} without a scoring file"


def frame_curve(row) -> str | None:
    """The frame codec curve a row belongs to: ``h264 medium native``, ``jpeg`` ...; None for features."""
    if row["method"] in FEATURE_METHODS or row["method"] == "float":
        return None
    variant = re.sub(r"\s*(crf|q)=\d+", "", row.get("variant") or "").strip()
    return f"{row['method']} {variant}".strip()


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


@dataclass
class ClipSummary:
    clip: str
    scored_frames: int
    frequent: list
    curves: list[str]
    bd: dict = field(default_factory=dict)  # (metric, curve) -> dict(bd, lo, hi, overlap, note, replicates, ...)
    hull: dict = field(default_factory=dict)  # metric -> [row]
    intervals: dict = field(default_factory=dict)  # row key -> (B, 4) resampled scores
    interval_note: str = ""  # why the clip has no interval at all ("" when resampled)
    missing: list = field(default_factory=list)  # keys of the rows without their scoring file (when resampled)


def _load_evals(root: Path, name: str, cache: dict, n_frames: int | None = None):
    """A scoring's per-frame outcome (``evals/<clip>/<name>.npz``); None where there is none
    (its row has no interval). A damaged file (cut short, emptied, of another frame count)
    is a :class:`ConfigError` naming it: never read in part, never a traceback."""
    import zipfile

    from temposplit.evaluation.metrics import ImageEvals

    if name not in cache:
        path = root / name
        if not path.is_file():
            cache[name] = None
        else:
            try:
                with np.load(path, allow_pickle=False) as z:
                    ev = ImageEvals.from_npz(z)
                problem = None
                if n_frames is not None and ev.n_frames != n_frames:
                    problem = f"{ev.n_frames} frames, not {n_frames}"
            except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                raise ConfigError(
                    f"{path}: a damaged scoring file ({problem}): remove it (the BD-rates that use its row "
                    "are then reported without an interval) or rerun its point into a fresh --out"
                )
            cache[name] = ev
    return cache[name]


def _frequent(rows, evals_root: Path, cache: dict, n: int):
    """The clip's frequent categories (>= FREQUENT_MIN_BOXES reference boxes; the reference
    is every row's ground truth): from the first row whose scoring file can be read; else []
    when no row has a frequent-category score (the clip has none), None when they cannot be
    determined (rows with frequent scores, no scoring file)."""
    for r in rows:
        if not r.get("evals"):
            continue
        ev = _load_evals(evals_root, r["evals"], cache, n)
        if ev is not None:
            return [int(c) for c, g in zip(ev.categories, ev.gt.sum(axis=1), strict=True) if g >= FREQUENT_MIN_BOXES]
    scored = [r for r in rows if r["method"] != "float" and _ok(r.get("map50"))]
    if scored and not any(_ok(r.get(m)) for r in scored for m in FREQUENT_METRICS):
        return []
    return None


def summarize_clip(rows, evals_root: Path, replicates=bootstrap.REPLICATES, block=bootstrap.BLOCK) -> ClipSummary:
    """BD-rates (with intervals) of one clip's rows."""
    clip = rows[0]["clip"]
    usable = [r for r in rows if _ok(r.get("bytes_per_frame")) and r["method"] != "float"]
    feats = [r for r in usable if r["method"] in FEATURE_METHODS]
    curves: dict[str, list] = {}
    for r in usable:
        c = frame_curve(r)
        if c is not None:
            curves.setdefault(c, []).append(r)
    n = int(rows[0]["scored_frames"])
    cache: dict = {}
    frequent = _frequent(rows, evals_root, cache, n)
    summary = ClipSummary(clip, n, frequent, sorted(curves))
    weights = None
    if not replicates:
        summary.interval_note = NO_REPLICATES
    elif not bootstrap.enough_frames(n, block):
        summary.interval_note = bootstrap.TOO_FEW  # (the report says how many frames an interval needs)
    else:
        resamples = bootstrap.block_resamples(n, block, replicates, seed=bootstrap.clip_seed(clip), circular=True)
        weights = bootstrap.resample_weights(resamples, n)
    by_evals: dict[str, np.ndarray] = {}
    for r in feats + [r for c in curves.values() for r in c] if weights is not None else []:
        name = r.get("evals")
        ev = _load_evals(evals_root, name, cache, n) if name else None
        if ev is None:  # no per-frame outcome: the BD-rates that use this row get no interval
            summary.missing.append(r["key"])
            continue
        if name not in by_evals:
            by_evals[name] = np.array([ev.all_scores(w, frequent or []) for w in weights])
        summary.intervals[r["key"]] = by_evals[name]

    def values(rs, metric, b=None):
        if b is None:
            return [r.get(metric) if _ok(r.get(metric)) else math.nan for r in rs]
        k = _METRIC_INDEX[metric]
        return [summary.intervals[r["key"]][b, k] if r["key"] in summary.intervals else math.nan for r in rs]

    missing = set(summary.missing)
    for metric, _ in METRICS:
        f_rates = [r["bytes_per_frame"] for r in feats]
        summary.hull[metric] = [feats[i] for i in pareto_front(f_rates, values(feats, metric))]
        for name, pts in curves.items():
            c_rates = [r["bytes_per_frame"] for r in pts]
            point = bd_rate(c_rates, values(pts, metric), f_rates, values(feats, metric))
            note = point.note
            if metric in FREQUENT_METRICS and frequent == [] and not point.defined:
                note = NO_FREQUENT
            # The rows whose scores the point estimate uses, without a per-frame outcome: a
            # resample could not hold them, so its front would be another than the point's.
            lacking = sum(1 for r in feats + pts if r["key"] in missing and _ok(r.get(metric)))
            interval_note = summary.interval_note or (missing_note(lacking) if lacking else "")
            reps = []
            # Only a defined point has an interval: over the resamples where an undefined one
            # ("no overlap", one hull point) happens to be defined it would be of another quantity.
            if weights is not None and not lacking and point.defined:
                for b in range(len(weights)):
                    reps.append(bd_rate(c_rates, values(pts, metric, b), f_rates, values(feats, metric, b)).bd_rate)
            lo, hi = bootstrap.interval(reps) if reps else (math.nan, math.nan)
            summary.bd[(metric, name)] = {
                "bd_rate": point.bd_rate,
                "lo": lo,
                "hi": hi,
                "overlap": point.overlap,
                "note": note,
                "anchor_points": point.anchor_points,
                "test_points": point.test_points,
                "replicates": np.array(reps, np.float64),
                "interval_note": interval_note,
            }
    return summary


def pooled(summaries: list[ClipSummary]) -> dict:
    """(metric, curve) -> mean BD-rate over the clips where it is defined, its interval, the count."""
    out = {}
    keys = {k for s in summaries for k in s.bd}
    for key in sorted(keys):
        having = [s for s in summaries if key in s.bd]
        defined = [s for s in having if math.isfinite(s.bd[key]["bd_rate"])]
        entries = [s.bd[key] for s in defined]
        if not entries:
            note = ""
            if key[0] in FREQUENT_METRICS and having and all(s.frequent == [] for s in having):
                note = f"no clip has a category with >= {FREQUENT_MIN_BOXES} reference boxes"
            out[key] = {"bd_rate": math.nan, "lo": math.nan, "hi": math.nan, "clips": 0, "note": note}
            continue
        point = float(np.mean([e["bd_rate"] for e in entries]))
        lo = hi = math.nan
        # A clip without resamples of this BD-rate: the mean has no interval, and says why.
        short = [(s.clip, s.bd[key]["interval_note"]) for s in defined if s.bd[key].get("interval_note")]
        interval_note = ""
        if short:
            notes = list(dict.fromkeys(n for _, n in short))
            interval_note = (
                notes[0]
                if len(notes) == 1 and len(short) == len(defined)
                else "no interval: " + "; ".join(f"{c}: {n}" for c, n in short)
            )
        else:
            mean = np.mean(np.stack([e["replicates"] for e in entries]), axis=0)  # NaN where a clip's has none
            lo, hi = bootstrap.interval(mean)
        out[key] = {"bd_rate": point, "lo": lo, "hi": hi, "clips": len(entries), "interval_note": interval_note}
    return out


def score_interval(summary: ClipSummary, row, metric: str) -> tuple[float, float]:
    """The 95 % interval of one row's score (NaN, NaN without saved evaluations)."""
    reps = summary.intervals.get(row["key"])
    if reps is None:
        return math.nan, math.nan
    return bootstrap.interval(reps[:, _METRIC_INDEX[metric]])


def _pct(v) -> str:
    return "–" if not _ok(v) else f"{v:+.0f} %"


def bd_cell(e: dict) -> str:
    if not math.isfinite(e["bd_rate"]):
        return e.get("note") or "undefined"
    if math.isfinite(e.get("lo", math.nan)):
        ci = f" [{e['lo']:+.0f}, {e['hi']:+.0f}]"
    elif e.get("interval_note"):  # not resampled: --replicates 0, too few frames, a scoring file missing
        ci = f" [{e['interval_note']}]"
    else:  # undefined (no overlap, one hull point) on most resamples
        ci = " [no interval]" if np.size(e.get("replicates", [])) or "clips" in e else ""
    return f"{e['bd_rate']:+.0f} %{ci}"


def ci_note(e: dict) -> str:
    """Why a defined BD-rate has no interval ("" when it has one, or has no BD-rate)."""
    if not math.isfinite(e["bd_rate"]) or math.isfinite(e.get("lo", math.nan)):
        return ""
    return e.get("interval_note") or HALF_UNDEFINED


def bd_rows(summaries: list[ClipSummary]) -> list[dict]:
    """The BD-rates as flat rows (bdrate.csv)."""
    out = []
    for s in summaries:
        for (metric, curve), e in sorted(s.bd.items()):
            out.append(
                {
                    "clip": s.clip,
                    "metric": metric,
                    "anchor": curve,
                    "bd_rate_pct": e["bd_rate"],
                    "ci_low": e["lo"],
                    "ci_high": e["hi"],
                    "overlap_low": e["overlap"][0] if e["overlap"] else None,
                    "overlap_high": e["overlap"][1] if e["overlap"] else None,
                    "anchor_hull_points": e["anchor_points"],
                    "feature_hull_points": e["test_points"],
                    "note": e["note"],
                    "ci_note": ci_note(e),
                }
            )
    for (metric, curve), e in sorted(pooled(summaries).items()):
        out.append(
            {
                "clip": "mean",
                "metric": metric,
                "anchor": curve,
                "bd_rate_pct": e["bd_rate"],
                "ci_low": e["lo"],
                "ci_high": e["hi"],
                "overlap_low": None,
                "overlap_high": None,
                "anchor_hull_points": None,
                "feature_hull_points": None,
                "note": f"mean over {e['clips']} clip(s) where defined",
                "ci_note": ci_note(e),
            }
        )
    return out
