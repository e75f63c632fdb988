"""The pooled report: BD-rates per clip and their mean, headline scores with intervals, and a
rate-accuracy plot per clip with the frame codecs (``report.md`` and ``bdrate.csv`` at the top
of the report folder; ``<clip>/rate_accuracy_frames.png``)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from temposplit.evaluation import bootstrap
from temposplit.evaluation.plan import FEATURE_METHODS, FIXED_INPUT_MODELS, FREQUENT_MIN_BOXES
from temposplit.evaluation.report import partial_notice, write_text
from temposplit.evaluation.summary import (
    FREQUENT_UNKNOWN,
    METRICS,
    ClipSummary,
    bd_cell,
    bd_rows,
    frame_curve,
    pooled,
    score_interval,
    summarize_clip,
)

LEVELS = (0.95, 0.90)
CODEC_COLORS = {"h264": "tab:blue", "h265": "tab:red", "jpeg": "tab:gray"}


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _f(v, fmt="{:.3f}") -> str:
    return "–" if not _ok(v) else fmt.format(v)


def _with_ci(summary: ClipSummary, row, metric: str) -> str:
    lo, hi = score_interval(summary, row, metric)
    ci = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else ""
    return f"{_f(row.get(metric))}{ci}"


def _what(r) -> str:
    if r["method"] not in FEATURE_METHODS:
        return f"{r['method']} {r.get('variant') or ''}".strip()
    parts = [r["method"], r.get("variant") or "", r.get("coder") or ""]
    if r.get("n_bits") is not None:
        parts.append(f"N={r['n_bits']}")
    return " ".join(p for p in parts if p) + f" at {r['cut']}"


def plot_clip(rows, summary: ClipSummary, path: Path) -> Path:
    """Bytes per frame against each metric: every feature point, the features' hull, every frame curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 5.2), squeeze=False)
    feats = [r for r in rows if r["method"] in FEATURE_METHODS and _ok(r.get("bytes_per_frame"))]
    for ax, (metric, title) in zip(axes.flat, METRICS, strict=True):
        pts = [r for r in feats if _ok(r.get(metric))]
        ax.scatter([r["bytes_per_frame"] for r in pts], [r[metric] for r in pts], s=8, color="0.75", label="features")
        hull = summary.hull.get(metric, [])
        ax.plot(
            [r["bytes_per_frame"] for r in hull],
            [r[metric] for r in hull],
            "-o",
            color="black",
            ms=4,
            lw=1.6,
            label="features: Pareto front",
        )
        for curve in summary.curves:
            sel = sorted(
                [r for r in rows if frame_curve(r) == curve and _ok(r.get(metric))], key=lambda r: r["bytes_per_frame"]
            )
            if not sel:
                continue
            codec = curve.split()[0]
            ax.plot(
                [r["bytes_per_frame"] for r in sel],
                [r[metric] for r in sel],
                ("--" if "input" in curve else "-") if codec != "jpeg" else ":",
                marker="^" if "veryfast" in curve else "s",
                ms=3,
                lw=1,
                color=CODEC_COLORS.get(codec, "tab:green"),
                alpha=0.9,
                label=curve,
            )
        ax.set_xscale("log")
        ax.set_xlabel("bytes per frame (features: everything crossing the cut; frames: coded)")
        ax.set_ylabel(f"fidelity {title}")
        ax.set_title(f"{summary.clip}: {title}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=66)
    plt.close(fig)
    return path


def _bd_table(entries: dict, curves, cell) -> list[str]:
    lines = ["| anchor (frame codec curve) | " + " | ".join(t for _, t in METRICS) + " |"]
    lines.append("| --- | " + " | ".join("---" for _ in METRICS) + " |")
    for curve in curves:
        cells = [cell(entries.get((m, curve))) for m, _ in METRICS]
        lines.append(f"| {curve} | " + " | ".join(cells) + " |")
    return lines


def _clip_cell(e) -> str:
    if e is None:
        return "–"
    text = bd_cell(e)
    if e.get("overlap") and math.isfinite(e["bd_rate"]):
        text += f" over {e['overlap'][0]:.3f}..{e['overlap'][1]:.3f}"
    return text


def _pooled_cell(e) -> str:
    if e is None or not e["clips"]:
        why = (e or {}).get("note") or "no overlap, or fewer than two hull points"
        return f"not defined on any clip ({why})"
    return bd_cell({**e, "note": ""}) + f" ({e['clips']} clip{'s' if e['clips'] != 1 else ''})"


def markdown(summaries, by_clip, meta, figures, wall_s, notes, replicates) -> str:
    settings = meta.get("settings", {})
    clips = [s.clip for s in summaries]
    frames = ", ".join(f"{s.clip} {by_clip[s.clip][0]['frames']} ({s.scored_frames} scored)" for s in summaries)
    lines = ["# temposplit evaluation: the features against the frame codecs, per clip and pooled", ""]
    lines += partial_notice(meta, by_clip)
    measured = {r["method"] for rows in by_clip.values() for r in rows}
    methods = [m if m in measured else f"{m} (not measured)" for m in settings.get("methods", [])]
    lines += [
        f"Model `{settings.get('model')}`; clips and frames coded (scored): {frames}; cuts "
        f"{', '.join(settings.get('cuts', []))}; N = {settings.get('bits')}; int8 calibration "
        f"`{settings.get('calibration')}`"
        + (f" fold {settings['calibration_fold']}" if settings.get("calibration_fold") else "")
        + (" (the fixed calibration set, never evaluated)" if settings.get("calibration") == "fixed" else "")
        + f"; methods {', '.join(methods)}"
        + (" (the pruned default plan, docs/evaluation.md)" if settings.get("pruned") else "")
        + (
            f"; the video codecs at the clip's own size only (`{settings.get('model')}` has no fixed input size "
            "to resize the frames to)"
            if settings.get("model") not in FIXED_INPUT_MODELS and {"h264", "h265"} & set(settings.get("methods", []))
            else ""
        )
        + ".",
        "",
        "BD-rate: the features' Pareto front (every point no other beats in bytes and accuracy) over every "
        "cut, N, method and setting against each frame codec curve (its crf values, also reduced to their front), "
        "piecewise cubic Hermite interpolation of log bytes over the overlapping accuracy range (the "
        "`bjontegaard` package). Negative: the features need fewer bytes at equal accuracy. "
        + (
            f"Intervals: 95 % circular block bootstrap ({replicates} resamples of each clip's scored frames in "
            f"blocks of {bootstrap.BLOCK} scored frames, the same resamples for every method: paired; each clip "
            "resampled on its own; none for a clip of fewer than "
            f"{bootstrap.MIN_BLOCKS * bootstrap.BLOCK} scored frames); the hulls are taken again on every "
            "resample. The intervals are of these clips' frames: they do not say where another clip would fall. "
            if replicates
            else "No intervals: no bootstrap (`--replicates 0`). "
        )
        + "The mean over clips takes the clips where the BD-rate is defined.",
        "",
    ]
    if wall_s is not None:
        lines += [f"Wall time of the run that finished the sweep: {wall_s / 60:.1f} min.", ""]
    if notes:
        lines += [notes.strip(), ""]
    curves = sorted({c for s in summaries for c in s.curves})
    lines += ["## BD-rate of the features against each frame codec, mean over the clips", ""]
    lines += _bd_table(pooled(summaries), curves, _pooled_cell)
    for s in summaries:
        rows = by_clip[s.clip]
        lines += ["", f"## {s.clip}", ""]
        lines += [f"Full tables: [{s.clip}/report.md]({s.clip}/report.md).", ""]
        if f"{s.clip}/rate_accuracy_frames.png" in figures:
            lines += [f"![rate against accuracy, {s.clip}]({s.clip}/rate_accuracy_frames.png)", ""]
        if s.interval_note and replicates:
            lines += [
                f"No intervals on {s.clip}: {s.interval_note} ({s.scored_frames} scored frames; the block bootstrap "
                f"needs at least {bootstrap.MIN_BLOCKS} blocks of {bootstrap.BLOCK}, "
                f"{bootstrap.MIN_BLOCKS * bootstrap.BLOCK}).",
                "",
            ]
        if s.missing:
            lines += [
                f"Without their scoring file (`evals/{s.clip}/*.npz`), so no interval for the BD-rates that use "
                f"them: {', '.join(f'`{k}`' for k in s.missing)}.",
                "",
            ]
        lines += ["BD-rate of the features' hull (95 % interval) over the overlapping accuracy range:", ""]
        lines += _bd_table(s.bd, s.curves, _clip_cell)
        lines += ["", "Smallest bytes per frame reaching each fidelity mAP@0.5 (95 % interval of the mAP):", ""]
        lines += ["| level | what | bytes/frame | mAP@0.5 | mAP@[.5:.95] | frequent mAP@0.5 | frequent mAP@[.5:.95] |"]
        lines += ["| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        groups = [("features", [r for r in rows if r["method"] in FEATURE_METHODS])]
        groups += [(c, [r for r in rows if frame_curve(r) == c]) for c in s.curves if "veryfast" not in c]
        for level in LEVELS:
            for _name, cand in groups:
                ok = [r for r in cand if _ok(r.get("map50")) and r["map50"] >= level]
                if not ok:
                    continue
                r = min(ok, key=lambda r: r["bytes_per_frame"])
                lines.append(
                    f"| >= {level:.2f} | {_what(r)} | {r['bytes_per_frame']:,.0f} | {_with_ci(s, r, 'map50')} | "
                    f"{_with_ci(s, r, 'map50_95')} | {_with_ci(s, r, 'map50_frequent')} | "
                    f"{_with_ci(s, r, 'map50_95_frequent')} |"
                )
        int8 = [r for r in rows if r["method"] == "features-8bit"]
        if int8:
            lines += ["", "The int8 line (uncompressed 8-bit features) per cut:", ""]
            lines += [
                "| cut | bytes/frame | mAP@0.5 | mAP@[.5:.95] | frequent mAP@0.5 | frequent mAP@[.5:.95] |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in int8:
                lines.append(
                    f"| {r['cut']} | {r['bytes_per_frame']:,.0f} | {_with_ci(s, r, 'map50')} | "
                    f"{_with_ci(s, r, 'map50_95')} | {_with_ci(s, r, 'map50_frequent')} | "
                    f"{_with_ci(s, r, 'map50_95_frequent')} |"
                )
        lines.append("")
        if s.frequent is None:
            frequent = FREQUENT_UNKNOWN
        else:
            frequent = s.frequent or "none"
        lines.append(f"Frequent categories (>= {FREQUENT_MIN_BOXES} reference boxes): {frequent}.")
    _ = clips
    return "\n".join(lines) + "\n"


def write_pooled(out, dest, by_clip, meta, figures=True, wall_s=None, notes=None, replicates=bootstrap.REPLICATES):
    out, dest = Path(out), Path(dest)
    summaries = [summarize_clip(rows, out / "evals", replicates) for rows in by_clip.values()]
    paths, names = [], []
    if figures:
        for s in summaries:
            p = plot_clip(by_clip[s.clip], s, dest / s.clip / "rate_accuracy_frames.png")
            paths.append(p)
            names.append(f"{s.clip}/rate_accuracy_frames.png")
    flat = bd_rows(summaries)
    csv_path = dest / "bdrate.csv"
    f = io.StringIO(newline="")
    cols = list(flat[0]) if flat else ["clip", "metric", "anchor", "bd_rate_pct"]
    w = csv.DictWriter(f, cols)
    w.writeheader()
    for r in flat:
        w.writerow(
            {
                k: (
                    f"{v:.4g}"
                    if isinstance(v, float) and math.isfinite(v)
                    else ("" if v is None or (isinstance(v, float)) else v)
                )
                for k, v in r.items()
            }
        )
    write_text(csv_path, f.getvalue())
    paths.append(csv_path)
    md = dest / "report.md"
    write_text(md, markdown(summaries, by_clip, meta, names, wall_s, notes, replicates))
    paths.append(md)
    return paths
