"""The runners: each measures one point of the plan on one clip and returns its rows.

A runner takes the clip's :class:`ClipRun` (the clip's caches, the scorer, the rows'
helpers), the plan :class:`~temposplit.evaluation.plan.Entry`, the cut and N:

* ``float``: the fidelity ground truth itself (1 by construction) and its labelme score;
* ``int8``: the uncompressed 8-bit codes (the int8 line);
* ``codec``: the feature codec over the clip's cached codes, one row per coder, all from
  one reconstruction;
* ``rate-control``: the codec's controller at a target fraction of the 8-bit bytes;
* ``jpeg-act``: JPEG-ACT on the dequantized int8 features;
* ``frames``: a frame baseline (JPEG, a video codec at a crf and preset, at the native or
  the detector's input resolution), the whole float detector on the decoded frames.

Every row carries the rate (bytes per frame, MB/s at 30 frames/s, bits per element,
compression ratios) and the scores (``scoring.accuracy``).
"""

from __future__ import annotations

import numpy as np

from temposplit.errors import ConfigError
from temposplit.evaluation.cache import ClipData, CutData, digest
from temposplit.evaluation.plan import (
    FPS_REPORT,
    JPEG_ACT,
    JPEG_TARGET_BPP,
    LABELME_METHODS,
    RATE_CONTROL,
    REFRESH,
    SEARCH_RANGE,
    row_key,
)
from temposplit.evaluation.scoring import Scorer, accuracy

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
    "evals",
)


class ClipRun:
    """What the runners share on one clip: its data, the scorer, the cut context, the rows."""

    def __init__(self, data: ClipData, scorer: Scorer, cuts: list[str]):
        self.data = data
        self.scorer = scorer
        self.cuts = cuts
        self.model = data.model
        self._ctx = None
        self.uni2_cost: dict[tuple, float] = {}

    def clip(self):
        return self.data.clip("video")

    def release(self) -> None:
        """Drop the cut context (the clip's M1 codes at one cut) once the clip is done."""
        self._ctx = None

    def context(self, cut: str) -> dict:
        ctx = self._ctx
        if ctx is not None and ctx["cut"] == cut:
            return ctx
        clip = self.clip()
        ctx = {
            "cut": cut,
            "clip": clip,
            "data": self.data.cut_data(cut, "video", self.cuts),
            "raw_frame_bytes": 3 * clip.frame_size[0] * clip.frame_size[1],
        }
        if self.data.labelme_available():
            ctx["lm_clip"] = self.data.clip("labelme")
            ctx["lm_data"] = self.data.cut_data(cut, "labelme", self.cuts)
        self._ctx = ctx
        return ctx

    # ------------------------------------------------------------------ rows

    def row(self, clip, cut: str | None, method: str, variant: str, coder: str | None, n_bits, **fields) -> dict:
        row = {k: None for k in ROW_KEYS}
        row.update(
            key=row_key(self.model, clip.name, cut, method, variant, coder, n_bits),
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

    @staticmethod
    def rates(row: dict, all_bytes: float, cut_bytes, cut_data: CutData | None, raw_frame_bytes: int) -> dict:
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

    def feature_rows(self, ctx, method, variant, n_bits, runs: dict[str, list], settings: dict, lm_runs=None):
        """Rows of one codec configuration, one per coder (``runs``: coder -> EncodedFrames)."""
        clip, cut, cut_data = ctx["clip"], ctx["cut"], ctx["data"]
        rows = []
        for coder, frames in runs.items():
            recon = [f.reconstruction for f in frames]
            if n_bits is None:  # N varies per group (rate control): score the dequantized values
                recon = [_dequantized(f, cut_data) for f in frames]
            signature, scores = self.scorer.score_features(clip, cut, cut_data, n_bits, recon)
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
            row = self.row(
                clip,
                cut,
                method,
                variant,
                coder,
                n_bits,
                structure=settings.get("structure"),
                settings=s,
                **accuracy(scores),
                reconstruction=signature,
            )
            self.rates(row, all_bytes, cut_bytes, cut_data, ctx["raw_frame_bytes"])
            if lm_runs is not None and coder in lm_runs:
                lm = lm_runs[coder]
                _, lms = self.scorer.score_features(
                    ctx["lm_clip"], cut, ctx["lm_data"], n_bits, [f.reconstruction for f in lm]
                )
                row["labelme_map50"], row["labelme_map50_95"] = lms["map50"], lms["map50_95"]
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ the codec

    @staticmethod
    def specs(cut_data: CutData):
        from temposplit.codec.encoder import TensorSpec
        from temposplit.host.pipeline import default_block

        return [
            TensorSpec(n, s, sc, z, default_block(s[1], s[2]))
            for n, s, sc, z in zip(cut_data.names, cut_data.shapes, cut_data.scales, cut_data.zero_points, strict=True)
        ]

    def encode(self, cut: str, cut_data: CutData, n_frames: int, **options):
        """Run the encoder over the clip's cached codes; returns the frames' EncodedFrame in index order."""
        from temposplit.codec.encoder import CodecConfig, Encoder

        config = CodecConfig(
            tensors=self.specs(cut_data),
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

    def uni2_mean_cost(self, cut, n, ctx) -> float:
        """Mean TSS cost per element of uni-2's predicted frames (1 frame from their anchor)."""
        key = (cut, n)
        if key not in self.uni2_cost:
            frames = self.encode(cut, ctx["data"], ctx["clip"].n_frames, coder="raw", **codec_options(n, "uni-2"))
            costs = [f.cost_per_element for f in frames if f.kind == "pred"]
            self.uni2_cost[key] = float(np.mean(costs)) if costs else 0.0
        return self.uni2_cost[key]


def codec_options(n, structure, reference="anchor", residual=None, refresh_threshold=None, dead_zone=0.0, hysteresis=0):
    from temposplit.codec.encoder import ResidualConfig

    opts = {"n_bits": n, "structure": structure, "reference": reference}
    if residual is not None:  # in 8-bit steps, as the codec takes it
        opts["residual"] = ResidualConfig(
            "threshold", float(residual), dead_zone=float(dead_zone), hysteresis=int(hysteresis)
        )
    if refresh_threshold is not None:
        opts["refresh_threshold"] = float(refresh_threshold)
    return opts


# --------------------------------------------------------------------------- the runners


def run_float(run: ClipRun, entry=None, cut=None, n=None):
    from temposplit.evaluation.metrics import coco_map

    clip = run.clip()
    scores = run.scorer.scores(clip, dict(zip(clip.scored, clip.reference, strict=True)), eval_id="float")  # 1.0
    row = run.row(
        clip,
        None,
        "float",
        "",
        None,
        None,
        **accuracy(scores),
        settings={"note": "the fidelity ground truth itself: 1.0 by construction"},
    )
    if run.data.labelme_available():
        lm = run.data.clip("labelme")
        r = coco_map(lm.reference, lm.ground_truth)
        row["labelme_map50"], row["labelme_map50_95"] = r.map50, r.map50_95
    return [row]


def run_int8(run: ClipRun, entry, cut, n=None):
    ctx = run.context(cut)
    clip, data = ctx["clip"], ctx["data"]
    recon = [data.frame(i) for i in range(clip.n_frames)]
    signature, scores = run.scorer.score_features(clip, cut, data, 8, recon)
    e_cut, e_all = data.elements()
    row = run.row(
        clip,
        cut,
        "features-8bit",
        "",
        None,
        8,
        structure="none",
        **accuracy(scores),
        reconstruction=signature,
        settings={"note": "int8 M1 -> float M2, uncompressed 8-bit codes (the int8 line)"},
    )
    run.rates(row, e_all, e_cut, data, ctx["raw_frame_bytes"])
    if "lm_clip" in ctx:
        lm, lmd = ctx["lm_clip"], ctx["lm_data"]
        _, s = run.scorer.score_features(lm, cut, lmd, 8, [lmd.frame(i) for i in range(lm.n_frames)])
        row["labelme_map50"], row["labelme_map50_95"] = s["map50"], s["map50_95"]
    return [row]


def run_codec(run: ClipRun, entry, cut, n):
    o = entry.options
    method, variant, coders = entry.method, entry.variant, entry.coders
    structure, reference = o["structure"], o.get("reference", "anchor")
    residual, refresh, dead_zone = o.get("residual"), o.get("refresh", False), o.get("dead_zone", 0.0)
    hysteresis = o.get("hysteresis", 0)
    ctx = run.context(cut)
    settings = {
        "structure": structure,
        "reference": reference,
        "search_range": SEARCH_RANGE,
        "blocks": [s.block for s in run.specs(ctx["data"])],
        "table_policy": "previous",
    }
    refresh_threshold = None
    if residual is not None:
        settings["residual"] = {
            "mode": "threshold",
            "threshold_8bit_steps": residual,
            "dead_zone_8bit_steps": dead_zone,
            "hysteresis_8bit_steps": hysteresis,
        }
    if refresh:
        base = run.uni2_mean_cost(cut, n, ctx)
        refresh_threshold = REFRESH["factor"] * base
        settings["refresh_threshold"] = refresh_threshold
        settings["refresh_rule"] = f"{REFRESH['factor']:g} x mean uni-2 prediction cost ({base:.3f})"
    opts = codec_options(n, structure, reference, residual, refresh_threshold, dead_zone, hysteresis)
    runs, lm_runs = {}, {}
    for coder in coders:
        runs[coder] = run.encode(cut, ctx["data"], ctx["clip"].n_frames, coder=coder, **opts)
        if method == "uni-2" and coder == coders[0]:
            costs = [f.cost_per_element for f in runs[coder] if f.kind == "pred"]
            run.uni2_cost[(cut, n)] = float(np.mean(costs)) if costs else 0.0
        if "lm_clip" in ctx and method in LABELME_METHODS and coder == coders[0]:
            lm_runs[coder] = run.encode(cut, ctx["lm_data"], ctx["lm_clip"].n_frames, coder=coder, **opts)
    rows = run.feature_rows(ctx, method, variant, n, runs, settings, lm_runs or None)
    for r in rows[1:]:  # the labelme score is the reconstruction's, shared by the coders
        if r["reconstruction"] == rows[0]["reconstruction"]:
            r["labelme_map50"], r["labelme_map50_95"] = rows[0]["labelme_map50"], rows[0]["labelme_map50_95"]
    return rows


def run_rate_control(run: ClipRun, entry, cut, n=None):
    ctx = run.context(cut)
    _, e_all = ctx["data"].elements()
    target = entry.options["fraction"] * e_all * FPS_REPORT / 1e6
    rc = RATE_CONTROL
    opts = codec_options(8, rc["structure"], rc["reference"], rc["threshold_8bit_steps"])
    frames = run.encode(cut, ctx["data"], ctx["clip"].n_frames, coder=rc["coder"], rate_target=target, **opts)
    settings = {
        "structure": rc["structure"],
        "reference": rc["reference"],
        "search_range": SEARCH_RANGE,
        "residual": {"mode": "threshold", "threshold_8bit_steps": rc["threshold_8bit_steps"]},
        "rate_target_mb_s": target,
        "ladder": "codec default (N 8..5 per group size, then N=4)",
    }
    return run.feature_rows(ctx, "rate-control", entry.variant, None, {rc["coder"]: frames}, settings)


def jpeg_act_frac_bits(data: CutData) -> tuple[int, float]:
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


def run_jpeg_act(run: ClipRun, entry, cut, n=None):
    from temposplit.codec import jpeg_act

    table = entry.options["table"]
    ctx = run.context(cut)
    clip, data = ctx["clip"], ctx["data"]
    frac_bits, clipped35 = jpeg_act_frac_bits(data)
    variant = f"{table} frac_bits={frac_bits}"

    def code(cd: CutData, count):
        recon, sizes = [], []
        for i in range(count):
            xs, ys, bs = cd.frame(i), [], []
            for x8, s, z in zip(xs, cd.scales, cd.zero_points, strict=True):
                x = (x8.astype(np.float32) - np.float32(z)) * np.float32(s)
                c = jpeg_act.compress(x, table=table, coder=JPEG_ACT["coder"], frac_bits=frac_bits)
                ys.append(jpeg_act.decompress(c))
                bs.append(c.nbytes)
            recon.append(ys)
            sizes.append(bs)
        return recon, np.array(sizes, np.float64)

    recon, sizes = code(data, clip.n_frames)
    signature, scores = run.scorer.score_features(clip, cut, data, None, recon)
    row = run.row(
        clip,
        cut,
        "jpeg-act",
        variant,
        JPEG_ACT["coder"],
        None,
        structure="intra",
        **accuracy(scores),
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
    row["key"] = row_key(run.model, clip.name, cut, "jpeg-act", table, JPEG_ACT["coder"], None)
    row["variant"] = variant
    run.rates(row, sizes.sum(axis=1).mean(), sizes[:, -1].mean(), data, ctx["raw_frame_bytes"])
    if "lm_clip" in ctx:
        lm, lmd = ctx["lm_clip"], ctx["lm_data"]
        lrecon, _ = code(lmd, lm.n_frames)
        _, s = run.scorer.score_features(lm, cut, lmd, None, lrecon)
        row["labelme_map50"], row["labelme_map50_95"] = s["map50"], s["map50_95"]
    return [row]


def run_frames(run: ClipRun, entry, cut=None, n=None):
    """A frame baseline: the clip coded, decoded, and the whole float detector run on it."""
    from temposplit.evaluation import baselines

    codec, setting = entry.options["codec"], entry.options["setting"]
    preset = entry.options.get("preset", baselines.DEFAULT_PRESET)
    resolution = entry.options.get("resolution", "native")
    data = run.data
    clip = run.clip()
    fps = data.fps()
    source, to_frame = data.read, None
    if resolution == "input":
        source, to_frame = _input_resolution(run, data.read, clip)
    if codec == "jpeg":
        quality = setting
        rule = "stated quality"
        if quality is None:
            sample = list(data.read(max_frames=10, step=max(1, clip.n_frames // 10)))
            quality, bpp = baselines.jpeg_quality_for_bpp(sample, JPEG_TARGET_BPP)
            rule = f"quality nearest {JPEG_TARGET_BPP} bits/pixel on 10 frames ({bpp:.3f})"
        coded = baselines.encode_jpeg(source(), quality, fps)
        variant = f"q={quality}"
    else:
        coded = baselines.encode_video(source(), fps, codec, setting, preset=preset)
        variant = entry.variant
        rule = f"crf, preset {preset}, gop {baselines.DEFAULT_GOP}, 1 thread"
        if resolution == "input":
            rule += ", at the detector's input size (its own resize)"
    dets = run.scorer.detect_decoded(coded.decoded(), clip)
    if to_frame is not None:
        dets = {i: to_frame(d) for i, d in dets.items()}
    eval_id = digest(row_key(run.model, clip.name, None, codec, variant, None, None))
    scores = run.scorer.scores(clip, dets, eval_id=f"frames-{eval_id}")
    row = run.row(
        clip,
        None,
        codec,
        variant,
        None,
        None,
        structure="frames",
        **accuracy(scores),
        settings={**coded.settings, "rule": rule, "clip_fps": fps, "bits_per_pixel": coded.bits_per_pixel},
    )
    raw = 3 * clip.frame_size[0] * clip.frame_size[1]  # against the clip's own frames at any resolution
    run.rates(row, coded.bytes_per_frame, None, None, raw)
    row["bits_per_element"] = coded.bits_per_pixel
    if codec == "jpeg" and data.labelme_available() and codec in LABELME_METHODS:
        lm = data.clip("labelme")
        lm_frames, _ = data.labelme_data()
        lm_coded = baselines.encode_jpeg(lm_frames, quality, fps)
        s = run.scorer.scores(lm, run.scorer.detect_decoded(lm_coded.decoded(), lm))
        row["labelme_map50"], row["labelme_map50_95"] = s["map50"], s["map50_95"]
    return [row]


def _input_resolution(run: ClipRun, read, clip):
    """The clip resized as the detector resizes it (its fixed input size, the detector's own
    resize), rounded to 8 bits for the encoder; and the map of detections on those frames back
    to the clip's coordinates. The detector's resize of a frame already at its input size is
    the identity."""
    from temposplit.model.detections import Detections
    from temposplit.model.numpy_m1 import resize_bilinear_tf1

    det = run.data.models.detector
    if run.model != "ssd-mobilenet-v2":
        raise ConfigError(f"the input-resolution baseline needs a fixed-size detector, not {run.model}")
    h, w = det.input_size
    H, W = clip.frame_size

    def source():
        for f in read():
            yield np.clip(np.rint(resize_bilinear_tf1(f, (h, w))), 0, 255).astype(np.uint8)

    scale = np.array([W / w, H / h, W / w, H / h], np.float32)

    def to_frame(d):
        return Detections.make(np.asarray(d.boxes, np.float32).reshape(-1, 4) * scale, d.scores, d.category_ids)

    return source, to_frame


RUNNERS = {
    "float": run_float,
    "int8": run_int8,
    "codec": run_codec,
    "rate-control": run_rate_control,
    "jpeg-act": run_jpeg_act,
    "frames": run_frames,
}


def _dequantized(frame, cut_data: CutData) -> list[np.ndarray]:
    from temposplit.codec.quantize import dequantize

    return [
        dequantize(r, s, z, frame.n_bits)
        for r, s, z in zip(frame.reconstruction, cut_data.scales, cut_data.zero_points, strict=True)
    ]


def _zero_vectors(frames) -> float | None:
    vs = [v for f in frames if f.vectors for v in f.vectors]
    if not vs:
        return None
    total = sum(v.size // 2 for v in vs)
    zeros = sum(int(np.all(v.reshape(-1, 2) == 0, axis=1).sum()) for v in vs)
    return zeros / max(1, total)
