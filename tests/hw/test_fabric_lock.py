"""One fabric user per board: ``open_overlay`` takes an exclusive flock on
``$TEMPOSPLIT_FABRIC_LOCK`` before it loads the overlay and keeps it until the
accelerator's ``close()``; a second process is refused in one line naming the holder's pid,
and the overlay is not loaded under the first (whose engine keeps its reference on chip).

``pynq`` is sim/pynqsim.py's stand-in over a fake fabric (registers only: no Verilator);
the stand-in's DMA says ``simulated`` (a simulation per process, so the driver takes no
lock there), which these tests turn off to stand for the board."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from temposplit.hw import regmap
from temposplit.hw.driver import AcceleratorError

ROOT = Path(__file__).resolve().parents[2]

# A second process (another temposplit-edge@ instance): the same stand-in and fake fabric,
# its overlay loads counted; it prints what open_overlay did.
OTHER = r"""
import importlib.util, sys
from pathlib import Path
root, bit = Path(sys.argv[1]), sys.argv[2]
spec = importlib.util.spec_from_file_location("pynqsim", root / "sim" / "pynqsim.py")
sim = importlib.util.module_from_spec(spec)
sys.modules["pynqsim"] = sim
spec.loader.exec_module(sim)
from temposplit.hw import regmap

class Fabric:
    def call(self, op, *args):
        if op == "read":
            return {regmap.REG["ID"].offset: regmap.ID_MAGIC,
                    regmap.REG["PARAMS"].offset: regmap.DEFAULT.params_word()}.get(args[0], 0)
    def close(self):
        pass

sim.install(regmap.DEFAULT, None, bridge=Fabric)
sim.DMA.simulated = False
loaded = []
class Overlay(sim.Overlay):
    def __init__(self, *a, **k):
        loaded.append(a)
        super().__init__(*a, **k)
sim.Overlay = Overlay
from temposplit.hw import pynq_driver
from temposplit.hw.driver import AcceleratorError
try:
    accel = pynq_driver.open_overlay(bit)
except AcceleratorError as exc:
    print("refused:", exc, "| loads:", len(loaded))
else:
    print("opened | loads:", len(loaded))
    accel.close()
"""


class _Fabric:
    """The simulation's side of the stand-in: the accelerator's ID and PARAMS, nothing streamed."""

    def call(self, op, *args):
        if op == "read":
            answers = {
                regmap.REG["ID"].offset: regmap.ID_MAGIC,
                regmap.REG["PARAMS"].offset: regmap.DEFAULT.params_word(),
            }
            return answers.get(args[0], 0)
        return None

    def close(self):
        pass


@pytest.fixture
def board(tmp_path, monkeypatch):
    """(pynq_driver over the stand-in as on a board, a loadable overlay, the lock file)."""
    from temposplit.hw import vivado

    saved = {k: sys.modules.get(k) for k in ("pynq", "pynqsim", "temposplit.hw.pynq_driver")}
    spec = importlib.util.spec_from_file_location("pynqsim", ROOT / "sim" / "pynqsim.py")
    sim = importlib.util.module_from_spec(spec)
    sys.modules["pynqsim"] = sim
    spec.loader.exec_module(sim)
    sim.install(regmap.DEFAULT, None, bridge=_Fabric)
    monkeypatch.setattr(sim.DMA, "simulated", False)  # a board's fabric, shared by its processes
    lock = tmp_path / "run" / "lock" / "temposplit-fabric.lock"  # its folder made when missing
    monkeypatch.setenv("TEMPOSPLIT_FABRIC_LOCK", str(lock))
    bit = tmp_path / "temposplit.bit"
    bit.with_suffix(".hwh").write_text(vivado.hwh(vivado.Design()))
    sys.modules.pop("temposplit.hw.pynq_driver", None)
    driver = importlib.import_module("temposplit.hw.pynq_driver")
    yield driver, str(bit), lock
    sim.shutdown()
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


def _other_process(bit, lock) -> str:
    res = subprocess.run(
        [sys.executable, "-c", OTHER, str(ROOT), bit],
        env={**os.environ, "TEMPOSPLIT_FABRIC_LOCK": str(lock)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _held(lock) -> bool:
    """Whether someone holds the lock (a flock of a new open file description conflicts even
    with this process's own)."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_second_process_is_refused_and_does_not_load_the_overlay(board):
    driver, bit, lock = board
    accel = driver.open_overlay(bit)
    assert accel.params == regmap.DEFAULT
    assert _other_process(bit, lock) == (
        f"refused: the fabric is in use by another process (pid {os.getpid()}, lock file {os.path.realpath(lock)}): "
        f"one fabric user per board | loads: 0"
    )
    assert lock.read_text().strip() == str(os.getpid())
    accel.close()
    assert not _held(lock)
    assert _other_process(bit, lock) == "opened | loads: 1"  # released by close(): the next user gets it


def test_the_lock_is_shared_within_a_process_and_let_go_by_its_last_close(board):
    """The edge opens its new accelerator before it closes the old one (host/edge.py)."""
    driver, bit, lock = board
    first = driver.open_overlay(bit)
    second = driver.open_overlay(bit)
    first.close()
    first.close()  # twice: one user's hold is let go once
    assert _held(lock)
    second.close()
    assert not _held(lock)


def test_an_overlay_that_does_not_load_lets_the_lock_go(board, tmp_path):
    driver, _, lock = board
    with pytest.raises(AcceleratorError, match="cannot load the overlay"):
        driver.open_overlay(str(tmp_path / "missing.bit"))
    assert not _held(lock)


def test_a_lock_file_that_cannot_be_made_is_one_line(board, tmp_path, monkeypatch):
    driver, bit, _ = board
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TEMPOSPLIT_FABRIC_LOCK", str(blocker / "fabric.lock"))
    with pytest.raises(AcceleratorError, match=r"cannot open the fabric's lock file .*TEMPOSPLIT_FABRIC_LOCK") as e:
        driver.open_overlay(bit)
    assert "\n" not in str(e.value)
