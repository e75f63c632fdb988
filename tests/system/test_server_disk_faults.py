"""The server's files when the disk fails under them: a record written whole or not at all
(a full disk mid-line leaves no half line for the next record to be glued to, its bytes not
counted), a log rotated while in use, a video that runs out of space while the records go
on, a SUMMARY bounded for the edge, and END's walk over the holes only.

A full disk is simulated without a mount: RLIMIT_FSIZE makes the kernel stop a write at a
file size (a short write, then EFBIG, as ENOSPC does on a full file system; Python ignores
SIGXFSZ), or a monkeypatched call raises ENOSPC."""

import errno
import json
import os
import resource
import subprocess
import sys
from array import array
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from rawclient import Raw, wait_for
from test_edge_faults import acking_server

from temposplit import protocol as P
from temposplit.frameset import FrameSet
from temposplit.server import outputs as outputs_module
from temposplit.server.outputs import DetectionLog
from temposplit.server.session import Session


def needs_models(fn):
    """A test against a real server: its M2, and M1's outputs for the model hash."""
    return pytest.mark.slow(pytest.mark.models(fn))


@contextmanager
def file_size_limit(limit: int):
    """Every write of this process past ``limit`` bytes of a file fails (short, then EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def lines_of(path) -> list[dict]:
    """Every line of a log as JSON (raises on a line that is not: a reader's view)."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def big_record(frame: int) -> dict:
    box = {"bbox": [241.9, 217.07, 35.5, 80.25], "score": 0.91234, "category_id": 1, "label": "person"}
    return {"frame": frame, "kind": "pred", "n_bits": 5, "bytes": 900, "detections": [box] * 40}


# --------------------------------------------------------------------------- D2: a record whole or not at all


def test_a_record_cut_short_by_a_full_disk_is_taken_back_whole(tmp_path):
    """The kernel writes part of a record and then fails: the file is cut back to where the
    record began, so the next record starts on a fresh line (it was glued to the half line)."""
    path = tmp_path / "detections.jsonl"
    log = DetectionLog(path)
    log.write(big_record(0))
    size = path.stat().st_size
    with file_size_limit(size + 100), pytest.raises(OSError) as failed:
        log.write(big_record(1))
    assert failed.value.errno == errno.EFBIG
    assert path.stat().st_size == size  # the 100 bytes written are gone again
    log.write(big_record(1))  # space again (a resume resends the frame)
    log.close()
    assert [r["frame"] for r in lines_of(path)] == [0, 1]


def test_a_record_whose_undoing_fails_too_is_cut_before_the_next(tmp_path, monkeypatch):
    """ENOSPC part way, and the truncation back fails as well: the half line is cut before
    the next record is written, not left for it."""
    path = tmp_path / "detections.jsonl"
    log = DetectionLog(path)
    log.write(big_record(0))
    size = path.stat().st_size
    write, ftruncate = os.write, os.ftruncate
    calls = {"write": 0}

    def half_then_full(fd, data):
        calls["write"] += 1
        if calls["write"] == 1:
            return write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def no_truncate(fd, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", half_then_full)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(OSError, match="No space"):
        log.write(big_record(1))
    assert path.stat().st_size > size  # the half line is still there
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    log.write(big_record(1))
    log.close()
    assert [r["frame"] for r in lines_of(path)] == [0, 1]


@needs_models
def test_a_frame_whose_record_hits_a_full_disk_is_recorded_once_after_the_resume(make_server, coded_stream):
    """The disk fills during frame 4's record: the edge gets ERROR, resumes once there is
    space, resends; every line of detections.jsonl is JSON, one per frame, and SUMMARY's
    bytes are the packets' (the failed attempt was counted as well)."""
    header, packets = coded_stream
    srv = make_server(max_batch=1, linger=60)
    c = Raw(srv.address)
    token = c.hello(header, "full").json()["token"]
    c.packets_acknowledged(packets[:4])
    log = srv.out_dir / "full" / "detections.jsonl"
    size = log.stat().st_size
    with file_size_limit(size + 10):  # 10 bytes of the record fit, then the disk is full
        c.chan.send(P.encode(P.PACKET, packets[4]))
        answer = c.chan.recv()
    assert answer.type == P.ERROR and "internal server error: OSError" in answer.json()["message"]
    c.close()
    assert log.stat().st_size == size
    wait_for(lambda: srv.sessions["full"].conn is None, "the connection dropped")
    c = Raw(srv.address)
    welcome = c.hello(header, "full", resume=True, token=token)
    assert welcome.type == P.WELCOME, welcome.json()
    c.packets_acknowledged(packets)  # all again: the recorded ones answered `duplicate`
    c.send(P.END, {"frames": 8})
    summary = c.answers_until({P.SUMMARY, P.ERROR})[-1]
    assert summary.type == P.SUMMARY, summary.json()
    assert summary.json()["recorded"] == [[0, 8]] and summary.json()["bytes"] == sum(len(p) for p in packets)
    assert sorted(r["frame"] for r in lines_of(log)) == list(range(8))


# --------------------------------------------------------------------------- D3: a rotated log


@pytest.mark.parametrize("how", ["renamed", "replaced"])
def test_a_log_rotated_while_in_use_fails_the_record(tmp_path, how):
    """logrotate's "create" mode renames the log and makes a new one: the records must not
    go on into the renamed file (a resume from the files would find none of them)."""
    path = tmp_path / "detections.jsonl"
    log = DetectionLog(path)
    log.write(big_record(0))
    if how == "renamed":  # logrotate's "create"
        path.rename(tmp_path / "detections.jsonl.1")
        path.touch()
    else:  # a new file moved over it
        (tmp_path / "new").touch()
        os.replace(tmp_path / "new", path)
    with pytest.raises(FileNotFoundError, match="removed|renamed or replaced"):
        log.write(big_record(1))
    log.close()
    assert path.read_bytes() == b""
    if how == "renamed":
        assert [r["frame"] for r in lines_of(tmp_path / "detections.jsonl.1")] == [0]


@pytest.mark.parametrize("left", [0, 10])
def test_a_log_cut_short_in_place_fails_the_record(tmp_path, left):
    """logrotate's "copytruncate" copies the log and empties it in place: the records before
    would be in the copy only (a resume from the files would not know them), so the next
    record fails, and writes nothing."""
    path = tmp_path / "detections.jsonl"
    log = DetectionLog(path)
    log.write(big_record(0))
    log.write(big_record(1))
    os.truncate(path, left)
    with pytest.raises(OSError, match="cut short in place"):
        log.write(big_record(2))
    log.close()
    assert path.stat().st_size == left


def test_a_log_reopened_on_its_records_writes_on(tmp_path):
    """The size it starts from is the file's (a resume reopens a log with records)."""
    path = tmp_path / "detections.jsonl"
    DetectionLog(path).write(big_record(0))
    log = DetectionLog(path)
    log.write(big_record(1))
    log.close()
    assert [r["frame"] for r in lines_of(path)] == [0, 1]


# --------------------------------------------------------------------------- D4: the video apart


@needs_models
def test_a_video_that_runs_out_of_space_stops_and_the_records_go_on(make_server, coded_stream, monkeypatch):
    """The video's fragment cannot be written (a fragment is far larger than a record): that
    segment's video stops, said once in the log and in SUMMARY, and every frame is still
    recorded and acknowledged (the frame whose picture failed lost its ACK)."""
    header, packets = coded_stream
    written = outputs_module.AnnotatedVideo._write
    pictures = {"n": 0}

    def full_after_three(self, item):
        pictures["n"] += 1
        if pictures["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        written(self, item)

    monkeypatch.setattr(outputs_module.AnnotatedVideo, "_write", full_after_three)
    said: list[str] = []
    srv = make_server(log=said.append)
    c = Raw(srv.address)
    c.hello(header, "vid")
    acked = c.packets_acknowledged(packets)
    assert acked == set(range(8))
    c.send(P.END, {"frames": 8})
    answer = c.answers_until({P.SUMMARY, P.ERROR})[-1]
    assert answer.type == P.SUMMARY, answer.json()
    summary = answer.json()
    assert summary["recorded"] == [[0, 8]] and summary["errors"] == 0
    assert "annotated.mp4 stopped at frame" in summary["video_error"] and "No space" in summary["video_error"]
    video_lines = [m for m in said if "[vid]" in m and "video" in m]
    assert len(video_lines) == 1 and "the records go on" in video_lines[0], said
    assert sorted(r["frame"] for r in lines_of(srv.out_dir / "vid" / "detections.jsonl")) == list(range(8))


def test_a_video_that_cannot_be_finished_is_named_in_the_summary(tmp_path):
    """The video's last fragment cannot be written at the close: logged (the close's
    errors) and named in SUMMARY."""

    class Unfinished:
        path = tmp_path / "annotated.mp4"

        def finish(self, total):
            raise OSError(errno.ENOSPC, "No space left on device")

    s = _session(tmp_path)
    s.video = Unfinished()
    errors = s.close()
    assert errors == ["video: [Errno 28] No space left on device"]
    assert s.summary()["video_error"] == "annotated.mp4 not finished: [Errno 28] No space left on device"


# --------------------------------------------------------------------------- D5: SUMMARY bounded


def _session(tmp_path, recorded=(), failed=()) -> Session:
    s = Session("cam", tmp_path, SimpleNamespace(to_bytes=lambda: b"header"), "0" * 64, None, {}, None)
    s.recorded, s.failed = FrameSet(recorded), FrameSet(failed)
    return s


def _alternating(n: int) -> tuple[FrameSet, FrameSet]:
    """Frames 0..n-1, every odd one an error: n ranges in all (a camera losing every other frame)."""
    even = FrameSet._of_ranges(array("q", range(0, n, 2)), array("q", range(1, n + 1, 2)))
    odd = FrameSet._of_ranges(array("q", range(1, n, 2)), array("q", range(2, n + 1, 2)))
    return even, odd


def test_a_long_streams_summary_fits_what_the_edge_reads(tmp_path):
    """1,200,000 frames, every other one an error: the full ranges are 19 MB of JSON, past
    the 16 MiB the edge reads; the counts stay exact, the ranges stop at a frame they name."""
    s = _session(tmp_path)
    s.recorded, s.failed = _alternating(1_200_000)
    summary = s.summary()
    assert len(P.control(P.SUMMARY, summary)) < P.MAX_FROM_SERVER
    assert (summary["frames"], summary["decoded"], summary["errors"]) == (1_200_000, 600_000, 600_000)
    assert summary["ranges_cut"] is True
    below = summary["ranges_below"]
    assert 0 < below < 1_200_000
    assert P.from_ranges(summary["recorded"]) == set(range(0, below, 2))
    assert P.from_ranges(summary["failed"]) == set(range(1, below, 2))


def test_a_short_streams_summary_has_its_ranges_whole(tmp_path):
    s = _session(tmp_path, recorded=[0, 1, 2, 4], failed=[3])
    summary = s.summary()
    assert summary["ranges_cut"] is False and "ranges_below" not in summary and "video_error" not in summary
    assert summary["recorded"] == [[0, 3], [4, 5]] and summary["failed"] == [[3, 4]]


def test_an_edge_reads_a_summary_whose_ranges_were_cut(tmp_path, peer):
    """The ranges name frames 0-1 only; frames 2-5 are the server's all the same: the edge
    counts the errors it saw past the cut (frame 4), not every frame past it as "no record",
    and its line gives the server's counts."""
    from replays import synthetic_replay

    def summary(n):
        counts = {"stream": "s", "frames": n, "decoded": n - 2, "errors": 2, "bytes": 0}
        return {**counts, "recorded": [[0, 1]], "failed": [[1, 2]], "ranges_cut": True, "ranges_below": 2}

    replay = synthetic_replay(tmp_path / "r.npz", 6)
    server = peer(acking_server({1, 4}, summary))
    done = _edge_stdout(str(replay), server.address, "--state", str(tmp_path / "state"))
    assert done.returncode == 3, done.stderr
    assert "6 frames" in done.stdout and " 2 errors" in done.stdout, done.stdout
    assert "4 of 6 frames recorded, 2 failed (its ranges stop at frame 2" in done.stdout, done.stdout


def _edge_stdout(replay, address, *options) -> subprocess.CompletedProcess:
    """``temposplit edge --replay`` as a process."""
    server = f"{address[0]}:{address[1]}"
    command = [sys.executable, "-m", "temposplit", "edge", "--replay", replay, "--server", server, *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- D6: END walks the holes


def test_end_records_the_holes_without_walking_every_frame(tmp_path, monkeypatch):
    """END of a stream of 1,000,000 frames with 3 holes: 3 "never received" records, and the
    recorded sets asked about the holes only (it asked about every index: 0.64 s a million,
    every stream on the worker waiting)."""
    n = 1_000_000
    holes = [5, 500_000, n - 1]
    s = _session(tmp_path, failed=[n - 2])
    s.recorded = FrameSet._of_ranges(array("q", [0, 6, 500_001]), array("q", [5, 500_000, n - 2]))
    s.log = DetectionLog(tmp_path / "detections.jsonl")
    asked = {"n": 0}
    has = Session.has

    def counted(self, index):
        asked["n"] += 1
        return has(self, index)

    monkeypatch.setattr(Session, "has", counted)
    assert s.finish(n) == []
    assert asked["n"] <= len(holes)
    assert [(r["frame"], r["error"]) for r in lines_of(tmp_path / "detections.jsonl")] == [
        (i, "never received (lost in transmission)") for i in holes
    ]
    assert len(s.failed) == 4 and len(s.recorded) + len(s.failed) == n


def test_frameset_missing_walks_the_gaps():
    frames = FrameSet([0, 1, 2, 5, 6, 9])
    assert list(frames.missing(12)) == [3, 4, 7, 8, 10, 11]
    assert list(frames.missing(6)) == [3, 4]
    assert list(frames.missing(0)) == [] and list(FrameSet().missing(3)) == [0, 1, 2]
    assert list(frames.missing(12, FrameSet([3, 4, 8]), FrameSet([11]))) == [7, 10]
    assert frames.ranges(6) == [[0, 3], [5, 6]] and frames.ranges(4) == [[0, 3]] and frames.ranges(0) == []
