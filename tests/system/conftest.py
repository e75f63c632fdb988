"""Shared fixtures of the system tests: real frames, the real SSD, a server on loopback."""

import itertools

import pytest

from temposplit.model import data


@pytest.fixture(scope="session")
def vtest_frames():
    path = data.vtest_path()
    if not path.is_file():
        pytest.skip("data/vtest.avi is not fetched (run `make data`)")
    return list(itertools.islice(data.read_video(path), 12))


@pytest.fixture(scope="session")
def edge_model(vtest_frames):
    from temposplit.host.pipeline import EdgeModel

    return EdgeModel(calibration=vtest_frames[::3])


@pytest.fixture(scope="session")
def cloud_models():
    from temposplit.server.m2 import CloudModels

    return CloudModels()


@pytest.fixture
def server(tmp_path, cloud_models):
    from temposplit.server.server import CloudServer

    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models)
    srv.start()
    yield srv
    srv.shutdown()
