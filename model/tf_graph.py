"""Read a TensorFlow frozen ``GraphDef`` (``.pb``) without TensorFlow or protobuf.

Only what the SSD port needs: nodes (name, op, inputs, attributes) and the constant
tensors (``Const`` nodes) as NumPy arrays. The protobuf wire format is small: each field
is a varint key ``(field_number << 3) | wire_type`` followed by a varint (type 0), 8
bytes (type 1), a length-prefixed payload (type 2) or 4 bytes (type 5).

Messages read (field numbers from tensorflow/core/framework/*.proto):

* GraphDef: 1 node (NodeDef, repeated)
* NodeDef: 1 name, 2 op, 3 input (repeated), 4 device, 5 attr (map<string, AttrValue>)
* AttrValue: 1 list, 2 s, 3 i, 4 f, 5 b, 6 type, 7 shape, 8 tensor
* TensorProto: 1 dtype, 2 tensor_shape, 4 tensor_content, 5 float_val, 7 int_val, 8 string_val,
  10 int64_val
* TensorShapeProto: 2 dim (Dim: 1 size)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# tensorflow DataType enum -> NumPy dtype (the ones a detection graph's constants use).
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
}


class GraphFormatError(ValueError):
    """The bytes are not a GraphDef this reader understands."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise GraphFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise GraphFormatError("varint too long")


def _fields(buf: memoryview):
    """Yield (field_number, wire_type, value) where value is an int or a memoryview."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise GraphFormatError("length-delimited field runs past its message")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise GraphFormatError(f"unsupported wire type {wire}")
        yield number, wire, value


def _packed_varints(value, wire) -> list[int]:
    if wire == 0:
        return [value]
    out = []
    pos = 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _shape(buf: memoryview) -> list[int]:
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:
            size = 0
            for n2, _, v2 in _fields(value):
                if n2 == 1:
                    size = _signed64(v2)
            dims.append(size)
    return dims


def parse_tensor(buf: memoryview) -> np.ndarray:
    """A TensorProto as a NumPy array."""
    dtype_enum = 0
    shape: list[int] = []
    content = None
    floats: list[float] = []
    ints: list[int] = []
    strings: list[bytes] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype_enum = value
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            if wire == 2:
                floats.extend(np.frombuffer(bytes(value), dtype="<f4").tolist())
            else:
                floats.append(struct.unpack("<f", bytes(value))[0])
        elif number in (7, 10):
            ints.extend(_signed64(v) for v in _packed_varints(value, wire))
        elif number == 8:
            strings.append(bytes(value))
    if dtype_enum == 7:  # DT_STRING: kept as an object array of bytes
        return np.array(strings, dtype=object).reshape(shape if strings and shape else (len(strings),))
    if dtype_enum not in _DTYPES:
        raise GraphFormatError(f"unsupported tensor dtype enum {dtype_enum}")
    dtype = np.dtype(_DTYPES[dtype_enum]).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        arr = np.frombuffer(content, dtype=dtype).astype(dtype.newbyteorder("="))
    else:
        vals = floats if dtype.kind == "f" else ints
        arr = np.asarray(vals, dtype=dtype.newbyteorder("="))
        if arr.size == 1 and count > 1:  # TF stores a splat as one value
            arr = np.full(count, arr[0], dtype=arr.dtype)
        elif arr.size == 0:
            arr = np.zeros(count, dtype=arr.dtype)
    if arr.size != count:
        raise GraphFormatError(f"tensor has {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def _attr(buf: memoryview):
    for number, _wire, value in _fields(buf):
        if number == 2:
            return bytes(value).decode("utf-8", errors="replace")
        if number == 3:
            return _signed64(value)
        if number == 4:
            return struct.unpack("<f", bytes(value))[0]
        if number == 5:
            return bool(value)
        if number == 6:
            return ("dtype", value)
        if number == 7:
            return ("shape", _shape(value))
        if number == 8:
            return parse_tensor(value)
        if number == 1:
            items: list = []
            for n2, w2, v2 in _fields(value):
                if n2 == 2:
                    items.append(bytes(v2).decode("utf-8", errors="replace"))
                elif n2 == 3:
                    items.extend(_signed64(v) for v in _packed_varints(v2, w2))
                elif n2 == 4:
                    if w2 == 2:
                        items.extend(np.frombuffer(bytes(v2), dtype="<f4").tolist())
                    else:
                        items.append(struct.unpack("<f", bytes(v2))[0])
            return items
    return None


@dataclass
class Node:
    """One NodeDef: ``attr`` holds decoded values (str, int, float, bool, list, ndarray)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attr: dict = field(default_factory=dict)


def parse_graph(data: bytes) -> dict[str, Node]:
    """All nodes of a frozen GraphDef, by name, in graph order."""
    nodes: dict[str, Node] = {}
    for number, wire, value in _fields(memoryview(data)):
        if number != 1 or wire != 2:
            continue
        node = Node(name="", op="")
        for n2, _, v2 in _fields(value):
            if n2 == 1:
                node.name = bytes(v2).decode()
            elif n2 == 2:
                node.op = bytes(v2).decode()
            elif n2 == 3:
                node.inputs.append(bytes(v2).decode())
            elif n2 == 5:
                key = None
                val = None
                for n3, _, v3 in _fields(v2):
                    if n3 == 1:
                        key = bytes(v3).decode()
                    elif n3 == 2:
                        val = _attr(v3)
                if key is not None:
                    node.attr[key] = val
        nodes[node.name] = node
    if not nodes:
        raise GraphFormatError("no nodes: not a GraphDef")
    return nodes


def read_graph(path: str | Path) -> dict[str, Node]:
    """Parse a frozen ``.pb`` file."""
    return parse_graph(Path(path).read_bytes())


def constants(nodes: dict[str, Node]) -> dict[str, np.ndarray]:
    """The ``Const`` nodes' values, by node name."""
    return {name: n.attr["value"] for name, n in nodes.items() if n.op == "Const" and "value" in n.attr}
