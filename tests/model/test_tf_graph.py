"""The protobuf wire reader on hand-made messages and on the real graph."""

import struct

import numpy as np
import pytest

from temposplit.model import tf_graph


def _varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _field(number, wire, payload):
    key = _varint((number << 3) | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _node(name, op, value=None):
    body = _field(1, 2, name.encode()) + _field(2, 2, op.encode())
    if value is not None:
        attr = _field(8, 2, value)
        entry = _field(1, 2, b"value") + _field(2, 2, attr)
        body += _field(5, 2, entry)
    return _field(1, 2, body)


def _tensor_float(values, shape, packed=True):
    shp = b"".join(_field(2, 2, _field(1, 0, _varint(d))) for d in shape)
    t = _field(1, 0, _varint(1)) + _field(2, 2, shp)
    if packed:
        t += _field(4, 2, np.asarray(values, "<f4").tobytes())
    else:
        t += _field(5, 5, struct.pack("<f", values[0]))
    return t


def test_reads_const_nodes():
    data = _node("w", "Const", _tensor_float([1, 2, 3, 4, 5, 6], [2, 3])) + _node(
        "s", "Const", _tensor_float([7.5], [2, 2], packed=False)
    )
    data += _node("relu", "Relu6")
    nodes = tf_graph.parse_graph(data)
    assert list(nodes) == ["w", "s", "relu"]
    consts = tf_graph.constants(nodes)
    assert np.array_equal(consts["w"], np.arange(1, 7, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(consts["s"], np.full((2, 2), 7.5, np.float32))  # a splat
    assert nodes["relu"].op == "Relu6"


def test_rejects_garbage():
    with pytest.raises(tf_graph.GraphFormatError):
        tf_graph.parse_graph(b"\x0a\xff\xff\xff\x0f")
    with pytest.raises(tf_graph.GraphFormatError):
        tf_graph.parse_graph(b"")


@pytest.mark.models
def test_real_graph_constants():
    from temposplit.model import ssd

    nodes = tf_graph.read_graph(ssd.graph_path())
    consts = tf_graph.constants(nodes)
    assert consts["FeatureExtractor/MobilenetV2/Conv/weights"].shape == (3, 3, 3, 32)
    assert consts["BoxPredictor_0/ClassPredictor/weights"].shape == (3, 3, 576, 273)
    # The facts the port hard-codes, as the graph states them.
    assert float(consts["FeatureExtractor/MobilenetV2/Conv/BatchNorm/batchnorm/add/y"]) == pytest.approx(1e-3)
    assert np.allclose(consts["MultipleGridAnchorGenerator/Sqrt_1/x"], ssd.ANCHOR_RATIOS + (1.0,))
    assert np.allclose(consts["MultipleGridAnchorGenerator/mul_15/x"], [0.1, 0.2, 0.2])
    assert np.allclose(consts["MultipleGridAnchorGenerator/mul_23/x"][:5], 0.35)
    assert float(consts["Postprocessor/Decode/div/y"]) == 10.0 and float(consts["Postprocessor/Decode/div_2/y"]) == 5.0
    assert float(consts["Preprocessor/mul/x"]) == pytest.approx(2 / 255)
