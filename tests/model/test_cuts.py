"""The cut table: names, aliases, crossing tensors, shapes."""

import pytest

from temposplit.errors import ConfigError
from temposplit.model import cuts


def test_ssd_table_matches_spec():
    table = {c.name: c.shapes((300, 300)) for c in cuts.cuts(cuts.SSD)}
    assert table == {
        "features.3": [(24, 75, 75)],
        "features.6": [(32, 38, 38)],
        "features.10": [(64, 19, 19)],
        "features.13": [(96, 19, 19)],
        "features.14.expand": [(576, 19, 19)],
        "features.18": [(576, 19, 19), (1280, 10, 10)],
    }
    assert cuts.default_cut(cuts.SSD) == "features.10"


def test_fpn_taps_cross_the_cut():
    names = lambda m, c: [t.name for t in cuts.get_cut(m, c).crossing]  # noqa: E731
    assert names(cuts.FRCNN_R50, "layer-2-block-3") == ["layer1", "layer2"]
    assert names(cuts.FRCNN_R50, "layer4") == ["layer1", "layer2", "layer3", "layer4"]
    assert names(cuts.RETINANET_R50, "layer1") == ["layer1"]
    assert names(cuts.RETINANET_R50, "layer4") == ["layer2", "layer3", "layer4"]
    assert names(cuts.FRCNN_MBV3, "layer-15-block-3") == ["features.13", "features.15"]
    assert names(cuts.FRCNN_MBV3, "features[16]") == ["features.13", "features.16"]
    assert names(cuts.FRCNN_MBV3, "layer-12-block-3") == ["features.12"]


def test_thesis_shapes_at_800x1088():
    assert cuts.get_cut(cuts.FRCNN_R50, "layer-1-block-2").cut_tensor.shape((800, 1088)) == (256, 200, 272)
    assert cuts.get_cut(cuts.FRCNN_R50, "layer-4-block-2").cut_tensor.shape((800, 1088)) == (2048, 25, 34)


def test_aliases_are_unique_per_model():
    for model in cuts.MODELS:
        seen = set()
        for c in cuts.cuts(model):
            for n in (c.name, *c.aliases):
                assert n.lower() not in seen
                seen.add(n.lower())


def test_unknown_names_raise_config_errors():
    with pytest.raises(ConfigError, match="has no cut 'layer9'"):
        cuts.get_cut(cuts.FRCNN_R50, "layer9")
    with pytest.raises(ConfigError, match="unknown model"):
        cuts.get_cut("yolo", None)
