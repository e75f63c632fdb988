"""``python -m temposplit.evaluation.baselines`` (docs/baselines.md): a bad option or input is
one line on stderr and exit status 2, as the ``temposplit`` commands say it; it was a
Python traceback (exit status 1) for --frames 0, --frames -3, --fps 0 and a missing file."""

from __future__ import annotations

import pytest

from temposplit.evaluation.baselines import main

PROG = "python -m temposplit.evaluation.baselines: error: "


def _status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's refusal (one line)
        return e.code


def _one_line(capsys, *messages):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(PROG), err
    for m in messages:
        assert m in err[0], err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--frames", "0"], "--frames: expected a frame count >= 1, not 0"),
        (["--frames", "-3"], "--frames: expected a frame count >= 1, not -3"),
        (["--frames", "two"], "--frames: expected a frame count >= 1, not 'two'"),
        (["--fps", "0"], "--fps: expected frames per second > 0"),
        (["--fps", "-10"], "--fps: expected frames per second > 0"),
        (["--fps", "nan"], "--fps: expected frames per second > 0"),
        (["--fps", "inf"], "--fps: expected frames per second > 0"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, options, message):
    assert _status([str(tmp_path / "never-read.avi"), *options]) == 2
    _one_line(capsys, message)


def test_a_missing_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nonexistent.avi"
    assert _status([str(missing), "--frames", "2"]) == 2
    _one_line(capsys, str(missing))


def test_a_folder_and_a_file_that_is_no_video_are_one_line(tmp_path, capsys):
    assert _status([str(tmp_path), "--frames", "2"]) == 2
    _one_line(capsys, str(tmp_path))
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n")
    assert _status([str(text), "--frames", "2"]) == 2
    _one_line(capsys, str(text))


def test_a_good_call_prints_the_table(tmp_path, capsys):
    """The refusals changed nothing for a good call: two frames of a tiny clip."""
    import numpy as np

    av = pytest.importorskip("av")
    path = tmp_path / "tiny.avi"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=10)
        s.height, s.width, s.pix_fmt = 48, 64, "bgr0"
        for _ in range(3):
            frame = rng.integers(0, 256, (48, 64, 3), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="bgr0")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert main([str(path), "--frames", "2", "--fps", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: 2 frames of 64x48 at 5 frames/s"
    assert any(line.startswith("| h265 | crf=") for line in out)
