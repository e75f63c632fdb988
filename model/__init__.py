"""Detectors, int8 post-training quantization, cut points and the M1/M2 split.

Entry points (see docs/models.md):

* :func:`load_detector` — a detector by name (the SSD-MobileNetV2 COCO port is the default);
* :mod:`temposplit.model.cuts` — the cut table; :func:`default_cut`;
* ``detector.split(cut)`` — M1/M2 (:class:`~temposplit.model.split.Split`);
* :func:`temposplit.model.quantize.quantize` — the int8 halves and the cut's uint8 codes;
* :mod:`temposplit.model.data` — video frames through PyAV and the Debian data sets.

Importing this package is light; torch is imported by the functions that need it.
"""

from temposplit.model import cuts
from temposplit.model.cuts import DEFAULT_MODEL, default_cut, get_cut

__all__ = ["DEFAULT_MODEL", "cuts", "default_cut", "get_cut", "load_detector"]


def load_detector(name: str = DEFAULT_MODEL, weights: str | None = None, **kwargs):
    """A detector by name; see :func:`temposplit.model.detectors.load_detector`."""
    from temposplit.model.detectors import load_detector as _load

    return _load(name, weights, **kwargs)
