"""The driver's CTX records pass (``Accelerator.ctx_records``) without the RTL: what it
programs and streams, and the inputs it refuses before it touches the accelerator."""

import numpy as np
import pytest

from temposplit.codec import ctx_records as V
from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError


class _Fake:
    """Registers in a dict; the stream answers a fixed section and BITS counts it."""

    def __init__(self, section=b"\x12\x34\x56"):
        self.regs, self.streams, self.section = {}, [], section

    def write(self, offset, value):
        self.regs[offset] = value

    def read(self, offset):
        if offset == regmap.REG["STATUS"].offset:
            return regmap.pack("STATUS", DONE=1)
        if offset == regmap.REG["BITS"].offset:
            return 8 * len(self.section)
        return 0

    def stream(self, data, max_out):
        self.streams.append((data, max_out))
        return self.section


def test_records_go_out_as_stream_words_with_flags_records_and_count_in_bytes():
    rng = np.random.default_rng(2)
    records = V.pack(**{name: rng.integers(0, 1 << width, 40) for name, (_, width) in V.FIELDS.items()})
    words = V.words(records)
    assert len(words) < len(records)  # runs of zero values share words
    t = _Fake()
    res = Accelerator(t, regmap.DEFAULT).ctx_records(records)
    assert res.data == t.section and res.changes is None
    flags = regmap.unpack("FLAGS", t.regs[regmap.REG["FLAGS"].offset])
    assert flags["RECORDS"] == 1 and flags["STORE_REF"] == 0 and flags["TEMPORAL"] == 0
    assert t.regs[regmap.REG["COUNT"].offset] == 8 * len(words)
    assert regmap.unpack("CTRL", t.regs[regmap.REG["CTRL"].offset])["MODE"] == regmap.mode("CTX")
    data, max_out = t.streams[0]
    assert np.array_equal(np.frombuffer(data, "<u8"), words)
    assert max_out >= 16 * len(records)


@pytest.mark.parametrize(
    "records,match",
    [
        (np.zeros(3, np.float64), "uint64"),
        (np.zeros(0, np.uint64), "non-empty"),
        (np.zeros((2, 2), np.uint64), "1-D"),
        (np.array([1 << V.RECORD_BITS], np.uint64), "bits set above"),
    ],
)
def test_bad_records_are_refused_before_anything_is_written(records, match):
    t = _Fake()
    with pytest.raises(AcceleratorError, match=match):
        Accelerator(t, regmap.DEFAULT).ctx_records(records)
    assert not t.regs and not t.streams


def test_a_build_without_ctx_refuses_records():
    t = _Fake()
    accel = Accelerator(t, regmap.DEFAULT)
    accel.ops.ctx = False
    with pytest.raises(AcceleratorError, match="no CTX coder"):
        accel.ctx_records(np.ones(2, np.uint64))
    assert not t.regs
