"""Judging a whole CitrineOS run from its meter values, statuses and profiles (pure, no I/O).

The four checks of :mod:`optivgi_citrineos.verify` look at the allocations; this module looks at
what the cars actually drew over the whole run:

5. delivered power: the energy the site delivered against what it could have given (at each
   moment the site limit, or the sum of the plugged-in cars' own maxima when that is less);
6. no starved car: the longest stretch any plugged-in car sat at 0 kW while the site had room for
   it (at least ``min_kw`` below the limit) and the car itself was not done (``SuspendedEV``);
7. first profile: the time from each StartTransaction (2.0.1: TransactionEvent Started) to the
   first TxProfile its charger accepted for it.

Every series is piecewise constant: a car draws what its latest meter value said until the next
one (0 before its first), and a connector's status holds until the next StatusNotification.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DEFAULT_FIRST_PROFILE_S",
    "DEFAULT_MAX_STARVED_S",
    "DEFAULT_MIN_DELIVERED_SHARE",
    "RunJudgement",
    "SessionTrace",
    "judge_run",
    "power_kw_of",
]

#: Check 6 fails when a car sat at 0 kW with room on the site for longer than this [s].
DEFAULT_MAX_STARVED_S = 60.0
#: Check 7 fails when a car's first accepted TxProfile came later than this after its start [s].
DEFAULT_FIRST_PROFILE_S = 10.0
#: Check 5 fails when the site delivered less than this share of what it could give.
DEFAULT_MIN_DELIVERED_SHARE = 0.7
#: A car drawing at most this much [kW] counts as "at 0 kW".
ZERO_KW = 0.05
#: Statuses in which a car at 0 kW is not starved: it is done, or no longer plugged in.
_NOT_WAITING = frozenset({"SuspendedEV", "Finishing", "Available"})


@dataclass(frozen=True)
class SessionTrace:
    """One charging session as CitrineOS recorded it.

    Attributes:
        key: ``station:transactionId`` (the name the allocations use).
        start: its StartTransaction time (UTC); ``end``: its stop, or None while active.
        max_kw: the car's own maximum (the configured max power of its connector).
        power: ``(time, kW)`` from its meter values, oldest first.
        statuses: ``(time, connector status)`` of its connector, oldest first.
    """

    key: str
    start: datetime
    end: datetime | None
    max_kw: float
    power: tuple[tuple[datetime, float], ...] = ()
    statuses: tuple[tuple[datetime, str], ...] = ()

    def active(self, t: datetime) -> bool:
        """Whether the session runs at ``t``."""
        return self.start <= t and (self.end is None or t < self.end)

    def kw_at(self, t: datetime) -> float:
        """What the car drew at ``t`` (its latest meter value, 0 before the first)."""
        return float(_step(self.power, t, 0.0))

    def status_at(self, t: datetime) -> str | None:
        """The connector's status at ``t`` (None before the first StatusNotification)."""
        found = _step(self.statuses, t, None)
        return None if found is None else str(found)


def _step(series: Sequence[tuple[datetime, Any]], t: datetime, before: Any) -> Any:
    i = bisect.bisect_right([s[0] for s in series], t)
    return series[i - 1][1] if i else before


@dataclass(frozen=True)
class RunJudgement:
    """Checks 5-7 of a run and what they found."""

    start: datetime
    end: datetime
    delivered_kwh: float
    possible_kwh: float
    starved_s: Mapping[str, float]
    first_profile_s: Mapping[str, float | None]
    max_starved_s: float
    first_profile_limit_s: float
    min_delivered_share: float
    worst_gap: tuple[datetime, float, float] | None = None
    timeline: tuple[tuple[datetime, float, float], ...] = field(default=())

    @property
    def delivered_share(self) -> float:
        """Delivered energy over what the site could have given (1 when nothing could be given)."""
        return self.delivered_kwh / self.possible_kwh if self.possible_kwh > 1e-9 else 1.0

    @property
    def starved(self) -> dict[str, float]:
        """The cars kept at 0 kW longer than allowed, with their longest stretch [s]."""
        return {k: s for k, s in sorted(self.starved_s.items()) if s > self.max_starved_s}

    @property
    def late_first_profile(self) -> dict[str, float | None]:
        """The cars whose first profile came too late (None: never)."""
        return {k: s for k, s in sorted(self.first_profile_s.items())
                if s is None or s > self.first_profile_limit_s}

    def lines(self) -> list[tuple[bool, str, str]]:
        """``(passed, title, detail)`` of checks 5, 6 and 7."""
        share = self.delivered_share
        detail5 = (f"{self.delivered_kwh:.2f} kWh delivered of {self.possible_kwh:.2f} kWh the site could give "
                   f"({share * 100:.0f} %, need >= {self.min_delivered_share * 100:.0f} %) from "
                   f"{_hhmm(self.start)} to {_hhmm(self.end)}")
        if self.worst_gap is not None:
            when, got, could = self.worst_gap
            detail5 += f"; lowest minute at {_hhmm(when)}: {got:.2f} of {could:.2f} kW"
        starved = self.starved
        longest = max(self.starved_s.values(), default=0.0)
        if starved:
            names = ", ".join(f"{k} {s / 60:.1f} min" for k, s in starved.items())
            detail6 = (f"{len(starved)} car{'s' if len(starved) != 1 else ''} sat at 0 kW while the site had room: "
                       f"{names} (allowed {self.max_starved_s / 60:.1f} min)")
        else:
            detail6 = (f"longest time a plugged-in car sat at 0 kW with room on the site: {longest:.0f} s "
                       f"(allowed {self.max_starved_s:.0f} s) over {len(self.starved_s)} session(s)")
        late = self.late_first_profile
        known = [s for s in self.first_profile_s.values() if s is not None]
        if late:
            names = ", ".join(f"{k} {'never' if s is None else f'{s:.1f} s'}" for k, s in late.items())
            detail7 = f"{len(late)} session(s) waited too long for a first profile: {names}"
        else:
            detail7 = (f"{len(known)} session(s), slowest first profile {max(known, default=0.0):.1f} s after the "
                       f"start (allowed {self.first_profile_limit_s:.0f} s)")
        return [
            (share >= self.min_delivered_share, "Site delivered what it could", detail5),
            (not starved, "No car kept at 0 kW while the site had room", detail6),
            (not late, "First profile after StartTransaction", detail7),
        ]


def _hhmm(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%H:%M:%S UTC")


def judge_run(
    sessions: Sequence[SessionTrace],
    first_profiles: Mapping[str, datetime],
    site_limit_kw: float,
    *,
    now: datetime,
    min_kw: float = 1.44,
    max_starved_s: float = DEFAULT_MAX_STARVED_S,
    first_profile_s: float = DEFAULT_FIRST_PROFILE_S,
    min_delivered_share: float = DEFAULT_MIN_DELIVERED_SHARE,
    started_at: Mapping[str, datetime] | None = None,
) -> RunJudgement:
    """Judge the run of ``sessions`` (see the module docstring).

    ``first_profiles`` maps a session key to when its first accepted TxProfile was sent; ``now``
    ends the sessions still active; ``min_kw`` is the least a car can charge at (6 A at 240 V):
    the site "has room" for a car while its delivered power is at least that far below the limit.
    ``started_at`` gives, on the CSMS's clock, when a session started (the charger's own
    timestamp, :attr:`SessionTrace.start`, is used where it is missing): check 7 compares it with
    the profile times, which are on the CSMS's clock too.
    """
    if not sessions:
        return RunJudgement(now, now, 0.0, 0.0, {}, {}, max_starved_s, first_profile_s, min_delivered_share)
    start = min(s.start for s in sessions)
    end = max(max((s.end or now) for s in sessions), start)
    instants = {start, end}
    for s in sessions:
        instants.add(s.start)
        if s.end is not None:
            instants.add(s.end)
        instants.update(t for t, _ in s.power)
        instants.update(t for t, _ in s.statuses)
    times = sorted(t for t in instants if start <= t <= end)
    index = {s.key: ([t for t, _ in s.power], [t for t, _ in s.statuses]) for s in sessions}

    def kw(s: SessionTrace, t: datetime) -> float:
        i = bisect.bisect_right(index[s.key][0], t)
        return s.power[i - 1][1] if i else 0.0

    def status(s: SessionTrace, t: datetime) -> str | None:
        i = bisect.bisect_right(index[s.key][1], t)
        return s.statuses[i - 1][1] if i else None

    delivered = possible = 0.0
    current: dict[str, float] = {}
    longest: dict[str, float] = {s.key: 0.0 for s in sessions}
    timeline: list[tuple[datetime, float, float]] = []
    for a, b in itertools.pairwise(times):
        width = (b - a).total_seconds()
        active = [s for s in sessions if s.active(a)]
        drawn = {s.key: kw(s, a) for s in active}
        total = sum(drawn.values())
        wanting = [s for s in active if status(s, a) not in _NOT_WAITING]
        done = sum(drawn[s.key] for s in active if s not in wanting)
        could = min(site_limit_kw, sum(s.max_kw for s in wanting) + done)
        timeline.append((a, total, could))
        delivered += min(total, could) * width / 3600
        possible += could * width / 3600
        room = site_limit_kw - total >= min_kw - 1e-9
        waiting = {s.key for s in wanting}
        for s in sessions:
            if s.key in waiting and drawn[s.key] <= ZERO_KW and room:
                current[s.key] = current.get(s.key, 0.0) + width
                longest[s.key] = max(longest[s.key], current[s.key])
            else:
                current[s.key] = 0.0
    first: dict[str, float | None] = {}
    for s in sessions:
        when = first_profiles.get(s.key)
        began = (started_at or {}).get(s.key, s.start)
        first[s.key] = None if when is None else max(0.0, (when - began).total_seconds())
    return RunJudgement(start, end, delivered, possible, longest, first, max_starved_s, first_profile_s,
                        min_delivered_share, _worst_minute(timeline, end), tuple(timeline))


def _worst_minute(
    timeline: Sequence[tuple[datetime, float, float]], end: datetime
) -> tuple[datetime, float, float] | None:
    """The minute (of those starting at a timeline point) with the largest shortfall, as averages."""
    worst: tuple[float, tuple[datetime, float, float]] | None = None
    points = [t for t, _, _ in timeline]
    for i, (t0, _, _) in enumerate(timeline):
        t1 = min(end, t0 + timedelta(minutes=1))
        span = (t1 - t0).total_seconds()
        if span < 30:
            continue
        got = could = 0.0
        for j in range(i, len(timeline)):
            a = timeline[j][0]
            if a >= t1:
                break
            b = points[j + 1] if j + 1 < len(points) else end
            w = (min(b, t1) - a).total_seconds()
            got += timeline[j][1] * w
            could += timeline[j][2] * w
        gap = (could - got) / span
        if worst is None or gap > worst[0] + 1e-9:
            worst = (gap, (t0, got / span, could / span))
    return None if worst is None else worst[1]


def power_kw_of(sampled_values: Any) -> float | None:
    """The whole-meter ``Power.Active.Import`` of stored sampled values [kW] (1.6 or 2.0.1 shape), or None."""
    if not isinstance(sampled_values, list):
        return None
    for sample in sampled_values:
        if not isinstance(sample, Mapping) or sample.get("measurand") != "Power.Active.Import" or sample.get("phase"):
            continue
        raw_unit = sample.get("unitOfMeasure")
        unit: Mapping[str, Any] = raw_unit if isinstance(raw_unit, Mapping) else {}
        name = unit.get("unit") or sample.get("unit") or "W"
        try:
            value: float = float(str(sample.get("value"))) * 10.0 ** int(unit.get("multiplier", 0) or 0)
        except (TypeError, ValueError):
            return None
        return value if name == "kW" else value / 1000.0
    return None
