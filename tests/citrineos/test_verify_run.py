"""The whole-run checks of the verifier (5: delivered power, 6: starved cars, 7: first profile), service-free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optivgi_citrineos.verify import profiles_from_messages
from optivgi_citrineos.verify_run import SessionTrace, judge_run, power_kw_of

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trace(key: str, power: list[tuple[float, float]], statuses: list[tuple[float, str]] | None = None,
          start: float = 0, end: float | None = None, max_kw: float = 7.2) -> SessionTrace:
    return SessionTrace(key, at(start), None if end is None else at(end), max_kw,
                        tuple((at(t), kw) for t, kw in power),
                        tuple((at(t), s) for t, s in (statuses or [(start, "Charging")])))


def test_cars_at_zero_for_three_minutes_with_room_are_named_with_their_minutes() -> None:
    # Three cars, no profile in force for three minutes: 0 kW while the 30 kW site draws nothing.
    sessions = [trace(f"ST-{i}:1", [(0, 0.0), (180, 6.0)], [(0, "SuspendedEVSE"), (180, "Charging")],
                      end=300) for i in (1, 2, 3)]
    judged = judge_run(sessions, {s.key: at(181) for s in sessions}, 30.0, now=at(300))
    assert judged.starved == pytest.approx({"ST-1:1": 180.0, "ST-2:1": 180.0, "ST-3:1": 180.0})
    lines = judged.lines()
    passed, _, detail = lines[1]
    assert not passed
    assert detail.startswith("3 cars sat at 0 kW while the site had room: ST-1:1 3.0 min, ST-2:1 3.0 min, "
                             "ST-3:1 3.0 min")
    # Delivered: 18 kW for 2 of the 5 minutes, could give 21.6 kW all along.
    assert judged.delivered_kwh == pytest.approx(18 * 120 / 3600)
    assert judged.possible_kwh == pytest.approx(21.6 * 300 / 3600)
    assert not lines[0][0]
    # First profiles 181 s after the start: too late.
    assert judged.late_first_profile == pytest.approx({"ST-1:1": 181.0, "ST-2:1": 181.0, "ST-3:1": 181.0})
    assert judged.worst_gap is not None and judged.worst_gap[1] == pytest.approx(0.0)


def test_a_full_car_and_a_full_site_do_not_count_as_starved() -> None:
    sessions = [
        # Done: its battery is full (SuspendedEV) -- 0 kW is its own choice.
        trace("A:1", [(0, 7.2), (60, 0.0)], [(0, "Charging"), (60, "SuspendedEV")], end=600),
        # The site is full: 5 cars at 6 kW on 30 kW, the sixth waits at 0 without room.
        *[trace(f"B{i}:1", [(0, 6.0)], end=600) for i in range(5)],
        trace("C:1", [(0, 0.0)], [(0, "SuspendedEVSE")], start=0, end=600),
    ]
    judged = judge_run(sessions, {s.key: at(1) for s in sessions}, 30.0, now=at(600))
    assert judged.starved_s["A:1"] == 0.0
    assert all(judged.starved_s[f"B{i}:1"] == 0.0 for i in range(5))
    assert judged.starved_s["C:1"] == 0.0  # 30 kW drawn by the B cars: no room for C
    assert judged.lines()[1][0]
    assert judged.lines()[2][0]
    assert judged.delivered_share == pytest.approx(1.0)


def test_a_short_wait_before_the_first_meter_value_passes() -> None:
    sessions = [trace("A:1", [(0, 0.0), (10, 7.2)], end=600), trace("B:1", [(5, 0.0), (15, 7.2)], start=5, end=600)]
    judged = judge_run(sessions, {"A:1": at(0.4), "B:1": at(6.5)}, 30.0, now=at(600))
    assert judged.starved_s == pytest.approx({"A:1": 10.0, "B:1": 10.0})
    assert [line[0] for line in judged.lines()] == [True, True, True]
    assert judged.first_profile_s == pytest.approx({"A:1": 0.4, "B:1": 1.5})


def test_a_session_that_never_got_a_profile_fails_check_seven() -> None:
    judged = judge_run([trace("A:1", [(0, 7.2)], end=60)], {}, 30.0, now=at(60))
    passed, _, detail = judged.lines()[2]
    assert not passed and "A:1 never" in detail


def test_power_of_stored_sampled_values_in_both_shapes() -> None:
    v16 = [{"value": 5010, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}},
           {"value": 16, "measurand": "Power.Active.Import", "phase": "L1", "unitOfMeasure": {"unit": "W"}},
           {"value": 3840, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}]
    v201 = [{"value": 7.2, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW", "multiplier": 0}}]
    milli = [{"value": 72, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W", "multiplier": 2}}]
    assert power_kw_of(v16) == pytest.approx(3.84)
    assert power_kw_of(v201) == pytest.approx(7.2)
    assert power_kw_of(milli) == pytest.approx(7.2)
    assert power_kw_of([{"value": 1, "measurand": "SoC"}]) is None
    assert power_kw_of("nonsense") is None


def test_ocpp201_set_charging_profile_messages_are_read() -> None:
    request = {"evseId": 1, "chargingProfile": {
        "id": 41, "stackLevel": 2, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "transactionId": "a03a85bbf1314b5e",
        "chargingSchedule": [{"id": 41, "chargingRateUnit": "A", "startSchedule": "2026-12-01T12:00:00Z",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 25, "numberPhases": 1}]}]}}
    rows = [
        {"id": 1, "stationId": "V201", "correlationId": "c", "origin": "csms", "state": "1",
         "message": [2, "c", "SetChargingProfile", request], "timestamp": T0.isoformat()},
        {"id": 2, "stationId": "V201", "correlationId": "c", "origin": "cs", "state": "2",
         "message": [3, "c", {"status": "Accepted"}], "timestamp": T0.isoformat()},
    ]
    (record,) = profiles_from_messages(rows)
    assert (record.ev_key, record.connector_id, record.profile_id, record.purpose) == (
        "V201:a03a85bbf1314b5e", 1, 41, "TxProfile")
    assert record.accepted and record.first_limit_kw(240) == pytest.approx(6.0)
