"""``temposplit bench server``: concurrent replay edges against a server it starts; the
figures it prints are measured, and every frame is accounted for."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from temposplit.cli import main


@pytest.mark.slow
@pytest.mark.models
def test_bench_server_prints_its_figures(replay_file):
    done = subprocess.run(
        [sys.executable, "-m", "temposplit", "bench", "server", "--clients", "3", "--frames", "5"]
        + ["--features", str(replay_file), "--pace", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert (r["clients"], r["frames_per_client"], r["frames_sent"], r["paced_fps"]) == (3, 5, 15, 10.0)
    assert r["wall_s"] >= 0.4  # paced: 5 frames at 10 frames/s take at least 0.4 s
    assert r["failed_clients"] == [] and r["edge_errors"] == 0
    # The server's own records: every frame once, with detections.
    assert r["frames_with_detections"] == 15 and r["frames_with_error_record"] == 0 and r["frames_without_record"] == 0
    assert r["frames_per_s"] == pytest.approx(15 / r["wall_s"], rel=0.02)
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    assert r["server_peak_rss_mb"] > 100  # the server process holds the detector


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--clients", "0"], "at least 1"),
        (["--frames", "0"], "at least 1"),
        (["--server", "nohost"], "host:port"),
        (["--server", "127.0.0.1:9", "--out", "x"], "not with --server"),
    ],
)
def test_bench_server_checks_its_options_first(argv, message, capsys):
    assert main(["bench", "server", "--features", "/nonexistent/f.npz", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_server_that_does_not_start_is_one_line(tmp_path):
    """Its refusal was passed on with its newline: a blank line after the bench's one line."""
    from temposplit.errors import TemposplitError
    from temposplit.server.bench import start_server

    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(TemposplitError) as refused:
        start_server(afile)
    message = str(refused.value)
    assert message.startswith("the server did not start: temposplit serve: error: --out") and "\n" not in message


def test_frames_beyond_the_clip_are_refused_before_its_features_are_made(tmp_path, monkeypatch, capsys):
    """Without --features, M1 ran over the whole clip (minutes for vtest.avi) before the
    bench said the clip was too short: its frame count is read first."""
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    from temposplit.model import data

    clip = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    monkeypatch.setattr(data, "vtest_path", lambda: clip)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("features made first"))
    assert main(["bench", "server", "--frames", "5"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"temposplit bench server: error: {clip} has 3 frames, fewer than --frames 5", line


ROOT = Path(__file__).resolve().parents[2]


def _make(*args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make here")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # the Makefile's own entries, none from this shell
    done = subprocess.run(
        [make, "--no-print-directory", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_bench_fetches_the_data_first():
    """`make bench` on a fresh checkout stopped at `bench models` (the calibration set is
    incomplete): it depends on `data`, as `make test` does."""
    recipe = _make("-n", "bench").splitlines()
    fetch = [i for i, line in enumerate(recipe) if line.endswith("temposplit fetch-data")]
    bench = [i for i, line in enumerate(recipe) if "temposplit bench codec" in line]
    assert fetch and bench and fetch[0] < bench[0], recipe


def test_make_puts_no_empty_entry_on_path_before_setup(tmp_path):
    """Before `make setup` the Verilator folder is empty: PATH started with ':' (the
    current folder, where a file named like a tool would run)."""
    show = ["--eval", 'show-path: ; @echo "$$PATH"', "show-path"]
    for venv in (str(tmp_path / "no-venv"), ".venv"):
        path = _make(f"VENV={venv}", *show).strip()
        assert path and "" not in path.split(":"), path
        assert f"{venv if venv.startswith('/') else ROOT / venv}/bin" in path.split(":")
