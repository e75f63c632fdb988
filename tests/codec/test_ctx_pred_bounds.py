"""A ctx predicted frame's bounds on hostile input (docs/bitstream.md, 11): a section whose
length cannot hold the bins it must code is refused before anything the size of the map is
decoded or allocated (a section of L bytes holds fewer than 872 (L - 3) bins, and no valid
one is refused), and a frame of 2^24 one-element blocks decodes with neither its vector
field held whole nor copies of its map, its slices side by side in the one map."""

import subprocess
import sys
import textwrap
import time
from fractions import Fraction

import numpy as np
import pytest

from temposplit.codec import _ctx_kernels as X
from temposplit.codec import _kernels as K
from temposplit.codec import ctx, ctx_reference, fuzz
from temposplit.codec.bitstream import FLAG_GROUP_START, KEY, PRED, Packet, StreamHeader, section
from temposplit.codec.decoder import Decoder
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import TruncatedError
from temposplit.codec.motion import grid_shape

# ----------------------------------------------------------------------------- the bound itself


def _extreme_probability() -> int:
    """The highest probability of a 0 bin a context reaches: one fed only 0 bins (6.2.2)."""
    c = ctx_reference.Context()
    for _ in range(4 * X.COUNT_MAX):
        c.update(0)
    return c.prob


def test_a_context_probability_stays_between_the_extremes_of_a_run_of_equal_bins(rng):
    """The update is monotone in the probability and a 1 bin only lowers it, so no sequence of
    bins passes the run of 0 bins (nor, symmetrically, goes below the run of 1 bins); the
    kernel's update is the reference's."""
    top = _extreme_probability()
    low = ctx_reference.Context()
    for _ in range(4 * X.COUNT_MAX):
        low.update(1)
    assert low.prob == X.PROB_ONE - top
    for _ in range(300):
        c, state = ctx_reference.Context(), X.INIT_STATE
        for bit in rng.random(160) < rng.random():
            c.update(int(bit))
            state = X._update(state, int(bit))
            assert state >> 8 == c.prob and X.PROB_ONE - top <= c.prob <= top


def test_bins_per_byte_is_the_least_bound_the_coder_arithmetic_gives(rng):
    """A bin of a range R >= 2^24 leaves less than R * k, k = top/4096 + (4096 - top)/2^24
    (checked on the coder's integer steps); L bytes give the range 8 (L - 3) bits to lose, so
    L bytes hold fewer than 8 (L - 3) / log2(1/k) bins: k^872 <= 2^-8 < k^871, exactly."""
    top = _extreme_probability()
    k = Fraction(top, X.PROB_ONE) + Fraction(X.PROB_ONE - top, X.TOP)
    assert k**ctx.BINS_PER_BYTE <= Fraction(1, 256) < k ** (ctx.BINS_PER_BYTE - 1)
    ranges = [X.TOP, X.TOP + 4095, X.MASK32, *rng.integers(X.TOP, X.MASK32, 2000).tolist()]
    for r in ranges:
        for p in (X.PROB_ONE - top, top, *rng.integers(X.PROB_ONE - top, top + 1, 5).tolist()):
            bound = (r >> X.PROB_BITS) * p
            for kept in (bound, r - bound):  # a 0 bin keeps bound, a 1 bin the rest
                assert kept * X.TOP * X.PROB_ONE < r * (top * X.TOP + (X.PROB_ONE - top) * X.PROB_ONE)


def _counting(monkeypatch):
    """The bins the reference decoder decodes, counted."""
    count = [0]
    original = ctx_reference.RangeDecoder.bit

    def bit(self, c):
        count[0] += 1
        return original(self, c)

    monkeypatch.setattr(ctx_reference.RangeDecoder, "bit", bit)
    return count


def test_valid_sections_hold_fewer_bins_than_the_bound(rng, monkeypatch):
    """Sections of every kind, their bins counted by the reference decoder (bypass bins too):
    under BINS_PER_BYTE (L - 3), however skewed the values."""
    count = _counting(monkeypatch)
    worst = 0.0
    for trial in range(60):
        n_bits = int(rng.integers(2, 9))
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 40)), int(rng.integers(1, 6)))
        spread = [0, 1, 1 << n_bits][trial % 3]  # all equal, nearly, any
        ref = rng.integers(0, 1 << n_bits, shape).astype(np.uint8)
        codes = np.clip(ref.astype(int) + rng.integers(-spread, spread + 1, shape), 0, (1 << n_bits) - 1)
        codes = codes.astype(np.uint8)
        for temporal in (False, True):
            data, _ = ctx.encode_anchor(codes, ref if temporal else None, None, n_bits, 0)
            count[0] = 0
            got, _ = ctx_reference.decode_anchor(data, shape, ref if temporal else None, None, n_bits, 0)
            assert (got == codes).all() and count[0] < ctx.most_bins(len(data))
            worst = max(worst, count[0] / (len(data) - 3))
        block, p, lanes = int(rng.integers(1, 5)), int(rng.integers(1, 16)), 1 + (trial % 2) * (shape[2] - 1)
        nby, nbx = grid_shape(shape[0], shape[1], block)
        mvs = (rng.integers(-p, p + 1, (nby, nbx, lanes, 2)) * (rng.random((nby, nbx, lanes, 2)) < spread)).astype(
            np.int8
        )
        flags = rng.random((nby, nbx)) < 0.5
        data, _ = ctx.encode_pred(mvs, p, flags, ref, codes, None, block, n_bits)
        count[0] = 0
        ctx_reference.decode_pred(data, nby, nbx, lanes, p, lambda v, ref=ref: ref, True, None, block, n_bits)
        assert count[0] < ctx.most_bins(len(data))
        worst = max(worst, count[0] / (len(data) - 3))
    assert worst < ctx.BINS_PER_BYTE


def test_the_cheapest_valid_predicted_frame_nearly_reaches_the_bound_and_decodes():
    """All-zero vectors at B = 1 on a 1 x 4096 x 4096 map: 2^25 components in one zero bin
    each, the densest a section gets (and no flags coded, or every block coded, unchanged).
    About 868 bins a byte, under 872: a bound of 357 bins a byte (the probability's steady
    state, 4033) would refuse it."""
    shape = (4096, 4096, 1)
    zeros = np.zeros(shape, np.uint8)
    mvs = np.zeros((4096, 4096, 1, 2), np.int8)
    for flags in (None, np.zeros((4096, 4096), bool), np.ones((4096, 4096), bool)):
        data, _ = ctx.encode_pred(mvs, 3, flags, zeros, zeros, None, 1, 4)
        least = mvs.size + (0 if flags is None else flags.size + int(flags.sum()))
        assert 0.99 * ctx.most_bins(len(data)) < least < ctx.most_bins(len(data))
        dec = ctx.SectionDecoder(data)
        pred, bad = ctx.decode_prediction(dec, zeros, 1, 3, 1)
        assert bad == -1 and not pred.any()
        if flags is not None:
            got_flags, recon, _ = ctx.decode_pred_residual(dec, pred, None, 1, 4, in_place=True)
            assert recon is pred and (got_flags == flags).all() and not recon.any()
        dec.finish()


# ----------------------------------------------------------------------------- refused within its bytes


@pytest.mark.parametrize("part", ["vectors", "flags", "elements"])
def test_a_section_too_short_for_its_bins_is_refused_before_it_is_decoded(part):
    data = bytes([0x5A]) * 8
    dec = ctx.SectionDecoder(data)
    state = dec.state
    shape = (4096, 4096, 1)
    with pytest.raises(TruncatedError, match="cannot hold"):
        if part == "vectors":
            dec.vectors(4096, 4096, 1, 3)
        elif part == "flags":
            dec.flags(4096, 4096)
        else:
            codes, changes = np.zeros(shape, np.uint8), np.zeros(shape, np.int8)
            dec.elements(codes, codes, np.ones((1, 1), bool), 4096, X.MODE_INTRA, 4, 0, changes, changes)
    assert dec.state is state  # not a byte read


def _zero_key_stream(shape, block):
    spec = TensorSpec("x", shape, 1.0, 0, block)
    config = CodecConfig([spec], structure="uni-20", coder="ctx", residual=ResidualConfig(threshold=0.2), ctx_slices=1)
    header = StreamHeader.from_bytes(Encoder(config).header_bytes())
    c, h, w = shape
    key, _ = ctx.encode_anchor(np.zeros((h, w, c), np.uint8), None, None, 4, 0)
    return header, Packet(KEY, 0, 0, bytes([4, 1, 0]) + section(key, 8 * len(key)), FLAG_GROUP_START)


def test_tiny_predicted_frames_refused_within_their_bytes_cost_little_cpu():
    """36-byte ctx PREDs for a 1 x 4096 x 4096 map of one-element blocks: each zero-filled a
    32 MB vector field before reading a byte, 14 ms of CPU (1 MB of them: 396 s); now each is
    refused on its length first."""
    header, key = _zero_key_stream((1, 4096, 4096), 1)
    decoder = Decoder(header)
    decoder.decode(key)
    tiny = Packet(PRED, 1, 0, fuzz._TINY_SECTION)
    assert len(tiny.to_bytes()) == 36
    with pytest.raises(TruncatedError):
        decoder.decode(tiny)  # the kernels loaded (or compiled) untimed
    start = time.process_time()
    for i in range(300):
        with pytest.raises(TruncatedError):
            decoder.decode(Packet(PRED, 2 + i, 0, fuzz._TINY_SECTION))
    spent = time.process_time() - start
    assert spent < 1.0, f"{spent:.2f} s of CPU for 300 refused PREDs"


# ----------------------------------------------------------------------------- memory of a 2^24 frame

MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from temposplit.codec import fuzz
    from temposplit.codec.bitstream import StreamHeader
    from temposplit.codec.decoder import FrameError, decode_stream, iter_stream
    for seed in fuzz.seed_streams(np.random.default_rng(7)):  # every kernel loaded
        decode_stream(seed)
    data = open(sys.argv[1], "rb").read()
    base = fuzz.peak_rss()
    kinds = []
    for item in iter_stream(data, StreamHeader.from_bytes(data)):  # packet by packet, nothing kept
        kinds.append("error" if isinstance(item, FrameError) else item.kind)
        item = None
    assert kinds[:5] == ["key", "anchor", "anchor", "pred", "pred"] and set(kinds[5:]) == {"error"}, kinds
    print((fuzz.peak_rss() - base) >> 20)
    """
)


def test_predicted_frames_of_2_24_one_element_blocks_decode_within_256_mb(tmp_path):
    """fuzz._ctx_pred_bomb (under 400 kB): 2^24 vectors, flags and codes a predicted frame,
    the decoder holding its four frames. The vector field held whole (32 MB) beside the flags,
    the prediction, a copy of it for the reconstruction and one more per slice took 271 MB
    over the warm decoder's peak; now the frame being rebuilt and its flags (178 MB in all)."""
    make = "import sys\nfrom temposplit.codec import fuzz\nopen(sys.argv[1], 'wb').write(fuzz._ctx_pred_bomb())\n"
    path = tmp_path / "bomb.tsp"
    subprocess.run([sys.executable, "-c", make, str(path)], check=True, timeout=600)
    assert path.stat().st_size < 1 << 20
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) < 256


# ----------------------------------------------------------------------------- equal to the definitions


@pytest.mark.parametrize("band", [6, None])
def test_vectors_compensated_band_by_band_equal_the_whole_field_compensated(rng, monkeypatch, band):
    """Bands of block rows (here also of one row; None: the decoder's own) give the prediction
    of the whole field and report the same first block moved outside the map, shared or
    per-channel vectors."""
    if band is not None:
        monkeypatch.setattr(ctx, "VECTOR_BAND", band)
    for trial in range(40):
        shape = (int(rng.integers(1, 20)), int(rng.integers(1, 20)), int(rng.integers(1, 5)))
        block, p = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        lanes = shape[2] if trial % 2 else 1
        nby, nbx = grid_shape(shape[0], shape[1], block)
        ref = rng.integers(0, 16, shape).astype(np.uint8)
        mvs = rng.integers(-p, p + 1, (nby, nbx, lanes, 2)).astype(np.int8)
        if trial % 3:  # mostly inside the map: no vector moves a block past the edge
            mvs[...] = 0
            mvs[1:-1, 1:-1] = np.clip(mvs[1:-1, 1:-1], -min(block, p), min(block, p))
        data, _ = ctx.encode_pred(mvs, p, None, ref, ref, None, block, 4)
        dec = ctx.SectionDecoder(data)
        got, bad = ctx.decode_prediction(dec, ref, lanes, p, block)
        dec.finish()
        slow = ctx_reference.decode_vectors(ctx_reference.RangeDecoder(data), ctx_reference.Coder(), nby, nbx, lanes, p)
        assert (slow == mvs).all()
        if lanes > 1:
            want, want_bad = K.compensate_per_channel(ref, mvs, block)
        else:
            want, want_bad = K.compensate_shared(ref, mvs.reshape(nby, nbx, 2), block)
        assert bad == want_bad
        if bad < 0:
            assert (got == want).all()


def test_the_kernels_into_given_arrays_equal_the_allocating_ones(rng):
    """decode_vectors_into / decode_flags_into write every entry (the arrays start as garbage)
    and stop where decode_vectors / decode_flags do, valid or cut short."""
    for _ in range(20):
        nby, nbx, lanes, p = int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 4)), 5
        mvs = (rng.integers(-p, p + 1, (nby, nbx, lanes, 2)) * (rng.random((nby, nbx, lanes, 2)) < 0.4)).astype(np.int8)
        flags = rng.random((nby, nbx)) < 0.5
        zeros = np.zeros((nby, nbx, 1), np.uint8)
        full, _ = ctx.encode_pred(mvs, p, flags, zeros, zeros, None, 1, 4)
        for data in (full, full[: max(4, len(full) // 2)]):
            buf = np.frombuffer(data, np.uint8)
            ctx_a, ctx_b = X.new_contexts(), X.new_contexts()
            state_a, got_a, status_a = X.decode_vectors(X.dec_start(buf), buf, ctx_a, nby, nbx, lanes, p)
            got_b = np.full((nby, nbx, lanes, 2), 0x55, np.int8)
            state_b, status_b = X.decode_vectors_into(X.dec_start(buf), buf, ctx_b, got_b, p)
            assert (tuple(state_a), status_a) == (tuple(state_b), status_b) and (ctx_a == ctx_b).all()
            if status_a == 0:
                assert (got_a == got_b).all() and (data is not full or (got_a == mvs).all())
                state_a, flags_a, status_a = X.decode_flags(state_a, buf, ctx_a, nby, nbx)
                flags_b = np.full((nby, nbx), True)
                state_b, status_b = X.decode_flags_into(state_b, buf, ctx_b, flags_b)
                assert (tuple(state_a), status_a) == (tuple(state_b), status_b)
                assert status_a != 0 or (flags_a == flags_b).all()


def _reference_part(data, codes_shape, pred, dref, flags, block, mode, n_bits, z_n, head=None):
    """The reference decoding of one slice's section over copies of its part: (codes, changes)."""
    dec, coder = ctx_reference.RangeDecoder(data), ctx_reference.Coder()
    if head is not None:
        ctx_reference.decode_vectors(dec, coder, *head)
        ctx_reference.decode_flags(dec, coder, *flags.shape)
    x = np.zeros(codes_shape, np.uint8) if mode == X.MODE_INTRA else pred.copy()
    changes = np.zeros(codes_shape, np.int8)
    temporal, residual = mode != X.MODE_INTRA, mode == X.MODE_RESIDUAL
    ctx_reference._decode_elements(dec, coder, x, pred, flags, block, temporal, n_bits, z_n, dref, changes, residual)
    dec.finish()
    return x, changes


@pytest.mark.parametrize("slices", [2, 3, 5])
def test_slices_decoded_into_one_map_equal_each_part_decoded_alone(rng, slices):
    """Anchors (intra and temporal) and predicted frames in slices, each slice decoding its
    channels of the one map in place: the reference's decoding of each part on its own, and
    a predicted frame rebuilt in place equals one rebuilt on a copy (which leaves pred as it is)."""
    n_bits, z_n, block, p = 4, 5, 3, 2
    for _ in range(6):
        shape = (int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(slices, 9)))
        bounds = ctx.slice_bounds(shape[2], slices)
        ref = rng.integers(0, 16, shape).astype(np.uint8)
        dref = rng.integers(-1, 2, shape).astype(np.int8)
        codes = np.where(rng.random(shape) < 0.3, rng.integers(0, 16, shape), ref).astype(np.uint8)
        for temporal in (False, True):
            sections, _ = ctx.encode_anchor_slices(codes, ref if temporal else None, dref, n_bits, z_n, slices)
            got, changes = ctx.decode_anchor_slices(sections, shape, ref if temporal else None, dref, n_bits, z_n)
            assert (got == codes).all()
            flags1 = np.ones((1, 1), bool)
            for data, (c0, c1) in zip(sections, bounds, strict=True):
                part = (shape[0], shape[1], c1 - c0)
                mode = X.MODE_TEMPORAL if temporal else X.MODE_INTRA
                pred = np.ascontiguousarray(ref[..., c0:c1]) if temporal else None
                d = np.ascontiguousarray(dref[..., c0:c1]) if temporal else np.zeros(part, np.int8)
                want, want_changes = _reference_part(data, part, pred, d, flags1, max(shape[:2]), mode, n_bits, z_n)
                assert (got[..., c0:c1] == want).all() and (changes[..., c0:c1] == want_changes).all()
        nby, nbx = grid_shape(shape[0], shape[1], block)
        mvs = np.zeros((nby, nbx, 1, 2), np.int8)
        flags = rng.random((nby, nbx)) < 0.6
        sections, _ = ctx.encode_pred_slices(mvs, p, flags, ref, codes, dref, block, n_bits, slices)
        results = []
        for in_place in (False, True):
            pred = ref.copy()
            dec = ctx.SectionDecoder(sections[0])
            dec.vectors(nby, nbx, 1, p)
            got_flags, recon, changes = ctx.decode_pred_residual(
                dec, pred, dref, block, n_bits, sections[1:], in_place=in_place
            )
            dec.finish()
            assert (recon is pred) == in_place and (in_place or (pred == ref).all())
            results.append((got_flags, recon, changes))
        assert all((a == b).all() for a, b in zip(*results, strict=True))
        got_flags, recon, changes = results[1]
        assert (got_flags == flags).all()
        for k, (data, (c0, c1)) in enumerate(zip(sections, bounds, strict=True)):
            part = (shape[0], shape[1], c1 - c0)
            pred, d = np.ascontiguousarray(ref[..., c0:c1]), np.ascontiguousarray(dref[..., c0:c1])
            head = (nby, nbx, 1, p) if k == 0 else None
            want, want_changes = _reference_part(data, part, pred, d, flags, block, X.MODE_RESIDUAL, n_bits, 0, head)
            assert (recon[..., c0:c1] == want).all() and (changes[..., c0:c1] == want_changes).all()
