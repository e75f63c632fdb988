"""What the driver promises the fabric will do, without the RTL: a padded reference whose
pads the requantizer cannot make (z_N = 2^N) is stored by a LOAD_REF padded with z_N; an
ENCODE of a symbol the loaded table has no code for, value records the codec never makes,
a BAND_MOTION whose costs would pass the engine's 32 bits, and a padded reference of
z_N = 256 are refused before any register is written.

The transports are tests/hw/test_driver_faults.py's register dict (a default build) and
tests/hw/test_driver_buffers.py's (with the band engine), here with the REQUANT pass
modelled (the requantizer's lookup) and every stream's mode and bytes kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from temposplit.codec import ctx_records as V
from temposplit.codec import entropy
from temposplit.codec.ctx_reference import N_CONTEXTS, UNARY_MAX
from temposplit.codec.motion import centred_cur, centred_ref
from temposplit.codec.quantize import lut, zero_point_n
from temposplit.hw import driver, regmap
from temposplit.hw.driver import Accelerator, AcceleratorError, AcceleratorLimitError, pad_channels


def _load(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


faults = _load("test_driver_faults")
buffers = _load("test_driver_buffers")

MODES = {v: k for k, (v, _) in regmap.MODES.items()}


class _Fabric(faults._Registers):
    """The default build's registers; REQUANT answers the requantizer's codes, CTX and
    HISTOGRAM an empty section, the rest as long as asked. ``passes``: (mode, bytes in)."""

    def __init__(self):
        super().__init__()
        self.passes = []

    def reg(self, name):
        return self.regs.get(regmap.REG[name].offset, 0)

    def stream(self, data, max_out):
        mode = MODES[regmap.unpack("CTRL", self.reg("CTRL"))["MODE"]]
        self.passes.append((mode, bytes(data)))
        self.log.append(("stream", len(data), max_out))
        if mode == "REQUANT":
            return lut(self.reg("Z8"), self.reg("NBITS"))[np.frombuffer(data, np.uint8)].tobytes()
        return b"" if mode in ("CTX", "HISTOGRAM") else bytes(max_out)

    def modes(self):
        return [m for m, _ in self.passes]


def _accel():
    t = _Fabric()
    accel = Accelerator(t)
    accel.probe()
    t.log.clear()
    return t, accel


# ----------------------------------------------------------------------------- a padded reference's pads

N = 4
ANCHOR = np.random.default_rng(1).integers(200, 256, (6, 6, 5), dtype=np.uint8)  # C = 5: padded to 8

STORES = {
    "encode_anchor": lambda a, z8: a.encode_anchor(ANCHOR, z8=z8, n_bits=N, store_ref=True),
    "histogram": lambda a, z8: a.histogram(ANCHOR, z8=z8, n_bits=N, store_ref=True),
    "requantize": lambda a, z8: a.requantize(ANCHOR, z8=z8, n_bits=N, store_ref=True),
    "ctx_anchor": lambda a, z8: a.ctx_anchor(ANCHOR, z8=z8, n_bits=N, store_ref=True),
}


@pytest.mark.parametrize("op", STORES)
def test_a_padded_reference_whose_z_n_the_requantizer_clamps_is_loaded_padded_with_z_n(op):
    """z8 = 250 at N = 4: z_N = 16 = 2^N, requantize(z8) = 15. The padded copy is the
    codes padded with z_N (LOAD_REF), so a MOTION adds nothing on the pads; a REQUANT pass
    of the map padded with z8 would store pads of 15 (each padded element then costs 16)."""
    z8 = 250
    zn = zero_point_n(z8, N)
    assert zn == 1 << N and lut(z8, N)[z8] == zn - 1
    assert driver.padded_reference_pass(z8, N) == "LOAD_REF"
    t, accel = _accel()
    accel.load_table(np.full(1 << N, N))
    t.passes.clear()
    STORES[op](accel, z8)
    stores = [(m, d) for m, d in t.passes if m in ("REQUANT", "LOAD_REF")]
    want = pad_channels(lut(z8, N)[ANCHOR], 8, zn).tobytes()
    if op == "requantize":  # its codes from the fabric's REQUANT pass (unpadded, no STORE_REF), then the copy
        assert [m for m, _ in stores] == ["REQUANT", "LOAD_REF"] and stores[0][1] == ANCHOR.tobytes()
        flags = [v for k, off, v in t.log if k == "write" and off == regmap.REG["FLAGS"].offset]
        assert regmap.unpack("FLAGS", flags[0])["STORE_REF"] == 0
    else:
        assert [m for m, _ in stores] == ["LOAD_REF"]
    assert stores[-1][1] == want
    assert set(np.frombuffer(want, np.uint8).reshape(6, 6, 8)[..., 5:].ravel().tolist()) == {zn}


@pytest.mark.parametrize("op", STORES)
def test_a_padded_reference_is_otherwise_one_requant_pass_of_the_map_padded_with_z8(op):
    z8 = 100
    assert lut(z8, N)[z8] == zero_point_n(z8, N) and driver.padded_reference_pass(z8, N) == "REQUANT"
    t, accel = _accel()
    accel.load_table(np.full(1 << N, N))
    t.passes.clear()
    STORES[op](accel, z8)
    stores = [(m, d) for m, d in t.passes if m in ("REQUANT", "LOAD_REF")]
    assert stores == [("REQUANT", pad_channels(ANCHOR, 8, z8).tobytes())]


def test_the_engine_counts_the_padded_references_load_ref():
    """FabricEngine's pass counts say which pass stored the padded copy."""
    from temposplit.hw.backend import FabricEngine

    for z8, kind in ((250, "LOAD_REF"), (100, "REQUANT")):
        t = _Fabric()
        engine = FabricEngine(Accelerator(t))
        tensor = SimpleNamespace(name="t", zero_point=z8, block=2)
        alphabet = entropy.Alphabet.anchor(N, zero_point_n(z8, N))
        engine.code_anchor(tensor, ANCHOR, N, "huffman", alphabet, None)  # a KEY: HISTOGRAM (storing), ENCODE
        engine.code_anchor(tensor, ANCHOR, N, "huffman", alphabet, np.full(1 << N, N))  # ENCODE (storing)
        assert dict(engine.passes) == {"HISTOGRAM": 1, "ENCODE": 2, f"{kind} (padded reference)": 2}
        assert t.modes().count(kind) == 2


def test_a_padded_reference_of_z_n_256_is_refused_before_the_ctx_pass():
    """N = 8, z_N = 2^N = 256 given, C not a multiple of the lanes: the padded copy could not
    hold it (a LOAD_REF of bytes), so nothing runs; unpadded, the CTX pass stores it (ZN_REF 256)."""
    codes = np.full((4, 4, 5), 7, np.uint8)
    for requant in (False, True):
        t, accel = _accel()
        with pytest.raises(AcceleratorError, match="z_N must be in 0..255"):
            accel.ctx_anchor(codes, z8=0, n_bits=8, z_n=256, requant=requant, store_ref=True)
        assert t.log == []
    t, accel = _accel()
    accel.ctx_anchor(np.full((4, 4, 8), 7, np.uint8), z8=0, n_bits=8, z_n=256, requant=False, store_ref=True)
    assert t.modes() == ["CTX"]


# ----------------------------------------------------------------------------- ENCODE's table


@pytest.mark.parametrize(
    "tables,symbols,kw,match",
    [
        ([[1, 1, 0, 0]], [0, 1, 2, 3, 2, 1], {}, "no code for symbol 2"),
        ([np.full(16, 4), [1, 1]], [0, 1, 2, 3], {}, "no code for symbol 2"),  # not the stale entries
        ([np.full(16, 4)], [0, 1, 5], {"alphabet": 4, "histogram": False}, "symbol 5 lies outside"),
        # the requantizer's codes: 255 requantizes to 15 at z8 = 0, N = 4
        ([[4] * 15 + [0]], [0, 17, 255], {"requant": True, "z8": 0, "n_bits": 4}, "no code for symbol 15"),
    ],
)
def test_an_encode_of_a_symbol_the_loaded_table_cannot_code_is_refused_before_any_write(tables, symbols, kw, match):
    t, accel = _accel()
    for lengths in tables:
        accel.load_table(lengths)
    t.log.clear()
    kw = {"alphabet": 16, **kw}
    with pytest.raises(AcceleratorError, match=match):
        accel.encode(np.array(symbols, np.uint8), **kw)
    assert t.log == []


def test_an_encode_the_table_covers_runs():
    t, accel = _accel()
    accel.load_table([4] * 15 + [0])
    accel.encode(np.array([0, 17, 200], np.uint8), 16, requant=True, z8=0, n_bits=4)  # codes 0, 1, 13
    accel.load_table([1, 1])
    accel.encode(np.array([0, 1, 1], np.uint8), 2)
    assert t.modes() == ["ENCODE", "ENCODE"]


# ----------------------------------------------------------------------------- value records


def _codec_records():
    """Records the codec makes: intra and temporal anchors and predicted frames (vectors up
    to p = 15, flags, residual blocks) at N = 2 .. 8 (at N = 8 suffixes of 8 bits)."""
    rng = np.random.default_rng(4)
    out = []
    for n_bits in (2, 4, 5, 8):
        top = (1 << n_bits) - 1
        codes = rng.integers(0, top + 1, (6, 6, 5)).astype(np.uint8)
        codes[:, :3] = 0
        ref = np.clip(codes.astype(int) + rng.integers(-top, top + 1, codes.shape), 0, top).astype(np.uint8)
        dref = rng.integers(-1, 2, codes.shape).astype(np.int8)
        out.append(V.anchor_records(codes, None, None, n_bits, zero_point_n(255, n_bits))[0])
        out.append(V.anchor_records(codes, None, None, n_bits, 0)[0])
        out.append(V.anchor_records(codes, ref, dref, n_bits, 0)[0])
        for p in (1, 7, 15):
            mvs = rng.integers(-p, p + 1, (3, 3, 1, 2)).astype(np.int8)
            flags = rng.random((3, 3)) < 0.6
            out.append(V.pred_records(mvs, p, flags, ref, codes, dref, 2, n_bits)[0])
    return out


CODEC_RECORDS = _codec_records()


def test_the_records_the_codec_makes_pass_the_drivers_check():
    f = V.unpack(np.concatenate(CODEC_RECORDS))
    assert f["suffix_w"].max() == 8 and f["unary_n"].max() == UNARY_MAX  # the bounds reached
    for records in CODEC_RECORDS:
        t = _Fabric()
        Accelerator(t).ctx_records(records)
        assert [m for m, _ in t.passes] == ["CTX"]


def _nonzero_with(records, **fields):
    """The first value that is not zero (with two or more unary bins) given ``fields``."""
    f = V.unpack(records)
    i = int(np.flatnonzero((f["zero"] == 0) & (f["unary_n"] >= 2))[0])
    for name, v in fields.items():
        f[name][i] = v
    return V.pack(**f)


BAD_RECORDS = {
    "z_ctx past the table": dict(z_ctx=N_CONTEXTS),
    "s_ctx past the table": dict(s_ctx=N_CONTEXTS + 20),
    "magnitude contexts past the table": dict(mag_base=N_CONTEXTS - 3 * 5, mag_step=5),
    "a step the fabric does not multiply by": dict(mag_step=2),
    "unary_n 15": dict(unary_n=15),
    "a suffix of 9 bits": dict(unary_n=14, suffix_w=9, m=20),
    "a suffix before 14 unary bins": dict(unary_n=13, suffix_w=2, m=3),
    "m past what the suffix says": dict(unary_n=14, suffix_w=2, m=18),
    "m past 14 with no suffix": dict(unary_n=14, suffix_w=0, m=255),
}


@pytest.mark.parametrize("fields", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_records_the_codec_never_makes_are_refused_before_any_write(fields):
    records = _nonzero_with(CODEC_RECORDS[1], **fields)
    for call in (lambda a: a.ctx_records(records), lambda a: a.ctx_records([CODEC_RECORDS[0], records])):
        t, accel = _accel()
        with pytest.raises(AcceleratorError, match="none the codec makes"):
            call(accel)
        assert t.log == []


# ----------------------------------------------------------------------------- BAND_MOTION's 32-bit costs


@pytest.mark.parametrize("n_bits", range(2, 9))
def test_the_worst_element_cost_is_the_golden_costs_maximum(n_bits):
    rng = np.random.default_rng(n_bits)
    a = np.arange(1 << n_bits)[:, None]
    c = np.arange(256)[None, :]
    for z8, zn in [(0, 1 << n_bits), (255, 0), (0, 0), (255, 1 << n_bits)] + [
        (int(rng.integers(0, 256)), int(rng.integers(0, (1 << n_bits) + 1))) for _ in range(20)
    ]:
        worst = int(np.abs(centred_ref(a, zn, 8 - n_bits) - centred_cur(c, z8)).max())
        assert driver.max_element_cost(z8, zn, n_bits) == worst
    assert driver.max_element_cost(0, 1 << n_bits, n_bits) <= 511


class _BandFabric(buffers._Registers):
    """The default build with the band engine; a pass answers as long as asked."""

    def stream(self, data, max_out):
        return bytes(max_out)


def test_a_band_motion_whose_costs_could_pass_32_bits_is_a_limit_refused_before_any_write(monkeypatch):
    """64 x 64 blocks of 4064 channels: at z8 = 255, z_N = 0, N = 8 an element may cost 510,
    a block 8.5 G (the RTL's 32-bit costs would wrap): a limit, so the engine searches in
    software. At z8 = 128, z_N = 8, N = 4 an element costs 255 at most: under 2^32, run."""
    h, w, c, block = 64, 64, 4064, 64
    t = _BandFabric()
    accel = Accelerator(t)
    accel.probe()
    t.log.clear()
    cur = np.zeros((h, w, c), np.uint8)
    ref = np.full((h, w, c), 255, np.uint8)
    with pytest.raises(AcceleratorLimitError, match="32-bit costs"):
        accel.motion(cur, z8=255, n_bits=8, zn_ref=0, block=block, search=3, reference=ref)
    assert t.log == []
    assert block * block * c * 255 < 1 << 32 <= block * block * c * 510
    monkeypatch.setattr(driver, "band_stream", lambda *a: b"\0" * 64)  # not the 100 MB stream
    mvs, _ = accel.motion(cur, z8=128, n_bits=4, zn_ref=8, block=block, search=3, reference=ref & 15)
    assert mvs.shape == (1, 1, 2) and t.started()
