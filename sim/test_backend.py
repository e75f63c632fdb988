"""The edge's ``rtl`` back end: the codec's Encoder with the fabric (Verilated RTL behind
the synchronous bridge) as its engine makes the same packets as the software encoder, on
the one-pass anchor path (one ENCODE per anchor with the fabric's histogram and STORE_REF;
no REQUANT, no LOAD_REF)."""

import numpy as np
import pytest
import stimulus

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def test_rtl_encoder_matches_software(accel_build):
    from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
    from temposplit.hw.backend import FabricEngine
    from temposplit.hw.driver import Accelerator
    from temposplit.hw.simbridge import BridgeTransport

    rng = np.random.default_rng(7)
    z8 = 4
    frames = []
    a, b = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(1, 0))
    _, c = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(0, -1))
    d, e = stimulus.moving_pair(rng, 12, 14, 16, z8, shift=(-1, 1))
    for f in (a, b, c, d, e):
        frames.append([np.ascontiguousarray(f.transpose(2, 0, 1))])  # (C, H, W) as M1 gives
    config = CodecConfig(
        tensors=[TensorSpec("t", (16, 12, 14), 0.05, z8, block=4)],
        n_bits=4,
        structure="bi-3",
        coder="huffman",
        search_range=7,
    )
    soft = Encoder(config)
    with BridgeTransport(accel_build.params, root=accel_build.dir.parent) as transport:
        engine = FabricEngine(Accelerator(transport))
        hard = Encoder(config, engine=engine)
        soft.set_total_frames(len(frames))
        hard.set_total_frames(len(frames))
        s_out, h_out = soft.header_bytes(), hard.header_bytes()
        for f in frames:
            s_out += b"".join(p.to_bytes() for p in soft.push(f))
            h_out += b"".join(p.to_bytes() for p in hard.push(f))
        s_out += b"".join(p.to_bytes() for p in soft.flush())
        h_out += b"".join(p.to_bytes() for p in hard.flush())
    assert not engine.fallbacks, engine.fallbacks
    assert h_out == s_out
    # 2 anchors (the first a KEY: its own table, so a histogram pass first), 3 predicted
    # frames searched over the reference each anchor stored
    assert dict(engine.passes) == {"ENCODE": 3, "MOTION": 3}, engine.passes
