"""The fixed calibration set and the evaluation clips that ``temposplit fetch-data`` fetches."""

import hashlib

import numpy as np
import pytest

from temposplit.errors import ConfigError, MissingDependencyError
from temposplit.model import calibration, data


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fetched():
    if not data.have_data():
        pytest.skip("data/ is incomplete: run `make data` (temposplit fetch-data)")
    return data.data_dir()


def test_eval_clips_are_ordered_and_decode(fetched):
    clips = data.eval_clips()
    assert list(clips) == ["vtest", "cup", "box", "megamind"]
    for name, path in clips.items():
        assert path.is_file(), name
        # The gzipped clips were decompressed: PyAV decodes a real RGB frame.
        frame = next(data.read_video(path, max_frames=1, start=60))
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert frame.std() > 5, name


def test_holdout_clips_are_the_pinned_files_and_decode(fetched):
    clips = data.holdout_clips()
    assert list(clips) == ["bikes", "carphone", "bigbuckbunny"]
    for name, (_member, _rel, sha) in data.HOLDOUT_CLIPS.items():
        assert _sha(clips[name]) == sha, name
        frame = next(data.read_video(clips[name], max_frames=1, start=30))
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.std() > 5, name
    # not an evaluation clip under another name
    assert not {_sha(p) for p in clips.values()} & {_sha(p) for p in data.eval_clips().values()}


def test_calibration_sources_are_disjoint_from_the_evaluated_material(fetched):
    members = {m for _p, m, _n in data._CALIBRATION_SOURCES}
    eval_members = {m for m, _rel in data.EVAL_CLIPS.values()}
    assert not members & eval_members
    for m in members:
        assert "Megamind" not in m and "vtest" not in m and "video_annotation" not in m, m
    calib_files = data.calibration_paths()
    assert len(calib_files) == len(set(calib_files))
    evaluated = [*data.eval_clips().values(), *data.holdout_clips().values()]
    evaluated += [jpg for jpg, _ in data.labelme_frames()]
    eval_hashes = {_sha(p) for p in evaluated}
    calib_hashes = [_sha(p) for p in calib_files]
    assert len(set(calib_hashes)) == len(calib_hashes), "a calibration file appears twice"
    assert not set(calib_hashes) & eval_hashes


def test_calibration_frames_are_rgb_uint8_and_deterministic(fetched):
    frames = calibration.calibration_frames()
    sources = calibration.calibration_sources()
    assert len(frames) == len(sources) >= 32
    for f, (name, _path, _i) in zip(frames, sources, strict=True):
        assert f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3, name
        assert min(f.shape[:2]) >= 200, name
    # Colour photographs really are RGB: a red-dominated one (the apple, under warm light).
    apple = frames[[s[0] for s in sources].index("apple")]
    assert apple[..., 0].mean() > apple[..., 2].mean() + 20
    # Different sizes and contents; no two frames equal.
    assert len({f.shape for f in frames}) >= 8
    digests = {hashlib.sha256(f.tobytes()).hexdigest() for f in frames}
    assert len(digests) == len(frames)
    again = calibration.calibration_frames()
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))


def test_calibration_count_spreads_over_the_set(fetched):
    full = calibration.calibration_frames()
    eight = calibration.calibration_frames(8)
    assert len(eight) == 8
    assert np.array_equal(eight[0], full[0]) and np.array_equal(eight[-1], full[-1])
    assert len(calibration.calibration_frames(1000)) == len(full)
    with pytest.raises(ConfigError, match="positive integer"):
        calibration.calibration_frames(0)


def test_calibration_frames_never_equal_evaluated_frames(fetched):
    # Frame-level check on a subsample of every clip (the file hashes above cover the rest).
    calib = {hashlib.sha256(f.tobytes()).hexdigest() for f in calibration.calibration_frames()}
    for name, path in {**data.eval_clips(), **data.holdout_clips()}.items():
        for frame in data.read_video(path, max_frames=20, step=5):
            assert hashlib.sha256(frame.tobytes()).hexdigest() not in calib, name


def test_missing_calibration_set_is_a_typed_error(tmp_path):
    with pytest.raises(MissingDependencyError, match="make data"):
        calibration.calibration_frames(root=tmp_path)


def test_fetch_data_is_idempotent(fetched):
    before = {p: p.stat().st_mtime_ns for p in data.calibration_paths()}
    messages = []
    data.fetch_data(log=messages.append)
    assert messages and all("already" in m for m in messages), messages
    assert {p: p.stat().st_mtime_ns for p in data.calibration_paths()} == before


def test_folds_leave_each_frame_out_exactly_once():
    from temposplit.model.calibration import folds

    frames = list(range(10))
    sets = folds(frames, 3)
    assert sets == [[1, 2, 4, 5, 7, 8], [0, 2, 3, 5, 6, 8, 9], [0, 1, 3, 4, 6, 7, 9]]
    for r, s in enumerate(sets):
        assert sorted(set(frames) - set(s)) == frames[r::3]  # fold r leaves out i % 3 == r
    assert folds(frames, 1) == [frames]
    with pytest.raises(ConfigError):
        folds(frames[:2], 3)
    with pytest.raises(ConfigError):
        folds(frames, 0)
