"""The name of a clip's cached M1 codes and float reference (``ClipData.clip_id``) changes
with PyAV's and FFmpeg's versions (they decode the frames both are computed from) and with
the source of evaluation/cache.py (which computes and stores them), as the run identity
does: after such a change every row was measured again, but from the stale cached codes."""

from __future__ import annotations

from pathlib import Path

import pytest

av = pytest.importorskip("av")

from temposplit import source  # noqa: E402
from temposplit.evaluation.cache import ClipData, Models  # noqa: E402

CACHE_MODULE = "temposplit.evaluation.cache"


def _clip_id(tmp_path: Path) -> str:
    """A fresh clip's cache name (calibration on the clip's own frames: no calibration set read,
    the weights given by name: no network loaded)."""
    models = Models("ssd-mobilenet-v2", None, {}, print, {})
    models._weights_id = "w"
    video = tmp_path / "c.avi"
    if not video.exists():
        video.write_bytes(b"the clip's bytes")
    return ClipData(models, "c", video, 3, 0, 1, (0,), tmp_path / "cache", False, "clip", 32, print, {}).clip_id()


def test_the_cache_name_is_stable(tmp_path):
    assert _clip_id(tmp_path) == _clip_id(tmp_path)


def test_another_pyav_is_another_cache_name(tmp_path, monkeypatch):
    first = _clip_id(tmp_path)
    monkeypatch.setattr(av, "__version__", av.__version__ + "+another")
    assert _clip_id(tmp_path) != first


def test_another_ffmpeg_is_another_cache_name(tmp_path, monkeypatch):
    first = _clip_id(tmp_path)
    libs = dict(av.library_versions)
    name = next(iter(libs))
    libs[name] = (*libs[name][:-1], libs[name][-1] + 1)
    monkeypatch.setattr(av, "library_versions", libs)
    assert _clip_id(tmp_path) != first


def test_an_edit_of_the_cache_module_is_another_cache_name(tmp_path, monkeypatch):
    """The module's source read from a copy that the test edits (the digest follows the import
    closure: :func:`temposplit.source.module_closure`)."""
    real = source.module_closure
    copy = tmp_path / "cache_copy.py"
    copy.write_bytes(real((CACHE_MODULE,))[CACHE_MODULE].read_bytes())

    def closure(roots):
        found = dict(real(roots))
        if CACHE_MODULE in found:
            found[CACHE_MODULE] = copy
        return found

    monkeypatch.setattr(source, "module_closure", closure)
    first = _clip_id(tmp_path)
    assert _clip_id(tmp_path) == first
    copy.write_bytes(copy.read_bytes() + b"\n# an edit of how the codes are computed\n")
    assert _clip_id(tmp_path) != first
