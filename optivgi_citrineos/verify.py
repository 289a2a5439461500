"""``optivgi citrineos verify``: prove from CitrineOS's own records that a site was curtailed.

The verifier reads what CitrineOS stored (through Hasura GraphQL), never the optimizer's memory:

- ``OCPPMessages``: every SetChargingProfile CitrineOS sent and each charger's answer. This is the
  history: ``ChargingProfiles`` keeps only the last accepted profile per (station, profile id);
- ``ChargingProfiles`` + ``ChargingSchedules``: the profiles the chargers accepted, used alone
  when the message log cannot be read.

Accepted ``TxProfile`` calls are grouped into *cycles* by their ``startSchedule`` (every profile
of one scheduling cycle shares it). A cycle's allocation of an EV is the limit its profile sets at
the start of the schedule; an EV absent from a cycle holds nothing in it. Four checks follow:

1. profiles sent: at least 3 SetChargingProfile calls accepted by the chargers;
2. concurrent sessions: at least 3 EVs held a positive allocation in the same cycle;
3. latest cycle within the limit: at every period start of the latest cycle, the summed limits
   are at most the site limit plus one 0.1 A step per EV (the rounding a charger in amps allows);
4. curtailment occurred: some EV was given less than its max rate, by more than one amp step.

Only the latest run is judged: cycles are split into runs where two follow each other more than
:data:`RUN_GAP` apart (a CitrineOS database keeps the history of every earlier demo).
"""

from __future__ import annotations

import itertools
import logging
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from optivgi.errors import ConfigurationError, CSMSConnectionError, CSMSResponseError, OptiVGIError
from optivgi.models.ev import ChargingRateUnit, to_utc
from optivgi_citrineos import queries
from optivgi_citrineos.config import BUILTIN_SESSION_DEFAULTS, CitrineOSConfig

if TYPE_CHECKING:
    import httpx

    from optivgi.config import Settings
    from optivgi_citrineos.verify_run import RunJudgement

__all__ = [
    "AMP_STEP_A",
    "MIN_CONCURRENT",
    "MIN_PROFILES",
    "RUN_GAP",
    "CheckResult",
    "Cycle",
    "ProfileRecord",
    "VerifyData",
    "VerifyReport",
    "allocation_series",
    "check_concurrent_sessions",
    "check_curtailment",
    "check_latest_cycle_within_limit",
    "check_profiles_sent",
    "fetch_verify_data",
    "fetch_verify_data_sql",
    "group_cycles",
    "latest_run",
    "plot_allocations",
    "profiles_from_messages",
    "profiles_from_rows",
    "run_checks",
    "verify_command",
]

logger = logging.getLogger(__name__)

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


# --- parsing -------------------------------------------------------------------------------------


def _unit(value: str) -> ChargingRateUnit:
    try:
        return ChargingRateUnit(value)
    except ValueError:
        raise ValueError(f"'chargingRateUnit' must be W or A, got {value!r}") from None


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    return to_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _periods(raw: Any) -> tuple[tuple[int, float, int], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"'chargingSchedulePeriod' must be a list, got {type(raw).__name__}")
    out: list[tuple[int, float, int]] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise ValueError(f"a charging schedule period must be an object, got {item!r}")
        phases = item.get("numberPhases")
        out.append((int(item.get("startPeriod", 0)), float(item["limit"]), int(phases) if phases else 1))
    return tuple(sorted(out, key=lambda p: p[0]))


def _profile_from_request(
    station_id: str, payload: Mapping[str, Any], sent_at: datetime, answer: tuple[str | None, datetime | None]
) -> ProfileRecord:
    if "chargingProfile" in payload:
        # OCPP 2.0.1: {evseId, chargingProfile: {id, ..., chargingSchedule: [first, ...]}}.
        profile = payload["chargingProfile"]
        schedules = profile["chargingSchedule"]
        if not isinstance(schedules, list) or not schedules or not isinstance(schedules[0], Mapping):
            raise ValueError("'chargingSchedule' must be a non-empty list of schedules")
        schedule = schedules[0]
        connector = payload.get("evseId")
        profile_id = profile.get("id")
    else:
        profile = payload["csChargingProfiles"]
        schedule = profile.get("chargingSchedule") or {}
        connector = payload.get("connectorId")
        profile_id = profile.get("chargingProfileId")
    tx = profile.get("transactionId")
    return ProfileRecord(
        station_id=station_id,
        connector_id=int(connector) if connector is not None else None,
        transaction_id=None if tx is None else str(tx),
        profile_id=profile_id,
        purpose=profile.get("chargingProfilePurpose"),
        unit=str(schedule.get("chargingRateUnit", "W")),
        start_schedule=_time(schedule.get("startSchedule")),
        periods=_periods(schedule.get("chargingSchedulePeriod")),
        sent_at=sent_at,
        status=answer[0],
        answered_at=answer[1],
    )


def _answer_status(frame: Any) -> str | None:
    if not isinstance(frame, list) or not frame:
        return None
    if frame[0] == 4:
        return "CALLERROR"
    if frame[0] == 3 and len(frame) >= 3 and isinstance(frame[2], Mapping):
        status = frame[2].get("status")
        return str(status) if status is not None else None
    return None


def profiles_from_messages(rows: Iterable[Mapping[str, Any]]) -> list[ProfileRecord]:
    """Pair the SetChargingProfile requests of ``OCPPMessages`` rows with their answers.

    Requests are the rows with origin ``csms`` and state 1 (frame ``[2, id, action, payload]``);
    answers have origin ``cs``, state 2 and the same ``correlationId``. A request without a stored
    answer gets status None. Only OCPP 1.6 payloads (``csChargingProfiles``) are understood; other
    rows are logged and skipped. Returns the requests oldest first.
    """
    answers: dict[str, tuple[str | None, datetime | None]] = {}
    requests: list[tuple[str, Mapping[str, Any], datetime, str]] = []
    for row in rows:
        origin, state = row.get("origin"), str(row.get("state"))
        correlation = str(row.get("correlationId"))
        frame = row.get("message")
        if origin == "cs" and state == "2":
            answers[correlation] = (_answer_status(frame), _time(row.get("timestamp")))
        elif origin == "csms" and state == "1":
            if not (isinstance(frame, list) and len(frame) >= 4 and isinstance(frame[3], Mapping)):
                logger.warning("OCPPMessages row %s is not a SetChargingProfile call frame; skipped", row.get("id"))
                continue
            when = _time(row.get("timestamp"))
            if when is None:
                logger.warning("OCPPMessages row %s has no timestamp; skipped", row.get("id"))
                continue
            requests.append((str(row.get("stationId")), frame[3], when, correlation))
    out: list[ProfileRecord] = []
    for station_id, payload, when, correlation in requests:
        if "csChargingProfiles" not in payload and "chargingProfile" not in payload:
            logger.warning("SetChargingProfile %s to %s carries no profile; skipped", correlation, station_id)
            continue
        try:
            out.append(_profile_from_request(station_id, payload, when, answers.get(correlation, (None, None))))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("SetChargingProfile %s to %s cannot be read (%s); skipped", correlation, station_id, exc)
    out.sort(key=lambda p: p.sent_at)
    return out


def profiles_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[ProfileRecord]:
    """Profiles from ``ChargingProfiles`` rows (``ACTIVE_CHARGING_PROFILES_QUERY``), all accepted.

    A row carries the database id of its transaction, not the OCPP one, so the EV is named after
    the station and connector (``evseId`` is the OCPP 1.6 connectorId).
    """
    out: list[ProfileRecord] = []
    for row in rows:
        schedules = row.get("ChargingSchedules") or []
        if not schedules:
            continue
        schedule = schedules[0]
        periods = schedule.get("chargingSchedulePeriod")
        try:
            when = _time(row.get("updatedAt")) or datetime.now(UTC)
            out.append(
                ProfileRecord(
                    station_id=str(row.get("stationId")),
                    connector_id=row.get("evseId"),
                    transaction_id=None,
                    profile_id=row.get("id"),
                    purpose=row.get("chargingProfilePurpose"),
                    unit=str(schedule.get("chargingRateUnit", "W")),
                    start_schedule=_time(schedule.get("startSchedule")),
                    periods=_periods(periods),
                    sent_at=when,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("ChargingProfiles row %s cannot be read (%s); skipped", row.get("databaseId"), exc)
    out.sort(key=lambda p: p.sent_at)
    return out


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


def _step_kw(voltage: float, phases: int = 1) -> float:
    return AMP_STEP_A * voltage * phases / 1000.0


def _hhmmss(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%H:%M:%S UTC")


def check_profiles_sent(data: VerifyData, minimum: int = MIN_PROFILES) -> CheckResult:
    """Check 1: at least ``minimum`` SetChargingProfile calls were accepted by the chargers."""
    accepted = len(data.accepted)
    if data.from_log:
        detail = (
            f"{accepted} accepted by the chargers ({len(data.history)} sent, "
            f"{data.stored_rows} stored in ChargingProfiles; need >= {minimum})"
        )
    else:
        detail = f"{accepted} stored in ChargingProfiles (OCPPMessages unreadable; need >= {minimum})"
    return CheckResult(1, "Charging profiles sent", accepted >= minimum, detail)


def check_concurrent_sessions(data: VerifyData, voltage: float, minimum: int = MIN_CONCURRENT) -> CheckResult:
    """Check 2: at least ``minimum`` EVs held a positive allocation in the same cycle."""
    count, best = 0, None
    for cycle in data.cycles():
        positive = sum(1 for kw in cycle.allocations_kw(voltage).values() if kw > 0)
        if positive > count:
            count, best = positive, cycle
    when = f" in the cycle of {_hhmmss(best.start)}" if best is not None else ""
    detail = f"{count} EVs held a positive allocation at once{when} (need >= {minimum})"
    if not data.from_log:
        detail += "; from the stored last profile of each connector only"
    return CheckResult(2, "Concurrent sessions", count >= minimum, detail)


def check_latest_cycle_within_limit(data: VerifyData, site_limit_kw: float, voltage: float) -> CheckResult:
    """Check 3: the latest cycle's summed limits stay within the site limit plus one amp step per EV."""
    cycles = data.cycles()
    if not cycles:
        return CheckResult(3, "Latest cycle within site limit", False, "no accepted TxProfile to add up")
    latest = cycles[-1]
    peak, when = latest.peak(voltage)
    tolerance = sum(_step_kw(voltage, p.phases()) for p in latest.profiles.values())
    passed = peak <= site_limit_kw + tolerance + 1e-9
    n = len(latest.profiles)
    detail = (
        f"{n} EV{'s' if n != 1 else ''} in the cycle of {_hhmmss(latest.start)}: peak {peak:.2f} kW "
        f"{'<=' if passed else '>'} {site_limit_kw:.2f} kW + {tolerance:.2f} kW (one {AMP_STEP_A} A step per EV)"
    )
    if when != latest.start:
        detail += f" at {_hhmmss(when)}"
    return CheckResult(3, "Latest cycle within site limit", passed, detail)


def check_curtailment(
    data: VerifyData, max_kw: Callable[[ProfileRecord], float], voltage: float
) -> CheckResult:
    """Check 4: some accepted TxProfile gave its EV less than its max rate, by more than one amp step.

    ``max_kw`` gives the max rate [kW] of a profile's EV. A limit of 0 does not count: it is what
    an EV gets once it needs nothing more.
    """
    curtailed: list[tuple[float, float]] = []
    for cycle in data.cycles():
        for p in cycle.profiles.values():
            kw, ceiling = p.first_limit_kw(voltage), max_kw(p)
            if 0 < kw < ceiling - _step_kw(voltage, p.phases()) - 1e-9:
                curtailed.append((kw, ceiling))
    if not curtailed:
        return CheckResult(4, "Curtailment occurred", False, "no EV was ever given less than its max rate")
    low, ceiling = min(curtailed)
    detail = (
        f"{len(curtailed)} allocation{'s' if len(curtailed) != 1 else ''} below the EV's max rate "
        f"(lowest {low:.2f} kW of {ceiling:.2f} kW)"
    )
    return CheckResult(4, "Curtailment occurred", True, detail)


def run_checks(
    data: VerifyData,
    site_limit_kw: float,
    voltage: float,
    max_kw: Callable[[ProfileRecord], float] | None = None,
    run: RunJudgement | None = None,
) -> VerifyReport:
    """Run the four checks, and checks 5-7 of the whole run when ``run`` is given.

    ``max_kw`` defaults to the built-in 7.2 kW for every EV. Besides the checks, the report notes
    every earlier cycle above the limit (check 3 judges the latest one only) and the runs that
    were left out.
    """
    if max_kw is None:

        def max_kw(_: ProfileRecord) -> float:
            return float(BUILTIN_SESSION_DEFAULTS.max_power_kw or 0.0)

    checks: tuple[CheckResult, ...] = (
        check_profiles_sent(data),
        check_concurrent_sessions(data, voltage),
        check_latest_cycle_within_limit(data, site_limit_kw, voltage),
        check_curtailment(data, max_kw, voltage),
    )
    if run is not None:
        checks += tuple(CheckResult(5 + i, title, passed, detail)
                        for i, (passed, title, detail) in enumerate(run.lines()))
    notes: list[str] = []
    over = []
    for cycle in data.cycles()[:-1]:
        peak, when = cycle.peak(voltage)
        tolerance = sum(_step_kw(voltage, p.phases()) for p in cycle.profiles.values())
        if peak > site_limit_kw + tolerance + 1e-9:
            over.append((when, peak))
    if over:
        worst = max(over, key=lambda item: item[1])
        notes.append(
            f"[WARN] {len(over)} earlier cycle(s) above the limit; worst {worst[1]:.2f} kW at {_hhmmss(worst[0])}"
        )
    if data.ignored_runs:
        notes.append(f"[INFO] {data.ignored_runs} earlier run(s) in the database were not judged")
    return VerifyReport(checks, tuple(notes))


# --- reading -------------------------------------------------------------------------------------


def _graphql(client: httpx.Client, url: str, operation: str, variables: Mapping[str, Any]) -> Mapping[str, Any]:
    import httpx

    body = {"query": queries.QUERIES[operation], "variables": dict(variables), "operationName": operation}
    try:
        resp = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise CSMSConnectionError(f"Hasura at {url} cannot be reached: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise CSMSResponseError(f"Hasura at {url} answered HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        answer = resp.json()
    except ValueError as exc:
        raise CSMSResponseError(f"Hasura at {url} answered something that is not JSON: {resp.text[:200]}") from exc
    if not isinstance(answer, Mapping) or answer.get("errors") or not isinstance(answer.get("data"), Mapping):
        raise CSMSResponseError(f"Hasura refused {operation}: {str(answer)[:300]}")
    data: Mapping[str, Any] = answer["data"]
    return data


def fetch_verify_data(
    url: str,
    station_ids: Sequence[str],
    *,
    tenant_id: int = 1,
    admin_secret: str | None = None,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
) -> VerifyData:
    """Read the profile history of ``station_ids`` from Hasura at ``url`` (``/v1/graphql`` appended).

    Falls back to the stored ChargingProfiles rows alone when ``OCPPMessages`` cannot be queried
    (for instance when Hasura does not track it). Keeps the latest run only (:func:`latest_run`).

    Raises:
        CSMSConnectionError: Hasura cannot be reached.
        CSMSResponseError: Hasura answered with an error to the ChargingProfiles query.
    """
    import httpx

    endpoint = url if url.rstrip("/").endswith("/v1/graphql") else url.rstrip("/") + "/v1/graphql"
    headers = {"x-hasura-admin-secret": admin_secret} if admin_secret else {}
    own = client is None
    http = client if client is not None else httpx.Client(timeout=timeout_s, headers=headers)
    variables = {"stationIds": list(station_ids), "tenantId": tenant_id}
    try:
        stored = _graphql(http, endpoint, queries.ACTIVE_CHARGING_PROFILES_OPERATION, variables)
        rows = list(stored.get("ChargingProfiles") or [])
        try:
            log = _graphql(http, endpoint, queries.PROFILE_MESSAGES_OPERATION, variables)
        except CSMSResponseError as exc:
            logger.warning("OCPPMessages unreadable (%s); judging the stored ChargingProfiles rows only", exc)
            history, from_log = profiles_from_rows(rows), False
        else:
            history, from_log = profiles_from_messages(log.get("OCPPMessages") or []), True
    finally:
        if own:
            http.close()
    history, ignored = latest_run(history)
    return VerifyData(tuple(history), stored_rows=len(rows), from_log=from_log, ignored_runs=ignored)


def fetch_verify_data_sql(
    dsn: str,
    station_ids: Sequence[str],
    *,
    tenant_id: int = 1,
    site_limit_kw: float,
    max_kw: Callable[[str, int], float],
    now: datetime | None = None,
    max_starved_s: float | None = None,
    first_profile_s: float | None = None,
    voltage: float = 240.0,
    timeout_s: float = 10.0,
) -> tuple[VerifyData, RunJudgement]:
    """Read the profile history and the sessions of ``station_ids`` with plain SQL and judge the run.

    The run is the latest one of the profile history (:func:`latest_run`); its sessions are those
    that started at most :data:`RUN_GAP` before its first SetChargingProfile. ``max_kw(station,
    connector)`` is a car's own maximum (the EVSE number for OCPP 2.0.1).

    Raises:
        CSMSConnectionError: the database cannot be reached.
        CSMSResponseError: a query failed.
    """
    from optivgi_citrineos import verify_run, verify_sql

    now = now or datetime.now(UTC)
    rows = verify_sql.read_run_rows(dsn, station_ids, tenant_id=tenant_id, since=now - timedelta(days=1),
                                    timeout_s=timeout_s)
    history, ignored = latest_run(profiles_from_messages(rows.messages))
    data = VerifyData(tuple(history), stored_rows=len(rows.profiles), from_log=True, ignored_runs=ignored)
    sessions = verify_sql.sessions_from_rows(rows, max_kw)
    if history:
        begin = min(p.sent_at for p in history) - RUN_GAP
        sessions = [s for s in sessions if s.start >= begin]
    first: dict[str, datetime] = {}
    for p in data.accepted:
        if p.purpose == _TX_PROFILE and p.transaction_id is not None:
            first.setdefault(p.ev_key, p.sent_at)
    # The site "has room" for a car while it is at least 6 A (the least a car charges at) below its limit.
    options: dict[str, float] = {"min_kw": 6 * voltage / 1000}
    if max_starved_s is not None:
        options["max_starved_s"] = max_starved_s
    if first_profile_s is not None:
        options["first_profile_s"] = first_profile_s
    judgement = verify_run.judge_run(sessions, first, site_limit_kw, now=now, started_at=rows.started_at(),
                                     **options)
    return data, judgement


# --- plot ----------------------------------------------------------------------------------------


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


class _CannotVerify(click.ClickException):
    """Nothing could be judged (configuration or Hasura problem): exit status 2."""

    exit_code = 2


def _outlet_rate_lookup(settings: Settings, station_ids: Sequence[str]) -> Callable[[str, int], float]:
    """A car's max rate [kW] by (station, connector): ``CONN_XX_MAX_POWER_KW``, else 7.2."""
    configured = CitrineOSConfig._connectors(settings, tuple(station_ids))
    default = float(BUILTIN_SESSION_DEFAULTS.max_power_kw or 0.0)

    def lookup(station_id: str, connector: int) -> float:
        params = configured.get((station_id, connector))
        if params is not None and params.max_power_kw is not None:
            return float(params.max_power_kw)
        return default

    return lookup


def _max_rate_lookup(settings: Settings, station_ids: Sequence[str]) -> Callable[[ProfileRecord], float]:
    """Each EV's max rate [kW]: ``CONN_XX_MAX_POWER_KW`` for its station and connector, else 7.2."""
    outlet = _outlet_rate_lookup(settings, station_ids)

    def lookup(p: ProfileRecord) -> float:
        return outlet(p.station_id, p.connector_id if p.connector_id is not None else 1)

    return lookup


@click.command("verify")
@click.option("--url", help="Hasura base URL (HASURA_URL); /v1/graphql is appended unless present.")
@click.option("--dsn", help="PostgreSQL DSN of CitrineOS's database (CITRINEOS_DB_DSN), read instead of Hasura; "
              "also judges the whole run (delivered power, starved cars, time to the first profile).")
@click.option("--max-starved-s", type=click.FloatRange(min=0), default=None,
              help="Fail when a car sat at 0 kW with room on the site longer than this (default 60 s).")
@click.option("--first-profile-s", type=click.FloatRange(min=0), default=None,
              help="Fail when a car's first profile came later than this after its start (default 10 s).")
@click.option("--limit", "limit_kw", type=click.FloatRange(min=0), help="Site limit in kW (SITE_POWER_LIMIT_KW).")
@click.option("--voltage", type=click.FloatRange(min=0, min_open=True), help="Voltage for amp limits (VOLTAGE, 240).")
@click.option("--stations", help="Comma-separated station ids to judge (STATION_IDS).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Save a stacked chart of the allocations with the site limit (PNG).")
@click.pass_context
def verify_command(
    ctx: click.Context,
    url: str | None,
    dsn: str | None,
    max_starved_s: float | None,
    first_profile_s: float | None,
    limit_kw: float | None,
    voltage: float | None,
    stations: str | None,
    plot: Path | None,
) -> None:
    """Check from CitrineOS's records that the site was curtailed and kept under its limit."""
    from optivgi.config import Settings

    root = ctx.find_root()
    env_file = root.obj.get("env_file") if isinstance(root.obj, Mapping) else None
    try:
        settings = Settings.load({"site_power_limit_kw": limit_kw, "voltage": voltage}, dotenv=env_file)
        dsn = dsn or settings.get("CITRINEOS_DB_DSN")
        url = url or settings.get("HASURA_URL")
        if not url and not dsn:
            raise ConfigurationError("set --dsn or CITRINEOS_DB_DSN (PostgreSQL), or --url or HASURA_URL (Hasura)")
        station_ids = [s.strip() for s in (stations or settings.get("STATION_IDS") or "").split(",") if s.strip()]
        if not station_ids:
            raise ConfigurationError("set --stations or STATION_IDS to the stations to judge")
        if settings.site_power_limit_kw is None:
            raise ConfigurationError("set --limit or SITE_POWER_LIMIT_KW to the site limit in kW")
        tenant = int(settings.get("CITRINEOS_TENANT_ID", "1") or "1")
        max_kw = _max_rate_lookup(settings, station_ids)
        limit, volts = settings.site_power_limit_kw, settings.voltage
        run: RunJudgement | None = None
        if dsn:
            from optivgi.config import mask_url

            click.echo(f"CitrineOS curtailment check: PostgreSQL {mask_url(dsn)}, {len(station_ids)} station(s), "
                       f"tenant {tenant}")
            click.echo(f"site limit {limit:g} kW, voltage {volts:g} V")
            data, run = fetch_verify_data_sql(
                dsn, station_ids, tenant_id=tenant, site_limit_kw=limit, voltage=volts,
                max_kw=_outlet_rate_lookup(settings, station_ids), max_starved_s=max_starved_s,
                first_profile_s=first_profile_s,
            )
        else:
            assert url is not None
            click.echo(f"CitrineOS curtailment check: Hasura {url}, {len(station_ids)} station(s), tenant {tenant}")
            click.echo(f"site limit {limit:g} kW, voltage {volts:g} V")
            data = fetch_verify_data(url, station_ids, tenant_id=tenant,
                                     admin_secret=settings.get("HASURA_ADMIN_SECRET"))
    except (ConfigurationError, ValueError) as exc:
        raise _CannotVerify(str(exc)) from None
    except OptiVGIError as exc:
        hint = "--dsn postgresql://...@localhost:<PORT>/citrine" if dsn else "--url http://localhost:<HASURA_PORT>"
        raise _CannotVerify(f"{exc} (from the host, pass {hint})") from None
    cycles = data.cycles()
    if cycles:
        click.echo(
            f"{len(data.history)} SetChargingProfile call(s), {len(cycles)} cycle(s) "
            f"from {_hhmmss(cycles[0].start)} to {_hhmmss(cycles[-1].start)}"
        )
    click.echo("")
    report = run_checks(data, limit, volts, max_kw, run)
    if run is None:
        report = VerifyReport(report.checks, (*report.notes, "[INFO] the whole-run checks (delivered power, "
                                              "starved cars, first profile) need --dsn / CITRINEOS_DB_DSN"))
    for line in report.lines():
        click.echo(line)
    if plot is not None:
        try:
            written = plot_allocations(data, limit, volts, plot)
        except OptiVGIError as exc:
            click.echo(f"no plot: {exc}", err=True)
        else:
            click.echo(f"plot saved to {written}")
    ctx.exit(0 if report.passed else 1)


if __name__ == "__main__":  # ``python -m optivgi_citrineos.verify``: the command without the optivgi group
    verify_command()
