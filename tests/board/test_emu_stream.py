"""How ``make board-emu`` reads what an edge sent (board/emu.py ``parse_stream``): the stream
header from HELLO and every packet, a PACKET_AT's with its times, so that the armhf and x86
edges are compared on both (this runs in ``make test``; the emulation itself, in
``make test-board``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from temposplit import protocol as P

_spec = importlib.util.spec_from_file_location("board_emu", Path(__file__).resolve().parents[2] / "board" / "emu.py")
emu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(emu)  # a script, not a module of the package
parse_stream = emu.parse_stream


def test_the_packets_of_a_version_3_edge_are_read_with_their_times():
    raw = (
        P.hello({"protocol": P.PROTOCOL_VERSION, "stream": "s", "frame_size": [16, 16]}, b"HEADER")
        + P.packet_at(b"first", 0, None)
        + P.packet_at(b"second", 100_000, None)
        + P.encode(P.PACKET, b"third")  # a version 2 edge's
        + P.control(P.END, {"frames": 3})
    )
    got = parse_stream(raw)
    assert got["hello"] == b"HEADER"
    assert [P.split_packet_at(p)[::2] for p in got["packets"][:2]] == [(0, b"first"), (100_000, b"second")]
    assert got["packets"][2] == b"third" and len(got["packets"]) == 3


def test_an_edge_run_past_the_timeout_is_one_line_and_exit_2(monkeypatch, capsys):
    """subprocess.run's TimeoutExpired escaped main() as a traceback after --timeout."""
    import subprocess

    def late(args):
        raise subprocess.TimeoutExpired(["chroot", "/root", "python3", "run.py"], 5.0)

    monkeypatch.setattr(emu, "run", late)
    assert emu.main(["--timeout", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["board-emu: error: the emulated board's edge took longer than --timeout (5 s): raise it"]


def test_an_m1_export_that_fails_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    """A --cut the model has not: ``temposplit models export-m1`` (run for real, the armhf
    root and the wheel stubbed) exits 2, which escaped main() as a CalledProcessError's
    traceback and exit 1, the status of a failed check."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setattr(emu, "ensure_binfmt", lambda: None)
    monkeypatch.setattr(emu, "ensure_root", lambda cache: root)
    monkeypatch.setattr(emu, "build_wheel", lambda dest: Path("temposplit-0.1.0-py3-none-any.whl"))
    assert emu.main(["--cut", "nosuchcut", "--out", str(tmp_path / "out"), "--calibration", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("board-emu: error: exporting the M1 failed: "), err
    assert "has no cut 'nosuchcut'" in err[0]
