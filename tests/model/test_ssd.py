"""The SSD-MobileNetV2 port: against OpenCV's cv2.dnn on the same graph, anchors, cuts."""

import numpy as np
import pytest
import torch

from temposplit.model import cuts, opencv_ref
from temposplit.model import ssd as ssd_mod

pytestmark = pytest.mark.models


def test_anchors_match_the_graph_layout():
    a = ssd_mod.anchors()
    assert a.shape == (1917, 4)  # 19*19*3 + (100 + 25 + 9 + 4 + 1) * 6
    assert ssd_mod.head_grid_sizes() == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    # First cell of the first layer: (0.1, ratio 1), (0.2, ratio 2), (0.2, ratio 1/2).
    first = a[:3].numpy()
    assert np.allclose(first[:, :2], 0.5 / 19)
    assert np.allclose(first[:, 2], [0.1, 0.2 / np.sqrt(2), 0.2 * np.sqrt(2)], atol=1e-6)
    assert np.allclose(first[:, 3], [0.1, 0.2 * np.sqrt(2), 0.2 / np.sqrt(2)], atol=1e-6)
    # Last layer (1x1): the interpolated scale sqrt(0.95 * 1.0).
    assert a[-1, 2].item() == pytest.approx(np.sqrt(0.95), abs=1e-6)


def test_box_decoding_of_zero_codes_is_the_anchor():
    anchor = torch.tensor([[0.5, 0.4, 0.2, 0.1]])
    box = ssd_mod.decode_boxes(torch.zeros(1, 4), anchor)
    assert torch.allclose(box, torch.tensor([[0.4, 0.35, 0.6, 0.45]]))


def test_tf_same_padding_is_asymmetric():
    pad = ssd_mod.TFSamePad(3, 2)
    assert pad._pad(300) == (0, 1) and pad._pad(19) == (1, 1) and pad._pad(38) == (0, 1)


def test_preprocess_range_and_tf1_resize(vtest_frames):
    x = ssd_mod.preprocess(vtest_frames[:1])
    assert x.shape == (1, 3, 300, 300) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    # TF1 legacy resize samples source pixel floor(i * in/out) exactly at i = 0.
    assert torch.allclose(x[0, :, 0, 0], torch.from_numpy(vtest_frames[0][0, 0].astype(np.float32)) * 2 / 255 - 1)


def test_matches_opencv_dnn_on_real_frames(ssd, vtest_frames):
    """Same classes, scores within 1e-3, boxes within 1 px, for every detection >= 0.3."""
    net = opencv_ref.load_net()
    ours = ssd.detect(vtest_frames)
    total = 0
    for frame, d in zip(vtest_frames, ours, strict=False):
        theirs = opencv_ref.detect(net, frame)
        assert opencv_ref.compare(d, theirs, score_min=0.3, score_tol=1e-3, box_tol=1.0) == []
        total += len(d.above(0.3))
    assert total >= 8, "vtest frames have several pedestrians: the comparison must not be vacuous"
    assert "person" in ours[0].above(0.5).labels


def test_compare_detects_a_difference(ssd, vtest_frames):
    d = ssd.detect(vtest_frames[:1])[0]
    moved = type(d)(d.boxes + np.array([2.0, 0, 0, 0], np.float32), d.scores, d.category_ids, d.labels)
    assert opencv_ref.compare(d, moved)


def test_detections_are_coco_ids_in_frame_pixels(ssd, vtest_frames):
    d = ssd.detect(vtest_frames[:1])[0]
    assert len(d) > 0 and np.all(np.diff(d.scores) <= 0)
    assert d.scores.min() >= 0.05
    assert np.all(d.boxes[:, [0, 2]] <= 768) and np.all(d.boxes[:, [1, 3]] <= 576) and np.all(d.boxes >= 0)
    assert set(d.category_ids.tolist()) <= set(range(1, 91))
    assert d.to_dict()["labels"] == d.labels


@pytest.mark.parametrize("cut", [c.name for c in cuts.cuts(cuts.SSD)])
def test_split_is_exact_in_float(ssd, vtest_frames, cut):
    batch = ssd.preprocess(vtest_frames[:2])
    whole = ssd.forward(batch)
    split = ssd.split(cut)
    tensors = split.m1(batch.tensor)
    assert [tuple(t.shape[1:]) for t in tensors] == split.shapes()
    assert split.names == [t.name for t in cuts.get_cut(cuts.SSD, cut).crossing]
    parts = split.m2(tensors, batch.meta)
    for a, b in zip(whole, parts, strict=True):  # every frame, none dropped
        assert np.array_equal(a.boxes, b.boxes)
        assert np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.category_ids, b.category_ids)


def test_split_m2_catches_a_wrong_tensor(ssd, vtest_frames):
    """The exactness test can fail: a perturbed crossing tensor changes the detections."""
    batch = ssd.preprocess(vtest_frames[:1])
    split = ssd.split()
    t = split.m1(batch.tensor)
    a = split.m2(t, batch.meta)[0]
    b = split.m2([t[0] * 1.01], batch.meta)[0]
    assert not np.array_equal(a.scores, b.scores)


def test_weights_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPOSPLIT_CACHE", str(tmp_path))
    sd = ssd_mod.load_state_dict()
    cached = list(tmp_path.glob("*.pt"))
    assert len(cached) == 1
    again = ssd_mod.load_state_dict()
    assert all(torch.equal(sd[k], again[k]) for k in sd)
