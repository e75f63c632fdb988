"""The decoder trusts no field: arbitrary, truncated or damaged bytes give BitstreamErrors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from temposplit.codec import fuzz
from temposplit.codec.bitstream import StreamHeader, TensorInfo
from temposplit.codec.decoder import DecodedFrame, FrameError, decode_stream
from temposplit.codec.errors import BitstreamError, LimitError, TruncatedError

SEEDS = fuzz.seed_streams(np.random.default_rng(7))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(data):
    assert fuzz.check_one(data) in ("frames", "error")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.integers(0, 2**32 - 1))
def test_mutated_streams_never_crash(stream, seed):
    data = fuzz.mutate(np.random.default_rng(seed), stream)
    assert fuzz.check_one(data) in ("frames", "error")


@pytest.mark.parametrize("stream", SEEDS)
def test_every_truncation_of_a_stream_is_handled(stream):
    header_len = len(StreamHeader.from_bytes(stream).to_bytes())
    _, full = decode_stream(stream)
    for cut in range(0, len(stream), max(1, len(stream) // 150)):
        if cut < header_len:
            with pytest.raises(BitstreamError):
                decode_stream(stream[:cut])
            continue
        _, out = decode_stream(stream[:cut])
        frames = [d for d in out if isinstance(d, DecodedFrame)]
        assert all(isinstance(d, (DecodedFrame, FrameError)) for d in out)
        for got, want in zip(frames, full, strict=False):  # what decodes is a prefix, unchanged
            assert got.index == want.index
            assert all((a == b).all() for a, b in zip(got.codes, want.codes, strict=True))


def test_header_limits_are_checked_before_allocation():
    header = StreamHeader.from_bytes(SEEDS[0])
    huge = TensorInfo("x", 4096, 4096, 4096, 1.0, 0, 4)  # 2^36 elements
    raw = StreamHeader(**{**header.__dict__, "tensors": (huge,)}).to_bytes()
    with pytest.raises(LimitError, match="elements"):
        StreamHeader.from_bytes(raw)


def test_a_truncated_header_is_a_truncation_error():
    with pytest.raises(TruncatedError):
        StreamHeader.from_bytes(SEEDS[0][:20])


@pytest.mark.slow
def test_fuzz_campaign_of_ten_thousand_inputs():
    counts = fuzz.run(10_000, seed=2026)
    assert counts["frames"] + counts["error"] == 10_000
    assert counts["frames"] > 1000 and counts["error"] > 1000  # both paths were exercised


MEMORY_SCRIPT = """
import sys, time
import numpy as np
from temposplit.codec import fuzz
from temposplit.codec.decoder import FrameError, decode_stream
bombs = fuzz.memory_bombs_made_apart()
assert len(bombs) == len(fuzz.MEMORY_BOMB_SECONDS)
for seed in fuzz.seed_streams(np.random.default_rng(7)):  # every kernel loaded: not the input's cost
    decode_stream(seed)
base = fuzz.peak_rss()
for i, (data, seconds) in enumerate(zip(bombs, fuzz.MEMORY_BOMB_SECONDS)):
    assert len(data) < 1 << 20
    start = time.process_time()
    _, out = decode_stream(data)
    spent = time.process_time() - start
    assert spent < seconds, f"bomb {i} took {spent:.2f} s of CPU (at most {seconds})"
    assert len(out) == 20 and any(isinstance(o, FrameError) for o in out)
    assert all(o.error.__traceback__ is None for o in out if isinstance(o, FrameError))
print((fuzz.peak_rss() - base) >> 20)
"""


def test_a_small_stream_announcing_the_largest_frame_decodes_within_256_mb():
    """A header announcing 2^24 codes and 20 tiny, damaged or valid packets, in each coder (and
    a one-row tensor, and predicted frames whose residuals fill the map): the decoder checks
    lengths before it allocates, keeps nothing of a failed packet, copies no map it need not,
    and does no more work than a section's bytes can hold (fuzz.MEMORY_BOMB_SECONDS)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) < 256
