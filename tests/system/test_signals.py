"""SIGTERM stops any temposplit command as Ctrl-C does (temposplit/signals.py): one line,
"<command>: terminated", exit status 143, and what the command cleans up on the way out
(temporary files, started servers) is cleaned up. Before, a command without its own handler
ended where it stood, status -15, with no line."""

import signal
import subprocess
import sys

import pytest

from temposplit.signals import Terminated, terminated_as_interrupt


def test_sigterm_ends_a_command_with_one_line_and_status_143(tmp_path):
    shapes = ",".join(["16x32x32"] * 400)  # a few seconds of work, one JSON line a shape
    argv = [sys.executable, "-m", "temposplit", "bench", "codec", "--json", "--no-ssd", "--frames", "2"]
    p = subprocess.Popen([*argv, "--shapes", shapes], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("{")  # working: stop it
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143 and err.splitlines() == ["temposplit bench codec: terminated"], (p.returncode, err)


def test_the_handler_goes_back_and_an_ignored_sigterm_stays_ignored():
    before = signal.getsignal(signal.SIGTERM)
    with terminated_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
        try:
            signal.raise_signal(signal.SIGTERM)
        except Terminated:
            raised = True
        else:
            raised = False
    assert raised and signal.getsignal(signal.SIGTERM) is before
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with terminated_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # nohup-style: left alone
    finally:
        signal.signal(signal.SIGTERM, before)


def test_serve_gives_back_the_signal_handlers_it_found(tmp_path, cloud_models):
    """The server's loop takes SIGTERM and SIGINT while it serves; asyncio's removal of its
    handlers left SIG_DFL, so a SIGTERM while the server closed down killed the process
    with no line: the handlers it found (the CLI's) are put back."""
    import threading

    from temposplit.server.server import CloudServer

    def mine(signum, frame):
        pass

    srv = CloudServer(out_dir=tmp_path / "out", models=cloud_models)
    before = signal.signal(signal.SIGTERM, mine)
    try:
        threading.Thread(target=srv.request_stop, daemon=True).start()  # once it has started
        srv.serve_forever()  # in the main thread, as `temposplit serve` runs it
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_second_sigterm_to_the_edge_is_terminated_not_interrupted():
    """The edge's first signal ends its stream after the current frame; a second one stops it
    at once, and for SIGTERM that is the CLI's "terminated", 143 (it said "interrupted", 130)."""
    import types

    from temposplit.host.cli import _stopped_by_signals

    edge = types.SimpleNamespace(stop=None)
    raised = None
    try:
        with _stopped_by_signals([edge]) as got:
            signal.raise_signal(signal.SIGTERM)
            assert edge.stop == "stopped by SIGTERM" and got == [signal.SIGTERM]
            signal.raise_signal(signal.SIGTERM)
    except KeyboardInterrupt as exc:  # (a plain one would otherwise stop pytest itself)
        raised = exc
    assert isinstance(raised, Terminated), repr(raised)


def test_board_emu_stopped_by_sigterm_unwinds_with_one_line(monkeypatch, capsys):
    """`make board-emu` (board/emu.py, its own entry point): SIGTERM ended it where it stood,
    leaving the `temposplit serve` it had started; it now unwinds through run's cleanup (which
    stops that server) and says so in one line, status 143."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "board" / "emu.py"  # a script, not a package module
    spec = importlib.util.spec_from_file_location("board_emu", script)
    emu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emu)
    unwound = []

    def run(args):
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            unwound.append(True)  # where run stops its server

    class Default(Exception):
        """What SIGTERM does here outside main's handling (in place of ending pytest's process)."""

    def default(signum, frame):
        raise Default

    monkeypatch.setattr(emu, "run", run)
    before = signal.signal(signal.SIGTERM, default)
    try:
        assert emu.main(["--frames", "1"]) == 143
    finally:
        signal.signal(signal.SIGTERM, before)
    assert unwound == [True] and capsys.readouterr().err.splitlines() == ["board-emu: terminated"]


def _command_ended_by(name: str, handler: str) -> subprocess.CompletedProcess:
    """Run the CLI in a new interpreter on a command whose handler is ``handler`` (Python
    source defining ``handler(args)``), the signal ``name`` its argument."""
    script = (
        "import argparse, os, signal, sys, time\n"
        "import temposplit.cli as cli\n"
        f"{handler}\n"
        "class Parser:\n"
        "    def parse_args(self, argv):\n"
        "        return argparse.Namespace(handler=handler, prog='temposplit x')\n"
        "cli.build_parser = Parser\n"
        "sys.exit(cli.main([]))\n"
    )
    return subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True, timeout=60)


_HALF_MADE = r"""
class HalfMade:  # a library object a signal stopped half way: its __del__ fails
    def __del__(self):
        raise AttributeError("no attribute '_as_parameter_'")

def handler(args):
    global kept
    kept = HalfMade()  # torn down at the interpreter's exit
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(30)
"""

SIGNALS = [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")]


@pytest.mark.parametrize(("name", "status", "line"), SIGNALS)
def test_a_library_object_the_signal_left_half_made_adds_no_traceback(name, status, line):
    p = _command_ended_by(name, _HALF_MADE)
    assert p.returncode == status and p.stderr.splitlines() == [f"temposplit x: {line}"], (p.returncode, p.stderr)


_WRAPPED = r"""
def handler(args):
    try:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(30)
    except KeyboardInterrupt as exc:  # as numba's dispatcher does when a kernel returns into the handler
        raise SystemError("CPUDispatcher(<function kernel>) returned a result with an exception set") from exc
"""


@pytest.mark.parametrize(("name", "status", "line"), SIGNALS)
def test_a_signal_a_library_wraps_in_another_exception_is_still_the_signals_line(name, status, line):
    # Before, numba's SystemError (the interrupt its cause) was reported as an internal error, status 1.
    p = _command_ended_by(name, _WRAPPED)
    assert p.returncode == status and p.stderr.splitlines() == [f"temposplit x: {line}"], (p.returncode, p.stderr)
