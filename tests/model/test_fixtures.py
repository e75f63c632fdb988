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


def _tensors(f):
    i = 0
    while f"codes_{i}" in f.files:
        yield i
        i += 1


@pytest.mark.slow
@pytest.mark.models
def test_fixtures_regenerate_identically_where_they_were_made(tmp_path, vtest_frames):
    """The committed fixtures are what the code makes: to the bit where the platform that
    made them (PyTorch's version and, for the float32 calibrations that made the committed
    ones, the CPU kernels: docs/models.md, "Reproducibility") is this one's; elsewhere every layout field
    to the bit and each tensor's codes as close as two calibrations of one network get
    (correlation >= 0.99 where the platforms measured gave >= 0.9966, and vtest frames two
    apart 0.963-0.987), its scale within 5 % and zero point within 4."""
    from temposplit.model.fingerprint import calibration_platform
    from temposplit.model.fixtures import command, write_fixtures

    write_fixtures(tmp_path, log=None)
    for cut in [c.name for c in cuts.cuts(cuts.SSD)]:
        old = _load(cut)
        new = np.load(tmp_path / f"ssd-{cut}.npz")
        assert str(new["platform"]) == calibration_platform()
        assert str(new["command"]) == command(tmp_path)  # written elsewhere: the committed ones' with its --out
        if "platform" in old.files and str(old["platform"]) == calibration_platform():
            assert sorted(old.files) == sorted(new.files), cut
            for key in old.files:
                assert key == "command" or np.array_equal(old[key], new[key]), (cut, key)
            continue
        for key in ("frames", "cut"):
            assert np.array_equal(old[key], new[key]), (cut, key)
        for i in _tensors(old):
            for key in (f"name_{i}", f"shape_{i}"):
                assert np.array_equal(old[key], new[key]), (cut, key)
            a, b = old[f"codes_{i}"], new[f"codes_{i}"]
            assert a.shape == b.shape, (cut, i)
            corr = np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1]
            assert corr >= 0.99, (cut, i, corr)
            assert abs(float(new[f"scale_{i}"]) / float(old[f"scale_{i}"]) - 1) <= 0.05, (cut, i)
            assert abs(int(new[f"zero_point_{i}"]) - int(old[f"zero_point_{i}"])) <= 4, (cut, i)


def test_the_fixtures_record_the_command_that_made_them(tmp_path, monkeypatch, vtest_frames):
    """Each file's ``command`` is the one with the options it was written with (the
    committed ones': :data:`COMMAND`, the defaults), not a fixed string."""
    import shlex

    from temposplit.model import quantize
    from temposplit.model.fixtures import command, write_fixtures

    assert COMMAND == command("tests/fixtures/features") == "temposplit models fixtures --out tests/fixtures/features"
    real = quantize.quantize
    monkeypatch.setenv("TEMPOSPLIT_INT8_CACHE", "0")  # the options are under test, not the calibration: a quick one
    monkeypatch.setattr(quantize, "quantize", lambda det, frames: real(det, frames[:1], method="minmax"))
    written = write_fixtures(tmp_path, start=5, count=1, log=None)
    assert len(written) == len(cuts.cuts(cuts.SSD))
    for path in written:
        f = np.load(path)
        recorded = str(f["command"])
        assert "--start 5 --frames 1" in recorded
        assert shlex.split(recorded)[:5] == ["temposplit", "models", "fixtures", "--out", str(tmp_path)], recorded
        assert f["frames"].tolist() == [5]
