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


def test_the_split_runs_the_second_network_after_each_cut(ssd):
    """``cut_outputs``: the first network up to each cut and the second after it; with the
    float network as both, every cut gives the float network's outputs."""
    from temposplit.model.ssd import SSDMobileNetV2

    x = torch.rand(1, 3, 300, 300) * 2 - 1
    with torch.no_grad():
        ref = ssd.net(x)
        cuts = [list(ssd.net.STAGES).index(c.name) for c in ssd.cuts]
        for boxes, logits in lsq.cut_outputs(ssd.net, ssd.net, x, cuts):
            assert torch.allclose(boxes, ref[0], atol=1e-5) and torch.allclose(logits, ref[1], atol=1e-5)
        other = SSDMobileNetV2().eval()  # another M2 after the last cut: its heads on the first's maps
        taps = {}
        hooks = [
            ssd.net.features[14].expand.register_forward_hook(lambda m, i, o: taps.update({"features.14.expand": o})),
            ssd.net.features[18].register_forward_hook(lambda m, i, o: taps.update({"features.18": o})),
        ]
        try:
            out = lsq.cut_outputs(ssd.net, other, x, [len(ssd.net.STAGES) - 1])[0]
        finally:
            for h in hooks:
                h.remove()
        expected = other.head(taps)
        assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


@pytest.mark.slow
def test_the_teacher_and_the_m2_are_the_untouched_float_network(ssd, monkeypatch):
    """``lsq`` learns against the detector's own float network as the evaluation scores the
    split (the server's M2 is ``detector.net``), not the recipe's (bias-corrected) one: the
    teacher's outputs are ``detector.net(x)`` and the layers after each cut are its."""
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import have_data
    from temposplit.model.quantize import recipe_float_net
    from temposplit.model.sensitivity import FakeQuantSSD

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    frames = calibration_frames(1)
    _, net, wide = recipe_float_net(ssd, frames, "default")
    sim = FakeQuantSSD(ssd)
    sim.calibrate(frames)
    before = {k: v.clone() for k, v in ssd.net.state_dict().items()}
    teachers, m2s = [], []
    loss, split = lsq.output_loss, getattr(lsq, "cut_outputs", None)

    def spy_loss(student, teacher):
        teachers.append(teacher)
        return loss(student, teacher)

    def spy_split(m1, m2, x, cuts):
        m2s.append(m2)
        return split(m1, m2, x, cuts)

    monkeypatch.setattr(lsq, "output_loss", spy_loss)
    monkeypatch.setattr(lsq, "cut_outputs", spy_split, raising=False)
    lsq.learn_scales(ssd, net, wide, frames, sim.qparams, steps=1, batch=1, augment=False)
    with torch.no_grad():
        ref = ssd.net(ssd.preprocess(frames).tensor.float())
    assert len(teachers) == len(ssd.cuts)
    for boxes, logits in teachers:
        assert torch.allclose(boxes, ref[0], atol=1e-5) and torch.allclose(logits, ref[1], atol=1e-5)
    assert m2s, "the layers after a cut are not the split's"
    for m2 in m2s:
        for k, v in m2.state_dict().items():
            assert torch.equal(v, before[k]), k
    for k, v in ssd.net.state_dict().items():  # the detector is not touched
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in ssd.net.parameters())
