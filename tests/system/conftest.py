"""Shared fixtures of the system tests: real frames, the real SSD, a server on loopback."""

import itertools
import sys
from pathlib import Path

import pytest

# The tests import their helpers beside them (``rawclient``); --import-mode=importlib adds
# no test folder to sys.path.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

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


@pytest.fixture(scope="session")
def replay_file(tmp_path_factory, edge_model, vtest_frames):
    """A feature file (``temposplit features``) of 8 vtest frames through the session's M1."""
    from temposplit.host.features import write_features

    path = tmp_path_factory.mktemp("replay") / "vtest8.npz"
    write_features(str(path), edge_model, vtest_frames[:8], fps=10.0)
    return path


@pytest.fixture(scope="session")
def coded_stream(edge_model, vtest_frames):
    """A real stream made without the Edge (for clients that misbehave on purpose): the
    stream header's bytes and 8 frames' packets, in decode order, as bytes."""
    from temposplit.codec.encoder import CodecConfig
    from temposplit.host.backends import make_encoder

    cuts = [edge_model.m1([f])[0] for f in vtest_frames[:8]]
    config = CodecConfig(
        tensors=edge_model.tensor_specs(cuts[0]),
        model_id=edge_model.model,
        cut_id=edge_model.cut.name,
        model_hash=edge_model.model_hash(cuts[0]),
        n_bits=4,
        structure="bi-3",
        coder="huffman",
        fps=10.0,
    )
    enc = make_encoder("golden", config)
    enc.set_total_frames(len(cuts))
    packets = [p for cut in cuts for p in enc.push([t.codes for t in cut])] + list(enc.flush())
    return enc.header_bytes(), [p.to_bytes() for p in packets]


@pytest.fixture
def make_server(tmp_path, cloud_models):
    """``make(**options)``: a CloudServer on loopback with the session's models, started;
    every one made is shut down after the test."""
    from temposplit.server.server import CloudServer

    made = []

    def make(**kwargs):
        srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models, **kwargs)
        srv.start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.shutdown()


@pytest.fixture
def peer():
    """``peer(serve)``: a fake server on loopback whose ``serve(conn)`` answers one
    connection (test_edge_faults.Peer); closed after the test."""
    from test_edge_faults import Peer

    made = []
    yield lambda serve: made.append(Peer(serve)) or made[-1]
    for p in made:
        p.close()
