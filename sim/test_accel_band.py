"""pytest wrappers: BAND_MOTION's cocotb tests of ``tb_accel.py`` on a build whose on-chip
reference is 16 KiB (maps of a few tens of kB take BAND_MOTION), and the on-chip MOTION of
small maps on the same build (the narrow reads of the shared wide reference RAM)."""

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

BAND_TESTS = ["test_band_random", "test_band_cycles", "test_band_reset_and_fixtures", "test_motion_small"]


@pytest.mark.parametrize("testcase", BAND_TESTS)
def test_band(band_build, testcase):
    band_build.run(testcase)
