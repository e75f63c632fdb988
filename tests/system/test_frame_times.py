"""Each frame's record carries its time (docs/protocol.md, "Frame times"): a file's frames their
presentation times, a live source's frames the time they came to the edge; a version 2 edge,
which sends none, is still served; PACKET_AT's times are checked like any field of a message."""

import json
import struct
import time
from fractions import Fraction

import pytest
from rawclient import Raw, refused, wait_for  # tests/system's hand-speaking client

from temposplit import protocol as P
from temposplit.host.edge import Edge
from temposplit.host.sources import Stamped, open_source

pytestmark = [pytest.mark.slow, pytest.mark.models]

CODEC = {"n_bits": 4, "structure": "bi-3", "coder": "huffman", "fps": 10.0}
PTS_MS = [0, 40, 120, 130, 300, 1000, 1040, 2500]  # a clip of variable rate: its frames' times


def records(srv, stream):
    path = srv.out_dir / stream / "detections.jsonl"
    return {r["frame"]: r for r in (json.loads(line) for line in path.read_text().splitlines())}


def shown_ms(srv, stream) -> list[int]:
    """When the annotated video shows each of its pictures, in ms from its first."""
    import av

    with av.open(str(srv.out_dir / stream / "annotated.mp4")) as c:
        return [round(f.time * 1000) for f in c.decode(video=0)]


def _variable_rate_clip(path, frames) -> None:
    """``frames`` as H.264 in Matroska, shown at PTS_MS (B frames on: decoded out of order)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt, s.time_base = "yuv420p", Fraction(1, 1000)
        s.codec_context.time_base = Fraction(1, 1000)
        for ms, rgb in zip(PTS_MS, frames, strict=False):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts, f.time_base = ms, Fraction(1, 1000)
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def test_a_files_frames_are_recorded_at_their_presentation_times(tmp_path, server, edge_model, vtest_frames):
    """A clip of variable rate, and a connection cut after frame 3: every record's `time` is
    its frame's presentation time, the resent frames' too; no `utc` (a file is not live)."""
    from rawclient import cut_connection_at

    clip = tmp_path / "vfr.mkv"
    _variable_rate_clip(clip, vtest_frames[: len(PTS_MS)])
    source = open_source(str(clip))
    edge = Edge(edge_model, CODEC, server.address, "vfr")
    cut = cut_connection_at(edge, 3)
    report = edge.run(source.stamped(), total=len(PTS_MS))
    assert cut and report.reconnects >= 1 and not report.errors
    recs = records(server, "vfr")
    assert {i: r["time"] for i, r in recs.items()} == {i: ms / 1000 for i, ms in enumerate(PTS_MS)}
    assert not any("utc" in r for r in recs.values())
    assert shown_ms(server, "vfr") == PTS_MS  # the annotated video plays at the clip's own times


def test_frames_without_times_of_their_own_are_timed_by_position_or_by_the_clock(server, edge_model, vtest_frames):
    """Frames given as arrays: a file's at frame / fps; a camera's (numbered as taken) at the
    time the edge took them, in UTC, never before the run began nor after it ended."""
    Edge(edge_model, CODEC, server.address, "plain").run(vtest_frames[:4], total=4)
    assert {i: r["time"] for i, r in records(server, "plain").items()} == {i: i / 10 for i in range(4)}

    before = time.time()
    Edge(edge_model, CODEC, server.address, "cam").run(iter(vtest_frames[:4]), positions=False)
    after = time.time()
    recs = records(server, "cam")
    assert sorted(recs) == [0, 1, 2, 3] and not any("time" in r for r in recs.values())
    from datetime import datetime

    utc = [datetime.fromisoformat(recs[i]["utc"].replace("Z", "+00:00")).timestamp() for i in range(4)]
    assert all(r["utc"].endswith("Z") for r in recs.values())  # UTC, said so
    assert before - 0.001 <= utc[0] <= utc[1] <= utc[2] <= utc[3] <= after


def test_a_stamped_frames_own_times_are_recorded(server, edge_model, vtest_frames):
    """Times a source gives (a network camera's arrival times) are what the records say, to the
    millisecond: the edge takes them over its own clock."""
    utc = [1_765_000_000.25, 1_765_000_000.5, 1_765_000_001.123]
    frames = [Stamped(f, utc=u) for f, u in zip(vtest_frames, utc, strict=False)]
    Edge(edge_model, CODEC, server.address, "given").run(iter(frames), positions=False)
    recs = records(server, "given")
    assert [recs[i]["utc"] for i in range(3)] == [
        "2025-12-06T05:46:40.250Z",
        "2025-12-06T05:46:40.500Z",
        "2025-12-06T05:46:41.123Z",
    ]
    assert shown_ms(server, "given") == [0, 250, 873]  # as they came: a live source's gaps show


def test_a_version_2_edge_is_served_without_times(make_server, coded_stream):
    """An edge of protocol version 2 (PACKET only) is welcomed as version 2 and recorded as
    before; a PACKET_AT on its connection is not of its protocol: refused."""
    header, packets = coded_stream
    srv = make_server()
    old = Raw(srv.address)
    welcome = old.hello(header, "old", protocol=2)
    assert welcome.type == P.WELCOME and welcome.json()["protocol"] == 2
    assert len(old.packets_acknowledged(packets[:3])) == 3
    recs = records(srv, "old")
    assert recs and not any("time" in r or "utc" in r for r in recs.values())
    old.chan.send(P.packet_at(packets[3], 0, None))
    assert refused(old.answers_until({P.ERROR})[-1], "PACKET_AT")
    for bad in (1, "3", True, None, 3.0):
        c = Raw(srv.address)
        assert refused(c.hello(header, f"v{bad}", protocol=bad), "protocol version")
        c.close()


@pytest.mark.parametrize(
    "body, words",
    [
        (struct.pack("<q", 5), "too short for its times"),
        (struct.pack("<qq", P.NO_TIME, -1), "utc of -1 microseconds is out of range"),
        (struct.pack("<qq", 1 << 60, P.NO_TIME), "time of 1152921504606846976 microseconds is out of range"),
    ],
)
def test_a_packet_at_with_broken_times_is_refused(make_server, coded_stream, body, words):
    header, packets = coded_stream
    srv = make_server()
    c = Raw(srv.address)
    assert c.hello(header, "broken").type == P.WELCOME
    c.chan.send(P.encode(P.PACKET_AT, body + (packets[0] if len(body) == P.TIMES_SIZE else b"")))
    assert refused(c.answers_until({P.ERROR})[-1], words)
    wait_for(lambda: "broken" not in srv.sessions or srv.sessions["broken"].conn is None, "the stream detached")


def test_packet_at_round_trips_and_is_checked_when_made():
    body = P.packet_at(b"codec", -40, 1_765_000_000_000_000)[P.HEAD_SIZE :]
    assert P.split_packet_at(body) == (-40, 1_765_000_000_000_000, b"codec")
    assert P.split_packet_at(P.packet_at(b"", None, None)[P.HEAD_SIZE :]) == (None, None, b"")
    with pytest.raises(P.ProtocolError, match="utc"):
        P.packet_at(b"x", None, -5)


@pytest.mark.parametrize("backend", ["av", "cv2"])
@pytest.mark.parametrize("fmt", ["mkv", "ts"])
def test_both_readers_give_a_files_presentation_times_from_its_start(tmp_path, backend, fmt):
    """PyAV (the server's and a PC's reader) and OpenCV (the board's) agree: a frame's time is
    counted from the video stream's start (MPEG-TS starts its clock at 1.4 s: not shown)."""
    import numpy as np

    frames = [np.full((96, 128, 3), 20 * i, np.uint8) for i in range(len(PTS_MS))]
    clip = tmp_path / f"clip.{fmt}"
    _variable_rate_clip(clip, frames)
    source = open_source(str(clip), backend=backend)
    assert [round(s.time, 6) for s in source.stamped()] == [ms / 1000 for ms in PTS_MS]


@pytest.mark.parametrize("backend", ["av", "cv2"])
def test_pictures_without_times_are_timed_by_position_by_both_readers(tmp_path, backend):
    """A raw H.264 stream has no timestamps: PyAV gives none, OpenCV 0 for every picture,
    which was recorded as time 0.0 for every frame; both now leave it to the edge, which
    sends frame / fps."""
    import av
    import numpy as np

    clip = tmp_path / "raw.h264"
    with av.open(str(clip), "w", format="h264") as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width, s.pix_fmt = 96, 128, "yuv420p"
        for i in range(6):
            f = av.VideoFrame.from_ndarray(np.full((96, 128, 3), 30 * i, np.uint8), format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    source = open_source(str(clip), backend=backend)
    times = [s.time for s in source.stamped()]
    assert len(times) == 6 and all(t is None for t in times[1:]) and times[0] in (None, 0.0)


def test_a_time_outside_the_protocols_range_is_left_out_not_refused(server, edge_model, vtest_frames):
    """An odd file's time past 2^53 microseconds: the frame is sent without it (the edge's
    PACKET_AT would otherwise fail the stream); the others keep theirs."""
    frames = [Stamped(vtest_frames[0], 0.5), Stamped(vtest_frames[1], 1e12), Stamped(vtest_frames[2], 0.7)]
    Edge(edge_model, CODEC, server.address, "odd").run(iter(frames), total=3)
    recs = records(server, "odd")
    assert [recs[i]["time"] for i in range(3)] == [0.5, 0.1, 0.7]  # frame 1: its position at 10 frames/s


def test_the_annotated_videos_clock_always_moves_on(tmp_path):
    """A picture without a time comes a frame period after the one before, the periods
    counted without adding up their rounding; a time that is not after the last picture's,
    or more than a minute after it (the clock stepped), comes a period after it and sets the
    clock from there; the first time sets the clock so that the untimed pictures before it
    keep their period."""
    import av

    from temposplit.server.outputs import AnnotatedVideo

    def shown(times, fps=10.0):
        path = tmp_path / f"v{len(list(tmp_path.iterdir()))}.mp4"
        video = AnnotatedVideo(path, 64, 48, fps)
        for i, when in enumerate(times):
            video.add(i, caption=f"{i}", when=when)
        video.finish()
        with av.open(str(path)) as c:
            return [round(f.time * 1000) for f in c.decode(video=0)]

    assert shown([5.0, None, 5.05, 4.0, 6.0]) == [0, 100, 200, 300, 2300]
    assert shown([None, 10.0, 10.5]) == [0, 100, 600]
    assert shown([None, None, None]) == [0, 100, 200]  # an edge that sent no times: the stream's rate
    # 55 years (a board's clock set from 1970) and 50 hours (past the MP4 muxer's 32-bit sample
    # duration at its 16 kHz): both were shown at the picture before's time
    assert shown([0.0, 0.1, 1.7e9, 1.7e9 + 0.1, 1.7e9 + 180000.0]) == [0, 100, 200, 300, 400]
    assert shown([None] * 300, fps=30.0)[-1] == 9967  # 299 periods of 33.3 ms (9,867 when each was 33 ms)
