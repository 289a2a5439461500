"""The double's OCPP 2.0.1 side against the recorded facts of CitrineOS 1.8.3 (contract README, "OCPP 2.0.1"
and "Run 3"; ``amqp-messages-2.0.1.jsonl``, ``run3/ocpp201-connectors-rows.txt``): a real 2.0.1 station
(python ``ocpp``) over a websocket, rows read back with SQL, messages read back from RabbitMQ."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from citrineos_testdouble import CitrineOSDouble
from citrineos_testdouble.chargepoint import LoopThread
from citrineos_testdouble.chargepoint201 import TestStation201
from citrineos_testdouble.contract import AmqpRecorder, RecordingMissingError, assert_same_shape, load_jsonl
from psycopg import sql
from psycopg.rows import dict_row
from support import require_shared

RECORDING = "amqp-messages-2.0.1.jsonl"
VOLATILE_HEADERS = {"correlationId", "timestamp", "stationId"}


def _combo(message: dict[str, Any]) -> tuple[str, str, str, str]:
    h = message["headers"]
    return (h["origin"], h["eventGroup"], h["action"], h["state"])


def _rows(double: CitrineOSDouble, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(double.dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(double.schema)))
        return list(conn.execute(query.encode(), params).fetchall())


def _post(double: CitrineOSDouble, path: str, station: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{double.rest_url}{path}", params={"identifier": station, "tenantId": 1}, json=body,
                          timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _tx_profile(profile_id: int, transaction_id: str, limit: float, stack: int = 2) -> dict[str, Any]:
    return {
        "id": profile_id, "stackLevel": stack, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute", "transactionId": transaction_id,
        "chargingSchedule": [{"id": profile_id, "chargingRateUnit": "A",
                              "startSchedule": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 1}]}],
    }


@pytest.fixture(scope="module")
def recorded_flow(
    citrineos_double: CitrineOSDouble, amqp_recorder: AmqpRecorder
) -> Iterator[tuple[TestStation201, list[dict[str, Any]]]]:
    """The recorded 2.0.1 session on a fresh station: boot, status, Started, needs, Updated x2, Ended."""
    station = TestStation201(f"V201-{uuid.uuid4().hex[:8].upper()}", citrineos_double.ws201_url)
    with LoopThread() as loop:
        loop.run(station.connect())
        loop.run(station.status("Occupied"))
        loop.run(station.start_transaction(meter_wh=1000))
        loop.run(station.charging_needs(dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)))
        loop.run(station.wait_received("GetChargingProfiles"))
        loop.run(station.update(1010))
        loop.run(station.update(1020))
        loop.run(station.end_transaction())
        amqp_recorder.wait_for(lambda m: m["headers"].get("stationId") == station.station_id
                               and _combo(m) == ("csms", "router", "TransactionEvent", "2")
                               and m["body"]["_payload"] == {"totalCost": 0})
        citrineos_double.flush_amqp()
        yield station, amqp_recorder.for_station(station.station_id)
        loop.run(station.close())


def _recorded() -> dict[tuple[str, str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for message in load_jsonl(RECORDING):
        out.setdefault(_combo(message), message)
    return out


def _combos() -> list[tuple[str, str, str, str]]:
    try:
        return sorted(_recorded())
    except RecordingMissingError:
        return [("recordings", "missing", "", "")]  # the test then skips with one line (fails under CI)


@pytest.mark.parametrize("combo", _combos(), ids=lambda c: "-".join(c))
def test_recorded_201_combination_is_published_alike(
    recorded_flow: tuple[TestStation201, list[dict[str, Any]]], combo: tuple[str, str, str, str]
) -> None:
    require_shared(f"citrineos-contract/{RECORDING}")
    station, messages = recorded_flow
    recorded = _recorded()[combo]
    ours = [m for m in messages if _combo(m) == combo]
    assert ours, f"the double published no {combo}"
    message = ours[0]
    assert set(message["headers"]) == set(recorded["headers"])
    for key, value in recorded["headers"].items():
        if key not in VOLATILE_HEADERS:
            assert message["headers"][key] == value, key
    body, recorded_body = message["body"], recorded["body"]
    assert list(body) == list(recorded_body), "body keys (and their order)"
    prefix = "_" if combo[0] == "csms" and combo[3] == "2" else ""
    assert body[f"{prefix}protocol"] == recorded_body[f"{prefix}protocol"] == "ocpp2.0.1"
    assert body[f"{prefix}context"]["stationId"] == station.station_id
    if prefix:
        # CitrineOS's own answers, payload for payload in order (Started: idTokenInfo, Ended: totalCost).
        recorded_answers = [m["body"]["_payload"] for m in load_jsonl(RECORDING) if _combo(m) == combo]
        our_answers = [m["body"]["_payload"] for m in ours]
        pairs = [(our_answers[0], recorded_answers[0]), (our_answers[-1], recorded_answers[-1])]
        pairs += [(mine, recorded_answers[1]) for mine in our_answers[1:-1]]
        for mine, theirs in pairs:
            assert_same_shape(mine, theirs, volatile=frozenset({"currentTime"}))
    if combo == ("csms", "smartcharging", "SetChargingProfile", "1"):
        # CitrineOS's own smart charging answers the charging needs: TxProfile id 1, stack 0, evMaxCurrent.
        profile = body["payload"]["chargingProfile"]
        assert body["payload"]["evseId"] == 1
        assert (profile["id"], profile["stackLevel"], profile["chargingProfilePurpose"]) == (1, 0, "TxProfile")
        schedule = profile["chargingSchedule"][0]
        assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 32, "numberPhases": 1}]
        assert schedule["minChargingRate"] == 6
        assert profile["transactionId"] == station.transaction_id
        assert 3 * 3600 - 60 <= schedule["duration"] <= 3 * 3600


def test_two_connector_rows_and_meter_start_as_recorded(
    citrineos_double: CitrineOSDouble, recorded_flow: tuple[TestStation201, list[dict[str, Any]]]
) -> None:
    station, _ = recorded_flow
    sid = station.station_id
    connectors = _rows(citrineos_double, 'SELECT * FROM "Connectors" WHERE "stationId" = %s ORDER BY id', sid)
    assert [(c["connectorId"], c["evseTypeConnectorId"], c["status"]) for c in connectors] == [
        (1, None, "Occupied"),  # StatusNotification's row
        (None, 1, "Unknown"),  # TransactionEvent's row
    ]
    evses = _rows(citrineos_double, 'SELECT * FROM "Evses" WHERE "stationId" = %s', sid)
    assert [(e["evseTypeId"], e["evseId"]) for e in evses] == [(1, None)]  # never reported: unknown to SCP
    assert connectors[0]["evseId"] is None
    assert connectors[1]["evseId"] == evses[0]["id"]
    (tx,) = _rows(citrineos_double, 'SELECT * FROM "Transactions" WHERE "stationId" = %s', sid)
    assert tx["transactionId"] == station.transaction_id
    assert tx["connectorId"] == connectors[1]["id"]
    assert tx["evseId"] == evses[0]["id"]
    assert tx["meterStart"] == Decimal(1)  # a 1000 Wh register, stored in kWh
    assert tx["isActive"] is False and tx["stoppedReason"] == "EVDisconnected"
    assert tx["totalKwh"] == Decimal("0.02")
    meters = _rows(citrineos_double, 'SELECT * FROM "MeterValues" WHERE "transactionDatabaseId" = %s ORDER BY id',
                   tx["id"])
    assert [m["sampledValue"][0]["value"] for m in meters] == [1000, 1010, 1020]
    assert meters[1]["sampledValue"][0]["unitOfMeasure"] == {"unit": "Wh", "multiplier": 0}
    protocols = _rows(citrineos_double, 'SELECT DISTINCT protocol FROM "OCPPMessages" WHERE "stationId" = %s', sid)
    assert protocols == [{"protocol": "ocpp2.0.1"}]


def test_set_charging_profile_201_needs_the_reported_evse(citrineos_double: CitrineOSDouble) -> None:
    double = citrineos_double
    path = "/ocpp/2.0.1/smartcharging/setChargingProfile"
    station = TestStation201(f"V201-{uuid.uuid4().hex[:8].upper()}", double.ws201_url, reject_profiles={666})
    sid = station.station_id
    with LoopThread() as loop:
        loop.run(station.connect())
        loop.run(station.status("Occupied"))
        loop.run(station.start_transaction())
        tx = station.transaction_id
        # Not reported by the device model yet: refused before reaching the station.
        assert _post(double, path, sid, {"evseId": 1, "chargingProfile": _tx_profile(301, tx, 16)}) == [
            {"success": False, "payload": "Evse 1 not found."}]
        assert _post(double, path, sid, {"evseId": 1, "chargingProfile": _tx_profile(301, "nope", 16)}) == [
            {"success": False, "payload": "Evse 1 not found."}]
        default = _tx_profile(302, tx, 10)
        default.pop("transactionId")
        default["chargingProfilePurpose"] = "TxDefaultProfile"
        assert _post(double, path, sid, {"evseId": 0, "chargingProfile": default}) == [{"success": True}]
        loop.run(station.wait_received("SetChargingProfile"))
        # GetBaseReport -> NotifyReport: the EVSE becomes known.
        assert _post(double, "/ocpp/2.0.1/reporting/getBaseReport", sid,
                     {"requestId": 7, "reportBase": "FullInventory"}) == [{"success": True}]
        deadline = time.monotonic() + 5
        while not _rows(double, 'SELECT 1 FROM "Evses" WHERE "stationId" = %s AND "evseId" IS NOT NULL', sid):
            assert time.monotonic() < deadline, "NotifyReport did not fill the Evses row"
            time.sleep(0.05)
        assert _post(double, path, sid, {"evseId": 1, "chargingProfile": _tx_profile(301, "nope", 16)}) == [
            {"success": False, "payload": f"Transaction nope not found on station {sid}."}]
        assert _post(double, path, sid, {"evseId": 1, "chargingProfile": _tx_profile(301, tx, 16)}) == [
            {"success": True}]
        assert _post(double, path, sid, {"evseId": 1, "chargingProfile": _tx_profile(666, tx, 8)}) == [
            {"success": True}]
        received = loop.run(station.wait_received("SetChargingProfile", 3))
        assert received[1].payload["evseId"] == 1
        assert received[1].payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 16
        deadline = time.monotonic() + 5
        while len(_rows(double, 'SELECT 1 FROM "OCPPMessages" WHERE "stationId" = %s AND action = %s AND origin = %s '
                        "AND state = '2'", sid, "SetChargingProfile", "cs")) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        profiles = _rows(double, 'SELECT p.*, t."transactionId" AS tx FROM "ChargingProfiles" p LEFT JOIN '
                         '"Transactions" t ON t.id = p."transactionDatabaseId" WHERE p."stationId" = %s ORDER BY p.id',
                         sid)
        # The rejected 666 has no row; 301 is tied to its transaction on EVSE 1.
        assert [(p["id"], p["evseId"], p["tx"], p["isActive"]) for p in profiles] == [
            (301, 1, tx, True), (302, 0, None, True)]
        assert _post(double, "/ocpp/2.0.1/smartcharging/clearChargingProfile", sid, {"chargingProfileId": 301}) == [
            {"success": True}]
        loop.run(station.wait_received("ClearChargingProfile"))
        deadline = time.monotonic() + 5
        while _rows(double, 'SELECT 1 FROM "ChargingProfiles" WHERE "stationId" = %s AND id = 301 AND "isActive"',
                    sid):
            assert time.monotonic() < deadline, "the accepted clear did not deactivate profile 301"
            time.sleep(0.05)
        assert _rows(double, 'SELECT "isActive" FROM "ChargingProfiles" WHERE "stationId" = %s AND id = 302',
                     sid) == [{"isActive": True}]
        loop.run(station.close())


def test_a_16_station_cannot_take_201_profiles_and_201_needs_its_port(citrineos_double: CitrineOSDouble) -> None:
    double = citrineos_double
    body = {"evseId": 1, "chargingProfile": _tx_profile(1, "1", 16)}
    assert _post(double, "/ocpp/2.0.1/smartcharging/setChargingProfile", "NOBODY-16", body) == [
        {"success": False, "payload": "Evse 1 not found."}]
    assert double.ws201_url != double.ws_url
