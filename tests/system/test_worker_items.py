"""The worker's answer to an END whose outputs cannot be finished (stand-in session and
connection: no model, no socket)."""

import threading

from temposplit import protocol as P
from temposplit.server.worker import Item, Worker


class _Conn:
    client = "c"
    broken = False

    def __init__(self):
        self.posted, self.failed = [], []

    def post(self, data, release=True, close_after=False):
        self.posted.append(data[0] if data else None)

    def fail(self, message, retry=False):
        self.failed.append(message)
        self.broken = True


class _Session:
    name = "s"
    decoder = object()
    max_seen = 2  # frames 0..2 sent: an END of 3 frames is in order

    def __init__(self, finish_error=None):
        self.closed = threading.Event()
        self.finish_error = finish_error

    def lead_error(self, *args):
        return None

    def finish(self, total):
        if self.finish_error is not None:
            raise self.finish_error
        self.closed.set()
        return []

    def close(self, total=None):
        self.closed.set()
        return []

    def summary(self):
        return {"frames": 0}


def _end(session):
    conn, gone = _Conn(), []
    worker = Worker(models=None, log=lambda m: None, on_closed=gone.append)
    worker._process([Item("end", session, conn, obj={"frames": 3})])
    return conn, gone


def test_an_end_whose_outputs_cannot_be_finished_is_an_error_not_a_summary():
    """The stream is not finished (its files say so): a SUMMARY would tell the edge it was."""
    s = _Session(OSError(28, "No space left on device"))
    conn, gone = _end(s)
    assert conn.posted == [] and conn.failed == ["internal server error: OSError (No space left on device)"]
    assert s.closed.is_set() and gone == [s]  # closed and dropped all the same


def test_an_end_that_finishes_is_answered_with_the_summary():
    s = _Session()
    conn, gone = _end(s)
    assert conn.posted == [P.SUMMARY] and conn.failed == [] and gone == [s]
