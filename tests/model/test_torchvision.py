"""The thesis's torchvision detectors (random weights: exactness and plumbing only)."""

import numpy as np
import pytest
import torch

from temposplit.model import cuts, load_detector

pytestmark = pytest.mark.models

TV_MODELS = [cuts.FRCNN_R50, cuts.FRCNN_MBV3, cuts.RETINANET_R50]
SIZE = (256, 320)


@pytest.fixture(scope="module", params=TV_MODELS)
def detector(request):
    torch.manual_seed(0)
    # score_threshold 0: random weights give low scores; keep detections so the comparison bites.
    return load_detector(request.param, weights=None, min_size=SIZE[0], max_size=SIZE[1], score_threshold=0.0)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    return [base, np.roll(base, 3, axis=1)]


def test_every_cut_is_exact(detector, frames):
    reference = detector.reference(frames)  # torchvision's own model(images)
    assert sum(len(d) for d in reference) > 0
    batch = detector.preprocess(frames)
    assert tuple(batch.tensor.shape[-2:]) == SIZE
    for cut in detector.cuts:
        split = detector.split(cut.name)
        tensors = split.m1(batch.tensor)
        assert [tuple(t.shape[1:]) for t in tensors] == cut.shapes(SIZE), cut.name
        out = split.m2(tensors, batch.meta)
        for a, b in zip(reference, out, strict=True):  # every frame, none dropped
            assert np.array_equal(a.boxes, b.boxes), cut.name
            assert np.array_equal(a.scores, b.scores), cut.name
            assert np.array_equal(a.category_ids, b.category_ids), cut.name


def test_int8_m1_first_and_last_cut(detector, frames):
    from temposplit.model.quantize import quantize_m1

    batch = detector.preprocess(frames)
    for cut in (detector.cuts[0], detector.cuts[-1]):
        q = quantize_m1(detector, cut.name, frames)
        tensors = q.m1(batch.tensor)
        ct = q.cut_tensors(tensors, 0)
        assert [c.shape for c in ct] == cut.shapes(SIZE)
        assert all(c.codes.dtype == np.uint8 and 0 <= c.zero_point <= 255 and c.scale > 0 for c in ct)
        if cut is detector.cuts[0]:
            (f,) = detector.split(cut.name).m1(batch.tensor)
            err = (tensors[0].dequantize() - f).abs().mean() / f.abs().mean()
            assert err < 0.1
        assert len(q.m2(tensors, batch.meta)) == 2


def test_frozen_batchnorm_swap_is_exact():
    from torchvision.ops.misc import FrozenBatchNorm2d

    from temposplit.model.quantize import _swap_frozen_bn

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
    with torch.no_grad():
        m[1].weight.uniform_(0.5, 2)
        m[1].bias.uniform_(-1, 1)
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    ref = m(x)
    _swap_frozen_bn(m)
    assert isinstance(m[1], torch.nn.BatchNorm2d)
    assert torch.allclose(m(x), ref, atol=1e-6)
