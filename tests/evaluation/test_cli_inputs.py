"""Bad input to ``eval`` and ``eval-report`` (evaluation/): a list file that is not text,
a damaged results.jsonl. One line on stderr naming the file (and the line), exit status 2,
before any work and without changing the output folder. Nothing here runs a model."""

from __future__ import annotations

import json

import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.evaluation.harness import ROW_KEYS, Harness, load_rows


def _row(key="m|c|features.13|quant||huffman|4", **fields):
    row = {k: None for k in ROW_KEYS}
    row.update(key=key, model="m", clip="c", cut="features.13", method="quant", variant="", n_bits=4)
    row.update(bytes_per_frame=100.0, mb_per_s=0.003, map50=0.5, settings={}, run="r", point="p")
    row.update(fields)
    return row


def _line(row) -> bytes:
    return (json.dumps(row) + "\n").encode()


@pytest.mark.parametrize(
    "data, line", [(b"\xff\xfe\n", 1), (b"a.mp4\n\xff.mp4\n", 2), (b"RIFF\x00\x00\n\x8e AVI binary", 2)]
)
def test_a_video_list_that_is_not_text(tmp_path, capsys, data, line, one_line):
    path = tmp_path / "clips.list"
    path.write_bytes(data)
    assert main(["eval", "--video-list", str(path), "--out", str(tmp_path / "ev"), "--quick"]) == 2
    one_line(f"{path}, line {line}: not UTF-8")
    assert not (tmp_path / "ev").exists()


DAMAGED = [
    (b"\xff\xfe\n", "line 1: not UTF-8"),
    (b'{"key": ["x"]}\n', "line 1: no clip"),
    (b'{"key": "x"}\n', "line 1: no clip, method"),
    (_line(_row()) + b"[1, 2]\n", "line 2: a JSON list"),
    (_line(_row()) + b"{broken\n" + _line(_row("k2")), "line 2: not JSON"),
    (_line(_row(key=5)), "line 1: key is 5, not text"),
    (_line(_row(clip=["c"])), "line 1: clip is ['c'], not text"),
    (_line(_row(bytes_per_frame="100")), "line 1: bytes_per_frame is '100', not a number"),
    (_line(_row(map50=True)), "line 1: map50 is True, not a number"),
    (_line(_row(settings=[1])), "line 1: settings is not an object"),
    (_line(_row()) + _line(_row("k2", evals=3)), "line 2: evals is 3, not text"),
]


@pytest.mark.parametrize("data, message", DAMAGED)
def test_eval_report_of_a_damaged_results_file(tmp_path, capsys, data, message, one_line):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.jsonl").write_bytes(data)
    with pytest.raises(ConfigError, match="a damaged results file"):
        load_rows(out / "results.jsonl")
    assert main(["eval-report", "--out", str(out), "--no-plots"]) == 2
    one_line(f"{out / 'results.jsonl'}, {message}")
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]  # no report written


@pytest.mark.parametrize("data, message", DAMAGED[:3])
def test_eval_into_a_folder_with_a_damaged_results_file_changes_nothing(
    tmp_path, capsys, monkeypatch, data, message, one_line
):
    """Resuming: refused before the run's identity, its clips or meta.json, and the file stays as it was."""
    monkeypatch.setattr(Harness, "run_id", lambda self: pytest.fail("the run started"))
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.jsonl").write_bytes(data + b'{"key": "cut sh')  # and a line cut short by a kill
    (out / "meta.json").write_text('{"run": "earlier"}')
    assert main(["eval", "--quick", "--out", str(out), "--no-plots"]) == 2
    one_line(f"{out / 'results.jsonl'}, {message}")
    assert (out / "results.jsonl").read_bytes() == data + b'{"key": "cut sh'
    assert (out / "meta.json").read_text() == '{"run": "earlier"}'


def test_a_line_cut_short_by_a_kill_is_still_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    whole = _line(_row("k1")) + _line(_row("k2"))
    for tail in (b'{"key": "k3", "clip', b"\xe2\x82", b"   "):  # cut inside a field or a UTF-8 character
        path.write_bytes(whole + tail)
        assert [r["key"] for r in load_rows(path)] == ["k1", "k2"]
    path.write_bytes(whole + b"\n\n")  # blank lines are no rows
    assert len(load_rows(path)) == 2
    path.write_bytes(whole.rstrip(b"\n"))  # a whole last row without its newline still counts
    assert len(load_rows(path)) == 2


def test_rows_of_other_runs_are_checked_too_and_then_filtered(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(_line(_row("k1", run="a")) + _line(_row("k2", run="b")))
    assert [r["key"] for r in load_rows(path, run="b")] == ["k2"]
    path.write_bytes(_line(_row("k1", run="a", frames="4")) + _line(_row("k2", run="b")))
    with pytest.raises(ConfigError, match="line 1: frames is '4'"):
        load_rows(path, run="b")


@pytest.mark.parametrize(
    "meta, message",
    [
        (b'{"run": "r", "sett', "not the JSON eval writes"),
        (b"\xff\xfe", "not the JSON eval writes"),
        (b"[1, 2]", "not the JSON object eval writes"),
        (b'{"settings": [1]}', "not the JSON object eval writes"),
        (b'{"runs": [1]}', "not the JSON object eval writes"),
    ],
)
def test_eval_report_with_a_damaged_meta_json(tmp_path, capsys, meta, message, one_line):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.jsonl").write_bytes(_line(_row()))
    (out / "meta.json").write_bytes(meta)
    assert main(["eval-report", "--out", str(out), "--no-plots"]) == 2
    one_line(f"{out / 'meta.json'}: {message}")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "results.jsonl"]  # no report written


@pytest.mark.parametrize("meta", [b'{"run": "r", "sett', b"\xff\xfe", b"[1, 2]", b'{"runs": 5}'])
def test_eval_into_a_folder_with_a_damaged_meta_json_changes_nothing(tmp_path, capsys, monkeypatch, meta, one_line):
    monkeypatch.setattr(Harness, "run_id", lambda self: pytest.fail("the run started"))
    out = tmp_path / "ev"
    out.mkdir()
    (out / "meta.json").write_bytes(meta)
    assert main(["eval", "--quick", "--out", str(out), "--no-plots"]) == 2
    one_line(f"{out / 'meta.json'}: not the JSON")
    assert (out / "meta.json").read_bytes() == meta
