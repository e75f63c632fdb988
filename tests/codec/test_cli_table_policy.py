"""``--table-policy`` (docs/bitstream.md sections 7 and 13.1) chooses where a Huffman or ZRL
anchor's table comes from; with a coder that carries no table (raw, zvc, ctx) it changes
nothing, so given there it is refused in one line, as the other ignored options are."""

import argparse

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features
from temposplit.codec.cli import add_codec_options, config_from_args
from temposplit.codec.encoder import TensorSpec
from temposplit.codec.synthetic import correlated_clip


def _config(argv):
    parser = argparse.ArgumentParser()
    add_codec_options(parser)
    return config_from_args(parser.parse_args(argv), [TensorSpec("t", (4, 8, 8), 0.1, 0, 4)])


@pytest.mark.parametrize("coder", ["ctx", "raw", "zvc", None])  # None: the recommended preset's, ctx
def test_a_table_policy_with_a_coder_without_tables_is_refused(tmp_path, one_line, coder):
    codes = np.stack(correlated_clip(np.random.default_rng(0), 2, (4, 8, 8)))
    src = tmp_path / "f.npz"
    features.save(str(src), features.FeatureClip(["t"], [codes], [0.1], [0], [4]))
    argv = ["encode", str(src), str(tmp_path / "s.tsp"), "--table-policy", "own"]
    assert main(argv + (["--coder", coder] if coder else [])) == 2
    one_line("--table-policy applies to the coders with tables (huffman, zrl)", f"not --coder {coder or 'ctx'}")
    assert not (tmp_path / "s.tsp").exists()


@pytest.mark.parametrize("coder", ["huffman", "zrl"])
def test_a_table_policy_reaches_the_table_coders_and_defaults_to_previous(coder):
    assert _config(["--coder", coder, "--table-policy", "own"]).table_policy == "own"
    assert _config(["--coder", coder]).table_policy == "previous"
    assert _config([]).table_policy == "previous"  # not given: nothing refused
