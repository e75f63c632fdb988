"""The ``qat`` recipe step: the fine-tuned M1 shipped as a file, and how it is learned."""

import numpy as np
import pytest
import torch

from temposplit.model import lsq, qat


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


def test_the_rounding_is_the_conversions():
    """``round_int8`` equals PyTorch's per-channel weight observer and quantizer, channels
    below the observer's eps floor included, and passes the float weight's gradient."""
    from torch.ao.quantization import default_per_channel_weight_observer

    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, 3, 3, generator=g)
    w[1] *= 1e-5  # max |w| / 127.5 near the float32 eps floor
    w[2] *= 1e-9  # below it
    w[3] = 0.0
    observer = default_per_channel_weight_observer()
    observer(w)
    scale, zp = observer.calculate_qparams()
    converted = torch.quantize_per_channel(w, scale.double(), zp, 0, torch.qint8).dequantize()
    assert torch.equal(qat.round_int8(w), converted)
    codes, idx, extreme = qat._snap(w)
    back = qat._unsnap(codes, idx, extreme)
    assert torch.equal(torch.quantize_per_channel(back, scale.double(), zp, 0, torch.qint8).dequantize(), converted)
    x = w.clone().requires_grad_(True)
    y = qat._Rounded(wide=False)(x)
    assert torch.equal(y.detach(), converted)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


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
    for layer in shipped.weights:  # the stored codes come back through the rounding
        if layer == "features.1.depthwise":  # int16 weights, stored as float32
            continue
        codes = np.load(qat.weights_path())[f"{layer}:codes"]
        weight = net.get_submodule(layer).conv.weight
        scale = qat._int8_scale(weight).reshape(-1, *([1] * (weight.dim() - 1)))
        assert np.array_equal(torch.round(qat.round_int8(weight) / scale).numpy().astype(np.int8), codes), layer


def test_a_network_of_another_shape_is_refused():
    from temposplit.errors import ConfigError
    from temposplit.model.ssd import SSDMobileNetV2

    shipped = qat.load()
    w, b = shipped.weights["features.0"]
    bad = qat.Shipped({"features.0": (w[:, :2], b)}, shipped.qparams, shipped.meta, shipped.digest)
    with pytest.raises(ConfigError, match="does not fit"):
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
    raw = bytearray(qat.weights_path().read_bytes())
    for offset in range(200, len(raw), len(raw) // 40):  # damaged deflate streams and headers
        damaged = bytearray(raw)
        damaged[offset : offset + 8] = b"\xff" * 8
        (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
        try:
            qat.load(tmp_path / "damaged.npz")
        except ConfigError:
            pass
    shipped = qat.load()
    partial = dict(shipped.weights)
    partial.pop("features.5.expand")
    qat.save(qat.Result(partial, shipped.qparams), tmp_path / "partial.npz", ["features.1.depthwise"], {"steps": 1})
    with pytest.raises(ConfigError, match="not the SSD M1's"):
        qat.load(tmp_path / "partial.npz")
    bad_range = {**shipped.qparams, "input:a": (0.0, 128)}
    qat.save(qat.Result(shipped.weights, bad_range), tmp_path / "range.npz", ["features.1.depthwise"], {"steps": 1})
    with pytest.raises(ConfigError, match="input:a has scale 0.0"):
        qat.load(tmp_path / "range.npz")
    stored = dict(np.load(qat.weights_path(), allow_pickle=False))
    tampered = {  # a layer's arrays that disagree: a ConfigError naming the layer and the array
        "features.0:index": (stored["features.0:index"][:5], "features.0:index has shape \\(5,\\)"),
        "features.0:extreme": (stored["features.0:extreme"][:5], "features.0:extreme has shape \\(5,\\)"),
        "features.0:codes": (stored["features.0:codes"][:5], "features.0:index .* features.0:codes has 5 channels"),
        "features.0:bias": (np.array(3.0, np.float32), "features.0:bias has shape \\(\\), the SSD's is \\(32,\\)"),
    }
    for key, (value, message) in tampered.items():
        np.savez(tmp_path / "tampered.npz", **{**stored, key: value})
        with pytest.raises(ConfigError, match=message):
            qat.load(tmp_path / "tampered.npz")
    flat = stored["features.0:codes"].reshape(32, -1)
    np.savez(tmp_path / "tampered.npz", **{**stored, "features.0:codes": flat})
    with pytest.raises(ConfigError, match="features.0:codes has shape \\(32, 27\\)"):
        qat.load(tmp_path / "tampered.npz")
    import json

    meta = json.loads(str(stored["meta"]))
    for value in (True, float(meta["format"]), str(meta["format"])):  # equal to the format, not it
        np.savez(tmp_path / "tampered.npz", **{**stored, "meta": np.array(json.dumps({**meta, "format": value}))})
        with pytest.raises(ConfigError, match="qat file format"):
            qat.load(tmp_path / "tampered.npz")
    half = stored["zero_points"].astype(np.float64) + 0.5  # cut to an integer silently before
    np.savez(tmp_path / "tampered.npz", **{**stored, "zero_points": half})
    with pytest.raises(ConfigError, match="zero_points must be integers"):
        qat.load(tmp_path / "tampered.npz")
    monkeypatch.setenv("TEMPOSPLIT_QAT_WEIGHTS", str(tmp_path / "missing.npz"))
    with pytest.raises(MissingDependencyError, match="cannot be read"):
        qat.load()


def test_a_pipe_or_a_device_is_refused_unread(tmp_path, monkeypatch):
    """``$TEMPOSPLIT_QAT_WEIGHTS`` naming a FIFO (no writer) or /dev/zero is refused at
    once, not waited on or read without end; a file larger than the bound is refused."""
    import os
    import threading

    from temposplit.errors import ConfigError, MissingDependencyError

    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        monkeypatch.setenv("TEMPOSPLIT_QAT_WEIGHTS", str(path))
        raised = []

        def run(raised=raised):
            try:
                qat.load()
            except Exception as exc:  # what it raised is checked below
                raised.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout=60)  # a safety net: the refusal comes before any read
        if worker.is_alive() and path == fifo:  # blocked on the FIFO: a writer lets it go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert not worker.is_alive(), f"{path}: still reading"
        assert len(raised) == 1 and isinstance(raised[0], MissingDependencyError), (path, raised)
        assert "not a regular file" in str(raised[0])
    monkeypatch.delenv("TEMPOSPLIT_QAT_WEIGHTS")
    monkeypatch.setattr(qat, "MAX_BYTES", 1000)
    with pytest.raises(ConfigError, match="more than 1000"):
        qat.load()


def test_the_simulator_refuses_qat():
    from temposplit.errors import ConfigError
    from temposplit.model.sensitivity import recipe_simulator

    with pytest.raises(ConfigError, match="models accuracy"):
        recipe_simulator(None, "default+qat", [])


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
        module = lsq._observed(qnet, name)  # the converted module holds what the observer held
        assert float(module.scale) == float(np.float32(scale)) and int(module.zero_point) == zp, name
