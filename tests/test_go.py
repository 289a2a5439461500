"""Go: fairness, departure-awareness, the min-power rule under scarcity, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from test_equal_share import make_problem

from optivgi.algorithms.base import Problem
from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.algorithms.go import GoAlgorithm
from optivgi.algorithms.validate import validate_schedule
from optivgi.planner import plan


def solve(problem: Problem) -> np.ndarray:
    power = GoAlgorithm().solve(problem)
    validate_schedule(problem, power)
    assert np.all(power.sum(axis=0) <= problem.site_limit_kw + 1e-9)
    return power


@pytest.mark.parametrize(("n", "each"), [(6, 5.0), (5, 6.0), (4, 7.2)])
def test_equal_needs_and_windows_get_equal_power(n: int, each: float) -> None:
    power = solve(make_problem([100.0] * n, pmin=1.4, steps=20))
    np.testing.assert_allclose(power, each, atol=1e-6)


def test_earlier_departure_is_served_first_and_both_finish() -> None:
    # 10 kW site, 2 x 5 kWh over 1 h: only possible if EV-0 (leaving at 30 min) gets the site first.
    problem = make_problem([5.0, 5.0], limit=10.0, steps=60, pmax=11.0, end=[30, 60])
    power = solve(problem)
    energy = power.sum(axis=1) * problem.step_hours
    np.testing.assert_allclose(energy, [5.0, 5.0], atol=1e-6)
    assert power[0, 0] > power[1, 0]
    # The myopic equal share cannot do this: the same problem leaves EV-0 short.
    es = EqualShareAlgorithm().solve(problem).sum(axis=1) * problem.step_hours
    assert es[0] < 4.0


def test_late_arrival_with_short_stay_is_left_room() -> None:
    # EV-1 arrives at step 30 for 10 steps and needs the whole site then; EV-0 can charge any time.
    problem = make_problem([5.0, 10 * 10.0 / 60], limit=10.0, steps=60, pmax=10.0,
                           first=[0, 30], end=[60, 40])
    power = solve(problem)
    energy = power.sum(axis=1) * problem.step_hours
    np.testing.assert_allclose(energy, problem.energy_kwh, atol=1e-6)
    np.testing.assert_allclose(power[1, 30:40], 10.0, atol=1e-6)


def test_power_is_given_as_early_as_the_site_allows() -> None:
    power = solve(make_problem([1.2, 0.6], limit=30.0, steps=30))
    # 1.2 kWh at 7.2 kW takes 10 minutes, 0.6 kWh 5 minutes: both start at once and stop when done.
    np.testing.assert_allclose(power[0, :10], 7.2, atol=1e-6)
    np.testing.assert_allclose(power[1, :5], 7.2, atol=1e-6)
    assert np.all(power[0, 10:] == 0.0)
    assert np.all(power[1, 5:] == 0.0)


def test_minimums_that_do_not_fit_never_exceed_the_limit_and_rotate() -> None:
    problem = make_problem([100.0] * 8, limit=30.0, pmin=6.0, pmax=7.2, steps=60)
    power = solve(problem)
    charging = power > 0
    assert np.all(power[charging] >= 6.0)
    np.testing.assert_allclose(power.sum(axis=0), 30.0, atol=1e-9)
    energy = power.sum(axis=1) * problem.step_hours
    # Everybody charges, and nobody gets much more than the others (within two steps' worth).
    assert np.all(energy > 0)
    assert energy.max() - energy.min() <= 2 * 6.0 * problem.step_hours + 1e-9


def test_fair_share_below_a_min_gives_that_ev_its_min() -> None:
    power = solve(make_problem([100.0] * 3, limit=10.0, pmin=[0.0, 6.0, 0.0]))
    np.testing.assert_allclose(power[:, 0], [2.0, 6.0, 2.0], atol=1e-6)


def test_energy_stops_at_need() -> None:
    problem = make_problem([0.5, 0.01, 3.0], limit=30.0, pmin=1.4, steps=60)
    power = solve(problem)
    energy = power.sum(axis=1) * problem.step_hours
    assert np.all(energy >= problem.energy_kwh - 1e-9)
    assert np.all(energy <= problem.energy_kwh + problem.min_power_kw * problem.step_hours + 1e-9)


def test_zero_need_empty_window_and_zero_max_get_nothing() -> None:
    problem = make_problem([0.0, 5.0, 5.0, 5.0], limit=20.0, pmax=[7.2, 7.2, 7.2, 0.0],
                           first=[0, 4, 0, 0], end=[10, 4, 10, 10])
    power = solve(problem)
    assert np.all(power[[0, 1, 3]] == 0.0)
    np.testing.assert_allclose(power[2].sum() * problem.step_hours, 1.2, atol=1e-9)


def test_zero_limit_steps_are_skipped() -> None:
    power = solve(make_problem([100.0, 100.0], limit=[10.0, 0.0, 10.0], steps=3))
    np.testing.assert_allclose(power, [[5.0, 0.0, 5.0], [5.0, 0.0, 5.0]], atol=1e-6)


def test_empty_problem() -> None:
    assert solve(make_problem([])).shape == (0, 10)
    assert solve(make_problem([], steps=0)).shape == (0, 0)


def test_overflow_raises_and_the_planner_falls_back() -> None:
    problem = make_problem([1e308, 1e308], limit=1.7e308, pmin=1e307, pmax=1e308)
    with pytest.raises(ArithmeticError, match="overflow"):
        GoAlgorithm().solve(problem)
    schedule = plan(problem, GoAlgorithm())
    assert schedule.algorithm == "equal-share"
    validate_schedule(problem, schedule.power_kw)
