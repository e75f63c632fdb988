"""The sweep's caches: the detector and its int8 copy, each clip's frames, the int8 M1 outputs
and the float reference detections.

* :class:`Models` holds the float detector and the int8 copy made from it. By default the
  copy is calibrated once on the fixed calibration set (``temposplit.model.calibration``),
  which is never evaluated; ``calibration="clip"`` calibrates on frames spread over the
  clip under test instead (the earlier single-clip harness's rule; labelled as such in
  every row's settings and the run's meta.json).
* :class:`ClipData` is one clip: its frames (read lazily), its scored frames, the float
  detections on them (the fidelity ground truth, cached as JSON under ``<out>/cache``) and
  the int8 M1 codes of every crossing tensor at each cut (``.npz``; the SSD computes every
  cut in one pass through its stages), for the clip and for the labelme street frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temposplit.errors import ConfigError

# This module: it computes the cached M1 codes and float references, so its source (and what it
# imports) names them beside the code that makes the networks (ClipData.clip_id).
CACHE_MODULE = "temposplit.evaluation.cache"
CALIBRATION_FRAMES = 32  # the calibration="clip" rule: frames spread over the clip
CALIBRATIONS = ("fixed", "clip")


def digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


def write_atomic(path, write: Callable) -> None:
    """``write(f)`` (a binary file) into ``path`` whole or not at all: written under a temporary
    name in the same folder, flushed to the disk, then renamed over ``path``
    (:func:`temposplit.files.output_file`). A run killed, interrupted or out of disk space
    while it writes leaves the old file or none, never a part that a rerun would trust; the
    error names ``path``."""
    from temposplit.files import output_file

    try:
        with output_file(str(path)) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.filename is not None or not exc.strerror:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None  # "path: No space left on device"


# What a killed writer leaves: output_file's temporary names (".<name>.<pid>.<hex>.tmp").
TEMPORARY_PATTERN = ".*.tmp"


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary file's name (``.<name>.<pid>.<hex>.tmp``) runs."""
    parts = tmp.name.rsplit(".", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return True  # not one of ours: left alone
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_temporaries(folder, *patterns) -> int:
    """Remove the temporary files (``.<name>.<pid>.<hex>.tmp``) matching the glob ``patterns``
    under ``folder`` that a killed or failed writer left, those of a process still running (an
    ``eval-report`` beside the run) excepted. Returns how many were removed."""
    n = 0
    folder = Path(folder)
    for pattern in patterns:
        for tmp in folder.glob(pattern):
            if tmp.is_file() and not _writer_alive(tmp):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    n += 1
    return n


def clean(v):
    """JSON-safe: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


# Frames given to the float detector or the int8 M1 at once: 16, fewer where 16 would hold more
# than FRAME_BATCH_BYTES (sixteen 8000x8000 frames were 3 GB, 16384 a side 13 GB: eval's
# memory grew with the frame size). Every clip up to 4096x2160 still goes 16 at a time.
FRAME_BATCH = 16
FRAME_BATCH_BYTES = 512 << 20


def chunks(items, size, max_bytes: int | None = None, nbytes=lambda x: x.nbytes):
    """``items`` in lists of ``size``; with ``max_bytes``, a list also ends before the item
    that would take its bytes (``nbytes(item)``) over ``max_bytes`` (a list holds one item at
    least)."""
    chunk, held = [], 0
    for x in items:
        n = nbytes(x) if max_bytes is not None else 0
        if chunk and max_bytes is not None and held + n > max_bytes:
            yield chunk
            chunk, held = [], 0
        chunk.append(x)
        held += n
        if len(chunk) == size:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


@dataclass
class Clip:
    """Frames of one clip as the harness needs them (never all decoded frames at once but M1's codes)."""

    name: str
    n_frames: int
    frame_size: tuple[int, int]  # (H, W) of the original frames
    scored: list[int]  # frame indices whose detections are scored
    image_sizes: list  # per frame, for M2's BatchMeta
    orig_sizes: list
    input_size: tuple[int, int]
    reference: list = field(default_factory=list)  # float detections of the scored frames
    ground_truth: list | None = None  # real boxes (Detections) of the scored frames, if any
    identity: str = ""  # its frames and networks by content (ClipData.source_id): names its scorings' files

    def meta(self, indices):
        from temposplit.model.split import BatchMeta

        return BatchMeta(
            tuple(self.input_size),
            [tuple(self.image_sizes[i]) for i in indices],
            [tuple(self.orig_sizes[i]) for i in indices],
        )


@dataclass
class CutData:
    """The cached int8 M1 outputs of one cut on one clip."""

    names: list[str]
    codes: list[np.ndarray]  # per tensor (T, C, H, W) uint8
    scales: list[float]
    zero_points: list[int]

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        return [tuple(c.shape[1:]) for c in self.codes]

    def frame(self, i: int) -> list[np.ndarray]:
        return [c[i] for c in self.codes]

    def elements(self) -> tuple[int, int]:
        """(elements of the cut tensor alone, elements of everything crossing)."""
        sizes = [int(np.prod(s)) for s in self.shapes]
        return sizes[-1], sum(sizes)


class Models:
    """The float detector and its int8 copies (one per calibration source), shared by the clips."""

    def __init__(self, model: str, weights, detector_kwargs: dict, log: Callable[[str], None], timings: dict):
        self.model = model
        self.weights = weights
        self.detector_kwargs = dict(detector_kwargs or {})
        self.log = log
        self.timings = timings
        self._det = None
        self._qdet: dict[str, object] = {}
        self._channels_last = False
        self._weights_id: str | None = None
        self.m2_frames = 0

    @property
    def detector(self):
        if self._det is None:
            import torch

            from temposplit.model import load_detector

            torch.set_num_threads(min(2, torch.get_num_threads()))  # fewer where OMP_NUM_THREADS says so
            self._det = load_detector(self.model, self.weights, **self.detector_kwargs)
        return self._det

    def weights_id(self) -> str:
        """The float network's weights by content (:func:`temposplit.model.fingerprint.weights_digest`,
        as the int8 cache's key has them), not by path: another file at the same path, or the
        default weights converted anew, is another network."""
        if self._weights_id is None:
            from temposplit.model.fingerprint import weights_digest

            self._weights_id = weights_digest(self.detector.net).hex()
        return self._weights_id

    def float_layout(self, channels_last: bool) -> None:
        """The float network's memory layout: channels-last makes the float M2 about a quarter
        faster on this CPU (same values to float rounding)."""
        import torch

        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if self._channels_last != channels_last:
            self.detector.net.to(memory_format=fmt)
            self._channels_last = channels_last

    def quantized(self, source: str, frames: Callable[[], list], what: str):
        """The SSD's int8 copy calibrated on ``frames()`` (cached per calibration ``source``)."""
        if source not in self._qdet:
            from temposplit.model.quantize import quantize

            t = time.perf_counter()
            self.log(f"int8 calibration on {what}")
            self.float_layout(channels_last=False)  # the int8 copy is made from the plain layout
            self._qdet[source] = quantize(self.detector, frames())
            self.timings["quantize_s"] = self.timings.get("quantize_s", 0.0) + time.perf_counter() - t
        return self._qdet[source]


def fixed_calibration_frames() -> list[np.ndarray]:
    """The fixed calibration set of the model package (never evaluated)."""
    from temposplit.model.calibration import calibration_frames

    return list(calibration_frames())


def fixed_calibration_content() -> list:
    """The fixed calibration set by content: each frame's name and the SHA-256 of its file
    (:func:`temposplit.files.content_digest`), so a changed image under the same name is
    another calibration. A file not there is None: a run that builds no int8 network (the
    frame codecs alone) needs no calibration set, and one that does is refused where it
    reads the set."""
    from temposplit.files import content_digest
    from temposplit.model.calibration import calibration_sources

    return [(name, content_digest(path) if path.is_file() else None) for name, path, _ in calibration_sources()]


def labelme_content() -> list:
    """The labelme frames by content: the SHA-256 of each image and of its JSON boxes."""
    from temposplit.files import content_digest
    from temposplit.model.data import labelme_frames

    return [(content_digest(jpg), content_digest(js)) for jpg, js in labelme_frames()]


class ClipData:
    """One clip of the sweep: frames, scored frames, float reference, int8 M1 cache."""

    def __init__(
        self,
        models: Models,
        name: str,
        video: Path,
        frames: int,
        start: int,
        score_every: int,
        score_phases: tuple,
        cache: Path,
        labelme: bool,
        calibration: str,
        calibration_frames: int,
        log: Callable[[str], None],
        timings: dict,
        calibration_fold: tuple[int, int] | None = None,
    ):
        self.models = models
        self.calibration_fold = calibration_fold  # (r, k): fold r of k of the fixed set
        self.name = name
        self.video = Path(video)
        self.frames, self.start = frames, start
        self.score_every, self.score_phases = score_every, score_phases
        self.cache = cache
        self.labelme = labelme
        self.calibration = calibration
        self.calibration_frames = calibration_frames
        self.log = log
        self.timings = timings
        self._clips: dict[str, Clip] = {}
        self._id = None
        self._fps = None

    @property
    def model(self) -> str:
        return self.models.model

    # ------------------------------------------------------------------ frames

    def read(self, max_frames=None, step=1, start=None):
        """The clip's frames, all of one size (a clip that changes size fails naming the file)."""
        from temposplit.model.data import one_size, read_video

        start = self.start if start is None else start
        frames = read_video(self.video, max_frames=max_frames or self.frames, step=step, start=start)
        return one_size(frames, self.video, start, step)

    def is_scored(self, i: int) -> bool:
        return i % self.score_every in self.score_phases

    def fps(self) -> float:
        if self._fps is None:
            from temposplit.model.data import probe_video

            self._fps = probe_video(self.video).fps
        return self._fps

    def calibration_source(self) -> str:
        if self.calibration == "clip":
            return f"clip:{self.name}"
        return "fixed" if self.calibration_fold is None else "fixed fold {}/{}".format(*self.calibration_fold)

    def clip_id(self) -> str:
        """The clip, its frames, the float weights, the calibration's frames and the code that
        makes the networks and computes the codes and references (this module and its imports),
        each by content, and PyAV's and FFmpeg's versions (they decode the frames): the name of
        its cached M1 codes and float reference (another int8 network, another name)."""
        if self._id is None:
            import av

            from temposplit.files import content_digest
            from temposplit.model.fingerprint import NETWORK_MODULES, calibration_platform
            from temposplit.source import source_digest

            if self.calibration == "clip":
                calib = self.calibration_frames  # the clip's own frames: its content below
            else:  # the fixed set's frames by content: a changed set makes new cache files
                calib = [self.calibration_source(), *fixed_calibration_content()]
            self._id = digest(
                self.model,
                self.models.weights_id(),
                sorted(self.models.detector_kwargs.items()),
                self.video.name,
                content_digest(self.video),  # not the size alone: another file of the same size is another clip
                self.start,
                self.frames,
                calib,
                source_digest((*NETWORK_MODULES, CACHE_MODULE)),
                calibration_platform(),
                np.__version__,
                av.__version__,
                sorted((k, list(v)) for k, v in av.library_versions.items()),
            )
        return self._id

    def source_id(self, which: str) -> str:
        """:meth:`clip_id` for the clip (``which="video"``); for the labelme frames also their
        images and JSON boxes by content (:func:`labelme_content`)."""
        return self.clip_id() if which == "video" else digest(self.clip_id(), labelme_content())

    def labelme_available(self) -> bool:
        from temposplit.model.data import labelme_frames

        return self.labelme and all(j.is_file() and p.is_file() for p, j in labelme_frames())

    def labelme_data(self):
        from temposplit.model.data import labelme_boxes, labelme_frames, read_image
        from temposplit.model.detections import Detections

        frames, gts = [], []
        for jpg, js in labelme_frames():
            frames.append(read_image(jpg))
            boxes = labelme_boxes(js)
            gts.append(
                Detections.make(
                    np.array([b.box for b in boxes], np.float32).reshape(-1, 4),
                    np.ones(len(boxes), np.float32),
                    [b.category_id for b in boxes],
                )
            )
        return frames, gts

    def calibration_set(self) -> list:
        if self.calibration == "fixed":
            frames = fixed_calibration_frames()
            if self.calibration_fold is None:
                return frames
            from temposplit.model.calibration import folds

            r, k = self.calibration_fold
            return folds(frames, k)[r]
        step = max(1, self.frames // self.calibration_frames)
        return list(self.read(max_frames=self.calibration_frames, step=step))

    def _calibration_what(self) -> str:
        if self.calibration == "fixed":
            if self.calibration_fold is not None:
                return "fold {}/{} of the fixed calibration set".format(*self.calibration_fold)
            return "the fixed calibration set"
        return f"{self.calibration_frames} frames spread over the clip {self.name} (calibration=clip)"

    def quantized(self):
        return self.models.quantized(self.calibration_source(), self.calibration_set, self._calibration_what())

    # ------------------------------------------------------------------ M1 cache

    def _cache_path(self, cut: str, which: str) -> Path:
        return self.cache / f"m1-{self.model}-{cut}-{which}-{self.source_id(which)}.npz"

    def cut_data(self, cut: str, which: str, cuts: list[str]) -> CutData:
        """The int8 M1 codes at ``cut`` of the clip (``which="video"``) or the labelme frames;
        a missing cache computes every cut of ``cuts`` still missing in one pass."""
        path = self._cache_path(cut, which)
        data = self._read_cut(path, which)
        if data is None:
            missing = [c for c in cuts if c == cut or not self._cache_path(c, which).is_file()]
            self._compute_m1(missing)
            data = self._read_cut(path, which)
            if data is None:  # just written: a disk that does not keep what it is given
                raise ConfigError(f"{path}: the M1 codes just written do not read back")
        return data

    def _read_cut(self, path: Path, which: str) -> CutData | None:
        """The M1 cache file at ``path``, checked; None where it is missing or damaged (cut short
        by a kill, emptied, overwritten): a damaged one is removed, logged and computed again,
        never read in part."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                names = [str(n) for n in z["names"]]
                data = CutData(
                    names,
                    [z[f"codes{i}"] for i in range(len(names))],
                    [float(s) for s in z["scales"]],
                    [int(v) for v in z["zero_points"]],
                )
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            problem = self._cut_problem(data, which)
        if problem is None:
            return data
        self.log(f"{path}: a damaged cache file ({problem}): computing it again")
        path.unlink(missing_ok=True)
        return None

    def _cut_problem(self, data: CutData, which: str) -> str | None:
        """What makes cached M1 codes not the codes of this clip's frames, or None."""
        if not data.names or len(data.scales) != len(data.names) or len(data.zero_points) != len(data.names):
            return "its tensors, scales and zero points do not match"
        n = self.clip(which).n_frames
        for c in data.codes:
            if c.dtype != np.uint8 or c.ndim != 4 or c.shape[0] != n:
                return f"codes of {c.dtype} {c.shape}, not uint8 of {n} frames"
        if not all(math.isfinite(s) and s > 0 for s in data.scales):
            return "a scale that is not a positive number"
        return None

    def _compute_m1(self, cuts: list[str]) -> None:
        """Int8 M1 outputs of the clip (and the labelme frames) at ``cuts``, written to the cache."""
        import torch

        t0 = time.perf_counter()
        det = self.models.detector
        sources = {"video": None}
        if self.labelme_available():
            sources["labelme"] = self.labelme_data()[0]
        if self.model == "ssd-mobilenet-v2":
            qdet = self.quantized()
            cut_objs = [det.get_cut(c) for c in cuts]
            wanted = {t.name for c in cut_objs for t in c.crossing}
            stages = list(det.info.stages)
            last = max(stages.index(n) for n in wanted)

            def m1_all(x):  # one pass through the int8 stages, every wanted tap kept
                x = det.m1_prefix(qdet.net, x)
                taps = {}
                for name in stages[: last + 1]:
                    x = det.stage(qdet.net, name)(x)
                    if name in wanted:
                        taps[name] = x
                return {c.name: [taps[t.name] for t in c.crossing] for c in cut_objs}

            runners = {"all": m1_all}
        else:
            from temposplit.model.quantize import quantize_m1

            calib = self.calibration_set()
            runners = {}
            for c in cuts:
                self.models.float_layout(channels_last=False)  # the int8 copy is made from the plain layout
                qm1 = quantize_m1(det, c, calib)
                runners[c] = lambda x, c=c, qm1=qm1: {c: qm1.m1(x)}
        self.cache.mkdir(parents=True, exist_ok=True)
        for which, frames in sources.items():
            source = frames if frames is not None else self.read()
            acc: dict[str, list[list[np.ndarray]]] = {c: [] for c in cuts}
            qparams: dict[str, list[tuple[float, int]]] = {}
            names = {c: [t.name for t in det.get_cut(c).crossing] for c in cuts}
            done = 0
            for batch_frames in chunks(source, FRAME_BATCH, FRAME_BATCH_BYTES):
                batch = det.preprocess(batch_frames)
                with torch.no_grad():
                    for runner in runners.values():
                        for c, outs in runner(batch.tensor).items():
                            acc[c].append([o.int_repr().numpy().astype(np.uint8) for o in outs])
                            qparams[c] = [(float(o.q_scale()), int(o.q_zero_point())) for o in outs]
                done += len(batch_frames)
                self.log(f"  M1 ({self.name if which == 'video' else which}): {done} frames")
            for c in cuts:
                arrays = {f"codes{i}": np.concatenate([b[i] for b in acc[c]]) for i in range(len(names[c]))}
                arrays.update(
                    names=np.array(names[c]),
                    scales=np.array([s for s, _ in qparams[c]]),
                    zero_points=np.array([z for _, z in qparams[c]]),
                )
                write_atomic(self._cache_path(c, which), lambda f, arrays=arrays: np.savez(f, **arrays))
        self.timings["m1_s"] = self.timings.get("m1_s", 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ references

    def clip(self, which: str = "video") -> Clip:
        """The clip's (or the labelme frames') sizes, scored frames and float reference detections."""
        if which not in self._clips:
            self._clips[which] = self._load_clip(which)
        return self._clips[which]

    def _load_clip(self, which: str) -> Clip:
        from temposplit.model.detections import Detections

        det = self.models.detector
        video = which == "video"
        name = self.name if video else "labelme"
        pattern = f"{self.score_every}-{'.'.join(map(str, self.score_phases))}" if video else "all"
        path = self.cache / f"float-{self.model}-{name}-{self.source_id(which)}-{pattern}.json"
        doc = _read_reference(path, self.log)
        if doc is None:
            t0 = time.perf_counter()
            if video:
                source, gts = self.read(), None
            else:
                source, gts = self.labelme_data()
            dets, image_sizes, orig_sizes, input_size, n = {}, [], [], None, 0
            for chunk in chunks(source, FRAME_BATCH, FRAME_BATCH_BYTES):
                batch = det.preprocess(chunk)
                wanted = [k for k in range(len(chunk)) if not video or self.is_scored(n + k)]
                if wanted:  # the float detector on the scored frames only
                    sub = det.preprocess([chunk[k] for k in wanted])
                    for k, d in zip(wanted, det.forward(sub), strict=True):
                        dets[n + k] = d
                image_sizes += [list(s) for s in batch.meta.image_sizes]
                orig_sizes += [list(s) for s in batch.meta.orig_sizes]
                if input_size is not None and tuple(batch.meta.input_size) != tuple(input_size):
                    raise ConfigError(f"the frames of {self.video.name} differ in size")
                input_size = list(batch.meta.input_size)
                n += len(chunk)
            if n == 0:
                raise ConfigError(f"{self.video} has no frames from frame {self.start}")
            scored = sorted(dets)
            doc = {
                "n_frames": n,
                "image_sizes": image_sizes,
                "orig_sizes": orig_sizes,
                "input_size": input_size,
                "scored": scored,
                "detections": [dets[i].to_dict() for i in scored],
                "ground_truth": [g.to_dict() for g in gts] if gts else None,
            }
            self.cache.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda f: f.write(json.dumps(doc).encode()))
            self.timings[f"float_{name}_s"] = time.perf_counter() - t0
        n = doc["n_frames"]
        if video and n < self.frames:
            self.log(f"the clip {self.name} has {n} frames (asked for {self.frames})")
        scored = doc["scored"]

        def dets(d):
            return Detections.make(np.array(d["boxes"], np.float32).reshape(-1, 4), d["scores"], d["category_ids"])

        clip = Clip(
            name,
            n,
            tuple(doc["orig_sizes"][0]),
            scored,
            doc["image_sizes"],
            doc["orig_sizes"],
            tuple(doc["input_size"]),
        )
        clip.identity = self.source_id(which)
        clip.reference = [dets(d) for d in doc["detections"]]
        if doc["ground_truth"]:
            clip.ground_truth = [dets(doc["ground_truth"][i]) for i in scored]
        return clip


def _reference_problem(doc) -> str | None:
    """What makes ``doc`` (a parsed float reference file) not the file :class:`ClipData` writes."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    missing = [
        k
        for k in ("n_frames", "image_sizes", "orig_sizes", "input_size", "scored", "detections", "ground_truth")
        if k not in doc
    ]
    if missing:
        return f"no {', '.join(missing)}"
    n = doc["n_frames"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"n_frames is {n!r}"
    if not all(isinstance(doc[k], list) and len(doc[k]) == n for k in ("image_sizes", "orig_sizes")):
        return f"sizes of other than {n} frames"
    scored, dets = doc["scored"], doc["detections"]
    if not isinstance(scored, list) or not isinstance(dets, list) or len(scored) != len(dets):
        return "scored frames and detections do not match"
    if not all(isinstance(i, int) and 0 <= i < n for i in scored) or scored != sorted(set(scored)):
        return "scored frames out of the clip's range"
    if not all(isinstance(d, dict) and {"boxes", "scores", "category_ids"} <= set(d) for d in dets):
        return "a detection without its boxes, scores or categories"
    gts = doc["ground_truth"]
    if gts is not None and (not isinstance(gts, list) or any(not isinstance(g, dict) for g in gts)):
        return "ground truth that is not a list of detections"
    return None


def _read_reference(path: Path, log: Callable[[str], None]) -> dict | None:
    """The float reference file at ``path``, checked; None where it is missing or damaged (a
    damaged one is removed, logged and computed again)."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
        problem = _reference_problem(doc)
    except (OSError, ValueError) as exc:  # not UTF-8, not JSON
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return doc
    log(f"{path}: a damaged cache file ({problem}): computing it again")
    path.unlink(missing_ok=True)
    return None
