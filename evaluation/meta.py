"""An eval output folder's ``meta.json`` (the runs' settings, identity and timings), read
and checked: one that is not the JSON object eval writes is a ConfigError naming it."""

from __future__ import annotations

import json
from pathlib import Path

from temposplit.errors import ConfigError


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
    return meta
