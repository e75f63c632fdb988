"""The cycle model's table and the ``temposplit bench fabric`` command."""

import json

from temposplit.hw import cyclemodel
from temposplit.hw import motion_estimator as me


def test_targets_met_at_the_required_cuts():
    rows = cyclemodel.table()
    targets = [r for r in rows if r.name.startswith("ssd") or r.shape == (25, 34, 2048)]
    assert len(targets) == 7
    for r in targets:
        assert min(r.anchor_fps, r.pred_fps, r.group_fps) >= 30, r
        assert r.fits(), r


def test_motion_cycles_count_skipped_candidates():
    # a 1-block map: every neighbour is outside it, so only the centre is scored
    one = cyclemodel.motion_cycles((4, 4, 8), 4, 7)
    assert (
        one
        == max(cyclemodel.START_LATENCY, 1 + me.BLOCK_CYCLES)
        + 16
        + me.EMIT_CYCLES
        + (me.SETUP_CYCLES + 16 + me.DRAIN_CYCLES + me.COMPARE_CYCLES)
        + 3 * 8 * me.INVALID_CYCLES
    )


def test_bench_fabric_prints_json(capsys):
    from temposplit.cli import main

    assert main(["bench", "fabric", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {d["name"] for d in lines} >= {"ssd features[13]", "r50 layer4"}
