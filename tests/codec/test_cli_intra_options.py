"""``temposplit encode --structure intra`` refuses the options of predicted frames that it
would ignore (docs/bitstream.md sections 12 and 13.1), given ones only: a preset's values stand.

Every frame of an intra stream is an anchor: no motion search, no predicted frame, so the
search range, per-channel vectors, the reference, the refresh threshold and every residual
option change nothing in its packets.
"""

import argparse
import importlib.util
import os
from pathlib import Path

import pytest

from temposplit.codec.cli import add_codec_options, config_from_args
from temposplit.codec.encoder import PRESETS, TensorSpec
from temposplit.codec.errors import ConfigurationError

# the feature file and the one-line check of tests/codec/test_api_misuse.py (a test folder is
# not a package: loaded by path, as tests/hw shares its fakes)
_spec = importlib.util.spec_from_file_location("api_misuse", Path(__file__).with_name("test_api_misuse.py"))
_misuse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_misuse)
_one_line_error = _misuse._one_line_error


def _feature_file(path):
    return _misuse._feature_file(path, frames=2)


def _config(argv):
    parser = argparse.ArgumentParser()
    add_codec_options(parser)
    return config_from_args(parser.parse_args(argv), [TensorSpec("t", (4, 8, 8), 0.1, 0, 4)])


IGNORED = [
    (["--search-range", "15"], "--search-range"),
    (["-p", "7"], "--search-range"),  # the default's value, given: still an option that changes nothing
    (["--per-channel"], "--per-channel"),
    (["--reference", "anchor"], "--reference"),
    (["--refresh", "0"], "--refresh"),
    (["--residual", "threshold"], "--residual threshold"),
    (["--residual", "rd"], "--residual rd"),
    (["--residual-threshold", "99"], "--residual-threshold"),
    (["--lam", "1000"], "--lam"),
    (["--dead-zone", "200"], "--dead-zone"),
    (["--hysteresis", "255"], "--hysteresis"),
    (["--refine-vectors"], "--refine-vectors"),
    (["--residual", "none", "--residual-threshold", "99"], "--residual-threshold"),
    (["--preset", "thesis", "--lam", "2"], "--lam"),
]


@pytest.mark.parametrize("options, flag", IGNORED)
def test_an_option_intra_ignores_is_refused_in_one_line(tmp_path, capsys, options, flag):
    """They were accepted, and the stream's packets were the same bytes as without them."""
    path = _feature_file(tmp_path / "f.npz")
    argv = ["encode", path, tmp_path / "s.tsp", "--structure", "intra", *options]
    _one_line_error(capsys, argv, flag, "changes nothing with --structure intra")
    assert sorted(os.listdir(tmp_path)) == ["f.npz"]


def test_every_ignored_option_is_named_in_the_one_line(capsys, tmp_path):
    path = _feature_file(tmp_path / "f.npz")
    argv = ["encode", path, tmp_path / "s.tsp", "--structure", "intra", "--per-channel", "-p", "15"]
    argv += ["--reference", "chain", "--residual", "rd", "--lam", "3"]
    _one_line_error(
        capsys, argv, "--search-range, --per-channel, --reference, --residual rd, --lam change nothing with"
    )


@pytest.mark.parametrize("preset", ["recommended", "thesis"])
def test_intra_keeps_a_presets_values_without_refusing_them(preset):
    """The recommended preset sets a chain reference and a threshold residual: not given, so not refused."""
    cfg = _config(["--preset", preset, "--structure", "intra"])
    assert cfg.structure == "intra"
    assert (cfg.reference, cfg.residual) == (PRESETS[preset]["reference"], PRESETS[preset]["residual"])
    assert (cfg.search_range, cfg.per_channel, cfg.refresh_threshold) == (7, False, None)


@pytest.mark.parametrize("options", [["--residual", "none"], ["--hysteresis", "0"], ["--coder", "raw", "-n", "6"]])
def test_intra_accepts_what_states_its_own_coding(options):
    """--residual none and --hysteresis 0 ask for what intra codes anyway (as without a residual
    mode, section 12); anchor options (coder, N) apply."""
    cfg = _config(["--structure", "intra", *options])
    assert cfg.structure == "intra"


def test_the_options_still_reach_a_structure_that_predicts():
    cfg = _config(["--structure", "uni-4", "-p", "15", "--per-channel", "--reference", "anchor", "--refresh", "2"])
    assert (cfg.search_range, cfg.per_channel, cfg.reference, cfg.refresh_threshold) == (15, True, "anchor", 2.0)
    cfg = _config(["--structure", "uni-4"])
    assert (cfg.search_range, cfg.per_channel) == (7, False)  # the defaults, as before


def test_intra_with_an_ignored_option_is_a_configuration_error_for_the_edge_too():
    """demo and edge build their configuration with the same function."""
    with pytest.raises(ConfigurationError, match="--per-channel changes nothing with --structure intra"):
        _config(["--structure", "intra", "--per-channel"])
