"""The verifier's chart: each EV's allocation per cycle, stacked, with the site limit."""

from __future__ import annotations

import itertools
import statistics
from datetime import datetime, timedelta
from pathlib import Path

from optivgi.errors import OptiVGIError
from optivgi_citrineos.verify_records import VerifyData


def allocation_series(
    data: VerifyData, voltage: float
) -> tuple[list[datetime], dict[str, list[float]]]:
    """Each EV's allocation [kW] from every cycle on (0 when absent from a cycle), for plotting.

    A cycle's allocations hold from when its first profile was sent.

    A last point is added one typical cycle interval after the latest cycle so that its segment
    has a width. Returns ``(times, {ev: kW per time})``.
    """
    cycles = data.cycles()
    if not cycles:
        return [], {}
    keys = sorted({k for c in cycles for k in c.profiles})
    times = [c.sent_at for c in cycles]
    series: dict[str, list[float]] = {k: [] for k in keys}
    for cycle in cycles:
        alloc = cycle.allocations_kw(voltage)
        for k in keys:
            series[k].append(alloc.get(k, 0.0))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    tail = statistics.median(gaps) if gaps else 60.0
    times.append(times[-1] + timedelta(seconds=max(tail, 1.0)))
    for k in keys:
        series[k].append(series[k][-1])
    return times, series


def plot_allocations(data: VerifyData, site_limit_kw: float, voltage: float, path: str | Path) -> Path:
    """Save a stacked area chart of each EV's allocation over time with the site limit (PNG).

    Raises:
        OptiVGIError: there is nothing to plot, or matplotlib is missing.
    """
    from optivgi.plotting import plot_stacked_power

    times, series = allocation_series(data, voltage)
    if not times:
        raise OptiVGIError("no accepted TxProfile to plot")
    return plot_stacked_power(
        times, series, site_limit_kw, path, title="Allocated power per EV (as stored by CitrineOS)"
    )


# --- command -------------------------------------------------------------------------------------
