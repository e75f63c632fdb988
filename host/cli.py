"""``temposplit edge`` and ``temposplit demo``."""

from __future__ import annotations

import contextlib

from temposplit.cli import PARTIAL


def register(sub) -> None:
    from temposplit.codec.cli import add_codec_options

    p = sub.add_parser("demo", help="the main job: SSD + vtest.avi, edge and cloud on loopback")
    p.add_argument("--video", default=None, help="a video file (default: vtest.avi, fetched on first run)")
    p.add_argument("--frames", type=int, default=120, help="frames to stream (default 120, at most 2^24)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--cut", default=None, help="cut point (default: the SSD's default cut)")
    _add_backend_option(p)
    p.add_argument("--no-reference", action="store_true", help="skip the fidelity mAP (no uncompressed run)")
    add_codec_options(p)
    p.set_defaults(handler=_demo)

    p = sub.add_parser("edge", help="stream a video or camera through M1 and the codec to a server")
    p.add_argument(
        "source",
        nargs="?",
        default=None,
        help="video file, a camera device such as /dev/video0, or a network camera's URL (rtsp://, http://, udp://, "
        "...; docs/deployment.md, 'Network cameras'); default $TEMPOSPLIT_SOURCE, which keeps a URL's credentials "
        "off the command line that every user of the machine can read",
    )
    p.add_argument(
        "--replay",
        default=None,
        metavar="FILE",
        help="stream the cut tensors of a feature file (temposplit features) instead: no model, no PyTorch",
    )
    p.add_argument("--server", default="127.0.0.1:7300", help="host:port of the server (default 127.0.0.1:7300)")
    p.add_argument(
        "--stream",
        default="edge",
        type=_stream_name,
        help="stream name (the server's output folder; default edge): letters, digits, '.', '_', '-', "
        "at most 64, the first a letter or digit",
    )
    _add_model_option(p, "--m1's or --replay's")
    p.add_argument("--weights", default=None, help="local weights file (.pb/.pt for the SSD, .pth for torchvision)")
    p.add_argument("--cut", default=None)
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames (at most 2^24)")
    _add_source_options(p)
    _add_calibration_options(p)
    p.add_argument(
        "--m1",
        default=None,
        metavar="FILE",
        help="an exported int8 M1 (temposplit models export-m1) run with NumPy: no PyTorch (the board)",
    )
    _add_backend_option(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds of silence from the server before the edge reconnects, and, silent again on the new "
        "connection, gives up (default 60, at most 86400; more for a slow edge)",
    )
    p.add_argument(
        "--state",
        default=None,
        metavar="DIR",
        help="where the edge keeps a running stream's resume token, so that a rerun after the edge stopped "
        "(a crash, a power cut) resumes the stream (default $TEMPOSPLIT_STATE or ~/.local/state/temposplit/edge)",
    )
    p.add_argument("--tls-ca", default=None, help="CA file to check the server (enables TLS)")
    p.add_argument("--tls-cert", default=None, help="this edge's certificate (client authentication)")
    p.add_argument("--tls-key", default=None)
    p.add_argument(
        "--tls-server-name",
        default=None,
        metavar="NAME",
        help="the name (or IP address) the server's certificate must carry (default: the host of --server)",
    )
    p.add_argument(
        "--source-address",
        default=None,
        metavar="IP",
        help="local address to connect from (the address a proxy's source affinity sees; docs/deployment.md)",
    )
    add_codec_options(p)
    p.set_defaults(handler=_edge)

    p = sub.add_parser(
        "features",
        help="a video's int8 M1 cut tensors in a feature file (encode's input; edge --replay streams it)",
    )
    p.add_argument("video", help="video file, camera device or network camera's URL")
    p.add_argument("output", help="feature file (.npz) to write")
    p.add_argument("--frames", type=int, default=40, help="frames to write (default 40, at most 2^24)")
    _add_source_options(p)
    _add_model_option(p, "--m1's")
    p.add_argument("--weights", default=None, help="local weights file (.pb/.pt for the SSD, .pth for torchvision)")
    p.add_argument("--cut", default=None)
    _add_calibration_options(p)
    p.add_argument("--m1", default=None, metavar="FILE", help="an exported int8 M1 run with NumPy (as the edge's)")
    p.add_argument("--block", "-B", type=int, default=None, help="block size stored for every tensor")
    p.set_defaults(handler=_features)


def _stream_name(text: str) -> str:
    """``--stream``: a name the server takes (checked here, before the model loads and the
    connection's retries, rather than refused by the server)."""
    import argparse

    from temposplit.protocol import STREAM_NAME

    if not STREAM_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a stream name: 1-64 letters, digits, '.', '_' or '-', the first a letter or digit"
        )
    return text


def _add_model_option(p, files: str) -> None:
    """``--model``: None where not given, so that a file that holds its model (an exported M1,
    a feature file) is not checked against a default nobody asked for."""
    from temposplit.model.cuts import DEFAULT_MODEL

    p.add_argument("--model", default=None, help=f"the detector (default {DEFAULT_MODEL}, or the {files} own)")


def _add_backend_option(p) -> None:
    from temposplit.host.backends import BACKENDS

    p.add_argument(
        "--backend",
        default="golden",
        choices=BACKENDS,
        help="who runs the codec: golden (software, default), rtl (the fabric simulated under Verilator), "
        "pynq (the fabric on a PYNQ-Z2; docs/pynq-z2.md)",
    )


def _add_source_options(p) -> None:
    """A camera's or network source's FFmpeg options and a network source's silence timeout."""
    from temposplit.host.sources import SOURCE_TIMEOUT

    p.add_argument(
        "--input-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an FFmpeg option of a camera or network source, e.g. rtsp_transport=udp, video_size=1280x720 "
        "(repeatable; RTSP is read over TCP unless given)",
    )
    p.add_argument(
        "--source-timeout",
        default=None,
        metavar="S",
        help=f"seconds a network source may stay silent (to connect, then for each picture) before the edge ends "
        f"the stream (default {SOURCE_TIMEOUT:g})",
    )


def _source_options(args) -> dict:
    """``open_source``'s keywords from the source options, checked (a bad one: one line, exit 2)."""
    from temposplit.host.sources import SOURCE_TIMEOUT, check_source_timeout, input_options

    timeout = SOURCE_TIMEOUT if args.source_timeout is None else check_source_timeout(args.source_timeout)
    return {"options": input_options(args.input_option), "timeout": timeout}


MAX_CALIBRATION = 256  # --calibration: frames held in memory at once (a 1080p clip's: 1.6 GB)


def _add_calibration_options(p) -> None:
    """The int8 M1's calibration: the fixed set by default, the clip itself on request."""
    p.add_argument(
        "--calibration",
        type=int,
        default=None,
        metavar="N",
        help="int8 calibration on N frames of the fixed calibration set (default: all of it; docs/models.md; "
        f"at most {MAX_CALIBRATION})",
    )
    p.add_argument(
        "--calibrate-on-clip",
        action="store_true",
        help="calibrate on the first --calibration (default 16) frames of the video itself instead: "
        "its accuracy then flatters the clip",
    )


def _codec(args) -> dict:
    from temposplit.codec.cli import config_from_args

    cfg = config_from_args(args, [])
    keys = (
        "n_bits",
        "structure",
        "coder",
        "search_range",
        "per_channel",
        "residual",
        "reference",
        "refresh_threshold",
        "table_policy",
        "key_interval",
        "rate_target",
        "fps",
    )
    out = {k: getattr(cfg, k) for k in keys}
    # Check the codec options now, before minutes of model loading: an encoder is built
    # (which also checks the rate control) for a one-element tensor.
    from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec

    Encoder(
        CodecConfig(tensors=[TensorSpec("check", (1, 1, 1), 1.0, 0, 4 if args.block is None else args.block)], **out)
    )
    if args.block is not None:
        out["block"] = args.block
    return out


def _at_least(value, minimum: int, option: str, maximum: int | None = None) -> None:
    from temposplit.errors import ConfigError

    if value is not None and value < minimum:
        raise ConfigError(f"{option} must be at least {minimum}, not {value}")
    if value is not None and maximum is not None and value > maximum:
        raise ConfigError(f"{option} must be at most {maximum}, not {value}")


def _check_frames(value) -> None:
    """``--frames``: 1 to ``protocol.MAX_FRAMES`` (2^24, a stream's frame indices: 6.5 days at
    30 frames/s), said before the model loads (a count past sys.maxsize was an internal error)."""
    from temposplit.protocol import MAX_FRAMES

    _at_least(value, 1, "--frames", MAX_FRAMES)


def _check_m1_options(args) -> None:
    """An exported M1 (--m1) holds its weights and its calibration: the options that set
    them would be ignored silently, so they are refused (before the source is opened)."""
    from temposplit.errors import ConfigError

    if args.m1:
        given = {
            "--weights": args.weights is not None,
            "--calibration": args.calibration is not None,
            "--calibrate-on-clip": args.calibrate_on_clip,
        }
        ignored = [flag for flag, is_given in given.items() if is_given]
        if ignored:
            raise ConfigError(f"--m1 holds the M1's weights and calibration: {', '.join(ignored)} do not apply")


def _edge_model(args, path: str, log):
    """The edge's M1: an exported NumPy M1, or the int8 model calibrated on the fixed calibration
    set (never on the video it runs on, unless ``--calibrate-on-clip`` asks for that)."""
    import itertools

    from temposplit.errors import ConfigError
    from temposplit.host.pipeline import EdgeModel, NumpyEdgeModel
    from temposplit.host.sources import open_source
    from temposplit.model.calibration import calibration_frames
    from temposplit.model.cuts import DEFAULT_MODEL

    if args.m1:
        model = NumpyEdgeModel(args.m1, log=log)
        _check_model(args.model, args.m1, model.model, "an M1")
        if args.cut:  # the file's M1 ends at one cut: another --cut would be ignored silently
            from temposplit.model.cuts import get_cut

            if get_cut(model.model, args.cut).name != model.cut.name:
                raise ConfigError(
                    f"--cut {args.cut}, but {args.m1} is the M1 up to {model.cut.name}: export one at "
                    f"{args.cut} (temposplit models export-m1 --cut {args.cut}) or leave --cut out"
                )
        return model
    if args.calibrate_on_clip:
        calib = list(itertools.islice(open_source(path, **_source_options(args)).frames(), args.calibration or 16))
    else:
        calib = calibration_frames(args.calibration)
    return EdgeModel(args.model or DEFAULT_MODEL, args.cut, args.weights, calib, log=log)


def _check_model(given: str | None, path: str, held: str, what: str) -> None:
    """``--model``, where given, against the model the file ``path`` holds (an exported M1, a
    feature file): another would be ignored silently."""
    from temposplit.errors import ConfigError

    if given is not None and given != held:
        raise ConfigError(f"--model {given}, but {path} is {what} of {held}: leave --model out")


def _demo(args) -> int:
    from temposplit.host.demo import print_summary, run_demo
    from temposplit.host.edge import check_fps

    _check_frames(args.frames)
    if args.video is not None:
        from temposplit.errors import ConfigError
        from temposplit.host.sources import is_url, redact

        if is_url(args.video):  # (read twice: streamed, then scored) and never shown with its credentials
            raise ConfigError(
                f"--video {redact(args.video)}: the demo takes a video file; temposplit edge streams a URL"
            )
    if args.fps is not None:
        check_fps(args.fps)
    codec = _codec(args)
    codec.pop("fps")  # the clip's rate, or --fps
    summary = run_demo(
        video=args.video,
        frames=args.frames,
        out=args.out,
        codec=codec,
        fps=args.fps,
        backend=args.backend,
        cut=args.cut,
        reference=not args.no_reference,
    )
    print_summary(summary)
    return 0 if summary["errors"] == 0 else PARTIAL


def _edge(args) -> int:
    import itertools
    import os
    import sys

    from temposplit.errors import ConfigError, TemposplitError
    from temposplit.host.backends import check_backend
    from temposplit.host.edge import Edge, check_fps, check_frame_size, check_rate, check_timeout, server_address
    from temposplit.host.resume import ResumeState, source_identity, state_folder
    from temposplit.protocol import TLSConfig

    address = server_address(args.server)
    if args.source is None and args.replay is None:  # a process's environment is its owner's alone, unlike its argv
        args.source = os.environ.get("TEMPOSPLIT_SOURCE") or None
    if (args.source is None) == (args.replay is None):
        raise ConfigError("give either a video source (or $TEMPOSPLIT_SOURCE) or --replay FILE")
    if args.replay and (args.m1 or args.weights or args.cut or args.calibration is not None or args.calibrate_on_clip):
        raise ConfigError(
            "--replay streams recorded cut tensors: --m1, --weights, --cut, --calibration and --calibrate-on-clip "
            "do not apply"
        )
    _check_frames(args.frames)
    _at_least(args.calibration, 1, "--calibration", MAX_CALIBRATION)
    _check_m1_options(args)
    source_options = _source_options(args)
    if args.replay and (args.input_option or args.source_timeout is not None):
        raise ConfigError("--replay streams recorded cut tensors: --input-option and --source-timeout do not apply")
    if args.source_address:
        import ipaddress

        try:
            ipaddress.ip_address(args.source_address)
        except ValueError:
            raise ConfigError(f"--source-address must be an IP address, not {args.source_address!r}") from None
    check_timeout(args.timeout)
    if args.fps is not None:
        check_fps(args.fps)
    codec = _codec(args)  # bad codec options fail here, before the model loads
    check_backend(args.backend)  # a back end this machine cannot run, too
    server_name = address[0] if args.tls_server_name is None else args.tls_server_name  # the host --server names
    tls = TLSConfig.for_client(args.tls_ca, args.tls_cert, args.tls_key, server_name)  # partial: an error
    if args.replay:
        from temposplit.host.sources import open_replay

        source = model = open_replay(args.replay)  # the recorded M1 outputs: no model to load
        _check_model(args.model, args.replay, source.model, "a feature file")
        video = {"fps": source.fps}
    else:
        from temposplit.host.sources import open_source

        source = open_source(args.source, **source_options)  # a URL: refused, unreachable or silent, said here
        video = {"video": source.path, "fps": source.fps}  # (a URL redacted: the server never sees its credentials)
    codec["fps"] = args.fps if args.fps is not None else source.fps
    if args.replay:
        check_rate(args.replay, codec["fps"])
    else:  # a live source: what the server would refuse, refused before the model loads
        check_frame_size(source.path, source.size)
        check_rate(source.path, codec["fps"])
        model = _edge_model(args, args.source, print)

    def make_edge():  # one per stream: a camera goes on in a new stream when one is full
        return Edge(
            model,
            dict(codec),
            address,
            args.stream,
            backend=args.backend,
            tls=tls,
            log=print,
            progress=lambda n, r: (
                print(f"frame {n}: {r.bytes / max(1, r.packets):.0f} B/packet") if n % 30 == 0 else None
            ),
            source_address=args.source_address,
            timeout=args.timeout,
            keep_frames=False,  # a camera may stream for days: counts only, bounded memory
            resume_state=ResumeState(state_folder(args.state), f"{address[0]}:{address[1]}", args.stream),
            source_id=source_identity(args.replay or args.source),
        )

    current = [make_edge()]
    frames = source.frames() if args.replay else source.stamped()  # a file's or a live source's times with each
    # A container's count is its header's word, which may fall short of the frames the file
    # holds (a recorder that crashed; OpenCV's estimate): the encoder takes it as a hint, and
    # past it codes the clip as one of unknown length (Encoder.set_total_frames).
    total = source.count
    if args.frames:
        frames = itertools.islice(frames, args.frames)
        total = min(args.frames, total) if total else args.frames
    live = getattr(source, "live", False)
    with _stopped_by_signals(current, getattr(source, "interrupt", None)) as stopped:
        try:
            report = stream_on(current, make_edge, frames, video, total, live)
        except TemposplitError as exc:
            edge = current[0]
            if not stopped:
                gone = getattr(exc, "gone", False)  # the server has no such stream to resume
                if edge.opened and not gone and edge.resume_state.read() is not None:  # opened, not ended
                    raise TemposplitError(
                        f"{exc}; the stream {args.stream!r} stays unfinished on the server: "
                        "the same command, run again, resumes it"
                    ) from exc
                raise
            print(f"{args.prog}: {exc}", file=sys.stderr)  # "stopped by SIGINT; ... recorded by the server"
            return 128 + stopped[0]
    if stopped:  # after the last frame, while the edge waited for the last answers or the SUMMARY (as the demo's)
        import signal

        name = signal.Signals(stopped[0]).name
        print(
            f"{args.prog}: stopped by {name} after the stream ended: {report.frames} frame(s) sent; "
            f"{summary_line(report.summary)}",
            file=sys.stderr,
        )
        return 128 + stopped[0]
    dropped = ""
    if getattr(source, "url", None) is not None:
        dropped = f", {source.dropped} dropped at the source (the camera sent them faster than the edge took them)"
    print(
        f"{report.frames} frames, {report.bytes} bytes, {len(report.errors)} errors{dropped}; "
        f"{summary_line(report.summary)}"
    )
    if report.full:  # a file of more frames than a stream carries
        from temposplit.protocol import MAX_FRAMES

        print(
            f"{args.prog}: the video has more frames than a stream carries ({MAX_FRAMES}): the stream ended there",
            file=sys.stderr,
        )
        return PARTIAL
    return 0 if not report.errors else PARTIAL


def stream_on(current: list, make_edge, frames, video, total, live: bool):
    """``current[0]``'s stream of ``frames``; a live source's stream that is full (2^24
    frames, the most a stream carries: 6.5 days at 30 frames/s) is ended, and a new stream of
    the same name goes on with the next frame, ``current[0]`` its new edge (the server keeps
    the full one's outputs as ``<stream>.<k>``: docs/protocol.md). Returns the last stream's
    report; a file's full stream ends there (``report.full``)."""
    import itertools

    while True:
        edge = current[0]
        report = edge.run(frames, video=video, total=total, positions=not live)
        if not (report.full and live) or edge.stop is not None:  # (a signal while the full one ended: no next)
            return report
        counts = f"{report.frames} frames, {report.bytes} bytes, {len(report.errors)} errors"
        print(f"{counts}; {summary_line(report.summary)}")
        print(
            f"stream {edge.stream!r} is full ({report.frames} frames, the most a stream carries): a new stream of "
            "the same name goes on, the server keeping this one's outputs beside it"
        )
        frames = itertools.chain([edge.left_over], frames)
        current[0] = make_edge()


@contextlib.contextmanager
def _stopped_by_signals(current: list, interrupt=None):
    """The list of the signals received while streaming: SIGINT and SIGTERM (Ctrl-C, a service
    manager stopping the edge) end the stream after the current frame, as a source that stops
    does: the frames sent are answered, END tells the server the count, and the stream's name
    is free for the next run (an edge killed at once leaves its stream unfinished, for the
    same command to resume: host/resume.py). A second signal stops at once. A signal the
    process ignores (a background job of a shell without job control, a parent's SIG_IGN)
    stays ignored, as the demo's does."""
    import signal
    import threading

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield got
        return

    def handler(signum, frame):
        edge = current[0]  # the stream's edge now (a full stream's successor)
        if edge.stop is not None:  # a second signal: at once (SIGTERM as the CLI's "terminated", 143)
            from temposplit.signals import Terminated

            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        got.append(signum)
        edge.stop = f"stopped by {signal.Signals(signum).name}"
        if interrupt is not None:  # a network source waiting for a picture: not for its silence timeout
            interrupt()

    previous = {
        sig: signal.signal(sig, handler)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield got
    finally:
        for sig, earlier in previous.items():  # (None: a handler not set from Python)
            signal.signal(sig, earlier if earlier is not None else signal.SIG_DFL)


def summary_line(summary: dict | None) -> str:
    """The server's SUMMARY (docs/protocol.md) as words: what it recorded and where."""
    from temposplit import protocol as P

    if not isinstance(summary, dict):
        return "no summary from the server"

    def count(key):
        try:
            return len(P.from_ranges(summary.get(key) or []))
        except P.ProtocolError:
            return "?"

    def number(key, ranges):  # a count; its ranges only where it has none (they may be cut)
        value = summary.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else count(ranges)

    text = f"server: stream {summary.get('stream')!s}, {number('decoded', 'recorded')} of "
    text += f"{summary.get('frames')!s} frames recorded"
    failed = number("errors", "failed")
    if failed:
        text += f", {failed} failed"
    if summary.get("ranges_cut") is True:
        text += f" (its ranges stop at frame {summary.get('ranges_below')!s}: detections.jsonl has every record)"
    if summary.get("detections"):
        text += f", detections {summary['detections']}"
    videos = summary.get("videos")
    if isinstance(videos, list) and len(videos) > 1:  # a resumed stream's video, in segments
        text += f", video in {len(videos)} segments {', '.join(map(str, videos))}"
    elif summary.get("video"):
        text += f", video {summary['video']}"
    if summary.get("video_error"):
        text += f" (video {summary['video_error']})"
    return text


def _features(args) -> int:
    import itertools
    import sys

    from temposplit.errors import ConfigError
    from temposplit.host.edge import check_frame_size
    from temposplit.host.features import write_features
    from temposplit.host.sources import open_source

    _check_frames(args.frames)
    _at_least(args.calibration, 1, "--calibration", MAX_CALIBRATION)
    _check_m1_options(args)
    if args.block is not None:
        from temposplit.codec.motion import check_block

        check_block(args.block)
    source_options = _source_options(args)
    _check_writable_file(args.output, source=args.video)
    source = open_source(args.video, **source_options)
    try:  # encode takes such a file; edge --replay would not stream it
        check_frame_size(source.path, source.size)
    except ConfigError as exc:
        print(f"warning: {exc}: edge --replay cannot stream this file (encode can)", file=sys.stderr)
    model = _edge_model(args, args.video, print)
    s = write_features(
        args.output,
        model,
        itertools.islice(source.frames(), args.frames),
        source.fps,
        args.block,
        log=print,
    )
    shapes = ", ".join(f"{n} {'x'.join(map(str, shape))}" for n, shape in s["tensors"])
    print(f"{s['frames']} frames of {s['model']} at {s['cut']} ({shapes}) -> {args.output}")
    if getattr(source, "url", None) is not None:
        print(f"{source.dropped} frames dropped at the source (the camera sent them faster than M1 took them)")
    return 0


def _check_writable_file(path: str, source: str | None = None) -> None:
    """Fail now, not after the model has loaded, when ``path`` cannot be written, or is the
    input ``source`` itself (which writing would destroy)."""
    import os
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.files import probe_writable

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{path} is a folder, not a file to write")
    if not p.parent.is_dir():
        raise ConfigError(f"cannot write {path}: no folder {p.parent}")
    if not p.exists() or p.is_file():  # written beside it (a spool, then renamed over it): not /dev/null
        try:
            probe_writable(Path(os.path.realpath(path)).parent)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    if source is not None and p.exists():
        try:
            same = os.path.samefile(source, path)
        except OSError:
            same = False
        if same:
            raise ConfigError(f"{path} is the input {source}: give another output file")


def register_bench(sub) -> None:
    p = sub.add_parser("e2e", help="end to end: frames/s, latency and time per stage of the demo configuration")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    p.set_defaults(handler=_bench_e2e)


def _bench_e2e(args) -> int:
    import json
    import tempfile

    from temposplit.host.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        s = run_demo(frames=args.frames, out=args.out or tmp, reference=False, log=lambda msg: None)
    st = s["stage_ms"]
    codec = st["encode"] + (st["decode"] or 0.0)
    model = st["m1"] + (st["m2"] or 0.0)
    result = {
        "frames": s["frames"],
        "end_to_end_fps": s["end_to_end_fps"],
        "end_to_end_fps_from_start": s["end_to_end_fps_from_start"],
        "latency_ms_median": s["latency_ms_median"],
        "stage_ms": st,
        "codec_share_of_m1_m2": round(codec / model, 4) if model else None,
        "bytes_per_frame": s["bytes_per_frame"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['frames']} frames: {result['end_to_end_fps']} frames/s end to end after the first frame "
            f"({result['end_to_end_fps_from_start']} with the start), "
            f"median latency {result['latency_ms_median']} ms; per frame M1 {st['m1']} ms, encode {st['encode']} ms, "
            f"decode {st['decode']} ms, M2 {st['m2']} ms; the codec costs {100 * result['codec_share_of_m1_m2']:.1f} % "
            f"of M1 + M2"
        )
    return 0
