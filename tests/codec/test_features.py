"""The quint8 parameters of a feature file (docs/bitstream.md, 12): a scale finite and
greater than 0, a zero point in 0..255. ``features.load`` refuses others, naming the file
and the member; ``features.save`` refuses them before it writes anything; ``encode``
refuses such a file in one line."""

import math
import os

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features
from temposplit.codec.errors import ConfigurationError

BAD_ZERO_POINTS = [300, 256, -1]
BAD_SCALES = [0.0, -0.5, math.nan, math.inf, -math.inf]


def _codes():
    return np.zeros((2, 3, 4, 4), np.uint8)


def _file(path, scale, zero_point) -> None:
    """A feature file written as NumPy writes one, whatever its values (not through save)."""
    np.savez(path, **{"codes/t": _codes(), "scale/t": np.float32(scale), "zero_point/t": np.int32(zero_point)})


@pytest.mark.parametrize("zero_point", BAD_ZERO_POINTS)
def test_load_refuses_a_zero_point_outside_quint8(tmp_path, zero_point):
    path = tmp_path / "f.npz"
    _file(path, 0.1, zero_point)
    with pytest.raises(ConfigurationError, match=r"zero_point/t: must be a quint8 zero point in 0\.\.255") as e:
        features.load(str(path))
    assert str(path) in str(e.value) and str(zero_point) in str(e.value)


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_load_refuses_a_scale_that_is_not_finite_and_positive(tmp_path, scale):
    path = tmp_path / "f.npz"
    _file(path, scale, 3)
    with pytest.raises(ConfigurationError, match=r"scale/t: must be a finite quint8 scale greater than 0") as e:
        features.load(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("scale, zero_point", [(1e-30, 0), (0.1, 255), (3e38, 128)])
def test_load_takes_the_quint8_range_to_its_ends(tmp_path, scale, zero_point):
    path = tmp_path / "f.npz"
    _file(path, scale, zero_point)
    clip = features.load(str(path))
    assert clip.scales == [float(np.float32(scale))] and clip.zero_points == [zero_point]


@pytest.mark.parametrize(
    "field, value, needle",
    [
        *[("zero_points", z, r"zero_point/a: must be a quint8 zero point in 0\.\.255") for z in BAD_ZERO_POINTS],
        *[("scales", s, r"scale/a: must be a finite quint8 scale greater than 0") for s in BAD_SCALES],
    ],
)
def test_save_refuses_what_load_would_before_writing(tmp_path, field, value, needle):
    fields = {"scales": [0.1], "zero_points": [3], "blocks": [4], field: [value]}
    clip = features.FeatureClip(["a"], [_codes()], **fields)
    with pytest.raises(ConfigurationError, match=needle):
        features.save(str(tmp_path / "f.npz"), clip)
    assert os.listdir(tmp_path) == []  # nothing written


def test_save_writes_what_load_reads_at_the_ends_of_the_range(tmp_path):
    clip = features.FeatureClip(["a", "b"], [_codes(), _codes()], [1e-30, 2.0], [0, 255], [None, 4])
    features.save(str(tmp_path / "f.npz"), clip)
    back = features.load(str(tmp_path / "f.npz"))
    assert back.zero_points == [0, 255] and back.scales == [float(np.float32(1e-30)), 2.0]


def test_encode_refuses_a_zero_point_outside_quint8_in_one_line(tmp_path, capsys):
    path = tmp_path / "f.npz"
    _file(path, 0.1, 300)
    assert main(["encode", str(path), str(tmp_path / "s.tsp")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "zero_point/t" in lines[0] and "Traceback" not in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == ["f.npz"]
