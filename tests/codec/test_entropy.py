import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from temposplit.codec import entropy, huffman
from temposplit.codec.bitio_reference import BitWriter
from temposplit.codec.errors import BitstreamError


def huffman_cost(counts):
    h = [int(c) for c in counts if c > 0]
    if len(h) < 2:
        return sum(h)
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        a, b = heapq.heappop(h), heapq.heappop(h)
        cost += a + b
        heapq.heappush(h, a + b)
    return cost


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=2, max_size=300))
def test_package_merge_is_optimal_and_a_complete_prefix_code(counts):
    counts = np.array(counts, np.int64)
    lengths = huffman.package_merge(counts, 15)
    used = counts > 0
    assert (lengths[~used] == 0).all()
    if used.sum() >= 2:
        assert lengths.max() <= 15
        assert sum(2 ** (15 - int(n)) for n in lengths[used]) == 2**15  # Kraft equality
        cost = int((lengths.astype(np.int64) * counts).sum())
        if lengths.max() < 15:  # the limit did not bind: plain Huffman's cost
            assert cost == huffman_cost(counts)
        else:
            assert cost >= huffman_cost(counts)


def test_the_15_bit_limit_binds_on_a_geometric_histogram():
    lengths = huffman.package_merge(np.array([2**i for i in range(25)], np.int64))
    assert lengths.max() == 15 and sum(2 ** (15 - int(n)) for n in lengths) == 2**15


def test_tables_cover_every_symbol_and_pack_to_nibbles():
    lengths = huffman.table_lengths(np.array([100, 0, 0, 5, 0, 0, 0, 1]))
    assert (lengths > 0).all()
    assert (huffman.unpack_lengths(huffman.pack_lengths(lengths), 8) == lengths).all()


def test_canonical_codes_follow_length_then_symbol():
    lengths = np.array([2, 1, 3, 3], np.uint8)
    codes = huffman.canonical_codes(lengths)
    assert [format(int(c), f"0{n}b") for c, n in zip(codes, lengths, strict=True)] == ["10", "0", "110", "111"]


def test_oversubscribed_tables_are_refused():
    with pytest.raises(BitstreamError, match="prefix"):
        huffman.check_lengths(np.array([1, 1, 1], np.uint8))


def alphabets():
    return st.one_of(
        st.builds(lambda n, z: entropy.Alphabet.anchor(n, z % ((1 << n) + 1)), st.integers(2, 8), st.integers(0, 300)),
        st.builds(entropy.Alphabet.residual, st.integers(2, 8)),
        st.builds(entropy.Alphabet.motion, st.sampled_from([3, 7, 15])),
    )


@settings(max_examples=150, deadline=None)
@given(alphabets(), st.integers(0, 2000), st.floats(0, 1), st.integers(0, 2**32 - 1), st.booleans())
def test_every_coder_round_trips(alphabet, n, zero_p, seed, own_table):
    rng = np.random.default_rng(seed)
    zero = max(alphabet.zero, 0)
    symbols = np.where(rng.random(n) < zero_p, zero, rng.integers(0, alphabet.size, n)).astype(np.int32)
    if alphabet.zero < 0:
        symbols[symbols == zero] = 1
    for coder in entropy.CODERS:
        lengths = None
        if entropy.uses_table(coder):
            hist = (
                entropy.histogram(coder, symbols, alphabet)
                if own_table
                else rng.integers(0, 30, entropy.token_alphabet(coder, alphabet))
            )
            lengths = huffman.table_lengths(hist)
        data, nbits = entropy.encode(coder, symbols, alphabet, lengths)
        assert len(data) == (nbits + 7) // 8
        assert (entropy.decode(coder, data, nbits, n, alphabet, lengths) == symbols).all()


def reference_huffman_bits(symbols, lengths):
    codes = huffman.canonical_codes(lengths)
    w = BitWriter()
    for s in symbols:
        w.write(int(codes[s]), int(lengths[s]))
    return w.getvalue(), w.bits


def test_huffman_bytes_equal_a_bit_by_bit_writer():
    rng = np.random.default_rng(3)
    alphabet = entropy.Alphabet.anchor(4, 7)
    symbols = rng.integers(0, 16, 999).astype(np.int32)
    lengths = huffman.table_lengths(entropy.histogram("huffman", symbols, alphabet))
    assert entropy.encode("huffman", symbols, alphabet, lengths) == reference_huffman_bits(symbols, lengths)


def test_zvc_layout_is_mask_then_nonzero_codes():
    alphabet = entropy.Alphabet.anchor(4, 2)
    data, nbits = entropy.encode("zvc", np.array([2, 5, 2, 15]), alphabet)
    # mask 0101, then 0101 (5), 1111 (15)
    assert nbits == 12 and data == bytes([0b01010101, 0b11110000])


def test_zero_runs_go_below_one_bit_per_symbol():
    rng = np.random.default_rng(4)
    alphabet = entropy.Alphabet.anchor(4, 3)
    symbols = np.where(rng.random(100_000) < 0.97, 3, rng.integers(0, 16, 100_000)).astype(np.int32)
    sizes = {}
    for coder in ("huffman", "zrl"):
        lengths = huffman.table_lengths(entropy.histogram(coder, symbols, alphabet))
        sizes[coder] = entropy.encode(coder, symbols, alphabet, lengths)[1] / symbols.size
    assert sizes["huffman"] >= 1.0 > 0.5 > sizes["zrl"]


def test_long_zero_runs_are_split():
    alphabet = entropy.Alphabet.anchor(8, 0)
    symbols = np.zeros(200_000, np.int32)
    symbols[-1] = 9
    lengths = huffman.table_lengths(entropy.histogram("zrl", symbols, alphabet))
    data, nbits = entropy.encode("zrl", symbols, alphabet, lengths)
    assert (entropy.decode("zrl", data, nbits, symbols.size, alphabet, lengths) == symbols).all()


@pytest.mark.parametrize("coder", entropy.CODERS)
def test_damaged_sections_raise_bitstream_errors(coder):
    rng = np.random.default_rng(5)
    alphabet = entropy.Alphabet.anchor(5, 4)
    symbols = rng.integers(0, 32, 500).astype(np.int32)
    lengths = huffman.table_lengths(entropy.histogram(coder, symbols, alphabet)) if entropy.uses_table(coder) else None
    data, nbits = entropy.encode(coder, symbols, alphabet, lengths)
    with pytest.raises(BitstreamError):
        entropy.decode(coder, data[:-1], nbits, 500, alphabet, lengths)
    with pytest.raises(BitstreamError):
        entropy.decode(coder, data, nbits, 501, alphabet, lengths)
