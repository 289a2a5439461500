"""The plugin's side of the in-force ledger: what CitrineOS's chargers accepted, and sending safely.

:class:`SiteSafety` keeps one :class:`~optivgi.ledger.Ledger` for all configured stations. It
registers the connectors that exist (:class:`~optivgi_citrineos.fallbacks.ConnectorCensus`),
marks what is not known (a restart, an unreadable session, two sessions on one connector), tells
the planner how much of each group's limit is left once every connector it does not plan counts
at its worst case (:meth:`SiteSafety.budget_kw`), decides where a hold is needed, and sends every
request — TxProfiles, holds, fallbacks — through :func:`optivgi.transitions.run_waves`, so an
increase goes out only once the reductions that make room for it were accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import attrs

from optivgi.failsafe import HoldRelease
from optivgi.ledger import Circuit, ConnectorKey, Ledger, Outcome, ProfileRecord, Request
from optivgi.models.ev import to_utc
from optivgi.models.profile import ChargingProfile, ChargingProfilePurpose, ChargingSchedulePeriod
from optivgi.transitions import run_waves
from optivgi.translation import SendOutcome
from optivgi_citrineos.calls import BUSY
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.fallbacks import ConnectorCensus
from optivgi_citrineos.sessions import SessionsRead
from optivgi_citrineos.wire import envelope, hold_id, wire_limit

__all__ = ["Item", "SiteSafety"]

logger = logging.getLogger(__name__)

#: (station, ocpp, body) → (outcome, reason): one call, made by the caller.
CallFn = Callable[[str, str | None, Mapping[str, object]], tuple[SendOutcome, str]]


@attrs.frozen
class Item:
    """One profile to send: to ``connector`` (0: the whole station) of ``station``."""

    label: str
    station_id: str
    ocpp: str | None
    connector: int
    profile: ChargingProfile
    voltage: float
    phases: int

    @property
    def body(self) -> dict[str, object]:
        """The checked request body."""
        return envelope(self.ocpp, self.connector, self.profile)


def _ledger_outcome(outcome: SendOutcome, reason: str) -> Outcome:
    """How the ledger counts a send outcome: a call that may have been queued may be in force."""
    if outcome is SendOutcome.APPLIED:
        return Outcome.ACCEPTED
    if outcome is SendOutcome.REJECTED or reason == BUSY or reason.startswith(("not sent", "CitrineOS refused")):
        return Outcome.REJECTED
    return Outcome.UNANSWERED


class SiteSafety:
    """The ledger of every configured station, and the safe way to change it.

    Args:
        config: validated configuration.
        census: the connectors that exist.
    """

    def __init__(self, config: CitrineOSConfig, census: ConnectorCensus) -> None:
        self.config = config
        self.census = census
        self.ledger = Ledger()
        self.release = HoldRelease(config.profile_validity_s or config.interval_s)
        self._active: dict[ConnectorKey, str] = {}
        self._session_unknown: set[ConnectorKey] = set()
        self._restarted = False

    # -- connectors and knowledge ----------------------------------------------------------
    def sync_connectors(self, stations: Iterable[str], now: datetime) -> None:
        """Register every connector of ``stations`` with its maximum and fallback share [kW]."""
        for station in stations:
            group = self.config.group_of(station)
            if group is None:
                continue
            share = self.census.share(group, station).share_kw
            for connector in self.census.connectors(station):
                params = self.config.session_params(station, connector, None)
                max_kw = params.max_power_kw or 7.2
                self.ledger.add_connector((station, connector), max_kw=max_kw, fallback_kw=share)

    def restart(self, now: datetime) -> None:
        """Nothing is known at start: a TxProfile of the previous process may still be in force."""
        validity = self.config.profile_validity_s
        self.ledger.restart(at=now, previous_validity_s=validity if validity > 0 else None)
        self._restarted = True

    def note_read(self, stations: Sequence[str], read: SessionsRead, now: datetime) -> None:
        """Record a read of the sessions: started and ended transactions, and what is unknown."""
        active = {(str(ev.station_id), ev.connector_id): str(ev.transaction_id) for ev in read.evs}
        wanted = set(stations)
        for key, tx in list(self._active.items()):
            if key[0] in wanted and active.get(key) != tx:
                del self._active[key]
                self.release.succeeded(key)
                if key in self.ledger.connectors:
                    self.ledger.session_ended(key, tx, at=now)
        for key, tx in active.items():
            if key in self.ledger.connectors and self._active.get(key) != tx:
                self.ledger.session_started(key, tx, at=now)
            self._active[key] = tx
        marked: set[ConnectorKey] = set()
        for u in read.unknown:
            keys = [(u.station_id, u.connector_id)] if u.connector_id is not None else [
                k for k in self.ledger.connectors_of(u.station_id) if k not in active]
            for key in keys:
                if key in self.ledger.connectors:
                    self.ledger.mark_unknown(key, u.reason, at=now)
                    self.release.failed(key, now)
                    marked.add(key)
        for key in self._session_unknown - marked:
            if key not in active and key in self.ledger.connectors:
                self.ledger.mark_known(key)
        self._session_unknown = marked
        if self._restarted:
            # After a restart an idle connector runs no TxProfile (those end with their transaction):
            # it draws at most its fallback share until its station's fallback is accepted again.
            for station in stations:
                for key in self.ledger.connectors_of(station):
                    why = self.ledger.unknown(key)
                    if key not in active and key not in marked and why is not None and why.reason == "restart":
                        share = self.ledger.fallback_kw(key)
                        self.ledger.mark_unknown(key, "restart", at=now, at_most_kw=share)

    def fallback_accepted(self, station_id: str) -> None:
        """The station accepted its fallback: its idle connectors, unknown since the restart, are
        known again (they run no TxProfile; at most the fallback, or a hold below it)."""
        for key in self.ledger.connectors_of(station_id):
            why = self.ledger.unknown(key)
            if key not in self._active and why is not None and why.reason == "restart":
                self.ledger.mark_known(key)

    def planned_keys(self, read: SessionsRead) -> list[ConnectorKey]:
        """The connectors the planner plans this cycle (unknown ones are not planned)."""
        unknown = {(u.station_id, u.connector_id) for u in read.unknown}
        return [(str(ev.station_id), ev.connector_id) for ev in read.evs
                if (str(ev.station_id), ev.connector_id) not in unknown]

    def circuit(self, group: str, now: datetime, horizon_s: float) -> Circuit:
        """The group's site limit as a ledger circuit over the planning horizon."""
        schedule = self.config.group_limits[group]
        steps = int(horizon_s // self.config.resolution_s) + 1
        raw = schedule.series(to_utc(now), self.config.resolution_s, steps)
        series = [float(raw)] * steps if isinstance(raw, int | float) else [float(v) for v in raw]
        changes = [(to_utc(now) + timedelta(seconds=i * self.config.resolution_s), kw)
                   for i, kw in enumerate(series) if i and kw != series[i - 1]]
        members = frozenset((s, 0) for s in self.config.groups[group])
        return Circuit(group, float(series[0]), members, tuple(changes))

    def budget_kw(self, group: str, planned: Sequence[ConnectorKey], now: datetime, n_steps: int) -> list[float]:
        """Per planning step, the group's limit minus the worst case of every connector not planned."""
        res = self.config.resolution_s
        circuit = self.circuit(group, now, n_steps * res)
        end = to_utc(now) + timedelta(seconds=n_steps * res)
        points = self.ledger.boundaries(now, end)
        reserved = [(t, self.ledger.circuit_worst_case_at(circuit, t, exclude=planned)) for t in points]
        # What this cycle sends is in force one validity at most, and no TxProfile outlives the hold
        # of its station: later steps are planned with the reservation at the end of that window
        # (the safe waves check every instant anyway, and lower what does not fit).
        validity = self.config.profile_validity_s
        window = to_utc(now) + timedelta(seconds=validity) if validity > 0 else end
        holds = [h for s in self.config.groups[group] if (h := self.hold_cap(s, now)) is not None]
        window = min([window, *holds])
        out: list[float] = []
        worst = 0.0
        for i in range(n_steps):
            a = to_utc(now) + timedelta(seconds=i * res)
            b = min(a + timedelta(seconds=res), window)
            if a < window or i == 0:
                worst = max([r for t, r in reserved if a <= t < b] + [r for t, r in reserved if t <= a][-1:],
                            default=0.0)
            out.append(max(circuit.limit_at(a) - worst, 0.0))
        return out

    # -- holds -----------------------------------------------------------------------------
    def hold_until(self, station_id: str, now: datetime) -> datetime | None:
        """The end of the station's hold known in force at ``now``, or None."""
        for r in self.ledger.records(station_id):
            if r.profile_id == hold_id(self.config.profile_id_base) and r.limit_kw_at(now) is not None:
                return r.valid_to
        return None

    def hold_cap(self, station_id: str, now: datetime) -> datetime | None:
        """The end of the station's hold when it still holds an idle connector: no TxProfile there
        may outlive it (were opti-vgi to stop, that connector would get its fallback share on top)."""
        if all(k in self._active for k in self.ledger.connectors_of(station_id)):
            return None
        until = self.hold_until(station_id, now)
        return until if until is not None and until > now else None

    def hold_wanted(self, station_id: str, now: datetime) -> bool:
        """Whether the station should get or renew a hold: it has an idle connector, no car of it
        is failing, and every car of it runs a TxProfile it accepted, so the hold stops no car (a
        car that arrived under the hold waits at most until the hold ends: one validity)."""
        keys = self.ledger.connectors_of(station_id)
        if not any(k not in self._active for k in keys) or not self.release.may_renew_hold(station_id, now):
            return False
        for key in keys:
            if key in self._active and not any(
                    r.key == key and r.purpose is ChargingProfilePurpose.TX_PROFILE and r.limit_kw_at(now) is not None
                    for r in self.ledger.records(station_id)):
                return False
        return True

    # -- sending ---------------------------------------------------------------------------
    def outcome_of(self, key: ConnectorKey, outcome: SendOutcome, now: datetime) -> None:
        """Note a TxProfile's outcome for the hold release."""
        if outcome is SendOutcome.APPLIED:
            self.release.succeeded(key)
        else:
            self.release.failed(key, now)

    def send(self, group: str, items: Sequence[Item], call: CallFn, now: datetime,
             clock: Callable[[], datetime]) -> dict[str, tuple[SendOutcome, str]]:
        """Send ``items`` in safe waves (see :func:`optivgi.transitions.next_wave`); every item gets an
        outcome: one that never found room confirmed is FAILED "not sent"."""
        if not items:
            return {}
        by_label = {i.label: i for i in items}
        targets = [Request.install(self._record(i), label=i.label) for i in items]
        horizon = max([self.config.profile_validity_s, self.config.horizon_s, 60.0])
        circuits = [self.circuit(group, now, horizon)]
        results: dict[str, tuple[SendOutcome, str]] = {}

        def wave(requests: Sequence[Request]) -> list[Outcome]:
            bodies = [(r, by_label[r.label], self._body(by_label[r.label], r)) for r in requests]
            with ThreadPoolExecutor(max_workers=max(1, min(8, len(bodies))),
                                    thread_name_prefix="citrineos-send") as pool:
                futures = [pool.submit(call, item.station_id, item.ocpp, body) for _, item, body in bodies]
                answers = [f.result() for f in futures]
            out = []
            for (request, _, _), (outcome, reason) in zip(bodies, answers, strict=True):
                results[request.label] = (outcome, reason)
                out.append(_ledger_outcome(outcome, reason))
            return out

        until = to_utc(now) + timedelta(seconds=horizon)
        for _ in range(3):
            done = run_waves(self.ledger, targets, circuits, wave, now=now, until=until, clock=clock)
            # An increase lowered to what was free while the reductions were in flight is sent
            # again in full once they were accepted (the planner finds the room then, or lowers it).
            targets = [targets[i] for i, sent in done.sent.items()
                       if sent != targets[i] and done.outcomes[i] is Outcome.ACCEPTED]
            if not targets:
                break
        for item in items:
            results.setdefault(item.label, (SendOutcome.FAILED, "not sent: no room confirmed for it yet"))
        return results

    def _record(self, item: Item) -> ProfileRecord:
        return ProfileRecord.from_profile((item.station_id, item.connector), item.profile, voltage=item.voltage,
                                          phases=item.phases)

    def _body(self, item: Item, request: Request) -> dict[str, object]:
        """The request body of ``item``, lowered to ``request``'s limits when the planner clipped it."""
        profile = item.profile
        record = request.profile
        if record is not None and record != self._record(item):
            periods: list[ChargingSchedulePeriod] = []
            for offset, kw in record.periods:  # the planner may split a period to lower part of it
                own = profile.period_at(offset)
                limit = min(own.limit, wire_limit(profile.unit, kw, item.voltage, own.number_phases or item.phases))
                if not periods or periods[-1].limit != limit:
                    periods.append(ChargingSchedulePeriod(offset, limit, own.number_phases))
            profile = attrs.evolve(profile, periods=tuple(periods))
        return envelope(item.ocpp, item.connector, profile)
