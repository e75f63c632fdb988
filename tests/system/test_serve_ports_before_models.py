"""``temposplit serve --weights``: a port in use (the stream port's or the metrics') is refused
before the models load (minutes for a large model), not after."""

import socket

import pytest

from temposplit.cli import main
from temposplit.server.m2 import CloudModels


@pytest.mark.parametrize("which", ["--port", "--metrics-port"])
def test_a_taken_port_is_refused_before_the_models_load(tmp_path, capsys, monkeypatch, which):
    def loaded(self, *a, **k):
        raise AssertionError("the models were loaded before the ports were bound")

    monkeypatch.setattr(CloudModels, "get", loaded)
    weights = tmp_path / "ssd.pth"
    weights.write_bytes(b"not read: the port fails first")
    held = socket.create_server(("127.0.0.1", 0))
    try:
        port = held.getsockname()[1]
        ports = ["--port", str(port)] if which == "--port" else ["--port", "0", "--metrics-port", str(port)]
        status = main(["serve", *ports, "--out", str(tmp_path / "out"), "--weights", f"ssd-mobilenet-v2={weights}"])
    finally:
        held.close()
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and f"{port}" in err, err
