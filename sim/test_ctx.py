"""pytest wrapper: the cocotb tests of ``tb_ctx.py`` on Verilator builds of the v2 coder
(``hw/ctx_coder.py``): the anchor section (``AnchorCoder``), any section from value
records (``ValueCoder``) and two such sections at once (``DualValueCoder``), cached under
build/sim."""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

BUILD_ROOT = Path(__file__).resolve().parent.parent / "build" / "sim"
TOPS = {
    "ctx_anchor_coder": "AnchorCoder",
    "ctx_value_coder": "ValueCoder",
    "ctx_dual_value_coder": "DualValueCoder",
}


@pytest.fixture(scope="session")
def ctx_builds():
    pytest.importorskip("amaranth")
    pytest.importorskip("cocotb_tools.runner")
    from temposplit.hw.simbridge import tool_env

    tool_env()
    return {}


def _build(builds, toplevel):
    if toplevel not in builds:
        from amaranth.back import verilog

        from temposplit.hw import ctx_coder
        from temposplit.hw.simbridge import verilate

        top = getattr(ctx_coder, TOPS[toplevel])()
        builds[toplevel] = verilate(verilog.convert(top, name=toplevel, emit_src=False), toplevel, BUILD_ROOT)
    return builds[toplevel]


@pytest.mark.parametrize(
    "toplevel,testcase",
    [
        ("ctx_anchor_coder", t)
        for t in (
            "test_ctx_random",
            "test_ctx_fixtures",
            "test_ctx_vectors",
            "test_ctx_reset_midstream",
            "test_ctx_throughput",
        )
    ]
    + [
        ("ctx_value_coder", t)
        for t in ("test_values_random", "test_values_preset", "test_values_reset_midstream", "test_values_throughput")
    ]
    + [
        ("ctx_dual_value_coder", t)
        for t in (
            "test_dual_values_random",
            "test_dual_values_preset",
            "test_dual_values_reset_midstream",
            "test_dual_values_throughput",
        )
    ],
)
def test_ctx(ctx_builds, toplevel, testcase):
    from cocotb_tools.runner import get_results

    runner, bdir = _build(ctx_builds, toplevel)
    xml = runner.test(
        test_module="tb_ctx",
        hdl_toplevel=toplevel,
        testcase=testcase,
        build_dir=bdir,
        test_dir=bdir / f"run-{testcase}",
        results_xml=str(bdir / f"run-{testcase}" / "results.xml"),
    )
    total, failed = get_results(Path(xml))
    assert total >= 1, f"cocotb ran no test named {testcase}"
    assert failed == 0, f"cocotb test {testcase} failed (log under {bdir})"
