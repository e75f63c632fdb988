"""pytest wrappers: each cocotb test of ``tb_accel.py`` on the default build (one
Verilator build per session)."""

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

TESTS = [
    "test_registers",
    "test_requantize",
    "test_encode_random",
    "test_motion_small",
    "test_motion_ssd_shape",
    "test_motion_ssd_large",
    "test_reset_midstream",
    "test_group_through_driver",
    "test_fixtures",
    "test_ctx_anchor",
    "test_ctx_cycles",
]


BAND_TESTS = ["test_band_random", "test_band_cycles", "test_band_reset_and_fixtures", "test_motion_small"]


@pytest.mark.parametrize("testcase", TESTS)
def test_accel(accel_build, testcase):
    accel_build.run(testcase)


@pytest.mark.parametrize("testcase", BAND_TESTS)
def test_band(band_build, testcase):
    """BAND_MOTION on a build whose on-chip reference is 16 KiB (and the on-chip MOTION of
    small maps on the same build: the narrow reads of the shared wide reference RAM)."""
    band_build.run(testcase)
