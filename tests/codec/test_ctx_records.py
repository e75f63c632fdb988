"""The value records of a ctx section (codec/ctx_records.py): range-coded, their bins are
the section the codec writes, for anchors (intra and temporal) and predicted frames
(vectors, flags, residual blocks), on random maps, at every N and on real SSD codes."""

import numpy as np
import pytest

from temposplit.codec import ctx
from temposplit.codec import ctx_records as V
from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, TensorSpec
from temposplit.codec.synthetic import ctx_section_inputs

FIXTURES = "tests/fixtures/features"


def _codes(rng, shape, n_bits, keep=0.6):
    top = (1 << n_bits) - 1
    a = rng.integers(0, top + 1, shape).astype(np.uint8)
    step = rng.integers(-4, 5, shape) * (rng.random(shape) > keep)
    b = np.clip(a.astype(int) + step, 0, top).astype(np.uint8)
    return a, b


@pytest.mark.parametrize("n_bits", range(2, 9))
@pytest.mark.parametrize("shape", [(4, 5, 3), (3, 1, 1), (1, 6, 2), (5, 4, 1)])
def test_anchor_records_code_the_codecs_section(rng, n_bits, shape):
    a, b = _codes(rng, shape, n_bits)
    z_n = int(rng.integers(0, (1 << n_bits) + 1))  # z_N may be 2^N
    dref = rng.integers(-1, 2, shape).astype(np.int8)
    for ref, dr in ((None, None), (a, dref), (a, None)):
        records, changes = V.anchor_records(b, ref, dr, n_bits, z_n)
        section, expected_changes = ctx.encode_anchor(b, ref, dr, n_bits, z_n)
        assert len(records) == b.size
        assert V.encode_records(records) == section
        assert (changes == expected_changes).all()


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("n_bits,p,block", [(4, 7, 4), (5, 7, 3), (8, 15, 2), (2, 1, 5), (6, 3, 4)])
def test_pred_records_code_the_codecs_section(rng, per_channel, n_bits, p, block):
    """Vectors (shared or per channel), then with and without flags and residual blocks."""
    for shape in ((7, 9, 3), (4, 4, 1), (9, 5, 5), (12, 11, 2)):
        for kind, args in ctx_section_inputs(rng, n_bits, p, block, shape, per_channel):
            if kind == "pred":
                records, changes = V.pred_records(*args)
                section, expected_changes = ctx.encode_pred(*args)
                assert V.encode_records(records) == section
                assert (changes == expected_changes).all()


def test_records_carry_the_fields_they_were_given(rng):
    fields = {name: rng.integers(0, 1 << width, 50) for name, (_, width) in V.FIELDS.items()}
    assert all((V.unpack(V.pack(**fields))[k] == v).all() for k, v in fields.items())
    assert max(lo + w for lo, w in V.FIELDS.values()) == V.RECORD_BITS <= 64
    with pytest.raises(ValueError, match="unary_n"):
        V.pack(**{**fields, "unary_n": np.full(50, 16)})


def test_records_of_the_recommended_preset_on_ssd_codes(monkeypatch):
    """Real data: every anchor and predicted-frame section the recommended preset (ctx,
    chain, residual blocks) writes for features.10's fixture frames, played forward and
    back, is what its records code."""
    npz = np.load(f"{FIXTURES}/ssd-features.10.npz")
    codes = npz["codes_0"]
    clip = [np.ascontiguousarray(codes[i]) for i in (0, 1, 2, 1, 0, 1, 2, 1, 0, 1)]
    calls = []
    for name in ("encode_anchor", "encode_pred"):
        original = getattr(ctx, name)

        def spy(*args, _original=original, _name=name):
            out = _original(*args)
            calls.append((_name, args, out))
            return out

        monkeypatch.setattr(ctx, name, spy)
    enc = Encoder(
        CodecConfig(
            [TensorSpec("f", codes.shape[1:], float(npz["scale_0"]), int(npz["zero_point_0"]), 4)],
            **PRESETS["recommended"],
        )
    )
    for f in clip:
        enc.push([f])
    enc.flush()
    kinds = [c[0] for c in calls]
    assert kinds.count("encode_pred") >= 3 and kinds.count("encode_anchor") >= 2
    for name, args, (section, changes) in calls:
        records, got_changes = (V.anchor_records if name == "encode_anchor" else V.pred_records)(*args)
        assert V.encode_records(records) == section
        assert (got_changes == changes).all()


def test_the_docs_table_is_the_record_layout():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "fabric.md").read_text()
    block = doc.split("<!-- records:begin -->\n", 1)[1].split("<!-- records:end -->", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in block.strip().splitlines()[2:]]
    got = {}
    for bits, name, _ in rows:
        lo, _, hi = bits.strip().partition("-")
        got[name.strip().strip("`")] = (int(lo), int(hi or lo) - int(lo) + 1)
    assert got == V.FIELDS


def _zero_runs_case(rng, n, p_zero):
    fields = {name: rng.integers(0, 1 << width, n) for name, (_, width) in V.FIELDS.items()}
    fields["zero"] = (rng.random(n) < p_zero).astype(np.int64)
    for name in ("z_ctx", "s_ctx", "mag_base"):  # contexts inside the table of 459
        fields[name] = rng.integers(0, 440, n)
    return V.pack(**fields)


@pytest.mark.parametrize("p_zero", [0.0, 0.5, 0.9, 1.0])
def test_stream_words_stand_for_the_same_bins(rng, p_zero):
    """Runs of zero values go six to a run word (bit 63, the count in bits 60-62, the zero
    contexts nine bits each), other records one a word; the words' records give the same
    bins, so the same section."""
    for n in (1, 5, 6, 7, 13, 200):
        records = _zero_runs_case(rng, n, p_zero)
        words = V.words(records)
        back = V.records_of_words(words)
        assert V.encode_records(back) == V.encode_records(records)
        assert [b[:2] for b in V.record_bins(back)] == [b[:2] for b in V.record_bins(records)]
        zero = V.unpack(records)["zero"].astype(bool)
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], zero.astype(int), [0]]))))[::2]
        assert len(words) == int((~zero).sum()) + int(sum(-(-r // V.RUN_MAX) for r in runs))
        for w in (int(x) for x in words):
            if w >> V.RUN_FLAG:
                assert 1 <= (w >> V.RUN_COUNT[0]) & 7 <= V.RUN_MAX
            else:
                assert w >> V.RECORD_BITS == 0


def test_a_run_word_with_a_bad_count_is_refused():
    with pytest.raises(ValueError, match="run word of 7"):
        V.records_of_words(np.array([(1 << 63) | (7 << 60)], np.uint64))
