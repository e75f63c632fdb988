"""The ``lsq`` recipe step: activation ranges learned against the detector's outputs."""

import numpy as np
import pytest
import torch

from temposplit.model import lsq


def test_the_rounding_passes_lsq_gradients():
    scale = torch.tensor([0.5], requires_grad=True)
    x = torch.tensor([0.3, 1.1, -0.4, 200.0, -9.0], requires_grad=True)
    y = lsq._fake_quant(x, scale, 4.0)
    # quint8 codes clamp(round(x / s) + 4, 0, 255): 5, 6, 3, 255, 0
    assert torch.equal(y.detach(), torch.tensor([0.5, 1.0, -0.5, 125.5, -2.0]))
    y.sum().backward()
    # d/dx: 1 inside the range, 0 where it clamps; d/ds: round(x/s) - x/s inside, the bound outside
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    inside = (1 - 0.6) + (2 - 2.2) + (-1 + 0.8)
    assert scale.grad.item() == pytest.approx(inside + (255 - 4) + (0 - 4))


def test_the_output_loss_is_zero_at_the_teacher_and_grows_with_the_error():
    g = torch.Generator().manual_seed(0)
    boxes, logits = torch.randn(2, 50, 4, generator=g), torch.randn(2, 50, 91, generator=g)
    assert lsq.output_loss((boxes, logits), (boxes, logits)).item() == pytest.approx(0.0, abs=1e-6)
    small = lsq.output_loss((boxes + 0.01, logits + 0.1), (boxes, logits)).item()
    large = lsq.output_loss((boxes + 0.1, logits + 1.0), (boxes, logits)).item()
    assert 0 < small < large


def _weight_codes(net, layer):
    conv = net.get_submodule(layer).conv
    return conv._w64 if hasattr(conv, "_w64") else conv.weight().int_repr()  # int16 (WideConv2d) or int8


@pytest.mark.slow
def test_lsq_moves_activation_ranges_and_nothing_else(ssd, monkeypatch):
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import have_data
    from temposplit.model.quantize import quantize
    from temposplit.model.sensitivity import quant_points

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    monkeypatch.setattr(lsq, "STEPS", 3)
    frames = calibration_frames(2)
    plain = quantize(ssd, frames, method="default").net
    learned = quantize(ssd, frames, method="default+lsq").net
    moved = 0
    for p in quant_points(ssd.net):
        if p.kind == "w":  # the same weights, code for code
            assert torch.equal(_weight_codes(plain, p.layer), _weight_codes(learned, p.layer)), p.layer
            continue
        a, b = lsq._observed(plain, p.name), lsq._observed(learned, p.name)
        assert int(a.zero_point) == int(b.zero_point), p.name  # the zero points stay the observers'
        moved += float(a.scale) != float(b.scale)
        relu6 = isinstance(getattr(p.module, "act", None), torch.nn.ReLU6)
        if relu6:  # a ReLU6 output's range still ends at 6 at most: the clamp
            assert 255 * float(b.scale) <= 6.0 * (1 + 1e-6), p.name
    assert moved > 0.5 * sum(p.kind == "a" for p in quant_points(ssd.net))
    x = ssd.preprocess(frames[:1]).tensor
    assert np.isfinite(learned(x)[1].numpy()).all()
