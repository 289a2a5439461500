"""The curtailment verifier's checks on hand-made OCPPMessages and ChargingProfiles rows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from optivgi_citrineos.verify import (
    ProfileRecord,
    VerifyData,
    allocation_series,
    check_concurrent_sessions,
    check_curtailment,
    check_latest_cycle_within_limit,
    check_profiles_sent,
    latest_run,
    plot_allocations,
    profiles_from_messages,
    profiles_from_rows,
    run_checks,
)

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _exchange(
    station: str,
    tx: int,
    start: datetime,
    limits: list[float],
    *,
    unit: str = "W",
    answer: Any = None,
    sent: datetime | None = None,
    purpose: str = "TxProfile",
    period_s: int = 60,
) -> list[dict[str, Any]]:
    """The two OCPPMessages rows of one SetChargingProfile: the request and the charger's answer."""
    corr = f"corr-{next(_ids)}"
    sent = sent or start + timedelta(milliseconds=200)
    payload = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 9001,
            "stackLevel": 1,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute",
            "transactionId": tx,
            "chargingSchedule": {
                "chargingRateUnit": unit,
                "startSchedule": _iso(start),
                "chargingSchedulePeriod": [
                    {"startPeriod": i * period_s, "limit": limit, "numberPhases": 1} for i, limit in enumerate(limits)
                ],
            },
        },
    }
    rows = [
        {"id": next(_ids), "stationId": station, "correlationId": corr, "origin": "csms", "state": "1",
         "message": [2, corr, "SetChargingProfile", payload], "timestamp": sent.isoformat()},
    ]
    if answer != "none":
        frame = answer if answer is not None else [3, corr, {"status": "Accepted"}]
        rows.append({"id": next(_ids), "stationId": station, "correlationId": corr, "origin": "cs", "state": "2",
                     "message": frame, "timestamp": (sent + timedelta(milliseconds=5)).isoformat()})
    return rows


def _cycle(start: datetime, watts: list[float], **kwargs: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i, w in enumerate(watts, start=1):
        rows += _exchange(f"ST-{i:02d}", 1, start, [w], **kwargs)
    return rows


def _demo_rows() -> list[dict[str, Any]]:
    """Six 7.2 kW EVs arriving one per cycle on a 30 kW site, then all but one leaving."""
    rows: list[dict[str, Any]] = []
    plans = [
        [7200],
        [7200, 7200],
        [7200, 7200, 7200],
        [7200, 7200, 7200, 7200],
        [6000] * 5,
        [5000] * 6,
        [7200],
    ]
    for n, watts in enumerate(plans):
        rows += _cycle(T0 + timedelta(seconds=10 * n), watts)
    return rows


def _data(rows: list[dict[str, Any]], stored: int = 6) -> VerifyData:
    return VerifyData(tuple(profiles_from_messages(rows)), stored_rows=stored)


def test_requests_are_paired_with_their_answers() -> None:
    rows = _exchange("ST-01", 4, T0, [7200, 3000], sent=T0 + timedelta(milliseconds=100))
    rows += _exchange("ST-02", 2, T0, [16.0], unit="A", answer=[3, "c", {"status": "Rejected"}])
    rows += _exchange("ST-03", 7, T0, [16.0], answer=[4, "x", "GenericError", "simulated charger failure", {}])
    rows += _exchange("ST-04", 1, T0, [16.0], answer="none")
    first, *others = profiles_from_messages(rows)
    assert first.ev_key == "ST-01:4" and first.connector_id == 1 and first.profile_id == 9001
    assert first.periods == ((0, 7200.0, 1), (60, 3000.0, 1)) and first.start_schedule == T0
    assert first.sent_at == T0 + timedelta(milliseconds=100) and first.accepted
    assert first.limit_kw_at(59, 240) == 7.2 and first.limit_kw_at(60, 240) == 3.0
    assert [p.status for p in others] == ["Rejected", "CALLERROR", None]
    assert others[0].first_limit_kw(240) == pytest.approx(3.84)  # 16 A x 240 V


def test_frames_that_are_not_16_calls_are_skipped() -> None:
    rows = _exchange("ST-01", 1, T0, [7200])
    rows.append({"id": 999, "stationId": "ST-01", "correlationId": "c", "origin": "csms", "state": "1",
                 "message": [2, "c", "SetChargingProfile", {"evseId": 1, "chargingProfile": {}}],
                 "timestamp": T0.isoformat()})
    rows.append({"id": 1000, "stationId": "ST-01", "correlationId": "d", "origin": "csms", "state": 1,
                 "message": "garbage", "timestamp": T0.isoformat()})
    assert [p.ev_key for p in profiles_from_messages(rows)] == ["ST-01:1"]


def test_the_demo_history_passes_all_four_checks() -> None:
    report = run_checks(_data(_demo_rows()), 30.0, 240.0)
    assert [c.passed for c in report.checks] == [True, True, True, True]
    assert report.lines()[-1] == "Result: 4/4 checks passed -- PASS"
    assert report.checks[0].detail.startswith("22 accepted by the chargers (22 sent, 6 stored")
    assert report.checks[1].detail.startswith("6 EVs held a positive allocation at once in the cycle of 09:00:50 UTC")
    assert "1 EV in the cycle of 09:01:00 UTC: peak 7.20 kW <= 30.00 kW + 0.02 kW" in report.checks[2].detail
    assert report.checks[3].detail == "11 allocations below the EV's max rate (lowest 5.00 kW of 7.20 kW)"
    assert report.lines()[0].startswith("[PASS] Check 1: Charging profiles sent -- ")


def test_too_few_profiles_fail_check_one() -> None:
    data = _data(_cycle(T0, [7200, 7200]) + _exchange("ST-03", 1, T0, [7200], answer=[3, "x", {"status": "Rejected"}]))
    result = check_profiles_sent(data)
    assert not result.passed and result.detail.startswith("2 accepted by the chargers (3 sent")


def test_concurrency_counts_positive_allocations_in_one_cycle() -> None:
    # Three cycles of two EVs each, and one with three EVs of which one got 0 W: never 3 at once.
    rows = _cycle(T0, [7200, 7200]) + _cycle(T0 + timedelta(seconds=10), [7200, 7200, 0])
    result = check_concurrent_sessions(_data(rows), 240.0)
    assert not result.passed and result.detail.startswith("2 EVs held a positive allocation at once")
    rows += _cycle(T0 + timedelta(seconds=20), [5000, 5000, 5000])
    assert check_concurrent_sessions(_data(rows), 240.0).passed


def test_rejected_profiles_are_no_allocation() -> None:
    rows = _cycle(T0, [7200, 7200]) + _exchange("ST-09", 1, T0, [7200], answer=[3, "x", {"status": "Rejected"}])
    assert check_concurrent_sessions(_data(rows), 240.0).detail.startswith("2 EVs")


@pytest.mark.parametrize(
    ("amps", "passed"),
    [
        ([26.0] * 5, True),  # 31.2 kW: 1.2 kW above 30, but the tolerance of five 0.1 A steps is 0.12 kW
        ([25.0] * 5, True),  # exactly 30 kW
        ([25.1] * 5, True),  # 30.12 kW: within one 0.1 A step per EV
        ([25.2] * 5, False),  # 30.24 kW: two steps per EV
    ],
)
def test_latest_cycle_limit_allows_one_amp_step_per_ev(amps: list[float], passed: bool) -> None:
    rows: list[dict[str, Any]] = []
    for i, a in enumerate(amps, start=1):
        rows += _exchange(f"ST-{i:02d}", 1, T0, [a], unit="A")
    if amps[0] == 26.0:
        # the same five EVs, rescheduled a minute later under the limit: only that cycle is judged
        for i in range(1, 6):
            rows += _exchange(f"ST-{i:02d}", 1, T0 + timedelta(minutes=1), [24.0], unit="A")
    result = check_latest_cycle_within_limit(_data(rows), 30.0, 240.0)
    assert result.passed is passed, result.detail


def test_latest_cycle_limit_is_checked_at_every_period_start() -> None:
    # 5 EVs at 6 kW now, but the second period raises two of them to 7.2 kW: 32.4 kW at 09:01.
    rows: list[dict[str, Any]] = []
    for i in range(1, 6):
        rows += _exchange(f"ST-{i:02d}", 1, T0, [6000, 7200 if i <= 2 else 6000])
    result = check_latest_cycle_within_limit(_data(rows), 30.0, 240.0)
    assert not result.passed
    assert "peak 32.40 kW > 30.00 kW + 0.12 kW" in result.detail and "at 09:01:00 UTC" in result.detail


def test_an_earlier_cycle_over_the_limit_is_reported_but_not_judged() -> None:
    rows = _cycle(T0, [7200] * 5) + _cycle(T0 + timedelta(seconds=10), [6000] * 5)
    report = run_checks(_data(rows), 30.0, 240.0)
    assert report.checks[2].passed
    assert "[WARN] 1 earlier cycle(s) above the limit; worst 36.00 kW at 09:00:00 UTC" in report.lines()


def test_no_profiles_fail_every_check() -> None:
    report = run_checks(VerifyData((), stored_rows=0), 30.0, 240.0)
    assert report.passed_count == 0
    assert report.lines()[-1] == "Result: 0/4 checks passed -- FAIL"
    assert report.checks[2].detail == "no accepted TxProfile to add up"


def test_curtailment_needs_a_positive_limit_below_max_by_more_than_one_step() -> None:
    rows = _cycle(T0, [7200, 7180, 0])  # 20 W below max is rounding, 0 W is a finished EV
    result = check_curtailment(_data(rows), lambda p: 7.2, 240.0)
    assert not result.passed and result.detail == "no EV was ever given less than its max rate"
    rows += _cycle(T0 + timedelta(seconds=10), [7200, 7000])
    result = check_curtailment(_data(rows), lambda p: 7.2, 240.0)
    assert result.passed and result.detail == "1 allocation below the EV's max rate (lowest 7.00 kW of 7.20 kW)"


def test_curtailment_uses_each_evs_own_max_rate() -> None:
    rows = _cycle(T0, [11000, 3600])

    def max_kw(p: ProfileRecord) -> float:
        return 11.0 if p.station_id == "ST-01" else 3.6
    assert not check_curtailment(_data(rows), max_kw, 240.0).passed
    assert check_curtailment(_data(rows), lambda p: 22.0, 240.0).passed


def test_fallback_profiles_are_not_allocations() -> None:
    rows = _cycle(T0, [5000] * 4, purpose="TxDefaultProfile")
    data = _data(rows)
    assert check_profiles_sent(data).passed  # they were sent and accepted...
    assert data.cycles() == []  # ...but they hold no EV's allocation


def test_only_the_latest_run_is_kept() -> None:
    old = profiles_from_messages(_cycle(T0 - timedelta(hours=3), [5000] * 6))
    new = profiles_from_messages(_cycle(T0, [7200]))
    kept, ignored = latest_run(old + new)
    assert ignored == 1 and [p.ev_key for p in kept] == ["ST-01:1"]


def test_stored_rows_stand_in_when_the_log_is_unreadable() -> None:
    rows = [
        {"databaseId": i, "stationId": f"ST-{i:02d}", "id": 9001, "chargingProfilePurpose": "TxProfile",
         "evseId": 1, "isActive": True, "updatedAt": "2026-11-24T09:00:05.1+00:00",
         "ChargingSchedules": [{"chargingRateUnit": "A", "startSchedule": "2026-11-24T09:00:00Z", "duration": None,
                                "chargingSchedulePeriod": [{"limit": 20.8, "startPeriod": 0, "numberPhases": 1}]}]}
        for i in range(1, 7)
    ]
    rows.append({"databaseId": 7, "stationId": "ST-07", "id": 9001, "ChargingSchedules": []})
    data = VerifyData(tuple(profiles_from_rows(rows)), stored_rows=7, from_log=False)
    report = run_checks(data, 30.0, 240.0)
    assert report.passed, report.lines()
    assert report.checks[0].detail == "6 stored in ChargingProfiles (OCPPMessages unreadable; need >= 3)"
    assert data.history[0].ev_key == "ST-01#1"
    assert "peak 29.95 kW <= 30.00 kW + 0.14 kW" in report.checks[2].detail  # 6 x 20.8 A x 240 V


def test_allocation_series_holds_zero_for_absent_evs() -> None:
    times, series = allocation_series(_data(_demo_rows()), 240.0)
    assert len(times) == 8 and times[-1] - times[-2] == timedelta(seconds=10)
    assert series["ST-01:1"] == [7.2, 7.2, 7.2, 7.2, 6.0, 5.0, 7.2, 7.2]
    assert series["ST-06:1"] == [0, 0, 0, 0, 0, 5.0, 0, 0]
    assert max(sum(v[i] for v in series.values()) for i in range(len(times))) == pytest.approx(30.0)


def test_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = plot_allocations(_data(_demo_rows()), 30.0, 240.0, tmp_path / "alloc.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_cycles_in_the_same_second_are_told_apart() -> None:
    # Six EVs at 5 kW, then, 300 ms later and with the same whole-second startSchedule, the five
    # left after a departure at 6 kW: two cycles of 30 kW, not one of 35 kW.
    rows = _cycle(T0, [5000] * 6, sent=T0 + timedelta(milliseconds=100))
    for i in range(2, 7):
        rows += _exchange(f"ST-{i:02d}", 1, T0, [6000], sent=T0 + timedelta(milliseconds=400 + i))
    data = _data(rows)
    cycles = data.cycles()
    assert [len(c.profiles) for c in cycles] == [6, 5]
    assert [c.peak(240.0)[0] for c in cycles] == [pytest.approx(30.0), pytest.approx(30.0)]
    assert cycles[1].sent_at == T0 + timedelta(milliseconds=402)
    report = run_checks(data, 30.0, 240.0)
    assert report.passed and not any(line.startswith("[WARN]") for line in report.lines())


def test_an_arrival_cycle_in_the_same_second_keeps_the_newcomer() -> None:
    # As recorded: a periodic cycle gives five EVs 6 kW; 360 ms later, in the same second, the
    # cycle for the sixth EV sends it 5 kW first and, while that call is in flight, 5 kW to the
    # five others. The newcomer belongs to the second cycle: 30 kW each, never 36 kW.
    rows: list[dict[str, Any]] = []
    for i in range(1, 6):
        rows += _exchange(f"ST-{i:02d}", 1, T0, [6000], sent=T0 + timedelta(milliseconds=12 + i))
    rows += _exchange("ST-06", 1, T0, [5000], sent=T0 + timedelta(milliseconds=376))
    for i in range(1, 6):
        rows += _exchange(f"ST-{i:02d}", 1, T0, [5000], sent=T0 + timedelta(milliseconds=377 + i))
    cycles = _data(rows).cycles()
    assert [sorted(k[3:5] for k in c.profiles) for c in cycles] == [
        ["01", "02", "03", "04", "05"],
        ["01", "02", "03", "04", "05", "06"],
    ]
    assert [round(c.peak(240.0)[0], 3) for c in cycles] == [30.0, 30.0]
