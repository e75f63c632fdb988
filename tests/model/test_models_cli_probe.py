"""`temposplit models ...` with empty, repeated and bad option values (a probe's findings):
each refused in one line before any model loads, or a repeat studied once."""

from __future__ import annotations

import pytest

import temposplit.model as model_pkg
from temposplit.cli import main
from temposplit.model import cuts as cut_table


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(model_pkg, "load_detector", refuse)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["models", "accuracy", "--frames", "2", "--paths", ""], "--paths names nothing"),
        (["models", "accuracy", "--frames", "2", "--paths", ","], "--paths names nothing"),
        (["models", "accuracy", "--frames", "2", "--video", ""], "the video is empty"),
        (["models", "sensitivity", "--frames", "2", "--videos", "calibration", "--only", ","], "--only names nothing"),
        (["models", "recipes", "--cuts", ""], "--cuts names nothing"),
        (["models", "recipes", "--methods", ","], "--methods names nothing"),
        (["models", "export-m1", "--out", ""], "--out is empty"),
        (["models", "export-m1", "--out", "m1.npz", "--cut", ""], "--cut is empty"),
        (["models", "export-m1", "--out", "m1.npz", "--model", " "], "--model is empty"),
    ],
)
def test_empty_value_is_refused_in_one_line(argv, said, no_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert list(tmp_path.iterdir()) == []


class _Det:
    name = cut_table.SSD

    def get_cut(self, cut=None):
        return cut_table.get_cut(cut_table.SSD, cut)


def test_accuracy_studies_a_repeated_cut_once(monkeypatch, capsys):
    import temposplit.model.accuracy as accuracy
    import temposplit.model.calibration as calibration
    import temposplit.model.quantize as quantize

    studied = []
    monkeypatch.setattr(model_pkg, "load_detector", lambda *a, **k: _Det())
    monkeypatch.setattr(accuracy, "spread_frames", lambda video, n: ([object()] * n, list(range(n))))
    monkeypatch.setattr(calibration, "calibration_frames", lambda *a: [object()] * 4)
    monkeypatch.setattr(accuracy, "float_reference", lambda det, frames: [])
    monkeypatch.setattr(accuracy, "reference_boxes", lambda ref: 1)
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: None)
    monkeypatch.setattr(accuracy, "cut_ranges", lambda det, subset, cuts: {})
    monkeypatch.setattr(accuracy, "cut_accuracy", lambda det, q, frames, cuts, *a, **k: studied.append(cuts))
    video = "vtest"
    monkeypatch.setattr("temposplit.model.cli._video_arg", lambda text: text)
    argv = ["models", "accuracy", "--video", video, "--frames", "2", "--threads", "1", "--paths", "int8,int8"]
    # features.10 twice, and once more by its name with spaces: one row per cut
    assert main([*argv, "--cuts", "features.10, features.10,features.3,features.10"]) == 0
    assert studied == [["features.10", "features.3"]]


def test_names_keep_the_first_of_repeats():
    from temposplit.model.cli import _names

    assert _names("a, b,a,,b ,c", "--x") == ["a", "b", "c"]
    assert _names(None, "--x") is None


def test_accuracy_refuses_more_frames_than_it_can_hold_before_the_model_loads(no_model, monkeypatch, capsys):
    """The study holds its frames decoded: `--frames 100000` of a long clip asked for hundreds
    of GB (vtest's 795 frames alone are 1.05 GB). Over the study's bound (here lowered to
    100 MB, three of vtest's frames) it is one line naming the most it can take."""
    import temposplit.model.accuracy as accuracy
    from temposplit.model import data

    if not data.have_data():
        pytest.skip("needs vtest.avi (make data)")
    monkeypatch.setattr(accuracy, "MAX_STUDY_BYTES", 100 << 20)
    assert main(["models", "accuracy", "--video", "vtest", "--frames", "100", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "100 frames of 768x576 take 0.1 GB decoded" in err[0], err
    assert f"give at most {(100 << 20) // (768 * 576 * 3)} frames" in err[0]
