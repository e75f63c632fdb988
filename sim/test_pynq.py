"""The PYNQ driver (``temposplit.hw.pynq_driver``) against the Verilated RTL.

``sim/pynqsim.py`` stands in for ``pynq`` (Overlay from a ``.hwh``, drivers bound by
``bindto``, MMIO, ``allocate`` with separate CPU and device copies, the AXI DMA's registers
in simple mode) over the simulation of the 64-bit top; the ``.hwh`` is generated from the
register map (``temposplit.hw.vivado.hwh``), so the driver meets the addresses, VLNV and
DMA parameters the Vivado flow builds. Every result is compared with the golden codec.
docs/pynq-z2.md says why this and not cocotbpynq.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import stimulus

pytestmark = [pytest.mark.sim, pytest.mark.slow]


@pytest.fixture(scope="module")
def pynq_sim(accel_build, tmp_path_factory):
    """``import pynq`` -> the stand-in; the driver module imported against it."""
    import pynqsim

    saved = {k: sys.modules.get(k) for k in ("pynq", "temposplit.hw.pynq_driver")}
    pynqsim.install(accel_build.params, accel_build.dir.parent)
    sys.modules.pop("temposplit.hw.pynq_driver", None)
    driver = importlib.import_module("temposplit.hw.pynq_driver")
    yield pynqsim, driver, tmp_path_factory.mktemp("overlay")
    pynqsim.shutdown()
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


def _overlay_files(folder, **design):
    from temposplit.hw import vivado

    bit = folder / f"temposplit-{design.get('dma_length_width', 26)}.bit"
    bit.with_suffix(".hwh").write_text(vivado.hwh(vivado.Design(**design)))
    return bit


def _golden_anchor(q8, z8, n_bits, lengths):
    from temposplit.codec import entropy
    from temposplit.codec.quantize import requantize, zero_point_n

    codes = requantize(q8, z8, n_bits).reshape(-1)
    data, bits = entropy.encode("huffman", codes, entropy.Alphabet.anchor(n_bits, zero_point_n(z8, n_bits)), lengths)
    return data, bits, np.bincount(codes, minlength=1 << n_bits)


def test_overlay_binds_the_driver_and_runs_a_group(pynq_sim):
    """Overlay -> TemposplitAccel by VLNV, attached to the AXI DMA; an anchor, two predicted
    frames and their vectors, bit for bit against the golden model; REQUANT of sizes that
    end mid-word (TKEEP); LOAD_REF (an empty packet)."""
    from temposplit.codec import entropy, huffman
    from temposplit.codec.motion import three_step_search
    from temposplit.codec.quantize import centred, requantize, zero_point_n
    from temposplit.hw import regmap

    pynq, driver, folder = pynq_sim
    bit = _overlay_files(folder)
    overlay = pynq.Overlay(str(bit))
    assert type(overlay.temposplit_accel_0) is driver.TemposplitAccel
    assert type(overlay.axi_dma_0) is pynq.DMA
    assert overlay.axi_dma_0.buffer_max_size == (1 << 26) - 1
    assert overlay.temposplit_accel_0.read(regmap.REG["ID"].offset) == regmap.ID_MAGIC  # DefaultIP's MMIO

    accel = driver.open_overlay(str(bit))
    assert isinstance(accel, driver.TemposplitAccel) and accel.params == regmap.DEFAULT
    assert accel.max_transfer == (1 << 26) - 1

    rng = np.random.default_rng(11)
    z8, n_bits, block, p = 3, 6, 4, 7
    a, b = stimulus.moving_pair(rng, 16, 20, 32, z8, shift=(2, 1))
    _, c = stimulus.moving_pair(rng, 16, 20, 32, z8, shift=(-1, 0))
    lengths = huffman.table_lengths(np.bincount(requantize(a, z8, n_bits).reshape(-1), minlength=1 << n_bits))
    accel.load_table(lengths)
    res = accel.encode_anchor(a, z8=z8, n_bits=n_bits, store_ref=True)
    data, bits, hist = _golden_anchor(a, z8, n_bits, lengths)
    assert (res.data, res.bits) == (data, bits)
    np.testing.assert_array_equal(res.histogram, hist)

    mv_lengths = stimulus.table_for(rng, 2 * p + 1)
    zn = zero_point_n(z8, n_bits)
    ref_c = centred(requantize(a, z8, n_bits), z8, n_bits)
    for cur in (b, c):
        mvs, costs = accel.motion(cur, z8=z8, n_bits=n_bits, zn_ref=zn, block=block, search=p)
        g_mvs, g_costs = three_step_search(ref_c, cur.astype(np.int16) - z8, block, p)
        np.testing.assert_array_equal(mvs, g_mvs)
        np.testing.assert_array_equal(costs, g_costs)
        got = accel.encode_motion_vectors(mvs, search=p, lengths=mv_lengths)
        assert got == entropy.encode(
            "huffman", mvs.astype(np.int32).reshape(-1) + p, entropy.Alphabet.motion(p), mv_lengths
        )

    for size in (1, 7, 1001):
        q8 = rng.integers(0, 256, size, dtype=np.uint8)
        np.testing.assert_array_equal(accel.requantize(q8, z8=7, n_bits=4), requantize(q8, 7, 4))
    accel.load_reference(requantize(b, z8, n_bits), zn_ref=zn)  # LOAD_REF: its packet is one empty word
    mvs, _ = accel.motion(b, z8=z8, n_bits=n_bits, zn_ref=zn, block=block, search=p)
    assert not mvs.any()


def test_transfers_split_under_the_dma_length_limit(pynq_sim):
    """A 12-bit length register (4095 bytes): inputs go out in pieces, an output that does
    not fit one receive is an AcceleratorError naming the limit, and the DMA works again
    after it."""
    from temposplit.codec import huffman
    from temposplit.codec.quantize import requantize
    from temposplit.hw.driver import AcceleratorError

    pynq, driver, folder = pynq_sim
    accel = driver.open_overlay(str(_overlay_files(folder, dma_length_width=12)))
    assert accel.max_transfer == 4095
    sends = []
    channel = accel.dma.sendchannel
    original = channel.transfer

    def counting(array, start=0, nbytes=0):
        sends.append((start, nbytes))
        return original(array, start=start, nbytes=nbytes)

    channel.transfer = counting
    rng = np.random.default_rng(5)
    z8, n_bits = 0, 2
    q8, _ = stimulus.random_map(rng, 24, 25, 16, z8=z8, relu=True)  # 9600 codes -> 3 pieces; ~2.4 kB out
    lengths = huffman.table_lengths(np.bincount(requantize(q8, z8, n_bits).reshape(-1), minlength=4) + 1)
    accel.load_table(lengths)
    res = accel.encode_anchor(q8, z8=z8, n_bits=n_bits, store_ref=False)
    assert sends == [(0, 4032), (4032, 4032), (8064, 1536)]
    data, bits, hist = _golden_anchor(q8, z8, n_bits, lengths)
    assert (res.data, res.bits) == (data, bits)
    np.testing.assert_array_equal(res.histogram, hist)

    big = rng.integers(0, 256, 5000, dtype=np.uint8)  # REQUANT's output is 5000 bytes > 4095
    with pytest.raises(AcceleratorError, match="c_sg_length_width"):
        accel.requantize(big, z8=0, n_bits=8)
    small = rng.integers(0, 256, 100, dtype=np.uint8)
    np.testing.assert_array_equal(accel.requantize(small, z8=9, n_bits=5), requantize(small, 9, 5))


def test_edge_backend_pynq_matches_software(pynq_sim, monkeypatch):
    """``temposplit edge --backend pynq``'s encoder (hw.backend over open_overlay) makes the
    same bi-3 stream as the software encoder."""
    from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
    from temposplit.hw import backend

    pynq, driver, folder = pynq_sim
    monkeypatch.setenv(driver.OVERLAY_ENV, str(_overlay_files(folder)))
    rng = np.random.default_rng(7)
    z8 = 4
    a, b = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(1, 0))
    _, c = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(0, -1))
    frames = [[np.ascontiguousarray(f.transpose(2, 0, 1))] for f in (a, b, c)]
    config = CodecConfig(
        tensors=[TensorSpec("t", (16, 12, 14), 0.05, z8, block=4)],
        n_bits=4,
        structure="bi-3",
        coder="huffman",
        search_range=7,
    )
    soft = Encoder(config)
    hard = backend.make_encoder("pynq", config)
    assert isinstance(hard.engine.accel, driver.TemposplitAccel)
    out = [soft.encode(frames), hard.encode(frames)]
    assert not hard.engine.fallbacks, hard.engine.fallbacks
    # The fabric did the work (FabricEngine inherits the software's operations, so an op left
    # to them would match trivially): frame 1 a KEY anchor, a HISTOGRAM pass (its own table,
    # storing the reference) then one ENCODE; frames 0 and 2 one MOTION each over it, no
    # LOAD_REF, no REQUANT (docs/fabric.md, "The one-pass anchor").
    assert dict(hard.engine.passes) == {"HISTOGRAM": 1, "ENCODE": 1, "MOTION": 2}, hard.engine.passes
    assert out[1] == out[0]


def test_edge_backend_pynq_ctx_matches_software(pynq_sim, monkeypatch):
    """The recommended preset (ctx anchors: one CTX pass each, intra then temporal; the
    predicted frame's section one CTX pass of value records) through the board's driver
    and DMA: the same stream as the software encoder, no fallback."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, TensorSpec
    from temposplit.hw import backend

    pynq, driver, folder = pynq_sim
    monkeypatch.setenv(driver.OVERLAY_ENV, str(_overlay_files(folder)))
    rng = np.random.default_rng(8)
    z8 = 9
    a, b = stimulus.moving_pair(rng, 10, 11, 12, z8, shift=(1, 0))
    _, c = stimulus.moving_pair(rng, 10, 11, 12, z8, shift=(0, -1))
    frames = [[np.ascontiguousarray(f.transpose(2, 0, 1))] for f in (a, b, c)]
    config = CodecConfig(
        tensors=[TensorSpec("t", (12, 10, 11), 0.05, z8, block=4)], **dict(PRESETS["recommended"], structure="uni-2")
    )
    soft = Encoder(config)
    hard = backend.make_encoder("pynq", config)
    out = [soft.encode(frames), hard.encode(frames)]
    assert not hard.engine.fallbacks, hard.engine.fallbacks
    assert hard.engine.passes["CTX"] == 2, hard.engine.passes
    assert hard.engine.passes["CTX (records)"] == 1, hard.engine.passes
    assert out[1] == out[0]


def test_buffers_model_the_caches(pynq_sim):
    """The stand-in's own contract: the DMA sees only flushed data, the CPU only invalidated data."""
    pynq, _, _ = pynq_sim
    buf = pynq.allocate(shape=(64,), dtype=np.uint8)
    buf[:] = 7
    assert pynq.DDR.read(buf.physical_address, 64) == bytes(64)
    buf.flush()
    assert pynq.DDR.read(buf.physical_address, 64) == bytes([7]) * 64
    pynq.DDR.write(buf.physical_address, bytes(range(64)))
    assert buf[5] == 7
    buf.invalidate()
    assert buf[5] == 5
    buf.freebuffer()
