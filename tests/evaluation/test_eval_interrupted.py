"""``eval`` stopped part way and run again: a cache file, a report or the results file that
a kill, Ctrl-C, SIGTERM or a full disk cut short is never trusted by the rerun (computed
again, or an error naming it), nothing half-written is left, and SIGTERM stops the command
with one line and exit status 143. The writers are tested directly; nothing here runs a
model."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.evaluation.cache import Clip, ClipData
from temposplit.evaluation.harness import Harness, load_rows


def _sibling(name: str):
    """A module of this folder (the tests import in importlib mode: no package to import from)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(f"_eval_tests_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_inputs = _sibling("test_cli_inputs")  # its rows and clips
_clip, _line, _row = _inputs._clip, _inputs._line, _inputs._row

# ------------------------------------------------------------------ the caches under <out>/cache


def _clip_data(tmp_path, models=None, frames: int = 3) -> ClipData:
    """A ClipData of ``frames`` frames whose identity is fixed (no model or clip file read)."""
    data = ClipData(
        models or SimpleNamespace(model="m", detector=None),
        "c",
        tmp_path / "c.avi",
        frames,
        0,
        1,
        (0,),
        tmp_path / "cache",
        False,
        "fixed",
        32,
        lambda msg: None,
        {},
    )
    data._id = "0123456789abcdef"
    return data


def _codes(frames: int) -> dict:
    return dict(
        names=np.array(["features.3"]),
        scales=np.array([0.5]),
        zero_points=np.array([3]),
        codes0=np.full((frames, 2, 3, 4), 7, np.uint8),
    )


DAMAGE = {
    "cut short": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: bytes(range(256)) * (len(data) // 256 + 1),
}


@pytest.mark.parametrize("damage", [*DAMAGE, "another frame count"])
def test_a_damaged_m1_cache_file_is_computed_again(tmp_path, damage):
    """An M1 cache file cut short by a kill, emptied or overwritten was read as it was: a
    BadZipFile, EOFError or ValueError traceback, every rerun; one of another frame count
    would have been scored as the clip's codes. It is computed again."""
    data = _clip_data(tmp_path)
    data._clips["video"] = Clip("c", 3, (32, 48), [0, 1, 2], [[300, 300]] * 3, [[32, 48]] * 3, (300, 300))
    computed = []

    def compute(cuts):
        computed.append(list(cuts))
        np.savez(data._cache_path("features.3", "video"), **_codes(3))

    data._compute_m1 = compute
    path = data._cache_path("features.3", "video")
    path.parent.mkdir()
    if damage == "another frame count":
        np.savez(path, **_codes(5))
    else:
        np.savez(path, **_codes(3))
        path.write_bytes(DAMAGE[damage](path.read_bytes()))
    cut = data.cut_data("features.3", "video", ["features.3"])
    assert computed == [["features.3"]]
    assert cut.names == ["features.3"] and cut.codes[0].shape == (3, 2, 3, 4) and cut.scales == [0.5]
    assert data.cut_data("features.3", "video", ["features.3"]).codes[0].shape == (3, 2, 3, 4)
    assert computed == [["features.3"]]  # the good file is read, not computed a second time


class _Detector:
    """The float detector's surface that the reference uses, without a network."""

    calls = 0

    def preprocess(self, frames):
        n = len(frames)
        return SimpleNamespace(
            meta=SimpleNamespace(image_sizes=[(300, 300)] * n, orig_sizes=[(8, 8)] * n, input_size=(300, 300)), n=n
        )

    def forward(self, batch):
        from temposplit.model.detections import Detections

        _Detector.calls += 1
        return [Detections.make(np.array([[1, 1, 4, 4]], np.float32), [0.9], [1]) for _ in range(batch.n)]


def _reference_data(tmp_path):
    data = _clip_data(tmp_path, SimpleNamespace(model="m", detector=_Detector()))
    data.read = lambda: [np.zeros((8, 8, 3), np.uint8)] * 3
    return data


@pytest.mark.parametrize("damage", [*DAMAGE, "not the reference"])
def test_a_damaged_float_reference_is_computed_again(tmp_path, damage):
    """The float reference cut short, emptied or of another shape was a JSONDecodeError or
    KeyError traceback on every rerun. It is computed again, and written whole."""
    first = _reference_data(tmp_path).clip()
    (path,) = (tmp_path / "cache").glob("float-*.json")
    good = path.read_bytes()
    path.write_bytes(b'{"n_frames": 3}' if damage == "not the reference" else DAMAGE[damage](good))
    calls = _Detector.calls
    again = _reference_data(tmp_path).clip()
    assert _Detector.calls > calls
    assert again.scored == first.scored == [0, 1, 2] and len(again.reference) == 3
    assert json.loads(path.read_bytes()) == json.loads(good)


def _disk_full(monkeypatch):
    """Every write of a file's contents fails part way with ENOSPC, as a full disk does:
    a direct write (Path.write_text/write_bytes) after half its bytes, a write under a
    temporary name when it is flushed to the disk."""
    import pathlib

    def write_half(self, data, *args, **kwargs):
        with open(self, "wb") as f:
            f.write((data.encode() if isinstance(data, str) else data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_text", write_half)
    monkeypatch.setattr(pathlib.Path, "write_bytes", write_half)
    monkeypatch.setattr(os, "fsync", no_space)


def test_a_full_disk_while_the_reference_is_written_leaves_nothing_a_rerun_trusts(tmp_path, monkeypatch):
    """The float reference was written in place: a full disk left half a file (that the rerun
    then failed on). Now the error names the file and nothing is left under cache/."""
    monkeypatch.setattr(_Detector, "calls", 0)
    _disk_full(monkeypatch)
    with pytest.raises(OSError) as caught:
        _reference_data(tmp_path).clip()
    assert caught.value.errno == errno.ENOSPC and "float-m-c-" in str(caught.value.filename)
    assert list((tmp_path / "cache").iterdir()) == []


# ------------------------------------------------------------------ results.jsonl and the reports


def test_a_full_disk_while_a_cut_short_line_is_dropped_keeps_every_row(tmp_path, monkeypatch):
    """A run killed while writing a row leaves a line without its newline; the rerun dropped it
    by rewriting the whole file, so a rerun stopped in that rewrite (a full disk, a kill) lost
    every row before it. The file is truncated in place instead."""
    rows = [_row(key=f"m|c|features.13|quant||huffman|{n}", n_bits=n) for n in (4, 5, 6)]
    results = tmp_path / "results.jsonl"
    results.write_bytes(b"".join(_line(r) for r in rows) + b'{"key": "m|c|fe')
    harness = Harness(video=tmp_path / "c.avi", out=tmp_path, frames=2, log=lambda m: None)
    _disk_full(monkeypatch)
    harness._drop_partial_line()
    assert results.read_bytes() == b"".join(_line(r) for r in rows)
    assert len(load_rows(results)) == 3


def test_a_report_stopped_part_way_leaves_the_previous_tables(tmp_path, monkeypatch):
    """results.csv was opened for writing (emptied) and filled row by row: a report stopped
    part way (Ctrl-C, SIGTERM, a full disk) left a table cut short that reads as the results.
    Now the previous table stays until the new one is complete."""
    import csv

    from temposplit.evaluation.report import write_tables

    (tmp_path / "results.csv").write_text("the previous table\n")
    real = csv.writer

    class Failing:
        def __init__(self, f):
            self.w, self.n = real(f), 0

        def writerow(self, row):
            self.n += 1
            if self.n == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.w.writerow(row)

    monkeypatch.setattr(csv, "writer", Failing)
    with pytest.raises(OSError):
        write_tables([_row(), _row(key="m|c|features.13|quant||huffman|5", n_bits=5)], tmp_path)
    assert (tmp_path / "results.csv").read_text() == "the previous table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def _eval_folder(tmp_path, evals_bytes: bytes | None):
    """An output folder whose one row names a scoring file ``evals/c/e.npz`` holding ``evals_bytes``."""
    out = tmp_path / "ev"
    (out / "evals" / "c").mkdir(parents=True)
    row = _row(evals="c/e.npz", frames=4, scored_frames=4, map50_95=0.4)
    (out / "results.jsonl").write_bytes(_line(row))
    (out / "meta.json").write_text(json.dumps({"run": "r", "points": {row["key"]: "p"}, "settings": {}, "runs": []}))
    if evals_bytes is not None:
        (out / "evals" / "c" / "e.npz").write_bytes(evals_bytes)
    return out


@pytest.mark.parametrize("damage", ["cut short", "empty", "garbage"])
def test_eval_report_with_a_damaged_scoring_file(tmp_path, capsys, one_line, damage):
    """A scoring's per-frame file cut short or overwritten was an internal error (BadZipFile,
    EOFError): one line naming it, exit status 2."""
    from temposplit.evaluation.metrics import fidelity_map
    from temposplit.model.detections import Detections

    d = [Detections.make(np.array([[1, 1, 4, 4]], np.float32), [0.9], [1]) for _ in range(4)]
    images = fidelity_map(d, d).images
    good = tmp_path / "good.npz"
    np.savez_compressed(good, **images.to_npz())
    out = _eval_folder(tmp_path, DAMAGE[damage](good.read_bytes()))
    assert main(["eval-report", "--out", str(out), "--no-plots", "--replicates", "5"]) == 2
    one_line(f"{out / 'evals' / 'c' / 'e.npz'}: a damaged scoring file")


# ------------------------------------------------------------------ a stopped run's leftovers and SIGTERM


def test_a_rerun_removes_the_temporary_files_a_killed_run_left(tmp_path, monkeypatch):
    """A run killed (SIGKILL) while writing meta.json, a cache file or a scoring leaves its
    temporary file; the rerun, holding the folder's lock, removes those of dead processes
    (the ones of a live process, such as an eval-report beside it, stay)."""
    video = _clip(tmp_path / "c.avi", 90)
    out = tmp_path / "ev"
    (out / "cache").mkdir(parents=True)
    (out / "evals" / "c").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = [
        out / f".meta.json.{pid}.0a1b2c3d.tmp",
        out / "cache" / f".m1-x.npz.{pid}.0a1b2c3d.tmp",
        out / "evals" / "c" / f".e.npz.{pid}.0a1b2c3d.tmp",
    ]
    live = out / f".results.csv.{os.getpid()}.0a1b2c3d.tmp"
    for p in [*left, live]:
        p.write_bytes(b"half")
    harness = Harness(video=video, out=out, frames=2, log=lambda m: None)
    monkeypatch.setattr(Harness, "_sweep", lambda self, tasks, points, run, t0: [])
    monkeypatch.setattr(type(harness.models), "weights_id", lambda self: "w")  # no network loaded
    harness.run()
    assert not any(p.exists() for p in left) and live.exists()


SIGTERM_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
import temposplit.evaluation.report as report

def write_report(out, rows, **kw):
    Path(out, "results.csv").write_text("a table")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

report.write_report = write_report
from temposplit.cli import main
sys.exit(main(["eval-report", "--out", sys.argv[1], "--no-plots"]))
"""


def test_sigterm_stops_eval_report_with_one_line_and_status_143(tmp_path):
    """SIGTERM ended eval where it stood: no line, status -15 (no cleanup of what it was
    writing). Now it stops as Ctrl-C does: one line, exit status 143 (128 + SIGTERM)."""
    out = _eval_folder(tmp_path, None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT), str(out)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 143, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines() == ["temposplit eval-report: terminated"]


# ------------------------------------------------------------------ the report of a run stopped part way


def _planned_rows():
    """The rows of a small plan, in the sweep's order, with the keys meta.json lists for it
    (one key per coder of a point; the searched JPEG under its variant "*"), their points'
    identities, and the rows' own. 7 points: float, int8, quant at N=4 (two coders), JPEG
    q=75, the searched JPEG, H.264 and H.265."""
    f13 = "features.13"
    rows = [
        _row("m|c|None|float||None|None", cut=None, method="float", n_bits=None, bytes_per_frame=None, map50=1.0),
        _row(f"m|c|{f13}|features-8bit||None|8", method="features-8bit", n_bits=8, bytes_per_frame=9000.0, map50=0.99),
        _row(f"m|c|{f13}|quant|intra|huffman|4", variant="intra", coder="huffman", bytes_per_frame=900.0, map50=0.97),
        _row(f"m|c|{f13}|quant|intra|zrl|4", variant="intra", coder="zrl", bytes_per_frame=800.0, map50=0.97),
        _row("m|c|None|jpeg|q=75|None|None", cut=None, method="jpeg", variant="q=75", n_bits=None, map50=0.93),
        _row("m|c|None|jpeg|q=92|None|None", cut=None, method="jpeg", variant="q=92", n_bits=None, map50=0.94),
        _row("m|c|None|h264|crf=23|None|None", cut=None, method="h264", variant="crf=23", n_bits=None, map50=0.9),
        _row("m|c|None|h265|crf=23|None|None", cut=None, method="h265", variant="crf=23", n_bits=None, map50=0.9),
    ]
    point = {r["key"]: "p-" + r["key"].split("|")[3] + r["key"].split("|")[4] for r in rows}
    point["m|c|None|jpeg|q=92|None|None"] = "p-searched"
    for r in rows:
        r["point"] = point[r["key"]]
        r["bytes_per_frame"] = r["bytes_per_frame"] or (None if r["method"] == "float" else 5000.0)
    planned = {k: p for k, p in point.items() if "q=92" not in k}  # as written when the run starts
    planned["m|c|None|jpeg|*|None|None"] = "p-searched"
    return rows, planned


def _partial_folder(tmp_path, n_rows: int):
    """An eval folder of the plan above whose run stopped after its first ``n_rows`` rows."""
    rows, planned = _planned_rows()
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.jsonl").write_bytes(b"".join(_line(r) for r in rows[:n_rows]))
    settings = {
        "model": "ssd-mobilenet-v2",
        "videos": {"c": "c.avi"},
        "cuts": ["features.13"],
        "bits": [4],
        "methods": ["features-8bit", "quant", "jpeg", "h264", "h265"],
    }
    if n_rows == len(rows):  # finished: the searched JPEG's key is known and the run's timings written
        planned["m|c|None|jpeg|q=92|None|None"] = "p-searched"
    runs = [{"timings": {"sweep_s": 1.0}, "points": 7, "run": "r"}] if n_rows == len(rows) else []
    meta = {"run": "r", "points": planned, "settings": settings, "runs": runs}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize("n_rows, measured", [(0, 0), (1, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6), (8, 7)])
def test_progress_counts_the_points_of_the_plan_with_their_rows(tmp_path, n_rows, measured):
    """Two coders' rows are one point (the second missing: not measured); the searched JPEG
    counts once its row of another variant is there, before and after meta.json names it."""
    from temposplit.evaluation.harness import last_run_rows, progress

    out = _partial_folder(tmp_path, n_rows)
    points = json.loads((out / "meta.json").read_text())["points"]
    assert progress(points, last_run_rows(out)) == ({"c": (measured, 7)} if n_rows else {"c": (0, 7)})
    assert progress(None, []) is None  # a folder from before point identities


def test_the_report_of_a_stopped_run_says_it_is_partial(tmp_path, capsys):
    """eval-report on a run stopped part way said nothing of it and "H.264 none reaches it;
    H.265 none reaches it" where no H.264 or H.265 point ran, and listed their methods."""
    out = _partial_folder(tmp_path, 5)  # float, int8, quant (both coders), JPEG q=75
    assert main(["eval-report", "--out", str(out), "--no-plots", "--replicates", "0"]) == 0
    err = capsys.readouterr().err
    assert "partial: 4 of 7 planned points" in err and len(err.strip().splitlines()) == 1
    pooled, clip = (out / "report.md").read_text(), (out / "c" / "report.md").read_text()
    for md in (pooled, clip):
        assert "**Partial: 4 of 7 planned points** measured" in md.split("\n\n")[1]  # first, under the title
        assert "not measured: methods h264, h265." in md
    assert "methods features-8bit, quant, jpeg, h264 (not measured), h265 (not measured)" in pooled
    assert "H.264 none reaches it" not in clip and "H.265 none reaches it" not in clip
    assert "JPEG frames none reaches it; H.264 not measured; H.265 not measured." in clip  # JPEG ran: 0.93


def test_the_report_of_a_finished_run_says_nothing_of_it(tmp_path, capsys):
    out = _partial_folder(tmp_path, 8)
    assert main(["eval-report", "--out", str(out), "--no-plots", "--replicates", "0"]) == 0
    assert capsys.readouterr().err == ""
    for md in ((out / "report.md").read_text(), (out / "c" / "report.md").read_text()):
        assert "artial" not in md and "not measured" not in md
    assert "methods features-8bit, quant, jpeg, h264, h265." in (out / "report.md").read_text()
    assert "H.264 none reaches it; H.265 none reaches it." in (out / "c" / "report.md").read_text()  # 0.9 < 0.95


def test_the_report_says_a_torchvision_detector_has_no_input_resolution_curves(tmp_path, capsys):
    out = _partial_folder(tmp_path, 8)
    meta = json.loads((out / "meta.json").read_text())
    meta["settings"]["model"] = "fasterrcnn-mobilenet-v3-large-fpn"
    (out / "meta.json").write_text(json.dumps(meta))
    assert main(["eval-report", "--out", str(out), "--no-plots", "--replicates", "0"]) == 0
    md = (out / "report.md").read_text()
    assert "the video codecs at the clip's own size only (`fasterrcnn-mobilenet-v3-large-fpn` has no fixed" in md
