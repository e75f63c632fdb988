"""The PYNQ-Z2 overlay's Vivado flow: ``python -m temposplit.hw.vivado`` (``make bitstream``).

Writes ``build/vivado/``: the accelerator's Verilog (the Amaranth core,
``temposplit_accel_core.v``, and ``temposplit_accel.v``, a shell with Xilinx port names and
interface attributes so that the IP packager sees one AXI4-Lite slave and two AXI4-Stream
ports), ``build.tcl`` (the settings below, derived from :mod:`temposplit.hw.regmap`,
followed by ``hw/vivado/pynq_z2.tcl``: package the IP, block design with the PS7, an AXI
DMA and the accelerator, address map, synthesis, implementation, bitstream) and
``temposplit.hwh.expected`` (the overlay description this design should produce, the same
text the PYNQ stand-in of ``sim/test_pynq.py`` loads). Where ``vivado`` is on PATH it then
runs the flow, which copies ``temposplit.bit`` and ``temposplit.hwh`` to
``bitstreams/pynq-z2/`` (``--bitstreams``: made, and refused in one line where it takes no
file, before anything is built), and checks that the ``.hwh`` places the registers where the
register map says; where it is not, it stops with a one-line message and exit status 2, so
the folder can be carried to a machine with Vivado (2022.1 or later).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from temposplit.cli import OneLineParser
from temposplit.hw import regmap
from temposplit.hw.regmap import Params

TEMPLATE = Path(__file__).resolve().parent / "vivado" / "pynq_z2.tcl"
CORE_NAME = "temposplit_accel_core"  # the Amaranth top inside the IP
SHELL_NAME = "temposplit_accel"  # the packaged IP's top (its MODTYPE in the .hwh)
OVERLAY = "temposplit"  # temposplit.bit + temposplit.hwh: what pynq.Overlay loads


@dataclass(frozen=True)
class Design:
    """One PYNQ-Z2 block design: what the Tcl builds and the ``.hwh`` describes."""

    params: Params = regmap.DEFAULT
    part: str = "xc7z020clg400-1"
    board_pattern: str = "tul.com.tw:pynq-z2:part0:*"
    fclk_mhz: int = 100
    # S_AXI_HP0 and the DMA's memory-mapped side (MM2S and S2MM), as the stream: 64 bits (the
    # Zynq-7020's HP ports are 32 or 64 bits wide), so MM2S delivers a stream word a cycle
    hp_width: int = 64
    accel_instance: str = "temposplit_accel_0"
    accel_base: int = regmap.BASE_ADDRESS
    accel_range: int = regmap.SEGMENT_RANGE
    dma_instance: str = "axi_dma_0"
    dma_base: int = 0x40400000  # PYNQ's usual slot for the first AXI DMA
    dma_range: int = 0x10000
    dma_length_width: int = 26  # c_sg_length_width: transfers up to 2^26 - 1 bytes (the default 14 caps at 16 KB)
    ddr_range: int = 0x20000000  # the PYNQ-Z2's 512 MB, seen by the DMA through HP0
    bd_name: str = "temposplit_bd"

    @property
    def stream_width(self) -> int:
        return 8 * self.params.lanes

    @property
    def vlnv(self) -> tuple[str, str, str, str]:
        vendor, library, name, version = regmap.VLNV.split(":")
        return vendor, library, name, version

    @property
    def address_block_range(self) -> int:
        # Vivado's smallest segment is 4 KiB; the register window (256 bytes) sits at its start.
        return max(4096, 1 << regmap.ADDRESS_BITS)


DEFAULT_DESIGN = Design()


# ----------------------------------------------------------------------------- Verilog


def shell_verilog(design: Design = DEFAULT_DESIGN) -> str:
    """The IP's top: Xilinx port names, X_INTERFACE attributes, active-low reset."""
    lanes = design.params.lanes
    aw = regmap.ADDRESS_BITS
    axil = [  # (port, direction, width) of the AXI4-Lite slave, as the core names them
        ("awaddr", "input", aw),
        ("awprot", "input", 3),
        ("awvalid", "input", 1),
        ("awready", "output", 1),
        ("wdata", "input", 32),
        ("wstrb", "input", 4),
        ("wvalid", "input", 1),
        ("wready", "output", 1),
        ("bresp", "output", 2),
        ("bvalid", "output", 1),
        ("bready", "input", 1),
        ("araddr", "input", aw),
        ("arprot", "input", 3),
        ("arvalid", "input", 1),
        ("arready", "output", 1),
        ("rdata", "output", 32),
        ("rresp", "output", 2),
        ("rvalid", "output", 1),
        ("rready", "input", 1),
    ]

    def stream(direction_in: bool):
        i, o = ("input", "output") if direction_in else ("output", "input")
        return [("tdata", i, 8 * lanes), ("tkeep", i, lanes), ("tlast", i, 1), ("tvalid", i, 1), ("tready", o, 1)]

    ports, conns = [], []

    def decl(direction, width, name):
        rng = f"[{width - 1}:0] " if width > 1 else ""
        return f"{direction} wire {rng}{name}"

    ports.append(
        '  (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 aclk CLK" *)\n'
        '  (* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axil:s_axis:m_axis, ASSOCIATED_RESET aresetn" *)\n'
        f"  {decl('input', 1, 'aclk')}"
    )
    ports.append(
        '  (* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 aresetn RST" *)\n'
        '  (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)\n'
        f"  {decl('input', 1, 'aresetn')}"
    )
    for bus, vlnv, sigs in (
        ("s_axil", "xilinx.com:interface:aximm:1.0", axil),
        ("s_axis", "xilinx.com:interface:axis:1.0", stream(True)),
        ("m_axis", "xilinx.com:interface:axis:1.0", stream(False)),
    ):
        for k, (sig, direction, width) in enumerate(sigs):
            attr = f'  (* X_INTERFACE_INFO = "{vlnv} {bus} {sig.upper()}" *)\n'
            if bus == "s_axil" and k == 0:
                attr += (
                    f'  (* X_INTERFACE_PARAMETER = "PROTOCOL AXI4LITE, DATA_WIDTH 32, ADDR_WIDTH {aw}, '
                    f'READ_WRITE_MODE READ_WRITE" *)\n'
                )
            ports.append(f"{attr}  {decl(direction, width, f'{bus}_{sig}')}")
            conns.append(f"    .{bus}__{sig}({bus}_{sig})")
    return (
        "// Generated by `python -m temposplit.hw.vivado` from hw/regmap.py -- do not edit.\n"
        f"// The packaged IP's top: Xilinx port names and interface attributes around the Amaranth core\n"
        f"// ({CORE_NAME}: synchronous active-high reset, AXI ports named <bus>__<signal>).\n"
        f"module {SHELL_NAME} (\n" + ",\n".join(ports) + "\n);\n"
        f"  {CORE_NAME} core (\n    .clk(aclk),\n    .rst(~aresetn),\n" + ",\n".join(conns) + "\n  );\n"
        "endmodule\n"
    )


def core_verilog(design: Design = DEFAULT_DESIGN) -> str:
    from temposplit.hw.generate import verilog

    return verilog(design.params, CORE_NAME)


# ----------------------------------------------------------------------------- Tcl


def tcl_settings(design: Design = DEFAULT_DESIGN) -> str:
    vendor, library, name, version = design.vlnv
    d = design
    settings = [
        ("tsp_part", d.part),
        ("tsp_board_pattern", d.board_pattern),
        ("tsp_fclk_mhz", d.fclk_mhz),
        ("tsp_hp_width", d.hp_width),
        ("tsp_stream_width", d.stream_width),
        ("tsp_ip_vendor", vendor),
        ("tsp_ip_library", library),
        ("tsp_ip_name", name),
        ("tsp_ip_version", version),
        ("tsp_ip_vlnv", regmap.VLNV),
        ("tsp_ip_block_range", d.address_block_range),
        ("tsp_accel_instance", d.accel_instance),
        ("tsp_accel_base", f"0x{d.accel_base:08X}"),
        ("tsp_accel_range", f"0x{d.accel_range:08X}"),
        ("tsp_dma_instance", d.dma_instance),
        ("tsp_dma_base", f"0x{d.dma_base:08X}"),
        ("tsp_dma_range", f"0x{d.dma_range:08X}"),
        ("tsp_dma_length_width", d.dma_length_width),
        ("tsp_ddr_range", f"0x{d.ddr_range:08X}"),
        ("tsp_bd", d.bd_name),
        ("tsp_overlay", OVERLAY),
        ("tsp_core_name", CORE_NAME),
        ("tsp_shell_name", SHELL_NAME),
    ]
    width = max(len(k) for k, _ in settings)
    lines = [
        "# Generated by `python -m temposplit.hw.vivado` from hw/regmap.py and hw/vivado.py -- do not edit.",
        f"# Accelerator build: lanes={d.params.lanes}, ref_bytes={d.params.ref_bytes}, "
        f"block_bytes={d.params.block_bytes}; registers: {len(regmap.REGISTERS)} in a "
        f"{1 << regmap.ADDRESS_BITS}-byte window.",
        "# Run: vivado -mode batch -source build.tcl [-tclargs <folder for temposplit.bit and .hwh>]",
        "",
    ]
    lines += [f"set {k:<{width}} {v}" for k, v in settings]
    return "\n".join(lines) + "\n"


def build_tcl(design: Design = DEFAULT_DESIGN) -> str:
    return tcl_settings(design) + "\n" + TEMPLATE.read_text()


# ----------------------------------------------------------------------------- .hwh


def hwh(design: Design = DEFAULT_DESIGN) -> str:
    """The overlay description the block design produces, in Vivado's ``.hwh`` dialect (the
    subset PYNQ reads: modules, their VLNV and parameters, the PS7's memory map, the stream
    connections), generated from the register map: the fixture of ``sim/test_pynq.py`` and
    the reference :func:`check_hwh` compares a real one with."""
    d = design
    ps_params = {
        "PCW_FPGA0_PERIPHERAL_FREQMHZ": d.fclk_mhz,
        "PCW_USE_M_AXI_GP0": 1,
        "PCW_USE_S_AXI_HP0": 1,
        "PCW_S_AXI_HP0_DATA_WIDTH": d.hp_width,
    }
    dma_params = {
        "c_include_sg": 0,
        "c_sg_length_width": d.dma_length_width,
        "c_include_mm2s": 1,
        "c_include_s2mm": 1,
        "c_include_mm2s_dre": 0,
        "c_include_s2mm_dre": 0,
        "c_micro_dma": 0,
        "c_addr_width": 32,
        "c_m_axi_mm2s_data_width": d.hp_width,
        "c_m_axis_mm2s_tdata_width": d.stream_width,
        "c_m_axi_s2mm_data_width": d.hp_width,
        "c_s_axis_s2mm_tdata_width": d.stream_width,
        "c_mm2s_burst_size": 16,
        "c_s2mm_burst_size": 16,
    }

    def params_xml(p, indent="      "):
        return "\n".join(f'{indent}  <PARAMETER NAME="{k}" VALUE="{v}"/>' for k, v in p.items())

    def memrange(instance, block, base, size, busif, memtype="REGISTER"):
        return (
            f'        <MEMRANGE ADDRESSBLOCK="{block}" BASENAME="C_BASEADDR" BASEVALUE="0x{base:08X}" '
            f'HIGHNAME="C_HIGHADDR" HIGHVALUE="0x{base + size - 1:08X}" INSTANCE="{instance}" '
            f'IS_DATA="TRUE" IS_INSTRUCTION="TRUE" INTERFACE="{busif}" MASTERBUSINTERFACE="M_AXI_GP0" '
            f'MEMTYPE="{memtype}" SLAVEBUSINTERFACE="{busif}"/>'
        )

    def busif(name, kind, busname, vlnv):
        return f'        <BUSINTERFACE BUSNAME="{busname}" NAME="{name}" TYPE="{kind}" VLNV="{vlnv}"/>'

    axis = "xilinx.com:interface:axis:1.0"
    aximm = "xilinx.com:interface:aximm:1.0"
    mm2s_bus = f"{d.dma_instance}_M_AXIS_MM2S"
    s2mm_bus = f"{d.accel_instance}_m_axis"
    accel_extra = (
        "  <PARAMETERS>\n"
        + params_xml(
            {"LANES": d.params.lanes, "REF_BYTES": d.params.ref_bytes, "BLOCK_BYTES": d.params.block_bytes}, indent="  "
        )
        + "\n  </PARAMETERS>\n  <BUSINTERFACES>\n"
        + "\n".join(
            b.replace("        ", "    ", 1)
            for b in (
                busif("s_axil", "SLAVE", "ps7_0_axi_periph_M01_AXI", aximm),
                busif("s_axis", "TARGET", mm2s_bus, axis),
                busif("m_axis", "INITIATOR", s2mm_bus, axis),
            )
        )
        + "\n  </BUSINTERFACES>\n"
    )
    fragment = regmap.hwh_fragment(d.params, base=d.accel_base)
    fragment = fragment.replace('INSTANCE="temposplit_accel_0"', f'INSTANCE="{d.accel_instance}"')
    fragment = fragment.replace('FULLNAME="/temposplit_accel_0"', f'FULLNAME="/{d.accel_instance}"')
    fragment = fragment.replace("</MODULE>\n", accel_extra + "</MODULE>\n")
    fragment = "\n".join("    " + line if line else line for line in fragment.splitlines())
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<!-- Generated by `python -m temposplit.hw.vivado` from hw/regmap.py: the description the PYNQ-Z2
     block design of build.tcl produces (the subset PYNQ reads), not written by Vivado. -->
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="0" VIVADOVERSION="generated">
  <SYSTEMINFO ARCH="zynq" DEVICE="7z020" NAME="{d.bd_name}" PACKAGE="clg400" SPEEDGRADE="-1"/>
  <MODULES>
    <MODULE FULLNAME="/processing_system7_0" INSTANCE="processing_system7_0" MODTYPE="processing_system7"
            VLNV="xilinx.com:ip:processing_system7:5.5">
      <PARAMETERS>
{params_xml(ps_params)}
      </PARAMETERS>
      <MEMORYMAP>
{memrange(d.dma_instance, "Reg", d.dma_base, d.dma_range, "S_AXI_LITE")}
{memrange(d.accel_instance, "reg0", d.accel_base, d.accel_range, "s_axil")}
      </MEMORYMAP>
    </MODULE>
    <MODULE FULLNAME="/{d.dma_instance}" INSTANCE="{d.dma_instance}" MODTYPE="axi_dma" VLNV="xilinx.com:ip:axi_dma:7.1">
      <PARAMETERS>
{params_xml(dma_params)}
      </PARAMETERS>
      <BUSINTERFACES>
{busif("S_AXI_LITE", "SLAVE", "ps7_0_axi_periph_M00_AXI", aximm)}
{busif("M_AXIS_MM2S", "INITIATOR", mm2s_bus, axis)}
{busif("S_AXIS_S2MM", "TARGET", s2mm_bus, axis)}
      </BUSINTERFACES>
    </MODULE>
{fragment}
  </MODULES>
</EDKSYSTEM>
"""


def check_hwh(path: Path, design: Design = DEFAULT_DESIGN) -> list[str]:
    """What a ``.hwh`` (Vivado's or :func:`hwh`'s) gets wrong about the design: the
    accelerator's VLNV, base address and range and the DMA's length width (empty: all good)."""
    root = ET.parse(path).getroot()
    problems = []
    mods = {m.get("INSTANCE"): m for m in root.iter("MODULE")}
    accel, dma = mods.get(design.accel_instance), mods.get(design.dma_instance)
    if accel is None or accel.get("VLNV") != regmap.VLNV:
        problems.append(f"no {design.accel_instance} with VLNV {regmap.VLNV}")
    if dma is None:
        problems.append(f"no {design.dma_instance}")
    else:
        width = {p.get("NAME").lower(): p.get("VALUE") for p in dma.iter("PARAMETER")}.get("c_sg_length_width")
        if width is None or int(width) != design.dma_length_width:
            problems.append(f"{design.dma_instance}: c_sg_length_width {width}, not {design.dma_length_width}")
    ranges = [r for r in root.iter("MEMRANGE") if r.get("INSTANCE") == design.accel_instance]
    if not ranges:
        problems.append(f"no address range for {design.accel_instance}")
    for r in ranges:
        base, high = int(r.get("BASEVALUE"), 16), int(r.get("HIGHVALUE"), 16)
        if base != design.accel_base or high - base + 1 != design.accel_range:
            problems.append(
                f"{design.accel_instance} at 0x{base:08X}..0x{high:08X}, the register map says "
                f"0x{design.accel_base:08X} + 0x{design.accel_range:X}"
            )
    return problems


# ----------------------------------------------------------------------------- the command


def write_all(out: Path, design: Design = DEFAULT_DESIGN) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        f"{CORE_NAME}.v": core_verilog(design),
        f"{SHELL_NAME}.v": shell_verilog(design),
        "build.tcl": build_tcl(design),
        f"{OVERLAY}.hwh.expected": hwh(design),
        "regmap.json": regmap.address_map_json(design.params),
    }
    from temposplit.hw.generate import write_files

    return write_files(out, files)


def bitstreams_default() -> Path:
    """A source checkout's ``bitstreams/pynq-z2`` (docs/pynq-z2.md); installed from a wheel,
    ``bitstreams/pynq-z2`` under the current folder, as ``--out``, never inside the package."""
    from temposplit.model.data import source_checkout

    return (source_checkout() or Path()) / "bitstreams" / "pynq-z2"


def bitstreams_folder(ap, path: Path) -> Path:
    """``--bitstreams``, made, and a file written and removed in it, before Vivado starts (its
    flow makes the folder only at the end, after the bitstream): a file there, or above it,
    or a folder that takes no file, is the parser's one line (exit status 2)."""
    from temposplit.files import file_in_the_way, probe_writable
    from temposplit.hw.generate import output_error

    blocker = file_in_the_way(path)
    if blocker is not None:
        what = "a file, not a folder" if blocker == path else f"under a file ({blocker} is a file)"
        ap.exit(2, f"{ap.prog}: error: --bitstreams {path} is {what}\n")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_writable(path)
    except OSError as exc:
        output_error(ap, path, exc)
    return path


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m temposplit.hw.vivado", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/vivado"), help="folder for the Verilog and Tcl")
    ap.add_argument(
        "--bitstreams",
        type=Path,
        default=bitstreams_default(),
        help="where the flow copies temposplit.bit and temposplit.hwh (default: a checkout's "
        "bitstreams/pynq-z2, else that folder under the current one)",
    )
    ap.add_argument("--jobs", type=int, default=4, help="Vivado run jobs")
    ap.add_argument("--tcl-only", action="store_true", help="write the files and stop (exit 0)")
    args = ap.parse_args(argv)
    if args.jobs < 1:  # Vivado's launch_runs would refuse it after the files are written
        ap.error(f"--jobs must be 1 or more, not {args.jobs}")
    from temposplit.hw.generate import output_error, output_folder, require_hw_extra

    require_hw_extra(ap)
    vivado = None if args.tcl_only else shutil.which("vivado")
    if vivado is not None:  # the flow's last step copies into it: checked before anything is built
        bitdir = bitstreams_folder(ap, args.bitstreams.resolve())
    output_folder(ap, args.out)
    try:
        write_all(args.out)
    except OSError as exc:
        output_error(ap, args.out, exc)
    tcl = (args.out / "build.tcl").resolve()
    print(f"wrote {args.out}/ (build.tcl, Verilog, expected .hwh)")
    if args.tcl_only:
        return 0
    if vivado is None:
        print(
            f"error: vivado is not on PATH; wrote {tcl}: run `vivado -mode batch -source build.tcl` in "
            f"{tcl.parent} on a machine with Vivado 2022.1+ and copy bitstream/temposplit.{{bit,hwh}} to "
            f"{args.bitstreams}",
            file=sys.stderr,
        )
        return 2
    cmd = [
        vivado,
        "-mode",
        "batch",
        "-nojournal",
        "-log",
        str(tcl.parent / "vivado.log"),
        "-source",
        str(tcl),
        "-tclargs",
        str(bitdir),
        str(args.jobs),
    ]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=tcl.parent).returncode
    if rc:
        print(f"error: the Vivado flow failed (exit {rc}); see {tcl.parent / 'vivado.log'}", file=sys.stderr)
        return rc
    problems = check_hwh(bitdir / f"{OVERLAY}.hwh")
    if problems:
        print("error: the overlay's .hwh disagrees with the register map: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"{bitdir / (OVERLAY + '.bit')} and .hwh written; the .hwh matches the register map")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
