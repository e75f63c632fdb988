"""The evaluation report: results.csv, results.json, PNG plots and report.md from the harness's rows.

Figures follow the thesis's figures 4.14-4.21: per cut, the rate against N (MB/s at 30
frames/s, log scale, one curve per method and coder, the 8-bit features, JPEG-ACT and the
frame baselines as horizontal lines: JPEG, and every crf of one H.264 and one H.265
curve) and the accuracy against N (fidelity mAP@0.5, one curve per reconstruction, the
float and int8 reference lines); then one rate-accuracy plot across every method, a panel
per cut.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from temposplit.evaluation.plan import FEATURE_METHODS, FRAME_METHODS
from temposplit.evaluation.runners import ROW_KEYS

# The rows' keys (one source: the harness), in the order a reader scans a spreadsheet:
# what was measured first, the settings (a JSON blob) last.
_FIRST = ("model", "clip", "cut", "method", "variant", "coder", "n_bits", "frames", "scored_frames")
CSV_COLUMNS = (
    _FIRST
    + tuple(k for k in ROW_KEYS if k not in _FIRST and k not in ("key", "structure", "settings", "evals"))
    + ("settings",)
)
FEATURE_ORDER = FEATURE_METHODS  # the report lists methods in the sweep's order
COLORS = {
    "quant": "tab:blue",
    "uni-2": "tab:orange",
    "bi-3": "tab:green",
    "bi-3+residual": "tab:red",
    "chain+residual": "tab:purple",
    "refresh": "tab:brown",
    "rate-control": "tab:pink",
    "jpeg-act": "tab:olive",
    "features-8bit": "black",
    "jpeg": "tab:gray",
    "h264": "tab:cyan",
    "h265": "tab:blue",
}
CODER_STYLE = {"raw": ":", "zvc": "-.", "huffman": "-", "zrl": "--", "jpeg": "-", None: "-"}
LEVELS = (0.95, 0.90, 0.85)


CLIP_REPORT_TITLE = "# temposplit evaluation: rate and accuracy on "
CLIP_REPORT_FIGURES = ("cut_*.png", "rate_accuracy*.png")


def _num(v):
    return v is not None and not (isinstance(v, float) and math.isnan(v))


CUT_ORDER: list[str] = []  # filled by write_report from the rows (the sweep's cut order)


CLIP_ORDER: list[str] = []  # the sweep's clip order


def _sort_key(r):
    m = r["method"]
    order = FEATURE_ORDER.index(m) if m in FEATURE_ORDER else 100 + (FRAME_METHODS + ("float",)).index(m)
    cut = r.get("cut")
    clip = r.get("clip")
    return (
        CLIP_ORDER.index(clip) if clip in CLIP_ORDER else -1,
        str(clip),
        CUT_ORDER.index(cut) if cut in CUT_ORDER else -1,
        order,
        str(r.get("variant")),
        str(r.get("coder")),
        r.get("n_bits") or 0,
    )


def _cuts(rows):
    seen = []
    for r in rows:
        if r.get("cut") and r["cut"] not in seen:
            seen.append(r["cut"])
    return seen


# --------------------------------------------------------------------------- tables


def _rounded(v):
    """Floats to 6 significant digits (keeps results.json small)."""
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.6g}")
    return v


def write_text(path: Path, text: str) -> None:
    """A report file whole or not at all (a run stopped while it writes, or a full disk,
    leaves the previous one, not a table cut short that reads as the results)."""
    from temposplit.evaluation.cache import write_atomic

    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_tables(rows, dest: Path, meta: dict | None = None) -> list[Path]:
    rows = sorted(rows, key=_sort_key)
    csv_path = dest / "results.csv"
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        out = []
        for c in CSV_COLUMNS:
            v = r.get(c)
            if c == "settings":
                v = json.dumps(v, sort_keys=True)
            elif isinstance(v, float):
                v = f"{v:.6g}"
            out.append("" if v is None else v)
        w.writerow(out)
    write_text(csv_path, f.getvalue())
    json_path = dest / "results.json"
    doc = _rounded({"meta": meta or {}, "rows": rows})
    write_text(json_path, json.dumps(doc, indent=None, separators=(",", ":")))
    return [csv_path, json_path]


# --------------------------------------------------------------------------- headline


def headline(rows, metric: str = "map50") -> dict:
    """The comparison at fixed fidelity (``metric``: ``map50``, or ``map50_frequent`` for the
    frequent categories only): the smallest feature method vs the frame baselines, and the
    thesis's own method (bi-3, no residual) at its best."""
    usable = [r for r in rows if _num(r.get(metric)) and _num(r.get("bytes_per_frame"))]
    feats = [r for r in usable if r["method"] in FEATURE_ORDER and r["method"] != "features-8bit"]
    out = {"metric": metric, "levels": {}}
    for level in LEVELS:
        entry = {}
        for name, cand in (("features", feats), *((m, [r for r in usable if r["method"] == m]) for m in FRAME_METHODS)):
            ok = [r for r in cand if r[metric] >= level]
            entry[name] = min(ok, key=lambda r: r["bytes_per_frame"]) if ok else None
        out["levels"][level] = entry
    bi3 = [r for r in usable if r["method"] == "bi-3"]
    if bi3:
        out["bi3_best_accuracy"] = max(bi3, key=lambda r: (r[metric], -r["bytes_per_frame"]))
        ok = [r for r in bi3 if r[metric] >= 0.85]
        out["bi3_smallest_at_0.85"] = min(ok, key=lambda r: r["bytes_per_frame"]) if ok else None
    int8 = [r for r in usable if r["method"] == "features-8bit"]
    if int8:
        out["int8_best"] = max(int8, key=lambda r: r[metric])
    out["features_best_accuracy"] = max(feats, key=lambda r: (r[metric], -r["bytes_per_frame"])) if feats else None
    # What has any row at all (scored or not): "none reaches it" only for what was measured.
    has = {r["method"] for r in rows}
    out["measured"] = {"features": bool(has & (set(FEATURE_ORDER) - {"features-8bit"}))}
    out["measured"].update({m: m in has for m in FRAME_METHODS})
    return out


def _describe(r, measured: bool = True) -> str:
    if r is None:
        return "none reaches it" if measured else "not measured"
    what = f"{r['method']}"
    if r.get("variant"):
        what += f" {r['variant']}"
    if r.get("coder"):
        what += f", {r['coder']}"
    if r.get("n_bits") is not None:
        what += f", N={r['n_bits']}"
    if r.get("cut"):
        what += f" at {r['cut']}"
    return (
        f"{r['bytes_per_frame']:,.0f} B/frame ({what}; mAP@0.5 {_f(r.get('map50'))}, "
        f"frequent categories {_f(r.get('map50_frequent'))})"
    )


# --------------------------------------------------------------------------- figures


def _curves(rows, cut):
    """(method, variant, coder) -> sorted [(N, row)] for the N-dependent rows of a cut."""
    curves = {}
    for r in rows:
        if r.get("cut") == cut and r.get("n_bits") is not None and r["method"] != "features-8bit":
            curves.setdefault((r["method"], r.get("variant") or "", r.get("coder")), []).append(r)
    return {k: sorted(v, key=lambda r: r["n_bits"]) for k, v in curves.items()}


def _frame_lines(rows):
    """The frame baselines a cut's rate panel draws as horizontal lines: every JPEG point, and
    of H.264 and of H.265 every point (crf value) of one curve: the default preset at the
    clip's own size where the rows have it (else the curve of the shortest name, e.g. ``h264
    input``). Four lines a codec in the default sweep; all 16 points of each codec's four curves
    would hide the features' curves (the pooled report's figures show every curve)."""
    from temposplit.evaluation.summary import frame_curve

    pick = [r for r in rows if r["method"] == "jpeg"]
    for codec in ("h264", "h265"):
        by_curve: dict[str, list] = {}
        for r in rows:
            if r["method"] == codec and _num(r.get("mb_per_s")):
                by_curve.setdefault(frame_curve(r), []).append(r)
        if by_curve:
            curve = min(by_curve, key=lambda c: (len(c.split()), c))
            pick += sorted(by_curve[curve], key=lambda r: r["mb_per_s"])
    return pick


def _variant_style(variant: str) -> tuple[str, str]:
    """(line style, marker) of a feature reconstruction's accuracy curve: the dead zone
    dotted with squares, hysteresis dash-dotted with triangles, the chain at its higher
    threshold dashed, the rest solid; the rate curves take the marker only."""
    if "dz=" in variant:
        return ":", "s"
    if "hyst=" in variant:
        return "-.", "^"
    if "chain" in variant and "1.5" not in variant:
        return "--", "o"
    return "-", "o"


def plot_cut(rows, cut, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = cut_figure(rows, cut)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def cut_figure(rows, cut):
    """The figure of :func:`plot_cut` (rate and accuracy against N at one cut), not saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _curves(rows, cut)
    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(13, 5.2))
    number = 0
    for (method, variant, coder), pts in sorted(curves.items(), key=lambda kv: (FEATURE_ORDER.index(kv[0][0]), kv[0])):
        number += 1
        label = f"{number}. {method} {variant} {coder}".replace("  ", " ")
        ax_r.plot(
            [r["n_bits"] for r in pts],
            [r["mb_per_s"] for r in pts],
            CODER_STYLE.get(coder, "-"),
            marker=_variant_style(variant)[1],
            ms=3,
            color=COLORS.get(method),
            label=label,
        )
    lines = [r for r in rows if r.get("cut") == cut and r["method"] in ("features-8bit", "jpeg-act")]
    lines += _frame_lines(rows)
    video: dict[str, list] = {}  # H.264 and H.265 at one setting lie close together: one label for both
    for r in lines:
        style = {"features-8bit": "-", "jpeg-act": "--"}.get(r["method"], ":")
        ax_r.axhline(r["mb_per_s"], color=COLORS.get(r["method"]), ls=style, lw=1.2)
        if r["method"] in ("h264", "h265"):
            video.setdefault(r.get("variant") or "", []).append(r)
            continue
        name = {"features-8bit": "8-bit features"}.get(r["method"], f"{r['method']} {r.get('variant') or ''}")
        ax_r.annotate(f"{name} {r['mb_per_s']:.3g}", (8.05, r["mb_per_s"]), fontsize=7, va="center")
    for variant, same in video.items():
        y = math.exp(sum(math.log(r["mb_per_s"]) for r in same) / len(same))
        text = f"{variant}: " + ", ".join(f"{r['method']} {r['mb_per_s']:.3g}" for r in same)
        ax_r.annotate(text, (8.05, y), fontsize=7, va="center")
    ax_r.set_yscale("log")
    ax_r.set_xlabel("N (bits of the re-quantized anchors)")
    ax_r.set_ylabel("MB/s at 30 frames/s (everything crossing the cut)")
    ax_r.set_title(f"rate at {cut}")
    ax_r.set_xlim(3.8, 9.2)
    ax_r.set_xticks(range(4, 9))
    ax_r.grid(True, which="both", alpha=0.3)
    if curves:  # a cut with no curve over N (only the 8-bit line): no labelled line to list
        ax_r.legend(fontsize=6, loc="lower left", ncol=2)
    # accuracy: one curve per reconstruction (the coders share it)
    seen = set()
    for (method, variant, _coder), pts in sorted(curves.items(), key=lambda kv: (FEATURE_ORDER.index(kv[0][0]), kv[0])):
        if (method, variant) in seen:
            continue
        seen.add((method, variant))
        ax_a.plot(
            [r["n_bits"] for r in pts],
            [r["map50"] for r in pts],
            ms=3,
            color=COLORS.get(method),
            ls=_variant_style(variant)[0],
            marker=_variant_style(variant)[1],
            label=f"{method} {variant}".strip(),
        )
    ax_a.axhline(1.0, color="red", ls=":", lw=1.2, label="float (1 by construction)")
    for r in rows:
        if r.get("cut") == cut and r["method"] == "features-8bit" and _num(r.get("map50")):
            ax_a.axhline(r["map50"], color="blue", ls=":", lw=1.2, label=f"int8 ({r['map50']:.3f})")
        if r.get("cut") == cut and r["method"] == "jpeg-act" and _num(r.get("map50")):
            ax_a.axhline(
                r["map50"], color=COLORS["jpeg-act"], ls="--", lw=1, label=f"jpeg-act {r['variant']} ({r['map50']:.3f})"
            )
    ax_a.set_xlabel("N")
    ax_a.set_ylabel("fidelity mAP@0.5 (vs float detections, score >= 0.5)")
    ax_a.set_title(f"accuracy at {cut}")
    ax_a.set_xticks(range(4, 9))
    ax_a.grid(True, alpha=0.3)
    ax_a.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def plot_rate_accuracy(rows, path: Path, metric: str = "map50") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cuts = _cuts(rows)
    ncol = 3
    nrow = max(1, math.ceil(len(cuts) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(15, 4.6 * nrow), squeeze=False)
    frames = [r for r in rows if r["method"] in FRAME_METHODS and _num(r.get(metric))]
    markers = {"raw": "x", "zvc": "+", "huffman": "o", "zrl": "s", "jpeg": "D", None: "^"}
    for ax, cut in zip(axes.flat, cuts, strict=False):
        pts = [r for r in rows if r.get("cut") == cut and _num(r.get(metric)) and _num(r.get("bytes_per_frame"))]
        for method in FEATURE_ORDER:
            sel = [r for r in pts if r["method"] == method]
            for coder in sorted({r.get("coder") for r in sel}, key=str):
                s = [r for r in sel if r.get("coder") == coder]
                ax.scatter(
                    [r["bytes_per_frame"] for r in s],
                    [r[metric] for r in s],
                    s=14,
                    marker=markers.get(coder, "o"),
                    color=COLORS.get(method),
                    label=f"{method} {coder or ''}".strip(),
                )
        for method in FRAME_METHODS:
            sel = [r for r in frames if r["method"] == method and "veryfast" not in (r.get("variant") or "")]
            for res in sorted({"input" in (r.get("variant") or "") for r in sel}):
                s = sorted(
                    [r for r in sel if ("input" in (r.get("variant") or "")) == res], key=lambda r: r["bytes_per_frame"]
                )
                ax.plot(
                    [r["bytes_per_frame"] for r in s],
                    [r[metric] for r in s],
                    "--^" if res else "-^",
                    ms=4,
                    lw=1,
                    color=COLORS[method],
                    label=f"frames {method}" + (" at the detector's input size" if res else ""),
                )
        ax.axhline(1.0, color="red", ls=":", lw=1)
        ax.axhline(0.95, color="k", ls="--", lw=0.6)
        ax.set_xscale("log")
        ax.set_title(cut, fontsize=10)
        ax.set_xlabel("bytes per frame (everything crossing; frames: coded file)")
        ax.set_ylabel("fidelity mAP@0.5" + (" (frequent categories)" if metric != "map50" else ""))
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(cuts) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=7, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=66)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown


def _f(v, fmt="{:.3f}"):
    return "–" if not _num(v) else fmt.format(v)


def _file_name(path) -> str:
    """A clip file's name as the report writes it, escaped as the clip's name is."""
    from temposplit.evaluation.harness import file_name_text

    return file_name_text(Path(str(path)).name)


def markdown(rows, meta: dict, figures: list[str], wall_s=None, notes: str | None = None) -> str:
    settings = meta.get("settings", {})
    clip = rows[0]["clip"] if rows else None
    video = (settings.get("videos") or {}).get(clip) or settings.get("video")
    lines = [f"{CLIP_REPORT_TITLE}{clip}", ""]
    lines += partial_notice(meta, {clip: rows} if clip is not None else {}, clip)
    lines += [
        f"Model `{settings.get('model')}`, clip `{_file_name(video)}` frames "
        f"{settings.get('start', 0)}..{settings.get('start', 0) + (rows[0]['frames'] if rows else 0) - 1} "
        f"({rows[0]['frames'] if rows else 0} frames coded; detections scored on "
        f"{rows[0]['scored_frames'] if rows else 0} of them: frames i with i % {settings.get('score_every', 1)} "
        f"in {settings.get('score_phases', [0])}), "
        f"cuts {', '.join(settings.get('cuts', []))}, N = {settings.get('bits')}, int8 calibration "
        f"`{settings.get('calibration', 'clip')}`"
        + (f" fold {settings['calibration_fold']}" if settings.get("calibration_fold") else "")
        + ". "
        "Rates: bytes per frame of everything crossing the cut with the 24-byte packet header (the cut "
        "tensor alone, payload only, is in the CSV), MB/s at 30 frames/s (MB = 10^6 bytes). Accuracy: COCO "
        "mAP by pycocotools against the float model's detections on the uncompressed frames with score >= 0.5 "
        "(fidelity; the float line is 1 by construction), tested detections from score 0.05; `labelme` = "
        "real boxes of the 5 labelme street frames (cars and trucks only, not every vehicle annotated: a "
        "coarse check, it barely moves).",
        "",
    ]
    if wall_s is not None:
        lines += [f"Wall time of the run that finished the sweep: {wall_s / 60:.1f} min.", ""]
    for run in meta.get("runs", []):
        t = run.get("timings", {})
        lines.append(
            "Run: "
            + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items())
            + f" ({run.get('points')} points)"
        )
    if notes:
        lines += ["", notes.strip()]
    lines += ["", "## Headline (computed from the rows)", ""]
    for metric, title in (
        ("map50", "COCO fidelity mAP@0.5 (all categories)"),
        ("map50_frequent", "fidelity mAP@0.5 over the frequent categories"),
    ):
        h = headline(rows, metric)
        lines += [f"By {title}; smallest bytes per frame reaching each level:", ""]
        for level, entry in h["levels"].items():
            d = {name: _describe(r, h["measured"][name]) for name, r in entry.items()}
            lines.append(
                f"- >= {level:.2f}: best feature method {d['features']}; "
                f"JPEG frames {d['jpeg']}; H.264 {d['h264']}; "
                f"H.265 {d['h265']}."
            )
        if h.get("int8_best"):
            lines.append(
                f"- The int8 line itself (uncompressed 8-bit features) reaches at most "
                f"{h['int8_best'][metric]:.3f} ({h['int8_best']['cut']})."
            )
        if h.get("features_best_accuracy"):
            lines.append(f"- Most accurate feature method: {_describe(h['features_best_accuracy'])}.")
        if h.get("bi3_best_accuracy"):
            lines.append(
                f"- The thesis's method (bi-3, no residual) at its best: {_describe(h['bi3_best_accuracy'])}; "
                f"smallest at >= 0.85: {_describe(h.get('bi3_smallest_at_0.85'))}."
            )
        lines.append("")
    lines += [
        "",
        "## Reference lines",
        "",
        "| line | cut | bytes/frame | MB/s @30 | mAP@0.5 | mAP@[.5:.95] | frequent mAP@0.5 | labelme mAP@0.5 "
        "| labelme mAP@[.5:.95] |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted([r for r in rows if r["method"] in ("float", "features-8bit")], key=_sort_key):
        name = "float (1 by construction)" if r["method"] == "float" else "int8 (features-8bit)"
        lines.append(
            f"| {name} | {r.get('cut') or '-'} | {_f(r.get('bytes_per_frame'), '{:,.0f}')} | "
            f"{_f(r.get('mb_per_s'), '{:.3f}')} | {_f(r['map50'])} | {_f(r['map50_95'])} | "
            f"{_f(r.get('map50_frequent'))} | "
            f"{_f(r.get('labelme_map50'))} | {_f(r.get('labelme_map50_95'))} |"
        )
    lines += [
        "",
        "## Frame baselines",
        "",
        "| codec | setting | bytes/frame | bits/pixel | MB/s @30 | ratio vs RGB | "
        "mAP@0.5 | mAP@[.5:.95] | frequent mAP@0.5 | labelme mAP@0.5 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(
        [r for r in rows if r["method"] in FRAME_METHODS], key=lambda r: (r["method"], r["bytes_per_frame"])
    ):
        lines.append(
            f"| {r['method']} | {r['variant']} | {r['bytes_per_frame']:,.0f} | {_f(r.get('bits_per_element'))} | "
            f"{_f(r['mb_per_s'], '{:.3f}')} | {_f(r.get('ratio_vs_frames'), '{:.1f}')} | {_f(r['map50'])} | "
            f"{_f(r['map50_95'])} | {_f(r.get('map50_frequent'))} | {_f(r.get('labelme_map50'))} |"
        )
    for cut in _cuts(rows):
        lines += ["", f"## Cut {cut}", ""]
        fig = f"cut_{cut}.png"
        if fig in figures:
            lines += [f"![rate and accuracy against N at {cut}]({fig})", ""]
        lines += [
            "Per N: bytes/frame (everything crossing) / fidelity mAP@0.5 (in brackets: over the frequent "
            "categories). Coders of one method share its reconstruction, hence its accuracy.",
            "",
        ]
        bits = sorted({r["n_bits"] for r in rows if r.get("cut") == cut and r.get("n_bits") is not None})
        lines.append("| method | variant | coder | " + " | ".join(f"N={n}" for n in bits) + " |")
        lines.append("| --- | --- | --- | " + " | ".join("---:" for _ in bits) + " |")
        for key, pts in sorted(_curves(rows, cut).items(), key=lambda kv: (FEATURE_ORDER.index(kv[0][0]), kv[0])):
            by_n = {r["n_bits"]: r for r in pts}
            cells = [
                f"{by_n[n]['bytes_per_frame']:,.0f} / {_f(by_n[n]['map50'])} ({_f(by_n[n].get('map50_frequent'))})"
                if n in by_n
                else "–"
                for n in bits
            ]
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
        other = [r for r in rows if r.get("cut") == cut and r.get("n_bits") is None]
        if other:
            lines += [
                "",
                "| method | variant | coder | bytes/frame | cut tensor bits/element | mAP@0.5 | mAP@[.5:.95] | "
                "frequent mAP@0.5 | labelme mAP@0.5 | notes |",
                "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            ]
            for r in sorted(other, key=_sort_key):
                s = r.get("settings") or {}
                note = ""
                if r["method"] == "rate-control":
                    note = (
                        f"target {s.get('rate_target_mb_s', 0):.3f} MB/s, got {r['mb_per_s']:.3f}; "
                        f"mean N {_f(s.get('mean_n_bits'), '{:.2f}')}"
                    )
                elif r["method"] == "jpeg-act":
                    note = f"fix35 would clip {100 * (s.get('fix35_clipped_fraction') or 0):.2f} % of values"
                lines.append(
                    f"| {r['method']} | {r.get('variant')} | {r.get('coder')} | {r['bytes_per_frame']:,.0f} | "
                    f"{_f(r.get('cut_bits_per_element'), '{:.2f}')} | {_f(r['map50'])} | {_f(r['map50_95'])} | "
                    f"{_f(r.get('map50_frequent'))} | {_f(r.get('labelme_map50'))} | {note} |"
                )
    if "rate_accuracy.png" in figures:
        lines += ["", "## Rate against accuracy, every method", "", "![rate-accuracy](rate_accuracy.png)", ""]
    if "rate_accuracy_frequent.png" in figures:
        lines += ["Over the frequent categories only:", "", "![rate-accuracy](rate_accuracy_frequent.png)", ""]
    return "\n".join(lines) + "\n"


def partial_notice(meta: dict, by_clip: dict, clip: str | None = None) -> list[str]:
    """The lines saying that a report is of a partial run (an eval stopped before the end of
    its plan): how many of the planned points (of ``clip``'s, or of every clip) have rows,
    and the methods and clips with none; [] for a finished run (or a folder from before
    point identities, whose plan is not known)."""
    counts = partial_counts(meta, by_clip, clip)
    if counts is None:
        return []
    done, planned, methods, clips = counts
    missing = []
    if methods:
        missing.append(f"methods {', '.join(methods)}")
    if clips:
        missing.append(f"clips {', '.join(clips)}")
    return [
        f"**Partial: {done} of {planned} planned points** measured (the run stopped before the end of its "
        "plan; `temposplit eval` with the same options measures the rest). Every table, figure and headline "
        "below holds the measured points only" + (f"; not measured: {'; '.join(missing)}." if missing else "."),
        "",
    ]


def partial_counts(meta: dict, by_clip: dict, clip: str | None = None):
    """(measured, planned, methods without a row, clips without a row) of the run's planned
    points (``meta.json``'s), of ``clip`` or of every clip; None when every planned point
    has its rows or the plan is not known."""
    from temposplit.evaluation.harness import progress

    points = meta.get("points")
    rows = [r for rs in by_clip.values() for r in rs]
    per_clip = progress(points, rows)
    if not per_clip:
        return None
    if clip is not None:
        per_clip = {clip: per_clip.get(clip, (0, 0))}
    done = sum(d for d, _ in per_clip.values())
    planned = sum(p for _, p in per_clip.values())
    if done >= planned:
        return None
    keys = [k for k in points if clip is None or k.split("|")[1:2] == [clip]]
    has = {r["method"] for r in rows}
    methods = list(dict.fromkeys(k.split("|")[3] for k in keys if len(k.split("|")) == 7))
    methods = [m for m in methods if m not in has]
    clips = [c for c, (d, _) in per_clip.items() if clip is None and not by_clip.get(c)]
    return done, planned, methods, clips


def _remove_stale_clip_reports(dest: Path, keep) -> None:
    """Remove the clip reports (``<clip>/report.md`` and its figures) that an earlier run wrote
    into ``dest`` for a clip this report does not hold: the pooled report no longer names it,
    and a reader of the folder would take its figures for the last run's. Only files this
    module writes are removed (a report.md is recognised by its title); the folder goes only
    when nothing else is left in it."""
    for folder in sorted(p for p in dest.iterdir() if p.is_dir() and p.name not in keep):
        md = folder / "report.md"
        try:
            with open(md) as f:
                ours = f.readline().startswith(CLIP_REPORT_TITLE)
        except (OSError, UnicodeDecodeError):
            continue  # no report, or not one of ours
        if not ours:
            continue
        for pattern in CLIP_REPORT_FIGURES:
            for png in folder.glob(pattern):
                png.unlink()
        md.unlink()
        try:
            folder.rmdir()
        except OSError:
            pass  # something else lives there: left alone


def write_report(out, rows, figures: bool = True, wall_s=None, dest=None, replicates=None) -> list[Path]:
    """Write results.csv, results.json and bdrate.csv, the pooled report.md, and per clip
    ``<clip>/report.md`` with its PNGs, into ``dest`` (default ``out``).

    A ``notes.md`` beside the report (in ``dest`` or ``out``) is included after the pooled
    report's introduction: the place for the written findings, which survive a rerun."""
    from temposplit.evaluation import bootstrap
    from temposplit.evaluation.meta import read_meta
    from temposplit.evaluation.pooled_report import write_pooled

    out = Path(out)
    dest = Path(dest) if dest else out
    meta_path = out / "meta.json"
    meta = read_meta(meta_path)  # a damaged file is reported before anything is written
    dest.mkdir(parents=True, exist_ok=True)
    settings = meta.get("settings", {})
    CUT_ORDER[:] = settings.get("cuts") or _cuts(rows)
    CLIP_ORDER[:] = list(settings.get("videos") or {}) or list(dict.fromkeys(r["clip"] for r in rows))
    paths = write_tables(rows, dest, meta)
    by_clip: dict[str, list] = {}
    for r in sorted(rows, key=_sort_key):
        by_clip.setdefault(r["clip"], []).append(r)
    _remove_stale_clip_reports(dest, keep=by_clip)
    for clip, clip_rows in by_clip.items():
        folder = dest / clip
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        if figures:
            for cut in _cuts(clip_rows):
                paths.append(plot_cut(clip_rows, cut, folder / f"cut_{cut}.png"))
                names.append(f"cut_{cut}.png")
            if any(_num(r.get("map50")) for r in clip_rows) and _cuts(clip_rows):
                paths.append(plot_rate_accuracy(clip_rows, folder / "rate_accuracy.png"))
                names.append("rate_accuracy.png")
        md = folder / "report.md"
        write_text(md, markdown(clip_rows, meta, names, None, None))
        paths.append(md)
    notes_path = next((p for p in (dest / "notes.md", out / "notes.md") if p.is_file()), None)
    notes = notes_path.read_text() if notes_path else None
    reps = bootstrap.REPLICATES if replicates is None else replicates
    paths += write_pooled(out, dest, by_clip, meta, figures=figures, wall_s=wall_s, notes=notes, replicates=reps)
    return paths
