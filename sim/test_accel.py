"""pytest wrappers: the cocotb tests of ``tb_accel.py`` on the default build (one Verilator
build per design, cached under build/sim). The ones on real SSD shapes are in
``test_accel_real.py`` and BAND_MOTION's in ``test_accel_band.py``: three files that the parallel
suite hands to different workers."""

import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

TESTS = [
    "test_registers",
    "test_requantize",
    "test_overlong_input",
    "test_encode_random",
    "test_histogram",
    "test_motion_small",
    "test_motion_ssd_shape",
    "test_reset_midstream",
    "test_group_through_driver",
    "test_ctx_anchor",
    "test_ctx_records",
    "test_ctx_cycles",
    "test_ctx_slices",
]


@pytest.mark.parametrize("testcase", TESTS)
def test_accel(accel_build, testcase):
    accel_build.run(testcase)
