"""``temposplit models --json`` and the CLI's error handling."""

import json

import numpy as np
import pytest

from temposplit.cli import main

pytestmark = pytest.mark.models


def test_models_json_ssd(capsys):
    assert main(["models", "--json", "--model", "ssd-mobilenet-v2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (m,) = doc["models"]
    assert m["input_size"] == [300, 300]
    by_cut = {c["cut"]: c for c in m["cuts"]}
    last = by_cut["features.18"]
    assert [t["shape"] for t in last["tensors"]] == [[576, 19, 19], [1280, 10, 10]]
    assert last["bytes_per_frame_cut_tensor"] == 128000 and last["bytes_per_frame_all"] == 128000 + 207936
    assert by_cut["features.10"]["default"] and by_cut["features.10"]["bytes_per_frame_all"] == 64 * 19 * 19
    assert sum(c["default"] for c in m["cuts"]) == 1
    for c in m["cuts"]:
        assert c["m1"]["params"] + c["m2"]["params"] == m["params"]
        assert c["m1"]["macs"] + c["m2"]["macs"] == m["macs"]
    macs = [c["m1"]["macs"] for c in m["cuts"]]
    assert macs == sorted(macs) and macs[0] > 0


def test_models_json_torchvision_small(capsys):
    assert main(["models", "--json", "--model", "retinanet-resnet50-fpn", "--input-size", "256x320"]) == 0
    (m,) = json.loads(capsys.readouterr().out)["models"]
    last = m["cuts"][-1]
    assert [t["shape"] for t in last["tensors"]] == [[512, 32, 40], [1024, 16, 20], [2048, 8, 10]]
    assert last["bytes_per_frame_cut_tensor"] == 2048 * 80


def test_user_errors_are_one_line(capsys):
    assert main(["models", "--model", "yolo"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'yolo'" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "accuracy", "--method", "kmeans"], "unknown int8 observer 'kmeans'"),
        (["models", "accuracy", "--method", "minmax+magic"], "unknown post-training method 'magic'"),
        (["models", "accuracy", "--frames", "0"], "--frames must be a positive integer"),
        (["models", "accuracy", "--paths", "int4"], "unknown path 'int4'"),
        (["models", "accuracy", "--calibration-folds", "0"], "--calibration-folds must be a positive integer"),
        (["models", "accuracy", "--video", "/nonexistent/clip.mp4"], "video /nonexistent/clip.mp4 not found"),
        (["models", "sensitivity", "--observer", "kmeans"], "unknown --observer 'kmeans'"),
        (["models", "sensitivity", "--granularity", "block"], "--granularity must be stage or point"),
        (["models", "sensitivity", "--method", "mse+magic"], "unknown post-training method 'magic'"),
        (["models", "sensitivity", "--last", "features.19"], "unknown stage 'features.19'"),
        (["models", "sensitivity", "--configs", "some"], "--configs takes only and/or all-but"),
        (["models", "recipes", "--methods", "histogram+dw16+dw16-first"], "choose one of dw16-first, dw16"),
        (["models", "recipes", "--every", "0"], "--every must be a positive integer"),
        (["models", "accuracy", "--method", "minmax+qat"], "use default+qat"),
        (["models", "qat", "--out", "x.npz", "--steps", "0"], "--steps must be a positive integer"),
        (["models", "qat", "--out", "x.npz", "--fold", "3"], "--fold must be 0, 1 or 2"),
    ],
)
def test_accuracy_and_sensitivity_refuse_bad_input_in_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_accuracy_prints_one_json_object_per_cut_and_path(capsys):
    from temposplit.model.data import have_data

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    argv = ["models", "accuracy", "--video", "cup", "--frames", "3", "--cuts", "features.3,features.6", "--json"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["cut"], r["path"]) for r in rows] == [
        ("features.3", "int8"),
        ("features.3", "cut-only-8bit"),
        ("features.6", "int8"),
        ("features.6", "cut-only-8bit"),
    ]
    for r in rows:
        assert {"cut", "path", "map50", "map50_95", "map50_frequent", "map50_95_frequent"} <= set(r)
        assert r["calibration"] == "fixed-set" and r["frames"] == 3
        assert r["map50"] is None or 0.0 <= r["map50"] <= 1.0
        # bootstrap intervals over the frames (paired resamples): none from 3 frames, too few
        for key in ("map50", "map50_95"):
            assert r[key + "_ci"] == [None, None]
        assert r["map50"] is None or r["ci_note"] == "too few frames for an interval"
        # each category with ground truth, its boxes and APs: the mean is over them
        cats = r["categories"]
        assert sum(c["boxes"] for c in cats) == r["ground_truth_boxes"]
        assert all(isinstance(c["name"], str) and c["name"] != "N/A" for c in cats)
        if cats:
            assert r["map50"] == pytest.approx(sum(c["ap50"] for c in cats) / len(cats), abs=1e-3)


def test_accuracy_on_a_clip_without_objects_is_one_line_not_a_traceback(capsys, tmp_path):
    import av

    path = tmp_path / "blank.mp4"
    with av.open(str(path), "w") as c:  # flat grey frames: the float model finds nothing
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for _ in range(4):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((240, 320, 3), 128, np.uint8), format="rgb24")))
        c.mux(s.encode(None))
    assert main(["models", "accuracy", "--video", str(path), "--frames", "3", "--cuts", "features.13", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "finds no object" in err


@pytest.mark.slow
def test_accuracy_scores_each_calibration_fold_and_labels_its_rows(capsys, monkeypatch):
    """``--calibration-folds K``: K calibrations, each on the set less a different K-th of
    its frames, one row per fold, cut and path, labelled; the float model's detections (the
    ground truth of every fold) computed once, not once per fold."""
    import numpy as np

    import temposplit.model
    from temposplit.model import quantize as q
    from temposplit.model.calibration import calibration_frames, folds
    from temposplit.model.data import have_data

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    seen, real = [], q.quantize

    def recording(det, frames, **kw):
        seen.append([np.asarray(f) for f in frames])
        return real(det, frames, **kw)

    monkeypatch.setattr(q, "quantize", recording)
    # Frames through the float model's forward (only the fidelity reference runs it: the int8
    # and cut-only paths go through the splits' M1 and M2).
    floated, real_load = [], temposplit.model.load_detector

    def counting_load(*args, **kw):
        det = real_load(*args, **kw)
        forward = det.forward

        def counting_forward(batch):
            floated.append(int(batch.tensor.shape[0]))
            return forward(batch)

        det.forward = counting_forward
        return det

    monkeypatch.setattr(temposplit.model, "load_detector", counting_load)
    argv = ["models", "accuracy", "--video", "cup", "--frames", "2", "--cuts", "features.3", "--paths", "int8"]
    argv += ["--method", "minmax", "--calibration-folds", "2", "--json"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["fold"], r["cut"], r["path"]) for r in rows] == [(0, "features.3", "int8"), (1, "features.3", "int8")]
    assert [r["calibration"] for r in rows] == ["fixed-set fold 0/2", "fixed-set fold 1/2"]
    assert sum(floated) == 2, floated  # the 2 frames once, for the 2 folds together
    expected = folds(calibration_frames(), 2)
    assert len(seen) == 2
    for got, want in zip(seen, expected, strict=True):
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.slow
def test_recipes_scores_the_int16_layer_above_plain_int8(capsys):
    """``models recipes``: one JSON row per recipe with the SQNR of each cut; keeping
    features.1's depthwise weights at 16 bits raises it (on 2 calibration frames)."""
    from temposplit.model.data import have_data

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    argv = ["models", "recipes", "--methods", "histogram,histogram+dw16-first", "--cuts", "features.3"]
    assert main([*argv, "--every", "20", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["method"] for r in rows] == ["histogram", "histogram+dw16-first"]
    assert all(r["frames"] == 2 for r in rows)
    assert rows[1]["features.3"] > rows[0]["features.3"] + 1.0


def test_accuracy_text_lines_name_their_fold():
    from temposplit.model.cli import _accuracy_line

    row = {
        "video": "cup.mp4",
        "cut": "features.3",
        "path": "int8",
        "map50": 0.9,
        "map50_95": 0.8,
        "map50_frequent": None,
    }
    assert "fold" not in _accuracy_line(row)
    assert " fold 1 " in _accuracy_line({**row, "fold": 1})
    cats = [
        {"id": 1, "name": "person", "boxes": 162, "ap50": 0.999, "ap50_95": 0.971},
        {"id": 63, "name": "couch", "boxes": 2, "ap50": 0.667, "ap50_95": 0.625},
    ]
    assert "lowest: couch 0.667 (2 boxes)" in _accuracy_line({**row, "categories": cats})


def test_spread_list_takes_frames_over_the_whole_clip():
    from temposplit.errors import ConfigError
    from temposplit.model.accuracy import spread_indices, spread_list

    frames = list(range(39))
    assert spread_list(frames, 13) == list(range(0, 39, 3))
    assert spread_list(frames, 10) == [0, 3, 7, 11, 15, 19, 23, 27, 31, 35]  # to the end, not every 39 // 10-th
    assert spread_list(frames, 100) == frames  # fewer than asked: all of them
    clip = spread_indices(270, 100)  # Megamind's frames: the old rule stopped at frame 198
    assert len(clip) == 100 and clip[-1] >= 267 and all(a < b for a, b in zip(clip, clip[1:], strict=False))
    assert spread_indices(5, 10) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="--frames must be a positive integer"):
        spread_list(frames, 0)


def test_spread_frames_reads_the_frames_it_names(tmp_path):
    """The frames spread_frames returns are the clip's frames at the indices it returns."""
    import av
    import numpy as np

    from temposplit.model.accuracy import spread_frames

    path = tmp_path / "ramp.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"qp": "0"}
        for i in range(23):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode())
    frames, indices = spread_frames(path, 5)
    assert indices == [0, 4, 9, 13, 18]
    assert [round(float(f.mean()) / 10) for f in frames] == indices


def test_sensitivity_scores_the_calibration_set_itself(monkeypatch, capsys):
    """`--videos calibration` scores the fixed set's frames (spread as a video's would be)
    and calibrates on the whole set: the study sees no evaluated frame."""
    from temposplit.model import calibration, sensitivity
    from temposplit.model.data import have_data

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    seen = {}

    def fake_study(det, clips, calibration_frames, *args, **kwargs):
        seen["clips"], seen["calibration"] = clips, calibration_frames
        return []

    monkeypatch.setattr(sensitivity, "run_study", fake_study)
    assert main(["models", "sensitivity", "--videos", "calibration", "--frames", "13", "--method", "default"]) == 0
    full = calibration.calibration_frames()
    assert list(seen["clips"]) == ["calibration"]
    scored = seen["clips"]["calibration"]
    assert len(scored) == 13 and all(np.array_equal(a, b) for a, b in zip(scored, full[::3], strict=True))
    assert len(seen["calibration"]) == len(full)
    assert "13 frames from calibration" in capsys.readouterr().err


def test_sensitivity_studies_a_clip_once_however_it_is_named(monkeypatch, capsys):
    """`--videos vtest,VTEST,data/vtest.avi,calibration,CALIBRATION`: a clip is looked up
    whatever its case, so it is deduplicated by what it reads: vtest and the calibration
    set once each, under the first name given."""
    from temposplit.model import sensitivity
    from temposplit.model.data import have_data, vtest_path

    if not have_data():
        pytest.skip("data/ is incomplete: run `make data`")
    seen = {}

    def fake_study(det, clips, *args, **kwargs):
        seen["clips"] = clips
        return []

    monkeypatch.setattr(sensitivity, "run_study", fake_study)
    videos = f"vtest,VTEST,{vtest_path()},calibration,CALIBRATION"
    assert main(["models", "sensitivity", "--videos", videos, "--frames", "2", "--threads", "1"]) == 0
    assert list(seen["clips"]) == ["vtest", "calibration"]
    assert "4 frames from vtest, calibration" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_count_frames_is_what_a_video_shows(tmp_path, suffix):
    """The announced count where the container gives one (MP4: no decoding of the whole
    clip), the decoded frames where it gives none (Matroska): the same number."""
    import av
    import numpy as np

    from temposplit.model.accuracy import count_frames

    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width, s.pix_fmt = 32, 48, "yuv420p"
        for i in range(7):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((32, 48, 3), 30 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        assert bool(c.streams.video[0].frames) == (suffix == ".mp4")
    assert count_frames(path) == 7
