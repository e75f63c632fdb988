"""How the edge reads the server's ACKs: what lands in its report (no model, no socket)."""

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


def test_errors_duplicates_and_stale_connections_add_no_m2_time():
    edge = _edge()
    _ack(edge, {"frame": 0, "error": "cannot decode"})
    _ack(edge, {"frame": 1, "duplicate": True})
    _ack(edge, {"frame": 2, "detections": [], "m2_ms": 9.0, "batch": 3}, chan=object())  # an old connection
    assert edge.report.m2_ms == []
    assert edge.report.acked == 0
    assert edge.report.errors == {0: "cannot decode"}
    assert json.dumps(edge.report.detections) == "{}"
