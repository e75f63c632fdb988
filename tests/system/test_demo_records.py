"""`temposplit demo` against what its server recorded: its figures after a lost connection,
and an --out where an earlier demo left its stream unfinished. The real model and server."""

from __future__ import annotations

import json
import socket

import pytest
from rawclient import wait_for

from temposplit import protocol as P
from temposplit.host import demo
from temposplit.model import data

pytestmark = [
    pytest.mark.slow,
    pytest.mark.models,
    pytest.mark.skipif(not data.have_data(), reason="needs vtest.avi (make data)"),
]

FRAMES = 6
SAME = (
    "frames",
    "decoded",
    "with_detections",
    "errors",
    "bytes_per_frame",
    "mb_per_s_at_clip_fps",
    "cut_tensor_mb_per_s_at_30fps",
    "compression_vs_8bit_features",
    "fidelity_map50",
    "fidelity_map50_95",
)


def _one_server_per_demo(monkeypatch, cloud_models) -> None:
    """The demo's server on the session's models, batches of one: its records are then a
    function of the packets' bytes alone (docs/protocol.md, "Batching is not bit-exact")."""
    import temposplit.server.server as server_module

    real = server_module.CloudServer
    monkeypatch.setattr(server_module, "CloudServer", lambda **k: real(models=cloud_models, max_batch=1, **k))


def test_the_demos_figures_after_a_lost_connection_are_the_uncut_runs(monkeypatch, cloud_models, tmp_path):
    """A connection lost with ACKs unread (their frames recorded, their answers never taken)
    and frames resent: the demo printed fewer frames decoded, a fidelity over the frames it
    had answers for (41.2 for 79.1), and a rate with the resent packets' bytes (4.46 kB/frame
    for 2.80). The cut comes once the server has answered the last frame: it has recorded
    the very packets of the run without the cut (a frame coded after a cut starts from a
    fresh KEY anchor, other bytes), and the resends are answered `duplicate`."""
    import temposplit.host.edge as edge_module

    _one_server_per_demo(monkeypatch, cloud_models)
    whole = demo.run_demo(frames=FRAMES, out=str(tmp_path / "whole"), calibration_frames=8, log=lambda m: None)

    cuts = []

    class CutEdge(edge_module.Edge):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.fault = self._cut

        def _cut(self, i, chan):
            def answered():  # the server's ACK of frame i, unread
                acks = [m for c, m in list(self.inbox.queue) if c is chan and getattr(m, "type", None) == P.ACK]
                return any(m.json()["frame"] == i for m in acks)

            if i == FRAMES - 1 and not cuts:
                wait_for(answered, "the last frame's ACK", seconds=120)
                cuts.append(i)
                chan.sock.shutdown(socket.SHUT_RDWR)
                raise P.ConnectionClosed("cut with ACKs unread")  # as the next send would fail

    monkeypatch.setattr(edge_module, "Edge", CutEdge)
    cut = demo.run_demo(frames=FRAMES, out=str(tmp_path / "cut"), calibration_frames=8, log=lambda m: None)
    assert cuts and cut["reconnects"] >= 1
    assert {k: cut[k] for k in SAME} == {k: whole[k] for k in SAME}
    assert cut["decoded"] == FRAMES
    assert whole["cut_tensor_mb_per_s_at_30fps"] > 0  # compared above: not a figure both runs left at 0


def test_a_demo_into_an_out_with_a_stream_left_unfinished_runs(monkeypatch, cloud_models, tmp_path):
    """A demo killed (or stopped by a second signal) leaves its stream unfinished, and the
    demo keeps no token: the next demo into the same --out was refused for the server's
    resume window (600 s: "stream 'vtest' is in use"). Its server now has none: the
    unfinished stream is moved aside, and the new one streams at once."""
    import temposplit.host.edge as edge_module

    _one_server_per_demo(monkeypatch, cloud_models)
    out = tmp_path / "out"
    edge_class = edge_module.Edge

    class Killed(BaseException):
        """The demo's process dying after a frame (the edge's fault hook raises it)."""

    class KilledEdge(edge_module.Edge):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.fault = self._kill

        def _kill(self, i, chan):
            if i == 1:
                chan.close()  # (its socket: the server sees the connection lost)
                raise Killed

    monkeypatch.setattr(edge_module, "Edge", KilledEdge)
    with pytest.raises(Killed):
        demo.run_demo(frames=FRAMES, out=str(out), calibration_frames=8, reference=False, log=lambda m: None)
    state = json.loads((out / "vtest" / "session.json").read_text())
    assert state["finished"] is False  # left unfinished: the server keeps it for a resume

    monkeypatch.setattr(edge_module, "Edge", edge_class)
    lines = []
    summary = demo.run_demo(frames=2, out=str(out), calibration_frames=8, reference=False, log=lines.append)
    assert summary["decoded"] == 2 and summary["errors"] == 0
    assert json.loads((out / "vtest" / "session.json").read_text())["finished"] is True
    assert json.loads((out / "vtest.1" / "session.json").read_text())["finished"] is False  # kept, moved aside
    assert any("unfinished" in line and "moved to vtest.1" in line for line in lines), lines
