"""Vector refinement (ResidualConfig.refine_vectors): coded blocks take the vector that makes
their residual cheapest; the reconstruction stays the same, bit for bit, and the stream decodes."""

import numpy as np
import pytest

from temposplit.codec import _kernels as K
from temposplit.codec.decoder import DecodedFrame, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec, refine_costs
from temposplit.codec.motion import refine_vectors
from temposplit.codec.synthetic import correlated_clip

FIXTURES = "tests/fixtures/features"


def _stream(config, frames):
    enc = Encoder(config, keep_reconstruction=True)
    return enc, enc.encode(frames)


def _both(specs, frames, refine_from=None, **options):
    """(encoder, stream) without and with refinement, each stream checked to decode to its
    encoder's reconstruction."""
    out = []
    for refine in (False, True):
        res = ResidualConfig(**{**(refine_from or {}), "refine_vectors": refine})
        enc, data = _stream(CodecConfig(specs, residual=res, **options), frames)
        _, decoded = decode_stream(data)
        assert len(decoded) == len(frames) and all(isinstance(d, DecodedFrame) for d in decoded)
        recon = {f.index: f.reconstruction for f in enc.frames}
        for d in decoded:
            assert all((a == b).all() for a, b in zip(d.codes, recon[d.index], strict=True)), d.index
        out.append((enc, data))
    return out


def _same_reconstruction(plain, refined):
    a = {f.index: f.reconstruction for f in plain.frames}
    b = {f.index: f.reconstruction for f in refined.frames}
    assert a.keys() == b.keys()
    for i in a:
        assert all((x == y).all() for x, y in zip(a[i], b[i], strict=True)), f"frame {i}"


def _vectors_changed(plain, refined):
    return sum(
        int((x != y).any(axis=-1).sum())
        for f, g in zip(plain.frames, refined.frames, strict=True)
        if f.vectors is not None
        for x, y in zip(f.vectors, g.vectors, strict=True)
    )


def _fixture(name):
    npz = np.load(f"{FIXTURES}/ssd-{name}.npz")
    codes = npz["codes_0"]
    return [TensorSpec(name, codes.shape[1:], float(npz["scale_0"]), int(npz["zero_point_0"]), 4)], codes


@pytest.mark.parametrize("cut", ["features.6", "features.10", "features.13"])
@pytest.mark.parametrize("coder", ["zrl", "ctx"])
@pytest.mark.parametrize("n_bits, threshold", [(4, 1.5), (5, 4.0)])
def test_on_ssd_cuts_refinement_keeps_the_reconstruction(cut, coder, n_bits, threshold):
    specs, codes = _fixture(cut)
    frames = [[c] for c in np.concatenate([codes, codes[::-1], codes])]  # 9 frames of real features
    options = dict(structure="uni-8", reference="chain", coder=coder, n_bits=n_bits)
    (plain, _), (refined, _) = _both(specs, frames, {"threshold": threshold}, **options)
    _same_reconstruction(plain, refined)
    assert sum(f.coded_blocks for f in plain.frames) == sum(f.coded_blocks for f in refined.frames) > 0


@pytest.mark.parametrize("coder", ["huffman", "zrl", "ctx"])
@pytest.mark.parametrize(
    "options",
    [
        dict(structure="uni-8", reference="chain", n_bits=4),
        dict(structure="bi-5", reference="anchor", n_bits=6),
        dict(structure="uni-4", reference="chain", n_bits=5, per_channel=True),
    ],
)
def test_on_moving_maps_refinement_keeps_the_reconstruction_and_moves_vectors(rng, coder, options):
    a = correlated_clip(rng, 10, (12, 17, 19), dy=1, dx=-2, noise=6.0)
    b = correlated_clip(rng, 10, (6, 9, 9), dx=1, noise=6.0)
    frames = [[x, y] for x, y in zip(a, b, strict=True)]
    specs = [TensorSpec("a", (12, 17, 19), 0.1, 20, 4), TensorSpec("b", (6, 9, 9), 0.05, 3, 2)]
    (plain, _), (refined, _) = _both(specs, frames, {"threshold": 0.3}, coder=coder, **options)
    _same_reconstruction(plain, refined)
    assert _vectors_changed(plain, refined) > 0  # the option did something


def test_a_dead_zone_turns_refinement_off(rng):
    frames = [[x] for x in correlated_clip(rng, 10, (12, 17, 19), dy=1, dx=-2, noise=6.0)]
    specs = [TensorSpec("x", (12, 17, 19), 0.1, 20, 4)]
    options = dict(structure="uni-8", reference="chain", coder="ctx", n_bits=5)
    (plain, p_data), (refined, r_data) = _both(specs, frames, {"threshold": 0.3, "dead_zone": 8.0}, **options)
    assert p_data == r_data  # coded blocks are not exact: the vectors must stay TSS's
    (plain, _), (refined, _) = _both(specs, frames, {"threshold": 0.3, "dead_zone": 7.9}, **options)
    _same_reconstruction(plain, refined)  # below one 5-bit step (8 8-bit steps) nothing is dropped
    assert _vectors_changed(plain, refined) > 0


@pytest.mark.parametrize("n_bits", [2, 4, 8])
@pytest.mark.parametrize("radius", [0, 1, 3])
def test_the_kernel_equals_the_readable_definition(rng, n_bits, radius):
    for _ in range(12):
        h, w, c = (int(v) for v in rng.integers(3, 14, 3))
        block, p = int(rng.integers(1, 5)), int(rng.choice([3, 7]))
        ref = rng.integers(0, 1 << n_bits, (h, w, c)).astype(np.uint8)
        cur = np.clip(np.roll(ref, (1, -1), (0, 1)).astype(int) + rng.integers(-1, 2, (h, w, c)), 0, (1 << n_bits) - 1)
        cur = cur.astype(np.uint8)
        nby, nbx = -(-h // block), -(-w // block)
        mvs = np.zeros((nby, nbx, 2), np.int8)
        coded = rng.random((nby, nbx)) < 0.7
        rcost, vcost = refine_costs(n_bits, p)
        fast = K.refine_shared(ref, cur, mvs, coded, block, p, radius, rcost, vcost)
        assert (fast == refine_vectors(ref, cur, mvs, coded, block, p, radius, rcost, vcost)).all()
        assert (fast[~coded] == mvs[~coded]).all()


def test_the_kernel_finds_a_known_shift_and_keeps_a_vector_on_ties(rng):
    n_bits, block, p = 4, 4, 7
    ref = rng.integers(0, 16, (16, 16, 8)).astype(np.uint8)
    cur = ref.copy()
    cur[:, 1:] = ref[:, :-1]  # the content moved one column right: cur(y, x) = ref(y, x - 1)
    mvs = np.zeros((4, 4, 2), np.int8)
    coded = np.ones((4, 4), bool)
    rcost, vcost = refine_costs(n_bits, p)
    out = K.refine_shared(ref, cur, mvs, coded, block, p, 1, rcost, vcost)
    assert (out[:, 1:] == (0, -1)).all()  # every block that can take its content from the left
    assert (out[:, 0] == (0, 0)).all()  # the first column cannot point outside the map
    same = K.refine_shared(ref, ref, mvs, coded, block, p, 1, rcost, vcost)
    assert (same == 0).all()  # zero residual already: nothing is cheaper, the vector stays


@pytest.mark.parametrize("coder", ["zrl", "ctx"])
def test_on_a_map_moving_two_steps_a_frame_the_refined_stream_is_smaller(coder):
    # The same smooth map moved by (2, -1) each frame: TSS (steps 4, 2, 1 from the centre)
    # misses the shift on some blocks, which are then coded; their neighbours' vectors find it.
    rng = np.random.default_rng(1)
    frames = [[f] for f in correlated_clip(rng, 16, (16, 24, 24), dy=2, dx=-1, noise=2.0)]
    specs = [TensorSpec("x", (16, 24, 24), 0.1, 3, 4)]
    options = dict(structure="uni-8", reference="chain", coder=coder, n_bits=4)
    (plain, p_data), (refined, r_data) = _both(specs, frames, {"threshold": 1.5}, **options)
    _same_reconstruction(plain, refined)
    assert len(r_data) < 0.97 * len(p_data)
