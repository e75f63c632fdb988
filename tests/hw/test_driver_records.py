"""The driver's CTX records pass (``Accelerator.ctx_records``) without the RTL: what it
programs and streams, and the inputs it refuses before it touches the accelerator."""

from types import SimpleNamespace

import numpy as np
import pytest

from temposplit.codec import ctx_records as V
from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError


class _Fake:
    """Registers in a dict; the stream answers a fixed section and BITS counts it."""

    def __init__(self, section=b"\x12\x34\x56"):
        self.regs, self.streams, self.section = {}, [], section

    def write(self, offset, value):
        self.regs[offset] = value

    def read(self, offset):
        if offset == regmap.REG["STATUS"].offset:
            return regmap.pack("STATUS", DONE=1)
        if offset == regmap.REG["BITS"].offset:
            return 8 * len(self.section)
        return 0

    def stream(self, data, max_out):
        self.streams.append((data, max_out))
        return self.section


def test_records_go_out_as_stream_words_with_flags_records_and_count_in_bytes():
    rng = np.random.default_rng(2)
    records = _random_records(rng, 40)
    words = V.words(records)
    assert len(words) < len(records)  # runs of zero values share words
    t = _Fake()
    res = Accelerator(t, regmap.DEFAULT).ctx_records(records)
    assert res.data == t.section and res.changes is None
    flags = regmap.unpack("FLAGS", t.regs[regmap.REG["FLAGS"].offset])
    assert flags["RECORDS"] == 1 and flags["STORE_REF"] == 0 and flags["TEMPORAL"] == 0
    assert t.regs[regmap.REG["COUNT"].offset] == 8 * len(words)
    assert regmap.unpack("CTRL", t.regs[regmap.REG["CTRL"].offset])["MODE"] == regmap.mode("CTX")
    data, max_out = t.streams[0]
    assert np.array_equal(np.frombuffer(data, "<u8"), words)
    assert max_out >= 16 * len(records)


@pytest.mark.parametrize(
    "records,match",
    [
        (np.zeros(3, np.float64), "uint64"),
        (np.zeros(0, np.uint64), "non-empty"),
        (np.zeros((2, 2), np.uint64), "1-D"),
        (np.array([1 << V.RECORD_BITS], np.uint64), "bits set above"),
    ],
)
def test_bad_records_are_refused_before_anything_is_written(records, match):
    t = _Fake()
    with pytest.raises(AcceleratorError, match=match):
        Accelerator(t, regmap.DEFAULT).ctx_records(records)
    assert not t.regs and not t.streams


def test_a_build_without_ctx_refuses_records():
    t = _Fake()
    accel = Accelerator(t, regmap.DEFAULT)
    accel.ops.ctx = False
    with pytest.raises(AcceleratorError, match="no CTX coder"):
        accel.ctx_records(np.ones(2, np.uint64))
    assert not t.regs


# ----------------------------------------------------------------------------- slices


class _SlicedFake(_Fake):
    """A model of the fabric's sliced CTX pass: the input words dealt by their engine and
    lane tags, each lane unit's slices range-coded (``encode_records``) and sent as tagged
    words, the units' words interleaved (round robin a word each)."""

    def __init__(self, engines=3, lanes=2):
        super().__init__()
        self.engines = engines
        self.lanes = lanes

    def stream(self, data, max_out):
        self.streams.append((data, max_out))
        n = self.regs[regmap.REG["CTX_SLICES"].offset]
        words = np.frombuffer(data, "<u8")
        out = []
        for e, lane in ((e, lane) for lane in range(self.lanes) for e in range(self.engines)):
            w = words[_unit_of(words, self.engines) == e + self.engines * lane]
            ends = np.flatnonzero((w >> np.uint64(57)) & np.uint64(1)) + 1
            q = []
            for part in np.split(w, ends)[: len(ends)]:
                sec = V.encode_records(V.records_of_words(part & ~_TAG))
                for k in range(0, len(sec), 7):
                    chunk = sec[k : k + 7]
                    tag = len(chunk) | e << 3 | (k + 7 >= len(sec)) << 5 | lane << 6
                    q.append(chunk.ljust(7, b"\0") + bytes([tag]))
            out.append(q)
        res = []
        while any(out):
            for q in out:
                if q:
                    res.append(q.pop(0))
        self.out = b"".join(res)
        self.bits = 8 * sum(t[7] & 7 for t in res)
        assert n >= 2
        return self.out

    def read(self, offset):
        if offset == regmap.REG["BITS"].offset:
            return self.bits
        return super().read(offset)


_TAG = np.uint64(0xF << 56)  # an input word's lane (56), last (57) and engine (58-59) bits


def _unit_of(words, engines=3):
    """The lane unit an input word is tagged for: engine + E x lane."""
    return ((words >> np.uint64(58)) & np.uint64(3)) + np.uint64(engines) * ((words >> np.uint64(56)) & np.uint64(1))


def _random_records(rng, n):
    """Random records of the kind the codec makes (the driver refuses others): contexts that
    exist, its magnitude steps, a suffix of up to 8 bits after 14 unary bins only, and an
    ``m`` its unary bins and suffix can say."""
    f = {name: rng.integers(0, 1 << width, n) for name, (_, width) in V.FIELDS.items()}
    unary_n = rng.integers(0, 15, n)
    suffix_w = np.where(unary_n == 14, rng.integers(0, 9, n), 0)
    f.update(
        z_ctx=rng.integers(0, 400, n),
        s_ctx=rng.integers(0, 400, n),
        mag_base=rng.integers(0, 400, n),
        mag_step=rng.choice([1, 4, 5], n),
        unary_n=unary_n,
        suffix_w=suffix_w,
        m=np.minimum(f["m"] % (14 + (1 << suffix_w)), 255),
    )
    return V.pack(**f)


@pytest.mark.parametrize("s", [2, 3, 5, 7, 13])
def test_slices_round_trip_through_a_model_of_the_fabric(s):
    rng = np.random.default_rng(s)
    slices = [_random_records(rng, int(rng.integers(1, 60))) for _ in range(s)]
    t = _SlicedFake()
    res = Accelerator(t, regmap.DEFAULT).ctx_records(slices)
    assert res.sections == [V.encode_records(r) for r in slices]
    assert t.regs[regmap.REG["CTX_SLICES"].offset] == s
    assert t.regs[regmap.REG["COUNT"].offset] == 8 * sum(len(V.words(r)) for r in slices)
    words = np.frombuffer(t.streams[0][0], "<u8")
    # each slice's words in order, tagged with its unit i mod 6 (engine v mod 3, lane v div 3)
    # and its last word flagged
    for v in range(min(6, s)):
        mine = words[_unit_of(words) == v]
        want = np.concatenate([V.words(slices[i]) for i in range(v, s, 6)])
        assert np.array_equal(mine & ~_TAG, want)
        assert ((mine >> np.uint64(57)) & np.uint64(1)).sum() == len(range(v, s, 6))


@pytest.mark.parametrize("lanes", [1, 2])
def test_deal_sends_the_word_of_the_unit_with_the_fewest_bins(lanes):
    from temposplit.hw.driver import deal_slices, word_bins

    rng = np.random.default_rng(4)
    units = 3 * lanes
    slice_words = [V.words(_random_records(rng, 50)) for _ in range(units)]
    dealt = deal_slices(slice_words, 3, lanes)
    sent = [0] * units
    unit = _unit_of(dealt).astype(int)
    assert set(unit.tolist()) == set(range(units))
    for k, w in enumerate(dealt):
        v = int(unit[k])
        waiting = set(unit[k:].tolist())  # the units with words still to send
        assert sent[v] == min(sent[x] for x in waiting), "a word of a unit that had more bins sent"
        sent[v] += int(word_bins(np.array([w & ~_TAG]))[0])
    assert sent == [int(word_bins(w).sum()) for w in slice_words]


def test_word_bins_count_the_records_bins():
    from temposplit.hw.driver import word_bins

    rng = np.random.default_rng(5)
    for _ in range(5):
        r = _random_records(rng, 80)
        zero = V.pack(**{name: [0] for name in V.FIELDS} | {"zero": [1], "z_ctx": [7]})[0]
        r[rng.random(80) < 0.6] = zero  # runs of zero values
        assert int(word_bins(V.words(r)).sum()) == sum(1 for _ in V.record_bins(r))


def test_a_single_slice_list_is_the_plain_pass():
    rng = np.random.default_rng(6)
    records = _random_records(rng, 20)
    t = _Fake()
    res = Accelerator(t, regmap.DEFAULT).ctx_records([records])
    assert res.sections == [t.section]
    assert t.regs[regmap.REG["CTX_SLICES"].offset] == 1
    assert np.array_equal(np.frombuffer(t.streams[0][0], "<u8"), V.words(records))


@pytest.mark.parametrize(
    "slices,match",
    [
        ([], "at least one slice"),
        ([np.ones(2, np.uint64)] * 33, "CTX_SLICES allows"),
        ([np.ones(2, np.uint64), np.zeros(0, np.uint64)], "non-empty"),
        ([np.ones(2, np.uint64), np.ones(2, np.int64)], "uint64"),
    ],
)
def test_bad_slices_are_refused_before_anything_is_written(slices, match):
    t = _SlicedFake()
    with pytest.raises(AcceleratorError, match=match):
        Accelerator(t, regmap.DEFAULT).ctx_records(slices)
    assert not t.regs and not t.streams


def test_malformed_tagged_output_is_an_error():
    from temposplit.hw.driver import split_slices

    word = (b"\x01" * 7) + bytes([1 | 0 << 3 | 1 << 5])
    assert split_slices(word, 1, 3) == [b"\x01"]
    with pytest.raises(AcceleratorError, match="did not end"):
        split_slices(word, 2, 3)
    # two lanes: unit v = engine + 3 x lane holds slices v, v + 6, ...; bytes k + 1 for unit k
    units = [(b"\x00" * 7) + bytes([1 | (v % 3) << 3 | 1 << 5 | (v // 3) << 6]) for v in range(6)]
    tagged = [bytes([v + 1]) + u[1:] for v, u in enumerate(units)]
    out = b"".join(tagged[v] for v in (4, 0, 5, 1, 3, 2)) + tagged[0]  # any order; unit 0 twice
    assert split_slices(out, 7, 3, 2) == [bytes([v % 6 + 1]) for v in range(7)]
    with pytest.raises(AcceleratorError, match="malformed"):
        split_slices(tagged[4], 5, 3, 1)  # a lane the build lacks
    with pytest.raises(AcceleratorError, match="malformed"):
        split_slices((b"\0" * 7) + bytes([0]), 1, 3)
    with pytest.raises(AcceleratorError, match="whole tagged words"):
        split_slices(b"\0" * 5, 1, 3)


# ----------------------------------------------------------------------------- passes over COUNT


class _FabricModel(_SlicedFake):
    """The default build as ``FabricEngine`` probes it, its CTX passes of value records
    modelled (one slice: the plain section; several: :class:`_SlicedFake`); any other pass
    (LOAD_REF) answers an empty word. ``passes`` keeps each records pass's COUNT and S."""

    def __init__(self):
        super().__init__()
        self.passes = []

    def read(self, offset):
        answers = {"ID": regmap.ID_MAGIC, "PARAMS": regmap.DEFAULT.params_word()}
        name = next(r.name for r in regmap.REGISTERS if r.offset == offset)
        return answers[name] if name in answers else super().read(offset)

    def stream(self, data, max_out):
        reg = self.regs.get
        if regmap.unpack("CTRL", reg(regmap.REG["CTRL"].offset))["MODE"] != regmap.mode("CTX"):
            return b""
        n = reg(regmap.REG["CTX_SLICES"].offset)
        self.passes.append((reg(regmap.REG["COUNT"].offset), n))
        if n > 1:
            return super().stream(data, max_out)
        self.section = V.encode_records(V.records_of_words(np.frombuffer(data, "<u8")))
        self.bits = 8 * len(self.section)
        return self.section


def _slice_words(q_n, slices, n_bits, z_n):
    """Each slice's stream words of an intra anchor's records."""
    from temposplit.codec import ctx

    return [
        V.words(V.anchor_records(q_n[..., c0:c1], None, None, n_bits, z_n)[0]).size
        for c0, c1 in ctx.slice_bounds(q_n.shape[2], slices)
    ]


@pytest.mark.parametrize("over", [False, True])
def test_a_ctx_key_over_one_records_pass_takes_several_or_falls_back_byte_identical(over, monkeypatch):
    """A KEY whose slices' records exceed one CTX pass (COUNT's 26 bits: 8.4 M words, e.g. a
    200x272x256 KEY; here the limit made small) is coded in several passes, each within the
    limit; a slice over it alone (``over``) is coded in software. The stream is the software
    encoder's, byte for byte."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, TensorSpec
    from temposplit.codec.quantize import lut, zero_point_n
    from temposplit.hw.backend import FabricEngine

    rng = np.random.default_rng(8)
    frame = rng.integers(0, 60, (12, 8, 8), dtype=np.uint8)  # (C, H, W), as M1 gives
    frame[rng.random(frame.shape) < 0.5] = 0
    config = CodecConfig(
        tensors=[TensorSpec("t", frame.shape, 0.05, 0, block=2)],
        ctx_slices=3,
        **dict(PRESETS["recommended"], structure="uni-2"),
    )
    q_n = lut(0, config.n_bits)[frame.transpose(1, 2, 0)]
    words = _slice_words(q_n, 3, config.n_bits, zero_point_n(0, config.n_bits))
    limit = max(words) - 1 if over else max(words)  # no two slices fit one pass either way
    assert sum(sorted(words)[:2]) > limit
    monkeypatch.setattr(regmap, "CTX_MAX_WORDS", limit)
    t = _FabricModel()
    engine = FabricEngine(Accelerator(t))
    assert Encoder(config, engine=engine).encode([[frame]]) == Encoder(config).encode([[frame]])
    fabric = [w for w in words if w <= limit]
    assert sorted(count // 8 for count, _ in t.passes) == sorted(fabric)
    assert engine.passes["CTX (records)"] == len(fabric) >= 2
    assert engine.fallbacks == ({"ctx slice over a CTX pass": 1} if over else {})


def test_a_ctx_predicted_frame_over_one_records_pass_takes_several_byte_identical(monkeypatch):
    """A predicted frame's four slices, in one pass under COUNT's real limit, in several
    (each within the limit, no fallback) when about half their words fill one: the
    software engine's sections and change map."""
    from temposplit.codec.encoder import SoftwareEngine
    from temposplit.hw.backend import FabricEngine

    rng = np.random.default_rng(9)
    shape, block, p, n_bits = (8, 8, 16), 2, 3, 5
    pred = rng.integers(0, 32, shape, dtype=np.uint8)
    recon = np.where(rng.random(shape) < 0.7, pred, rng.integers(0, 32, shape)).astype(np.uint8)
    dref = rng.integers(-1, 2, shape).astype(np.int8)
    mvs = rng.integers(-p, p + 1, (4, 4, 1, 2)).astype(np.int8)
    flags = rng.random((4, 4)) < 0.6
    tensor = SimpleNamespace(name="t", zero_point=0, block=block)
    args = (tensor, mvs, p, flags, pred, recon, dref, n_bits, 4)
    want = SoftwareEngine().ctx_pred_sections(*args)
    t = _FabricModel()
    engine = FabricEngine(Accelerator(t))
    got = engine.ctx_pred_sections(*args)
    [(count, slices)] = t.passes  # one pass of the four slices
    assert slices == 4 and got[0] == want[0]
    t.passes.clear()
    limit = count // 16 + 1  # about half the words
    monkeypatch.setattr(regmap, "CTX_MAX_WORDS", limit)
    got = engine.ctx_pred_sections(*args)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert len(t.passes) >= 2 and not engine.fallbacks
    assert all(c // 8 <= limit for c, _ in t.passes) and sum(c for c, _ in t.passes) == count
    assert engine.passes["CTX (records)"] == 1 + len(t.passes)
