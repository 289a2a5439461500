"""``optivgi demo``: the reference curtailment scenario on the simulated site, no CSMS needed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import attrs

from optivgi.algorithms.base import Algorithm
from optivgi.clock import AcceleratedClock
from optivgi.config import Settings
from optivgi.loop import CycleReport, Scheduler
from optivgi.report import CurtailmentReporter
from optivgi.scenario import Scenario
from optivgi.simulated import SimEvent, SimulatedTranslation, default_scenario

__all__ = ["DemoResult", "run_demo"]

logger = logging.getLogger(__name__)

#: Tolerance [kW] when checking the site limit: solver round-off only.
_TOL_KW = 1e-6


@attrs.define
class DemoResult:
    """What a demo run did."""

    scenario: Scenario
    translation: SimulatedTranslation
    reports: list[CycleReport]
    allocations: list[tuple[datetime, dict[str, float]]]
    peak_kw: float
    limit_kw: float

    @property
    def within_limit(self) -> bool:
        """True when the site never drew more than its limit."""
        return self.peak_kw <= self.limit_kw + _TOL_KW


def run_demo(
    algorithm: Algorithm,
    *,
    scenario: Scenario | None = None,
    speed: float = 90.0,
    known_departures: bool = False,
    plot: Path | None = None,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Replay ``scenario`` (default: the embedded seed demo) under ``algorithm`` and report.

    The simulation clock runs ``speed`` times faster than the wall clock; cycles run on each
    arrival and departure and every simulated minute. ``echo`` receives every output line.
    """
    scenario = scenario or default_scenario()
    clock = AcceleratedClock(scenario.now, speed)
    names = {str(ev.ev_id): f"EV {i + 1}" for i, ev in enumerate(scenario.evs)}
    reporter = CurtailmentReporter(echo, names=names)

    def say(t: datetime, text: str) -> None:
        reporter.say(t, text)

    def on_event(event: SimEvent) -> None:
        ev = event.ev
        name = names[str(ev.ev_id)]
        if event.kind == "arrival":
            say(event.time, f"{name} arrived — max {ev.max_power_kw:.2f} kW at {ev.station_id}/{ev.connector_id}, "
                            f"needs {ev.energy_kwh:.1f} kWh")
        else:
            got = translation.delivered_kwh()[str(ev.ev_id)]
            say(event.time, f"{name} departed — delivered {got:.2f} of {ev.energy_kwh:.1f} kWh")

    translation = SimulatedTranslation(scenario, clock=clock, known_departures=known_departures,
                                       on_event=on_event)
    limit0 = float(scenario.site.limit_series(1)[0])
    settings = Settings(translation="simulated", algorithm=algorithm.name,
                        site_power_limit_kw=limit0, resolution_s=scenario.resolution_s,
                        horizon_s=scenario.horizon_s, interval_s=60.0, charging_rate_unit="W")
    reports: list[CycleReport] = []

    def on_cycle(report: CycleReport) -> None:
        reports.append(report)
        try:
            reporter(report)
        finally:
            if translation.finished:
                scheduler.stop()

    scheduler = Scheduler(translation, algorithm, settings, clock=clock, on_cycle=on_cycle, coalesce_s=1.0)
    echo(f"opti-vgi demo: {scenario.name} — {len(scenario.evs)} EVs, site limit {limit0:.1f} kW, "
         f"algorithm {algorithm.name}, clock x{speed:g}, departures "
         f"{'known' if known_departures else 'unknown (horizon end assumed)'}")
    with translation:
        translation.attach(scheduler.trigger)
        scheduler.run()
    translation.advance(clock.now())

    peak = float(translation.site_power_kw().max()) if translation.timeline else 0.0
    echo("")
    echo("Summary")
    echo(f"{'EV':<8}{'station':<22}{'delivered kWh':>14}{'needed kWh':>12}{'share':>8}")
    delivered = translation.delivered_kwh()
    for ev in scenario.evs:
        got = delivered[str(ev.ev_id)]
        need = ev.energy_kwh
        echo(f"{names[str(ev.ev_id)]:<8}{f'{ev.station_id}/{ev.connector_id}':<22}{got:>14.3f}{need:>12.1f}"
             f"{(got / need if need else 1.0):>8.1%}")
    echo(f"peak site power {peak:.2f} kW (limit {limit0:.2f} kW) — "
         f"{'within the limit' if peak <= limit0 + _TOL_KW else 'LIMIT EXCEEDED'}; "
         f"{scheduler.cycles} cycles, {scheduler.failed_cycles} failed")
    result = DemoResult(scenario, translation, reports, reporter.allocations, peak, limit0)
    if plot is not None:
        from optivgi.plotting import plot_stacked_power

        times = [t for t, _ in translation.timeline]
        series = {names[k]: [p[k] for _, p in translation.timeline] for k in names}
        plot_stacked_power(times, series, limit0, plot, title=f"opti-vgi demo: {scenario.name} ({algorithm.name})")
        echo(f"plot written to {plot}")
    return result
