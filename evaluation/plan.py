"""The method plan: every method of the sweep as one declared entry, and the sweep's tasks.

An :class:`Entry` names a method (the ``--methods`` name), its variant, the runner that
measures it (``evaluation/runners.py``), the coders whose rows share its reconstruction,
the runner's options, and where it runs: at every cut and N (``per="n"``), once per cut
(``per="cut"``) or once per clip (``per="clip"``, the frame baselines). Adding a method, or a
new setting of one, is one entry in :data:`PLAN`. :func:`tasks` expands the plan over the
cuts and N of a run into (name, row keys, runner call) triples.

``default`` says whether an entry is in the default sweep. The default is pruned to what
reached the lower convex hull of the features (over every cut, N and setting) in the
single-clip sweep of vtest.avi and the unpruned multi-clip sweep, on mAP@0.5, mAP@[.5:.95]
or the frequent-category mAP@0.5, and the video baselines to four crf values a curve;
docs/evaluation.md lists what was pruned. ``--methods all`` runs every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

FPS_REPORT = 30.0  # rates are given at 30 frames/s (the thesis's), whatever the clip's rate
SEARCH_RANGE = 7
DEFAULT_BITS = (4, 5, 6, 7, 8)
M2_BATCH = 32

QUANT_CODERS = ("raw", "zvc", "huffman", "zrl")
TSS_CODERS = ("raw", "zvc", "huffman")  # the thesis's curves
# The residual methods are also coded with bitstream v2's context-adaptive coder `ctx`: the same
# reconstruction, so only the bytes differ (docs/bitstream.md section 6.2).
# Residual thresholds are mean |current - prediction| per block in 8-bit code steps per active
# element, as the codec takes them (the same error in value at every N and on every cut).
BI3_RESIDUAL = {"structure": "bi-3", "reference": "anchor", "threshold": 2.0, "coders": ("huffman", "zrl", "ctx")}
CHAIN_RESIDUAL = {
    "structure": "uni-8",
    "reference": "chain",
    "thresholds": (1.5, 4.0),
    "coders": ("zrl", "huffman", "ctx"),
}
# Longer chains at the recommended threshold: the anchors are 34-38 % of the bytes at uni-8
# (but a chain's reconstruction stays up to t off in every block it leaves uncoded, which
# makes later predicted frames dearer). Not in the default sweep: measured on the
# evaluation clips (docs/results/notes.md, "Group length"); `--methods chain+residual` runs it.
CHAIN_GROUPS = {"structures": ("uni-16", "uni-32"), "threshold": 4.0, "coders": ("zrl", "ctx")}
# The same at t = 1.5 with residual values up to 4 8-bit steps dropped (one step at N = 6, two at
# N = 7); below one N-bit step (N <= 5) a dead zone changes nothing, so those N are not run.
CHAIN_DEAD_ZONE = {"threshold": 1.5, "dead_zone": 4.0, "coders": ("zrl", "ctx")}
# Flicker hysteresis at the recommended threshold: a predicted frame keeps the prediction's
# code while the int8 value stays within its cell widened by m 8-bit steps (an N-bit cell is
# 2^(8-N) steps wide: m = 1, 2 and 4 at N = 5 allow 5, 6 and 8 steps of error where 4 were).
# Measured at the default cut on the four clips (docs/results/notes.md, "Flicker
# hysteresis"): m = 1 and 2 put points above the pooled hull, so they are in the default
# sweep (with ctx, the coder on the hull); m = 4 runs with `--methods chain+residual`.
CHAIN_HYSTERESIS = {"threshold": 4.0, "hysteresis": (1, 2, 4), "default": (1, 2), "coders": ("ctx",)}
# The refresh as an adaptive group length: long groups predicted from their anchor with the
# residual mode, a new anchor as soon as a frame's prediction cost passes `factor` times the
# mean cost of a 1-frame step (uni-2's). Without a residual a refresh cannot rescue the drift
# (the first sweep: 0.37-0.63 at every cut).
REFRESH = {"structure": "uni-16", "reference": "anchor", "residual": 1.5, "factor": 1.5, "coder": "zrl"}
RATE_CONTROL = {
    # The controller changes N per group and scales the threshold per frame to meet the target.
    "structure": "uni-16",
    "reference": "chain",
    "threshold_8bit_steps": 0.25,  # the controller scales it per frame
    "coder": "zrl",
    "targets": (0.05, 0.10, 0.20),  # fractions of the 8-bit features' bytes per frame (all crossing tensors)
}
JPEG_ACT = {"tables": ("optL", "optH"), "coder": "jpeg", "max_clipped": 1e-3}
FREQUENT_MIN_BOXES = 50  # "frequent" categories: at least this many fidelity ground-truth boxes
JPEG_QUALITY = 75
JPEG_TARGET_BPP = 2.8
# The video baselines as a user would run them: crf 13..43 (from nearly lossless for the detector
# to well below the features' accuracy range), the encoders' default preset and a fast one an edge
# device could afford, at the clip's own resolution and at the detector's input resolution.
VIDEO_CRFS = (13, 18, 23, 28, 33, 38, 43)
# The default sweep's crf values: four points a curve, as Bjontegaard's method takes them, from
# end to end of VIDEO_CRFS. 18, 28 and 38 were on their own curve's hull least often (13-16 of
# 33-36 clip x curve x metric cases, against 20-33 for these) in the first two clips of the
# unpruned multi-clip sweep; `--methods all` or `--crfs` runs them.
DEFAULT_CRFS = (13, 23, 33, 43)
# The default sweep scores the detections of every frame (rates count every frame). It scored
# every second one until 2026-12-07: 2 is not coprime with the chain's groups of 8, so every
# anchor was scored (a quarter of the scored frames against an eighth of the coded ones), and
# anchors score higher than the frames predicted from them: that favoured the features
# (docs/evaluation.md, "Scoring"). A period coprime with every group length would do too, but
# the all-category mAP moves a lot between subsets of the frames.
DEFAULT_SCORE_EVERY = 1
VIDEO_PRESETS = ("medium", "veryfast")
VIDEO_RESOLUTIONS = ("native", "input")  # input: resized as the detector resizes (300x300 for the SSD)
# The detectors with a fixed input size, the only ones the input-resolution baseline runs for:
# the torchvision detectors resize each frame to their own min_size/max_size keeping its aspect,
# so their plan leaves the video codecs' "input" curves out (docs/evaluation.md).
FIXED_INPUT_MODELS = ("ssd-mobilenet-v2",)
# The default sweep's cuts (the SSD): the only ones whose points reached the features' hull on
# vtest.avi; the deeper cuts' int8 line alone is 0.91-0.94 there. `--cuts` runs any.
DEFAULT_CUTS = {"ssd-mobilenet-v2": ("features.3", "features.6", "features.10")}


@dataclass(frozen=True)
class Entry:
    """One method setting of the sweep (one curve over N, or one point per cut or clip)."""

    method: str
    variant: str
    runner: str  # a key of runners.RUNNERS
    coders: tuple = (None,)
    options: dict = field(default_factory=dict)
    per: str = "n"  # "n": every cut and N; "cut": once per cut; "clip": once per clip
    min_bits: int = 2  # run only at N >= min_bits
    default: bool = True  # in the default (pruned) sweep
    label: str = ""  # the progress line's name (default: method and variant)

    @property
    def name(self) -> str:
        return self.label or f"{self.method} {self.variant}".strip()


def video_variant(preset: str, resolution: str, crf: int) -> str:
    """``crf=23`` for the default preset at the clip's resolution, else e.g. ``input veryfast crf=23``."""
    parts = [] if resolution == "native" else [resolution]
    parts += [] if preset == "medium" else [preset]
    return " ".join(parts + [f"crf={crf}"])


def _codec(method, variant, coders, label=None, default=True, min_bits=2, **options) -> Entry:
    return Entry(
        method, variant, "codec", tuple(coders), options, label=label or method, default=default, min_bits=min_bits
    )


def _chain(structure, suffix, coders, default=True, min_bits=2, **options) -> Entry:
    """A ``chain+residual`` setting: variant "{structure} chain {suffix}", labelled by the
    suffix alone in the recommended group length."""
    short = suffix if structure == CHAIN_RESIDUAL["structure"] else f"{structure} {suffix}"
    return _codec(
        "chain+residual",
        f"{structure} chain {suffix}",
        coders,
        label=f"chain+residual {short}",
        default=default,
        min_bits=min_bits,
        structure=structure,
        reference="chain",
        **options,
    )


def _plan() -> tuple[Entry, ...]:
    b3, ch, dz, rf, rc = BI3_RESIDUAL, CHAIN_RESIDUAL, CHAIN_DEAD_ZONE, REFRESH, RATE_CONTROL
    plan = [
        Entry("features-8bit", "", "int8", per="cut", label="features-8bit"),
        _codec("quant", "intra", QUANT_CODERS, structure="intra"),
        _codec("uni-2", "tss", TSS_CODERS, structure="uni-2"),
        _codec("bi-3", "tss", TSS_CODERS, structure="bi-3"),
        _codec(
            "bi-3+residual",
            f"t={b3['threshold']:g}",
            b3["coders"],
            structure=b3["structure"],
            reference=b3["reference"],
            residual=b3["threshold"],
        ),
    ]
    for t in ch["thresholds"]:
        plan.append(_chain(ch["structure"], f"t={t:g}", ch["coders"], residual=t))
    t = CHAIN_GROUPS["threshold"]
    for structure in CHAIN_GROUPS["structures"]:
        plan.append(_chain(structure, f"t={t:g}", CHAIN_GROUPS["coders"], default=False, residual=t))
    t = CHAIN_HYSTERESIS["threshold"]
    for m in CHAIN_HYSTERESIS["hysteresis"]:
        default = m in CHAIN_HYSTERESIS["default"]
        plan.append(
            _chain(ch["structure"], f"t={t:g} hyst={m}", CHAIN_HYSTERESIS["coders"], default, residual=t, hysteresis=m)
        )
    # A dead zone below one N-bit step changes nothing: from the N whose step it covers.
    min_bits = next(n for n in range(2, 9) if dz["dead_zone"] >= 1 << (8 - n))
    suffix = f"t={dz['threshold']:g} dz={dz['dead_zone']:g}"
    plan.append(
        _chain(
            ch["structure"],
            suffix,
            dz["coders"],
            min_bits=min_bits,
            residual=dz["threshold"],
            dead_zone=dz["dead_zone"],
        )
    )
    plan.append(
        _codec(
            "refresh",
            f"{rf['structure']} t={rf['residual']:g} x{rf['factor']:g}",
            (rf["coder"],),
            structure=rf["structure"],
            reference=rf["reference"],
            residual=rf["residual"],
            refresh=True,
        )
    )
    for f in rc["targets"]:
        var = f"target {100 * f:g}% of 8-bit"
        plan.append(
            Entry(
                "rate-control",
                var,
                "rate-control",
                (rc["coder"],),
                {"fraction": f},
                per="cut",
                label=f"rate-control {var}",
            )
        )
    for table in JPEG_ACT["tables"]:
        plan.append(
            Entry(
                "jpeg-act",
                table,
                "jpeg-act",
                (JPEG_ACT["coder"],),
                {"table": table},
                per="cut",
                label=f"jpeg-act {table}",
            )
        )
    plan.append(
        Entry("jpeg", f"q={JPEG_QUALITY}", "frames", options={"codec": "jpeg", "setting": JPEG_QUALITY}, per="clip")
    )
    # The searched quality's variant (q=...) is known only after the search: no key before the run.
    plan.append(
        Entry(
            "jpeg",
            "",
            "frames",
            options={"codec": "jpeg", "setting": None},
            per="clip",
            label=f"jpeg ~{JPEG_TARGET_BPP:g} bpp",
        )
    )
    for codec in ("h264", "h265"):
        for preset in VIDEO_PRESETS:
            for res in VIDEO_RESOLUTIONS:
                for crf in VIDEO_CRFS:
                    options = {"codec": codec, "setting": crf, "preset": preset, "resolution": res}
                    plan.append(Entry(codec, video_variant(preset, res, crf), "frames", options=options, per="clip"))
    # Pruned from the default sweep: entries none of whose rows reached the features' lower convex
    # hull (any cut, N, coder; mAP@0.5, mAP@[.5:.95] or frequent mAP@0.5) in the vtest.avi sweep.
    pruned = {("quant", "intra"), ("uni-2", "tss"), ("bi-3", "tss")}
    pruned |= {("jpeg-act", t) for t in JPEG_ACT["tables"]}
    # ... and in the unpruned multi-clip sweep (vtest and cup, 100 frames, the dw16-first int8 M1):
    # rate control at every target and the refresh, none of their rows on a hull.
    pruned |= {(e.method, e.variant) for e in plan if e.method in ("rate-control", "refresh")}
    pruned |= {(e.method, e.variant) for e in plan if e.runner == "frames" and e.options.get("setting") in _CRF_PRUNED}
    return tuple(Entry(**{**e.__dict__, "default": False}) if (e.method, e.variant) in pruned else e for e in plan)


_CRF_PRUNED = frozenset(VIDEO_CRFS) - frozenset(DEFAULT_CRFS)


PLAN = _plan()
# The constants of this module that choose points (which cuts, N, crf values, methods run) or
# are the plan itself; every other upper-case constant enters a run's identity by value
# (evaluation/harness.py, ``Harness.run_id``).
POINT_CHOICES = frozenset(
    {
        "PLAN",
        "POINT_CHOICES",
        "FIXED_INPUT_MODELS",
        "_CRF_PRUNED",
        "DEFAULT_CUTS",
        "DEFAULT_BITS",
        "VIDEO_CRFS",
        "DEFAULT_CRFS",
        "QUANT_CODERS",
        "TSS_CODERS",
        "FEATURE_METHODS",
        "FRAME_METHODS",
        "ALL_METHODS",
        "DEFAULT_METHODS",
        "LABELME_METHODS",
    }
)
FEATURE_METHODS = tuple(dict.fromkeys(e.method for e in PLAN if e.per != "clip"))
FRAME_METHODS = tuple(dict.fromkeys(e.method for e in PLAN if e.per == "clip"))
ALL_METHODS = FEATURE_METHODS + FRAME_METHODS
DEFAULT_METHODS = tuple(m for m in ALL_METHODS if any(e.default for e in PLAN if e.method == m))
# Methods scored on the labelme frames (a 5-frame clip) against their real boxes.
LABELME_METHODS = {"float", "jpeg"} | set(FEATURE_METHODS) - {"rate-control"}


@dataclass(frozen=True)
class Task:
    """One point of the sweep: its progress name, the keys of its rows (None: known only after
    it ran), the call that measures it (returns its rows) and the entry it measures (None:
    the float reference)."""

    name: str
    keys: list | None
    run: Callable[[], list]
    entry: Entry | None = None


def row_key(model, clip, cut, method, variant, coder, n) -> str:
    return "|".join(str(x) for x in (model, clip, cut, method, variant, coder, n))


def runs_at_input_size(model: str, entry: Entry) -> bool:
    """Whether ``entry`` is a frame baseline at the detector's input size, which ``model``
    has not (:data:`FIXED_INPUT_MODELS`): then it is no point of the plan."""
    return entry.options.get("resolution") == "input" and model not in FIXED_INPUT_MODELS


def tasks(model: str, clip: str, cuts, bits, methods, call, pruned: bool = False, crfs=None) -> list[Task]:
    """The sweep of one clip: the float reference, then per cut every feature entry (at every N
    for per-N entries), then the frame baselines. ``call(entry, cut, n)`` returns the runner call.
    ``pruned``: only the entries marked ``default``; ``crfs``: only these of the video entries.
    A detector without a fixed input size has no input-resolution baseline (:func:`runs_at_input_size`)."""
    m = set(methods)
    out = [Task("float reference", [row_key(model, clip, None, "float", "", None, None)], call(None, None, None))]
    asked = crfs is not None  # named crf values run whether or not the default prunes them
    plan = [e for e in PLAN if e.default or not pruned or (asked and e.runner == "frames" and e.method != "jpeg")]
    plan = [e for e in plan if not runs_at_input_size(model, e)]
    if crfs is not None:
        plan = [e for e in plan if e.runner != "frames" or e.method == "jpeg" or e.options["setting"] in crfs]
    entries = [e for e in plan if e.method in m and e.per != "clip"]
    first_n = next((k for k, e in enumerate(PLAN) if e.per == "n"), len(PLAN))
    before = [e for e in entries if e.per == "cut" and PLAN.index(e) < first_n]
    after = [e for e in entries if e.per == "cut" and PLAN.index(e) > first_n]
    per_n = [e for e in entries if e.per == "n"]

    def per_cut(e, cut):
        n = 8 if e.runner == "int8" else None
        keys = [row_key(model, clip, cut, e.method, e.variant, c, n) for c in e.coders]
        return Task(f"{cut} {e.name}", keys, call(e, cut, None), e)

    for cut in cuts:  # per cut: the per-cut entries listed before the first per-N one, N by N, the rest
        out += [per_cut(e, cut) for e in before]
        for n in bits:
            for e in per_n:
                if n >= e.min_bits:
                    keys = [row_key(model, clip, cut, e.method, e.variant, c, n) for c in e.coders]
                    out.append(Task(f"{cut} N={n} {e.name}", keys, call(e, cut, n), e))
        out += [per_cut(e, cut) for e in after]
    for e in plan:
        if e.method in m and e.per == "clip":
            keys = [row_key(model, clip, None, e.method, e.variant, None, None)] if e.variant else None
            out.append(Task(e.name, keys, call(e, None, None), e))
    return out
