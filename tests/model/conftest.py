"""Shared fixtures of the model tests: real vtest.avi frames, the SSD, its int8 version."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from temposplit.model.data import have_data, labelme_frames, read_video, vtest_path  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _modest_threads():
    # Two threads at most (other builds share this machine's two cores); fewer where the
    # parallel suite gave this worker fewer (OMP_NUM_THREADS, the root conftest.py).
    torch.set_num_threads(min(2, torch.get_num_threads()))


def _need_data():
    if not have_data():
        pytest.skip("data/ is absent: run `make data` (temposplit fetch-data) for vtest.avi and the labelme frames")


@pytest.fixture(scope="session")
def vtest_frames():
    """Four consecutive real frames of vtest.avi (768x576)."""
    _need_data()
    return list(read_video(vtest_path(), max_frames=4, start=100))


@pytest.fixture(scope="session")
def labelme_paths():
    _need_data()
    return labelme_frames()


@pytest.fixture(scope="session")
def ssd():
    from temposplit.model import load_detector

    return load_detector()


@pytest.fixture(scope="session")
def ssd_int8(ssd):
    """The SSD calibrated on 16 real frames spread over vtest.avi."""
    _need_data()
    from temposplit.model.quantize import quantize

    return quantize(ssd, read_video(vtest_path(), max_frames=16, step=40, start=200))
