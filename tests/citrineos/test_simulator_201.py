"""The simulator's OCPP 2.0.1 stations against the double's 2.0.1 side, over real websockets.

Every frame the simulator sent is checked against the ``ocpp`` library's 2.0.1 schemas.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from citrineos_testdouble import CitrineOSDouble
from psycopg import sql
from psycopg.rows import dict_row

from optivgi_citrineos.simulator import Scenario, Simulator, SimulatorConfig, validate_frame

VOLTS = 240.0


def _rows(double: CitrineOSDouble, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(double.dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(double.schema)))
        return list(conn.execute(query.encode(), params).fetchall())


def _post(double: CitrineOSDouble, path: str, station: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{double.rest_url}{path}", params={"identifier": station, "tenantId": 1}, json=body,
                          timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _wait(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.05)


def _profile(sim: Simulator, pid: int, stack: int, purpose: str, amps: float, tx: str | None = None,
             **extra: Any) -> dict[str, Any]:
    start = sim.clock.now() - dt.timedelta(seconds=1)
    body: dict[str, Any] = {
        "id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
        "chargingSchedule": [{"id": pid, "chargingRateUnit": "A",
                              "startSchedule": start.strftime("%Y-%m-%dT%H:%M:%S.") + "000Z",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": amps, "numberPhases": 1}]}],
        **extra,
    }
    if tx is not None:
        body["transactionId"] = tx
    return body


@pytest.fixture
def sim201(citrineos_double: CitrineOSDouble) -> Iterator[tuple[Simulator, str]]:
    station = f"SIM201-{uuid.uuid4().hex[:8].upper()}"
    config = SimulatorConfig(ws_url=citrineos_double.ws_url, ws201_url=citrineos_double.ws201_url,
                             station_ids=(station,), scenario=None, speed=10.0, connectors_per_station=1,
                             ocpp_version="2.0.1", voltage=VOLTS)
    sim = Simulator(config).start()
    try:
        sim.wait_connected(timeout=20)
        yield sim, station
    finally:
        sim.stop()
        sent = [f for f in sim.frames(station) if f.direction == "send" and f.message_type in (2, 3)]
        assert sent
        for frame in sent:
            validate_frame(frame.text, frame.action, version="2.0.1")


def test_a_201_session_with_limits_on_its_evse(citrineos_double: CitrineOSDouble,
                                                sim201: tuple[Simulator, str]) -> None:
    double = citrineos_double
    sim, station = sim201
    scp = "/ocpp/2.0.1/smartcharging/setChargingProfile"
    assert sim.ocpp_version(station) == "2.0.1"
    # The station booted over 2.0.1 and reported its EVSE as Available.
    (cs,) = _rows(double, 'SELECT protocol FROM "ChargingStations" WHERE id = %s', station)
    assert cs["protocol"] == "ocpp2.0.1"
    _wait(lambda: _rows(double, 'SELECT 1 FROM "StatusNotifications" WHERE "stationId" = %s AND "evseId" = 1 '
                        'AND "connectorStatus" = %s', station, "Available"), "StatusNotification Available")

    # GetBaseReport -> NotifyReport: CitrineOS learns the EVSE.
    assert _post(double, "/ocpp/2.0.1/reporting/getBaseReport", station,
                 {"requestId": 3, "reportBase": "FullInventory"}) == [{"success": True}]
    _wait(lambda: _rows(double, 'SELECT 1 FROM "Evses" WHERE "stationId" = %s AND "evseTypeId" = 1 AND '
                        '"evseId" IS NOT NULL', station), "the reported EVSE")

    transaction_id = sim.start_session(station, 1, timeout=20)
    tx = str(transaction_id)
    (row,) = _rows(double, 'SELECT t.*, c."connectorId" AS num, c."evseTypeConnectorId" AS sub FROM "Transactions" t '
                   'JOIN "Connectors" c ON c.id = t."connectorId" WHERE t."stationId" = %s', station)
    assert row["transactionId"] == tx and row["isActive"]
    assert (row["num"], row["sub"]) == (None, 1)  # the TransactionEvent's Connectors row, as recorded
    # NotifyEVChargingNeeds with the energy still wanted and the car's current limits.
    needs = _wait(lambda: [f.payload for f in sim.frames(station) if f.direction == "send"
                           and f.action == "NotifyEVChargingNeeds" and f.message_type == 2], "NotifyEVChargingNeeds")
    ac = needs[0]["chargingNeeds"]["acChargingParameters"]
    assert needs[0]["evseId"] == 1
    # 60 kWh from 20 % to 100 %, less what the car drew since its Started event.
    assert 47_900 <= ac["energyAmount"] <= 48_000
    assert (ac["evMinCurrent"], ac["evMaxCurrent"], ac["evMaxVoltage"]) == (6, 30, 240)
    # CitrineOS's own smart charging answers with a 32 A TxProfile at stack level 0: the car runs at its max.
    _wait(lambda: any(e.status == "Accepted" and e.profile.get("chargingProfileId") == 1
                      for e in sim.profile_log(station)), "CitrineOS's own TxProfile")
    snap = _wait(lambda: (c := sim.snapshot().connector(station, 1)).power_kw > 7.0 and c, "charging at 7.2 kW")
    assert snap.power_kw == pytest.approx(7.2, abs=0.01)

    # An optimizer's TxProfile one stack level up wins: 10 A = 2.4 kW.
    assert _post(double, scp, station, {"evseId": 1, "chargingProfile": _profile(sim, 9001, 2, "TxProfile", 10, tx)}) \
        == [{"success": True}]
    _wait(lambda: abs(sim.snapshot().connector(station, 1).power_kw - 2.4) < 0.01, "2.4 kW under 10 A")
    # A station maximum on EVSE 0 caps it further: 8 A = 1.92 kW.
    assert _post(double, scp, station, {"evseId": 0, "chargingProfile": _profile(
        sim, 9100, 0, "ChargingStationMaxProfile", 8)}) == [{"success": True}]
    _wait(lambda: abs(sim.snapshot().connector(station, 1).power_kw - 1.92) < 0.01, "1.92 kW under the station max")
    # 2.0.1 rules: another id at the same stack level for an overlapping period, and a TxProfile
    # for a transaction the EVSE does not run, are Rejected by the station.
    count = len(sim.profile_log(station))
    assert _post(double, scp, station, {"evseId": 1, "chargingProfile": _profile(sim, 9002, 2, "TxProfile", 16, tx)}) \
        == [{"success": True}]
    events = _wait(lambda: sim.profile_log(station)[count:], "the duplicate's answer")
    assert events[0].status == "Rejected" and "K01.FR.39" in (events[0].reason or "")
    assert abs(sim.snapshot().connector(station, 1).power_kw - 1.92) < 0.01
    # The same id replaces: 6 A (the station max of 8 A no longer binds).
    assert _post(double, scp, station, {"evseId": 1, "chargingProfile": _profile(sim, 9001, 2, "TxProfile", 6, tx)}) \
        == [{"success": True}]
    _wait(lambda: abs(sim.snapshot().connector(station, 1).power_kw - 1.44) < 0.01, "1.44 kW under 6 A")
    # TransactionEvent Updated carries the meter values the double stores with their units.
    meters = _wait(lambda: len(rows := _rows(double, 'SELECT "sampledValue" FROM "MeterValues" WHERE '
                                             '"transactionDatabaseId" = %s ORDER BY id', row["id"])) >= 3 and rows,
                   "three stored meter values")
    assert {s["measurand"] for s in meters[-1]["sampledValue"]} == {
        "Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "SoC"}
    # The charging state changes are reported as TransactionEvent Updated ChargingStateChanged.
    events_sent = [f.payload for f in sim.frames(station) if f.direction == "send" and f.action == "TransactionEvent"
                   and f.message_type == 2]
    assert events_sent[0]["eventType"] == "Started" and events_sent[0]["evse"] == {"id": 1, "connectorId": 1}
    assert any(e["triggerReason"] == "ChargingStateChanged" and e["transactionInfo"]["chargingState"] == "Charging"
               for e in events_sent)

    sim.stop_session(station, 1)
    (ended,) = _rows(double, 'SELECT "isActive", "stoppedReason" FROM "Transactions" WHERE "stationId" = %s', station)
    assert ended == {"isActive": False, "stoppedReason": "EVDisconnected"}
    last = [f.payload for f in sim.frames(station) if f.direction == "send" and f.action == "TransactionEvent"
            and f.message_type == 2][-1]
    assert last["eventType"] == "Ended" and last["triggerReason"] == "EVCommunicationLost"
    assert [e["seqNo"] for e in events_sent] == list(range(len(events_sent)))


def test_mixed_sites_choose_the_version_per_station() -> None:
    scenario = Scenario.from_dict({"sessions": [{"station_id": "A"}, {"station_id": "B"}],
                                   "stations": {"B": {"ocpp": "2.0.1"}}})
    config = SimulatorConfig(station_ids=("A", "B", "C"), scenario=scenario, ocpp201_stations=("C",))
    assert [config.ocpp_version_of(s) for s in ("A", "B", "C")] == ["1.6", "2.0.1", "2.0.1"]
    env = SimulatorConfig.from_env({"SCENARIO_FILE": "", "STATION_IDS": "A,B", "CITRINEOS_OCPP201_STATIONS": "B",
                                    "CITRINEOS_WS201_URL": "ws://10.0.0.1:8081/"})
    assert (env.ocpp_version_of("A"), env.ocpp_version_of("B"), env.ws201_url) == ("1.6", "2.0.1",
                                                                                   "ws://10.0.0.1:8081")
    assert SimulatorConfig.from_env({"SCENARIO_FILE": "", "OCPP_VERSION": "2.0.1"}).ocpp_version_of("X") == "2.0.1"
    from optivgi.errors import ConfigurationError, ScenarioError

    with pytest.raises(ScenarioError, match=r"stations.B.ocpp must be 1.6 or 2.0.1, got '2.1'"):
        Scenario.from_dict({"sessions": [], "stations": {"B": {"ocpp": "2.1"}}})
    with pytest.raises(ConfigurationError, match=r"ocpp_version must be 1\.6 or 2\.0\.1"):
        SimulatorConfig(ocpp_version="1.5")


def test_simulate_command_speaks_201(citrineos_double: CitrineOSDouble, tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from optivgi_citrineos.cli import citrineos

    sid = f"CLI201-{uuid.uuid4().hex[:8].upper()}"
    scenario = tmp_path / "one.json"
    scenario.write_text(json.dumps({"sessions": [{"station_id": sid, "arrive_offset_s": 0, "depart_offset_s": None}]}))
    env = {name: None for name in ("SCENARIO_FILE", "STATION_IDS", "CITRINEOS_WS_URL", "CITRINEOS_WS201_URL",
                                   "OCPP_VERSION", "CITRINEOS_OCPP201_STATIONS")}
    result = CliRunner(env=env).invoke(citrineos, [
        "simulate", "--ocpp", "2.0.1", "--url201", citrineos_double.ws201_url, "--stations", sid,
        "--scenario", str(scenario), "--speed", "30", "--duration", "4", "--summary-every", "0"])
    assert result.exit_code == 0, result.output
    assert f"1 stations x 2 connectors -> {citrineos_double.ws201_url}, speed x30, 1 sessions" in result.output
    (station,) = _rows(citrineos_double, 'SELECT protocol FROM "ChargingStations" WHERE id = %s', sid)
    assert station["protocol"] == "ocpp2.0.1"
