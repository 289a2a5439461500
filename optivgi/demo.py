"""``optivgi demo``: the reference curtailment scenario on the simulated site, no CSMS needed.

The numbers come from the closed-loop replay of :func:`optivgi.simulate.simulate` (simulated
time, no wall clock), so they are the same at any ``speed``: the speed only paces the output
for a person watching it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import attrs

from optivgi.algorithms.base import Algorithm
from optivgi.loop import CycleReport
from optivgi.report import CurtailmentReporter
from optivgi.scenario import Scenario
from optivgi.simulate import SimulationResult, simulate
from optivgi.simulated import SimEvent, default_scenario

__all__ = ["DemoResult", "run_demo"]

logger = logging.getLogger(__name__)


@attrs.define
class DemoResult:
    """What a demo run did.

    Attributes:
        scenario: the replayed scenario.
        simulation: the closed-loop replay (per-EV outcomes, realised power, totals).
        reports: every cycle's report.
        allocations: (planning start, {ev_id: kW}) of every successful cycle.
        peak_kw: highest site power drawn [kW].
        limit_kw: the site limit of the first step [kW].
    """

    scenario: Scenario
    simulation: SimulationResult
    reports: list[CycleReport]
    allocations: list[tuple[datetime, dict[str, float]]]
    peak_kw: float
    limit_kw: float

    @property
    def within_limit(self) -> bool:
        """True when the site never drew more than its limit."""
        return self.simulation.within_limit

    def delivered_kwh(self) -> dict[str, float]:
        """Energy [kWh] delivered to each EV by its departure."""
        return {e.ev_id: e.delivered_kwh for e in self.simulation.evs}


def run_demo(
    algorithm: Algorithm,
    *,
    scenario: Scenario | None = None,
    speed: float = 90.0,
    known_departures: bool = False,
    plot: Path | None = None,
    echo: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> DemoResult:
    """Replay ``scenario`` (default: the embedded seed demo) under ``algorithm`` and report.

    Cycles run at every step and on each arrival and departure, in simulated time. Output is
    paced for display: before each line stamped ``t``, ``sleep`` is called with the simulated
    time since the previous one divided by ``speed`` (pass ``sleep=lambda s: None`` for no
    pacing). ``echo`` receives every output line. The results do not depend on ``speed``.
    """
    if not speed > 0:
        raise ValueError(f"'speed' must be > 0, got {speed!r}")
    scenario = scenario or default_scenario()
    names = {str(ev.ev_id): f"EV {i + 1}" for i, ev in enumerate(scenario.evs)}
    reporter = CurtailmentReporter(echo, names=names)
    shown = [scenario.now]

    def pace(t: datetime) -> None:
        gap = (t - shown[0]).total_seconds()
        if gap > 0:
            sleep(gap / speed)
            shown[0] = t

    def on_event(event: SimEvent) -> None:
        ev = event.ev
        name = names[str(ev.ev_id)]
        pace(event.time)
        if event.kind == "arrival":
            reporter.say(event.time, f"{name} arrived — max {ev.max_power_kw:.2f} kW at "
                                     f"{ev.station_id}/{ev.connector_id}, needs {ev.energy_kwh:.1f} kWh")
        else:
            reporter.say(event.time, f"{name} departed — delivered {event.delivered_kwh:.2f} of "
                                     f"{ev.energy_kwh:.1f} kWh")

    reports: list[CycleReport] = []

    def on_cycle(report: CycleReport) -> None:
        pace(report.now)
        reports.append(report)
        reporter(report)

    limit0 = float(scenario.site.limit_series(1)[0])
    echo(f"opti-vgi demo: {scenario.name} — {len(scenario.evs)} EVs, site limit {limit0:.1f} kW, "
         f"algorithm {algorithm.name}, shown at x{speed:g} (results do not depend on it), departures "
         f"{'known' if known_departures else 'unknown (horizon end assumed)'}")
    result = simulate(scenario, algorithm, known_departures=known_departures, on_cycle=on_cycle,
                      on_event=on_event)
    peak = result.peak_kw
    echo("")
    echo("Summary")
    echo(f"{'EV':<8}{'station':<22}{'delivered kWh':>14}{'needed kWh':>12}{'share':>8}")
    for e in result.evs:
        echo(f"{names[e.ev_id]:<8}{e.station:<22}{e.delivered_kwh:>14.3f}{e.needed_kwh:>12.1f}{e.fraction:>8.1%}")
    echo(f"peak site power {peak:.2f} kW (limit {limit0:.2f} kW) — "
         f"{'within the limit' if result.within_limit else 'LIMIT EXCEEDED'}; "
         f"{result.cycles} cycles, {result.failed_cycles} failed")
    demo = DemoResult(scenario, result, reports, reporter.allocations, peak, limit0)
    if plot is not None:
        from optivgi.plotting import plot_stacked_power

        steps = [scenario.now + timedelta(seconds=k * scenario.resolution_s) for k in range(scenario.n_steps)]
        last = max((i for i in range(scenario.n_steps) if result.power_kw[:, i].any()), default=0) + 2
        series = {names[e.ev_id]: result.power_kw[i, :last] for i, e in enumerate(result.evs)}
        plot_stacked_power(steps[:last], series, result.site_limit_kw[:last], plot,
                           title=f"opti-vgi demo: {scenario.name} ({algorithm.name})")
        echo(f"plot written to {plot}")
    return demo
