"""The in-force ledger: what limit each connector's charger applies, and the most it could.

Pure, no I/O, no wall clock (every time is passed in). A :class:`Ledger` records what was sent to
the chargers and what became of it, and answers, per connector key ``(station_id, connector)``:

* :meth:`Ledger.limit_at`: the limit known to be in force at ``t``, by the OCPP stacking rules,
  built only from what chargers *accepted* (None when the state is not known);
* :meth:`Ledger.worst_case_at`: the most the connector could be allowed to draw at ``t`` for every
  combination of outcomes of the requests still unresolved (in flight or unanswered), and at least
  a safe bound when its state is unknown. Never 0 for an unknown connector; a confirmed hold at 0
  counts as 0.

Stacking rules (OCPP 1.6 section 3.13 and 2.0.1 K; "in force at ``t``" means ``validFrom <= t <
validTo`` and ``startSchedule <= t < startSchedule + duration``):

* a connector's limit is its TxProfile's if one is in force, else its TxDefaultProfile's (one set
  on the connector itself or on connector 0, which applies to every connector of the station),
  else its hardware maximum;
* within one purpose, the highest ``stackLevel`` in force wins (a connector's own profile wins a
  tie with a connector-0 one);
* a ChargePointMaxProfile (connector 0) caps every connector and the station's total;
* a new profile replaces the one with the same id on the station, and the one with the same
  purpose and stack level on the same connector;
* TxProfiles end with their transaction.

Limits are in kW (convert with :meth:`ProfileRecord.from_profile`). Circuits (:class:`Circuit`,
the site is one) sum connectors; :func:`totals_over` sums them at every instant a limit can change,
which is the one check used before sending and when verifying.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

import attrs

from optivgi.models.ev import to_utc
from optivgi.models.profile import ChargingProfile, ChargingProfileKind, ChargingProfilePurpose

__all__ = [
    "Circuit",
    "ClearFilter",
    "ConnectorKey",
    "Ledger",
    "Outcome",
    "ProfileRecord",
    "Request",
    "Unknown",
    "totals_over",
]

#: ``(station_id, connector)``; connector 0 addresses the whole station.
ConnectorKey = tuple[str, int]

_TX = ChargingProfilePurpose.TX_PROFILE
_TX_DEFAULT = ChargingProfilePurpose.TX_DEFAULT_PROFILE
_CP_MAX = ChargingProfilePurpose.CHARGE_POINT_MAX_PROFILE
#: Beyond this many unresolved requests on one station, its connectors count at their maximum.
MAX_UNRESOLVED = 6


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

    def __attrs_post_init__(self) -> None:
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
        current = self.periods[0][1]
        for start_s, kw in self.periods[1:]:
            if start_s > offset:
                break
            current = kw
        return current

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


@attrs.define
class _Pending:
    rid: int
    request: Request
    sent_at: datetime
    answered: bool = False  # False: in flight (holds the station's call slot)


@attrs.define
class _Connector:
    max_kw: float
    fallback_kw: float | None = None
    last_accepted_kw: float | None = None
    unknown: Unknown | None = None


class Ledger:
    """What every connector's charger applies now and until when, from what it accepted.

    Register connectors with :meth:`add_connector` (a connector of an unknown station may be
    registered as unknown). Record each call with :meth:`sent` before it goes out and its fate
    with :meth:`accepted`, :meth:`rejected` or :meth:`unanswered`; sessions with
    :meth:`session_started` / :meth:`session_ended`; lost knowledge with :meth:`mark_unknown`.
    """

    def __init__(self) -> None:
        self._connectors: dict[ConnectorKey, _Connector] = {}
        self._records: dict[str, list[ProfileRecord]] = {}
        self._unresolved: dict[str, list[_Pending]] = {}
        self._station_unknown: dict[str, Unknown] = {}
        self._next_id = 1

    # -- connectors ------------------------------------------------------------------------
    def add_connector(self, key: ConnectorKey, *, max_kw: float, fallback_kw: float | None = None,
                      unknown: Unknown | None = None) -> None:
        """Register (or update) a connector: its hardware maximum [kW] and fallback share [kW].

        A connector of a station marked unknown starts unknown too.
        """
        key = _key(*key)
        if key[1] == 0:
            raise ValueError("connector 0 is the station, not a connector")
        if not math.isfinite(max_kw) or max_kw <= 0:
            raise ValueError(f"{key}: max_kw must be a finite number > 0, got {max_kw!r}")
        if fallback_kw is not None and (not math.isfinite(fallback_kw) or fallback_kw < 0):
            raise ValueError(f"{key}: fallback_kw must be a finite number >= 0, got {fallback_kw!r}")
        state = self._connectors.get(key)
        if state is None:
            state = self._connectors[key] = _Connector(max_kw, fallback_kw)
            state.unknown = unknown or self._station_unknown.get(key[0])
        else:
            state.max_kw, state.fallback_kw = max_kw, fallback_kw
            if unknown is not None:
                state.unknown = unknown
        self._records.setdefault(key[0], [])

    @property
    def connectors(self) -> list[ConnectorKey]:
        """Every registered connector key, sorted."""
        return sorted(self._connectors)

    def connectors_of(self, station_id: str) -> list[ConnectorKey]:
        """The registered connector keys of one station."""
        return [k for k in self.connectors if k[0] == station_id]

    def stations(self) -> list[str]:
        """Every station with a registered connector."""
        return sorted({k[0] for k in self._connectors})

    def max_kw(self, key: ConnectorKey) -> float:
        """The connector's hardware maximum [kW]."""
        return self._state(key).max_kw

    def fallback_kw(self, key: ConnectorKey) -> float | None:
        """The connector's fallback share [kW], if set."""
        return self._state(key).fallback_kw

    def _state(self, key: ConnectorKey) -> _Connector:
        try:
            return self._connectors[_key(*key)]
        except KeyError:
            raise KeyError(f"connector {key} is not registered in the ledger") from None

    # -- knowledge -------------------------------------------------------------------------
    def mark_unknown(self, key: ConnectorKey, reason: str, *, at: datetime, at_most_kw: float | None = None,
                     until: datetime | None = None) -> None:
        """The connector's state is not known (read-back failed, session unreadable, ...)."""
        self._state(key).unknown = Unknown(reason, at, at_most_kw, until)

    def mark_station_unknown(self, station_id: str, reason: str, *, at: datetime,
                             at_most_kw: float | None = None, until: datetime | None = None) -> None:
        """Every connector of the station, also those registered later, is unknown."""
        station_id = str(station_id)
        self._station_unknown[station_id] = Unknown(reason, at, at_most_kw, until)
        for key in self.connectors_of(station_id):
            self._connectors[key].unknown = self._station_unknown[station_id]

    def mark_known(self, key: ConnectorKey) -> None:
        """The connector's profiles are all recorded (after a read-back that can be trusted)."""
        self._state(key).unknown = None

    def unknown(self, key: ConnectorKey) -> Unknown | None:
        """Why the connector's state is unknown, or None when it is known."""
        return self._state(key).unknown

    def restart(self, *, at: datetime, previous_validity_s: float | None, reason: str = "restart") -> None:
        """Forget nothing recorded, but mark every connector unknown as after a restart.

        Until ``at + previous_validity_s`` a connector may still run a TxProfile from before and
        counts at its maximum; afterwards at its fallback share (when set), else its maximum.
        ``previous_validity_s`` None: at its maximum until known.
        """
        until = None if previous_validity_s is None else to_utc(at) + timedelta(seconds=previous_validity_s)
        for station in self.stations():
            self.mark_station_unknown(station, reason, at=at, at_most_kw=math.inf, until=until)

    # -- requests --------------------------------------------------------------------------
    def sent(self, request: Request, *, at: datetime) -> int:
        """Record a request about to go out; returns its id for the outcome."""
        rid = self._next_id
        self._next_id += 1
        self._unresolved.setdefault(request.station_id, []).append(_Pending(rid, request, to_utc(at)))
        self._records.setdefault(request.station_id, [])
        return rid

    def _take(self, rid: int) -> _Pending:
        for items in self._unresolved.values():
            for item in items:
                if item.rid == rid:
                    items.remove(item)
                    return item
        raise KeyError(f"no unresolved request {rid}")

    def accepted(self, rid: int, *, at: datetime) -> None:
        """The charger accepted request ``rid``: it is in force."""
        item = self._take(rid)
        request, station = item.request, item.request.station_id
        self._records[station] = request.apply(self._records[station])
        # Anything unanswered that this one replaces is gone whatever became of it.
        left = []
        for other in self._unresolved.get(station, []):
            if other.answered and other.rid < rid and other.request.profile is not None:
                if other.request.profile not in request.apply([other.request.profile]):
                    continue
            left.append(other)
        self._unresolved[station] = left
        profile = request.profile
        if profile is not None and profile.key[1] != 0 and profile.key in self._connectors:
            state = self._connectors[profile.key]
            if profile.purpose is _TX:
                state.last_accepted_kw = profile.highest_kw
                state.unknown = None  # the TxProfile overrides whatever the charger held

    def rejected(self, rid: int, *, at: datetime) -> None:
        """The charger answered Rejected or a CALLERROR (or the call never left): nothing changed."""
        self._take(rid)

    def unanswered(self, rid: int, *, at: datetime) -> None:
        """No answer in time: the request may be in force; it no longer holds the call slot."""
        item = self._take(rid)
        item.answered = True
        self._unresolved.setdefault(item.request.station_id, []).append(item)

    def record(self, rid: int, outcome: Outcome, *, at: datetime) -> None:
        """Record ``outcome`` of request ``rid``."""
        {Outcome.ACCEPTED: self.accepted, Outcome.REJECTED: self.rejected,
         Outcome.UNANSWERED: self.unanswered}[Outcome(outcome)](rid, at=at)

    def busy(self, station_id: str) -> bool:
        """Whether a request to the station is in flight (its call slot is taken)."""
        return any(not p.answered for p in self._unresolved.get(str(station_id), []))

    def unresolved(self, station_id: str) -> list[Request]:
        """The station's requests in flight or unanswered, oldest first."""
        return [p.request for p in self._unresolved.get(str(station_id), [])]

    def settled(self, key: ConnectorKey) -> bool:
        """Known, with nothing unresolved on its station: ``limit_at`` is exact."""
        return self._state(key).unknown is None and not self._unresolved.get(key[0])

    def records(self, station_id: str) -> list[ProfileRecord]:
        """The profiles the station accepted and holds (as far as recorded)."""
        return list(self._records.get(str(station_id), []))

    # -- sessions --------------------------------------------------------------------------
    def session_started(self, key: ConnectorKey, transaction_id: str | int, *, at: datetime) -> None:
        """A transaction started on ``key``: TxProfiles of other transactions there are gone."""
        self._drop_tx(key, lambda tx: tx != str(transaction_id))

    def session_ended(self, key: ConnectorKey, transaction_id: str | int | None = None, *, at: datetime) -> None:
        """A transaction ended on ``key``: its TxProfiles are gone (all TxProfiles there if None)."""
        self._drop_tx(key, lambda tx: transaction_id is None or tx == str(transaction_id))
        state = self._connectors.get(_key(*key))
        if state is not None:
            state.last_accepted_kw = None

    def _drop_tx(self, key: ConnectorKey, gone: Callable[[str | None], bool]) -> None:
        key = _key(*key)
        self._records[key[0]] = [r for r in self._records.get(key[0], [])
                                 if not (r.purpose is _TX and r.key == key and gone(r.transaction_id))]

    # -- queries ---------------------------------------------------------------------------
    def _stack(self, key: ConnectorKey, records: Sequence[ProfileRecord], t: datetime) -> float:
        state = self._connectors[key]
        tx: tuple[int, float] | None = None
        default: tuple[int, int, float] | None = None
        cap: tuple[int, float] | None = None
        for r in records:
            if r.key != key and r.key != (key[0], 0):
                continue
            kw = r.limit_kw_at(t)
            if kw is None:
                continue
            if r.purpose is _TX and r.key == key and (tx is None or r.stack_level > tx[0]):
                tx = (r.stack_level, kw)
            elif r.purpose is _TX_DEFAULT:
                rank = (r.stack_level, int(r.key == key))
                if default is None or rank > default[:2]:
                    default = (*rank, kw)
            elif r.purpose is _CP_MAX and r.key[1] == 0 and (cap is None or r.stack_level > cap[0]):
                cap = (r.stack_level, kw)
        value = tx[1] if tx is not None else default[2] if default is not None else state.max_kw
        if cap is not None:
            value = min(value, cap[1])
        return min(value, state.max_kw)

    def _station_cap(self, station: str, records: Sequence[ProfileRecord], t: datetime) -> float:
        best: tuple[int, float] | None = None
        for r in records:
            if r.purpose is _CP_MAX and r.key[1] == 0 and (kw := r.limit_kw_at(t)) is not None:
                if best is None or r.stack_level > best[0]:
                    best = (r.stack_level, kw)
        return math.inf if best is None else best[1]

    def _variants(self, station: str, extra: Sequence[Request]) -> list[list[ProfileRecord]]:
        """The station's profile sets under every combination of outcomes of its unresolved
        requests (and ``extra``, hypothetical ones), or [] when there are too many to enumerate."""
        base = self._records.get(station, [])
        todo = [p.request for p in self._unresolved.get(station, [])] + [r for r in extra if r.station_id == station]
        if len(todo) > MAX_UNRESOLVED:
            return []
        out = []
        for mask in range(1 << len(todo)):
            records = list(base)
            for i, request in enumerate(todo):
                if mask >> i & 1:
                    records = request.apply(records)
            out.append(records)
        return out

    def _unknown_bound(self, key: ConnectorKey, t: datetime) -> float | None:
        state = self._connectors[key]
        u = state.unknown
        if u is None:
            return None
        if u.at_most_kw is not None and (u.until is None or t < u.until):
            return min(u.at_most_kw, state.max_kw)
        for value in (state.last_accepted_kw, state.fallback_kw):
            if value is not None and value > 0:
                return min(value, state.max_kw)
        return state.max_kw

    def limit_at(self, key: ConnectorKey, t: datetime) -> float | None:
        """The limit [kW] known in force on ``key`` at ``t`` from accepted profiles only, or None
        when the connector is unknown or an unanswered request may have changed it (requests
        still in flight are not counted: see :meth:`worst_case_at`)."""
        key, t = _key(*key), to_utc(t)
        state = self._state(key)
        if state.unknown is not None or any(p.answered for p in self._unresolved.get(key[0], [])):
            return None
        return self._stack(key, self._records.get(key[0], []), t)

    def worst_case_at(self, key: ConnectorKey, t: datetime, extra: Sequence[Request] = ()) -> float:
        """The most [kW] ``key`` could be allowed at ``t``, whatever the outcomes of the unresolved
        requests (and of the hypothetical ``extra`` ones); an unknown connector counts at least at
        its bound (:class:`Unknown`), never at 0."""
        key, t = _key(*key), to_utc(t)
        state = self._state(key)
        variants = self._variants(key[0], extra)
        worst = state.max_kw if not variants else max(self._stack(key, v, t) for v in variants)
        bound = self._unknown_bound(key, t)
        return worst if bound is None else max(worst, bound)

    def station_worst_case_at(self, station_id: str, t: datetime, keys: Iterable[ConnectorKey] | None = None,
                              extra: Sequence[Request] = ()) -> float:
        """The most [kW] the station's connectors (``keys`` among them, default all) could draw
        together at ``t``, capped by the highest ChargePointMaxProfile any outcome leaves."""
        station_id, t = str(station_id), to_utc(t)
        chosen = self.connectors_of(station_id) if keys is None else [k for k in keys if k[0] == station_id]
        total = sum(self.worst_case_at(k, t, extra) for k in chosen)
        if any(self._unknown_bound(k, t) is not None for k in self.connectors_of(station_id)):
            return total  # an unknown station may hold any cap
        variants = self._variants(station_id, extra)
        if not variants:
            return total
        return min(total, max(self._station_cap(station_id, v, t) for v in variants))

    def circuit_worst_case_at(self, circuit: Circuit, t: datetime, *, exclude: Iterable[ConnectorKey] = (),
                              extra: Sequence[Request] = ()) -> float:
        """The most [kW] the circuit's connectors (but ``exclude``) could draw together at ``t``."""
        skip = {_key(*k) for k in exclude}
        keys = [k for k in self._connectors if circuit.covers(k) and k not in skip]
        return sum(self.station_worst_case_at(s, t, keys, extra) for s in sorted({k[0] for k in keys}))

    def site_worst_case_at(self, t: datetime) -> float:
        """The most [kW] all registered connectors could draw together at ``t``."""
        return self.circuit_worst_case_at(Circuit("site", 0.0), t)

    def boundaries(self, start: datetime, end: datetime, extra: Sequence[Request] = ()) -> list[datetime]:
        """``start`` and every instant in ``[start, end]`` at which a recorded, unresolved or
        ``extra`` profile (or an unknown bound) can change: limits are constant between them."""
        start, end = to_utc(start), to_utc(end)
        points = {start}
        records = [r for rs in self._records.values() for r in rs]
        records += [p.request.profile for ps in self._unresolved.values() for p in ps if p.request.profile]
        records += [r.profile for r in extra if r.profile is not None]
        for r in records:
            points.update(r.boundaries(start, end))
        for state in self._connectors.values():
            if state.unknown is not None and state.unknown.until is not None and start <= state.unknown.until <= end:
                points.add(state.unknown.until)
        return sorted(points)

    def headroom(self, circuit: Circuit, planned: Iterable[ConnectorKey], start: datetime, end: datetime) -> float:
        """The least, over ``[start, end]``, of the circuit's limit minus the worst case of its
        connectors that are not ``planned``: what the planner may share among ``planned``."""
        planned = list(planned)
        points = self.boundaries(start, end) + [p for p, _ in circuit.schedule if start <= p <= end]
        return min(circuit.limit_at(t) - self.circuit_worst_case_at(circuit, t, exclude=planned) for t in points)


def totals_over(ledger: Ledger, circuits: Sequence[Circuit], start: datetime, end: datetime, *,
                extra: Sequence[Request] = ()) -> list[tuple[datetime, str, float, float]]:
    """The worst-case total and the limit of every circuit at every instant a limit can change in
    ``[start, end]`` (period starts, validity and schedule ends, circuit schedule changes), as
    ``(instant, circuit name, total_kw, limit_kw)`` rows in time order.

    Every limit is constant between two such instants, so a circuit is within its limit over the
    whole window exactly when it is at each row.
    """
    start, end = to_utc(start), to_utc(end)
    points = set(ledger.boundaries(start, end, extra))
    for c in circuits:
        points.update(p for p, _ in c.schedule if start <= p <= end)
    return [(t, c.name, ledger.circuit_worst_case_at(c, t, extra=extra), c.limit_at(t))
            for t in sorted(points) for c in circuits]
