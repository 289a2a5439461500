"""OCPP 2.0.1 sessions in the plugin, as CitrineOS 1.8.3 stores them (contract README, "Run 3"): the outlet
is the EVSE (the Connectors row of a 2.0.1 transaction has no connector number), ``meterStart`` is in
kWh, profiles go to ``/ocpp/2.0.1/...`` by ``evseId``, and CitrineOS refuses them until the station's
device model reported the EVSE."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble
from citrineos_testdouble.chargepoint import LoopThread
from citrineos_testdouble.chargepoint201 import TestStation201

from optivgi.config import Settings
from optivgi.models.ev import ChargingRateUnit
from optivgi.models.profile import ChargingProfile
from optivgi.translation import SendOutcome
from optivgi_citrineos.sessions import row_from_graphql, row_from_sql
from optivgi_citrineos.translation import CitrineOSTranslation


def _settings(double: CitrineOSDouble, station: str, **extra: str) -> Settings:
    values = {
        "CITRINEOS_API_URL": double.rest_url, "HASURA_URL": double.graphql_url, "AMQP_URL": double.amqp_url,
        "CITRINEOS_EXCHANGE": double.exchange, "STATION_IDS": station, "SITE_POWER_LIMIT_KW": "30",
        "CITRINEOS_ANSWER_TIMEOUT_S": "5", "CITRINEOS_HTTP_TIMEOUT_S": "5", "CITRINEOS_OCPP201_STATIONS": station,
        "CITRINEOS_CONNECTORS_PER_STATION": "1", "CONN_01_ENERGY_NEEDED_KWH": "30", "CONN_01_MAX_POWER_KW": "7.2",
        "CONN_01_MIN_POWER_KW": "1.4", **extra,
    }
    return Settings(station_groups=("default",), site_power_limit_kw=30.0, voltage=240.0,
                    charging_rate_unit=ChargingRateUnit.A, resolution_s=60, horizon_s=60 * 480, values=values)


@pytest.fixture
def station201(citrineos_double: CitrineOSDouble) -> Iterator[tuple[TestStation201, LoopThread]]:
    station = TestStation201(f"TR201-{uuid.uuid4().hex[:8].upper()}", citrineos_double.ws201_url)
    with LoopThread() as loop:
        loop.run(station.connect())
        loop.run(station.status("Occupied"))
        loop.run(station.start_transaction(meter_wh=5000))
        loop.run(station.update(6000, power_w=7200))  # 1 kWh delivered
        yield station, loop
        loop.run(station.close())


@pytest.fixture
def translation() -> Iterator[list[CitrineOSTranslation]]:
    made: list[CitrineOSTranslation] = []
    yield made
    for t in made:
        t.teardown()


def _open(settings: Settings, made: list[CitrineOSTranslation]) -> CitrineOSTranslation:
    t = CitrineOSTranslation.from_settings(settings)
    t.setup()
    made.append(t)
    if t.config.amqp_url is not None:
        assert t.listener is not None and t.listener.wait_ready(10)
    return t


def test_rows_of_a_201_session_use_the_evse_and_kwh() -> None:
    graphql = {"id": 4, "stationId": "V", "transactionId": "a03a85bbf1314b5e", "isActive": True,
               "startTime": "2026-12-01T19:09:24.396Z", "meterStart": "1", "Connector": {"id": 14, "connectorId": None},
               "Evse": {"id": 3, "evseTypeId": 2}, "MeterValues": [],
               "ChargingStation": {"LatestStatusNotifications": [
                   {"StatusNotification": {"evseId": 2, "connectorId": 1, "connectorStatus": "Occupied",
                                           "timestamp": "2026-12-01T19:09:24Z"}},
                   {"StatusNotification": {"evseId": 1, "connectorId": 1, "connectorStatus": "Available",
                                           "timestamp": "2026-12-01T19:09:25Z"}}]}}
    row = row_from_graphql(graphql)
    assert (row.connector_id, row.meter_start_wh, row.connector_status) == (2, 1000.0, "Occupied")
    sql = {"transactionDatabaseId": 4, "stationId": "V", "transactionId": "T", "ocppConnectorId": None,
           "ocppEvseId": 2, "meterStart": 1.5}
    assert (row_from_sql(sql).connector_id, row_from_sql(sql).meter_start_wh) == (2, 1500.0)
    v16 = {**sql, "ocppConnectorId": 1, "ocppEvseId": None, "meterStart": 5000}
    assert (row_from_sql(v16).connector_id, row_from_sql(v16).meter_start_wh) == (1, 5000.0)


@pytest.mark.parametrize("path", ["graphql", "sql"])
def test_a_201_session_is_planned_on_its_evse(citrineos_double: CitrineOSDouble, path: str,
                                              station201: tuple[TestStation201, LoopThread],
                                              translation: list[CitrineOSTranslation]) -> None:
    station, _ = station201
    extra = {}
    if path == "sql":
        extra = {"HASURA_URL": "", "AMQP_URL": "",
                 "CITRINEOS_DB_DSN": f"{citrineos_double.dsn} options='-csearch_path={citrineos_double.schema}'"}
    t = _open(_settings(citrineos_double, station.station_id, **extra), translation)
    (ev,), _ = t.get_evs("default")
    assert (str(ev.ev_id), ev.connector_id, ev.transaction_id) == (
        f"{station.station_id}:{station.transaction_id}", 1, station.transaction_id)
    # meterStart 5 (kWh) and a 6000 Wh register: 1 kWh delivered of the 30 needed.
    assert ev.energy == pytest.approx(29.0)


def test_an_unknown_evse_is_named_then_profiles_flow_after_the_report(
    citrineos_double: CitrineOSDouble, station201: tuple[TestStation201, LoopThread],
    translation: list[CitrineOSTranslation], caplog: pytest.LogCaptureFixture,
) -> None:
    station, _ = station201
    sid = station.station_id
    t = _open(_settings(citrineos_double, sid), translation)
    (ev,), _ = t.get_evs("default")

    def send() -> dict[str, SendOutcome]:
        profile = ChargingProfile.from_power([16 * 240 / 1000], start=datetime.now(UTC), resolution_s=60, unit="A",
                                             voltage=240, transaction_id=ev.transaction_id)
        return t.send_power_to_evs({ev: profile}, ChargingRateUnit.A)

    caplog.set_level(logging.INFO)
    assert send() == {str(ev.ev_id): SendOutcome.REJECTED}
    expected = (f"CitrineOS does not know EVSE 1 of station {sid}: the station must report it in its device model "
                "(NotifyReport")
    assert any(expected in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records][-10:]
    assert station.received_of("SetChargingProfile") == [] or all(
        r.payload["evseId"] == 0 for r in station.received_of("SetChargingProfile"))  # only station-wide ones

    answer = httpx.post(f"{citrineos_double.rest_url}/ocpp/2.0.1/reporting/getBaseReport",
                        params={"identifier": sid, "tenantId": 1}, json={"requestId": 1, "reportBase": "FullInventory"},
                        timeout=10).json()
    assert answer == [{"success": True}]
    deadline = time.monotonic() + 10
    while True:
        outcome = send()
        if outcome == {str(ev.ev_id): SendOutcome.APPLIED}:
            break
        assert time.monotonic() < deadline, outcome
        time.sleep(0.2)
    tx_profiles: list[Any] = [r.payload for r in station.received_of("SetChargingProfile")
                              if r.payload["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"]
    assert tx_profiles[-1]["evseId"] == 1
    profile = tx_profiles[-1]["chargingProfile"]
    assert profile["transactionId"] == station.transaction_id
    assert profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 16
