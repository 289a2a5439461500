"""Every (origin, eventGroup, action, state) combination CitrineOS 1.8.3 published during the
recorded OCPP 1.6 runs is provoked on the double; the published message must carry the same
header keys and values (ids and timestamps aside), AMQP properties and body keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble, ProfileAnswer, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread
from citrineos_testdouble.contract import (
    AmqpRecorder,
    RecordingMissingError,
    assert_same_shape,
    load_jsonl,
    set_profile_body,
)

RECORDINGS = ("amqp-messages.jsonl", "run2/amqp-messages.jsonl")
VOLATILE_HEADERS = {"correlationId", "timestamp", "stationId"}
EXPECTED_PROPERTIES = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "delivery_mode": 1,
    "priority": 0,
    "correlation_id": None,
    "message_id": None,
    "timestamp": None,
}


def _combo(message: dict[str, Any]) -> tuple[str, str, str, str]:
    h = message["headers"]
    return (h["origin"], h["eventGroup"], h["action"], h["state"])


def _recorded_examples() -> dict[tuple[str, str, str, str], dict[str, Any]]:
    examples: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for message in load_jsonl(*RECORDINGS):
        examples.setdefault(_combo(message), message)
    return examples


def _rest(double: CitrineOSDouble, path: str, station: str, body: dict[str, Any]) -> None:
    response = httpx.post(f"{double.rest_url}{path}", params={"identifier": station, "tenantId": 1}, json=body)
    assert response.json() == [{"success": True}]


def _profile(profile_id: int, limit: float) -> dict[str, Any]:
    return set_profile_body(profile_id, [limit])


@pytest.fixture(scope="module")
def session_messages(
    citrineos_double: CitrineOSDouble, amqp_recorder: AmqpRecorder
) -> Iterator[tuple[str, list[dict[str, Any]], TestChargePoint]]:
    """One recorded-like session on a fresh station; yields its AMQP messages."""
    station = f"AMQP-{uuid.uuid4().hex[:8].upper()}"
    double = citrineos_double
    with LoopThread() as loop:
        cp = TestChargePoint(
            station,
            double.ws_url,
            id_tag=f"TAG-{station}",
            profile_answers={901: ProfileAnswer.rejected(), 801: ProfileAnswer.call_error()},
        )
        loop.run(cp.connect())
        loop.run(cp.start_session(meter_start_wh=5000))
        loop.run(cp.send_meter_values(energy_wh=5010, power_w=3840, current_a=16.0, soc=30))
        loop.run(cp.authorize("UNKNOWN-BUT-ACCEPTED"))
        _rest(double, "/ocpp/1.6/smartcharging/setChargingProfile", station, _profile(201, 16.0))
        _rest(double, "/ocpp/1.6/smartcharging/setChargingProfile", station, _profile(901, 16.0))
        _rest(double, "/ocpp/1.6/smartcharging/setChargingProfile", station, _profile(801, 16.0))
        _rest(
            double,
            "/ocpp/1.6/smartcharging/getCompositeSchedule",
            station,
            {"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"},
        )
        trigger = {"requestedMessage": "MeterValues", "connectorId": 1}
        _rest(double, "/ocpp/1.6/configuration/triggerMessage", station, trigger)
        _rest(double, "/ocpp/1.6/smartcharging/clearChargingProfile", station, {"id": 201})
        amqp_recorder.wait_for(
            lambda m: (
                m["headers"].get("stationId") == station and _combo(m) == ("cs", "router", "ClearChargingProfile", "2")
            )
        )
        loop.run(cp.stop_transaction(meter_stop_wh=5220))
        amqp_recorder.wait_for(
            lambda m: (
                m["headers"].get("stationId") == station and _combo(m) == ("csms", "router", "StopTransaction", "2")
            )
        )
        double.flush_amqp()
        yield station, amqp_recorder.for_station(station), cp
        loop.run(cp.close())


def _combos() -> list[tuple[str, str, str, str]]:
    try:
        return sorted(_recorded_examples())
    except RecordingMissingError:
        return [("recordings", "missing", "", "")]  # the test then skips with one line (fails under CI)


@pytest.mark.parametrize("combo", _combos(), ids=lambda c: "-".join(c))
def test_recorded_combination_is_published_alike(
    session_messages: tuple[str, list[dict[str, Any]], TestChargePoint],
    combo: tuple[str, str, str, str],
    citrineos_double: CitrineOSDouble,
) -> None:
    station, messages, _ = session_messages
    recorded = _recorded_examples()[combo]
    ours = [m for m in messages if _combo(m) == combo]
    assert ours, f"the double published no {combo}"
    message = ours[0]
    assert recorded["exchange"] == "citrineos"
    assert message["exchange"] == citrineos_double.exchange  # the run's own exchange name
    assert message["routing_key"] == recorded["routing_key"] == ""
    assert set(message["headers"]) == set(recorded["headers"])
    for key, value in recorded["headers"].items():
        if key not in VOLATILE_HEADERS:
            assert message["headers"][key] == value, key
    assert message["headers"]["stationId"] == station
    assert message["properties"] == EXPECTED_PROPERTIES
    if "properties" in recorded:
        for key, value in EXPECTED_PROPERTIES.items():
            assert recorded["properties"][key] == value
    body, recorded_body = message["body"], recorded["body"]
    assert list(body) == list(recorded_body), "body keys (and their order)"
    prefix = "_" if combo[0] == "csms" and combo[3] == "2" else ""
    context, recorded_context = body[f"{prefix}context"], recorded_body[f"{prefix}context"]
    assert set(context) == set(recorded_context)
    assert context["stationId"] == station
    assert context["tenantId"] == recorded_context["tenantId"] == 1
    assert context["correlationId"] == message["headers"]["correlationId"]
    assert context["timestamp"] == message["headers"]["timestamp"]
    for key in ("origin", "eventGroup", "action", "state", "protocol"):
        assert body[f"{prefix}{key}"] == recorded_body[f"{prefix}{key}"], key
    if prefix:
        # CitrineOS's own answers: same payload shape (times and ids aside).
        assert_same_shape(
            body["_payload"],
            recorded_body["_payload"],
            volatile=frozenset({"currentTime", "transactionId"}),
        )


def test_request_and_answer_share_the_correlation_id(
    session_messages: tuple[str, list[dict[str, Any]], TestChargePoint],
) -> None:
    _, messages, _ = session_messages
    requests = {m["headers"]["correlationId"]: m for m in messages if m["headers"]["state"] == "1"}
    answers = [m for m in messages if m["headers"]["state"] == "2"]
    assert answers
    for answer in answers:
        request = requests.get(answer["headers"]["correlationId"])
        assert request is not None, answer["headers"]
        assert request["headers"]["action"] == answer["headers"]["action"]


def test_callerror_and_rejection_on_amqp(
    session_messages: tuple[str, list[dict[str, Any]], TestChargePoint],
) -> None:
    _, messages, cp = session_messages
    sent = {
        m["headers"]["correlationId"]: m["body"]["payload"]["csChargingProfiles"]["chargingProfileId"]
        for m in messages
        if _combo(m) == ("csms", "smartcharging", "SetChargingProfile", "1")
    }
    answers = {
        sent[m["headers"]["correlationId"]]: m["body"]["payload"]
        for m in messages
        if _combo(m) == ("cs", "router", "SetChargingProfile", "2")
    }
    assert answers == {201: {"status": "Accepted"}, 901: {"status": "Rejected"}}  # 801: CALLERROR, nothing
    # The request reaches the charger with JavaScript numbers (16.0 -> 16).
    received = [r.payload for r in cp.received if r.action == "SetChargingProfile"]
    assert received[0]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 16


def test_unknown_station_publishes_nothing(citrineos_double: CitrineOSDouble, amqp_recorder: AmqpRecorder) -> None:
    response = httpx.post(
        f"{citrineos_double.rest_url}/ocpp/1.6/smartcharging/setChargingProfile",
        params={"identifier": "NOBODY-HERE", "tenantId": 1},
        json=_profile(209, 16.0),
    )
    assert response.json() == [{"success": False, "payload": "No connection found for identifier: 1:NOBODY-HERE"}]
    citrineos_double.flush_amqp()
    assert amqp_recorder.for_station("NOBODY-HERE") == []
