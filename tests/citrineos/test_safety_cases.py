"""The cases of issue 8's table, against the CitrineOS double with real OCPP 1.6J chargers.

Each test drives the real translation and scheduling loop on an injected clock (one cycle per
interval), records on the charger side every profile a charger *accepted*, and checks, at every
instant a limit can change (from the first cycle to well after the last profile lapsed):

- the sum of the limits in force at all connectors (OCPP 1.6 stacking) never exceeds the site
  limit;
- no car is held at 0 A for longer than one profile validity (180 s) while the site has room.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from citrineos_testdouble import CitrineOSDouble, ProfileAnswer, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread
from psycopg import sql
from safety_monitor import VOLTS, AcceptedLog, ManualClock

from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.config import Settings
from optivgi.loop import Scheduler
from optivgi.models.ev import ChargingRateUnit
from optivgi.translation import SendOutcome
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.translation import CitrineOSTranslation

VALIDITY_S = 180.0
Rule = Callable[[dict[str, Any]], ProfileAnswer | None]


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as thread:
        yield thread


def tx_limit(payload: dict[str, Any]) -> float | None:
    p = payload["csChargingProfiles"]
    if p["chargingProfilePurpose"] != "TxProfile":
        return None
    return float(p["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"])


class Site:
    """Stations with real chargers, the translation and the loop on one manual clock."""

    def __init__(self, double: CitrineOSDouble, loop: LoopThread, n: int, site_kw: float, *,
                 connectors: int = 1, **extra: str) -> None:
        self.double, self.loop, self.site_kw = double, loop, site_kw
        self.clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        self.start = self.clock.now()
        self.log = AcceptedLog(self.clock)
        tag = uuid.uuid4().hex[:6].upper()
        self.stations = [f"SC{tag}-{i + 1:02d}" for i in range(n)]
        self.rules: dict[str, Rule] = {}
        self.cps: dict[str, TestChargePoint] = {}
        self.translations: list[CitrineOSTranslation] = []
        values = {"CITRINEOS_API_URL": double.rest_url, "HASURA_URL": double.graphql_url,
                  "AMQP_URL": double.amqp_url, "CITRINEOS_EXCHANGE": double.exchange,
                  "STATION_IDS": ",".join(self.stations), "SITE_POWER_LIMIT_KW": str(site_kw),
                  "CITRINEOS_ANSWER_TIMEOUT_S": "3", "CITRINEOS_HTTP_TIMEOUT_S": "1",
                  "CITRINEOS_RETRY_BUDGET_S": "2", "CITRINEOS_RETRY_INITIAL_S": "0.1",
                  "CITRINEOS_RETRY_MAX_S": "0.4", "CHARGING_RATE_UNIT": "A", **extra}
        self.settings = Settings(station_groups=("default",), site_power_limit_kw=site_kw, voltage=VOLTS,
                                 charging_rate_unit=ChargingRateUnit.A, resolution_s=60, horizon_s=60 * 60,
                                 interval_s=60.0, values=values)
        for station in self.stations:
            self.log.add_station(station, connectors)
            cp = TestChargePoint(station, double.ws_url, id_tag=f"TAG-{station}",
                                 profile_policy=self.log.policy(station, self._rule(station)))
            loop.run(cp.connect())
            loop.run(cp.boot())
            for c in range(connectors + 1):
                loop.run(cp.status("Available", connector_id=c))
            self.cps[station] = cp

    def _rule(self, station: str) -> Rule:
        return lambda payload: self.rules[station](payload) if station in self.rules else None

    def arrive(self, station: str) -> None:
        cp = self.cps[station]
        tx = self.loop.run(cp.start_session(meter_start_wh=5000, boot=False))
        self.log.session(station, cp.connector_id, tx, self.clock.now())

    def open(self) -> CitrineOSTranslation:
        t = CitrineOSTranslation(CitrineOSConfig.from_settings(self.settings), clock=self.clock.now)
        t.setup()
        assert t.listener is not None and t.listener.wait_ready(10)
        self.translations.append(t)
        self.scheduler = Scheduler(t, EqualShareAlgorithm(), self.settings, clock=self.clock)
        return t

    def cycle(self, reason: str = "timer") -> dict[str, SendOutcome]:
        self.clock.advance(60)
        report = self.scheduler.run_cycle(reason)
        return report.groups["default"].outcomes

    def car_kw(self, t: datetime) -> float:
        return sum(self.log.limit_a(s, c, t) for (s, c), spans in self.log.sessions.items()
                   if any(a <= t and (b is None or t < b) for _, a, b in spans)) * VOLTS / 1000

    def check(self, *, until: datetime | None = None) -> float:
        """Assert both invariants from the start to well after every profile lapsed; returns the peak."""
        end = until or self.clock.now() + timedelta(seconds=VALIDITY_S + 120)
        at, peak = self.log.worst(self.start, end)
        assert peak <= self.site_kw + 1e-6, f"{peak:.2f} kW in force at {at.isoformat()} on {self.site_kw} kW"
        longest = 0.0
        for station, connector in self.log.sessions:
            held = self.log.longest_zero_s(station, connector, self.start, end)
            assert held <= VALIDITY_S + 1e-6, f"car on {station}#{connector} held at 0 A for {held:.0f} s"
            longest = max(longest, held)
        print(f"peak {peak:.2f} kW in force on {self.site_kw:g} kW over {len(self.log.boundaries(self.start, end))} "
              f"instants; longest a car was at 0 A: {longest:.0f} s")
        return peak

    def close(self) -> None:
        for t in self.translations:
            t.teardown()
        for cp in self.cps.values():
            if cp.connected:
                self.loop.run(cp.close())


@pytest.fixture
def sites(citrineos_double: CitrineOSDouble, loop: LoopThread) -> Iterator[Callable[..., Site]]:
    made: list[Site] = []

    def make(n: int, site_kw: float, **kw: Any) -> Site:
        site = Site(citrineos_double, loop, n, site_kw, **kw)
        made.append(site)
        return site

    yield make
    citrineos_double.heal()
    for site in made:
        site.close()


@pytest.mark.parametrize("refusal", ["Rejected", "CallError", "offline"])
def test_a_refused_reduction_never_lets_the_increase_through(sites: Callable[..., Site], refusal: str) -> None:
    site = sites(2, 10.0)
    a, b = site.stations
    site.arrive(a)
    site.open()
    site.cycle()
    site.cycle()  # B's idle connector is held now: A at its 7.2 kW max
    assert site.log.limit_a(a, 1, site.clock.now()) == 30.0
    if refusal == "offline":
        site.double.disconnect(a)
        site.loop.run(site.cps[a].wait_closed(10))
    else:
        answer = ProfileAnswer.rejected() if refusal == "Rejected" else ProfileAnswer.call_error()
        site.rules[a] = lambda p: answer if (limit := tx_limit(p)) is not None and limit < 30 else None
    site.arrive(b)
    outcomes = site.cycle("B starts")
    assert outcomes[f"{a}:1"] is not SendOutcome.APPLIED
    site.cycle()
    assert site.check() <= 10.0


def test_a_hold_that_is_not_renewed_is_counted(sites: Callable[..., Site]) -> None:
    site = sites(3, 10.0, connectors=2)
    for s in site.stations:
        site.arrive(s)
    site.open()
    for _ in range(2):
        site.cycle()
    held = site.stations[0]
    site.rules[held] = lambda p: (ProfileAnswer.rejected() if p["csChargingProfiles"]["chargingProfileId"] == 8999
                                  else None)
    for _ in range(5):
        site.cycle()
    site.check()


def _sql(double: CitrineOSDouble, statement: str, *args: Any) -> None:
    with psycopg.connect(double.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(double.schema)))
        conn.execute(statement, args)  # type: ignore[arg-type]


@pytest.mark.parametrize("damage", ["connector", "multiplier"])
def test_an_unreadable_session_counts_at_its_worst_case(sites: Callable[..., Site], damage: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    site = sites(3, 15.0)
    for s in site.stations:
        site.arrive(s)
    site.open()
    site.cycle()
    broken = site.stations[1]
    if damage == "connector":
        _sql(site.double, 'UPDATE "Transactions" SET "connectorId" = NULL WHERE "stationId" = %s', broken)
    else:
        site.loop.run(site.cps[broken].send_meter_values(power_w=3000))
        _sql(site.double, """UPDATE "MeterValues" SET "sampledValue" = '[{"value": 5, "measurand":
             "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh", "multiplier": 309}}]'::json
             WHERE "transactionDatabaseId" IN (SELECT id FROM "Transactions" WHERE "stationId" = %s)""", broken)
    caplog.set_level(logging.WARNING, "optivgi_citrineos")
    for _ in range(5):
        outcomes = site.cycle()
        assert f"{broken}:1" not in outcomes and len(outcomes) == 2  # the others are still planned
    assert f"session {broken}:1 skipped" in caplog.text
    assert ("Connector.connectorId" if damage == "connector" else "MeterValues.sampledValue") in caplog.text
    site.check()


@pytest.mark.parametrize("override", ["", "1"])
def test_the_fallback_share_counts_every_connector_seen(sites: Callable[..., Site], override: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "optivgi_citrineos")
    extra = {"CITRINEOS_CONNECTORS_PER_STATION": override} if override else {}
    site = sites(2, 20.0, connectors=2, **extra)
    for s in site.stations:
        site.arrive(s)
    t = site.open()
    for _ in range(3):
        site.cycle()
    assert t.census.count("default") == 4
    # Long after the last TxProfile lapsed, four connectors on their fallback share fit in 20 kW.
    later = site.clock.now() + timedelta(seconds=VALIDITY_S * 3)
    assert site.log.site_kw(later) <= 20.0
    assert site.log.limit_a(site.stations[0], 2, later) == 20.8  # 5 kW at 240 V, rounded down
    if override:
        assert all(f"station {s}" in caplog.text for s in site.stations)
    site.check(until=later)


def test_a_restart_with_the_read_back_failing_sends_no_increase_first(sites: Callable[..., Site]) -> None:
    site = sites(2, 10.0)
    a, b = site.stations
    site.arrive(a)
    first = site.open()
    site.cycle()
    site.cycle()
    assert site.log.limit_a(a, 1, site.clock.now()) == 30.0
    first.teardown()
    site.translations.remove(first)
    site.double.graphql_faults.fail_next(3, 503)
    site.open()
    site.arrive(b)
    for _ in range(3):
        site.cycle()
    site.check()


@pytest.mark.parametrize("answer_s", [0.0, 1.0])
def test_a_restart_after_lapsed_profiles_never_drops_below_the_fallback(sites: Callable[..., Site],
                                                                        answer_s: float) -> None:
    # answer_s: chargers that take a second to answer, so the double's per-station call lock
    # (one call in flight, like CitrineOS's) holds every further call to a station meanwhile.
    site = sites(6, 30.0, connectors=2)
    for s in site.stations:
        site.arrive(s)
        if answer_s:
            site.rules[s] = lambda p: ProfileAnswer.accepted(delay_s=answer_s)
    first = site.open()
    site.cycle()
    site.cycle()
    first.teardown()
    site.translations.remove(first)
    site.clock.advance(VALIDITY_S + 100)  # killed; restarted 280 s later, every car on its fallback
    restart = site.clock.now()
    fallback_total = site.car_kw(restart)
    assert fallback_total == pytest.approx(6 * 10.4 * VOLTS / 1000)  # 30 kW / 12 connectors = 10.4 A each
    site.open()
    site.cycle()
    site.cycle()
    done = site.clock.now()
    for t in site.log.boundaries(restart, done):
        assert site.car_kw(t) >= fallback_total - 1e-6, f"cars below their fallback total at {t.isoformat()}"
    assert site.car_kw(done) >= 30.0 * 0.99  # the full limit within two cycles
    site.check()


def test_unanswered_profiles_do_not_starve_the_confirmed_car(sites: Callable[..., Site]) -> None:
    site = sites(6, 30.0)
    for s in site.stations:
        site.arrive(s)
    site.open()
    slow = ProfileAnswer.accepted(delay_s=4.0)  # after the 3 s answer timeout
    for s in site.stations[1:]:
        site.rules[s] = lambda p: slow if tx_limit(p) is not None else None
    outcomes = site.cycle()
    assert outcomes[f"{site.stations[0]}:1"] is SendOutcome.APPLIED
    assert sum(o is SendOutcome.UNANSWERED for o in outcomes.values()) == 5
    assert site.log.limit_a(site.stations[0], 1, site.clock.now()) > 0
    for _ in range(4):  # still unanswered in time: the confirmed car is never sent 0
        site.cycle()
        assert site.log.limit_a(site.stations[0], 1, site.clock.now()) > 0
    site.check()


def test_a_car_whose_profile_keeps_failing_gets_its_fallback_share(sites: Callable[..., Site]) -> None:
    site = sites(2, 10.0, connectors=2)
    site.arrive(site.stations[0])
    site.open()
    site.cycle()
    site.cycle()  # both stations now hold their idle connectors at 0
    newcomer = site.stations[1]
    site.rules[newcomer] = lambda p: ProfileAnswer.rejected() if tx_limit(p) is not None else None
    site.arrive(newcomer)
    for _ in range(6):
        site.cycle()
    assert site.log.limit_a(newcomer, 1, site.clock.now()) > 0
    site.check()
