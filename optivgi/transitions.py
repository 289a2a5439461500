"""Safe transitions: which requests may go out now, whatever becomes of those in flight.

Pure, no I/O. :func:`next_wave` takes the :class:`~optivgi.ledger.Ledger` and the requests wanted
(TxProfiles, holds, fallbacks, clears) and returns the next wave to send; :func:`run_waves`
repeats it, recording outcomes, until nothing more can go out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import attrs

from optivgi.ledger import Circuit, ConnectorKey, Ledger, Outcome, Request
from optivgi.models.ev import to_utc

__all__ = ["Grant", "Wave", "WavesResult", "affected", "next_wave", "raises", "run_waves"]

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


def _points(ledger: Ledger, circuits: Sequence[Circuit], now: datetime, until: datetime,
            requests: Sequence[Request]) -> list[datetime]:
    points = set(ledger.boundaries(now, until, requests))
    for c in circuits:
        points.update(t for t, _ in c.schedule if now <= t <= until)
    return sorted(points)


def raises(ledger: Ledger, request: Request, points: Sequence[datetime]) -> bool:
    """Whether sending ``request`` could raise any connector's worst case at any of ``points``.

    A request that does not is a reduction (or a no-op): whatever its outcome, no connector
    may draw more than before.
    """
    return any(ledger.worst_case_at(k, t, (request,)) > ledger.worst_case_at(k, t) + _EPS
               for k in affected(ledger, request) for t in points)


def _fits(ledger: Ledger, circuits: Sequence[Circuit], granted: list[Request], request: Request,
          points: Sequence[datetime]) -> bool:
    keys = affected(ledger, request)
    for c in circuits:
        if not any(c.covers(k) for k in keys):
            continue
        for t in points:
            after = ledger.circuit_worst_case_at(c, t, extra=[*granted, request])
            if after > c.limit_at(t) + _EPS and after > ledger.circuit_worst_case_at(c, t, extra=granted) + _EPS:
                return False
    return True


def _clip(ledger: Ledger, circuits: Sequence[Circuit], granted: list[Request], request: Request,
          points: Sequence[datetime], now: datetime) -> Request | None:
    """``request`` with each period lowered to what its connector may have, or None if it cannot be."""
    profile = request.profile
    if profile is None or profile.key[1] == 0 or profile.recurrence_s is not None:
        return None
    key = profile.key
    covering = [c for c in circuits if c.covers(key)]
    if not covering:
        return None

    def allowed(t: datetime) -> float:
        return min(c.limit_at(t) - ledger.circuit_worst_case_at(c, t, exclude=[key], extra=granted) for c in covering)

    ends = [profile.start.timestamp() + s for s, _ in profile.periods[1:]]
    last = profile.start.timestamp() + profile.duration_s if profile.duration_s is not None else float("inf")
    ends.append(last)
    periods: list[tuple[int, float]] = []
    for (offset, kw), end in zip(profile.periods, ends, strict=True):
        begin = profile.start.timestamp() + offset
        inside = [t for t in points if begin <= t.timestamp() < end]
        if begin <= now.timestamp() < end:
            inside.append(now)
        room = min((allowed(t) for t in inside), default=kw)
        periods.append((offset, max(0.0, min(kw, room))))
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
       every boundary, counting what was granted before it in this wave; one that does not fit
       is lowered period by period to what is free (:class:`Grant` ``clipped``) and sent if that
       fits, else it waits.

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
    granted in step 3 passed ``_fits``: with every grant before it counted (``extra``), ``S'(t) <=
    limit_C(t)`` or ``S'(t) <= S(t)`` for every circuit it touches at every boundary. Circuits it
    does not touch are unchanged. Grants go to distinct stations, so their enumerations are
    independent and the sum over a circuit of per-station maxima bounds every joint outcome.
    (c) Limits and bounds are piecewise constant and change only at the instants checked
    (:meth:`Ledger.boundaries`, circuit schedule changes), so the inequality holds at every
    ``t`` in ``[now, until]``. (d) Outcomes only remove combinations (accepted: the old ones;
    rejected: the new one; unanswered keeps both), so ``W`` never grows after sending, and the
    next call starts from what is actually known: an increase that needed a refused reduction
    finds no room and is lowered or waits. Hence no combination of outcomes ever makes a circuit
    draw above its limit, unless it already could before (e.g. after a restart with unknown
    connectors), and then only reductions go out until it cannot.
    """
    now, until = to_utc(now), to_utc(until)
    points = _points(ledger, circuits, now, until, targets)
    used = {t.station_id for t in targets if ledger.busy(t.station_id)}
    send: list[Grant] = []
    waiting: list[Request] = []
    increases: list[Request] = []
    for target in targets:
        if target.station_id in used:
            waiting.append(target)
        elif raises(ledger, target, points):
            increases.append(target)
        else:
            send.append(Grant(target, target))
            used.add(target.station_id)
    granted = [g.request for g in send]
    for target in increases:
        if target.station_id in used:
            waiting.append(target)
            continue
        if _fits(ledger, circuits, granted, target, points):
            grant = Grant(target, target)
        else:
            lowered = _clip(ledger, circuits, granted, target, points, now)
            if lowered is None or not _fits(ledger, circuits, granted, lowered, points):
                waiting.append(target)
                continue
            grant = Grant(target, lowered, clipped=True)
        send.append(grant)
        granted.append(grant.request)
        used.add(target.station_id)
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
