"""More of the codec as a library user meets it: a reviewer's findings (every mistake in a
configuration, a frame or a call a ``ConfigurationError``, docs/bitstream.md section 13),
and the width section 3 gives the motion search's sums.

Each test names the behaviour it holds.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from temposplit.codec import motion
from temposplit.codec.bitstream import MAX_TENSOR_ELEMENTS
from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
from temposplit.codec.errors import ConfigurationError
from temposplit.codec.quantize import MAX_BITS, MIN_BITS, lut, zero_point_n

DOC = Path(__file__).resolve().parents[2] / "docs" / "bitstream.md"


def _spec(shape=(2, 3, 3), name="a"):
    return TensorSpec(name, shape, 0.1, 0, 2)


# ---------------------------------------------------------------- frames that are no list of arrays


@pytest.mark.parametrize("frame", [np.array(5, np.uint8), np.array(5.0)])
def test_a_0d_array_as_a_frame_is_a_configuration_error(frame):
    """len() of a 0-d array raised TypeError ("len() of unsized object")."""
    with pytest.raises(ConfigurationError, match="a frame is a list of uint8 arrays, one per tensor, not a 0-d array"):
        Encoder(CodecConfig([_spec()])).push(frame)


def test_a_ragged_nested_list_as_a_tensor_is_a_configuration_error_in_push_and_encode():
    """np.asarray of a ragged list raised NumPy's ValueError ("inhomogeneous shape")."""
    ragged = [[1, 2], [3]]
    with pytest.raises(ConfigurationError, match=r"tensor 'a': quint8 codes must be a uint8 array .*makes no array"):
        Encoder(CodecConfig([_spec()])).push([ragged])
    with pytest.raises(ConfigurationError, match=r"tensor 'a': quint8 codes must be a uint8 array .*makes no array"):
        Encoder(CodecConfig([_spec()])).encode([[ragged]])


def test_a_refused_frame_leaves_the_encoder_usable(rng):
    """The check comes before any state changes: the next, valid frame is coded as the first."""
    frame = rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)
    config = CodecConfig([_spec()], structure="intra", coder="raw")
    enc = Encoder(config)
    with pytest.raises(ConfigurationError):
        enc.push([[[1, 2], [3]]])
    assert [p.to_bytes() for p in enc.push([frame])] == [p.to_bytes() for p in Encoder(config).push([frame])]


# ---------------------------------------------------------------- configurations the encoder cannot copy


def test_a_memoryview_model_hash_is_a_configuration_error():
    """The encoder's private copy (copy.deepcopy, before the checks) raised TypeError:
    cannot pickle a memoryview. model_hash takes bytes or bytearray."""
    with pytest.raises(ConfigurationError, match="model_hash must be 32 bytes"):
        Encoder(CodecConfig([_spec()], model_hash=memoryview(bytes(32))))
    assert Encoder(CodecConfig([_spec()], model_hash=bytearray(32))).header.model_hash == bytes(32)


def test_another_field_the_encoder_cannot_copy_is_a_configuration_error_naming_it():
    with pytest.raises(ConfigurationError, match="cut_id .* cannot be copied"):
        Encoder(CodecConfig([_spec()], cut_id=memoryview(b"cut")))


# ---------------------------------------------------------------- a search range is an integer


@pytest.mark.parametrize("p", [7 + 0j, 7.0, np.float64(7.0), "7"])
def test_a_search_range_that_is_no_integer_is_refused(p):
    """7 + 0j crashed in int() (TypeError); 7.0 was accepted as p = 7 while n_bits = 4.0 and
    block = 2.0 are refused."""
    with pytest.raises(ConfigurationError, match="search range p must be an integer"):
        motion.check_search_range(p)
    with pytest.raises(ConfigurationError, match="search range p must be an integer"):
        Encoder(CodecConfig([_spec()], search_range=p))


@pytest.mark.parametrize("p", [3, 7, 15, np.int64(15), np.uint8(3)])
def test_an_integer_search_range_is_still_taken(p):
    assert motion.check_search_range(p) == int(p)
    assert Encoder(CodecConfig([_spec()], search_range=p)).header.search_range == int(p)


# ---------------------------------------------------------------- the width of a TSS sum (section 3)


def _largest_term(codes_of):
    """The largest element cost of section 3 over N, z8, the given reference codes and every c8."""
    best = (0, None)
    for n in range(MIN_BITS, MAX_BITS + 1):
        k = 8 - n
        for z8 in range(256):
            z_n = zero_point_n(z8, n)
            a = np.array(sorted(codes_of(z8, n)), np.int64)
            c = np.array([0, 255], np.int64)  # |.| is largest at an end of c8's range
            ref = motion.centred_ref(a, z_n, k)[:, None]
            cost = motion.element_cost(ref, motion.centred_cur(c, z8)[None, :])
            if cost.max() > best[0]:
                best = (int(cost.max()), (n, z8))
    return best


def test_section_3_states_the_largest_term_and_a_sum_width_that_holds_it():
    """Section 3 said terms lie within +-511 and sums use at least 32 bits: a block of 2^24
    elements at N = 2, z8 = 33 sums past 2^32 - 1 (a 32-bit sum wraps and picks another
    vector). The bound is the cost formula's (motion.py), over the codes the requantizer writes
    and over any N-bit code."""
    reachable = _largest_term(lambda z8, n: set(lut(z8, n).tolist()))
    any_code = _largest_term(lambda z8, n: range(1 << n))
    assert reachable == (286, (2, 33)) and any_code == (287, (2, 32))
    block = motion.MAX_BLOCK * motion.MAX_BLOCK * (MAX_TENSOR_ELEMENTS // (motion.MAX_BLOCK * motion.MAX_BLOCK))
    assert block == MAX_TENSOR_ELEMENTS  # B = 64, C = 4096, H = W = 64: a block of 2^24 elements
    assert (286 * block).bit_length() == 33 and (287 * block).bit_length() == 33
    assert (286 * motion.MAX_BLOCK**2).bit_length() == 21  # a per-channel block
    text = " ".join(DOC.read_text().split())
    section = text[text.index("## 3. Blocks and motion") : text.index("## 4. Prediction structures")]
    assert "Each term lies within 0..286" in section and "at least 33 bits unsigned (34 signed)" in section
    assert "fits 21 bits" in section
    assert not re.search(r"±511|at least 32 bits", section)
