"""Flicker hysteresis (ResidualConfig.hysteresis, quantize.hold): an encoder decision."""

import argparse

import numpy as np
import pytest

from temposplit.codec import _kernels as K
from temposplit.codec import quantize
from temposplit.codec.decoder import decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import ConfigurationError
from temposplit.codec.synthetic import correlated_clip


def _brute(v, prev, z8, n, m):
    """Keep prev iff some 8-bit value within m steps of v requantizes to it."""
    u = np.arange(max(0, v - m), min(255, v + m) + 1, dtype=np.uint8)
    return prev in set(quantize.requantize(u, z8, n).tolist())


@pytest.mark.parametrize(("z8", "n", "m"), [(0, 5, 0), (0, 5, 3), (128, 4, 5), (250, 6, 2), (7, 2, 40), (31, 8, 1)])
def test_hold_keeps_the_previous_code_exactly_when_its_widened_cell_holds_the_value(z8, n, m):
    v = np.repeat(np.arange(256, dtype=np.uint8), 1 << n)
    prev = np.tile(np.arange(1 << n, dtype=np.uint8), 256)
    fresh = quantize.requantize(v, z8, n)
    got = quantize.hold(v, fresh, prev, z8, n, m)
    keep = np.array([_brute(int(a), int(b), z8, n, m) for a, b in zip(v, prev, strict=True)])
    np.testing.assert_array_equal(got, np.where(keep, prev, fresh))
    if m == 0:
        np.testing.assert_array_equal(got, fresh)
    # What the decoder sees stays within m 8-bit steps of the value's own cell.
    step = 1 << (8 - n)
    err = np.abs((got.astype(int) - fresh.astype(int)) * step)
    assert (err[keep] <= m + step).all() and (got[~keep] == fresh[~keep]).all()


def test_the_compiled_hold_equals_the_numpy_one():
    if not K.COMPILED:
        pytest.skip("the compiled kernels need numba")
    rng = np.random.default_rng(5)
    q8 = rng.integers(0, 256, (9, 11, 7), dtype=np.uint8)
    for z8, n, m in ((0, 5, 4), (100, 3, 9), (255, 7, 1)):
        fresh = quantize.requantize(q8, z8, n)
        prev = np.clip(fresh.astype(int) + rng.integers(-2, 3, q8.shape), 0, (1 << n) - 1).astype(np.uint8)
        lo, hi = quantize.hold_tables(z8, n, m)
        np.testing.assert_array_equal(K.hold_codes(q8, fresh, prev, lo, hi), quantize.hold(q8, fresh, prev, z8, n, m))


def _encode(clip, spec, m, coder="zrl"):
    res = ResidualConfig("threshold", 1.0, hysteresis=m)
    enc = Encoder(
        CodecConfig([spec], n_bits=5, structure="uni-8", coder=coder, reference="chain", residual=res),
        keep_reconstruction=True,
    )
    data = enc.header_bytes() + b"".join(p.to_bytes() for f in clip for p in enc.push([f]))
    return enc, data + b"".join(p.to_bytes() for p in enc.flush())


@pytest.mark.parametrize("coder", ["zrl", "ctx"])
def test_hysteresis_sends_less_flicker_and_stays_closed_loop(coder):
    spec = TensorSpec("x", (12, 16, 20), 0.05, 0, 4)
    clip = correlated_clip(np.random.default_rng(2), 16, spec.shape, dx=0, noise=3.0)
    _, plain = _encode(clip, spec, 0, coder)
    enc, held = _encode(clip, spec, 4, coder)
    assert len(held) < 0.9 * len(plain)
    _, out = decode_stream(held)
    recon = {e.index: e.reconstruction for e in enc.frames}
    for d in out:  # the decoder rebuilds what the encoder predicted from
        assert (d.codes[0] == recon[d.index][0]).all()
    # Anchors keep their fresh codes (they refresh the chain).
    for e, f in zip(enc.frames, clip, strict=True):
        if e.kind != "pred":
            assert (e.reconstruction[0] == quantize.requantize(f, 0, 5)).all()


@pytest.mark.parametrize("bad", [-1, 256, 1.5, True, "2"])
def test_a_bad_hysteresis_is_refused(bad):
    with pytest.raises(ConfigurationError, match="hysteresis"):
        ResidualConfig(hysteresis=bad)


def test_the_cli_option_reaches_the_config_and_needs_a_residual_mode():
    from temposplit.codec.cli import add_codec_options, config_from_args

    parser = argparse.ArgumentParser()
    add_codec_options(parser)
    tensors = [TensorSpec("t", (4, 5, 5), 0.1, 3)]
    assert config_from_args(parser.parse_args([]), tensors).residual.hysteresis == 0
    assert config_from_args(parser.parse_args(["--hysteresis", "3"]), tensors).residual.hysteresis == 3
    with pytest.raises(ConfigurationError, match="hysteresis"):
        config_from_args(parser.parse_args(["--hysteresis", "3", "--residual", "none"]), tensors)
    with pytest.raises(ConfigurationError, match="hysteresis"):
        config_from_args(parser.parse_args(["--hysteresis", "-2"]), tensors)
