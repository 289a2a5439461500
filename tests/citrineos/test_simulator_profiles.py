"""Pure tests of the simulator's OCPP 1.6 smart-charging rules, battery model and configuration (no I/O)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from optivgi.errors import ConfigurationError, ScenarioError
from optivgi_citrineos.simulator import (
    Battery,
    ChargingProfile,
    ProfileError,
    ProfileStore,
    Scenario,
    SimulatorConfig,
    Transaction,
    allocate_power,
    composite_limit,
    composite_schedule,
    default_scenario,
)

T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
V, PH = 240.0, 1


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def raw(pid: int, stack: int, purpose: str, limit: float | list[tuple[int, float]], *, unit: str = "A",
        kind: str = "Absolute", start: dt.datetime | None = T0, **extra: Any) -> dict[str, Any]:
    periods = limit if isinstance(limit, list) else [(0, limit)]
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": v} for s, v in periods],
    }
    if start is not None:
        schedule["startSchedule"] = iso(start)
    for key in ("duration",):
        if key in extra:
            schedule[key] = extra.pop(key)
    return {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


def prof(connector: int, *args: Any, **kwargs: Any) -> ChargingProfile:
    return ChargingProfile.from_ocpp(connector, raw(*args, **kwargs), T0)


TX = Transaction(7, T0)


def limit_w(profiles: list[ChargingProfile], connector: int = 1, at: dt.datetime = T0, tx: Transaction | None = TX
            ) -> float | None:
    return composite_limit(profiles, connector, at, tx, voltage=V, phases=PH).limit_w


# --- composite limit -------------------------------------------------------------------------------


def test_highest_stack_level_wins_within_a_purpose() -> None:
    profiles = [prof(1, 1, 1, "TxProfile", 10), prof(1, 2, 3, "TxProfile", 20), prof(1, 3, 2, "TxProfile", 6)]
    assert limit_w(profiles) == 20 * 240  # stack 3, even though its limit is the highest


def test_tx_profile_overrides_tx_default_even_when_higher() -> None:
    default = prof(0, 1, 5, "TxDefaultProfile", 10)
    tx = prof(1, 2, 0, "TxProfile", 24)
    assert limit_w([default]) == 2400
    assert limit_w([default, tx]) == 24 * 240
    # Without a transaction the TxProfile does not apply.
    assert limit_w([default, tx], tx=None) == 2400


def test_tx_default_connector_specific_wins_tie_and_applies_to_all_from_connector_0() -> None:
    everywhere = prof(0, 1, 1, "TxDefaultProfile", 10)
    own = prof(2, 2, 1, "TxDefaultProfile", 14)
    assert limit_w([everywhere, own], connector=1) == 2400
    assert limit_w([everywhere, own], connector=2) == 14 * 240
    higher = prof(0, 3, 2, "TxDefaultProfile", 8)
    assert limit_w([everywhere, own, higher], connector=2) == 8 * 240


def test_tx_profile_for_another_transaction_is_ignored() -> None:
    other = prof(1, 1, 1, "TxProfile", 6, transactionId=99)
    mine = prof(1, 2, 0, "TxProfile", 12, transactionId=7)
    assert limit_w([other, mine]) == 12 * 240


def test_charge_point_max_caps_the_connector_and_reports_the_station_cap() -> None:
    cap = prof(0, 1, 0, "ChargePointMaxProfile", 11000, unit="W")
    tx = prof(1, 2, 0, "TxProfile", 32)
    result = composite_limit([cap, tx], 1, T0, TX, voltage=V, phases=PH)
    assert result.tx_limit_w == 32 * 240
    assert result.station_cap_w == 11000
    assert result.limit_w == 7680
    assert composite_limit([cap, tx], 0, T0, None, voltage=V, phases=PH).limit_w == 11000


def test_valid_to_expiry_falls_back_to_the_lower_stack_level() -> None:
    low = prof(1, 1, 1, "TxProfile", 16)
    high = prof(1, 2, 2, "TxProfile", 8, validTo=iso(T0 + dt.timedelta(minutes=5)))
    assert limit_w([low, high], at=T0 + dt.timedelta(minutes=4, seconds=59)) == 8 * 240
    assert limit_w([low, high], at=T0 + dt.timedelta(minutes=5)) == 16 * 240


def test_valid_from_in_the_future_does_not_apply_yet() -> None:
    later = prof(1, 1, 2, "TxProfile", 6, validFrom=iso(T0 + dt.timedelta(hours=1)))
    assert limit_w([later]) is None
    assert limit_w([later], at=T0 + dt.timedelta(hours=1)) == 6 * 240


def test_periods_and_duration() -> None:
    p = prof(1, 1, 1, "TxProfile", [(0, 16), (900, 10.5), (1800, 6)], duration=3600)
    at = [0, 899, 900, 1799, 1800, 3599, 3600]
    got = [limit_w([p], at=T0 + dt.timedelta(seconds=s)) for s in at]
    assert got == [3840, 3840, 2520, 2520, 1440, 1440, None]


def test_relative_profile_starts_with_the_transaction() -> None:
    p = prof(1, 1, 1, "TxProfile", [(0, 6), (600, 16)], kind="Relative", start=None)
    tx = Transaction(7, T0 + dt.timedelta(minutes=30))
    assert limit_w([p], at=T0 + dt.timedelta(minutes=35), tx=tx) == 6 * 240
    assert limit_w([p], at=T0 + dt.timedelta(minutes=40), tx=tx) == 16 * 240


def test_recurring_daily_profile_repeats() -> None:
    p = prof(0, 1, 0, "TxDefaultProfile", [(0, 10), (3600, 20)], kind="Recurring", recurrencyKind="Daily",
             duration=7200)
    day = dt.timedelta(days=1)
    assert limit_w([p], at=T0 + 3 * day + dt.timedelta(minutes=30)) == 2400
    assert limit_w([p], at=T0 + 3 * day + dt.timedelta(minutes=90)) == 4800
    assert limit_w([p], at=T0 + 3 * day + dt.timedelta(hours=3)) is None
    assert limit_w([p], at=T0 - dt.timedelta(minutes=1)) is None


def test_amps_convert_with_voltage_and_phases() -> None:
    p = prof(1, 1, 1, "TxProfile", 16)
    assert composite_limit([p], 1, T0, TX, voltage=230, phases=3).limit_w == pytest.approx(16 * 230 * 3)
    two = ChargingProfile.from_ocpp(1, {**raw(2, 1, "TxProfile", 16), "chargingSchedule": {
        "chargingRateUnit": "A", "startSchedule": iso(T0),
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16, "numberPhases": 1}]}}, T0)
    assert composite_limit([two], 1, T0, TX, voltage=230, phases=3).limit_w == pytest.approx(16 * 230)


def test_allocate_power_water_fills_under_the_cap() -> None:
    assert allocate_power({1: 7200, 2: 7200}, None) == {1: 7200, 2: 7200}
    assert allocate_power({1: 7200, 2: 7200}, 20000) == {1: 7200, 2: 7200}
    assert allocate_power({1: 7200, 2: 7200}, 4800) == {1: 2400, 2: 2400}
    assert allocate_power({1: 1440, 2: 7200}, 4800) == {1: 1440, 2: 3360}
    assert allocate_power({1: 7200, 2: 7200, 3: 0}, 0) == {1: 0, 2: 0, 3: 0}


# --- parsing and the store --------------------------------------------------------------------------


def test_decimal_and_int_limits_parse() -> None:
    p = ChargingProfile.from_ocpp(1, raw(1, 1, "TxProfile", [(0, 16), (900, Decimal("10.5"))]), T0)  # type: ignore[list-item]
    assert [x.limit for x in p.periods] == [16.0, 10.5]
    assert p.to_ocpp()["chargingSchedule"]["chargingSchedulePeriod"][1] == {"startPeriod": 900, "limit": 10.5}


@pytest.mark.parametrize(
    ("payload", "call_error", "message"),
    [
        (raw(1, 1, "TxProfile", -5), "PropertyConstraintViolation", "limit must be >= 0"),
        (raw(1, 1, "TxProfile", []), None, "empty"),
        (raw(1, 1, "TxProfile", [(60, 10)]), None, "first startPeriod must be 0"),
        (raw(1, 1, "TxProfile", [(0, 10), (600, 8), (300, 6)]), None, "must increase"),
        (raw(1, 1, "TxProfile", 10, validFrom=iso(T0), validTo=iso(T0)), None, "validTo must be after"),
        (raw(1, 1, "TxProfile", 10, kind="Recurring"), None, "recurrencyKind"),
        (raw(1, 1, "TxDefaultProfile", 10, transactionId=3), None, "only allowed in a TxProfile"),
        (raw(1, 1, "TxProfile", 10, validTo="tomorrow"), "FormatViolation", "ISO 8601"),
    ],
)
def test_invalid_profiles_are_refused(payload: dict[str, Any], call_error: str | None, message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        ChargingProfile.from_ocpp(1, payload, T0)
    assert info.value.call_error == call_error


def test_store_enforces_connector_and_transaction_rules() -> None:
    store = ProfileStore(2)
    idle = {1: None, 2: None}
    with pytest.raises(ProfileError, match="needs a transaction"):
        store.install(prof(1, 1, 1, "TxProfile", 10), idle)
    with pytest.raises(ProfileError, match="connector 0"):
        store.install(prof(1, 1, 1, "ChargePointMaxProfile", 10), idle)
    with pytest.raises(ProfileError, match="not 0"):
        store.install(prof(0, 1, 1, "TxProfile", 10), {0: 5})
    with pytest.raises(ProfileError, match="does not exist"):
        store.install(prof(3, 1, 1, "TxDefaultProfile", 10), idle)
    with pytest.raises(ProfileError, match="transaction 9"):
        store.install(prof(1, 1, 1, "TxProfile", 10, transactionId=9), {1: 5, 2: None})
    store.install(prof(1, 1, 1, "TxProfile", 10), {1: 5, 2: None})
    assert [p.profile_id for p in store.profiles] == [1]


def test_store_replaces_by_id_and_by_purpose_stack_connector() -> None:
    store = ProfileStore(2)
    running = {1: 5, 2: 6}
    store.install(prof(1, 1, 1, "TxProfile", 10), running)
    store.install(prof(2, 2, 1, "TxProfile", 10), running)
    store.install(prof(1, 1, 2, "TxProfile", 12), running)  # same id: replaces
    store.install(prof(1, 3, 2, "TxProfile", 14), running)  # same purpose/stack/connector: replaces 1
    assert sorted((p.profile_id, p.periods[0].limit) for p in store.profiles) == [(2, 10), (3, 14)]
    assert [p.profile_id for p in store.clear(profile_id=3, purpose="TxDefaultProfile")] == [3]
    store.install(prof(0, 4, 0, "TxDefaultProfile", 10), running)
    assert [p.profile_id for p in store.clear(purpose="TxProfile")] == [2]
    assert store.end_transaction(1) == []
    assert [p.profile_id for p in store.clear()] == [4]


def test_composite_schedule_lists_changes_and_fills_with_the_hardware_limit() -> None:
    base = prof(0, 1, 0, "TxDefaultProfile", 16)
    tx = prof(1, 2, 1, "TxProfile", [(0, 10), (600, 6)], validTo=iso(T0 + dt.timedelta(seconds=1200)))
    got = composite_schedule([base, tx], 1, T0 + dt.timedelta(seconds=300), 1800, TX, voltage=V, phases=PH,
                             hardware_max_w=7680)
    assert got == [(0, 2400), (300, 1440), (900, 3840)]
    nothing = composite_schedule([], 1, T0, 600, TX, voltage=V, phases=PH, hardware_max_w=7680)
    assert nothing == [(0, 7680)]


# --- battery -------------------------------------------------------------------------------------


def test_battery_constant_power_then_linear_taper() -> None:
    b = Battery(60, 0.5, 1.0, 7.2)
    assert b.acceptance_kw() == 7.2
    b.soc = 0.9
    assert b.acceptance_kw() == pytest.approx(3.6)
    b.soc = 0.99
    assert b.acceptance_kw() == pytest.approx(0.36)
    stored = Battery(60, 0.2, 0.21, 7.2)
    assert stored.charge(7.2, 3600) == pytest.approx(600)  # clamped at the target (1 % of 60 kWh)
    assert stored.full and stored.acceptance_kw() == 0
    fresh = Battery(60, 0.2, 1.0, 7.2)
    assert fresh.charge(7.2, 10) == pytest.approx(20)
    assert fresh.soc == pytest.approx(0.2 + 20 / 60000)


# --- scenarios and configuration -----------------------------------------------------------------


def test_default_scenario_is_six_evs_sixty_seconds_apart() -> None:
    sc = default_scenario()
    assert len(sc.sessions) == 6
    assert [s.arrive_offset_s for s in sc.sessions] == [0, 60, 120, 180, 240, 300]
    assert all(s.depart_offset_s == s.arrive_offset_s + 600 for s in sc.sessions)
    assert {(s.ev.capacity_kwh, s.ev.arrival_soc, s.ev.target_soc, s.ev.max_charge_rate_kw) for s in sc.sessions} == {
        (60.0, 0.2, 1.0, 7.2)}
    assert [s.station_id for s in sc.sessions] == [f"OPTIVGI-STATION-{i:02d}" for i in range(1, 7)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"sessions": [{"connector_id": 1}]}, "station_id is required"),
        ({"sessions": [{"station_id": "A", "arrival_soc": 20}]}, "fraction"),
        ({"sessions": [{"station_id": "A", "arrive_offset_s": 60, "depart_offset_s": 30}]}, "must be after"),
        ({"sessions": [{"station_id": "A", "colour": "red"}]}, "unknown keys"),
        ({"sessions": [{"station_id": "A", "depart_offset_s": 600},
                       {"station_id": "A", "arrive_offset_s": 300}]}, "overlap"),
        ({"session": []}, "sessions"),
    ],
)
def test_bad_scenarios_name_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_dict(doc)


def test_config_from_env(tmp_path: Any) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"sessions": [{"station_id": "B", "connector_id": 2}]}))
    config = SimulatorConfig.from_env({
        "CITRINEOS_WS_URL": "ws://127.0.0.1:9000/", "STATION_IDS": "A, B", "CONNECTORS_PER_STATION": "3",
        "METER_VALUES_INTERVAL": "5", "SCENARIO_FILE": str(scenario), "VOLTAGE": "230",
    }, speed=60)
    assert (config.ws_url, config.station_ids, config.connectors_per_station) == ("ws://127.0.0.1:9000", ("A", "B"), 3)
    assert (config.meter_values_interval_s, config.speed, config.voltage) == (5.0, 60, 230.0)
    assert config.scenario is not None and config.scenario.sessions[0].connector_id == 2
    assert SimulatorConfig.from_env({"SCENARIO_FILE": ""}).scenario is None
    assert SimulatorConfig.from_env({}).scenario == default_scenario()
    with pytest.raises(ConfigurationError, match="not in station_ids"):
        SimulatorConfig.from_env({"STATION_IDS": "X"})
    with pytest.raises(ConfigurationError, match="CONNECTORS_PER_STATION"):
        SimulatorConfig.from_env({"CONNECTORS_PER_STATION": "two", "SCENARIO_FILE": ""})
    with pytest.raises(ConfigurationError, match="ws_url"):
        SimulatorConfig(ws_url="http://x")
