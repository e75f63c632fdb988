"""The edge and the server over real loopback sockets: normal runs, faults, many clients."""

import json
import socket
import threading
import time

import numpy as np
import pytest
from rawclient import cut_connection_at, wait_for

from temposplit import protocol as P
from temposplit.host.edge import Edge

pytestmark = [pytest.mark.slow, pytest.mark.models]

CODEC = {"n_bits": 4, "structure": "bi-3", "coder": "huffman", "fps": 10.0}


def records(server, stream):
    path = server.out_dir / stream / "detections.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_every_frame_once(server, stream, n):
    recs = records(server, stream)
    assert sorted(r["frame"] for r in recs) == list(range(n))  # none lost silently, none twice
    return recs


def test_a_normal_run_gives_detections_for_every_frame(server, edge_model, vtest_frames):
    frames = vtest_frames[:9]
    edge = Edge(edge_model, CODEC, server.address, "normal")
    report = edge.run(frames, total=len(frames))
    assert report.frames == 9 and not report.errors and report.acked == 9
    assert report.summary["decoded"] == 9 and report.summary["errors"] == 0
    recs = assert_every_frame_once(server, "normal", 9)
    assert all("detections" in r for r in recs)
    assert any(d["label"] == "person" and d["score"] > 0.5 for r in recs for d in r["detections"])
    assert [r["kind"] for r in sorted(recs, key=lambda r: r["frame"])][:3] == ["pred", "key", "pred"]
    import av

    with av.open(str(server.out_dir / "normal" / "annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9


def test_a_source_that_breaks_part_way_ends_the_stream_with_what_was_sent(server, edge_model, vtest_frames):
    from temposplit.errors import ConfigError, TemposplitError

    def damaged():  # as read_video does on a truncated file
        yield from vtest_frames[:5]
        raise ConfigError("clip.mp4: cannot decode frame 5: Invalid data found when processing input")

    edge = Edge(edge_model, CODEC, server.address, "damaged")
    with pytest.raises(TemposplitError, match="cannot decode frame 5.*'damaged' was ended there: 5 of its 5 frame"):
        edge.run(damaged(), total=9)  # the container announced more frames than decode
    assert_every_frame_once(server, "damaged", 5)
    state = json.loads((server.out_dir / "damaged" / "session.json").read_text())
    assert state["finished"] is True  # not left open: the name is free for the next run
    again = Edge(edge_model, CODEC, server.address, "damaged").run(vtest_frames[:2], total=2)
    assert again.acked == 2 and not again.errors


def test_a_connection_killed_mid_stream_is_recovered(server, edge_model, vtest_frames):
    frames = vtest_frames[:10]
    edge = Edge(edge_model, CODEC, server.address, "killed")
    killed = cut_connection_at(edge, 4)
    report = edge.run(frames, total=len(frames))
    assert killed and report.reconnects >= 1
    assert not report.errors
    recs = assert_every_frame_once(server, "killed", 10)
    assert all("detections" in r for r in recs)
    assert_each_frame_answered_or_unanswered(report, recs)


def assert_each_frame_answered_or_unanswered(report, recs):
    """Every frame of the report once: answered with its detections (as the server recorded
    them), or recorded by the server with its ACK lost (``unanswered``)."""
    answered, unanswered = set(report.detections), set(report.unanswered)
    assert not answered & unanswered
    assert answered | unanswered == set(range(report.frames))
    assert report.acked == len(answered) and report.acked + len(report.unanswered) == report.frames
    assert all(report.detections[r["frame"]] == r["detections"] for r in recs if r["frame"] in answered)


def test_acks_read_after_their_connection_was_replaced_still_count(server, edge_model, vtest_frames):
    """ACKs with detections that had arrived on a connection lost before the edge read them
    (a send that fails, as a reset does while M1 runs) were thrown away once the resume had
    replaced it, and the resume's WELCOME took their frames off the unacknowledged set: the
    report missed those frames' detections while the edge said 0 errors."""
    frames = vtest_frames[:8]
    edge = Edge(edge_model, CODEC, server.address, "lateacks")
    queued = []  # the frames answered with detections on the connection cut, unread at the cut

    def answered_on(chan):
        acks = [m for c, m in list(edge.inbox.queue) if c is chan and getattr(m, "type", None) == P.ACK]
        return [a.json()["frame"] for a in acks if "detections" in a.json()]

    def fault(i, chan):
        if i == 4 and not queued:  # once frame 4's answer (at least) has arrived, unread
            wait_for(lambda: answered_on(chan), "an ACK with detections on the connection", seconds=120)
            queued.extend(answered_on(chan))
            chan.sock.shutdown(socket.SHUT_RDWR)
            raise P.ConnectionClosed("cut with ACKs unread")  # as the next send would fail

    edge.fault = fault
    report = edge.run(frames, total=len(frames))
    assert queued and report.reconnects >= 1 and not report.errors
    recs = assert_every_frame_once(server, "lateacks", 8)
    assert all("detections" in r for r in recs)
    assert set(queued) <= set(report.detections)  # read after the resume, still counted
    assert_each_frame_answered_or_unanswered(report, recs)


def test_corrupted_bytes_are_reported_and_the_stream_goes_on(server, edge_model, vtest_frames):
    frames = vtest_frames[:12]
    edge = Edge(edge_model, CODEC, server.address, "corrupt")
    damaged = []

    def tamper(index, raw):
        if index == 4 and not damaged:  # the anchor of the second group
            damaged.append(index)
            raw = bytearray(raw)
            raw[len(raw) // 2] ^= 0x5A
            return bytes(raw)
        return raw

    def key_request_arrived():
        return any(getattr(m, "type", None) == P.KEY_REQUEST for _, m in list(edge.inbox.queue))

    def pace(index, chan):
        # Once the damaged packet is out, wait until the server's KEY_REQUEST has reached the
        # edge: how many frames an edge sends before it reads the request otherwise depends on
        # how far the server (decoding, M2) lags behind it, i.e. on the machine's load.
        if damaged and not paced:
            paced.append(index)
            deadline = time.monotonic() + 120
            while not key_request_arrived() and time.monotonic() < deadline:
                time.sleep(0.02)

    paced = []
    edge.tamper, edge.fault = tamper, pace
    report = edge.run(frames, total=len(frames))
    assert damaged and report.key_requests >= 1
    recs = assert_every_frame_once(server, "corrupt", 12)
    errors = {r["frame"] for r in recs if "error" in r}
    # Lost: the damaged anchor and frame 3, coded against it and sent with it before the
    # request could be read; the edge answers the KEY_REQUEST before its next frame, the
    # group it then codes starts from a fresh KEY, and every other frame is decoded.
    assert errors == {3, 4}
    assert "key" in [report.kinds[i] for i in range(5, 8)]
    assert all("detections" in r for r in recs if r["frame"] not in errors)


def test_eight_clients_at_once(server, edge_model, vtest_frames):
    frames = vtest_frames[:4]
    reports, failures = {}, []
    before = server.stats()

    def client(k):
        try:
            reports[k] = Edge(edge_model, CODEC, server.address, f"client{k}").run(frames, total=len(frames))
        except Exception as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures
    assert len(reports) == 8
    for k in range(8):
        assert not reports[k].errors
        assert_every_frame_once(server, f"client{k}", 4)
    # Each frame's M2 is its share of its batch: the shares add up to the server's M2 time,
    # however the 32 frames were batched across the clients (a batch of several frames:
    # tests/system/test_edge_acks.py, where the batches are fixed).
    after = server.stats()
    m2_ms = 1000 * (after["seconds"]["m2"] - before["seconds"]["m2"])
    assert after["frames"] - before["frames"] == 32
    assert sum(sum(r.m2_ms) for r in reports.values()) == pytest.approx(m2_ms, abs=2.0)


def test_a_bad_hello_is_refused_and_the_server_stays_up(server, edge_model, vtest_frames):
    with socket.create_connection(server.address) as s:
        chan = P.Channel(s)
        chan.send(P.hello({"protocol": P.PROTOCOL_VERSION, "stream": "../etc"}, b"junk"))
        reply = chan.recv()
        assert reply.type == P.ERROR and "stream name" in reply.json()["message"]
    with socket.create_connection(server.address) as s:
        chan = P.Channel(s)
        chan.send(
            P.hello({"protocol": P.PROTOCOL_VERSION, "stream": "ok", "frame_size": [576, 768]}, b"TSPS junk header")
        )
        assert chan.recv().type == P.ERROR
    report = Edge(edge_model, CODEC, server.address, "after").run(vtest_frames[:3], total=3)
    assert report.acked == 3


def test_a_stream_from_other_weights_is_refused(server, edge_model, vtest_frames):
    edge = Edge(edge_model, CODEC, server.address, "other")
    edge.model = _OtherWeights(edge_model)
    from temposplit.errors import TemposplitError

    with pytest.raises(TemposplitError, match="model hash"):
        edge.run(vtest_frames[:2], total=2)


class _OtherWeights:
    def __init__(self, model):
        self._m = model

    def __getattr__(self, name):
        return getattr(self._m, name)

    def model_hash(self, sample):
        return bytes(32)


def test_the_board_path_streams_with_the_numpy_m1_and_no_torch_model(server, edge_model, vtest_frames, tmp_path):
    from temposplit.host.pipeline import NumpyEdgeModel
    from temposplit.model.export import export_m1

    path = export_m1(edge_model.split, tmp_path / "m1.npz")
    board = NumpyEdgeModel(str(path))
    sample_torch = edge_model.m1([vtest_frames[0]])[0]
    sample_numpy = board.m1([vtest_frames[0]])[0]
    assert all((a.codes == b.codes).all() for a, b in zip(sample_torch, sample_numpy, strict=True))
    assert board.model_hash(sample_numpy) == edge_model.model_hash(sample_torch)  # the server accepts it
    report = Edge(board, CODEC, server.address, "board").run(vtest_frames[:4], total=4)
    assert report.acked == 4 and not report.errors


def test_an_m1_file_of_another_model_than_model_names_is_refused(edge_model, tmp_path, capsys):
    """--model is ignored by an exported M1 (the file names its model): one that differs is
    an error, not a run of another model than the user asked for."""
    from temposplit.cli import main
    from temposplit.model import data
    from temposplit.model.export import export_m1

    path = export_m1(edge_model.split, tmp_path / "m1.npz")
    argv = ["features", str(data.vtest_path()), str(tmp_path / "f.npz"), "--m1", str(path)]
    assert main([*argv, "--model", "retinanet-resnet50-fpn", "--frames", "1"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--model retinanet-resnet50-fpn, but" in line and "leave --model out" in line, line
    assert main([*argv, "--frames", "1"]) == 0  # the file's own model: accepted


def test_demo_of_a_clip_whose_frame_size_changes_fails_instead_of_scoring_it(tmp_path, capsys):
    """The demo reads frames as the edge does: a clip that changes size part way ends the
    stream there with the reason (it was streamed and scored with the boxes of one size
    against the other's, a wrong figure and exit status 0)."""
    import av

    from temposplit.cli import main
    from temposplit.model import data

    parts = []
    for k, size in enumerate(((96, 128), (64, 96))):
        part = tmp_path / f"part{k}.ts"
        frames = list(data.read_video(data.vtest_path(), max_frames=4, start=100 + 4 * k))
        with av.open(str(part), "w") as c:
            s = c.add_stream("libx264", rate=10)
            s.height, s.width, s.pix_fmt = *size, "yuv420p"
            for f in frames:
                picture = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width=size[1], height=size[0])
                for p in s.encode(picture):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        parts.append(part.read_bytes())
    clip = tmp_path / "changes.ts"
    clip.write_bytes(b"".join(parts))  # MPEG-TS: two streams end to end are one stream
    assert main(["demo", "--video", str(clip), "--frames", "8", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "frame 4 is 96x64, the clip started at 128x96" in err and "was ended there" in err, err


def test_features_of_a_clip_the_server_cannot_take_warns(tmp_path, capsys):
    """A frame size the server refuses (8x8): the feature file is written (encode takes
    it; the SSD resizes every frame), with a warning that edge --replay cannot stream it."""
    from temposplit.cli import main
    from temposplit.model import data

    video = tmp_path / "tiny.avi"
    frame = next(data.read_video(data.vtest_path(), max_frames=1, start=100))
    _write_clip(video, [frame[::72, ::96][:8, :8]] * 2)
    assert main(["features", str(video), str(tmp_path / "f.npz"), "--frames", "2"]) == 0
    assert (tmp_path / "f.npz").is_file()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {video} is 8x8: the server takes frames of 16 to 4096 pixels a side: "
                   "edge --replay cannot stream this file (encode can)"]  # fmt: skip


def _write_clip(path, frames):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_the_edge_takes_pillow_images_as_the_models_do(server, edge_model, vtest_frames):
    """Pillow images of mode RGB are frames to the models (check_frames); to the edge too,
    which read their size as an array's and failed with an AttributeError."""
    from PIL import Image

    report = Edge(edge_model, CODEC, server.address, "pillow").run([Image.fromarray(f) for f in vtest_frames[:3]])
    assert report.frames == 3 and report.acked == 3 and not report.errors
    assert_every_frame_once(server, "pillow", 3)
