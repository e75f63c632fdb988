"""``temposplit eval``: the rate/accuracy sweep and its report. Imports only argparse at load time."""

from __future__ import annotations

import argparse

METHODS_HELP = (
    "features-8bit, quant, uni-2, bi-3, bi-3+residual, chain+residual, refresh, rate-control, jpeg-act, "
    "jpeg, h264, h265, or all"
)


def _bits(text: str) -> list[int]:
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if ".." in part:
                lo, hi = (int(v) for v in part.split(".."))
                out += list(range(lo, hi + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N values such as 4..8 or 4,6,8, not {text!r}") from None
    if not out or any(not 2 <= b <= 8 for b in out):
        raise argparse.ArgumentTypeError(f"N must be in 2..8, not {text!r}")
    return sorted(set(out))


def _bits_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values:  # "," is not "the default crf values"
        raise argparse.ArgumentTypeError(f"expected integers such as 13,23,33, not {text!r}")
    return values


def _list(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, not {text!r}")
    return names


def _phases(text: str) -> list[int]:
    try:
        return sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected residues such as 0,2, not {text!r}") from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {v}")
    return v


REPLICATES_HELP = "bootstrap resamples for the intervals, 0..10000 (default 200; 0: no intervals)"


def _fold(text: str) -> tuple[int, int]:
    r, sep, k = text.partition("/")
    try:
        r, k = int(r), int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected R/K (e.g. 0/3), not {text!r}") from None
    if not sep or k < 2 or not 0 <= r < k:
        raise argparse.ArgumentTypeError(f"expected R/K with K >= 2 and 0 <= R < K, not {text!r}")
    return r, k


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count, not {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, not {v}")
    return v


MAX_REPLICATES = 10_000  # bootstrap resamples: each is a row of frame weights per clip and curve


def _replicates(text: str) -> int:
    v = _count(text)
    if v > MAX_REPLICATES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_REPLICATES} resamples, not {v}")
    return v


MIN_SIDE, MAX_SIDE = 32, 4096  # --min-size/--max-size: the bounds of `models --input-size`


def _side(text: str) -> int:
    """A resize side: positive and at most MAX_SIDE here; at least MIN_SIDE is checked with
    the model (the SSD takes neither option: that is said first)."""
    v = _positive(text)
    if v > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"expected a size in pixels in {MIN_SIDE}..{MAX_SIDE}, not {v}")
    return v


def _output_folder(path, option: str = "--out") -> None:
    """Refuse an output folder that is empty text (it wrote into the current folder) or that a
    file blocks (the folder itself or one above it): one line, before any work."""
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.files import file_in_the_way

    if not str(path):
        raise ConfigError(f"{option} is empty: give the output folder")
    blocker = file_in_the_way(path)
    if blocker is not None:
        where = f" {path} is" if blocker == Path(path) else f" {path}: {blocker} is"
        raise ConfigError(f"{option}{where} a file, not a folder")


def _real_weights(model: str, weights) -> None:
    """Refuse a torchvision model without ``--weights``: it would be built with random weights,
    whose figures are no result (docs/models.md: exactness and plumbing only, no rate or
    accuracy figure is reported for them). The harness still runs them, through the Python
    API (``Harness(model=..., weights=None)``), for the plumbing tests. An unknown model is
    left to the harness's own error."""
    from temposplit.errors import ConfigError
    from temposplit.model.cuts import MODELS, SSD

    if model in MODELS and model != SSD and weights is None:
        raise ConfigError(
            f"--model {model} without --weights: give --weights DEFAULT, COCO_V1 or a .pth (random weights give "
            "no rate or accuracy figure)"
        )


def _cmd_eval(args) -> int:
    import time

    from temposplit.evaluation.harness import Harness
    from temposplit.evaluation.report import write_report

    _output_folder(args.out)
    frames, bits, cuts, methods = args.frames, args.bits, args.cuts, args.methods
    videos = list(args.video or [])
    if args.video_list:
        from temposplit.evaluation.harness import read_video_list

        videos += read_video_list(args.video_list)
    if args.holdout:
        from temposplit.model import data

        videos += list(data.holdout_clips().values())  # the harness fetches them if missing
    if args.quick:
        frames = 2
        bits = bits or [4]
        if cuts is None:
            from temposplit.model.cuts import default_cut

            cuts = [default_cut(args.model)]
        if not videos:  # plumbing: the first default clip only
            from temposplit.evaluation.harness import default_videos

            videos = [next(iter(default_videos().values()))]
        args.crfs = args.crfs or [13, 43]  # both ends of each video curve
    score_every = args.score_every
    if score_every is None:
        from temposplit.evaluation.plan import DEFAULT_SCORE_EVERY

        score_every = 1 if args.quick else DEFAULT_SCORE_EVERY
    detector_kwargs = {}
    if args.min_size is not None or args.max_size is not None:
        from temposplit.errors import ConfigError
        from temposplit.model.cuts import DEFAULT_MODEL

        if args.model == DEFAULT_MODEL:
            raise ConfigError(
                f"--min-size and --max-size are torchvision models' resize; {DEFAULT_MODEL} takes 300x300"
            )
        for option, side in (("--min-size", args.min_size), ("--max-size", args.max_size)):
            if side is not None and side < MIN_SIDE:
                raise ConfigError(f"{option}: expected a size in pixels in {MIN_SIDE}..{MAX_SIDE}, not {side}")
        min_size = args.min_size if args.min_size is not None else args.max_size
        detector_kwargs = {"min_size": min_size, "max_size": args.max_size or min_size}
    _real_weights(args.model, args.weights)
    t0 = time.perf_counter()
    harness = Harness(
        model=args.model,
        weights=args.weights,
        video=videos or None,
        frames=frames,
        start=args.start,
        cuts=cuts,
        bits=bits,
        methods=methods,
        out=args.out,
        score_every=score_every,
        score_phases=args.score_phases,
        labelme=not args.no_labelme,
        detector_kwargs=detector_kwargs,
        calibration=args.calibration,
        calibration_fold=args.calibration_fold,
        crfs=args.crfs,
    )
    rows = harness.run()
    wall = time.perf_counter() - t0
    paths = write_report(args.out, rows, figures=not args.no_plots, wall_s=wall, replicates=args.replicates)
    print(f"{len(rows)} rows in {wall / 60:.1f} min")
    for p in paths:
        print(p)
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.evaluation.harness import last_run_rows
    from temposplit.evaluation.report import write_report

    if not args.out:
        raise ConfigError("--out is empty: give the eval output folder (default out/eval)")
    if args.dest is not None:
        _output_folder(args.dest, "--dest")
    path = Path(args.out) / "results.jsonl"
    rows = last_run_rows(args.out)
    if not rows:
        raise ConfigError(f"no results in {path}: run `temposplit eval` first")
    for p in write_report(args.out, rows, figures=not args.no_plots, dest=args.dest, replicates=args.replicates):
        print(p)
    _say_if_partial(args.out, rows)
    return 0


def _say_if_partial(out, rows) -> None:
    """One line on stderr when the report is of a run stopped before the end of its plan."""
    import sys
    from pathlib import Path

    from temposplit.evaluation.meta import read_meta
    from temposplit.evaluation.report import partial_counts

    by_clip: dict = {}
    for r in rows:
        by_clip.setdefault(r["clip"], []).append(r)
    counts = partial_counts(read_meta(Path(out) / "meta.json"), by_clip)
    if counts is not None:
        done, planned = counts[:2]
        print(
            f"temposplit eval-report: partial: {done} of {planned} planned points measured (the report says so; "
            "`temposplit eval` with the same options measures the rest)",
            file=sys.stderr,
        )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="rate/accuracy sweep: model x cut x N x method (resumable), then the report",
        description="Sweep every method at every cut and N over clips (docs/requirements.md section 6), "
        "score against the "
        "float model's detections and the labelme boxes, and write results.csv/json, plots and report.md. "
        "Finished points are kept in OUT/results.jsonl: rerunning continues where it stopped.",
    )
    p.add_argument("--model", default="ssd-mobilenet-v2", help="detector (default: ssd-mobilenet-v2)")
    p.add_argument("--weights", default=None, help="weights (torchvision: DEFAULT, COCO_V1 or a .pth)")
    p.add_argument(
        "--video",
        action="append",
        default=None,
        help="a video file; repeat for several clips (default: the evaluation clips vtest, cup, box, megamind)",
    )
    p.add_argument("--video-list", default=None, help="a file listing video paths, one a line (# comments)")
    p.add_argument(
        "--holdout",
        action="store_true",
        help="the held-out clips (bikes, carphone, bigbuckbunny), on which no default was chosen, instead of "
        "the evaluation clips (fetched by `make data`; docs/evaluation.md)",
    )
    p.add_argument(
        "--calibration",
        choices=("fixed", "clip"),
        default="fixed",
        help="int8 calibration on the fixed calibration set (default) or, labelled as such, on 32 frames "
        "of the clip under test",
    )
    p.add_argument(
        "--calibration-fold",
        type=_fold,
        default=None,
        help="R/K: calibrate on fold R of K of the fixed set (every K-th frame from the R-th left out), "
        "to see how far the results move with the calibration's data (default: the whole set)",
    )
    p.add_argument("--frames", type=_positive, default=100, help="frames of each clip (default 100)")
    p.add_argument("--start", type=int, default=0, help="first frame (default 0)")
    p.add_argument(
        "--cuts", type=_list, default=None, help="comma-separated cut names, or all (default: the plan's default cuts)"
    )
    p.add_argument("--bits", type=_bits, default=None, help="N values, e.g. 4..8 (default) or 4,6,8")
    p.add_argument(
        "--methods",
        type=_list,
        default=None,
        help=f"comma-separated, from: {METHODS_HELP} (default: the pruned plan, docs/evaluation.md)",
    )
    p.add_argument("--out", default="out/eval", help="output folder (default out/eval)")
    p.add_argument(
        "--score-every",
        type=_positive,
        default=None,
        help="score the detections of every k-th frame (rates count every frame; default 1: every frame)",
    )
    p.add_argument(
        "--score-phases",
        type=_phases,
        default=[0],
        help="with --score-every K: the residues i %% K of the scored frames (default 0), e.g. "
        "--score-every 5 --score-phases 0,2",
    )
    p.add_argument("--no-labelme", action="store_true", help="skip the real-box scores on the labelme frames")
    p.add_argument("--no-plots", action="store_true", help="tables and report without the PNG figures")
    p.add_argument(
        "--min-size", type=_side, default=None, help=f"torchvision models: resize's min_size ({MIN_SIDE}..{MAX_SIDE})"
    )
    p.add_argument(
        "--max-size", type=_side, default=None, help=f"torchvision models: resize's max_size ({MIN_SIDE}..{MAX_SIDE})"
    )
    p.add_argument("--quick", action="store_true", help="2-frame plumbing run (vtest, default cut, N=4, crf 13, 43)")
    p.add_argument("--replicates", type=_replicates, default=None, help=REPLICATES_HELP)
    p.add_argument(
        "--crfs", type=_bits_list, default=None, help="only these crf values of the video baselines, e.g. 13,23,33,43"
    )
    p.set_defaults(handler=_cmd_eval)

    r = subparsers.add_parser("eval-report", help="rewrite the report of a finished (or partial) eval run")
    r.add_argument("--out", default="out/eval", help="the eval output folder (default out/eval)")
    r.add_argument("--dest", default=None, help="write the report here instead (e.g. docs/results)")
    r.add_argument("--no-plots", action="store_true", help="no PNG figures")
    r.add_argument("--replicates", type=_replicates, default=None, help=REPLICATES_HELP)
    r.set_defaults(handler=_cmd_report)
