"""M1 and M2 milliseconds per frame (``temposplit bench models``).

The SSD at 300x300 at every cut, float and int8 (int8 M1; M2 both as float M2 on the
dequantized tensors and as int8 M2); the torchvision detectors at 800x1088 at their first
cut, float and int8 M1 (random weights: the cost does not depend on the weights, except
for the two-stage detectors' box head, which runs over however many proposals the RPN
keeps). M2 includes postprocessing (box decoding, NMS). One frame per call; the figure
is the best of ``repeats`` timed calls after one warm-up (timeit's advice: on a shared
machine the minimum is the least disturbed estimate).
"""

from __future__ import annotations

import time

import torch


def _ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(min(times), 2)


def bench_ssd(repeats: int = 10, log=print) -> list[dict]:
    from temposplit.model import load_detector
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import read_video, vtest_path
    from temposplit.model.quantize import quantize

    det = load_detector()
    q = quantize(det, calibration_frames())
    batch = det.preprocess(list(read_video(vtest_path(), max_frames=1)))
    rows = []
    for cut in det.cuts:
        fs = det.split(cut.name)
        qs = q.split(cut.name)
        ft = fs.m1(batch.tensor)
        qt = qs.m1(batch.tensor)
        row = {
            "model": det.name,
            "cut": cut.name,
            "input": list(det.input_size),
            "float_m1_ms": _ms(lambda fs=fs: fs.m1(batch.tensor), repeats),
            "float_m2_ms": _ms(lambda fs=fs, ft=ft: fs.m2(ft, batch.meta), repeats),
            "int8_m1_ms": _ms(lambda qs=qs: qs.m1(batch.tensor), repeats),
            "int8_m2_ms": _ms(lambda qs=qs, qt=qt: qs.m2_int8(qt, batch.meta), repeats),
            "dequant_float_m2_ms": _ms(lambda qs=qs, qt=qt: qs.m2(qt, batch.meta), repeats),
        }
        rows.append(row)
        if log:
            log(row)
    return rows


def bench_torchvision(repeats: int = 3, input_size=(800, 1088), log=print) -> list[dict]:
    import numpy as np

    from temposplit.model import load_detector
    from temposplit.model.quantize import quantize_m1
    from temposplit.model.split import Batch, BatchMeta

    rows = []
    for name in ("fasterrcnn-resnet50-fpn", "fasterrcnn-mobilenet-v3-large-fpn", "retinanet-resnet50-fpn"):
        det = load_detector(name)
        cut = det.cuts[0]
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, (*input_size, 3), dtype=np.uint8)
        meta = BatchMeta(tuple(input_size), [tuple(input_size)], [tuple(input_size)])
        x = Batch(det.preprocess([frame]).tensor, meta)
        if tuple(x.tensor.shape[-2:]) != tuple(input_size):
            x = Batch(torch.rand(1, 3, *input_size), meta)
        fs = det.split(cut.name)
        ft = fs.m1(x.tensor)
        q = quantize_m1(det, cut.name, [frame], batch_size=1)
        row = {
            "model": name,
            "cut": cut.name,
            "input": list(input_size),
            "weights": "random",
            "float_m1_ms": _ms(lambda fs=fs, x=x: fs.m1(x.tensor), repeats),
            "float_m2_ms": _ms(lambda fs=fs, ft=ft, meta=meta: fs.m2(ft, meta), repeats),
            "int8_m1_ms": _ms(lambda q=q, x=x: q.m1(x.tensor), repeats),
        }
        rows.append(row)
        if log:
            log(row)
    return rows
