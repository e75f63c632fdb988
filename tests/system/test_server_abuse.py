"""The server against clients that abuse it on purpose (real sockets on loopback, a real
stream from the SSD's M1 and the codec): a client that never reads, client text made to
be echoed or logged, a source video the server cannot read, one stream failing in the
worker, slow HELLOs, oversized control messages and a resume racing an open. Each one
harms that client's own connection or stream only."""

import json
import os
import select
import socket
import struct
import threading
import time

import pytest
from rawclient import FRAME, Raw, refused, wait_for  # tests/system's hand-speaking client

from temposplit import protocol as P

pytestmark = [pytest.mark.slow, pytest.mark.models]


def server_sockets(port: int) -> int:
    """Descriptors this process (the server runs in it) holds for sockets accepted on
    ``port``: a socket whose descriptor is closed is an orphan of the kernel (inode 0)."""
    accepted = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] != "0A":  # not the listening socket
                accepted.add(f[9])
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            held.add(link[8:-1])
    return len(accepted & held)


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux's /proc/net/tcp")


def counted_while_open(srv) -> bool:
    """Every socket the server holds counts toward the connection limits (the count is
    read first: it can only fall before the descriptors are listed, no client connects)."""
    counted = sum(srv.per_client.values()) + srv.accepting
    return server_sockets(srv.address[1]) <= counted


# --------------------------------------------------------------------------- a client that never reads


@needs_proc
def test_a_reply_the_client_never_reads_is_reset_after_the_write_timeout(make_server, coded_stream):
    header, _ = coded_stream
    lines = []
    srv = make_server(write_timeout=0.5, log=lines.append)
    c = Raw(srv.address, rcvbuf=1024)
    assert c.hello(header, "sink").type == P.WELCOME
    (conn,) = list(srv.connections)
    conn.post(b"\0" * (8 << 20), release=False)  # more than the socket buffers hold, as a backlog of ACKs
    # The write times out; the socket is reset, and counted until then: never a socket kept uncounted.
    for _ in range(400):  # bounded
        assert counted_while_open(srv)
        if server_sockets(srv.address[1]) == 0:
            break
        time.sleep(0.05)
    assert server_sockets(srv.address[1]) == 0
    # (the count is dropped after the descriptor is closed: awaited, not read at once)
    wait_for(lambda: not srv.per_client, "the connection uncounted", seconds=10)
    assert "[sink] takes no reply for 0.5 s: connection reset" in lines  # said, not silent
    c.close()


@needs_proc
def test_refused_hellos_a_client_never_reads_free_their_sockets(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server()
    value = "\N{GRINNING FACE}" * 3500  # echoed in full, the ERROR would not fit the socket buffers
    clients = [Raw(srv.address, rcvbuf=1024) for _ in range(6)]
    wait_for(lambda: srv.per_client.get("127.0.0.1") == 6, "the connections counted")
    for c in clients:
        c.send_hello(header, "never-reads", protocol=value)
    for _ in range(400):  # bounded (CLOSE_TIMEOUT is 5 s)
        assert counted_while_open(srv)
        if server_sockets(srv.address[1]) == 0:
            break
        time.sleep(0.05)
    assert server_sockets(srv.address[1]) == 0  # no descriptor held for a client that does not read
    wait_for(lambda: not srv.per_client, "the connections uncounted", seconds=10)  # (dropped after the close)
    for c in clients:
        c.close()


def test_client_text_in_an_error_and_in_the_log_is_one_short_line(make_server, coded_stream):
    header, _ = coded_stream
    lines = []
    srv = make_server(log=lines.append)
    forged = "3\n[cam1] edge resumed\nserver: all good" + "\N{GRINNING FACE}" * 3500
    c = Raw(srv.address)
    reply = c.hello(header, "cam0", protocol=forged)
    assert refused(reply, "protocol version")
    message = reply.json()["message"]
    assert "\n" not in message and len(message) <= 400
    assert len(reply.body) <= 4096
    c = Raw(srv.address)
    reply = c.hello(header, "x" * 5000 + "\n[cam1] edge resumed")  # an invalid name, quoted
    assert refused(reply, "invalid stream name") and len(reply.json()["message"]) <= 400
    wait_for(lambda: sum("connection from" in line for line in lines) >= 2, "both refusals logged")
    assert all("\n" not in line and len(line) <= 400 for line in lines)
    assert not any(line.startswith("[cam1]") or line.startswith("server: all good") for line in lines)


def test_a_skips_text_is_kept_short_and_a_refused_frame_is_logged(make_server, coded_stream):
    """A SKIP may carry 64 KiB of text: its record keeps one line of at most 200 characters
    (the disk, and a resume that reads the records back, pay no more than for a frame). A
    SKIP the stream's rules refuse is an ERROR to the edge and a line in the log."""
    header, _ = coded_stream
    lines = []
    srv = make_server(log=lines.append)
    c = Raw(srv.address)
    assert c.hello(header, "skipper").type == P.WELCOME
    c.send(P.SKIP, {"frame": 0, "error": "camera\u2028lost " * 3000})  # 51 KB, line separators in it
    c.send(P.SKIP, {"frame": 100000})  # far beyond the holes a stream may leave
    (reply,) = c.answers_until({P.ERROR})
    assert refused(reply, "frame")
    why = reply.json()["message"]
    wait_for(lambda: f"[skipper] refused: {why}" in lines, "the refusal logged")
    (record,) = [json.loads(line) for line in (srv.out_dir / "skipper" / "detections.jsonl").read_text().splitlines()]
    assert record["frame"] == 0 and record["error"].startswith("edge: camera lost camera lost")
    assert len(record["error"]) <= len("edge: ") + 200 and "\u2028" not in record["error"]
    c.close()


# --------------------------------------------------------------------------- --local-video


def test_an_unreadable_local_video_costs_that_stream_its_drawing_only(make_server, coded_stream, tmp_path):
    """A source the server cannot read (opened at the HELLO, never in the worker, where it
    failed every stream of the batch) is logged, and that stream's video is drawn on the
    features; its detections and every other stream are served as usual."""
    from temposplit.model import data

    header, packets = coded_stream
    said = []
    srv = make_server(local_video=True, log=said.append)
    victim = Raw(srv.address)
    assert victim.hello(header, "victim").type == P.WELCOME
    for p in packets[:4]:
        victim.chan.send(P.encode(P.PACKET, p))
    notvideo = tmp_path / "cam.mp4"
    notvideo.write_bytes(bytes(range(256)) * 64)
    bad = []
    for k, path in enumerate(["/home/edge/cam.mp4", str(notvideo), str(tmp_path), 12]):
        client = Raw(srv.address)
        assert client.hello(header, f"bad{k}", video=path).type == P.WELCOME
        bad.append(client)
    for client in bad:  # their frames share the worker's batches with the victim's
        client.chan.send(P.encode(P.PACKET, packets[0]))
    for p in packets[4:]:
        victim.chan.send(P.encode(P.PACKET, p))
    victim.chan.send(P.control(P.END, {"frames": len(packets)}))
    answers = victim.answers_until({P.SUMMARY, P.ERROR})
    assert answers[-1].type == P.SUMMARY and answers[-1].json()["decoded"] == len(packets)
    for k, client in enumerate(bad):
        client.chan.send(P.control(P.END, {"frames": len(packets)}))  # packets[0] is a bi-3 group's anchor, frame 1
        assert client.answers_until({P.SUMMARY, P.ERROR})[-1].type == P.SUMMARY
        assert (srv.out_dir / f"bad{k}" / "annotated.mp4").is_file()
    unreadable = [line for line in said if "cannot be read on this server" in line]
    assert len(unreadable) == 4 and all("\n" not in line for line in unreadable)
    if data.vtest_path().is_file():  # a readable source is drawn on
        good = Raw(srv.address)
        assert good.hello(header, "good", video=str(data.vtest_path())).type == P.WELCOME
        for p in packets:
            good.chan.send(P.encode(P.PACKET, p))
        good.chan.send(P.control(P.END, {"frames": len(packets)}))
        assert good.answers_until({P.SUMMARY, P.ERROR})[-1].type == P.SUMMARY
        assert not any("[good]" in line and "cannot be read" in line for line in said)


# --------------------------------------------------------------------------- one stream failing in the worker


def test_a_streams_failure_in_the_worker_fails_that_stream_only(make_server, coded_stream):
    header, packets = coded_stream
    srv = make_server(linger=1.0)
    bad, victim, idle = Raw(srv.address), Raw(srv.address), Raw(srv.address)
    assert bad.hello(header, "bad").type == P.WELCOME
    assert victim.hello(header, "victim").type == P.WELCOME
    assert idle.hello(header, "idle").type == P.WELCOME
    gone = srv.sessions["idle"]
    worker = srv.sessions["bad"].worker

    # The bad stream's outputs fail (as on a full disk); its first record holds the worker
    # until the queue holds the batch below.
    s = srv.sessions["bad"]
    original, entered, gate = s.record, threading.Event(), threading.Event()

    def record(*args, **kwargs):
        if not entered.is_set():
            entered.set()
            assert gate.wait(60)
            return original(*args, **kwargs)
        raise OSError(28, "No space left on device (the test's)")

    s.record = record
    try:
        bad.chan.send(P.encode(P.PACKET, packets[0]))
        assert entered.wait(30)
        for p in packets[1:]:
            bad.chan.send(P.encode(P.PACKET, p))
        wait_for(lambda: worker.queued() == len(packets) - 1, "the bad stream's frames queued")
        idle.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        idle.close()  # its session expires after 1 s: a close item in the same batch
        wait_for(lambda: gone.closing and worker.queued() == len(packets), "the idle stream's close queued")
        for p in packets:
            victim.chan.send(P.encode(P.PACKET, p))
        victim.chan.send(P.control(P.END, {"frames": len(packets)}))
        wait_for(lambda: worker.queued() == 2 * len(packets) + 1, "the victim's frames and END queued")
    finally:
        gate.set()
    answers = victim.answers_until({P.SUMMARY, P.ERROR})
    assert answers[-1].type == P.SUMMARY, answers[-1].body
    assert answers[-1].json()["decoded"] == len(packets)
    assert refused(bad.answers_until({P.ERROR, P.SUMMARY})[-1], "internal server error")
    assert gone.closed.wait(30)  # the close ran: its files are closed, a resume need not wait
    wait_for(lambda: "idle" not in srv.sessions, "the closed session dropped")
    assert json.loads((srv.out_dir / "idle" / "session.json").read_text())["finished"] is False


# --------------------------------------------------------------------------- the documented limits


def test_the_hello_deadline_covers_its_head_and_body(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server(hello_timeout=2.0)
    obj = {"protocol": P.PROTOCOL_VERSION, "stream": "slow", "frame_size": FRAME}
    data = P.hello(obj, header)
    head, body = data[: P.HEAD_SIZE], data[P.HEAD_SIZE :]
    # The head over 1.4 s, then the body over 1.4 s: each within the timeout, not the whole.
    chunks = [head[:1], head[1:2], head[2:3], head[3:4], head[4:]]
    step = -(-len(body) // 5)
    chunks += [body[k : k + step] for k in range(0, len(body), step)]
    c = Raw(srv.address)
    start = time.monotonic()
    answered = False
    for k, chunk in enumerate(chunks):
        if k:
            due = start + 0.35 * k
            readable, _, _ = select.select([c.sock], [], [], max(0.0, due - time.monotonic()))
            if readable:
                answered = True
                break
        c.sock.sendall(chunk)
    assert answered  # the server spoke before the HELLO was complete
    reply = c.chan.recv()
    assert refused(reply, "not complete within 2 s"), reply.body


def test_a_control_message_over_its_limit_is_refused_from_its_head(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server()
    c = Raw(srv.address, timeout=15)
    assert c.hello(header, "big").type == P.WELCOME
    c.sock.sendall(struct.pack("<BI", P.SKIP, P.MAX_CONTROL + 1))  # within the PACKET limit; no body follows
    reply = c.chan.recv()  # answered from the head: the server waits for no body
    assert refused(reply, f"announces {P.MAX_CONTROL + 1} bytes"), reply.body


def test_a_resume_while_the_name_is_being_opened_is_told_to_retry(make_server, coded_stream, monkeypatch):
    header, _ = coded_stream
    srv = make_server()
    original, entered, gate = srv.models.plan, threading.Event(), threading.Event()

    def plan(*args, **kwargs):
        entered.set()
        assert gate.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(srv.models, "plan", plan)
    first = Raw(srv.address)
    replies = []
    opener = threading.Thread(target=lambda: replies.append(first.hello(header, "cam")))
    opener.start()
    try:
        assert entered.wait(30)  # "cam" is being opened
        second = Raw(srv.address)
        reply = second.hello(header, "cam", resume=True, token="0" * 32)
        assert refused(reply, "try again") and reply.json().get("retry") is True
        other = Raw(srv.address)
        assert refused(other.hello(header, "cam"), "in use")  # a new stream of that name: no retry
    finally:
        gate.set()
        opener.join(30)
    assert replies and replies[0].type == P.WELCOME


def test_one_client_cannot_make_stream_folders_without_bound(make_server, coded_stream):
    header, _ = coded_stream
    srv = make_server(max_new_streams_per_client=3)
    for k in range(3):
        c = Raw(srv.address)
        welcome = c.hello(header, f"churn{k}")
        assert welcome.type == P.WELCOME
        c.chan.send(P.control(P.END, {"frames": 0}))
        assert c.answers_until({P.SUMMARY, P.ERROR})[-1].type == P.SUMMARY
        c.close()
    c = Raw(srv.address)
    reply = c.hello(header, "churn3")
    assert refused(reply, "made 3 new streams in 60 s") and reply.json().get("retry") is True
    assert not (srv.out_dir / "churn3").exists()
    c = Raw(srv.address)
    assert refused(c.hello(header, "churn0"), "made 3 new streams")  # a finished name reused is a new folder too
    other = Raw(srv.address, source="127.0.0.2")  # another client is served
    assert other.hello(header, "other").type == P.WELCOME


def test_a_negative_new_stream_rate_is_a_one_line_error(capsys):
    from temposplit.cli import main

    assert main(["serve", "--max-new-streams-per-client", "-1", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-new-streams-per-client must be 0" in err[0]
