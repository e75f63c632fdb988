"""Accelerator back ends of the edge: who runs the requantizer, TSS and the Huffman encoder.

- ``golden``: the codec in software (the reference; NumPy + compiled kernels);
- ``rtl``: the fabric's RTL simulated under Verilator, through the accelerator driver;
- ``pynq``: the fabric on a PYNQ-Z2, through the same driver's PYNQ transport.

Each gives an object with the :class:`~temposplit.codec.encoder.Encoder` interface
(``header_bytes``, ``push``, ``flush``, ``request_key``, ``set_total_frames``,
``frames``), producing the same bytes.
"""

from __future__ import annotations

from temposplit.errors import ConfigError, MissingDependencyError

BACKENDS = ("golden", "rtl", "pynq")


def make_encoder(backend: str, config, first_index: int = 0):
    if backend == "golden":
        from temposplit.codec.encoder import Encoder

        return Encoder(config, first_index=first_index)
    if backend in ("rtl", "pynq"):
        try:
            from temposplit.hw import backend as hw_backend
        except ImportError as exc:
            raise MissingDependencyError(
                f"the {backend} back end needs the fabric's driver (temposplit.hw.backend): {exc}"
            ) from exc
        return hw_backend.make_encoder(backend, config, first_index=first_index)
    raise ConfigError(f"unknown back end {backend!r}; choose one of {', '.join(BACKENDS)}")
