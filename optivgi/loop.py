"""The scheduling loop: one cycle per trigger and per period, never dying.

A cycle, for each station group: read EVs and limits from the translation, plan with the
configured algorithm (falling back to ``equal-share`` when it fails), validate, build one OCPP
charging profile per EV, and send them. Triggers (charging events pushed by a translation or a
listener through :meth:`Scheduler.trigger`) and the periodic timer, aligned to the interval,
start cycles; triggers arriving in a burst are coalesced into one cycle. An exception in a
cycle is logged with its context and the loop carries on.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import attrs
import numpy as np
import numpy.typing as npt

from optivgi.algorithms.base import Algorithm, Problem
from optivgi.algorithms.validate import validate_schedule
from optivgi.clock import Clock, SystemClock
from optivgi.config import Settings
from optivgi.errors import OptiVGIError
from optivgi.limits.base import LimitSource
from optivgi.models.ev import EV
from optivgi.models.profile import ChargingProfile
from optivgi.models.schedule import PowerSchedule
from optivgi.models.site import SiteConstraints
from optivgi.planner import build_problem, plan
from optivgi.topology import Topology
from optivgi.translation import SendOutcome, Translation

__all__ = ["CycleReport", "GroupResult", "Scheduler"]

logger = logging.getLogger(__name__)


@attrs.define
class GroupResult:
    """What one cycle did for one station group."""

    group: str
    evs: list[EV] = attrs.field(factory=list)
    site_limit_kw: float = 0.0
    schedule: PowerSchedule | None = None
    profiles: dict[str, ChargingProfile] = attrs.field(factory=dict)
    outcomes: dict[str, SendOutcome] = attrs.field(factory=dict)
    error: str | None = None

    def first_step_kw(self) -> dict[str, float]:
        """Planned power [kW] of each EV in the first step."""
        if self.schedule is None or self.schedule.n_steps == 0:
            return {}
        return {ev_id: float(p) for ev_id, p in zip(self.schedule.ev_ids, self.schedule.power_kw[:, 0], strict=True)}


@attrs.define
class CycleReport:
    """What one cycle did, group by group."""

    reason: str
    now: datetime
    groups: dict[str, GroupResult] = attrs.field(factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no group failed."""
        return all(g.error is None for g in self.groups.values())


def _unique(group: str, evs: list[EV]) -> list[EV]:
    """``evs`` without repeated ids: the first session with an id is kept, the others are
    skipped with a warning (a translation bug must not stop the whole group)."""
    seen: set[str] = set()
    out: list[EV] = []
    for ev in evs:
        key = str(ev.ev_id)
        if key in seen:
            logger.warning("group %s: duplicate session id %r from the translation skipped", group, key)
            continue
        seen.add(key)
        out.append(ev)
    return out


def _planning_start(now: datetime) -> datetime:
    return now.replace(microsecond=0)


class Scheduler:
    """Runs scheduling cycles for a translation with an algorithm.

    Args:
        translation: an entered (``with``) translation.
        algorithm: the algorithm to plan with.
        settings: validated settings (groups, resolution, horizon, interval, unit).
        clock: time source (default: the wall clock).
        on_cycle: called with each :class:`CycleReport` (for printing or tests).
        coalesce_s: after a trigger, further triggers within this many seconds [clock time]
            are merged into the same cycle.
        topology: the site tree; a group named like one of its nodes is planned within that
            subtree, any other group within the whole tree.
        limit_source: a live site limit; each step's limit is the lower of the translation's and
            the source's (its forecast included). A drop of the source triggers a cycle at once
            (unless the source already has a trigger).
    """

    def __init__(
        self,
        translation: Translation,
        algorithm: Algorithm,
        settings: Settings,
        *,
        clock: Clock | None = None,
        on_cycle: Callable[[CycleReport], None] | None = None,
        coalesce_s: float = 0.2,
        topology: Topology | None = None,
        limit_source: LimitSource | None = None,
    ) -> None:
        self.translation = translation
        self.topology = topology
        self.limit_source = limit_source
        if limit_source is not None and limit_source.trigger is None:
            limit_source.trigger = self.trigger
        self.algorithm = algorithm
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.on_cycle = on_cycle
        self.coalesce_s = coalesce_s
        self.cycles = 0
        self.failed_cycles = 0
        self._queue: queue.Queue[str] = queue.Queue()
        # First-step power [kW] last confirmed per EV, to send reductions before increases.
        self._last_kw: dict[str, float] = {}
        # EVs whose last profile was not confirmed: they may draw up to their max.
        self._unconfirmed: set[str] = set()
        self._stop = threading.Event()
        # Last schedule per group: used, shifted, when the algorithm fails or runs out of time.
        self._previous: dict[str, PowerSchedule] = {}

    # -- triggers -------------------------------------------------------------------------
    def trigger(self, reason: str) -> None:
        """Ask for a cycle as soon as possible (thread-safe)."""
        self._queue.put(reason)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the cycle in progress (thread-safe)."""
        self._stop.set()
        self._queue.put("")

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    # -- one cycle -------------------------------------------------------------------------
    def _profiles(self, evs: list[EV], schedule: PowerSchedule) -> dict[EV, ChargingProfile]:
        unit = self.settings.charging_rate_unit
        profiles: dict[EV, ChargingProfile] = {}
        for ev, row in zip(evs, schedule.power_kw, strict=True):
            ev.power = row.tolist()
            if not ev.active:
                continue  # an expected EV is planned for, but there is no charger to tell yet
            profiles[ev] = ChargingProfile.from_power(
                row,
                start=schedule.start,
                resolution_s=schedule.resolution_s,
                unit=unit,
                voltage=ev.voltage or self.settings.voltage,
                phases=ev.phases,
                charging_profile_id=100 + ev.connector_id,
                stack_level=1,
                transaction_id=ev.transaction_id,
            )
        return profiles

    def _plan(self, problem: Problem, evs: list[EV], previous: PowerSchedule | None = None) -> PowerSchedule:
        """Plan, counting every EV whose last profile was not confirmed at its max power.

        Such an EV may still be drawing whatever it drew before (a rejected profile leaves the
        old one in force), so the others are planned within what is left of the limit, and it is
        offered its max again (scaled down, all of them together, if even that does not fit).
        """
        pinned_rows = np.array([ev.active and str(ev.ev_id) in self._unconfirmed for ev in evs], dtype=bool)
        if not pinned_rows.any():
            return plan(problem, self.algorithm, previous=previous)
        mask = problem.window_mask()[pinned_rows]
        pinned = problem.max_power_kw[pinned_rows, None] * mask
        reserved = pinned.sum(axis=0)
        scale = np.ones_like(reserved)
        over = reserved > problem.site_limit_kw
        scale[over] = problem.site_limit_kw[over] / reserved[over]
        pinned = pinned * scale[None, :]
        network = problem.network
        if network is not None:  # and within every node and phase of the site tree
            pinned = network.fit(pinned, pinned_rows)
        # A scaled share below an EV's minimum cannot be regulated: pause it rather than break the rule.
        pinned[pinned < problem.min_power_kw[pinned_rows, None]] = 0.0
        rest_limit = np.maximum(problem.site_limit_kw - pinned.sum(axis=0), 0.0)
        rest_network = None if network is None else network.reserve(pinned, pinned_rows)
        rest = plan(problem.select(~pinned_rows, rest_limit, rest_network), self.algorithm, previous=previous)
        power = problem.zeros()
        power[~pinned_rows] = rest.power_kw
        power[pinned_rows] = pinned
        power = validate_schedule(problem, power)
        held = [i for i, keep in zip(problem.ids, pinned_rows, strict=True) if keep]
        logger.warning("unconfirmed EVs %s counted at their max power", ", ".join(held))
        note = "; ".join(n for n in (rest.note, f"unconfirmed EVs counted at max: {', '.join(held)}") if n)
        return PowerSchedule(problem.ids, power, problem.start, problem.resolution_s, rest.algorithm,
                             rest.solve_seconds, note=note)

    def _live_limits(self, now: datetime, resolution_s: int, n_steps: int) -> npt.NDArray[np.float64]:
        """The limit source's series; its lowest value (else 0) when it fails: assume the worst."""
        source = self.limit_source
        if source is None:
            return np.full(n_steps, np.inf)
        try:
            live = np.asarray(source.series(now, resolution_s, n_steps), dtype=np.float64)
            if live.shape != (n_steps,) or not np.all(np.isfinite(live)) or np.any(live < 0):
                raise ValueError(f"series must be {n_steps} finite numbers >= 0")
            return live
        except Exception as exc:  # a broken limit plugin must not stop the loop, nor lift the limit
            try:
                floor = float(source.lowest_kw())
            except Exception:
                floor = 0.0
            floor = floor if math.isfinite(floor) and floor > 0 else 0.0
            logger.error("limit source %s failed (%s: %s); planning with %g kW", source.name,
                         type(exc).__name__, exc, floor)
            return np.full(n_steps, floor)

    def _run_group(self, group: str, now: datetime) -> GroupResult:
        result = GroupResult(group)
        evs, voltage = self.translation.get_evs(group)
        evs = _unique(group, evs)
        # One voltage for planning and for the amp limits sent, or a profile in A could
        # allow more power than was planned.
        site_voltage = voltage or self.settings.voltage
        result.evs = [ev if ev.voltage is not None else attrs.evolve(ev, voltage=site_voltage) for ev in evs]
        limits = self.translation.get_peak_power_demand(group, now, voltage)
        prices = self.translation.get_prices(group, now)
        n_steps, resolution = self.settings.n_steps, self.settings.resolution_s
        if self.limit_source is not None:
            live = self._live_limits(now, resolution, n_steps)
            limits = [float(v) for v in np.minimum(SiteConstraints(limits).limit_series(n_steps), live)]
        site = SiteConstraints(limits, prices)
        topology = self.topology
        if topology is not None and group in {node.name for node in topology.nodes}:
            topology = topology.subtree(group)
        problem = build_problem(result.evs, site, now, resolution_s=resolution, n_steps=n_steps,
                                topology=topology, voltage=site_voltage)
        result.site_limit_kw = float(problem.site_limit_kw[0]) if problem.n_steps else 0.0
        if problem.n_evs and not bool((problem.end_step > problem.first_step).any()):
            horizon_end = now + timedelta(seconds=self.settings.horizon_s)
            logger.warning("group %s: none of its %d sessions lies within the planning horizon %s to %s "
                           "(their arrival and departure times are outside it); they get 0 kW",
                           group, problem.n_evs, now.isoformat(), horizon_end.isoformat())
        schedule = self._plan(problem, result.evs, self._previous.get(group))
        self._previous[group] = schedule
        result.schedule = schedule
        if schedule.note:
            logger.warning("group %s: %s", group, schedule.note)
        profiles = self._profiles(result.evs, schedule)
        # Reductions go out before increases, so the site stays under its limit while the
        # profiles arrive one by one. An EV never confirmed is assumed to draw its max.
        first = dict(zip((str(ev.ev_id) for ev in result.evs), schedule.power_kw[:, 0] if schedule.n_steps
                         else [0.0] * len(result.evs), strict=True))
        profiles = dict(sorted(
            profiles.items(),
            key=lambda item: first[str(item[0].ev_id)] - self._last_kw.get(str(item[0].ev_id), item[0].max_power_kw),
        ))
        result.profiles = {str(ev.ev_id): p for ev, p in profiles.items()}
        if not profiles:
            return result
        outcomes = self.translation.send_power_to_evs(profiles, self.settings.charging_rate_unit)
        if outcomes is None:
            result.outcomes = {str(ev.ev_id): SendOutcome.APPLIED for ev in profiles}
        else:
            result.outcomes = {str(k): SendOutcome(v) for k, v in outcomes.items()}
        for ev_id, outcome in result.outcomes.items():
            if outcome is SendOutcome.APPLIED:
                self._last_kw[ev_id] = first.get(ev_id, 0.0)
                self._unconfirmed.discard(ev_id)
            else:
                self._last_kw.pop(ev_id, None)
                self._unconfirmed.add(ev_id)
                logger.warning("group %s: profile for EV %s was %s", group, ev_id, outcome.value)
        return result

    def run_cycle(self, reason: str = "manual") -> CycleReport:
        """Run one cycle for every group now; never raises for a group's failure."""
        t0 = time.perf_counter()
        now = _planning_start(self.clock.now())
        report = CycleReport(reason, now)
        for group in self.settings.station_groups:
            try:
                report.groups[group] = self._run_group(group, now)
            except Exception as exc:  # one group's failure must not stop the others or the loop
                # A failure opti-vgi names (CSMS down, bad data) is one line; anything else is a bug
                # and keeps its traceback.
                logger.error("cycle (%s) failed for group %s at %s: %s: %s", reason, group, now.isoformat(),
                             type(exc).__name__, exc, exc_info=not isinstance(exc, OptiVGIError))
                report.groups[group] = GroupResult(group, error=f"{type(exc).__name__}: {exc}")
        report.seconds = time.perf_counter() - t0
        self.cycles += 1
        if not report.ok:
            self.failed_cycles += 1
        logger.info("cycle %d (%s) done in %.3f s", self.cycles, reason, report.seconds)
        if self.on_cycle is not None:
            try:
                self.on_cycle(report)
            except Exception:
                logger.exception("on_cycle callback failed")
        return report

    # -- the loop --------------------------------------------------------------------------
    def _next_tick(self, now: datetime) -> datetime:
        interval = self.settings.interval_s
        epoch = now.timestamp()
        return datetime.fromtimestamp(math.floor(epoch / interval + 1) * interval, tz=now.tzinfo)

    def _wait(self, deadline: datetime) -> str | None:
        """Block until a trigger (returned) or ``deadline`` (None)."""
        remaining = (deadline - self.clock.now()).total_seconds()
        if remaining <= 0:
            return None
        try:
            return self._queue.get(timeout=self.clock.real_seconds(remaining))
        except queue.Empty:
            return None

    def _drain(self, first: str) -> str:
        """Merge triggers arriving within ``coalesce_s`` of ``first`` into one reason."""
        reasons = [first]
        deadline = time.monotonic() + self.clock.real_seconds(self.coalesce_s)
        while (left := deadline - time.monotonic()) > 0:
            try:
                reasons.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        reasons = [r for r in reasons if r]
        if len(reasons) > 1:
            return f"{reasons[0]} (+{len(reasons) - 1} coalesced)"
        return reasons[0] if reasons else ""

    def run(self, *, once: bool = False, max_cycles: int | None = None) -> None:
        """Run cycles until :meth:`stop` (or once, or ``max_cycles``).

        The first cycle runs at once; then one runs on each trigger and at each multiple of
        the interval.
        """
        self.run_cycle("start")
        if once:
            return
        tick = self._next_tick(self.clock.now())
        while not self._stop.is_set():
            if max_cycles is not None and self.cycles >= max_cycles:
                return
            reason = self._wait(tick)
            if self._stop.is_set():
                return
            if reason is None:
                now = self.clock.now()
                if now < tick:
                    continue
                tick = self._next_tick(now)
                self.run_cycle("timer")
            else:
                reason = self._drain(reason)
                if self._stop.is_set():
                    return
                if reason:
                    self.run_cycle(reason)
                    if self.clock.now() >= tick:
                        tick = self._next_tick(self.clock.now())
