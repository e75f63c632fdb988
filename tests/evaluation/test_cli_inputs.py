"""Bad input to ``eval`` and ``eval-report`` (evaluation/): a list file that is not text,
a damaged results.jsonl. One line on stderr naming the file (and the line), exit status 2,
before any work and without changing the output folder. Nothing here runs a model."""

from __future__ import annotations

import json
import re

import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.evaluation.harness import ROW_KEYS, Harness, load_rows


def _row(key="m|c|features.13|quant||huffman|4", **fields):
    row = {k: None for k in ROW_KEYS}
    row.update(key=key, model="m", clip="c", cut="features.13", method="quant", variant="", n_bits=4)
    row.update(frames=40, scored_frames=40)
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
    (_line(_row(frames=None)), "line 1: frames is None, not a count of frames"),
    (_line(_row(scored_frames=2.5)), "line 1: scored_frames is 2.5, not a count of frames"),
    (_line(_row(frames=-1)), "line 1: frames is -1, not a count of frames"),
    (_line({k: v for k, v in _row().items() if k != "scored_frames"}), "line 1: scored_frames is None"),
    (_line(_row()) + _line(_row("k2", evals=3)), "line 2: evals is 3, not text"),
    # numbers eval never writes (it writes NaN and infinities as null)
    (_line(_row(map50=float("inf"))), "line 1: map50 is inf, not a finite number"),
    (_line(_row(map50_95=float("nan"))), "line 1: map50_95 is nan, not a finite number"),
    (_line(_row(mb_per_s=float("-inf"))), "line 1: mb_per_s is -inf, not a finite number"),
    (_line(_row(bytes_per_frame=-5)), "line 1: bytes_per_frame is -5, below zero"),
    (_line(_row()) + _line(_row("k2", seconds=-0.5)), "line 2: seconds is -0.5, below zero"),
    (_line(_row(map50=1.5)), "line 1: map50 is 1.5, outside 0..1"),
    (_line(_row(labelme_map50=-0.1)), "line 1: labelme_map50 is -0.1, outside 0..1"),
    (_line(_row(n_bits=12)), "line 1: n_bits is 12, outside 2..8"),
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


# ------------------------------------------------------------------ the output folder and the clips


def _clip(path, value: int, frames: int = 3):
    """A small video whose pixels are all ``value``: two calls with other values give two
    files of the same name and size (raw video, no compression)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("rawvideo", rate=10)
        s.height, s.width, s.pix_fmt = 32, 48, "yuv420p"
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((32, 48, 3), value, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_another_file_of_the_same_name_and_size_is_another_clip(tmp_path, monkeypatch):
    """A clip's points and caches are named by its content, not its name and size alone
    (a clip of the same name and size was taken as already done: the other's rows)."""
    from temposplit.evaluation.cache import Models
    from temposplit.evaluation.harness import Harness

    monkeypatch.setattr(Models, "weights_id", lambda self: "w")  # no network loaded
    a, b = _clip(tmp_path / "a.avi", 40), tmp_path / "b" / "a.avi"
    b.parent.mkdir()
    _clip(b, 200)
    assert a.stat().st_size == b.stat().st_size
    ha, hb = (Harness(video=v, out=tmp_path / "ev", frames=2, log=lambda m: None) for v in (a, b))
    assert ha.point_id("a", None) != hb.point_id("a", None)
    assert ha.clips()["a"].clip_id() != hb.clips()["a"].clip_id()
    same = Harness(video=a, out=tmp_path / "ev", frames=2, log=lambda m: None)
    assert same.point_id("a", None) == ha.point_id("a", None)


def test_a_second_eval_on_the_same_out_is_refused_while_one_runs(tmp_path, capsys, one_line):
    import fcntl

    out = tmp_path / "ev"
    out.mkdir()
    video = _clip(tmp_path / "c.avi", 90)
    with open(out / ".lock", "a") as held:  # what a running eval holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["eval", "--video", str(video), "--out", str(out), "--quick"]) == 2
    one_line(f"another eval is running on --out {out}")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written beside it


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--video", "/nonexistent/clip.avi"], "no such video"),
        (["--video", "{tmp}/c.avi", "--video", "{tmp}/c.avi", "--out", "{tmp}/file"], "is a file, not a folder"),
    ],
)
def test_a_refused_eval_makes_no_output_folder(tmp_path, capsys, one_line, argv, message):
    _clip(tmp_path / "c.avi", 90)
    (tmp_path / "file").write_text("not a folder")
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "ev" / "x")]
    assert main(["eval", *argv, *out, "--quick"]) == 2
    one_line(message)
    assert not (tmp_path / "ev").exists() and (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.parametrize(
    "stem",
    ["cache", "Evals", ".lock", "report.md", "results.jsonl", "Results.csv", "results.json", "bdrate.csv", "meta.json"]
    + ["notes.md"],
)
def test_a_clip_named_as_one_of_evals_own_entries_is_refused(tmp_path, capsys, one_line, stem):
    """<out>/<clip>/ holds a clip's report: a clip named cache, evals or .lock would write
    it into eval's caches or over its lock file; one named as a file eval writes at the top
    of --out (report.md.avi is the clip report.md) broke the folder at the report."""
    video = _clip(tmp_path / f"{stem}.avi", 90)
    assert main(["eval", "--video", str(video), "--out", str(tmp_path / "ev"), "--quick"]) == 2
    one_line(f"a clip named {stem.lower()!r} would share --out with eval's own files")
    assert not (tmp_path / "ev").exists()


def test_a_clip_name_holding_a_bar_is_refused_before_anything_is_made(tmp_path, capsys, one_line):
    """'|' separates the fields of a row's key: a clip named a|b failed with "internal error:
    KeyError" after making --out."""
    video = _clip(tmp_path / "a|b.avi", 90)
    assert main(["eval", "--video", str(video), "--out", str(tmp_path / "ev"), "--quick"]) == 2
    one_line("a clip named 'a|b' holds '|', which separates the fields of a row's key")
    assert not (tmp_path / "ev").exists()
    with pytest.raises(ConfigError, match=re.escape("a clip named 'x|y' holds '|'")):
        Harness(video={"x|y": video}, out=tmp_path / "ev").videos()


def test_video_lists_from_a_pipe_with_a_hash_in_a_path_and_the_same_file_twice(tmp_path):
    """A list read from a pipe (<(...)); # starts a comment only at a line's start or after
    a space; the same file given twice is one clip; a folder is said to be one."""
    import os
    import threading

    from temposplit.evaluation.harness import read_video_list, resolve_videos

    hashed = tmp_path / "take#2"
    hashed.mkdir()
    fifo = tmp_path / "list.fifo"
    os.mkfifo(fifo)
    text = f"# clips\n{hashed}/a.avi  # the second take\n{hashed}/a.avi\n"
    writer = threading.Thread(target=lambda: fifo.write_text(text))
    writer.start()
    listed = read_video_list(fifo)
    writer.join()
    assert listed == [hashed / "a.avi", hashed / "a.avi"]
    assert resolve_videos(listed) == {"a": hashed / "a.avi"}
    with pytest.raises(ConfigError, match="is a folder, not a list file"):
        read_video_list(tmp_path)


def test_eval_report_when_results_jsonl_is_a_folder(tmp_path, capsys, one_line):
    (tmp_path / "ev" / "results.jsonl").mkdir(parents=True)
    assert main(["eval-report", "--out", str(tmp_path / "ev")]) == 2
    one_line("results.jsonl is a folder, not the results file eval writes")


def test_an_empty_out_or_dest_is_refused(tmp_path, capsys, one_line, monkeypatch):
    """--out "" wrote into the current folder."""
    monkeypatch.chdir(tmp_path)
    video = _clip(tmp_path / "c.avi", 90)
    assert main(["eval", "--video", str(video), "--out", "", "--quick"]) == 2
    one_line("--out is empty")
    assert main(["eval-report", "--out", ""]) == 2
    one_line("--out is empty")
    assert main(["eval-report", "--out", str(tmp_path / "ev"), "--dest", ""]) == 2
    one_line("--dest is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.avi"]


def test_eval_report_into_a_dest_that_is_a_file(tmp_path, capsys, one_line):
    """--dest FILE said only "FILE: File exists"."""
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.jsonl").write_bytes(_line(_row()))
    (tmp_path / "afile").write_text("mine")
    assert main(["eval-report", "--out", str(out), "--dest", str(tmp_path / "afile"), "--no-plots"]) == 2
    one_line(f"--dest {tmp_path / 'afile'} is a file, not a folder")
    assert main(["eval-report", "--out", str(out), "--dest", str(tmp_path / "afile" / "x"), "--no-plots"]) == 2
    one_line(f"{tmp_path / 'afile'} is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["results.jsonl"]


@pytest.mark.parametrize("option", ["--min-size", "--max-size"])
@pytest.mark.parametrize(
    "value, message",
    [("100000", "expected a size in pixels in 32..4096"), ("31", "expected a size in pixels in 32..4096")]
    + [("0", "expected a positive integer")],
)
def test_the_torchvision_resize_sides_are_bounded(capsys, one_line, option, value, message):
    """--min-size 100000 was an internal error (90 GB allocated): bounded as `models --input-size`."""
    try:
        status = main(["eval", "--model", "fasterrcnn-mobilenet-v3-large-fpn", option, value, "--out", "/none/x"])
    except SystemExit as e:  # argparse's refusal
        status = e.code
    assert status == 2
    one_line(f"{option}: {message}, not {value}")


@pytest.mark.parametrize("crfs", [",", " , ", ""])
def test_crfs_that_name_no_value_are_refused(tmp_path, capsys, crfs):
    # Before, "--crfs ," parsed as no list and ran the default crf values.
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--crfs", crfs, "--out", str(tmp_path / "ev"), "--quick"])
    assert stop.value.code == 2 and "expected integers such as 13,23,33" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
