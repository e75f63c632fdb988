"""The int8 feature-map fixtures of the SSD (tests/fixtures/features)."""

from pathlib import Path

import numpy as np
import pytest

from temposplit.model import cuts
from temposplit.model.fixtures import COMMAND

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "features"


def _load(cut):
    path = FIXTURES / f"ssd-{cut}.npz"
    if not path.is_file():
        pytest.fail(f"{path} is missing: regenerate with `{COMMAND}`")
    return np.load(path)


@pytest.mark.parametrize("cut", [c.name for c in cuts.cuts(cuts.SSD)])
def test_fixture_matches_cut_table(cut):
    f = _load(cut)
    shapes = cuts.get_cut(cuts.SSD, cut).shapes((300, 300))
    assert str(f["cut"]) == cut and str(f["command"]) == COMMAND
    frames = f["frames"]
    assert len(frames) >= 2 and np.all(np.diff(frames) == 1)
    for i, shape in enumerate(shapes):
        codes = f[f"codes_{i}"]
        assert tuple(f[f"shape_{i}"]) == shape
        assert codes.dtype == np.uint8 and codes.shape[0] == len(frames) and codes.shape[2:] == shape[1:]
        assert 1 <= codes.shape[1] <= shape[0]
        assert float(f[f"scale_{i}"]) > 0 and 0 <= int(f[f"zero_point_{i}"]) <= 255


def test_fixtures_stay_small():
    total = sum(p.stat().st_size for p in FIXTURES.glob("*.npz"))
    assert 0 < total < 400_000


@pytest.mark.slow
@pytest.mark.models
def test_fixtures_regenerate_identically(tmp_path, vtest_frames):
    from temposplit.model.fixtures import write_fixtures

    write_fixtures(tmp_path, log=None)
    for cut in ("features.13", "features.18"):
        old = _load(cut)
        new = np.load(tmp_path / f"ssd-{cut}.npz")
        for key in old.files:
            assert np.array_equal(old[key], new[key]), (cut, key)
