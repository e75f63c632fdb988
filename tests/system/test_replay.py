"""Feature files and replay: ``temposplit features`` writes a clip's M1 cut tensors with
the model's identity; ``temposplit edge --replay`` streams them without PyTorch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features
from temposplit.codec.encoder import PRESETS
from temposplit.host.edge import Edge
from temposplit.host.sources import open_replay
from temposplit.model import data

pytestmark = [pytest.mark.slow, pytest.mark.models]

# The CLI with PyTorch and the video readers made unimportable: any such import fails.
NO_TORCH = (
    "import sys; sys.modules.update(torch=None, av=None, cv2=None); "
    "from temposplit.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture
def server(tmp_path, cloud_models):
    """M2 one frame at a time: float M2's scores depend on the batch size in the last
    digits (oneDNN picks kernels by shape), and the live and replayed streams arrive at
    different rates, so a batching server would batch them differently."""
    from temposplit.server.server import CloudServer

    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models, max_batch=1)
    srv.start()
    yield srv
    srv.shutdown()


def records(server, stream):
    path = server.out_dir / stream / "detections.jsonl"
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["frame"])


def test_features_writes_the_encode_input_with_the_model_identity(tmp_path, capsys):
    video = data.vtest_path()
    if not video.is_file():
        pytest.skip("data/vtest.avi is not fetched (run `make data`)")
    out = tmp_path / "clip.npz"
    assert main(["features", str(video), str(out), "--frames", "3", "--calibration", "2"]) == 0
    clip = features.load(str(out))
    assert clip.names == ["features.10"] and clip.codes[0].shape == (3, 64, 19, 19)  # the default cut
    assert clip.codes[0].dtype == np.uint8 and clip.blocks == [4]
    replay = open_replay(str(out))
    assert (replay.model, replay.cut.name, replay.frame_size, replay.fps) == (
        "ssd-mobilenet-v2",
        "features.10",
        (576, 768),
        pytest.approx(10.0),
    )
    from temposplit.model import load_detector
    from temposplit.model.fingerprint import stream_hash, weights_digest

    digest = weights_digest(load_detector("ssd-mobilenet-v2").net)  # the weights a server loads
    assert replay.hash == stream_hash(
        digest, "ssd-mobilenet-v2", "features.10", [(clip.scales[0], clip.zero_points[0])]
    )
    # It is exactly `encode`'s input.
    capsys.readouterr()
    assert main(["encode", str(out), str(tmp_path / "s.tsp")]) == 0
    assert "3 frames" in capsys.readouterr().out


def test_a_replayed_stream_loads_no_model_and_matches_the_live_edge(server, edge_model, vtest_frames, replay_file):
    codec = {**PRESETS["recommended"], "fps": 10.0}
    live = Edge(edge_model, codec, server.address, "live").run(vtest_frames[:8], total=8)
    assert not live.errors
    host, port = server.address
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "edge", "--replay", str(replay_file)]
        + ["--server", f"{host}:{port}", "--stream", "replayed"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "8 frames" in done.stdout and "0 errors" in done.stdout
    replayed = records(server, "replayed")
    assert [r["frame"] for r in replayed] == list(range(8)) and all("detections" in r for r in replayed)
    # The recorded cut tensors and the same codec options give the live edge's bytes and detections.
    assert replayed == records(server, "live")


def test_replay_stops_after_frames(server, replay_file):
    host, port = server.address
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "edge", "--replay", str(replay_file), "--frames", "3"]
        + ["--server", f"{host}:{port}", "--stream", "three"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert [r["frame"] for r in records(server, "three")] == [0, 1, 2]


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_edge_reaches_a_server_on_ipv6_by_a_bracketed_address(tmp_path, cloud_models, replay_file, capsys):
    """`--server [::1]:PORT`, as URLs write an IPv6 address: the brackets are not the
    address (the resolver was given "[::1]" and the edge failed to connect)."""
    from temposplit.server.server import CloudServer

    srv = CloudServer(host="::1", port=0, out_dir=tmp_path / "out", models=cloud_models)
    srv.start()
    try:
        port = srv.address[1]
        assert main(["edge", "--replay", str(replay_file), "--server", f"[::1]:{port}", "--stream", "v6"]) == 0
        assert len(records(srv, "v6")) == 8
    finally:
        srv.shutdown()


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_a_server_on_all_ipv6_addresses_takes_ipv4_edges_where_the_system_allows(make_server):
    """`serve --host ::` listens on IPv6 (it could not: the socket was IPv4 whatever the
    address), and on IPv4 too where one socket can take both."""
    import socket

    srv = make_server(host="::")
    port = srv.address[1]
    families = [(socket.AF_INET6, "::1")] + ([(socket.AF_INET, "127.0.0.1")] if socket.has_dualstack_ipv6() else [])
    for family, address in families:
        with socket.socket(family, socket.SOCK_STREAM) as c:
            c.settimeout(5)
            c.connect((address, port))
