"""``optivgi run --translation citrineos`` as a separate process against the CitrineOS double.

The process talks to the double over real HTTP (REST and GraphQL) and the real RabbitMQ broker;
the charge points are real OCPP 1.6J websocket clients. Only charging events start cycles here
(``INTERVAL_S`` is an hour), so the test sees what the event path promises: a profile that follows
a StartTransaction because of it (a cycle whose reason is that charger's event; the latency,
measured on the charger's side, is printed, not judged, so the test holds on a loaded machine),
and a fair share of a 30 kW site.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from citrineos_testdouble import CitrineOSDouble, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread

SITE_KW = 30.0
VOLTS = 240.0
#: Generous bounds against a hang only; the assertions do not depend on how fast the machine is.
WAIT_S = 120.0


class Process:
    """The ``optivgi run`` child, with its stderr collected line by line."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "optivgi", "--log-level", "INFO", "run", "--translation", "citrineos"],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"'{text}' not logged within {timeout} s; log:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.05)


def tx_profiles(cp: TestChargePoint) -> list[tuple[float, dict[str, Any]]]:
    """(arrival on the charger's loop clock, csChargingProfiles) of every TxProfile received."""
    return [
        (r.at, r.payload["csChargingProfiles"])
        for r in list(cp.received)
        if r.action == "SetChargingProfile"
        and r.payload.get("csChargingProfiles", {}).get("chargingProfilePurpose") == "TxProfile"
    ]


def first_limit(profile: dict[str, Any]) -> float:
    return float(profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"])


async def start_timed(cp: TestChargePoint) -> float:
    """Boot and start a session like a charger; return when StartTransaction left (loop clock)."""
    await cp.connect()
    await cp.boot()
    await cp.status("Available", connector_id=0)
    await cp.status("Available")
    await cp.status("Preparing")
    await cp.authorize()
    sent_at = asyncio.get_running_loop().time()
    await cp.start_transaction(meter_start_wh=5000)
    await cp.status("Charging")
    return sent_at


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as thread:
        yield thread


def test_run_process_sends_profiles_on_events_and_exits_cleanly(
    citrineos_double: CitrineOSDouble, loop: LoopThread, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    stations = [f"RUN{tag}-{i:02d}" for i in range(1, 7)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONN_", "CITRINEOS_", "STATION_", "OPTIVGI_"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "CITRINEOS_API_URL": citrineos_double.rest_url,
            "HASURA_URL": citrineos_double.graphql_url,
            "AMQP_URL": citrineos_double.amqp_url,
            "CITRINEOS_EXCHANGE": citrineos_double.exchange,
            "SITE_POWER_LIMIT_KW": str(SITE_KW),
            "VOLTAGE": str(VOLTS),
            "CHARGING_RATE_UNIT": "A",
            "STATION_IDS": ",".join(stations),
            "INTERVAL_S": "3600",
            "CITRINEOS_ANSWER_TIMEOUT_S": "3",
            "CITRINEOS_HTTP_TIMEOUT_S": "3",
        }
    )
    for i in range(1, 7):
        env[f"CONN_{i:02d}_ENERGY_NEEDED_KWH"] = "30"
        env[f"CONN_{i:02d}_MAX_POWER_KW"] = "7.2"
    cps = [TestChargePoint(s, citrineos_double.ws_url, id_tag=f"TAG-{s}") for s in stations]
    process = Process(env, tmp_path)
    try:
        # The listener must be bound before the first charger speaks, or its events are not seen.
        process.wait_for_line("AMQP listener consuming", timeout=WAIT_S)
        process.wait_for_line("cycle 1 (start) done", timeout=WAIT_S)

        # One charger: its TxProfile follows its StartTransaction, sent by a cycle its events started.
        first = cps[0]
        sent_at = loop.run(start_timed(first))
        found = poll(lambda: [p for p in tx_profiles(first) if p[0] >= sent_at][:1] or None, WAIT_S, "a TxProfile")
        arrived_at, profile = found[0]
        print(f"StartTransaction -> SetChargingProfile on the charger: {(arrived_at - sent_at) * 1000:.0f} ms")
        event_cycle = re.compile(rf"cycle \d+ \((StartTransaction|StatusNotification) {first.station_id}#1\b")
        poll(lambda: event_cycle.search(process.log()), WAIT_S, f"a cycle started by {first.station_id}'s events")
        assert "(timer)" not in process.log()  # INTERVAL_S is an hour: no timer cycle sent it
        assert profile["transactionId"] == first.transaction_id
        # Alone, but the five stations not seen yet may draw their fallback share (30 kW / 6 = 5 kW)
        # as far as opti-vgi knows: 5 kW = 20.8 A at 240 V.
        assert first_limit(profile) == 20.8

        # Five more: six 7.2 kW sessions share 30 kW, 5.0 kW each = 20.8 A at 240 V (rounded down).
        futures = [loop.submit(start_timed(cp)) for cp in cps[1:]]
        for future in futures:
            future.result(WAIT_S)

        def all_at_share() -> bool:
            latest = [tx_profiles(cp) for cp in cps]
            return all(p and first_limit(p[-1][1]) == 20.8 for p in latest)

        poll(all_at_share, WAIT_S, f"every charger at 20.8 A; log:\n{process.log()[-3000:]}")
        limits = [first_limit(tx_profiles(cp)[-1][1]) for cp in cps]
        assert limits == [20.8] * 6
        assert sum(limits) * VOLTS / 1000 <= SITE_KW
        for cp in cps:
            assert tx_profiles(cp)[-1][1]["transactionId"] == cp.transaction_id

        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(WAIT_S) == 0, process.log()[-3000:]
        assert "signal SIGTERM received, stopping" in process.log()
    finally:
        process.kill()
        for cp in cps:
            if cp.connected:
                loop.run(cp.close())
