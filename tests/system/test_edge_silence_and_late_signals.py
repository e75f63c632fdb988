"""A server silent while the edge's window is full, and a signal after the edge's last frame.

docs/protocol.md, "Flow control at the edge": silence with frames unacknowledged is first
taken for a half-open connection, replaced once (a resume); silent again, the server is
given up. The edge sees that silence in two places, each started by the same last answer:
its receiving thread's read of the socket and, with the window full, its main thread's
wait for an answer. Whichever ends first, it is one silence: one resume. The main thread's
wait ended the stream at once ("no answer from the server"), without the resume, when it
came first (4 runs in 7 of a server that went silent). The fake server here makes it come
first every time: its bytes stop part way through a message, so the receiving thread's
read, which some byte always ends within the timeout, never times out.

A SIGINT or SIGTERM that reaches the edge after its last frame, while it waits for the
last answers or the SUMMARY, was lost: exit status 0, no line. It ends as a signal during
the stream does: one line, 130 or 143 (as the demo's "after the stream ended").

Fake servers on loopback (test_edge_faults.Peer), the edge as a process."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from rawclient import wait_for
from replays import synthetic_replay
from test_edge_faults import _message, _one_line

from temposplit import protocol as P
from temposplit.codec.bitstream import parse_packet

TOKEN = "ab" * 16
FRAMES = 100  # past the edge's window (64) and the frames answered before the server stalls
ANSWERED = 10  # the frames the first connection answers before it stalls


def _edge(replay: str, address, *options: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """``temposplit edge --replay`` as a process: its exit status, stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "temposplit", "edge", "--replay", replay, "--server", f"{address[0]}:{address[1]}"]
        + ["--stream", "s", *options],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout, done.stderr


def _index(msg: P.Message) -> int:
    return parse_packet(P.split_packet_at(msg.body)[2], 0, 1 << 24)[0].index


def _summary(frames: int) -> bytes:
    body = {"stream": "s", "frames": frames, "decoded": frames, "recorded": [[0, frames]], "failed": [], "errors": 0}
    return _message(P.SUMMARY, body)


class Stalling:
    """A fake server whose first connections answer as many packets as ``answers`` says
    (one count a connection) and then stall: ``stuck``, its bytes stop part way through an ACK
    (the message's head, then a byte of its body now and then, well within the edge's
    timeout, never the whole of it: a sender stuck mid-message); else nothing more (silent).
    Either way it goes on reading every packet (a half-open connection's kernel would).
    Its later connections answer as a server does: WELCOME with the frames recorded, an
    ACK of each packet (``duplicate`` for one recorded before), SUMMARY at END."""

    def __init__(self, stuck: bool, answers=(ANSWERED,)):
        self.stuck, self.answers = stuck, list(answers)
        self.recorded: set[int] = set()
        self.connections = 0
        self.lock = threading.Lock()

    def __call__(self, conn) -> None:
        try:
            self._serve(conn)
        except (OSError, P.ProtocolError):  # the edge closed the stalled connection
            pass

    def _serve(self, conn) -> None:
        chan = P.Channel(conn)
        assert chan.recv().type == P.HELLO
        with self.lock:
            n = self.connections
            self.connections += 1
            top = max(self.recorded, default=-1) + 1
            welcome = {"protocol": 2, "stream": "s", "token": TOKEN, "next_frame": top}
            welcome["recorded"] = P.to_ranges(self.recorded)
        conn.sendall(_message(P.WELCOME, welcome))
        stalls = n < len(self.answers)
        before = self.answers[n] if stalls else 0  # the packets answered before the stall
        answered = 0
        while True:
            msg = chan.recv()
            if msg.type == P.END:
                conn.sendall(_summary(msg.json()["frames"]))
                return
            if msg.type != P.PACKET_AT:
                continue
            index = _index(msg)
            if stalls and answered == before:
                answered += 1
                if self.stuck:
                    threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()
                continue
            if stalls and answered > before:
                continue  # read, never answered
            answered += 1
            with self.lock:
                seen = index in self.recorded
                self.recorded.add(index)
            ack = {"frame": index, "duplicate": True} if seen else {"frame": index, "detections": []}
            conn.sendall(_message(P.ACK, ack))

    @staticmethod
    def _trickle(conn) -> None:
        """An ACK's head announcing 1000 bytes, then one byte of them every 0.2 s (the edge's
        timeout is 1 s) until the edge closes the connection."""
        try:
            conn.sendall(struct.pack("<BI", P.ACK, 1000))  # (protocol.py's message head)
            for _ in range(999):
                conn.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            pass


def test_a_silence_the_full_windows_wait_sees_first_is_replaced_once_and_every_frame_recorded(tmp_path, peer):
    """The server stalls mid-message with the window full: the main thread's wait, not the
    receiving thread's read, ends first. The edge closes that connection, resumes on a new
    one, resends what was unacknowledged, and the stream ends whole: every frame recorded,
    exit status 0, one reconnect. It exited 2 ("no answer from the server for 1 s") on the
    first connection."""
    server = Stalling(stuck=True)
    p = peer(server)
    rc, out, err = _edge(synthetic_replay(tmp_path / "r.npz", FRAMES), p.address, "--timeout", "1")
    assert (rc, err) == (0, ""), err
    assert p.accepted == 2 and out.count("connection lost; reconnecting") == 1, out
    assert server.recorded == set(range(FRAMES))
    assert f"server: stream s, {FRAMES} of {FRAMES} frames recorded" in out.splitlines()[-1], out


def test_a_server_silent_on_the_new_connection_too_is_given_up_after_one_resume(tmp_path, peer):
    """Stalled on the first connection and on the resume's (which answers nothing): the second
    silence gives up, one line, exit status 2, after two connections (the closed first one's end, read after the
    resume, counts for nothing). It gave up on the first, without a resume."""
    server = Stalling(stuck=True, answers=(ANSWERED, 0))
    p = peer(server)
    rc, _, err = _edge(synthetic_replay(tmp_path / "r.npz", FRAMES), p.address, "--timeout", "1")
    assert rc == 2
    _one_line(err, "no answer from the server for 1 s, on a new connection too: giving up")
    assert p.accepted == 2


def test_a_server_gone_silent_with_the_window_full_is_resumed_once_whichever_wait_ends_first(tmp_path, peer):
    """The review's case: the server sends nothing more (and reads on). Both waits may end
    first (the receiving thread's Silent may come after the main thread resumed, from the
    closed connection): either way one resume, every frame recorded, exit status 0."""
    server = Stalling(stuck=False)
    p = peer(server)
    rc, out, err = _edge(synthetic_replay(tmp_path / "r.npz", FRAMES), p.address, "--timeout", "1")
    assert (rc, err) == (0, ""), err
    assert p.accepted == 2 and out.count("connection lost; reconnecting") == 1, out
    assert server.recorded == set(range(FRAMES))


# ---------------------------------------------------------------------------- a signal after the last frame


def _pending(pid: int, sig: int) -> bool:
    """Whether ``sig`` is still pending for process ``pid`` (not yet taken by its handler)."""
    bit = 1 << (sig - 1)
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return any(int(fields[k], 16) & bit for k in ("SigPnd", "ShdPnd"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the edge's pending signals in /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_the_last_frame_ends_with_the_signals_status_and_one_line(tmp_path, peer, sig):
    """The fake server signals the edge when its END comes, and answers the SUMMARY once the
    edge has taken the signal: the stream is ended as it would have been (every frame
    recorded), and the edge says it was stopped after the stream ended, exit status
    128 + the signal. It exited 0 with no line."""
    edge: list[subprocess.Popen] = []

    def serve(conn):
        chan = P.Channel(conn)
        assert chan.recv().type == P.HELLO
        conn.sendall(_message(P.WELCOME, {"protocol": 2, "stream": "s", "token": TOKEN, "next_frame": 0}))
        while True:
            msg = chan.recv()
            if msg.type == P.PACKET_AT:
                conn.sendall(_message(P.ACK, {"frame": _index(msg), "detections": []}))
            elif msg.type == P.END:
                wait_for(lambda: edge, "the edge's process")
                edge[0].send_signal(sig)
                wait_for(lambda: not _pending(edge[0].pid, sig), "the edge taking the signal")
                conn.sendall(_summary(msg.json()["frames"]))
                return

    p = peer(serve)
    replay = synthetic_replay(tmp_path / "r.npz", 20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "temposplit", "edge", "--replay", replay, "--server", f"{p.address[0]}:{p.address[1]}"]
        + ["--stream", "s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    edge.append(proc)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + sig, err
    name = signal.Signals(sig).name
    _one_line(err, f"stopped by {name} after the stream ended: 20 frame(s) sent; server: stream s, 20 of 20 frames")


def test_a_signal_while_a_full_live_stream_ends_starts_no_next_stream():
    """A camera's stream that is full is ended and a new one goes on (stream_on); a signal
    that came while the full one ended stops there, for the CLI's line, not on into a new
    stream that the signal no longer stops."""
    from temposplit.host.cli import stream_on

    made = []

    class Stand:
        stream, left_over = "cam", "picture"

        def __init__(self):
            self.stop = None

        def run(self, frames, video=None, total=None, positions=True):
            if len(made) == 1:  # the full stream, the signal taken while it ended
                self.stop = "stopped by SIGTERM"
                return SimpleNamespace(full=True, frames=5, bytes=0, errors={}, summary=None)
            return SimpleNamespace(full=False, frames=1, bytes=0, errors={}, summary=None)

    def make_edge():
        made.append(Stand())
        return made[-1]

    current = [make_edge()]
    report = stream_on(current, make_edge, iter([]), {}, None, live=True)
    assert report.full and len(made) == 1 and current[0] is made[0]
