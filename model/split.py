"""M1 (edge) and M2 (server): a detector cut after one backbone stage.

``m1(x)`` runs the stages up to the cut and returns every tensor crossing it, in the cut
table's order (the taps before the cut, then the cut tensor); ``m2(tensors, meta)`` runs
the rest and returns detections. ``m2(m1(x), meta)`` is the uncut model, bit for bit in
float: both halves call the same modules in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from temposplit.errors import ConfigError


@dataclass
class BatchMeta:
    """What M2 needs besides the tensors: the network input size (H, W), each frame's size
    inside it before padding, and each frame's original size (boxes are mapped back to it)."""

    input_size: tuple[int, int]
    image_sizes: list[tuple[int, int]]
    orig_sizes: list[tuple[int, int]]

    @staticmethod
    def plain(input_size: tuple[int, int], n: int) -> BatchMeta:
        """Frames that are the network input itself (boxes in network-input pixels)."""
        return BatchMeta(tuple(input_size), [tuple(input_size)] * n, [tuple(input_size)] * n)


@dataclass
class Batch:
    """Preprocessed frames: the network input (N, 3, H, W) and its :class:`BatchMeta`."""

    tensor: torch.Tensor
    meta: BatchMeta = field(default=None)


def check_tensors(tensors, what: str = "m2") -> list:
    """``tensors`` (a list or tuple of torch tensors, as m1 returns) as a list, else a ConfigError."""
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ConfigError(f"{what} takes the list of tensors m1 returns, not {type(tensors).__name__}")
    return list(tensors)


def check_batch(batch) -> Batch:
    """``batch`` if it is a :class:`Batch`, else a ConfigError saying what makes one."""
    if not isinstance(batch, Batch):
        raise ConfigError(f"expected a Batch (detector.preprocess(frames)), not {type(batch).__name__}")
    return batch


class Split:
    """A detector cut at one point.

    Parameters
    ----------
    detector : the detector (``load_detector``)
    cut : a :class:`~temposplit.model.cuts.Cut`
    net : the network whose modules run (the detector's float network by default; a
        quantized copy for the int8 halves)
    """

    def __init__(self, detector, cut, net=None):
        self.detector = detector
        self.cut = cut
        self.net = net if net is not None else detector.net
        stages = detector.info.stages
        if cut.stage not in stages:
            raise ConfigError(f"cut {cut.name} is not a stage of {detector.name}")
        k = stages.index(cut.stage)
        self.m1_stages = stages[: k + 1]
        self.m2_stages = stages[k + 1 :]
        self.crossing = [t.name for t in cut.crossing]

    @property
    def names(self) -> list[str]:
        """The crossing tensors' names, in the order m1 returns them."""
        return list(self.crossing)

    def shapes(self, input_size=None) -> list[tuple[int, int, int]]:
        return self.cut.shapes(input_size or self.detector.input_size)

    @torch.no_grad()
    def m1(self, x) -> list[torch.Tensor]:
        """Network input (N, 3, H, W) (or a :class:`Batch`) -> the tensors crossing the cut."""
        if isinstance(x, Batch):
            x = x.tensor
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"m1 takes the network input, a float tensor (N, 3, H, W) or a Batch, not {what}")
        x = self.detector.m1_prefix(self.net, x)
        taps = {}
        for name in self.m1_stages:
            x = self.detector.stage(self.net, name)(x)
            if name in self.crossing:
                taps[name] = x
        return [taps[n] for n in self.crossing]

    @torch.no_grad()
    def m2(self, tensors, meta: BatchMeta | None = None):
        """The tensors crossing the cut -> list of Detections (one per frame)."""
        tensors = check_tensors(tensors)
        if len(tensors) != len(self.crossing):
            raise ConfigError(f"cut {self.cut.name} carries {len(self.crossing)} tensors, got {len(tensors)}")
        for spec, t in zip(self.cut.crossing, tensors, strict=True):
            if t.ndim != 4 or t.shape[1] != spec.channels or t.shape[0] != tensors[0].shape[0]:
                raise ConfigError(
                    f"{spec.name}: expected (N, {spec.channels}, H, W) with the batch's N, got {tuple(t.shape)}"
                )
        if meta is None:
            meta = BatchMeta.plain(self.detector.input_size, tensors[0].shape[0])
        if len(meta.orig_sizes) != tensors[0].shape[0] or len(meta.image_sizes) != tensors[0].shape[0]:
            raise ConfigError(f"the meta describes {len(meta.orig_sizes)} frames, the tensors {tensors[0].shape[0]}")
        taps = dict(zip(self.crossing, tensors, strict=False))
        x = tensors[-1]
        for name in self.m2_stages:
            x = self.detector.stage(self.net, name)(x)
            taps[name] = x
        wanted = {n: taps[n] for n in self.detector.info.taps}
        return self.detector.head(self.net, wanted, meta)

    def __call__(self, batch: Batch):
        return self.m2(self.m1(batch.tensor), batch.meta)
