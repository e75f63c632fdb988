"""Fuzzing the decoder: it must answer any bytes with frames or BitstreamErrors, nothing else.

Inputs are valid streams of several configurations, mutated: bytes flipped, runs
overwritten, cut short or spliced; half of the mutated packets get their CRC-32
recomputed so that the payload parsers, not only the checksums, see damaged data.

    python -m temposplit.codec.fuzz --iterations 1000000 --seed 1

runs a long campaign (CI runs 10,000 inputs through the test suite). Every 500th
input is a *memory bomb* (:func:`memory_bombs`): a header announcing the largest tensor
the limits allow (2^24 elements, one of them a single row) followed by tiny, damaged or
valid packets (predicted frames whose residuals fill the map, or whose 2^24 vectors, flags
and codes are all coded, among them), mutated like
the rest. The campaign fails if the process's peak resident memory grows by 256 MB or
more over what the seeds took, made and decoded (docs/bitstream.md, 11: any input under
1 MB decodes or fails within 256 MB, over a decoder whose kernels are loaded), or if a bomb
as made takes longer than its CPU time in ``MEMORY_BOMB_SECONDS`` (a bomb of tiny packets,
1 s: the work is bounded by the bytes).
"""

from __future__ import annotations

import argparse
import resource
import struct
import subprocess
import sys
import time
import zlib

import numpy as np

from temposplit.codec import ctx
from temposplit.codec.bitstream import ANCHOR, FLAG_GROUP_START, KEY, PACKET_MAGIC, PRED, Packet, StreamHeader, section
from temposplit.codec.decoder import decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.errors import BitstreamError
from temposplit.codec.payload import PredTensor, coded_elements, mv_lanes, write_pred
from temposplit.codec.synthetic import correlated_clip


def seed_streams(rng: np.random.Generator) -> list[bytes]:
    """Small valid streams over the configurations the format can express."""
    shapes = [(6, 9, 11), (3, 5, 4)]
    clips = [correlated_clip(rng, 7, s, dx=1) for s in shapes]
    frames = [[a, b] for a, b in zip(*clips, strict=True)]
    configs = [
        dict(structure="intra", coder="raw"),
        dict(structure="uni-2", coder="zvc"),
        dict(structure="bi-3", coder="huffman"),
        dict(structure="bi-5", coder="zrl", residual=ResidualConfig(threshold=0.2), reference="chain"),
        dict(structure="uni-4", coder="huffman", n_bits=6, residual=ResidualConfig(threshold=0.2, dead_zone=8)),
        dict(structure="uni-4", coder="huffman", per_channel=True, refresh_threshold=8.0, key_interval=2),
        dict(structure="bi-3", coder="zrl", rate_target=0.02, fps=10.0),
        dict(structure="uni-4", coder="ctx", residual=ResidualConfig(threshold=0.2), reference="chain"),
        dict(structure="intra", coder="ctx", key_interval=3),
        dict(structure="bi-3", coder="ctx", per_channel=True, n_bits=7),
        dict(structure="uni-4", coder="ctx", residual=ResidualConfig(threshold=0.2), ctx_slices=4),  # 2.2
    ]
    out = []
    for kw in configs:
        specs = [TensorSpec("a", shapes[0], 0.1, 9, 4), TensorSpec("b", shapes[1], 0.2, 0, 2)]
        enc = Encoder(CodecConfig(specs, model_id="fuzz", cut_id="c", **kw))
        data = bytearray(enc.header_bytes())
        for f in frames:
            for p in enc.push(f):
                data += p.to_bytes()
        for p in enc.flush():
            data += p.to_bytes()
        out.append(bytes(data))
    return out


MEMORY_LIMIT = 256 << 20
# CPU seconds each of memory_bombs() may take to decode, in its order: 5 where packets are
# decoded in full (2^24 codes each), 1 where every packet is refused within its own bytes.
# 10 for the ctx predicted frames (three anchors and three predicted frames of 2^24 codes
# decoded in full, each of those with 2^24 vectors and flags: about 2 s on the development machine).
MEMORY_BOMB_SECONDS = (1.0, 1.0, 1.0, 5.0, 5.0, 1.0, 5.0, 10.0)


def memory_bombs() -> list[bytes]:
    """Streams of under 1 MB whose header announces a tensor of 2^24 codes (the limit), each
    of 20 packets; a decoder that allocates before it checks lengths, keeps what a failed
    packet allocated, copies a map of 2^24 values where it need not, or works past what a
    section's bytes can hold, runs out of memory (or time, MEMORY_BOMB_SECONDS) here.

    - A 1024 x 128 x 128 tensor, one stream per coder, intra: with raw, ZVC and Huffman
      (which need at least 2 MB for such a frame) tiny KEY packets; with ZRL and ctx a
      valid one (a whole frame of zeros in under 100 kB), a copy damaged at the end of the
      section (decoded to the last element, then refused) and tiny ones.
    - ctx, a 4096 x 1 x 4096 tensor (one row: an anchor's section is one block of one row)
      and tiny KEY packets, each refused within the few bytes it has.
    - ZRL in the residual mode: a zero KEY, then PRED packets that code every block's
      residual (2^24 values from a few hundred bytes of zero runs): two valid, two whose
      last value leaves the code range (refused after all of it), and tiny ones.
    - ctx in the residual mode, a 1 x 4096 x 4096 tensor of one-element blocks (2^24 vectors
      and flags a predicted frame): three anchors whose codes all change, then predicted
      frames coding every block, two valid, one cut a byte short, and tiny ones refused
      within their bytes (:func:`_ctx_pred_bomb`)."""
    shape = (1024, 128, 128)
    out = []
    for coder in ("raw", "zvc", "huffman", "zrl", "ctx"):
        enc = Encoder(CodecConfig([TensorSpec("x", shape, 1.0, 0, 8)], structure="intra", coder=coder, fps=10.0))
        data = bytearray(enc.header_bytes())
        packets = []
        if coder in ("zrl", "ctx"):
            valid = enc.push([np.zeros(shape, np.uint8)])[0]
            packets.append(valid.payload)
            for k in range(1):
                damaged = bytearray(valid.payload)
                damaged[-1 - k] ^= 0x5A
                packets.append(bytes(damaged))
        tiny = bytes([4, 1]) + (bytes([1]) if coder in ("huffman", "zrl") else bytes([0]) if coder == "ctx" else b"")
        packets += [tiny + _TINY_SECTION] * (20 - len(packets))
        for i, payload in enumerate(packets):
            data += Packet(KEY, i, i, payload).to_bytes()
        out.append(bytes(data))
    out.append(_one_row_bomb())
    out.append(_residual_bomb(shape))
    out.append(_ctx_pred_bomb())
    return out


_TINY_SECTION = struct.pack("<I", 64) + bytes([0x5A]) * 8  # 64 bits: a ctx section of 8 bytes too


def _one_row_bomb() -> bytes:
    spec = TensorSpec("x", (4096, 1, 4096), 1.0, 0, 8)
    enc = Encoder(CodecConfig([spec], structure="intra", coder="ctx", ctx_slices=1, fps=10.0))
    data = bytearray(enc.header_bytes())
    for i in range(20):  # N = 4, group length 1, intra
        data += Packet(KEY, i, i, bytes([4, 1, 0]) + _TINY_SECTION).to_bytes()
    return bytes(data)


def _residual_bomb(shape) -> bytes:
    spec = TensorSpec("x", shape, 1.0, 0, 8)
    residual_mode = ResidualConfig(threshold=0.2)
    enc = Encoder(CodecConfig([spec], structure="uni-20", coder="zrl", residual=residual_mode, fps=10.0))
    data = bytearray(enc.header_bytes())
    data += enc.push([np.zeros(shape, np.uint8)])[0].to_bytes()  # KEY 0: the anchor, its tables carried
    header = StreamHeader.from_bytes(bytes(data))
    t = header.tensors[0]
    nby, nbx, _ = mv_lanes(header, t)
    coded = np.ones((nby, nbx), bool)
    residual = np.zeros(coded_elements(t, coded), np.int32)
    mv_tables, res_tables = [m for m, _ in enc.group_tables], [r for _, r in enc.group_tables]
    mvs = np.zeros((nby, nbx, 2), np.int8)
    valid, _ = write_pred(header, header.n_bits, [PredTensor(mvs, coded, residual)], mv_tables, res_tables)
    residual[-1] = -1  # the last code, 0 in the zero frame, becomes -1
    bad, _ = write_pred(header, header.n_bits, [PredTensor(mvs, coded, residual)], mv_tables, res_tables)
    packets = [valid, valid, bad, bad] + [_TINY_SECTION] * 15
    for i, payload in enumerate(packets, 1):
        data += Packet(PRED, i, 0, payload).to_bytes()
    return bytes(data)


def _ctx_pred_bomb() -> bytes:
    """A ctx stream of under 500 kB whose predicted frames each code 2^24 vector components,
    2^24 block flags and 2^24 codes: KEY 0 (zeros), ANCHOR 1 (every code +1 against 0) and
    ANCHOR 2 (a refresh, every code -1 against 1), then PREDs 3 and 4 against 2 (every block
    coded, every code +1), PRED 5 the same cut one byte short (decoded to its last code, then
    refused, while the decoder holds its four frames) and tiny PREDs. With the vectors held
    whole beside copies of the prediction and of the reconstruction, it raised a warm
    decoder's peak by 288 MB (decode_stream; 271 MB packet by packet), now by 194 (178)."""
    spec = TensorSpec("x", (1, 4096, 4096), 1.0, 0, 1)
    residual_mode = ResidualConfig(threshold=0.2)
    config = CodecConfig([spec], structure="uni-20", coder="ctx", residual=residual_mode, ctx_slices=1, fps=10.0)
    data = bytearray(Encoder(config).header_bytes())
    header = StreamHeader.from_bytes(bytes(data))
    t, n_bits = header.tensors[0], 4
    zeros = np.zeros((t.height, t.width, t.channels), np.uint8)
    ones = zeros + 1
    key, changes = ctx.encode_anchor(zeros, None, None, n_bits, 0)
    up, changes = ctx.encode_anchor(ones, zeros, changes, n_bits, 0)
    down, changes = ctx.encode_anchor(zeros, ones, changes, n_bits, 0)
    nby, nbx, lanes = mv_lanes(header, t)
    mvs, coded = np.zeros((nby, nbx, lanes, 2), np.int8), np.ones((nby, nbx), bool)
    pred, _ = ctx.encode_pred(mvs, header.search_range, coded, zeros, ones, changes, t.block, n_bits)
    short = section(pred[:-1], 8 * len(pred) - 8)  # decoded to its last code, then refused
    anchors = [(KEY, key, 0, 0, FLAG_GROUP_START), (ANCHOR, up, 1, 0, FLAG_GROUP_START), (ANCHOR, down, 1, 1, 0)]
    for i, (kind, coded_section, mode, reference, flags) in enumerate(anchors):
        payload = bytes([n_bits, 1, mode]) + section(coded_section, 8 * len(coded_section))
        data += Packet(kind, i, reference, payload, flags).to_bytes()
    payloads = [section(pred, 8 * len(pred))] * 2 + [short] + [_TINY_SECTION] * 14
    for i, payload in enumerate(payloads, 3):
        data += Packet(PRED, i, 2, payload).to_bytes()
    return bytes(data)


def memory_bombs_made_apart() -> list[bytes]:
    """:func:`memory_bombs`, made in a child process: making them codes whole frames of 2^24
    codes, which would raise this process's peak memory before it is measured."""
    code = (
        "import struct, sys\n"
        "from temposplit.codec.fuzz import memory_bombs\n"
        "for b in memory_bombs():\n"
        "    sys.stdout.buffer.write(struct.pack('<I', len(b)) + b)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600, check=True)
    out, pos, data = [], 0, run.stdout
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def peak_rss() -> int:
    """The process's peak resident memory in bytes: VmHWM, its address space's own peak
    since its exec. (``ru_maxrss`` is no measure in a child: Linux folds the parent's peak
    into it at the exec, so a test worker of 2 GB made a decode of 430 MB read 2,018 MB.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: an upper bound


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 6))
        if not buf:
            break
        i = int(rng.integers(0, len(buf)))
        if op == 0:
            buf[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            n = int(rng.integers(1, 9))
            buf[i : i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        elif op == 2:
            del buf[i:]
        elif op == 3:
            del buf[i : i + int(rng.integers(1, 64))]
        elif op == 4:
            buf[i:i] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        else:  # a field set to an extreme
            v = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF])
            buf[i : i + 4] = struct.pack("<I", int(v))[: len(buf) - i]
    if rng.random() < 0.5:
        _fix_crcs(buf)
    return bytes(buf)


def _fix_crcs(buf: bytearray) -> None:
    """Recompute the CRC of every packet whose length field still fits the data."""
    pos = bytes(buf).find(PACKET_MAGIC)
    while 0 <= pos and pos + 20 <= len(buf):
        plen = struct.unpack_from("<I", buf, pos + 16)[0]
        end = pos + 20 + plen + 4
        if end <= len(buf):
            struct.pack_into("<I", buf, end - 4, zlib.crc32(bytes(buf[pos : end - 4])))
        pos = bytes(buf).find(PACKET_MAGIC, pos + 4)


def check_one(data: bytes, time_limit: float = 5.0) -> str:
    """Decode untrusted bytes; returns 'frames' or 'error'. Anything else propagates.

    The time limit is on this process's CPU time, the decoder's own work: wall time also
    counts whatever else the machine runs (a parallel test suite), which made the check
    fail on a loaded machine for an input that decodes in well under a second."""
    start = time.process_time()
    try:
        decode_stream(data)
        outcome = "frames"
    except BitstreamError:
        outcome = "error"
    if time.process_time() - start > time_limit:
        raise TimeoutError(f"decoding {len(data)} bytes took over {time_limit} s of CPU time")
    return outcome


def run(iterations: int, seed: int = 0, report=None) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    seeds = seed_streams(rng)
    bombs = memory_bombs_made_apart()
    for s in seeds:  # every decoder kernel loaded (or compiled) first: the bound is the decoding's
        decode_stream(s)
    baseline = peak_rss()
    for b, seconds in zip(bombs, MEMORY_BOMB_SECONDS, strict=True):  # as made, then mutated among the rest
        counts_bomb = check_one(b, seconds)
        assert counts_bomb == "frames"  # every packet fails alone: FrameErrors, no exception
    counts = {"frames": 0, "error": 0}
    for i in range(iterations):
        limit = 5.0
        if i % 500 == 250:
            data = mutate(rng, bombs[(i // 500) % len(bombs)])
            limit = 60.0  # two frames of 2^24 codes decoded in full
        elif rng.random() < 0.05:
            data = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        else:
            data = mutate(rng, seeds[i % len(seeds)])
        try:
            counts[check_one(data, limit)] += 1
        except Exception as exc:  # a decoder bug: save the input so it can be replayed
            path = f"fuzz-crash-{seed}-{i}.bin"
            with open(path, "wb") as f:
                f.write(data)
            raise AssertionError(f"input {i} (saved to {path}) raised {type(exc).__name__}: {exc}") from exc
        if report and (i + 1) % 10000 == 0:
            report(i + 1, counts)
    grown = peak_rss() - baseline
    if grown >= MEMORY_LIMIT:
        raise AssertionError(f"decoding the inputs raised the peak memory by {grown >> 20} MB (limit 256 MB)")
    counts["peak_growth_mb"] = grown >> 20
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts = run(args.iterations, args.seed, report=lambda n, c: print(f"{n} inputs: {c}", file=sys.stderr))
    print(f"{args.iterations} inputs in {time.perf_counter() - t0:.1f} s, no crash: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
