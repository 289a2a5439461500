"""Fail-safe behaviour of the CitrineOS translation against the double, real RabbitMQ and real chargers.

Whatever fails, the limits sent must never add up to more than the site limit:

- every station gets a fallback TxDefaultProfile (connector 0, stack level 0) sharing the site
  limit among all connectors, and TxProfiles carry a ``validTo``, so a dead optimizer leaves the
  chargers on the safe share;
- CSMS faults (5xx, hangs, refused connections, bodies that are not JSON) are retried within a
  per-cycle budget, never crash a cycle, and the next cycle after healing catches up.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread

from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.config import Settings
from optivgi.loop import Scheduler
from optivgi.models.ev import ChargingRateUnit
from optivgi.translation import SendOutcome
from optivgi_citrineos.translation import CitrineOSTranslation

VOLTS = 240.0


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as thread:
        yield thread


def new_stations(n: int, prefix: str = "FS") -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"{prefix}{tag}-{i + 1:02d}" for i in range(n)]


def settings_for(double: CitrineOSDouble, stations: list[str], site_kw: float, **extra: str) -> Settings:
    values = {
        "CITRINEOS_API_URL": double.rest_url,
        "HASURA_URL": double.graphql_url,
        "AMQP_URL": double.amqp_url,
        "CITRINEOS_EXCHANGE": double.exchange,
        "STATION_IDS": ",".join(stations),
        "SITE_POWER_LIMIT_KW": str(site_kw),
        "CITRINEOS_ANSWER_TIMEOUT_S": "3",
        "CITRINEOS_HTTP_TIMEOUT_S": "0.5",
        "CITRINEOS_RETRY_BUDGET_S": "1.5",
        "CITRINEOS_RETRY_INITIAL_S": "0.1",
        "CITRINEOS_RETRY_MAX_S": "0.4",
        "CHARGING_RATE_UNIT": "A",
    }
    for i, _ in enumerate(stations, start=1):
        values[f"CONN_{i:02d}_ENERGY_NEEDED_KWH"] = "30"
        values[f"CONN_{i:02d}_MAX_POWER_KW"] = "7.2"
    values.update(extra)
    return Settings(
        station_groups=("default",),
        site_power_limit_kw=site_kw,
        voltage=VOLTS,
        charging_rate_unit=ChargingRateUnit.A,
        resolution_s=60,
        horizon_s=60 * 480,
        interval_s=60.0,
        values=values,
    )


def start_chargers(double: CitrineOSDouble, loop: LoopThread, stations: list[str]) -> dict[str, TestChargePoint]:
    cps: dict[str, TestChargePoint] = {}
    for station in stations:
        cp = TestChargePoint(station, double.ws_url, id_tag=f"TAG-{station}")
        loop.run(cp.connect())
        loop.run(cp.start_session(meter_start_wh=5000))
        cps[station] = cp
    return cps


def received(cp: TestChargePoint, purpose: str) -> list[dict[str, Any]]:
    """The csChargingProfiles of one purpose the charger received, oldest first."""
    return [
        r.payload["csChargingProfiles"]
        for r in list(cp.received)
        if r.action == "SetChargingProfile"
        and r.payload.get("csChargingProfiles", {}).get("chargingProfilePurpose") == purpose
    ]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def effective_limit(cp: TestChargePoint, at: datetime, connector: int = 1) -> float | None:
    """The limit [A] the charger applies at ``at`` on ``connector``, by OCPP 1.6's rules.

    A profile replaces an earlier one with the same chargingProfileId; a TxProfile valid at ``at``
    overrides every TxDefaultProfile; within a purpose the highest stackLevel wins.
    """
    by_id: dict[int, dict[str, Any]] = {}
    for payload in [r.payload for r in list(cp.received) if r.action == "SetChargingProfile"]:
        if payload["connectorId"] in (0, connector):
            by_id[payload["csChargingProfiles"]["chargingProfileId"]] = payload["csChargingProfiles"]

    def valid(p: dict[str, Any]) -> bool:
        return "validTo" not in p or _time(p["validTo"]) > at

    for purpose in ("TxProfile", "TxDefaultProfile"):
        candidates = [p for p in by_id.values() if p["chargingProfilePurpose"] == purpose and valid(p)]
        if candidates:
            best = max(candidates, key=lambda p: p["stackLevel"])
            schedule = best["chargingSchedule"]
            offset = (at - _time(schedule["startSchedule"])).total_seconds()
            limit = schedule["chargingSchedulePeriod"][0]["limit"]
            for period in schedule["chargingSchedulePeriod"]:
                if period["startPeriod"] <= offset:
                    limit = period["limit"]
            return float(limit)
    return None


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """Translations and charge points to close after the test."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        if isinstance(item, CitrineOSTranslation):
            item.teardown()


def open_translation(settings: Settings, opened: list[Any], **kw: Any) -> CitrineOSTranslation:
    t = CitrineOSTranslation.from_settings(settings, **kw)
    t.setup()
    opened.append(t)
    assert t.listener is not None and t.listener.wait_ready(10), "the run's RabbitMQ is not reachable"
    return t


def close_chargers(loop: LoopThread, cps: dict[str, TestChargePoint]) -> None:
    for cp in cps.values():
        if cp.connected:
            loop.run(cp.close())


# -- fallback and validity -------------------------------------------------------------------


def test_fallback_outlives_the_optimizer(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any]
) -> None:
    stations = new_stations(3)
    cps = start_chargers(citrineos_double, loop, stations)
    try:
        # 3 stations x 2 connectors share 30 kW: 5 kW = 20.8 A each under the fallback.
        settings = settings_for(citrineos_double, stations, 30.0, CITRINEOS_CONNECTORS_PER_STATION="2")
        t = open_translation(settings, opened)
        for station, cp in cps.items():
            assert t.fallback_installed(station)
            (fallback,) = [p for p in received(cp, "TxDefaultProfile") if p["stackLevel"] == 0]
            assert fallback["stackLevel"] == 0 and fallback["chargingProfileId"] == 9000
            assert "transactionId" not in fallback and "validTo" not in fallback
            assert "duration" not in fallback["chargingSchedule"]
            assert fallback["chargingSchedule"]["chargingSchedulePeriod"] == [
                {"startPeriod": 0, "limit": 20.8, "numberPhases": 1}
            ]
        assert [r.payload["connectorId"] for r in cps[stations[0]].received if r.action == "SetChargingProfile"] == [0]

        report = Scheduler(t, EqualShareAlgorithm(), settings).run_cycle("test")
        sent_at = datetime.now(UTC)
        assert report.groups["default"].outcomes == {f"{s}:1": SendOutcome.APPLIED for s in stations}
        for cp in cps.values():
            (tx,) = received(cp, "TxProfile")
            assert tx["stackLevel"] == 1
            # validTo = send time + 3 x INTERVAL_S (60 s)
            lapse = _time(tx["validTo"])
            assert timedelta(seconds=175) < lapse - sent_at <= timedelta(seconds=181)
            # The hold: a zero default one level above the fallback, sent only once the station's
            # car runs a TxProfile it accepted (so the hold stops no car), lapsing with or after it.
            (hold,) = [p for p in received(cp, "TxDefaultProfile") if p["stackLevel"] == 1]
            assert hold["chargingProfileId"] == 8999
            assert hold["chargingSchedule"]["chargingSchedulePeriod"] == [
                {"startPeriod": 0, "limit": 0.0, "numberPhases": 1}
            ]
            assert lapse <= _time(hold["validTo"]) <= lapse + timedelta(seconds=30)
            order = [r.payload["csChargingProfiles"]["chargingProfileId"] for r in cp.received
                     if r.action == "SetChargingProfile"]
            assert order == [9000, 9001, 8999]
        # While opti-vgi runs, a session starting on the idle connector 2 waits at 0 for its profile
        # instead of adding its 20.8 A share on top of the TxProfiles.
        idle = [effective_limit(cp, sent_at + timedelta(seconds=1), connector=2) for cp in cps.values()]
        assert idle == [0.0, 0.0, 0.0]
        # The first cycle after a start counts each idle connector at its 20.8 A fallback share (it
        # was not held yet), so the cars get 30 kW - 3 x 5 kW shared: 20.8 A each.
        now = [effective_limit(cp, sent_at + timedelta(seconds=1)) for cp in cps.values()]
        assert now == [20.8, 20.8, 20.8]
        # The next cycle, with the idle connectors held at 0: each EV at its 7.2 kW max (30 A).
        report = Scheduler(t, EqualShareAlgorithm(), settings).run_cycle("test")
        sent_at = datetime.now(UTC)
        assert report.groups["default"].outcomes == {f"{s}:1": SendOutcome.APPLIED for s in stations}
        now = [effective_limit(cp, sent_at + timedelta(seconds=1)) for cp in cps.values()]
        assert now == [30.0, 30.0, 30.0]
        lapse = max(_time(received(cp, "TxProfile")[-1]["validTo"]) for cp in cps.values())
        # opti-vgi dies: once the TxProfiles lapse, every charger is back on the 20.8 A share.
        later = [effective_limit(cp, lapse + timedelta(seconds=1)) for cp in cps.values()]
        assert later == [20.8, 20.8, 20.8]
        assert sum(later) * VOLTS / 1000 * 2 <= 30.0  # two connectors per station

        # The double stored both (ChargingProfiles), and a new process reads them back.
        fresh = CitrineOSTranslation.from_settings(settings)
        held = fresh.read_profiles_in_force()
        fresh.teardown()
        for station in stations:
            summary = sorted((p.connector_id, p.purpose, p.stack_level, p.limit) for p in held[station])
            assert summary == [(0, "TxDefaultProfile", 0, 20.8), (0, "TxDefaultProfile", 1, 0.0),
                               (1, "TxProfile", 1, 30.0)]
    finally:
        close_chargers(loop, cps)


def test_fallback_is_installed_on_first_sight(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any]
) -> None:
    stations = new_stations(2)
    cps = start_chargers(citrineos_double, loop, stations[:1])
    try:
        t = open_translation(settings_for(citrineos_double, stations, 12.0), opened)
        assert t.fallback_installed(stations[0]) and not t.fallback_installed(stations[1])
        # The second station connects later; its BootNotification/StatusNotification on RabbitMQ
        # makes the next cycle install its fallback (12 kW / 2 connectors = 6 kW = 25 A).
        cps.update(start_chargers(citrineos_double, loop, stations[1:]))
        # Without the event the next try would wait 30 s (the retry pause after the failed try).
        wait_for(lambda: (t.get_evs("default"), t.fallback_installed(stations[1]))[1], 5, "the fallback")
        (fallback,) = received(cps[stations[1]], "TxDefaultProfile")
        assert fallback["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 25.0
        assert len(received(cps[stations[0]], "TxDefaultProfile")) == 1  # not sent again
    finally:
        close_chargers(loop, cps)


def test_fallback_off_sends_no_default_and_no_valid_to(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any]
) -> None:
    stations = new_stations(1)
    cps = start_chargers(citrineos_double, loop, stations)
    try:
        settings = settings_for(
            citrineos_double, stations, 12.0, CITRINEOS_FALLBACK="off", CITRINEOS_PROFILE_VALIDITY_S="0"
        )
        t = open_translation(settings, opened)
        report = Scheduler(t, EqualShareAlgorithm(), settings).run_cycle("test")
        assert set(report.groups["default"].outcomes.values()) == {SendOutcome.APPLIED}
        cp = cps[stations[0]]
        assert received(cp, "TxDefaultProfile") == []
        (tx,) = received(cp, "TxProfile")
        assert "validTo" not in tx
    finally:
        close_chargers(loop, cps)


# -- CSMS faults -----------------------------------------------------------------------------


def latest_tx_limits(cps: dict[str, TestChargePoint]) -> list[float]:
    return [
        received(cp, "TxProfile")[-1]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] for cp in cps.values()
    ]


def assert_never_above(cps: dict[str, TestChargePoint], site_kw: float, ev_max_a: float = 30.0) -> None:
    """No TxProfile above the EV's max, and the latest ones together within the site limit."""
    for cp in cps.values():
        for payload in received(cp, "TxProfile"):
            for period in payload["chargingSchedule"]["chargingSchedulePeriod"]:
                assert 0 <= period["limit"] <= ev_max_a
    assert sum(latest_tx_limits(cps)) * VOLTS / 1000 <= site_kw


def test_csms_faults_are_retried_and_the_next_cycle_catches_up(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    stations = new_stations(2)
    cps = start_chargers(citrineos_double, loop, stations)
    faults = citrineos_double.rest_faults
    try:
        # 10 kW for two 7.2 kW EVs: 5 kW = 20.8 A each (rounded down).
        settings = settings_for(citrineos_double, stations, 10.0)
        t = open_translation(settings, opened)
        scheduler = Scheduler(t, EqualShareAlgorithm(), settings)
        report = scheduler.run_cycle("baseline")
        assert set(report.groups["default"].outcomes.values()) == {SendOutcome.APPLIED}
        assert latest_tx_limits(cps) == [20.8, 20.8]
        sent = sum(len(received(cp, "TxProfile")) for cp in cps.values())

        # 1. 503 for three cycles: every attempt fails, the cycles finish, nothing is sent.
        faults.fail_next(1000, 503)
        t0 = time.monotonic()
        for _ in range(3):
            report = scheduler.run_cycle("5xx")
            outcomes = report.groups["default"].outcomes
            assert set(outcomes.values()) == {SendOutcome.FAILED}
            assert "CitrineOS answered HTTP 503" in t.last_reasons[f"{stations[0]}:1"]
            assert "gave up after" in t.last_reasons[f"{stations[0]}:1"]
        elapsed = time.monotonic() - t0
        assert elapsed < 3 * (1.5 + 1.0)  # each cycle within its 1.5 s budget (+ the last attempt)
        assert sum(len(received(cp, "TxProfile")) for cp in cps.values()) == sent
        assert caplog.text.count("answered HTTP 503") >= 6  # retried, and logged with the reason
        faults.heal()
        report = scheduler.run_cycle("healed")
        assert set(report.groups["default"].outcomes.values()) == {SendOutcome.APPLIED}
        assert latest_tx_limits(cps) == [20.8, 20.8]

        # 2. A request held past the 0.5 s timeout is retried within the cycle.
        faults.hang_next(1, 2.0)
        t0 = time.monotonic()
        report = scheduler.run_cycle("hang")
        hang_cycle_s = time.monotonic() - t0
        assert set(report.groups["default"].outcomes.values()) == {SendOutcome.APPLIED}
        assert 0.5 <= hang_cycle_s < 2.0

        # 3. Refused connections: failed within the budget; the next cycle after healing catches up.
        faults.refuse()
        report = scheduler.run_cycle("refused")
        assert set(report.groups["default"].outcomes.values()) == {SendOutcome.FAILED}
        assert "unreachable: ConnectError" in t.last_reasons[f"{stations[1]}:1"]
        faults.heal()
        report = scheduler.run_cycle("healed")
        assert set(report.groups["default"].outcomes.values()) == {SendOutcome.APPLIED}

        # 4. Hasura down for a cycle: the group's cycle fails (nothing sent), the loop carries on.
        citrineos_double.graphql_faults.refuse()
        report = scheduler.run_cycle("hasura down")
        assert report.groups["default"].error is not None and "Hasura" in report.groups["default"].error
        citrineos_double.graphql_faults.heal()
        citrineos_double.graphql_faults.fail_next(2, 502)  # two 502s are absorbed by retries
        report = scheduler.run_cycle("hasura flaky")
        assert report.ok and set(report.groups["default"].outcomes.values()) == {SendOutcome.APPLIED}
        assert_never_above(cps, 10.0)
        print(f"5xx: 3 cycles in {elapsed:.2f} s; hang: cycle {hang_cycle_s:.2f} s")
    finally:
        citrineos_double.heal()
        close_chargers(loop, cps)


class _NotJsonFirst(httpx.BaseTransport):
    """Answers the first ``n`` SetChargingProfile POSTs with an HTML page (a proxy error page),
    passes everything else to the real double. The double cannot produce a body that is not JSON."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.left and request.url.path.endswith("/setChargingProfile"):
            self.left -= 1
            return httpx.Response(200, content=b"<html>502 Bad Gateway</html>", headers={"content-type": "text/html"})
        return self.real.handle_request(request)


def test_a_body_that_is_not_json_is_retried(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any]
) -> None:
    stations = new_stations(1)
    cps = start_chargers(citrineos_double, loop, stations)
    try:
        settings = settings_for(citrineos_double, stations, 12.0, CITRINEOS_FALLBACK="off")
        transport = _NotJsonFirst(2)
        t = open_translation(settings, opened, client=httpx.Client(transport=transport))
        report = Scheduler(t, EqualShareAlgorithm(), settings).run_cycle("test")
        assert report.groups["default"].outcomes == {f"{stations[0]}:1": SendOutcome.APPLIED}
        assert transport.left == 0
        assert latest_tx_limits(cps) == [30.0]
    finally:
        close_chargers(loop, cps)


def test_one_stations_failure_does_not_stop_the_others(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    stations = new_stations(2)
    cps = start_chargers(citrineos_double, loop, stations)
    try:
        settings = settings_for(citrineos_double, stations, 12.0)
        t = open_translation(settings, opened)
        citrineos_double.disconnect(stations[0])
        loop.run(cps[stations[0]].wait_closed(10))
        wait_for(lambda: stations[0] not in citrineos_double.connected_stations(), 5, "the double to drop it")
        caplog.set_level(logging.WARNING, "optivgi_citrineos")
        report = Scheduler(t, EqualShareAlgorithm(), settings).run_cycle("test")
        assert report.groups["default"].outcomes == {
            f"{stations[0]}:1": SendOutcome.REJECTED,
            f"{stations[1]}:1": SendOutcome.APPLIED,
        }
        assert f"No connection found for identifier: 1:{stations[0]}" in caplog.text
    finally:
        close_chargers(loop, cps)


def test_a_new_session_gets_its_profile_only_after_the_others_are_reduced(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any]
) -> None:
    stations = new_stations(3)
    cps = start_chargers(citrineos_double, loop, stations[:2])
    newcomer = TestChargePoint(stations[2], citrineos_double.ws_url, id_tag=f"TAG-{stations[2]}")
    loop.run(newcomer.connect())
    cps[stations[2]] = newcomer
    try:
        # 15 kW: two 7.2 kW EVs fit (30 A each); with a third all three get 5.0 kW (20.8 A).
        settings = settings_for(citrineos_double, stations, 15.0)
        t = open_translation(settings, opened)
        scheduler = Scheduler(t, EqualShareAlgorithm(), settings)
        # The first cycle counts the idle third station at its fallback share (5 kW); the second,
        # with it held at 0, gives the two cars their max.
        scheduler.run_cycle("two")
        scheduler.run_cycle("two, held")
        assert [received(cps[s], "TxProfile")[-1]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
                for s in stations[:2]] == [30.0, 30.0]
        loop.run(newcomer.start_session(meter_start_wh=5000))
        started = time.monotonic()
        # Under the hold, the newcomer draws nothing until its own profile comes.
        assert effective_limit(newcomer, datetime.now(UTC)) == 0.0
        scheduler.run_cycle("three")
        assert latest_tx_limits(cps) == [20.8, 20.8, 20.8]

        def tx_times(cp: TestChargePoint) -> list[float]:
            return [r.at for r in cp.received if r.action == "SetChargingProfile"
                    and r.payload["csChargingProfiles"]["chargingProfilePurpose"] == "TxProfile"]

        reduced_at = max(tx_times(cps[s])[-1] for s in stations[:2])
        early = [r.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
                 for r in newcomer.received if r.action == "SetChargingProfile" and r.at < reduced_at
                 and r.payload["csChargingProfiles"]["chargingProfilePurpose"] == "TxProfile"]
        # Before the reductions were answered, only what fits next to the others' old 30 A went out.
        assert all((2 * 30.0 + limit) * VOLTS / 1000 <= 15.0 for limit in early), early
        assert tx_times(newcomer)[-1] >= reduced_at, "the newcomer's full increase came before the reductions"
        assert time.monotonic() - started < 10
    finally:
        close_chargers(loop, cps)
