"""The evaluation harness: rate and accuracy of every method at every cut and N (SPEC section 6).

One clip, one model, one int8 calibration. The sweep:

* **M1 once.** The int8 M1 outputs (quint8 codes of every tensor crossing each cut) are
  computed once per model, cut and clip and cached as ``.npz`` under ``<out>/cache``;
  the SSD computes every cut in one pass through its stages. M2 is the float M2 on the
  dequantized tensors, so a rerun with the cache needs no quantization at all.
* **References once.** The float model's detections on the uncompressed frames (the
  fidelity ground truth: score >= 0.5) are cached as JSON.
* **Each distinct reconstruction scored once.** The codec runs once per (structure, N,
  options) and coder; the coders do not change the reconstruction (checked: every run's
  per-frame reconstruction is hashed, and rows that share one share its scores). Below
  that, M2 runs once per distinct *frame*: a frame whose reconstruction (N-bit codes)
  was already seen at that cut and N (a predicted frame whose vectors are all zero is its
  anchor; an intra frame at N = 8 is the 8-bit features) reuses its detections.
* **Resumable.** Every finished row is appended to ``<out>/results.jsonl`` at once; a
  rerun with the same settings skips the rows already there.

Every row carries the rate (bytes per frame, MB/s at 30 frames/s with MB = 10^6 bytes,
bits per element, compression ratios against the 8-bit features and the raw frames) for
the cut tensor alone and for everything crossing the cut, and the accuracy (COCO mAP@0.5
and mAP@[.5:.95] by pycocotools) against the float model's detections (fidelity) and,
on the labelme street frames, against real boxes. The methods and their exact settings
are below (the constants) and in docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temposplit.errors import ConfigError

FPS_REPORT = 30.0  # rates are given at 30 frames/s (the thesis's), whatever the clip's rate
SEARCH_RANGE = 7
DEFAULT_BITS = (4, 5, 6, 7, 8)
CALIBRATION_FRAMES = 32
M2_BATCH = 32

# --- the methods (SPEC section 6 items 1-10) and their settings
FEATURE_METHODS = (
    "features-8bit",
    "quant",
    "uni-2",
    "bi-3",
    "bi-3+residual",
    "chain+residual",
    "refresh",
    "rate-control",
    "jpeg-act",
)
FRAME_METHODS = ("jpeg", "h264", "h265")
ALL_METHODS = FEATURE_METHODS + FRAME_METHODS
QUANT_CODERS = ("raw", "zvc", "huffman", "zrl")
TSS_CODERS = ("raw", "zvc", "huffman")  # the thesis's curves
# Residual thresholds are mean |current - prediction| per block in 8-bit code steps per active
# element, as the codec takes them (the same error in value at every N and on every cut).
BI3_RESIDUAL = {"structure": "bi-3", "reference": "anchor", "threshold": 2.0, "coders": ("huffman", "zrl")}
CHAIN_RESIDUAL = {"structure": "uni-8", "reference": "chain", "thresholds": (1.5, 4.0), "coders": ("zrl", "huffman")}
# The same at t = 1.5 with residual values up to 4 8-bit steps dropped (one step at N = 6, two at
# N = 7); below one N-bit step (N <= 5) a dead zone changes nothing, so those N are not run.
CHAIN_DEAD_ZONE = {"threshold": 1.5, "dead_zone": 4.0, "coders": ("zrl",)}
# The refresh as an adaptive group length: long groups predicted from their anchor with the
# residual mode, a new anchor as soon as a frame's prediction cost passes `factor` times the
# mean cost of a 1-frame step (uni-2's). Without a residual a refresh cannot rescue the drift
# (the first sweep: 0.37-0.63 at every cut).
REFRESH = {"structure": "uni-16", "reference": "anchor", "residual": 1.5, "factor": 1.5, "coder": "zrl"}
RATE_CONTROL = {
    # The controller changes N per group and scales the threshold per frame to meet the target.
    "structure": "uni-16",
    "reference": "chain",
    "threshold_8bit_steps": 0.25,  # the controller scales it per frame
    "coder": "zrl",
    "targets": (0.05, 0.10, 0.20),  # fractions of the 8-bit features' bytes per frame (all crossing tensors)
}
JPEG_ACT = {"tables": ("optL", "optH"), "coder": "jpeg", "max_clipped": 1e-3}
FREQUENT_MIN_BOXES = 50  # "frequent" categories: at least this many fidelity ground-truth boxes
JPEG_QUALITY = 75
JPEG_TARGET_BPP = 2.8
VIDEO_CRFS = (23, 28, 33, 38)
# Methods scored on the labelme frames (a 5-frame clip) against their real boxes.
LABELME_METHODS = {"float", "jpeg"} | set(FEATURE_METHODS) - {"rate-control"}

ROW_KEYS = (
    "key",
    "model",
    "clip",
    "frames",
    "scored_frames",
    "cut",
    "method",
    "variant",
    "coder",
    "n_bits",
    "structure",
    "settings",
    "bytes_per_frame",
    "cut_bytes_per_frame",
    "mb_per_s",
    "cut_mb_per_s",
    "bits_per_element",
    "cut_bits_per_element",
    "ratio_vs_8bit",
    "cut_ratio_vs_8bit",
    "ratio_vs_frames",
    "map50",
    "map50_95",
    "map50_frequent",
    "map50_95_frequent",
    "labelme_map50",
    "labelme_map50_95",
    "reconstruction",
    "seconds",
)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


def _clean(v):
    """JSON-safe: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


# --------------------------------------------------------------------------- data


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


# --------------------------------------------------------------------------- the harness


class Harness:
    """The sweep. ``run()`` appends rows to ``<out>/results.jsonl`` and returns all rows.

    Parameters
    ----------
    model, weights : the detector (``load_detector``); ``detector_kwargs`` go to it too
        (e.g. ``min_size``/``max_size`` for the torchvision models)
    video, frames, start : the clip (default: the first 300 frames of vtest.avi)
    cuts : cut names (default: all of the model's)
    bits : N values (default 4..8)
    methods : names from :data:`ALL_METHODS` (default: all)
    out : output folder (``results.jsonl``, ``meta.json``, ``cache/``)
    score_every, score_phases : score the detections of the frames i with ``i % score_every`` in
        ``score_phases`` (default: every frame); rates always count every frame. With a period
        coprime with every group size (2, 3, 8, 16), e.g. 5, each position in a group is
        equally represented.
    labelme : also score the labelme street frames against their real boxes
    """

    def __init__(
        self,
        model: str = "ssd-mobilenet-v2",
        weights=None,
        video=None,
        frames: int = 300,
        start: int = 0,
        cuts=None,
        bits=DEFAULT_BITS,
        methods=None,
        out="out/eval",
        score_every: int = 1,
        score_phases=(0,),
        labelme: bool = True,
        detector_kwargs=None,
        calibration_frames: int = CALIBRATION_FRAMES,
        log: Callable[[str], None] = _log,
    ):
        from temposplit.model import cuts as cut_table

        info = cut_table.model_info(model)
        self.model = model
        self.weights = weights
        self.detector_kwargs = dict(detector_kwargs or {})
        self.video = Path(video) if video else None
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
        self.cuts = [cut_table.get_cut(model, c).name for c in cuts] if cuts else [c.name for c in info.cuts]
        self.bits = [int(b) for b in (bits or DEFAULT_BITS)]
        for b in self.bits:
            if not 2 <= b <= 8:
                raise ConfigError(f"N must be in 2..8, not {b}")
        methods = list(methods or ALL_METHODS)
        unknown = [m for m in methods if m not in ALL_METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(ALL_METHODS)}")
        self.methods = methods
        self.out = Path(out)
        self.cache = self.out / "cache"
        self.labelme = labelme
        self.calibration_frames = calibration_frames
        self.log = log
        self.results_path = self.out / "results.jsonl"
        self._det = None
        self._qdet = None
        self._m2_cache: dict[tuple, object] = {}  # (clip, cut, n, frame hash) -> Detections
        self._score_cache: dict[tuple, dict] = {}  # (clip, cut, signature) -> scores
        self._uni2_cost: dict[tuple, float] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up

    @property
    def detector(self):
        if self._det is None:
            import torch

            from temposplit.model import load_detector

            torch.set_num_threads(2)
            self._det = load_detector(self.model, self.weights, **self.detector_kwargs)
        return self._det

    def _video_path(self) -> Path:
        if self.video is not None:
            return self.video
        from temposplit.model import data

        path = data.vtest_path()
        if not path.is_file():
            self.log("fetching vtest.avi (Debian's opencv-doc, extracted, not installed)")
            data.fetch_data(log=self.log)
        return path

    def _read(self, max_frames=None, step=1, start=None):
        from temposplit.model.data import read_video

        return read_video(
            self._video_path(),
            max_frames=max_frames or self.frames,
            step=step,
            start=self.start if start is None else start,
        )

    def _is_scored(self, i: int) -> bool:
        return i % self.score_every in self.score_phases

    def _video_fps(self) -> float:
        import av

        with av.open(str(self._video_path())) as c:
            rate = c.streams.video[0].average_rate
        return float(rate) if rate else 30.0

    def _clip_id(self) -> str:
        p = self._video_path()
        st = p.stat()
        return _digest(
            self.model,
            str(self.weights),
            sorted(self.detector_kwargs.items()),
            p.name,
            st.st_size,
            self.start,
            self.frames,
            self.calibration_frames,
        )

    def _labelme_available(self) -> bool:
        from temposplit.model.data import labelme_frames

        return self.labelme and all(j.is_file() and p.is_file() for p, j in labelme_frames())

    def _labelme_data(self):
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

    def _calibration(self):
        step = max(1, self.frames // self.calibration_frames)
        return list(self._read(max_frames=self.calibration_frames, step=step))

    # ------------------------------------------------------------------ M1 cache

    def _cache_path(self, kind: str, cut: str, clip: str) -> Path:
        return self.cache / f"{kind}-{self.model}-{cut}-{clip}-{self._clip_id()}.npz"

    def _load_cut(self, cut: str, clip: str) -> CutData:
        path = self._cache_path("m1", cut, clip)
        if not path.is_file():
            self._compute_m1([c for c in self.cuts if not self._cache_path("m1", c, clip).is_file()] or [cut])
        with np.load(path) as z:
            names = [str(n) for n in z["names"]]
            return CutData(
                names,
                [z[f"codes{i}"] for i in range(len(names))],
                [float(s) for s in z["scales"]],
                [int(v) for v in z["zero_points"]],
            )

    def _quantized(self):
        if self._qdet is None and self.model == "ssd-mobilenet-v2":
            from temposplit.model.quantize import quantize

            t = time.perf_counter()
            self.log(f"int8 calibration on {self.calibration_frames} frames spread over the clip")
            self._float_layout(channels_last=False)  # the int8 copy is made from the plain layout
            self._qdet = quantize(self.detector, self._calibration())
            self.timings["quantize_s"] = time.perf_counter() - t
        return self._qdet

    def _float_layout(self, channels_last: bool) -> None:
        """The float network's memory layout: channels-last makes the float M2 about a quarter
        faster on this CPU (same values to float rounding)."""
        import torch

        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if getattr(self, "_channels_last", False) != channels_last:
            self.detector.net.to(memory_format=fmt)
            self._channels_last = channels_last

    def _compute_m1(self, cuts: list[str]) -> None:
        """Int8 M1 outputs of the clip (and the labelme frames) at ``cuts``, written to the cache."""
        import torch

        t0 = time.perf_counter()
        det = self.detector
        clips = {"vtest": None}
        if self._labelme_available():
            clips["labelme"] = self._labelme_data()[0]
        if self.model == "ssd-mobilenet-v2":
            qdet = self._quantized()
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

            calib = self._calibration()
            runners = {}
            for c in cuts:
                self._float_layout(channels_last=False)  # the int8 copy is made from the plain layout
                qm1 = quantize_m1(det, c, calib)
                runners[c] = lambda x, c=c, qm1=qm1: {c: qm1.m1(x)}
        self.cache.mkdir(parents=True, exist_ok=True)
        for clip, frames in clips.items():
            source = frames if frames is not None else self._read()
            acc: dict[str, list[list[np.ndarray]]] = {c: [] for c in cuts}
            qparams: dict[str, list[tuple[float, int]]] = {}
            names = {c: [t.name for t in det.get_cut(c).crossing] for c in cuts}
            done = 0
            for batch_frames in _chunks(source, 16):
                batch = det.preprocess(batch_frames)
                with torch.no_grad():
                    for runner in runners.values():
                        for c, outs in runner(batch.tensor).items():
                            acc[c].append([o.int_repr().numpy().astype(np.uint8) for o in outs])
                            qparams[c] = [(float(o.q_scale()), int(o.q_zero_point())) for o in outs]
                done += len(batch_frames)
                self.log(f"  M1 ({clip}): {done} frames")
            for c in cuts:
                arrays = {f"codes{i}": np.concatenate([b[i] for b in acc[c]]) for i in range(len(names[c]))}
                np.savez(
                    self._cache_path("m1", c, clip),
                    names=np.array(names[c]),
                    scales=np.array([s for s, _ in qparams[c]]),
                    zero_points=np.array([z for _, z in qparams[c]]),
                    **arrays,
                )
        self.timings["m1_s"] = self.timings.get("m1_s", 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ references

    def _clip(self, name: str) -> Clip:
        """The clip's sizes, scored frames and float reference detections (cached)."""
        from temposplit.model.detections import Detections

        det = self.detector
        pattern = f"{self.score_every}-{'.'.join(map(str, self.score_phases))}" if name == "vtest" else "all"
        path = self.cache / f"float-{self.model}-{name}-{self._clip_id()}-{pattern}.json"
        if path.is_file():
            doc = json.loads(path.read_text())
        else:
            t0 = time.perf_counter()
            if name == "vtest":
                source, gts = self._read(), None
            else:
                source, gts = self._labelme_data()
            dets, image_sizes, orig_sizes, input_size, n = {}, [], [], None, 0
            for chunk in _chunks(source, 16):
                batch = det.preprocess(chunk)
                wanted = [k for k in range(len(chunk)) if name != "vtest" or self._is_scored(n + k)]
                if wanted:  # the float detector on the scored frames only
                    sub = det.preprocess([chunk[k] for k in wanted])
                    for k, d in zip(wanted, det.forward(sub), strict=True):
                        dets[n + k] = d
                image_sizes += [list(s) for s in batch.meta.image_sizes]
                orig_sizes += [list(s) for s in batch.meta.orig_sizes]
                if input_size is not None and tuple(batch.meta.input_size) != tuple(input_size):
                    raise ConfigError("the clip's frames differ in size")
                input_size = list(batch.meta.input_size)
                n += len(chunk)
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
            path.write_text(json.dumps(doc))
            self.timings[f"float_{name}_s"] = time.perf_counter() - t0
        n = doc["n_frames"]
        if name == "vtest" and n < self.frames:
            self.log(f"the clip has {n} frames (asked for {self.frames})")
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
        clip.reference = [dets(d) for d in doc["detections"]]
        if doc["ground_truth"]:
            clip.ground_truth = [dets(doc["ground_truth"][i]) for i in scored]
        return clip

    # ------------------------------------------------------------------ scoring

    def _m2(self, clip: Clip, cut: str, cut_data: CutData, n_bits, frames: dict[int, list[np.ndarray]]):
        """Detections of reconstructed frames (N-bit codes, or float values when n_bits is None),
        M2 run once per distinct frame reconstruction."""
        import torch

        from temposplit.codec.quantize import dequantize

        self._float_layout(channels_last=True)
        split = self.detector.split(cut)
        out, todo = {}, []
        for i, tensors in frames.items():
            key = (clip.name, cut, n_bits, _digest(*tensors))
            hit = self._m2_cache.get(key)
            if hit is None:
                todo.append((i, key, tensors))
            else:
                out[i] = hit
        for s in range(0, len(todo), M2_BATCH):
            chunk = todo[s : s + M2_BATCH]
            inputs = []
            for t in range(len(cut_data.names)):
                if n_bits is None:
                    arr = np.stack([tensors[t] for _, _, tensors in chunk]).astype(np.float32)
                else:
                    arr = dequantize(
                        np.stack([tensors[t] for _, _, tensors in chunk]),
                        cut_data.scales[t],
                        cut_data.zero_points[t],
                        n_bits,
                    )
                x = torch.from_numpy(arr)
                inputs.append(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)
            with torch.no_grad():
                dets = split.m2(inputs, clip.meta([i for i, _, _ in chunk]))
            for (i, key, _), d in zip(chunk, dets, strict=True):
                self._m2_cache[key] = d
                out[i] = d
        self._m2_frames = getattr(self, "_m2_frames", 0) + len(todo)
        return out

    def _frequent(self, clip: Clip) -> list[int]:
        """Categories with at least FREQUENT_MIN_BOXES fidelity ground-truth boxes in the scored frames."""
        ids = np.concatenate([r.above(0.5).category_ids for r in clip.reference] or [np.zeros(0, np.int64)])
        cats, counts = np.unique(ids, return_counts=True)
        return [int(c) for c, n in zip(cats, counts, strict=True) if n >= FREQUENT_MIN_BOXES]

    def _scores(self, clip: Clip, detections: dict[int, object]) -> dict:
        from temposplit.evaluation.metrics import coco_map, fidelity_map

        dets = [detections[i] for i in clip.scored]
        if clip.ground_truth is not None:
            m = coco_map(dets, clip.ground_truth)
            return {"map50": m.map50, "map50_95": m.map50_95, "gt_boxes": m.n_ground_truth}
        m = fidelity_map(dets, clip.reference)
        out = {"map50": m.map50, "map50_95": m.map50_95, "gt_boxes": m.n_ground_truth}
        # COCO's mean over categories gives a category seen once (one bicycle) the weight of 1579
        # persons; the same score over the frequent categories alone is far steadier. COCO scores
        # each category on its own, so it is read off the same evaluation.
        freq = self._frequent(clip)
        f50, f50_95 = m.subset(freq)
        out.update(map50_frequent=f50, map50_95_frequent=f50_95, frequent_categories=freq)
        return out

    def _score_features(self, clip: Clip, cut: str, cut_data: CutData, n_bits, recon: list[list[np.ndarray]]):
        """Scores of one reconstruction of the whole clip (per frame a list of tensors)."""
        signature = _digest(n_bits, *[_digest(*r) for r in recon])
        key = (clip.name, cut, signature)
        if key not in self._score_cache:
            frames = {i: recon[i] for i in clip.scored}
            self._score_cache[key] = self._scores(clip, self._m2(clip, cut, cut_data, n_bits, frames))
        return signature, self._score_cache[key]

    # ------------------------------------------------------------------ the codec

    def _specs(self, cut_data: CutData):
        from temposplit.codec.encoder import TensorSpec
        from temposplit.host.pipeline import default_block

        return [
            TensorSpec(n, s, sc, z, default_block(s[1], s[2]))
            for n, s, sc, z in zip(cut_data.names, cut_data.shapes, cut_data.scales, cut_data.zero_points, strict=True)
        ]

    def _encode(self, cut: str, cut_data: CutData, n_frames: int, **options):
        """Run the encoder over the clip's cached codes; returns the frames' EncodedFrame in index order."""
        from temposplit.codec.encoder import CodecConfig, Encoder

        config = CodecConfig(
            tensors=self._specs(cut_data),
            search_range=SEARCH_RANGE,
            fps=FPS_REPORT,
            model_id=self.model,
            cut_id=cut,
            **options,
        )
        enc = Encoder(config, keep_reconstruction=True)
        enc.set_total_frames(n_frames)
        for i in range(n_frames):
            enc.push(cut_data.frame(i))
        enc.flush()
        frames = sorted(enc.frames, key=lambda f: f.index)
        if [f.index for f in frames] != list(range(n_frames)):
            raise RuntimeError("the encoder did not code every frame once")
        return frames

    # ------------------------------------------------------------------ rows

    def _row(self, clip: Clip, cut: str | None, method: str, variant: str, coder: str | None, n_bits, **fields):
        key = "|".join(str(x) for x in (self.model, clip.name, cut, method, variant, coder, n_bits))
        row = {k: None for k in ROW_KEYS}
        row.update(
            key=key,
            model=self.model,
            clip=clip.name,
            frames=clip.n_frames,
            scored_frames=len(clip.scored),
            cut=cut,
            method=method,
            variant=variant,
            coder=coder,
            n_bits=n_bits,
            settings={},
        )
        row.update(fields)
        return row

    def _rates(
        self, row: dict, all_bytes: float, cut_bytes: float | None, cut_data: CutData | None, raw_frame_bytes: int
    ) -> dict:
        from temposplit.evaluation.metrics import bits_per_element, compression_ratio, mb_per_s

        row["bytes_per_frame"] = float(all_bytes)
        row["mb_per_s"] = mb_per_s(all_bytes, FPS_REPORT)
        row["ratio_vs_frames"] = compression_ratio(raw_frame_bytes, all_bytes)
        if cut_data is not None:
            e_cut, e_all = cut_data.elements()
            row["cut_bytes_per_frame"] = float(cut_bytes)
            row["cut_mb_per_s"] = mb_per_s(cut_bytes, FPS_REPORT)
            row["bits_per_element"] = bits_per_element(all_bytes, e_all)
            row["cut_bits_per_element"] = bits_per_element(cut_bytes, e_cut)
            row["ratio_vs_8bit"] = compression_ratio(e_all, all_bytes)
            row["cut_ratio_vs_8bit"] = compression_ratio(e_cut, cut_bytes)
        return row

    def _feature_rows(self, ctx, method, variant, n_bits, runs: dict[str, list], settings: dict, lm_runs=None):
        """Rows of one codec configuration, one per coder (``runs``: coder -> EncodedFrames)."""
        clip, cut, cut_data = ctx["clip"], ctx["cut"], ctx["data"]
        rows = []
        for coder, frames in runs.items():
            recon = [f.reconstruction for f in frames]
            if n_bits is None:  # N varies per group (rate control): score the dequantized values
                recon = [_dequantized(f, cut_data) for f in frames]
            signature, scores = self._score_features(clip, cut, cut_data, n_bits, recon)
            n = len(frames)
            all_bytes = sum(f.packet_bytes for f in frames) / n
            cut_bytes = sum(f.tensor_bytes[-1] for f in frames) / n
            kinds = [f.kind for f in frames]
            s = dict(settings)
            s.update(
                anchors=sum(k != "pred" for k in kinds),
                predicted=kinds.count("pred"),
                coded_blocks=sum(f.coded_blocks for f in frames),
                zero_vector_fraction=_zero_vectors(frames),
            )
            if any(f.n_bits != frames[0].n_bits for f in frames) or n_bits is None:
                s["mean_n_bits"] = float(np.mean([f.n_bits for f in frames]))
            row = self._row(
                clip,
                cut,
                method,
                variant,
                coder,
                n_bits,
                structure=settings.get("structure"),
                settings=s,
                **_accuracy(scores),
                reconstruction=signature,
            )
            self._rates(row, all_bytes, cut_bytes, cut_data, ctx["raw_frame_bytes"])
            if lm_runs is not None and coder in lm_runs:
                lm = lm_runs[coder]
                _, lms = self._score_features(
                    ctx["lm_clip"], cut, ctx["lm_data"], n_bits, [f.reconstruction for f in lm]
                )
                row["labelme_map50"], row["labelme_map50_95"] = lms["map50"], lms["map50_95"]
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ tasks

    def _tasks(self):
        """The sweep as a list of (name, row keys, callable -> rows)."""
        tasks = []
        m = set(self.methods)
        clip_key = "vtest"

        def keys(cut, method, variant, coders, n):
            return ["|".join(str(x) for x in (self.model, clip_key, cut, method, variant, c, n)) for c in coders]

        tasks.append(("float reference", keys(None, "float", "", [None], None), self._task_float))
        for cut in self.cuts:
            if "features-8bit" in m:
                tasks.append(
                    (
                        f"{cut} features-8bit",
                        keys(cut, "features-8bit", "", [None], 8),
                        lambda cut=cut: self._task_8bit(cut),
                    )
                )
            for n in self.bits:

                def codec(name, method, variant, coders, cut=cut, n=n, **options):
                    """A codec point: one row per coder, all from one reconstruction."""
                    tasks.append(
                        (
                            f"{cut} N={n} {name}",
                            keys(cut, method, variant, coders, n),
                            lambda: self._task_codec(cut, n, method, variant, coders, **options),
                        )
                    )

                if "quant" in m:
                    codec("quant", "quant", "intra", QUANT_CODERS, structure="intra")
                for s in ("uni-2", "bi-3"):
                    if s in m:
                        codec(s, s, "tss", TSS_CODERS, structure=s)
                if "bi-3+residual" in m:
                    b3 = BI3_RESIDUAL
                    codec(
                        "bi-3+residual",
                        "bi-3+residual",
                        f"t={b3['threshold']:g}",
                        b3["coders"],
                        structure=b3["structure"],
                        reference=b3["reference"],
                        residual=b3["threshold"],
                    )
                if "chain+residual" in m:
                    chain = {"structure": CHAIN_RESIDUAL["structure"], "reference": "chain"}
                    for t in CHAIN_RESIDUAL["thresholds"]:
                        var = f"{chain['structure']} chain t={t:g}"
                        codec(
                            f"chain+residual t={t:g}",
                            "chain+residual",
                            var,
                            CHAIN_RESIDUAL["coders"],
                            **chain,
                            residual=t,
                        )
                    dz = CHAIN_DEAD_ZONE
                    if dz["dead_zone"] >= 1 << (8 - n):  # below one N-bit step it changes nothing
                        t, d = dz["threshold"], dz["dead_zone"]
                        var = f"{chain['structure']} chain t={t:g} dz={d:g}"
                        codec(
                            f"chain+residual t={t:g} dz={d:g}",
                            "chain+residual",
                            var,
                            dz["coders"],
                            **chain,
                            residual=t,
                            dead_zone=d,
                        )
                if "refresh" in m:
                    r = REFRESH
                    codec(
                        "refresh",
                        "refresh",
                        f"{r['structure']} t={r['residual']:g} x{r['factor']:g}",
                        (r["coder"],),
                        structure=r["structure"],
                        reference=r["reference"],
                        residual=r["residual"],
                        refresh=True,
                    )
            if "rate-control" in m:
                for f in RATE_CONTROL["targets"]:
                    var = f"target {100 * f:g}% of 8-bit"
                    tasks.append(
                        (
                            f"{cut} rate-control {var}",
                            keys(cut, "rate-control", var, [RATE_CONTROL["coder"]], None),
                            lambda cut=cut, f=f, var=var: self._task_rate_control(cut, f, var),
                        )
                    )
            if "jpeg-act" in m:
                for table in JPEG_ACT["tables"]:
                    tasks.append(
                        (
                            f"{cut} jpeg-act {table}",
                            keys(cut, "jpeg-act", table, [JPEG_ACT["coder"]], None),
                            lambda cut=cut, table=table: self._task_jpeg_act(cut, table),
                        )
                    )
        if "jpeg" in m:
            tasks.append(
                (
                    "jpeg q=75",
                    keys(None, "jpeg", f"q={JPEG_QUALITY}", [None], None),
                    lambda: self._task_frames("jpeg", JPEG_QUALITY),
                )
            )
            tasks.append(("jpeg ~2.8 bpp", None, lambda: self._task_frames("jpeg", None)))
        for codec in ("h264", "h265"):
            if codec in m:
                for crf in VIDEO_CRFS:
                    tasks.append(
                        (
                            f"{codec} crf={crf}",
                            keys(None, codec, f"crf={crf}", [None], None),
                            lambda codec=codec, crf=crf: self._task_frames(codec, crf),
                        )
                    )
        return tasks

    def _context(self, cut: str) -> dict:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None and ctx["cut"] == cut:
            return ctx
        clip = self._vtest_clip()
        ctx = {
            "cut": cut,
            "clip": clip,
            "data": self._load_cut(cut, "vtest"),
            "raw_frame_bytes": 3 * clip.frame_size[0] * clip.frame_size[1],
        }
        if self._labelme_available():
            ctx["lm_clip"] = self._lm_clip()
            ctx["lm_data"] = self._load_cut(cut, "labelme")
        self._ctx = ctx
        return ctx

    def _vtest_clip(self) -> Clip:
        if getattr(self, "_vtest", None) is None:
            self._vtest = self._clip("vtest")
        return self._vtest

    def _lm_clip(self) -> Clip:
        if getattr(self, "_lm", None) is None:
            self._lm = self._clip("labelme")
        return self._lm

    def _task_float(self):
        from temposplit.evaluation.metrics import coco_map

        clip = self._vtest_clip()
        scores = self._scores(clip, dict(zip(clip.scored, clip.reference, strict=True)))  # 1.0 by construction
        row = self._row(
            clip,
            None,
            "float",
            "",
            None,
            None,
            **_accuracy(scores),
            settings={"note": "the fidelity ground truth itself: 1.0 by construction"},
        )
        if self._labelme_available():
            lm = self._lm_clip()
            r = coco_map(lm.reference, lm.ground_truth)
            row["labelme_map50"], row["labelme_map50_95"] = r.map50, r.map50_95
        return [row]

    def _task_8bit(self, cut):
        ctx = self._context(cut)
        clip, data = ctx["clip"], ctx["data"]
        recon = [data.frame(i) for i in range(clip.n_frames)]
        signature, scores = self._score_features(clip, cut, data, 8, recon)
        e_cut, e_all = data.elements()
        row = self._row(
            clip,
            cut,
            "features-8bit",
            "",
            None,
            8,
            structure="none",
            **_accuracy(scores),
            reconstruction=signature,
            settings={"note": "int8 M1 -> float M2, uncompressed 8-bit codes (the int8 line)"},
        )
        self._rates(row, e_all, e_cut, data, ctx["raw_frame_bytes"])
        if "lm_clip" in ctx:
            lm, lmd = ctx["lm_clip"], ctx["lm_data"]
            _, s = self._score_features(lm, cut, lmd, 8, [lmd.frame(i) for i in range(lm.n_frames)])
            row["labelme_map50"], row["labelme_map50_95"] = s["map50"], s["map50_95"]
        return [row]

    def _codec_options(self, n, structure, reference="anchor", residual=None, refresh_threshold=None, dead_zone=0.0):
        from temposplit.codec.encoder import ResidualConfig

        opts = {"n_bits": n, "structure": structure, "reference": reference}
        if residual is not None:  # in 8-bit steps, as the codec takes it
            opts["residual"] = ResidualConfig("threshold", float(residual), dead_zone=float(dead_zone))
        if refresh_threshold is not None:
            opts["refresh_threshold"] = float(refresh_threshold)
        return opts

    def _uni2_mean_cost(self, cut, n, ctx) -> float:
        """Mean TSS cost per element of uni-2's predicted frames (1 frame from their anchor)."""
        key = (cut, n)
        if key not in self._uni2_cost:
            frames = self._encode(
                cut, ctx["data"], ctx["clip"].n_frames, coder="raw", **self._codec_options(n, "uni-2")
            )
            costs = [f.cost_per_element for f in frames if f.kind == "pred"]
            self._uni2_cost[key] = float(np.mean(costs)) if costs else 0.0
        return self._uni2_cost[key]

    def _task_codec(
        self,
        cut,
        n,
        method,
        variant,
        coders,
        structure,
        reference="anchor",
        residual=None,
        refresh=False,
        dead_zone=0.0,
    ):
        ctx = self._context(cut)
        settings = {
            "structure": structure,
            "reference": reference,
            "search_range": SEARCH_RANGE,
            "blocks": [s.block for s in self._specs(ctx["data"])],
            "table_policy": "previous",
        }
        refresh_threshold = None
        if residual is not None:
            settings["residual"] = {
                "mode": "threshold",
                "threshold_8bit_steps": residual,
                "dead_zone_8bit_steps": dead_zone,
            }
        if refresh:
            base = self._uni2_mean_cost(cut, n, ctx)
            refresh_threshold = REFRESH["factor"] * base
            settings["refresh_threshold"] = refresh_threshold
            settings["refresh_rule"] = f"{REFRESH['factor']:g} x mean uni-2 prediction cost ({base:.3f})"
        opts = self._codec_options(n, structure, reference, residual, refresh_threshold, dead_zone)
        runs, lm_runs = {}, {}
        for coder in coders:
            runs[coder] = self._encode(cut, ctx["data"], ctx["clip"].n_frames, coder=coder, **opts)
            if method == "uni-2" and coder == coders[0]:
                costs = [f.cost_per_element for f in runs[coder] if f.kind == "pred"]
                self._uni2_cost[(cut, n)] = float(np.mean(costs)) if costs else 0.0
            if "lm_clip" in ctx and method in LABELME_METHODS and coder == coders[0]:
                lm_runs[coder] = self._encode(cut, ctx["lm_data"], ctx["lm_clip"].n_frames, coder=coder, **opts)
        rows = self._feature_rows(ctx, method, variant, n, runs, settings, lm_runs or None)
        for r in rows[1:]:  # the labelme score is the reconstruction's, shared by the coders
            if r["reconstruction"] == rows[0]["reconstruction"]:
                r["labelme_map50"], r["labelme_map50_95"] = rows[0]["labelme_map50"], rows[0]["labelme_map50_95"]
        return rows

    def _task_rate_control(self, cut, fraction, variant):
        ctx = self._context(cut)
        _, e_all = ctx["data"].elements()
        target = fraction * e_all * FPS_REPORT / 1e6
        rc = RATE_CONTROL
        opts = self._codec_options(8, rc["structure"], rc["reference"], rc["threshold_8bit_steps"])
        frames = self._encode(cut, ctx["data"], ctx["clip"].n_frames, coder=rc["coder"], rate_target=target, **opts)
        settings = {
            "structure": rc["structure"],
            "reference": rc["reference"],
            "search_range": SEARCH_RANGE,
            "residual": {"mode": "threshold", "threshold_8bit_steps": rc["threshold_8bit_steps"]},
            "rate_target_mb_s": target,
            "ladder": "codec default (N 8..5 per group size, then N=4)",
        }
        rows = self._feature_rows(ctx, "rate-control", variant, None, {rc["coder"]: frames}, settings)
        return rows

    def _jpeg_act_frac_bits(self, data: CutData) -> tuple[int, float]:
        """The largest fraction-bit count that clips at most JPEG_ACT['max_clipped'] of the clip's
        values (every crossing tensor); also the fraction fix35 (5 bits, the paper's) clips."""
        values, hist = [], []
        for codes, s, z in zip(data.codes, data.scales, data.zero_points, strict=True):
            h = np.bincount(codes.reshape(-1), minlength=256)
            values.append((np.arange(256) - z) * s)
            hist.append(h)
        values, hist = np.concatenate(values), np.concatenate(hist)
        total = hist.sum()

        def clipped(f):
            lo, hi = -128 / 2**f, 127 / 2**f
            return float(hist[(values < lo - 0.5 / 2**f) | (values > hi + 0.5 / 2**f)].sum() / total)

        best = 0
        for f in range(8):
            if clipped(f) <= JPEG_ACT["max_clipped"]:
                best = f
        return best, clipped(5)

    def _task_jpeg_act(self, cut, table):
        from temposplit.codec import jpeg_act

        ctx = self._context(cut)
        clip, data = ctx["clip"], ctx["data"]
        frac_bits, clipped35 = self._jpeg_act_frac_bits(data)
        variant = f"{table} frac_bits={frac_bits}"

        def run(cd: CutData, n):
            recon, sizes = [], []
            for i in range(n):
                xs, ys, bs = cd.frame(i), [], []
                for x8, s, z in zip(xs, cd.scales, cd.zero_points, strict=True):
                    x = (x8.astype(np.float32) - np.float32(z)) * np.float32(s)
                    c = jpeg_act.compress(x, table=table, coder=JPEG_ACT["coder"], frac_bits=frac_bits)
                    ys.append(jpeg_act.decompress(c))
                    bs.append(c.nbytes)
                recon.append(ys)
                sizes.append(bs)
            return recon, np.array(sizes, np.float64)

        recon, sizes = run(data, clip.n_frames)
        signature, scores = self._score_features(clip, cut, data, None, recon)
        row = self._row(
            clip,
            cut,
            "jpeg-act",
            variant,
            JPEG_ACT["coder"],
            None,
            structure="intra",
            **_accuracy(scores),
            reconstruction=signature,
            settings={
                "table": table,
                "frac_bits": frac_bits,
                "coder": JPEG_ACT["coder"],
                "input": "dequantized int8 M1 features",
                "frac_bits_rule": f"largest clipping <= {JPEG_ACT['max_clipped']:g} of values",
                "fix35_clipped_fraction": clipped35,
            },
        )
        # The key's variant must be known before the run: the frac_bits rule is deterministic.
        row["key"] = "|".join(str(x) for x in (self.model, clip.name, cut, "jpeg-act", table, JPEG_ACT["coder"], None))
        row["variant"] = variant
        self._rates(row, sizes.sum(axis=1).mean(), sizes[:, -1].mean(), data, ctx["raw_frame_bytes"])
        if "lm_clip" in ctx:
            lm, lmd = ctx["lm_clip"], ctx["lm_data"]
            lrecon, _ = run(lmd, lm.n_frames)
            _, s = self._score_features(lm, cut, lmd, None, lrecon)
            row["labelme_map50"], row["labelme_map50_95"] = s["map50"], s["map50_95"]
        return [row]

    def _task_frames(self, codec, setting):
        """A frame baseline: the clip coded, decoded, and the whole float detector run on it."""
        from temposplit.evaluation import baselines

        clip = self._vtest_clip()
        fps = self._video_fps()
        if codec == "jpeg":
            quality = setting
            rule = "stated quality"
            if quality is None:
                sample = list(self._read(max_frames=10, step=max(1, clip.n_frames // 10)))
                quality, bpp = baselines.jpeg_quality_for_bpp(sample, JPEG_TARGET_BPP)
                rule = f"quality nearest {JPEG_TARGET_BPP} bits/pixel on 10 frames ({bpp:.3f})"
            coded = baselines.encode_jpeg(self._read(), quality, fps)
            variant = f"q={quality}"
        else:
            coded = baselines.encode_video(self._read(), fps, codec, setting)
            variant, rule = f"crf={setting}", "crf, preset medium, gop 250, 1 thread"
        dets = self._detect_decoded(coded.decoded(), clip)
        scores = self._scores(clip, dets)
        row = self._row(
            clip,
            None,
            codec,
            variant,
            None,
            None,
            structure="frames",
            **_accuracy(scores),
            settings={**coded.settings, "rule": rule, "clip_fps": fps, "bits_per_pixel": coded.bits_per_pixel},
        )
        self._rates(row, coded.bytes_per_frame, None, None, coded.raw_bytes_per_frame)
        row["bits_per_element"] = coded.bits_per_pixel
        if codec == "jpeg" and self._labelme_available() and codec in LABELME_METHODS:
            lm = self._lm_clip()
            lm_frames, _ = self._labelme_data()
            lm_coded = baselines.encode_jpeg(lm_frames, quality, fps)
            s = self._scores(lm, self._detect_decoded(lm_coded.decoded(), lm))
            row["labelme_map50"], row["labelme_map50_95"] = s["map50"], s["map50_95"]
        return [row]

    def _detect_decoded(self, frames: Iterable[np.ndarray], clip: Clip) -> dict:
        det = self.detector
        wanted = set(clip.scored)
        out, pending = {}, []

        def flush():
            dets = det.detect([f for _, f in pending])
            for (i, _), d in zip(pending, dets, strict=True):
                out[i] = d
            pending.clear()

        for i, frame in enumerate(frames):
            if i in wanted:
                pending.append((i, frame))
                if len(pending) == 16:
                    flush()
        if pending:
            flush()
        self._m2_frames = getattr(self, "_m2_frames", 0) + len(out)
        return out

    # ------------------------------------------------------------------ the sweep

    def _drop_partial_line(self) -> None:
        """A run killed while writing leaves a last line without its newline: cut it off."""
        if not self.results_path.is_file():
            return
        data = self.results_path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.results_path.write_bytes(data[: data.rfind(b"\n") + 1])

    def done_keys(self) -> set[str]:
        if not self.results_path.is_file():
            return set()
        keys = set()
        for line in self.results_path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    keys.add(json.loads(line)["key"])
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut short by a kill
        return keys

    def settings(self) -> dict:
        return {
            "model": self.model,
            "weights": self.weights,
            "video": str(self._video_path()),
            "start": self.start,
            "frames": self.frames,
            "cuts": self.cuts,
            "bits": self.bits,
            "methods": self.methods,
            "score_every": self.score_every,
            "score_phases": list(self.score_phases),
            "calibration_frames": self.calibration_frames,
            "fps_report": FPS_REPORT,
            "search_range": SEARCH_RANGE,
            "bi3_residual": BI3_RESIDUAL,
            "chain_residual": CHAIN_RESIDUAL,
            "chain_dead_zone": CHAIN_DEAD_ZONE,
            "refresh": REFRESH,
            "rate_control": RATE_CONTROL,
            "jpeg_act": JPEG_ACT,
            "jpeg_quality": JPEG_QUALITY,
            "jpeg_target_bpp": JPEG_TARGET_BPP,
            "video_crfs": VIDEO_CRFS,
            "detector_kwargs": self.detector_kwargs,
            "labelme": self._labelme_available(),
        }

    def run(self) -> list[dict]:
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self._drop_partial_line()
        done = self.done_keys()
        tasks = self._tasks()
        todo = [t for t in tasks if t[1] is None or not set(t[1]) <= done]
        # The searched-quality JPEG task's key is known only after the search: skip it when a row exists.
        if any(k.split("|")[3] == "jpeg" and not k.endswith(f"q={JPEG_QUALITY}|None|None") for k in done):
            todo = [t for t in todo if t[0] != "jpeg ~2.8 bpp"]
        self.log(f"{len(tasks)} points, {len(tasks) - len(todo)} already done in {self.results_path}")
        self._m2_frames = 0
        t_start = time.perf_counter()
        with open(self.results_path, "a", encoding="utf-8") as f:
            for k, (name, _keys, fn) in enumerate(todo, 1):
                t = time.perf_counter()
                rows = fn()
                dt = time.perf_counter() - t
                for row in rows:
                    if row["key"] in done:
                        continue
                    row["seconds"] = dt / len(rows)
                    f.write(json.dumps(_clean(row)) + "\n")
                    done.add(row["key"])
                f.flush()
                elapsed = time.perf_counter() - t_start
                eta = elapsed / k * (len(todo) - k)
                best = rows[0] if rows else {}
                acc = best.get("map50")
                size = min((r["bytes_per_frame"] for r in rows if r.get("bytes_per_frame") is not None), default=None)
                self.log(
                    f"[{k:3d}/{len(todo)}] {name}: mAP@0.5 {_fmt(acc)}"
                    + (f", {size / 1000:.2f} kB/frame (smallest coder)" if size is not None else "")
                    + f"  ({dt:.1f} s; {elapsed / 60:.1f} min elapsed, ETA {eta / 60:.1f} min)"
                )
        self.timings["sweep_s"] = time.perf_counter() - t0
        self.timings["m2_frames_run"] = self._m2_frames
        meta_path = self.out / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"runs": []}
        meta["settings"] = self.settings()
        meta["runs"].append({"timings": self.timings, "points": len(todo)})
        meta_path.write_text(json.dumps(_clean(meta), indent=1))
        return load_rows(self.results_path)


def _accuracy(scores: dict) -> dict:
    """The row fields of a scoring."""
    return {
        "map50": scores["map50"],
        "map50_95": scores["map50_95"],
        "map50_frequent": scores.get("map50_frequent"),
        "map50_95_frequent": scores.get("map50_95_frequent"),
    }


def _dequantized(frame, cut_data: CutData) -> list[np.ndarray]:
    from temposplit.codec.quantize import dequantize

    return [
        dequantize(r, s, z, frame.n_bits)
        for r, s, z in zip(frame.reconstruction, cut_data.scales, cut_data.zero_points, strict=True)
    ]


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _zero_vectors(frames) -> float | None:
    vs = [v for f in frames if f.vectors for v in f.vectors]
    if not vs:
        return None
    total = sum(v.size // 2 for v in vs)
    zeros = sum(int(np.all(v.reshape(-1, 2) == 0, axis=1).sum()) for v in vs)
    return zeros / max(1, total)


def _chunks(items, size):
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_rows(path) -> list[dict]:
    """The rows of a results.jsonl (the last one of each key wins; broken lines skipped)."""
    rows = {}
    path = Path(path)
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "key" in row:
            rows[row["key"]] = row
    return list(rows.values())
