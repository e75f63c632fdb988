"""The server against clients that misbehave, on purpose or by crashing (real sockets on
loopback, a real stream from the SSD's M1 and the codec): every refusal is an ERROR
answered before any work, and no client can take another's stream or lock others out."""

import dataclasses
import json
import socket
import struct
import time

import pytest
from rawclient import FRAME, Raw, refused, wait_for  # tests/system's hand-speaking client

from temposplit import protocol as P
from temposplit.codec.bitstream import StreamHeader, parse_packet

pytestmark = [pytest.mark.slow, pytest.mark.models]


def records(srv, stream):
    path = srv.out_dir / stream / "detections.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- 1, 12: crashed edges


def test_edges_that_vanish_after_hello_do_not_lock_out_new_streams(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server(max_streams=4)
    for k in range(4):
        c = Raw(srv.address)
        assert c.hello(header, f"gone{k}").type == P.WELCOME
        c.close()  # a crashed edge
    c = Raw(srv.address)
    assert c.hello(header, "fresh").type == P.WELCOME  # detached sessions do not count
    c.close()


def test_a_killed_edges_session_expires_and_its_files_are_closed(make_server, coded_stream):
    import av

    header, packets = coded_stream
    srv = make_server(linger=0.5)
    c = Raw(srv.address)
    assert c.hello(header, "killed").type == P.WELCOME
    for p in packets[:3]:
        c.chan.send(P.encode(P.PACKET, p))
    acks = [m for m in (c.chan.recv() for _ in range(3)) if m.type == P.ACK]
    assert len(acks) == 3
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # a reset, as from a SIGKILLed process
    for _ in range(600):  # bounded: the expiry runs every linger/4
        if "killed" not in srv.sessions and (srv.out_dir / "killed" / "session.json").is_file():
            break
        time.sleep(0.05)
    assert "killed" not in srv.sessions
    with av.open(str(srv.out_dir / "killed" / "annotated.mp4")) as v:
        assert sum(1 for _ in v.decode(video=0)) >= 1  # finalised: playable
    assert {r["frame"] for r in records(srv, "killed")} == {json.loads(m.body)["frame"] for m in acks}
    state = json.loads((srv.out_dir / "killed" / "session.json").read_text())
    assert state["finished"] is False  # expired, still resumable by its edge


# --------------------------------------------------------------------------- 6: a stream belongs to its client


def test_a_live_stream_cannot_be_taken_over_or_ended_by_another_client(make_server, coded_stream):
    header, packets = coded_stream
    srv = make_server()
    owner = Raw(srv.address)
    welcome = owner.hello(header, "victim")
    assert welcome.type == P.WELCOME and len(welcome.json()["token"]) == 32
    thief = Raw(srv.address)
    assert refused(thief.hello(header, "victim"), "in use")
    thief = Raw(srv.address)
    assert refused(thief.hello(header, "victim", resume=True, token="0" * 32), "token")
    thief = Raw(srv.address)
    assert refused(thief.hello(header, "victim", resume=True), "token")
    # The owner's stream goes on untouched.
    for p in packets:
        owner.chan.send(P.encode(P.PACKET, p))
    owner.send(P.END, {"frames": 8})
    summary = owner.answers_until({P.SUMMARY})[-1].json()
    assert summary["decoded"] == 8 and summary["errors"] == 0 and summary["recorded"] == [[0, 8]]


def test_the_owner_resumes_with_its_token(make_server, coded_stream):
    header, packets = coded_stream
    srv = make_server()
    first = Raw(srv.address)
    token = first.hello(header, "mine").json()["token"]
    done = first.packets_acknowledged(packets[:4])
    first.close()
    again = Raw(srv.address)
    welcome = again.hello(header, "mine", resume=True, token=token)
    assert welcome.type == P.WELCOME
    w = welcome.json()  # every frame below next_frame has a record; recorded: those from it on
    assert set(range(w["next_frame"])) | set(P.from_ranges(w["recorded"])) == done


def test_a_resume_takes_the_stream_from_its_earlier_connection_and_says_so(make_server, coded_stream):
    """The edge's earlier connection still attached (half-open, as after a network
    change): the resume with the token takes the stream over, the earlier connection gets
    ERROR, and the log says which connection was closed for which."""
    header, _ = coded_stream
    lines = []
    srv = make_server(log=lines.append)
    first = Raw(srv.address)
    token = first.hello(header, "moved").json()["token"]
    again = Raw(srv.address)
    assert again.hello(header, "moved", resume=True, token=token).type == P.WELCOME
    assert refused(first.chan.recv(), "resumed on another connection")
    wait_for(lambda: any(line.startswith("[moved] edge resumed") for line in lines), "the resume's log line")
    (line,) = [line for line in lines if line.startswith("[moved] edge resumed")]
    assert "; its connection from " in line and line.endswith(" is closed"), line


def test_a_finished_streams_name_reused_keeps_its_detections(make_server, coded_stream):
    header, packets = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    c.hello(header, "reused")
    for p in packets:
        c.chan.send(P.encode(P.PACKET, p))
    c.send(P.END, {"frames": 8})
    c.answers_until({P.SUMMARY})
    before = (srv.out_dir / "reused" / "detections.jsonl").read_text()
    c = Raw(srv.address)
    assert c.hello(header, "reused").type == P.WELCOME
    assert (srv.out_dir / "reused.1" / "detections.jsonl").read_text() == before
    assert (srv.out_dir / "reused" / "detections.jsonl").read_text() == ""
    c = Raw(srv.address)
    assert refused(c.hello(header, "reused.1", resume=True, token="0" * 32), "cannot be resumed")


# --------------------------------------------------------------------------- 3: frame indices and counts


@pytest.mark.parametrize(
    "mtype, obj, words",
    [
        (P.END, {"frames": 10**9}, "integer"),
        (P.END, {"frames": 10**5}, "out of range"),
        (P.END, {"frames": 1e9}, "integer"),
        (P.END, {"frames": None}, "integer"),
        (P.END, {"frames": -1}, "integer"),
        (P.SKIP, {"frame": 10**12, "error": "x"}, "integer"),
        (P.SKIP, {"frame": 10**6, "error": "x"}, "out of range"),
        (P.SKIP, {"frame": None}, "integer"),
    ],
)
def test_counts_and_indices_far_beyond_the_stream_are_refused(make_server, coded_stream, mtype, obj, words):
    header, packets = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    c.hello(header, "far")
    c.chan.send(P.encode(P.PACKET, packets[0]))
    c.send(mtype, obj)
    answers = c.answers_until({P.ERROR, P.SUMMARY})
    assert refused(answers[-1], words)
    assert len(records(srv, "far")) <= 1  # nothing was written for the bogus frames


def test_a_packet_far_beyond_the_stream_is_refused(make_server, coded_stream):
    header, packets = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    c.hello(header, "jump")
    packet, _ = parse_packet(packets[0], 0, 1 << 24)
    far = dataclasses.replace(packet, index=10**6).to_bytes()  # a valid packet, CRC included
    c.chan.send(P.encode(P.PACKET, far))
    assert refused(c.answers_until({P.ERROR, P.ACK})[-1], "out of range")
    assert not records(srv, "jump")


def test_skips_cannot_add_up_to_more_than_max_lead_holes(make_server, coded_stream):
    # Each SKIP jumps less than MAX_LEAD, but together they would leave thousands of frames
    # unsent, each a "never received" record and a lost picture drawn by the worker.
    header, packets = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    c.hello(header, "holes")
    c.chan.send(P.encode(P.PACKET, packets[0]))
    c.send(P.SKIP, {"frame": 200, "error": "x"})  # 199 holes: allowed
    c.send(P.SKIP, {"frame": 201, "error": "x"})  # none more
    c.send(P.SKIP, {"frame": 300, "error": "x"})  # 297 holes: refused
    answers = c.answers_until({P.ERROR, P.SUMMARY})
    assert refused(answers[-1], "would leave 297 frames below it")
    assert {r["frame"] for r in records(srv, "holes") if "error" in r} == {200, 201}


def test_filled_holes_let_a_stream_go_on(make_server, coded_stream):
    # The bound is on holes, not on the lead: SKIPs that fill the gap let the stream
    # advance again, and END then writes a record for each hole left, within MAX_LEAD.
    header, packets = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    c.hello(header, "filled")
    c.send(P.SKIP, {"frame": 250, "error": "x"})
    for i in range(250):
        c.send(P.SKIP, {"frame": i, "error": "x"})
    c.send(P.SKIP, {"frame": 500, "error": "x"})  # 249 holes
    c.send(P.END, {"frames": 505})  # 253
    summary = c.answers_until({P.ERROR, P.SUMMARY})[-1]
    assert summary.type == P.SUMMARY and summary.json()["failed"] == [[0, 505]]
    assert len(records(srv, "filled")) == 505
    c = Raw(srv.address)
    c.hello(header, "over")
    c.send(P.SKIP, {"frame": 200, "error": "x"})
    c.send(P.END, {"frames": 300})  # within 256 of frame 200, but 299 frames never named
    assert refused(c.answers_until({P.ERROR, P.SUMMARY})[-1], "END with 300 frames is out of range")
    c = Raw(srv.address)
    c.hello(header, "short")
    c.send(P.SKIP, {"frame": 9, "error": "x"})
    c.send(P.END, {"frames": 5})  # fewer than the frames sent: its SUMMARY would count more than END
    assert refused(c.answers_until({P.ERROR, P.SUMMARY})[-1], "END with 5 frames, but frame 9 was sent")


def _crashed_edge(srv, header, packets, name: str) -> tuple[str, int, float]:
    """A stream with one frame recorded whose edge then vanished, its token with it (its
    session detached): the token, the frame recorded, and when its record was written (the
    resume window counts from then)."""
    c = Raw(srv.address)
    token = c.hello(header, name).json()["token"]
    c.chan.send(P.encode(P.PACKET, packets[0]))
    first = c.answers_until({P.ACK})[-1].json()["frame"]
    written = time.time()
    c.close()
    wait_for(lambda: srv.sessions.get(name) is not None and srv.sessions[name].conn is None, "detached")
    return token, first, written


def test_an_abandoned_streams_name_is_given_to_a_new_stream_after_the_resume_window(make_server, coded_stream):
    header, packets = coded_stream
    window = 5.0  # wide: the refused HELLO must come within it of the files' last change, on a loaded machine too
    srv = make_server(linger=0.2, resume_window=window)
    token, first, _ = _crashed_edge(srv, header, packets, "edge")
    # the session expires (linger): its files are closed, then it leaves the table
    wait_for(lambda: "edge" not in srv.sessions, "the session expired", seconds=10)
    gone = time.time()  # after the files' last change (the clock of their times)
    c = Raw(srv.address)
    assert refused(c.hello(header, "edge"), "in use")  # still within the window
    time.sleep(max(0.0, gone + window + 0.1 - time.time()))  # the window has passed since the last change
    c = Raw(srv.address)
    assert c.hello(header, "edge").type == P.WELCOME  # the name is free again
    assert [r["frame"] for r in records(srv, "edge.1")] == [first]  # the old stream's records are kept
    old = Raw(srv.address)  # and its token no longer takes the name
    assert refused(old.hello(header, "edge", resume=True, token=token), "in use")


@pytest.mark.parametrize(
    "body", [b'{"frames": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", b'{"frames": 1' + b"0" * 5000 + b"}"]
)
def test_json_the_parser_cannot_take_is_a_protocol_error(make_server, coded_stream, body):
    header, _ = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    c.hello(header, "json")
    c.chan.send(P.encode(P.END, body))
    assert refused(c.answers_until({P.ERROR, P.SUMMARY})[-1], "not valid JSON")
    c = Raw(srv.address)
    assert c.hello(header, "still-up").type == P.WELCOME


# --------------------------------------------------------------------------- 4, 5, 13: the handshake's checks


def test_a_header_with_the_right_hash_but_other_shapes_is_refused(make_server, coded_stream):
    header, _ = coded_stream
    h = StreamHeader.from_bytes(header)
    t = h.tensors[-1]
    big = dataclasses.replace(h, tensors=(*h.tensors[:-1], dataclasses.replace(t, height=300, width=300)))
    assert big.model_hash == h.model_hash
    srv = make_server()
    c = Raw(srv.address)
    assert refused(c.hello(big.to_bytes(), "shapes"), "are not")
    assert not (srv.out_dir / "shapes").exists()  # refused before any output was made


@pytest.mark.parametrize(
    "frame_size", [[20000, 20000], 5, [0, 0], [576], [576.0, 768], ["576", "768"], [True, 768], None]
)
def test_a_bad_frame_size_is_refused_before_any_work(make_server, coded_stream, frame_size):
    header, _ = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    assert refused(c.hello(header, "size", frame_size=frame_size), "frame_size")
    assert not (srv.out_dir / "size").exists()


def test_malformed_hellos_get_an_error_not_a_dropped_connection(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server()
    for body in (b"", b"\x01", b"\x01\x00\x00", struct.pack("<I", 1000) + b"{}", struct.pack("<I", 2) + b"[]"):
        c = Raw(srv.address)
        c.chan.send(P.encode(P.HELLO, body))
        assert c.chan.recv().type == P.ERROR
        c.close()
    c = Raw(srv.address)
    assert refused(c.hello(header, "x", protocol=1), "protocol version")
    c = Raw(srv.address)
    assert c.hello(header, "still-up").type == P.WELCOME


# --------------------------------------------------------------------------- 11: sizes before HELLO


def test_a_huge_message_before_hello_is_refused_unread(make_server):
    srv = make_server()
    c = Raw(srv.address)
    c.sock.sendall(struct.pack("<BI", P.HELLO, 200 << 20))  # announces 200 MiB, sends none
    assert refused(c.chan.recv(), "announces")
    c = Raw(srv.address)
    c.sock.sendall(struct.pack("<BI", P.PACKET, 10))
    assert refused(c.chan.recv(), "expected HELLO")  # nothing but HELLO before WELCOME


def test_a_silent_connection_is_closed_after_the_hello_timeout(make_server):
    srv = make_server(hello_timeout=0.5)
    c = Raw(srv.address, timeout=30)
    reply = c.chan.recv()  # the server speaks first: ERROR, then it closes
    assert refused(reply, "nothing received")
    with pytest.raises(P.ConnectionClosed):
        c.chan.recv()


# --------------------------------------------------------------------------- one client cannot take every slot


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def closed_at_once(address, source=None, first=b"", then=b"") -> bool:
    """A new socket (sending ``first``, then ``then``) is closed by the server unanswered;
    the reset may come during the connect or a send."""
    try:
        c = Raw(address, source=source, first=first)
        if then:
            c.sock.sendall(then)
    except (ConnectionResetError, BrokenPipeError):
        return True
    return closed_by_server(c.sock)


def test_one_address_cannot_hold_every_connection_slot(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server(max_connections_per_client=3, hello_timeout=60)
    idle = [Raw(srv.address) for _ in range(3)]  # sockets that never say HELLO
    wait_for(lambda: srv.per_client.get("127.0.0.1") == 3, "three connections counted")
    assert closed_at_once(srv.address)  # a fourth: refused at accept, unanswered
    other = Raw(srv.address, source="127.0.0.2")  # another client is served
    assert other.hello(header, "other").type == P.WELCOME
    idle[0].close()
    wait_for(lambda: srv.per_client.get("127.0.0.1") == 2, "a closed connection uncounted")
    again = Raw(srv.address)
    assert again.hello(header, "again").type == P.WELCOME


def test_one_client_cannot_hold_every_stream_slot(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server(max_streams=8, max_streams_per_client=2)
    mine = [Raw(srv.address) for _ in range(2)]
    assert all(c.hello(header, f"mine{k}").type == P.WELCOME for k, c in enumerate(mine))
    assert refused(
        Raw(srv.address).hello(header, "mine2"), "this client (127.0.0.1) is at its stream limit (2 attached)"
    )
    assert Raw(srv.address, source="127.0.0.2").hello(header, "theirs").type == P.WELCOME
    mine[0].close()  # a detached stream no longer counts
    wait_for(lambda: srv.sessions["mine0"].conn is None, "the closed stream detached")
    assert Raw(srv.address).hello(header, "mine3").type == P.WELCOME


def test_a_resumed_stream_counts_toward_its_clients_limit(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server(max_streams=8, max_streams_per_client=2)
    old = Raw(srv.address)
    token = old.hello(header, "old").json()["token"]
    old.close()
    wait_for(lambda: srv.sessions["old"].conn is None, "the stream detached")
    news = [Raw(srv.address) for _ in range(2)]
    assert all(c.hello(header, f"new{k}").type == P.WELCOME for k, c in enumerate(news))
    answer = Raw(srv.address).hello(header, "old", resume=True, token=token)  # a third attached stream
    assert refused(answer, "is at its stream limit (2 attached)") and answer.json()["retry"] is True
    news[0].close()
    wait_for(lambda: srv.sessions["new0"].conn is None, "a stream detached")
    assert Raw(srv.address).hello(header, "old", resume=True, token=token).type == P.WELCOME


def test_behind_a_proxy_the_proxy_protocol_names_each_client(make_server, coded_stream):
    from temposplit.server.proxy_header import V2_SIGNATURE

    header, _ = coded_stream
    srv = make_server(proxy_protocol=True, max_streams_per_client=1, handshake_timeout=1)

    def v1(source: str) -> bytes:
        return f"PROXY TCP4 {source} 10.0.0.1 40000 7300\r\n".encode()

    v2 = V2_SIGNATURE + bytes([0x21, 0x11, 0, 12]) + bytes([198, 51, 100, 9, 10, 0, 0, 1]) + struct.pack(">HH", 1, 2)
    a = Raw(srv.address, first=v1("203.0.113.7"))
    assert a.hello(header, "a").type == P.WELCOME
    assert json.loads((srv.out_dir / "a" / "session.json").read_text())["client"] == "203.0.113.7"
    assert refused(Raw(srv.address, first=v1("203.0.113.7")).hello(header, "a2"), "(203.0.113.7) is at its stream")
    assert Raw(srv.address, first=v1("203.0.113.8")).hello(header, "b").type == P.WELCOME  # same socket address
    assert Raw(srv.address, first=v2).hello(header, "c").type == P.WELCOME
    assert json.loads((srv.out_dir / "c" / "session.json").read_text())["client"] == "198.51.100.9"
    # Without the header (or with a bad one, or none in time) the connection is closed unanswered.
    hello = P.hello({"protocol": P.PROTOCOL_VERSION, "stream": "d", "frame_size": FRAME}, header)
    assert closed_at_once(srv.address, then=hello)
    assert closed_at_once(srv.address, first=b"PROXY TCP4 1.2.3.4\r\n")
    assert closed_at_once(srv.address)  # silent: closed after the handshake timeout
    assert "d" not in srv.sessions


def test_every_connection_slot_taken_refuses_further_sockets_until_one_frees(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server(max_connections=2, max_connections_per_client=0, hello_timeout=60)
    idle = [Raw(srv.address, source=f"127.0.0.{k + 2}") for k in range(2)]
    wait_for(lambda: sum(srv.per_client.values()) == 2, "two connections counted")
    assert closed_at_once(srv.address, source="127.0.0.9")
    idle[0].close()
    wait_for(lambda: sum(srv.per_client.values()) == 1, "a closed connection uncounted")
    assert Raw(srv.address).hello(header, "freed").type == P.WELCOME


def test_stopping_closes_sockets_still_reading_their_proxy_header(make_server, monkeypatch):
    from temposplit.server.worker import Worker

    stop = Worker.stop

    def slow_stop(self, timeout):  # workers finishing queued frames: the stop takes a while
        time.sleep(5)
        return stop(self, timeout)

    monkeypatch.setattr(Worker, "stop", slow_stop)
    srv = make_server(proxy_protocol=True, handshake_timeout=60)
    pending = Raw(srv.address, timeout=2)  # connected, no header yet
    wait_for(lambda: srv.accepting == 1, "the socket accepted")
    srv.request_stop()  # the workers now take 5 s to stop; the socket must not wait for that
    wait_for(lambda: srv.accepting == 0, "the pending socket ended before the workers stopped", seconds=3)
    try:
        pending.sock.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    except (ConnectionResetError, BrokenPipeError):
        return
    assert closed_by_server(pending.sock)  # closed at the stop (within the socket's 2 s), not served


def test_the_resume_window_frees_a_name_whose_detached_session_still_lingers(make_server, coded_stream):
    """A session kept longer than the resume window (linger 60 s, window 5 s): the name was
    held for the linger, whatever the window said. Past the window, a new stream's HELLO now
    expires the session at once and takes the name; the old stream's records are kept."""
    header, packets = coded_stream
    window = 5.0  # wide: the refused HELLO must come within it of the files' last change, on a loaded machine too
    srv = make_server(linger=60.0, resume_window=window)
    token, first, written = _crashed_edge(srv, header, packets, "cam")
    c = Raw(srv.address)
    assert refused(c.hello(header, "cam"), "in use")  # within the window
    time.sleep(max(0.0, written + window + 0.1 - time.time()))  # the window has passed since the last change
    c = Raw(srv.address)
    assert c.hello(header, "cam").type == P.WELCOME  # the session still lingered: expired now
    assert [r["frame"] for r in records(srv, "cam.1")] == [first]
    old = Raw(srv.address)
    assert refused(old.hello(header, "cam", resume=True, token=token), "in use")


def test_an_expirys_close_does_not_restart_the_resume_window(make_server, coded_stream):
    """The session expires (linger 1 s) and its close rewrites session.json, whose time is
    what the window counts from: the name was held for the linger and a whole window more
    ('in use ... in 1 s' at 2.8 s with a window of 2.5 s). The close keeps the file's time."""
    header, packets = coded_stream
    srv = make_server(linger=1.0, resume_window=2.5)
    _, _, written = _crashed_edge(srv, header, packets, "cam")
    wait_for(lambda: "cam" not in srv.sessions, "expired, its files closed")
    time.sleep(max(0.0, written + 2.8 - time.time()))
    assert Raw(srv.address).hello(header, "cam").type == P.WELCOME


def test_a_shutdown_as_a_new_stream_takes_a_lingering_name_still_closes_its_files(make_server, coded_stream):
    """The HELLO that expires a lingering session queues its close on the event loop, in
    order with the shutdown's: a stop requested right after it once left the session marked
    closing with no close queued (its video never finalised, its log never synced)."""
    header, packets = coded_stream
    srv = make_server(linger=60.0, resume_window=1.0)
    _crashed_edge(srv, header, packets, "cam")
    s = srv.sessions["cam"]
    time.sleep(1.2)
    log = srv.log

    def stop_there(msg):
        log(msg)
        if "past the resume window" in msg:  # the moment the HELLO has taken the name (on the event loop)
            srv.request_stop()  # the stop runs as soon as the HELLO waits for the session's close

    srv.log = stop_there
    Raw(srv.address).send_hello(header, "cam")
    assert srv._done.wait(60)
    assert s.closed.is_set()
