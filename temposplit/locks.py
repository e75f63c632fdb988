"""One run at a time per folder: a lock file held (``flock``) while a command writes there."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path

from temposplit.errors import ConfigError


@contextlib.contextmanager
def only_run(lock: Path, busy: str):
    """Hold ``lock`` for the block; when another process holds it, a :class:`ConfigError`
    saying ``busy``. The lock goes with the process, however it ends; the file stays
    (removing it would race a second run waiting to take it)."""
    try:
        f = open(lock, "a")  # noqa: SIM115 - held for the block
    except OSError as exc:
        raise ConfigError(f"cannot write {lock.parent}: {exc.strerror or exc}") from exc
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(busy) from None
        yield
