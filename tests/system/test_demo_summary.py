"""The demo's stream name and its summary lines, without running the model."""

from pathlib import Path

import pytest

from temposplit.host.demo import cut_tensor_bytes, print_summary, stream_name
from temposplit.protocol import STREAM_NAME


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("data/vtest.avi", "vtest"),
        ("data/clips/Megamind.avi", "Megamind"),
        ("/tmp/my clip (1).mp4", "my-clip-1"),
        ("/tmp/.hidden.mkv", "hidden"),
        ("/tmp/ünïcode.webm", "n-code"),
        ("/tmp/___.mp4", "demo"),
        ("/tmp/" + "x" * 100 + ".mp4", "x" * 64),
    ],
)
def test_the_stream_is_named_after_the_clip_as_the_server_accepts(path, name):
    assert stream_name(Path(path)) == name
    assert STREAM_NAME.fullmatch(stream_name(Path(path)))


def summary(**fidelity):
    return {
        "frames": 3,
        "decoded": 3,
        "errors": 0,
        "bytes_per_frame": 1500.0,
        "mb_per_s_at_clip_fps": 0.015,
        "mb_per_s_at_30fps": 0.045,
        "cut_tensor_mb_per_s_at_30fps": 0.044,
        "compression_vs_8bit_features": 15.4,
        "compression_vs_raw_frames": 800.0,
        "latency_ms_median": 120.0,
        "stage_ms": {"m1": 20.0, "encode": 2.0, "decode": 1.0, "m2": 25.0},
        "end_to_end_fps": 5.0,
        "end_to_end_fps_from_start": 2.5,
        **fidelity,
    }


def test_a_clip_with_nothing_to_detect_says_so_instead_of_nan(capsys):
    print_summary(summary(fidelity_map50=None, fidelity_map50_95=None))
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    assert "fidelity mAP           n/a: the float model detects nothing" in out


def test_a_scored_clip_prints_its_fidelity(capsys):
    print_summary(summary(fidelity_map50=0.981, fidelity_map50_95=0.912))
    assert "fidelity mAP           98.1 @0.5, 91.2 @[.5:.95]" in capsys.readouterr().out


def test_stage_times_leave_out_the_first_frames_warm_up():
    from temposplit.host.demo import _first_ms, _steady_ms

    times = [259.0, 0.5, 0.3, 0.4]  # the first frame loads the codec's compiled kernels
    assert _steady_ms(times) == 0.4 and _first_ms(times) == 259.0
    assert _steady_ms([7.0]) == 7.0  # one frame: it is the only figure there is
    assert _steady_ms([]) is None and _first_ms([]) is None


def test_the_frame_rate_leaves_out_the_start():
    """60 frames in 10 s, of which 4 s went before the first frame was sent (the server's
    start, the connection, the first frame's compiles): 59 frames in 6 s after it."""
    from temposplit.host.demo import _steady_fps

    assert _steady_fps(60, 4.0, 10.0) == round(59 / 6, 2)
    assert _steady_fps(1, 4.0, 10.0) == 0.1  # one frame: the start is all there is
    assert _steady_fps(60, None, 10.0) == 6.0


def test_the_summary_prints_both_frame_rates(capsys):
    print_summary(summary())
    assert "5.0 frames/s end to end after the first frame (2.5 with the start)" in capsys.readouterr().out


def test_the_edges_last_line_puts_the_servers_summary_in_words():
    from temposplit.host.cli import summary_line

    line = summary_line(
        {"stream": "cam1", "frames": 20, "recorded": [[0, 18]], "failed": [[18, 20]], "detections": "out/cam1/d.jsonl"}
    )
    assert line == "server: stream cam1, 18 of 20 frames recorded, 2 failed, detections out/cam1/d.jsonl"
    assert summary_line(None) == "no summary from the server"
    assert "? of 3 frames" in summary_line({"stream": "x", "frames": 3, "recorded": [[5, 1]]})  # malformed: no crash


def test_the_cut_tensors_bytes_are_those_of_the_packets_the_server_recorded():
    """A frame sent twice (resent after a lost connection, coded again: another size and
    split) counts the packet its record names by size, once; a frame without a record of
    detections, none."""
    from types import SimpleNamespace

    report = SimpleNamespace(
        packets_sent=[(0, 100), (1, 60), (1, 75), (2, 40)],
        tensor_bytes=[[10, 80], [5, 45], [9, 56], [3, 30]],
    )
    decoded = [{"frame": 0, "bytes": 100}, {"frame": 1, "bytes": 75}]
    assert cut_tensor_bytes(report, decoded) == 80 + 56
    assert cut_tensor_bytes(report, [{"frame": 1, "bytes": 60}]) == 45
