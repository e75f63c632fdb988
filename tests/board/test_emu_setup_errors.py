"""``make board-emu``'s setup errors (board/emu.py): an ``--out`` or ``--cache`` that is no
folder, and a cached armhf root that is broken, are one line and exit status 2 (the
status of "cannot be set up", the module's docstring), before anything is mounted, built
or emulated. Nothing here needs root, qemu or binfmt: the roots are fake folders and the
functions that would mount, build or emulate fail the test when reached."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("board_emu", Path(__file__).resolve().parents[2] / "board" / "emu.py")
emu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(emu)  # a script, not a module of the package

SUITE, URI = "bookworm", "http://deb.example/debian"


@pytest.fixture
def nothing_runs(monkeypatch):
    """binfmt, mmdebstrap, chroot and the guest: reaching any of them fails the test."""
    monkeypatch.setattr(emu, "debian_source", lambda: (URI, SUITE))
    monkeypatch.setattr(emu, "ensure_binfmt", lambda: pytest.fail("ensure_binfmt was reached"))
    monkeypatch.setattr(emu, "build_wheel", lambda dest: pytest.fail("the wheel was built"))
    monkeypatch.setattr(emu.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a[0] if a else k}"))
    monkeypatch.setattr(emu.subprocess, "Popen", lambda *a, **k: pytest.fail(f"started {a[0] if a else k}"))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("board-emu: error: "), err
    return err[0]


def _root_path(cache: Path) -> Path:
    """Where ensure_root looks for the cached root of SUITE from URI (nothing_runs' debian_source)."""
    key = emu.hashlib.sha1(emu.json.dumps([SUITE, URI, sorted(emu.PACKAGES)]).encode()).hexdigest()[:12]
    return cache / f"root-{SUITE}-{key}"


def _good_root(root: Path, *, packages=emu.PACKAGES, python_link="python3.11", numpy=True) -> Path:
    """The files of a built root that ensure_root reads: marker, dpkg status, env, python3, NumPy."""
    (root / "usr/bin").mkdir(parents=True)
    (root / ".complete").write_text("{}")
    (root / "var/lib/dpkg").mkdir(parents=True)
    stanzas = [f"Package: {p}\nStatus: install ok installed\nArchitecture: armhf\n" for p in packages]
    stanzas.append("Package: removed-one\nStatus: deinstall ok config-files\nDescription: gone\n more text: here\n")
    (root / "var/lib/dpkg/status").write_text("\n".join(stanzas))
    (root / "usr/bin/env").write_bytes(b"\x7fELF")
    (root / "usr/bin/python3.11").write_bytes(b"\x7fELF")
    os.symlink(python_link, root / "usr/bin/python3")
    if numpy:
        (root / "usr/lib/python3/dist-packages/numpy").mkdir(parents=True)
        (root / "usr/lib/python3/dist-packages/numpy/__init__.py").write_text("")
    return root


# ---------------------------------------------------------------------------- --out, --cache


def test_an_out_that_is_a_file_is_one_line_and_exit_2(tmp_path, nothing_runs, capsys):
    """`--out FILE` was a FileExistsError traceback and exit 1 (the status of a failed check)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert emu.main(["--out", str(afile), "--cache", str(tmp_path / "cache")]) == 2
    assert _error_line(capsys) == f"board-emu: error: --out {afile} is a file, not a folder"
    assert afile.read_text() == "x"


def test_an_out_under_a_file_is_one_line_and_exit_2(tmp_path, nothing_runs, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert emu.main(["--out", str(afile / "sub"), "--cache", str(tmp_path / "cache")]) == 2
    under = f"{afile / 'sub'} is under {afile}, which is a file, not a folder"
    assert _error_line(capsys) == f"board-emu: error: --out {under}"


def test_an_out_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, nothing_runs, monkeypatch, capsys):
    """mkdir's own OSError (no permission, a read-only file system) is the setup error too."""

    def refused(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(emu.Path, "mkdir", refused)
    out = tmp_path / "out"
    assert emu.main(["--out", str(out), "--cache", str(tmp_path / "cache")]) == 2
    assert _error_line(capsys) == f"board-emu: error: --out {out}: cannot make the folder (Permission denied)"


def test_a_cache_that_is_a_file_is_one_line_and_exit_2_before_binfmt(tmp_path, nothing_runs, capsys):
    """`--cache FILE` was a FileExistsError traceback from ensure_root, after binfmt_misc was set up."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert emu.main(["--out", str(tmp_path / "out"), "--cache", str(afile)]) == 2
    assert _error_line(capsys) == f"board-emu: error: {emu.CACHE_OPTION} {afile} is a file, not a folder"
    assert emu.main(["--out", str(tmp_path / "out"), "--cache", str(afile / "armhf")]) == 2
    under = f"{afile / 'armhf'} is under {afile}, which is a file, not a folder"
    assert _error_line(capsys) == f"board-emu: error: {emu.CACHE_OPTION} {under}"


def test_ensure_root_given_a_file_for_its_cache_raises_the_setup_error(tmp_path, nothing_runs):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(emu.SetupError, match="is a file, not a folder"):
        emu.ensure_root(afile)


# ---------------------------------------------------------------------------- the cached root


def test_a_cached_root_holding_only_its_marker_is_refused_with_how_to_rebuild_it(tmp_path, nothing_runs):
    """A root holding `.complete` alone was returned as good; the guest then failed in chroot
    (`/usr/bin/env`: no such file) with no word of the root."""
    cache = tmp_path / "cache"
    root = _root_path(cache)
    root.mkdir(parents=True)
    (root / ".complete").write_text("{}")
    with pytest.raises(emu.SetupError) as exc:
        emu.ensure_root(cache)
    msg = str(exc.value)
    assert f"the cached armhf root {root} is broken" in msg and f"rm -rf {root}" in msg, msg
    assert "python3, python3-numpy, libopenblas0-pthread" in msg and "\n" not in msg, msg


def test_a_broken_cached_root_is_one_line_and_exit_2(tmp_path, nothing_runs, monkeypatch, capsys):
    monkeypatch.setattr(emu, "ensure_binfmt", lambda: None)  # (mounts nothing here)
    cache = tmp_path / "cache"
    root = _good_root(_root_path(cache), numpy=False)
    assert emu.main(["--out", str(tmp_path / "out"), "--cache", str(cache)]) == 2
    line = _error_line(capsys)
    assert f"the cached armhf root {root} is broken (/usr/lib/python3/dist-packages/numpy/__init__.py is missing)" in (
        line
    )
    assert f"rm -rf {root}" in line


def test_a_complete_cached_root_is_used_as_it_is(tmp_path, nothing_runs):
    cache = tmp_path / "cache"
    root = _good_root(_root_path(cache))
    assert emu.ensure_root(cache) == root


def test_an_absolute_link_in_the_root_is_followed_inside_the_root(tmp_path, nothing_runs):
    """`/usr/bin/python3 -> /usr/bin/python3.11` names the root's python, not the host's."""
    cache = tmp_path / "cache"
    root = _good_root(_root_path(cache), python_link="/usr/bin/python3.11")
    assert emu.ensure_root(cache) == root
    (root / "usr/bin/python3").unlink()
    os.symlink("/bin/sh", root / "usr/bin/python3")  # on the host, not in the root
    with pytest.raises(emu.SetupError, match=r"\(/usr/bin/python3 is missing\)"):
        emu.ensure_root(cache)


@pytest.mark.parametrize("status", ["deinstall ok config-files", "install ok half-configured"])
def test_a_package_dpkg_does_not_record_as_installed_makes_the_root_broken(tmp_path, nothing_runs, status):
    cache = tmp_path / "cache"
    root = _good_root(_root_path(cache), packages=("python3", "libopenblas0-pthread"))
    with open(root / "var/lib/dpkg/status", "a") as f:
        f.write(f"\nPackage: python3-numpy\nStatus: {status}\n")
    with pytest.raises(emu.SetupError, match=r"dpkg does not record python3-numpy as installed"):
        emu.ensure_root(cache)
