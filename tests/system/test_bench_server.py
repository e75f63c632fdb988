"""``temposplit bench server``: concurrent replay edges against a server it starts; the
figures it prints are measured, and every frame is accounted for."""

import json
import subprocess
import sys

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
