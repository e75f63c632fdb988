"""BAND_MOTION's plan, stream and driver path without the RTL (the RTL: sim/tb_accel.py)."""

import numpy as np
import pytest

from temposplit.hw import cyclemodel, regmap
from temposplit.hw.driver import Accelerator, AcceleratorError, AcceleratorLimitError, band_plan, band_stream

R50 = [((25, 34, 2048), 2), ((50, 68, 1024), 4), ((100, 136, 512), 4), ((200, 272, 256), 8)]


@pytest.mark.parametrize("shape,block", R50)
def test_real_shapes_fit_the_default_build(shape, block):
    p = regmap.DEFAULT
    for search in (3, 7, 15):
        plan = band_plan(shape, block, search, p)
        if shape == (200, 272, 256) and search == 15:
            # a band of 8 + 2 * 15 rows x 272 columns x 32 channels is 330 kB: over the 256 KiB
            # reference RAM, so this one is refused (the software TSS takes it; docs/fabric.md)
            assert plan is None
            continue
        assert plan is not None, (shape, block, search)
        h, w, _ = shape
        assert plan.channels % plan.slice == 0 and plan.slice % p.band_bytes == 0
        rows = max(r1 - r0 for _, _, r0, r1 in plan.groups(h, block, search))
        assert rows * w * plan.slice <= p.ref_bytes
        assert plan.group * -(-w // block) <= p.band_group_blocks


def test_stream_is_what_the_traffic_model_counts():
    rng = np.random.default_rng(0)
    h, w, c, block, search = 19, 21, 64, 4, 7
    p = regmap.Params(ref_bytes=16384, block_bytes=8192)
    plan = band_plan((h, w, c), block, search, p)
    assert plan is not None and plan.slice < c
    ref = rng.integers(0, 16, (h, w, c), dtype=np.uint8)
    cur = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    data = band_stream(ref, cur, block, search, plan)
    assert len(data) == cyclemodel.band_traffic((h, w, c), block, search, plan)
    # it opens with the first group's band of the first slice
    _, _, r0, r1 = plan.groups(h, block, search)[0]
    first = ref[r0:r1, :, : plan.slice].tobytes()
    assert data[: len(first)] == first


class _Fake:
    """A transport that answers the probe like the default build and records the rest."""

    def __init__(self, params=regmap.DEFAULT, band=True):
        self.params, self.band, self.regs, self.streams, self.writes = params, band, {}, [], []

    def write(self, offset, value):
        self.regs[offset] = value
        self.writes.append((offset, value))

    def read(self, offset):
        p = self.params
        if offset == regmap.REG["ID"].offset:
            return regmap.ID_MAGIC
        if offset == regmap.REG["PARAMS"].offset:
            return regmap.pack(
                "PARAMS",
                LANES=p.lanes,
                REF_LOG2=p.ref_bytes.bit_length() - 1,
                BLOCK_LOG2=p.block_bytes.bit_length() - 1,
            )
        if offset == regmap.REG["BAND_PARAMS"].offset:
            return regmap.pack("BAND_PARAMS", CHUNK_LOG2=5, BLOCKS_LOG2=10, GROUP_BLOCKS=455) if self.band else 0
        if offset == regmap.REG["STATUS"].offset:
            return regmap.pack("STATUS", DONE=1)
        return 0

    def stream(self, data, max_out):
        self.streams.append(data)
        return bytes(max_out)


def test_driver_takes_the_band_path_for_large_maps():
    t = _Fake()
    accel = Accelerator(t)
    h, w, c = 25, 34, 2048
    ref = np.zeros((h, w, c), np.uint8)
    accel.load_reference(ref, zn_ref=3)
    assert not t.streams, "a map over the on-chip reference is kept on the PS side"
    mvs, costs = accel.motion(np.zeros((h, w, c), np.uint8), z8=0, n_bits=4, zn_ref=3, block=2, search=7)
    assert mvs.shape == (13, 17, 2) and costs.shape == (13, 17)
    assert t.regs[regmap.REG["BAND_SLICE"].offset] == accel.ops.last_plan.slice
    ctrl = regmap.unpack("CTRL", t.regs[regmap.REG["CTRL"].offset])
    assert ctrl["MODE"] == regmap.mode("BAND_MOTION")
    assert len(t.streams[0]) == cyclemodel.band_traffic((h, w, c), 2, 7, accel.ops.last_plan)


def test_driver_refuses_without_a_band_engine_or_when_the_map_does_not_fit():
    accel = Accelerator(_Fake(band=False))
    with pytest.raises(AcceleratorError, match="exceeds the on-chip"):
        accel.load_reference(np.zeros((25, 34, 2048), np.uint8))
    accel = Accelerator(_Fake())
    big = np.zeros((200, 272, 16), np.uint8)  # B = 2: 13,600 blocks, over band_blocks
    accel.load_reference(big)
    with pytest.raises(AcceleratorError, match="does not fit the band engine"):
        accel.motion(big, z8=0, n_bits=4, zn_ref=0, block=2, search=7)


def _fits_its_fields(offset, value):
    reg = next(r for r in regmap.REGISTERS if r.offset == offset)
    return 0 <= value and not value & ~sum(f.mask for f in reg.fields)


def test_channels_padded_to_the_band_chunks_over_the_register_fall_back_to_software():
    """C = 4070 passes MOTION's check padded to the lanes (4072 <= 4095), but the band engine
    pads it to its 32-byte chunks, 4096, which CHANNELS' 12 bits read as 0: refused as a
    limit before any register is written, so the engine's TSS runs in software."""
    from types import SimpleNamespace

    from temposplit.codec.encoder import SoftwareEngine
    from temposplit.hw.backend import FabricEngine

    shape, block, search = (9, 8, 4070), 2, 3
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 16, shape, dtype=np.uint8)
    cur = rng.integers(0, 256, shape, dtype=np.uint8)
    t = _Fake()
    accel = Accelerator(t)
    accel.probe()
    with pytest.raises(AcceleratorLimitError, match="4096"):
        accel.motion(cur, z8=0, n_bits=4, zn_ref=0, block=block, search=search, reference=ref)
    assert not t.writes and not t.streams
    tensor = SimpleNamespace(name="wide", zero_point=0, block=block)
    engine = FabricEngine(Accelerator(t))
    mvs, costs = engine.motion_search(tensor, ref, cur, 4, search, False)
    want_mvs, want_costs = SoftwareEngine().motion_search(tensor, ref, cur, 4, search, False)
    assert np.array_equal(mvs, want_mvs) and np.array_equal(costs, want_costs)
    assert engine.fallbacks == {"TSS over the fabric's limits": 1}
    assert all(_fits_its_fields(offset, value) for offset, value in t.writes)


def test_a_register_write_over_its_fields_is_an_accelerator_error():
    from temposplit.hw.driver import _w

    assert _w("CHANNELS", 4095) == ("write", regmap.REG["CHANNELS"].offset, 4095)
    for reg, value in (("CHANNELS", 4096), ("BAND_SLICE", 1 << 12), ("COUNT", 1 << 26), ("FLAGS", 1 << 4), ("Z8", -1)):
        with pytest.raises(AcceleratorError, match=f"{reg} = {value} does not fit"):
            _w(reg, value)


def test_the_plan_is_the_fastest_at_the_dma_rate_the_table_counts(monkeypatch):
    """The driver's plan (and the table's) is the one with the fewest cycles at the MM2S's
    word a cycle, the rate the table evaluates it at: it was ranked at a word every 2 cycles
    (a 32-bit DMA) and was slower for 100x136x512 B = 4 p = 3 (Cs 32 G 13: 6,730,285 cycles
    against Cs 64 G 5's 6,452,075) and 50x68x1024 B = 2 p = 7. ``band_cycles`` is pure:
    memoized here so that each plan is counted once at each rate asked for."""
    counted = {}
    band_cycles = cyclemodel.band_cycles

    def memo(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in counted:
            counted[key] = band_cycles(*args, **kwargs)
        return counted[key]

    monkeypatch.setattr(cyclemodel, "band_cycles", memo)
    p = regmap.DEFAULT
    rate = cyclemodel.DMA_WORD_CYCLES
    assert rate == cyclemodel.LANES * cyclemodel.CLOCK_HZ / cyclemodel.DMA_MM2S_BPS == 1.0
    build = dict(
        band_bytes=p.band_bytes, ref_bytes=p.ref_bytes, group_blocks=p.band_group_blocks, band_blocks=p.band_blocks
    )
    planned = 0
    for name, shape, table_block in cyclemodel.R50_CUTS:
        for block in (2, 4, 8):
            for search in (3, 7, 15):
                opts = cyclemodel.band_plan_options(shape, block, search, **build)
                fastest = None
                if opts:
                    fastest = min(
                        opts,
                        key=lambda pl: (
                            memo(shape, block, search, pl, band_bytes=p.band_bytes, word_cycles=rate),
                            -pl.slice,
                        ),
                    )
                    planned += 1
                assert cyclemodel.best_band_plan(shape, block, search, **build) == fastest, (shape, block, search)
                assert band_plan(shape, block, search, p) == fastest, (shape, block, search)
                if block == table_block and search == 7:
                    assert cyclemodel.row(name, shape, block, search).design == (
                        f"band, Cs {fastest.slice} G {fastest.group}"
                    )
    assert planned == 26
