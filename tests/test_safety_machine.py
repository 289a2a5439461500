"""Stateful property test: whatever fails, the site stays within its limit and no car starves.

A hypothesis ``RuleBasedStateMachine`` drives modelled OCPP chargers (``safety_model``, written
apart from the ledger) and a small controller built only from the product's pure modules (ledger,
transition waves, fail-safe arithmetic) through random sequences of arrivals, departures,
rejections, CALLERRORs, unanswered calls, stations offline and back, hold failures, unreadable
session rows, read-back failures and controller restarts (ledger lost). After every step it
asserts, at every instant a limit changed since the last step and after every single call:

(a) the sum of what the modelled chargers let their cars draw is at most the site limit;
(b) no car is at 0 for longer than one validity period (plus two cycle gaps) while the site has
    room for its fallback share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from safety_model import Held, Station

from optivgi.failsafe import HoldRelease, capped_valid_to, count_connectors, fallback_share
from optivgi.ledger import Circuit, ConnectorKey, Ledger, Outcome, ProfileRecord, Request
from optivgi.transitions import run_waves

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
LIMIT = 12.0
VALIDITY = 300.0
MAX_GAP = 120
STATIONS = ("S1", "S2", "S3")
CONNECTORS = 2
STARVE_S = VALIDITY + 2 * MAX_GAP
#: Filled by the test run: sequences and steps executed (read by the report).
COUNTS = {"sequences": 0, "steps": 0}


class Controller:
    """A minimal controller: plan equal shares of the ledger's headroom, send in safe waves."""

    def __init__(self, stations: dict[str, Station], now: datetime, *, read_back: bool) -> None:
        self.positive: dict[ConnectorKey, str] = {}  # the transaction whose TxProfile above 0 was accepted
        seen = [(s, c) for s in STATIONS for c in range(1, CONNECTORS + 1)]
        count = count_connectors(STATIONS, seen)
        self.share = fallback_share(LIMIT, count.total, unit="W", voltage=230.0).share_kw
        self.site = Circuit("site", LIMIT)
        self.ledger = Ledger()
        self.release = HoldRelease(VALIDITY)
        self.fallback_ok: set[str] = set()
        self.hold_until: dict[str, datetime] = {}
        self.tx: dict[ConnectorKey, str] = {}
        for key in seen:
            self.ledger.add_connector(key, max_kw=7.2, fallback_kw=self.share)
        if not read_back:
            # whatever the previous process sent may still be valid for one validity period
            charging = [(s, c) for s, st_ in stations.items() for c in st_.cars]
            self.ledger.restart(at=now, previous_validity_s=VALIDITY, reason="read-back failed", charging=charging)
            return
        for name, station in stations.items():  # the profiles read back, taken as accepted
            for h in station.held:
                key = (name, h.connector)
                record = ProfileRecord(key, h.profile_id, h.purpose, h.level, h.start, h.periods,
                                       valid_to=h.valid_to, transaction_id=h.tx)
                self.ledger.accepted(self.ledger.sent(Request.install(record), at=now), at=now)
                if h.profile_id == 900:
                    self.fallback_ok.add(name)
                if h.profile_id == 899 and h.valid_to is not None:
                    self.hold_until[name] = h.valid_to
            for c, (tx, _) in station.cars.items():
                self.tx[(name, c)] = tx

    def cycle(self, now: datetime, stations: dict[str, Station], unreadable: set[ConnectorKey],
              check: Callable[[datetime], None], arrivals: dict[str, datetime]) -> None:
        sessions = {(s, c): car for s, st_ in stations.items() for c, car in st_.cars.items()}
        for key, (tx, _) in sessions.items():
            if self.positive.get(key) != tx:  # at 0 (held) since it arrived, as far as this process knows
                self.release.failed(key, arrivals[tx])
        for key, tx in list(self.tx.items()):
            if key not in sessions or sessions[key][0] != tx:
                self.ledger.session_ended(key, tx, at=now)
                self.release.succeeded(key)
                del self.tx[key]
        planned: list[ConnectorKey] = []
        for key, (tx, _) in sessions.items():
            if key in unreadable:
                self.ledger.mark_unknown(key, "session unreadable", at=now)
                continue
            if self.tx.get(key) != tx:
                self.ledger.session_started(key, tx, at=now)
                self.tx[key] = tx
            planned.append(key)
        targets: list[Request] = []
        for s in STATIONS:
            if s not in self.fallback_ok:
                targets.append(Request.install(ProfileRecord((s, 0), 900, "TxDefaultProfile", 0,
                                                             now - timedelta(days=1), [(0, self.share)]), f"fb:{s}"))
            elif self.release.may_renew_hold(s, now):
                targets.append(Request.install(ProfileRecord((s, 0), 899, "TxDefaultProfile", 1, now, [(0, 0.0)],
                                                             valid_to=now + timedelta(seconds=VALIDITY)), f"hold:{s}"))
        if planned:
            # shared over what the TxProfiles will cover: until the earliest of their validTo
            ends = [capped_valid_to(now, VALIDITY, self.hold_until.get(k[0])) for k in planned]
            end = max(min(ends) - timedelta(microseconds=1), now)
            room = self.ledger.headroom(self.site, planned, now, end)
            each = max(room, 0.0) / len(planned)
            for key in planned:
                tx, car_max = sessions[key]
                valid_to = capped_valid_to(now, VALIDITY, self.hold_until.get(key[0]))
                kw = round(min(each, car_max, 7.2) - 0.0005, 3) if each > 0.001 else 0.0
                record = ProfileRecord(key, 100 + key[1], "TxProfile", 2, now, [(0, max(kw, 0.0))],
                                       valid_to=valid_to, transaction_id=tx)
                targets.append(Request.install(record, f"tx:{key[0]}:{key[1]}"))

        def send(requests: Sequence[Request]) -> list[Outcome]:
            out = []
            for r in requests:
                outcome, _ = stations[r.station_id].handle(r)
                out.append(outcome)
                check(now)  # after every single call
            return out

        result = run_waves(self.ledger, targets, [self.site], send, now=now,
                           until=now + timedelta(seconds=VALIDITY))
        for i, target in enumerate(targets):
            outcome = result.outcomes[i]
            kind, station = target.label.split(":")[:2]
            if kind == "fb" and outcome is Outcome.ACCEPTED:
                self.fallback_ok.add(station)
            elif kind == "hold" and outcome is Outcome.ACCEPTED and target.profile is not None:
                self.hold_until[station] = target.profile.valid_to or now
            elif kind == "tx" and target.profile is not None:
                sent = result.sent[i].profile if i in result.sent else None
                if outcome is Outcome.ACCEPTED and sent is not None and sent.highest_kw > 0:
                    self.release.succeeded(target.profile.key)
                    self.positive[target.profile.key] = target.profile.transaction_id or ""
                else:
                    self.release.failed(target.profile.key, now)
        for s in self.fallback_ok:  # our fallback (and hold) replaced what an earlier process left
            for key in self.ledger.connectors_of(s):
                if key not in sessions and self.ledger.unknown(key) is not None:
                    self.ledger.mark_known(key)


class SafetyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        COUNTS["sequences"] += 1
        self.now = T0
        self.stations = {s: Station(s, CONNECTORS) for s in STATIONS}
        share = fallback_share(LIMIT, len(STATIONS) * CONNECTORS, unit="W", voltage=230.0).share_kw
        for station in self.stations.values():  # installed long ago by an earlier run
            station.held.append(Held(0, 900, "TxDefaultProfile", 0, T0 - timedelta(days=1), [(0, share)], None, None))
        self.share = share
        self.unreadable: set[ConnectorKey] = set()
        self.zero_since: dict[tuple[ConnectorKey, str], datetime] = {}
        self.next_tx = 1
        self.arrivals: dict[str, datetime] = {}
        self.controller = Controller(self.stations, self.now, read_back=True)
        self.controller.cycle(self.now, self.stations, self.unreadable, self.check, self.arrivals)

    # -- invariants ------------------------------------------------------------------------
    def check(self, t: datetime) -> None:
        draws = {(s, c): st_.draw(c, t) for s, st_ in self.stations.items() for c in st_.cars}
        total = sum(draws.values())
        assert total <= LIMIT + 1e-6, f"{total:.3f} kW allowed on {LIMIT} kW at {t}: {draws}"
        for key, kw in draws.items():
            tx = self.stations[key[0]].cars[key[1]][0]
            room = LIMIT - (total - kw) >= self.share - 1e-6
            if kw <= 1e-9 and room:
                since = self.zero_since.setdefault((key, tx), t)
                assert (t - since).total_seconds() <= STARVE_S, f"car {key} at 0 since {since} with room, now {t}"
            else:
                self.zero_since.pop((key, tx), None)

    def advance(self, seconds: int) -> None:
        end = self.now + timedelta(seconds=seconds)
        points = sorted({p for st_ in self.stations.values() for p in st_.boundaries() if self.now < p <= end} | {end})
        for p in points:
            self.check(p)
        self.now = end

    # -- rules -----------------------------------------------------------------------------
    @rule(station=st.sampled_from(STATIONS), connector=st.integers(1, CONNECTORS),
          car_max=st.sampled_from([3.6, 7.2, 11.0]))
    def arrive(self, station: str, connector: int, car_max: float) -> None:
        if connector not in self.stations[station].cars:
            self.stations[station].cars[connector] = (f"T{self.next_tx}", car_max)
            self.arrivals[f"T{self.next_tx}"] = self.now
            self.next_tx += 1
            self.check(self.now)

    @rule(station=st.sampled_from(STATIONS), connector=st.integers(1, CONNECTORS))
    def depart(self, station: str, connector: int) -> None:
        self.stations[station].end_session(connector)
        self.unreadable.discard((station, connector))

    @rule(station=st.sampled_from(STATIONS), answer=st.sampled_from(["accept", "accept", "reject", "callerror",
                                                                     "lost", "dropped"]))
    def charger_answers(self, station: str, answer: str) -> None:
        self.stations[station].answer = answer

    @rule(station=st.sampled_from(STATIONS))
    def toggle_online(self, station: str) -> None:
        self.stations[station].online = not self.stations[station].online

    @rule(station=st.sampled_from(STATIONS))
    def toggle_hold_failures(self, station: str) -> None:
        self.stations[station].refuse_holds = not self.stations[station].refuse_holds

    @rule(station=st.sampled_from(STATIONS), connector=st.integers(1, CONNECTORS))
    def toggle_unreadable(self, station: str, connector: int) -> None:
        self.unreadable ^= {(station, connector)}

    @rule(read_back=st.booleans(), down=st.integers(0, 400))
    def restart(self, read_back: bool, down: int) -> None:
        self.advance(down)  # the chargers run on what they hold while the controller is down
        self.controller = Controller(self.stations, self.now, read_back=read_back)
        self.controller.cycle(self.now, self.stations, self.unreadable, self.check, self.arrivals)

    @rule(seconds=st.integers(5, MAX_GAP))
    def cycle(self, seconds: int) -> None:
        self.advance(seconds)
        self.controller.cycle(self.now, self.stations, self.unreadable, self.check, self.arrivals)

    @precondition(lambda self: True)
    @invariant()
    def within_limit_and_nobody_starves(self) -> None:
        COUNTS["steps"] += 1
        self.check(self.now)


SafetyMachine.TestCase.settings = settings(max_examples=210, stateful_step_count=20, derandomize=True,
                                           deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestSafetyMachine = SafetyMachine.TestCase


def test_replayed_sequences() -> None:
    """Sequences the machine found when the safety code was broken, replayed every run."""
    m = SafetyMachine()  # a second car beside one at full power: 7.2 + 6.0 on 12 kW if sent together
    m.arrive(station="S1", connector=1, car_max=7.2)
    m.cycle(seconds=5)
    m.arrive(station="S2", connector=1, car_max=7.2)
    m.cycle(seconds=5)
    m = SafetyMachine()  # the reduction making room is refused, then answers are lost
    m.arrive(station="S1", connector=1, car_max=11.0)
    m.cycle(seconds=30)
    m.charger_answers(station="S1", answer="reject")
    m.arrive(station="S2", connector=2, car_max=7.2)
    m.arrive(station="S3", connector=1, car_max=7.2)
    m.cycle(seconds=30)
    m.charger_answers(station="S1", answer="lost")
    m.cycle(seconds=60)
    m = SafetyMachine()  # restart with the read-back failing while a car runs at full power
    m.arrive(station="S1", connector=1, car_max=7.2)
    m.cycle(seconds=10)
    m.restart(read_back=False, down=20)
    m.arrive(station="S2", connector=1, car_max=7.2)
    for _ in range(8):
        m.cycle(seconds=60)
    m.within_limit_and_nobody_starves()


def test_counts_are_recorded() -> None:
    """Run after the machine in the same module: prints how much it ran (for the report)."""
    print(f"safety machine: {COUNTS['sequences']} sequences, {COUNTS['steps']} steps checked")
