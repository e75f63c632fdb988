"""pytest wrappers: the cocotb tests of ``tb_accel.py`` on the SSD's real maps and largest
cuts, on the default build (the longest of the testbenches: a file of their own, so that
the parallel suite runs them beside the others)."""

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

TESTS = ["test_motion_ssd_large", "test_fixtures"]


@pytest.mark.parametrize("testcase", TESTS)
def test_accel_real(accel_build, testcase):
    accel_build.run(testcase)
