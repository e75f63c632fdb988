"""features.load refuses a name that is not a regular file (docs/bitstream.md, 12): zipfile
seeks to the end for its central directory, so /dev/zero (size 0) was read without end (~1 GB/s,
SIGKILLed at ~9 GB) and a FIFO with no writer blocked for ever."""

from __future__ import annotations

import errno
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from temposplit.codec import features
from temposplit.codec.errors import ConfigurationError

# The load runs in a child with its memory bounded, so that a regression fails (MemoryError, or
# the timeout) instead of taking the machine's memory.
CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
from temposplit.codec import features
from temposplit.codec.errors import ConfigurationError
try:
    features.load(sys.argv[1])
except ConfigurationError as exc:
    print(exc)
"""


def _fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = tmp_path / "fifo.npz"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("which", ["/dev/zero", "fifo"])
def test_load_refuses_a_device_or_a_pipe_before_reading_it(tmp_path, which):
    path = _fifo(tmp_path) if which == "fifo" else which
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    r = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == f"{path}: not a readable .npz feature file (not a regular file)"


def test_encode_refuses_a_fifo_in_one_line(tmp_path):
    fifo = _fifo(tmp_path)
    cmd = [sys.executable, "-m", "temposplit", "encode", fifo, str(tmp_path / "s.tsp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # (it blocked in open() for ever)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "not a regular file" in r.stderr and fifo in r.stderr, r.stderr
    assert not (tmp_path / "s.tsp").exists()


def test_a_regular_file_and_a_file_object_are_read_as_before(tmp_path):
    codes = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    path = tmp_path / "f.npz"
    features.save(str(path), features.FeatureClip(["t"], [codes], [0.1], [3], [4]))
    for source in (str(path), path, io.BytesIO(path.read_bytes())):
        clip = features.load(source)
        assert (clip.codes[0] == codes).all()
    with open(path, "rb") as f:
        assert (features.load(f).codes[0] == codes).all()
    # A folder, or a name that is not there, keeps the system's own word.
    with pytest.raises(ConfigurationError, match=re.escape(os.strerror(errno.EISDIR))):
        features.load(str(tmp_path))
    with pytest.raises(ConfigurationError, match=re.escape(os.strerror(errno.ENOENT))):
        features.load(str(tmp_path / "missing.npz"))
