"""What the server writes of a client's text (an ERROR's message, a log line, a record):
one line, nothing forged after it, and bounded, however much the client sent."""

from __future__ import annotations

MAX_SHOWN = 80  # characters of a client-supplied value quoted in an ERROR or a log line
MAX_MESSAGE = 400  # characters of an ERROR's message, and of a log line


def shown(value) -> str:
    """A client-supplied value as quoted in an ERROR or a log line: ``ascii()`` (no
    newline or control character), at most MAX_SHOWN characters."""
    text = ascii(value)
    return text if len(text) <= MAX_SHOWN else f"{text[: MAX_SHOWN - 3]}..."


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` with its control characters escaped (one line, nothing forged after it),
    cut to ``limit`` characters."""
    raw = str(text)
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in raw[:limit])
    if len(out) <= limit and len(raw) <= limit:
        return out
    return f"{out[: limit - 32]}... ({len(raw)} characters in all)"
