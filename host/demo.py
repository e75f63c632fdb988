"""``temposplit demo``: the main job on the embedded default, edge and cloud on loopback.

The SSD-MobileNetV2 COCO port at its default cut, OpenCV's vtest.avi, the golden back
end, a server on 127.0.0.1; ends with a summary (frames, rates, compression, fidelity
mAP against the uncompressed run, latency, time per stage) and the outputs' paths.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def records_to_detections(records):
    from temposplit.model.detections import Detections

    if not records:
        return Detections.make(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    boxes = [[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]] for r in records]
    return Detections.make(boxes, [r["score"] for r in records], [r["category_id"] for r in records])


def run_demo(
    video: str | None = None,
    frames: int = 120,
    out: str = "out/demo",
    codec: dict | None = None,
    backend: str = "golden",
    cut: str | None = None,
    calibration_frames: int | None = None,
    reference: bool = True,
    log=_log,
    fps: float | None = None,
) -> dict:
    from temposplit.errors import ConfigError
    from temposplit.host.edge import check_frame_size, check_rate
    from temposplit.host.sources import open_source
    from temposplit.model import data

    # Every check before the model loads (a minute on the first run), and the video's
    # before the output folder is made.
    from temposplit.protocol import MAX_FRAMES

    if not 1 <= frames <= MAX_FRAMES:  # (past sys.maxsize, islice's error)
        raise ConfigError(f"frames must be 1 to {MAX_FRAMES}, not {frames}")
    from temposplit.host.backends import check_backend

    check_backend(backend)
    if cut is not None:  # an unknown cut: said before the model loads (a minute on the first run)
        from temposplit.model import cuts as cut_table

        if not str(cut).strip():
            raise ConfigError("--cut is empty: give a cut name, or leave --cut out for the default cut")
        cut_table.get_cut(cut_table.DEFAULT_MODEL, cut)
    if video is not None and not str(video).strip():
        raise ConfigError("--video is empty: give a video file, or leave --video out for vtest.avi")
    if video is not None:  # a video file, read twice (streamed, then scored): a camera is refused here
        data.check_video_file(Path(video))  # missing, a folder, a device: said before any download
    if not data.have_data():
        log("first run: fetching the clips and the calibration set from Debian's packages (apt-get download)")
        data.fetch_data(log=log)
    path = data.vtest_path() if video is None else Path(video)
    source = open_source(str(path))  # no video, no frame: refused here
    if source.backend == "npy":
        raise ConfigError(f"--video {video}: the demo takes a video file (the edge takes .npy frames)")
    fps = source.fps if fps is None else fps
    check_frame_size(path, source.size)  # what the server would refuse, as the edge checks it
    check_rate(path, fps)
    check_output_folder(out)
    with _output_lock(out), _Signals(log) as signals:
        return _run(path, source, frames, fps, out, codec, backend, cut, calibration_frames, reference, log, signals)


def _run(path, source, frames, fps, out, codec, backend, cut, calibration_frames, reference, log, signals) -> dict:
    import itertools

    from temposplit.errors import TemposplitError
    from temposplit.evaluation.metrics import fidelity_map
    from temposplit.files import output_file
    from temposplit.host.edge import Edge
    from temposplit.host.pipeline import EdgeModel
    from temposplit.model import data
    from temposplit.server.server import CloudServer

    if source.count:
        frames = min(frames, source.count)
        log(f"video {path}: {frames} frames at {fps:g} fps")
        of = f"/{frames}"
    else:  # a file that does not say how many frames it holds (an MKV, a WebM): --frames is a cap
        log(f"video {path}: up to {frames} frames at {fps:g} fps (the file does not say how many it holds)")
        of = f" of up to {frames}"
    log("loading the SSD-MobileNetV2 (the first run converts the TensorFlow graph and caches it)")
    # int8 calibration on the fixed set (docs/models.md), never on the clip the demo scores.
    from temposplit.model.calibration import calibration_frames as fixed_set

    model = EdgeModel(cut=cut, calibration=fixed_set(calibration_frames), log=log)
    shapes = model.cut.shapes(model.detector.input_size)
    log(
        f"cut {model.cut.name}: "
        + ", ".join(f"{t.name} {'x'.join(map(str, s))}" for t, s in zip(model.cut.crossing, shapes, strict=True))
    )

    # No resume window: the demo keeps no token, and its --out lock makes it the folder's only
    # writer, so a stream an earlier demo left unfinished (killed, or stopped by a second
    # signal) is moved aside (<clip>.<k>) for this one, not held for a resume for 600 s.
    server = CloudServer(out_dir=out, local_video=True, log=log, resume_window=0)
    from temposplit.codec.encoder import PRESETS

    codec = {**PRESETS["recommended"], "fps": fps, **(codec or {})}
    # The codec's compiled kernels loaded (compiled, on a machine's first run: seconds)
    # before the clock, not inside the frames the stage times average.
    from temposplit.codec.bench import warm_kernels

    warm_kernels(codec)
    t_start = time.perf_counter()
    first_sent = []  # the time the first frame was sent: the warm-up (kernels, models) is before it

    def progress(n, report):
        if not first_sent:
            first_sent.append(time.perf_counter())
        if n % 10 == 0 or n == frames:
            kb = report.bytes / max(1, report.packets) / 1000
            log(f"  frame {n}{of}: {report.acked} answered, {kb:.1f} kB per packet")

    # The server always finishes its files (in a finally), whatever stops the stream: a
    # signal ends it after the current frame (the frames sent are recorded, the stream is
    # finished), as the edge's does; then the signal takes its course (_Signals).
    server.start()
    try:
        edge = Edge(model, codec, server.address, stream_name(path), backend=backend, log=log, progress=progress)
        signals.edge = edge
        try:
            report = edge.run(
                itertools.islice(source.stamped(), frames),  # one frame size throughout, as the edge's
                video={"video": str(path), "max_frames": frames, "fps": fps},
                total=frames,
            )
        except TemposplitError as exc:
            if not signals.got:
                raise
            signals.message = str(exc)  # "stopped by SIGINT; the stream ... was ended there: k of n recorded"
            return {}
        finally:
            signals.edge = None
    finally:
        server.shutdown()
    if signals.got:  # after the edge's last look at its stop (its end of stream): not scored, stopped here
        name = signal.Signals(signals.got[0]).name
        signals.message = f"stopped by {name} after the stream ended: {report.frames} frame(s) sent, not scored"
        return {}
    wall = time.perf_counter() - t_start

    n = report.frames
    where = Path(out) / stream_name(path)  # the stream's outputs, the summary beside them
    records = recorded_frames(where / "detections.jsonl", n)
    decoded = [r for r in records.values() if "detections" in r]
    if not decoded:
        raise TemposplitError(f"the server decoded none of the {n} frame(s): nothing to measure (see {where})")
    per_frame = sum(r.get("bytes", 0) for r in decoded) / len(decoded)
    raw8 = sum(int(np.prod(s)) for s in model.cut.shapes(model.detector.input_size))
    cut_alone = cut_tensor_bytes(report, decoded) / len(decoded)
    h, w = source.size or data.first_frame(path).shape[:2]
    summary = {
        "frames": n,
        "decoded": len(decoded),  # frames recorded with detections (maybe none)
        "with_detections": sum(1 for r in decoded if r["detections"]),
        "errors": len(report.errors),
        "bytes_per_frame": round(per_frame, 1),
        "mb_per_s_at_clip_fps": round(per_frame * fps / 1e6, 4),
        "mb_per_s_at_30fps": round(per_frame * 30 / 1e6, 4),
        "cut_tensor_mb_per_s_at_30fps": round(cut_alone * 30 / 1e6, 4),
        "compression_vs_8bit_features": round(raw8 / per_frame, 2),
        "compression_vs_raw_frames": round(h * w * 3 / per_frame, 1),
        "latency_ms_median": round(float(np.median(list(report.latency_ms.values()))), 1)
        if report.latency_ms
        else None,
        # Means over the frames after the first: the first loads (or, on a fresh machine,
        # compiles) the codec's kernels and warms the models, up to hundreds of ms.
        "stage_ms": {
            "m1": _steady_ms(report.m1_ms),
            "encode": _steady_ms(report.encode_ms),
            "decode": _steady_ms(report.decode_ms),
            "m2": _steady_ms(report.m2_ms),
        },
        "first_frame_ms": {
            "m1": _first_ms(report.m1_ms),
            "encode": _first_ms(report.encode_ms),
            "decode": _first_ms(report.decode_ms),
            "m2": _first_ms(report.m2_ms),
        },
        # Frames 2..n over the time from the first frame sent to the last answered: the
        # start (the server, the connection, the first frame's compiles) is left out, as the
        # stage times leave out the first frame; with it, end_to_end_fps_from_start.
        "end_to_end_fps": _steady_fps(n, first_sent[0] - t_start if first_sent else None, wall),
        "end_to_end_fps_from_start": round(n / wall, 2),
        "reconnects": report.reconnects,
        "key_requests": report.key_requests,
        "outputs": report.summary,
    }
    if reference:
        log("scoring: the float model on the uncompressed frames (fidelity ground truth, score >= 0.5)")
        det = model.detector
        ref = [det.detect([f])[0] for f in itertools.islice(source.frames(), n)]
        test = [records_to_detections(records.get(i, {}).get("detections", [])) for i in range(n)]
        m = fidelity_map(test, ref)
        # No reference object in these frames: nothing to score (null in the JSON, not NaN).
        summary["fidelity_map50"] = None if np.isnan(m.map50) else round(m.map50, 4)
        summary["fidelity_map50_95"] = None if np.isnan(m.map50_95) else round(m.map50_95, 4)
    where.mkdir(parents=True, exist_ok=True)
    with output_file(str(where / "summary.json")) as f:  # whole or not at all
        f.write(json.dumps(summary, indent=2).encode())
    return summary


def recorded_frames(log, n: int) -> dict:
    """The server's records (its ``detections.jsonl``, read with its own reader) of frames
    0..n-1: frame -> record. The demo's figures come from them, not from the edge's
    answers: after a lost connection a frame may be recorded with its ACK lost (the edge's
    ``report.unanswered``), and a frame resent is one packet the server recorded and
    another it answered ``duplicate``."""
    from temposplit.server.outputs import DetectionLog

    return {r["frame"]: r for r in DetectionLog.records(Path(log)) if r["frame"] < n}


def cut_tensor_bytes(report, decoded: list) -> int:
    """The bytes of the cut tensor (the last) in the packets the server recorded with
    detections (``decoded``: their records): each record's packet, of those the edge sent
    for its frame, is the one of its size."""
    sent = dict(zip(report.packets_sent, report.tensor_bytes, strict=True))  # (frame, bytes) -> bytes per tensor
    return sum(sent[k][-1] for k in ((r["frame"], r.get("bytes")) for r in decoded) if k in sent)


def _steady_fps(n: int, first: float | None, wall: float) -> float:
    """Frames per second after the first frame: frames 2..n over the seconds from the first
    frame sent (``first``, from the start) to the end (``wall``); n / wall for one frame."""
    if n < 2 or first is None or wall <= first:
        return round(n / wall, 2)
    return round((n - 1) / (wall - first), 2)


def _steady_ms(times: list) -> float | None:
    """The mean of a stage's per-frame times after the first frame (all of them for one frame)."""
    if not times:
        return None
    return round(float(np.mean(times[1:] if len(times) > 1 else times)), 2)


def _first_ms(times: list) -> float | None:
    return round(float(times[0]), 2) if times else None


def stream_name(path: Path) -> str:
    """The server's stream (and output folder) name for a clip: its file's stem, as the server accepts names."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-._")[:64]
    return name or "demo"


def check_output_folder(out) -> None:
    """Create ``out`` and check that a file can be written in it."""
    import tempfile

    from temposplit.errors import ConfigError

    if not str(out).strip():
        raise ConfigError("--out is empty: give the output folder (default out/demo)")
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"cannot write to the output folder {out}: it is a file, not a folder")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to the output folder {out}: {exc.strerror or exc}") from exc


LOCK = ".demo.lock"  # in the output folder: held while a demo writes there


def _output_lock(out):
    """Hold ``out``'s lock while the demo runs: a second demo into the same folder is refused
    (its server would move the first one's stream folder aside while it is being written,
    and both would report the same files)."""
    from temposplit.locks import only_run

    busy = f"another temposplit demo is writing to {out}: wait for it, or give another --out"
    return only_run(Path(out) / LOCK, busy)


class _Signals:
    """SIGINT and SIGTERM while the demo runs (in the main thread; a signal the process
    ignores stays ignored). While the edge streams, the first ends the stream after the
    current frame, as ``temposplit edge`` does: the server records the frames sent and
    finishes the stream's files. Otherwise (loading, scoring, a second signal) it stops
    at once, through KeyboardInterrupt. Either way, once the server has closed its files,
    one line says what was stopped, and the signal is raised again with the handlers
    that were there before: Python's KeyboardInterrupt for SIGINT (the CLI's "interrupted",
    exit status 130), the CLI's Terminated for SIGTERM ("terminated", 143: temposplit/signals.py)."""

    def __init__(self, log):
        self.log = log
        self.got: list[int] = []
        self.edge = None  # the streaming edge, while it streams
        self.message: str | None = None
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        first = not self.got
        self.got.append(signum)
        if first and self.edge is not None and self.edge.stop is None:
            self.edge.stop = f"stopped by {signal.Signals(signum).name}"
            return
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> bool:
        for sig, earlier in self.previous.items():
            signal.signal(sig, earlier if earlier is not None else signal.SIG_DFL)
        if self.got:
            signum = self.got[0]
            self.log(self.message or f"stopped by {signal.Signals(signum).name}")
            signal.raise_signal(signum)
            raise KeyboardInterrupt  # a handler of the caller's that returned: still stopped
        return False


def print_summary(s: dict) -> None:
    boxes = f", {s['with_detections']} with detections" if "with_detections" in s else ""
    print(f"frames                 {s['frames']} ({s['decoded']} decoded{boxes}, {s['errors']} errors)")
    print(
        f"rate                   {s['bytes_per_frame'] / 1000:.2f} kB/frame = {s['mb_per_s_at_clip_fps']:.4f} MB/s "
        f"at the clip's rate, {s['mb_per_s_at_30fps']:.4f} MB/s at 30 frames/s "
        f"(cut tensor alone {s['cut_tensor_mb_per_s_at_30fps']:.4f})"
    )
    print(
        f"compression            {s['compression_vs_8bit_features']}x vs 8-bit features, "
        f"{s['compression_vs_raw_frames']}x vs raw frames"
    )
    if "fidelity_map50" in s and s["fidelity_map50"] is None:
        print("fidelity mAP           n/a: the float model detects nothing (score >= 0.5) in these frames")
    elif "fidelity_map50" in s:
        print(
            f"fidelity mAP           {100 * s['fidelity_map50']:.1f} @0.5, {100 * s['fidelity_map50_95']:.1f} "
            f"@[.5:.95] against the float model on uncompressed frames"
        )
    st = s["stage_ms"]
    print(
        f"time per frame (ms)    M1 {st['m1']}, encode {st['encode']}, decode {st['decode']}, M2 {st['m2']} "
        "(mean after the first frame)"
    )
    print(
        f"latency                {s['latency_ms_median']} ms median (capture to detections); "
        f"{s['end_to_end_fps']} frames/s end to end after the first frame "
        f"({s.get('end_to_end_fps_from_start', s['end_to_end_fps'])} with the start)"
    )
    if s.get("outputs"):
        print(f"detections             {s['outputs'].get('detections')}")
        print(f"annotated video        {s['outputs'].get('video')}")
