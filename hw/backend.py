"""The fabric as the codec encoder's engine: the edge program's ``rtl`` and ``pynq`` back ends.

:class:`FabricEngine` implements :class:`temposplit.codec.encoder.SoftwareEngine`'s three
operations (requantize, anchor section, motion search) on the accelerator through the
driver, so :class:`~temposplit.codec.encoder.Encoder` produces its packets with the
fabric doing the per-element work, byte for byte the same as the software path. Maps
over the on-chip reference (the ResNet-50 cuts) are motion-searched by BAND_MOTION: the
driver keeps the reference's codes on the PS side (``load_reference``) and streams them in
bands. What the fabric does not do (ZVC/raw/ZRL sections, per-channel vectors, TSS of a
map the band engine cannot cut: over ``band_blocks`` blocks, or a band of B + 2p rows of
one chunk of channels over the reference RAM) falls back to the golden software and is
counted in ``engine.fallbacks``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from temposplit.codec.encoder import Encoder, SoftwareEngine
from temposplit.codec.quantize import zero_point_n
from temposplit.hw.driver import Accelerator, AcceleratorError


class FabricEngine(SoftwareEngine):
    def __init__(self, accel: Accelerator):
        self.accel = accel
        self.params = accel.probe()
        self.fallbacks: Counter = Counter()
        self._reference = None  # (tensor name, n_bits, digest) of the reference on chip

    def requantize(self, tensor, q8, n_bits):
        return self.accel.requantize(np.ascontiguousarray(q8), z8=tensor.zero_point, n_bits=n_bits)

    def anchor_section(self, tensor, coder, q_n, alphabet, table):
        if coder != "huffman":
            self.fallbacks[f"{coder} section"] += 1
            return super().anchor_section(tensor, coder, q_n, alphabet, table)
        self.accel.load_table(table)
        res = self.accel.encode(np.ascontiguousarray(q_n).reshape(-1), alphabet.size, histogram=False)
        return res.data, res.bits

    def motion_search(self, tensor, ref_n, q8, n_bits, p, per_channel):
        if per_channel:
            self.fallbacks["per-channel TSS"] += 1
            return super().motion_search(tensor, ref_n, q8, n_bits, p, per_channel)
        zn = zero_point_n(tensor.zero_point, n_bits)
        ref_n = np.ascontiguousarray(ref_n)
        key = (tensor.name, n_bits, hash(ref_n.tobytes()))
        try:
            if key != self._reference:
                self.accel.load_reference(ref_n, zn_ref=zn)
                self._reference = key
            mvs, costs = self.accel.motion(
                np.ascontiguousarray(q8), z8=tensor.zero_point, n_bits=n_bits, zn_ref=zn, block=tensor.block, search=p
            )
        except AcceleratorError:
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
