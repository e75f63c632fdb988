"""``temposplit bench colour`` (model/colour_bench.py): one JSON row per kind and size, each the
cost of reading such a frame as players show it; its frames are what they say they are."""

import json

import pytest

from temposplit.cli import main
from temposplit.model import colour, colour_bench


def test_each_case_is_a_frame_of_its_kind_and_a_row_of_figures(capsys):
    for _, pix_fmt, width, height, tags in colour_bench.CASES:
        frame = colour_bench.synthetic_frame(pix_fmt, width, height, tags)
        assert (frame.format.name, frame.width, frame.height) == (pix_fmt, width, height)
        if tags is not None:
            assert (int(frame.colorspace), int(frame.color_primaries), int(frame.color_trc)) == tags[:3]
        assert colour.frame_rgb(frame).shape == (height, width, 3)
    assert main(["bench", "colour", "--repeats", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r["size"]) for r in rows] == [(c[0], f"{c[2]}x{c[3]}") for c in colour_bench.CASES]
    assert all(r["ms"] > 0 for r in rows)


@pytest.mark.parametrize("repeats", ["0", "1001"])
def test_repeats_out_of_range_are_one_line(repeats, one_line):
    assert main(["bench", "colour", "--repeats", repeats]) == 2
    one_line("--repeats must be 1..1000")
