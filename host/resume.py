"""A stream's resume token, kept on disk while the stream runs.

The server gives a new stream a token (docs/protocol.md, "A stream belongs to its client")
and accepts a resume only with it. An edge that keeps the token in memory alone loses it
when its process ends (a crash, the board's power cut, a service manager's restart), and
its stream's name is then refused for the server's resume window (600 s). So the edge
writes the token, with what must match for a resume (the stream header's digest and the
source), into ``<folder>/<server and stream>.json`` once the server welcomes a new stream,
and removes it once the server confirms the stream's end. A rerun of the same command finds
it and resumes the stream where the server's record of it ends.

A lock beside the file (``.lock``, held while the edge runs) keeps a second edge on the same
machine from resuming, and so taking over, a stream that another edge is still sending.

The token is what the stream's ownership rests on (without mutual TLS): the folder is made
for its user alone (0700) and the file written so (0600), never readable by other users.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from temposplit.errors import ConfigError

FORMAT = 1
FOLDER_MODE, FILE_MODE = 0o700, 0o600  # the token: its user's alone


def state_folder(folder: str | None = None) -> Path:
    """``folder``, else ``$TEMPOSPLIT_STATE``, else ``~/.local/state/temposplit/edge``."""
    from temposplit.files import user_folder

    if folder:
        return Path(os.path.expanduser(folder))
    return user_folder(
        "TEMPOSPLIT_STATE", (".local", "state", "temposplit", "edge"), "the edge's resume state", " or give --state"
    )


class ResumeState:
    """The resume token of stream ``stream`` on server ``server`` ("host:port") in ``folder``."""

    def __init__(self, folder: Path, server: str, stream: str):
        self.server, self.stream = server, stream
        name = hashlib.sha256(f"{server}\0{stream}".encode()).hexdigest()[:24]
        self.path = Path(folder) / f"{name}.json"
        self._lock = None

    def acquire(self) -> None:
        """Hold the stream's lock while the edge runs; a second edge here is refused."""
        try:
            self._make_folder()
            lock = open(self.path.with_suffix(".lock"), "a")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise ConfigError(f"{self.path.parent}: cannot keep the resume state ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise ConfigError(
                f"another edge on this machine is sending stream {self.stream!r} to {self.server}"
            ) from None
        self._lock = lock

    def _make_folder(self) -> None:
        """The state folder, made for its user alone where it is missing (one given that
        exists keeps its mode: its files are written 0600)."""
        self.path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # (the lock file stays: removing it would race a waiting edge)
            self._lock = None

    def read(self) -> dict | None:
        """The saved state, or None (none, or not one this version wrote: a new stream then)."""
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        fields = ("format", "server", "stream", "token", "header_sha256", "source")
        if not isinstance(state, dict) or any(not isinstance(state.get(k), (str, int)) for k in fields):
            return None
        if state["format"] != FORMAT or (state["server"], state["stream"]) != (self.server, self.stream):
            return None
        return state

    def save(self, token: str, header_sha256: str, source: str) -> None:
        """Keep the token (``files.output_file``: never half a file)."""
        state = {
            "format": FORMAT,
            "server": self.server,
            "stream": self.stream,
            "token": token,
            "header_sha256": header_sha256,
            "source": source,
        }
        from temposplit.files import output_file

        try:
            self._make_folder()
            with output_file(str(self.path)) as f:
                os.fchmod(f.fileno(), FILE_MODE)  # the temporary file, before the token is in it
                f.write(json.dumps(state).encode())
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot keep the stream's resume token ({exc.strerror or exc})") from exc

    def clear(self) -> None:
        """The stream is finished (or gone from the server): nothing to resume."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def source_identity(path: str) -> str:
    """What a resume must read again: the file (its real path and size), a camera's device,
    or a network source's URL with its credentials redacted (``host.sources.redact``: the
    state file never holds them; the same camera with another password resumes its stream)."""
    from temposplit.host.sources import is_url, redact

    if is_url(path):
        return redact(path)
    try:
        st = os.stat(path)
    except OSError:
        return path
    if os.path.isfile(path):
        return f"{os.path.realpath(path)} ({st.st_size} bytes)"
    return os.path.realpath(path)
