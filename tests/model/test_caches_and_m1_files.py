"""What a deployment meets on the model side: the caches under ``$TEMPOSPLIT_CACHE`` (the
converted SSD weights, the int8 calibrations) damaged, unwritable or without a home folder,
and exported M1 files whose graph cannot run. Each is a clear error or costs only time,
never a traceback nor a network read from damaged bytes."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.model import numpy_m1, qcache
from temposplit.model import ssd as ssd_mod

pytestmark = pytest.mark.models


# --------------------------------------------------------------------------- the converted SSD weights


@pytest.fixture
def weights_cache(tmp_path, monkeypatch):
    """An empty cache folder and a stand-in for the graph's conversion (the real one takes seconds)."""
    made = []

    def convert(path):
        made.append(path)
        return {"w": torch.arange(50_000, dtype=torch.float32)}

    monkeypatch.setenv("TEMPOSPLIT_CACHE", str(tmp_path))
    monkeypatch.setattr(ssd_mod, "convert_graph", convert)
    return tmp_path, made


def _entry(folder):
    return folder / f"{ssd_mod.GRAPH_NAME}.v{ssd_mod.CACHE_VERSION}.pt"


def test_a_truncated_weights_entry_is_converted_again(weights_cache):
    folder, made = weights_cache
    good = ssd_mod.load_state_dict()
    entry = _entry(folder)
    size = entry.stat().st_size
    with open(entry, "r+b") as f:
        f.truncate(size // 2)
    again = ssd_mod.load_state_dict()
    assert len(made) == 2 and torch.equal(again["w"], good["w"])
    assert entry.stat().st_size == size  # rewritten whole
    ssd_mod.load_state_dict()
    assert len(made) == 2  # and trusted again


def test_a_weights_entry_with_a_changed_byte_is_not_trusted(weights_cache):
    folder, made = weights_cache
    good = ssd_mod.load_state_dict()
    entry = _entry(folder)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the tensor's bytes: torch.load reads it without a word
    entry.write_bytes(bytes(data))
    again = ssd_mod.load_state_dict()
    assert len(made) == 2 and torch.equal(again["w"], good["w"])


def test_an_unwritable_cache_only_costs_the_next_run_a_conversion(weights_cache, monkeypatch):
    folder, made = weights_cache
    blocker = folder / "file"
    blocker.write_text("")
    monkeypatch.setenv("TEMPOSPLIT_CACHE", str(blocker / "cache"))  # a folder that cannot be made
    said = []
    assert torch.equal(ssd_mod.load_state_dict(log=said.append)["w"], torch.arange(50_000, dtype=torch.float32))
    assert any("cannot keep the converted weights" in s for s in said)


def test_a_failed_write_leaves_no_temporary_file(weights_cache, monkeypatch):
    folder, made = weights_cache

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ssd_mod.os, "replace", full)
    assert "w" in ssd_mod.load_state_dict()
    assert list(folder.iterdir()) == []


def test_no_home_folder_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TEMPOSPLIT_CACHE", raising=False)

    def nowhere(cls=None):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(pathlib.Path, "home", classmethod(nowhere))
    with pytest.raises(ConfigError, match="set TEMPOSPLIT_CACHE"):
        ssd_mod.cache_dir()


def test_a_cache_folder_given_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TEMPOSPLIT_CACHE", "~/models")
    assert ssd_mod.cache_dir() == tmp_path / "models"


# --------------------------------------------------------------------------- the int8 calibrations


@pytest.fixture
def int8_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPOSPLIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TEMPOSPLIT_INT8_CACHE", raising=False)
    torch.manual_seed(0)
    net = torch.nn.Linear(256, 256)  # 256 KB of weights: a byte in the middle of the entry is one of them
    made = []

    def make():
        made.append(1)
        return net

    def cached():
        return qcache.cached(net, [np.zeros((4, 4, 3), np.uint8)], ("probe",), 1, make)

    cached()
    (entry,) = (tmp_path / "int8").glob("*.pt")
    return entry, cached, made


def test_an_int8_entry_with_a_changed_byte_is_recomputed(int8_cache):
    entry, cached, made = int8_cache
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x40
    entry.write_bytes(bytes(data))
    net = cached()
    assert len(made) == 2 and net is not None
    cached()
    assert len(made) == 2  # rewritten, then loaded


def test_a_damaged_int8_entry_in_a_read_only_cache_is_recomputed(int8_cache, monkeypatch):
    entry, cached, made = int8_cache
    entry.write_bytes(b"damaged")

    def read_only(self, missing_ok=False):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    cached()
    assert len(made) == 2


# --------------------------------------------------------------------------- exported M1 files


def _graph(**changes) -> tuple[dict, dict]:
    """A one-convolution SSD-input M1 (1x1, 3 -> 2 channels) at an 8x8 input."""
    graph = {
        "format": numpy_m1.FORMAT,
        "version": numpy_m1.VERSION,
        "model": "ssd-mobilenet-v2",
        "cut": "features.0",
        "input": {"kind": "ssd-rgb", "size": [8, 8]},
        "outputs": ["conv"],
        "output_names": ["features.0"],
        "nodes": [
            {"name": "quant", "op": "quantize", "inputs": ["input"], "scale": 2 / 255, "zero_point": 128},
            {
                "name": "conv",
                "op": "conv",
                "inputs": ["quant"],
                "kernel": [1, 1],
                "stride": [1, 1],
                "padding": [0, 0],
                "groups": 1,
                "input_zero_point": 128,
                "scale": 0.05,
                "zero_point": 0,
                "qmin": 0,
                "qmax": 255,
            },
        ],
        "weights_digest": "00",
    }
    graph["nodes"][0]["inv_scale"] = 127.5
    for path, value in changes.items():
        *keys, last = path.split("/")
        target = graph
        for k in keys:
            target = target[int(k) if k.isdigit() else k]
        target[int(last) if last.isdigit() else last] = value
    arrays = {
        "conv.weight": np.array([[1, 2, 3], [-3, -2, -1]], np.int8).reshape(2, 3, 1, 1),
        "conv.weight_zero_point": np.zeros(2, np.int32),
        "conv.bias": np.zeros(2, np.int32),
        "conv.requant_scale": np.full(2, 0.01, np.float32),
    }
    return graph, arrays


def _write(path, graph, arrays):
    blob = np.frombuffer(json.dumps(graph).encode(), np.uint8)
    np.savez(path, graph=blob, **arrays)
    return path


def test_the_hand_made_m1_runs(tmp_path):
    m1 = numpy_m1.load(_write(tmp_path / "m1.npz", *_graph()))
    (out,) = m1(np.zeros((1, 8, 8, 3), np.uint8))
    assert out.codes.shape == (1, 2, 8, 8)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"outputs": ["nope"]}, "output 'nope' is not a node"),
        ({"outputs": ["conv", "conv"]}, "does not name one node per output name"),
        ({"nodes/1/inputs": ["ghost"]}, "input 'ghost' is not an earlier node"),
        ({"nodes/1/inputs": ["input"]}, "input 'input' is not an earlier node"),
        ({"nodes/1/stride": [0, 0]}, "stride 0"),
        ({"nodes/1/padding": [-1, 0]}, "padding -1"),
        ({"nodes/0/inv_scale": "x"}, "inv_scale 'x'"),
        ({"nodes/1/qmin": 300}, "qmin 300"),
        ({"input/size": [0, 0]}, "input size 0"),
        ({"cut": 10}, "'cut' is 10"),
    ],
)
def test_an_m1_graph_that_cannot_run_is_refused_when_loaded(tmp_path, change, message):
    path = _write(tmp_path / "m1.npz", *_graph(**change))
    with pytest.raises(numpy_m1.FormatError, match=message):
        numpy_m1.load(path)


def test_an_m1_whose_input_does_not_fit_its_convolution_is_refused(tmp_path):
    graph, arrays = _graph()
    arrays["conv.weight"] = np.ones((2, 4, 1, 1), np.int8)  # takes 4 channels, gets the frame's 3
    with pytest.raises(numpy_m1.FormatError, match="takes 4 channels, its input has 3"):
        numpy_m1.load(_write(tmp_path / "m1.npz", graph, arrays))


def test_a_video_given_as_the_m1_is_named_as_no_npz(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x1cftypisom" + bytes(100))
    with pytest.raises(numpy_m1.FormatError, match="not a readable .npz .no zip archive") as err:
        numpy_m1.load(clip)
    assert "pickle" not in str(err.value)


# --------------------------------------------------------------------------- the models commands


def test_compare_opencv_on_no_frame_is_an_error(capsys):
    assert main(["models", "compare-opencv", "--frames", "0"]) == 2
    assert "--frames must be a positive integer" in capsys.readouterr().err


def _blank_clip(path, frames=3):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")))
        c.mux(s.encode())
    return path


def test_sensitivity_on_a_clip_without_objects_is_an_error(tmp_path, capsys):
    clip = _blank_clip(tmp_path / "blank.mp4")
    argv = ["models", "sensitivity", "--videos", str(clip), "--frames", "2", "--last", "features.0", "--threads", "1"]
    assert main([*argv, "--observer", "minmax", "--configs", "only", "--only", "features.0:w", "--json"]) == 2
    out = capsys.readouterr()
    assert "finds no object" in out.err and out.err.count("\n") == 1
    assert "NaN" not in out.out


def test_accuracy_labels_the_clip_frames_it_calibrated_on(tmp_path, capsys, vtest_frames, monkeypatch):
    import av

    monkeypatch.setenv("TEMPOSPLIT_INT8_CACHE", "0")  # a calibration of this test's own clip: not kept
    clip = tmp_path / "short.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 768, 576, "yuv420p"
        for f in vtest_frames[:3]:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    argv = ["models", "accuracy", "--video", str(clip), "--frames", "1", "--calibrate-on-clip", "500", "--json"]
    assert main([*argv, "--cuts", "features.10", "--paths", "int8", "--method", "minmax", "--threads", "1"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["calibration"] == "clip:3"
