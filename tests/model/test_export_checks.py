"""The M1 export's checks (model/numpy_m1.py, model/export.py, model/numpy_conv.py): a
malformed export is a one-line FormatError at load (not wrong codes, nor an error at the
first frame); `models export-m1` refuses random torchvision weights and a mistyped cut
before calibrating; the SSD resize's memory does not grow with the frame; the per-layer
tool refuses nonsense options in one line. Nothing here calibrates a network."""

import json

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.model import numpy_m1 as nm

torch = pytest.importorskip("torch")


def _qconv(cin, cout, k, pad, scale, zero_point, seed):
    from torch.ao.nn.quantized import Conv2d

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin, k, k, generator=g)
    scales = (w.abs().amax((1, 2, 3)) / 127).double()
    qw = torch.quantize_per_channel(w, scales, torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    mod = Conv2d(cin, cout, k, padding=pad)
    mod.set_weight_bias(qw, torch.randn(cout, generator=g))
    mod.scale, mod.zero_point = scale, zero_point
    return mod


@pytest.fixture(scope="module")
def small_m1():
    """(graph, arrays) of a small valid export: quantize, two convolutions, an add."""
    from temposplit.model.export import _Builder

    b = _Builder()
    b.quantize("q", 5 / 255, 51)
    b.conv("c1", "q", _qconv(3, 4, 3, 1, 0.05, 117, 1))
    b.conv("c2", "c1", _qconv(4, 4, 1, 0, 0.07, 100, 2))
    b.add("sum", "c1", "c2", 0.09, 110, False)
    graph = {
        "format": nm.FORMAT,
        "version": nm.VERSION,
        "input": {"kind": "tensor"},
        "outputs": ["sum"],
        "output_names": ["sum"],
        "nodes": b.nodes,
    }
    return graph, b.arrays


def _write(path, graph, arrays):
    np.savez(path, graph=np.frombuffer(json.dumps(graph).encode(), np.uint8), **arrays)
    return path


def _node(graph, name):
    return next(n for n in graph["nodes"] if n["name"] == name)


def _set(name, key, value):
    def edit(graph, arrays):
        if key in _node(graph, name):
            _node(graph, name)[key] = value
        else:
            arrays[f"{name}.{key}"] = value(arrays[f"{name}.{key}"]) if callable(value) else value

    return edit


def _drop_version(graph, arrays):
    del graph["version"]


def _version(v):
    def edit(graph, arrays):
        graph["version"] = v

    return edit


BAD = [
    (_set("c2", "input_zero_point", 300), "input_zero_point 300 is not a whole number in 0..255"),
    (_set("c2", "input_zero_point", "117"), "input_zero_point '117' is not a whole number"),
    (_set("c2", "input_zero_point", 0.7), "input_zero_point 0.7 is not a whole number"),
    (_set("c2", "input_zero_point", 5), "input_zero_point 5 is not its input's zero point 117"),
    (_set("c1", "requant_scale", lambda a: a[:1]), "requant_scale of shape (1,), expected (4,)"),
    (_set("c1", "requant_scale", lambda a: np.concatenate([a, a])), "requant_scale of shape (8,), expected (4,)"),
    (_set("c1", "requant_scale", lambda a: a[None]), "requant_scale of shape (1, 4), expected (4,)"),
    (_set("c1", "requant_scale", lambda a: np.where(np.arange(4) == 2, np.nan, a)), "requant_scale holds"),
    (_set("c1", "requant_scale", lambda a: -a), "requant_scale holds values that are not finite positive"),
    (_set("c1", "requant_scale", lambda a: np.zeros_like(a)), "requant_scale holds"),
    (_set("c1", "requant_scale", lambda a: np.full(4, 1e300)), "requant_scale holds"),  # inf as float32
    (_set("c1", "requant_scale", lambda a: np.ones(4, np.int32)), "requant_scale of type int32, expected a float"),
    (_set("c1", "bias", lambda a: a[:1]), "bias of shape (1,), expected (4,)"),
    (_set("c1", "bias", lambda a: a.astype(np.float64) + 0.5), "bias of type float64, expected an integer type"),
    (_set("c1", "bias", lambda a: np.full(4, 2**40, np.int64)), "bias out of the int32 range"),
    (_set("c1", "weight_zero_point", lambda a: a[:2]), "weight_zero_point of shape (2,), expected (4,)"),
    (_set("c1", "weight_zero_point", lambda a: a.astype(np.float32)), "weight_zero_point of type float32"),
    (_set("c1", "weight_zero_point", lambda a: a + 200), "weight_zero_point outside the int8 range -128..127"),
    (_set("sum", "a_multiplier", 2**30), "a_multiplier 1073741824 is not a whole number in 0..4194303"),
    (_set("sum", "b_multiplier", -1), "b_multiplier -1 is not a whole number in 0..4194303"),
    (_set("sum", "shift", 12), "shift 12 is not a whole number in 13..31"),
    (_set("sum", "shift", 32), "shift 32 is not a whole number in 13..31"),
    (_set("sum", "zero_point_product", 7), "zero_point_product 7 is not -(a_multiplier * 117 + b_multiplier * 100)"),
    (_drop_version, "no format version"),
    (_version(-1), "format version -1 is not one this runtime reads (1..2)"),
    (_version(0), "format version 0 is not one this runtime reads"),
    (_version(3), "format version 3 is newer than this runtime's 2"),
]


def test_the_small_export_is_valid_and_runs(small_m1, tmp_path):
    graph, arrays = small_m1
    m1 = nm.load(_write(tmp_path / "m1.npz", graph, arrays))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 9, 11)).astype(np.float32)
    (out,) = m1.run(x)
    assert out.codes.shape == (1, 4, 9, 11) and out.zero_point == 110


@pytest.mark.parametrize("edit, message", BAD, ids=[m[:40] for _, m in BAD])
def test_a_malformed_export_is_a_one_line_format_error(small_m1, tmp_path, edit, message):
    """Each of these loaded before and ran, giving other codes (or failed at the first frame)."""
    graph, arrays = json.loads(json.dumps(small_m1[0])), dict(small_m1[1])
    edit(graph, arrays)
    path = _write(tmp_path / "m1.npz", graph, arrays)
    with pytest.raises(nm.FormatError) as e:
        nm.load(path)
    text = str(e.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


def test_version_1_still_loads(small_m1, tmp_path):
    graph, arrays = json.loads(json.dumps(small_m1[0])), small_m1[1]
    graph["version"] = 1
    assert nm.load(_write(tmp_path / "m1.npz", graph, arrays)).names == ["sum"]


# ---------------------------------------------------------------------------- export-m1


@pytest.fixture
def no_model(monkeypatch):
    """Loading a detector, reading calibration frames or calibrating fails the test."""
    import temposplit.model as model_pkg
    from temposplit.model import calibration, quantize

    monkeypatch.setattr(model_pkg, "load_detector", lambda *a, **k: pytest.fail("a detector was loaded"))
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: pytest.fail("calibrated"))
    monkeypatch.setattr(quantize, "quantize_m1", lambda *a, **k: pytest.fail("calibrated"))
    monkeypatch.setattr(calibration, "calibration_frames", lambda *a, **k: pytest.fail("frames read"))


@pytest.mark.parametrize("name", ["fasterrcnn-resnet50-fpn", "retinanet-resnet50-fpn"])
def test_export_m1_of_a_torchvision_model_without_weights_is_refused(tmp_path, name, no_model, one_line):
    """It exported random weights (two runs, two different networks) with exit status 0."""
    out = str(tmp_path / "m1.npz")
    assert main(["models", "export-m1", "--model", name, "--calibration", "1", "--out", out]) == 2
    one_line(f"{name}: no weights", "--weights W")
    from temposplit.model.export import export_cut

    with pytest.raises(ConfigError, match="no weights"):
        export_cut(out, model=name, calibration_frames=[np.zeros((8, 8, 3), np.uint8)])
    assert not (tmp_path / "m1.npz").exists()


def test_export_m1_without_calibration_names_the_option(tmp_path, no_model, one_line):
    out = str(tmp_path / "m1.npz")
    argv = ["models", "export-m1", "--model", "fasterrcnn-resnet50-fpn", "--weights", "DEFAULT", "--out", out]
    assert main(argv) == 2
    one_line("give calibration frames", "--calibration N")


@pytest.mark.parametrize("model", [None, "fasterrcnn-resnet50-fpn"])
def test_a_mistyped_cut_is_refused_before_calibrating(tmp_path, model, no_model, one_line):
    """It was reported after the whole calibration (5.5 minutes on a cold cache)."""
    from temposplit.model.export import export_cut

    with pytest.raises(ConfigError, match="has no cut 'bogus'"):
        export_cut(tmp_path / "m1.npz", model=model, cut="bogus", weights="DEFAULT")
    argv = ["models", "export-m1", "--cut", "bogus", "--calibration", "1", "--out", str(tmp_path / "m1.npz")]
    if model:
        argv += ["--model", model, "--weights", "DEFAULT"]
    assert main(argv) == 2
    one_line("has no cut 'bogus'")


def test_export_m1_passes_its_weights_on(tmp_path, monkeypatch):
    from temposplit.model import calibration, export

    seen = {}
    monkeypatch.setattr(calibration, "calibration_frames", lambda n: ["frames"] * n)
    monkeypatch.setattr(export, "export_cut", lambda out, **k: seen.update(k))
    argv = ["models", "export-m1", "--model", "fasterrcnn-resnet50-fpn", "--weights", "COCO_V1"]
    assert main([*argv, "--calibration", "2", "--out", str(tmp_path / "m1.npz")]) == 0
    assert seen["weights"] == "COCO_V1" and seen["calibration_frames"] == ["frames", "frames"]


# ---------------------------------------------------------------------------- python -m ...numpy_conv


def _refused(capsys, said):
    """Nothing on stdout, one line on stderr from the tool holding ``said``."""
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, (out, err)
    assert lines[0].startswith("python -m temposplit.model.numpy_conv: error: ") and said in lines[0], lines


@pytest.mark.parametrize(
    "options, said",
    [
        (["--repeat", "-1"], "--repeat must be 0 (no timing) or more, not -1"),
        (["--size", "0", "0"], "--size must be two whole numbers in 1..4096"),
        (["--size", "300", "-5"], "--size must be two whole numbers in 1..4096"),
    ],
)
def test_numpy_conv_refuses_nonsense_options(small_m1, tmp_path, capsys, options, said):
    """--repeat -1 printed "ms": Infinity (not JSON); --size 0 0 printed shapes of 0 and less."""
    from temposplit.model import numpy_conv

    path = _write(tmp_path / "m1.npz", *small_m1)
    assert numpy_conv.main([str(path), *options]) == 2
    _refused(capsys, said)


def test_numpy_conv_on_a_missing_or_bad_file(tmp_path, capsys):
    """A missing file was a FileNotFoundError traceback."""
    from temposplit.model import numpy_conv

    assert numpy_conv.main([str(tmp_path / "nope.npz"), "--repeat", "0"]) == 2
    _refused(capsys, "nope.npz: No such file or directory")
    (tmp_path / "bad.npz").write_text("text")
    assert numpy_conv.main([str(tmp_path / "bad.npz"), "--repeat", "0"]) == 2
    _refused(capsys, "bad.npz: not a readable .npz")


def test_numpy_conv_still_reports_a_good_file(small_m1, tmp_path, capsys):
    from temposplit.model import numpy_conv

    path = _write(tmp_path / "m1.npz", *small_m1)
    assert numpy_conv.main([str(path), "--size", "9", "11", "--repeat", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["total"]["macs"] > 0
