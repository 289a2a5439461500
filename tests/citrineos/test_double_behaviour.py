"""Recorded CitrineOS 1.8.3 behaviour beyond single REST answers: database rows and their quirks,
the Hasura-like and plain-SQL reads, one call in flight per station, callbacks, fault injection."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from citrineos_testdouble import CitrineOSDouble, ProfileAnswer, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread
from citrineos_testdouble.contract import AmqpRecorder, CallbackServer, set_profile_body
from psycopg import sql
from psycopg.rows import dict_row

from optivgi_citrineos import queries

_profile = set_profile_body


def _scp(double: CitrineOSDouble, station: str, body: dict[str, Any], callback: str | None = None) -> Any:
    params: dict[str, Any] = {"identifier": station, "tenantId": 1}
    if callback:
        params["callbackUrl"] = callback
    return httpx.post(f"{double.rest_url}/ocpp/1.6/smartcharging/setChargingProfile", params=params, json=body).json()


class Db:
    """Synchronous reads of the double's schema."""

    def __init__(self, double: CitrineOSDouble) -> None:
        self.conn = psycopg.connect(double.dsn, autocommit=True, row_factory=dict_row)
        self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(double.schema)))

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        return self.conn.execute(query.encode(), params).fetchall()

    def wait_rows(self, query: str, *params: Any, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(query, *params)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    with LoopThread() as running:
        yield running


@pytest.fixture(scope="module")
def db(citrineos_double: CitrineOSDouble) -> Iterator[Db]:
    database = Db(citrineos_double)
    yield database
    database.conn.close()


def _session(loop: LoopThread, double: CitrineOSDouble, station: str, **kwargs: Any) -> TestChargePoint:
    cp = TestChargePoint(station, double.ws_url, id_tag=f"TAG-{station}", **kwargs)
    loop.run(cp.connect())
    loop.run(cp.start_session(meter_start_wh=5000))
    loop.run(cp.send_meter_values(energy_wh=5010, power_w=3840, current_a=16.0, soc=30))
    return cp


def test_rows_are_written_like_citrineos(
    citrineos_double: CitrineOSDouble, loop: LoopThread, db: Db, station_id: str
) -> None:
    double = citrineos_double
    cp = _session(loop, double, station_id)
    (tx,) = db.rows('SELECT * FROM "Transactions" WHERE "stationId" = %s', station_id)
    (connector,) = db.rows('SELECT * FROM "Connectors" WHERE "stationId" = %s', station_id)
    assert tx["transactionId"] == "1" and tx["isActive"] is True
    assert tx["connectorId"] == connector["id"] and connector["connectorId"] == 1  # a row id, not the OCPP number
    assert tx["meterStart"] == Decimal(5000) and tx["totalKwh"] == Decimal("-4994.99")  # wrong while active
    (mv,) = db.rows('SELECT * FROM "MeterValues" WHERE "transactionDatabaseId" = %s', tx["id"])
    assert mv["transactionId"] == "1" and mv["connectorId"] == 1
    register = mv["sampledValue"][0]
    assert register == {
        "value": 5010,
        "context": "Sample.Periodic",
        "measurand": "Energy.Active.Import.Register",
        "location": "Outlet",
        "unitOfMeasure": {"unit": "Wh", "multiplier": 0},
    }
    assert mv["sampledValue"][1]["value"] == 16 and mv["sampledValue"][1]["phase"] == "L1"
    latest = db.rows(
        'SELECT s."connectorId", s."connectorStatus" FROM "LatestStatusNotifications" l '
        'JOIN "StatusNotifications" s ON s.id = l."statusNotificationId" WHERE l."stationId" = %s '
        'ORDER BY s."connectorId"',
        station_id,
    )
    assert [(r["connectorId"], r["connectorStatus"]) for r in latest] == [(0, "Available"), (1, "Charging")]
    (seq,) = db.rows('SELECT * FROM "ChargingStationSequences" WHERE "stationId" = %s', station_id)
    assert (seq["type"], seq["value"]) == ("transactionId", 1)

    # Profiles: only an Accepted answer writes a row; the same id replaces it.
    cp.profile_answers[901] = ProfileAnswer.rejected()
    for body in (_profile(202, [16.0, 10.5, 6.0]), _profile(901, [16.0]), _profile(202, [12.0, 8.0])):
        assert _scp(double, station_id, body) == [{"success": True}]
    db.wait_rows(
        'SELECT * FROM "OCPPMessages" WHERE "stationId" = %s AND action = %s AND origin = %s',
        station_id,
        "SetChargingProfile",
        "cs",
        count=3,
    )
    profiles = db.rows(
        'SELECT p.*, s."chargingSchedulePeriod", s."chargingRateUnit" FROM "ChargingProfiles" p '
        'JOIN "ChargingSchedules" s ON s."chargingProfileDatabaseId" = p."databaseId" WHERE p."stationId" = %s',
        station_id,
    )
    assert len(profiles) == 1
    (profile,) = profiles
    assert (profile["id"], profile["isActive"], profile["evseId"], profile["chargingLimitSource"]) == (
        202,
        True,
        1,
        "CSO",
    )
    assert profile["transactionDatabaseId"] == tx["id"]
    assert profile["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 12, "numberPhases": 1},
        {"startPeriod": 600, "limit": 8, "numberPhases": 1},
    ]

    # After the stop: totalKwh right, profile still active, next transaction id 2.
    loop.run(cp.stop_transaction(meter_stop_wh=5220))
    (tx,) = db.rows('SELECT * FROM "Transactions" WHERE "stationId" = %s', station_id)
    assert (tx["isActive"], tx["totalKwh"], tx["stoppedReason"]) == (False, Decimal("0.22"), "EVDisconnected")
    assert db.rows('SELECT "isActive" FROM "ChargingProfiles" WHERE "stationId" = %s', station_id) == [
        {"isActive": True}
    ]
    assert loop.run(cp.start_transaction(meter_start_wh=5220)) == 2

    # An accepted ClearChargingProfile deactivates every profile of the station.
    assert _scp(double, station_id, _profile(203, [16.0], tx=2)) == [{"success": True}]
    httpx.post(
        f"{double.rest_url}/ocpp/1.6/smartcharging/clearChargingProfile",
        params={"identifier": station_id, "tenantId": 1},
        json={"id": 203},
    )
    rows = db.wait_rows(
        'SELECT id FROM "ChargingProfiles" WHERE "stationId" = %s AND NOT "isActive"', station_id, count=2
    )
    assert sorted(r["id"] for r in rows) == [202, 203]
    loop.run(cp.close())


def test_online_flag_and_forced_disconnect(
    citrineos_double: CitrineOSDouble, loop: LoopThread, db: Db, station_id: str
) -> None:
    double = citrineos_double
    cp = _session(loop, double, station_id)
    # A brand-new station keeps isOnline NULL during its first connection.
    assert db.rows('SELECT "isOnline" FROM "ChargingStations" WHERE id = %s', station_id) == [{"isOnline": None}]
    response = httpx.delete(
        f"{double.rest_url}/data/ocpprouter/connection", params={"stationId": station_id, "tenantId": 1}
    )
    assert (response.status_code, response.content, response.headers.get("content-type")) == (200, b"", None)
    loop.run(cp.wait_closed())
    assert (cp.close_code, cp.close_reason) == (1000, "Disconnected by admin request")
    rows = db.wait_rows('SELECT "isOnline" FROM "ChargingStations" WHERE id = %s AND "isOnline" = false', station_id)
    assert rows == [{"isOnline": False}]
    # Reconnecting without BootNotification works; the known station is now online.
    transaction_id = cp.transaction_id
    loop.run(cp.connect())
    cp.transaction_id = transaction_id
    assert db.wait_rows('SELECT 1 FROM "ChargingStations" WHERE id = %s AND "isOnline"', station_id)
    loop.run(cp.send_meter_values(energy_wh=5020))
    assert db.rows('SELECT "isActive" FROM "Transactions" WHERE "stationId" = %s', station_id) == [{"isActive": True}]
    loop.run(cp.close())


def test_graphql_and_sql_read_active_sessions(citrineos_double: CitrineOSDouble, loop: LoopThread, db: Db) -> None:
    double = citrineos_double
    stations = sorted(f"G-{uuid.uuid4().hex[:8].upper()}" for _ in range(2))
    points = [_session(loop, double, station) for station in stations]
    loop.run(points[1].stop_transaction(meter_stop_wh=5100))
    loop.run(points[1].start_transaction(meter_start_wh=5100))

    response = httpx.post(
        double.graphql_url,
        json={
            "query": queries.ACTIVE_SESSIONS_QUERY,
            "variables": {"stationIds": stations, "tenantId": 1},
            "operationName": queries.ACTIVE_SESSIONS_OPERATION,
        },
    )
    assert response.status_code == 200
    sessions = response.json()["data"]["Transactions"]
    assert [(s["stationId"], s["transactionId"]) for s in sessions] == [(stations[0], "1"), (stations[1], "2")]
    first = sessions[0]
    assert first["Connector"]["connectorId"] == 1
    assert first["Authorization"] == {"idToken": f"TAG-{stations[0]}"}
    assert first["meterStart"] == 5000
    assert first["startTime"].endswith("+00:00")
    assert first["MeterValues"][0]["sampledValue"][0]["value"] == 5010
    statuses = {
        s["StatusNotification"]["connectorId"]: s["StatusNotification"]["connectorStatus"]
        for s in first["ChargingStation"]["LatestStatusNotifications"]
    }
    assert statuses == {0: "Available", 1: "Charging"}
    assert sessions[1]["MeterValues"] == []  # the new transaction has no meter values yet

    for document, name, root in (
        (queries.LATEST_STATUS_QUERY, queries.LATEST_STATUS_OPERATION, "LatestStatusNotifications"),
        (queries.ACTIVE_CHARGING_PROFILES_QUERY, queries.ACTIVE_CHARGING_PROFILES_OPERATION, "ChargingProfiles"),
    ):
        answer = httpx.post(
            double.graphql_url,
            json={"query": document, "variables": {"stationIds": stations, "tenantId": 1}, "operationName": name},
        ).json()
        assert isinstance(answer["data"][root], list)
    history = httpx.post(
        double.graphql_url,
        json={"query": queries.STATUS_HISTORY_QUERY, "variables": {"stationIds": stations, "tenantId": 1, "limit": 3}},
    ).json()["data"]["StatusNotifications"]
    assert len(history) == 3

    unknown = httpx.post(double.graphql_url, json={"query": "query { Tenants { id } }"}).json()
    assert set(unknown) == {"errors"} and unknown["errors"][0]["extensions"]["code"] == "validation-failed"
    missing = httpx.post(double.graphql_url, json={"query": queries.ACTIVE_SESSIONS_QUERY, "variables": {}}).json()
    assert "stationIds" in missing["errors"][0]["message"]

    # The recorded plain-SQL query gives the same sessions.
    with psycopg.connect(double.dsn, row_factory=dict_row) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(double.schema)))
        rows = [r for r in conn.execute(queries.ACTIVE_SESSIONS_SQL, {"tenant_id": 1}) if r["stationId"] in stations]
    assert [(r["stationId"], r["transactionId"], r["ocppConnectorId"]) for r in rows] == [
        (stations[0], "1", 1),
        (stations[1], "2", 1),
    ]
    assert tuple(rows[0]) == queries.ACTIVE_SESSIONS_SQL_COLUMNS
    assert rows[0]["lastConnectorStatus"] == "Charging" and rows[0]["idToken"] == f"TAG-{stations[0]}"
    for cp in points:
        loop.run(cp.close())


def test_allow_listed_id_tags(citrineos_double: CitrineOSDouble, loop: LoopThread) -> None:
    with CitrineOSDouble(id_tags=["GOOD-TAG"]) as double:
        cp = TestChargePoint("ALLOW-1", double.ws_url, id_tag="GOOD-TAG")
        loop.run(cp.connect())
        loop.run(cp.boot())
        assert loop.run(cp.authorize()) == "Accepted"
        assert loop.run(cp.authorize("UNKNOWN-TAG")) == "Invalid"
        loop.run(cp.close())


@pytest.fixture(scope="module")
def short_double(citrineos_double: CitrineOSDouble) -> Iterator[CitrineOSDouble]:
    """A double whose calls time out after 1 s (CitrineOS: 30 s) to replay run 2's slow charger.

    Depends on ``citrineos_double`` so that missing services fail with the same message."""
    with CitrineOSDouble(max_call_length_s=1.0) as double:
        yield double


def test_one_call_in_flight_and_late_answer(
    short_double: CitrineOSDouble, loop: LoopThread, callback_server: CallbackServer, station_id: str
) -> None:
    double = short_double
    recorder = AmqpRecorder(double.amqp_url, double.exchange)
    db = Db(double)
    try:
        cp = _session(loop, double, station_id, profile_answers={701: ProfileAnswer.accepted(delay_s=1.6)})
        base = f"{callback_server.url}/{station_id}"
        assert _scp(double, station_id, _profile(701, [14.0]), f"{base}/701") == [{"success": True}]
        time.sleep(0.2)
        # Queued behind 701; success:true at once, published at once, delivered after 701 expires.
        assert _scp(double, station_id, _profile(206, [13.0]), f"{base}/206") == [{"success": True}]
        meter = loop.submit(cp.send_meter_values(energy_wh=5080))  # the charger's own call waits too
        callback = callback_server.wait_for_path(f"/{station_id}/206", timeout=4)
        assert callback[0]["body"] == {"status": "Accepted"}
        received = [r for r in cp.received if r.action == "SetChargingProfile"]
        assert [r.payload["csChargingProfiles"]["chargingProfileId"] for r in received] == [701, 206]
        assert received[1].at - received[0].at >= 0.9
        # CitrineOS answers with the 2.0.1 error code RpcFrameworkError, unknown to a 1.6 client.
        with pytest.raises(Exception, match="RpcFrameworkError"):
            meter.result(timeout=5)
        time.sleep(1.0)  # 701's late answer arrives now and must be ignored
        double.flush_amqp()
        answers = [
            m
            for m in recorder.for_station(station_id)
            if m["headers"]["action"] == "SetChargingProfile" and m["headers"]["state"] == "2"
        ]
        assert len(answers) == 1  # 206 only
        assert callback_server.for_path(f"/{station_id}/701") == []
        assert [r["id"] for r in db.rows('SELECT id FROM "ChargingProfiles" WHERE "stationId" = %s', station_id)] == [
            206
        ]
        assert db.rows('SELECT 1 FROM "OCPPMessages" WHERE "stationId" = %s AND action = %s', station_id, "NoAction")
        assert (
            len(
                db.rows(
                    'SELECT 1 FROM "MeterValues" m JOIN "Transactions" t ON t.id = m."transactionDatabaseId" '
                    'WHERE t."stationId" = %s',
                    station_id,
                )
            )
            == 1
        )  # the waiting meter value was lost
        loop.run(cp.close())
    finally:
        recorder.close()
        db.conn.close()


def test_callerror_callback_shape(
    citrineos_double: CitrineOSDouble, loop: LoopThread, callback_server: CallbackServer, db: Db, station_id: str
) -> None:
    cp = _session(loop, citrineos_double, station_id, profile_answers={801: ProfileAnswer.call_error()})
    url = f"{callback_server.url}/{station_id}/801"
    assert _scp(citrineos_double, station_id, _profile(801, [16.0]), url) == [{"success": True}]
    (request,) = callback_server.wait_for_path(f"/{station_id}/801")
    body = request["body"]
    assert set(body) == {"_messageId", "_errorCode", "_errorDetails", "name"}
    assert (body["_errorCode"], body["_errorDetails"], body["name"]) == ("GenericError", {}, "OcppError")
    rows = db.wait_rows(
        'SELECT message FROM "OCPPMessages" WHERE "stationId" = %s AND origin = %s AND action = %s',
        station_id,
        "cs",
        "SetChargingProfile",
    )
    assert rows[0]["message"][0] == 4 and rows[0]["message"][1] == body["_messageId"]
    assert db.rows('SELECT 1 FROM "ChargingProfiles" WHERE "stationId" = %s', station_id) == []
    loop.run(cp.close())


@pytest.mark.parametrize(
    "limit, ok", [(5.8, False), (6.1, False), (8.1, False), (20.8, True), (16.0, True), (5.5, True)]
)
def test_limit_tenths_checked_in_doubles(citrineos_double: CitrineOSDouble, limit: float, ok: bool) -> None:
    response = httpx.post(
        f"{citrineos_double.rest_url}/ocpp/1.6/smartcharging/setChargingProfile",
        params={"identifier": "PROBE-NOBODY", "tenantId": 1},
        json=_profile(1, [limit]),
    )
    if ok:
        assert response.status_code == 200 and response.json()[0]["success"] is False
    else:
        assert response.status_code == 400
        assert response.json()["message"].endswith("limit must be multiple of 0.1")


def test_fault_injection(citrineos_double: CitrineOSDouble) -> None:
    double = citrineos_double
    url = f"{double.rest_url}/data/configuration/boot"
    params = {"stationId": "NOPE", "tenantId": 1}
    double.rest_faults.fail_next(2, status=503)
    assert [httpx.get(url, params=params).status_code for _ in range(3)] == [503, 503, 200]
    double.rest_faults.hang_next(1, seconds=1.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, params=params, timeout=0.3)
    double.rest_faults.refuse()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, params=params, timeout=1)
    double.graphql_faults.fail_next(1, status=500)
    assert httpx.post(double.graphql_url, json={}).status_code == 500
    double.heal()
    assert httpx.get(url, params=params).status_code == 200
