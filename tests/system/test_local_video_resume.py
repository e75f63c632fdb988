"""--local-video after a resume from the files: the segment's pictures are the source's frames
from the segment's own first frame (not next_frame), reached by a bounded decode (a seek far
into the source), so that a resume's HELLO never decodes an hour of video."""

import hashlib
import json
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
from rawclient import Raw

from temposplit import protocol as P
from temposplit.codec.bitstream import StreamHeader
from temposplit.errors import ConfigError
from temposplit.server import session as session_module

H, W = 48, 64


def grey_source(path, n: int, rate=25, times=None) -> str:
    """A video whose frame i shows i: three bands of grey 40 + 12 d, d its base-16 digits
    (``times``: the frames' times in ms, for a file of no constant rate)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt, s.options = W, H, "yuv420p", {"crf": "5"}
        if times is not None:
            s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            a = np.zeros((H, W, 3), np.uint8)
            for band in range(3):
                a[band * H // 3 : (band + 1) * H // 3] = 40 + 12 * (i >> (4 * band) & 15)
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            if times is not None:
                f.pts = times[i]
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def frame_number(picture) -> int:
    h = picture.shape[0] // 3
    bands = [picture[k * h + h // 4 : (k + 1) * h - h // 4] for k in range(3)]
    return sum(round((np.median(b) - 40) / 12) << (4 * k) for k, b in enumerate(bands))


def stream_files(out, name, header, video, frames) -> None:
    """A stream's files as an earlier server left them: a record of each of ``frames``."""
    d = out / name
    d.mkdir(parents=True)
    state = {
        "stream": name,
        "token_sha256": hashlib.sha256(b"tok").hexdigest(),
        "identity": None,
        "client": "127.0.0.1",
        "header_sha256": hashlib.sha256(StreamHeader.from_bytes(header).to_bytes()).hexdigest(),
        "info": {"frame_size": [576, 768], "video": video},
        "segment": 0,
        "finished": False,
    }
    (d / "session.json").write_text(json.dumps(state))
    with open(d / "detections.jsonl", "w") as f:
        for i in frames:
            rec = {"frame": i, "kind": "I", "n_bits": 4, "bytes": 1, "detections": []}
            f.write(json.dumps(rec) + "\n")


@pytest.mark.parametrize(("n", "hole", "start"), [(100, 5, 100 - 64), (3000, 2950, 2950)])
def test_a_resumed_segment_shows_the_source_from_its_own_first_frame(
    tmp_path, make_server, coded_stream, n, hole, start, monkeypatch
):
    """100 frames with a hole at 5 (more than the reorder window below the highest): the segment
    starts at 36, and showed source frame 5 there. 3000 frames: reached by a seek, with a
    bounded number of frames decoded in the HELLO."""
    header, _ = coded_stream
    video = grey_source(tmp_path / "source.mp4", n)
    stream_files(tmp_path / "out", "s", header, video, [i for i in range(n) if i != hole])
    pictures = []
    real = session_module.Source.__init__

    def counted(self, *a, **k):
        import temposplit.model.data as data

        calls = [0]
        upright = data.upright_rgb

        def count(frame):
            calls[0] += 1
            return upright(frame)

        monkeypatch.setattr(data, "upright_rgb", count)
        try:
            real(self, *a, **k)
        finally:
            monkeypatch.setattr(data, "upright_rgb", upright)
        pictures.append(calls[0])

    monkeypatch.setattr(session_module.Source, "__init__", counted)
    srv = make_server(local_video=True)
    raw = Raw(srv.address)
    assert raw.hello(header, "s", resume=True, token="tok").type == P.WELCOME
    raw.close()
    srv.shutdown()
    assert pictures and pictures[0] <= 1001  # docs/protocol.md: at most 1,000 frames decoded to reach it
    with av.open(str(tmp_path / "out" / "s" / "annotated.1.mp4")) as c:
        shown = [frame_number(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert shown[:5] == list(range(start, start + 5)), shown[:8]


def test_resumes_far_into_the_source_answer_their_hellos_and_others(tmp_path, make_server, coded_stream):
    """Two resumes of 3000-frame streams and a new stream's HELLO at once (the HELLO pool has two
    threads): every one answered, well within the edge's timeout."""
    header, _ = coded_stream
    video = grey_source(tmp_path / "source.mp4", 3000)
    for name in ("a", "b"):
        stream_files(tmp_path / "out", name, header, video, range(2999))
    srv = make_server(local_video=True)
    answers = {}

    def hello(name, **kw):
        raw = Raw(srv.address, timeout=10)
        answers[name] = raw.hello(header, name, **kw).type
        raw.close()

    threads = [threading.Thread(target=hello, args=(n,), kwargs={"resume": True, "token": "tok"}) for n in "ab"]
    threads.append(threading.Thread(target=hello, args=("c",)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {"a": P.WELCOME, "b": P.WELCOME, "c": P.WELCOME}


def test_a_source_that_cannot_be_sought_is_not_decoded_to_a_far_frame(tmp_path):
    """No constant rate (frames at irregular times): a frame past MAX_SOURCE_SKIP is refused at
    once (the segment is then drawn on the features), one within it is decoded to."""
    n = 1200
    times = [i * 40 + (i % 3) * 7 for i in range(n)]
    video = grey_source(tmp_path / "vfr.mp4", n, times=times)
    with pytest.raises(ConfigError, match="sought|constant"):
        session_module.Source(video, None, n - 10)
    near = session_module.Source(video, None, 10)
    assert frame_number(next(near)) == 10
    near.close()
