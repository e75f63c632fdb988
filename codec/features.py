"""Feature files: cut tensors of a clip in one ``.npz`` (the CLI's input and output).

Layout (docs/bitstream.md, "Feature files"): for each tensor, in file order,

- ``codes/<name>``: uint8 array (T, C, H, W), T frames of quint8 codes (or N-bit codes
  in a decoded file);
- ``scale/<name>``, ``zero_point/<name>``: the quint8 parameters (scalars);
- ``block/<name>`` (optional): the block size B for this tensor.

A decoded file adds ``index`` (frame indices), ``n_bits`` (per frame) and, per tensor,
``values/<name>`` (float32 dequantized values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from temposplit.codec.errors import ConfigurationError


@dataclass
class FeatureClip:
    names: list[str]
    codes: list[np.ndarray]  # (T, C, H, W) uint8 per tensor
    scales: list[float]
    zero_points: list[int]
    blocks: list[int | None]

    @property
    def frames(self) -> int:
        return self.codes[0].shape[0]

    def frame(self, t: int) -> list[np.ndarray]:
        return [c[t] for c in self.codes]


def load(path: str) -> FeatureClip:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: not a readable .npz feature file ({exc})") from exc
    with npz:
        names = [k.split("/", 1)[1] for k in npz.files if k.startswith("codes/")]
        if not names:
            raise ConfigurationError(f"{path}: no 'codes/<name>' arrays (see docs/bitstream.md, Feature files)")
        clip = FeatureClip(names, [], [], [], [])
        for n in names:
            codes = npz[f"codes/{n}"]
            if codes.dtype != np.uint8 or codes.ndim != 4:
                raise ConfigurationError(
                    f"{path}: codes/{n} must be uint8 (T, C, H, W), not {codes.dtype} {codes.shape}"
                )
            for key in (f"scale/{n}", f"zero_point/{n}"):
                if key not in npz.files:
                    raise ConfigurationError(f"{path}: missing {key}")
            clip.codes.append(codes)
            clip.scales.append(float(npz[f"scale/{n}"]))
            clip.zero_points.append(int(npz[f"zero_point/{n}"]))
            clip.blocks.append(int(npz[f"block/{n}"]) if f"block/{n}" in npz.files else None)
    if len({c.shape[0] for c in clip.codes}) != 1:
        raise ConfigurationError(f"{path}: every tensor must have the same number of frames")
    return clip


def save(path: str, clip: FeatureClip, extra: dict[str, np.ndarray] | None = None) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, n in enumerate(clip.names):
        arrays[f"codes/{n}"] = clip.codes[i]
        arrays[f"scale/{n}"] = np.float32(clip.scales[i])
        arrays[f"zero_point/{n}"] = np.int32(clip.zero_points[i])
        if clip.blocks[i] is not None:
            arrays[f"block/{n}"] = np.int32(clip.blocks[i])
    arrays.update(extra or {})
    np.savez_compressed(path, **arrays)
