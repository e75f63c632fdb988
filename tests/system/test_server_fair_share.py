"""What one client's cheap streams cannot take from the others (real sockets on loopback):
the worker's time (a run of lost frames costs the annotated video two pictures, not one a
frame), the stop's drain (the cheapest closes first; what is left unclosed is named), and
the two HELLO threads (a resume waits for a closing stream on the event loop)."""

import json
import socket
import struct
import threading

import pytest
from rawclient import Raw, hold_control, wait_for  # tests/system's hand-speaking client

from temposplit import protocol as P

pytestmark = [pytest.mark.slow, pytest.mark.models]

LARGEST = [4096, 4096]  # the largest frames a HELLO may announce: the video drawn at 1280x1280


def records(srv, stream) -> list[dict]:
    path = srv.out_dir / stream / "detections.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def pictures(path) -> int:
    """The pictures an annotated video decodes to."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def holey(srv, header: bytes, name: str, end: bool = True, source: str = "127.0.0.1") -> P.Message | None:
    """A stream of three small messages: a HELLO announcing the largest frames, a SKIP of
    frame 255 (the most a stream may leave below it unsent) and, with ``end``, an END of 256
    frames: 255 frames "never received". Returns END's answer; without it, the stream is
    left detached."""
    c = Raw(srv.address, timeout=120, source=source)
    try:
        hello = c.hello(header, name, frame_size=LARGEST)
        if hello.type != P.WELCOME:
            return hello
        c.send(P.SKIP, {"frame": 255, "error": "x"})
        if not end:
            return None
        c.send(P.END, {"frames": 256})
        return c.answers_until({P.SUMMARY, P.ERROR})[-1]
    finally:
        if not end:  # the SKIP queued before the connection goes
            wait_for(lambda: name in srv.sessions and 255 in srv.sessions[name].failed, "the SKIP recorded")
        c.close()


@pytest.mark.parametrize("at", ["end", "close"])
def test_a_run_of_lost_frames_costs_the_video_two_pictures(make_server, coded_stream, at):
    """255 frames without a record of their own (END's "never received", or the close of a
    detached stream) were drawn one picture each: 256 pictures of 1280x1280, 8 s of the
    worker for about 250 bytes from the client."""
    srv = make_server()
    answer = holey(srv, coded_stream[0], "holey", end=at == "end")
    if at == "end":
        assert answer.type == P.SUMMARY and answer.json()["errors"] == 256, (answer.name, answer.body[:200])
    else:
        srv.shutdown()
    recs = records(srv, "holey")
    assert [r["frame"] for r in recs] == ([255, *range(255)] if at == "end" else [255])
    assert pictures(srv.out_dir / "holey" / "annotated.mp4") <= 2


def test_the_video_holds_one_picture_for_a_gap_at_the_times_its_frames_would_have(tmp_path):
    """A run of lost frames is one picture, shown at the run's first frame's time and again
    at its last's: the frames around it keep their times."""
    import av

    from temposplit.server.outputs import AnnotatedVideo

    video = AnnotatedVideo(tmp_path / "v.mp4", 64, 48, 10.0)
    video.add(0, caption="0")
    video.add(5, caption="5")  # 1-4 never come
    for i in range(6, 9):
        video.add(i, error=f"frame {i}: error")  # SKIPs: error records without a time
    video.finish(10)  # 9 never came either
    assert video.written == 6  # 0, the run 1-4 (twice), 5, the run 6-9 (twice)
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert [round(f.time * 1000) for f in c.decode(video=0)] == [0, 100, 400, 500, 600, 900]


def test_a_client_of_holey_streams_does_not_hold_the_worker(make_server, coded_stream):
    """Six connections of one client ending holey streams back to back, beside a client
    sending frames one at a time, as a camera does: the good client's frames are all
    answered while the holey streams go on. (Each holey END cost the worker 8 s: each good
    frame waited behind six of them.)"""
    header, packets = coded_stream
    srv = make_server(max_new_streams_per_client=0)
    stop, ended, names = threading.Event(), [], iter(range(10**6))

    def client(k: int) -> None:
        while not stop.is_set():
            answer = holey(srv, header, f"holey{k}-{next(names)}")
            if answer is not None and answer.type == P.SUMMARY:
                ended.append(answer)

    holeys = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in holeys:
        t.start()
    try:
        wait_for(lambda: len(ended) >= 6, "holey streams ended", 120)
        good = Raw(srv.address, source="127.0.0.2", timeout=120)
        assert good.hello(header, "good").type == P.WELCOME
        acked: set = set()

        def read() -> None:
            for p in packets:
                acked.update(good.packets_acknowledged([p]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        before = len(ended)
        wait_for(lambda: len(acked) == len(packets), "every good frame answered", 60)
        assert len(ended) > before  # the holey streams went on meanwhile
    finally:
        stop.set()
        for t in holeys:
            t.join(120)
    assert sorted(r["frame"] for r in records(srv, "good") if "error" not in r) == list(range(len(packets)))


def test_a_stop_closes_the_cheap_sessions_first_and_every_one_within_its_drain(make_server, coded_stream, monkeypatch):
    """A stop beside detached holey sessions: their closes drew 256 pictures each before the
    good stream's came, the drain ran out and the good stream's video was left unfinished
    (undecodable). Its video now decodes to one picture per record."""
    from temposplit.server import server as server_module

    monkeypatch.setattr(server_module, "WORK_DRAIN", 10.0)
    header, packets = coded_stream
    lines: list[str] = []
    srv = make_server(log=lines.append)
    for k in range(4):  # opened first: without the order by cost, closed first
        holey(srv, header, f"holey{k}", end=False)
    good = Raw(srv.address, source="127.0.0.2")
    assert good.hello(header, "good").type == P.WELCOME
    assert len(good.packets_acknowledged(packets)) == len(packets)
    srv.shutdown()
    assert pictures(srv.out_dir / "good" / "annotated.mp4") == len(records(srv, "good")) == len(packets)
    for k in range(4):
        assert pictures(srv.out_dir / f"holey{k}" / "annotated.mp4") <= 2
    assert not any("unclosed" in line for line in lines)


def test_a_stop_whose_drain_runs_out_names_the_sessions_left_unclosed(make_server, coded_stream, monkeypatch):
    from temposplit.server import server as server_module

    monkeypatch.setattr(server_module, "WORK_DRAIN", 0.5)
    header, packets = coded_stream
    lines: list[str] = []
    srv = make_server(log=lines.append)
    gate = hold_control(srv.workers[0], {"close"})  # a close that outlasts the drain
    c = Raw(srv.address)
    assert c.hello(header, "slow").type == P.WELCOME
    assert len(c.packets_acknowledged(packets[:2])) == 2
    try:
        srv.shutdown()
        unclosed = [line for line in lines if "unclosed" in line]
        assert len(unclosed) == 1 and "1 session(s)" in unclosed[0] and unclosed[0].endswith(": slow"), lines
    finally:
        gate.set()


def test_an_end_cancelled_while_it_waits_for_a_slot_leaves_the_stream_to_resume_at_once(make_server, coded_stream):
    """An END waiting for a slot in the full queue when its connection broke (the reset seen
    as the ACK of the stream's earlier frame was written) was never queued, and the stream
    stayed "ending": every resume waited 60 s and was told "still closing", until the
    session expired. The worker takes nothing more until the broken connection is
    detached, so the END is still waiting when the reset is seen (taking the queued frame
    would give it the slot)."""
    header, packets = coded_stream
    srv = make_server(queue_size=1, max_batch=1)
    worker = srv.workers[0]
    entered, gate, detached = threading.Event(), threading.Event(), threading.Event()
    real_process, real_take = worker._process, worker._take

    def gated(batch):
        if not entered.is_set():
            entered.set()
            gate.wait(60)  # the worker holds the stream's first frame
        real_process(batch)

    def take():
        if entered.is_set():
            detached.wait(60)  # no slot given back before the reset is seen
        return real_take()

    worker._process, worker._take = gated, take
    t = Raw(srv.address)
    token = t.hello(header, "cam").json()["token"]
    s = srv.sessions["cam"]
    try:
        t.chan.send(P.encode(P.PACKET, packets[0]))
        assert entered.wait(30)
        t.chan.send(P.encode(P.PACKET, packets[1]))  # takes the client's share of the queue (one slot)
        wait_for(lambda: worker.queued() == 1, "the slot taken")
        t.send(P.END, {"frames": 2})  # waits for a slot
        wait_for(lambda: s.ending and worker._waiters, "the END waiting for a slot")
        t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.sock.close()  # reset: seen when frame 0's ACK is written
        gate.set()
        wait_for(lambda: s.conn is None, "the broken connection detached")
        assert not worker._waiters  # the END left its turn
        assert not s.ending
    finally:
        gate.set()
        detached.set()
    wait_for(lambda: worker.queued() == 0, "the queue drained")
    again = Raw(srv.address, timeout=30)  # (under the 60 s a resume waited)
    answer = again.hello(header, "cam", resume=True, token=token)
    assert answer.type == P.WELCOME, (answer.name, answer.body[:200])
    w = answer.json()  # frame 0 acknowledged, frame 1 dropped with its connection, nothing of the END
    assert w["next_frame"] + len(P.from_ranges(w["recorded"])) == 1


def test_resumes_waiting_for_ending_streams_hold_no_hello_thread(make_server, coded_stream):
    """A resume of a stream whose END is queued waits for the finish; it waited in one of
    the server's two HELLO threads, so two such resumes held every HELLO for up to a
    minute. Meanwhile another client's HELLO is answered."""
    header, packets = coded_stream
    srv = make_server()
    gate = hold_control(srv.workers[0], {"end"})  # the ENDs wait in the worker
    edges, tokens, resumes = [], [], []
    for name in ("a", "b"):
        c = Raw(srv.address, timeout=120)
        tokens.append(c.hello(header, name).json()["token"])
        assert len(c.packets_acknowledged(packets[:1])) == 1
        edges.append(c)
    try:
        for c, name, token in zip(edges, ("a", "b"), tokens, strict=True):
            c.send(P.END, {"frames": 2})
            wait_for(lambda name=name: srv.sessions[name].ending, "the END queued")
            r = Raw(srv.address, timeout=120)
            r.send_hello(header, name, resume=True, token=token)
            resumes.append(r)
        wait_for(lambda: {"a", "b"} <= set(srv.opening), "both resumes waiting")
        new = Raw(srv.address, source="127.0.0.2", timeout=30)  # (under the 60 s the resumes wait)
        answer = new.hello(header, "c")
        assert answer.type == P.WELCOME, (answer.name, answer.body[:200])
    finally:
        gate.set()
    for r in resumes:  # told once the finish is done: the stream is gone
        answer = r.chan.recv()
        assert answer.type == P.ERROR and answer.json().get("gone") is True, (answer.name, answer.body[:200])


def test_the_worker_charges_each_client_the_time_its_items_took(make_server, coded_stream):
    """The fair share's measure (docs/deployment.md): after each batch the worker charges
    what each item took (its decode, its share of the batch's M2, its record; a control
    item's step) to the client of its session."""
    header, packets = coded_stream
    srv = make_server()
    worker = srv.workers[0]
    told: list[tuple] = []
    real = worker._served

    def served(done):
        told.extend(done)
        real(done)

    worker._served = served
    c = Raw(srv.address, source="127.0.0.5", timeout=60)
    assert c.hello(header, "measured").type == P.WELCOME
    assert len(c.packets_acknowledged(packets)) == len(packets)
    c.send(P.END, {"frames": len(packets)})
    assert c.answers_until({P.SUMMARY, P.ERROR})[-1].type == P.SUMMARY
    wait_for(lambda: len([d for d in told if d[0] == "127.0.0.5"]) == len(packets) + 1, "every item measured")
    mine = [seconds for client, seconds, _ in told if client == "127.0.0.5"]
    assert all(seconds > 0 for seconds in mine), mine
    steps = worker.seconds["decode"] + worker.seconds["m2"]  # every frame was this client's
    assert steps <= sum(mine[:-1]) <= steps + worker.seconds["record"] + 0.05 * len(packets), (mine, worker.seconds)
    assert worker._cost["127.0.0.5"] > 0  # its running mean, the estimate its next items are charged
