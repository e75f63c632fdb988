"""How the edge reads the server's ACKs (what lands in its report; no model, no socket), and how
it waits between connection attempts."""

import json

import pytest

from temposplit import protocol as P
from temposplit.host.edge import Edge


def _edge() -> Edge:
    edge = Edge(model=None, codec={}, address=("127.0.0.1", 9), stream="acks")
    edge.chan = object()  # the current connection: messages from any other are dropped
    return edge


def _ack(edge: Edge, obj: dict, chan=None) -> None:
    raw = P.control(P.ACK, obj)
    edge.inbox.put((edge.chan if chan is None else chan, P.Message(P.ACK, raw[P.HEAD_SIZE :])))
    assert edge._handle()


def test_a_frame_s_m2_time_is_its_share_of_the_batch():
    edge = _edge()
    for frame in range(4):  # one batch of four frames: the server reports the batch's time to each
        _ack(edge, {"frame": frame, "detections": [], "decode_ms": 1.0, "m2_ms": 40.0, "batch": 4})
    _ack(edge, {"frame": 4, "detections": [], "decode_ms": 1.0, "m2_ms": 12.0, "batch": 1})
    assert edge.report.m2_ms == pytest.approx([10.0, 10.0, 10.0, 10.0, 12.0])
    assert sum(edge.report.m2_ms) == pytest.approx(40.0 + 12.0)  # the shares add up to the server's M2 time
    assert edge.report.acked == 5


def test_an_ack_without_a_batch_size_counts_the_frame_alone():
    edge = _edge()
    _ack(edge, {"frame": 0, "detections": [], "m2_ms": 7.5})
    _ack(edge, {"frame": 1, "detections": [], "m2_ms": 7.5, "batch": 0})  # a nonsense size: not a division by zero
    assert edge.report.m2_ms == pytest.approx([7.5, 7.5])


def test_errors_and_duplicates_add_no_m2_time():
    edge = _edge()
    _ack(edge, {"frame": 0, "error": "cannot decode"})
    _ack(edge, {"frame": 1, "duplicate": True})
    assert edge.report.m2_ms == []
    assert edge.report.acked == 0
    assert edge.report.errors == {0: "cannot decode"}
    assert json.dumps(edge.report.detections) == "{}"


def test_an_ack_from_a_connection_since_replaced_is_taken_once():
    """An ACK states a fact about the server's record, whatever connection brought it: one
    read after its connection was replaced (the resume's WELCOME had named its frame
    recorded) was dropped, and the report missed the frame's detections. It is taken, and
    a frame answered twice (an ACK repeated) is counted once."""
    edge = _edge()
    edge.report.unanswered.add(2)  # WELCOME: recorded, its ACK not read yet
    old = object()
    _ack(edge, {"frame": 2, "detections": [{"label": "person"}], "m2_ms": 9.0, "batch": 3}, chan=old)
    assert edge.report.acked == 1 and edge.report.detections == {2: [{"label": "person"}]}
    _ack(edge, {"frame": 2, "detections": [{"label": "person"}], "m2_ms": 9.0, "batch": 3})
    _ack(edge, {"frame": 3, "error": "cannot decode"}, chan=old)
    assert edge.report.acked == 1 and edge.report.detections == {2: [{"label": "person"}]}
    assert edge.report.m2_ms == pytest.approx([3.0])
    assert not edge.report.unanswered and edge.report.errors == {3: "cannot decode"}


def test_a_duplicate_of_a_frame_unanswered_counts_it_recorded_until_its_answer_comes():
    """A resent frame answered `duplicate`: the server recorded it, and its ACK with the
    detections went to a lost connection (or comes later): recorded but unanswered, never
    answered twice."""
    edge = _edge()
    edge.pending.update({4: 0.0, 5: 0.0})
    _ack(edge, {"frame": 4, "duplicate": True})
    _ack(edge, {"frame": 5, "duplicate": True})
    _ack(edge, {"frame": 5, "detections": [], "m2_ms": 1.0}, chan=object())  # the first copy's, read late
    _ack(edge, {"frame": 5, "duplicate": True})  # a third copy: still answered
    assert list(edge.report.unanswered) == [4] and edge.report.acked == 1 and list(edge.report.detections) == [5]
    assert not edge.pending


def test_the_reconnect_back_off_outlasts_the_hello_timeout_and_is_drawn():
    """The waits between the edge's attempts: each within [1/2, 1] of the doubling delay
    capped at 5 s, together longer than the server's HELLO timeout whatever is drawn (the
    slots a flood holds are freed within them), and not the same for two edges."""
    import random

    from temposplit.host.edge import RECONNECT_ATTEMPTS, reconnect_delay

    waits = range(RECONNECT_ATTEMPTS - 1)  # no wait after the last attempt
    for a in waits:
        full = min(5.0, 0.1 * 2**a)
        assert [reconnect_delay(a, _Fixed(u)) for u in (0.5, 1.0)] == [full / 2, full]
    assert sum(reconnect_delay(a, _Fixed(0.5)) for a in waits) > P.HELLO_TIMEOUT
    first, second = random.Random(1), random.Random(2)
    assert [reconnect_delay(a, first) for a in waits] != [reconnect_delay(a, second) for a in waits]


class _Fixed:
    """A random source whose every draw is the given point of the interval."""

    def __init__(self, point: float):
        self.point = point

    def uniform(self, lo: float, hi: float) -> float:
        assert (lo, hi) == (0.5, 1.0)
        return self.point
