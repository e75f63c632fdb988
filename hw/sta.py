"""Where the proxy's short paths end: the registers that miss the clock, from nextpnr's own
arrival times.

nextpnr prints one critical path per clock and a slack histogram; closing timing needs to
know *which* registers miss. ``nextpnr-ecp5 --detailed-timing-report`` (hw/synth.py passes
it) adds, for every net that reaches a clocked input, the arrival time at each such input
(a [min, max] pair in ns from the launching clock edge, routing and cells included). This
module takes the max arrival of every clocked input launched by the clock, keeps those over
the period (a block RAM's setup is not added: the count is a lower bound there), and groups
them by the register or RAM they reach, its name as the design's signal. The clock's
skew between launch and capture (up to about 1 ns on the top) is not taken off, so an
input can show a little over the critical path's figure: the table ranks where paths are
late, the Fmax is nextpnr's. A flip-flop's set/reset input (LSR, a synchronous reset) is
timed; nextpnr-ecp5 lists some of them twice for one net, with two arrivals, and the
smaller is the one it times (r27 seed 1: its critical path, 13.4 ns, ends at an LSR whose
two entries are 12.96 and 13.28 ns before setup, and other LSRs' larger entries reach
17 ns with the Fmax at 74.7 MHz), so an input listed twice counts with the smaller.
(Before 2026-12-05 LSRs were left out altogether.)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    ns: float  # the latest arrival, from the launching clock edge
    cell: str
    port: str


def endpoint_arrivals(report: dict) -> list[Endpoint]:
    """Every clocked input's latest arrival from a clock edge (I/O pins' paths left out)."""
    nets = report.get("detailed_net_timings")
    if nets is None:
        raise ValueError("the report has no detailed net timings (nextpnr --detailed-timing-report)")
    latest: dict[tuple[str, str], float] = {}
    for n in nets:
        if not str(n.get("event", "")).startswith(("posedge", "negedge")):
            continue  # launched by an I/O pin (<async>)
        for e in n["endpoints"]:
            if not str(e.get("event", "posedge")).startswith(("posedge", "negedge")):
                continue  # (an output pin's path: not timed against the clock)
            d = e["delay"]
            ns = float(max(d) if isinstance(d, list) else d)
            key = (e["cell"], e["port"])
            latest[key] = min(ns, latest.get(key, ns))  # (an input listed twice: the smaller, above)
    return [Endpoint(ns, cell, port) for (cell, port), ns in latest.items()]


def register_name(cell: str) -> str:
    """A cell's register (or RAM) name without what synthesis and packing appended."""
    name = re.sub(r"(_TRELLIS_FF_Q|_LUT4|_DP16KD|_MULT18X18D|_TRELLIS_DPR16X4|_PFUMX|_CCU2C|\$).*", "", cell)
    return re.sub(r"(\.\d+)+$", "", name)


def short_groups(report: dict, period_ns: float, top: int = 12) -> tuple[int, list[tuple[int, float, str, str]]]:
    """How many clocked inputs arrive after ``period_ns``, and the ``top`` registers with
    the most of them: (inputs, the latest arrival, register, the latest one's port)."""
    over = [e for e in endpoint_arrivals(report) if e.ns > period_ns]
    count = Counter()
    worst: dict[str, Endpoint] = {}
    for e in over:
        k = register_name(e.cell)
        count[k] += 1
        if k not in worst or e.ns > worst[k].ns:
            worst[k] = e
    return len(over), [(n, worst[k].ns, k, worst[k].port) for k, n in count.most_common(top)]


def format_groups(total: int, groups: list[tuple[int, float, str, str]], period_ns: float) -> list[str]:
    lines = [
        f"  clocked inputs arriving after {period_ns:g} ns (nextpnr's arrivals, hw/sta.py): {total}; "
        "the registers with the most (inputs, latest ns, register [its port]):"
    ]
    lines += [f"    {n:5d} {ns:6.2f}  {reg} [{port}]" for n, ns, reg, port in groups]
    return lines
