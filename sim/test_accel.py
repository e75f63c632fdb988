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
]


@pytest.mark.parametrize("testcase", TESTS)
def test_accel(accel_build, testcase):
    accel_build.run(testcase)
