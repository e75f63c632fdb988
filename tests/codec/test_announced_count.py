"""A clip that goes on past the frame count announced to the encoder (a container's header
that undercounts its frames: a recorder that crashed, an OpenDML AVI, OpenCV's estimate):
the frames past it are coded as a clip of unknown length, not each as a group of its own
(an anchor every frame: about twice the bytes, with no warning). A count that is right
writes what it always did (the frozen vectors, tests/codec/test_vectors.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temposplit.codec.decoder import decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
from temposplit.codec.ratecontrol import PRED_PRIOR, RateController

FRAMES, ANNOUNCED = 40, 10


def _clip(n=FRAMES, shape=(8, 12, 12)):
    """A clip that moves a little: predicted frames are worth coding."""
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, shape, dtype=np.int16)
    return [np.clip(base + rng.integers(-3, 4, shape), 0, 255).astype(np.uint8) for _ in range(n)]


def _coded(config: CodecConfig, total: int | None, frames):
    enc = Encoder(config)
    if total is not None:
        enc.set_total_frames(total)
    packets = [p for f in frames for p in enc.push([f])] + enc.flush()
    return enc, enc.header_bytes() + b"".join(p.to_bytes() for p in packets)


CONFIGS = {
    "uni-8 huffman": dict(n_bits=5, structure="uni-8", coder="huffman"),
    "bi-3 huffman": dict(n_bits=4, structure="bi-3", coder="huffman"),
    "uni-8 ctx chain": dict(n_bits=5, structure="uni-8", coder="ctx", reference="chain"),
    "uni-8 rate control": dict(structure="uni-8", coder="huffman", rate_target=0.001, fps=10.0),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_frames_past_an_undercounted_total_are_not_each_an_anchor(name):
    config = CodecConfig([TensorSpec("t", (8, 12, 12), 0.1, 3, 4)], **CONFIGS[name])
    frames = _clip()
    enc, data = _coded(config, ANNOUNCED, frames)
    past = [f for f in enc.frames if f.index >= ANNOUNCED]
    assert len(past) == FRAMES - ANNOUNCED
    anchors = [f.index for f in past if f.kind != "pred"]
    longest = max(g for _, g in enc.rate.ladder) if enc.rate else int(config.structure.split("-")[1])
    # Groups of the structure's length again from the announced count on: one anchor per
    # group (was one per frame, 30 here); a rate-controlled one chooses its groups itself,
    # but not a group of one frame each.
    assert len(anchors) <= math.ceil((FRAMES - ANNOUNCED) / min(longest, 8)) + 1, anchors
    # Every frame decodes, once, in order of its index.
    _, decoded = decode_stream(data)
    assert sorted(f.index for f in decoded) == list(range(FRAMES))
    # ... and costs about what the clip coded without a count costs (the anchors of groups of
    # one cost 1.7-2.4x as much here).
    _, unknown = _coded(config, None, frames)
    assert len(data) < 1.25 * len(unknown), (len(data), len(unknown))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_count_that_is_right_or_over_codes_as_before(name):
    """The frames before the count are coded as a count that is right codes them; a count
    of the clip itself is the stream ``encode`` writes."""
    config = CodecConfig([TensorSpec("t", (8, 12, 12), 0.1, 3, 4)], **CONFIGS[name])
    frames = _clip()
    _, exact = _coded(config, FRAMES, frames)
    assert exact == Encoder(config).encode([[f] for f in frames])
    _, short = _coded(config, ANNOUNCED, frames[:ANNOUNCED])
    _, under = _coded(config, ANNOUNCED, frames)
    assert under.startswith(short)


def test_the_rate_controller_takes_no_frames_left_as_not_known():
    """frames_left 0 or less (a count the clip went past) priced every group as one frame:
    the anchor alone, so the controller fell to its coarsest point."""
    frame = [(np.random.default_rng(0).integers(0, 256, (16, 16, 16), dtype=np.uint8), 128)]
    ladder = [(8, 8), (4, 8)]
    anchor = RateController(1.0, 1.0, "raw", ladder).estimate_anchor(frame, 8)
    budget = (anchor + 7 * PRED_PRIOR * anchor) / 8 * 1.1  # N = 8 fits over a group of 8, not alone
    for left in (0, -5):
        rc = RateController(budget / 1e6, 1.0, "raw", ladder)
        assert rc.choose(frame, left) == RateController(budget / 1e6, 1.0, "raw", ladder).choose(frame) == (8, 8)
    rc = RateController(budget / 1e6, 1.0, "raw", ladder)
    assert rc.choose(frame, 1) == (4, 8)  # one frame left, truly: the anchor alone
