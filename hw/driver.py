"""The accelerator's driver: one Python API, two transports (simulated RTL now, PYNQ later).

Use::

    accel = Accelerator(PynqTransport(overlay.temposplit_accel_0, overlay.axi_dma_0))
    accel.load_table(lengths)                                  # code lengths of the anchor table
    res = accel.encode_anchor(q8, z8=z8, n_bits=4, store_ref=True)
    res.data, res.bits, res.histogram                          # the section and the next table's source
    hist = accel.histogram(q8, z8=z8, n_bits=4).histogram       # a KEY's own table's source, a word a cycle
    sec = accel.ctx_anchor(q8, z8=z8, n_bits=5, ref=ref_codes, ref_changes=d_ref)  # one CTX pass
    sec.data, sec.changes                                      # the ctx section, the new change map
    mvs, costs = accel.motion(q8_next, z8=z8, n_bits=4, zn_ref=z_n, block=4, search=7)
    data, bits = accel.encode_motion_vectors(mvs, search=7, lengths=mv_lengths)

Every operation is written once, as a generator of transport requests
(:class:`Operations`), so that a synchronous transport (PYNQ: MMIO + AXI DMA) and an
asynchronous one (cocotb: :class:`SimTransport` drives the Verilated RTL with
cocotbext-axi) run the very same register and stream sequence. :class:`Accelerator`
runs it synchronously, :class:`AsyncAccelerator` with ``await``.

Maps are channel-last ``(H, W, C)`` uint8 arrays (the bitstream's element order); the
register offsets and stream formats come from :mod:`temposplit.hw.regmap`. The module
needs only NumPy and the golden codec (both run on the board).
"""

from __future__ import annotations

import functools
import numbers
import operator
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from temposplit.codec import ctx_records, huffman
from temposplit.codec.ctx_records import RECORD_BITS
from temposplit.codec.ctx_reference import N_CONTEXTS, UNARY_MAX
from temposplit.codec.motion import check_block, check_search_range, grid_shape, tss_steps
from temposplit.codec.quantize import check_bits, check_zero_point, lut, zero_point_n
from temposplit.errors import TemposplitError
from temposplit.hw import regmap
from temposplit.hw.regmap import REG, mode, pack


class AcceleratorError(TemposplitError):
    """A request the accelerator cannot serve (shape over its limits, a bad table, a timeout):
    a :class:`~temposplit.errors.TemposplitError`, so the command line reports it in one line."""


class AcceleratorLimitError(AcceleratorError):
    """A request over what this accelerator can do (a map, block or reference over its
    registers or on-chip memories, a mode or engine its build lacks, a DMA buffer the board
    cannot allocate), refused by the driver before any register is written (a buffer: before
    the operation's START, and in MOTION and BAND_MOTION before any register): the accelerator
    is untouched, so a caller may do the work in software instead. Every other
    :class:`AcceleratorError` (a DMA error or stall, a STATUS not DONE, a closed transport, a
    malformed output, a bad argument) is not a limit and must not be hidden by a fallback."""


@dataclass
class EncodeResult:
    data: bytes  # the section's bytes, ceil(bits / 8)
    bits: int
    histogram: np.ndarray | None  # counts of the alphabet's symbols (int64), when asked for
    cycles: int


@dataclass
class HistogramResult:
    histogram: np.ndarray  # counts of the alphabet's symbols (int64)
    cycles: int


CTX_MAX_BYTES_PER_ELEMENT = 16  # the bound of a ctx section's bytes per element (ctx_anchor)

# Value records the fabric codes as codec.ctx_records.encode_records does: those the codec
# makes (ctx_records._values). Its contexts lie below N_CONTEXTS (the magnitude bins' up to
# mag_base + 3 mag_step); its magnitude steps are 1 (vectors), 4 (temporal) and 5 (intra),
# the three RecordUnpack multiplies by (0 for the flags, which have no magnitude bin);
# unary_n is at most UNARY_MAX, a suffix (suffix_w bits of m - UNARY_MAX, at most m's 8)
# follows UNARY_MAX unary bins only, and m < UNARY_MAX + 2^suffix_w.
MAG_STEPS = (1, 4, 5)
SUFFIX_MAX_BITS = ctx_records.FIELDS["m"][1]


@dataclass
class CtxResult:
    data: bytes  # the ctx section (docs/bitstream.md 6.2.3)
    changes: np.ndarray | None  # an anchor's change map D (int8 (H, W, C)): sgn(x - p), 0 intra; None for records
    cycles: int


@dataclass
class CtxSlicesResult:
    sections: list[bytes]  # slice i's ctx section (codec.ctx_records.encode_records of its records)
    cycles: int


# CTX slices (docs/fabric.md "Slices"): the tag bits of an input word and of an output word,
# defined in hw/regmap.py with the stream formats
SLICE_LANE_BIT, SLICE_LAST_BIT, SLICE_ENGINE_LSB = regmap.SLICE_LANE_BIT, regmap.SLICE_LAST_BIT, regmap.SLICE_ENGINE_LSB
OUT_COUNT_LSB, OUT_ENGINE_LSB = regmap.SLICE_COUNT_LSB, regmap.SLICE_OUT_ENGINE_LSB
OUT_LAST_BIT, OUT_LANE_BIT = regmap.SLICE_OUT_LAST_BIT, regmap.SLICE_OUT_LANE_BIT
OUT_PAYLOAD = regmap.SLICE_PAYLOAD_BYTES
_SLICE_TAG = np.uint64(
    (1 << SLICE_LANE_BIT) | (1 << SLICE_LAST_BIT) | (((1 << regmap.SLICE_ENGINE_BITS) - 1) << SLICE_ENGINE_LSB)
)


def word_bins(stream_words) -> np.ndarray:
    """The bins each stream word of value records codes (``codec.ctx_records.words``): a run
    word one per zero value, a record its zero bin, then (not zero) its sign bin, its unary
    bins up to the first 0 and, past ``unary_n`` ones, the suffix's bypass bins."""
    w = np.asarray(stream_words, np.uint64)
    run = (w >> np.uint64(ctx_records.RUN_FLAG)) & np.uint64(1)
    count = (w >> np.uint64(ctx_records.RUN_COUNT[0])) & np.uint64((1 << ctx_records.RUN_COUNT[1]) - 1)
    f = ctx_records.unpack(w & np.uint64((1 << RECORD_BITS) - 1))
    m = f["m"].astype(np.int64)
    un = f["unary_n"].astype(np.int64)
    nz = 1 - f["zero"].astype(np.int64)
    body = f["has_sign"].astype(np.int64) + np.minimum(m + 1, un) + np.where(m >= un, f["suffix_w"].astype(np.int64), 0)
    return np.where(run.astype(bool), count.astype(np.int64), 1 + nz * body)


def deal_slices(slice_words, engines: int, lanes: int = 1) -> np.ndarray:
    """The input stream of a CTX pass of slices: slice i's stream words tagged with its
    lane unit v = i mod (``engines`` x ``lanes``), that is engine v mod E (bits 58-59) and
    lane v div E (bit 56), and its last word with bit 57; the units' words interleaved so
    that the next word is always the one of the unit with the fewest bins sent so far
    (ties: the lower unit), each unit's slices one after another."""
    units = engines * lanes
    per_unit = [[] for _ in range(units)]
    for i, w in enumerate(slice_words):
        v = i % units
        w = np.asarray(w, np.uint64).copy()
        w |= np.uint64(((v % engines) << SLICE_ENGINE_LSB) | ((v // engines) << SLICE_LANE_BIT))
        w[-1] |= np.uint64(1 << SLICE_LAST_BIT)
        per_unit[v].append(w)
    words, keys, unit = [], [], []
    for v, parts in enumerate(per_unit):
        if not parts:
            continue
        w = np.concatenate(parts)
        b = word_bins(w & ~_SLICE_TAG)
        words.append(w)
        keys.append(np.cumsum(b) - b)  # the unit's bins sent before the word
        unit.append(np.full(w.size, v))
    words, keys, unit = np.concatenate(words), np.concatenate(keys), np.concatenate(unit)
    return words[np.lexsort((unit, keys))]  # each unit's keys rise: its order is kept


def split_slices(out: bytes, n_slices: int, engines: int, lanes: int = 1) -> list[bytes]:
    """The S sections from a CTX pass's tagged output words (slice i is lane unit
    v = i mod (E x lanes)'s (i // (E x lanes))-th; v = engine + E x lane)."""
    if len(out) % 8:
        raise AcceleratorError(f"CTX slices sent {len(out)} bytes, not whole tagged words")
    w = np.frombuffer(out, "<u8")
    cnt = ((w >> np.uint64(OUT_COUNT_LSB)) & np.uint64((1 << regmap.SLICE_COUNT_BITS) - 1)).astype(np.int64)
    eng = ((w >> np.uint64(OUT_ENGINE_LSB)) & np.uint64((1 << regmap.SLICE_ENGINE_BITS) - 1)).astype(np.int64)
    lane = ((w >> np.uint64(OUT_LANE_BIT)) & np.uint64(1)).astype(np.int64)
    last = ((w >> np.uint64(OUT_LAST_BIT)) & np.uint64(1)).astype(bool)
    if np.any((cnt < 1) | (cnt > OUT_PAYLOAD)) or np.any(eng >= engines) or np.any(lane >= lanes):
        raise AcceleratorError("CTX slices sent a malformed tagged word")
    raw = np.frombuffer(out, np.uint8).reshape(-1, 8)
    units = engines * lanes
    unit = eng + engines * lane
    sections = [bytearray() for _ in range(n_slices)]
    nxt = list(range(units))  # each unit's slice now coming
    for k in range(w.size):
        v = int(unit[k])
        if nxt[v] >= n_slices:
            raise AcceleratorError(f"CTX slices: lane unit {v} sent more slices than asked for")
        sections[nxt[v]] += raw[k, : cnt[k]].tobytes()
        if last[k]:
            nxt[v] += units
    if any(nxt[v] < n_slices for v in range(min(units, n_slices))):
        raise AcceleratorError("CTX slices: a slice did not end")
    return [bytes(b) for b in sections]


# ----------------------------------------------------------------------------- transports


class Transport(Protocol):
    """What a transport offers (sync; an async transport has the same methods as coroutines)."""

    def write(self, offset: int, value: int) -> None: ...

    def read(self, offset: int) -> int: ...

    def stream(self, data: bytes, max_out: int) -> bytes:
        """Send ``data`` on the input stream and return the output packet (up to its TLAST)."""
        ...

    # Optional: ``reserve(nbytes_in, max_out)``, the buffers of the operation's stream, asked
    # for before its START (a transport without it, e.g. the simulators', is not asked).


class _DmaProblem(Exception):
    """A stall or a channel's error seen while waiting (PynqTransport turns it into an AcceleratorError)."""


class PynqTransport:
    """The board: the accelerator's registers (MMIO) and an AXI DMA in simple mode.

    ``ip`` is the accelerator's MMIO (or anything with ``.mmio``, or ``read``/``write``),
    ``dma`` the overlay's ``pynq.lib.dma.DMA`` (``sendchannel``/``recvchannel`` with
    ``transfer``/``wait``/``idle``/``running``/``start``, ``buffer_max_size``, ``mmio``),
    ``allocate`` is ``pynq.allocate`` (imported lazily when not given). :mod:`temposplit.hw.pynq_driver`
    builds it from an overlay; ``sim/test_pynq.py`` runs it against the Verilated RTL.

    The receive is started before the send (the S2MM channel must be ready for the first
    output word, or the accelerator stalls); the input goes out in transfers of at most the
    DMA's length limit (the accelerator ignores the input TLAST, so the pieces are one
    stream); an operation's output is one TLAST-terminated packet and must fit one receive
    (at most ``buffer_max_size`` bytes: 2^26 - 1 with the overlay's 26-bit length register).
    Buffers are kept and grown, not allocated per call; caches are flushed before a send
    and invalidated after a receive. The input is staged through a buffer of at most
    ``STAGE_BYTES`` (whole transfers of the DMA's limit, if that is smaller): a piece is
    copied in, flushed and sent, and the next waits for that send, so the input's size
    never sets a buffer's (a ResNet-50 cut's BAND_MOTION stream is over 100 MB, the
    PYNQ-Z2's whole CMA pool). :meth:`reserve` allocates an operation's buffers before its
    START (``Operations`` asks for it): a buffer the board cannot allocate is an
    :class:`AcceleratorLimitError` with the accelerator not started, and a buffer being
    replaced is dropped before it is freed, so a freed one is never used again.

    A stall does not hang the program: PYNQ's ``wait()`` spins until the channel is idle,
    for ever if the fabric or the DMA stops, so the transport polls the channels itself
    (``idle``; ``error`` where PYNQ has it, 2.7 and 3.x; ``running``, which an error clears)
    and calls ``wait()`` only once the channel is idle (it then returns at once, having
    invalidated the receive buffer and, on PYNQ 3, set ``transferred``). A stream gets
    ``timeout_s`` seconds (wall clock) in all, pieces and receive together; by default
    :meth:`stall_timeout`: ``STALL_FLOOR_S`` plus its bytes (in and out) at
    ``STALL_BYTES_PER_S``, far beyond any pass (estimated from the cycle counts at 100 MHz:
    the slowest, CTX of value records with long codes, moves over 10 MB/s; a predicted
    frame's MOTION, 35 kB, takes under 1 ms). A stall, a channel that reports an error or halts, or a DMA driver's own
    ``TimeoutError`` resets the DMA (soft reset, both channels started again, each wait
    bounded by ``RESET_TIMEOUT_S``) and raises an :class:`AcceleratorError` saying which
    channel stalled or failed; the accelerator itself may then stay BUSY (reload the
    overlay). A DMA driver whose clock is not the wall clock says so with
    ``simulated = True`` (``sim/pynqsim.py``'s, which reports a stalled stream itself after
    so many simulated cycles): there the default limit is off.
    """

    S2MM_LENGTH = 0x58
    MM2S_DMACR = 0x00
    S2MM_DMACR = 0x30
    DMASR = 0x04  # a channel's status register, after its DMACR
    DMACR_RUN = 0x1
    DMACR_RESET = 0x4
    DMASR_ERRORS = ((0x10, "internal error"), (0x20, "slave error"), (0x40, "decode error"))
    ALIGN = 64  # the pieces of a split send start on a cache line (and on the 64-bit DMA's word)
    STALL_FLOOR_S = 10.0  # the least time a stream gets before it is a stall
    STALL_BYTES_PER_S = 1_000_000  # and its bytes, in and out, at this rate (every pass is over 10x faster)
    RESET_TIMEOUT_S = 1.0  # the DMA's soft reset and the channels' restart (PG021: a few cycles)
    SPIN_S = 0.001  # a wait polls flat out this long (most passes end sooner), then sleeps between polls
    POLL_SLEEP_S = 0.0001
    STAGE_BYTES = 8 << 20  # the input's staging buffer at most (the PYNQ-Z2's CMA pool is 128 MiB)
    MIN_BUFFER = 4096

    def __init__(self, ip, dma, allocate=None, timeout_s: float | None = None):
        if timeout_s is not None and (
            isinstance(timeout_s, (bool, np.bool_)) or not isinstance(timeout_s, numbers.Real) or not timeout_s > 0
        ):
            raise AcceleratorError(f"the DMA's timeout must be a number of seconds over 0, not {timeout_s!r}")
        self.mmio = getattr(ip, "mmio", ip)
        self.dma = dma
        self._allocate = allocate
        self.max_transfer = int(getattr(dma, "buffer_max_size", (1 << 14) - 1))
        self.timeout_s = timeout_s
        self._buffers = {}
        self.closed = False

    def stall_timeout(self, nbytes: int) -> float:
        """Seconds a stream moving ``nbytes`` (in and out) may take before it is a stall:
        ``timeout_s`` when given, else ``STALL_FLOOR_S`` + ``nbytes`` / ``STALL_BYTES_PER_S``
        (no limit on a ``simulated`` DMA, which has its own)."""
        if self.timeout_s is not None:
            return float(self.timeout_s)
        if getattr(self.dma, "simulated", False):
            return float("inf")
        return self.STALL_FLOOR_S + nbytes / self.STALL_BYTES_PER_S

    def _check_open(self):
        if self.closed:  # its buffers are freed: a use would allocate new ones that nothing frees
            raise AcceleratorError("the accelerator's PYNQ transport is closed (open the overlay again)")

    def write(self, offset, value):
        self._check_open()
        self.mmio.write(offset, int(value))

    def read(self, offset):
        self._check_open()
        return int(self.mmio.read(offset))

    def _piece(self) -> int:
        """Bytes of one input transfer: the DMA's limit, at most ``STAGE_BYTES``, in whole cache lines."""
        piece = min(self.max_transfer, self.STAGE_BYTES)
        return max(self.ALIGN, piece - piece % self.ALIGN)

    def _stage(self, nbytes: int) -> int:
        """Bytes of input staged at a time: all of it, or as many whole pieces as ``STAGE_BYTES`` holds."""
        piece = self._piece()
        return min(int(nbytes), max(piece, self.STAGE_BYTES - self.STAGE_BYTES % piece))

    def _out_bytes(self, max_out) -> int:
        return min(max(int(max_out), 8), self.max_transfer)

    def reserve(self, nbytes_in, max_out):
        """Allocate (or keep) the buffers a stream of ``nbytes_in`` bytes in and up to
        ``max_out`` out needs: the receive's and the input's staging buffer (at most
        ``STAGE_BYTES``). ``Operations`` asks for it before an operation's START, so a buffer
        the board cannot allocate (PYNQ's CMA pool exhausted) is an
        :class:`AcceleratorLimitError` with nothing started."""
        self._check_open()
        self._buffer("out", self._out_bytes(max_out))
        if nbytes_in:
            self._buffer("in", self._stage(nbytes_in))

    def _buffer(self, key, nbytes):
        buf = self._buffers.get(key)
        if buf is not None and buf.nbytes >= nbytes:
            return buf
        if buf is not None:  # dropped before it is freed: a failed allocation below leaves none cached
            del self._buffers[key]
            buf.freebuffer()
        if self._allocate is None:
            from pynq import allocate

            self._allocate = allocate
        size = max(self.MIN_BUFFER, 1 << (int(nbytes) - 1).bit_length())
        try:
            buf = self._allocate(shape=(size,), dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - pynq's own (RuntimeError, MemoryError, XRT's)
            raise AcceleratorLimitError(
                f"the DMA's {'input' if key == 'in' else 'output'} buffer of {size} bytes could not be "
                f"allocated ({type(exc).__name__}: {exc})"
            ) from exc
        self._buffers[key] = buf
        return buf

    def stream(self, data, max_out):
        self._check_open()
        send, recv = self.dma.sendchannel, self.dma.recvchannel
        n = len(data)
        out_len = self._out_bytes(max_out)
        try:
            self.reserve(n, max_out)  # kept from the operation's reserve(): nothing to allocate
        except AcceleratorLimitError as exc:  # not a limit here: the operation may have been started
            raise AcceleratorError(f"{exc}; reload the overlay if the accelerator stays BUSY") from exc
        dst = self._buffers["out"]
        src = self._buffers.get("in")
        view = np.frombuffer(data, np.uint8) if n else None
        piece = self._piece()
        span = self._stage(n)
        limit = self.stall_timeout(n + out_len)
        deadline = time.monotonic() + limit
        try:
            recv.transfer(dst, nbytes=out_len)
            for base in range(0, n, span):  # stage a span (whole pieces), send its pieces, then the next
                m = min(span, n - base)
                src[:m] = view[base : base + m]
                src.flush()
                for start in range(0, m, piece):
                    send.transfer(src, start=start, nbytes=min(piece, m - start))
                    self._wait(send, "MM2S", deadline, limit)
            self._wait(recv, "S2MM", deadline, limit)
        except _DmaProblem as exc:
            self._fail(str(exc))
        except TimeoutError as exc:  # a DMA driver's own limit (sim/pynqsim.py's, in simulated cycles)
            self._fail(f"the AXI DMA stalled ({exc})", exc)
        except RuntimeError as exc:  # PYNQ's: a channel not started, not idle, or in an error state
            self._fail(
                f"the AXI DMA failed ({exc}); an operation's output must fit one receive of at most "
                f"{self.max_transfer} bytes (the DMA's c_sg_length_width)",
                exc,
            )
        dst.invalidate()
        got = getattr(recv, "transferred", None)
        if got is None:  # PYNQ before 3.0: the S2MM_LENGTH register holds the bytes written
            got = self.dma.mmio.read(self.S2MM_LENGTH)
        return bytes(dst[: int(got)])

    def _wait(self, channel, name, deadline, limit):
        """Wait for ``channel``'s transfer: poll its ``idle`` until ``deadline``, both
        channels' ``error``/``running`` meanwhile (an S2MM error stops the MM2S too), then
        PYNQ's ``wait()``, which returns at once on an idle channel."""
        start = time.monotonic()
        while not channel.idle:
            for other, other_name in ((self.dma.sendchannel, "MM2S"), (self.dma.recvchannel, "S2MM")):
                if other is not None and (getattr(other, "error", False) or not other.running):
                    raise _DmaProblem(self._channel_error(other_name))
            now = time.monotonic()
            if now >= deadline:
                what = "input (it took no more)" if name == "MM2S" else "output (its packet did not end)"
                raise _DmaProblem(
                    f"the accelerator's {what} stalled: the DMA's {name} transfer did not finish within "
                    f"{limit:g} s (PynqTransport's timeout_s)"
                )
            if now - start > self.SPIN_S:
                time.sleep(self.POLL_SLEEP_S)
        channel.wait()

    def _channel_error(self, name):
        offset = self.MM2S_DMACR if name == "MM2S" else self.S2MM_DMACR
        try:
            sr = int(self.dma.mmio.read(offset + self.DMASR))
        except Exception:  # noqa: BLE001 - only for the message: the error itself is reported anyway
            return f"the AXI DMA's {name} channel stopped"
        errors = [text for bit, text in self.DMASR_ERRORS if sr & bit] or ["halted"]
        hint = (
            f"; an operation's output must fit one receive of at most {self.max_transfer} bytes "
            f"(the DMA's c_sg_length_width)"
            if name == "S2MM" and sr & 0x10
            else ""
        )
        return f"the AXI DMA's {name} channel stopped with an error (DMASR 0x{sr:08X}: {', '.join(errors)}){hint}"

    def _fail(self, message, cause=None):
        """Reset the DMA after a stall or an error and raise the AcceleratorError saying so."""
        try:
            self._reset_dma()
            message += "; the DMA was reset (reload the overlay if the accelerator stays BUSY)"
        except AcceleratorError as exc:
            message += f"; then {exc}"
        raise AcceleratorError(message) from cause

    def _until(self, ready, deadline, what):
        while not ready():
            if time.monotonic() >= deadline:
                raise AcceleratorError(f"{what} within {self.RESET_TIMEOUT_S:g} s: reload the overlay")
            time.sleep(self.POLL_SLEEP_S)

    def _reset_dma(self):
        """Soft-reset both channels (after an error the DMA halts; after a stall a transfer
        is pending) and start them again. PYNQ's ``start()`` waits for ``running`` without a
        limit, so the channels are started here first by their DMACR (PG021's register map,
        no PYNQ internals), each wait bounded; ``start()`` then finds them running and
        returns at once, ready for a first transfer."""
        mmio = self.dma.mmio
        deadline = time.monotonic() + self.RESET_TIMEOUT_S
        mmio.write(self.MM2S_DMACR, self.DMACR_RESET)  # either channel's bit resets the whole DMA
        self._until(
            lambda: not int(mmio.read(self.MM2S_DMACR)) & self.DMACR_RESET,
            deadline,
            "the AXI DMA's soft reset did not complete",
        )
        channels = [
            (channel, name, offset)
            for channel, name, offset in (
                (self.dma.sendchannel, "MM2S", self.MM2S_DMACR),
                (self.dma.recvchannel, "S2MM", self.S2MM_DMACR),
            )
            if channel is not None
        ]
        for _, _, offset in channels:
            mmio.write(offset, self.DMACR_RUN)
        for channel, name, _ in channels:
            failed = f"the AXI DMA's {name} channel did not start after its reset"
            self._until(lambda c=channel: c.running, deadline, failed)
            channel.start()

    def close(self):
        for buf in self._buffers.values():
            buf.freebuffer()
        self._buffers.clear()
        self.closed = True


class SimTransport:
    """The RTL under cocotb: cocotbext-axi's AXI-Lite master and AXI-Stream source/sink.

    Built by the testbench (``sim/tb_accel.py``) from the DUT's ports; its methods are
    coroutines, so it pairs with :class:`AsyncAccelerator`.
    """

    def __init__(self, axil, source, sink):
        self.axil = axil
        self.source = source
        self.sink = sink

    async def write(self, offset, value):
        await self.axil.write_dword(offset, int(value))

    async def read(self, offset):
        return int(await self.axil.read_dword(offset))

    async def stream(self, data, max_out):
        from cocotbext.axi import AxiStreamFrame

        if data:
            await self.source.send(AxiStreamFrame(bytes(data)))
        frame = await self.sink.recv()
        return bytes(frame.tdata)


# ----------------------------------------------------------------------------- operations


_FIELD_MASKS = {r.name: functools.reduce(operator.or_, (f.mask for f in r.fields), 0) for r in regmap.REGISTERS}


def _w(reg, value):
    """The write of ``value`` to ``reg``; a value with a bit outside the register's fields
    (which the fabric would drop: a CHANNELS of 4096 reads 0) is an :class:`AcceleratorError`."""
    value = int(value)
    if value < 0 or value & ~_FIELD_MASKS[reg]:
        raise AcceleratorError(f"{reg} = {value} does not fit the register's fields (mask 0x{_FIELD_MASKS[reg]:X})")
    return ("write", REG[reg].offset, value)


def _r(reg):
    return ("read", REG[reg].offset)


def lut_codes(q8: np.ndarray, z8: int, n_bits: int) -> np.ndarray:
    """The requantizer's N-bit codes of quint8 codes, on the PS (a 256-entry lookup)."""
    return lut(z8, n_bits)[q8]


def _check_map(arr, name="map") -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise AcceleratorError(f"the {name} must be uint8 codes, not {arr.dtype}")
    if arr.size == 0:
        raise AcceleratorError(f"the {name} must hold 1..{regmap.MAX_ELEMENTS} elements, not none")
    if arr.size > regmap.MAX_ELEMENTS:
        raise AcceleratorLimitError(f"the {name} must hold 1..{regmap.MAX_ELEMENTS} elements, not {arr.size}")
    return np.ascontiguousarray(arr)


def _check_int(value, lo: int, hi: int, name: str) -> int:
    """``value`` as an int in ``lo..hi`` (a bool, a float or a string is refused, not truncated)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise AcceleratorError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    return int(value)


def _check_flag(value, name: str) -> bool:
    """A yes/no argument: a bool, or the integer 0 or 1 (a 2 is refused, not read as yes)."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise AcceleratorError(f"{name} must be True or False, not {value!r}")


def _check_pass_words(n_words: int) -> None:
    """A CTX pass of value records takes at most ``regmap.CTX_MAX_WORDS`` stream words (COUNT's
    26 bits count 8 x them); more is a limit (``FabricEngine`` codes a tensor's slices in
    several passes, a slice over it in software)."""
    if n_words > regmap.CTX_MAX_WORDS:
        limit = regmap.CTX_MAX_WORDS
        raise AcceleratorLimitError(f"{n_words} words of records exceed one CTX pass (at most {limit})")


def _check_zn(zn, n_bits: int) -> int:
    """z_N of N-bit codes: 0..2^N (ZN_REF may equal 2^N)."""
    return _check_int(zn, 0, 1 << n_bits, f"z_N of the reference (N = {n_bits})")


def _check_codes(codes: np.ndarray, n_bits: int, name: str) -> None:
    if codes.size and int(codes.max()) >> n_bits:
        raise AcceleratorError(f"the {name} must be N-bit codes (N = {n_bits}), not up to {int(codes.max())}")


def pad_channels(arr: np.ndarray, lanes: int, value: int) -> np.ndarray:
    """Pad an (H, W, C) map's channels up to a multiple of ``lanes`` with ``value``.

    Padding the current frame with z8 and the reference with z_N (what z8 requantizes to)
    adds |0 - 0| = 0 to every cost, so vectors and costs are those of the unpadded maps.
    """
    c = arr.shape[2]
    extra = -c % lanes
    if not extra:
        return arr
    pad = np.full(arr.shape[:2] + (extra,), value, np.uint8)
    return np.ascontiguousarray(np.concatenate([arr, pad], axis=2))


def padded_reference_pass(z8: int, n_bits: int, z_n: int | None = None) -> str:
    """The pass that stores a reference whose channels are not a multiple of the lanes (the
    on-chip reference holds whole words per pixel) after a pass of its quint8 map:
    ``"REQUANT"``, a REQUANT pass of the map padded with z8, whose pads requantize(z8) are
    z_N (``z_n``, default the one of z8), so that MOTION, which pads the current frame with
    z8 and centres the reference with z_N, adds nothing on them; or ``"LOAD_REF"`` where
    requantize(z8) is not z_N (z_N = 2^N, which the requantizer clamps to 2^N - 1: z8 of
    248 or more at N = 4): the codes, padded with z_N itself."""
    z_n = zero_point_n(z8, n_bits) if z_n is None else int(z_n)
    return "REQUANT" if int(lut(z8, n_bits)[z8]) == z_n else "LOAD_REF"


def _check_reference_fits(shape, lanes: int, ref_bytes: int) -> None:
    """A map stored as the on-chip reference (its channels padded to whole words) must fit
    the reference RAM: checked before any register is written, also where the padded copy is
    stored by a pass after the first."""
    size = int(np.prod(shape))
    if len(shape) == 3:
        size = shape[0] * shape[1] * (-(-shape[2] // lanes) * lanes)
    if size > ref_bytes:
        raise AcceleratorLimitError(f"a reference of {size} codes exceeds the on-chip {ref_bytes} bytes")


def block_order(cur: np.ndarray, block: int) -> bytes:
    """The current frame's bytes in MOTION's input order: blocks in raster order, each
    block's rows, each row's bw * C contiguous bytes (on the board: one DMA
    scatter-gather descriptor per block row)."""
    h, w, _ = cur.shape
    parts = [cur[y : y + block, x : x + block].tobytes() for y in range(0, h, block) for x in range(0, w, block)]
    return b"".join(parts)


def band_stream(ref: np.ndarray, cur: np.ndarray, block: int, search: int, plan) -> bytes:
    """BAND_MOTION's input (regmap's input stream format): per TSS step, group of block rows
    and channel slice, the reference band (the group's rows plus p rows of halo, the slice's
    channels) then the group's current blocks in block order. ``ref`` (N-bit codes) and
    ``cur`` (quint8) are (H, W, plan.channels). On the board each piece is a run of
    (H, W, C) rows of Cs-channel strips: one DMA descriptor per row (band) or block row (current)."""
    h = cur.shape[0]
    parts = []
    for _ in tss_steps(search):
        for yg, ye, r0, r1 in plan.groups(h, block, search):
            for j in range(0, plan.channels, plan.slice):
                parts.append(ref[r0:r1, :, j : j + plan.slice].tobytes())
                parts.append(block_order(cur[yg:ye, :, j : j + plan.slice], block))
    return b"".join(parts)


COST_BITS = 32  # a block's cost in the motion engines (SAD accumulators, the band engine's state RAM, COST)


def max_element_cost(z8: int, zn_ref: int, n_bits: int) -> int:
    """The most one element can add to a cost, |((a - z_N) << k) - (c - z8)| over N-bit
    reference codes a and quint8 codes c (k = 8 - N): at a = 2^N - 1, c = 0 or at a = 0,
    c = 255 (511 at most: z8 = 0, z_N = 2^N = 256)."""
    k = 8 - check_bits(n_bits)
    z8, zn_ref = check_zero_point(z8), int(zn_ref)
    return max((((1 << (8 - k)) - 1 - zn_ref) << k) + z8, 255 - z8 + (zn_ref << k))


_PLANS: dict = {}


def band_plan(shape, block, search, params: regmap.Params):
    """The (slice, group) cut of a BAND_MOTION map for this build (a
    :class:`~temposplit.hw.cyclemodel.BandPlan`, cached per shape). The cycle model ranks
    the cuts with the RTL's own state counts, so it imports the gateware (Amaranth): on the
    board, BAND_MOTION needs ``amaranth`` installed (pure Python); the on-chip modes do not."""
    from temposplit.hw.cyclemodel import DMA_WORD_CYCLES, best_band_plan

    key = (tuple(shape), block, search, params)
    if key not in _PLANS:
        _PLANS[key] = best_band_plan(
            shape,
            block,
            search,
            band_bytes=params.band_bytes,
            ref_bytes=params.ref_bytes,
            group_blocks=params.band_group_blocks,
            band_blocks=params.band_blocks,
            word_cycles=DMA_WORD_CYCLES,  # the MM2S's rate, as the cycle model's table counts it
        )
    return _PLANS[key]


class Operations:
    """The accelerator's operations as generators of transport requests.

    A request is ``("write", offset, value)`` (answer None), ``("read", offset)`` (answer the
    word), ``("reserve", nbytes_in, max_out)`` (the stream's buffers, before the operation's
    START: answer None; skipped for a transport without ``reserve``) or ``("stream", data,
    max_out)`` (answer the output packet's bytes).
    """

    def __init__(self, params: regmap.Params | None = None):
        self.params = params
        # BAND_MOTION: whether the build has it (read from BAND_PARAMS by probe; assumed with
        # explicit params) and the reference kept on the PS side for maps over the on-chip RAM.
        self.band = params is not None
        self.ctx = params is not None  # whether the build has the CTX anchor coder
        self.hist = params is not None  # whether the build has the HISTOGRAM mode
        self.band_reference = None  # (codes (H, W, C) uint8, z_N)
        # the code lengths of the table this driver loaded, padded with zeros to 256 (the
        # fabric's entries past a shorter table are stale: no code); None: not known
        self.table_lengths = None

    def probe(self):
        ident = yield _r("ID")
        if ident != regmap.ID_MAGIC:
            raise AcceleratorError(f"no temposplit accelerator here (ID 0x{ident:08X})")
        word = yield _r("PARAMS")
        f = regmap.unpack("PARAMS", word)
        band = regmap.unpack("BAND_PARAMS", (yield _r("BAND_PARAMS")))
        self.band = band["CHUNK_LOG2"] != 0
        extra = {"band_bytes": 1 << band["CHUNK_LOG2"], "band_blocks": 1 << band["BLOCKS_LOG2"]} if self.band else {}
        if f["LANES"] != regmap.LANES:
            raise AcceleratorError(f"the accelerator streams {f['LANES']} bytes per word, not {regmap.LANES}")
        if f["LINE_LOG2"]:
            extra["line_elements"] = 1 << f["LINE_LOG2"]
        self.ctx = f["LINE_LOG2"] != 0
        self.hist = f["HISTOGRAM"] != 0
        extra["ctx_engines"] = max(1, min(f["ENGINES"], regmap.MAX_CTX_ENGINES))
        extra["ctx_lanes"] = max(1, min(f["CTX_LANES"], regmap.MAX_CTX_LANES))
        try:
            self.params = regmap.Params(ref_bytes=1 << f["REF_LOG2"], block_bytes=1 << f["BLOCK_LOG2"], **extra)
        except ValueError as exc:  # PARAMS / BAND_PARAMS of no build this driver knows
            raise AcceleratorError(f"the accelerator's build parameters are not usable: {exc}") from None
        return self.params

    def _need_params(self):
        if self.params is None:
            yield from self.probe()
        return self.params

    def load_table(self, lengths):
        """Load a Huffman table given by its code lengths (canonical codes computed here)."""
        given = np.asarray(lengths)
        if given.size and not np.issubdtype(given.dtype, np.integer):
            raise AcceleratorError(f"code lengths must be integers, not {given.dtype}")
        if given.size and given.min() < 0:
            raise AcceleratorError(f"code lengths must be 0 or more, not {given.min()}")
        lengths = given.astype(np.int64)
        if lengths.ndim != 1 or not 1 <= lengths.size <= 256:
            raise AcceleratorError(f"a table has 1..256 code lengths, not shape {lengths.shape}")
        huffman.check_lengths(lengths)
        codes = huffman.canonical_codes(lengths)
        self.table_lengths = None  # unknown until every entry is written
        yield _w("TABLE_INDEX", 0)
        for code, length in zip(codes, lengths, strict=True):
            yield _w("TABLE_DATA", pack("TABLE_DATA", CODE=int(code), LENGTH=int(length)))
        self.table_lengths = np.concatenate([lengths, np.zeros(256 - lengths.size, np.int64)])

    def _run(self, mode_name, data, max_out, reserved=False):
        if not reserved:  # the DMA's buffers before START: one the board cannot allocate starts nothing
            yield ("reserve", len(data), max_out)
        yield _w("CTRL", pack("CTRL", START=1, MODE=mode(mode_name)))
        out = yield ("stream", data, max_out)
        status = regmap.unpack("STATUS", (yield _r("STATUS")))
        if not status["DONE"]:
            raise AcceleratorError(f"{mode_name} did not finish (STATUS {status})")
        cycles = yield _r("CYCLES")
        return out, cycles

    def encode(self, symbols, alphabet, *, requant=False, z8=0, n_bits=8, store_ref=False, histogram=True):
        """Huffman-code a run of byte symbols with the loaded table (``requant``: the input
        is quint8 and is requantized to ``n_bits`` first). A symbol to be coded (with
        ``requant``, a code the map requantizes to) that the table :meth:`load_table` loaded
        has no code for, or that lies outside the ``alphabet``, is refused before any
        register is written (the fabric would drop it, or code it with a stale entry of an
        earlier, longer table), as the golden coder refuses it."""
        p = yield from self._need_params()
        requant, store_ref = _check_flag(requant, "requant"), _check_flag(store_ref, "store_ref")
        symbols = _check_map(symbols, "symbols").reshape(-1)
        alphabet = _check_int(alphabet, 1, 256, "the alphabet's size")
        if store_ref and symbols.size > p.ref_bytes:
            raise AcceleratorLimitError(f"a reference of {symbols.size} codes exceeds the on-chip {p.ref_bytes} bytes")
        n_bits, z8 = check_bits(n_bits), check_zero_point(z8)  # before any register is written
        self._check_coded(symbols, alphabet, lut(z8, n_bits) if requant else None)
        yield _w("FLAGS", pack("FLAGS", REQUANT=int(requant), STORE_REF=int(store_ref)))
        yield _w("NBITS", n_bits)
        yield _w("Z8", z8)
        yield _w("COUNT", symbols.size)
        out, cycles = yield from self._run("ENCODE", symbols.tobytes(), 2 * symbols.size + 16)
        bits = yield _r("BITS")
        if len(out) < (bits + 7) // 8:
            raise AcceleratorError(f"ENCODE sent {len(out)} bytes but counted {bits} bits")
        out = out[: (bits + 7) // 8]
        hist = None
        if histogram:
            hist = yield from self._read_histogram(alphabet)
        return EncodeResult(out, int(bits), hist, int(cycles))

    def _check_coded(self, symbols, alphabet: int, table=None) -> None:
        """Every symbol to be coded (``table``: the requantizer's 256-entry lookup, the
        symbols its codes) lies in the alphabet and has a code in the loaded table (unless
        this driver loaded none: the table is then the caller's to know)."""
        used = np.flatnonzero(np.bincount(symbols, minlength=256))
        if table is not None:
            used = np.unique(table[used])
        outside = used[used >= alphabet]
        if outside.size:
            raise AcceleratorError(f"symbol {int(outside[0])} lies outside the alphabet 0..{alphabet - 1}")
        if self.table_lengths is not None:
            missing = used[self.table_lengths[used] == 0]
            if missing.size:
                raise AcceleratorError(f"the loaded Huffman table has no code for symbol {int(missing[0])} of this map")

    def _read_histogram(self, alphabet):
        hist = np.zeros(alphabet, np.int64)
        for s in range(alphabet):
            yield _w("HIST_INDEX", s)
            hist[s] = yield _r("HIST_DATA")
        return hist

    def histogram(self, q8, alphabet=None, *, z8=0, n_bits=8, requant=True, store_ref=False):
        """The histogram of a map's codes in one HISTOGRAM pass (nothing coded): ``q8``
        quint8 codes (any shape) requantized to ``n_bits`` (``requant``; else the bytes are
        the symbols), the counts of ``alphabet`` symbols (default 2^N) read back. The fabric
        counts a stream word's codes a cycle, so the pass runs at the DMA's rate: a
        self-contained anchor's (a KEY's) table comes from it before its ENCODE pass.
        ``store_ref``: the codes also become the on-chip reference (a map whose channels are
        not a multiple of the lanes stores a padded copy by a REQUANT pass after it, or a LOAD_REF:
        :func:`padded_reference_pass`)."""
        p = yield from self._need_params()
        if not self.hist:
            raise AcceleratorLimitError("this bitstream has no HISTOGRAM mode (count with an ENCODE pass)")
        q8 = _check_map(q8, "map")
        requant, store_ref = _check_flag(requant, "requant"), _check_flag(store_ref, "store_ref")
        n_bits = check_bits(n_bits)
        alphabet = _check_int(1 << n_bits if alphabet is None else alphabet, 1, 256, "the alphabet's size")
        padded = store_ref and q8.ndim == 3 and q8.shape[2] % p.lanes
        if store_ref:
            _check_reference_fits(q8.shape, p.lanes, p.ref_bytes)
        z8 = check_zero_point(z8)  # before any register is written
        yield _w("FLAGS", pack("FLAGS", REQUANT=int(requant), STORE_REF=int(store_ref and not padded)))
        yield _w("NBITS", n_bits)
        yield _w("Z8", z8)
        yield _w("COUNT", q8.size)
        _, cycles = yield from self._run("HISTOGRAM", q8.tobytes(), 8)
        hist = yield from self._read_histogram(alphabet)
        if padded:  # the reference needs whole words per pixel: store a padded copy
            yield from self._store_padded(q8, z8, n_bits, zero_point_n(z8, n_bits), requant)
        self.last_cycles = int(cycles)
        return HistogramResult(hist, int(cycles))

    def encode_anchor(self, q8, *, z8, n_bits, store_ref=True, alphabet=None):
        """Requantize and Huffman-code an anchor map (quint8, any shape) with the loaded table;
        the histogram of its N-bit codes (``alphabet`` symbols, default 2^N) comes back for
        the next anchor's table."""
        p = yield from self._need_params()
        q8 = np.asarray(q8)
        store_ref = _check_flag(store_ref, "store_ref")
        padded = store_ref and q8.ndim == 3 and q8.shape[2] % p.lanes
        if padded:  # stored by a REQUANT pass after the ENCODE: refused before either
            _check_reference_fits(q8.shape, p.lanes, p.ref_bytes)
        result = yield from self.encode(
            q8,
            1 << check_bits(n_bits) if alphabet is None else alphabet,
            requant=True,
            z8=z8,
            n_bits=n_bits,
            store_ref=store_ref and not padded,
        )
        if padded:  # the reference needs whole words per pixel: store a padded copy
            yield from self._store_padded(q8, z8, n_bits, zero_point_n(z8, n_bits), True)
        return result

    def _store_padded(self, q8, z8, n_bits, zn, requant):
        """Store an (H, W, C) map whose C is not a multiple of the lanes as the on-chip
        reference, after the pass that coded or counted it: a REQUANT pass of the quint8
        map (``requant``) padded with z8, or where requantize(z8) is not z_N
        (:func:`padded_reference_pass`), or for N-bit codes (not ``requant``), a LOAD_REF
        of the codes padded with z_N."""
        p = self.params
        if requant and padded_reference_pass(z8, n_bits, zn) == "REQUANT":
            yield from self.requantize(pad_channels(q8, p.lanes, z8), z8=z8, n_bits=n_bits, store_ref=True)
        else:
            yield from self.load_reference(lut_codes(q8, z8, n_bits) if requant else q8, zn_ref=zn)

    def requantize(self, q8, *, z8, n_bits, store_ref=False):
        """The fabric's N-bit codes of a quint8 map (one REQUANT pass); ``store_ref``: they
        also become the on-chip reference (a map whose channels are not a multiple of the
        lanes: a padded copy, by the same pass of the map padded with z8, or where
        requantize(z8) is not z_N by a LOAD_REF after it, :func:`padded_reference_pass`)."""
        p = yield from self._need_params()
        q8 = _check_map(q8, "quint8 map")
        store_ref = _check_flag(store_ref, "store_ref")
        if store_ref and q8.ndim == 3 and q8.shape[2] % p.lanes:  # the reference holds whole words per pixel
            if padded_reference_pass(check_zero_point(z8), check_bits(n_bits)) == "LOAD_REF":
                _check_reference_fits(q8.shape, p.lanes, p.ref_bytes)  # before the REQUANT pass
                codes = yield from self.requantize(q8, z8=z8, n_bits=n_bits)
                yield from self.load_reference(codes, zn_ref=zero_point_n(z8, n_bits))
                return codes
            codes = yield from self.requantize(pad_channels(q8, p.lanes, z8), z8=z8, n_bits=n_bits, store_ref=True)
            return codes[:, :, : q8.shape[2]].copy()
        if store_ref and q8.size > p.ref_bytes:
            raise AcceleratorLimitError(f"a reference of {q8.size} codes exceeds the on-chip {p.ref_bytes} bytes")
        n_bits, z8 = check_bits(n_bits), check_zero_point(z8)  # before any register is written
        yield _w("FLAGS", pack("FLAGS", REQUANT=1, STORE_REF=int(store_ref)))
        yield _w("NBITS", n_bits)
        yield _w("Z8", z8)
        yield _w("COUNT", q8.size)
        out, _ = yield from self._run("REQUANT", q8.tobytes(), q8.size)
        if len(out) != q8.size:
            raise AcceleratorError(f"REQUANT returned {len(out)} codes for {q8.size}")
        return np.frombuffer(out, np.uint8).reshape(q8.shape).copy()

    def ctx_anchor(self, q8, *, z8, n_bits, z_n=None, ref=None, ref_changes=None, requant=True, store_ref=True):
        """An anchor's ``ctx`` section in one CTX pass (docs/bitstream.md 6.2.3): ``q8`` its
        (H, W, C) quint8 codes (``requant``; else its N-bit codes), intra, or temporal when
        ``ref`` (the reference's N-bit codes, same shape) and ``ref_changes`` (its change
        map, int8 -1/0/1) are given: they travel in the same input stream, a word of each
        after each word of the anchor. ``store_ref``: the codes also become the on-chip
        reference (MOTION); a map whose channels are not a multiple of the lanes stores a
        padded copy by a REQUANT (or LOAD_REF) pass after it. The change map D comes back
        computed on the PS (sgn(x - p), the fabric's own definition)."""
        p = yield from self._need_params()
        if not self.ctx:
            raise AcceleratorLimitError("this bitstream has no CTX anchor coder")
        q8 = _check_map(q8, "anchor map")
        if q8.ndim != 3:
            raise AcceleratorError(f"an anchor map must be (H, W, C), not {q8.shape}")
        h, w, c = q8.shape
        if not (1 <= h <= regmap.MAX_HEIGHT and 1 <= w <= regmap.MAX_WIDTH and 1 <= c <= regmap.MAX_CHANNELS):
            raise AcceleratorLimitError(f"a map of {q8.shape} exceeds the accelerator's limits")
        if w * c > p.line_elements:
            raise AcceleratorLimitError(f"a row of {w} x {c} elements exceeds the CTX row buffer ({p.line_elements})")
        n_bits = check_bits(n_bits)
        z8 = check_zero_point(z8)
        requant, store_ref = _check_flag(requant, "requant"), _check_flag(store_ref, "store_ref")
        zn = zero_point_n(z8, n_bits) if z_n is None else _check_zn(z_n, n_bits)
        if not requant:
            _check_codes(q8, n_bits, "anchor's codes (requant=False)")
        codes = lut_codes(q8, z8, n_bits) if requant else q8
        padded = store_ref and c % p.lanes
        if store_ref:
            _check_reference_fits(q8.shape, p.lanes, p.ref_bytes)
        if padded and zn > 255:  # the padded copy's LOAD_REF after the CTX pass could not hold it: refused before
            raise AcceleratorError(f"a padded reference's z_N must be in 0..255 (its codes are bytes), not {zn}")
        temporal = ref is not None
        if temporal:
            ref = _check_map(ref, "reference")
            if ref.shape != q8.shape:
                raise AcceleratorError(f"the reference {ref.shape} and the anchor {q8.shape} differ in shape")
            _check_codes(ref, n_bits, "reference")
            dref = np.zeros(q8.shape, np.int8) if ref_changes is None else np.asarray(ref_changes)
            if dref.shape != q8.shape:
                raise AcceleratorError(f"the change map {dref.shape} and the anchor {q8.shape} differ in shape")
            if not np.issubdtype(dref.dtype, np.integer) or (dref.size and (dref.min() < -1 or dref.max() > 1)):
                raise AcceleratorError(f"the change map must hold -1, 0 or 1 (integers), not {dref.dtype} values")
            groups = -(-q8.size // p.lanes)
            words = np.zeros((3, groups * p.lanes), np.uint8)  # codes, reference, changes + 1
            words[0, : q8.size] = q8.reshape(-1)
            words[1, : q8.size] = ref.reshape(-1)
            words[2, : q8.size] = (dref.reshape(-1).astype(np.int16) + 1).astype(np.uint8)
            data = words.reshape(3, groups, p.lanes).transpose(1, 0, 2).tobytes()
            changes = np.sign(codes.astype(np.int16) - ref.astype(np.int16)).astype(np.int8)
        else:
            data = q8.tobytes()
            changes = np.zeros(q8.shape, np.int8)
        yield _w(
            "FLAGS",
            pack("FLAGS", REQUANT=int(requant), STORE_REF=int(store_ref and not padded), TEMPORAL=int(temporal)),
        )
        yield _w("NBITS", n_bits)
        yield _w("Z8", z8)
        yield _w("ZN_REF", zn)
        yield _w("WIDTH", w)
        yield _w("CHANNELS", c)
        yield _w("COUNT", q8.size)
        # At most 16 context bins (7.3 bits each: no probability leaves 26..4070 of 4096) and
        # 8 bypass bins a value: under 16 bytes an element, whatever the data.
        out, cycles = yield from self._run("CTX", data, CTX_MAX_BYTES_PER_ELEMENT * q8.size + 64)
        bits = yield _r("BITS")
        if len(out) != bits // 8:
            raise AcceleratorError(f"CTX sent {len(out)} bytes but counted {bits // 8}")
        if padded:  # the reference needs whole words per pixel: store a padded copy
            yield from self._store_padded(q8, z8, n_bits, zn, requant)
        self.last_cycles = int(cycles)
        return CtxResult(bytes(out), changes, int(cycles))

    @staticmethod
    def _check_records(records):
        records = np.asarray(records)
        if records.dtype != np.uint64 or records.ndim != 1 or records.size == 0:
            raise AcceleratorError(
                f"value records are a non-empty 1-D uint64 array, not {records.dtype} {records.shape}"
            )
        if int(records.max()) >> RECORD_BITS:
            raise AcceleratorError(f"a value record has bits set above its {RECORD_BITS}")
        f = ctx_records.unpack(records)
        step_ok = np.isin(f["mag_step"], MAG_STEPS) | (f["unary_n"] < 2)
        rules = (
            (f["z_ctx"] >= N_CONTEXTS, f"a zero context past the {N_CONTEXTS} contexts"),
            (f["s_ctx"] >= N_CONTEXTS, f"a sign context past the {N_CONTEXTS} contexts"),
            (f["mag_base"] + 3 * f["mag_step"] >= N_CONTEXTS, f"magnitude contexts past the {N_CONTEXTS} contexts"),
            (~step_ok, f"a magnitude context step other than {', '.join(map(str, MAG_STEPS))}"),
            (f["unary_n"] > UNARY_MAX, f"unary_n over {UNARY_MAX}"),
            (f["suffix_w"] > SUFFIX_MAX_BITS, f"suffix_w over {SUFFIX_MAX_BITS}"),
            ((f["suffix_w"] > 0) & (f["unary_n"] < UNARY_MAX), f"a suffix after fewer than {UNARY_MAX} unary bins"),
            (f["m"] >= UNARY_MAX + (1 << f["suffix_w"]), "a magnitude its unary bins and suffix cannot say"),
        )
        for bad, what in rules:
            if bad.any():
                i = int(np.argmax(bad))
                raise AcceleratorError(f"value record {i} is none the codec makes: {what}")
        return records

    def ctx_records(self, records):
        """A ``ctx`` section from its value records (``codec.ctx_records``: a predicted
        frame's vectors, flags and residual blocks, or an anchor of any size) in one CTX
        pass with FLAGS.RECORDS, as stream words (a record a word, runs of up to six zero
        values a word): the section's bytes (``changes`` None: the records' function gives
        the change map). A list of record arrays (the slices of a section, each coded as
        an independent section) is one pass of CTX_SLICES = len(list) on the build's
        engines: a :class:`CtxSlicesResult`, the sections in order."""
        if isinstance(records, (list, tuple)):
            return (yield from self._ctx_slices(records))
        yield from self._need_params()
        if not self.ctx:
            raise AcceleratorLimitError("this bitstream has no CTX coder")
        records = self._check_records(records)
        stream_words = ctx_records.words(records)  # runs of zero values share a word
        _check_pass_words(stream_words.size)
        count = 8 * stream_words.size
        yield _w("FLAGS", pack("FLAGS", RECORDS=1))
        yield _w("COUNT", count)
        yield _w("CTX_SLICES", 1)
        out, cycles = yield from self._run(
            "CTX", stream_words.astype("<u8").tobytes(), CTX_MAX_BYTES_PER_ELEMENT * records.size + 64
        )
        bits = yield _r("BITS")
        if len(out) != bits // 8:
            raise AcceleratorError(f"CTX sent {len(out)} bytes but counted {bits // 8}")
        self.last_cycles = int(cycles)
        return CtxResult(bytes(out), None, int(cycles))

    def _ctx_slices(self, slices):
        params = yield from self._need_params()
        if not self.ctx:
            raise AcceleratorLimitError("this bitstream has no CTX coder")
        if not slices:
            raise AcceleratorError("a CTX pass of slices needs at least one slice")
        if len(slices) > regmap.MAX_CTX_SLICES:
            raise AcceleratorLimitError(f"{len(slices)} slices: CTX_SLICES allows 1..{regmap.MAX_CTX_SLICES}")
        slices = [self._check_records(r) for r in slices]
        n = len(slices)
        if n == 1:
            res = yield from self.ctx_records(slices[0])
            return CtxSlicesResult([res.data], res.cycles)
        engines, lanes = params.ctx_engines, params.ctx_lanes
        stream_words = deal_slices([ctx_records.words(r) for r in slices], engines, lanes)
        _check_pass_words(stream_words.size)
        count = 8 * stream_words.size
        total = sum(r.size for r in slices)
        yield _w("FLAGS", pack("FLAGS", RECORDS=1))
        yield _w("COUNT", count)
        yield _w("CTX_SLICES", n)
        max_out = 8 * ((CTX_MAX_BYTES_PER_ELEMENT * total + 64 * n) // OUT_PAYLOAD + 2 * n)
        out, cycles = yield from self._run("CTX", stream_words.astype("<u8").tobytes(), max_out)
        bits = yield _r("BITS")
        sections = split_slices(bytes(out), n, engines, lanes)
        if sum(map(len, sections)) != bits // 8:
            raise AcceleratorError(f"CTX slices sent {sum(map(len, sections))} bytes but counted {bits // 8}")
        self.last_cycles = int(cycles)
        return CtxSlicesResult(sections, int(cycles))

    def load_reference(self, codes, zn_ref=0):
        """Write an anchor's N-bit codes (channel-last) into the on-chip reference (channels
        padded with ``zn_ref`` to a multiple of the lanes). A map over the on-chip reference
        is kept on the PS side instead: :meth:`motion` streams it in bands (BAND_MOTION)."""
        p = yield from self._need_params()
        codes = _check_map(codes, "reference")
        zn_ref = _check_int(zn_ref, 0, 255, "the reference's padding z_N")
        if codes.ndim == 3:
            if (
                self.band
                and pad_channels(codes[:1, :1], p.lanes, zn_ref).size * codes.shape[0] * codes.shape[1] > p.ref_bytes
            ):
                self.band_reference = (codes.copy(), int(zn_ref))
                return None
            codes = pad_channels(codes, p.lanes, zn_ref)
        if codes.size > p.ref_bytes:
            raise AcceleratorLimitError(f"a reference of {codes.size} codes exceeds the on-chip {p.ref_bytes} bytes")
        yield _w("COUNT", codes.size)
        yield from self._run("LOAD_REF", codes.tobytes(), 8)

    def motion(self, cur, *, z8, n_bits, zn_ref, block, search, reference=None):
        """TSS vectors (int8 ``(nby, nbx, 2)``) and costs (int64 ``(nby, nbx)``) of a quint8
        map against the reference (same shape): the on-chip one (loaded before), or for a map
        over the on-chip reference the one :meth:`load_reference` kept (or ``reference``, its
        N-bit codes), streamed in bands (BAND_MOTION)."""
        p = yield from self._need_params()
        cur = _check_map(cur, "current map")
        if cur.ndim != 3:
            raise AcceleratorError(f"the current map must be (H, W, C), not {cur.shape}")
        block, search = check_block(block), check_search_range(search)
        zn_ref = _check_zn(zn_ref, check_bits(n_bits))
        shape = cur.shape
        cur = pad_channels(cur, p.lanes, check_zero_point(z8))
        h, w, c = cur.shape
        if not (1 <= h <= regmap.MAX_HEIGHT and 1 <= w <= regmap.MAX_WIDTH and 1 <= c <= regmap.MAX_CHANNELS):
            raise AcceleratorLimitError(f"a map of {cur.shape} exceeds the accelerator's limits")
        if cur.size > p.ref_bytes:
            result = yield from self._band_motion(
                cur[:, :, : shape[2]],
                z8=z8,
                n_bits=n_bits,
                zn_ref=zn_ref,
                block=block,
                search=search,
                reference=reference,
            )
            return result
        if block * block * c > p.block_bytes:
            raise AcceleratorLimitError(f"a block of {block}x{block}x{c} exceeds the {p.block_bytes}-byte block buffer")
        nby, nbx = grid_shape(h, w, block)
        data = block_order(cur, block)
        yield ("reserve", len(data), 8 * nby * nbx)  # before any register: a fallback finds the fabric as it was
        for reg, v in (
            ("NBITS", check_bits(n_bits)),
            ("Z8", check_zero_point(z8)),
            ("ZN_REF", zn_ref),
            ("WIDTH", w),
            ("HEIGHT", h),
            ("CHANNELS", c),
            ("BLOCK", block),
            ("SEARCH", search),
        ):
            yield _w(reg, v)
        out, cycles = yield from self._run("MOTION", data, 8 * nby * nbx, reserved=True)
        return self._records(out, nby, nbx, cycles)

    def _band_motion(self, cur, *, z8, n_bits, zn_ref, block, search, reference):
        p = self.params
        if not self.band:
            raise AcceleratorLimitError(
                f"a {cur.shape} map exceeds the on-chip reference ({p.ref_bytes} bytes) and "
                f"this bitstream has no BAND_MOTION engine"
            )
        if reference is None:
            if self.band_reference is None:
                raise AcceleratorError("BAND_MOTION needs the reference: load_reference(codes) first")
            reference, zn_kept = self.band_reference
            if zn_kept != zn_ref:
                raise AcceleratorError(f"the kept reference has z_N {zn_kept}, not {zn_ref}")
        ref = _check_map(reference, "reference")
        if ref.shape != cur.shape:
            raise AcceleratorError(f"the reference {ref.shape} and the current map {cur.shape} differ in shape")
        plan = band_plan(cur.shape, block, search, p)
        if plan is None:
            raise AcceleratorLimitError(
                f"a {cur.shape} map with B = {block} does not fit the band engine "
                f"(at most {p.band_blocks} blocks, {p.band_group_blocks} per group, and a "
                f"band of {block} + 2p rows of {p.band_bytes} channels in {p.ref_bytes} bytes)"
            )
        if plan.channels > regmap.MAX_CHANNELS:  # C padded to whole chunks: over CHANNELS' 12 bits
            raise AcceleratorLimitError(
                f"a {cur.shape} map's channels padded to the band engine's {p.band_bytes}-byte chunks are "
                f"{plan.channels}, over the accelerator's {regmap.MAX_CHANNELS}"
            )
        worst = block * block * plan.channels * max_element_cost(z8, zn_ref, n_bits)
        if worst >> COST_BITS:  # the engine's costs (accumulators, state RAM, the record's COST) would wrap
            raise AcceleratorLimitError(
                f"a {block}x{block} block of {plan.channels} channels may cost up to {worst}, over the band "
                f"engine's {COST_BITS}-bit costs"
            )
        # padding adds nothing to a cost: ((a - zN) << k) == c - z8 on the padded channels
        a_pad = min(int(zn_ref), 255)
        c_pad = check_zero_point(z8) + ((a_pad - int(zn_ref)) << (8 - check_bits(n_bits)))
        cur = pad_channels(cur, plan.channels, max(c_pad, 0))
        ref = pad_channels(ref, plan.channels, a_pad)
        h, w, c = cur.shape
        nby, nbx = grid_shape(h, w, block)
        data = band_stream(ref, cur, block, search, plan)
        yield ("reserve", len(data), 8 * nby * nbx)  # before any register: a fallback finds the fabric as it was
        for reg, v in (
            ("NBITS", check_bits(n_bits)),
            ("Z8", check_zero_point(z8)),
            ("ZN_REF", zn_ref),
            ("WIDTH", w),
            ("HEIGHT", h),
            ("CHANNELS", c),
            ("BLOCK", block),
            ("SEARCH", search),
            ("BAND_SLICE", plan.slice),
            ("BAND_GROUP", plan.group),
        ):
            yield _w(reg, v)
        self.last_plan = plan
        out, cycles = yield from self._run("BAND_MOTION", data, 8 * nby * nbx, reserved=True)
        return self._records(out, nby, nbx, cycles)

    def _records(self, out, nby, nbx, cycles):
        rec = np.frombuffer(out, np.uint8)
        if rec.size != 8 * nby * nbx:
            raise AcceleratorError(f"MOTION returned {rec.size} bytes for {nby * nbx} blocks")
        rec = rec.reshape(nby, nbx, 8)
        mvs = rec[:, :, 0:2].view(np.int8).copy()
        costs = rec[:, :, 4:8].copy().view("<u4")[:, :, 0].astype(np.int64)
        self.last_cycles = int(cycles)
        return mvs, costs

    def encode_motion_vectors(self, mvs, *, search, lengths):
        """Huffman-code vectors as symbols v + p, dy then dx per block (``payload.write_pred``)."""
        search = check_search_range(search)
        mvs = np.asarray(mvs)
        if not np.issubdtype(mvs.dtype, np.integer) or (mvs.size and int(np.abs(mvs.astype(np.int64)).max()) > search):
            raise AcceleratorError(f"motion vectors must be integers in -{search}..{search} (the search range)")
        yield from self.load_table(lengths)
        symbols = (mvs.astype(np.int16).reshape(-1) + search).astype(np.uint8)
        result = yield from self.encode(symbols, 2 * search + 1, histogram=False)
        return result.data, result.bits


_OPERATIONS = (
    "probe",
    "load_table",
    "encode",
    "encode_anchor",
    "histogram",
    "ctx_anchor",
    "ctx_records",
    "requantize",
    "load_reference",
    "motion",
    "encode_motion_vectors",
)


class Accelerator:
    """Synchronous driver (PYNQ, or any transport with plain methods)."""

    def __init__(self, transport, params: regmap.Params | None = None):
        self.transport = transport
        self.ops = Operations(params)

    def close(self) -> None:
        """Release the transport: the simulator's process (RTL), the DMA's buffers (PYNQ)."""
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def _drive(self, gen):
        answer = None
        try:
            while True:
                req = gen.send(answer)
                if req[0] == "reserve" and not hasattr(self.transport, "reserve"):  # no buffers of its own
                    answer = None
                    continue
                answer = getattr(self.transport, req[0])(*req[1:])
        except StopIteration as stop:
            return stop.value


class AsyncAccelerator:
    """The same operations awaited on an async transport (:class:`SimTransport`)."""

    def __init__(self, transport, params: regmap.Params | None = None):
        self.transport = transport
        self.ops = Operations(params)

    async def _drive(self, gen):
        answer = None
        try:
            while True:
                req = gen.send(answer)
                if req[0] == "reserve" and not hasattr(self.transport, "reserve"):  # cocotb's: no buffers of ours
                    answer = None
                    continue
                answer = await getattr(self.transport, req[0])(*req[1:])
        except StopIteration as stop:
            return stop.value


def _operation(method, name: str, cls: type):
    """``method`` as ``cls.name``, with the operation's name, docstring and signature
    (``help()`` and ``inspect.signature`` show Operations' arguments, not ``*args, **kwargs``)."""
    functools.update_wrapper(method, getattr(Operations, name))
    method.__qualname__ = f"{cls.__name__}.{name}"
    return method


def _sync(name):
    def method(self, *args, **kwargs):
        return self._drive(getattr(self.ops, name)(*args, **kwargs))

    return _operation(method, name, Accelerator)


def _async(name):
    async def method(self, *args, **kwargs):
        return await self._drive(getattr(self.ops, name)(*args, **kwargs))

    return _operation(method, name, AsyncAccelerator)


for _name in _OPERATIONS:
    setattr(Accelerator, _name, _sync(_name))
    setattr(AsyncAccelerator, _name, _async(_name))


def reference_zero_point(z8: int, n_bits: int) -> int:
    """ZN_REF for an anchor with quint8 zero point z8 requantized to N bits."""
    return zero_point_n(z8, n_bits)
