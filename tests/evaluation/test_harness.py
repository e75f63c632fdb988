"""The evaluation harness's plumbing: rows and their keys, the shared reconstruction rule,
resuming, several clips, the calibration apart from the clips, the frame baselines at both
resolutions, the report with BD-rates and intervals, the CLI, and the torchvision models
with random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pycocotools")

from temposplit.errors import ConfigError  # noqa: E402
from temposplit.evaluation.harness import (  # noqa: E402
    ALL_METHODS,
    BI3_RESIDUAL,
    QUANT_CODERS,
    ROW_KEYS,
    TSS_CODERS,
    VIDEO_CRFS,
    Harness,
    load_rows,
)
from temposplit.model.data import eval_clips, have_data, vtest_path  # noqa: E402

pytestmark = pytest.mark.models

CUT = "features.13"
METHODS = ["features-8bit", "quant", "bi-3", "bi-3+residual", "jpeg-act", "jpeg"]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))  # the parallel suite's share, at most 2


@pytest.fixture(scope="module")
def need_data():
    if not have_data():
        pytest.skip("data/ is absent: run `make data` for vtest.avi and the labelme frames")


def _harness(out, **kw):
    args = dict(
        video=vtest_path(),
        frames=5,
        cuts=[CUT],
        bits=[4, 6],
        methods=METHODS,
        out=out,
        labelme=True,
        log=lambda msg: None,
    )
    args.update(kw)
    return Harness(**args)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, need_data):
    out = tmp_path_factory.mktemp("eval")
    rows = _harness(out).run()
    return out, rows


def _by(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def test_every_method_yields_rows_with_the_expected_keys(sweep):
    _, rows = sweep
    for r in rows:
        assert set(ROW_KEYS) <= set(r), r["key"]
    assert len(_by(rows, method="float")) == 1
    assert len(_by(rows, method="features-8bit", cut=CUT)) == 1
    for n in (4, 6):
        assert {r["coder"] for r in _by(rows, method="quant", n_bits=n)} == set(QUANT_CODERS)
        assert {r["coder"] for r in _by(rows, method="bi-3", n_bits=n)} == set(TSS_CODERS)
        assert {r["coder"] for r in _by(rows, method="bi-3+residual", n_bits=n)} == set(BI3_RESIDUAL["coders"])
    assert len(_by(rows, method="jpeg-act")) == 2
    assert {r["variant"] for r in _by(rows, method="jpeg")} >= {"q=75"}
    for r in rows:
        assert r["frames"] == 5 and r["scored_frames"] == 5
        if r["method"] != "float":
            assert r["bytes_per_frame"] > 0 and r["mb_per_s"] == pytest.approx(r["bytes_per_frame"] * 30 / 1e6)
        if r["cut"] is not None:
            assert r["cut_bytes_per_frame"] <= r["bytes_per_frame"]
            assert r["ratio_vs_8bit"] == pytest.approx(96 * 19 * 19 / r["bytes_per_frame"])
        assert r["map50"] is None or 0.0 <= r["map50"] <= 1.0
    assert _by(rows, method="float")[0]["map50"] == 1.0  # the fidelity ground truth itself
    assert _by(rows, method="float")[0]["map50_frequent"] in (1.0, None)  # None: no category that frequent
    assert _by(rows, method="features-8bit")[0]["bytes_per_frame"] == 96 * 19 * 19
    raw4 = _by(rows, method="quant", n_bits=4, coder="raw")[0]["cut_bytes_per_frame"]
    assert 96 * 19 * 19 / 2 <= raw4 <= 96 * 19 * 19 / 2 + 8  # 4-bit packing plus the section's length field
    assert all(r["labelme_map50"] is not None for r in _by(rows, method="quant"))


def test_coders_share_one_reconstruction_and_differ_only_in_rate(sweep):
    _, rows = sweep
    for method in ("quant", "bi-3", "bi-3+residual"):
        for n in (4, 6):
            group = _by(rows, method=method, n_bits=n)
            assert len({r["reconstruction"] for r in group}) == 1
            assert len({(r["map50"], r["map50_95"], r["labelme_map50"]) for r in group}) == 1
            assert len({r["bytes_per_frame"] for r in group}) == len(group)  # every coder its own rate
    # N = 8 intra would be the 8-bit features; at N = 4 the reconstruction differs from N = 6.
    assert (
        _by(rows, method="quant", n_bits=4)[0]["reconstruction"]
        != _by(rows, method="quant", n_bits=6)[0]["reconstruction"]
    )


def test_a_rerun_skips_the_points_already_done(sweep, tmp_path):
    out, rows = sweep
    lines = (out / "results.jsonl").read_text().splitlines()
    # A killed run: some rows written, the last line cut short.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "cache").symlink_to(out / "cache", target_is_directory=True)
    keep = lines[: len(lines) // 2]
    (partial / "results.jsonl").write_text("\n".join(keep) + "\n" + lines[len(keep)][:25])
    logs = []
    h = _harness(partial, log=logs.append)
    calls = []
    original = h.scorer.m2
    h.scorer.m2 = lambda *a, **k: calls.append(1) or original(*a, **k)
    again = h.run()
    assert {r["key"] for r in again} == {r["key"] for r in rows}
    keys = [json.loads(line)["key"] for line in (partial / "results.jsonl").read_text().splitlines()[len(keep) + 1 :]]
    assert len(keys) == len(set(keys)) and not set(keys) & {json.loads(line)["key"] for line in keep}
    # And once everything is there, nothing runs at all.
    logs.clear()
    h2 = _harness(partial, log=logs.append)
    h2.scorer.m2 = lambda *a, **k: pytest.fail("M2 ran for a point already done")
    h2.run()
    assert any("already done" in m for m in logs)
    assert len(load_rows(partial / "results.jsonl")) == len(rows)


def _copy_of(sweep_out, dest):
    """An output folder holding the sweep's rows and sharing its caches."""
    dest.mkdir()
    (dest / "cache").symlink_to(sweep_out / "cache", target_is_directory=True)
    (dest / "results.jsonl").write_text((sweep_out / "results.jsonl").read_text())
    return dest


def test_a_rerun_with_other_frames_runs_its_points_again(sweep, tmp_path):
    """Rows of other settings are neither skipped as done nor returned: the points run again
    (M2 runs), every returned row is of the new settings, and the report of the folder
    (`eval-report`, the last run's rows) holds only them."""
    from temposplit.evaluation.harness import run_of

    out, rows = sweep
    first = {r["run"] for r in rows}
    assert len(first) == 1 and all(r["key"] for r in rows)
    folder = _copy_of(out, tmp_path / "other")
    logs, calls = [], []
    h = _harness(folder, frames=4, methods=["features-8bit", "quant"], bits=[4], labelme=True, log=logs.append)
    original = h.scorer.m2
    h.scorer.m2 = lambda *a, **k: calls.append(1) or original(*a, **k)
    again = h.run()
    assert calls, "no point ran again"
    assert any("other settings or code" in m for m in logs)
    assert again and {r["frames"] for r in again} == {4} and {r["run"] for r in again} == {h.run_id()}
    assert h.run_id() not in first
    assert {r["method"] for r in again} == {"float", "features-8bit", "quant"}
    last = load_rows(folder / "results.jsonl", run=run_of(folder))
    assert {r["key"] for r in last} == {r["key"] for r in again}
    # Every scoring file the new rows name is this run's, none of the sweep's.
    assert all(r["evals"].split("/")[1].startswith(h.run_id()) for r in again if r.get("evals"))


def test_the_run_identity_holds_the_code_that_measures(sweep, tmp_path, monkeypatch):
    """Changed code that measures a point (the codec, the networks, the scoring: the
    source digest of what the runners import) is another run, with the settings unchanged;
    changed code of the networks is also another M1 cache name; the same code is the same run."""
    from temposplit import source
    from temposplit.evaluation.cache import ClipData, Models
    from temposplit.model import fingerprint

    out, rows = sweep
    h = _harness(out)
    assert h.run_id() == rows[0]["run"]
    clip = ClipData(
        Models("ssd-mobilenet-v2", None, {}, print, {}),
        "vtest",
        vtest_path(),
        5,
        0,
        1,
        (0,),
        tmp_path,
        False,
        "fixed",
        3,
        print,
        {},
    )
    before = clip.clip_id()
    real = source.source_digest
    monkeypatch.setattr(source, "source_digest", lambda roots, exclude=(): b"other" + real(roots, exclude))
    assert _harness(out).run_id() != rows[0]["run"]
    monkeypatch.setattr(fingerprint, "model_source_digest", lambda: b"other code")
    clip._id = None
    assert clip.clip_id() != before


def test_the_measuring_code_is_found_by_its_imports():
    """The run identity's code is what the runners import, transitively (the codec's coders
    included, the report's code not); the int8 network's cache key covers the modules that
    make the network and not the accuracy study or the CLI."""
    from temposplit.evaluation.harness import MEASURE_MODULES
    from temposplit.model.fingerprint import NETWORK_MODULES
    from temposplit.source import module_closure

    measured = module_closure(MEASURE_MODULES)
    for name in ("temposplit.codec.ctx", "temposplit.codec.encoder", "temposplit.model.quantize", "temposplit.codec"):
        assert name in measured, name
    assert not {"temposplit.evaluation.report", "temposplit.evaluation.bdrate", "temposplit.cli"} & set(measured)
    network = module_closure(NETWORK_MODULES)
    assert {"temposplit.model.ptq", "temposplit.model.ssd", "temposplit.model.calibration"} <= set(network)
    assert not {"temposplit.model.accuracy", "temposplit.model.cli", "temposplit.model.bench"} & set(network)


def test_a_changed_entry_reruns_only_its_points(sweep, monkeypatch):
    """One plan entry's options changed: its rows are no longer done, every other row still is."""
    from temposplit.evaluation import plan as plan_mod

    out, rows = sweep
    target = next(e for e in plan_mod.PLAN if e.method == "bi-3+residual")
    changed = tuple(
        type(e)(**{**e.__dict__, "options": {**e.options, "threshold": 99.0}}) if e is target else e
        for e in plan_mod.PLAN
    )
    monkeypatch.setattr(plan_mod, "PLAN", changed)
    h = _harness(out)
    assert h.run_id() == rows[0]["run"]  # the plan's entries are not the run's identity
    done = h.done_keys()
    redo = {r["key"] for r in rows} - done
    assert redo and redo == {r["key"] for r in rows if r["method"] == "bi-3+residual"}


def test_adding_a_clip_runs_only_its_points(sweep, tmp_path):
    """A second clip into a folder that holds the first's rows: the first clip's points are
    done (no M2 runs for them), the report of the folder holds both clips' rows."""
    from temposplit.evaluation.harness import last_run_rows

    out, rows = sweep
    folder = _copy_of(out, tmp_path / "two")
    second = tmp_path / "second.avi"
    second.symlink_to(vtest_path())
    methods = ["features-8bit", "quant"]
    h = _harness(folder, video={"vtest": vtest_path(), "second": second}, methods=methods)
    assert h.run_id() == rows[0]["run"]
    scored = []
    original = h.scorer.m2
    h.scorer.m2 = lambda clip, *a, **k: scored.append(clip.name) or original(clip, *a, **k)
    again = h.run()
    assert "second" in scored and "vtest" not in scored  # (the labelme frames are scored as "labelme")
    assert {r["clip"] for r in again} == {"vtest", "second"}
    first = {r["key"]: r for r in rows if r["method"] in ("float", *methods)}
    kept = {r["key"]: r for r in again if r["clip"] == "vtest"}
    assert kept.keys() == first.keys() and all(kept[k]["seconds"] == first[k]["seconds"] for k in kept)
    assert {r["key"] for r in last_run_rows(folder)} == {r["key"] for r in again}


def test_report_files(sweep, tmp_path):
    from temposplit.evaluation.report import headline, write_report

    out, rows = sweep
    paths = write_report(out, rows, dest=tmp_path, replicates=10)
    names = {p.name for p in paths}
    assert {"results.csv", "results.json", "report.md", f"cut_{CUT}.png", "rate_accuracy.png"} <= names
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1
    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    md = (tmp_path / "vtest" / "report.md").read_text()  # the clip's own report
    assert "## Headline" in md and f"## Cut {CUT}" in md
    h = headline(rows)
    assert set(h["levels"]) == {0.95, 0.90, 0.85}


def test_a_report_removes_the_clip_reports_of_clips_it_no_longer_holds(sweep, tmp_path):
    """A clip dropped from a rerun into the same folder: its report and figures go (the pooled
    report no longer names them); a folder holding anything else is left as it is."""
    from temposplit.evaluation.report import write_report

    out, rows = sweep
    gone = [dict(r, clip="gone") for r in rows]
    write_report(out, rows + gone, dest=tmp_path, replicates=0)
    assert (tmp_path / "gone" / "report.md").is_file() and list((tmp_path / "gone").glob("cut_*.png"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("# my notes\n")
    write_report(out, rows, dest=tmp_path, figures=False, replicates=0)
    assert not (tmp_path / "gone").exists()
    assert (mine / "report.md").read_text() == "# my notes\n"
    assert (tmp_path / "vtest" / "report.md").is_file()


def test_report_has_bd_rates_and_intervals_per_clip(sweep, tmp_path):
    from temposplit.evaluation.report import write_report

    out, rows = sweep
    write_report(out, rows, dest=tmp_path, figures=False, replicates=20)
    md = (tmp_path / "report.md").read_text()
    assert "## BD-rate of the features against each frame codec, mean over the clips" in md
    assert "## vtest" in md and (tmp_path / "vtest" / "report.md").is_file()
    bd = (tmp_path / "bdrate.csv").read_text().splitlines()
    assert bd[0].startswith("clip,metric,anchor,bd_rate_pct,ci_low,ci_high,overlap_low,overlap_high")
    assert any(line.startswith("vtest,map50,jpeg,") for line in bd)
    assert any(line.startswith("mean,map50,jpeg,") for line in bd)
    # Every scored row kept its per-frame evaluation: the intervals are computed from them.
    for r in rows:
        if r["method"] not in ("float",) and r.get("map50") is not None:
            assert r["evals"] and (out / "evals" / r["evals"]).is_file(), r["key"]


def test_the_fixed_calibration_never_reads_the_clip(tmp_path):
    """The default calibration is the model package's fixed set: it works without the clip's
    file, while calibration="clip" (the labelled option) reads the clip."""
    from temposplit.evaluation.cache import ClipData, Models, fixed_calibration_frames
    from temposplit.model.calibration import calibration_frames

    if not have_data():
        pytest.skip("data/ is absent: run `make data`")
    models = Models("ssd-mobilenet-v2", None, {}, lambda m: None, {})

    def data(calibration):
        return ClipData(
            models, "gone", tmp_path / "gone.avi", 5, 0, 1, (0,), tmp_path, False, calibration, 3, print, {}
        )

    frames = data("fixed").calibration_set()
    expected = calibration_frames()
    assert len(frames) == len(expected) == len(fixed_calibration_frames())
    assert all((a == b).all() for a, b in zip(frames, expected, strict=True))
    with pytest.raises(Exception):  # noqa: B017 - the clip's file is not there: reading it fails
        data("clip").calibration_set()
    with pytest.raises(ConfigError):
        Harness(video=vtest_path(), calibration="vtest", out=tmp_path)


def test_a_calibration_fold_is_its_own_calibration_run_and_cache(tmp_path, need_data):
    """--calibration-fold R/K calibrates on that fold of the fixed set: its frames are the
    fold's, its int8 copy is cached apart from the whole set's, its M1 codes have another
    name, its rows another run identity, and the settings say which fold."""
    from temposplit.evaluation.cache import ClipData, Models
    from temposplit.model.calibration import calibration_frames, folds

    models = Models("ssd-mobilenet-v2", None, {}, lambda m: None, {})

    def data(fold):
        return ClipData(
            models, "vtest", vtest_path(), 5, 0, 1, (0,), tmp_path, False, "fixed", 3, print, {}, calibration_fold=fold
        )

    whole, fold = data(None), data((1, 3))
    expected = folds(calibration_frames(), 3)[1]
    got = fold.calibration_set()
    assert len(got) == len(expected) < len(whole.calibration_set())
    assert all((a == b).all() for a, b in zip(got, expected, strict=True))
    assert fold.calibration_source() != whole.calibration_source() != data((2, 3)).calibration_source()
    assert fold.clip_id() != whole.clip_id()
    h0, h1 = _harness(tmp_path / "a"), _harness(tmp_path / "b", calibration_fold=(1, 3))
    assert h0.run_id() != h1.run_id() and h1.settings()["calibration_fold"] == "1/3"
    for bad in ((3, 3), (0, 1), (-1, 3)):
        with pytest.raises(ConfigError):
            _harness(tmp_path / "c", calibration_fold=bad)
    with pytest.raises(ConfigError):
        _harness(tmp_path / "c", calibration="clip", calibration_fold=(0, 3))


def test_several_clips_and_the_frame_baselines_in_one_run(tmp_path, need_data):
    """Two clips, the video baselines at both resolutions and both presets: one row per clip and
    setting, the detector-resolution frames cost fewer bytes, every row names its clip."""
    clips = eval_clips()
    h = Harness(
        video=[clips["vtest"], clips["cup"]],
        frames=3,
        cuts=[CUT],
        bits=[6],
        methods=["chain+residual", "h264"],
        crfs=[13, 43],
        out=tmp_path,
        labelme=False,
        log=lambda m: None,
    )
    rows = h.run()
    assert {r["clip"] for r in rows} == {"vtest", "cup"}
    for clip in ("vtest", "cup"):
        video = _by(rows, clip=clip, method="h264")
        assert {r["variant"] for r in video} == {
            f"{v}crf={c}" for v in ("", "veryfast ", "input ", "input veryfast ") for c in (13, 43)
        }
        for crf in (13, 43):
            native = _by(rows, clip=clip, method="h264", variant=f"crf={crf}")[0]
            small = _by(rows, clip=clip, method="h264", variant=f"input crf={crf}")[0]
            assert small["bytes_per_frame"] < native["bytes_per_frame"]
            assert small["settings"]["rule"].endswith("(its own resize)")
            assert 0.0 <= small["map50"] <= 1.0
        assert _by(rows, clip=clip, method="chain+residual") and _by(rows, clip=clip, method="float")
    assert _by(rows, clip="cup", method="float")[0]["frames"] == 3


def test_the_default_plan_is_pruned_and_every_entry_is_reachable():
    from temposplit.evaluation.plan import DEFAULT_CRFS, DEFAULT_CUTS, DEFAULT_METHODS, PLAN

    assert set(DEFAULT_METHODS) < set(ALL_METHODS)
    assert {"quant", "uni-2", "bi-3", "jpeg-act"}.isdisjoint(DEFAULT_METHODS)
    assert {"chain+residual", "h264", "h265", "jpeg"} <= set(DEFAULT_METHODS)
    assert {"rate-control", "refresh"}.isdisjoint(DEFAULT_METHODS)
    h = Harness(video=vtest_path(), out="/nonexistent/x", log=lambda m: None)
    assert h.cuts == list(DEFAULT_CUTS["ssd-mobilenet-v2"]) and h.pruned
    full = Harness(video=vtest_path(), out="/nonexistent/x", methods=["all"], cuts=["all"], log=lambda m: None)
    assert set(full.methods) == set(ALL_METHODS) and len(full.cuts) > len(h.cuts)

    def video(harness):
        return [t for t in harness.tasks() if t.keys and t.keys[0].split("|")[3] in ("h264", "h265")]

    assert len(video(h)) == 2 * 2 * 2 * len(DEFAULT_CRFS)  # codecs x presets x resolutions x crf
    assert {t.keys[0].split("crf=")[-1].split("|")[0] for t in video(h)} == {str(c) for c in DEFAULT_CRFS}
    named = Harness(video=vtest_path(), out="/nonexistent/x", methods=["h264"], log=lambda m: None)
    assert len(video(named)) == 2 * 2 * len(VIDEO_CRFS)  # a named method runs every crf
    # named crf values run even where the default prunes them
    asked = Harness(video=vtest_path(), out="/nonexistent/x", crfs=[18], log=lambda m: None)
    assert {t.keys[0].split("crf=")[-1].split("|")[0] for t in video(asked)} == {"18"}
    few = Harness(video=vtest_path(), out="/nonexistent/x", crfs=[13, 43], log=lambda m: None)
    assert len([t for t in few.tasks() if t.keys and t.keys[0].split("|")[3] == "h264"]) == 2 * 2 * 2
    with pytest.raises(ConfigError):
        Harness(video=vtest_path(), out="/nonexistent/x", crfs=[14])
    # Adding a method is one entry: every entry has a runner and a unique key per cut, N and coder.
    from temposplit.evaluation.runners import RUNNERS

    assert all(e.runner in RUNNERS for e in PLAN)
    keys = [(e.method, e.variant, c) for e in PLAN for c in e.coders]
    assert len(keys) == len(set(keys))


def test_a_detector_without_a_fixed_input_size_has_no_input_resolution_baseline(tmp_path, need_data):
    """The input-resolution baseline needs a fixed input size (the SSD's 300x300): a torchvision
    detector's default plan ran some points, then stopped at the first `input` one with exit
    status 2 on every resume. Its plan leaves those out; the SSD's keeps them."""
    from temposplit.evaluation.plan import ALL_METHODS, DEFAULT_METHODS, tasks

    tv = "fasterrcnn-mobilenet-v3-large-fpn"
    for methods, pruned in ((DEFAULT_METHODS, True), (ALL_METHODS, False)):
        ssd_names = [t.name for t in tasks("ssd-mobilenet-v2", "c", [CUT], [4], methods, lambda *a: None, pruned)]
        tv_names = [t.name for t in tasks(tv, "c", [CUT], [4], methods, lambda *a: None, pruned)]
        video = [n for n in ssd_names if n.startswith(("h264", "h265"))]
        assert any("input" in n for n in video)
        assert [n for n in tv_names if n.startswith(("h264", "h265"))] == [n for n in video if "input" not in n]
    from temposplit.model.cuts import default_cut

    h = Harness(model=tv, video=vtest_path(), frames=2, bits=[4], cuts=[default_cut(tv)], crfs=[13, 43], out=tmp_path)
    names = [t.name for t in h.tasks()]
    assert "h264 crf=13" in names and not any("input" in n for n in names)
    assert not any(e["options"].get("resolution") == "input" for e in h.settings()["plan"])


def test_cli_rejects_bad_options(capsys):
    from temposplit.cli import main

    assert main(["eval", "--methods", "quant,nonsense", "--out", "/nonexistent/x", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown method" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--video", "/nonexistent/clip.avi", "--out", "/nonexistent/x", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "no such video" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--video", "/tmp", "--out", "/nonexistent/x", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "/tmp: a folder, not a video file" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--video-list", "/nonexistent/list.txt", "--out", "/nonexistent/x"]) == 2
    assert "no such list file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", "--bits", "3..9"])
    assert e.value.code == 2
    for bad in ("3/3", "1", "a/b", "0/1"):
        with pytest.raises(SystemExit) as e:
            main(["eval", "--calibration-fold", bad])
        assert e.value.code == 2 and "R/K" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_is_a_plumbing_run_with_every_output(tmp_path, need_data):
    from temposplit.cli import main

    out = tmp_path / "quick"
    assert main(["eval", "--quick", "--out", str(out), "--no-plots", "--replicates", "10"]) == 0
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["model", "clip", "cut", "method"]
    rows = load_rows(out / "results.jsonl")
    assert {r["clip"] for r in rows} == {"vtest"} and {r["frames"] for r in rows} == {2}
    assert {r["variant"] for r in _by(rows, method="h265")} == {
        f"{v}crf={c}" for v in ("", "veryfast ", "input ", "input veryfast ") for c in (13, 43)
    }
    assert (out / "bdrate.csv").is_file() and (out / "report.md").is_file() and (out / "vtest" / "report.md").is_file()


TORCHVISION = ["fasterrcnn-resnet50-fpn", "fasterrcnn-mobilenet-v3-large-fpn", "retinanet-resnet50-fpn"]


@pytest.mark.slow
@pytest.mark.parametrize("model", TORCHVISION)
def test_torchvision_models_run_through_the_harness(model, tmp_path, need_data):
    """Random weights (plumbing only: no figures), two frames at a small input size."""
    from temposplit.model.cuts import model_info

    cut = model_info(model).cuts[1].name  # a cut crossed by more than one tensor where the FPN taps early
    h = Harness(
        model=model,
        video=vtest_path(),
        frames=2,
        cuts=[cut],
        bits=[4],
        methods=["features-8bit", "quant", "bi-3", "jpeg-act", "jpeg"],
        out=tmp_path,
        calibration="clip",  # labelled: 2 frames of the clip, for speed (random weights, plumbing only)
        calibration_frames=2,
        labelme=False,
        log=lambda m: None,
        detector_kwargs={"min_size": 96, "max_size": 128},
    )
    rows = h.run()
    assert len(_by(rows, method="quant")) == len(QUANT_CODERS)
    assert len(_by(rows, method="bi-3")) == len(TSS_CODERS)
    assert _by(rows, method="jpeg") and _by(rows, method="float")  # the whole detector on decoded frames
    info = model_info(model).cuts[1]
    for r in rows:
        assert set(ROW_KEYS) <= set(r)
        if r["cut"] is not None:
            assert r["bytes_per_frame"] > 0
            if len(info.crossing) > 1:
                assert r["cut_bytes_per_frame"] < r["bytes_per_frame"]


def test_the_dead_zone_variant_runs_only_where_it_changes_something(tmp_path):
    h = _harness(tmp_path, bits=[4, 5, 6, 7, 8], methods=["chain+residual"])
    names = [t.name for t in h.tasks()]
    dz = [n for n in names if "dz=" in n]
    assert dz == [f"{CUT} N={n} chain+residual t=1.5 dz=4" for n in (6, 7, 8)]  # 4 8-bit steps >= one N-bit step
    plain = [n for n in names if "chain+residual t=" in n and "dz=" not in n and "hyst=" not in n]
    assert len(plain) == 2 * 5  # two thresholds at every N
    assert sum("chain+residual uni-" in n for n in names) == 2 * 5  # the two longer chains at every N
    hyst = [n for n in names if "hyst=" in n]
    assert hyst == [f"{CUT} N={n} chain+residual t=4 hyst={m}" for n in (4, 5, 6, 7, 8) for m in (1, 2, 4)]


def test_the_hysteresis_variant_reaches_the_codec():
    from temposplit.evaluation.plan import CHAIN_HYSTERESIS, PLAN
    from temposplit.evaluation.runners import codec_options

    entries = [e for e in PLAN if "hysteresis" in e.options]
    assert [e.options["hysteresis"] for e in entries] == list(CHAIN_HYSTERESIS["hysteresis"])
    assert [e.options["hysteresis"] for e in entries if e.default] == list(CHAIN_HYSTERESIS["default"])
    o = entries[0].options
    opts = codec_options(5, o["structure"], o["reference"], o["residual"], hysteresis=o["hysteresis"])
    assert opts["residual"].hysteresis == CHAIN_HYSTERESIS["hysteresis"][0]
    assert codec_options(5, "uni-8", "chain", 4.0)["residual"].hysteresis == 0


def test_run_codec_hands_the_hysteresis_to_the_encoder_and_the_row():
    from types import SimpleNamespace

    from temposplit.evaluation.plan import PLAN
    from temposplit.evaluation.runners import run_codec

    entry = next(e for e in PLAN if e.options.get("hysteresis") == 2)
    seen = []

    class FakeRun:  # what run_codec asks of a clip run, the encoder's options recorded
        uni2_cost: dict = {}

        def context(self, cut):
            return {"data": None, "clip": SimpleNamespace(n_frames=3)}

        def specs(self, data):
            return [SimpleNamespace(block=4)]

        def encode(self, cut, data, n_frames, **options):
            seen.append(options)
            return []

        def feature_rows(self, ctx, method, variant, n, runs, settings, lm_runs):
            return [{"settings": settings, "reconstruction": None}]

    rows = run_codec(FakeRun(), entry, CUT, 5)
    assert seen and all(o["residual"].hysteresis == 2 for o in seen)
    assert rows[0]["settings"]["residual"]["hysteresis_8bit_steps"] == 2


def test_the_plots_tell_the_chain_variants_apart():
    from temposplit.evaluation.plan import PLAN
    from temposplit.evaluation.report import _variant_style

    variants = {e.variant for e in PLAN if e.method == "chain+residual"}
    style = {v: _variant_style(v) for v in variants}
    for mark in ("hyst=", "dz="):
        own = {style[v] for v in variants if mark in v}
        assert own and own.isdisjoint(style[v] for v in variants if mark not in v)


def test_a_cut_without_a_curve_over_n_plots_without_a_warning(tmp_path):
    """A cut holding only the int8 line (no curve over N) put matplotlib's "No artists with
    labels found to put in legend" on eval's stderr."""
    import warnings

    from temposplit.evaluation.report import plot_cut

    row = dict(method="features-8bit", cut=CUT, n_bits=8, mb_per_s=0.5, map50=0.9, bytes_per_frame=1e4, variant="")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_cut([row], CUT, tmp_path / "cut.png").is_file()


def test_cli_holdout_evaluates_the_held_out_clips(monkeypatch):
    # --holdout puts the held-out clips in place of the default evaluation clips (and beside
    # any --video), never the evaluation clips themselves.
    import temposplit.evaluation.harness as harness_module
    from temposplit.cli import main
    from temposplit.model import data

    if not all(p.is_file() for p in data.holdout_clips().values()):
        pytest.skip("data/ is incomplete: run `make data`")
    seen = {}

    class Stop(BaseException):  # past the CLI's one-line report of a defect
        pass

    class Recorder:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            raise Stop

    monkeypatch.setattr(harness_module, "Harness", Recorder)
    with pytest.raises(Stop):
        main(["eval", "--holdout", "--out", "/nonexistent/x"])
    assert [Path(v).name for v in seen["video"]] == ["bikes.mp4", "carphone.mp4", "bigbuckbunny.mp4"]
    seen.clear()
    with pytest.raises(Stop):
        main(["eval", "--holdout", "--video", str(data.vtest_path()), "--out", "/nonexistent/x"])
    assert [Path(v).name for v in seen["video"]] == ["vtest.avi", "bikes.mp4", "carphone.mp4", "bigbuckbunny.mp4"]


@pytest.mark.parametrize("before", [None, {"run": "old", "runs": [], "settings": {}, "points": {}}])
def test_a_run_refused_before_its_first_row_leaves_meta_json_as_it_was(tmp_path, monkeypatch, before):
    """meta.json names the run eval-report reports; a run that fails before writing a row
    (weights that do not load, a --start past the clip) must not make it name that run, or
    the folder's earlier rows could no longer be reported."""
    import json

    from temposplit.errors import ConfigError

    if before is not None:
        (tmp_path / "meta.json").write_text(json.dumps(before))
    h = Harness(video=vtest_path(), out=tmp_path, log=lambda m: None)
    monkeypatch.setattr(Harness, "run_id", lambda self: "new")
    monkeypatch.setattr(Harness, "tasks", lambda self: [])

    def refused(self, *args):
        assert json.loads((tmp_path / "meta.json").read_text())["run"] == "new"  # written first, as it must be
        raise ConfigError("the clip has 795 frames: --start 99999 is past its end")

    monkeypatch.setattr(Harness, "_sweep", refused)
    with pytest.raises(ConfigError, match="past its end"):
        h.run()
    if before is None:
        assert not (tmp_path / "meta.json").exists()
    else:
        assert json.loads((tmp_path / "meta.json").read_text()) == before


def test_a_clip_that_changes_frame_size_fails_naming_it_before_any_point(tmp_path):
    """The harness reads a clip's frames at one size (it computed points on frames of two
    sizes, then failed part way without naming the file)."""
    import av
    import numpy as np

    from temposplit.evaluation.cache import ClipData, Models

    parts = []
    for k, (h, w) in enumerate(((32, 48), (48, 64))):
        part = tmp_path / f"part{k}.ts"
        with av.open(str(part), "w") as c:
            s = c.add_stream("mpeg2video", rate=10)
            s.height, s.width, s.pix_fmt = h, w, "yuv420p"
            for _ in range(3):
                for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        parts.append(part.read_bytes())
    clip = tmp_path / "changes.ts"
    clip.write_bytes(b"".join(parts))
    data = ClipData(Models("ssd-mobilenet-v2", None, {}, print, {}), "c", clip, 6, 0, 1, (0,), tmp_path, False,
                    "fixed", 3, print, {})  # fmt: skip
    with pytest.raises(ConfigError, match=r"changes.ts: frame \d is 64x48, the clip started at 48x32"):
        list(data.read())
