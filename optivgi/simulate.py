"""Closed-loop replay of a scenario in simulated time: what a site really delivers under a planner.

:func:`simulate` replays a :class:`~optivgi.scenario.Scenario` on the built-in simulated site
(:class:`~optivgi.simulated.SimulatedTranslation`) with a :class:`~optivgi.clock.ManualClock`:
no wall clock, no sleeps, so the result is the same on every run and on any machine. The real
scheduling path runs in every cycle (:class:`~optivgi.loop.Scheduler`: the planner with its
fallback, the validator, OCPP profiles, reductions first), one cycle at the start of every step
and one at every arrival or departure between steps, from the scenario's ``now`` until the last
car has left (or the horizon ends). The planner sees only the connected cars, with their
remaining need and, unless ``known_departures`` is set, a departure at the end of its horizon
(as on an OCPP 1.6 site). Each car draws ``min(its profile's limit, its max, what it still
needs)``, less in the optional battery taper.

Example::

    from optivgi.scenario import load_scenario
    from optivgi.simulate import simulate

    result = simulate(load_scenario("fleet-50.json"), "lp", known_departures=False)
    print(result.delivered_kwh, result.worst.ev_id, result.jain_index)
    for line in result.summary_lines():
        print(line)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs
import numpy as np

from optivgi.algorithms.base import Algorithm, FloatArray
from optivgi.cars import CarModel
from optivgi.clock import ManualClock
from optivgi.compliance import ComplianceRules
from optivgi.config import Settings
from optivgi.draw import DrawRules
from optivgi.loop import CycleReport, Scheduler
from optivgi.measured import MeasuredDrawTranslation
from optivgi.models.schedule import PowerSchedule
from optivgi.scenario import Scenario
from optivgi.simulated import SimEvent, SimulatedTranslation
from optivgi.translation import Translation

__all__ = ["EVOutcome", "SimulationResult", "simulate"]

logger = logging.getLogger(__name__)

#: Tolerance [kW] when checking the site limit: profile rounding and solver round-off only.
LIMIT_TOL_KW = 1e-6
#: An EV counts as served when it is short by at most this [kWh].
SHORT_TOL_KWH = 1e-4


def _hhmm(seconds: float) -> str:
    minutes = round(seconds / 60.0)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes} min"


@attrs.frozen
class EVOutcome:
    """What one charging session got in the replay.

    Attributes:
        ev_id: session id.
        station: ``station_id/connector_id``.
        arrival: plug-in time.
        departure: departure time (the real one, whatever the planner was told).
        needed_kwh: energy asked for by departure.
        delivered_kwh: energy delivered by departure (or by the end of the horizon).
        max_kwh: the most its own max power could give over its stay within the horizon.
        held_full_s: seconds its profile held it below what it could draw while the site was at
            its limit (no room for even its minimum power).
        held_room_s: seconds its profile held it below what it could draw while the site had room.
        servable: it needs energy, has steps in the horizon and a max power above 0.
        planned_departure: the departure the planner was told (the horizon end when unknown).
    """

    ev_id: str
    station: str
    arrival: datetime
    departure: datetime
    needed_kwh: float
    delivered_kwh: float
    max_kwh: float
    held_full_s: float
    held_room_s: float
    servable: bool
    planned_departure: datetime | None = None

    @property
    def fraction(self) -> float:
        """Delivered share of the need (1.0 for an EV that needed nothing)."""
        return min(self.delivered_kwh, self.needed_kwh) / self.needed_kwh if self.needed_kwh > 0 else 1.0

    @property
    def short_kwh(self) -> float:
        """Energy still missing at departure [kWh]."""
        return max(self.needed_kwh - self.delivered_kwh, 0.0)

    @property
    def reason(self) -> str | None:
        """Why the EV went home short, or None when it got its need.

        ``"own max"``: it drew what it could (its max, or its battery's taper) its whole stay;
        ``"site was full"``: it was held below that mostly while the site was at its limit;
        ``"left early"``: it was held below that mostly while the site had room, i.e. the plan
        meant to deliver later than it stayed.
        """
        if self.short_kwh <= SHORT_TOL_KWH:
            return None
        if self.held_full_s <= 0 and self.held_room_s <= 0:
            return (f"own max: {self.max_kwh:.2f} kWh at most at its max power over its stay"
                    if self.max_kwh < self.needed_kwh - SHORT_TOL_KWH else "own max: its battery's taper")
        held = f"held below its max {_hhmm(self.held_full_s)} with the site full, {_hhmm(self.held_room_s)} with room"
        if self.held_full_s >= self.held_room_s:
            return f"site was full ({held})"
        told = ""
        if self.planned_departure is not None and self.planned_departure != self.departure:
            told = f"; the plan assumed {self.planned_departure.strftime('%H:%M')}"
        return f"left early at {self.departure.strftime('%H:%M')} ({held}{told})"


@attrs.define
class SimulationResult:
    """The outcome of :func:`simulate`: per EV, per step and in total.

    Attributes:
        scenario: the replayed scenario.
        algorithm: the configured algorithm's name.
        known_departures: whether the planner was told the real departures.
        battery_kwh: battery size of the taper model, or None.
        evs: one :class:`EVOutcome` per scenario EV, in scenario order.
        power_kw: ``(n_evs, n_steps)`` realised mean power per step [kW].
        site_limit_kw: ``(n_steps,)`` the scenario's site limit.
        peak_kw: highest instantaneous site power [kW].
        violations: number of simulated segments in which the site drew more than its limit.
        max_violation_kw: largest excess over the limit [kW] (0 when none).
        cycles: planning cycles run.
        failed_cycles: cycles in which a group failed.
        fallback_cycles: cycles in which the planner fell back to another algorithm.
        cycle_seconds: wall time of each cycle [s] (the only figure that varies between runs).
        measured_draw: whether the planner used measured draw and the compliance watch.
        verdicts: ``(seconds from the scenario's now, EV id, "flagged" | "cleared")`` of the
            compliance watch, in order.
        segments: ``(start, end, site power [kW], site limit [kW])`` of every simulated segment.
    """

    scenario: Scenario
    algorithm: str
    known_departures: bool
    battery_kwh: float | None
    evs: tuple[EVOutcome, ...]
    power_kw: FloatArray
    site_limit_kw: FloatArray
    peak_kw: float
    violations: int
    max_violation_kw: float
    cycles: int
    failed_cycles: int
    fallback_cycles: int
    cycle_seconds: FloatArray
    measured_draw: bool = False
    verdicts: tuple[tuple[float, str, str], ...] = ()
    segments: tuple[tuple[datetime, datetime, float, float], ...] = ()

    @property
    def delivered_kwh(self) -> float:
        """Energy delivered to all EVs, each counted up to its need [kWh]."""
        return float(sum(min(e.delivered_kwh, e.needed_kwh) for e in self.evs))

    @property
    def needed_kwh(self) -> float:
        """Energy asked for by all EVs [kWh]."""
        return float(sum(e.needed_kwh for e in self.evs))

    @property
    def worst(self) -> EVOutcome | None:
        """The servable EV with the lowest delivered fraction (the first such in scenario order)."""
        servable = [e for e in self.evs if e.servable]
        return min(servable, key=lambda e: e.fraction) if servable else None

    @property
    def jain_index(self) -> float | None:
        """Jain's fairness index of the delivered fractions of the servable EVs (1 = all equal)."""
        x = np.array([e.fraction for e in self.evs if e.servable])
        if x.size == 0 or not np.any(x > 0):
            return None
        return float(x.sum() ** 2 / (x.size * np.square(x).sum()))

    @property
    def within_limit(self) -> bool:
        """True when the site never drew more than its limit."""
        return self.violations == 0

    def schedule(self) -> PowerSchedule:
        """The realised power per EV and step as a :class:`PowerSchedule`."""
        return PowerSchedule(tuple(e.ev_id for e in self.evs), self.power_kw, self.scenario.now,
                             self.scenario.resolution_s, self.algorithm,
                             float(self.cycle_seconds.sum()) if self.cycle_seconds.size else 0.0,
                             note="realised in a closed-loop replay")

    def to_json(self) -> dict[str, Any]:
        """The realised schedule in the schedule exchange format, with a ``closed_loop`` summary."""
        doc = self.schedule().to_json(self.scenario.name)
        worst = self.worst
        doc["closed_loop"] = {
            "known_departures": self.known_departures,
            "battery_kwh": self.battery_kwh,
            "cycles": self.cycles,
            "failed_cycles": self.failed_cycles,
            "fallback_cycles": self.fallback_cycles,
            "delivered_kwh": round(self.delivered_kwh, 6),
            "needed_kwh": round(self.needed_kwh, 6),
            "worst_ev": None if worst is None else worst.ev_id,
            "worst_fraction": None if worst is None else round(worst.fraction, 6),
            "jain_index": None if self.jain_index is None else round(self.jain_index, 6),
            "peak_kw": round(self.peak_kw, 6),
            "violations": self.violations,
            "measured_draw": self.measured_draw,
            "delivered_kwh_by_ev": {e.ev_id: round(e.delivered_kwh, 6) for e in self.evs},
        }
        return doc

    def summary_lines(self, *, top: int | None = None) -> list[str]:
        """The report printed by ``optivgi simulate``: one line per EV (or the ``top`` worst), then totals.

        Only simulated figures appear, so the lines are identical on every run.
        """
        sc = self.scenario
        lines = [f"{sc.name}: {len(sc.evs)} EVs, {sc.n_steps} steps of {sc.resolution_s} s, algorithm "
                 f"{self.algorithm}, departures "
                 f"{'known' if self.known_departures else 'unknown (horizon end assumed)'}"
                 + (f", battery taper ({self.battery_kwh:g} kWh)" if self.battery_kwh else "")
                 + (", planned with measured draw" if self.measured_draw else "")]
        width = max([len(e.ev_id) for e in self.evs] + [2]) + 2
        swidth = max([len(e.station) for e in self.evs] + [7]) + 2
        lines.append(f"{'EV':<{width}}{'station':<{swidth}}{'arrival':>8}{'departure':>10}{'needed kWh':>12}"
                     f"{'delivered kWh':>15}{'share':>8}  short because")
        shown = list(self.evs)
        if top is not None and top < len(shown):
            shown = sorted(shown, key=lambda e: (e.fraction, e.ev_id))[:top]
            lines[-1] += f"   [the {top} lowest shares of {len(self.evs)}]"
        for e in shown:
            lines.append(f"{e.ev_id:<{width}}{e.station:<{swidth}}{e.arrival.strftime('%H:%M'):>8}"
                         f"{e.departure.strftime('%H:%M'):>10}{e.needed_kwh:>12.3f}{e.delivered_kwh:>15.3f}"
                         f"{e.fraction:>8.1%}  {e.reason or ''}".rstrip())
        worst = self.worst
        needed = self.needed_kwh
        share = f" ({self.delivered_kwh / needed:.2%})" if needed > 0 else ""
        jain = "—" if self.jain_index is None else f"{self.jain_index:.4f}"
        short = sum(1 for e in self.evs if e.reason is not None)
        lines.append(f"delivered {self.delivered_kwh:.3f} of {needed:.3f} kWh asked{share}; "
                     f"{short} of {len(self.evs)} EVs short; worst EV "
                     + ("—" if worst is None else f"{worst.ev_id} at {worst.fraction:.2%}")
                     + f"; Jain index {jain}")
        limit = float(self.site_limit_kw.max(initial=0.0))
        lines.append(f"peak site power {self.peak_kw:.3f} kW (limit {limit:.3f} kW), "
                     f"{self.violations} violations"
                     + (f" (max {self.max_violation_kw:.3f} kW over)" if self.violations else "")
                     + f"; {self.cycles} cycles, {self.failed_cycles} failed, {self.fallback_cycles} fell back")
        return lines


def _load(algorithm: Algorithm | str) -> Algorithm:
    if isinstance(algorithm, Algorithm):
        return algorithm
    from optivgi.plugins import load_algorithm

    return load_algorithm(algorithm)


def simulate(
    scenario: Scenario,
    algorithm: Algorithm | str = "lp",
    *,
    known_departures: bool = False,
    horizon_s: int | None = None,
    battery_kwh: float | None = None,
    voltage: float = 240.0,
    on_cycle: Callable[[CycleReport], None] | None = None,
    on_event: Callable[[SimEvent], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cars: Mapping[str, CarModel] | None = None,
    measured_draw: bool = False,
    draw_rules: DrawRules | None = None,
    compliance_rules: ComplianceRules | None = None,
) -> SimulationResult:
    """Replay ``scenario`` in closed loop under ``algorithm`` and return what was delivered.

    Args:
        scenario: the site and its sessions; EVs arrive and leave at their scenario times.
        algorithm: an algorithm instance or an installed algorithm's name.
        known_departures: tell the planner the real departure times (default: assume the end
            of its horizon, as an OCPP 1.6 site must).
        horizon_s: the planner's rolling horizon [s] (default: the scenario's ``horizon_s``).
        battery_kwh: battery size [kWh] for the taper model (None: no taper); see
            :class:`~optivgi.simulated.SimulatedTranslation`.
        voltage: site voltage [V] for amp conversions.
        on_cycle: called with each cycle's :class:`~optivgi.loop.CycleReport`.
        on_event: called with each arrival and departure, when it happens in simulated time.
        progress: called as ``progress(steps_done, steps_total)`` after each step.
        cars: per EV id, how the car really behaves (on-board limit, own battery, a charger
            that ignores its profile; :mod:`optivgi.cars`, e.g. :func:`~optivgi.cars.load_cars`).
        measured_draw: plan with each car's measured draw (:mod:`optivgi.draw`) and watch
            compliance (:mod:`optivgi.compliance`) through
            :class:`~optivgi.measured.MeasuredDrawTranslation`.
        draw_rules: tolerances of the draw estimate (with ``measured_draw``).
        compliance_rules: tolerances of the compliance watch (with ``measured_draw``).

    Returns:
        The per-EV outcomes, the realised power per step and the totals. Everything but
        :attr:`SimulationResult.cycle_seconds` is the same on every run.
    """
    algo = _load(algorithm)
    res = scenario.resolution_s
    n_steps = scenario.n_steps
    horizon = horizon_s or scenario.horizon_s
    clock = ManualClock(scenario.now)
    translation = SimulatedTranslation(scenario, clock=clock, known_departures=known_departures,
                                       horizon_s=horizon, on_event=on_event, voltage=voltage,
                                       battery_kwh=battery_kwh, keep_timeline=False, cars=cars)
    verdicts: list[tuple[float, str, str]] = []
    planned: Translation = translation
    if measured_draw:
        planned = MeasuredDrawTranslation(
            translation, lambda: (translation.meter_kw(), translation.limit_in_force_kw()),
            lambda: (clock.now() - scenario.now).total_seconds(), draw_rules=draw_rules,
            compliance_rules=compliance_rules, on_verdict=lambda t, ev, v: verdicts.append((t, ev, v.value)))
    limit0 = float(scenario.site.limit_series(1)[0])
    settings = Settings(translation="simulated", algorithm=algo.name, site_power_limit_kw=limit0,
                        resolution_s=res, horizon_s=horizon, interval_s=float(res), charging_rate_unit="W")
    seconds: list[float] = []
    fallbacks = 0

    def collect(report: CycleReport) -> None:
        nonlocal fallbacks
        seconds.append(report.seconds)
        if any(g.schedule is not None and g.schedule.algorithm != algo.name for g in report.groups.values()):
            fallbacks += 1
        if on_cycle is not None:
            on_cycle(report)

    scheduler = Scheduler(planned, algo, settings, clock=clock, on_cycle=collect)
    evs = scenario.evs
    ids = [str(ev.ev_id) for ev in evs]
    offset = np.array([(ev.arrival_time - scenario.now).total_seconds() for ev in evs])
    leave = np.array([(ev.departure_time - scenario.now).total_seconds() for ev in evs])
    horizon_end_s = float(scenario.horizon_s)
    last_s = min(float(leave.max(initial=0.0)), horizon_end_s)
    end_step = min(n_steps, math.ceil(last_s / res - 1e-9))
    events: dict[float, list[str]] = {}
    for ev, a, d in zip(evs, offset, leave, strict=True):
        events.setdefault(float(a), []).append(f"{ev.ev_id} arrived")
        events.setdefault(float(d), []).append(f"{ev.ev_id} departed")
    inner = sorted(t for t in events if 0 < t < last_s and t % res)
    snapshots = np.zeros((n_steps + 1, len(evs)))

    def delivered() -> FloatArray:
        d = translation.delivered_kwh()
        return np.array([d[i] for i in ids])

    def cycle_at(t_s: float, default_reason: str) -> None:
        clock.set(scenario.now + timedelta(seconds=t_s))
        translation.advance(clock.now())
        if np.any((offset <= t_s) & (t_s < leave)):
            names = events.get(t_s)
            reason = default_reason if not names else (names[0] if len(names) == 1
                                                       else f"{names[0]} (+{len(names) - 1} coalesced)")
            scheduler.run_cycle(reason)

    j = 0
    with planned:
        for k in range(end_step):
            t0 = float(k * res)
            cycle_at(t0, "start" if k == 0 else "step")
            snapshots[k] = delivered()
            while j < len(inner) and inner[j] < t0 + res:
                if inner[j] > t0:
                    cycle_at(inner[j], "event")
                j += 1
            if progress is not None:
                progress(k + 1, end_step)
        clock.set(scenario.now + timedelta(seconds=end_step * res))
        translation.advance(clock.now())
        snapshots[end_step:] = delivered()
    power = (np.diff(snapshots, axis=0).T / (res / 3600.0)) if evs else np.zeros((0, n_steps))
    power = np.maximum(power, 0.0)
    result = _result(scenario, algo.name, translation, power, horizon, known_departures, battery_kwh,
                     scheduler, fallbacks, seconds)
    return attrs.evolve(result, measured_draw=measured_draw, verdicts=tuple(verdicts),
                        segments=tuple(translation.segments))


def _result(scenario: Scenario, algorithm: str, translation: SimulatedTranslation, power: FloatArray,
            horizon_s: int, known_departures: bool, battery_kwh: float | None, scheduler: Scheduler,
            fallbacks: int, seconds: list[float]) -> SimulationResult:
    problem = scenario.to_problem()
    servable = (problem.energy_kwh > 0) & (problem.end_step > problem.first_step) & (problem.max_power_kw > 0)
    held = translation.held_seconds()
    got = translation.delivered_kwh()
    h = scenario.resolution_s / 3600.0
    outcomes = []
    for i, ev in enumerate(scenario.evs):
        key = str(ev.ev_id)
        told = None if known_departures else max(ev.arrival_time, scenario.now) + timedelta(seconds=horizon_s)
        outcomes.append(EVOutcome(
            ev_id=key, station=f"{ev.station_id}/{ev.connector_id}", arrival=ev.arrival_time,
            departure=ev.departure_time, needed_kwh=ev.energy_kwh, delivered_kwh=got[key],
            max_kwh=ev.max_power_kw * h * float(problem.end_step[i] - problem.first_step[i]),
            held_full_s=held[key][0], held_room_s=held[key][1], servable=bool(servable[i]),
            planned_departure=told))
    segs = [(site, limit) for t0, t1, site, limit in translation.segments if t1 > t0]
    excess = np.array([site - limit for site, limit in segs]) if segs else np.zeros(0)
    over = excess > LIMIT_TOL_KW
    return SimulationResult(
        scenario=scenario, algorithm=algorithm, known_departures=known_departures, battery_kwh=battery_kwh,
        evs=tuple(outcomes), power_kw=power, site_limit_kw=scenario.site.limit_series(scenario.n_steps),
        peak_kw=max((site for site, _ in segs), default=0.0), violations=int(over.sum()),
        max_violation_kw=float(excess[over].max()) if over.any() else 0.0,
        cycles=scheduler.cycles, failed_cycles=scheduler.failed_cycles, fallback_cycles=fallbacks,
        cycle_seconds=np.array(seconds))
