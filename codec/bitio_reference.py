"""A bit-by-bit writer: the readable definition of the bit order the compiled packer follows.

Fields are written MSB first; bytes fill from bit 7 down; the last byte is padded
with zero bits.
"""

from __future__ import annotations


class BitWriter:
    def __init__(self) -> None:
        self._bits: list[int] = []

    def write(self, value: int, width: int) -> None:
        for i in range(width - 1, -1, -1):
            self._bits.append((value >> i) & 1)

    @property
    def bits(self) -> int:
        return len(self._bits)

    def getvalue(self) -> bytes:
        out = bytearray()
        for i in range(0, len(self._bits), 8):
            chunk = self._bits[i : i + 8] + [0] * (8 - len(self._bits[i : i + 8]))
            out.append(int("".join(map(str, chunk)), 2))
        return bytes(out)
