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


def test_the_cpu_kind_is_part_of_the_key(ssd, vtest_frames, monkeypatch):
    """An AVX2 and an AVX-512 machine sharing a cache calibrate differently: never mixed."""
    net, frames, recipe = ssd.net, vtest_frames[:2], ("minmax", ())
    base = qcache.key(net, frames, recipe, 8)
    other = "AVX512" if torch.backends.cpu.get_cpu_capability() != "AVX512" else "AVX2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: other)
    assert qcache.key(net, frames, recipe, 8) != base


def test_the_calibration_does_not_depend_on_the_callers_threads(ssd, vtest_frames, monkeypatch):
    """The recipe amplifies the last bits of the float arithmetic, which depend on how many
    threads split it: calibration runs at a fixed count, whatever the caller set."""
    monkeypatch.setenv("TEMPOSPLIT_INT8_CACHE", "0")
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
