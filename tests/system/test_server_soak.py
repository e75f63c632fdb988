"""A server meant to run for weeks gives back what its streams took: after many short
streams, streams whose edge vanished mid-stream (then expired), resumed streams, refused
HELLOs and garbage connections, its file descriptors, threads, connections and sessions
are back where they were (docs/deployment.md, "Long runs")."""

import json
import os
import socket
import struct
import threading
import time
import tracemalloc

from rawclient import Raw, wait_for  # tests/system's hand-speaking client (no receiving thread of its own)

from temposplit import protocol as P
from temposplit.model import data

STREAMS = 48  # each kind of stream below 8 times


def resources(srv) -> dict:
    """What a stream may hold in this process and this server: descriptors, threads (the
    system's count: PyAV's and x264's too), connections, accepted sockets, sessions."""
    with open("/proc/self/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threads,
        "connections": len(srv.connections),
        "tasks": len(srv.tasks),
        "per_client": sum(srv.per_client.values()),
        "sessions": len(srv.sessions),
        "placed": sum(w.sessions for w in srv.workers),
    }


def idle(now: dict) -> bool:
    """Nothing held by the server: no connection, accepted socket or session."""
    return all(now[k] == 0 for k in ("connections", "tasks", "per_client", "sessions", "placed"))


def settled(now: dict, base: dict) -> bool:
    """Back to the baseline: nothing held by the server, and no more descriptors or threads
    in this process than before (fewer is fine: another test's leftovers may end meanwhile)."""
    return idle(now) and now["fds"] <= base["fds"] and now["threads"] <= base["threads"]


def finish(raw: Raw, packets, frames: int) -> None:
    raw.packets_acknowledged(packets)
    raw.send(P.END, {"frames": frames})
    while (m := raw.chan.recv()).type != P.SUMMARY:
        assert m.type != P.ERROR, m.json()
    raw.sock.close()


def dropped(raw: Raw, packets, how: str) -> None:
    """The edge vanishes mid-stream: after a few frames, at a message's boundary or in
    the middle of one, with a FIN or a reset; it never comes back."""
    for p in packets[:3]:
        raw.chan.send(P.encode(P.PACKET, p))
    if how == "half":
        raw.sock.sendall(P.encode(P.PACKET, packets[3])[:9])
    if how == "reset":
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.sock.close()


def stream(srv, header, packets, i: int, local: dict) -> None:
    """Stream ``i`` of six kinds in turn, every other one with --local-video's source (a
    PyAV decoder beside its video writer); then a HELLO refused and a connection that
    speaks no protocol."""
    kind, name = i % 6, f"s{i}"
    extra = local if i % 2 else {}
    raw = Raw(srv.address)
    welcome = raw.hello(header, name, **extra)
    assert welcome.type == P.WELCOME, welcome.json()
    if kind in (0, 1):  # a short stream, ended
        finish(raw, packets, len(packets))
    elif kind in (2, 3, 4):  # the edge gone mid-stream for good: the session expires
        dropped(raw, packets, ("fin", "half", "reset")[kind - 2])
    else:  # gone, then resumed with its token (at once: it may still be attached) and ended
        dropped(raw, packets, "reset")
        again = Raw(srv.address)
        w = again.hello(header, name, resume=True, token=welcome.json()["token"], **extra)
        assert w.type == P.WELCOME, w.json()
        finish(again, packets, len(packets))
    refused = Raw(srv.address)
    assert refused.hello(header, "../x").type == P.ERROR
    refused.sock.close()
    with socket.create_connection(srv.address) as junk:
        junk.sendall(b"GET / HTTP/1.1\r\n\r\n")


def test_a_server_gives_back_what_its_streams_took(make_server, coded_stream):
    header, packets = coded_stream
    local = {"video": str(data.vtest_path()), "max_frames": len(packets)}
    srv = make_server(
        local_video=True,
        linger=1.0,  # a detached session expires after 1 s (120 s in service)
        idle_timeout=5.0,  # bounds the wait for a connection another test of this process left open
        max_streams_per_client=0,
        max_new_streams_per_client=0,
        max_connections_per_client=0,
    )
    # Warm-up: one stream of each kind (the model's first use, and the native threads that
    # PyTorch, FFmpeg and x264 start once), and the HELLO pool's threads, which start on
    # demand up to its size.
    for i in range(6):
        stream(srv, header, packets, i, local)
    size = srv.pool._max_workers
    together = threading.Barrier(size)
    for f in [srv.pool.submit(together.wait, 10) for _ in range(size)]:
        f.result()
    wait_for(lambda: idle(resources(srv)), "the warm-up's streams expired")
    base = resources(srv)

    most_sessions = 0
    for i in range(6, 6 + STREAMS):
        stream(srv, header, packets, i, local)
        most_sessions = max(most_sessions, len(srv.sessions))
    assert most_sessions > 0  # streams were held while their edges were gone

    deadline = time.monotonic() + 30  # the last dropped stream's expiry, and its files closed
    while not settled(now := resources(srv), base) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert settled(now, base), f"after {STREAMS} streams: {now}; after the warm-up: {base}"
    # Every stream whose edge vanished was closed unfinished: its edge may still resume it.
    for i in range(6, 6 + STREAMS):
        if i % 6 in (2, 3, 4):
            assert json.loads((srv.out_dir / f"s{i}" / "session.json").read_text())["finished"] is False


def test_a_long_stream_resumes_from_its_files_in_bounded_memory(make_server, coded_stream):
    """A stream that ran for hours (its log: a line of detections per frame), its session
    expired, is resumed from its files: the server holds the frames' ranges, not the log
    (it read the whole log into a list of its records: 4.1 GB for 100,000 frames of vtest)."""
    header, packets = coded_stream
    srv = make_server(linger=0.5, max_new_streams_per_client=0)
    raw = Raw(srv.address)
    token = raw.hello(header, "long").json()["token"]
    raw.packets_acknowledged(packets)
    raw.sock.close()
    log = srv.out_dir / "long" / "detections.jsonl"
    wait_for(lambda: "long" not in srv.sessions, "the stream expired")
    lines = log.read_bytes().splitlines(keepends=True)
    template = json.loads(max(lines, key=len))  # the frame with the most detections
    frames = 6_000  # 200 s at 30 frames/s
    with open(log, "a") as f:
        for i in range(len(packets), frames):
            f.write(json.dumps({**template, "frame": i}, separators=(",", ":")) + "\n")
    size = log.stat().st_size

    tracemalloc.start()
    try:
        again = Raw(srv.address, timeout=120)
        welcome = again.hello(header, "long", resume=True, token=token)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert welcome.type == P.WELCOME, welcome.json()
    assert welcome.json()["next_frame"] == frames and welcome.json()["recorded"] == []
    assert peak < size / 8, f"{peak / 1e6:.1f} MB held to resume from a log of {size / 1e6:.1f} MB"
    again.send(P.END, {"frames": frames})
    while (m := again.chan.recv()).type != P.SUMMARY:
        assert m.type != P.ERROR, m.json()
    assert m.json()["frames"] == frames and m.json()["errors"] == 0
