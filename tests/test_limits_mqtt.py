"""The MQTT limit source against the real Mosquitto broker on 127.0.0.1:1883.

Every test uses its own topic: other runs may share the broker."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from optivgi.limits.mqtt import MqttLimit  # noqa: E402

HOST, PORT = "127.0.0.1", 1883
WAIT_S = 30.0


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", autouse=True)
def broker() -> None:
    if not _broker_up():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no MQTT broker on {HOST}:{PORT} (CI needs Mosquitto)")
        pytest.skip(f"no MQTT broker on {HOST}:{PORT}")


class ManualClock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 5, 16, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def real_seconds(self, seconds: float) -> float:
        return seconds

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


class Publisher:
    def __init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
        self.client.connect(HOST, PORT)
        self.client.loop_start()

    def send(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    pub = Publisher()
    yield pub
    pub.close()


@pytest.fixture
def topic() -> str:
    return f"optivgi-test/{uuid.uuid4().hex}/limit"


def _started(src: MqttLimit) -> MqttLimit:
    src.start()
    assert src.subscribed.wait(WAIT_S), "not subscribed"
    return src


def test_mqtt_limit_drop_and_timeout(publisher: Publisher, topic: str) -> None:
    clock = ManualClock()
    drops: list[str] = []
    fell = threading.Event()

    def trigger(reason: str) -> None:
        drops.append(reason)
        if "to 5 kW" in reason:
            fell.set()

    src = _started(MqttLimit(topic, floor_kw=5.0, timeout_s=30, check_s=0.05, clock=clock, trigger=trigger))
    try:
        assert src.limit_kw() == 5.0
        publisher.send(topic, "30")
        assert src.wait_for_update(0, WAIT_S)
        assert src.limit_kw() == 30.0 and drops == []
        publisher.send(topic, '{"limit_kw": 15, "forecast": [{"at": "2026-01-05T16:10:00Z", "kw": 10}]}')
        assert src.wait_for_update(1, WAIT_S)
        assert src.limit_kw() == 15.0
        assert drops == ["site limit dropped from 30 to 15 kW (mqtt)"]
        assert src.series(clock.now(), 300, 3).tolist() == [15.0, 15.0, 10.0]
        # A malformed message is ignored; the last good reading stays until it times out.
        publisher.send(topic, "lots")
        publisher.send(topic, '{"limit_kw": 14}')
        assert src.wait_for_update(2, WAIT_S)
        assert src.rejected == 1 and src.limit_kw() == 14.0
        # The publisher stops: after the timeout the watchdog finds the reading stale.
        clock.advance(30)
        assert fell.wait(WAIT_S), drops
        assert src.limit_kw() == 5.0
        assert drops[-1] == "site limit dropped from 14 to 5 kW (mqtt)"
    finally:
        src.stop()


def test_mqtt_retained_message_is_not_a_fresh_reading(publisher: Publisher, topic: str) -> None:
    publisher.send(topic, "40", retain=True)
    try:
        src = _started(MqttLimit(topic, floor_kw=2.0, timeout_s=60, clock=ManualClock()))
        try:
            publisher.send(topic, "12")
            assert src.wait_for_update(0, WAIT_S)
            # The retained 40 kW came first but was not taken; the live 12 kW was.
            assert src.limit_kw() == 12.0 and src.updates == 1
            assert src.messages == 2
        finally:
            src.stop()
        taker = _started(MqttLimit(topic, floor_kw=2.0, timeout_s=60, accept_retained=True, clock=ManualClock()))
        try:
            assert taker.wait_for_update(0, WAIT_S)
            assert taker.limit_kw() == 40.0
        finally:
            taker.stop()
    finally:
        publisher.send(topic, b"", retain=True)  # clear the retained message


def test_an_mqtt_drop_re_plans_at_once_reductions_first(publisher: Publisher, topic: str) -> None:
    """30 -> 15 kW on the topic: the next cycle runs on the drop, its profiles sum to <= 15 kW and
    every moment of the transition (profiles applied one by one, in the order sent) stays <= 30 kW;
    with the publisher silent past the timeout, the floor."""
    import queue
    from collections.abc import Mapping

    from optivgi.algorithms.equal_share import EqualShareAlgorithm
    from optivgi.config import Settings
    from optivgi.loop import CycleReport, Scheduler
    from optivgi.models import EV, ChargingProfile, ChargingRateUnit
    from optivgi.translation import SendOutcome, Translation

    clock = ManualClock()

    class Site(Translation):
        def __init__(self) -> None:
            self.sent: list[list[tuple[str, float]]] = []

        def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
            return [EV(ev_id=f"EV-{i}", station_id=f"S{i}", connector_id=1,
                       arrival_time=clock.now() - timedelta(hours=1), departure_time=clock.now() + timedelta(days=1),
                       energy=100.0, max_power=7.2, transaction_id=i) for i in range(6)], 230.0

        def get_peak_power_demand(self, group_name: str, now: datetime, voltage: float | None = None) -> float:
            return 40.0

        def send_power_to_evs(self, powers: Mapping[EV, ChargingProfile],
                              unit: ChargingRateUnit | None = None) -> dict[str, SendOutcome]:
            self.sent.append([(str(ev.ev_id), p.limit_kw_at(0, 230.0)) for ev, p in powers.items()])
            return {str(ev.ev_id): SendOutcome.APPLIED for ev in powers}

    site = Site()
    reports: queue.Queue[CycleReport] = queue.Queue()
    source = _started(MqttLimit(topic, floor_kw=5.0, timeout_s=60, check_s=0.05, clock=clock))
    try:
        publisher.send(topic, "30")
        assert source.wait_for_update(0, WAIT_S)
        scheduler = Scheduler(site, EqualShareAlgorithm(), Settings(horizon_s=600, voltage=230.0), clock=clock,
                              limit_source=source, on_cycle=reports.put)
        runner = threading.Thread(target=scheduler.run, daemon=True)
        runner.start()
        try:
            first = reports.get(timeout=WAIT_S)
            assert first.reason == "start" and first.groups["default"].site_limit_kw == 30.0
            in_force = dict(site.sent[-1])
            assert sum(in_force.values()) <= 30.0 + 1e-9
            publisher.send(topic, '{"limit_kw": 15}')
            drop = reports.get(timeout=WAIT_S)
            assert drop.reason.startswith("site limit dropped from 30 to 15 kW (mqtt)")
            for ev_id, kw in site.sent[-1]:
                in_force[ev_id] = kw
                assert sum(in_force.values()) <= 30.0 + 1e-9
            assert sum(in_force.values()) <= 15.0 + 1e-9
            # The publisher goes silent: past the timeout the watchdog drops the limit to the floor.
            clock.advance(60)
            stale = reports.get(timeout=WAIT_S)
            assert stale.reason.startswith("site limit dropped from 15 to 5 kW (mqtt)")
            assert sum(kw for _, kw in site.sent[-1]) <= 5.0 + 1e-9
        finally:
            scheduler.stop()
            runner.join(timeout=WAIT_S)
    finally:
        source.stop()
