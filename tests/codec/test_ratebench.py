"""``temposplit bench rate``: rate control's bytes against its target, as ratios that the
encoder's own stream gives (the whole clip's packets, the first group's, a short clip's),
and its bad input as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features
from temposplit.codec.encoder import Encoder
from temposplit.codec.ratebench import _config, measure
from temposplit.codec.synthetic import correlated_clip


@pytest.fixture
def clip_file(tmp_path):
    frames = correlated_clip(np.random.default_rng(3), 20, (16, 12, 14))
    path = tmp_path / "f.npz"
    features.save(path, features.FeatureClip(["t"], [np.stack(frames)], [0.05], [3], [4]))
    return path


def test_the_ratios_are_the_encoders_bytes_over_the_target(clip_file):
    clip = features.load(clip_file)
    [row] = measure(str(clip_file), [0.02], 30.0, 5, "recommended")
    budget = 0.02e6 / 30
    enc = Encoder(_config(clip, "recommended", 0.02, 30.0))
    stream = enc.encode([clip.frame(t) for t in range(clip.frames)])
    packets = len(stream) - len(enc.header_bytes())
    assert row["whole"] == pytest.approx(packets / (budget * 20))
    second = min(f.index for f in enc.frames if f.kind in ("key", "anchor") and f.index > 0)
    assert row["first_group_frames"] == second
    first = sum(f.packet_bytes for f in enc.frames if f.index < second)
    assert row["first_group"] == pytest.approx(first / (budget * second))
    short = Encoder(_config(clip, "recommended", 0.02, 30.0))
    short_bytes = len(short.encode([clip.frame(t) for t in range(5)])) - len(short.header_bytes())
    assert row["short_frames"] == 5 and row["short"] == pytest.approx(short_bytes / (budget * 5))


def test_the_command_prints_a_json_row_per_target(clip_file, capsys):
    assert main(["bench", "rate", str(clip_file), "--targets", "0.02,0.05", "--short", "4", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["target_mb_s"] for r in rows] == [0.02, 0.05] and all(r["frames"] == 20 for r in rows)
    assert rows[1]["whole"] < rows[0]["whole"]  # the same clip against more budget


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--targets", "0,0.1"], "positive rates"),
        (["--targets", ","], "positive rates"),
        (["--targets", "nan"], "positive rates"),
        (["--fps", "-1"], "a positive number"),
        (["--short", "0"], "in 1..1000"),
    ],
)
def test_bad_options_are_one_line(clip_file, one_line, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "rate", str(clip_file), *argv])
    assert stop.value.code == 2
    one_line("temposplit bench rate: error:", message)


def test_a_missing_or_decoded_file_is_one_line(tmp_path, clip_file, capsys, one_line):
    assert main(["bench", "rate", str(tmp_path / "none.npz")]) == 2
    one_line("temposplit bench rate: error:", "none.npz")
    clip = features.load(clip_file)
    decoded = tmp_path / "decoded.npz"
    features.save(decoded, clip, extra={"n_bits": np.full(clip.frames, 4, np.uint8)})
    assert main(["bench", "rate", str(decoded)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"temposplit bench rate: error: {decoded}: a decoded file (N-bit codes): rate control codes quint8 features"
    ]
