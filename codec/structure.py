"""Prediction structures: which frames are anchors, and what each predicted frame uses.

Frames are counted from 0 (docs/bitstream.md, section 4):

- ``intra``: every frame an anchor;
- ``uni-g``: groups of g frames, the first one the anchor, the others predicted from it
  (the thesis's uni-directional prediction is uni-2);
- ``bi-g``: groups of g frames, g odd, the middle one the anchor (the thesis's
  bi-directional prediction is bi-3: one frame of latency).

A short final group uses the same rule on the frames it has: its anchor is its first
frame (uni) or the frame at (length - 1) // 2 (bi).

Decode (packet) order inside a group: the anchor, then the frames before it from the
nearest outwards, then the frames after it in order. A predicted frame's reference is
the anchor (``reference="anchor"``, the thesis's mode) or its neighbour towards the
anchor (``reference="chain"``: the previous reconstruction, closed loop).
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass

from temposplit.codec.errors import ConfigurationError

KINDS = ("intra", "uni", "bi")
REFERENCES = ("anchor", "chain")
MAX_GROUP = 255


@dataclass(frozen=True)
class Structure:
    kind: str
    group: int

    @staticmethod
    def parse(text: str) -> Structure:
        """``intra``, ``uni-G`` or ``bi-G`` (G odd for bi)."""
        m = re.fullmatch(r"(intra)|(uni|bi)-([0-9]+)", str(text).strip())
        if not m:
            raise ConfigurationError(f"structure must be 'intra', 'uni-G' or 'bi-G', not {text!r}")
        if m.group(1):
            return Structure("intra", 1)
        digits = m.group(3).lstrip("0") or "0"
        if len(digits) > len(str(MAX_GROUP)):  # (int() refuses a string of over 4300 digits)
            raise ConfigurationError(f"group size must be in 1..{MAX_GROUP}, not a number of {len(digits)} digits")
        return Structure.make(m.group(2), int(digits))

    @staticmethod
    def make(kind: str, group: int) -> Structure:
        """A checked structure: ``kind`` one of KINDS, ``group`` an integer in 1..MAX_GROUP
        (odd for ``bi``; ignored for ``intra``, whose groups are 1 frame)."""
        if not isinstance(kind, str) or kind not in KINDS:
            raise ConfigurationError(f"structure kind must be one of {KINDS}, not {kind!r}")
        if kind == "intra":
            return Structure("intra", 1)
        if isinstance(group, bool) or not isinstance(group, numbers.Integral):
            raise ConfigurationError(f"group size must be an integer in 1..{MAX_GROUP}, not {group!r}")
        if not 1 <= group <= MAX_GROUP:
            raise ConfigurationError(f"group size must be in 1..{MAX_GROUP}, not {group}")
        if kind == "bi" and group % 2 == 0:
            raise ConfigurationError(f"a bi-directional group has an odd size (its anchor in the middle), not {group}")
        return Structure(kind, int(group))

    def __str__(self) -> str:
        return "intra" if self.kind == "intra" else f"{self.kind}-{self.group}"

    def anchor_offset(self, length: int) -> int:
        """Position of the anchor in a group of ``length`` frames."""
        return (length - 1) // 2 if self.kind == "bi" else 0

    def groups(self, n_frames: int) -> list[tuple[int, int]]:
        """(first frame, length) of each group of a clip of ``n_frames`` frames."""
        return [(s, min(self.group, n_frames - s)) for s in range(0, n_frames, self.group)]


def group_plan(start: int, length: int, anchor_offset: int, reference: str) -> list[tuple[int, int | None]]:
    """Decode order of one group: (frame index, reference frame index or None for the anchor)."""
    if reference not in REFERENCES:
        raise ConfigurationError(f"reference must be one of {REFERENCES}, not {reference!r}")
    a = start + anchor_offset
    plan: list[tuple[int, int | None]] = [(a, None)]
    for f in range(a - 1, start - 1, -1):
        plan.append((f, a if reference == "anchor" else f + 1))
    for f in range(a + 1, start + length):
        plan.append((f, a if reference == "anchor" else f - 1))
    return plan
