"""The cut table: one source of truth for each model's cut points (docs/requirements.md section 3).

A *stage* is one step of a backbone that M1 can end after (``features.13``, ``layer2``);
a *tap* is a stage whose output the rest of the model reads besides the next stage (the
FPN's inputs, the SSD's first head). M1 for a cut runs the stages up to and including
the cut's stage and returns every tensor that crosses the cut, in network order: the
taps before the cut, then the cut's own output (always last; "the cut tensor").

Shapes: every stage here keeps ``ceil(size / stride)`` (TF "SAME" padding in the SSD,
``k // 2`` padding in torchvision), so a tensor's (C, H, W) at an input size (H0, W0)
is ``(channels, ceil(H0 / stride), ceil(W0 / stride))``. The tests check this against
the tensors M1 really returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from temposplit.errors import ConfigError

SSD = "ssd-mobilenet-v2"
FRCNN_R50 = "fasterrcnn-resnet50-fpn"
FRCNN_MBV3 = "fasterrcnn-mobilenet-v3-large-fpn"
RETINANET_R50 = "retinanet-resnet50-fpn"
DEFAULT_MODEL = SSD


@dataclass(frozen=True)
class TensorSpec:
    """A tensor that can cross a cut: the stage that produces it, its channels and stride."""

    name: str
    channels: int
    stride: int

    def shape(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        h, w = input_size
        return (self.channels, -(-h // self.stride), -(-w // self.stride))


@dataclass(frozen=True)
class Cut:
    """One cut point of one model."""

    model: str
    name: str
    aliases: tuple[str, ...]
    crossing: tuple[TensorSpec, ...]
    description: str

    @property
    def stage(self) -> str:
        """The last stage M1 runs."""
        return self.crossing[-1].name

    @property
    def cut_tensor(self) -> TensorSpec:
        return self.crossing[-1]

    def shapes(self, input_size: tuple[int, int]) -> list[tuple[int, int, int]]:
        return [t.shape(input_size) for t in self.crossing]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_size: tuple[int, int]  # the network input (after resize and padding) used by default
    stages: tuple[str, ...]
    taps: tuple[str, ...]
    cuts: tuple[Cut, ...]
    default_cut: str


def _model(name, input_size, stages, taps, specs, cut_defs, default) -> ModelInfo:
    """Build a model's cuts: each crossing list is the taps before the cut plus the cut tensor."""
    index = {s: i for i, s in enumerate(stages)}
    cuts = []
    for stage, aliases, description in cut_defs:
        crossing = [specs[t] for t in taps if index[t] < index[stage]] + [specs[stage]]
        cuts.append(Cut(name, stage, tuple(aliases), tuple(crossing), description))
    return ModelInfo(name, input_size, tuple(stages), tuple(taps), tuple(cuts), default)


# --- SSD-MobileNetV2 (300x300): torchvision's MobileNetV2 indices.
_SSD_STAGES = [f"features.{i}" for i in range(14)] + ["features.14.expand", "features.14"]
_SSD_STAGES += [f"features.{i}" for i in range(15, 19)]
_SSD_SPECS = {
    "features.3": TensorSpec("features.3", 24, 4),
    "features.6": TensorSpec("features.6", 32, 8),
    "features.10": TensorSpec("features.10", 64, 16),
    "features.13": TensorSpec("features.13", 96, 16),
    "features.14.expand": TensorSpec("features.14.expand", 576, 16),
    "features.18": TensorSpec("features.18", 1280, 32),
}
_SSD = _model(
    SSD,
    (300, 300),
    _SSD_STAGES,
    ("features.14.expand", "features.18"),
    _SSD_SPECS,
    [
        ("features.3", ["features[3]", "expanded_conv_2"], "after features[3]"),
        ("features.6", ["features[6]", "expanded_conv_5"], "after features[6]"),
        ("features.10", ["features[10]", "expanded_conv_9"], "after features[10] (the default)"),
        ("features.13", ["features[13]", "expanded_conv_12"], "after features[13]"),
        (
            "features.14.expand",
            ["features[14].expand", "expanded_conv_13/expansion_output", "head-0"],
            "block 14's expansion (ReLU6), the first head's input",
        ),
        ("features.18", ["features[18]", "Conv_1"], "after features[18], the backbone's end"),
    ],
    # The default cut: the evaluation's (docs/results): at features.10 the int8 M1 holds on
    # every clip and the coded points cost fewer bytes at higher mAP than at features.13.
    "features.10",
)

# --- ResNet-50 FPN models: the thesis's four cuts.
_R50_STAGES = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
_R50_SPECS = {
    "layer1": TensorSpec("layer1", 256, 4),
    "layer2": TensorSpec("layer2", 512, 8),
    "layer3": TensorSpec("layer3", 1024, 16),
    "layer4": TensorSpec("layer4", 2048, 32),
}
_R50_CUTS = [
    ("layer1", ["layer-1-block-2"], "end of ResNet layer1"),
    ("layer2", ["layer-2-block-3"], "end of ResNet layer2"),
    ("layer3", ["layer-3-block-5"], "end of ResNet layer3"),
    ("layer4", ["layer-4-block-2"], "end of ResNet layer4"),
]
_FRCNN_R50 = _model(
    FRCNN_R50,
    (800, 1088),
    _R50_STAGES,
    ("layer1", "layer2", "layer3", "layer4"),
    _R50_SPECS,
    _R50_CUTS,
    "layer1",
)
_RETINANET = _model(
    RETINANET_R50, (800, 1088), _R50_STAGES, ("layer2", "layer3", "layer4"), _R50_SPECS, _R50_CUTS, "layer1"
)

# --- MobileNetV3-Large FPN: the FPN taps features[13] and features[16].
_MBV3_CHANNELS = {1: 16, 3: 24, 6: 40, 10: 80, 12: 112, 13: 160, 15: 160, 16: 960}
_MBV3_STRIDES = {1: 2, 3: 4, 6: 8, 10: 16, 12: 16, 13: 32, 15: 32, 16: 32}
_MBV3_SPECS = {f"features.{i}": TensorSpec(f"features.{i}", c, _MBV3_STRIDES[i]) for i, c in _MBV3_CHANNELS.items()}
_FRCNN_MBV3 = _model(
    FRCNN_MBV3,
    (800, 1088),
    [f"features.{i}" for i in range(17)],
    ("features.13", "features.16"),
    _MBV3_SPECS,
    [
        (f"features.{i}", [f"features[{i}]", thesis], f"end of features[{i}] ({_MBV3_CHANNELS[i]} ch)")
        for i, thesis in (
            (1, "layer-1-block-1"),
            (3, "layer-3-block-2"),
            (6, "layer-6-block-3"),
            (10, "layer-10-block-2"),
            (12, "layer-12-block-3"),
            (15, "layer-15-block-3"),
            (16, "layer-16-block-2"),
        )
    ],
    "features.1",
)

MODELS: dict[str, ModelInfo] = {m.name: m for m in (_SSD, _FRCNN_R50, _FRCNN_MBV3, _RETINANET)}


def model_info(model: str) -> ModelInfo:
    try:
        return MODELS[model]
    except KeyError:
        raise ConfigError(f"unknown model {model!r}; known: {', '.join(MODELS)}") from None


def cuts(model: str) -> tuple[Cut, ...]:
    """The cut points of a model, shallowest first."""
    return model_info(model).cuts


def default_cut(model: str) -> str:
    """The default cut's name (``features.10`` for the SSD, the first cut for the others)."""
    return model_info(model).default_cut


def get_cut(model: str, name: str | None = None) -> Cut:
    """A cut by name or alias (case-insensitive); the default when ``name`` is None."""
    info = model_info(model)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"a cut is named by a string such as {info.default_cut!r}, not {type(name).__name__}")
    name = name or info.default_cut
    for cut in info.cuts:
        if name.lower() in (cut.name.lower(), *(a.lower() for a in cut.aliases)):
            return cut
    known = ", ".join(c.name for c in info.cuts)
    raise ConfigError(f"model {model} has no cut {name!r}; its cuts: {known} (or their aliases)")
