"""The board's software on 32-bit ARM (board/emu.py, ``make board-emu``), a few frames.

An armhf Debian root (python3 3.11, NumPy 1.24, 32-bit ``intp``; cached under
~/.cache/temposplit/armhf) runs ``temposplit edge --m1 ... --backend pynq`` under qemu-arm
against ``temposplit serve`` on the host: its packets must be byte-identical to x86's on
the same frames, and its peak RSS under the PYNQ-Z2's budget. A 32-bit regression
(a default integer width, int64 arithmetic NumPy refuses to cast, memory) fails here.
Needs root (chroot) and mmdebstrap + qemu-user-static (.ci/run installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Not in `make test`: on a fresh machine the armhf root alone takes 15-25 minutes to build
# (dpkg and its scripts under qemu-arm on 2 cores), more than the suite's budget allows
# beside everything else; `make test-board` runs it (docs/testing.md).
pytestmark = [pytest.mark.slow, pytest.mark.board]
ROOT = Path(__file__).resolve().parents[2]


def test_edge_on_armhf_is_bit_exact_with_x86_and_fits_in_memory(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the armhf root needs root (chroot)")
    missing = [t for t in ("mmdebstrap", "qemu-arm-static") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install mmdebstrap qemu-user-static)")
    res = subprocess.run(
        # a small calibration and no x86 run through the fabric (sim/test_pynq.py has it): the
        # suite's time goes to what only this test checks, the 32-bit board itself
        [sys.executable, str(ROOT / "board" / "emu.py"), "--frames", "3", "--out", str(tmp_path)]
        + ["--calibration", "4", "--no-x86-fabric"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checks"] and all(report["checks"].values()), report["checks"]
    runs = report["runs"]
    assert runs["armhf-pynq"]["machine"].startswith("armv7") and runs["armhf-pynq"]["intp_bits"] == 32
    assert runs["armhf-pynq"]["packets"] == runs["x86-golden"]["packets"] > 0
    assert runs["armhf-pynq"]["sha256"] == runs["x86-golden"]["sha256"]
    assert report["m1_codes"] and report["checks"]["armhf NumPy M1 codes equal x86's (frame 0, every crossing tensor)"]
    assert 0 < runs["armhf-pynq"]["peak_rss_mb"] < 400
