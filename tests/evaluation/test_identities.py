"""What names eval's rows, caches and scoring files: the inputs by content, not by path or
name. A weights file, a calibration image or a labelme frame replaced at the same path is
another run and another cache; another clip under the same name never takes a clip's
scoring files; the searched JPEG quality that comes out at the stated one is measured.
Tiny clips (3 frames of vtest.avi, halved), the frame baselines only: no int8 network."""

from __future__ import annotations

import json

import numpy as np
import pytest

from temposplit.evaluation.cache import ClipData, Models
from temposplit.evaluation.harness import Harness, last_run_rows, progress
from temposplit.model.data import have_data, vtest_path


def _write_clip(path, frames):
    """``frames`` (RGB uint8) as a lossless video file."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=10)
        s.height, s.width, s.pix_fmt = frames[0].shape[0], frames[0].shape[1], "bgr0"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="bgr0")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two clips of the same name, c.avi, from two places in vtest.avi (both with people)."""
    if not have_data():
        pytest.skip("data/ is absent: run `make data` for vtest.avi")
    from temposplit.model.data import read_video

    root = tmp_path_factory.mktemp("clips")
    out = {}
    for which, start in (("A", 0), ("B", 300)):
        frames = [np.ascontiguousarray(f[::2, ::2]) for f in read_video(vtest_path(), max_frames=3, start=start)]
        out[which] = _write_clip(root / which / "c.avi", frames)
    return out


def _harness(video, out, **kw):
    args = dict(video=video, out=out, frames=3, methods=["h264"], crfs=[43], labelme=False, log=lambda m: None)
    args.update(kw)
    return Harness(**args)


# ------------------------------------------------------------------ inputs by content


def _clip_data(models, video, tmp_path, labelme=False):
    return ClipData(models, "c", video, 3, 0, 1, (0,), tmp_path / "cache", labelme, "fixed", 32, print, {})


@pytest.mark.models
def test_a_weights_file_replaced_at_the_same_path_is_another_run_and_cache(tmp_path, clips):
    """The run identity and the M1 / float reference cache names held the weights' path only:
    another network written to the same file reused the first one's cached codes and rows."""
    torch = pytest.importorskip("torch")
    from temposplit.model import ssd

    weights = tmp_path / "ssd.pt"
    state = ssd.build().state_dict()
    torch.save(state, weights)

    def ids():
        h = _harness(clips["A"], tmp_path / "ev", weights=str(weights))
        return h.run_id(), h.clips()["c"].clip_id()

    first = ids()
    assert ids() == first  # the same weights: the same run
    conv = next(k for k, v in state.items() if v.ndim == 4)
    state[conv] = state[conv] * 0.7
    torch.save(state, weights)
    second = ids()
    assert second[0] != first[0] and second[1] != first[1]


def _files(tmp_path, name, contents):
    paths = []
    for k, data in enumerate(contents):
        p = tmp_path / f"{name}{k}"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_a_calibration_image_replaced_under_its_name_is_another_run_and_cache(tmp_path, clips, monkeypatch):
    """The fixed calibration set entered the identities by its frames' names: a changed image
    under the same name reused the int8 codes of the other calibration."""
    from temposplit.model import calibration

    monkeypatch.setattr(Models, "weights_id", lambda self: "w")  # the weights are not what is tested
    a, b = _files(tmp_path, "cal", [b"one image", b"another"])
    monkeypatch.setattr(calibration, "calibration_sources", lambda root=None: [("a", a, None), ("b", b, None)])

    def ids():
        h = _harness(clips["A"], tmp_path / "ev")
        return h.run_id(), _clip_data(h.models, clips["A"], tmp_path).clip_id()

    first = ids()
    b.write_bytes(b"a changed image")
    second = ids()
    assert second[0] != first[0] and second[1] != first[1]


def test_a_run_without_the_calibration_set_has_an_identity(tmp_path, clips, monkeypatch):
    """Hashing the calibration set's files made every run read them: a run of the frame codecs
    alone (no int8 network) on a machine without the set stopped with a bare 'No such file'.
    A missing file enters the identity as such; the set, once there, is another run."""
    from temposplit.model import calibration

    monkeypatch.setattr(Models, "weights_id", lambda self: "w")
    missing = tmp_path / "not-there.jpg"
    monkeypatch.setattr(calibration, "calibration_sources", lambda root=None: [("a", missing, None)])
    h = _harness(clips["A"], tmp_path / "ev")
    first = (h.run_id(), _clip_data(h.models, clips["A"], tmp_path).clip_id())
    missing.write_bytes(b"an image")
    h = _harness(clips["A"], tmp_path / "ev")
    assert h.run_id() != first[0] and _clip_data(h.models, clips["A"], tmp_path).clip_id() != first[1]


def test_labelme_frames_replaced_under_their_names_are_another_run_and_cache(tmp_path, clips, monkeypatch):
    """The labelme frames' images and boxes (their JSON) enter the run identity where they are
    scored, and the names of their own cached codes and references."""
    from temposplit.model import data

    monkeypatch.setattr(Models, "weights_id", lambda self: "w")
    jpg, js = _files(tmp_path, "lm", [b"jpeg bytes", b'{"shapes": []}'])
    monkeypatch.setattr(data, "labelme_frames", lambda root=None: [(jpg, js)])

    def ids():
        h = _harness(clips["A"], tmp_path / "ev", labelme=True)
        clip = _clip_data(h.models, clips["A"], tmp_path, labelme=True)
        return h.run_id(), clip.source_id("labelme"), clip.source_id("video")

    first = ids()
    js.write_bytes(b'{"shapes": [{"label": "person"}]}')
    second = ids()
    assert second[0] != first[0] and second[1] != first[1]
    assert second[2] == first[2]  # the clip's own codes are not the labelme frames'


# ------------------------------------------------------------------ scoring files of same-named clips


def _rescored(out, row):
    from temposplit.evaluation.metrics import ImageEvals

    with np.load(out / "evals" / row["evals"]) as z:
        ev = ImageEvals.from_npz(z)
    return ev.all_scores(np.ones(ev.n_frames))[:2]


@pytest.mark.models
def test_a_same_named_clip_never_takes_a_clips_scoring_files(tmp_path, clips):
    """Clip A, then another file B under the same name, then A again into one folder: A's rows
    were done, but their per-frame files (evals/c/<run>-float.npz, -frames-<key digest>.npz)
    were B's, and A's intervals and frequent categories came from B's frames."""
    pytest.importorskip("pycocotools")
    out, logs = tmp_path / "ev", []
    _harness(clips["A"], out).run()
    rows_b = _harness(clips["B"], out).run()
    again = _harness(clips["A"], out, log=logs.append).run()
    assert any("5 points, 5 already done" in m for m in logs), logs  # A's rows: nothing ran again
    with_evals = [r for r in again if r.get("evals")]
    assert len(with_evals) == len(again) == 5  # the float reference and four H.264 rows
    assert not {r["evals"] for r in with_evals} & {r["evals"] for r in rows_b}
    for row in with_evals:
        assert _rescored(out, row) == pytest.approx((row["map50"], row["map50_95"]), abs=1e-9), row["key"]


# ------------------------------------------------------------------ the searched JPEG quality at q=75


@pytest.mark.models
def test_a_searched_jpeg_quality_at_the_stated_one_is_measured(tmp_path, clips, monkeypatch):
    """The quality nearest the target came out at 75, the stated entry's: its row key was the
    q=75 row's and was dropped, the report said "Partial: 2 of 3" for ever and every rerun
    searched again."""
    pytest.importorskip("pycocotools")
    from temposplit.evaluation import baselines

    searches = []
    monkeypatch.setattr(baselines, "jpeg_quality_for_bpp", lambda *a, **k: searches.append(1) or (75, 2.8))
    out, logs = tmp_path / "ev", []
    rows = _harness(clips["A"], out, methods=["jpeg"], log=logs.append).run()
    assert len(searches) == 1 and {r["variant"] for r in rows if r["method"] == "jpeg"} == {"q=75"}
    points = json.loads((out / "meta.json").read_text())["points"]
    assert progress(points, last_run_rows(out)) == {"c": (3, 3)}
    logs.clear()
    _harness(clips["A"], out, methods=["jpeg"], log=logs.append).run()
    assert len(searches) == 1 and any("3 points, 3 already done" in m for m in logs), logs
