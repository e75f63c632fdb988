"""pytest wrapper: the cocotb tests of ``tb_ctx.py`` on a Verilator build of the v2
coder's anchor section (``hw/range_coder.py``), cached under build/sim."""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

TOPLEVEL = "ctx_anchor_coder"
BUILD_ROOT = Path(__file__).resolve().parent.parent / "build" / "sim"


@pytest.fixture(scope="session")
def ctx_build():
    pytest.importorskip("amaranth")
    pytest.importorskip("cocotb_tools.runner")
    from amaranth.back import verilog

    from temposplit.hw.range_coder import AnchorCoder
    from temposplit.hw.simbridge import tool_env, verilate

    tool_env()
    return verilate(verilog.convert(AnchorCoder(), name=TOPLEVEL, emit_src=False), TOPLEVEL, BUILD_ROOT)


@pytest.mark.parametrize(
    "testcase", ["test_ctx_random", "test_ctx_fixtures", "test_ctx_reset_midstream", "test_ctx_throughput"]
)
def test_ctx(ctx_build, testcase):
    from cocotb_tools.runner import get_results

    runner, bdir = ctx_build
    xml = runner.test(
        test_module="tb_ctx",
        hdl_toplevel=TOPLEVEL,
        testcase=testcase,
        build_dir=bdir,
        test_dir=bdir / f"run-{testcase}",
        results_xml=str(bdir / f"run-{testcase}" / "results.xml"),
    )
    total, failed = get_results(Path(xml))
    assert total >= 1, f"cocotb ran no test named {testcase}"
    assert failed == 0, f"cocotb test {testcase} failed (log under {bdir})"
