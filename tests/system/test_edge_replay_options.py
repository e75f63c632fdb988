"""``temposplit edge --replay FILE``: the feature file holds the model, the cut and the
calibration its tensors came from, so the options that set them are refused rather than
ignored silently (one line, exit 2, before connecting); a --model that names the file's
own, or none, is taken."""

import numpy as np
import pytest
from replays import synthetic_replay

from temposplit.cli import main


@pytest.fixture
def started(monkeypatch):
    """The keywords Edge.run got, where the command got that far (it then exits with 7)."""
    import temposplit.host.edge as edge_module

    seen = {}

    def run(self, frames, video=None, total=None, positions=True):
        seen.update(model=self.model.model, cut=self.model.cut.name)
        raise SystemExit(7)

    monkeypatch.setattr(edge_module.Edge, "run", run)
    return seen


def _edge(replay, *options):
    return main(["edge", "--replay", str(replay), "--server", "127.0.0.1:9", *options])


@pytest.mark.parametrize(
    "options, words",
    [
        (["--calibration", "8"], "--calibration"),
        (["--model", "retinanet-resnet50-fpn"], "--model retinanet-resnet50-fpn, but {replay} is a feature file of "),
        (["--model", "nosuchmodel"], "--model nosuchmodel, but {replay} is a feature file of ssd-mobilenet-v2"),
    ],
    ids=["calibration", "another-model", "unknown-model"],
)
def test_replay_refuses_the_options_its_file_fixes(tmp_path, started, one_line, options, words):
    replay = synthetic_replay(tmp_path / "r.npz", 3)
    assert _edge(replay, *options) == 2
    line = one_line(words.format(replay=replay))
    assert "do not apply" in line or "leave --model out" in line
    assert not started


@pytest.mark.parametrize("given", [[], ["--model", "retinanet-resnet50-fpn"]], ids=["no-model", "its-model"])
def test_replay_takes_its_files_model_named_or_not(tmp_path, started, given):
    """A feature file of another model than the default streams without --model (it was
    checked against no default), and with --model naming its own."""
    replay = synthetic_replay(tmp_path / "r.npz", 3, model=np.array("retinanet-resnet50-fpn"))
    with pytest.raises(SystemExit, match="7"):
        _edge(replay, *given)
    assert started == {"model": "retinanet-resnet50-fpn", "cut": "features.10"}
