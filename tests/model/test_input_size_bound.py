"""``temposplit models --input-size`` in bounded memory (model/costs.py).

The SSD's and RetinaNet's MACs are counted on PyTorch's meta device (shapes only): the
same counts as a real float pass, with no activation memory at any allowed size (a real
pass over the SSD at 4096x4096 peaked at 6.3 GB). The Faster R-CNN ResNet-50's count needs
a real pass (its box head runs on the RPN's proposals): above 2048x2048 pixels it is
refused in one line, exit status 2, before any model is loaded.
"""

from __future__ import annotations

import contextlib
import types

import pytest

import temposplit.model as model_pkg
from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.model import costs
from temposplit.model import cuts as cut_table

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.models

# The SSD's MACs at 4096x4096 as the real float pass counted them (before the meta device:
# `temposplit models --model ssd-mobilenet-v2 --input-size 4096x4096`, 323.30 GMAC, 6.3 GB peak).
SSD_4096_MACS = 323_297_103_872


@contextlib.contextmanager
def only_meta_tensors():
    """Every convolution and linear layer that runs inside this must run on the meta device:
    one that computes real values fails the test at once (before it takes gigabytes)."""

    def check(module, inputs, output):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            assert output.device.type == "meta", f"{type(module).__name__} ran on {output.device}"

    handle = torch.nn.modules.module.register_module_forward_hook(check)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def retinanet():
    from temposplit.model import load_detector

    torch.manual_seed(0)
    return load_detector(cut_table.RETINANET_R50)  # random weights: counts do not depend on them


def _real_pass(monkeypatch, detector, size):
    """costs.measure over a real float pass, as it counted before the meta device."""
    with monkeypatch.context() as m:
        m.setattr(costs, "REAL_PASS", (*costs.REAL_PASS, detector.name))
        return costs.measure(detector, size)


@pytest.mark.parametrize("size", [(32, 32), (33, 97), (300, 300), (301, 299), (512, 384), (97, 640)])
def test_the_ssd_on_the_meta_device_counts_what_a_real_pass_counts(ssd, size, monkeypatch):
    real = _real_pass(monkeypatch, ssd, size)
    assert sum(real["macs"].values()) > 0
    assert costs.measure(ssd, size) == real  # MACs and parameters, stage by stage


@pytest.mark.parametrize("size", [(32, 32), (33, 97), (256, 320), (301, 299)])
def test_retinanet_on_the_meta_device_counts_what_a_real_pass_counts(retinanet, size, monkeypatch):
    real = _real_pass(monkeypatch, retinanet, size)
    assert sum(real["macs"].values()) > 0
    assert costs.measure(retinanet, size) == real


def test_the_ssd_at_4096x4096_is_counted_without_real_activations(ssd):
    with only_meta_tensors():
        m = costs.measure(ssd, (4096, 4096))
        r = costs.report(ssd, (4096, 4096))
    assert sum(m["macs"].values()) == SSD_4096_MACS
    assert r["macs"] == SSD_4096_MACS and r["input_size"] == [4096, 4096]
    for c in r["cuts"]:
        assert c["m1"]["macs"] + c["m2"]["macs"] == SSD_4096_MACS


def test_retinanet_at_4096x4096_is_counted_without_real_activations(retinanet, monkeypatch):
    # 4096 = 16 x 256 and 256 a multiple of its coarsest stride (128, P7): every layer's output,
    # and so every count, is 256 times that of a real pass at 256x256
    real = _real_pass(monkeypatch, retinanet, (256, 256))
    with only_meta_tensors():
        m = costs.measure(retinanet, (4096, 4096))
    assert m["macs"] == {stage: 256 * n for stage, n in real["macs"].items()}
    assert m["params"] == real["params"]


# ---------------------------------------------------------------------------- the real pass's bound


@pytest.fixture
def stubs(monkeypatch):
    """The models are never loaded or counted: what reached them is recorded."""
    seen = []
    monkeypatch.setattr(model_pkg, "load_detector", lambda name, weights=None: seen.append(name) or name)
    monkeypatch.setattr(costs, "report", lambda det, size: {"model": det, "input_size": list(size), "cuts": []})
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "fasterrcnn-resnet50-fpn", "--input-size", "4096x4096"],
        ["--model", "fasterrcnn-resnet50-fpn", "--input-size", "4096x1025"],  # 1 row over 2048x2048
        ["--input-size", "4096x4096"],  # all four
    ],
)
def test_a_real_pass_over_its_bound_is_refused_before_any_model_loads(argv, stubs, one_line):
    """`models --model fasterrcnn-resnet50-fpn --input-size 4096x4096` ran a float pass of 6-10 GB."""
    assert main(["models", "--json", "--threads", "1", *argv]) == 2
    h, w = argv[-1].split("x")
    one_line(f"input size {h}x{w} ({int(h) * int(w)} pixels) is too large for fasterrcnn-resnet50-fpn", "(2048x2048)")
    assert stubs == []


@pytest.mark.parametrize(
    "model, size",
    [
        ("fasterrcnn-resnet50-fpn", "2048x2048"),
        ("fasterrcnn-resnet50-fpn", "4096x1024"),
        ("fasterrcnn-mobilenet-v3-large-fpn", "4096x4096"),  # its real pass peaks at 4.0 GB there
        ("ssd-mobilenet-v2", "4096x4096"),
        ("retinanet-resnet50-fpn", "4096x4096"),
    ],
)
def test_sizes_within_the_bounds_are_counted(model, size, stubs):
    assert main(["models", "--json", "--threads", "1", "--model", model, "--input-size", size]) == 0
    assert stubs == [model]


def test_measure_refuses_the_size_itself(monkeypatch):
    """The API has the CLI's bound: a ConfigError before the network is touched."""
    det = types.SimpleNamespace(name=cut_table.FRCNN_R50, info=None, net=None)
    with pytest.raises(ConfigError, match=r"input size 4096x4096 \(16777216 pixels\) is too large"):
        costs.measure(det, (4096, 4096))
    with pytest.raises(ConfigError, match="is too large"):
        costs.report(types.SimpleNamespace(name=det.name, info=cut_table.model_info(det.name), net=None), (4096, 4096))
