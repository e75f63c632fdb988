"""Video reading through PyAV and the fetched Debian data."""

import numpy as np
import pytest

from temposplit.errors import ConfigError, MissingDependencyError
from temposplit.model import data


def test_vtest_frames_are_rgb_uint8(vtest_frames):
    assert len(vtest_frames) == 4
    for f in vtest_frames:
        assert f.shape == (576, 768, 3) and f.dtype == np.uint8
    # Consecutive frames of a static camera: similar but not identical.
    diff = np.abs(vtest_frames[0].astype(int) - vtest_frames[1].astype(int))
    assert 0 < diff.mean() < 20


def test_step_start_and_max_frames(vtest_frames):
    all4 = list(data.read_video(data.vtest_path(), max_frames=4, start=100))
    stepped = list(data.read_video(data.vtest_path(), max_frames=2, step=2, start=100))
    assert np.array_equal(stepped[0], all4[0]) and np.array_equal(stepped[1], all4[2])
    assert list(data.read_video(data.vtest_path(), max_frames=0)) == []


def test_read_video_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="step must be a positive integer"):
        next(data.read_video(tmp_path / "x.avi", step=0))
    with pytest.raises(MissingDependencyError, match="not found"):
        next(data.read_video(tmp_path / "missing.avi"))


def test_labelme_boxes(labelme_paths):
    assert len(labelme_paths) == 5
    boxes = data.labelme_boxes(labelme_paths[0][1])
    assert boxes, "the first labelme frame has annotated vehicles"
    for b in boxes:
        x1, y1, x2, y2 = b.box
        assert x2 > x1 and y2 > y1
        assert b.category_id in (3, 8)  # car, truck ("track" in the files)
    img = data.read_image(labelme_paths[0][0])
    assert img.ndim == 3 and img.shape[2] == 3


def test_fetch_data_is_idempotent_when_present(labelme_paths):
    messages = []
    data.fetch_data(log=messages.append)
    assert all("already" in m for m in messages), messages
