"""The NumPy int8 M1 (the board's, no PyTorch) against PyTorch's qnnpack int8 M1.

Parity: at every SSD cut on real vtest.avi frames, and at the first two cuts of Faster
R-CNN ResNet-50 FPN (random weights, 256x320), at least 99.9 % of the codes equal and
none more than one step apart (today they are all equal); the operators one by one on
random data; the runtime imports and runs with torch made unimportable.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from temposplit.model import cuts
from temposplit.model import numpy_m1 as nm
from temposplit.model.export import _Builder, export_m1, m1_graph

pytestmark = [pytest.mark.models, pytest.mark.filterwarnings("ignore:torch.quantize_per:UserWarning")]

R50_SIZE = (256, 320)


def _assert_parity(ref_tensors, outs, names, label):
    """>= 99.9 % of codes equal, max |diff| <= 1, same scale and zero point; returns the figures."""
    figures = []
    for name, r, o in zip(names, ref_tensors, outs, strict=True):
        assert o.scale == r.q_scale() and o.zero_point == r.q_zero_point(), (label, name)
        a = r.int_repr().numpy().astype(np.int16)
        b = o.codes.astype(np.int16)
        assert a.shape == b.shape, (label, name, a.shape, b.shape)
        diff = np.abs(a - b)
        equal = float((diff == 0).mean())
        figures.append((name, equal, int(diff.max())))
        assert equal >= 0.999 and diff.max() <= 1, (label, name, equal, int(diff.max()))
    return figures


def _qtensor(t):
    return nm.QTensor(t.int_repr().numpy(), float(t.q_scale()), int(t.q_zero_point()))


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    "case",
    [
        # (cin, cout, kernel, stride, padding, groups, relu, per_channel)
        (8, 16, 1, 1, 0, 1, True, True),
        (8, 16, 3, 2, 1, 1, False, True),
        (16, 16, 3, 1, 1, 16, True, True),  # depthwise
        (16, 16, 3, 2, 0, 16, False, False),
        (3, 8, 7, 2, 3, 1, True, False),
        (512, 8, 3, 1, 1, 1, False, True),  # K = 4608: the reduction is split (partial sums >= 2**24)
    ],
)
def test_conv_matches_qnnpack(case):
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d
    from torch.ao.nn.quantized import Conv2d

    from temposplit.model.quantize import set_engine

    set_engine()
    cin, cout, k, stride, pad, groups, relu, per_channel = case
    g = torch.Generator().manual_seed(sum(case[:6]))
    w = torch.randn(cout, cin // groups, k, k, generator=g)
    if per_channel:
        scales = (w.abs().amax((1, 2, 3)) / 127).double()
        if cin == 512:
            scales = scales / 8  # saturate: |w| up to 127 everywhere, the worst case for the sums
        qw = torch.quantize_per_channel(w, scales, torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    else:
        qw = torch.quantize_per_tensor(w, float(w.abs().max()) / 127, 0, torch.qint8)
    mod = (ConvReLU2d if relu else Conv2d)(cin, cout, k, stride=stride, padding=pad, groups=groups)
    mod.set_weight_bias(qw, torch.randn(cout, generator=g))
    mod.scale, mod.zero_point = 0.37 if cin == 512 else 0.05, 0 if relu else 117
    x = torch.rand(2, cin, 11, 13, generator=g) * 4 - 1
    qx = torch.quantize_per_tensor(x, 5 / 255, 51, torch.quint8)
    ref = mod(qx)

    b = _Builder()
    src = b.quantize("q", 5 / 255, 51)
    b.conv("conv", src, mod)
    graph = {
        "format": nm.FORMAT,
        "version": nm.VERSION,
        "outputs": ["conv"],
        "output_names": ["conv"],
        "nodes": b.nodes,
    }
    runtime = nm.NumpyM1(graph, b.arrays)
    if cin == 512:
        assert len(runtime._ops["conv"].gemm.slices) > 1
    (out,) = runtime.run(x.numpy())
    assert np.array_equal(out.codes, ref.int_repr().numpy())


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_add_matches_qnnpack(relu, channels_last):
    from temposplit.model.quantize import set_engine

    set_engine()
    rng = np.random.default_rng(int(relu) + 2 * int(channels_last))
    op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
    for _ in range(20):
        sa, sb, s = (float(v) for v in rng.uniform(0.004, 0.3, 3).astype(np.float32))
        za, zb = (int(v) for v in rng.integers(0, 256, 2))
        z = int(rng.integers(0, 40)) if relu else int(rng.integers(0, 256))
        qa = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(rng.integers(0, 256, (1, 8, 5, 7), np.uint8)), sa, za
        )
        qb = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(rng.integers(0, 256, (1, 8, 5, 7), np.uint8)), sb, zb
        )
        if channels_last:  # what qnnpack's convolutions return
            qa, qb = (t.contiguous(memory_format=torch.channels_last) for t in (qa, qb))
        ref = op(qa, qb, s, z).int_repr().numpy()
        b = _Builder()
        b.qparams.update({"a": (sa, za), "b": (sb, zb)})
        b.add("sum", "a", "b", s, z, relu)
        assert np.array_equal(nm.add(_qtensor(qa), _qtensor(qb), b.nodes[0]), ref)


def test_quantize_and_max_pool_match_torch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 17, 19, generator=g) * 2
    scale, zp = 0.0078125, 128
    ref = torch.quantize_per_tensor(x, scale, zp, torch.quint8)
    b = _Builder()
    b.quantize("q", scale, zp)
    codes = nm.quantize(x.numpy(), b.nodes[0]["inv_scale"], zp)
    assert np.array_equal(codes, ref.int_repr().numpy())
    pool = torch.nn.MaxPool2d(3, 2, 1)
    node = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}
    assert np.array_equal(nm.max_pool(codes, node), pool(ref).int_repr().numpy())


def test_preprocess_equals_the_ssd_port():
    from temposplit.model import ssd

    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (576, 768, 3), dtype=np.uint8), rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)]
    assert np.array_equal(nm.preprocess_ssd(frames), ssd.preprocess(frames).numpy())


# --------------------------------------------------------------------------- whole M1


@pytest.fixture(scope="module")
def ssd_exports(ssd_int8, tmp_path_factory):
    folder = tmp_path_factory.mktemp("numpy_m1")
    return {c.name: export_m1(ssd_int8.split(c.name), folder / f"ssd-{c.name}.npz") for c in cuts.cuts(cuts.SSD)}


@pytest.mark.slow
@pytest.mark.parametrize("cut", [c.name for c in cuts.cuts(cuts.SSD)])
def test_ssd_cut_parity_on_real_frames(ssd_int8, ssd_exports, vtest_frames, cut):
    split = ssd_int8.split(cut)
    frames = vtest_frames[:2]
    ref = split.m1(ssd_int8.detector.preprocess(frames).tensor)
    runtime = nm.load(ssd_exports[cut])
    assert runtime.names == split.names
    outs = runtime(frames)  # NumPy preprocessing too
    _assert_parity(ref, outs, split.names, cut)
    for index in range(2):
        for c, r in zip(runtime.cut_tensors(outs, index), split.cut_tensors(ref, index), strict=True):
            assert (c.name, c.shape, c.scale, c.zero_point) == (r.name, r.shape, r.scale, r.zero_point)


def test_ssd_macs_equal_the_cost_table(ssd, ssd_int8, ssd_exports):
    from temposplit.model.costs import report

    table = {r["cut"]: r["m1"]["macs"] for r in report(ssd, (300, 300))["cuts"]}
    for cut, path in ssd_exports.items():
        assert nm.load(path).macs((300, 300)) == table[cut], cut


@pytest.fixture(scope="module")
def r50():
    from temposplit.model import load_detector

    torch.manual_seed(0)
    det = load_detector(cuts.FRCNN_R50, weights=None, min_size=R50_SIZE[0], max_size=R50_SIZE[1])
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (*R50_SIZE, 3), dtype=np.uint8)
    return det, [base, np.roll(base, 3, axis=1)]


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["layer1", "layer2"])
def test_resnet50_first_two_cuts_parity(r50, cut, tmp_path):
    from temposplit.model.quantize import quantize_m1

    det, frames = r50
    q = quantize_m1(det, cut, frames)
    batch = det.preprocess(frames)
    ref = q.m1(batch.tensor)
    runtime = nm.load(export_m1(q, tmp_path / f"r50-{cut}.npz"))
    assert runtime.input["kind"] == "tensor"
    outs = runtime.run(batch.tensor.numpy())
    _assert_parity(ref, outs, q.names, cut)


# --------------------------------------------------------------------------- the file and the board


def test_export_format(ssd_exports):
    path = ssd_exports["features.13"]
    with np.load(path, allow_pickle=False) as f:
        graph = json.loads(f["graph"].tobytes().decode("utf-8"))
        assert graph["format"] == "temposplit-numpy-m1" and graph["version"] == 2
        assert graph["model"] == cuts.SSD and graph["cut"] == "features.13"
        assert graph["output_names"] == ["features.13"]
        assert graph["input"]["kind"] == "ssd-rgb" and graph["input"]["size"] == [300, 300]
        ops = {n["op"] for n in graph["nodes"]}
        assert ops == {"quantize", "pad_same", "conv", "add"}
        convs = [n["name"] for n in graph["nodes"] if n["op"] == "conv"]
        # int8 weights, except features.1's depthwise: int16 in the default recipe (model/wide.py)
        assert {c: f[c + ".weight"].dtype for c in convs if f[c + ".weight"].dtype != np.int8} == {
            "features.1.depthwise.conv": np.int16
        }
        for c in convs:
            assert f[c + ".bias"].dtype == np.int32
            assert f[c + ".requant_scale"].dtype == np.float32
    summary = nm.load(path).summary()
    assert summary["ops"]["depthwise"] == 13  # features.1..13


def test_unknown_format_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, graph=np.frombuffer(json.dumps({"format": "other"}).encode(), np.uint8))
    with pytest.raises(nm.FormatError, match="format 'other'"):
        nm.load(bad)
    np.savez(bad, weights=np.zeros(3))
    with pytest.raises(nm.FormatError, match="no 'graph'"):
        nm.load(bad)


def test_unsupported_m1_is_refused():
    from temposplit.errors import ConfigError

    with pytest.raises(ConfigError, match="expected a QuantizedSplit or QuantizedM1"):
        m1_graph(object())


def test_runtime_runs_without_torch(ssd_exports, tmp_path):
    """What the board does: import the runtime with torch unimportable, run an export."""
    path = ssd_exports["features.6"]
    rng = np.random.default_rng(9)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    np.save(tmp_path / "frame.npy", frame)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        from temposplit.model import numpy_m1
        assert not [m for m in sys.modules if m.startswith("torch") and sys.modules[m] is not None]
        m1 = numpy_m1.load({str(path)!r})
        (t,) = m1([np.load({str(tmp_path / "frame.npy")!r})])
        np.save({str(tmp_path / "codes.npy")!r}, t.codes)
        print(t.codes.shape, t.scale, t.zero_point)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (expected,) = nm.load(path)([frame])
    assert np.array_equal(np.load(tmp_path / "codes.npy"), expected.codes)


def test_runtime_on_numpy_1(ssd_exports, tmp_path):
    """The board's NumPy is 1.x: set TEMPOSPLIT_NUMPY1_PYTHON to a Python with numpy<2 (no torch
    needed; e.g. ``python3 -m venv /tmp/np1 && /tmp/np1/bin/pip install numpy==1.26.4``)."""
    import os
    from pathlib import Path

    python = os.environ.get("TEMPOSPLIT_NUMPY1_PYTHON")
    if not python:
        pytest.skip("TEMPOSPLIT_NUMPY1_PYTHON is not set (a Python with numpy 1.x)")
    runtime_file = Path(nm.__file__)
    path = ssd_exports["features.13"]
    rng = np.random.default_rng(11)
    frame = rng.integers(0, 256, (576, 768, 3), dtype=np.uint8)
    np.save(tmp_path / "frame.npy", frame)
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        import numpy as np
        assert np.__version__.startswith("1."), np.__version__
        spec = importlib.util.spec_from_file_location("numpy_m1", {str(runtime_file)!r})
        mod = importlib.util.module_from_spec(spec)
        sys.modules["numpy_m1"] = mod
        spec.loader.exec_module(mod)  # the runtime is one self-contained file
        (t,) = mod.load({str(path)!r})([np.load({str(tmp_path / "frame.npy")!r})])
        np.save({str(tmp_path / "codes.npy")!r}, t.codes)
        """
    )
    run = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (expected,) = nm.load(path)([frame])
    assert np.array_equal(np.load(tmp_path / "codes.npy"), expected.codes)


@pytest.fixture(scope="module")
def ssd_int8_each_method(ssd):
    """The SSD quantized with every post-training method at once (int16 weights in every
    depthwise convolution among them, and ranges learned over a few steps), on 6
    calibration frames."""
    from temposplit.model import lsq
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import have_data
    from temposplit.model.quantize import quantize

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lsq, "STEPS", 3)
        return quantize(ssd, calibration_frames(6), method="minmax+equalize+cle+adaround+bias+lsq+dw16")


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["features.3", "features.18"])
def test_ssd_parity_after_the_post_training_methods(ssd_int8_each_method, vtest_frames, cut, tmp_path):
    """Equalization, AdaRound, bias correction and learned ranges change only the numbers
    in the int8 model, not its arithmetic: the NumPy M1 still equals it code for code."""
    split = ssd_int8_each_method.split(cut)
    frames = vtest_frames[:2]
    ref = split.m1(split.detector.preprocess(frames).tensor)
    runtime = nm.load(export_m1(split, tmp_path / f"{cut}.npz"))
    outs = runtime(frames)
    figures = _assert_parity(ref, outs, split.names, cut)
    assert all(equal == 1.0 for _, equal, _ in figures), figures


@pytest.mark.slow
def test_ssd_parity_with_the_shipped_qat_network(ssd, vtest_frames, tmp_path):
    """The fine-tuned network (``default+qat``) changes only the numbers too."""
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.data import have_data
    from temposplit.model.quantize import quantize

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    split = quantize(ssd, calibration_frames(6), method="default+qat").split("features.18")
    frames = vtest_frames[:2]
    ref = split.m1(split.detector.preprocess(frames).tensor)
    runtime = nm.load(export_m1(split, tmp_path / "qat.npz"))
    figures = _assert_parity(ref, runtime(frames), split.names, "features.18")
    assert all(equal == 1.0 for _, equal, _ in figures), figures
