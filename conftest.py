"""Suite-wide pytest settings for running on several workers (``make test``: pytest-xdist,
one worker per CPU, whole files per worker; docs/testing.md).

- Each worker gets its share of the cores for BLAS, OpenMP and numba threads, so two
  workers on two cores do not each start two compute threads.
- A test that sets PyTorch's thread count (the models CLI's ``--threads``, default 2, run
  in process) has it set back to the worker's share after it: more threads than cores
  make OpenMP's barriers wait on descheduled threads, several times slower.
- SIGINT and SIGQUIT get their default actions back where the suite inherited them ignored
  (started as a background job), so that the signal tests test the programs, not that.
- Files are handed out longest first (``LONG_FIRST``, from ``--durations`` on this suite),
  so that the last file to start is a short one and the workers finish together.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

# SIGINT and SIGQUIT as a terminal gives them. A suite started as a script's background job
# (`make test &` without job control) inherits them ignored, and an ignored signal stays
# ignored in every process it starts (exec keeps SIG_IGN), as the programs' own rule keeps it
# (README: a signal the process ignores stays ignored): the tests that stop an edge, a demo
# or a server with SIGINT then saw it ignored and failed. The suite's processes, and the
# programs they start, get the default actions back.
for _sig, _handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGQUIT, signal.SIG_DFL)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _handler)

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)

# Longest first, by file, from `--durations` on the 2-core reference machine (docs/testing.md).
# A file not listed keeps its place after these; a stale order costs time, never a result.
LONG_FIRST = (
    "sim/test_accel_real.py",  # the default build's first user: compiles it
    "sim/test_accel_band.py",  # another build, compiled beside it on the other worker
    "sim/test_accel.py",
    "tests/evaluation/test_harness.py",
    "sim/test_ctx.py",
    "tests/model/test_cli.py",
    "sim/test_backend.py",
    "tests/hw/test_range_coder.py",
    "sim/test_pynq.py",
    "tests/codec/test_robustness.py",
    "tests/hw/test_vivado.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    root = config.rootpath

    def key(item):
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else str(item.path)
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: within a file and among the rest, collection order stays


@pytest.fixture(autouse=True, scope="session")
def _edge_state_kept_apart(tmp_path_factory):
    """The edges the tests run keep their streams' resume tokens (host/resume.py) under the
    run's temporary folder, not in the home folder of whoever runs the suite."""
    os.environ["TEMPOSPLIT_STATE"] = str(tmp_path_factory.mktemp("edge-state"))


@pytest.fixture(autouse=True)
def _torch_threads_given_back():
    """PyTorch's intra-op thread count after each test as it was before (the worker's share
    where the test imported torch first)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if before is None:
        before = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def one_line(capsys):
    """``one_line(*messages)``: what the command wrote to stderr is one line, from
    ``temposplit ...``, holding every message; returns the line."""

    def check(*messages: str) -> str:
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("temposplit "), err
        for m in messages:
            assert m in err[0], err
        return err[0]

    return check
