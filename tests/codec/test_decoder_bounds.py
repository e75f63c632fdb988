"""The decoder's bounds on hostile input (docs/bitstream.md, 11): work bounded by a section's
bytes, no full-size copies of a map, typed errors only, linear-time resynchronisation."""

import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest

from temposplit.codec import _ctx_kernels as X
from temposplit.codec import _kernels as K
from temposplit.codec import bitstream, ctx, ctx_reference, entropy, fuzz, huffman
from temposplit.codec.bitstream import ANCHOR, KEY, PRED, Packet, StreamHeader, TensorInfo, parse_packet
from temposplit.codec.decoder import CRC_BUDGET, DecodedFrame, Decoder, FrameError, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import (
    BitstreamError,
    ConfigurationError,
    LimitError,
    ReferenceMissingError,
    TruncatedError,
)
from temposplit.codec.payload import (
    PredTensor,
    add_residual,
    add_residual_reference,
    coded_elements,
    gather_blocks,
    mv_lanes,
    read_pred,
    scatter_blocks,
    write_pred,
)
from temposplit.codec.synthetic import correlated_clip

# ----------------------------------------------------------------------------- 1: ctx work per byte


def _intra_kernel(data: bytes, shape, n_bits=4, z_n=0):
    """decode_elements over a whole-map block, intra: (codes, next byte, status)."""
    buf = np.frombuffer(data, np.uint8)
    x = np.zeros(shape, np.uint8)
    flags, block = np.ones((1, 1), np.bool_), max(shape[0], shape[1])
    zeros = np.zeros(shape, np.int8)
    state, status = X.decode_elements(
        X.dec_start(buf), buf, X.new_contexts(), x, x, flags, block, X.MODE_INTRA, n_bits, z_n, zeros, zeros.copy()
    )
    return x, int(state[2]), status


def test_a_one_row_section_stops_within_its_bytes():
    """An anchor is one block over the whole map: with H = 1 it is one row, which a check per
    row let a 4-byte section decode to its end (2^24 elements for a 1 x 4096 x 4096 map)."""
    x, used, status = _intra_kernel(bytes(4), (1, 64, 4096))
    assert status == X.ERR_TRUNCATED
    assert used <= 4 + X.SLACK + 4  # stopped at the renormalization that passed the slack
    assert np.count_nonzero(x) == 0 and used > 4 + X.SLACK


def test_vectors_and_flags_stop_within_their_bytes():
    """One block of 4096 vector lanes, one row of 65536 flags: each stops at the byte read
    past the slack, not at the end of its block or row."""
    data = np.frombuffer(bytes(4), np.uint8)
    state, _, status = X.decode_vectors(X.dec_start(data), data, X.new_contexts(), 1, 1, 4096, 15)
    assert status == X.ERR_TRUNCATED and state[2] <= 4 + X.SLACK + 4
    state, _, status = X.decode_flags(X.dec_start(data), data, X.new_contexts(), 1, 65536)
    assert status == X.ERR_TRUNCATED and state[2] <= 4 + X.SLACK + 4


def test_the_reference_decoder_stops_within_its_bytes_too():
    dec = ctx_reference.RangeDecoder(bytes(4))
    coder = ctx_reference.Coder()
    shape = (1, 64, 1024)  # 4 bytes of zeros hold about 2,000 elements of zeros
    codes, changes = np.zeros(shape, np.uint8), np.zeros(shape, np.int8)
    flags, block = np.ones((1, 1), bool), 64
    with pytest.raises(ValueError, match="ends before"):
        ctx_reference._decode_elements(dec, coder, codes, None, flags, block, False, 4, 0, changes, changes)
    assert dec.pos <= 4 + ctx_reference.SLACK + 4


@pytest.mark.parametrize("n_bits", [2, 4, 8])
def test_kernel_and_reference_fail_a_short_section_at_the_same_element(rng, n_bits):
    """Cut short, a section fails in both at the same bin, with the same codes written and the
    same bytes read: the readable definition and the kernel stay equal on bad data too."""
    shape = (3, 40, 6)
    codes = rng.integers(0, 1 << n_bits, shape).astype(np.uint8)
    data, _ = ctx.encode_anchor(codes, None, None, n_bits, 0)
    failed = 0
    for cut in range(4, len(data) + 1, max(1, len(data) // 25)):
        part = data[:cut]
        fast, used, status = _intra_kernel(part, shape, n_bits)
        if status != 0 and status != X.ERR_TRUNCATED:
            continue  # a value out of range: compared by the equality tests of test_ctx
        dec, coder = ctx_reference.RangeDecoder(part), ctx_reference.Coder()
        slow, changes = np.zeros(shape, np.uint8), np.zeros(shape, np.int8)
        try:
            flags = np.ones((1, 1), bool)
            ctx_reference._decode_elements(dec, coder, slow, None, flags, 40, False, n_bits, 0, changes, changes)
            slow_status = 0
        except ValueError as exc:
            assert "ends before" in str(exc)
            slow_status = X.ERR_TRUNCATED
        assert (status, used) == (slow_status, dec.pos)
        assert (fast == slow).all()
        failed += status == X.ERR_TRUNCATED
    assert failed > 5


def test_a_one_row_stream_of_tiny_packets_costs_little_cpu():
    """ctx KEYs of 39 bytes for a 4096 x 1 x 4096 tensor took 0.12 s of CPU each (a stream of
    100: 11.8 s; 1 MB of them, about an hour); each is now refused within its bytes."""
    data = fuzz._one_row_bomb()
    section, _ = ctx.encode_anchor(np.zeros((1, 4, 4), np.uint8), None, None, 4, 0)
    ctx.decode_anchor(section, (1, 4, 4), None, None, 4, 0)  # the kernels loaded (or compiled) untimed
    start = time.process_time()
    _, out = decode_stream(data)
    spent = time.process_time() - start
    assert len(out) == 20 and all(isinstance(o.error, TruncatedError) for o in out)
    assert spent < 1.0, f"{spent:.2f} s of CPU"


# ----------------------------------------------------------------------------- 2, 3: residuals in place


def _residual_stream(shape, block, coder="zrl", last=0):
    """A zero KEY (uni-2, residual mode), then a PRED coding every block: zero residuals, the
    last one ``last``. Made without motion search. Returns (header, KEY, PRED, the group's
    vector and residual tables)."""
    spec = TensorSpec("x", shape, 1.0, 0, block)
    enc = Encoder(CodecConfig([spec], structure="uni-2", coder=coder, residual=ResidualConfig(threshold=0.2)))
    header = StreamHeader.from_bytes(enc.header_bytes())
    key = enc.push([np.zeros(shape, np.uint8)])[0]
    t = header.tensors[0]
    nby, nbx, _ = mv_lanes(header, t)
    coded = np.ones((nby, nbx), bool)
    residual = np.zeros(coded_elements(t, coded), np.int32)
    residual[-1] = last
    mv, res = [m for m, _ in enc.group_tables], [r for _, r in enc.group_tables]
    tensor = PredTensor(np.zeros((nby, nbx, 2), np.int8), coded, residual)
    payload, _ = write_pred(header, header.n_bits, [tensor], mv, res)
    return header, key, Packet(PRED, 1, 0, payload), (mv, res)


def test_v1_section_readers_return_narrow_symbols():
    """A few bytes of zero runs announce 2^24 residuals: as int32 they were 64 MB, twice."""
    alpha = entropy.Alphabet.residual(4)
    table = huffman.table_lengths(np.ones(entropy.token_alphabet("zrl", alpha), np.int64))
    data, nbits = entropy.encode("zrl", np.full(1000, alpha.zero), alpha, table)
    assert entropy.decode("zrl", data, nbits, 1000, alpha, table).dtype == np.uint16
    data, nbits = entropy.encode("raw", np.arange(30) % alpha.size, alpha)
    assert entropy.decode("raw", data, nbits, 30, alpha).dtype == np.uint16


MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from temposplit.codec import fuzz
    from temposplit.codec.decoder import Decoder, decode_stream
    from temposplit.codec.bitstream import StreamHeader, header_length, parse_packet
    for seed in fuzz.seed_streams(np.random.default_rng(7)):  # every kernel loaded
        decode_stream(seed)
    data = open(sys.argv[1], "rb").read()
    header = StreamHeader.from_bytes(data)
    decoder = Decoder(header)
    key, end = parse_packet(data, header_length(data), decoder.max_payload)
    pred, _ = parse_packet(data, end, decoder.max_payload)
    decoder.decode(key)
    base = fuzz.peak_rss()
    frame = decoder.decode(pred)
    assert int(frame.codes[0].max()) == 0
    print((fuzz.peak_rss() - base) >> 20)
    """
)


def test_a_predicted_frame_of_2_24_residuals_is_rebuilt_in_place(tmp_path):
    """2^24 zero residuals from a PRED of 871 bytes: the decode of that packet grew the peak by
    about 290 MB (int32 copies of the map and of the residuals); now by the residual symbols
    (uint16) and the prediction."""
    make = (  # in a child: making it codes a frame of 2^24 values
        "import sys\n"
        "from temposplit.codec import fuzz\n"
        "open(sys.argv[1], 'wb').write(fuzz._residual_bomb((1024, 128, 128)))\n"
    )
    path = tmp_path / "pred.tsp"
    subprocess.run([sys.executable, "-c", make, str(path)], check=True, timeout=600)
    assert path.stat().st_size < 8192
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) < 100  # 16 MB over the KEY's own peak (290 MB with int32 copies)


def test_one_pixel_blocks_are_rebuilt_without_a_python_loop_per_block():
    """B = 1 on a 1400 x 1400 map: 1.96 M coded blocks took 4.2 s of CPU and 350 MB in the
    per-block Python loops of gather_blocks and scatter_blocks."""
    for side in (8, 1400):  # a small map first: its kernels loaded (or compiled) untimed
        header, key, pred, _ = _residual_stream((1, side, side), 1)
        decoder = Decoder(header)
        decoder.decode(key)
        if side == 8:
            decoder.decode(pred)
    start = time.process_time()
    frame = decoder.decode(pred)
    spent = time.process_time() - start
    assert int(frame.codes[0].max()) == 0
    assert spent < 1.0, f"{spent:.2f} s of CPU"


def test_a_residual_that_leaves_the_code_range_is_an_error():
    header, key, pred, _ = _residual_stream((3, 9, 10), 4, coder="huffman", last=-1)
    decoder = Decoder(header)
    decoder.decode(key)
    with pytest.raises(BitstreamError, match="residual leaves the N-bit code range"):
        decoder.decode(pred)


@pytest.mark.parametrize("shape, block", [((3, 9, 10), 4), ((1, 7, 5), 1), ((4, 16, 16), 8), ((2, 5, 13), 16)])
def test_the_residual_kernel_equals_its_numpy_definition(rng, shape, block):
    """Gather, add, check, scatter: the kernel writes the same codes and finds the same first
    value out of range, with edge blocks cut short."""
    h, w, c = shape[1], shape[2], shape[0]
    nby, nbx = -(-h // block), -(-w // block)
    t = TensorInfo("x", c, h, w, 1.0, 0, block)
    for n_bits in (2, 4, 8):
        top, zero = (1 << n_bits) - 1, (1 << n_bits) - 1
        for trial in range(6):
            pred = rng.integers(0, top + 1, (h, w, c)).astype(np.uint8)
            coded = rng.random((nby, nbx)) < 0.6
            count = coded_elements(t, coded)
            assert count == gather_blocks(pred, coded, block).size
            spread = 2 if trial < 3 else top  # small residuals (in range) or any (mostly out of it)
            symbols = (zero + rng.integers(-spread, spread + 1, count)).astype(np.uint16)
            fast, slow = pred.copy(), pred.copy()
            got = int(K.add_residual(fast, coded, block, symbols, zero, top))
            assert got == add_residual_reference(slow, coded, block, symbols, zero, top)
            assert (fast == slow).all()
            if got < 0:
                rebuilt = gather_blocks(pred, coded, block).astype(int) + symbols.astype(int) - zero
                expected = pred.copy()
                scatter_blocks(expected, rebuilt.astype(np.uint8), coded, block)
                assert (fast == expected).all()
            assert add_residual(pred.copy(), coded, block, symbols, zero, top) == got


def test_the_residual_count_is_computed_without_a_map_of_block_sizes(rng):
    for h, w, b in ((9, 10, 4), (1400, 1400, 1), (5, 13, 16), (64, 64, 8)):
        t = TensorInfo("x", 3, h, w, 1.0, 0, b)
        coded = rng.random((-(-h // b), -(-w // b))) < 0.5
        heights = np.minimum(b, h - b * np.arange(coded.shape[0]))
        widths = np.minimum(b, w - b * np.arange(coded.shape[1]))
        assert coded_elements(t, coded) == int((coded * np.outer(heights, widths)).sum()) * 3


def test_read_pred_leaves_the_residual_as_symbols():
    header, _, pred, (mv, res) = _residual_stream((2, 8, 8), 4, last=3)
    (pt,) = read_pred(header, pred.payload, 4, mv, res)
    assert pt.residual is None and pt.symbols.dtype == np.uint16
    zero = entropy.Alphabet.residual(4).zero
    assert int(pt.symbols[-1]) - zero == 3 and (pt.symbols[:-1] == zero).all()


# ----------------------------------------------------------------------------- 4: tables of another N


def _mixed_n(coder: str, residual: bool) -> tuple[bytes, list[Packet]]:
    """KEY 0 (GROUP_START, N = 6), a refresh ANCHOR 1 at N = 4 with its tables carried, PRED 2
    predicted from frame 0 (N = 6) and PRED 3 from frame 1 (N = 4): the tables of every PRED
    are anchor 1's (section 7)."""
    shape = (4, 8, 8)
    clip = correlated_clip(np.random.default_rng(0), 4, shape, dx=1)

    def enc(n):
        e = Encoder(
            CodecConfig(
                [TensorSpec("x", shape, 0.1, 9, 4)],
                structure="uni-4",
                coder=coder,
                n_bits=n,
                residual=ResidualConfig(threshold=0.0) if residual else None,
            )
        )
        packets = [p for f in clip for p in e.push([f])] + e.flush()
        return e.header_bytes(), packets

    h6, p6 = enc(6)
    _, p4 = enc(4)
    packets = [
        p6[0],
        Packet(ANCHOR, 1, 0, p4[0].payload, 0),
        Packet(PRED, 2, 0, p6[1].payload, 0),
        Packet(PRED, 3, 1, p4[1].payload, 0),
    ]
    return h6, packets


@pytest.mark.parametrize("coder", ["huffman", "zrl"])
def test_a_pred_whose_n_differs_from_its_tables_is_a_typed_frame_error(coder):
    """Its residual table covers another N: a ConfigurationError escaped decode_stream and
    lost the good frames; now that frame alone is lost (ReferenceMissingError)."""
    head, packets = _mixed_n(coder, residual=True)
    _, out = decode_stream(head + b"".join(p.to_bytes() for p in packets))
    assert [type(o).__name__ for o in out] == ["DecodedFrame", "DecodedFrame", "FrameError", "DecodedFrame"]
    assert out[2].index == 2 and isinstance(out[2].error, ReferenceMissingError)
    assert out[3].n_bits == 4
    decoder = Decoder(head)
    for p in packets[:2]:
        decoder.decode(p)
    with pytest.raises(ReferenceMissingError, match="N = 6"):
        decoder.decode(packets[2])


def test_without_residuals_a_pred_of_another_n_still_decodes():
    """The vector table does not depend on N: such a stream decoded before and still does
    (what a valid stream is has not changed)."""
    head, packets = _mixed_n("huffman", residual=False)
    _, out = decode_stream(head + b"".join(p.to_bytes() for p in packets))
    assert all(isinstance(o, DecodedFrame) for o in out)
    assert [o.n_bits for o in out] == [6, 4, 6, 4]


@pytest.mark.parametrize("coder", ["huffman", "zrl"])
def test_a_table_of_the_wrong_size_is_a_bitstream_error_when_decoding(coder):
    alpha = entropy.Alphabet.residual(4)
    size = entropy.token_alphabet(coder, alpha)
    table = huffman.table_lengths(np.ones(size, np.int64))
    data, nbits = entropy.encode(coder, np.full(10, alpha.zero), alpha, table)
    wrong = huffman.table_lengths(np.ones(size - 16, np.int64))
    with pytest.raises(BitstreamError, match="lengths"):
        entropy.decode(coder, data, nbits, 10, alpha, wrong)
    with pytest.raises(BitstreamError, match="needs a Huffman table"):
        entropy.decode(coder, data, nbits, 10, alpha, None)
    with pytest.raises(ConfigurationError):  # the encoder's own table: a configuration error still
        entropy.encode(coder, np.full(10, alpha.zero), alpha, wrong)


# ----------------------------------------------------------------------------- 5: resynchronisation


def _magics(size: int) -> bytes:
    """Packet magics every 20 bytes, each announcing a payload that reaches the end of the data."""
    t = TensorInfo("x", 1024, 128, 128, 1.0, 0, 64)
    head = StreamHeader(structure="intra", group=1, coder="ctx", search_range=3, n_bits=4, tensors=(t,)).to_bytes()
    n = (size - len(head)) // 20
    total = len(head) + 20 * n
    data = bytearray(head)
    for k in range(n):
        data += struct.pack("<4sBBHIII", b"TSPK", 1, 0, 0, k, k, max(total - len(data) - 24, 0))
    return bytes(data)


def test_resynchronisation_checks_crcs_over_a_bounded_number_of_bytes(monkeypatch):
    """Every magic's CRC covered the rest of the data: quadratic (1 MB: 8 s). The CRCs checked
    now cover at most CRC_BUDGET times the data; past that the rest is one LimitError."""
    data = _magics(100_000)
    checked = [0]

    class Counting:
        @staticmethod
        def crc32(b, *args):
            checked[0] += len(b)
            return zlib.crc32(b, *args)

    monkeypatch.setattr(bitstream, "zlib", Counting)
    _, out = decode_stream(data)
    assert checked[0] <= CRC_BUDGET * len(data) + 4096
    assert all(isinstance(o, FrameError) for o in out)
    assert isinstance(out[-1].error, LimitError) and "the rest is skipped" in str(out[-1].error)


def test_a_damaged_stream_resynchronises_as_before():
    """Within the bound nothing changes: a damaged packet is lost and the reader finds the next."""
    enc = Encoder(CodecConfig([TensorSpec("x", (3, 8, 8), 0.1, 0, 4)], structure="intra", coder="raw"))
    clip = correlated_clip(np.random.default_rng(1), 6, (3, 8, 8))
    data = bytearray(enc.header_bytes())
    starts = []
    for f in clip:
        for p in enc.push([f]):
            starts.append(len(data))
            data += p.to_bytes()
    data[starts[2] + 30] ^= 0xFF  # a payload byte of frame 2: its CRC fails
    _, out = decode_stream(bytes(data))
    kinds = [type(o).__name__ for o in out]
    assert kinds == ["DecodedFrame"] * 2 + ["FrameError"] + ["DecodedFrame"] * 3


def test_parse_packet_keeps_no_view_of_the_data():
    """The CRC is taken over a memoryview (no copy); the view is released, so a bytearray
    passed in can still be resized."""
    enc = Encoder(CodecConfig([TensorSpec("x", (3, 8, 8), 0.1, 0, 4)], structure="intra", coder="raw"))
    head = enc.header_bytes()
    packet = enc.push([np.zeros((3, 8, 8), np.uint8)])[0]
    buf = bytearray(head + packet.to_bytes())
    got, end = parse_packet(buf, len(head), 1 << 20)
    assert got.payload == packet.payload and end == len(buf)
    buf.extend(b"more")  # a BufferError if a view were still held
    assert KEY == got.type
