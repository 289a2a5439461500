"""Equal share: water-filling numbers, the min-power rule and its rotation, edge cases."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from optivgi.algorithms.base import Problem
from optivgi.algorithms.equal_share import EqualShareAlgorithm, fit_minimums, water_fill
from optivgi.algorithms.validate import validate_schedule

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def make_problem(
    energy: Sequence[float],
    *,
    limit: float | Sequence[float] = 30.0,
    steps: int = 10,
    pmin: float | Sequence[float] = 0.0,
    pmax: float | Sequence[float] = 7.2,
    first: Sequence[int] | None = None,
    end: Sequence[int] | None = None,
    resolution_s: int = 60,
) -> Problem:
    n = len(energy)
    return Problem(
        ids=[f"EV-{i}" for i in range(n)],
        start=START,
        resolution_s=resolution_s,
        site_limit_kw=np.broadcast_to(np.asarray(limit, dtype=float), (steps,)),
        energy_kwh=energy,
        min_power_kw=np.broadcast_to(np.asarray(pmin, dtype=float), (n,)),
        max_power_kw=np.broadcast_to(np.asarray(pmax, dtype=float), (n,)),
        first_step=np.zeros(n, dtype=np.int64) if first is None else first,
        end_step=np.full(n, steps, dtype=np.int64) if end is None else end,
    )


def solve(problem: Problem) -> np.ndarray:
    power = EqualShareAlgorithm().solve(problem)
    validate_schedule(problem, power)
    return power


@pytest.mark.parametrize(("n", "each"), [(6, 5.0), (5, 6.0), (4, 7.2), (3, 7.2)])
def test_plenty_of_need_splits_the_site_equally_up_to_max(n: int, each: float) -> None:
    power = solve(make_problem([100.0] * n))
    np.testing.assert_allclose(power, each, atol=1e-9)


def test_capped_ev_leaves_its_share_to_the_others() -> None:
    power = solve(make_problem([100.0] * 3, limit=10.0, pmax=[2.0, 7.2, 7.2]))
    np.testing.assert_allclose(power[:, 0], [2.0, 4.0, 4.0], atol=1e-9)


def test_remaining_need_caps_the_share() -> None:
    # 0.05 kWh in a 1-minute step is 3 kW: EV-0 finishes in step 0 and leaves the site to EV-1.
    power = solve(make_problem([0.05, 100.0], limit=10.0))
    np.testing.assert_allclose(power[:, 0], [3.0, 7.0], atol=1e-9)
    np.testing.assert_allclose(power[:, 1:], [[0.0] * 9, [7.2] * 9], atol=1e-9)
    assert power[0].sum() / 60 == pytest.approx(0.05)


def test_fair_share_below_a_min_gives_that_ev_its_min() -> None:
    power = solve(make_problem([100.0] * 3, limit=10.0, pmin=[0.0, 6.0, 0.0]))
    np.testing.assert_allclose(power[:, 0], [2.0, 6.0, 2.0], atol=1e-9)


def test_minimums_that_do_not_fit_rotate_fairly() -> None:
    # Three EVs with a 4 kW minimum on a 10 kW site: two charge (5 kW each) in every step.
    problem = make_problem([100.0] * 3, limit=10.0, pmin=4.0, steps=30)
    power = solve(problem)
    charging = power > 0
    assert np.all(charging.sum(axis=0) == 2)
    np.testing.assert_allclose(power[charging], 5.0, atol=1e-9)
    np.testing.assert_allclose(power.sum(axis=0), 10.0, atol=1e-9)
    # Rotation: no EV waits two steps in a row, and energy stays within one step of each other.
    assert not np.any(~charging[:, 1:] & ~charging[:, :-1])
    energy = power.sum(axis=1) / 60
    assert energy.max() - energy.min() <= 5.0 / 60 + 1e-9


def test_small_last_need_below_min_is_served_at_min_once() -> None:
    # 0.01 kWh is 0.6 kW for one minute, below the 1.4 kW minimum: one step at 1.4 kW, then stop.
    power = solve(make_problem([0.01], pmin=1.4))
    assert power[0, 0] == pytest.approx(1.4)
    assert np.all(power[0, 1:] == 0.0)


def test_zero_need_gets_nothing() -> None:
    power = solve(make_problem([0.0, 100.0, 0.0], limit=10.0))
    assert np.all(power[[0, 2]] == 0.0)
    np.testing.assert_allclose(power[1], 7.2, atol=1e-9)


def test_window_is_respected_and_late_arrivals_join_the_share() -> None:
    power = solve(make_problem([100.0, 100.0], limit=10.0, first=[0, 3], end=[10, 6]))
    np.testing.assert_allclose(power[:, :3], [[7.2] * 3, [0.0] * 3], atol=1e-9)
    np.testing.assert_allclose(power[:, 3:6], 5.0, atol=1e-9)
    np.testing.assert_allclose(power[:, 6:], [[7.2] * 4, [0.0] * 4], atol=1e-9)


def test_time_varying_and_zero_limit() -> None:
    limit = [12.0, 0.0, 3.0, 30.0]
    power = solve(make_problem([100.0] * 3, limit=limit, steps=4, pmin=[0.0, 0.0, 2.0]))
    np.testing.assert_allclose(power.sum(axis=0), [12.0, 0.0, 3.0, 21.6], atol=1e-9)
    assert np.all(power[:, 1] == 0.0)
    assert np.all((power == 0) | (power >= [[0.0], [0.0], [2.0]]))


def test_empty_problem() -> None:
    assert solve(make_problem([])).shape == (0, 10)
    assert solve(make_problem([], steps=0)).shape == (0, 0)


def test_water_fill_weighted_and_bounded() -> None:
    lo = np.array([0.0, 0.0, 1.0])
    hi = np.array([10.0, 1.0, 10.0])
    np.testing.assert_allclose(water_fill(lo, hi, 9.0), [4.0, 1.0, 4.0])
    np.testing.assert_allclose(water_fill(lo, hi, 9.0, weight=np.array([2.0, 1.0, 1.0])), [16 / 3, 1.0, 8 / 3])
    np.testing.assert_allclose(water_fill(lo, hi, 100.0), hi)
    np.testing.assert_allclose(water_fill(lo, hi, 1.0), lo)
    assert water_fill(np.zeros(0), np.zeros(0), 5.0).shape == (0,)


def test_fit_minimums_skips_what_does_not_fit_and_keeps_scanning() -> None:
    lo = np.array([6.0, 6.0, 3.0, 0.0, 2.0])
    chosen = fit_minimums(lo, np.arange(5), 10.0)
    # 6 fits, the second 6 does not, 3 does, 0 always does; 2 no longer fits (1 kW left).
    np.testing.assert_array_equal(chosen, [0, 2, 3])


@pytest.mark.parametrize(
    ("energy", "limit", "pmin", "pmax"),
    [
        ([1e308, 1e308], 1e308, 0.0, 1e308),
        ([1e308, 1e308], 1.7e308, 1e307, 1e308),
        ([1e308] * 3, 1.7e308, 7e307, 1.7e308),
    ],
)
def test_values_near_the_float_range_still_give_a_valid_schedule(
    energy: list[float], limit: float, pmin: float, pmax: float
) -> None:
    # The planner's fallback must return a valid schedule for every valid problem, however absurd.
    power = solve(make_problem(energy, limit=limit, pmin=pmin, pmax=pmax))
    assert np.all(np.isfinite(power))
    assert np.all(power.sum(axis=0) <= limit)
