"""``optivgi citrineos verify --dsn``: the verifier reads CitrineOS's PostgreSQL and judges the whole run.

OCPP 1.6J charge points of the double record a run: three cars whose chargers reject every
TxProfile for three minutes (the cars sit at 0 kW, SuspendedEVSE, on an empty 30 kW site) and
then accept one. The chargers' clock is set back so that the three minutes are in their records
without waiting for them.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble, ProfileAnswer, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread
from citrineos_testdouble.contract import set_profile_body
from click.testing import CliRunner

from optivgi_citrineos.verify import fetch_verify_data_sql, verify_command


def _dsn(double: CitrineOSDouble) -> str:
    return f"{double.dsn} options='-csearch_path={double.schema}'"


def _answered(double: CitrineOSDouble, stations: list[str]) -> int:
    import psycopg
    from psycopg import sql

    with psycopg.connect(double.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(double.schema)))
        row = conn.execute('SELECT count(*) FROM "OCPPMessages" WHERE action = %s AND origin = %s AND state = %s '
                           'AND "stationId" = ANY(%s)', ("SetChargingProfile", "cs", "2", stations)).fetchone()
        return int(row[0]) if row else 0


def _z(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _send(double: CitrineOSDouble, station: str, body: dict[str, Any]) -> None:
    answer = httpx.post(f"{double.rest_url}/ocpp/1.6/smartcharging/setChargingProfile",
                        params={"identifier": station, "tenantId": 1}, json=body, timeout=10).json()
    assert answer == [{"success": True}]


@pytest.fixture(scope="module")
def starved_site(citrineos_double: CitrineOSDouble) -> Iterator[list[str]]:
    double = citrineos_double
    tag = uuid.uuid4().hex[:6].upper()
    stations = [f"STARVE-{tag}-{i}" for i in (1, 2, 3)]
    accept = {"now": False}

    def policy(_: dict[str, Any]) -> ProfileAnswer:
        return ProfileAnswer.accepted() if accept["now"] else ProfileAnswer.rejected()

    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=240)
    clock = {"t": t0}
    with LoopThread() as loop:
        cps = [TestChargePoint(s, double.ws_url, id_tag=f"ST-{i}", profile_policy=policy)
               for i, s in enumerate(stations)]
        txs = []
        for cp in cps:
            cp.clock = lambda: clock["t"]
            loop.run(cp.connect())
            txs.append(loop.run(cp.start_session(meter_start_wh=1000)))
            loop.run(cp.status("SuspendedEVSE"))
        sent = 0
        for station, tx in zip(stations, txs, strict=True):
            # Every cycle's TxProfile is rejected by the chargers ...
            for cycle in range(3):
                _send(double, station, set_profile_body(500 + cycle, [6000.0], tx=tx, unit="W", start=_z(t0)))
                sent += 1
        # ... for three minutes of the chargers' records: 0 W every 10 s.
        for step in range(19):
            clock["t"] = t0 + dt.timedelta(seconds=10 * step)
            for cp in cps:
                loop.run(cp.send_meter_values(energy_wh=1000, power_w=0, current_a=0))
        accept["now"] = True
        accepted_at = dt.datetime.now(dt.UTC)
        for station, tx in zip(stations, txs, strict=True):
            _send(double, station, set_profile_body(600, [6000.0], tx=tx, unit="W", start=_z(accepted_at)))
            sent += 1
        clock["t"] = t0 + dt.timedelta(seconds=190)
        for cp in cps:
            loop.run(cp.status("Charging"))
        for step in range(19, 24):
            clock["t"] = t0 + dt.timedelta(seconds=10 * step)
            for cp in cps:
                loop.run(cp.send_meter_values(power_w=6000, current_a=25))
        deadline = time.monotonic() + 10
        while _answered(double, stations) < sent:
            assert time.monotonic() < deadline, "the chargers did not answer every SetChargingProfile"
            time.sleep(0.05)
        yield stations
        for cp in cps:
            loop.run(cp.close())


def test_starved_cars_fail_the_run_with_their_names_and_minutes(
    citrineos_double: CitrineOSDouble, starved_site: list[str]
) -> None:
    args = ["--dsn", _dsn(citrineos_double), "--limit", "30", "--stations", ",".join(starved_site)]
    result = CliRunner().invoke(verify_command, args)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("CitrineOS curtailment check: PostgreSQL") for line in lines)
    (starved,) = [line for line in lines if "Check 6" in line]
    names = ", ".join(f"{s}:1 3.2 min" for s in sorted(starved_site))
    assert starved == (f"[FAIL] Check 6: No car kept at 0 kW while the site had room -- 3 cars sat at 0 kW while "
                       f"the site had room: {names} (allowed 1.0 min)")
    # Check 7 reads CitrineOS's own log (its clock): the accepted profile came seconds after the
    # StartTransaction there -- the three minutes are in the chargers' records only.
    (first,) = [line for line in lines if "Check 7" in line]
    assert first.startswith("[PASS] Check 7: First profile after StartTransaction -- 3 session(s), slowest")
    (delivered,) = [line for line in lines if "Check 5" in line]
    assert delivered.startswith("[FAIL] Check 5: Site delivered what it could")
    # The profile history is read from SQL too: 3 accepted of 12 sent.
    (sent,) = [line for line in lines if "Check 1" in line]
    assert "3 accepted by the chargers (12 sent" in sent
    # The four allocation checks alone pass this run (the profiles finally accepted are fine): only
    # the whole-run checks see the starved minutes.
    assert [line[:6] for line in lines if line.startswith("[")][:4] == ["[PASS]"] * 4
    assert lines[-1] == "Result: 5/7 checks passed -- FAIL"


def test_the_judgement_in_numbers(citrineos_double: CitrineOSDouble, starved_site: list[str]) -> None:
    data, run = fetch_verify_data_sql(_dsn(citrineos_double), starved_site, site_limit_kw=30.0,
                                      max_kw=lambda station, connector: 7.2)
    assert len(data.history) == 12 and len(data.accepted) == 3
    assert run.starved_s == pytest.approx({f"{s}:1": 190.0 for s in starved_site}, abs=0.01)
    # 18 kW delivered from the 190th second on; 21.6 kW could be given all along.
    span = (run.end - run.start).total_seconds()
    assert run.delivered_kwh == pytest.approx(18 * (span - 190) / 3600, rel=0.01)
    assert run.possible_kwh == pytest.approx(21.6 * span / 3600, rel=0.01)
    # On CitrineOS's clock the StartTransaction answers precede the accepted profiles by seconds.
    for waited in run.first_profile_s.values():
        assert waited is not None and 0 < waited < 10


def test_a_missing_dsn_and_url_is_a_clear_error() -> None:
    result = CliRunner().invoke(verify_command, ["--limit", "30", "--stations", "A"], env={
        "HASURA_URL": "", "CITRINEOS_DB_DSN": ""})
    assert result.exit_code == 2
    assert "set --dsn or CITRINEOS_DB_DSN (PostgreSQL), or --url or HASURA_URL (Hasura)" in result.output
