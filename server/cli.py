"""``temposplit serve``: the cloud server."""

from __future__ import annotations

import sys
import threading

MIN_LINGER, MAX_LINGER = 1.0, 86400.0  # --session-linger: a day at most (a decoder and open files held)


_LOG = threading.Lock()


def log_line(message: str) -> None:
    """The server's log: one line on standard output, written whole. The server logs from
    several threads (the event loop, the workers, the HELLO pool); ``print`` wrote a line's
    text and its newline apart, so two lines came out merged, and an empty one after."""
    with _LOG:
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()


def register(sub) -> None:
    p = sub.add_parser("serve", help="accept edge streams: decode, run M2, store detections and video")
    p.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 every IPv4 address, :: every IPv6 one and, where "
        "the system allows, every IPv4 one too; an IPv6 address with or without brackets)",
    )
    p.add_argument("--port", type=_port, default=7300, help="port to listen on (default 7300; 0: any free port)")
    p.add_argument("--out", default="out/server", help="output folder: one sub-folder per stream (default out/server)")
    p.add_argument(
        "--weights", action="append", default=[], metavar="MODEL=PATH", help="local weights for a model (repeatable)"
    )
    p.add_argument(
        "--local-video",
        action="store_true",
        help="draw the annotated video on the edge's source file (its HELLO's video) when it is readable here "
        "(else on the features)",
    )
    p.add_argument("--max-streams", type=int, default=64, help="attached streams at once (default 64)")
    p.add_argument(
        "--max-streams-per-client",
        type=int,
        default=None,
        metavar="N",
        help="attached streams of one client: its certificate's subject under --tls-client-ca, else its address "
        "(default 16; 0: no limit)",
    )
    p.add_argument(
        "--max-new-streams-per-client",
        type=int,
        default=None,
        metavar="N",
        help="new streams (each an output folder) of one client per 60 s (default 60; 0: no limit)",
    )
    p.add_argument(
        "--max-connections-per-client",
        type=int,
        default=None,
        metavar="N",
        help="open connections from one client address (default 32; 0: no limit)",
    )
    p.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="every connection starts with a PROXY protocol header (v1 or v2) naming the client's address: "
        "only behind a proxy that sends it, with the port reachable from the proxy alone",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="frames per M2 batch (default 16; 1: each frame's detections depend on its bytes alone)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="S",
        help="drop an edge silent this long with no frame in flight (default 60 s; a slow, e.g. emulated, edge)",
    )
    p.add_argument(
        "--resume-window",
        type=float,
        default=None,
        metavar="S",
        help="an unfinished stream idle this long gives its name to a new stream (default 600 s)",
    )
    p.add_argument(
        "--session-linger",
        type=float,
        default=None,
        metavar="S",
        help="keep a detached stream's session (decoder, open files) this long for its edge to resume (default "
        "120 s; a new stream may still take the name past --resume-window); after it the files close, and a "
        "resume goes on from them in a new video segment",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve GET /metrics (Prometheus's text format) on this port of --metrics-host (default: none; "
        "0: any free port)",
    )
    p.add_argument(
        "--metrics-host",
        type=_host,
        default="127.0.0.1",
        help="the address of --metrics-port (default 127.0.0.1: this machine only); HTTPS when the server has "
        "--tls-cert, client certificates too under --tls-client-ca",
    )
    p.add_argument("--tls-cert", default=None, help="server certificate (enables TLS)")
    p.add_argument("--tls-key", default=None)
    p.add_argument("--tls-client-ca", default=None, help="require client certificates signed by this CA")
    p.set_defaults(handler=_serve)


def _port(text: str) -> int:
    import argparse

    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number in 0..65535, not {text!r}")
    return int(text)


def _host(text: str) -> str:
    """``--host``: an address or a name, an IPv6 address with or without the brackets URLs
    (and the edge's ``--server [::1]:7300``) put around it; never empty, which the system
    would take for every address."""
    import argparse

    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise argparse.ArgumentTypeError(f"an address to listen on, not {text!r} (0.0.0.0: every IPv4 address)")
    return host


def _serve(args) -> int:
    import sys

    from temposplit.errors import ConfigError
    from temposplit.protocol import TLSConfig, hostport
    from temposplit.server.m2 import CloudModels
    from temposplit.server.server import CloudServer

    weights = {}
    for item in args.weights:
        model, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--weights takes MODEL=PATH, not {item!r}")
        weights[model] = path
    if not args.out.strip():
        raise ConfigError("--out is empty: name the output folder")
    options = {"proxy_protocol": args.proxy_protocol, "max_batch": args.max_batch}
    if args.max_streams < 1:
        raise ConfigError(f"--max-streams must be at least 1, not {args.max_streams}")
    for flag in ("max_streams_per_client", "max_new_streams_per_client", "max_connections_per_client"):
        value = getattr(args, flag)
        if value is not None:
            if value < 0:
                raise ConfigError(f"--{flag.replace('_', '-')} must be 0 (no limit) or more, not {value}")
            options[flag] = value
    if args.max_batch < 1:
        raise ConfigError(f"--max-batch must be at least 1, not {args.max_batch}")
    warnings: list[str] = []  # printed once the server is up: a failed start is one line
    tls = TLSConfig.for_server(args.tls_cert, args.tls_key, args.tls_client_ca, warn=warnings.append)
    if args.idle_timeout is not None and not args.idle_timeout > 0:
        raise ConfigError(f"--idle-timeout must be positive, not {args.idle_timeout}")
    _raise_file_limit()
    if args.idle_timeout is not None:
        options["idle_timeout"] = args.idle_timeout
    if args.session_linger is not None:
        if not MIN_LINGER <= args.session_linger <= MAX_LINGER:
            raise ConfigError(
                f"--session-linger must be in {MIN_LINGER:g}..{MAX_LINGER:g} seconds, not {args.session_linger}"
            )
        options["linger"] = args.session_linger
    if args.resume_window is not None:
        if not args.resume_window >= 0:
            raise ConfigError(f"--resume-window must be 0 or more, not {args.resume_window}")
        options["resume_window"] = args.resume_window
    if args.metrics_port is not None:
        options["metrics"] = (args.metrics_host, args.metrics_port)
        if tls is None and not _loopback(args.metrics_host):
            warnings.append(
                f"warning: metrics on {args.metrics_host} without TLS: anyone who reaches the port reads every "
                "stream's name and figures"
            )
    elif args.metrics_host != "127.0.0.1":
        raise ConfigError("--metrics-host without --metrics-port: give the port to serve the metrics on")
    made = _check_startup(weights, args.out)  # a server that cannot work fails now, not per stream
    server = None
    try:
        models = CloudModels(weights)
        # Its ports bound first: a port in use fails at once, not after the models loaded (minutes).
        server = CloudServer(
            args.host,
            args.port,
            args.out,
            models,
            tls,
            args.local_video,
            args.max_streams,
            log=log_line,
            **options,
        )
        for model in weights:  # a file that is not this model's weights fails here, not in every HELLO
            models.get(model)
    except BaseException:
        if server is not None:  # made, never started: its sockets and HELLO pool closed
            _close_unstarted(server)
        _remove_empty(made)  # a server that did not start leaves no folder behind
        raise
    for warning in warnings:
        print(warning, file=sys.stderr, flush=True)
    print(f"temposplit server on {hostport(*server.address[:2])}, outputs in {args.out}", flush=True)
    if server.metrics is not None:
        print(f"metrics on {server.metrics.url}", flush=True)
    server.serve_forever()  # until SIGTERM or SIGINT: then every session's files are closed
    print("temposplit server stopped", flush=True)
    return 0


def _close_unstarted(server) -> None:
    """Close what a CloudServer that never served opened when it was made: its listening
    sockets (the stream port's, the metrics') and its HELLO pool."""
    server.sock.close()
    if server.metrics is not None:
        server.metrics.sock.close()
    server.pool.shutdown(wait=False)


def _loopback(host: str) -> bool:
    """Whether an address is this machine only (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_startup(weights: dict[str, str], out: str) -> list:
    """Every --weights names a known model and an existing file; --out is a folder this
    process can write (made if missing). Checked before the server listens: otherwise each
    stream would be refused with the same error. Returns the folders it made, deepest
    last, for :func:`_remove_empty` if the server then fails to start."""
    from pathlib import Path

    from temposplit.errors import ConfigError
    from temposplit.files import probe_writable
    from temposplit.model import cuts

    for model, path in weights.items():
        cuts.model_info(model)  # a ConfigError naming the known models
        # The SSD loads a file; a torchvision model a .pth/.pt, or a name of torchvision's
        # weights API (DEFAULT, COCO_V1: model/torchvision_models.py), checked when it loads.
        names_a_file = model == cuts.DEFAULT_MODEL or Path(path).suffix in (".pth", ".pt", ".pb")
        if names_a_file and not Path(path).is_file():
            raise ConfigError(f"--weights {model}={path}: no such file")
    missing = [p for p in (Path(out), *Path(out).parents) if not p.exists()][::-1]
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        probe_writable(out)
    except OSError as exc:
        _remove_empty(missing)
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return missing


def _remove_empty(folders: list) -> None:
    """Remove the folders ``_check_startup`` made, deepest first, while they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _raise_file_limit() -> None:
    """Idle sockets cost file descriptors: take the hard limit (accept() failing for lack
    of them is survived anyway, see docs/protocol.md)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass
