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

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

import attrs

from optivgi.inforce import (
    Circuit,
    ClearFilter,
    ConnectorKey,
    Outcome,
    ProfileRecord,
    Request,
    Unknown,
    _key,
)
from optivgi.models.ev import to_utc
from optivgi.models.profile import ChargingProfilePurpose

__all__ = [
    "MAX_UNRESOLVED",
    "Circuit",
    "ClearFilter",
    "ConnectorKey",
    "Ledger",
    "LimitExceeded",
    "Outcome",
    "ProfileRecord",
    "Request",
    "Unknown",
    "check_within",
    "ledger_total",
    "totals_over",
]

_TX = ChargingProfilePurpose.TX_PROFILE
_TX_DEFAULT = ChargingProfilePurpose.TX_DEFAULT_PROFILE
_CP_MAX = ChargingProfilePurpose.CHARGE_POINT_MAX_PROFILE
#: Beyond this many unresolved requests on one station, its connectors count at their maximum.
MAX_UNRESOLVED = 6


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


class _Keys(list[ConnectorKey]):
    """A sorted list of connector keys whose membership test is a set look-up."""

    def __init__(self, keys: Iterable[ConnectorKey]) -> None:
        unique = frozenset(keys)
        super().__init__(sorted(unique))
        self._set = unique

    def __contains__(self, key: object) -> bool:
        return key in self._set


class Ledger:
    """What every connector's charger applies now and until when, from what it accepted.

    Register connectors with :meth:`add_connector` (a connector of an unknown station may be
    registered as unknown). Record each call with :meth:`sent` before it goes out and its fate
    with :meth:`accepted`, :meth:`rejected` or :meth:`unanswered`; sessions with
    :meth:`session_started` / :meth:`session_ended`; lost knowledge with :meth:`mark_unknown`.
    """

    def __init__(self) -> None:
        self._connectors: dict[ConnectorKey, _Connector] = {}
        # Sorted keys with set membership, and keys per station: rebuilt when a connector is added.
        self._keys: _Keys | None = None
        self._by_station: dict[str, list[ConnectorKey]] = {}
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
        if not math.isfinite(max_kw) or max_kw < 0:
            raise ValueError(f"{key}: max_kw must be a finite number >= 0, got {max_kw!r}")
        if fallback_kw is not None and (not math.isfinite(fallback_kw) or fallback_kw < 0):
            raise ValueError(f"{key}: fallback_kw must be a finite number >= 0, got {fallback_kw!r}")
        state = self._connectors.get(key)
        if state is None:
            state = self._connectors[key] = _Connector(max_kw, fallback_kw)
            self._keys = None
            self._by_station.setdefault(key[0], []).append(key)
            self._by_station[key[0]].sort()
            state.unknown = unknown or self._station_unknown.get(key[0])
        else:
            state.max_kw, state.fallback_kw = max_kw, fallback_kw
            if unknown is not None:
                state.unknown = unknown
        self._records.setdefault(key[0], [])

    @property
    def connectors(self) -> list[ConnectorKey]:
        """Every registered connector key, sorted (``key in ledger.connectors`` is a set look-up)."""
        if self._keys is None:
            self._keys = _Keys(self._connectors)
        return self._keys

    def connectors_of(self, station_id: str) -> list[ConnectorKey]:
        """The registered connector keys of one station."""
        return list(self._by_station.get(station_id, ()))

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

    def restart(self, *, at: datetime, previous_validity_s: float | None, reason: str = "restart",
                charging: Iterable[ConnectorKey] | None = None) -> None:
        """Mark every connector unknown, as after a restart with nothing read back.

        Until ``at + previous_validity_s`` a connector with a session (``charging``; default:
        every connector) may still run a TxProfile from before and counts at its maximum;
        afterwards, and a connector without a session at once (a TxProfile only applies to its
        own transaction), at its fallback share when set, else its maximum.
        ``previous_validity_s`` None: at its maximum until known.
        """
        until = None if previous_validity_s is None else to_utc(at) + timedelta(seconds=previous_validity_s)
        busy = None if charging is None else {_key(*k) for k in charging}
        for station in self.stations():
            self.mark_station_unknown(station, reason, at=at, at_most_kw=math.inf, until=until)
            if busy is None:
                continue
            for key in self.connectors_of(station):
                if key not in busy:
                    self._connectors[key].unknown = Unknown(reason, at)

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
    def _stack(self, key: ConnectorKey, records: Sequence[ProfileRecord], t: datetime,
               none_kw: float | None = None) -> float:
        """The limit the stacking rules give ``key`` at ``t`` from ``records``; ``none_kw``
        (default: the maximum) when neither a TxProfile nor a TxDefaultProfile is in force."""
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
        value = tx[1] if tx is not None else default[2] if default is not None else (
            state.max_kw if none_kw is None else none_kw)
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

    def _variants(self, station: str, extra: Sequence[Request],
                  base: Sequence[ProfileRecord] | None = None) -> list[list[ProfileRecord]]:
        """The station's profile sets under every combination of outcomes of its unresolved
        requests (and ``extra``, hypothetical ones) on top of ``base`` (default: what it
        accepted), or [] when there are too many to enumerate."""
        base = self._records.get(station, []) if base is None else base
        todo = [p.request for p in self._unresolved.get(station, [])] + [r for r in extra if r.station_id == station]
        if len(todo) > MAX_UNRESOLVED:
            return []
        if not todo:
            return [list(base)]
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
        # Its last accepted TxProfile may still be in force, and after it lapses the fallback
        # share (or, without a fallback, the maximum): the higher of the two, never 0.
        underneath = state.max_kw if state.fallback_kw is None else state.fallback_kw
        bound = max(underneath, state.last_accepted_kw or 0.0)
        return min(bound, state.max_kw) if bound > 0 else state.max_kw

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
        self._state(key)
        return self._worst(key, t, extra, {})

    def _worst(self, key: ConnectorKey, t: datetime, extra: Sequence[Request],
               cache: dict[bool, list[list[ProfileRecord]]]) -> float:
        state = self._connectors[key]
        bound = self._unknown_bound(key, t)
        unknown = bound is not None
        if unknown not in cache:
            # Unknown: what was recorded is not trusted; only requests sent since count, on top of the bound.
            cache[unknown] = self._variants(key[0], extra, base=[] if unknown else None)
        variants = cache[unknown]
        if not variants:
            return state.max_kw
        if bound is None:
            return max(self._stack(key, v, t) for v in variants)
        return max(bound, *(self._stack(key, v, t, bound) for v in variants))

    def station_worst_case_at(self, station_id: str, t: datetime, keys: Iterable[ConnectorKey] | None = None,
                              extra: Sequence[Request] = ()) -> float:
        """The most [kW] the station's connectors (``keys`` among them, default all) could draw
        together at ``t``, capped by the highest ChargePointMaxProfile any outcome leaves."""
        station_id, t = str(station_id), to_utc(t)
        chosen = self.connectors_of(station_id) if keys is None else [k for k in keys if k[0] == station_id]
        cache: dict[bool, list[list[ProfileRecord]]] = {}
        total = sum(self._worst(k, t, extra, cache) for k in chosen)
        if any(self._unknown_bound(k, t) is not None for k in self.connectors_of(station_id)):
            return total  # an unknown station may hold any cap
        variants = cache[False] if False in cache else self._variants(station_id, extra)
        if not variants:
            return total
        return min(total, max(self._station_cap(station_id, v, t) for v in variants))

    def circuit_worst_case_at(self, circuit: Circuit, t: datetime, *, exclude: Iterable[ConnectorKey] = (),
                              extra: Sequence[Request] = ()) -> float:
        """The most [kW] the circuit's connectors (but ``exclude``) could draw together at ``t``."""
        skip = {_key(*k) for k in exclude}
        keys = [k for k in self._connectors if circuit.covers(k) and k not in skip]
        t = to_utc(t)
        return sum(self.station_worst_case_at(s, t, keys, extra) for s in sorted({k[0] for k in keys}))

    def site_worst_case_at(self, t: datetime) -> float:
        """The most [kW] all registered connectors could draw together at ``t``."""
        return self.circuit_worst_case_at(Circuit("site", 0.0), t)

    def boundaries(self, start: datetime, end: datetime, extra: Sequence[Request] = (),
                   stations: Iterable[str] | None = None) -> list[datetime]:
        """``start`` and every instant in ``[start, end]`` at which a recorded, unresolved or
        ``extra`` profile (or an unknown bound) of ``stations`` (default all) can change: every
        limit and worst case is constant between two of them."""
        start, end = to_utc(start), to_utc(end)
        chosen = None if stations is None else {str(s) for s in stations}
        points = {start}
        records = [r for st, rs in self._records.items() if chosen is None or st in chosen for r in rs]
        records += [p.request.profile for st, ps in self._unresolved.items() if chosen is None or st in chosen
                    for p in ps if p.request.profile]
        records += [r.profile for r in extra if r.profile is not None and (chosen is None or r.station_id in chosen)]
        for r in records:
            points.update(r.boundaries(start, end))
        for key, state in self._connectors.items():
            u = state.unknown
            if u is not None and u.until is not None and start <= u.until <= end \
                    and (chosen is None or key[0] in chosen):
                points.add(u.until)
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


class LimitExceeded(ValueError):
    """Sending some requests could let a circuit draw more than its limit."""


def check_within(ledger: Ledger, circuits: Sequence[Circuit], start: datetime, end: datetime, *,
                 extra: Sequence[Request]) -> None:
    """Refuse ``extra`` (requests about to be sent) when, counted as sent, some circuit's worst
    case exceeds its limit at an instant of ``[start, end]`` where it did not already.

    Raises:
        LimitExceeded: naming the circuit, the instant and both figures.
    """
    before = {(t, name): total for t, name, total, _ in totals_over(ledger, circuits, start, end, extra=())}
    for t, name, total, limit in totals_over(ledger, circuits, start, end, extra=extra):
        if total > limit + 1e-9 and total > before.get((t, name), ledger_total(ledger, circuits, name, t)) + 1e-9:
            raise LimitExceeded(f"circuit {name!r}: {total:.3f} kW could be drawn at {t.isoformat()}, "
                                f"above its limit of {limit:.3f} kW")


def ledger_total(ledger: Ledger, circuits: Sequence[Circuit], name: str, t: datetime) -> float:
    """The worst-case total [kW] of the circuit called ``name`` at ``t``."""
    circuit = next(c for c in circuits if c.name == name)
    return ledger.circuit_worst_case_at(circuit, t)
