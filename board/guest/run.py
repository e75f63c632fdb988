"""Run ``temposplit`` in this process and report its peak memory (the emulated board).

    python3 run.py RESULT.json edge FRAMES.npy --m1 m1.npz --backend pynq ...

writes ``{"rc": ..., "vm_hwm_kb": ..., "maxrss_kb": ..., "seconds": ...}`` to RESULT.json and,
with ``TEMPOSPLIT_BOARD_CODES=PATH``, the uint8 codes the NumPy M1 gave the edge for its first
frame, per crossing tensor (``0/<name>``), to PATH (.npz): the host compares them with its
own, which identical packets alone would not show (the codec requantizes them to fewer bits).
Under qemu-user ``VmHWM`` (``/proc/self/status``, /proc mounted in the root) is the
emulator process's peak resident size since its exec: the guest's memory plus qemu's own
code cache and tables, an upper bound of what the program needs on the board.
``ru_maxrss`` is not: a process forked from a large parent and exec'd keeps the parent's
resident size as its maximum (here: the host's board/emu.py).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import threading
import time


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _sample(timeline: list, t0: float) -> None:
    """VmRSS once a second (where /proc is mounted): when the memory grows, not only how far."""
    while True:
        rss = _status_kb("VmRSS")
        if rss is None:
            return
        timeline.append((round(time.time() - t0, 1), rss // 1024))
        time.sleep(1.0)


def _capture_first_codes(path: str) -> None:
    """Record the NumPy M1's outputs of the first frame it is given (written by :func:`main`)."""
    from temposplit.model import numpy_m1

    call = numpy_m1.NumpyM1.__call__

    def recording(self, frames):
        out = call(self, frames)
        if not _FIRST:
            _FIRST.update({f"0/{name}": t.codes[0].copy() for name, t in zip(self.names, out, strict=True)})
        return out

    numpy_m1.NumpyM1.__call__ = recording
    _FIRST_PATH.append(path)


_FIRST: dict = {}
_FIRST_PATH: list = []


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    t0 = time.time()
    timeline: list = []
    threading.Thread(target=_sample, args=(timeline, t0), daemon=True).start()
    from temposplit.cli import main as temposplit_main

    if os.environ.get("TEMPOSPLIT_BOARD_CODES"):
        _capture_first_codes(os.environ["TEMPOSPLIT_BOARD_CODES"])

    rc = 1
    try:
        rc = temposplit_main(argv)
    finally:  # the figures also when the program fails (a traceback is the failure's report)
        import numpy as np

        if _FIRST_PATH and _FIRST:
            try:
                np.savez(_FIRST_PATH[0], **_FIRST)
            except OSError as exc:  # the host reports the codes as missing; the figures still follow
                print(f"run.py: could not write {_FIRST_PATH[0]}: {exc}", file=sys.stderr)

        result = {
            "rc": rc,
            "seconds": round(time.time() - t0, 1),
            "vm_hwm_kb": _status_kb("VmHWM"),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "intp_bits": np.dtype(np.intp).itemsize * 8,
            "rss_mb_timeline": timeline,
        }
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f)
    return rc


if __name__ == "__main__":
    sys.exit(main())
