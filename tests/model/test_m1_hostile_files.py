"""Hostile and damaged M1 files (model/numpy_m1.py's loader; docs/numpy-m1.md, "Limits of a
file"): every one is a FormatError when loaded, before anything of its declared size is
allocated; never an OverflowError, RuntimeError, OSError or RecursionError from inside the
reading, nor a MemoryError at the first frame. And the exporter (model/export.py) writes no
file the loader refuses. All the files here are small, crafted in tmp_path.

The graph is the one of test_caches_and_m1_files.py's ``_graph`` (quantize, a 1x1 conv), written
here again: tests/model is not on sys.path (pytest's importlib mode)."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest

from temposplit.errors import ConfigError
from temposplit.model import numpy_m1 as nm


def _graph(size=(8, 8), out=2, pre=None) -> tuple[dict, dict]:
    """A one-convolution SSD-input M1 (1x1, 3 -> ``out`` channels) at ``size``; ``pre``: a
    node put between the quantize node and the conv."""
    quant = {"name": "quant", "op": "quantize", "inputs": ["input"], "scale": 2 / 255, "zero_point": 128}
    quant["inv_scale"] = 127.5
    conv = {
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
    }
    nodes = [quant, conv]
    if pre is not None:
        nodes.insert(1, {"name": "pre", "inputs": ["quant"], "scale": 2 / 255, "zero_point": 128, **pre})
        conv["inputs"] = ["pre"]
    graph = {
        "format": nm.FORMAT,
        "version": nm.VERSION,
        "model": "ssd-mobilenet-v2",
        "cut": "features.0",
        "input": {"kind": "ssd-rgb", "size": list(size)},
        "outputs": ["conv"],
        "output_names": ["features.0"],
        "nodes": nodes,
        "weights_digest": "00",
    }
    arrays = {
        "conv.weight": np.arange(out * 3).astype(np.int8).reshape(out, 3, 1, 1),
        "conv.weight_zero_point": np.zeros(out, np.int32),
        "conv.bias": np.zeros(out, np.int32),
        "conv.requant_scale": np.full(out, 0.01, np.float32),
    }
    return graph, arrays


def _write(path, graph, arrays, compressed=False):
    blob = np.frombuffer(json.dumps(graph).encode(), np.uint8)
    (np.savez_compressed if compressed else np.savez)(path, graph=blob, **arrays)
    return path


def _npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _refused(path, said):
    with pytest.raises(nm.FormatError) as e:
        nm.load(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and said in text and "\n" not in text, text
    return text


def test_the_crafted_m1_loads_and_runs(tmp_path):
    """The base of every file below is a valid export."""
    (out,) = nm.load(_write(tmp_path / "m1.npz", *_graph()))(np.zeros((1, 8, 8, 3), np.uint8))
    assert out.codes.shape == (1, 2, 8, 8)


# ---------------------------------------------------------------------------- the archive


def _central(data: bytearray, field: int, fmt: str, value) -> None:
    """Set a field of the first central directory entry."""
    entry = data.find(b"PK\x01\x02")
    data[entry + field : entry + field + struct.calcsize(fmt)] = struct.pack(fmt, value)


def _end_offset(data: bytearray, field: int, fmt: str, value) -> None:
    """Add ``value`` to a field of the end of central directory record."""
    end = data.rfind(b"PK\x05\x06")
    size = struct.calcsize(fmt)
    (old,) = struct.unpack(fmt, data[end + field : end + field + size])
    data[end + field : end + field + size] = struct.pack(fmt, old + value)


@pytest.mark.parametrize("member", ["junk.npy", "conv.extra.npy"])
def test_a_member_the_format_does_not_name_is_refused(tmp_path, member):
    """A 1 MB file whose extra member inflated to 1 GiB loaded (and took 1 GiB)."""
    path = _write(tmp_path / "m1.npz", *_graph())
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(member, _npy(np.zeros(3, np.uint8)))
    _refused(path, f"members the format does not name: '{member}'")


def test_members_declaring_more_than_the_cap_are_refused_before_inflating(tmp_path):
    """A member's declared (inflated) size of 4 GiB: the archive is refused by its sum, unread
    (it loaded: NumPy read the 16 bytes its header asked for and never the rest)."""
    path = _write(tmp_path / "m1.npz", *_graph(), compressed=True)
    data = bytearray(path.read_bytes())
    _central(data, 24, "<I", 0xFFFFFFFE)  # the first member's uncompressed size
    path.write_bytes(bytes(data))
    _refused(path, "bytes, above the cap of 268435456")  # 256 MiB


def test_a_member_header_declaring_an_absurd_shape_is_a_format_error(tmp_path):
    """Was an OverflowError ("Python int too large to convert to C long") from inside np.load."""
    shape = (2**64,)
    graph, arrays = _graph()
    del arrays["conv.bias"]
    path = _write(tmp_path / "m1.npz", graph, arrays)
    header = repr({"descr": "<i4", "fortran_order": False, "shape": shape}).encode() + b"\n"
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("conv.bias.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(8))
    _refused(path, f"conv.bias.npy: shape {shape} of {np.prod(shape, dtype=object)} elements, above the budget")


DAMAGE = {
    "compression method 99": (lambda d: _central(d, 10, "<H", 99), "compression method 99"),  # NotImplementedError
    "encrypted": (lambda d: _central(d, 8, "<H", 1), "encrypted"),  # RuntimeError: password required
    "directory offset past its place": (lambda d: _end_offset(d, 16, "<I", 0x10000), "OSError"),  # EINVAL seek
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_archive_is_a_format_error(tmp_path, damage):
    """Flipped bytes of a zip's headers were NotImplementedError, RuntimeError and OSError (the
    fuzz of the review: 57 of 4,821 damaged files)."""
    edit, said = DAMAGE[damage]
    path = _write(tmp_path / "m1.npz", *_graph(), compressed=True)
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    _refused(path, said)


# ---------------------------------------------------------------------------- the graph


def test_a_graph_nested_too_deep_is_a_format_error(tmp_path):
    """Was a RecursionError from json.loads."""
    path = tmp_path / "m1.npz"
    np.savez(path, graph=np.frombuffer(b"[" * 100_000, np.uint8))
    _refused(path, "the graph is not JSON (nested too deep)")


@pytest.mark.parametrize("field", ["groups", "qmin", "qmax", "zero_point"])
def test_a_graph_number_int_cannot_take_is_a_format_error(tmp_path, field):
    """JSON's Infinity in a conv's integer fields was an OverflowError from int()."""
    graph, arrays = _graph()
    graph["nodes"][1][field] = float("inf")
    _refused(_write(tmp_path / "m1.npz", graph, arrays), f"{field} inf is not a whole number")


@pytest.mark.parametrize(
    "node, field, value",
    [(0, "inv_scale", 1e39), (0, "inv_scale", 1e-46), (1, "scale", 1e39), (0, "scale", 1e-46)],
)
def test_a_scale_float32_cannot_hold_is_refused(tmp_path, node, field, value):
    """inv_scale 1e39 loaded (finite as float64) and overflowed float32 at the first frame,
    quantizing 0.5 to code 255 and 0.0 to 0; 1e-46 is 0 in float32."""
    graph, arrays = _graph()
    graph["nodes"][node][field] = value
    _refused(_write(tmp_path / "m1.npz", graph, arrays), f"{field} {value!r} is not a positive finite float32 number")


def _set(**fields):
    def edit(graph, arrays):
        graph["nodes"][-1].update(fields)

    return edit


def _size(h, w, out=2):
    def edit(graph, arrays):
        graph["input"]["size"] = [h, w]
        fresh = _graph(out=out)[1]
        arrays.update(fresh)

    return edit


def _pre(h=8, w=8, **node):
    def edit(graph, arrays):
        g, _ = _graph(size=(h, w), pre=node)
        graph.update(g)

    return edit


POOL = {"op": "max_pool", "kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}
TOO_BIG = [
    (_size(30000, 30000), "input size 30000 is not a whole number in 1..4096"),
    (_size(2048, 2048, out=8), "node conv: its output of 8x2048x2048 = 33554432 elements is above the budget"),
    (_set(padding=[40000, 0]), "conv: padding 40000 is not a whole number in 0..4096"),
    (_set(padding=[1, 0]), "conv: padding [1, 0] not smaller than its 1x1 kernel"),
    (_set(stride=[10**30, 1]), "conv: stride 1000000000000000000000000000000 is not a whole number in 1..4096"),
    (_pre(op="pad_same", kernel=10**9, stride=1), "node pre: kernel 1000000000 is not a whole number in 1..4096"),
    (_pre(**{**POOL, "padding": [2, 2]}), "node pre: padding [2, 2] above half its 3x3 kernel"),
    (_pre(2364, 2364, **POOL), "node pre: its padded input of 3x2366x2366 = 16793868 elements is above the budget"),
]


@pytest.mark.parametrize("edit, said", TOO_BIG, ids=[s[:48] for _, s in TOO_BIG])
def test_sizes_above_the_limits_are_refused_at_load(tmp_path, edit, said):
    """Each loaded (a 2 kB file) and took gigabytes, or failed, at its first frame: a 30000x30000
    input 10 GiB, conv padding 40000 18 GiB, a pad_same kernel of 1e9 2.6 EiB."""
    graph, arrays = _graph()
    edit(graph, arrays)
    _refused(_write(tmp_path / "m1.npz", graph, arrays), said)


def test_the_largest_input_the_budget_admits_still_loads(tmp_path):
    """The limits are not off by one: 2**24 elements exactly (4x2048x2048) loads."""
    graph, arrays = _graph(size=(2048, 2048), out=4)
    assert nm.load(_write(tmp_path / "m1.npz", graph, arrays)).names == ["features.0"]


# ---------------------------------------------------------------------------- the command lines


def test_numpy_conv_reports_a_damaged_file_in_one_line(tmp_path, capsys):
    """`python -m temposplit.model.numpy_conv` printed an OverflowError's traceback."""
    from temposplit.model import numpy_conv

    graph, arrays = _graph()
    del arrays["conv.bias"]
    path = _write(tmp_path / "m1.npz", graph, arrays)
    header = repr({"descr": "<i4", "fortran_order": False, "shape": (2**64,)}).encode() + b"\n"
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("conv.bias.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    assert numpy_conv.main([str(path), "--repeat", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "above the budget" in err, err


@pytest.mark.parametrize(
    "size, said", [(["4097", "8"], "in 1..4096"), (["4096", "4096"], "over the runtime's 16,777,216")]
)
def test_numpy_conv_refuses_a_size_it_could_not_time_in_one_line(tmp_path, capsys, size, said):
    """`--size 4096 4096` timed a frame whose tensors are over the runtime's budget (a file
    declaring them is refused at load): gigabytes before the first row."""
    from temposplit.model import numpy_conv

    path = _write(tmp_path / "m1.npz", *_graph())
    assert numpy_conv.main([str(path), "--size", *size, "--repeat", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and said in err, err
    assert numpy_conv.main([str(path), "--size", "64", "48", "--repeat", "1"]) == 0  # within it: timed


def test_the_edge_names_a_damaged_m1_as_not_an_export(tmp_path):
    """`temposplit edge --m1` said "internal error: RuntimeError: File 'graph.npy' is encrypted"."""
    from temposplit.host.pipeline import NumpyEdgeModel

    path = _write(tmp_path / "m1.npz", *_graph(), compressed=True)
    data = bytearray(path.read_bytes())
    _central(data, 8, "<H", 1)
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="m1.npz: not an exported M1 .* encrypted"):
        NumpyEdgeModel(str(path))


# ---------------------------------------------------------------------------- the exporter


def test_the_exporter_refuses_an_add_whose_shift_the_loader_refuses():
    """Both input/output scale ratios 2**-12 (inside qnnpack's [2**-14, 2**8)) gave shift 33,
    which the loader refuses (13..31): the exporter wrote a file its runtime would not load."""
    pytest.importorskip("torch")
    from temposplit.model.export import _Builder

    b = _Builder()
    b.qparams["a"] = b.qparams["b"] = (0.01 * 2**-12, 128)
    with pytest.raises(ConfigError, match="give shift 33"):
        b.add("sum", "a", "b", 0.01, 128, relu=False)
    b.qparams["c"] = (0.01 * 2**-10, 128)  # the smallest larger ratio the loader takes: shift 31
    b.add("sum", "a", "c", 0.01, 128, relu=False)
    assert b.nodes[-1]["shift"] == 31


def test_export_m1_writes_no_file_the_loader_refuses(tmp_path, monkeypatch):
    """An export at a 30000x30000 input was written, and refused only when loaded."""
    pytest.importorskip("torch")
    from temposplit.model import export

    graph, arrays = _graph(size=(30000, 30000))
    monkeypatch.setattr(export, "m1_graph", lambda q: (graph, arrays))
    with pytest.raises(ConfigError, match="the NumPy runtime would refuse this export: input size 30000"):
        export.export_m1(object(), tmp_path / "m1.npz")
    assert list(tmp_path.iterdir()) == []
    graph["input"]["size"] = [8, 8]
    assert nm.load(export.export_m1(object(), tmp_path / "m1.npz")).names == ["features.0"]
