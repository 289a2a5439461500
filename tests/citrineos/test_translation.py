"""CitrineOSTranslation end to end against the CitrineOS test double.

Real HTTP on 127.0.0.1 (REST and GraphQL of the double), real OCPP 1.6J websockets (the test
charge points), real PostgreSQL behind the double and the run's RabbitMQ broker.
Every test uses its own station ids, so tests do not see each other's sessions or messages.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pika
import pytest
from citrineos_testdouble import CitrineOSDouble, ProfileAnswer, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread

from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.config import Settings
from optivgi.models.ev import EV, ChargingRateUnit
from optivgi.models.profile import ChargingProfile
from optivgi.models.site import SiteConstraints
from optivgi.planner import build_problem, plan
from optivgi.translation import SendOutcome
from optivgi_citrineos.translation import CitrineOSTranslation

RESOLUTION_S = 60
N_STEPS = 480


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as thread:
        yield thread


def new_stations(n: int, prefix: str = "TR") -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"{prefix}{tag}-{i + 1:02d}" for i in range(n)]


def settings_for(double: CitrineOSDouble, stations: list[str], **extra: str) -> Settings:
    values = {
        "CITRINEOS_API_URL": double.rest_url,
        "HASURA_URL": double.graphql_url,
        "AMQP_URL": double.amqp_url,
        "CITRINEOS_EXCHANGE": double.exchange,
        "CITRINEOS_TENANT_ID": str(double.tenant_id),
        "STATION_IDS": ",".join(stations),
        "SITE_POWER_LIMIT_KW": "30",
        "CITRINEOS_ANSWER_TIMEOUT_S": "5",
        "CITRINEOS_HTTP_TIMEOUT_S": "5",
    }
    for i, _ in enumerate(stations, start=1):
        values[f"CONN_{i:02d}_ENERGY_NEEDED_KWH"] = "30"
        values[f"CONN_{i:02d}_MAX_POWER_KW"] = "7.2"
        values[f"CONN_{i:02d}_MIN_POWER_KW"] = "1.4"
    values.update(extra)
    return Settings(
        station_groups=("default",),
        site_power_limit_kw=float(values["SITE_POWER_LIMIT_KW"]),
        voltage=240.0,
        charging_rate_unit=ChargingRateUnit.A,
        resolution_s=RESOLUTION_S,
        horizon_s=RESOLUTION_S * N_STEPS,
        values=values,
    )


class Site:
    """Charge points with one running session each."""

    def __init__(
        self,
        double: CitrineOSDouble,
        loop: LoopThread,
        stations: list[str],
        answers: dict[int, ProfileAnswer] | None = None,
    ) -> None:
        self.loop = loop
        self.cps: dict[str, TestChargePoint] = {}
        for i, station in enumerate(stations):
            tag = f"TAG-{station}"
            double.seed_id_tag(tag)
            cp = TestChargePoint(station, double.ws_url, id_tag=tag, profile_answers=dict(answers or {}))
            loop.run(cp.connect())
            loop.run(cp.start_session(meter_start_wh=5000))
            # i kWh delivered so far
            loop.run(cp.send_meter_values(energy_wh=5000 + 1000 * i, power_w=7200, current_a=30.0))
            self.cps[station] = cp

    def profiles_received(self, station: str, purpose: str = "TxProfile") -> list[dict[str, Any]]:
        """SetChargingProfile payloads of one purpose (the fallback TxDefaultProfile is separate)."""
        return [
            r.payload
            for r in self.cps[station].received
            if r.action == "SetChargingProfile"
            and r.payload.get("csChargingProfiles", {}).get("chargingProfilePurpose") == purpose
        ]

    def close(self) -> None:
        for cp in self.cps.values():
            self.loop.run(cp.close())


@pytest.fixture
def site_factory(citrineos_double: CitrineOSDouble, loop: LoopThread) -> Iterator[Any]:
    sites: list[Site] = []

    def make(stations: list[str], answers: dict[int, ProfileAnswer] | None = None) -> Site:
        site = Site(citrineos_double, loop, stations, answers)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()


@pytest.fixture
def translations() -> Iterator[list[CitrineOSTranslation]]:
    made: list[CitrineOSTranslation] = []
    yield made
    for t in made:
        t.teardown()


def open_translation(settings: Settings, made: list[CitrineOSTranslation], **kw: Any) -> CitrineOSTranslation:
    t = CitrineOSTranslation.from_settings(settings, **kw)
    t.setup()
    made.append(t)
    if t.config.amqp_url is not None:
        assert t.listener is not None and t.listener.wait_ready(10), "the run's RabbitMQ is not reachable"
    return t


def loop_profiles(
    evs: list[EV], limits: Any, now: datetime, unit: ChargingRateUnit = ChargingRateUnit.A, voltage: float = 240.0
) -> dict[EV, ChargingProfile]:
    """What the scheduling loop does: plan, keep ``ev.power``, one TxProfile per EV."""
    problem = build_problem(evs, SiteConstraints(limits), now, resolution_s=RESOLUTION_S, n_steps=N_STEPS)
    schedule = plan(problem, EqualShareAlgorithm())
    out: dict[EV, ChargingProfile] = {}
    for ev in evs:
        ev.power = [float(p) for p in schedule.row(str(ev.ev_id))]
        out[ev] = ChargingProfile.from_power(
            ev.power,
            start=now,
            resolution_s=RESOLUTION_S,
            unit=unit,
            voltage=ev.voltage or voltage,
            phases=ev.phases,
            transaction_id=ev.transaction_id,
        )
    return out


def flat_profiles(evs: list[EV], amps: float, now: datetime) -> dict[EV, ChargingProfile]:
    return {
        ev: ChargingProfile.from_power(
            [amps * 240 / 1000],
            start=now,
            resolution_s=RESOLUTION_S,
            unit="A",
            voltage=240,
            transaction_id=ev.transaction_id,
        )
        for ev in evs
    }


# -- happy path ------------------------------------------------------------------------------


def test_six_sessions_share_a_30_kw_site(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(6)
    site = site_factory(stations)
    t = open_translation(settings_for(citrineos_double, stations), translations)

    evs, voltage = t.get_evs("default")
    assert voltage == 240.0
    assert sorted(str(ev.ev_id) for ev in evs) == sorted(f"{s}:1" for s in stations)  # tx 1 on every station
    by_station = {str(ev.station_id): ev for ev in evs}
    for i, station in enumerate(stations):
        ev = by_station[station]
        assert (ev.connector_id, ev.transaction_id, ev.active) == (1, "1", True)
        assert (ev.max_power, ev.min_power, ev.unit) == (7.2, 1.4, ChargingRateUnit.W)
        assert ev.energy == pytest.approx(30.0 - i)  # 30 kWh needed, i kWh delivered
    now = datetime.now(UTC)  # after every arrival read above, so each window starts at step 0
    limits = t.get_peak_power_demand("default", now, voltage)
    assert set(limits) == {30.0}

    profiles = loop_profiles(evs, limits, now)
    assert {p.first_limit for p in profiles.values()} == {20.8}  # 5.0 kW at 240 V, rounded down
    outcomes = t.send_power_to_evs(profiles, ChargingRateUnit.A)

    assert outcomes == {f"{s}:1": SendOutcome.APPLIED for s in stations}
    total_kw = 0.0
    for station in stations:
        (received,) = site.profiles_received(station)
        assert received["connectorId"] == 1
        prof = received["csChargingProfiles"]
        assert (prof["chargingProfileId"], prof["stackLevel"], prof["transactionId"]) == (9001, 1, 1)
        assert prof["chargingProfilePurpose"] == "TxProfile" and prof["chargingProfileKind"] == "Absolute"
        first = prof["chargingSchedule"]["chargingSchedulePeriod"][0]
        assert (first["startPeriod"], first["limit"]) == (0, 20.8)
        total_kw += first["limit"] * 240 / 1000
    assert total_kw == pytest.approx(29.952) and total_kw <= 30.0
    assert all("charger accepted" in t.last_reasons[f"{s}:1"] for s in stations)


def test_sql_read_path_gives_the_same_sessions(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(2)
    site_factory(stations)
    graphql = open_translation(settings_for(citrineos_double, stations, AMQP_URL=""), translations)
    dsn = f"{citrineos_double.dsn} options='-csearch_path={citrineos_double.schema}'"
    sql = open_translation(
        settings_for(citrineos_double, stations, AMQP_URL="", HASURA_URL="", CITRINEOS_DB_DSN=dsn), translations
    )
    assert sql.config.graphql_url is None

    def summary(t: CitrineOSTranslation) -> list[tuple[Any, ...]]:
        evs, _ = t.get_evs("default")
        return sorted((ev.ev_id, ev.connector_id, ev.transaction_id, round(ev.energy, 6)) for ev in evs)

    assert summary(sql) == summary(graphql) == [(f"{stations[0]}:1", 1, "1", 30.0), (f"{stations[1]}:1", 1, "1", 29.0)]


def test_groups_only_see_their_own_stations(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(3)
    site_factory(stations)
    settings = settings_for(
        citrineos_double,
        stations,
        STATION_GROUP_NORTH=stations[0],
        STATION_GROUP_SOUTH=f"{stations[1]},{stations[2]}",
        SITE_POWER_LIMIT_KW_SOUTH="11",
    )
    settings = Settings(
        **{
            **{
                f: getattr(settings, f)
                for f in ("site_power_limit_kw", "voltage", "charging_rate_unit", "resolution_s", "horizon_s", "values")
            },
            "station_groups": ("north", "south"),
        }
    )
    t = open_translation(settings, translations)
    north, _ = t.get_evs("north")
    south, _ = t.get_evs("south")
    assert [ev.ev_id for ev in north] == [f"{stations[0]}:1"]
    assert sorted(str(ev.ev_id) for ev in south) == [f"{stations[1]}:1", f"{stations[2]}:1"]
    assert set(t.get_peak_power_demand("north", datetime.now(UTC))) == {30.0}
    assert set(t.get_peak_power_demand("south", datetime.now(UTC))) == {11.0}
    assert t.get_evs("nowhere") == ([], 240.0)


def test_a_stop_seen_on_rabbitmq_hides_the_session_at_once(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(2)
    site_factory(stations)
    t = open_translation(settings_for(citrineos_double, stations), translations)
    reasons: list[str] = []
    arrived = threading.Event()

    def trigger(reason: str) -> None:
        reasons.append(reason)
        arrived.set()

    t.attach(trigger)
    assert len(t.get_evs("default")[0]) == 2

    # A StopTransaction as CitrineOS publishes it, before the database says anything.
    conn = pika.BlockingConnection(pika.URLParameters(citrineos_double.amqp_url))
    try:
        cid = str(uuid.uuid4())
        headers = {
            "origin": "cs",
            "eventGroup": "router",
            "action": "StopTransaction",
            "state": "1",
            "stationId": stations[0],
            "correlationId": cid,
            "tenantId": str(citrineos_double.tenant_id),
            "timestamp": "2026-11-24T00:17:09.284Z",
        }
        body = {
            "origin": "cs",
            "eventGroup": "router",
            "action": "StopTransaction",
            "state": 1,
            "context": {
                "stationId": stations[0],
                "correlationId": cid,
                "tenantId": citrineos_double.tenant_id,
                "timestamp": "2026-11-24T00:17:09.284Z",
            },
            "protocol": "ocpp1.6",
            "payload": {
                "meterStop": 6000,
                "timestamp": "2026-11-24T00:17:09.283Z",
                "transactionId": 1,
                "reason": "EVDisconnected",
            },
        }
        conn.channel().basic_publish(
            exchange=citrineos_double.exchange,
            routing_key="",
            body=json.dumps(body),
            properties=pika.BasicProperties(content_type="application/json", headers=headers, delivery_mode=1),
        )
    finally:
        conn.close()
    # The trigger runs after the session state was updated, so once it fired get_evs must agree.
    assert arrived.wait(10), "the StopTransaction did not arrive through RabbitMQ"
    assert reasons == [f"StopTransaction {stations[0]} tx 1"]
    evs, _ = t.get_evs("default")
    assert [ev.ev_id for ev in evs] == [f"{stations[1]}:1"]


# -- failures --------------------------------------------------------------------------------


def _ev(station: str, tx: str = "1", connector: int = 1) -> EV:
    now = datetime.now(UTC)
    return EV(
        ev_id=f"{station}:{tx}",
        station_id=station,
        connector_id=connector,
        arrival_time=now,
        departure_time=now.replace(year=now.year + 1),
        energy=10,
        max_power=7.2,
        voltage=240,
        transaction_id=tx,
    )


def test_unknown_station_is_rejected_with_citrineos_reason(
    citrineos_double: CitrineOSDouble, translations: list[CitrineOSTranslation]
) -> None:
    (station,) = new_stations(1, "NOPE")
    t = open_translation(settings_for(citrineos_double, [station]), translations)
    ev = _ev(station)
    outcomes = t.send_power_to_evs(flat_profiles([ev], 16.0, datetime.now(UTC)), ChargingRateUnit.A)
    assert outcomes == {ev.ev_id: SendOutcome.REJECTED}
    assert t.last_reasons[str(ev.ev_id)] == f"CitrineOS: No connection found for identifier: 1:{station}"


def test_offline_charger_is_rejected(
    citrineos_double: CitrineOSDouble, site_factory: Any, loop: LoopThread, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(2)
    site = site_factory(stations)
    t = open_translation(settings_for(citrineos_double, stations), translations)
    evs, _ = t.get_evs("default")
    assert len(evs) == 2
    citrineos_double.disconnect(stations[0])
    loop.run(site.cps[stations[0]].wait_closed(10))
    outcomes = t.send_power_to_evs(flat_profiles(evs, 16.0, datetime.now(UTC)), ChargingRateUnit.A)
    assert outcomes == {f"{stations[0]}:1": SendOutcome.REJECTED, f"{stations[1]}:1": SendOutcome.APPLIED}
    assert "No connection found for identifier" in t.last_reasons[f"{stations[0]}:1"]
    assert site.profiles_received(stations[0]) == []


def test_validation_error_of_citrineos_is_failed_with_its_message(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    # A 1.6 station given a 2.0.1-style (non-numeric) transaction id: CitrineOS's schema wants an integer.
    stations = new_stations(1)
    site = site_factory(stations)
    t = open_translation(settings_for(citrineos_double, stations), translations)
    ev = _ev(stations[0], tx="a03a85bbf1314b5e")
    outcomes = t.send_power_to_evs(flat_profiles([ev], 16.0, datetime.now(UTC)), ChargingRateUnit.A)
    assert outcomes == {ev.ev_id: SendOutcome.FAILED}
    assert t.last_reasons[str(ev.ev_id)] == (
        "CitrineOS refused the request (400 FST_ERR_VALIDATION): body/csChargingProfiles/transactionId must be integer"
    )
    assert site.profiles_received(stations[0]) == []


def test_charger_that_never_answers_is_unanswered(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(2)
    # A CALLERROR never reaches RabbitMQ; an answer 60 s late is dropped by CitrineOS after 30 s.
    site = site_factory(stations[:1], {9001: ProfileAnswer.call_error()})
    site_factory(stations[1:], {9001: ProfileAnswer.accepted(delay_s=60)})
    t = open_translation(settings_for(citrineos_double, stations, CITRINEOS_ANSWER_TIMEOUT_S="1.5"), translations)
    evs, _ = t.get_evs("default")
    outcomes = t.send_power_to_evs(flat_profiles(evs, 16.0, datetime.now(UTC)), ChargingRateUnit.A)
    assert outcomes == {f"{s}:1": SendOutcome.UNANSWERED for s in stations}
    for s in stations:
        reason = t.last_reasons[f"{s}:1"]
        assert "no charger answer within 1.5 s (request published as " in reason
    assert len(site.profiles_received(stations[0])) == 1  # it did reach the charger


def test_charger_that_rejects_is_rejected(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(2)
    site_factory(stations[:1], {9001: ProfileAnswer.rejected()})
    site_factory(stations[1:])
    t = open_translation(settings_for(citrineos_double, stations), translations)
    evs, _ = t.get_evs("default")
    outcomes = t.send_power_to_evs(flat_profiles(evs, 16.0, datetime.now(UTC)), ChargingRateUnit.A)
    assert outcomes == {f"{stations[0]}:1": SendOutcome.REJECTED, f"{stations[1]}:1": SendOutcome.APPLIED}
    assert t.last_reasons[f"{stations[0]}:1"] == "charger answered Rejected"


def test_server_errors_and_timeouts_are_failed(
    citrineos_double: CitrineOSDouble, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(2, "NOPE")
    # No retry budget: the first failure is final (retries are tested in test_failsafe.py).
    settings = settings_for(citrineos_double, stations, CITRINEOS_HTTP_TIMEOUT_S="0.5", CITRINEOS_RETRY_BUDGET_S="0")
    t = open_translation(settings, translations)
    ev = _ev(stations[0])
    citrineos_double.rest_faults.fail_next(1, 503)
    assert t.send_power_to_evs(flat_profiles([ev], 16.0, datetime.now(UTC))) == {ev.ev_id: SendOutcome.FAILED}
    assert t.last_reasons[str(ev.ev_id)].startswith("CitrineOS answered HTTP 503")
    citrineos_double.rest_faults.hang_next(1, seconds=3)
    assert t.send_power_to_evs(flat_profiles([ev], 16.0, datetime.now(UTC))) == {ev.ev_id: SendOutcome.FAILED}
    assert t.last_reasons[str(ev.ev_id)] == "CitrineOS did not answer within 0.5 s"
    citrineos_double.heal()


# -- the site limit --------------------------------------------------------------------------


def test_profiles_over_the_site_limit_are_never_sent(
    citrineos_double: CitrineOSDouble, site_factory: Any, translations: list[CitrineOSTranslation]
) -> None:
    stations = new_stations(6)
    site = site_factory(stations)
    t = open_translation(settings_for(citrineos_double, stations), translations)
    evs, _ = t.get_evs("default")
    # 6 x 30 A x 240 V = 43.2 kW on a 30 kW site.
    outcomes = t.send_power_to_evs(flat_profiles(evs, 30.0, datetime.now(UTC)), ChargingRateUnit.A)
    assert outcomes == {f"{s}:1": SendOutcome.FAILED for s in stations}
    assert "above the site limit of 30.000 kW" in t.last_reasons[f"{stations[0]}:1"]
    assert all(site.profiles_received(s) == [] for s in stations)
    # 6 x 20.8 A = 29.952 kW fits.
    outcomes = t.send_power_to_evs(flat_profiles(evs, 20.8, datetime.now(UTC)), ChargingRateUnit.A)
    assert set(outcomes.values()) == {SendOutcome.APPLIED}


def _translation_without_network(**extra: str) -> CitrineOSTranslation:
    values = {
        "CITRINEOS_API_URL": "http://127.0.0.1:9",
        "HASURA_URL": "http://127.0.0.1:9",
        "STATION_IDS": "A,B",
        "SITE_POWER_LIMIT_KW": "10",
        **extra,
    }
    return CitrineOSTranslation.from_settings(Settings(voltage=240.0, values=values))


def test_site_limit_is_checked_at_every_period_start() -> None:
    t = _translation_without_network()
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    a, b = _ev("A"), _ev("B")
    # A drops from 5 to 2 kW after 10 min, B rises from 5 to 6 kW after 5 min: 11 kW between 5 and 10 min.
    pa = ChargingProfile.from_power([5.0] * 10 + [2.0], start=now, resolution_s=60, unit="W", transaction_id="1")
    pb = ChargingProfile.from_power([5.0] * 5 + [6.0], start=now, resolution_s=60, unit="W", transaction_id="1")
    with pytest.raises(ValueError, match=r"allow 11\.000 kW at 2026-11-24T12:05:00\+00:00"):
        t.check_site_limit("default", [(a, pa), (b, pb)])
    pb_ok = ChargingProfile.from_power([5.0] * 10 + [6.0], start=now, resolution_s=60, unit="W", transaction_id="1")
    t.check_site_limit("default", [(a, pa), (b, pb_ok)])
    # Amps count with the EV's voltage: 2 x 20.8 A x 240 V = 9.984 kW fits under 10 kW, 2 x 21 A does not.
    amps = ChargingProfile.from_power([4.992], start=now, resolution_s=60, unit="A", voltage=240, transaction_id="1")
    t.check_site_limit("default", [(a, amps), (b, amps)])
    over = ChargingProfile.from_power([5.04], start=now, resolution_s=60, unit="A", voltage=240, transaction_id="1")
    with pytest.raises(ValueError, match="above the site limit"):
        t.check_site_limit("default", [(a, over), (b, over)])


def test_invalid_limits_are_refused_before_sending() -> None:
    from optivgi_citrineos.translation import check_request_body

    body = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 1,
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]},
        },
    }
    check_request_body(body)
    for period, message in (
        ({"startPeriod": 0, "limit": -5}, "limit must be >= 0"),
        ({"startPeriod": 0, "limit": 20.83}, "multiple of 0.1"),
        ({"startPeriod": 0, "limit": 5.8}, "multiple of 0.1"),  # 5.8 / 0.1 is not an integer in doubles
        ({"startPeriod": 0.0, "limit": 16}, "startPeriod must be an integer"),
        ({"startPeriod": 60, "limit": 16}, "must start at 0"),
    ):
        bad = json.loads(json.dumps(body))
        bad["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"] = [period]
        with pytest.raises(ValueError, match=message):
            check_request_body(bad)


def test_station_outside_every_group_is_not_sent() -> None:
    t = _translation_without_network()
    ev = _ev("ELSEWHERE")
    outcomes = t.send_power_to_evs(flat_profiles([ev], 16.0, datetime.now(UTC)))
    assert outcomes == {"ELSEWHERE:1": SendOutcome.FAILED}
    assert "in no configured group" in t.last_reasons["ELSEWHERE:1"]


def test_malformed_rows_are_skipped() -> None:
    """Hasura rows the double never produces (missing connector, bad meterStart) are logged, not fatal."""
    good = {
        "id": 1,
        "stationId": "A",
        "transactionId": "7",
        "isActive": True,
        "startTime": "2026-11-24T00:41:08.95+00:00",
        "meterStart": 5000,
        "Connector": {"id": 6, "connectorId": 2},
        "Authorization": {"idToken": "T"},
        "MeterValues": [
            {
                "timestamp": "2026-11-24T00:41:19.071+00:00",
                "sampledValue": [
                    {
                        "value": 5.5,
                        "measurand": "Energy.Active.Import.Register",
                        "unitOfMeasure": {"unit": "kWh", "multiplier": 0},
                    },
                    {"value": 1900, "measurand": "Energy.Active.Import.Register", "phase": "L1"},
                ],
            }
        ],
        "ChargingStation": {
            "isOnline": True,
            "LatestStatusNotifications": [
                {
                    "StatusNotification": {
                        "connectorId": 2,
                        "connectorStatus": "SuspendedEV",
                        "timestamp": "2026-11-24T00:41:08.992+00:00",
                    }
                }
            ],
        },
    }
    rows = [
        good,
        {**good, "transactionId": "8", "Connector": None},
        {**good, "transactionId": "9", "meterStart": "lots"},
        {**good, "stationId": None},
        {
            **good,
            "transactionId": "10",
            "ChargingStation": {
                "LatestStatusNotifications": [
                    {"StatusNotification": {"connectorId": 2, "connectorStatus": "Finishing"}}
                ]
            },
        },
        "not even an object",
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        document = json.loads(request.content)
        assert document["operationName"] == "ActiveSessions"
        assert document["variables"] == {"stationIds": ["A", "B"], "tenantId": 1}
        return httpx.Response(200, json={"data": {"Transactions": rows}})

    t = _translation_without_network(CITRINEOS_FALLBACK="off")
    t.client._http = httpx.Client(transport=httpx.MockTransport(handler))
    evs, _ = t.get_evs("default")
    assert [(ev.ev_id, ev.connector_id) for ev in evs] == [("A:7", 2)]
    assert evs[0].energy == pytest.approx(30.0 - 0.5)  # 5.5 kWh register - 5000 Wh meterStart
