"""SIGTERM stops a command as Ctrl-C does.

Python turns SIGINT into KeyboardInterrupt, so ``finally`` blocks and context managers
run on the way out: temporary files are removed, a started server is stopped, a report
is left whole. SIGTERM (a service manager, ``timeout``, ``kill``) has no such default: it
ended the process where it stood. :func:`terminated_as_interrupt` raises
:class:`Terminated`, a KeyboardInterrupt, in its place, and the CLI (``temposplit.cli``)
answers it with one line, "<command>: terminated", and exit status 143 (128 + SIGTERM,
what a shell reports for a program SIGTERM ended). Commands that stop more gently on a
signal put their own handler in place while they run and give this one back after:
``edge`` and ``demo`` end their stream after the current frame (then 130 or 143), ``serve``
closes every session's files and exits 0.

A signal can land inside a library's own bookkeeping (llvmlite half way through building a
reference while numba compiles, say). That object's ``__del__`` then fails when the
interpreter tears it down, and Python prints an "Exception ignored in ..." traceback after
the command's one line. :func:`quiet_teardown` drops those reports: the command has said
why it ended, and what the signal left half made is going away with the process.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

TERMINATED = 128 + signal.SIGTERM  # the exit status


def quiet_teardown() -> None:
    """From here to the process's exit, exceptions raised where Python cannot raise them
    (``__del__`` and weakref callbacks, reported through :data:`sys.unraisablehook`) are
    dropped. For a command that a signal ended and that has printed its one line."""
    sys.unraisablehook = _drop_unraisable


def _drop_unraisable(unraisable) -> None:
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as an interrupt."""


@contextlib.contextmanager
def terminated_as_interrupt():
    """SIGTERM raises :class:`Terminated` while the block runs (in the main thread, where
    signal handlers run; a SIGTERM the process was started ignoring stays ignored)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return

    def terminate(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
