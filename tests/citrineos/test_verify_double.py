"""The verifier against the CitrineOS double: profiles really sent through REST, answered by real
OCPP 1.6J charge points over websockets, stored by the double and read back over its GraphQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble, ProfileAnswer, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread
from citrineos_testdouble.contract import set_profile_body
from click.testing import CliRunner

from optivgi_citrineos import queries
from optivgi_citrineos.verify import fetch_verify_data, run_checks, verify_command

REJECTED_ID = 777


def _body(tx: int, start: datetime, watts: float, profile_id: int = 9001) -> dict[str, Any]:
    return set_profile_body(profile_id, [watts], tx=tx, unit="W", start=start.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _graphql_rows(double: CitrineOSDouble, stations: list[str]) -> list[dict[str, Any]]:
    body = {
        "query": queries.PROFILE_MESSAGES_QUERY,
        "variables": {"stationIds": stations, "tenantId": 1},
        "operationName": queries.PROFILE_MESSAGES_OPERATION,
    }
    answer = httpx.post(double.graphql_url, json=body, timeout=10).json()
    rows: list[dict[str, Any]] = answer["data"]["OCPPMessages"]
    return rows


@pytest.fixture(scope="module")
def site(citrineos_double: CitrineOSDouble) -> Iterator[list[str]]:
    """Six stations with a session each and three cycles of profiles, the fifth EV curtailing.

    Cycle 1: three EVs at 7.2 kW; cycle 2: five at 6.0 kW (30 kW); cycle 3: six at 5.0 kW, plus a
    profile with another id that station 6 rejects (it must count nowhere).
    """
    double = citrineos_double
    tag = uuid.uuid4().hex[:6].upper()
    stations = [f"V-{tag}-{i:02d}" for i in range(1, 7)]
    with LoopThread() as loop:
        cps = [
            TestChargePoint(s, double.ws_url, id_tag=f"VT-{s}", profile_answers={REJECTED_ID: ProfileAnswer.rejected()})
            for s in stations
        ]
        txs = []
        for cp in cps:
            loop.run(cp.connect())
            txs.append(loop.run(cp.start_session(meter_start_wh=1000)))
        t0 = datetime.now(UTC).replace(microsecond=0)
        plans = [
            (t0, [7200.0] * 3),
            (t0 + timedelta(seconds=60), [6000.0] * 5),
            (t0 + timedelta(seconds=120), [5000.0] * 6),
        ]
        sent = 0
        for start, watts in plans:
            for station, tx, w in zip(stations, txs, watts, strict=False):
                answer = httpx.post(
                    f"{double.rest_url}/ocpp/1.6/smartcharging/setChargingProfile",
                    params={"identifier": station, "tenantId": 1},
                    json=_body(tx, start, w),
                    timeout=10,
                ).json()
                assert answer == [{"success": True}]
                sent += 1
        httpx.post(
            f"{double.rest_url}/ocpp/1.6/smartcharging/setChargingProfile",
            params={"identifier": stations[5], "tenantId": 1},
            json=_body(txs[5], plans[-1][0], 7200.0, profile_id=REJECTED_ID),
            timeout=10,
        )
        sent += 1
        deadline = time.monotonic() + 10
        while sum(1 for r in _graphql_rows(double, stations) if r["origin"] == "cs") < sent:
            if time.monotonic() > deadline:
                pytest.fail("the charge points did not answer every SetChargingProfile within 10 s")
            time.sleep(0.05)
        yield stations
        for cp in cps:
            loop.run(cp.close())


def test_history_is_read_back_from_the_double(citrineos_double: CitrineOSDouble, site: list[str]) -> None:
    data = fetch_verify_data(citrineos_double.graphql_url, site)
    assert data.from_log and data.stored_rows == 6  # one stored row per (station, profile id) accepted
    assert len(data.history) == 15 and len(data.accepted) == 14
    assert {p.status for p in data.history if not p.accepted} == {"Rejected"}
    cycles = data.cycles()
    assert [len(c.profiles) for c in cycles] == [3, 5, 6]
    assert [round(sum(c.allocations_kw(240).values()), 3) for c in cycles] == [21.6, 30.0, 30.0]


def test_the_double_history_passes_all_four_checks(citrineos_double: CitrineOSDouble, site: list[str]) -> None:
    report = run_checks(fetch_verify_data(citrineos_double.graphql_url, site), 30.0, 240.0)
    details = [c.detail for c in report.checks]
    assert report.passed, report.lines()
    assert details[0] == "14 accepted by the chargers (15 sent, 6 stored in ChargingProfiles; need >= 3)"
    assert details[1].startswith("6 EVs held a positive allocation at once")
    assert "6 EVs in the cycle of" in details[2] and "peak 30.00 kW <= 30.00 kW + 0.14 kW" in details[2]
    assert details[3] == "11 allocations below the EV's max rate (lowest 5.00 kW of 7.20 kW)"


def test_the_command_prints_the_checks_and_plots(
    citrineos_double: CitrineOSDouble, site: list[str], tmp_path: Path
) -> None:
    png = tmp_path / "curtailment.png"
    args = ["--url", citrineos_double.graphql_url.removesuffix("/v1/graphql"), "--stations", ",".join(site),
            "--limit", "30", "--voltage", "240", "--plot", str(png)]
    result = CliRunner().invoke(verify_command, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("[PASS] Check ") for line in lines) == 4
    assert "Result: 4/4 checks passed -- PASS" in lines
    assert f"plot saved to {png}" in lines
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_tighter_limit_fails_check_three_with_exit_status_one(
    citrineos_double: CitrineOSDouble, site: list[str]
) -> None:
    args = ["--url", citrineos_double.graphql_url, "--stations", ",".join(site), "--limit", "25"]
    result = CliRunner().invoke(verify_command, args)
    assert result.exit_code == 1
    assert "[FAIL] Check 3: Latest cycle within site limit -- 6 EVs in the cycle of" in result.output
    assert "peak 30.00 kW > 25.00 kW + 0.14 kW" in result.output
    assert "Result: 3/4 checks passed -- FAIL" in result.output


def test_an_unreachable_hasura_exits_with_status_two() -> None:
    args = ["--url", "http://127.0.0.1:9", "--stations", "X", "--limit", "30"]
    result = CliRunner().invoke(verify_command, args)
    assert result.exit_code == 2
    assert "Hasura at http://127.0.0.1:9/v1/graphql cannot be reached" in result.output
    assert "--url http://localhost:<HASURA_PORT>" in result.output
