"""OCPP profiles: limits rounded down to a valid tenth, periods merged, one wire format per version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optivgi.models import ChargingProfile, ChargingRateUnit, ChargingSchedulePeriod, round_down_tenth

T0 = datetime(2026, 1, 5, 9, 0, 30, tzinfo=UTC)


def _passes_float_multiple_of_tenth(x: float) -> bool:
    # The check a JSON-schema validator with multipleOf 0.1 performs in IEEE doubles.
    return float(x / 0.1).is_integer()


@pytest.mark.parametrize(("value", "expected"), [
    (5.8, 5.7), (6.1, 6.0), (8.1, 8.0), (20.8333, 20.8), (20.8, 20.8), (16.0, 16.0), (5.5, 5.5),
    (0.05, 0.0), (0.0, 0.0), (7.2, 7.2), (32.0, 32.0),
    (5999.99, 5999.8),  # 5999.9 / 0.1 is not a whole number in doubles
])
def test_round_down_tenth_known_values(value: float, expected: float) -> None:
    assert round_down_tenth(value) == expected


def test_round_down_tenth_every_tenth_to_80_passes_the_float_check_and_never_rounds_up() -> None:
    rejected = 0
    for k in range(0, 801):
        x = k / 10
        r = round_down_tenth(x)
        assert r <= x
        assert _passes_float_multiple_of_tenth(r)
        assert x - r < 0.2 + 1e-9
        rejected += r != x
        # whole numbers and halves are always kept as they are
        if k % 5 == 0:
            assert r == x
        # slightly above a tenth still rounds down to a valid value <= it
        y = x + 0.0999
        assert round_down_tenth(y) <= y
    # about a third of the tenths are not accepted by the float check and step down
    assert 200 < rejected < 330


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_round_down_tenth_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="'limit' must be a finite number >= 0"):
        round_down_tenth(bad)


def test_from_power_in_amps_merges_periods_and_rounds_down() -> None:
    power = [5.0, 5.0, 5.0, 3.0, 3.0, 0.0]
    prof = ChargingProfile.from_power(power, start=T0, resolution_s=60, unit="A", voltage=240, phases=1,
                                      charging_profile_id=7, stack_level=2, transaction_id="12")
    periods = [(p.start_period, p.limit) for p in prof.periods]
    assert periods == [(0, 20.8), (180, 12.5), (300, 0.0)]
    for p, kw in zip(prof.periods, [5.0, 3.0, 0.0], strict=True):
        assert p.limit * 240 / 1000 <= kw
    j = prof.to_ocpp16()
    assert j["chargingProfileId"] == 7 and j["stackLevel"] == 2 and j["transactionId"] == 12
    assert j["chargingProfilePurpose"] == "TxProfile" and j["chargingProfileKind"] == "Absolute"
    sched = j["chargingSchedule"]
    assert sched["chargingRateUnit"] == "A" and sched["startSchedule"] == "2026-01-05T09:00:30Z"
    assert sched["chargingSchedulePeriod"][0] == {"startPeriod": 0, "limit": 20.8, "numberPhases": 1}
    assert all(isinstance(p["startPeriod"], int) for p in sched["chargingSchedulePeriod"])
    # reads like the 1.6 dict
    assert prof["chargingSchedule"]["chargingRateUnit"] == "A" and "stackLevel" in prof and len(prof) == len(j)


def test_from_power_in_watts_and_ocpp201_shape() -> None:
    valid_to = T0 + timedelta(minutes=5)
    prof = ChargingProfile.from_power([6.0, 6.0], start=T0, resolution_s=60, unit=ChargingRateUnit.W,
                                      transaction_id=3, duration=120, valid_to=valid_to)
    j = prof.to_ocpp201()
    assert j["id"] == 1 and j["transactionId"] == "3" and j["validTo"] == "2026-01-05T09:05:30Z"
    assert isinstance(j["chargingSchedule"], list) and len(j["chargingSchedule"]) == 1
    s = j["chargingSchedule"][0]
    assert s["chargingRateUnit"] == "W" and s["duration"] == 120
    assert s["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 6000.0}]


def test_max_periods_truncates_with_duration() -> None:
    prof = ChargingProfile.from_power([1, 2, 3, 4, 5], start=T0, resolution_s=60, max_periods=2, transaction_id=1)
    assert [p.start_period for p in prof.periods] == [0, 60]
    assert prof.duration == 120


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"start_period": 1.5, "limit": 1.0}, "'start_period' must be an integer >= 0"),
    ({"start_period": -1, "limit": 1.0}, "'start_period' must be an integer >= 0"),
    ({"start_period": 0, "limit": -1.0}, "'limit' must be a finite number >= 0"),
    ({"start_period": 0, "limit": 5.8}, "'limit' must be a valid multiple of 0.1"),
])
def test_period_validation(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ChargingSchedulePeriod(**kwargs)  # type: ignore[arg-type]


def test_from_power_rejects_negative_or_nan_power() -> None:
    with pytest.raises(ValueError, match=r"'power_kw\[1\]' must be a finite number >= 0"):
        ChargingProfile.from_power([1.0, -2.0], start=T0, resolution_s=60)
    with pytest.raises(ValueError, match=r"'power_kw\[0\]'"):
        ChargingProfile.from_power([float("nan")], start=T0, resolution_s=60)
