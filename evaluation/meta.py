"""An eval output folder's ``meta.json`` (the runs' settings, identity and timings), read
and checked: one that is not the JSON object eval writes is a ConfigError naming it."""

from __future__ import annotations

import json
from pathlib import Path

from temposplit.errors import ConfigError


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list_of(check):
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _str(v) -> bool:
    return isinstance(v, str)


def _str_to_str(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


# The settings the reports compute with, as eval writes them (``Harness.settings``): each one
# of another type stopped eval-report part way with a TypeError or AttributeError, after
# some of its files were written.
_SETTINGS = {
    "cuts": (_list_of(_str), "a list of cut names"),
    "methods": (_list_of(_str), "a list of method names"),
    "bits": (_list_of(_int), "a list of integers"),
    "videos": (_str_to_str, "an object of clip name -> video path"),
    "start": (_int, "an integer"),
}


def read_meta(path) -> dict:
    """The ``meta.json`` at ``path`` ({} where there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON
        raise ConfigError(f"{path}: not the JSON eval writes ({exc})") from None
    runs = meta.get("runs", []) if isinstance(meta, dict) else None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("settings", {}), dict)
        or not isinstance(runs, list)
        or not all(isinstance(r, dict) and isinstance(r.get("timings", {}), dict) for r in runs)
    ):
        raise ConfigError(f"{path}: not the JSON object eval writes (settings, runs)")
    settings = meta.get("settings", {})
    for key, (check, what) in _SETTINGS.items():
        if key in settings and not check(settings[key]):
            raise ConfigError(f"{path}: settings.{key} is not {what} (not the JSON eval writes)")
    if meta.get("points") is not None and not _str_to_str(meta["points"]):
        raise ConfigError(f"{path}: points is not an object of row key -> point identity (not the JSON eval writes)")
    return meta
