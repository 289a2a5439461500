"""The verifier's records: profiles as CitrineOS stored them, cycles, runs and the report.

Accepted ``TxProfile`` calls are grouped into *cycles* by their ``startSchedule``; cycles are split into
runs where two follow each other more than :data:`RUN_GAP` apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from optivgi.models.ev import ChargingRateUnit

#: Check 1 passes with at least this many accepted profiles.
MIN_PROFILES = 3
#: Check 2 passes with at least this many EVs holding a positive allocation in one cycle.
MIN_CONCURRENT = 3
#: The charger's regulation step [A]; one step per EV is the tolerance of check 3 and 4.
AMP_STEP_A = 0.1
#: Cycles further apart than this belong to different runs; only the latest run is judged.
RUN_GAP = timedelta(minutes=30)

_TX_PROFILE = "TxProfile"


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRecord:
    """One SetChargingProfile as CitrineOS recorded it.

    Attributes:
        station_id: the OCPP station id.
        connector_id: OCPP connector number (``connectorId`` of the request), if known.
        transaction_id: OCPP transaction id of the profile, as a string, if any.
        profile_id: ``chargingProfileId``.
        purpose: ``chargingProfilePurpose`` (``TxProfile``, ``TxDefaultProfile``, ...).
        unit: ``chargingRateUnit`` (``W`` or ``A``).
        start_schedule: ``startSchedule`` (UTC), or None when the profile has none.
        periods: ``(startPeriod [s], limit [unit], numberPhases)`` in order.
        sent_at: when CitrineOS sent it (or, for a stored row, last updated it), UTC.
        status: the charger's answer: ``Accepted``, ``Rejected``, ``CALLERROR`` or None (none stored).
        answered_at: when CitrineOS logged that answer, UTC (None: no answer stored).
    """

    station_id: str
    connector_id: int | None
    transaction_id: str | None
    profile_id: int | None
    purpose: str | None
    unit: str
    start_schedule: datetime | None
    periods: tuple[tuple[int, float, int], ...]
    sent_at: datetime
    status: str | None = "Accepted"
    answered_at: datetime | None = None

    @property
    def accepted(self) -> bool:
        """True when the charger answered Accepted."""
        return self.status == "Accepted"

    @property
    def ev_key(self) -> str:
        """The EV it addresses: ``station:transaction`` (as opti-vgi names it), else ``station#connector``."""
        if self.transaction_id is not None:
            return f"{self.station_id}:{self.transaction_id}"
        return f"{self.station_id}#{self.connector_id if self.connector_id is not None else '?'}"

    @property
    def cycle_time(self) -> datetime:
        """The instant the profile's schedule starts (its send time when it has no startSchedule)."""
        return self.start_schedule if self.start_schedule is not None else self.sent_at

    def limit_kw_at(self, offset_s: float, voltage: float) -> float:
        """The limit [kW] in force ``offset_s`` seconds after the schedule start (0 without periods).

        Before the first period, the first period applies (a schedule is sent as it starts).
        """
        if not self.periods:
            return 0.0
        chosen = self.periods[0]
        for period in self.periods:
            if period[0] <= offset_s:
                chosen = period
            else:
                break
        _, limit, phases = chosen
        return _unit(self.unit).limit_to_kw(limit, voltage, phases)

    def first_limit_kw(self, voltage: float) -> float:
        """The limit [kW] at the start of the schedule."""
        return self.limit_kw_at(0.0, voltage)

    def phases(self) -> int:
        """Phases of the first period (1 when unknown)."""
        return self.periods[0][2] if self.periods else 1


@dataclass(frozen=True)
class Cycle:
    """The accepted TxProfiles of one scheduling cycle of one group.

    Attributes:
        start: their common startSchedule (UTC).
        sent_at: when the first of them was sent (UTC): the cycle's allocations hold from then.
        profiles: the accepted profile of each EV in the cycle, by :attr:`ProfileRecord.ev_key`.
    """

    start: datetime
    sent_at: datetime
    profiles: Mapping[str, ProfileRecord]

    def allocations_kw(self, voltage: float) -> dict[str, float]:
        """Each EV's limit [kW] at the cycle start."""
        return {key: p.first_limit_kw(voltage) for key, p in self.profiles.items()}

    def peak(self, voltage: float) -> tuple[float, datetime]:
        """The largest sum of the EVs' limits [kW] over every period start of the cycle, and when."""
        offsets = sorted({start for p in self.profiles.values() for start, _, _ in p.periods} | {0})
        best = (-1.0, self.start)
        for offset in offsets:
            total = sum(p.limit_kw_at(offset, voltage) for p in self.profiles.values())
            if total > best[0] + 1e-9:
                best = (total, self.start + timedelta(seconds=offset))
        return max(best[0], 0.0), best[1]


@dataclass(frozen=True)
class VerifyData:
    """Everything the checks read.

    Attributes:
        history: every SetChargingProfile found (accepted or not), oldest first.
        stored_rows: number of rows in ChargingProfiles (active) for the stations.
        from_log: True when ``history`` comes from ``OCPPMessages``; False when only the stored
            ChargingProfiles rows could be read (one per connector, the last of each).
        ignored_runs: earlier runs left out (see :data:`RUN_GAP`).
    """

    history: tuple[ProfileRecord, ...]
    stored_rows: int
    from_log: bool = True
    ignored_runs: int = 0

    @property
    def accepted(self) -> list[ProfileRecord]:
        """The accepted profiles, oldest first."""
        return [p for p in self.history if p.accepted]

    def cycles(self) -> list[Cycle]:
        """The cycles of the accepted TxProfiles, oldest first."""
        return group_cycles(self.history)


@dataclass(frozen=True)
class CheckResult:
    """One check: its title, whether it passed and what was found."""

    number: int
    title: str
    passed: bool
    detail: str

    def line(self) -> str:
        """``[PASS] Check 1: title -- detail``."""
        return f"[{'PASS' if self.passed else 'FAIL'}] Check {self.number}: {self.title} -- {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    """The four checks and notes worth printing."""

    checks: tuple[CheckResult, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def passed_count(self) -> int:
        """How many checks passed."""
        return sum(1 for c in self.checks if c.passed)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return self.passed_count == len(self.checks)

    def lines(self) -> list[str]:
        """The report as printed: one line per check, the notes, then the result line."""
        out = [c.line() for c in self.checks]
        out.extend(self.notes)
        verdict = "PASS" if self.passed else "FAIL"
        out.append(f"Result: {self.passed_count}/{len(self.checks)} checks passed -- {verdict}")
        return out


def _unit(value: str) -> ChargingRateUnit:
    try:
        return ChargingRateUnit(value)
    except ValueError:
        raise ValueError(f"'chargingRateUnit' must be W or A, got {value!r}") from None



def _bursts(items: Sequence[ProfileRecord]) -> list[list[ProfileRecord]]:
    """Split profiles (oldest first) into bursts: a burst ends when every call in it was answered.

    The loop sends a cycle's profiles and waits for their answers before the next cycle, so a
    request sent after all earlier ones were answered may start a new cycle; one sent while
    another was still in flight belongs to the same cycle.
    """
    bursts: list[list[ProfileRecord]] = []
    settled: datetime | None = None
    for p in items:
        if not bursts or (settled is not None and p.sent_at >= settled):
            bursts.append([])
            settled = None
        bursts[-1].append(p)
        done = p.answered_at or p.sent_at
        settled = done if settled is None else max(settled, done)
    return bursts


def group_cycles(history: Iterable[ProfileRecord]) -> list[Cycle]:
    """Group the accepted TxProfiles into cycles, oldest first.

    Profiles sharing a startSchedule belong to one cycle, except that a second profile for an EV
    starts a new cycle: startSchedule has whole seconds, and two cycles (a periodic one and one
    for an arrival, say) may fall in the same second. The new cycle begins with the burst of calls
    (see :func:`_bursts`) that repeats an EV, so an EV that only the second cycle knows (the one
    that arrived) is counted in it.
    """
    by_start: dict[datetime, list[ProfileRecord]] = {}
    for p in history:
        if p.accepted and (p.purpose is None or p.purpose == _TX_PROFILE):
            by_start.setdefault(p.cycle_time, []).append(p)
    cycles: list[Cycle] = []

    def close(start: datetime, profiles: dict[str, ProfileRecord]) -> None:
        if profiles:
            cycles.append(Cycle(start, min(q.sent_at for q in profiles.values()), profiles))

    for start, items in by_start.items():
        current: dict[str, ProfileRecord] = {}
        for burst in _bursts(sorted(items, key=lambda p: p.sent_at)):
            if any(p.ev_key in current for p in burst):
                close(start, current)
                current = {}
            for p in burst:
                if p.ev_key in current:  # twice in one burst: nothing better to go by than the order
                    close(start, current)
                    current = {}
                current[p.ev_key] = p
        close(start, current)
    return sorted(cycles, key=lambda c: (c.sent_at, c.start))


def latest_run(history: Sequence[ProfileRecord], gap: timedelta = RUN_GAP) -> tuple[list[ProfileRecord], int]:
    """The profiles of the latest run and how many earlier runs were left out.

    Runs are separated where two consecutive profiles were sent more than ``gap`` apart.
    """
    ordered = sorted(history, key=lambda p: p.sent_at)
    start, runs = 0, 0
    for i in range(1, len(ordered)):
        if ordered[i].sent_at - ordered[i - 1].sent_at > gap:
            start, runs = i, runs + 1
    return ordered[start:], runs


# --- checks --------------------------------------------------------------------------------------
