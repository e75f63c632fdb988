"""hw/sta.py: the registers that miss the clock, from nextpnr's detailed arrivals."""

import pytest

from temposplit.hw import sta


def _net(event, *endpoints):
    return {
        "driver": "x",
        "port": "F",
        "event": event,
        "net": "n",
        "endpoints": [{"cell": c, "port": p, "delay": d, "event": "posedge clk"} for c, p, d in endpoints],
    }


REPORT = {
    "detailed_net_timings": [
        _net(
            "posedge clk",
            ("rq.lane7_s_TRELLIS_FF_Q_4", "M", [2.0, 14.8]),
            ("rq.lane7_s_TRELLIS_FF_Q_1", "M", [1.0, 11.0]),
        ),
        _net("posedge clk", ("rq.lane6_s_TRELLIS_FF_Q", "M", [1.0, 9.9])),
        _net("posedge clk", ("me.ref4.0.2", "ADB6", [0.5, 12.9]), ("ctx.coder.rng1_TRELLIS_FF_Q$1", "DI", [3.0, 10.5])),
        _net("<async>", ("rq.lane5_s_TRELLIS_FF_Q", "M", [1.0, 30.0])),  # from a pin: not the clock's
        _net("posedge clk", ("ctx.coder.touched_TRELLIS_FF_Q_3", "LSR", [1.0, 17.0])),  # listed twice: the
        _net("posedge clk", ("ctx.coder.touched_TRELLIS_FF_Q_3", "LSR", [1.0, 9.0])),  # smaller is timed
        _net("posedge clk", ("me_in.rp2_TRELLIS_FF_Q", "LSR", [8.4, 12.9])),  # a synchronous reset: timed
    ]
}


def test_groups_count_the_late_inputs_by_register():
    total, groups = sta.short_groups(REPORT, 10.0)
    assert total == 5  # 14.8, 11.0, 12.9, 10.5, the LSR's 12.9; 9.9 is in time, the pin's path is not timed
    assert groups[0] == (2, 14.8, "rq.lane7_s", "M")
    assert {g[2] for g in groups} == {"rq.lane7_s", "me.ref4", "ctx.coder.rng1", "me_in.rp2"}
    text = "\n".join(sta.format_groups(total, groups, 10.0))
    assert "after 10 ns" in text and "    2  14.80  rq.lane7_s [M]" in text


def test_register_name_strips_what_synthesis_appended():
    assert sta.register_name("ctx.coder.low_TRELLIS_FF_Q_31_DI_CCU2C") == "ctx.coder.low"
    assert sta.register_name("me.ref12.0.3") == "me.ref12"
    assert sta.register_name("words_left_TRELLIS_FF_Q_8") == "words_left"


def test_a_report_without_details_is_an_error():
    with pytest.raises(ValueError, match="detailed"):
        sta.short_groups({"fmax": {}}, 10.0)
