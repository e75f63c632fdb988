"""Scale-out: streams spread over two server processes behind an L4 proxy (HAProxy with
deploy/haproxy.cfg, docs/deployment.md); every connection of a stream, its
reconnections included, reaches the same server, and the servers see each edge's own
address (the PROXY protocol). Loopback only."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from temposplit.codec.encoder import PRESETS
from temposplit.host.edge import Edge
from temposplit.host.sources import open_replay
from temposplit.server.bench import start_server, stop_server

HAPROXY = shutil.which("haproxy") or (os.path.exists("/usr/sbin/haproxy") and "/usr/sbin/haproxy") or None
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.models,
    pytest.mark.skipif(
        HAPROXY is None, reason="haproxy is not installed (Debian: apt-get install haproxy; .ci/run installs it)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy(tmp_path):
    """Two `temposplit serve` processes and HAProxy in front of them, all on 127.0.0.1."""
    outs = [tmp_path / "server1", tmp_path / "server2"]
    servers = []
    haproxy = None
    try:
        for out in outs:
            # HAProxy's `send-proxy-v2` names each edge's address: the per-client limits count edges, not the proxy.
            servers.append(start_server(out, max_streams=16, options=("--proxy-protocol",)))
        port = free_port()
        env = {
            **os.environ,
            "TEMPOSPLIT_LISTEN": f"127.0.0.1:{port}",
            "TEMPOSPLIT_SERVER1": "{}:{}".format(*servers[0][1]),
            "TEMPOSPLIT_SERVER2": "{}:{}".format(*servers[1][1]),
        }
        log = open(tmp_path / "haproxy.log", "w")  # noqa: SIM115 - closed below
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if haproxy.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"haproxy did not start: {(tmp_path / 'haproxy.log').read_text()}") from None
                time.sleep(0.1)
        yield ("127.0.0.1", port), outs
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)
            log.close()
        for proc, _ in servers:
            stop_server(proc)


def test_streams_spread_over_two_servers_and_each_stays_on_its_server(proxy, replay_file):
    address, outs = proxy
    replay = open_replay(str(replay_file))
    frames = list(replay.frames())
    codec = {**PRESETS["recommended"], "fps": replay.fps}
    n = 8
    reports, failures = {}, {}

    def stream(i: int) -> None:
        # Each edge connects from its own loopback address, as boards on a network do.
        edge = Edge(replay, dict(codec), address, f"cam{i}", source_address=f"127.0.0.{i + 2}")
        cut = []

        def drop(index, chan):  # the connection dies mid-stream: the edge reconnects through the proxy
            if index == 4 and not cut:
                cut.append(index)
                chan.sock.shutdown(socket.SHUT_RDWR)

        edge.fault = drop
        try:
            reports[i] = edge.run(frames, total=len(frames))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures[i] = repr(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures
    per_server = [0, 0]
    for i in range(n):
        assert reports[i].reconnects >= 1 and not reports[i].errors
        homes = [k for k, out in enumerate(outs) if (out / f"cam{i}").is_dir()]
        assert len(homes) == 1, f"cam{i} reached {len(homes)} servers"  # affinity, across the reconnection
        per_server[homes[0]] += 1
        state = json.loads((outs[homes[0]] / f"cam{i}" / "session.json").read_text())
        assert state["client"] == f"127.0.0.{i + 2}"  # the edge's own address, through the proxy's PROXY header
        path = outs[homes[0]] / f"cam{i}" / "detections.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        assert sorted(r["frame"] for r in recs) == list(range(len(frames)))
        assert all("detections" in r for r in recs)
    assert min(per_server) >= 1, per_server  # both processes took streams
