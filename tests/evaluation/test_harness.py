"""The evaluation harness's plumbing: rows and their keys, the shared reconstruction rule,
resuming, the report, the CLI, and the torchvision models with random weights."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pycocotools")

from temposplit.evaluation.harness import (  # noqa: E402
    BI3_RESIDUAL,
    QUANT_CODERS,
    ROW_KEYS,
    TSS_CODERS,
    Harness,
    load_rows,
)
from temposplit.model.data import have_data  # noqa: E402

pytestmark = pytest.mark.models

CUT = "features.13"
METHODS = ["features-8bit", "quant", "bi-3", "bi-3+residual", "jpeg-act", "jpeg"]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def need_data():
    if not have_data():
        pytest.skip("data/ is absent: run `make data` for vtest.avi and the labelme frames")


def _harness(out, **kw):
    args = dict(
        frames=5,
        cuts=[CUT],
        bits=[4, 6],
        methods=METHODS,
        out=out,
        calibration_frames=3,
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
    original = h._m2
    h._m2 = lambda *a, **k: calls.append(1) or original(*a, **k)
    again = h.run()
    assert {r["key"] for r in again} == {r["key"] for r in rows}
    keys = [json.loads(line)["key"] for line in (partial / "results.jsonl").read_text().splitlines()[len(keep) + 1 :]]
    assert len(keys) == len(set(keys)) and not set(keys) & {json.loads(line)["key"] for line in keep}
    # And once everything is there, nothing runs at all.
    logs.clear()
    h2 = _harness(partial, log=logs.append)
    h2._m2 = lambda *a, **k: pytest.fail("M2 ran for a point already done")
    h2.run()
    assert any("already done" in m for m in logs)
    assert len(load_rows(partial / "results.jsonl")) == len(rows)


def test_report_files(sweep, tmp_path):
    from temposplit.evaluation.report import headline, write_report

    out, rows = sweep
    paths = write_report(out, rows, dest=tmp_path)
    names = {p.name for p in paths}
    assert {"results.csv", "results.json", "report.md", f"cut_{CUT}.png", "rate_accuracy.png"} <= names
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1
    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    md = (tmp_path / "report.md").read_text()
    assert "## Headline" in md and f"## Cut {CUT}" in md
    h = headline(rows)
    assert set(h["levels"]) == {0.95, 0.90, 0.85}


def test_cli_rejects_bad_options(capsys):
    from temposplit.cli import main

    assert main(["eval", "--methods", "quant,nonsense", "--out", "/nonexistent/x", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown method" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["eval", "--bits", "3..9"])
    assert e.value.code == 2


TORCHVISION = ["fasterrcnn-resnet50-fpn", "fasterrcnn-mobilenet-v3-large-fpn", "retinanet-resnet50-fpn"]


@pytest.mark.slow
@pytest.mark.parametrize("model", TORCHVISION)
def test_torchvision_models_run_through_the_harness(model, tmp_path, need_data):
    """Random weights (plumbing only: no figures), two frames at a small input size."""
    from temposplit.model.cuts import model_info

    cut = model_info(model).cuts[1].name  # a cut crossed by more than one tensor where the FPN taps early
    h = Harness(
        model=model,
        frames=2,
        cuts=[cut],
        bits=[4],
        methods=["features-8bit", "quant", "bi-3", "jpeg-act", "jpeg"],
        out=tmp_path,
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
    names = [name for name, _keys, _fn in h._tasks()]
    dz = [n for n in names if "dz=" in n]
    assert dz == [f"{CUT} N={n} chain+residual t=1.5 dz=4" for n in (6, 7, 8)]  # 4 8-bit steps >= one N-bit step
    assert sum("chain+residual" in n and "dz=" not in n for n in names) == 2 * 5  # two thresholds at every N
