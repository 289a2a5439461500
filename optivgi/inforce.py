"""Charging profiles as chargers stack them, and the calls that change them (limits in kW).

The data types of the in-force ledger (:mod:`optivgi.ledger`): a :class:`ProfileRecord` is one
profile a charger holds; a :class:`Request` one call (set a profile or clear some); a
:class:`Circuit` a set of connectors sharing a limit; :class:`Unknown` why a connector's state is
not known. Pure, no I/O.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import math
from collections.abc import Iterable
from datetime import datetime, timedelta

import attrs

from optivgi.models.ev import to_utc
from optivgi.models.profile import ChargingProfile, ChargingProfileKind, ChargingProfilePurpose

__all__ = [
    "Circuit",
    "ClearFilter",
    "ConnectorKey",
    "Outcome",
    "ProfileRecord",
    "Request",
    "Unknown",
]

#: ``(station_id, connector)``; connector 0 addresses the whole station.
ConnectorKey = tuple[str, int]

_TX = ChargingProfilePurpose.TX_PROFILE


class Outcome(enum.StrEnum):
    """What became of one request."""

    ACCEPTED = "accepted"
    """The charger answered Accepted: the request is in force."""
    REJECTED = "rejected"
    """The charger answered Rejected or a CALLERROR, or it never left: nothing changed."""
    UNANSWERED = "unanswered"
    """No answer in time: it may or may not be in force, until something replaces it."""


def _key(station_id: object, connector: int) -> ConnectorKey:
    if isinstance(connector, bool) or not isinstance(connector, int) or connector < 0:
        raise ValueError(f"connector must be an integer >= 0, got {connector!r}")
    return (str(station_id), connector)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else to_utc(value)


def _as_key(value: tuple[object, int]) -> ConnectorKey:
    return _key(value[0], value[1])


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _schedule(value: Iterable[tuple[datetime, float]]) -> tuple[tuple[datetime, float], ...]:
    return tuple((to_utc(t), float(v)) for t, v in value)


def _periods(value: Iterable[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    out = tuple((int(s), float(kw)) for s, kw in value)
    if not out or out[0][0] != 0:
        raise ValueError("periods must start with offset 0")
    for (a, _), (b, _) in itertools.pairwise(out):
        if b <= a:
            raise ValueError("period offsets must be strictly increasing")
    for _, kw in out:
        if not math.isfinite(kw) or kw < 0:
            raise ValueError(f"period limits must be finite kW >= 0, got {kw!r}")
    return out


@attrs.frozen
class ProfileRecord:
    """One charging profile as a charger stacks it, limits in kW.

    Attributes:
        key: the connector it was set on (connector 0: the whole station).
        profile_id: chargingProfileId.
        purpose: TxProfile, TxDefaultProfile or ChargePointMaxProfile.
        stack_level: higher wins within a purpose.
        start: absolute start of the schedule (for a Relative profile: when it started).
        periods: ``(offset_s, limit_kw)`` pairs, offsets strictly increasing from 0.
        duration_s: schedule length [s], None for open-ended.
        valid_from: start of validity, None for always.
        valid_to: end of validity (exclusive), None for never.
        transaction_id: the transaction a TxProfile belongs to.
        recurrence_s: 86400 (daily) or 604800 (weekly) for a Recurring profile, else None.
    """

    key: ConnectorKey = attrs.field(converter=_as_key)
    profile_id: int
    purpose: ChargingProfilePurpose = attrs.field(converter=ChargingProfilePurpose)
    stack_level: int
    start: datetime = attrs.field(converter=to_utc)
    periods: tuple[tuple[int, float], ...] = attrs.field(converter=_periods)
    duration_s: int | None = None
    valid_from: datetime | None = attrs.field(default=None, converter=_opt_utc)
    valid_to: datetime | None = attrs.field(default=None, converter=_opt_utc)
    transaction_id: str | None = attrs.field(default=None, converter=_opt_str)
    recurrence_s: int | None = None
    _offsets: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False, default=())

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_offsets", tuple(s for s, _ in self.periods))
        if self.stack_level < 0:
            raise ValueError(f"stack_level must be >= 0, got {self.stack_level}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.recurrence_s is not None and self.recurrence_s <= 0:
            raise ValueError(f"recurrence_s must be > 0, got {self.recurrence_s}")
        if self.purpose is _TX and self.key[1] == 0:
            raise ValueError("a TxProfile cannot be set on connector 0")

    @classmethod
    def from_profile(
        cls,
        key: ConnectorKey,
        profile: ChargingProfile,
        *,
        voltage: float,
        phases: int = 1,
        start: datetime | None = None,
        recurrence_s: int | None = None,
    ) -> ProfileRecord:
        """The record of ``profile`` set on ``key``, its limits converted to kW.

        Amps use ``voltage`` [V] and a period's own ``number_phases`` (else ``phases``).
        ``start`` overrides the schedule start (a Relative profile starts with its transaction);
        a Recurring profile needs ``recurrence_s``.
        """
        if profile.kind is ChargingProfileKind.RECURRING and recurrence_s is None:
            raise ValueError("a Recurring profile needs recurrence_s (86400 daily, 604800 weekly)")
        periods = [(p.start_period, profile.unit.limit_to_kw(p.limit, voltage, p.number_phases or phases))
                   for p in profile.periods]
        return cls(key=key, profile_id=profile.charging_profile_id, purpose=profile.purpose,
                   stack_level=profile.stack_level, start=start or profile.start_schedule, periods=periods,
                   duration_s=profile.duration, valid_from=profile.valid_from, valid_to=profile.valid_to,
                   transaction_id=None if profile.transaction_id is None else str(profile.transaction_id),
                   recurrence_s=recurrence_s)

    def valid(self, t: datetime) -> bool:
        """Whether the profile's validity window holds ``t``."""
        return (self.valid_from is None or self.valid_from <= t) and (self.valid_to is None or t < self.valid_to)

    def limit_kw_at(self, t: datetime) -> float | None:
        """The limit [kW] the profile sets at ``t``, or None when it is not in force then."""
        if not self.valid(t) or t < self.start:
            return None
        offset = (t - self.start).total_seconds()
        if self.recurrence_s is not None:
            offset %= self.recurrence_s
        if self.duration_s is not None and offset >= self.duration_s:
            return None
        return self.periods[bisect.bisect_right(self._offsets, offset) - 1][1]

    @property
    def highest_kw(self) -> float:
        """The highest limit of any period [kW]."""
        return max(kw for _, kw in self.periods)

    def boundaries(self, start: datetime, end: datetime) -> list[datetime]:
        """Every instant in ``[start, end]`` at which this profile's limit can change."""
        points = [p for p in (self.valid_from, self.valid_to) if p is not None]
        if self.recurrence_s is None:
            points.extend(self.start + timedelta(seconds=s) for s, _ in self.periods)
            if self.duration_s is not None:
                points.append(self.start + timedelta(seconds=self.duration_s))
        else:
            first = max(0, math.floor((start - self.start).total_seconds() / self.recurrence_s))
            cycle = first
            while (base := self.start + timedelta(seconds=cycle * self.recurrence_s)) <= end:
                points.extend(base + timedelta(seconds=s) for s, _ in self.periods)
                if self.duration_s is not None:
                    points.append(base + timedelta(seconds=self.duration_s))
                cycle += 1
        return [p for p in points if start <= p <= end]


@attrs.frozen
class ClearFilter:
    """A ClearChargingProfile: every field that is not None must match (all None: clear all)."""

    profile_id: int | None = None
    connector: int | None = None
    purpose: ChargingProfilePurpose | None = None
    stack_level: int | None = None

    def matches(self, record: ProfileRecord) -> bool:
        """Whether the charger would remove ``record``."""
        return ((self.profile_id is None or record.profile_id == self.profile_id)
                and (self.connector is None or record.key[1] == self.connector)
                and (self.purpose is None or record.purpose is self.purpose)
                and (self.stack_level is None or record.stack_level == self.stack_level))


@attrs.frozen
class Request:
    """One call to one station: install ``profile``, or remove what ``clear`` matches.

    Attributes:
        station_id: the station called.
        profile: the profile to set (its ``key`` names the connector).
        clear: what a ClearChargingProfile removes.
        label: the caller's name for it (an EV id, ``"hold"``, ``"fallback"``).
    """

    station_id: str = attrs.field(converter=str)
    profile: ProfileRecord | None = None
    clear: ClearFilter | None = None
    label: str = ""

    def __attrs_post_init__(self) -> None:
        if (self.profile is None) == (self.clear is None):
            raise ValueError("a request installs a profile or clears profiles, exactly one of them")
        if self.profile is not None and self.profile.key[0] != self.station_id:
            raise ValueError(f"profile for {self.profile.key[0]!r} sent to station {self.station_id!r}")

    @classmethod
    def install(cls, profile: ProfileRecord, label: str = "") -> Request:
        """A SetChargingProfile of ``profile``."""
        return cls(profile.key[0], profile=profile, label=label)

    def apply(self, records: list[ProfileRecord]) -> list[ProfileRecord]:
        """``records`` (one station's) as the charger holds them after accepting this request."""
        if self.clear is not None:
            clear = self.clear
            return [r for r in records if not clear.matches(r)]
        new = self.profile
        if new is None:  # pragma: no cover - excluded by __attrs_post_init__
            raise ValueError("request without a profile")
        kept = [r for r in records if r.profile_id != new.profile_id
                and not (r.key == new.key and r.purpose is new.purpose and r.stack_level == new.stack_level)]
        return [*kept, new]


@attrs.frozen
class Unknown:
    """Why a connector's state is not known, and the most it may draw meanwhile.

    Attributes:
        reason: for logs ("read-back failed", "session unreadable", ...).
        since: when it became unknown.
        at_most_kw: an explicit bound [kW] (e.g. its maximum after a restart while the previous
            process's profiles may still be valid), or None for the default chain.
        until: when ``at_most_kw`` stops applying (then the default chain), None for never.
    """

    reason: str
    since: datetime = attrs.field(converter=to_utc)
    at_most_kw: float | None = None
    until: datetime | None = attrs.field(default=None, converter=_opt_utc)


@attrs.frozen
class Circuit:
    """A set of connectors sharing one limit (the site, a feeder, a breaker).

    Attributes:
        name: for logs.
        limit_kw: the limit [kW] before the first change in ``schedule``.
        members: the connector keys it feeds (``(station, 0)``: every connector of the station),
            or None for every connector in the ledger (the site).
        schedule: ``(from, limit_kw)`` changes, in time order.
    """

    name: str
    limit_kw: float
    members: frozenset[ConnectorKey] | None = None
    schedule: tuple[tuple[datetime, float], ...] = attrs.field(default=(), converter=_schedule)

    def __attrs_post_init__(self) -> None:
        for value in (self.limit_kw, *(v for _, v in self.schedule)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"circuit {self.name!r}: limits must be finite kW >= 0, got {value!r}")

    def covers(self, key: ConnectorKey) -> bool:
        """Whether ``key`` is fed by this circuit."""
        return self.members is None or key in self.members or (key[0], 0) in self.members

    def limit_at(self, t: datetime) -> float:
        """The limit [kW] at ``t``."""
        current = self.limit_kw
        for start, value in self.schedule:
            if start > t:
                break
            current = value
        return current
