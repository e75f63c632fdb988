"""``temposplit bench server``: the server's capacity under many concurrent edge streams.

K replay edges (``temposplit edge --replay``: recorded cut tensors, no model on the edge
side) stream F frames each at once to one server, started here (``temposplit serve`` in
its own process, on 127.0.0.1) or already running (``--server``). Prints frames/s, the
p50 and p99 latency (a frame's send to its detections), the server's peak resident
memory, and how many frames got a record (detections or an explicit error).
Procedure and figures: docs/deployment.md.
"""

from __future__ import annotations

MAX_CLIENTS = 1024  # edges of one run: each is a thread or two here, and a connection there


def register_bench(sub) -> None:
    p = sub.add_parser("server", help="server capacity: K concurrent replay edges; frames/s, latency, peak RSS")
    p.add_argument("--clients", type=int, default=8, help="concurrent edge streams, 1..1024 (default 8)")
    p.add_argument("--frames", type=int, default=40, help="frames per stream (default 40)")
    p.add_argument(
        "--features",
        default=None,
        metavar="FILE",
        help="feature file to replay (temposplit features); default: made from vtest.avi",
    )
    p.add_argument(
        "--server",
        default=None,
        metavar="HOST:PORT",
        help="a running server (default: start one, without per-client limits: every edge here has one address); "
        "its --max-streams-per-client, --max-new-streams-per-client and --max-connections-per-client must allow "
        "--clients",
    )
    p.add_argument("--server-pid", type=int, default=None, help="its process id, for its peak memory (Linux)")
    p.add_argument("--out", default=None, help="output folder of the started server (default: a temporary one)")
    p.add_argument("--timeout", type=float, default=60.0, help="the edges' answer timeout in s (the edge's default)")
    p.add_argument(
        "--pace",
        action="store_true",
        help="each edge sends at the clip's frame rate, as a camera does (default: as fast as its window allows)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_bench_server)


def _bench_server(args) -> int:
    import json
    import tempfile

    from temposplit.errors import ConfigError
    from temposplit.host.edge import check_timeout, server_address

    if not 1 <= args.clients <= MAX_CLIENTS or args.frames < 1:
        raise ConfigError(f"--clients must be 1..{MAX_CLIENTS} and --frames at least 1")
    if args.server and args.out:
        raise ConfigError("--out is the started server's folder: not with --server")
    if args.server:
        server_address(args.server)
    elif args.server_pid is not None:
        raise ConfigError("--server-pid is the process of the server given with --server")
    check_timeout(args.timeout)
    # SIGTERM unwinds through here as an interrupt (temposplit.signals, set by the CLI): the
    # started server is stopped and the temporary folder removed on the way out.
    with tempfile.TemporaryDirectory(prefix="temposplit-bench-") as tmp:
        result = run_bench(
            args.clients,
            args.frames,
            args.features,
            args.server,
            args.server_pid,
            args.out,
            tmp,
            args.timeout,
            args.pace,
        )
    unknown = result.get("clients_without_summary", 0)  # a remote server's clients whose counts are not known
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        print(
            f"{result['clients']} clients x {result['frames_per_client']} frames: {result['frames_per_s']} frames/s; "
            f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; server peak RSS {result['server_peak_rss_mb']} MB; "
            f"{result['frames_with_detections']} frames with detections, {result['frames_with_error_record']} with "
            f"an error record, {result['frames_without_record']} without a record; "
            f"{len(result['failed_clients'])} clients failed" + (f", {unknown} without a SUMMARY" if unknown else "")
        )
    return 0 if not result["failed_clients"] and result["frames_without_record"] == 0 and not unknown else 1


def first_frames(replay, frames: int, features) -> list:
    """The first ``frames`` frames of ``replay`` (a features file), read no further: the file may
    hold hours of them (a ConfigError where it holds fewer)."""
    import itertools

    from temposplit.errors import ConfigError

    if replay.count < frames:
        raise ConfigError(f"{features} has {replay.count} frames, fewer than --frames {frames}")
    read = replay.frames()
    try:
        return list(itertools.islice(read, frames))
    finally:
        read.close()


def run_bench(
    clients: int,
    frames: int,
    features: str | None,
    server: str | None,
    server_pid: int | None,
    out: str | None,
    tmp: str,
    timeout: float = 60.0,
    pace: bool = False,
) -> dict:
    import json
    import threading
    import time
    from pathlib import Path

    import numpy as np

    from temposplit.codec.encoder import PRESETS
    from temposplit.host.edge import Edge, server_address
    from temposplit.host.sources import open_replay

    if features is None:
        features = str(Path(tmp) / "features.npz")
        _make_features(features, frames)
    replay = open_replay(features)
    recorded = first_frames(replay, frames, features)
    codec = {**PRESETS["recommended"], "fps": replay.fps}

    proc = None
    out_dir = Path(out or Path(tmp) / "server")
    if server is None:
        proc, address = start_server(out_dir, max_streams=max(64, clients + 1), options=NO_PER_CLIENT_LIMITS)
        pid = proc.pid
    else:
        address, pid, out_dir = server_address(server), server_pid, None
    try:
        # One short stream first: the server loads its model on the first stream's HELLO.
        Edge(replay, dict(codec), address, f"bench-warmup-{time.time_ns()}", timeout=300).run(
            recorded[:2], video={"fps": replay.fps}, total=2
        )
        names = [f"bench-{time.time_ns()}-{i}" for i in range(clients)]
        reports: dict[int, object] = {}
        failures: dict[int, str] = {}
        start = threading.Barrier(clients + 1)

        def client(i: int) -> None:
            edge = Edge(replay, dict(codec), address, names[i], timeout=timeout)
            start.wait()
            try:
                source = _paced(recorded, replay.fps) if pace else recorded
                reports[i] = edge.run(source, video={"fps": replay.fps}, total=frames)
            except Exception as exc:  # noqa: BLE001 - a client's failure is a result, reported
                failures[i] = f"{type(exc).__name__}: {exc}"
                reports[i] = edge.report

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        peak = peak_rss_mb(pid)
    finally:
        if proc is not None:
            stop_server(proc)

    latencies = [v for r in reports.values() for v in r.latency_ms.values()]
    detections = sum(len(r.detections) for r in reports.values())
    edge_errors = sum(len(r.errors) for r in reports.values())
    result = {
        "clients": clients,
        "frames_per_client": frames,
        "paced_fps": replay.fps if pace else None,
        "frames_sent": clients * frames,
        "wall_s": round(wall, 2),
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "p99": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
        },
        "server_peak_rss_mb": peak,
        "frames_with_detections": detections,  # as the edges saw them (ACKs): the records' or SUMMARYs' below
        "edge_errors": edge_errors,
        "failed_clients": sorted(failures.values()),
    }
    if out_dir is not None:  # the server's own records: every frame index once
        with_det = with_err = 0
        for name in names:
            path = out_dir / name / "detections.jsonl"
            recs = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
            with_det += len({r["frame"] for r in recs if "detections" in r and r["frame"] < frames})
            with_err += len({r["frame"] for r in recs if "error" in r and r["frame"] < frames})
        result["frames_with_detections"] = with_det
        result["frames_with_error_record"] = with_err
        result["frames_without_record"] = clients * frames - with_det - with_err
    else:  # a remote server: its SUMMARYs; a client whose SUMMARY never came is counted apart (not known)
        summaries = [r.summary for r in reports.values() if r.summary]
        result["frames_with_detections"] = sum(s.get("decoded", 0) for s in summaries)
        result["frames_with_error_record"] = sum(s.get("errors", 0) for s in summaries)
        result["frames_without_record"] = len(summaries) * frames - sum(s.get("frames", 0) for s in summaries)
        result["clients_without_summary"] = clients - len(summaries)
    result["frames_per_s"] = round(result["frames_with_detections"] / wall, 2)  # frames with detections
    return result


def _paced(frames, fps: float):
    """``frames``, each yielded no earlier than its capture time at ``fps``."""
    import time

    t0 = time.monotonic()
    for i, frame in enumerate(frames):
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield frame


def _make_features(path: str, frames: int) -> None:
    import subprocess
    import sys

    from temposplit.errors import ConfigError, MissingDependencyError
    from temposplit.host.sources import open_source
    from temposplit.model import data

    video = data.vtest_path()
    if not video.is_file():
        raise MissingDependencyError("vtest.avi is not fetched (`temposplit fetch-data`), or give --features")
    # a clip shorter than --frames: said before M1 runs over the whole of it (minutes)
    count = open_source(str(video)).count
    if count is not None and count < frames:
        raise ConfigError(f"{video} has {count} frames, fewer than --frames {frames}")
    cmd = [sys.executable, "-m", "temposplit", "features", str(video), path, "--frames", str(frames)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise MissingDependencyError(f"temposplit features failed: {done.stderr.strip()[-500:]}")


# `serve`'s options for a server whose every edge connects from this machine's one address
# (the bench's, the soak's): no per-client limits, which would count them all as one client.
NO_PER_CLIENT_LIMITS = (
    "--max-streams-per-client",
    "0",
    "--max-new-streams-per-client",
    "0",
    "--max-connections-per-client",
    "0",
)


def start_server(out_dir, max_streams: int = 64, options: tuple[str, ...] = ()):
    """``temposplit serve`` (with ``options``, further command-line options) in a new
    process on an ephemeral port of 127.0.0.1; returns (process, address)."""
    import re
    import subprocess
    import sys
    import time

    from temposplit.errors import TemposplitError

    cmd = [sys.executable, "-m", "temposplit", "serve", "--port", "0", "--out", str(out_dir)]
    cmd += ["--max-streams", str(max_streams), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    lines = []
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r" on (\S+):(\d+)", line)
            if m:
                # Keep draining its log so that the server never blocks on a full pipe.
                import threading

                threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
                return proc, (m.group(1), int(m.group(2)))
    except BaseException:  # interrupted while it starts: it must not outlive this process
        proc.kill()
        proc.wait()
        raise
    proc.kill()
    proc.wait()
    # its last line (its one-line refusal, a traceback's exception), without the newline: one line
    said = next((line.strip() for line in reversed(lines) if line.strip()), "")
    raise TemposplitError(f"the server did not start: {said[-500:] or f'exit status {proc.returncode}'}")


def stop_server(proc) -> None:
    """SIGINT (the server finishes every stream's files), then SIGKILL after 60 s."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except BaseException:  # a second interrupt while it finishes: it must not outlive this process
        proc.kill()
        proc.wait()
        raise


def peak_rss_mb(pid: int | None) -> float | None:
    """The process's peak resident set (VmHWM, Linux), in MB (10^6 bytes)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) * 1024 / 1e6, 1)
    except OSError:
        return None
    return None
