"""``temposplit models --json`` and the CLI's error handling."""

import json

import pytest

from temposplit.cli import main

pytestmark = pytest.mark.models


def test_models_json_ssd(capsys):
    assert main(["models", "--json", "--model", "ssd-mobilenet-v2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (m,) = doc["models"]
    assert m["input_size"] == [300, 300]
    by_cut = {c["cut"]: c for c in m["cuts"]}
    last = by_cut["features.18"]
    assert [t["shape"] for t in last["tensors"]] == [[576, 19, 19], [1280, 10, 10]]
    assert last["bytes_per_frame_cut_tensor"] == 128000 and last["bytes_per_frame_all"] == 128000 + 207936
    assert by_cut["features.13"]["default"] and by_cut["features.13"]["bytes_per_frame_all"] == 96 * 19 * 19
    for c in m["cuts"]:
        assert c["m1"]["params"] + c["m2"]["params"] == m["params"]
        assert c["m1"]["macs"] + c["m2"]["macs"] == m["macs"]
    macs = [c["m1"]["macs"] for c in m["cuts"]]
    assert macs == sorted(macs) and macs[0] > 0


def test_models_json_torchvision_small(capsys):
    assert main(["models", "--json", "--model", "retinanet-resnet50-fpn", "--input-size", "256x320"]) == 0
    (m,) = json.loads(capsys.readouterr().out)["models"]
    last = m["cuts"][-1]
    assert [t["shape"] for t in last["tensors"]] == [[512, 32, 40], [1024, 16, 20], [2048, 8, 10]]
    assert last["bytes_per_frame_cut_tensor"] == 2048 * 80


def test_user_errors_are_one_line(capsys):
    assert main(["models", "--model", "yolo"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'yolo'" in err and err.count("\n") == 1
