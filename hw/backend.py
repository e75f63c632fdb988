"""The fabric as the codec encoder's engine: the edge program's ``rtl`` and ``pynq`` back ends.

:class:`FabricEngine` implements :class:`temposplit.codec.encoder.SoftwareEngine`'s
operations on the accelerator through the driver. An anchor is one call,
:meth:`FabricEngine.code_anchor`: one ENCODE pass with FLAGS.REQUANT and STORE_REF
(requantize, Huffman-code, count the histogram, store the reference); a self-contained
anchor (its own table) takes a histogram pass first (HISTOGRAM: a stream word a cycle). A
predicted frame's motion search is one MOTION operation over the reference stored with the
anchor (a chained or refreshed reference is loaded first, LOAD_REF). So :class:`~temposplit.codec.encoder.Encoder`
produces its packets with the fabric doing the per-element work, byte for byte the same
as the software path. Maps over the on-chip reference (the ResNet-50 cuts) are
motion-searched by BAND_MOTION: the driver keeps the reference's codes on the PS side
(``load_reference``) and streams them in bands. A ``ctx`` anchor (the v2 coder, which the
encoder codes through :meth:`FabricEngine.requantize` and
:meth:`FabricEngine.ctx_anchor_sections`) is one CTX pass: the quint8 map in (a temporal
anchor's reference codes and change map beside it), requantized, coded by the fabric's
anchor coder, the codes kept on chip (STORE_REF) for the group's MOTION. A ``ctx``
predicted frame's sections (:meth:`FabricEngine.ctx_pred_sections`), an anchor whose
row exceeds the anchor coder's row buffer and an anchor in slices (docs/bitstream.md
6.2.6) are one CTX pass of value records (``codec.ctx_records``: the contexts computed
here in NumPy, the bins coded by the fabric, a tensor's slices side by side on its
``ctx`` engines); slices whose stream words exceed one pass (COUNT's 26 bits: 8.4 M words,
e.g. a 200x272x256 KEY) take as many passes as keep each within it. What the fabric does
not do (ZVC/raw/ZRL sections, per-channel vectors, TSS of a map the band engine cannot cut:
over ``band_blocks`` blocks, or a band of B + 2p rows of one chunk of channels over the
reference RAM, or whose channels padded to its chunks exceed CHANNELS; a ``ctx`` slice whose
own words exceed one pass) falls back to the golden software and is
counted in ``engine.fallbacks``; ``engine.passes`` counts the fabric's operations (each once
done: one refused before its START is not counted). Only a
request over the build's or the board's limits falls back (the driver's
:class:`~temposplit.hw.driver.AcceleratorLimitError`, refused before the operation's START:
a map over the registers or on-chip memories, a DMA buffer the board's CMA pool cannot
allocate; a ``ctx`` slice's words, checked here against the same limit). An anchor so
refused is coded in software whole and the on-chip reference is then taken as unknown (the
group's MOTION loads it first, LOAD_REF, or falls back in turn). A fault of the fabric or its DMA
(an error, a stall, a STATUS not DONE, a closed transport) is an ``AcceleratorError`` that
propagates, so the edge program stops with it instead of coding on in software.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from temposplit.codec import ctx, ctx_records, huffman
from temposplit.codec.encoder import AnchorCoding, Encoder, SoftwareEngine
from temposplit.codec.quantize import lut, zero_point_n
from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorLimitError, padded_reference_pass


class FabricEngine(SoftwareEngine):
    def __init__(self, accel: Accelerator):
        self.accel = accel
        self.params = accel.probe()
        self.fallbacks: Counter = Counter()
        self.passes: Counter = Counter()  # fabric operations per kind (ENCODE passes, LOAD_REF, ...)
        self._reference = None  # (tensor name, n_bits, digest) of the reference on chip
        self._pending = None  # (codes, quint8 map) of the last requantize: a ctx anchor's input

    def close(self) -> None:
        try:
            self.accel.close()
        except (OSError, EOFError):  # a simulator that already stopped: nothing left to release
            pass

    def _key(self, tensor, n_bits, codes):
        return (tensor.name, n_bits, hash(np.ascontiguousarray(codes).tobytes()))

    def code_anchor(self, tensor, q8, n_bits, coder, alphabet, table):
        """The anchor in one ENCODE pass: requantized, Huffman-coded with ``table``, the
        histogram counted by the fabric and the codes kept on chip (STORE_REF) for the
        group's MOTION (a map over the on-chip reference: kept on the PS side for
        BAND_MOTION). A self-contained anchor (``table`` None: its own table) takes a
        histogram pass first: a HISTOGRAM pass (the fabric counts a stream word's codes a
        cycle; it stores the reference), or on a build without it an ENCODE with a flat
        table whose section is dropped. The PS's copy of the codes (motion compensation, the
        reconstruction) is a 256-entry table lookup, equal to the requantizer's output."""
        if coder != "huffman":
            self.fallbacks[f"{coder} anchor"] += 1
            return super().code_anchor(tensor, q8, n_bits, coder, alphabet, table)
        try:
            return self._code_anchor(tensor, q8, n_bits, alphabet, table)
        except AcceleratorLimitError:  # refused before its START (a pass before it may have stored a reference)
            self._reference = None
            self.fallbacks["anchor over the fabric's limits"] += 1
            return super().code_anchor(tensor, q8, n_bits, coder, alphabet, table)

    def _code_anchor(self, tensor, q8, n_bits, alphabet, table):
        q8 = np.ascontiguousarray(q8)
        z8, zn = tensor.zero_point, zero_point_n(tensor.zero_point, n_bits)
        codes = lut(z8, n_bits)[q8]
        padded = -(-q8.shape[2] // self.params.lanes) * self.params.lanes
        on_chip = q8.shape[0] * q8.shape[1] * padded <= self.params.ref_bytes
        store = on_chip
        if table is None:  # a self-contained anchor: its table comes from its own histogram
            if self.accel.ops.hist:
                first = self.accel.histogram(q8, alphabet.size, z8=z8, n_bits=n_bits, store_ref=store)
                self.passes["HISTOGRAM"] += 1
                if store and q8.shape[2] % self.params.lanes:
                    self.passes[f"{padded_reference_pass(z8, n_bits)} (padded reference)"] += 1
            else:
                self.accel.load_table(np.full(alphabet.size, max(1, (alphabet.size - 1).bit_length())))
                first = self._encode(q8, z8, n_bits, alphabet, store)
            store = False
            table = huffman.table_lengths(first.histogram)
        self.accel.load_table(table)
        res = self._encode(q8, z8, n_bits, alphabet, store)
        if on_chip:
            self._reference = self._key(tensor, n_bits, codes)
        else:  # BAND_MOTION streams the reference from the PS side
            self._keep_reference(tensor, n_bits, codes, zn)
        return AnchorCoding(codes, res.histogram, table, (res.data, res.bits))

    def _keep_reference(self, tensor, n_bits, codes, zn):
        """A reference over the on-chip RAM: kept on the PS side for BAND_MOTION; a build
        without the band engine keeps none (its MOTION falls back to the software)."""
        if not self.accel.ops.band:
            self._reference = None
            return
        self.accel.load_reference(codes, zn_ref=zn)
        self._reference = self._key(tensor, n_bits, codes)

    def _encode(self, q8, z8, n_bits, alphabet, store_ref):
        if store_ref:
            res = self.accel.encode_anchor(q8, z8=z8, n_bits=n_bits, store_ref=True, alphabet=alphabet.size)
        else:
            res = self.accel.encode(q8.reshape(-1), alphabet.size, requant=True, z8=z8, n_bits=n_bits)
        self.passes["ENCODE"] += 1  # counted once done: a pass refused before its START is not one
        if store_ref and q8.shape[2] % self.params.lanes:
            self.passes[f"{padded_reference_pass(z8, n_bits)} (padded reference)"] += 1
        return res

    def requantize(self, tensor, q8, n_bits):
        """The N-bit codes, on the PS (the 256-entry table equal to the requantizer): the
        encoder asks for them before a ctx anchor's section (whose CTX pass then requantizes
        the quint8 map on the fabric, one pass) and for a residual (the PS's own copy; no
        pass). The quint8 map is kept for :meth:`ctx_anchor_sections`."""
        q8 = np.ascontiguousarray(q8)
        codes = lut(tensor.zero_point, n_bits)[q8]
        self._pending = (codes, q8)
        return codes

    def _records_passes(self, records: list, software) -> list[bytes]:
        """The sections of a tensor's slices (``records``: each slice's value records, an
        independent section) in as few CTX passes as one pass's words allow
        (:func:`regmap.ctx_passes`; one for all but the largest maps). A slice over one pass
        on its own is coded in software, ``software(k)`` its section (the same bytes), and
        counted in ``fallbacks``."""
        sections: list = [None] * len(records)
        passes, alone = regmap.ctx_passes([ctx_records.words(rec).size for rec in records])
        for k in alone:
            self.fallbacks["ctx slice over a CTX pass"] += 1
            sections[k] = software(k)
        for batch in passes:
            try:
                self._records_pass(records, batch, sections)
            except AcceleratorLimitError:  # refused before its START: these slices in software
                self.fallbacks["ctx slices over the fabric's limits"] += len(batch)
                for k in batch:
                    sections[k] = software(k)
        return sections

    def _records_pass(self, records: list, batch: list[int], sections: list) -> None:
        """One CTX pass of the slices ``batch`` of ``records``: their sections into ``sections``."""
        if len(batch) == 1:
            done = [self.accel.ctx_records(records[batch[0]]).data]
        else:
            done = self.accel.ctx_records([records[k] for k in batch]).sections
        self.passes["CTX (records)"] += 1
        for k, data in zip(batch, done, strict=True):
            sections[k] = data

    def ctx_anchor_sections(self, tensor, q_n, ref, ref_changes, n_bits, slices):
        """A ctx anchor in one CTX pass: intra, or temporal (``ref``, ``ref_changes``: the
        frame coded before it, streamed beside the anchor); the codes stored on chip for
        the group's MOTION (a map over the on-chip reference: kept on the PS side for
        BAND_MOTION). An anchor in slices, or whose row is over the coder's row buffer, is
        coded from its value records (a slice per engine; more passes where one cannot take
        all the slices' words: :meth:`_records_passes`), then LOAD_REF."""
        pending, self._pending = self._pending, None
        if not self.accel.ops.ctx:
            self.fallbacks["ctx anchor (no CTX in this build)"] += 1
            return super().ctx_anchor_sections(tensor, q_n, ref, ref_changes, n_bits, slices)
        try:
            return self._ctx_anchor_sections(tensor, q_n, ref, ref_changes, n_bits, slices, pending)
        except AcceleratorLimitError:  # refused before its START: the anchor in software, the reference unknown
            self._reference = None
            self.fallbacks["ctx anchor over the fabric's limits"] += 1
            return super().ctx_anchor_sections(tensor, q_n, ref, ref_changes, n_bits, slices)

    def _ctx_anchor_sections(self, tensor, q_n, ref, ref_changes, n_bits, slices, pending):
        z8, zn = tensor.zero_point, zero_point_n(tensor.zero_point, n_bits)
        h, w, c = q_n.shape
        padded = -(-c // self.params.lanes) * self.params.lanes
        on_chip = h * w * padded <= self.params.ref_bytes
        bounds = ctx.slice_bounds(c, slices)
        # value records have no WIDTH, HEIGHT or CHANNELS register: any map (the anchor coder's only its limits)
        over = h > regmap.MAX_HEIGHT or w > regmap.MAX_WIDTH or c > regmap.MAX_CHANNELS
        if len(bounds) > 1 or w * c > self.params.line_elements or over:
            parts = [[None if a is None else a[..., c0:c1] for a in (q_n, ref, ref_changes)] for c0, c1 in bounds]
            records, changes = [], np.zeros(q_n.shape, np.int8)
            for (c0, c1), part in zip(bounds, parts, strict=True):
                rec, changes[..., c0:c1] = ctx_records.anchor_records(*part, n_bits, zn)
                records.append(rec)
            sections = self._records_passes(records, lambda k: ctx.encode_anchor(*parts[k], n_bits, zn)[0])
            if on_chip:
                self.accel.load_reference(q_n, zn_ref=zn)
                self.passes["LOAD_REF"] += 1
                self._reference = self._key(tensor, n_bits, q_n)
            else:  # kept for BAND_MOTION
                self._keep_reference(tensor, n_bits, q_n, zn)
            return sections, changes
        requant = pending is not None and pending[0] is q_n  # the quint8 map it came from
        src = pending[1] if requant else np.ascontiguousarray(q_n)
        res = self.accel.ctx_anchor(
            src,
            z8=z8,
            n_bits=n_bits,
            z_n=zn,
            ref=None if ref is None else np.ascontiguousarray(ref),
            ref_changes=None if ref_changes is None else np.ascontiguousarray(ref_changes),
            requant=requant,
            store_ref=on_chip,
        )
        self.passes["CTX"] += 1
        if on_chip and c % self.params.lanes:  # a REQUANT pass, or a LOAD_REF where requantize(z8) is not z_N
            kind = padded_reference_pass(z8, n_bits, zn) if requant else "LOAD_REF"
            self.passes[f"{kind} (padded reference)"] += 1
        if on_chip:
            self._reference = self._key(tensor, n_bits, q_n)
        else:  # BAND_MOTION streams the reference from the PS side
            self._keep_reference(tensor, n_bits, q_n, zn)
        return [res.data], res.changes

    def ctx_pred_sections(self, tensor, mvs, p, flags, pred, recon, ref_changes, n_bits, slices):
        """A predicted frame's ctx sections in one CTX pass (more where one cannot take all
        the slices' words: :meth:`_records_passes`): their value records (vectors, flags,
        each slice's residual blocks) computed here, vectorized, the bins coded by the
        fabric. A slice with no coded element (no block flagged) is the empty section, the
        same few bytes every time, written here."""
        if not self.accel.ops.ctx:
            self.fallbacks["ctx predicted frame (no CTX in this build)"] += 1
            return super().ctx_pred_sections(tensor, mvs, p, flags, pred, recon, ref_changes, n_bits, slices)
        bounds = ctx.slice_bounds(pred.shape[2], slices) if flags is not None else [(0, pred.shape[2])]
        coded = flags is not None and bool(np.any(flags))
        parts = [[None if a is None else a[..., c0:c1] for a in (pred, recon, ref_changes)] for c0, c1 in bounds]
        records, changes = [], np.zeros(pred.shape, np.int8)
        for k, (c0, c1) in enumerate(bounds[: len(bounds) if coded else 1]):
            rec, changes[..., c0:c1] = ctx_records.pred_records(mvs, p, flags, *parts[k], tensor.block, n_bits, k == 0)
            records.append(rec)
        empty = [ctx.empty_section()] * (len(bounds) - len(records))

        def software(k):
            return ctx.encode_pred(mvs, p, flags, *parts[k], tensor.block, n_bits, k == 0)[0]

        return self._records_passes(records, software) + empty, changes

    def anchor_section(self, tensor, coder, q_n, alphabet, table):
        if coder != "huffman":
            self.fallbacks[f"{coder} section"] += 1
            return super().anchor_section(tensor, coder, q_n, alphabet, table)
        try:
            self.accel.load_table(table)
            res = self.accel.encode(np.ascontiguousarray(q_n).reshape(-1), alphabet.size, histogram=False)
        except AcceleratorLimitError:  # refused before its START
            self.fallbacks["section over the fabric's limits"] += 1
            return super().anchor_section(tensor, coder, q_n, alphabet, table)
        return res.data, res.bits

    def motion_search(self, tensor, ref_n, q8, n_bits, p, per_channel):
        if per_channel:
            self.fallbacks["per-channel TSS"] += 1
            return super().motion_search(tensor, ref_n, q8, n_bits, p, per_channel)
        zn = zero_point_n(tensor.zero_point, n_bits)
        ref_n = np.ascontiguousarray(ref_n)
        key = self._key(tensor, n_bits, ref_n)
        try:
            if key != self._reference:  # not the anchor just coded: a chained or refreshed reference
                self.accel.load_reference(ref_n, zn_ref=zn)
                self.passes["LOAD_REF"] += 1
                self._reference = key
            mvs, costs = self.accel.motion(
                np.ascontiguousarray(q8), z8=tensor.zero_point, n_bits=n_bits, zn_ref=zn, block=tensor.block, search=p
            )
            self.passes["MOTION"] += 1
        except AcceleratorLimitError:  # refused before any register was written; a fault is not hidden
            self.fallbacks["TSS over the fabric's limits"] += 1
            return super().motion_search(tensor, ref_n, q8, n_bits, p, per_channel)
        return mvs, costs


def open_accelerator(backend: str) -> Accelerator:
    if backend == "rtl":
        from temposplit.hw.simbridge import BridgeTransport

        return Accelerator(BridgeTransport())
    if backend == "pynq":  # the overlay: $TEMPOSPLIT_OVERLAY or bitstreams/pynq-z2/temposplit.bit
        from temposplit.hw.pynq_driver import open_overlay

        return open_overlay()
    raise ValueError(f"unknown fabric back end {backend!r}")


def make_encoder(backend: str, config, first_index: int = 0) -> Encoder:
    """An :class:`Encoder` whose requantizer, Huffman coder and TSS run on the fabric."""
    return Encoder(config, first_index=first_index, engine=FabricEngine(open_accelerator(backend)))
