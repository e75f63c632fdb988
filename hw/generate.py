"""Verilog and interface files of the accelerator: ``python -m temposplit.hw.generate --out build/verilog``.

Writes ``temposplit_accel.v`` (the Amaranth top), and from the register map
(:mod:`temposplit.hw.regmap`): ``regmap.json`` (the address map for the Vivado flow and
tools), ``temposplit_regs.h`` (C header) and ``temposplit_accel.hwh.xml`` (the
accelerator's MODULE entry in PYNQ's .hwh dialect).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from temposplit.cli import OneLineParser
from temposplit.hw import regmap
from temposplit.hw.regmap import Params

TOP_NAME = "temposplit_accel"


def verilog(params: Params = regmap.DEFAULT, name: str = TOP_NAME) -> str:
    from amaranth.back import verilog as back

    from temposplit.hw.top import Accelerator

    return back.convert(Accelerator(params), name=name, emit_src=False)


def write_all(out: Path, params: Params = regmap.DEFAULT, name: str = TOP_NAME) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        f"{name}.v": verilog(params, name),
        "regmap.json": regmap.address_map_json(params),
        "temposplit_regs.h": regmap.c_header(params),
        f"{name}.hwh.xml": regmap.hwh_fragment(params),
        "regmap.md": regmap.markdown(),
    }
    return write_files(out, files)


def write_files(out: Path, files: dict[str, str]) -> list[Path]:
    """Write generated text files into ``out``; returns their paths."""
    paths = []
    for fname, text in files.items():
        p = out / fname
        p.write_text(text)
        paths.append(p)
    return paths


def add_params_arguments(ap: argparse.ArgumentParser) -> None:
    """The build parameters (the run-time maxima) as command-line options."""
    ap.add_argument(
        "--ref-bytes",
        type=int,
        default=regmap.DEFAULT.ref_bytes,
        help="the on-chip reference RAM in bytes, lanes times a power of two (default %(default)s)",
    )
    ap.add_argument(
        "--block-bytes",
        type=int,
        default=regmap.DEFAULT.block_bytes,
        help="the block buffer in bytes, lanes times a power of two (default %(default)s)",
    )
    ap.add_argument(
        "--ctx-engines", type=int, default=regmap.DEFAULT.ctx_engines, help="CTX range coders for slices (1..4)"
    )


def params_from_arguments(args, parser: argparse.ArgumentParser | None = None) -> Params:
    """The build's parameters; with ``parser``, a value :class:`Params` refuses is the
    parser's one-line usage error (exit status 2), not a traceback."""
    try:
        return Params(ref_bytes=args.ref_bytes, block_bytes=args.block_bytes, ctx_engines=args.ctx_engines)
    except ValueError as exc:
        if parser is None:
            raise
        parser.error(str(exc))


def require_hw_extra(parser: argparse.ArgumentParser) -> None:
    """Amaranth (the 'hw' extra) importable, or the parser's one line and exit status 2, the
    line ``temposplit bench fabric`` gives (:func:`temposplit.cli._missing_extra`), before
    anything is written."""
    from temposplit.cli import _missing_extra

    try:
        import amaranth  # noqa: F401
    except ModuleNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {_missing_extra(exc) or exc}\n")


def output_error(parser: argparse.ArgumentParser, out: Path, exc: OSError):
    """An output folder that cannot be made or written: the parser's one line (exit 2), not a traceback."""
    where = exc.filename if exc.filename is not None else out
    parser.exit(2, f"{parser.prog}: error: {where}: {exc.strerror or exc}\n")


def output_folder(parser: argparse.ArgumentParser, out: Path) -> Path:
    """Make the ``--out`` folder (and its parents), or exit with :func:`output_error`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        output_error(parser, out, exc)
    return out


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m temposplit.hw.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/verilog", type=Path)
    add_params_arguments(ap)
    args = ap.parse_args(argv)
    params = params_from_arguments(args, ap)
    require_hw_extra(ap)
    output_folder(ap, args.out)
    try:
        paths = write_all(args.out, params)
    except OSError as exc:
        output_error(ap, args.out, exc)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
