"""The simulator survives what CitrineOS 1.8.3 sends: CALLERROR codes OCPP 1.6 does not define, and a
StartTransaction that fails (contract README, "Run 3": ``RpcFrameworkError`` "Call already in progress").

The double answers the station's requests with injected CALLERRORs over a real websocket; what
the station does next is read from its frames, its snapshot and the double's tables.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from citrineos_testdouble import CitrineOSDouble
from psycopg import sql
from psycopg.rows import dict_row

from optivgi_citrineos.simulator import Simulator, SimulatorConfig


def _rows(double: CitrineOSDouble, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(double.dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(double.schema)))
        return list(conn.execute(query.encode(), params).fetchall())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.05)


@pytest.fixture
def survivor(citrineos_double: CitrineOSDouble) -> Iterator[tuple[Simulator, str]]:
    station = f"SURV-{uuid.uuid4().hex[:8].upper()}"
    # Every MeterValues of the first transaction attempt window fails, and the first StartTransaction.
    citrineos_double.fail_requests("StartTransaction", station_id=station, count=1)
    citrineos_double.fail_requests("MeterValues", station_id=station, count=3)
    config = SimulatorConfig(ws_url=citrineos_double.ws_url, station_ids=(station,), scenario=None, speed=20.0,
                             meter_values_interval_s=10.0, connectors_per_station=1)
    sim = Simulator(config).start()
    try:
        sim.wait_connected(timeout=20)
        yield sim, station
    finally:
        sim.stop()


def test_unknown_callerror_codes_and_a_failed_start_do_not_stop_the_station(
    citrineos_double: CitrineOSDouble, survivor: tuple[Simulator, str]
) -> None:
    sim, station = survivor
    transaction_id = sim.start_session(station, 1, timeout=60)

    starts = [f for f in sim.frames(station) if f.direction == "send" and f.action == "StartTransaction"
              and f.message_type == 2]
    answers = [f for f in sim.frames(station) if f.direction == "recv" and f.action == "StartTransaction"]
    assert len(starts) == 2, "the failed StartTransaction was not retried exactly once"
    assert [a.message_type for a in answers] == [4, 3]
    assert '"RpcFrameworkError"' in answers[0].text
    # The retry waited on the simulated clock: at least the initial backoff of 5 simulated seconds.
    assert (starts[1].sim_time - starts[0].sim_time).total_seconds() >= 5.0

    # Three MeterValues are refused with RpcFrameworkError; the metering task keeps going and the
    # double stores the following ones.
    def stored() -> list[dict[str, Any]]:
        return _rows(citrineos_double, 'SELECT m.* FROM "MeterValues" m JOIN "Transactions" t ON '
                     't.id = m."transactionDatabaseId" WHERE t."stationId" = %s AND t."transactionId" = %s',
                     station, str(transaction_id))

    _wait(lambda: len(stored()) >= 2, 30, "two stored MeterValues after the refused ones")
    meter_calls = [f for f in sim.frames(station) if f.direction == "send" and f.action == "MeterValues"
                   and f.message_type == 2]
    refused = [f for f in sim.frames(station) if f.direction == "recv" and f.action == "MeterValues"
               and f.message_type == 4]
    assert len(refused) == 3
    assert len(meter_calls) >= len(refused) + 2
    assert citrineos_double.clear_request_faults() >= 4

    # The car charges after the retry, and no task had to be restarted (nothing raised).
    snap = sim.snapshot().connector(station, 1)
    assert snap.transaction_id == transaction_id
    assert snap.power_kw > 0
    assert snap.session_energy_wh > 0
    rows = _rows(citrineos_double, 'SELECT "isActive" FROM "Transactions" WHERE "stationId" = %s', station)
    assert [r["isActive"] for r in rows] == [True]


def test_a_failing_task_is_restarted_and_logged(
    citrineos_double: CitrineOSDouble, caplog: pytest.LogCaptureFixture
) -> None:
    station = f"SURV-{uuid.uuid4().hex[:8].upper()}"
    config = SimulatorConfig(ws_url=citrineos_double.ws_url, station_ids=(station,), scenario=None, speed=20.0,
                             connectors_per_station=1)
    with Simulator(config) as sim:
        sim.wait_connected(timeout=20)
        st = sim._stations[station]
        runs: list[int] = []

        async def flaky() -> None:
            runs.append(1)
            if len(runs) < 3:
                raise RuntimeError("simulated firmware fault")

        async def go() -> None:
            task = st.supervise(flaky, "flaky")
            await task

        sim._run_in_loop(go(), timeout=30)
        assert len(runs) == 3
        assert st.restarts == 2
    assert sum("task flaky failed; restarting it" in r.getMessage() for r in caplog.records) == 2
