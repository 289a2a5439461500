"""Safe transitions: which requests may go out now, whatever becomes of those in flight.

Pure, no I/O. :func:`next_wave` takes the :class:`~optivgi.ledger.Ledger` and the requests wanted
(TxProfiles, holds, fallbacks, clears) and returns the next wave to send; :func:`run_waves`
repeats it, recording outcomes, until nothing more can go out.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import attrs

from optivgi.ledger import Circuit, ConnectorKey, Ledger, Outcome, Request
from optivgi.models.ev import to_utc

__all__ = ["Grant", "Wave", "WavesResult", "affected", "next_wave", "raises", "run_waves", "send_order"]

logger = logging.getLogger(__name__)

_EPS = 1e-9


@attrs.frozen
class Grant:
    """A request cleared to go out.

    Attributes:
        target: the request asked for.
        request: what may be sent: ``target``, or a copy whose period limits were lowered to fit
            what is free (``clipped``). Send it as it is or lower (rounding down is fine).
        clipped: whether ``request`` is lower than ``target``.
    """

    target: Request
    request: Request
    clipped: bool = False


@attrs.frozen
class Wave:
    """One wave: the requests to send now (at most one per station), and those that must wait.

    Attributes:
        send: the grants, reductions first.
        waiting: requests that may not go out yet (station busy, or no room confirmed).
    """

    send: tuple[Grant, ...] = ()
    waiting: tuple[Request, ...] = ()


def affected(ledger: Ledger, request: Request) -> list[ConnectorKey]:
    """The registered connectors whose limit ``request`` can change."""
    profile = request.profile
    if profile is not None and profile.key[1] != 0:
        return [profile.key] if profile.key in ledger.connectors else []
    return ledger.connectors_of(request.station_id)


def _unknown_key(ledger: Ledger, request: Request) -> ConnectorKey | None:
    """The connector of a profile request whose state is unknown (it may be held at 0 or draw
    up to its bound), else None."""
    profile = request.profile
    if profile is None or profile.key[1] == 0 or profile.key not in ledger.connectors:
        return None
    return profile.key if ledger.unknown(profile.key) is not None else None


def _own_kw(request: Request, t: datetime) -> float:
    profile = request.profile
    kw = None if profile is None else profile.limit_kw_at(t)
    return 0.0 if kw is None else kw


def _points(ledger: Ledger, circuits: Sequence[Circuit], now: datetime, until: datetime,
            requests: Sequence[Request]) -> list[datetime]:
    points = set(ledger.boundaries(now, until, requests))
    for c in circuits:
        points.update(t for t, _ in c.schedule if now <= t <= until)
    return sorted(points)


def _rising(ledger: Ledger, request: Request, now: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """The intervals ``[a, b)`` in ``[now, until]`` in which sending ``request`` raises the
    worst case of a connector it addresses, or of its station's total (the last one ends at
    ``until``, inclusive)."""
    station = request.station_id
    points = ledger.boundaries(now, until, (request,), stations=[station])
    keys = affected(ledger, request)
    out: list[tuple[datetime, datetime]] = []
    unknown = _unknown_key(ledger, request) is not None
    for i, t in enumerate(points):
        if unknown and _own_kw(request, t) > 0:
            # it may be held at 0 now: anything above is an increase for it
            out.append((t, points[i + 1] if i + 1 < len(points) else until))
            continue
        before = ledger.station_worst_case_at(station, t)
        up = ledger.station_worst_case_at(station, t, extra=(request,)) > before + _EPS
        up = up or any(ledger.worst_case_at(k, t, (request,)) > ledger.worst_case_at(k, t) + _EPS for k in keys)
        if up:
            out.append((t, points[i + 1] if i + 1 < len(points) else until))
    return out


def raises(ledger: Ledger, request: Request, *, now: datetime, until: datetime) -> bool:
    """Whether sending ``request`` could raise any connector's worst case (or its station's
    total) at any instant of ``[now, until]``.

    A request that does not is a reduction (or a no-op): whatever its outcome, nothing may draw
    more than before.
    """
    return bool(_rising(ledger, request, to_utc(now), to_utc(until)))


def _inside(points: Sequence[datetime], spans: Sequence[tuple[datetime, datetime]]) -> list[datetime]:
    out = {a for a, _ in spans}
    for t in points:
        if any(a <= t < b or (t == b == spans[-1][1]) for a, b in spans):
            out.add(t)
    return sorted(out)


def _fits(ledger: Ledger, circuits: Sequence[Circuit], granted: list[Request], request: Request,
          points: Sequence[datetime]) -> bool:
    """Whether every circuit ``request`` touches stays within its limit (or no higher than
    before) at each of ``points``, counting ``granted`` and ``request`` as sent; for a request
    to an unknown connector also if that connector was at 0 before (:func:`_mixed_room`)."""
    keys = affected(ledger, request)
    unknown = _unknown_key(ledger, request)
    for c in circuits:
        if not any(c.covers(k) for k in keys):
            continue
        for t in points:
            after = ledger.circuit_worst_case_at(c, t, extra=[*granted, request])
            if after > c.limit_at(t) + _EPS and after > ledger.circuit_worst_case_at(c, t, extra=granted) + _EPS:
                return False
            if unknown is not None and _own_kw(request, t) > _mixed_room(ledger, c, granted, unknown, t) + _EPS:
                return False
    return True


def _no_room_at_all(ledger: Ledger, circuits: Sequence[Circuit], granted: list[Request], request: Request,
                    points: Sequence[datetime], now: datetime) -> bool:
    """Whether ``request`` is to an unknown connector for which the other connectors' worst
    cases leave no room at any instant where it asks for more than 0."""
    key = _unknown_key(ledger, request)
    if key is None:
        return False
    covering = [c for c in circuits if c.covers(key)]
    return all(_own_kw(request, t) <= 0 or any(_mixed_room(ledger, c, granted, key, t) <= _EPS for c in covering)
               for t in [now, *points] if t >= now)


def _lowers(ledger: Ledger, request: Request, points: Sequence[datetime], now: datetime) -> bool:
    """Whether accepting ``request`` lowers its connector's worst case at some instant."""
    profile = request.profile
    if profile is None or profile.key[1] == 0 or profile.key not in ledger.connectors:
        return profile is None or profile.key[1] == 0
    return any((kw := profile.limit_kw_at(t)) is not None and kw < ledger.worst_case_at(profile.key, t) - _EPS
               for t in [now, *points] if t >= now)


def _fits_model(ledger: Ledger, circuits: Sequence[Circuit], granted: list[Request], request: Request,
                points: Sequence[datetime]) -> bool:
    """The model part of :func:`_fits` only: no circuit's worst case above its limit and above
    what it was."""
    for c in circuits:
        for t in points:
            after = ledger.circuit_worst_case_at(c, t, extra=[*granted, request])
            if after > c.limit_at(t) + _EPS and after > ledger.circuit_worst_case_at(c, t, extra=granted) + _EPS:
                return False
    return True


def _mixed_room(ledger: Ledger, circuit: Circuit, granted: list[Request], key: ConnectorKey, t: datetime) -> float:
    """What an unknown connector may be given at ``t`` if it is at 0 now while every other
    connector of the circuit draws its worst case."""
    return circuit.limit_at(t) - ledger.circuit_worst_case_at(circuit, t, exclude=[key], extra=granted)


def _clip(ledger: Ledger, circuits: Sequence[Circuit], granted: list[Request], request: Request,
          points: Sequence[datetime], now: datetime, share: float = 1.0) -> Request | None:
    """``request`` with each period lowered to its connector's worst case plus ``share`` of what
    is free, or None if it cannot be lowered."""
    profile = request.profile
    if profile is None or profile.key[1] == 0 or profile.recurrence_s is not None:
        return None
    key = profile.key
    covering = [c for c in circuits if c.covers(key)]
    if not covering:
        return None
    unknown = _unknown_key(ledger, request) is not None

    def allowed(t: datetime) -> float:
        if unknown:
            return max(0.0, min(_mixed_room(ledger, c, granted, key, t) for c in covering))
        free = min(c.limit_at(t) - ledger.circuit_worst_case_at(c, t, extra=granted) for c in covering)
        return ledger.worst_case_at(key, t) + max(free, 0.0) * share

    # Split at every instant where the profile or what is free can change, so a low point later
    # on lowers only its own stretch; a step down is moved earlier to a whole second, a step up later.
    base = profile.start.timestamp()
    cuts = sorted({float(s) for s, _ in profile.periods} | {max(t.timestamp() - base, 0.0) for t in [now, *points]})
    if profile.duration_s is not None:
        cuts = [c for c in cuts if c < profile.duration_s]
    pieces: list[tuple[float, float]] = []
    for offset in cuts:
        t = profile.start + timedelta(seconds=offset)
        kw = profile.limit_kw_at(t)
        if kw is None:
            continue  # not in force then: nothing to lower
        value = max(0.0, min(kw, allowed(max(t, now))))
        if pieces and pieces[-1][1] == value:
            continue
        pieces.append((offset, value))
    periods: list[tuple[int, float]] = []
    for i, (offset, value) in enumerate(pieces):
        whole = 0 if i == 0 else math.floor(offset) if value < pieces[i - 1][1] else math.ceil(offset)
        if periods and whole <= periods[-1][0]:
            periods[-1] = (periods[-1][0], min(periods[-1][1], value))
        elif periods and periods[-1][1] == value:
            continue
        else:
            periods.append((whole, value))
    clipped = attrs.evolve(profile, periods=tuple(periods))
    return attrs.evolve(request, profile=clipped)


def next_wave(ledger: Ledger, targets: Sequence[Request], circuits: Sequence[Circuit], *, now: datetime,
              until: datetime) -> Wave:
    """The next wave of requests that is safe for every outcome of everything unresolved.

    ``targets`` are the requests wanted, in priority order; ``circuits`` every limit (the site is
    one); the check covers every instant in ``[now, until]`` at which a limit can change (choose
    ``until`` at or after the latest ``validTo``/schedule end involved: after the last boundary
    every limit is constant). Returns the requests to send now, and those that must wait:

    1. at most one request per station, and none to a station with a request in flight
       (:meth:`Ledger.busy`, the CSMS's per-station call lock);
    2. first every request that cannot raise any connector's worst case (a reduction), in
       order;
    3. then each increase, in order, that keeps every circuit it touches within its limit at
       every boundary where it raises something, counting what was granted before it in this
       wave (reductions at their old limits: their room is not confirmed yet);
    4. an increase that does not fit waits while room may still come (a request in flight, or
       one granted in this wave that lowers something once accepted); once nothing may come it
       is lowered, piece by piece in time, to its worst case plus an equal share of what is
       actually free among the increases left (:class:`Grant` ``clipped``) and sent if that
       fits;
    5. a request to a connector whose state is unknown (:meth:`Ledger.unknown`: it may be held
       at 0 or draw up to its bound) is an increase wherever it allows more than 0, comes after
       the others, and must also fit as if that connector were at 0 now while every other one
       draws its worst case. If even that leaves it no room at any instant, no positive limit is
       provably safe for it; it then goes out as planned (within its bound, so the model check
       of step 3 still holds) rather than holding the car at 0.

    Record each grant with :meth:`Ledger.sent` before sending it, its fate with
    :meth:`Ledger.record`, then call again with the requests not yet sent (:func:`run_waves`).

    Invariant: let ``W_k(t)`` be the ledger's worst case of connector ``k``: the maximum, over
    every combination of outcomes (accepted, rejected, unanswered) of every unresolved request,
    of the limit the OCPP stacking rules give ``k`` at ``t``, and at least ``k``'s unknown
    bound. If, for a circuit ``C`` and an instant ``t``, ``S(t) = sum of W_k(t) over C`` before
    the wave, then after the grants are recorded as sent ``S'(t) <= max(limit_C(t), S(t))``.

    Proof. (a) Whatever the outcomes, the limit a charger applies is the stacking rule applied to
    what it accepted, which is one of the enumerated combinations, so it is <= ``W_k(t)``; an
    unknown connector is bounded by construction. (b) Recording a request as sent adds it to the
    enumeration, so ``W_k`` can only grow by it, and only for the connectors it addresses
    (:func:`affected`). A request granted in step 2 leaves every ``W_k`` equal (it cannot raise
    any, by :func:`raises` over all boundaries), so it leaves every ``S`` unchanged. A request
    granted in step 3 or 4 passed ``_fits``: with every grant before it counted (``extra``),
    ``S'(t) <= limit_C(t)`` or ``S'(t) <= S(t)`` for every circuit it touches, at every boundary
    inside the intervals where it raises some ``W_k`` or its station's total (outside them ``S``
    is unchanged by it). Circuits it does not touch are unchanged. Grants go to distinct
    stations, so their enumerations are independent and the sum over a circuit of per-station
    maxima bounds every joint outcome.
    (c) Limits and bounds are piecewise constant and change only at the instants checked
    (:meth:`Ledger.boundaries`, circuit schedule changes), so the inequality holds at every
    ``t`` in ``[now, until]``. (d) Outcomes only remove combinations (accepted: the old ones;
    rejected: the new one; unanswered keeps both), so ``W`` never grows after sending, and the
    next call starts from what is actually known: an increase that needed a refused reduction
    finds no room and is lowered or waits. Hence no combination of outcomes ever makes a circuit
    draw above its limit, unless it already could before (e.g. after a restart with unknown
    connectors whose bounds add up above it); then nothing sent raises what may be drawn.
    (e) For a connector that is in fact held at 0 although unknown, step 5 checks the circuit
    with it at its new limit and every other connector at its worst case, so it too stays
    within the limit whenever that check passes.
    """
    now, until = to_utc(now), to_utc(until)
    points = _points(ledger, circuits, now, until, targets)
    used = {t.station_id for t in targets if ledger.busy(t.station_id)}
    in_flight = any(ledger.busy(s) for s in ledger.stations())
    send: list[Grant] = []
    waiting: list[Request] = []
    increases: list[tuple[Request, list[tuple[datetime, datetime]]]] = []
    for target in targets:
        if target.station_id in used:
            waiting.append(target)
        elif spans := _rising(ledger, target, now, until):
            increases.append((target, spans))
        else:
            send.append(Grant(target, target))
            used.add(target.station_id)
    granted = [g.request for g in send]
    room_may_come = in_flight or bool(send)
    # Requests to unknown connectors last: for them an increase may hide behind any request.
    increases.sort(key=lambda item: _unknown_key(ledger, item[0]) is not None)
    for n, (target, spans) in enumerate(increases):
        if target.station_id in used:
            waiting.append(target)
            continue
        if _fits(ledger, circuits, granted, target, _inside(points, spans)):
            grant = Grant(target, target)
        elif _no_room_at_all(ledger, circuits, granted, target, points, now):
            # An unknown connector with no room even if it is at 0 now: no positive limit is
            # provably safe and holding it at 0 would starve it; it goes out as planned, within
            # its bound (the ledger's model), if that fits the model.
            if not _fits_model(ledger, circuits, granted, target, points):
                waiting.append(target)
                continue
            grant = Grant(target, target)
        elif room_may_come:
            waiting.append(target)
            continue
        else:
            # What is free is shared equally by the increases still to place.
            rest = 1 + sum(1 for t, _ in increases[n + 1:] if t.station_id not in used)
            lowered = _clip(ledger, circuits, granted, target, points, now, 1.0 / rest)
            if lowered is None:
                waiting.append(target)
                continue
            lowered_spans = _rising(ledger, lowered, now, until)
            if lowered_spans and not _fits(ledger, circuits, granted, lowered, _inside(points, lowered_spans)):
                waiting.append(target)
                continue
            grant = Grant(target, lowered, clipped=True)
        send.append(grant)
        granted.append(grant.request)
        used.add(target.station_id)
        # Once accepted, an increase that lowers some instant frees room there: the rest waits.
        room_may_come = room_may_come or _lowers(ledger, grant.request, points, now)
    return Wave(tuple(send), tuple(waiting))


@attrs.define
class WavesResult:
    """What :func:`run_waves` did.

    Attributes:
        waves: the grants of each wave, in order.
        outcomes: per target (by position in ``targets``), its outcome, or None if never sent.
        sent: per target position, the request actually sent (possibly clipped).
    """

    waves: list[tuple[Grant, ...]] = attrs.field(factory=list)
    outcomes: dict[int, Outcome | None] = attrs.field(factory=dict)
    sent: dict[int, Request] = attrs.field(factory=dict)


def run_waves(
    ledger: Ledger,
    targets: Sequence[Request],
    circuits: Sequence[Circuit],
    send: Callable[[Sequence[Request]], Sequence[Outcome]],
    *,
    now: datetime,
    until: datetime,
    clock: Callable[[], datetime] | None = None,
) -> WavesResult:
    """Send ``targets`` wave by wave through ``send`` (which returns one outcome per request, in
    order, once all of the wave are answered or timed out), recording everything in ``ledger``.

    Stops when a wave is empty. ``clock`` gives the time outcomes are recorded (default ``now``).
    """
    result = WavesResult(outcomes=dict.fromkeys(range(len(targets))))
    left = list(range(len(targets)))
    for _ in range(len(targets) + 1):
        wave = next_wave(ledger, [targets[i] for i in left], circuits, now=now, until=until)
        if not wave.send:
            break
        result.waves.append(wave.send)
        index = {id(targets[i]): i for i in left}
        at = now if clock is None else clock()
        rids = [ledger.sent(g.request, at=at) for g in wave.send]
        outcomes = list(send([g.request for g in wave.send]))
        if len(outcomes) != len(rids):
            raise ValueError(f"send returned {len(outcomes)} outcomes for {len(rids)} requests")
        at = now if clock is None else clock()
        for grant, rid, outcome in zip(wave.send, rids, outcomes, strict=True):
            ledger.record(rid, outcome, at=at)
            i = index[id(grant.target)]
            result.outcomes[i], result.sent[i] = Outcome(outcome), grant.request
            left.remove(i)
    for i in left:
        logger.info("request %s to %s not sent: no room confirmed for it", targets[i].label, targets[i].station_id)
    return result


def send_order(ledger: Ledger, targets: Sequence[Request], circuits: Sequence[Circuit], *, now: datetime,
               until: datetime) -> list[Request]:
    """``targets`` in the order of the waves :func:`next_wave` would give if every request were
    accepted (reductions first, an increase after the reductions making room for it), for a
    sender that takes them all at once and sends them one by one in that order. Requests that
    would wait even then come last. ``ledger`` is not changed.

    This only orders; it cannot react to a refusal. A sender that can wait for answers should
    use :func:`run_waves` instead.
    """
    trial = copy.deepcopy(ledger)
    left = list(targets)
    order: list[Request] = []
    while left:
        wave = next_wave(trial, left, circuits, now=now, until=until)
        if not wave.send:
            break
        for grant in wave.send:
            trial.accepted(trial.sent(grant.target, at=now), at=now)
            order.append(grant.target)
            left = [t for t in left if t is not grant.target]
    return order + left
