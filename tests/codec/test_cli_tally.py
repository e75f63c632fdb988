"""``temposplit encode`` keeps running totals, not a record per frame: Encoder.frames held an
EncodedFrame (and its motion vectors) for every frame of the clip, ~740 bytes a frame beyond
the input. Its summary, ``--stats`` and the rate warning are what the records say."""

from __future__ import annotations

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features
from temposplit.codec.encoder import Encoder
from temposplit.codec.synthetic import correlated_clip

FRAMES = 40


@pytest.fixture
def feature_file(tmp_path):
    rng = np.random.default_rng(0)
    a = np.stack(correlated_clip(rng, FRAMES, (8, 12, 12)))
    b = np.stack(correlated_clip(rng, FRAMES, (4, 6, 6)))
    path = tmp_path / "f.npz"
    features.save(str(path), features.FeatureClip(["a", "b"], [a, b], [0.1, 0.2], [0, 3], [4, None]))
    return path


@pytest.fixture
def spy(monkeypatch):
    """Every record the encoder makes, and the most Encoder.frames held at a push."""
    seen = {"records": [], "held": 0}
    record, push = Encoder._record, Encoder.push

    def _record(self, *args, **kwargs):
        record(self, *args, **kwargs)
        seen["records"].append(self.frames[-1])

    def _push(self, frame):
        seen["held"] = max(seen["held"], len(self.frames))
        return push(self, frame)

    monkeypatch.setattr(Encoder, "_record", _record)
    monkeypatch.setattr(Encoder, "push", _push)
    return seen


def _expected(records, names) -> list[str]:
    """encode's --stats lines, from every record."""
    lines = []
    for kind in ("key", "anchor", "pred"):
        of_kind = [e for e in records if e.kind == kind]
        if of_kind:
            n, total = len(of_kind), sum(e.packet_bytes for e in of_kind)
            per = ", ".join(f"{x} {sum(e.tensor_bytes[i] for e in of_kind) / n:.0f}" for i, x in enumerate(names))
            lines.append(f"  {kind}: {n} frames, {total} bytes ({total / n:.0f} per frame; per tensor: {per})")
    return lines


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--preset", "thesis"],
        ["--structure", "bi-5", "--coder", "huffman", "--refresh", "2"],
        ["--rate", "0.01"],
        ["--structure", "intra"],
    ],
)
def test_encode_holds_no_record_per_frame_and_reports_every_frame(feature_file, tmp_path, capsys, spy, options):
    out = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(out), "--stats", *options]) == 0
    assert spy["held"] <= 1  # the newest record at most, whatever the clip's length
    records = spy["records"]
    assert sorted(e.index for e in records) == list(range(FRAMES))
    lines = capsys.readouterr().out.strip().splitlines()
    total = sum(e.packet_bytes for e in records)
    assert lines[0].startswith(f"{FRAMES} frames, {total} bytes of packets")
    assert f"{total / FRAMES:.0f} per frame" in lines[0]
    assert lines[1:] == _expected(records, ["a", "b"])


def test_the_rate_warning_names_what_the_anchors_were_coded_at(feature_file, tmp_path, capsys, spy):
    """Out of reach, every anchor at the ladder's floor: the warning blames the ladder."""
    out = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(out), "--rate", "1e-9", "--fps", "10"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert {e.n_bits for e in spy["records"] if e.kind != "pred"} == {4}
    assert len(err) == 1 and "down to N = 4 and the longest group --structure allows" in err[0], err


def test_the_rate_warning_reads_the_anchors_n_from_the_totals():
    """With Encoder.frames trimmed, rate_miss takes the anchors' N from the running totals."""
    from temposplit.codec.cli import rate_miss
    from temposplit.codec.encoder import CodecConfig, TensorSpec

    spec = TensorSpec("t", (4, 8, 8), 0.1, 3, 4)
    enc = Encoder(CodecConfig([spec], structure="uni-4", rate_target=1.0, ladder=[(6, 1), (4, 4)]))
    assert enc.frames == []
    assert "chose N = 5, 6 for some groups" in rate_miss(enc, {4, 6, 5})
    assert "down to N = 4" in rate_miss(enc, {4})
