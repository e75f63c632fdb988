"""A set of frame indices held as sorted, disjoint half-open ranges: what a stream's
session keeps of the frames it has recorded (docs/protocol.md, "Sessions, timeouts and
limits"), and what the edge reads of the server's WELCOME and SUMMARY ranges
(``protocol.from_ranges``): a day of a camera is 2.6 million frames, 150 MB as a set of
ints on a board of 512 MB.

A stream's frames are recorded nearly in order (the codec's decode order, at most
``MAX_LEAD`` holes below the highest), so its indices form a handful of ranges: a stream
of 2^24 frames recorded in order is one range, about 200 bytes, where a Python set of
ints held about 60 bytes a frame (1 GB). Each range costs 16 bytes (two machine integers
in arrays); the worst case, frames alternating between two sets, is 8 bytes a frame in
each. Adding a frame at the end is O(1); anywhere else, a binary search and a move of the
ranges after it (a few, in the typical case).

Thread-safe: the server's worker thread adds frames while a pool thread reads the set for
a resuming edge's WELCOME; every operation holds the set's lock, and a union or difference
reads the other set through a snapshot taken under its own lock (never two locks at once).
"""

from __future__ import annotations

import heapq
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class FrameSet:
    """Non-negative integers (frame indices) with the set operations a session uses:
    ``add``, ``discard``, ``in``, ``len``, iteration in order, ``|`` and ``-=``;
    ``ranges()``, the protocol's ``[[start, end], ...]`` form (``protocol.to_ranges``), and
    ``missing(end)``, the indices below ``end`` not in it."""

    __slots__ = ("_starts", "_ends", "_count", "_lock")

    LIMIT = (1 << 63) - 1  # indices below this (a range's end must fit a signed 64-bit integer)

    def __init__(self, frames: Iterable[int] = ()):
        self._starts = array("q")  # range k is [_starts[k], _ends[k]); sorted, disjoint, never adjacent
        self._ends = array("q")
        self._count = 0
        self._lock = threading.Lock()
        for i in frames:
            self.add(i)

    @classmethod
    def from_spans(cls, spans: Iterable[tuple[int, int]]) -> FrameSet:
        """The indices of half-open ``(start, end)`` spans, in any order, overlapping or not
        (each checked as ``protocol.from_ranges`` checks them: 0 <= start <= end < LIMIT)."""
        return cls._of_sorted(sorted((s, e) for s, e in spans if e > s))

    @classmethod
    def _of_sorted(cls, spans: Iterable[tuple[int, int]]) -> FrameSet:
        """The indices of non-empty spans sorted by their start, those that overlap or touch joined."""
        starts, ends = array("q"), array("q")
        for s, e in spans:
            if ends and s <= ends[-1]:  # overlaps or touches the last one
                if e > ends[-1]:
                    ends[-1] = e
            else:
                starts.append(s)
                ends.append(e)
        return cls._of_ranges(starts, ends)

    @classmethod
    def _of_ranges(cls, starts: array, ends: array) -> FrameSet:
        out = cls()
        out._starts, out._ends = starts, ends
        out._count = sum(e - s for s, e in zip(starts, ends, strict=True))
        return out

    def _snapshot(self) -> tuple[array, array]:
        """Copies of the ranges, taken under the lock."""
        with self._lock:
            return array("q", self._starts), array("q", self._ends)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        with self._lock:
            k = bisect_right(self._starts, index) - 1
            return k >= 0 and index < self._ends[k]

    def __iter__(self) -> Iterator[int]:
        starts, ends = self._snapshot()
        for s, e in zip(starts, ends, strict=True):
            yield from range(s, e)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrameSet):
            return self._snapshot() == other._snapshot()
        if isinstance(other, (set, frozenset)):
            return len(other) == self._count and all(i in self for i in other)
        return NotImplemented

    __hash__ = None  # mutable, as a set

    def __repr__(self) -> str:
        return f"FrameSet({self.ranges()})"

    def add(self, index: int) -> bool:
        """Add ``index`` (0 <= index < LIMIT); False when it was already there."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.LIMIT:
            raise ValueError(f"a frame index is an integer in 0..{self.LIMIT - 1}, not {index!r}")
        with self._lock:
            return self._add(index)

    def _add(self, index: int) -> bool:
        starts, ends = self._starts, self._ends
        n = len(starts)
        if n and index == ends[-1]:  # the next frame in order: the usual case
            ends[-1] = index + 1
            self._count += 1
            return True
        k = bisect_right(starts, index) - 1  # the last range starting at or before index
        if k >= 0 and index < ends[k]:
            return False
        joins_left = k >= 0 and ends[k] == index
        joins_right = k + 1 < n and starts[k + 1] == index + 1
        if joins_left and joins_right:  # fills the hole between two ranges
            ends[k] = ends[k + 1]
            del starts[k + 1]
            del ends[k + 1]
        elif joins_left:
            ends[k] = index + 1
        elif joins_right:
            starts[k + 1] = index
        else:
            starts.insert(k + 1, index)
            ends.insert(k + 1, index + 1)
        self._count += 1
        return True

    def discard(self, index: int) -> bool:
        """Remove ``index`` if present; False when it was not there."""
        if not isinstance(index, int):
            return False
        with self._lock:
            return self._discard(index)

    def _discard(self, index: int) -> bool:
        starts, ends = self._starts, self._ends
        k = bisect_right(starts, index) - 1
        if k < 0 or index >= ends[k]:
            return False
        start, end = starts[k], ends[k]
        if start == index and end == index + 1:
            del starts[k]
            del ends[k]
        elif start == index:
            starts[k] = index + 1
        elif end == index + 1:
            ends[k] = index
        else:  # split in two
            ends[k] = index
            starts.insert(k + 1, index + 1)
            ends.insert(k + 1, end)
        self._count -= 1
        return True

    def run_end(self, index: int) -> int:
        """The first index at or after ``index`` that is not in the set."""
        with self._lock:
            k = bisect_right(self._starts, index) - 1
            return self._ends[k] if k >= 0 and index < self._ends[k] else index

    def ranges(self, below: int | None = None, start: int | None = None) -> list[list[int]]:
        """Sorted, disjoint half-open ranges ``[[start, end], ...]`` (adjacent ones joined);
        with ``below``, those of the indices below it, with ``start`` those at or after it
        (a range across either cut there)."""
        with self._lock:
            n = len(self._starts) if below is None else bisect_left(self._starts, below)
            k = 0 if start is None else bisect_right(self._ends, start)
            out = [[s, e] for s, e in zip(self._starts[k:n], self._ends[k:n], strict=True)]
        if out and below is not None and out[-1][1] > below:
            out[-1][1] = below
        if out and start is not None and out[0][0] < start:
            out[0][0] = start
        return [r for r in out if r[1] > r[0]] if below is not None and start is not None else out

    def range_count(self) -> int:
        """How many ranges ``ranges()`` has."""
        return len(self._starts)

    def spans(self, first: int | None = None) -> Iterator[tuple[int, int]]:
        """``(start, end)`` of each range (or of the ``first`` ones), in order, from a
        snapshot (no list of them all)."""
        with self._lock:
            starts, ends = self._starts[:first], self._ends[:first]
        return zip(starts, ends, strict=True)

    def missing(self, end: int, *others: FrameSet) -> Iterator[int]:
        """The indices below ``end`` in neither this set nor ``others``, in order: the gaps
        between their ranges, sorted together in C (never a question per index: END asked
        one per frame, 0.64 s a million frames, every stream of its worker waiting)."""
        import numpy as np

        snapshots = [s._snapshot() for s in (self, *others)]
        starts = np.concatenate([np.frombuffer(a, np.int64) for a, _ in snapshots])
        ends = np.concatenate([np.frombuffer(b, np.int64) for _, b in snapshots])
        order = np.argsort(starts, kind="stable")  # the sets' ranges, each set sorted: a merge
        covered = np.maximum.accumulate(ends[order]) if len(order) else ends  # reached up to, after each range
        gap_from = np.concatenate(([0], covered))
        gap_to = np.minimum(np.concatenate((starts[order], [end])), end)
        holes = gap_to > gap_from
        for a, b in zip(gap_from[holes].tolist(), gap_to[holes].tolist(), strict=True):
            yield from range(a, b)

    def __or__(self, other: FrameSet) -> FrameSet:
        """The union, merged in one pass over both sets' ranges."""
        if not isinstance(other, FrameSet):
            return NotImplemented
        a, b = self._snapshot(), other._snapshot()
        return FrameSet._of_sorted(heapq.merge(zip(*a, strict=True), zip(*b, strict=True)))  # both sorted: one pass

    def __isub__(self, other: FrameSet) -> FrameSet:
        """Remove every index of ``other``, in one pass over both sets' ranges."""
        if not isinstance(other, FrameSet):
            return NotImplemented
        cut_starts, cut_ends = other._snapshot()  # before this set's lock: never two held at once
        with self._lock:
            self._subtract(cut_starts, cut_ends)
        return self

    def _subtract(self, cut_starts: array, cut_ends: array) -> None:
        starts, ends = array("q"), array("q")
        j = 0
        for s, e in zip(self._starts, self._ends, strict=True):
            while j < len(cut_starts) and cut_ends[j] <= s:  # other's ranges wholly before this one
                j += 1
            cur, k = s, j
            while k < len(cut_starts) and cut_starts[k] < e:
                if cut_starts[k] > cur:
                    starts.append(cur)
                    ends.append(cut_starts[k])
                cur = max(cur, cut_ends[k])
                k += 1
            if cur < e:
                starts.append(cur)
                ends.append(e)
        self._starts, self._ends = starts, ends
        self._count = sum(e - s for s, e in zip(starts, ends, strict=True))
