"""The ``qat`` recipe step: the fine-tuned M1 shipped as a file, and how it is learned."""

import numpy as np
import pytest
import torch

from temposplit.model import qat
from temposplit.model.sensitivity import weight_fake_quant


def test_the_stored_codes_round_back_ties_included():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=g)
    w[0, 0, 0, 0], w[0, 1, 0, 0] = -10.0, -10.0  # two weights share the channel's largest |w|: both code -128
    w[1] = 0.0  # an all-zero channel
    w[2, 0, 1, 1] = 10.0  # the largest weight positive: code 127
    codes, idx, extreme = qat._snap(w)
    back = qat._unsnap(codes, idx, extreme)
    assert torch.equal(qat.round_int8(back), qat.round_int8(w))
    assert codes[0, 0, 0, 0] == codes[0, 1, 0, 0] <= -127 and codes[2, 0, 1, 1] == 127
    assert back.abs().flatten(1).amax(1).tolist() == w.abs().flatten(1).amax(1).tolist()  # the same scales


def test_the_rounding_passes_the_float_weights_gradient():
    w = torch.tensor([[0.3, -1.0, 0.12]], requires_grad=True)
    y = qat._Rounded(wide=False)(w)
    assert torch.equal(y.detach(), qat.round_int8(w))
    assert torch.equal(qat.round_int8(w), weight_fake_quant(w.detach()))  # as the recipe converts
    y.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_the_shipped_file_covers_the_m1():
    from temposplit.model.sensitivity import quant_points, stage_index
    from temposplit.model.ssd import SSDMobileNetV2

    shipped = qat.load()
    net = SSDMobileNetV2()
    last = stage_index(qat.LAST_STAGE)
    points = [p for p in quant_points(net) if stage_index(p.stage) <= last]
    assert sorted(shipped.weights) == sorted(p.layer for p in points if p.kind == "w")
    assert sorted(shipped.qparams) == sorted(p.name for p in points if p.kind == "a")
    for scale, zp in shipped.qparams.values():
        assert scale > 0 and 0 <= zp <= 255
    assert shipped.meta["format"] == qat.FORMAT and shipped.meta["steps"] > 0
    qat.restore(net, shipped)
    conv = net.features[0].conv
    assert torch.equal(conv.weight, shipped.weights["features.0"][0])


def test_a_network_of_another_shape_is_refused():
    from temposplit.model.ssd import SSDMobileNetV2

    shipped = qat.load()
    w, b = shipped.weights["features.0"]
    bad = qat.Shipped({"features.0": (w[:, :2], b)}, shipped.qparams, shipped.meta, shipped.digest)
    with pytest.raises(ValueError, match="does not fit"):
        qat.restore(SSDMobileNetV2(), bad)


def test_a_file_that_is_not_one_is_refused(tmp_path, monkeypatch):
    from temposplit.errors import ConfigError, MissingDependencyError

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ConfigError, match="not a qat network file"):
        qat.load(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ConfigError, match="not a qat network file"):
        qat.load(tmp_path / "other.npz")
    monkeypatch.setenv("TEMPOSPLIT_QAT_WEIGHTS", str(tmp_path / "missing.npz"))
    with pytest.raises(MissingDependencyError, match="cannot be read"):
        qat.load()


def test_qat_is_only_the_default_recipes():
    from temposplit.errors import ConfigError
    from temposplit.model.quantize import parse_method

    assert "qat" in parse_method("default+qat")[1]
    for method in ("minmax+qat", "default+lsq+qat", "mse+equalize+qat"):
        with pytest.raises(ConfigError, match="default\\+qat"):
            parse_method(method)


@pytest.mark.slow
def test_learning_lowers_the_output_error_on_its_frames(ssd):
    """A few steps on two frames: the heads' error with the int8 M1 goes down, the weights
    and ranges move, and what comes back rounds as the recipe will."""
    from temposplit.model.data import have_data
    from temposplit.model.quantize import DEFAULT_METHOD, recipe_float_net
    from temposplit.model.sensitivity import FakeQuantSSD, _stage_of, stage_index

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    from temposplit.model.calibration import calibration_frames

    frames = calibration_frames(2)
    _, net, wide = recipe_float_net(ssd, frames, DEFAULT_METHOD)
    sim = FakeQuantSSD(ssd)
    sim.calibrate(frames)
    result = qat.learn(
        ssd.net,
        net,
        wide,
        frames,
        sim.qparams,
        ["features.6", "features.13"],
        steps=6,
        batch=2,
        held_out=frames,
    )
    first, last = result.history[0]["held_out"], result.history[-1]["held_out"]
    assert sum(last) < sum(first)
    deepest = stage_index("features.13")  # the layers after the deepest cut trained get no gradient
    for layer, (w, _) in result.weights.items():
        moved = not torch.equal(w, net.get_submodule(layer).conv.weight)
        assert moved == (stage_index(_stage_of(layer)) <= deepest), layer
    assert sum(result.qparams[n][0] != sim.qparams[n][0] for n in result.qparams) > len(result.qparams) // 2
    assert all(zp == sim.qparams[n][1] for n, (_, zp) in result.qparams.items())  # zero points stay
    assert not any(hasattr(conv, "parametrizations") for conv in (p.conv for p in net.modules() if hasattr(p, "conv")))
    assert np.isfinite([s for s, _ in result.qparams.values()]).all()


def _converted(qnet, point: str):
    """The converted module that holds an activation point's scale and zero point."""
    layer = point[: -len(":a")]
    if layer == "input":
        return qnet.quant
    if layer.endswith(".add"):
        return qnet.get_submodule(layer[: -len(".add")] + ".skip_add")
    return qnet.get_submodule(layer).conv


@pytest.mark.slow
def test_default_qat_converts_to_the_shipped_codes_and_ranges(ssd):
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import have_data
    from temposplit.model.quantize import quantize

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    shipped = qat.load()
    qnet = quantize(ssd, calibration_frames(2), method="default+qat").net
    for layer, (w, _) in shipped.weights.items():
        conv = qnet.get_submodule(layer).conv
        if hasattr(conv, "_w64"):  # int16 weights (features.1's depthwise): their own grid
            continue
        assert torch.equal(conv.weight().dequantize(), qat.round_int8(w)), layer
    for name, (scale, zp) in shipped.qparams.items():
        module = _converted(qnet, name)
        assert float(module.scale) == float(np.float32(scale)) and int(module.zero_point) == zp, name
