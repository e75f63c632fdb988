"""Int8 PTQ of the SSD (eager, qnnpack): quint8 codes and (s8, z8) at every cut."""

import numpy as np
import pytest
import torch

from temposplit.model import cuts
from temposplit.model.accuracy import coco_map, fidelity_ground_truth

pytestmark = pytest.mark.models


@pytest.mark.parametrize("cut", [c.name for c in cuts.cuts(cuts.SSD)])
def test_int8_m1_yields_quint8_codes_per_crossing_tensor(ssd_int8, vtest_frames, cut):
    batch = ssd_int8.detector.preprocess(vtest_frames[:2])
    split = ssd_int8.split(cut)
    tensors = split.m1(batch.tensor)
    shapes = cuts.get_cut(cuts.SSD, cut).shapes((300, 300))
    assert len(tensors) == len(shapes)
    for t in tensors:
        assert t.is_quantized and t.dtype == torch.quint8 and t.qscheme() == torch.per_tensor_affine
    for frame in range(2):
        ct = split.cut_tensors(tensors, frame)
        assert [c.shape for c in ct] == shapes
        for c, t in zip(ct, tensors, strict=False):
            assert c.codes.dtype == np.uint8 and c.codes.shape == c.shape
            assert c.scale > 0 and 0 <= c.zero_point <= 255
            assert np.array_equal(c.dequantize(), t[frame].dequantize().numpy())
            # Full range at the cut: the calibrated range reaches both ends of 0..255 on real frames
            # (or the zero point sits at 0 for a ReLU tap).
            assert c.codes.max() > 200 and (c.codes.min() < 30 or c.zero_point == 0)


@pytest.mark.parametrize("cut", ["features.3", "features.13", "features.18"])
def test_int8_m2_goes_on_exactly(ssd_int8, vtest_frames, cut):
    batch = ssd_int8.detector.preprocess(vtest_frames[:2])
    whole = ssd_int8.forward(batch)
    split = ssd_int8.split(cut)
    parts = split.m2_int8(split.m1(batch.tensor), batch.meta)
    for a, b in zip(whole, parts, strict=True):  # every frame, none dropped
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)


def test_int8_m1_float_m2_stays_close_to_float(ssd, ssd_int8, vtest_frames):
    batch = ssd.preprocess(vtest_frames)
    gt = fidelity_ground_truth(ssd.forward(batch))
    split = ssd_int8.split()
    dets = split.m2(split.m1(batch.tensor), batch.meta)
    result = coco_map(gt, dets)
    assert result["gt_boxes"] >= 8
    assert result["map50"] > 80, result


def test_relu6_tap_saturates_at_six(ssd_int8, vtest_frames):
    split = ssd_int8.split("features.14.expand")
    (t,) = split.m1(ssd_int8.detector.preprocess(vtest_frames[:1]).tensor)
    assert t.q_zero_point() == 0
    assert t.dequantize().max().item() <= 6.0 + 1e-6
