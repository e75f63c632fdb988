"""The calibrated int8 network kept on disk (model/qcache.py): the same calibration again
loads an equal network, anything that changes the result is a new entry, a damaged entry
is recomputed, and the cache can be turned off."""

from __future__ import annotations

import pytest
import torch

from temposplit.model import qcache
from temposplit.model.quantize import quantize

pytestmark = pytest.mark.models

RECIPE = "minmax"  # no post-training steps: seconds


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPOSPLIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TEMPOSPLIT_INT8_CACHE", raising=False)
    return tmp_path / "int8"


def _codes(q, batch, cut="features.10"):
    return q.split(cut).m1(batch)[-1].int_repr()


# minmax: the plain modules; mse+dw16-first: the default recipe's observer (SampledObserver)
# and its int16 depthwise layer (WideConv2d), whose state is partly plain attributes
@pytest.mark.parametrize("recipe", [RECIPE, "mse+dw16-first"])
def test_the_same_calibration_again_loads_an_equal_network(ssd, vtest_frames, cache, recipe):
    said = []
    first = quantize(ssd, vtest_frames[:2], method=recipe, log=said.append)
    assert len(list(cache.glob("*.pt"))) == 1
    assert not any("calibration cache" in s for s in said)
    said.clear()
    again = quantize(ssd, vtest_frames[:2], method=recipe, log=said.append)
    assert any("calibration cache" in s for s in said)
    assert again.net is not first.net
    batch = ssd.preprocess(vtest_frames[2:4])
    for cut in ("features.3", "features.10", "features.18"):
        assert torch.equal(_codes(first, batch, cut), _codes(again, batch, cut))
    a, b = first.forward(batch), again.forward(batch)
    assert repr(a) == repr(b)  # the same detections, to the last digit printed


def test_frames_recipe_and_batch_size_are_each_part_of_the_key(ssd, vtest_frames, cache):
    quantize(ssd, vtest_frames[:2], method=RECIPE)
    quantize(ssd, vtest_frames[1:3], method=RECIPE)
    assert len(list(cache.glob("*.pt"))) == 2
    net, frames, recipe = ssd.net, vtest_frames[:2], ("minmax", ())
    base = qcache.key(net, frames, recipe, 8)
    assert qcache.key(net, [f.copy() for f in frames], recipe, 8) == base
    flipped = [frames[0].copy(), frames[1]]
    flipped[0][0, 0, 0] ^= 1
    assert qcache.key(net, flipped, recipe, 8) != base
    assert qcache.key(net, frames, ("percentile", ()), 8) != base
    assert qcache.key(net, frames, ("minmax", ("bias",)), 8) != base
    assert qcache.key(net, frames, recipe, 1) != base


def _state(q) -> dict:
    """Every tensor and plain value of an int8 network's modules: quantized weights as
    their codes with their per-channel scales and zero points."""
    out = {}
    for name, value in q.net.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_quantized:
            out[name] = value.int_repr()
            if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                out[name + ":scales"] = value.q_per_channel_scales()
                out[name + ":zero_points"] = value.q_per_channel_zero_points()
            else:
                out[name + ":qparams"] = torch.tensor([value.q_scale(), value.q_zero_point()], dtype=torch.float64)
        else:
            out[name] = value
    for name, module in q.net.named_modules():
        for attr in ("scale", "zero_point"):
            if isinstance(getattr(module, attr, None), (int, float)):
                out[f"{name}.{attr}"] = getattr(module, attr)
    return out


_OTHER_MACHINE = """
from temposplit.model import load_detector, qcache, quantize as Q
from temposplit.model.data import read_video, vtest_path
Q.CALIBRATION_THREADS = 1
det = load_detector()
frames = list(read_video(vtest_path(), max_frames=4, start=100))
qcache.store("other", Q.quantize(det, frames[:{n}], method="default").net)
"""


@pytest.mark.slow
def test_the_calibration_is_the_same_on_other_cpu_kernels_and_thread_counts(ssd, vtest_frames, monkeypatch, tmp_path):
    """The default recipe computes in float64: a process that runs PyTorch's generic kernels
    (no SIMD), MKL's SSE4.2 ones and one calibration thread makes, to the bit, the network
    this one makes with its own kernels at the fixed thread count (in float32 the two
    differed in 183-190 of its 414 tensors: docs/models.md, "Reproducibility")."""
    import os
    import subprocess
    import sys

    from temposplit.model.quantize import QuantizedDetector

    n = 3
    monkeypatch.setenv("TEMPOSPLIT_INT8_CACHE", "0")
    here = quantize(ssd, vtest_frames[:n], method="default")
    monkeypatch.setenv("TEMPOSPLIT_CACHE", str(tmp_path))
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", MKL_ENABLE_INSTRUCTIONS="SSE4_2", ONEDNN_MAX_CPU_ISA="SSE41")
    script = _OTHER_MACHINE.replace("{n}", str(n))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    there = QuantizedDetector(ssd, qcache.load("other"))
    a, b = _state(here), _state(there)
    assert sorted(a) == sorted(b)
    differ = [k for k in a if not (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k])]
    assert differ == []
    batch = ssd.preprocess(vtest_frames[n:])
    for cut in ("features.3", "features.10", "features.18"):
        assert torch.equal(_codes(here, batch, cut), _codes(there, batch, cut))
    assert repr(here.forward(batch)) == repr(there.forward(batch))


def test_the_cpu_kind_is_not_part_of_the_key(ssd, vtest_frames, monkeypatch):
    """Calibrations made on AVX2 and AVX-512 machines are equal (the test above): a cache
    shared between them serves both."""
    net, frames, recipe = ssd.net, vtest_frames[:2], ("minmax", ())
    base = qcache.key(net, frames, recipe, 8)
    other = "AVX512" if torch.backends.cpu.get_cpu_capability() != "AVX512" else "AVX2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: other)
    assert qcache.key(net, frames, recipe, 8) == base


def test_the_calibration_does_not_depend_on_the_callers_threads(ssd, vtest_frames, monkeypatch):
    """Calibration runs at CALIBRATION_THREADS, or fewer where the caller set fewer (never
    more than the process was given), gives the caller's setting back, and makes the same
    network at 1 and at 2 threads."""
    from temposplit.model import quantize as Q

    monkeypatch.setenv("TEMPOSPLIT_INT8_CACHE", "0")
    inside = []
    calibrate = Q._calibrate

    def counted(*args, **kwargs):
        inside.append(torch.get_num_threads())
        return calibrate(*args, **kwargs)

    monkeypatch.setattr(Q, "_calibrate", counted)
    before = torch.get_num_threads()
    batch = ssd.preprocess(vtest_frames[2:4])
    codes = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            q = quantize(ssd, vtest_frames[:2], method="mse")
            assert torch.get_num_threads() == threads  # the caller's setting is given back
            codes.append(_codes(q, batch, "features.13"))
    finally:
        torch.set_num_threads(before)
    assert inside == [1, Q.CALIBRATION_THREADS]
    assert torch.equal(codes[0], codes[1])


def test_a_damaged_entry_is_recomputed_and_rewritten(ssd, vtest_frames, cache):
    good = quantize(ssd, vtest_frames[:2], method=RECIPE)
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"not a network")
    said = []
    again = quantize(ssd, vtest_frames[:2], method=RECIPE, log=said.append)
    assert not any("calibration cache" in s for s in said)
    batch = ssd.preprocess(vtest_frames[2:3])
    assert torch.equal(_codes(good, batch), _codes(again, batch))
    assert entry.stat().st_size > 1_000_000  # written again, whole


def test_the_cache_can_be_turned_off(ssd, vtest_frames, cache, monkeypatch):
    monkeypatch.setenv("TEMPOSPLIT_INT8_CACHE", "0")
    quantize(ssd, vtest_frames[:2], method=RECIPE)
    assert not cache.exists() or not list(cache.glob("*.pt"))


def test_only_the_newest_entries_are_kept(cache, monkeypatch):
    monkeypatch.setattr(qcache, "KEEP", 2)
    for i in range(4):
        qcache.store(f"entry{i}", torch.nn.Linear(2, 2))
    assert sorted(p.stem for p in cache.glob("*.pt")) == ["entry2", "entry3"]
    assert not list(cache.glob("*.tmp"))
