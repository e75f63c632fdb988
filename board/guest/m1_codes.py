"""The NumPy M1's codes of some frames, on whatever machine runs this (the emulated board).

    python3 m1_codes.py M1.npz FRAMES.npy OUT.npz [COUNT]

writes, per crossing tensor, the uint8 codes of the first COUNT frames (default 1), so
that the host can compare them with its own: identical packets alone would not show it
(the codec requantizes the 8-bit codes to fewer bits).
"""

from __future__ import annotations

import sys

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


if __name__ == "__main__":
    np.savez(sys.argv[3], **codes(sys.argv[1], sys.argv[2], int(sys.argv[4]) if len(sys.argv) > 4 else 1))
