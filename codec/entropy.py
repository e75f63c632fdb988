"""Entropy coders for the symbols of a tensor: anchor codes, residuals, motion vectors.

Coders (by name, pluggable):

- ``raw``      every symbol in a fixed number of bits;
- ``zvc``      zero-value compression: one mask bit per symbol (1 = non-zero), then the
               non-zero symbols in fixed width;
- ``huffman``  canonical length-limited Huffman (:mod:`temposplit.codec.huffman`);
- ``zrl``      zero-run-length tokens coded with Huffman: a literal token per non-zero
               symbol, a run token per run of zeros with extra bits for its length
               (below one bit per symbol on mostly-zero maps, where plain Huffman cannot go);
- ``ctx``      (bitstream v2) context-adaptive binary range coding of whole frames relative
               to a prediction: :mod:`temposplit.codec.ctx`, called by the payload layer,
               not through :func:`encode`.

All bits are written MSB first into bytes filled from bit 7 down. A coded section is
its bit count plus ceil(bits / 8) bytes; the decoder requires the section to be used
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from temposplit.codec import _kernels as K
from temposplit.codec import huffman
from temposplit.codec.errors import BitstreamError, ConfigurationError, TruncatedError

CODERS = ("raw", "zvc", "huffman", "zrl")  # the symbol coders of this module
STREAM_CODERS = (*CODERS, "ctx")  # what a stream's header names (docs/bitstream.md, 8)
RUN_TOKENS = 16  # run tokens j = 0..15 cover runs of 1..65535 zeros


@dataclass(frozen=True)
class Alphabet:
    """The symbols a section codes: ``size`` values, one of them ``zero`` (or -1: none),
    each ``width`` bits when written raw."""

    size: int
    zero: int
    width: int

    @staticmethod
    def anchor(n_bits: int, z_n: int) -> Alphabet:
        size = 1 << n_bits
        return Alphabet(size, z_n if z_n < size else -1, n_bits)

    @staticmethod
    def residual(n_bits: int) -> Alphabet:
        # residual r in -(2^N - 1)..(2^N - 1) is symbol r + 2^N - 1
        return Alphabet((1 << (n_bits + 1)) - 1, (1 << n_bits) - 1, n_bits + 1)

    @staticmethod
    def motion(p: int) -> Alphabet:
        # a vector component v in -p..p is symbol v + p
        return Alphabet(2 * p + 1, p, int(2 * p).bit_length())


def check_coder(name: str) -> str:
    if name not in STREAM_CODERS:
        raise ConfigurationError(f"unknown coder {name!r}; choose one of {', '.join(STREAM_CODERS)}")
    return name


def uses_table(coder: str) -> bool:
    return coder in ("huffman", "zrl")


def token_alphabet(coder: str, alphabet: Alphabet) -> int:
    """Size of the alphabet a Huffman table covers for this coder."""
    return alphabet.size + RUN_TOKENS if coder == "zrl" else alphabet.size


def histogram(coder: str, symbols: np.ndarray, alphabet: Alphabet) -> np.ndarray:
    """Counts of the tokens the coder's table covers (what the table policy builds from)."""
    symbols = np.ascontiguousarray(symbols).ravel()
    if coder == "zrl":
        counts, bad = K.zrl_histogram(symbols, alphabet.zero, alphabet.size)
        if bad:
            raise ConfigurationError(f"{bad} symbols lie outside the alphabet 0..{alphabet.size - 1}")
        return counts
    return _histogram(symbols, alphabet.size)


def _histogram(symbols: np.ndarray, size: int) -> np.ndarray:
    counts, bad = K.histogram(symbols, size)
    if bad:
        raise ConfigurationError(f"{bad} symbols lie outside the alphabet 0..{size - 1}")
    return counts


def encode(coder: str, symbols: np.ndarray, alphabet: Alphabet, lengths: np.ndarray | None = None):
    """Code symbols; returns ``(payload bytes, number of bits)``.

    ``lengths`` is the Huffman table (code lengths over :func:`token_alphabet`) for the
    table coders.
    """
    symbols = np.ascontiguousarray(symbols).ravel()
    if coder == "huffman":  # the hot path: no intermediate arrays
        codes, lens = _table(lengths, alphabet.size)
        if (lens[_histogram(symbols, alphabet.size) > 0] == 0).any():
            raise ConfigurationError("the Huffman table has no code for a symbol of this map")
        data, nbits = K.write_table(symbols, codes, lens)
        return data.tobytes(), int(nbits)
    symbols = symbols.astype(np.int32, copy=False)
    if coder == "raw":
        values, widths = symbols, np.full(symbols.size, alphabet.width, np.uint8)
    elif coder == "zvc":
        nonzero = symbols != alphabet.zero
        values = np.concatenate([nonzero.astype(np.int32), symbols[nonzero]])
        widths = np.concatenate(
            [np.ones(symbols.size, np.uint8), np.full(int(nonzero.sum()), alphabet.width, np.uint8)]
        )
    elif coder == "zrl":
        codes, lens = _table(lengths, alphabet.size + RUN_TOKENS)
        tokens, extra, extra_w = K.zrl_tokens(symbols, alphabet.zero, alphabet.size)
        if (lens[tokens] == 0).any():
            raise ConfigurationError("the Huffman table has no code for a token of this map")
        values = np.empty(2 * tokens.size, np.uint32)
        widths = np.empty(2 * tokens.size, np.uint8)
        values[0::2], widths[0::2] = codes[tokens], lens[tokens]
        values[1::2], widths[1::2] = extra, extra_w
    else:
        raise ConfigurationError(f"unknown coder {coder!r}")
    data, nbits = K.write_fields(np.ascontiguousarray(values, np.uint32), np.ascontiguousarray(widths, np.uint8))
    return data.tobytes(), int(nbits)


def decode(coder: str, data: bytes, nbits: int, count: int, alphabet: Alphabet, lengths=None) -> np.ndarray:
    """Inverse of :func:`encode`: exactly ``count`` symbols (uint16: every alphabet has under
    2^16) from exactly ``nbits`` bits. A table of the wrong size is a :class:`BitstreamError`
    here (it came from a stream), not a :class:`ConfigurationError`."""
    if len(data) != (nbits + 7) // 8:
        raise BitstreamError(f"a section of {nbits} bits must be {(nbits + 7) // 8} bytes, not {len(data)}")
    buf = np.frombuffer(data, np.uint8)
    # The least a section of `count` symbols can hold, checked before anything is allocated.
    least = {"raw": count * alphabet.width, "zvc": count, "huffman": count}.get(coder, 0)
    if least > nbits:
        raise TruncatedError(f"a section of {nbits} bits cannot hold {count} symbols")
    if coder == "raw":
        out, status = K.read_fixed(buf, nbits, count, alphabet.width)
    elif coder == "zvc":
        mask, status = K.read_fixed(buf, nbits, count, 1)
        if status >= 0:
            nz = int(mask.sum())
            if status + nz * alphabet.width > nbits:
                status = K.ERR_TRUNCATED
            else:
                vals, used = (
                    K.read_fixed(buf[status // 8 :], nbits - status, nz, alphabet.width)
                    if (status % 8 == 0)
                    else _read_unaligned(buf, status, nz, alphabet.width)
                )
                if alphabet.zero < 0 and nz < count:
                    raise BitstreamError("a ZVC mask marks zeros in an alphabet that has no zero")
                out = np.full(count, max(alphabet.zero, 0), np.uint16)
                out[mask.astype(bool)] = vals
                status = status + used
    elif coder == "huffman":
        lut = huffman.decode_lut(_check_table(lengths, alphabet.size, BitstreamError))
        out, status = K.read_huffman(buf, nbits, count, lut)
    elif coder == "zrl":
        lut = huffman.decode_lut(_check_table(lengths, alphabet.size + RUN_TOKENS, BitstreamError))
        out, status = K.read_zrl(buf, nbits, count, lut, alphabet.zero, alphabet.size)
    else:
        raise ConfigurationError(f"unknown coder {coder!r}")
    if status < 0:
        raise BitstreamError(
            {
                K.ERR_TRUNCATED: "coded data ends before the symbols it must hold",
                K.ERR_BAD_CODE: "a bit pattern matches no Huffman code",
                K.ERR_OVERRUN: "a zero run runs past the end of the map",
            }[status]
        )
    if status != nbits:
        raise BitstreamError(f"a section announced {nbits} bits but its symbols use {status}")
    if count and int(out.max()) >= alphabet.size:
        raise BitstreamError("a decoded symbol lies outside its alphabet")
    return out


def _read_unaligned(buf, bitpos, count, width):
    # Shift the remaining bits to a byte boundary, then read as usual.
    rest = np.unpackbits(buf)[bitpos:]
    return K.read_fixed(np.packbits(rest), rest.size, count, width)


def _table(lengths, size):
    lengths = _check_table(lengths, size)
    return huffman.canonical_codes(lengths), np.asarray(lengths, np.uint8)


def _check_table(lengths, size, error=ConfigurationError):
    """The table as uint8 lengths; ``error`` if there is none or its size is not ``size``
    (a ConfigurationError for the encoder's, a BitstreamError for a decoder's: from a stream)."""
    if lengths is None:
        raise error("a table coder needs a Huffman table")
    lengths = np.asarray(lengths, np.uint8)
    if lengths.shape != (size,):
        raise error(f"a Huffman table for this alphabet has {size} lengths, not {lengths.shape}")
    return lengths


# An intra ctx anchor's bytes over the order-0 entropy of its codes, by N: the mean over the
# fixed calibration set's 39 frames, never an evaluated one, at features.6, .10 and .13
# (each frame a KEY; 0.74-0.87 at N <= 4, 1.08-1.10 at N = 8: the adaptive bins gain less
# than they cost in learning when the codes have many values). Used for rate control.
CTX_INTRA_FACTOR = {2: 0.81, 3: 0.80, 4: 0.84, 5: 0.89, 6: 0.93, 7: 1.00, 8: 1.10}


def coded_bits_estimate(coder: str, hist: np.ndarray, alphabet: Alphabet, count: int) -> float:
    """Bits a section would take, estimated from a histogram of its symbols (for rate control)."""
    if coder == "raw":
        return float(count * alphabet.width)
    zeros = int(hist[alphabet.zero]) if alphabet.zero >= 0 else 0
    if coder == "zvc":
        return float(count + (count - zeros) * alphabet.width)
    if coder == "ctx":  # an intra anchor: its bins against the order-0 bound, by N (CTX_INTRA_FACTOR)
        return CTX_INTRA_FACTOR[min(max(alphabet.width, 2), 8)] * huffman.entropy_bits(hist)
    return huffman.entropy_bits(hist) + 0.02 * count
