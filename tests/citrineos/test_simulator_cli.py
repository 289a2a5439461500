"""``optivgi citrineos simulate`` against the CitrineOS double."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble
from click.testing import CliRunner

from optivgi_citrineos.cli import citrineos

_UNSET = {name: None for name in ("SCENARIO_FILE", "STATION_IDS", "CITRINEOS_WS_URL", "SIMULATOR_SPEED",
                                  "CONNECTORS_PER_STATION", "METER_VALUES_INTERVAL", "VOLTAGE", "PHASES")}


def test_simulate_runs_a_scenario_file(citrineos_double: CitrineOSDouble, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    sid = f"CLI-{uuid.uuid4().hex[:8].upper()}"
    scenario = tmp_path / "one.json"
    scenario.write_text(json.dumps({"sessions": [{
        "station_id": sid, "connector_id": 2, "arrive_offset_s": 0, "depart_offset_s": 60, "capacity_kwh": 50,
        "arrival_soc": 0.3, "target_soc": 0.9, "max_charge_rate_kw": 6.0, "id_tag": "CLI-TAG"}]}))
    caplog.set_level(logging.INFO, logger="optivgi_citrineos")
    result = CliRunner(env=_UNSET).invoke(citrineos, [
        "simulate", "--url", citrineos_double.ws_url, "--stations", sid, "--scenario", str(scenario),
        "--speed", "60", "--meter-interval", "15", "--duration", "2.5", "--summary-every", "0.5"])
    assert result.exit_code == 0, result.output
    assert f"1 stations x 2 connectors -> {citrineos_double.ws_url}, speed x60, 1 sessions" in result.output
    messages = [r.getMessage() for r in caplog.records]
    assert f"EV 1 arrived at {sid}/2 — max 6.00 kW, 50 kWh at 30 %, wants 90 %" in messages
    assert any(m.startswith(f"EV 1 left {sid}/2") for m in messages)
    assert any("stations online" in m for m in messages)
    # The double stored the finished transaction: 6 kW from its start to its stop on the simulated
    # clock (up to the 60 s of the stay; less when the station's boot made the car wait).
    row = httpx.get(f"{citrineos_double.rest_url}/data/transactions/transaction",
                    params={"stationId": sid, "transactionId": 1, "tenantId": 1}, timeout=10).json()
    assert row["isActive"] is False
    charged_s = (datetime.fromisoformat(row["endTime"]) - datetime.fromisoformat(row["startTime"])).total_seconds()
    assert 0 < charged_s <= 60.5
    assert float(row["totalKwh"]) == pytest.approx(6.0 * charged_s / 3600, abs=0.002)


def test_simulate_rejects_bad_settings(tmp_path: Path) -> None:
    result = CliRunner(env=_UNSET).invoke(citrineos, ["simulate", "--stations", "A", "--scenario", "default"])
    assert result.exit_code != 0
    assert "not in station_ids" in result.output
    missing = CliRunner(env=_UNSET).invoke(citrineos, ["simulate", "--scenario", str(tmp_path / "nope.json")])
    assert missing.exit_code != 0 and "cannot read scenario" in missing.output
