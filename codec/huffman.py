"""Length-limited canonical Huffman codes (docs/bitstream.md, section 6.1).

- Code lengths come from package-merge (optimal under a 15-bit limit). Ties are broken
  by symbol index, so every builder of a table from the same histogram (the edge's
  software, the server's decoder) gets the same lengths.
- A table is always built from ``histogram + 1``: every symbol of the alphabet gets a
  code, so a table made from one map can code any other map of the same alphabet (the
  one-pass policy codes an anchor with the previous anchor's table).
- Codes are canonical: symbols sorted by (length, symbol) get consecutive codes,
  starting from 0 at the shortest length (as DEFLATE). Codes are written MSB first.
- In a stream, a table is its code lengths, 4 bits each (1..15; 0 = no code), in
  symbol order.
"""

from __future__ import annotations

import numpy as np

from temposplit.codec.errors import BitstreamError, ConfigurationError

MAX_CODE_LENGTH = 15


def package_merge(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal code lengths (<= max_length) for symbols with the given counts.

    Symbols with count 0 get length 0. One used symbol gets length 1.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ConfigurationError("a histogram must be a 1-D array of non-negative counts")
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, np.uint8)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if used.size > (1 << max_length):
        raise ConfigurationError(f"{used.size} symbols cannot be coded with at most {max_length} bits")
    # Leaves sorted by (count, symbol); an item is (weight, tuple of leaf positions).
    order = used[np.lexsort((used, counts[used]))]
    leaves = [(int(counts[s]), (i,)) for i, s in enumerate(order)]
    current = list(leaves)
    for _ in range(max_length - 1):
        packaged = [
            (current[i][0] + current[i + 1][0], current[i][1] + current[i + 1][1])
            for i in range(0, len(current) - 1, 2)
        ]
        # Merge stably: on equal weight a leaf comes before a package.
        merged, i, j = [], 0, 0
        while i < len(leaves) or j < len(packaged):
            if j == len(packaged) or (i < len(leaves) and leaves[i][0] <= packaged[j][0]):
                merged.append(leaves[i])
                i += 1
            else:
                merged.append(packaged[j])
                j += 1
        current = merged
    depth = np.zeros(len(order), np.int64)
    for _, members in current[: 2 * len(order) - 2]:
        for m in members:
            depth[m] += 1
    lengths[order] = depth.astype(np.uint8)
    return lengths


def table_lengths(histogram: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """The code lengths of the table built from a histogram: package-merge of histogram + 1."""
    return package_merge(np.asarray(histogram, np.int64) + 1, max_length)


def check_lengths(lengths: np.ndarray) -> None:
    """Reject lengths that do not form a prefix code (Kraft sum over 1) or exceed 15 bits."""
    lengths = np.asarray(lengths)
    if lengths.size and int(lengths.max()) > MAX_CODE_LENGTH:
        raise BitstreamError(f"a Huffman code length exceeds {MAX_CODE_LENGTH} bits")
    used = lengths[lengths > 0].astype(np.int64)
    if used.size == 0:
        raise BitstreamError("a Huffman table has no codes")
    kraft = int(np.sum(np.int64(1) << (MAX_CODE_LENGTH - used)))
    if kraft > (1 << MAX_CODE_LENGTH):
        raise BitstreamError("Huffman code lengths over-subscribe the code space (not a prefix code)")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes (uint32, to be written MSB first in ``lengths[s]`` bits)."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(lengths.size, np.uint32)
    code = 0
    prev_len = 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev_len
        prev_len = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def decode_lut(lengths: np.ndarray) -> np.ndarray:
    """A 2^15-entry lookup table: entry = (symbol << 4) | length for the code that prefixes
    the 15-bit window, or 0 where no code does (an incomplete table)."""
    check_lengths(lengths)
    codes = canonical_codes(lengths)
    lut = np.zeros(1 << MAX_CODE_LENGTH, np.int32)
    for s in np.flatnonzero(lengths):
        n = int(lengths[s])
        start = int(codes[s]) << (MAX_CODE_LENGTH - n)
        lut[start : start + (1 << (MAX_CODE_LENGTH - n))] = (int(s) << 4) | n
    return lut


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Code lengths as 4-bit nibbles, high nibble first, in symbol order."""
    lengths = np.asarray(lengths, np.uint8)
    padded = np.zeros(lengths.size + (lengths.size & 1), np.uint8)
    padded[: lengths.size] = lengths
    return bytes((padded[0::2] << 4) | padded[1::2])


def unpack_lengths(data: bytes, alphabet: int) -> np.ndarray:
    """Inverse of :func:`pack_lengths`; validates the result as a prefix code."""
    need = (alphabet + 1) // 2
    if len(data) < need:
        raise BitstreamError(f"a Huffman table needs {need} bytes, only {len(data)} remain")
    raw = np.frombuffer(data[:need], np.uint8)
    lengths = np.empty(2 * need, np.uint8)
    lengths[0::2] = raw >> 4
    lengths[1::2] = raw & 15
    lengths = lengths[:alphabet].copy()
    check_lengths(lengths)
    return lengths


def packed_size(alphabet: int) -> int:
    return (alphabet + 1) // 2


def entropy_bits(histogram: np.ndarray) -> float:
    """The Shannon bound of a histogram in bits (an estimate of its Huffman size)."""
    h = np.asarray(histogram, np.float64)
    total = h.sum()
    if total == 0:
        return 0.0
    p = h[h > 0] / total
    return float(-(h[h > 0] * np.log2(p)).sum())
