"""`temposplit demo` with bad options, a busy output folder and signals (a probe's findings)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.host import demo
from temposplit.model import data


def _no_model(monkeypatch):
    """Any model load is a test failure: every check here comes before it."""
    import temposplit.host.pipeline as pipeline

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline, "EdgeModel", refuse)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--cut", ""], "--cut is empty"),
        (["--cut", "  "], "--cut is empty"),
        (["--video", ""], "--video is empty"),
        (["--out", ""], "--out is empty"),
    ],
)
def test_empty_option_is_refused(argv, said, tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    monkeypatch.chdir(tmp_path)  # an empty --out once wrote into the working folder
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert main(["demo", "--frames", "1", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_unknown_cut_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    with pytest.raises(ConfigError, match="no cut 'nosuch'"):
        demo.run_demo(frames=1, out=str(tmp_path / "out"), cut="nosuch")


def test_out_that_is_a_file_is_named_so(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        demo.check_output_folder(str(f))
    assert f.read_text() == "keep"


@pytest.mark.skipif(not data.have_data(), reason="needs vtest.avi (make data)")
def test_second_demo_into_the_same_folder_is_refused(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / demo.LOCK, "a") as held:  # a demo running there
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another temposplit demo is writing to"):
            demo.run_demo(frames=1, out=str(out))


class _Edge:
    stop = None


def test_signal_while_streaming_ends_the_stream_then_interrupts():
    lines = []
    with pytest.raises(KeyboardInterrupt), demo._Signals(lines.append) as s:
        s.edge = edge = _Edge()
        signal.raise_signal(signal.SIGINT)  # the handler only asks the edge to stop
        assert edge.stop == "stopped by SIGINT"
        s.edge = None
        s.message = "stopped by SIGINT; 3 of 3 recorded"
    assert lines == ["stopped by SIGINT; 3 of 3 recorded"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_goes_back_to_the_handler_that_was_there():
    got = []
    earlier = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        lines = []
        with pytest.raises(KeyboardInterrupt), demo._Signals(lines.append) as s:
            signal.raise_signal(signal.SIGTERM)  # not streaming: stops at once
            time.sleep(1)  # never reached
            raise AssertionError("not stopped")
        assert lines == ["stopped by SIGTERM"]
        assert got == [signal.SIGTERM]  # raised again for the earlier handler, after the files
        assert s.got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, earlier)


def test_signals_left_alone_outside_the_main_thread():
    result = []

    def run():
        with demo._Signals(print) as s:
            result.append(s.previous)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert result == [{}]


@pytest.mark.slow
@pytest.mark.skipif(not data.have_data(), reason="needs vtest.avi (make data)")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_stopped_by_a_signal_finishes_the_stream(sig, tmp_path):
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("temposplit")
    p = subprocess.Popen(
        [str(exe), "demo", "--frames", "200", "--no-reference", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    err = []
    for line in p.stderr:  # streaming: stop it
        err.append(line)
        if "frame 10/" in line:
            p.send_signal(sig)
            break
    _, rest = p.communicate(timeout=120)
    err += rest.splitlines(keepends=True)
    assert p.returncode == (130 if sig == signal.SIGINT else 143), err[-5:]  # 143: the CLI's "terminated"
    text = "".join(err)
    assert "Traceback" not in text and "terminate called" not in text
    assert f"stopped by {signal.Signals(sig).name}; the stream 'vtest' was ended there" in text
    state = json.loads((out / "vtest" / "session.json").read_text())
    assert state["finished"] is True  # the server closed its files: a playable video, every record
    assert not (out / "vtest" / "summary.json").exists()
    assert not [f for f in (out / "vtest").iterdir() if f.name.endswith(".tmp")]


def demo_stand_ins(monkeypatch) -> None:
    """demo._run's model (its calibration too) and server replaced by stand-ins: a cut of
    one 1x2x2 tensor at a 300x300 input, a server that starts and stops (the edge is each
    test's own)."""
    from types import SimpleNamespace

    import temposplit.host.pipeline as pipeline
    import temposplit.model.calibration as calibration
    import temposplit.server.server as server_module

    cut = SimpleNamespace(name="features.10", crossing=[SimpleNamespace(name="t")], shapes=lambda size: [(1, 2, 2)])
    monkeypatch.setattr(calibration, "calibration_frames", lambda n=None: [])
    monkeypatch.setattr(
        pipeline, "EdgeModel", lambda **k: SimpleNamespace(cut=cut, detector=SimpleNamespace(input_size=(300, 300)))
    )
    monkeypatch.setattr(
        server_module,
        "CloudServer",
        lambda **k: SimpleNamespace(start=lambda: None, shutdown=lambda: None, address=("127.0.0.1", 1)),
    )


def test_a_signal_after_the_edges_last_look_stops_the_demo_before_scoring(monkeypatch, tmp_path):
    """A signal in the stream's last moments (the edge's flush, its wait for the last ACKs or
    the SUMMARY) only asked the edge to stop, which no longer looked: the demo went on to
    score every frame with the float detector (minutes), wrote summary.json, then exited as
    stopped. It now stops right after the stream, saying so (the stand-ins below replace the
    model, the server and the edge: nothing of theirs is under test)."""
    from types import SimpleNamespace

    import temposplit.host.edge as edge_module

    demo_stand_ins(monkeypatch)
    lines = []
    with demo._Signals(lines.append) as signals:
        try:

            class LateEdge:
                stop = None

                def __init__(self, *a, **k):
                    pass

                def run(self, frames, **k):
                    signals._handler(signal.SIGTERM, None)  # arrives as the stream ends: only asks to stop
                    return SimpleNamespace(frames=3, bytes=300, packets=3)

            monkeypatch.setattr(edge_module, "Edge", LateEdge)
            source = SimpleNamespace(count=3, stamped=lambda: iter([]))
            out = str(tmp_path)
            result = demo._run("v.avi", source, 3, 10.0, out, None, "golden", None, 8, True, lines.append, signals)
            assert result == {}
            assert signals.message == "stopped by SIGTERM after the stream ended: 3 frame(s) sent, not scored"
        finally:
            signals.got.clear()  # the handlers go back, and no signal is raised again in the test's process
    assert not (tmp_path / "v" / "summary.json").exists()
