"""The driver's HISTOGRAM pass (``Accelerator.histogram``) without the RTL: what it
programs and streams, the counts it reads back, and a build without the mode."""

import numpy as np
import pytest

from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError


class _Fake:
    """Registers in a dict; HIST_DATA answers a count per HIST_INDEX; PARAMS as a build's."""

    def __init__(self, counts, hist_mode=1):
        self.regs, self.streams, self.counts = {}, [], counts
        self.params = regmap.pack("PARAMS", LANES=regmap.LANES, REF_LOG2=18, BLOCK_LOG2=15, HISTOGRAM=hist_mode)
        self.log = []

    def write(self, offset, value):
        self.regs[offset] = value
        self.log.append(("write", offset, value))

    def read(self, offset):
        if offset == regmap.REG["ID"].offset:
            return regmap.ID_MAGIC
        if offset == regmap.REG["PARAMS"].offset:
            return self.params
        if offset == regmap.REG["STATUS"].offset:
            return regmap.pack("STATUS", DONE=1)
        if offset == regmap.REG["HIST_DATA"].offset:
            return int(self.counts[self.regs[regmap.REG["HIST_INDEX"].offset]])
        if offset == regmap.REG["CYCLES"].offset:
            return 1234
        return 0

    def stream(self, data, max_out):
        self.streams.append((data, max_out))
        mode = regmap.unpack("CTRL", self.regs[regmap.REG["CTRL"].offset])["MODE"]
        return bytes(len(data)) if mode == regmap.mode("REQUANT") else b""


def test_histogram_programs_one_pass_and_reads_the_alphabet():
    counts = np.arange(256) * 3
    t = _Fake(counts)
    q8 = np.random.default_rng(0).integers(0, 256, (3, 5, 16), dtype=np.uint8)
    res = Accelerator(t).histogram(q8, z8=7, n_bits=5, store_ref=True)
    np.testing.assert_array_equal(res.histogram, counts[:32])
    assert res.cycles == 1234
    assert regmap.unpack("CTRL", t.regs[regmap.REG["CTRL"].offset])["MODE"] == regmap.mode("HISTOGRAM")
    flags = regmap.unpack("FLAGS", t.regs[regmap.REG["FLAGS"].offset])
    assert flags["REQUANT"] == 1 and flags["STORE_REF"] == 1
    assert t.regs[regmap.REG["COUNT"].offset] == q8.size
    assert t.regs[regmap.REG["NBITS"].offset] == 5 and t.regs[regmap.REG["Z8"].offset] == 7
    assert t.streams == [(q8.tobytes(), 8)]


def test_histogram_of_a_padded_reference_stores_it_by_a_requant_pass():
    t = _Fake(np.zeros(256))
    q8 = np.zeros((2, 2, 5), np.uint8)  # C not a multiple of the lanes
    Accelerator(t).histogram(q8, z8=0, n_bits=4, store_ref=True)
    starts = [regmap.unpack("CTRL", v)["MODE"] for k, o, v in t.log if o == regmap.REG["CTRL"].offset]
    assert starts == [regmap.mode("HISTOGRAM"), regmap.mode("REQUANT")]
    assert len(t.streams[1][0]) == 2 * 2 * 8  # the padded copy


def test_a_build_without_the_mode_refuses():
    t = _Fake(np.zeros(256), hist_mode=0)
    accel = Accelerator(t)
    accel.probe()
    assert not accel.ops.hist
    with pytest.raises(AcceleratorError, match="no HISTOGRAM"):
        accel.histogram(np.zeros(8, np.uint8), z8=0, n_bits=4)
    assert not t.streams
