"""The NumPy M1's codes of some frames on the host, in the form ``run.py`` records the
board's (``TEMPOSPLIT_BOARD_CODES``): per crossing tensor, ``"<frame>/<name>"`` -> uint8 codes."""

from __future__ import annotations

import numpy as np

from temposplit.model import numpy_m1


def codes(m1_path: str, frames_path: str, count: int) -> dict:
    m1 = numpy_m1.load(m1_path)
    frames = np.load(frames_path, mmap_mode="r")
    out = {}
    for i in range(min(count, frames.shape[0])):
        for name, t in zip(m1.names, m1([np.array(frames[i])]), strict=True):
            out[f"{i}/{name}"] = t.codes[0]
    return out
