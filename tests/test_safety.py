"""Safety rules that each fail a test when weakened: the validator's rules and the rounding of limits.

Each case is built so that the weakened rule would let a schedule or a limit through that the site
cannot take: a power between 0 and an EV's minimum, power outside its window, a site total 0.5 kW
(or 1 W) over the limit, a limit rounded to the nearest tenth (up) instead of down.
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import numpy as np
import pytest

from optivgi.algorithms.base import Problem
from optivgi.algorithms.validate import validate_schedule
from optivgi.errors import ScheduleValidationError
from optivgi.models import ChargingProfile, ChargingRateUnit, round_down_tenth

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STEPS = 4


def problem(*, limit: float = 30.0, pmin: float = 0.0, pmax: float = 7.2, first: int = 0, end: int = STEPS,
            n: int = 6) -> Problem:
    return Problem(
        ids=[f"EV-{i}" for i in range(n)],
        start=START,
        resolution_s=900,
        site_limit_kw=np.full(STEPS, limit),
        energy_kwh=np.full(n, 100.0),
        min_power_kw=np.full(n, pmin),
        max_power_kw=np.full(n, pmax),
        first_step=np.full(n, first),
        end_step=np.full(n, end),
    )


# -- the site limit: only solver round-off is snapped, anything more is refused -------------------


@pytest.mark.parametrize("over_kw", [0.5, 0.01, 1e-3, 1e-5])
def test_a_schedule_over_the_site_limit_is_refused_not_scaled(over_kw: float) -> None:
    p = problem()
    power = np.full((6, STEPS), 5.0)
    power[0, 2] += over_kw  # 30 kW + over_kw at step 2
    with pytest.raises(ScheduleValidationError, match=r"site draws 30(\.\d+)? kW at step 2, above its limit 30 kW"):
        validate_schedule(p, power)


def test_round_off_over_the_limit_is_snapped_to_exactly_the_limit() -> None:
    p = problem()
    power = np.full((6, STEPS), 5.0)
    power[:, 1] += 1e-7  # 6e-7 kW over in total: solver round-off
    cleaned = validate_schedule(p, power)
    assert np.all(cleaned.sum(axis=0) <= p.site_limit_kw)
    np.testing.assert_allclose(cleaned, 5.0, atol=1e-6)


@pytest.mark.parametrize("tol", [1e-3, 0.5, 1.0])
def test_a_tolerance_wider_than_round_off_is_refused(tol: float) -> None:
    # A tolerance that would let 0.5 kW through (scaled back silently) is itself an error.
    with pytest.raises(ValueError, match="tol"):
        validate_schedule(problem(), np.full((6, STEPS), 5.0), tol=tol)


# -- per-EV rules ------------------------------------------------------------------------------


def test_a_power_between_zero_and_the_minimum_is_refused() -> None:
    p = problem(pmin=1.4, n=2, limit=10.0)
    power = np.array([[3.0, 0.7, 3.0, 0.0], [3.0, 3.0, 3.0, 3.0]])  # EV-0 at half its minimum at step 1
    with pytest.raises(ScheduleValidationError, match=r"EV 'EV-0' draws 0\.7 kW at step 1, between 0 and its min 1\.4"):
        validate_schedule(p, power)
    # Just under the minimum by more than round-off is refused too, not snapped up.
    power[0, 1] = 1.4 - 1e-4
    with pytest.raises(ScheduleValidationError, match="between 0 and its min"):
        validate_schedule(p, power)


def test_power_outside_the_window_is_refused() -> None:
    p = problem(first=1, end=3, n=1)
    for step in (0, 3):
        power = np.array([[0.0, 2.0, 2.0, 0.0]])
        power[0, step] = 1e-3  # a watt before arrival or after departure
        with pytest.raises(ScheduleValidationError, match=rf"EV 'EV-0' draws 0\.001 kW at step {step}, outside"):
            validate_schedule(p, power)
    assert validate_schedule(p, np.array([[0.0, 2.0, 2.0, 0.0]])).tolist() == [[0.0, 2.0, 2.0, 0.0]]


def test_power_above_an_evs_max_is_refused() -> None:
    p = problem(n=1)
    with pytest.raises(ScheduleValidationError, match=r"EV 'EV-0' draws 7\.3 kW at step 0, above its max 7\.2"):
        validate_schedule(p, np.array([[7.3, 0.0, 0.0, 0.0]]))


# -- limits are rounded DOWN to the 0.1 step, never to the nearest ------------------------------


@pytest.mark.parametrize(
    ("kw", "unit", "limit"),
    [
        (7.0, "A", 29.1),  # 29.1667 A: nearest would be 29.2 A = 7.008 kW
        (5.49, "A", 22.8),  # 22.875 A: nearest 22.9
        (3.33, "A", 13.8),  # 13.875 A: nearest 13.9
        (1.23456, "W", 1234.5),  # 1234.56 W: nearest 1234.6
        (4.99996, "W", 4999.8),  # 4999.96 W: nearest 5000.0 (4999.9 fails the float check)
    ],
)
def test_profile_limits_are_rounded_down(kw: float, unit: str, limit: float) -> None:
    prof = ChargingProfile.from_power([kw, 0.0], start=START, resolution_s=60, unit=unit, voltage=240, phases=1)
    assert prof.periods[0].limit == limit
    assert prof.limit_kw_at(0, 240) <= kw


def test_no_tenth_is_ever_rounded_up() -> None:
    for hundredths in range(0, 8001):  # 0.00 .. 80.00, every value whose nearest tenth is above it included
        value = hundredths / 100
        assert round_down_tenth(value) <= value
        assert value - round_down_tenth(value) < 0.3  # a tenth that fails the float check steps down again


def test_a_minimum_charging_rate_is_rounded_down_too() -> None:
    prof = ChargingProfile.from_power([5.0], start=START, resolution_s=60, unit=ChargingRateUnit.A, voltage=240)
    prof = attrs.evolve(prof, min_charging_rate=6.06)  # nearest would be 6.1
    assert prof.to_ocpp16()["chargingSchedule"]["minChargingRate"] == 6.0
    assert prof.to_ocpp201()["chargingSchedule"][0]["minChargingRate"] == 6.0
