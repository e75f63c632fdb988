"""What the server writes of a client's text (an ERROR's message, a log line, a record):
one line, nothing forged after it, and bounded, however much the client sent; and how
often it writes a client's errors (:class:`Throttle`)."""

from __future__ import annotations

import time

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


class Throttle:
    """Log lines of one kind, at most ``burst`` of them per ``interval`` seconds per key (a
    client's address; None: all clients), the line after a pause saying how many were
    passed over: a client that repeats an error a thousand times a second writes a few
    lines every ``interval``, not a thousand. Keys quiet for an interval are forgotten once
    ``keys`` are held (all of them, if none is quiet: memory stays bounded)."""

    def __init__(self, log, what: str, interval: float = 10.0, burst: int = 1, keys: int = 4096):
        self.log, self.what, self.interval, self.burst, self.keys = log, what, interval, burst, keys
        self.seen: dict = {}  # key -> [when its window began, lines logged in it, lines passed over since]

    def __call__(self, key, line: str) -> None:
        now = time.monotonic()
        seen = self.seen.get(key)
        if seen is None or now - seen[0] >= self.interval:
            more = f" (and {seen[2]} more {self.what} since the last such line)" if seen and seen[2] else ""
            self.log(line + more)
            if seen is None and len(self.seen) >= self.keys:
                quiet = [k for k, v in self.seen.items() if now - v[0] >= self.interval]
                for k in quiet if quiet else list(self.seen):
                    del self.seen[k]
            self.seen[key] = [now, 1, 0]
        elif seen[1] < self.burst:
            seen[1] += 1
            self.log(line)
        else:
            seen[2] += 1
