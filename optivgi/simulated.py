"""The built-in ``simulated`` translation: a site replayed from a scenario, no CSMS needed.

It behaves like a small OCPP 1.6 site: EVs plug in and leave at the scenario's times on a
(possibly accelerated, or manual) clock, each draws ``min(max power, the limit of its latest
profile)`` until it has its energy (less in the battery taper, when a battery size is given),
and the planner is told the real departure times only when ``known_departures`` is set
(otherwise every departure is assumed at the end of the horizon, as a real OCPP 1.6 site must).
A newly plugged EV draws nothing until its first profile arrives (like a connector held at
0 A by a default profile), so a site already at its limit is never pushed over it by an
arrival. Energy is integrated exactly between events, and every change of site power is kept
in :attr:`SimulatedTranslation.timeline`.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Self

import attrs
import numpy as np

from optivgi.cars import CarModel
from optivgi.clock import AcceleratedClock, Clock
from optivgi.config import Settings
from optivgi.models.ev import EV, ChargingRateUnit
from optivgi.models.profile import ChargingProfile
from optivgi.scenario import Scenario, load_scenario, parse_scenario
from optivgi.translation import SendOutcome, Translation, TriggerFn

__all__ = ["TAPER_START_SOC", "SimEvent", "SimulatedTranslation", "default_scenario"]

logger = logging.getLogger(__name__)

# The EV model carries the energy already delivered in a session on newer versions.
_HAS_DELIVERED = "delivered_kwh" in attrs.fields_dict(EV)


def default_scenario() -> Scenario:
    """The embedded demo scenario: six 7.2 kW EVs arriving 60 s apart on a 30 kW site."""
    import json

    text = resources.files("optivgi.data").joinpath("seed-demo.json").read_text(encoding="utf-8")
    return parse_scenario(json.loads(text))


@attrs.frozen
class SimEvent:
    """An arrival or departure in the simulation."""

    time: datetime
    kind: str  # "arrival" or "departure"
    ev: EV
    #: Energy [kWh] delivered to the EV when the event fired (its total, for a departure).
    delivered_kwh: float = 0.0


#: Taper of the optional battery model: constant power until this share of the battery is
#: full, then linear to 0 at full (the same model as the CitrineOS charger simulator's car).
TAPER_START_SOC = 0.8
_PLAIN_CAR = CarModel()


@attrs.define
class _State:
    ev: EV
    delivered_kwh: float = 0.0
    profile: ChargingProfile | None = None
    # The profile's period starts [s] and limits [kW], cached for bisection.
    starts: list[int] = attrs.field(factory=list)
    limits_kw: list[float] = attrs.field(factory=list)
    #: Seconds the profile held the car below what it could draw, while the site was full / had room.
    held_full_s: float = 0.0
    held_room_s: float = 0.0

    def set_profile(self, profile: ChargingProfile, voltage: float) -> None:
        self.profile = profile
        v = self.ev.voltage or voltage
        self.starts = [p.start_period for p in profile.periods]
        self.limits_kw = [profile.unit.limit_to_kw(p.limit, v, p.number_phases or self.ev.phases)
                          for p in profile.periods]

    def limit_kw(self, t: datetime) -> float:
        """The profile's limit [kW] in force at ``t`` (0 before the first profile)."""
        p = self.profile
        if p is None:
            return 0.0
        offset = (t - p.start_schedule).total_seconds()
        if p.duration is not None and offset >= p.duration:
            return 0.0
        return self.limits_kw[max(bisect.bisect_right(self.starts, offset) - 1, 0)]

    def next_change(self, t: datetime) -> datetime | None:
        """The first time after ``t`` at which the profile's limit changes."""
        p = self.profile
        if p is None:
            return None
        offset = (t - p.start_schedule).total_seconds()
        i = bisect.bisect_right(self.starts, offset)
        candidates = [self.starts[i]] if i < len(self.starts) else []
        if p.duration is not None and p.duration > offset:
            candidates.append(p.duration)
        return p.start_schedule + timedelta(seconds=min(candidates)) if candidates else None


class SimulatedTranslation(Translation):
    """A simulated site driven by a :class:`~optivgi.scenario.Scenario`.

    Args:
        scenario: what to replay (default: :func:`default_scenario`).
        clock: simulation clock (default: real time from the scenario's ``now``).
        known_departures: tell the planner the real departure times.
        horizon_s: planning horizon [s], used as the assumed departure when unknown.
        on_event: called with each arrival/departure as it happens.
        voltage: the site's voltage [V], reported to the planner and used for amp limits.
        battery_kwh: battery size [kWh] of every car for the optional taper: each session ends
            with a full battery, and a car accepts its max power up to 80 % state of charge,
            then linearly less down to 0 at 100 % (None: no taper, a car draws its max until
            its need is met).
        keep_timeline: keep every change of drawn power in :attr:`timeline` (a long replay of a
            large fleet may switch it off; :attr:`segments` is always kept).
        cars: per EV id, how the car really behaves (:class:`~optivgi.cars.CarModel`: an
            on-board limit, its own battery for the taper, a charger that ignores profiles).
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        clock: Clock | None = None,
        known_departures: bool = False,
        horizon_s: int = 8 * 3600,
        on_event: Callable[[SimEvent], None] | None = None,
        voltage: float = 240.0,
        battery_kwh: float | None = None,
        keep_timeline: bool = True,
        cars: Mapping[str, CarModel] | None = None,
    ) -> None:
        if battery_kwh is not None and not battery_kwh > 0:
            raise ValueError(f"'battery_kwh' must be > 0, got {battery_kwh!r}")
        self.voltage = voltage
        self.scenario = scenario or default_scenario()
        self.clock: Clock = clock or AcceleratedClock(self.scenario.now, 1.0)
        self.known_departures = known_departures
        self.horizon_s = horizon_s
        self.on_event = on_event
        self.battery_kwh = battery_kwh
        self.keep_timeline = keep_timeline
        self._states = {str(ev.ev_id): _State(ev) for ev in self.scenario.evs}
        self.cars: dict[str, CarModel] = dict(cars or {})
        self._car_switches = sorted({ev.arrival_time + timedelta(seconds=s) for ev in self.scenario.evs
                                     for s in self.cars.get(str(ev.ev_id), CarModel()).rogue_switches_s()})
        self._lock = threading.RLock()
        self._t = self.scenario.now
        self._events = sorted(
            [SimEvent(ev.arrival_time, "arrival", ev) for ev in self.scenario.evs]
            + [SimEvent(ev.departure_time, "departure", ev) for ev in self.scenario.evs],
            key=lambda e: (e.time, e.kind == "arrival"),
        )
        self._event_times = sorted({e.time for e in self._events})
        self._next_event = 0
        self._limits = self.scenario.site.limit_series(self.scenario.n_steps)
        #: (time, {ev_id: kW}) at every change of drawn power (when ``keep_timeline``).
        self.timeline: list[tuple[datetime, dict[str, float]]] = []
        #: (start, end, site power [kW], site limit [kW]) of every integrated segment.
        self.segments: list[tuple[datetime, datetime, float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trigger: TriggerFn | None = None
        self._record(self._t)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Build from ``OPTIVGI_SCENARIO`` (a scenario file; default: the embedded demo),
        ``OPTIVGI_SPEED`` (clock speed, default 1) and ``OPTIVGI_KNOWN_DEPARTURES``."""
        path = settings.get("OPTIVGI_SCENARIO")
        scenario = load_scenario(Path(path)) if path else default_scenario()
        speed = settings.get_float("OPTIVGI_SPEED", 1.0, minimum=1e-6) or 1.0
        known = (settings.get("OPTIVGI_KNOWN_DEPARTURES", "") or "").lower() in ("1", "true", "yes")
        if settings.site_power_limit_kw is not None:
            site = attrs.evolve(scenario.site, site_limit_kw=settings.site_power_limit_kw)
            scenario = attrs.evolve(scenario, site=site)
        return cls(scenario, clock=AcceleratedClock(scenario.now, speed), known_departures=known,
                   horizon_s=settings.horizon_s, voltage=settings.voltage)

    # -- simulation ------------------------------------------------------------------------
    def _present(self, st: _State, t: datetime) -> bool:
        return st.ev.arrival_time <= t < st.ev.departure_time

    def _car(self, st: _State) -> CarModel:
        return self.cars.get(str(st.ev.ev_id), _PLAIN_CAR)

    def _car_max_kw(self, st: _State) -> float:
        return self._car(st).max_kw(st.ev.max_power_kw)

    def _battery_kwh(self, st: _State) -> float | None:
        car = self._car(st).battery_kwh
        return self.battery_kwh if car is None else car

    def _rogue(self, st: _State, t: datetime) -> bool:
        return self._car(st).rogue_at((t - st.ev.arrival_time).total_seconds())

    def _accept_kw(self, st: _State) -> float:
        """What the car itself accepts now [kW]: its max, less in the battery's taper."""
        remaining = st.ev.energy_kwh - st.delivered_kwh
        if remaining <= 1e-9:
            return 0.0
        pmax, battery = self._car_max_kw(st), self._battery_kwh(st)
        if battery is None:
            return pmax
        return min(pmax, pmax * remaining / ((1.0 - TAPER_START_SOC) * battery))

    def _draw_kw(self, st: _State, t: datetime) -> float:
        if not self._present(st, t):
            return 0.0
        return self._accept_kw(st) if self._rogue(st, t) else min(self._accept_kw(st), st.limit_kw(t))

    def meter_kw(self) -> dict[str, float]:
        """Measured draw [kW] of each connected EV now (what a meter would report)."""
        with self._lock:
            return {ev_id: self._draw_kw(st, self._t) for ev_id, st in self._states.items()
                    if self._present(st, self._t)}

    def limit_in_force_kw(self) -> dict[str, float | None]:
        """The limit [kW] of the profile each connected EV's charger accepted and holds now
        (None before its first profile)."""
        with self._lock:
            return {ev_id: None if st.profile is None else st.limit_kw(self._t)
                    for ev_id, st in self._states.items() if self._present(st, self._t)}

    def _powers(self, t: datetime) -> dict[str, float]:
        return {ev_id: self._draw_kw(st, t) for ev_id, st in self._states.items()}

    def site_limit_at(self, t: datetime) -> float:
        """The scenario's site limit [kW] in the step holding ``t`` (the last step's after the horizon)."""
        k = int((t - self.scenario.now).total_seconds() // self.scenario.resolution_s)
        return float(self._limits[min(max(k, 0), len(self._limits) - 1)])

    def _record(self, t: datetime) -> None:
        if not self.keep_timeline:
            return
        powers = self._powers(t)
        if not self.timeline or self.timeline[-1][1] != powers:
            self.timeline.append((t, powers))

    def _next_boundary(self, t0: datetime, t1: datetime) -> datetime:
        """The first time in ``(t0, t1]`` at which a draw may change (an event, a period, a step)."""
        nxt = t1
        i = bisect.bisect_right(self._event_times, t0)
        if i < len(self._event_times):
            nxt = min(nxt, self._event_times[i])
        res = self.scenario.resolution_s
        k = math.floor((t0 - self.scenario.now).total_seconds() / res) + 1
        nxt = min(nxt, self.scenario.now + timedelta(seconds=k * res))
        i = bisect.bisect_right(self._car_switches, t0)
        if i < len(self._car_switches):
            nxt = min(nxt, self._car_switches[i])
        for st in self._states.values():
            change = st.next_change(t0)
            if change is not None and change < nxt:
                nxt = change
        return nxt

    def _integrate(self, st: _State, limit: float, hours: float) -> float:
        """Energy [kWh] the car takes in ``hours`` under a profile limit ``limit`` [kW] (exact,
        taper included)."""
        remaining = st.ev.energy_kwh - st.delivered_kwh
        pmax, battery = self._car_max_kw(st), self._battery_kwh(st)
        cap = min(limit, pmax)
        if remaining <= 1e-9 or cap <= 0:
            return 0.0
        if battery is None:
            return min(remaining, cap * hours)
        rate = pmax / ((1.0 - TAPER_START_SOC) * battery)  # [1/h] in the taper
        knee = cap / rate  # below this remaining need the battery, not the profile, decides
        if remaining > knee:
            t_flat = (remaining - knee) / cap
            if t_flat >= hours:
                return cap * hours
            return remaining - knee * math.exp(-rate * (hours - t_flat))
        return remaining * (1.0 - math.exp(-rate * hours))

    def advance(self, t: datetime) -> None:
        """Integrate energy up to ``t`` and fire the arrival/departure events passed."""
        with self._lock:
            while self._t < t:
                nxt = self._next_boundary(self._t, t)
                hours = (nxt - self._t).total_seconds() / 3600.0
                seconds = hours * 3600.0
                draws = {ev_id: self._draw_kw(st, self._t) for ev_id, st in self._states.items()}
                site_kw = sum(draws.values())
                limit_kw = self.site_limit_at(self._t)
                self.segments.append((self._t, nxt, site_kw, limit_kw))
                for ev_id, st in self._states.items():
                    if not self._present(st, self._t):
                        continue
                    accept = self._accept_kw(st)
                    if accept <= 1e-9:
                        continue
                    if draws[ev_id] < accept - 1e-6:
                        # Held below what the car could take: was there room for it at the site?
                        room = limit_kw - site_kw
                        if room < max(st.ev.min_power_kw, 0.01):
                            st.held_full_s += seconds
                        else:
                            st.held_room_s += seconds
                    limit = math.inf if self._rogue(st, self._t) else st.limit_kw(self._t)
                    got = self._integrate(st, limit, hours)
                    st.delivered_kwh = min(st.ev.energy_kwh, st.delivered_kwh + got)
                self._t = nxt
                self._record(self._t)
            while self._next_event < len(self._events) and self._events[self._next_event].time <= t:
                event = self._events[self._next_event]
                self._next_event += 1
                if self.on_event is not None:
                    got = self._states[str(event.ev.ev_id)].delivered_kwh
                    try:
                        self.on_event(attrs.evolve(event, delivered_kwh=got))
                    except Exception:  # a display callback must not stop the simulated site
                        logger.exception("on_event callback failed for %s %s", event.kind, event.ev.ev_id)

    def held_seconds(self) -> dict[str, tuple[float, float]]:
        """For each EV, the seconds its profile held it below what it could draw: (while the
        site was full, while the site had room for more)."""
        with self._lock:
            return {ev_id: (st.held_full_s, st.held_room_s) for ev_id, st in self._states.items()}

    def delivered_kwh(self) -> dict[str, float]:
        """Energy [kWh] delivered so far to each EV."""
        with self._lock:
            return {ev_id: st.delivered_kwh for ev_id, st in self._states.items()}

    def site_power_kw(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Site power [kW] at every recorded change."""
        return np.array([sum(p.values()) for _, p in self.timeline])

    @property
    def finished(self) -> bool:
        """True once every EV has left."""
        return self._next_event >= len(self._events)

    # -- Translation -----------------------------------------------------------------------
    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        """Connected EVs with their remaining need; departure = horizon end unless known."""
        now = self.clock.now()
        self.advance(now)
        horizon_end = now + timedelta(seconds=self.horizon_s)
        evs: list[EV] = []
        with self._lock:
            for ev_id, st in self._states.items():
                if not self._present(st, now):
                    continue
                extra: dict[str, Any] = {"delivered_kwh": st.delivered_kwh} if _HAS_DELIVERED else {}
                evs.append(attrs.evolve(
                    st.ev,
                    energy=max(st.ev.energy_kwh - st.delivered_kwh, 0.0),
                    departure_time=st.ev.departure_time if self.known_departures else horizon_end,
                    transaction_id=ev_id,
                    active=True,
                    power=[],
                    **extra,
                ))
        return evs, self.voltage

    def get_peak_power_demand(self, group_name: str, now: datetime, voltage: float | None = None) -> Sequence[float]:
        """The scenario's site limit from ``now`` on [kW]."""
        step = int((now - self.scenario.now).total_seconds() // self.scenario.resolution_s)
        limits = self.scenario.site.limit_series(self.scenario.n_steps + max(step, 0))
        return [float(x) for x in limits[max(step, 0):]]

    def get_prices(self, group_name: str, now: datetime) -> Sequence[float] | None:
        """The scenario's prices from ``now`` on, if it has any."""
        step = max(int((now - self.scenario.now).total_seconds() // self.scenario.resolution_s), 0)
        prices = self.scenario.site.price_series(self.scenario.n_steps + step)
        return None if prices is None else [float(x) for x in prices[step:]]

    def send_power_to_evs(
        self, powers: Mapping[EV, ChargingProfile], unit: ChargingRateUnit | None = None
    ) -> dict[str, SendOutcome]:
        """Apply each profile at once (a perfect charger accepts everything it is sent)."""
        self.advance(self.clock.now())
        out: dict[str, SendOutcome] = {}
        with self._lock:
            for ev, profile in powers.items():
                st = self._states.get(str(ev.ev_id))
                if st is None:
                    logger.warning("profile for unknown EV %s skipped", ev.ev_id)
                    out[str(ev.ev_id)] = SendOutcome.REJECTED
                    continue
                st.set_profile(profile, self.voltage)
                out[str(ev.ev_id)] = SendOutcome.APPLIED
            self._record(self._t)
        return out

    # -- events ----------------------------------------------------------------------------
    def attach(self, trigger: TriggerFn) -> None:
        """Trigger a cycle at every arrival and departure, on the simulation clock."""
        self._trigger = trigger
        self._thread = threading.Thread(target=self._feed, name="optivgi-sim-events", daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pending = self._events[self._next_event:]
            if not pending:
                return
            due = pending[0].time
            wait = (due - self.clock.now()).total_seconds()
            if wait > 0 and self._stop.wait(self.clock.real_seconds(wait)):
                return
            self.advance(self.clock.now())
            if self._trigger is not None:
                self._trigger(f"{pending[0].ev.ev_id} {'arrived' if pending[0].kind == 'arrival' else 'departed'}")

    def teardown(self) -> None:
        """Stop the event thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
