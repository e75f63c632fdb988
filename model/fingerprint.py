"""The hash a stream header carries: the model's weights and the cut's quantization parameters.

The edge and the server compute it independently (the server from its own weights and
the parameters in the header), so a server refuses a stream made by another model.
"""

from __future__ import annotations

import hashlib
import struct


def weights_digest(net) -> bytes:
    """SHA-256 over the state dict: each entry's name and raw bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().contiguous().cpu()
        if t.is_quantized:
            t = t.int_repr()
        h.update(t.numpy().tobytes())
    return h.digest()


def stream_hash(digest: bytes, model: str, cut: str, qparams) -> bytes:
    """SHA-256 of the weights digest, the model and cut names and each tensor's (s8, z8)."""
    h = hashlib.sha256(digest)
    h.update(f"{model}\0{cut}\0".encode())
    for scale, zero_point in qparams:
        h.update(struct.pack("<fB", float(scale), int(zero_point)))
    return h.digest()


def calibration_platform() -> str:
    """What besides its inputs an int8 calibration depends on: PyTorch's version (its
    observers and conversion). Not the CPU kind or the thread count: a recipe computes in
    float64, whose last-bit differences between kernels the float32 results it keeps round
    away (:data:`temposplit.model.quantize.CALIBRATION_DTYPE`; tested on other CPU kernels
    and thread counts). The ``float64`` mark tells these calibrations from the float32
    ones before them, which depended on both."""
    import torch

    return f"torch {torch.__version__}, float64"


# The entry points that make the float and the int8 networks and the cut's codes: the float
# detector, the split into M1/M2, the calibration set and the int8 recipes.
NETWORK_MODULES = (
    "temposplit.model.detectors",
    "temposplit.model.split",
    "temposplit.model.calibration",
    "temposplit.model.quantize",
)


def model_source_digest() -> bytes:
    """SHA-256 over the source of the temposplit modules that make the float and the int8
    networks: :data:`NETWORK_MODULES` and every temposplit module they import, transitively
    (:func:`temposplit.source.source_digest`). Any change to that code is a new int8 cache
    key (:mod:`temposplit.model.qcache`) and new evaluation rows (docs/evaluation.md,
    "Resuming"); an edit of a module outside it (the accuracy study, a benchmark, the CLI)
    is neither."""
    from temposplit.source import source_digest

    return source_digest(NETWORK_MODULES)
