"""Files as the edge's source (docs/protocol.md, "End of stream" and "Frame identity"):
OpenCV's reader (the board's) ends a truncated file with the error PyAV's gives, not as a
shorter clip, and takes a trimmed MP4 whole; a file read over HTTP (a source of known
duration) keeps its frames' positions, so a resumed stream skips the frames recorded as a
local file's does (it was numbered on as a camera's: frames sent twice, times going back)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from replays import synthetic_replay
from test_edge_faults import Peer
from test_network_sources import _marks, _send, serve_folder

from temposplit import protocol as P
from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.host.sources import open_source

cv2 = pytest.importorskip("cv2")

_spec = importlib.util.spec_from_file_location("mp4_trim", Path(__file__).resolve().parents[1] / "mp4_trim.py")
mp4_trim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp4_trim)  # a helper beside the test folders (tests/model's too)


def _mjpeg_avi(path, frames: int = 30) -> bytes:
    """An MJPEG AVI of ``frames`` random 64x48 pictures, its header counting them; its bytes."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path.read_bytes()


def test_opencvs_reader_ends_a_truncated_file_with_an_error(tmp_path):
    """Half of an AVI whose header counts 30 frames: OpenCV reads 14 and stops as at an end
    (it streamed as a 14-frame clip and the edge exited 0)."""
    whole = _mjpeg_avi(tmp_path / "whole.avi")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    src = open_source(str(cut), backend="cv2")
    assert src.backend == "cv2" and src.count == 30
    with pytest.raises(ConfigError, match=r"the file ends after \d+ of the 30 frames its container announces") as e:
        list(src.frames())
    assert "(a truncated file?)" in str(e.value) and str(cut) in str(e.value)
    assert len(list(open_source(str(tmp_path / "whole.avi"), backend="cv2").frames())) == 30


def test_opencvs_reader_takes_a_held_last_picture_whole(tmp_path):
    """20 frames at 10 frames/s, the last shown for 3 s (a variable rate): FFmpeg's muxer
    writes the hold as empty entries that the header counts (49), so the count said
    "truncated" though the file is whole (its RIFF size is the file's)."""
    import fractions

    av = pytest.importorskip("av")
    path = tmp_path / "held.avi"
    rng = np.random.default_rng(2)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width, s.pix_fmt = 48, 64, "yuv420p"
        s.codec_context.time_base = fractions.Fraction(1, 10)
        packets = []
        for pts in range(20):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            f.pts, f.time_base = pts, fractions.Fraction(1, 10)
            packets += list(s.encode(f))
        packets += list(s.encode())
        packets[-1].duration = 30
        for p in packets:
            c.mux(p)
    src = open_source(str(path), backend="cv2")
    assert len(list(src.frames())) == 20


def test_opencvs_reader_takes_a_trimmed_mp4_whole(tmp_path):
    """An MP4 whose edit list hides its first 30 frames of 60: OpenCV counts 60 and shows 30,
    the whole clip (its duration, which says so, OpenCV does not give)."""
    pytest.importorskip("av")
    trimmed = tmp_path / "trimmed.mp4"
    mp4_trim.write_trimmed_mp4(trimmed, hidden=30, shown=30)
    src = open_source(str(trimmed), backend="cv2")
    assert src.count == 60
    assert len(list(src.frames())) == 30


# ---------------------------------------------------------------------------- a file over HTTP, resumed


@pytest.fixture
def served_clip(tmp_path):
    """A 20-frame Matroska (its duration in its header) served over HTTP on loopback: its URL."""
    folder = tmp_path / "www"
    folder.mkdir()
    _send(str(folder / "clip.mkv"), 0, 20, "matroska")
    server, base = serve_folder(folder)
    yield f"{base}/clip.mkv"
    server.shutdown()
    server.server_close()


def test_a_file_over_http_is_not_live(served_clip):
    src = open_source(served_clip)
    assert src.finite and not src.live


class MarkedModel:
    """The edge's M1 for a synthetic feature file's tensors, whatever the picture: it keeps
    the index each picture it is given carries (test_network_sources' marks)."""

    def __init__(self, replay):
        self.replay, self.frame = replay, next(iter(replay.frames()))
        self.model, self.cut, self.m1_ms, self.seen = replay.model, replay.cut, [], []

    def m1(self, pictures):
        self.seen += [_marks(p)[0] for p in pictures]
        return [self.frame.tensors for _ in pictures]

    def tensor_specs(self, sample, block=None):
        return self.replay.tensor_specs(sample, block)

    def model_hash(self, sample):
        return self.replay.model_hash(sample)


def _server(resumed_at: int, end_fails: list):
    """A fake server's side of a connection: WELCOME (a resume's at ``resumed_at``, the
    frames below it recorded), an ACK per packet, and at END an ERROR while ``end_fails``
    holds True (the stream stays unfinished, the edge keeps its token), else the SUMMARY."""
    from temposplit.codec.bitstream import parse_packet

    def serve(conn):
        chan = P.Channel(conn)
        hello = chan.recv().json()
        start = resumed_at if hello.get("resume") else 0
        welcome = {"protocol": P.PROTOCOL_VERSION, "stream": "s", "token": "ab" * 16, "next_frame": start}
        conn.sendall(P.control(P.WELCOME, {**welcome, "recorded": [[0, start]] if start else []}))
        while True:
            msg = chan.recv()
            if msg.type == P.PACKET_AT:
                index = parse_packet(P.split_packet_at(msg.body)[2], 0, 1 << 24)[0].index
                conn.sendall(P.control(P.ACK, {"frame": index, "detections": []}))
            elif msg.type == P.END:
                n = msg.json()["frames"]
                if end_fails[0]:
                    conn.sendall(P.control(P.ERROR, {"message": "cannot write the stream's records"}))
                else:
                    summary = {"stream": "s", "frames": n, "decoded": n, "errors": 0, "recorded": [[0, n]]}
                    conn.sendall(P.control(P.SUMMARY, {**summary, "failed": []}))
                return

    return serve


def test_a_resumed_stream_of_a_file_over_http_skips_the_recorded_frames(served_clip, tmp_path, monkeypatch, capsys):
    """The first run streams the 20 frames and its END fails (the stream left unfinished);
    the rerun resumes it at frame 7, the server's next: its M1 gets the file's frame 7 then
    (after frame 0, which sets the stream's tensors), as a local file's resume does. Taken
    for a live source, the rerun numbered the file's frame 0 as frame 7 and sent it all again."""
    import temposplit.host.cli as cli
    from temposplit.host.sources import open_replay

    model = MarkedModel(open_replay(synthetic_replay(tmp_path / "r.npz", 1, frame_size=np.array([96, 128]))))
    monkeypatch.setattr(cli, "_edge_model", lambda *a: model)
    end_fails = [True]
    server = Peer(_server(7, end_fails))  # (one address: the resume state is kept per server and stream)
    argv = ["edge", served_clip, "--stream", "s", "--state", str(tmp_path / "state")]
    argv += ["--server", f"127.0.0.1:{server.address[1]}"]
    try:
        assert main(argv) == 2
        assert "stays unfinished on the server" in capsys.readouterr().err
        assert model.seen == [0, *range(1, 20)]
        (state,) = (tmp_path / "state").glob("*.json")
        assert json.loads(state.read_text())["token"] == "ab" * 16
        model.seen, end_fails[0] = [], False
        assert main(argv) == 0, capsys.readouterr().err
    finally:
        server.close()
    assert model.seen == [0, *range(7, 20)]
    assert "resumed stream 's' at frame 7" in capsys.readouterr().out
