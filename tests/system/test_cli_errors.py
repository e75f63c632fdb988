"""The programs' command lines: a user's mistake is one line on stderr and exit status 2."""

import os

import numpy as np
import pytest

from temposplit.cli import main

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--structure", "bi-4"], "odd size"),
        (["demo", "--coder", "lzma"], "unknown coder"),
        (["demo", "--video", "/nonexistent/clip.avi"], "not found"),
        (["edge", "/nonexistent/clip.avi"], "not found"),
        (["edge", __file__, "--server", "nohost"], "host:port"),
        (["demo", "--dead-zone", "-1"], "dead zone"),
        # The codec options are checked first, before the source is opened or the model loads.
        (["edge", "/nonexistent/clip.avi", "--dead-zone", "-1"], "dead zone"),
        (["serve", "--weights", "no-equals-sign", "--port", "0"], "MODEL=PATH"),
        (["serve", "--idle-timeout", "0", "--port", "0"], "--idle-timeout must be positive"),
        (["serve", "--max-batch", "0", "--port", "0"], "--max-batch must be at least 1"),
        (["serve", "--metrics-host", "0.0.0.0", "--port", "0"], "--metrics-host without --metrics-port"),
        (["serve", "--session-linger", "0.001", "--port", "0"], "--session-linger must be in 1..86400 seconds"),
        (["serve", "--session-linger", "nan", "--port", "0"], "--session-linger must be in 1..86400 seconds"),
        (["serve", "--max-streams-per-client", "-1", "--port", "0"], "--max-streams-per-client must be 0"),
        (["serve", "--max-connections-per-client", "-2", "--port", "0"], "--max-connections-per-client must be 0"),
        (["edge", __file__, "--timeout", "-5"], "--timeout must be positive"),
        # serve fails at start, not once per stream, where it cannot work
        (["serve", "--port", "0", "--out", __file__], "cannot write there"),
        (["serve", "--port", "0", "--out", __file__ + "/x"], "cannot write there"),
        (["serve", "--port", "0", "--weights", "bogus=/nope"], "unknown model 'bogus'"),
        (["serve", "--port", "0", "--weights", "ssd-mobilenet-v2=/nonexistent.pt"], "no such file"),
        (["serve", "--port", "0", "--weights", "retinanet-resnet50-fpn=/nonexistent.pth"], "no such file"),
        # what would take memory without bound, or run for nothing, is refused before it starts
        (["models", "fixtures", "--frames", "99999999"], "--frames must be 1..64"),
        (["bench", "codec", "--frames", "1000000000", "--no-ssd"], "--frames must be 1..256"),
        (["bench", "server", "--clients", "100000"], "--clients must be 1..1024"),
        (["bench", "server", "--timeout", "0"], "--timeout must be positive"),
        (["bench", "server", "--server-pid", "1"], "--server-pid is the process of the server given with --server"),
        (["bench", "server", "--server", "127.0.0.1:70000"], "a port in 1..65535"),
        (["edge", __file__, "--server", "127.0.0.1:70000"], "a port in 1..65535"),
        (["eval", "--max-size", "5"], "torchvision models' resize"),
        (["models", "sensitivity", "--videos", ","], "--videos names nothing"),
        (["models", "accuracy", "--cuts", ","], "--cuts names nothing"),
        (["models", "accuracy", "--calibrate-on-clip", "-3"], "--calibrate-on-clip must be 0"),
        # a TLS file that cannot be used is named, with why
        (["serve", "--port", "0", "--tls-cert", "/no/c.pem", "--tls-key", "/no/k.pem"], "/no/c.pem with key"),
        (["serve", "--port", "0", "--tls-cert", __file__, "--tls-key", __file__], "not a PEM certificate"),
        # a system error is "path: what happened", not Python's "[Errno N] ...: 'path'"
        (["decode", os.path.dirname(__file__), "out.npz"], f"{os.path.dirname(__file__)}: Is a directory"),
        (["fetch-data", "--dest", __file__], "is a file, not a folder"),
        (["encode", "/nonexistent/f.npz", "s.tsp"], "/nonexistent/f.npz: No such file or directory"),
        # an output that is not what the command writes is not overwritten
        (["models", "export-m1", "--out", __file__], "must end in .npz"),
    ],
)
def test_bad_options_and_files_give_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("temposplit ")


@pytest.mark.parametrize("under", [False, True])
def test_fetch_data_into_a_data_folder_that_is_a_file_says_so(monkeypatch, capsys, under):
    """TEMPOSPLIT_DATA naming a file (or a folder under one) said only "afile: File exists"."""
    monkeypatch.setenv("TEMPOSPLIT_DATA", __file__ + ("/data" if under else ""))
    assert main(["fetch-data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("is under a file" if under else "is a file, not a folder") in err[0], err
    assert "$TEMPOSPLIT_DATA" in err[0]


def test_serve_on_a_taken_port_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    """A port another process listens on: one line naming it, and the --out folder that
    serve would have made is not left behind."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = tmp_path / "made" / "by" / "serve"
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port), "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("temposplit serve") and f"cannot listen on 127.0.0.1:{port}" in line, line
    assert not (tmp_path / "made").exists()


def test_serve_with_a_file_that_is_not_weights_fails_at_start(tmp_path, capsys):
    """--weights naming a file of another kind: refused before the server listens (it
    once started, then refused every stream's HELLO with the same error), and the --out
    folder it would have made is not left behind."""
    bad = tmp_path / "ssd.npz"
    bad.write_bytes(b"not an npz")
    out = tmp_path / "out"
    argv = ["serve", "--port", "0", "--out", str(out), "--weights", f"ssd-mobilenet-v2={bad}"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("temposplit serve") and "not a weights file" in line, line
    assert not out.exists()


def test_a_port_out_of_range_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--port", "99999"])
    assert exc.value.code == 2
    assert "0..65535" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--port", "99999"], "0..65535"),
        (["edge", "clip.avi", "--backend", "bogus"], "invalid choice"),
        (["encode"], "required"),
        (["bench", "codec", "--no-such-option"], "unrecognized arguments"),  # a sub-command's sub-command
        (["models", "accuracy", "--frames", "many"], "invalid int value"),
        (["no-such-command"], "invalid choice"),
        (["eval-report", "--replicates", "1000000000"], "at most 10000"),
        (["eval", "--min-size", "0"], "expected a positive integer"),
        (["eval", "--cuts", ","], "expected comma-separated names"),
        # an unknown option is the (sub-)command's to report, pointing at its own --help
        (
            ["encode", "a.npz", "b.tsp", "--bogus"],
            "temposplit encode: error: unrecognized arguments: --bogus (see temposplit encode --help",
        ),
        (
            ["bench", "codec", "--nope"],
            "temposplit bench codec: error: unrecognized arguments: --nope (see temposplit bench codec --help",
        ),
        (
            ["models", "accuracy", "--nope"],
            "temposplit models accuracy: error: unrecognized arguments: --nope (see temposplit models accuracy --help",
        ),
    ],
)
def test_argument_errors_are_one_line_not_the_usage_block(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # not the usage block
    assert line.startswith("temposplit") and message in line and line.endswith("--help)"), line


@needs_proc
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_work(capsys):
    """qat's hours of training, export-m1's calibration: a folder that takes no file is said
    first (a probe file, which a read-only mount refuses even to root)."""
    assert main(["models", "qat", "--out", "/proc/m1-qat.npz", "--steps", "1"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("temposplit models qat: error: --out /proc/m1-qat.npz: cannot write in /proc"), line


def _parser_whose_handler_raises(error):
    from temposplit.cli import OneLineParser

    def build():
        parser = OneLineParser(prog="temposplit")
        sub = parser.add_subparsers(dest="command")

        def handler(args):
            raise error

        sub.add_parser("boom").set_defaults(handler=handler)
        return parser

    return build


def test_a_defect_that_escapes_a_handler_is_one_line_and_exit_1(monkeypatch, capsys, one_line):
    monkeypatch.delenv("TEMPOSPLIT_DEBUG", raising=False)
    monkeypatch.setattr("temposplit.cli.build_parser", _parser_whose_handler_raises(ValueError("a\nb")))
    assert main(["boom"]) == 1
    one_line("temposplit boom: internal error: ValueError: a b")


def test_temposplit_debug_lets_the_traceback_through(monkeypatch):
    monkeypatch.setenv("TEMPOSPLIT_DEBUG", "1")
    monkeypatch.setattr("temposplit.cli.build_parser", _parser_whose_handler_raises(KeyError("x")))
    with pytest.raises(KeyError):
        main(["boom"])


def test_memory_that_runs_out_is_one_line_and_exit_2(monkeypatch, capsys, one_line):
    monkeypatch.setattr("temposplit.cli.build_parser", _parser_whose_handler_raises(MemoryError()))
    assert main(["boom"]) == 2
    one_line("temposplit boom: error: out of memory")


@pytest.fixture
def feature_file(tmp_path):
    """A small feature file (encode's input): 6 frames of one 8x12x12 tensor moving right."""
    base = np.random.default_rng(0).integers(0, 256, (8, 12, 12)).astype(np.uint8)
    path = tmp_path / "small.npz"
    codes = np.stack([np.roll(base, t, axis=2) for t in range(6)])
    np.savez(path, **{"codes/x": codes, "scale/x": np.float32(0.1), "zero_point/x": np.int32(0)})
    return path


@pytest.mark.parametrize("frames", ["-1", "0"])
def test_edge_frames_below_one_is_an_error(frames, capsys, one_line):
    assert main(["edge", __file__, "--server", "127.0.0.1:9", "--frames", frames]) == 2
    one_line("--frames must be at least 1")


@pytest.mark.parametrize("content", [b"", b"this is not a video\n"])
def test_demo_on_a_file_that_is_no_video(tmp_path, content, capsys, one_line):
    video = tmp_path / "clip.avi"
    video.write_bytes(content)
    assert main(["demo", "--video", str(video), "--out", str(tmp_path / "out")]) == 2
    one_line("cannot open")


# Each is checked before the model loads: the demo's log (on stderr) has not started.
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rate", "-1"], "target rate must be positive"),
        (["--rate", "inf"], "target rate must be positive and finite"),  # ran at rc 0: no rate control
        (["--rate", "nan"], "target rate must be positive and finite"),
        (["--rate", "0.1", "--bits", "4"], "give --rate or --bits, not both"),  # N would be ignored
        (["--frames", "0"], "--frames must be at least 1"),
        (["--block", "0"], "block size B"),
        (["--out", __file__], "cannot write to the output folder"),
    ],
)
def test_demo_checks_its_options_before_the_model_loads(argv, message, tmp_path, capsys, one_line):
    out = [] if "--out" in argv else ["--out", str(tmp_path / "out")]
    assert main(["demo", *out, *argv]) == 2
    one_line(message)


def _tiny_clip(path, size=(32, 48), rate=10, frames=3):
    import fractions

    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fractions.Fraction(rate))
        s.height, s.width, s.pix_fmt = *size, "yuv420p"
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((*size, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


@pytest.mark.parametrize(
    "clip, argv, message",
    [
        # what the server would refuse, refused before the model loads (as the edge does)
        (dict(size=(14, 48)), [], "is 48x14: the server takes frames of 16 to 4096 pixels a side"),
        (dict(rate=1000), [], "give the stream a rate with --fps"),
        (dict(), ["--fps", "500"], "--fps must be 0.001 to 240"),
    ],
)
def test_demo_checks_the_video_before_the_model_loads(clip, argv, message, tmp_path, capsys, one_line):
    """--fps is the stream's rate (it was ignored, so a clip over 240 frames/s could not be
    demoed); a frame size or rate the server refuses fails before the model loads, and the
    output folder is not made."""
    video = _tiny_clip(tmp_path / "clip.avi", **clip)
    assert main(["demo", "--video", video, "--out", str(tmp_path / "out"), *argv]) == 2
    one_line(message)
    assert not (tmp_path / "out").exists()


def test_demo_on_a_folder_or_a_device_says_what_it_is(tmp_path, capsys, one_line):
    assert main(["demo", "--video", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    one_line("is a folder, not a video file")
    assert main(["demo", "--video", "/dev/null", "--out", str(tmp_path / "out")]) == 2
    one_line("/dev/null is not a regular file")


def test_edge_block_zero_is_an_error_not_the_default(capsys, one_line):
    assert main(["edge", __file__, "--server", "127.0.0.1:9", "--block", "0"]) == 2
    one_line("block size B")


def test_encode_rate_with_bits_is_an_error(feature_file, tmp_path, capsys, one_line):
    argv = ["encode", str(feature_file), str(tmp_path / "s.tsp"), "--rate", "0.1", "--bits", "4"]
    assert main(argv) == 2
    one_line("give --rate or --bits, not both")
    assert not (tmp_path / "s.tsp").exists()


def test_encode_block_zero_is_an_error_not_the_default(feature_file, tmp_path, capsys, one_line):
    assert main(["encode", str(feature_file), str(tmp_path / "s.tsp"), "--block", "0"]) == 2
    one_line("block size B")
    assert not (tmp_path / "s.tsp").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip"])
def test_encode_of_an_empty_or_broken_npz(tmp_path, content, capsys, one_line):
    path = tmp_path / "empty.npz"
    path.write_bytes(content)
    assert main(["encode", str(path), str(tmp_path / "s.tsp")]) == 2
    one_line("not a readable .npz feature file")


def test_decode_of_a_duplicated_packet_keeps_one_copy_and_fails(feature_file, tmp_path, capsys):
    from temposplit.codec.bitstream import header_length, parse_packet

    stream = tmp_path / "s.tsp"
    assert main(["encode", str(feature_file), str(stream), "--structure", "intra", "--key-interval", "1"]) == 0
    data = stream.read_bytes()
    pos, packets = header_length(data), []
    while pos < len(data):
        _, end = parse_packet(data, pos, 1 << 24)
        packets.append(data[pos:end])
        pos = end
    assert len(packets) == 6
    dup = tmp_path / "dup.tsp"
    dup.write_bytes(data[: header_length(data)] + b"".join(packets[:3] + [packets[2]] + packets[3:]))
    capsys.readouterr()
    assert main(["decode", str(dup), str(tmp_path / "d.npz")]) == 3
    assert "repeat a frame already decoded (first: frame 2)" in capsys.readouterr().err
    with np.load(tmp_path / "d.npz") as d:
        assert d["index"].tolist() == [0, 1, 2, 3, 4, 5]
        assert d["codes/x"].shape[0] == 6


@pytest.mark.parametrize(
    "argv, message",
    [
        (["edge", "--server", "127.0.0.1:9"], "either a video source (or $TEMPOSPLIT_SOURCE) or --replay"),
        (["edge", __file__, "--replay", __file__], "either a video source (or $TEMPOSPLIT_SOURCE) or --replay"),
        (["edge", "--replay", "/nonexistent/f.npz", "--m1", "m1.npz"], "do not apply"),
        (["edge", "--replay", "/nonexistent/f.npz"], "not found"),
        (["edge", "--replay", "/nonexistent/f.npz", "--source-address", "cam1"], "must be an IP address"),
        (["features", "/nonexistent/clip.avi", "out.npz"], "not found"),
        # an exported M1 holds its weights and calibration: options that set them would be ignored
        (["features", __file__, "out.npz", "--m1", "m1.npz", "--weights", "w.pb"], "--weights do not apply"),
        (["edge", __file__, "--m1", "m1.npz", "--calibration", "8", "--calibrate-on-clip"], "--calibration, --calib"),
        (["features", __file__, "/nonexistent/dir/out.npz"], "no folder"),
        (["features", __file__, "out.npz", "--frames", "0"], "--frames must be at least 1"),
        (["features", __file__, "out.npz", "--block", "0"], "block size B"),
    ],
)
def test_replay_and_features_options(argv, message, capsys, one_line):
    assert main(argv) == 2
    one_line(message)


def test_a_feature_file_without_the_model_identity_cannot_be_replayed(feature_file, capsys, one_line):
    assert main(["edge", "--replay", str(feature_file), "--server", "127.0.0.1:9"]) == 2
    one_line("not written by `temposplit features`")


def _clip(path, w, h, rate):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(3):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")))
        c.mux(s.encode(None))
    return str(path)


@pytest.mark.parametrize(
    "w, h, rate, message",
    [(8, 8, 25, "is 8x8: the server takes frames of 16 to 4096"), (64, 48, 1000, "e.g. --fps 240")],
)
def test_edge_refuses_what_the_server_would_before_the_model_loads(
    tmp_path, capsys, monkeypatch, w, h, rate, message, one_line
):
    import temposplit.host.cli as host_cli

    monkeypatch.setattr(host_cli, "_edge_model", lambda *a: pytest.fail("the model was loaded"))
    clip = _clip(tmp_path / "clip.mp4", w, h, rate)
    assert main(["edge", clip, "--server", "127.0.0.1:9"]) == 2
    one_line(message)
    if rate > 240:  # the rate the message names is taken
        monkeypatch.setattr(host_cli, "_edge_model", lambda *a: (_ for _ in ()).throw(SystemExit(7)))
        with pytest.raises(SystemExit, match="7"):
            main(["edge", clip, "--server", "127.0.0.1:9", "--fps", "30"])  # 30 too: given, not the default


def test_a_folder_given_as_a_video_is_named_a_folder(tmp_path, capsys, one_line):
    folder = tmp_path / "a dir.mp4"
    folder.mkdir()
    for argv in (
        ["edge", str(folder), "--server", "127.0.0.1:9"],
        ["features", str(folder), str(tmp_path / "f.npz")],
        ["models", "accuracy", "--video", str(folder)],
    ):
        assert main(argv) == 2
        one_line("is a folder, not a video file")


def test_serve_takes_torchvision_weights_api_names_as_weights(tmp_path):
    """DEFAULT and COCO_V1 name torchvision's weights, not files: the start-up check lets
    them through (the model checks them when it loads)."""
    from temposplit.server.cli import _check_startup

    _check_startup({"retinanet-resnet50-fpn": "DEFAULT", "fasterrcnn-resnet50-fpn": "COCO_V1"}, str(tmp_path / "o"))
    assert (tmp_path / "o").is_dir()


def test_a_value_that_starts_with_a_dash_is_told_how_to_write_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["edge", "clip.mp4", "--stream", "-cam"])
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "expected one argument" in line and "--option=VALUE" in line, line
    with pytest.raises(SystemExit):
        main(["encode", "f.npz", "s.tsp", "-n", "-x"])  # an alias of --bits
    assert "--option=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["edge", "clip.mp4", "--stream"])  # a value left out: no such hint
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "expected one argument" in line and "--option=VALUE" not in line, line
