"""A ``meta.json`` that is JSON but whose settings or points are of other types than eval
writes is a ConfigError naming the file and the field, before anything is written: it was
"internal error: TypeError / AttributeError" part way through eval-report, after some of
its files were written."""

from __future__ import annotations

import json

import pytest
from test_cli_inputs import _row  # the tests' own valid row (conftest.py: this folder on sys.path)

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.evaluation.meta import read_meta

BAD = [
    ({"settings": {"cuts": 5}}, "settings.cuts"),
    ({"settings": {"cuts": [1]}}, "settings.cuts"),
    ({"settings": {"videos": [1]}}, "settings.videos"),
    ({"settings": {"videos": {"c": 1}}}, "settings.videos"),
    ({"settings": {"methods": "h264"}}, "settings.methods"),
    ({"settings": {"bits": ["4"]}}, "settings.bits"),
    ({"settings": {"bits": [True]}}, "settings.bits"),
    ({"settings": {"start": "0"}}, "settings.start"),
    ({"points": 5}, "points"),
    ({"points": {"k": ["p"]}}, "points"),
]


@pytest.mark.parametrize("meta, field", BAD, ids=[json.dumps(m) for m, _ in BAD])
def test_read_meta_checks_the_types_of_the_fields_the_reports_use(tmp_path, meta, field):
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=f"{path}: {field} is not"):
        read_meta(path)


def test_the_meta_json_eval_writes_is_read(tmp_path):
    meta = {
        "settings": {
            "cuts": ["features.10"],
            "methods": ["h264"],
            "bits": [4, 8],
            "videos": {"vtest": "data/vtest.avi"},
            "start": 0,
        },
        "run": "r",
        "points": {"k": "p"},
        "runs": [],
    }
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    assert read_meta(path) == meta
    path.write_text(json.dumps({"points": None, "settings": {}}))  # a folder from before point identities
    assert read_meta(path)["points"] is None


CLI_CASES = [BAD[0], BAD[2], BAD[7], BAD[8]]  # the review's three, and a start the clip report adds to


@pytest.mark.parametrize("meta, field", CLI_CASES, ids=[json.dumps(m) for m, _ in CLI_CASES])
def test_eval_report_refuses_it_in_one_line_before_writing(tmp_path, one_line, meta, field):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.jsonl").write_text(json.dumps(_row()) + "\n")
    (out / "meta.json").write_text(json.dumps(meta))
    assert main(["eval-report", "--out", str(out), "--no-plots", "--replicates", "0"]) == 2
    one_line(f"{out / 'meta.json'}: {field} is not")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "results.jsonl"]
