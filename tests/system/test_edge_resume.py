"""An edge that stopped (killed, crashed, its board's power cut) and is run again resumes its
stream: the token kept on disk (host/resume.py) instead of its name refused for the server's
resume window. Real sockets on loopback, a real server; the edge as a process where it is
killed."""

import json
import signal
import subprocess
import sys

import pytest
from rawclient import wait_for
from replays import tiled_replay

from temposplit.codec.encoder import PRESETS
from temposplit.errors import ConfigError, TemposplitError
from temposplit.host.edge import Edge
from temposplit.host.resume import ResumeState, source_identity
from temposplit.host.sources import open_replay

CODEC = {**PRESETS["recommended"], "fps": 10.0}


def needs_models(fn):
    return pytest.mark.slow(pytest.mark.models(fn))


def _edge_argv(replay: str, srv, *options: str) -> list[str]:
    where = f"{srv.address[0]}:{srv.address[1]}"
    return [sys.executable, "-m", "temposplit", "edge", "--replay", replay, "--server", where, *options]


def _frames_logged(srv, stream: str) -> list[int]:
    log = srv.out_dir / stream / "detections.jsonl"
    return [json.loads(x)["frame"] for x in log.read_text().splitlines()] if log.is_file() else []


def _killed_after(argv, srv, stream: str, records: int) -> None:
    """Run the edge until the server holds ``records`` records of ``stream``, then SIGKILL it."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(_frames_logged(srv, stream)) >= records, f"{records} records", seconds=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@needs_models
def test_an_edge_killed_mid_stream_resumes_its_stream_when_run_again(make_server, replay_file, tmp_path):
    """The rerun takes the stream up where the server's record ends: every frame of the file
    recorded exactly once, the stream finished, the token gone; a third run is a new stream."""
    srv = make_server()
    clip = tiled_replay(replay_file, tmp_path / "clip.npz", 300)
    argv = _edge_argv(clip, srv, "--stream", "cam", "--state", str(tmp_path / "state"))
    _killed_after(argv, srv, "cam", 20)
    kept = list((tmp_path / "state").glob("*.json"))
    assert len(kept) == 1  # the token, kept while the stream runs
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    resumed = [line for line in done.stdout.splitlines() if line.startswith("resumed stream 'cam' at frame ")]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= 20
    assert sorted(_frames_logged(srv, "cam")) == list(range(300))  # each once: none lost, none twice
    assert json.loads((srv.out_dir / "cam" / "session.json").read_text())["finished"] is True
    assert "300 of 300 frames recorded" in done.stdout
    assert not list((tmp_path / "state").glob("*.json"))  # finished: nothing to resume
    again = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "resumed" not in again.stdout  # a new stream; the old one moved aside
    assert (srv.out_dir / "cam.1" / "detections.jsonl").is_file()


@needs_models
def test_a_rerun_with_other_settings_or_another_file_is_refused_naming_the_state(make_server, replay_file, tmp_path):
    srv = make_server()
    clip = tiled_replay(replay_file, tmp_path / "clip.npz", 300)
    state = ["--state", str(tmp_path / "state")]
    _killed_after(_edge_argv(clip, srv, "--stream", "cam", *state), srv, "cam", 10)
    other = tiled_replay(replay_file, tmp_path / "other.npz", 301)
    for argv, words in (
        (_edge_argv(clip, srv, "--stream", "cam", "--bits", "6", *state), "was left unfinished with other settings"),
        (_edge_argv(other, srv, "--stream", "cam", *state), "was left unfinished reading"),
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "its resume state: " in lines[0], done.stderr
    assert len(_frames_logged(srv, "cam")) < 300  # nothing was sent into the unfinished stream


@needs_models
def test_a_kept_token_the_server_does_not_know_starts_a_new_stream(make_server, replay_file, tmp_path):
    """A server whose --out was emptied (or another server at the address): the resume is
    refused as unknown, and the edge opens a new stream instead of failing."""
    srv = make_server()
    replay = open_replay(str(replay_file))
    rs = ResumeState(tmp_path / "state", f"{srv.address[0]}:{srv.address[1]}", "cam")
    edge = Edge(replay, dict(CODEC), srv.address, "cam", resume_state=rs, source_id=source_identity(str(replay_file)))
    header = edge_header(replay)
    rs.save("00" * 16, header, source_identity(str(replay_file)))
    report = edge.run(replay.frames(), total=replay.count)
    assert report.acked == replay.count and not report.errors
    assert rs.read() is None


def edge_header(replay) -> str:
    """The SHA-256 of the stream header an edge of CODEC writes for ``replay``."""
    import hashlib

    from temposplit.codec.encoder import CodecConfig, Encoder

    sample = next(iter(replay.frames()))
    cut = replay.m1([sample])[0]
    codec = dict(CODEC)
    config = CodecConfig(
        tensors=replay.tensor_specs(cut, codec.pop("block", None)),
        model_id=replay.model,
        cut_id=replay.cut.name,
        model_hash=replay.model_hash(cut),
        **codec,
    )
    return hashlib.sha256(Encoder(config).header_bytes()).hexdigest()


class Crash(Exception):
    """The edge's process dying after a frame (its fault hook raises it)."""


def _crashed_at(index: int, replay, srv, rs, source: str, **run) -> None:
    """An edge of stream "cam" that dies right after sending frame ``index``, its token kept
    in ``rs``; returns once the server has recorded the frames before it."""

    def crash(i, chan):
        if i == index:
            raise Crash

    edge = Edge(replay, dict(CODEC), srv.address, "cam", resume_state=rs, source_id=source)
    edge.fault = crash
    with pytest.raises(Crash):
        edge.run(replay.frames(), **run)
    edge.chan.close()
    wait_for(lambda: len(_frames_logged(srv, "cam")) >= index, "the first frames' records", seconds=60)


@needs_models
def test_a_camera_resumed_numbers_its_frames_on(make_server, replay_file, tmp_path):
    """A source whose frames are not positions in a file (a camera): the resumed stream's
    frames are numbered on from the server's next frame."""
    srv = make_server()
    replay = open_replay(str(replay_file))
    rs = ResumeState(tmp_path / "state", f"{srv.address[0]}:{srv.address[1]}", "cam")
    source = source_identity("/dev/video0")

    _crashed_at(5, replay, srv, rs, source, positions=False)
    assert rs.read() is not None
    second = Edge(replay, dict(CODEC), srv.address, "cam", resume_state=rs, source_id=source)
    report = second.run(replay.frames(), positions=False)
    start = report.frames - replay.count
    assert 5 <= start <= 6 and not report.errors
    assert sorted(set(_frames_logged(srv, "cam"))) == list(range(start + replay.count))
    assert rs.read() is None


@needs_models
def test_a_stream_resumed_after_the_server_and_the_edge_restarted_names_both_video_segments(
    make_server, replay_file, tmp_path
):
    """A power cut of both ends: the restarted server resumes the stream from its files (its
    video goes on in a second segment) for the restarted edge's kept token; the SUMMARY
    names both segments, not the last alone."""
    srv = make_server()
    replay = open_replay(str(replay_file))
    source = source_identity(str(replay_file))
    rs = ResumeState(tmp_path / "state", "127.0.0.1:7300", "cam")  # the server's address, kept across its restart

    _crashed_at(4, replay, srv, rs, source, total=replay.count)
    srv.shutdown()
    again = make_server()
    second = Edge(replay, dict(CODEC), again.address, "cam", resume_state=rs, source_id=source)
    report = second.run(replay.frames(), total=replay.count)
    assert not report.errors and sorted(set(_frames_logged(again, "cam"))) == list(range(replay.count))
    out = again.out_dir / "cam"
    assert report.summary["videos"] == [str(out / "annotated.mp4"), str(out / "annotated.1.mp4")]
    from temposplit.host.cli import summary_line

    assert f"video in 2 segments {out / 'annotated.mp4'}, {out / 'annotated.1.mp4'}" in summary_line(report.summary)


def test_a_second_edge_of_the_same_stream_on_this_machine_is_refused(tmp_path):
    """It would resume, and so take over, the stream the first edge is still sending."""
    a = ResumeState(tmp_path, "127.0.0.1:7300", "cam")
    b = ResumeState(tmp_path, "127.0.0.1:7300", "cam")
    a.acquire()
    try:
        with pytest.raises(ConfigError, match="another edge on this machine is sending stream 'cam'"):
            b.acquire()
        ResumeState(tmp_path, "127.0.0.1:7300", "cam2").acquire()  # another stream: its own lock
    finally:
        a.release()
    b.acquire()  # free once the first is done
    b.release()


def test_a_damaged_or_foreign_state_file_is_no_state(tmp_path):
    rs = ResumeState(tmp_path, "127.0.0.1:7300", "cam")
    assert rs.read() is None
    rs.save("ab" * 16, "cd" * 32, "/videos/a.mp4 (10 bytes)")
    assert rs.read()["token"] == "ab" * 16
    rs.path.write_text("{not json")
    assert rs.read() is None
    rs.path.write_text(json.dumps({"format": 1, "server": "127.0.0.1:7300", "stream": "other"}))
    assert rs.read() is None
    rs.clear()
    assert not rs.path.exists()


def test_the_token_is_readable_by_its_user_alone(tmp_path):
    """The token, what a stream's ownership rests on without mutual TLS, was written 0644 in
    a 0755 folder (the umask's): any user of the machine could read it and take the stream
    over. The folder is made 0700 and the file written 0600, and so is a token saved again
    over one left readable."""
    import os
    import stat

    umask = os.umask(0o022)  # a common one: what the files' modes came from
    try:
        rs = ResumeState(tmp_path / "state" / "edge", "127.0.0.1:7300", "cam")
        rs.acquire()  # (makes the folder, for its lock, before the token is saved)
        rs.release()
        rs.save("ab" * 16, "cd" * 32, "/videos/a.mp4 (10 bytes)")
        assert stat.S_IMODE(rs.path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(rs.path.stat().st_mode) == 0o600
        rs.path.chmod(0o644)
        rs.save("ef" * 16, "cd" * 32, "/videos/a.mp4 (10 bytes)")
        assert stat.S_IMODE(rs.path.stat().st_mode) == 0o600 and rs.read()["token"] == "ef" * 16
    finally:
        os.umask(umask)


def test_the_edge_exception_for_a_refusal_carries_gone():
    from temposplit.host.edge import Refusal

    assert Refusal("x", True).gone and not Refusal("x").gone and isinstance(Refusal("x"), TemposplitError)


@needs_models
def test_an_edge_that_gives_up_on_a_stopped_server_says_the_stream_can_be_resumed(make_server, replay_file, tmp_path):
    """The server stops mid-stream and does not come back within the edge's retries: the
    edge's one line says the stream stays unfinished and that the same command resumes it."""
    srv = make_server()
    clip = tiled_replay(replay_file, tmp_path / "clip.npz", 2000)
    argv = _edge_argv(clip, srv, "--stream", "cam", "--state", str(tmp_path / "state"), "--timeout", "2")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(_frames_logged(srv, "cam")) >= 10, "10 records", seconds=60)
        srv.shutdown()
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in lines[0], err
    assert "the stream 'cam' stays unfinished on the server: the same command, run again, resumes it" in lines[0]


@needs_models
def test_a_camera_resumed_over_a_hole_numbers_its_pictures_past_every_record(make_server, replay_file, tmp_path):
    """A camera's frame 2 was lost (a damaged packet) and the edge died after frame 9: the
    resume numbered its new pictures from next_frame (2), onto frames 3..9 already recorded,
    and those pictures were answered "duplicate" and lost. They are numbered from 10 now, and
    the hole gets its error record at the end.

    The server's request for a fresh KEY (its answer to the damaged frame 2) must not reach
    the edge before frame 9 is sent, else frames after it are coded from a KEY and decode:
    the server's worker is held until the edge has sent frame 9, and the edge reads no
    message after that (it crashes in its fault hook)."""
    import threading

    srv = make_server(max_batch=1)
    replay = open_replay(tiled_replay(replay_file, tmp_path / "clip.npz", 16))
    rs = ResumeState(tmp_path / "state", f"{srv.address[0]}:{srv.address[1]}", "cam")
    camera = source_identity("/dev/video0")
    sent9 = threading.Event()
    worker = srv.workers[0]
    process = worker._process

    def held(batch):  # no frame decoded (so no KEY request) before frame 9 is sent
        if not sent9.wait(60):
            raise AssertionError("never: frame 9 sent")
        return process(batch)

    worker._process = held

    class Crash(Exception):
        pass

    def tamper(i, raw):
        return raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0x5A]) + raw[len(raw) // 2 + 1 :] if i == 2 else raw

    def crash(i, chan):
        if i == 9:
            sent9.set()
            # 0, 1 and 3..9 recorded (2 lost; 3..9, its successors, error records)
            wait_for(lambda: len(_frames_logged(srv, "cam")) >= 9, "frames 0, 1 and 3..9 recorded", seconds=60)
            raise Crash

    first = Edge(replay, dict(CODEC), srv.address, "cam", resume_state=rs, source_id=camera)
    first.tamper, first.fault = tamper, crash
    with pytest.raises(Crash):
        first.run(replay.frames(), positions=False)
    first.chan.close()
    wait_for(lambda: 9 in _frames_logged(srv, "cam"), "frame 9 recorded", seconds=60)
    before = set(_frames_logged(srv, "cam"))
    assert 2 not in before and max(before) == 9

    again = Edge(replay, dict(CODEC), srv.address, "cam", resume_state=rs, source_id=camera)
    report = again.run(replay.frames(), positions=False)
    records = [json.loads(x) for x in (srv.out_dir / "cam" / "detections.jsonl").read_text().splitlines()]
    new = [r for r in records if r["frame"] >= 10]
    assert len(new) == replay.count and not any("error" in r for r in new)  # every new picture recorded
    assert sorted(r["frame"] for r in records) == list(range(10 + replay.count))  # each index once
    # the lost frame 2 and its successors in the chain reference (3..9): error records, once each
    assert (
        sorted(r["frame"] for r in records if "error" in r) == list(range(2, 10)) and report.frames == 10 + replay.count
    )


@needs_models
def test_a_summary_lost_after_end_is_said_and_leaves_no_token_to_resume(
    make_server, replay_file, tmp_path, monkeypatch
):
    """The connection closed between END and SUMMARY (a blip, a server restart): the resume
    found the stream finished ("gone"), and the edge said it "stays unfinished on the server:
    the same command, run again, resumes it", keeping its token; run again, it streamed the
    whole source once more as a new stream."""
    from temposplit import protocol as P

    srv = make_server()
    replay = open_replay(str(replay_file))
    rs = ResumeState(tmp_path / "state", f"{srv.address[0]}:{srv.address[1]}", "cam")
    real, lost = Edge._handle, []

    def losing_the_summary(self, *a, **k):
        got = real(self, *a, **k)
        if self.report.summary is not None and not lost:
            lost.append(self.report.summary)
            self.report.summary = None
            self.chan.close()
            raise P.ConnectionClosed("the connection closed before the SUMMARY")
        return got

    monkeypatch.setattr(Edge, "_handle", losing_the_summary)
    edge = Edge(replay, dict(CODEC), srv.address, "cam", resume_state=rs, source_id=source_identity(str(replay_file)))
    with pytest.raises(TemposplitError, match="no longer has stream 'cam' to resume: it has finished it") as exc:
        edge.run(replay.frames(), total=replay.count)
    assert not getattr(exc.value, "gone", False) and lost  # not the CLI's "stays unfinished" refusal
    assert rs.read() is None  # no token left to resume a finished stream with
    assert json.loads((srv.out_dir / "cam" / "session.json").read_text())["finished"] is True
