"""Server memory over many sequential streams (a benchmark: it prints figures, asserts nothing).

``python -m temposplit.server.soak --streams 200 --frames 5 --features F.npz`` starts
``temposplit serve`` in its own process, streams the recorded M1 outputs of F (``temposplit
features``) as that many short replay streams one after another, and prints one JSON
object: the server's resident memory (VmRSS), its peak (VmHWM), its threads and its open
file descriptors after the warm-up stream and at checkpoints, and the memory's growth from
the first checkpoint to the last (docs/protocol.md: a finished stream is dropped from
memory; docs/deployment.md, "Long runs"). SIGTERM and SIGINT stop the started server
too, then one line and exit status 143 or 130.
"""

from __future__ import annotations

import json
import sys
import tempfile


def _status(pid: int) -> dict:
    """The server's resident memory, its peak, its threads and its open file descriptors."""
    import os

    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return {
        "rss_mb": round(out["VmRSS"] * 1024 / 1e6, 1),
        "peak_rss_mb": round(out["VmHWM"] * 1024 / 1e6, 1),
        "threads": out["Threads"],
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def run(streams: int, frames: int, features: str, out: str, checkpoints: int = 10) -> dict:
    from temposplit.codec.encoder import PRESETS
    from temposplit.host.edge import Edge
    from temposplit.host.sources import open_replay
    from temposplit.server.bench import NO_PER_CLIENT_LIMITS, first_frames, start_server, stop_server

    replay = open_replay(features)
    recorded = first_frames(replay, frames, features)
    codec = {**PRESETS["recommended"], "fps": replay.fps}
    marks = []
    errors = 0
    # Every stream of the soak connects from this machine's one address: no per-client limits
    # (with the server's defaults, its 61st stream in 60 s was refused: --max-new-streams-per-client).
    proc, address = start_server(out, options=NO_PER_CLIENT_LIMITS)  # an interrupt while it starts stops it there
    try:
        for k in range(streams + 1):  # stream 0 warms the server up (it loads the model)
            report = Edge(replay, dict(codec), address, f"soak{k}", timeout=120).run(
                recorded, video={"fps": replay.fps}, total=len(recorded)
            )
            errors += len(report.errors)
            if k == 0 or k % max(1, streams // checkpoints) == 0:
                marks.append({"streams": k, **_status(proc.pid)})
    finally:
        stop_server(proc)
    base = marks[1] if len(marks) > 1 else marks[0]
    last = marks[-1]
    return {
        "streams": streams,
        "frames_per_stream": len(recorded),
        "edge_errors": errors,
        "checkpoints": marks,
        "rss_growth_pct": round(100 * (last["rss_mb"] - base["rss_mb"]) / base["rss_mb"], 2),
        "from_stream": base["streams"],
    }


def main(argv=None) -> int:
    from temposplit.cli import OneLineParser  # a rejection is one line, not the usage block and the error

    p = OneLineParser(prog="python -m temposplit.server.soak", description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--features", required=True, help="a `temposplit features` file")
    p.add_argument("--out", default=None, help="the server's output folder (default: a temporary one)")
    args = p.parse_args(argv)
    if args.streams < 1:
        p.error(f"--streams must be at least 1, not {args.streams}")
    if args.frames < 1:
        p.error(f"--frames must be at least 1, not {args.frames}")
    from temposplit.errors import TemposplitError
    from temposplit.server.text import one_line
    from temposplit.signals import TERMINATED, Terminated, terminated_as_interrupt

    try:
        # SIGTERM unwinds as SIGINT does, through run's stop_server: its default ended this
        # process at once and left the started server running, with no parent.
        with terminated_as_interrupt(), tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(args.streams, args.frames, args.features, args.out or tmp)))
    except (TemposplitError, OSError) as exc:  # a features file that is missing or no features file
        print(f"{p.prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{p.prog}: {what}", file=sys.stderr)
        return TERMINATED if isinstance(exc, Terminated) else 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
