"""The RabbitMQ listener against the run's real broker (``amqp_url``: a private node or a given one).

Messages are published on a headers exchange of the run in the shape CitrineOS 1.8.3 uses
(headers origin/eventGroup/action/state/stationId/correlationId/tenantId/timestamp, body with
``payload`` or, for CitrineOS's own answers, ``_payload``). Each test uses its own station id,
because other processes may publish on the same exchange. A broker that cannot be reached makes
these tests fail, never skip.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from citrineos_testdouble.contract import set_profile_body
from services import RUN_ID, RabbitNode, ServiceUnavailable
from support import missing

from optivgi_citrineos.listener import (
    AmqpEvent,
    CitrineOSListener,
    ProfileAnswerTracker,
    parse_message,
    profile_fingerprint,
    trigger_reason,
)

EXCHANGE = f"citrineos-listener-{RUN_ID}"


# -- helpers ---------------------------------------------------------------------------------


def citrineos_message(
    station: str,
    action: str,
    payload: Any,
    *,
    origin: str = "cs",
    state: int = 1,
    correlation_id: str | None = None,
    tenant: int = 1,
) -> tuple[dict[str, str], bytes]:
    """Headers and body as CitrineOS publishes them (recorded in amqp-messages.jsonl)."""
    cid = correlation_id or str(uuid.uuid4())
    stamp = "2026-11-24T00:14:38.436Z"
    group = "router" if origin == "cs" or state == 2 else "smartcharging"
    context = {"stationId": station, "correlationId": cid, "tenantId": tenant, "timestamp": stamp}
    headers = {
        "origin": origin,
        "eventGroup": group,
        "action": action,
        "state": str(state),
        "stationId": station,
        "correlationId": cid,
        "tenantId": str(tenant),
        "timestamp": stamp,
    }
    if origin == "csms" and state == 2:
        body: dict[str, Any] = {
            "_origin": origin,
            "_eventGroup": group,
            "_action": action,
            "_state": state,
            "_context": context,
            "_payload": payload,
            "_protocol": "ocpp1.6",
        }
    else:
        body = {
            "origin": origin,
            "eventGroup": group,
            "action": action,
            "context": context,
            "state": state,
            "protocol": "ocpp1.6",
            "payload": payload,
        }
    return headers, json.dumps(body).encode()


class Publisher:
    """A separate connection publishing like CitrineOS (transient, application/json, headers)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: pika.BlockingConnection | None = None
        self.channel: Any = None
        self.connect()

    def connect(self) -> None:
        try:
            self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        except pika.exceptions.AMQPError as exc:
            pytest.fail(f"RabbitMQ at {self.url} is not reachable: {exc!r}")
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=EXCHANGE, exchange_type="headers", durable=False, auto_delete=False)

    def publish(self, station: str, action: str, payload: Any, **kw: Any) -> str:
        headers, body = citrineos_message(station, action, payload, **kw)
        props = pika.BasicProperties(
            content_type="application/json", content_encoding="utf-8", delivery_mode=1, priority=0, headers=headers
        )
        self.channel.basic_publish(exchange=EXCHANGE, routing_key="", body=body, properties=props)
        return headers["correlationId"]

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.close()


class Recorder:
    """Collects trigger reasons; tests wait on a predicate instead of sleeping."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, reason: str) -> None:
        with self._cond:
            self.reasons.append(reason)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 60.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.reasons), timeout)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def station() -> str:
    return f"LSN-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publisher(amqp_url: str) -> Iterator[Publisher]:
    pub = Publisher(amqp_url)
    yield pub
    pub.close()


@pytest.fixture
def make_listener(station: str, amqp_url: str) -> Iterator[Callable[..., CitrineOSListener]]:
    started: list[CitrineOSListener] = []

    def make(**kw: Any) -> CitrineOSListener:
        kw.setdefault("accept", lambda e: e.station_id == station)
        listener = CitrineOSListener(amqp_url, exchange=EXCHANGE, **kw)
        listener.start()
        started.append(listener)
        assert listener.wait_ready(60), f"the listener did not start consuming: is RabbitMQ at {amqp_url} up?"
        return listener

    yield make
    for listener in started:
        listener.stop()


# -- pure functions --------------------------------------------------------------------------


def test_parse_message_reads_headers_and_both_body_shapes() -> None:
    headers, body = citrineos_message("S-1", "StopTransaction", {"transactionId": 1, "meterStop": 1300})
    event = parse_message(headers, body)
    assert event == AmqpEvent(
        "StopTransaction", "cs", 1, "S-1", headers["correlationId"], "1", {"transactionId": 1, "meterStop": 1300}
    )
    headers, body = citrineos_message("S-1", "StartTransaction", {"transactionId": 7}, origin="csms", state=2)
    answer = parse_message(headers, body)
    assert answer is not None and answer.payload == {"transactionId": 7} and answer.state == 2
    assert parse_message({"action": "X"}, b"not json") is None
    assert parse_message({}, b"{}") is None


def test_trigger_reason_skips_profile_traffic_and_periodic_meter_values() -> None:
    def ev(action: str, payload: Any, origin: str = "cs", state: int = 1) -> AmqpEvent:
        return AmqpEvent(action, origin, state, "S-1", "c", "1", payload)

    assert trigger_reason(ev("SetChargingProfile", {"status": "Accepted"}, state=2)) is None
    assert trigger_reason(ev("SetChargingProfile", {}, origin="csms")) is None
    assert trigger_reason(ev("StartTransaction", {"transactionId": 1}, origin="csms", state=2)) is None
    assert trigger_reason(ev("MeterValues", {})) is None
    periodic = {
        "eventType": "Updated",
        "triggerReason": "MeterValuePeriodic",
        "transactionInfo": {"transactionId": "a"},
    }
    assert trigger_reason(ev("TransactionEvent", periodic)) is None
    assert trigger_reason(ev("TransactionEvent", {**periodic, "eventType": "Ended"})) is not None
    assert trigger_reason(ev("StopTransaction", {"transactionId": 3})) == "StopTransaction S-1 tx 3"
    assert trigger_reason(ev("StatusNotification", {"connectorId": 1, "status": "Charging"})) == (
        "StatusNotification S-1#1 Charging"
    )


def test_fingerprint_survives_javascript_number_rendering() -> None:
    sent = set_profile_body(9001, [16.0])
    published = json.loads(json.dumps(sent).replace("16.0", "16"))
    assert profile_fingerprint(sent) == profile_fingerprint(published)
    other = json.loads(json.dumps(sent).replace("16.0", "10.5"))
    assert profile_fingerprint(sent) != profile_fingerprint(other)
    assert profile_fingerprint({"status": "Accepted"}) is None


# -- against the broker ----------------------------------------------------------------------


def test_exactly_one_trigger_per_charging_event(
    make_listener: Callable[..., CitrineOSListener], publisher: Publisher, station: str
) -> None:
    recorder = Recorder()
    make_listener(trigger=recorder)
    publisher.publish(station, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"})
    cid = publisher.publish(
        station,
        "StartTransaction",
        {"connectorId": 1, "idTag": "T-1", "meterStart": 1000, "timestamp": "2026-11-24T00:14:38Z"},
    )
    # None of these may trigger: CitrineOS's own answer, meter values, profile traffic, periodic 2.0.1 updates.
    publisher.publish(
        station,
        "StartTransaction",
        {"idTagInfo": {"status": "Accepted"}, "transactionId": 1},
        origin="csms",
        state=2,
        correlation_id=cid,
    )
    publisher.publish(station, "MeterValues", {"connectorId": 1, "transactionId": 1, "meterValue": []})
    scp = publisher.publish(station, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {}}, origin="csms")
    publisher.publish(station, "SetChargingProfile", {"status": "Accepted"}, state=2, correlation_id=scp)
    publisher.publish(
        station,
        "TransactionEvent",
        {"eventType": "Updated", "triggerReason": "MeterValuePeriodic", "transactionInfo": {"transactionId": "x"}},
    )
    publisher.publish(station, "NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": {}})
    publisher.publish(station, "StopTransaction", {"meterStop": 1300, "transactionId": 1, "reason": "EVDisconnected"})
    publisher.publish(station, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"})
    # Another station on the same exchange is not this site's business.
    publisher.publish(station + "-other", "StopTransaction", {"transactionId": 1})

    # One queue keeps the order, so once the last event arrived every earlier one was handled.
    assert recorder.wait_for(lambda r: any("Available" in x for x in r)), recorder.reasons
    assert recorder.reasons == [
        f"StatusNotification {station}#1 Preparing",
        f"StartTransaction {station}#1",
        f"NotifyEVChargingNeeds {station}#1",
        f"StopTransaction {station} tx 1",
        f"StatusNotification {station}#1 Available",
    ]


def test_profile_answers_are_correlated_and_never_trigger(
    make_listener: Callable[..., CitrineOSListener], publisher: Publisher, station: str
) -> None:
    recorder = Recorder()
    tracker = ProfileAnswerTracker()
    make_listener(trigger=recorder, handlers=(tracker.feed,))
    body = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 9001,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "transactionId": 4,
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "startSchedule": "2026-11-24T00:00:00Z",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20.8, "numberPhases": 1}],
            },
        },
    }
    mine = tracker.expect(1, station, body)
    rejected_body = json.loads(json.dumps(body).replace("20.8", "6.0"))
    rejected = tracker.expect(1, station, rejected_body)

    # Someone else's profile for the same station comes first and must not be taken for ours.
    foreign = json.loads(json.dumps(body).replace("9001", "1"))
    fcid = publisher.publish(station, "SetChargingProfile", foreign, origin="csms")
    publisher.publish(station, "SetChargingProfile", {"status": "Rejected"}, state=2, correlation_id=fcid)
    cid = publisher.publish(station, "SetChargingProfile", body, origin="csms")
    publisher.publish(station, "SetChargingProfile", {"status": "Accepted"}, state=2, correlation_id=cid)
    rcid = publisher.publish(station, "SetChargingProfile", rejected_body, origin="csms")
    publisher.publish(station, "SetChargingProfile", {"status": "Rejected"}, state=2, correlation_id=rcid)
    publisher.publish(station, "StatusNotification", {"connectorId": 1, "status": "Charging"})

    assert mine.wait(60) and rejected.wait(60)
    assert (mine.correlation_id, mine.status) == (cid, "Accepted")
    assert (rejected.correlation_id, rejected.status) == (rcid, "Rejected")
    assert recorder.wait_for(lambda r: len(r) >= 1)
    assert recorder.reasons == [f"StatusNotification {station}#1 Charging"]
    tracker.discard(mine)
    tracker.discard(rejected)
    assert tracker.waiting == 0


def test_stop_removes_the_queue(make_listener: Callable[..., CitrineOSListener], amqp_url: str) -> None:
    listener = make_listener()
    queue = listener.queue_name
    assert queue is not None and listener.connection_count == 1
    listener.stop()
    assert not listener.is_consuming
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            conn.channel().queue_declare(queue=queue, passive=True)
        assert info.value.reply_code == 404
    finally:
        if conn.is_open:
            conn.close()


def test_unreachable_broker_is_reported_not_raised() -> None:
    listener = CitrineOSListener("amqp://guest:guest@127.0.0.1:1/%2F", reconnect_initial_s=0.1, reconnect_max_s=0.2)
    listener.start()
    try:
        assert listener.wait_ready(0.5) is False
        assert listener.connection_count == 0
    finally:
        listener.stop()
    assert not listener.is_consuming


@pytest.mark.slow
def test_reconnects_after_the_broker_drops_its_connection(
    make_listener: Callable[..., CitrineOSListener], station: str, rabbitmq_node: RabbitNode, amqp_url: str
) -> None:
    recorder = Recorder()
    listener = make_listener(trigger=recorder)
    first_queue = listener.queue_name
    # Only the listener's own connection, by its name, on the run's broker (never the whole broker).
    try:
        closed = rabbitmq_node.close_connections("optivgi-citrineos-listener", "optivgi listener test")
    except ServiceUnavailable as exc:
        missing(str(exc))
    assert closed == 1

    assert wait_until(lambda: listener.connection_count >= 2 and listener.is_consuming, 60.0), (
        f"the listener did not consume again within 60 s (connections: {listener.connection_count})"
    )
    assert listener.queue_name != first_queue

    publisher = Publisher(amqp_url)
    try:
        publisher.publish(station, "StopTransaction", {"meterStop": 1300, "transactionId": 9})
        publisher.publish(station, "StatusNotification", {"connectorId": 1, "status": "Finishing"})
        assert recorder.wait_for(lambda r: len(r) >= 2)
    finally:
        publisher.close()
    # One queue, one consumer: each event triggered exactly once.
    assert recorder.reasons == [f"StopTransaction {station} tx 9", f"StatusNotification {station}#1 Finishing"]
