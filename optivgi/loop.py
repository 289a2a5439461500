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

from optivgi.algorithms.base import Algorithm, Problem
from optivgi.algorithms.validate import validate_schedule
from optivgi.clock import Clock, SystemClock
from optivgi.config import Settings
from optivgi.ledger import Circuit, ConnectorKey, Ledger, Outcome, ProfileRecord, Request
from optivgi.models.ev import EV
from optivgi.models.profile import ChargingProfile
from optivgi.models.schedule import PowerSchedule
from optivgi.models.site import SiteConstraints
from optivgi.planner import build_problem, plan
from optivgi.transitions import send_order
from optivgi.translation import ProfileSpec, SendOutcome, Translation

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


def _key(ev: EV) -> ConnectorKey:
    return (str(ev.station_id), ev.connector_id)


#: How the ledger reads a translation's outcome: a profile that failed to go out may still have
#: reached the charger, so it counts as unanswered (possibly in force).
_OUTCOMES = {
    SendOutcome.APPLIED: Outcome.ACCEPTED,
    SendOutcome.REJECTED: Outcome.REJECTED,
    SendOutcome.UNANSWERED: Outcome.UNANSWERED,
    SendOutcome.FAILED: Outcome.UNANSWERED,
}


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
    ) -> None:
        self.translation = translation
        self.algorithm = algorithm
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.on_cycle = on_cycle
        self.coalesce_s = coalesce_s
        self.cycles = 0
        self.failed_cycles = 0
        self._queue: queue.Queue[str] = queue.Queue()
        #: What each connector's charger was sent and accepted; decides the order of sending
        #: (waves: increases only once the reductions making room were accepted) and what an
        #: unconfirmed EV is counted at.
        self.ledger = Ledger()
        # The transaction last seen per connector (a new one drops the old one's profiles).
        self._tx: dict[ConnectorKey, str] = {}
        # EVs whose last profile was not confirmed: counted at the most the ledger says they may draw.
        self._unconfirmed: set[str] = set()
        self._stop = threading.Event()

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
        profiles: dict[EV, ChargingProfile] = {}
        for ev, row in zip(evs, schedule.power_kw, strict=True):
            ev.power = [float(p) for p in row]
            if not ev.active:
                continue  # an expected EV is planned for, but there is no charger to tell yet
            # Built once, as the translation wants it on the wire (unit, id, level, periods).
            spec = self.translation.profile_spec(ev) or ProfileSpec(
                charging_profile_id=100 + ev.connector_id)
            profiles[ev] = ChargingProfile.from_power(
                row,
                start=schedule.start,
                resolution_s=schedule.resolution_s,
                unit=spec.unit or self.settings.charging_rate_unit,
                voltage=ev.voltage or self.settings.voltage,
                phases=ev.phases,
                charging_profile_id=spec.charging_profile_id,
                stack_level=spec.stack_level,
                transaction_id=ev.transaction_id,
                max_periods=spec.max_periods,
            )
        return profiles

    def _plan(self, problem: Problem, evs: list[EV]) -> PowerSchedule:
        """Plan, counting every EV whose last profile was not confirmed at its worst case.

        Such an EV may still draw whatever its charger last accepted, or what it was sent since
        (a rejected profile leaves the old one in force, an unanswered one may be applied), so
        the ledger's worst case is reserved for it, step by step; the others are planned within
        what is left of the limit, and it is offered that reservation again (scaled down, all of
        them together, if even that does not fit).
        """
        pinned_rows = np.array([ev.active and str(ev.ev_id) in self._unconfirmed for ev in evs], dtype=bool)
        if not pinned_rows.any() or self.translation.counts_in_force:
            return plan(problem, self.algorithm)
        mask = problem.window_mask()[pinned_rows]
        worst = np.array([self._reserved_kw(_key(ev), problem.start, problem.resolution_s, problem.n_steps)
                          for ev, keep in zip(evs, pinned_rows, strict=True) if keep]).reshape(mask.shape)
        pinned = np.minimum(worst, problem.max_power_kw[pinned_rows, None]) * mask
        reserved = pinned.sum(axis=0)
        scale = np.ones_like(reserved)
        over = reserved > problem.site_limit_kw
        scale[over] = problem.site_limit_kw[over] / reserved[over]
        pinned = pinned * scale[None, :]
        # A scaled share below an EV's minimum cannot be regulated: pause it rather than break the rule.
        pinned[pinned < problem.min_power_kw[pinned_rows, None]] = 0.0
        rest_limit = np.maximum(problem.site_limit_kw - pinned.sum(axis=0), 0.0)
        rest = plan(problem.select(~pinned_rows, rest_limit), self.algorithm)
        power = problem.zeros()
        power[~pinned_rows] = rest.power_kw
        power[pinned_rows] = pinned
        power = validate_schedule(problem, power)
        held = [i for i, keep in zip(problem.ids, pinned_rows, strict=True) if keep]
        logger.warning("unconfirmed EVs %s counted at the most they may draw", ", ".join(held))
        note = "; ".join(n for n in (rest.note, f"unconfirmed EVs counted at max: {', '.join(held)}") if n)
        return PowerSchedule(problem.ids, power, problem.start, problem.resolution_s, rest.algorithm,
                             rest.solve_seconds, note=note)

    def _reserved_kw(self, key: ConnectorKey, start: datetime, resolution_s: int, n_steps: int) -> list[float]:
        """The most [kW] the connector may draw in each planning step, by the ledger."""
        if key not in self.ledger.connectors:
            return [math.inf] * n_steps  # never sent anything: capped at its max by the caller
        end = start + timedelta(seconds=resolution_s * n_steps)
        points = self.ledger.boundaries(start, end, stations=[key[0]])
        values = [(t, self.ledger.worst_case_at(key, t)) for t in points]
        out = []
        i = 0
        for step in range(n_steps):
            a, b = start + timedelta(seconds=step * resolution_s), start + timedelta(seconds=(step + 1) * resolution_s)
            while i + 1 < len(values) and values[i + 1][0] <= a:
                i += 1
            out.append(max([values[i][1]] + [v for t, v in values[i + 1:] if t < b]))
        return out

    def _run_group(self, group: str, now: datetime) -> GroupResult:
        result = GroupResult(group)
        evs, voltage = self.translation.get_evs(group)
        evs = _unique(group, evs)
        # One voltage for planning and for the amp limits sent, or a profile in A could
        # allow more power than was planned.
        site_voltage = voltage or self.settings.voltage
        result.evs = [ev if ev.voltage is not None else attrs.evolve(ev, voltage=site_voltage) for ev in evs]
        limits = self.translation.get_peak_power_demand(group, now, voltage)
        site = SiteConstraints(limits, self.translation.get_prices(group, now))
        problem = build_problem(result.evs, site, now, resolution_s=self.settings.resolution_s,
                                n_steps=self.settings.n_steps)
        result.site_limit_kw = float(problem.site_limit_kw[0]) if problem.n_steps else 0.0
        schedule = self._plan(problem, result.evs)
        result.schedule = schedule
        if schedule.note:
            logger.warning("group %s: %s", group, schedule.note)
        profiles = self._profiles(result.evs, schedule)
        result.profiles = {str(ev.ev_id): p for ev, p in profiles.items()}
        if not profiles:
            return result
        sent, result.outcomes = self._send(group, profiles, problem, now)
        result.profiles.update(sent)
        for ev_id, outcome in result.outcomes.items():
            if outcome is SendOutcome.APPLIED:
                self._unconfirmed.discard(ev_id)
            else:
                self._unconfirmed.add(ev_id)
                logger.warning("group %s: profile for EV %s was %s", group, ev_id, outcome.value)
        return result

    def _send(self, group: str, profiles: dict[EV, ChargingProfile], problem: Problem,
              now: datetime) -> tuple[dict[str, ChargingProfile], dict[str, SendOutcome]]:
        """Send the profiles in one call, ordered as the safe waves would go out if all were
        accepted (:func:`optivgi.transitions.send_order`): reductions first, an increase after
        the reductions making room for it, a new session's first profile after the others'
        reductions. What the chargers answered is recorded in :attr:`ledger`; returns what was
        sent and the outcomes.
        """
        if self.translation.counts_in_force:
            # The translation sends in safe waves itself, knowing more (holds, fallbacks, connectors
            # without a session): hand it every profile at once.
            answer = self.translation.send_power_to_evs(profiles, self.settings.charging_rate_unit)
            return {str(ev.ev_id): p for ev, p in profiles.items()}, (
                {str(ev.ev_id): SendOutcome.APPLIED for ev in profiles} if answer is None
                else {str(k): SendOutcome(v) for k, v in answer.items()})
        by_label: dict[str, tuple[EV, ChargingProfile]] = {}
        targets: list[Request] = []
        for ev, profile in profiles.items():
            key, volts = _key(ev), float(ev.voltage or self.settings.voltage)
            # The connector's maximum is the highest an EV on it reported: a car saying it now
            # takes less is not a limit its charger enforces.
            known = self.ledger.max_kw(key) if key in self.ledger.connectors else 0.0
            self.ledger.add_connector(key, max_kw=max(known, ev.max_power_kw))
            tx = str(ev.transaction_id)
            if self._tx.get(key) != tx:
                # A new session: until its first profile is accepted it may be held at 0 by the
                # CSMS or draw up to its max; the ledger counts both.
                self.ledger.session_started(key, tx, at=now)
                self.ledger.mark_unknown(key, "new session, no profile accepted yet", at=now)
                self._tx[key] = tx
            by_label[str(ev.ev_id)] = (ev, profile)
            record = ProfileRecord.from_profile(key, profile, voltage=volts, phases=ev.phases)
            targets.append(Request.install(record, label=str(ev.ev_id)))
        limits = problem.site_limit_kw
        res = problem.resolution_s
        site = Circuit(group, float(limits[0]) if len(limits) else 0.0, frozenset(_key(ev) for ev in profiles),
                       tuple((now + timedelta(seconds=j * res), float(limits[j])) for j in range(1, len(limits))
                             if limits[j] != limits[j - 1]))
        # Ordering looks as far as the next cycles, which send everything again.
        end = now + timedelta(seconds=min(res * max(problem.n_steps, 1), 2 * self.settings.interval_s))
        order = send_order(self.ledger, targets, [site], now=now, until=end)
        batch = {by_label[r.label][0]: by_label[r.label][1] for r in order}
        rids = {r.label: self.ledger.sent(r, at=now) for r in order}
        answer = self.translation.send_power_to_evs(batch, self.settings.charging_rate_unit)
        got = {str(ev.ev_id): SendOutcome.APPLIED for ev in batch} if answer is None else {
            str(k): SendOutcome(v) for k, v in answer.items()}
        outcomes: dict[str, SendOutcome] = {}
        for label, rid in rids.items():
            outcomes[label] = got.get(label, SendOutcome.UNANSWERED)
            self.ledger.record(rid, _OUTCOMES[outcomes[label]], at=now)
        return {str(ev.ev_id): p for ev, p in batch.items()}, outcomes

    def run_cycle(self, reason: str = "manual") -> CycleReport:
        """Run one cycle for every group now; never raises for a group's failure."""
        t0 = time.perf_counter()
        now = _planning_start(self.clock.now())
        report = CycleReport(reason, now)
        for group in self.settings.station_groups:
            try:
                report.groups[group] = self._run_group(group, now)
            except Exception as exc:  # one group's failure must not stop the others or the loop
                logger.exception("cycle (%s) failed for group %s at %s", reason, group, now.isoformat())
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
