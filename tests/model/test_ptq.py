"""The post-training methods (model/ptq.py), the int8 recipes and the sensitivity simulator."""

import copy
import math

import numpy as np
import pytest
import torch

from temposplit.errors import ConfigError
from temposplit.model import ptq
from temposplit.model.quantize import parse_method

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def calib():
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import have_data

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    return calibration_frames(6)


def test_parse_method():
    from temposplit.model.quantize import DEFAULT_METHOD

    assert parse_method("default") == parse_method(DEFAULT_METHOD)
    assert parse_method("histogram") == ("histogram", ())
    assert parse_method("minmax+equalize+bias") == ("minmax", ("equalize", "bias"))
    assert parse_method("default+adaround") == (parse_method("default")[0], (*parse_method("default")[1], "adaround"))
    assert parse_method("default+streams")[1][-1] == "streams"
    for bad in ("kmeans", "minmax+magic", "minmax+bias+bias", "histogram+dw16+dw16-first"):
        with pytest.raises(ConfigError):
            parse_method(bad)


@pytest.mark.parametrize("method", ["equalize", "cle"])
def test_equalization_keeps_the_float_network(ssd, calib, method):
    net = copy.deepcopy(ssd.net).eval()
    ptq.apply(ssd, net, calib, (method,))
    changed = sum(not torch.equal(a, b) for a, b in zip(ssd.net.parameters(), net.parameters(), strict=True))
    assert changed > 10, "the method rescaled nothing"
    # Same function on the frames it was derived from (ReLU6 commutes with the scaling there).
    assert ptq.check_equivalence(ssd, ssd.net, net, calib[:3]) < 1e-4


def test_range_equalization_fills_the_relu6_range(ssd, calib):
    net = copy.deepcopy(ssd.net).eval()
    before = ptq._collect(ssd, ssd.net, calib, [("f0", ssd.net.features[0])], "max")["f0"]["max"]
    ptq.equalize_ranges(ssd, net, calib)
    after = ptq._collect(ssd, net, calib, [("f0", net.features[0])], "max")["f0"]["max"]
    unclipped = (before > 0) & (before < 6)
    assert unclipped.any()
    assert torch.equal(after[before <= 0] <= 0, torch.ones_like(after[before <= 0], dtype=torch.bool))
    assert torch.all(after[unclipped] >= before[unclipped] - 1e-5)
    assert float(after[unclipped].mean()) > float(before[unclipped].mean())
    assert torch.all(after <= torch.maximum(before, torch.tensor(6.0)) + 1e-4)


def test_residual_streams_follow_the_blocks(ssd):
    streams = ptq.residual_streams(ssd.net)
    assert [s["blocks"] for s in streams] == [[1], [2, 3], [4, 5, 6], [7, 8, 9, 10], [11, 12, 13], [14, 15, 16], [17]]
    assert [len(s["readers"]) for s in streams] == [1, 2, 3, 4, 3, 3, 1]
    assert streams[-1]["readers"] == [ssd.net.features[18]]
    for s in streams:  # every reader reads the stream's channels
        width = ssd.net.features[s["blocks"][0]].project.conv.out_channels
        assert all(r.conv.in_channels == width for r in s["readers"])


@pytest.mark.parametrize("at_cuts", [False, True])
def test_stream_equalization_keeps_the_float_network_and_the_cut_tensors(ssd, calib, at_cuts):
    from temposplit.model.split import Split

    net = copy.deepcopy(ssd.net).eval()
    ptq.equalize_streams(ssd, net, calib, at_cuts=at_cuts)
    gains = net.stream_gains
    scaled = {"features.3", "features.6", "features.10", "features.13"} & set(gains)
    assert scaled == (set(gains) - {"features.1", "features.16", "features.17"} if at_cuts else set())
    assert sum(int((k > 1).sum()) for k in gains.values()) > 50, "the method rescaled nothing"
    assert ptq.check_equivalence(ssd, ssd.net, net, calib[:3]) < 1e-4
    x = ssd.preprocess(calib[:3]).tensor
    for cut in ssd.cuts:
        with torch.no_grad():
            ref = ssd.split(cut.name).m1(x)
            got = Split(ssd, cut, net).m1(x)
        for name, a, b in zip(cut_names(cut), ref, got, strict=True):
            if name in gains:  # a scaled cut tensor: unscaled, it is the float one
                assert not torch.allclose(a, b, atol=1e-3), name
                b = b / gains[name].reshape(1, -1, 1, 1)
            assert float((a - b).abs().max() / a.abs().max()) < 1e-4, (cut.name, name)


def cut_names(cut):
    return [t.name for t in cut.crossing]


def test_stream_equalization_widens_channels_inside_each_tensor_range(ssd, calib):
    """Every channel grows (k >= 1) without any stream tensor's range growing: each gain
    stops where one of the channel's tensors reaches its tensor's range, or at K_MAX."""
    net = copy.deepcopy(ssd.net).eval()
    streams = ptq.residual_streams(ssd.net)
    before = ptq._stream_ranges(ssd, ssd.net, calib, streams)
    ptq.equalize_streams(ssd, net, calib, at_cuts=True)
    after = ptq._stream_ranges(ssd, net, calib, ptq.residual_streams(net))
    assert before.keys() == after.keys() and len(before) == 1 + 3 + 5 + 7 + 5 + 5 + 1
    for i, s in enumerate(streams):
        k = net.stream_gains[s["last"]]
        assert torch.all(k >= 1) and torch.all(k <= ptq.K_MAX)
        reached = torch.zeros_like(k, dtype=torch.bool)
        live = torch.zeros_like(k, dtype=torch.bool)  # a channel that is 0 everywhere keeps k = 1
        for (j, name), (lo, hi) in after.items():
            if j != i:
                continue
            lo0, hi0 = before[(j, name)]
            tol = 1e-4 * float(hi0.max() - lo0.min())
            assert float(lo.min()) >= float(lo0.min()) - tol and float(hi.max()) <= float(hi0.max()) + tol, name
            reached |= (hi >= float(hi.max()) - tol) | (lo <= float(lo.min()) + tol)
            live |= (hi > 0) | (lo < 0)
        assert torch.all(reached | (k >= ptq.K_MAX) | ~live), s["last"]
        assert float(k.max()) > 1.2, s["last"]


def test_adaround_weights_are_on_the_grid_and_keep_the_scales(ssd, calib):
    net = copy.deepcopy(ssd.net).eval()
    report = ptq.adaround(ssd, net, calib, last=1, iters=60)
    assert set(report["gain_db"]) == {"features.0", "features.1.depthwise", "features.1.project"}
    for name, mod in ptq.backbone_convs(net, 1):
        old = dict(ptq.backbone_convs(ssd.net, 1))[name].conv.weight
        new = mod.conv.weight
        s = ptq.weight_grid(old)
        assert torch.equal(ptq.weight_grid(new), s), name  # the scale does not move
        codes = new / s
        top = (old.abs() == old.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1)) & (new == old)
        others = codes[~top]
        assert torch.allclose(others, others.round(), atol=1e-3), name
        assert torch.all((codes.round() - old / s).abs() <= 1 + 1e-4), name
        # The int8 recipe's round-to-nearest yields exactly the chosen codes.
        assert torch.equal(torch.round(new / s)[~top], others.round()), name
    # The learned rounding reconstructs features.1's projection better than round-to-nearest.
    assert report["gain_db"]["features.1.project"] > 0


def test_bias_correction_removes_the_mean_output_error(ssd, calib):
    net = copy.deepcopy(ssd.net).eval()
    ptq.correct_bias(ssd, net, calib, last=1)
    mod_f = ssd.net.features[1].project
    mod_c = net.features[1].project
    inputs = []
    h = mod_f.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
    with torch.no_grad():
        ssd.net(ssd.preprocess(calib).tensor)
    h.remove()
    x = torch.cat(inputs)
    with torch.no_grad():
        ref = mod_f.conv(x)
        w_q = ptq.round_weights(mod_f.conv.weight)
        plain = torch.nn.functional.conv2d(x, w_q, mod_f.conv.bias)
        corrected = torch.nn.functional.conv2d(x, w_q, mod_c.conv.bias)
    err_plain = (plain - ref).mean((0, 2, 3)).abs().mean()
    err_corr = (corrected - ref).mean((0, 2, 3)).abs().mean()
    assert float(err_corr) < 0.2 * float(err_plain)


@pytest.mark.slow
def test_simulation_matches_the_real_int8_m1(ssd, calib, vtest_frames):
    """The sensitivity study's fake quantization rounds as the eager int8 M1 does (the plain
    histogram recipe: the study quantizes the float network as it is, before any of the
    post-training methods that the default recipe applies)."""
    from temposplit.model.quantize import quantize
    from temposplit.model.sensitivity import FakeQuantSSD

    q = quantize(ssd, calib, method="histogram")
    sim = FakeQuantSSD(ssd)
    sim.calibrate(calib)
    x = ssd.preprocess(vtest_frames[:2]).tensor
    sim.set_enabled([p.name for p in sim.points])
    try:
        fake = ssd.split("features.6").m1(x)[-1]
    finally:
        sim.restore()
    real = q.split("features.6").m1(x)[-1].dequantize()
    ref = ssd.split("features.6").m1(x)[-1]

    def sqnr(a, b):
        return 10 * math.log10(float((a**2).sum()) / float(((a - b) ** 2).sum()))

    assert abs(sqnr(ref, fake) - sqnr(ref, real)) < 0.5
    assert sqnr(fake, real) > sqnr(ref, real) + 6  # far closer to each other than to float


@pytest.mark.slow
def test_recipe_simulator_rounds_as_the_real_default_int8_m1(ssd, calib, vtest_frames):
    """The simulator of a recipe (post-training methods on a copy of the float network,
    features.1's depthwise weights on the int16 grid, the recipe's observer) has the real
    int8 M1's SQNR within 1 dB and lies closer to it than to float (less tightly than the
    plain simulator: its mse ranges come from other samples than the real observer's), and
    leaves the detector it was given untouched."""
    from temposplit.model.quantize import DEFAULT_METHOD, quantize
    from temposplit.model.sensitivity import recipe_simulator

    before = {k: v.clone() for k, v in ssd.net.state_dict().items()}
    sim = recipe_simulator(ssd, DEFAULT_METHOD, calib)
    assert sim.wide == ("features.1.depthwise",) and sim.observer == "mse"
    assert all(torch.equal(before[k], v) for k, v in ssd.net.state_dict().items())
    q = quantize(ssd, calib, method=DEFAULT_METHOD)
    x = ssd.preprocess(vtest_frames[:2]).tensor
    sim.set_enabled([p.name for p in sim.points])
    try:
        fake = sim.detector.split("features.6").m1(x)[-1]
    finally:
        sim.restore()
    real = q.split("features.6").m1(x)[-1].dequantize()
    ref = ssd.split("features.6").m1(x)[-1]  # equalization leaves the cut tensor unscaled

    def sqnr(a, b):
        return 10 * math.log10(float((a**2).sum()) / float(((a - b) ** 2).sum()))

    assert abs(sqnr(ref, fake) - sqnr(ref, real)) < 1.0
    assert sqnr(fake, real) > sqnr(ref, real) + 1


def test_stage_index_orders_the_cut_table():
    from temposplit.errors import ConfigError
    from temposplit.model.sensitivity import stage_index

    order = ["input", "features.0", "features.13", "features.14.expand", "features.14", "features.18"]
    assert [stage_index(s) for s in order] == sorted(stage_index(s) for s in order)
    assert len({stage_index(s) for s in order}) == len(order)
    with pytest.raises(ConfigError):
        stage_index("features.x")


def test_study_refuses_groups_outside_its_points_before_calibrating():
    """An --only group that does not exist, or lies after --last, is refused at once
    (no frames are needed to find out)."""
    from temposplit.errors import ConfigError
    from temposplit.model import load_detector
    from temposplit.model.sensitivity import run_study

    det = load_detector()
    with pytest.raises(ConfigError, match="no stage group features.14:a"):
        run_study(det, {}, [], "stage", only_points=["features.14:a"], last="features.13")
    with pytest.raises(ConfigError, match="no point group features.1.dw:w"):
        run_study(det, {}, [], "point", only_points=["features.1.dw:w"])


def test_quant_points_cover_m1():
    from temposplit.model import load_detector
    from temposplit.model.sensitivity import groups, quant_points

    points = quant_points(load_detector().net)
    names = [p.name for p in points]
    assert names[:3] == ["input:a", "features.0:w", "features.0:a"]
    assert "features.1.project:w" in names and "features.2.add:a" not in names and "features.3.add:a" in names
    assert sum(p.kind == "w" for p in points) == 52  # every backbone convolution up to features.18
    stages = {label.split(":")[0] for label, _ in groups(points, "stage")}
    assert "features.14.expand" in stages and len(stages) == 21  # the input and the 20 stages
    assert np.all([len(m) == 1 for _, m in groups(points, "point")])


@pytest.mark.slow
def test_adaround_q_reduces_the_output_error_on_the_quantized_inputs(ssd, calib):
    """adaround-q learns each layer's rounding on the inputs of the network as rounded so
    far: on the calibration frames, features.0 (quantized input) and features.1.project
    (its input through features.0's learned codes, features.1's depthwise and two
    activation roundings) reproduce the float layer's output better with the learned
    codes than with round-to-nearest, measured here on every position with a simulator
    calibrated anew; the codes keep the recipe's contract (its rounding returns them)."""
    from temposplit.model.sensitivity import FakeQuantSSD, weight_fake_quant

    net = copy.deepcopy(ssd.net).eval()
    wide = frozenset({"features.1.depthwise"})  # as the default recipe: int16, not learned
    report = ptq.adaround_quantized(ssd, net, calib, "histogram", last=1, iters=150, samples=2048, wide=wide)
    assert set(report["gain_db"]) == {"features.0", "features.1.project"}
    learned = dict(ptq.backbone_convs(net, 1))
    assert torch.equal(learned["features.1.depthwise"].conv.weight, ssd.net.features[1].depthwise.conv.weight)
    for name, old in ptq.backbone_convs(ssd.net, 1):
        if name in wide:
            continue
        w0, w1 = old.conv.weight, learned[name].conv.weight
        s = ptq.weight_grid(w0)
        assert torch.equal(ptq.weight_grid(w1), s), name  # the scale does not move
        top = (w0.abs() == w0.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1)) & (w1 == w0)
        codes = w1[~top] / s.expand_as(w1)[~top]
        assert torch.allclose(codes, codes.round(), atol=1e-3), name  # on the grid
        assert torch.equal(torch.round(w1 / s)[~top], codes.round()), name  # the recipe's rounding returns them
        assert torch.all((codes.round() - w0[~top] / s.expand_as(w0)[~top]).abs() <= 1 + 1e-4), name
        assert not torch.equal(weight_fake_quant(w1), weight_fake_quant(w0)), name  # not round-to-nearest

    x = ssd.preprocess(calib).tensor
    twin = copy.copy(ssd)
    twin.net = net
    sim = FakeQuantSSD(twin, "histogram")
    sim.set_wide(wide)
    sim.calibrate(calib)
    floats = dict(ptq.backbone_convs(ssd.net, 1))
    wanted = (("features.0", 0.3), ("features.1.project", 0.05))  # dB below round-to-nearest
    gains = {}
    for name, _ in wanted:
        mod = learned[name]
        sim.set_enabled([p.name for p in sim.points])
        try:
            xq, _ = _conv_io(net, mod.conv, x)  # the input as the network rounded so far gives it
        finally:
            sim.restore()
        _, target = _conv_io(ssd.net, floats[name].conv, x)  # the float layer's output on float inputs
        act = isinstance(mod.act, torch.nn.ReLU6)
        nearest = _output_error(mod.conv, weight_fake_quant(floats[name].conv.weight), xq, target, act)
        ada = _output_error(mod.conv, weight_fake_quant(mod.conv.weight), xq, target, act)
        gains[name] = 10 * math.log10(nearest / ada)
    assert all(gains[name] > min_db for name, min_db in wanted), gains


@torch.no_grad()
def _conv_io(net, conv, x):
    """(input, output) of one convolution of ``net`` on the batch ``x``."""
    seen = {}
    h = conv.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    try:
        net(x)
    finally:
        h.remove()
    return seen["x"], seen["y"]


@torch.no_grad()
def _output_error(conv, weights, x, target, act):
    """Mean squared error of ``conv`` with ``weights`` on ``x`` against ``target`` (its
    pre-activation output; through ReLU6 on both sides if ``act``)."""
    y = torch.nn.functional.conv2d(x, weights, conv.bias, conv.stride, conv.padding, 1, conv.groups)
    if act:
        y, target = y.clamp(0, 6), target.clamp(0, 6)
    return float((y - target).pow(2).mean())
