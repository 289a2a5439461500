"""Replay the REST recordings of CitrineOS 1.8.3 against the double.

Each recording is replayed in the same situation (connected charger with an active session,
offline charger, unknown station, ...), with the recorded station ids replaced by this test's
ids. The answer must have the recorded status, Content-Type and JSON shape; the fixed strings and
numbers must be equal. Database ids, timestamps and URLs may differ.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble, ProfileAnswer, TestChargePoint
from citrineos_testdouble._http import parse_query
from citrineos_testdouble.chargepoint import LoopThread
from citrineos_testdouble.contract import (
    CallbackServer,
    assert_same_shape,
    load_jsonl,
    load_recording,
    substitute,
)


@dataclass
class World:
    """The situation the recordings need: charge points and who stands for which recorded id."""

    double: CitrineOSDouble
    loop: LoopThread
    callbacks: CallbackServer
    token: str
    points: dict[str, TestChargePoint] = field(default_factory=dict)
    mapping: dict[str, str] = field(default_factory=dict)

    def replay(self, name: str) -> tuple[httpx.Response, dict[str, Any]]:
        recording = load_recording(name)
        mapping = {**self.mapping, "http://127.0.0.1:18999/cb/": f"{self.callbacks.url}/{self.token}/cb/"}
        request = substitute(recording["request"], mapping)
        expected = substitute(recording["response"], mapping)
        if "query" in request:
            params = dict(request["query"])
        else:
            # One recording only kept the URL (with a repeated identifier).
            params = parse_query(urllib.parse.urlsplit(request["url"]).query)
        response = httpx.request(
            request["method"],
            self.double.rest_url + request["path"],
            params=params,
            json=request["body"] if request["body"] is not None else None,
            timeout=10,
        )
        return response, expected

    def check(self, name: str) -> httpx.Response:
        response, expected = self.replay(name)
        assert response.status_code == expected["status"], (name, response.text)
        assert response.headers.get("content-type") == expected.get(
            "content_type", response.headers.get("content-type")
        ), name
        body = response.json() if response.content else ""
        assert_same_shape(body, expected["body"])
        return response


@pytest.fixture(scope="module")
def world(citrineos_double: CitrineOSDouble, callback_server: CallbackServer) -> Iterator[World]:
    token = uuid.uuid4().hex[:8].upper()
    a, b = f"A-{token}", f"B-{token}"
    w = World(citrineos_double, LoopThread().__enter__(), callback_server, token)
    w.mapping = {
        "REC-STATION-01": a,
        "LAB-STATION-01": a,
        "REC-STATION-02": b,
        "LAB-STATION-02": b,
        "REC201-STATION-01": f"R-{token}",
    }
    answers = {901: ProfileAnswer.rejected(), 801: ProfileAnswer.call_error("GenericError")}
    for station in (a, b):
        cp = TestChargePoint(station, citrineos_double.ws_url, id_tag=f"TAG-{station}", profile_answers=answers)
        w.loop.run(cp.connect())
        w.loop.run(cp.start_session(meter_start_wh=5000))
        w.loop.run(cp.send_meter_values(energy_wh=5010, power_w=3840, current_a=16.0, soc=30))
        w.points[station] = cp
    yield w
    for cp in w.points.values():
        w.loop.run(cp.close())
    w.loop.close()


# Recordings whose answer does not depend on any charger: validation, routing, unknown stations.
STATELESS = [
    "rest/setChargingProfile-1.6-limit-not-tenths.json",
    "rest/setChargingProfile-1.6-unknown-station.json",
    "rest/setChargingProfile-2.0.1-ok.json",
    "rest/transaction-get-unknown.json",
    "rest/ocpprouter-subscription-get.json",
    "run2/rest/scp16-invalid-limit-not-tenths.json",
    "run2/rest/scp16-invalid-enum.json",
    "run2/rest/scp16-missing-identifier.json",
    "run2/rest/scp16-tenantId-not-a-number.json",
    "run2/rest/scp16-unknown-station.json",
    "run2/rest/transaction-get-missing-transactionId.json",
    "run2/rest/transactions-list-attempt-no-params.json",
    "run2/rest/transaction-get-unknown-station.json",
    "run2/rest/boot-get-unknown.json",
    "run2/rest/subscription-create-missing-url.json",
    "run2/rest/nonexistent-endpoint_data_evdriver_authorization.json",
    "run2/rest/nonexistent-endpoint_data_ocpprouter_chargingStation.json",
    "run2/rest/nonexistent-endpoint_data_smartcharging_chargingProfile.json",
    "run2/rest/nonexistent-endpoint_data_transactions_transactions.json",
]

# Recordings made while both chargers were connected with an active session.
CONNECTED = [
    "rest/setChargingProfile-1.6-ok.json",
    "rest/setChargingProfile-1.6-float-startPeriod.json",
    "rest/setChargingProfile-1.6-multi-identifier.json",
    "rest/setChargingProfile-1.6-multiperiod.json",
    "rest/setChargingProfile-1.6-negative-limit.json",
    "rest/setChargingProfile-1.6-wrong-tenant.json",
    "rest/clearChargingProfile-1.6.json",
    "rest/getCompositeSchedule-1.6.json",
    "run2/rest/scp16-ok-single-period-callback.json",
    "run2/rest/scp16-ok-multi-period.json",
    "run2/rest/scp16-ok-same-id-replaces.json",
    "run2/rest/scp16-invalid-empty-periods.json",
    "run2/rest/scp16-ok-watts-station2.json",
    "run2/rest/scp16-charger-rejects.json",
    "run2/rest/scp16-charger-callerror.json",
    "run2/rest/scp16-negative-limit-charger-callerror.json",
    "run2/rest/scp16-missing-tenantId.json",
    "run2/rest/scp16-two-identifiers-one-unknown.json",
    "run2/rest/scp16-wrong-tenant.json",
    "run2/rest/scp16-after-late-answer.json",
    "run2/rest/scp16-charger-answers-after-40s.json",
    "run2/rest/scp16-while-previous-call-outstanding.json",
    "run2/rest/scp201-to-ocpp16-station.json",
    "run2/rest/clearChargingProfile16-by-id.json",
    "run2/rest/clearChargingProfile16-by-purpose.json",
    "run2/rest/getCompositeSchedule16.json",
    "run2/rest/triggerMessage16-MeterValues.json",
    "run2/rest/transaction-get-active.json",
    "run2/rest/transaction-get-missing-tenantId.json",
    "run2/rest/transaction-get-wrong-tenant.json",
    "run2/rest/boot-get-known.json",
]


@pytest.mark.parametrize("name", STATELESS)
def test_stateless_recording(world: World, name: str) -> None:
    world.check(name)


@pytest.mark.parametrize("name", CONNECTED)
def test_connected_recording(world: World, name: str) -> None:
    world.check(name)


def _recorded_callbacks() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in load_jsonl("run2/http-callbacks.jsonl"):
        out.setdefault(line["path"], line["body"])
    return out


@pytest.mark.parametrize(
    "name, path",
    [
        ("run2/rest/scp16-ok-single-period-callback.json", "/cb/scp-201"),
        ("run2/rest/scp16-charger-rejects.json", "/cb/scp-901"),
        ("run2/rest/scp16-charger-callerror.json", "/cb/scp-801"),
        ("run2/rest/scp16-negative-limit-charger-callerror.json", "/cb/scp-203"),
        ("run2/rest/getCompositeSchedule16.json", "/cb/gcs"),
        ("run2/rest/triggerMessage16-MeterValues.json", "/cb/trigger"),
        ("run2/rest/clearChargingProfile16-by-id.json", "/cb/ccp"),
    ],
)
def test_callback_body_matches_recording(world: World, name: str, path: str) -> None:
    world.token = uuid.uuid4().hex[:8]  # a fresh callback path per case
    world.check(name)
    received = world.callbacks.wait_for_path(f"/{world.token}{path}")
    assert len(received) == 1
    assert received[0]["headers"]["content-type"] == "application/json"
    assert received[0]["headers"]["user-agent"] == "node"
    assert_same_shape(received[0]["body"], _recorded_callbacks()[path])


def test_subscription_lifecycle_recordings(world: World) -> None:
    created = world.check("run2/rest/subscription-create-LAB-STATION-01.json")
    sub_id = created.json()
    assert isinstance(sub_id, int)
    world.check("run2/rest/subscription-get.json")
    response = httpx.delete(
        world.double.rest_url + "/data/ocpprouter/subscription", params={"id": sub_id, "tenantId": 1}
    )
    expected = load_recording("run2/rest/subscription-delete-1.json")["response"]
    assert response.status_code == expected["status"]
    assert response.headers["content-type"] == expected["content_type"]
    assert response.json() is True


def test_websocket_list_entry_shape(world: World) -> None:
    recording = load_recording("rest/ocpprouter-websocket-list.json")
    response = httpx.get(world.double.rest_url + "/data/ocpprouter/websocket", params={"tenantId": 1})
    assert response.status_code == 200
    assert response.headers["content-type"] == recording["response"]["content_type"]
    recorded_16 = next(s for s in recording["response"]["body"] if s["protocol"] == "ocpp1.6")
    (entry,) = response.json()
    assert_same_shape(entry, recorded_16)
    assert entry["port"] == int(world.double.ws_url.rsplit(":", 1)[1])


def test_offline_and_reconnect_recordings(world: World) -> None:
    """LAB-STATION-02 in run 2: disconnected through REST mid-session, then back without boot."""
    station = f"C-{world.token}"
    world.mapping["LAB-STATION-02"] = station
    try:
        cp = TestChargePoint(station, world.double.ws_url, id_tag=f"TAG-{station}")
        world.loop.run(cp.connect())
        world.loop.run(cp.start_session(meter_start_wh=5000))
        world.loop.run(cp.send_meter_values(energy_wh=5160, power_w=3840, current_a=16.0, soc=40))
        world.check("run2/rest/connection-delete-station2.json")
        world.loop.run(cp.wait_closed())
        assert (cp.close_code, cp.close_reason) == (1000, "Disconnected by admin request")
        world.check("run2/rest/scp16-station-offline-tx-active.json")
        world.check("run2/rest/transaction-get-station-offline.json")
        transaction_id = cp.transaction_id
        world.loop.run(cp.connect())  # no BootNotification
        cp.transaction_id = transaction_id
        world.check("run2/rest/scp16-station-reconnected-without-boot.json")
        world.loop.run(cp.close())
    finally:
        world.mapping["LAB-STATION-02"] = f"B-{world.token}"


def test_stopped_and_disconnected_recordings(world: World) -> None:
    """Run 2's LAB-STATION-01 after its session ended, and run 1's REC-STATION-01."""
    station = f"D-{world.token}"
    cp = TestChargePoint(station, world.double.ws_url, id_tag=f"TAG-{station}")
    world.loop.run(cp.connect())
    world.loop.run(cp.start_session(meter_start_wh=5000))
    world.loop.run(cp.send_meter_values(energy_wh=5010, power_w=3840, current_a=16.0, soc=30))
    mapping = dict(world.mapping)
    world.mapping["LAB-STATION-01"] = station
    try:
        world.loop.run(cp.stop_transaction(meter_stop_wh=5220))
        world.check("run2/rest/transaction-get-stopped.json")
        world.loop.run(cp.close())
        _wait_offline(world.double, station)
        world.check("run2/rest/scp16-station-disconnected-after-stop.json")
    finally:
        world.mapping = mapping

    # Run 1: meterStart 1000 Wh, register 1050 Wh while active, 1300 Wh at the stop.
    station = f"E-{world.token}"
    cp = TestChargePoint(station, world.double.ws_url, id_tag=f"TAG-{station}")
    world.loop.run(cp.connect())
    world.loop.run(cp.start_session(meter_start_wh=1000))
    world.loop.run(cp.send_meter_values(energy_wh=1050, power_w=7200, current_a=32.0))
    world.mapping["REC-STATION-01"] = station
    try:
        world.check("rest/transaction-get-active.json")
        world.loop.run(cp.stop_transaction(meter_stop_wh=1300))
        world.check("rest/transaction-get-stopped.json")
        world.loop.run(cp.close())
        _wait_offline(world.double, station)
        world.check("rest/setChargingProfile-1.6-station-offline.json")
    finally:
        world.mapping = mapping


def _wait_offline(double: CitrineOSDouble, station: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while station in double.connected_stations():
        if time.monotonic() > deadline:
            raise AssertionError(f"{station} still registered")
        time.sleep(0.02)
