"""Writing an output file whole or not at all: under a temporary name beside it, renamed
over it once complete (``encode``, ``decode``, ``features``, ``models export-m1``);
whether a folder takes files at all, asked before a long job writes there; and a file's
content digest, which names what was computed from it (the evaluation's clips); and the
folders kept under the user's home (the model cache, the edge's resume state)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from temposplit.errors import ConfigError


@contextlib.contextmanager
def output_file(path: str):
    """A binary file that becomes ``path`` only when the block completes: it is written
    beside ``path`` under a temporary name and renamed over it, or removed on an error, so a
    failure never truncates or half-writes ``path``. A ``path`` that exists and is not a
    regular file (``/dev/null``, a FIFO) is written directly."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(path, "wb") as f:
            yield f
        return
    target = os.path.realpath(path)  # through a symbolic link: the link stays
    folder, base = os.path.split(target)
    short = base.encode()[:100].decode(errors="ignore")  # a name of at most 255 bytes, whatever its script
    tmp = os.path.join(folder, f".{short}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if st is not None:
                os.chmod(tmp, stat.S_IMODE(st.st_mode))  # the replaced file's permissions
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def user_folder(env: str, default: tuple[str, ...], what: str, flag: str = "") -> Path:
    """``$env`` (``~`` expanded), else ``~/<default...>``; no home folder for this user id is a
    :class:`ConfigError` naming ``what`` the folder is for and how to give one."""
    given = os.environ.get(env)
    if given:
        return Path(os.path.expanduser(given))
    try:
        return Path.home().joinpath(*default)
    except RuntimeError:  # no $HOME and no home folder for this user id
        raise ConfigError(f"no home folder for {what}: set {env}{flag or ' (or HOME)'}") from None


def file_in_the_way(path) -> Path | None:
    """The file that keeps ``path`` from being a folder (an output folder to write into):
    ``path`` itself, or the nearest existing path above it, being a file; None where ``path``
    is a folder or can be made one."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def probe_writable(folder) -> None:
    """Make and remove a file in ``folder``: an OSError if it takes none. ``os.access``
    cannot tell (root passes it on a read-only mount)."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    os.close(fd)
    os.unlink(probe)


_digests: dict[tuple, str] = {}


def content_digest(path) -> str:
    """SHA-256 of a file's bytes, hex: what identifies a clip whose results are kept (two
    files of one name and size are two clips). Remembered in this process while the
    file's size and modification time stay the same (a 1 GB clip reads in a few seconds)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]
