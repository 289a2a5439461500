"""A charger's StatusNotification burst, through the real broker, costs one cycle.

A charger booting and starting a session reports connector 0, then its connector, often twice
with the same status, within milliseconds. The listener drops what cannot change the plan
(connector 0, a repeated status) and the loop coalesces the rest into a single cycle.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import pika
from services import RUN_ID

from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.config import Settings
from optivgi.loop import CycleReport, Scheduler
from optivgi.models.ev import EV
from optivgi.translation import Translation
from optivgi_citrineos.listener import CitrineOSListener

EXCHANGE = f"citrineos-burst-{RUN_ID}"


def publish(channel: Any, station: str, action: str, payload: dict[str, Any]) -> None:
    cid = str(uuid.uuid4())
    stamp = "2026-11-24T00:14:38.436Z"
    headers = {"origin": "cs", "eventGroup": "router", "action": action, "state": "1", "stationId": station,
               "correlationId": cid, "tenantId": "1", "timestamp": stamp}
    body = {"origin": "cs", "eventGroup": "router", "action": action, "state": 1, "protocol": "ocpp1.6",
            "context": {"stationId": station, "correlationId": cid, "tenantId": 1, "timestamp": stamp},
            "payload": payload}
    channel.basic_publish(exchange=EXCHANGE, routing_key="", body=json.dumps(body),
                          properties=pika.BasicProperties(content_type="application/json", headers=headers))


class _Idle(Translation):
    """No sessions: only the number of cycles matters here."""

    def get_peak_power_demand(self, group_name: str, now: datetime, voltage: float | None = None) -> float:
        return 30.0

    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        return [], 240.0

    def send_power_to_evs(self, powers: Any, unit: Any = None) -> None:
        return None


def test_a_status_burst_triggers_one_cycle(amqp_url: str) -> None:
    station = f"BURST-{uuid.uuid4().hex[:8].upper()}"
    reports: list[CycleReport] = []
    scheduler = Scheduler(_Idle(), EqualShareAlgorithm(), Settings(interval_s=3600), on_cycle=reports.append,
                          coalesce_s=1.0)
    listener = CitrineOSListener(
        amqp_url, exchange=EXCHANGE, trigger=scheduler.trigger, accept=lambda e: e.station_id == station
    )
    listener.start()
    # The loop runs once the whole burst has reached it: what is pending then is one cycle, on a
    # machine of any speed (a burst spread over more than the coalescing window is not a burst).
    runner = threading.Thread(target=scheduler.run, kwargs={"max_cycles": 2}, daemon=True)
    connection = None
    try:
        assert listener.wait_ready(60), f"RabbitMQ at {amqp_url} is not reachable"
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        burst = [
            ("BootNotification", {"chargePointVendor": "Lab", "chargePointModel": "Sim"}),
            ("StatusNotification", {"connectorId": 0, "errorCode": "NoError", "status": "Available"}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}),
            ("StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-11-24T00:14Z"}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
        ]
        for action, payload in burst:
            publish(channel, station, action, payload)
        deadline = time.monotonic() + 60
        while listener.triggers + listener.suppressed < 7 and time.monotonic() < deadline:
            time.sleep(0.02)
        runner.start()
        runner.join(60)
        assert not runner.is_alive()
        # Connector 0 and the two repeats are dropped; the boot never triggers.
        assert (listener.triggers, listener.suppressed) == (4, 3)
        assert [r.reason for r in reports] == [
            "start",
            f"StatusNotification {station}#1 Available (+3 coalesced)",
        ]
    finally:
        scheduler.stop()
        runner.join(5)
        listener.stop()
        if connection is not None:
            connection.close()
