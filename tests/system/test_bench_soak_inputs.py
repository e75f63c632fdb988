"""The bench and the soak read only the frames they stream from a features file (it may hold
hours of them), and the soak's bad options are one line and exit status 2, never a traceback."""

import pytest
from replays import synthetic_replay

from temposplit.host import sources
from temposplit.server import bench, soak


class Stop(Exception):
    pass


@pytest.fixture
def frames_read(monkeypatch):
    """How many frames were read from replays, and how many of their readers were left open;
    the server is never started (the test stops there)."""
    real = sources.Replay.frames
    seen = {"read": 0, "open": 0}

    def counting(self):
        seen["open"] += 1
        try:
            for f in real(self):
                seen["read"] += 1
                yield f
        finally:
            seen["open"] -= 1

    def no_server(*a, **k):
        raise Stop

    monkeypatch.setattr(sources.Replay, "frames", counting)
    monkeypatch.setattr(bench, "start_server", no_server)
    return seen


def test_the_bench_reads_only_its_frames(tmp_path, frames_read):
    features = synthetic_replay(tmp_path / "f.npz", frames=40)
    with pytest.raises(Stop):
        bench.run_bench(1, 2, features, None, None, None, str(tmp_path))
    assert frames_read == {"read": 2, "open": 0}


def test_the_soak_reads_only_its_frames(tmp_path, frames_read):
    features = synthetic_replay(tmp_path / "f.npz", frames=40)
    with pytest.raises(Stop):
        soak.run(1, 3, features, str(tmp_path / "out"))
    assert frames_read == {"read": 3, "open": 0}


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--features", "/nonexistent.npz"], "nonexistent.npz"),
        (["--frames", "0"], "--frames must be at least 1"),
        (["--streams", "-1"], "--streams must be at least 1"),
        (["--frames", "50"], "fewer than --frames 50"),
    ],
)
def test_a_bad_soak_option_is_one_line_and_status_2(tmp_path, capsys, options, said):
    argv = ["--features", synthetic_replay(tmp_path / "f.npz", frames=4), *options]
    try:
        status = soak.main(argv)
    except SystemExit as exc:  # the parser's own refusal
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    (line,) = err.strip().splitlines()  # one line: before, the parser's usage block came first
    assert line.startswith("python -m temposplit.server.soak: error: ") and said in line, err
