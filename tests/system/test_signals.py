"""SIGTERM stops any temposplit command as Ctrl-C does (temposplit/signals.py): one line,
"<command>: terminated", exit status 143, and what the command cleans up on the way out
(temporary files, started servers) is cleaned up. Before, a command without its own handler
ended where it stood, status -15, with no line."""

import signal
import subprocess
import sys

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
