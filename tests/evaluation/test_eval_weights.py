"""``temposplit eval --model <torchvision model>`` without ``--weights`` ran a randomly
initialised network and reported its figures as results (docs/models.md: random weights
are exactness and plumbing only, no rate or accuracy figure is reported for them). It is
refused in one line, before the harness is built; the harness's Python API still takes
random weights for the plumbing tests (test_harness.py)."""

from __future__ import annotations

import pytest

from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.evaluation import harness
from temposplit.model.cuts import MODELS, SSD

TORCHVISION = [m for m in MODELS if m != SSD]


@pytest.fixture
def built(monkeypatch):
    """The harnesses ``eval`` built: each stops the command with a ConfigError of its own."""
    made = []

    def fake(**kw):
        made.append(kw)
        raise ConfigError("harness built")

    monkeypatch.setattr(harness, "Harness", fake)
    return made


@pytest.mark.parametrize("model", TORCHVISION)
def test_a_torchvision_model_without_weights_is_refused(tmp_path, built, one_line, model):
    out = tmp_path / "ev"
    assert main(["eval", "--model", model, "--quick", "--no-plots", "--out", str(out)]) == 2
    one_line(f"--model {model} without --weights", "--weights DEFAULT")
    assert built == [] and not out.exists()


@pytest.mark.parametrize(
    "argv",
    [["--model", TORCHVISION[0], "--weights", "DEFAULT"], ["--model", SSD], []],
    ids=["torchvision-with-weights", "ssd", "default-model"],
)
def test_real_weights_and_the_ssd_reach_the_harness(tmp_path, built, one_line, argv):
    assert main(["eval", *argv, "--quick", "--no-plots", "--out", str(tmp_path / "ev")]) == 2
    one_line("harness built")
    assert len(built) == 1
