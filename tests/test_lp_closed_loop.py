"""``lp`` in closed loop (re-planned every step, as a site runs it) and when its budget runs out.

Energies and worst-EV shares of the replay are scored against the offline bounds of
``test_lp.relaxed_bounds`` (scipy ``linprog`` per step, no code shared with the algorithm).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from test_lp import relaxed_bounds

from optivgi.algorithms.base import Algorithm, FloatArray, Problem
from optivgi.algorithms.lp import LPAlgorithm
from optivgi.algorithms.validate import validate_schedule
from optivgi.models.schedule import PowerSchedule
from optivgi.planner import plan, shift_schedule
from optivgi.scenario import load_scenario
from optivgi.simulate import simulate

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _replay(scenarios_dir: Path, name: str, known: bool) -> tuple[float, float, float, float]:
    """(delivered, worst share) of lp in closed loop, and (energy bound, max-min bound) offline."""
    path = scenarios_dir / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    result = simulate(load_scenario(path), LPAlgorithm(time_limit_s=900.0), known_departures=known)
    d_max, t_star, _, _ = relaxed_bounds(name)
    worst = min(e.fraction for e in result.evs if e.servable)
    return result.delivered_kwh, worst, d_max, t_star


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fleet-50", pytest.param("fleet-200", marks=pytest.mark.heavy), "fleet-50-scarce",
                                  pytest.param("fleet-200-scarce", marks=pytest.mark.heavy)])
def test_unknown_departures_lose_no_energy_to_spreading(scenarios_dir: Path, name: str) -> None:
    delivered, _, d_max, _ = _replay(scenarios_dir, name, known=False)
    assert delivered <= d_max + 1e-6
    assert delivered >= 0.999 * d_max


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seed-demo", "fleet-50", "fleet-50-scarce"])
def test_known_departures_worst_ev_near_the_max_min_bound(scenarios_dir: Path, name: str) -> None:
    _, worst, _, t_star = _replay(scenarios_dir, name, known=True)
    assert worst <= t_star + 1e-6
    assert worst >= 0.98 * t_star


def _two(delivered: list[float] | None, limit: float = 7.2, steps: int = 60) -> Problem:
    return Problem(ids=["a", "b"], start=T0, resolution_s=60, site_limit_kw=np.full(steps, limit),
                   energy_kwh=[10.0, 15.0], min_power_kw=[0.0, 0.0], max_power_kw=[7.2, 7.2],
                   first_step=[0, 0], end_step=[steps, steps], delivered_kwh=delivered)


def test_fairness_counts_what_each_session_already_got() -> None:
    # Both sessions need 15 kWh in all; "a" already got 5. The site gives 7.2 kWh in the hour.
    power = LPAlgorithm().solve(_two([5.0, 0.0]))
    validate_schedule(_two([5.0, 0.0]), power, tol=0.0)
    got = power.sum(axis=1) / 60.0
    # Max-min on totals: (5 + a) / 15 = (0 + b) / 15 with a + b = 7.2 gives a = 1.1, b = 6.1.
    np.testing.assert_allclose(got, [1.1, 6.1], atol=1e-6)
    # The whole site is used from the first step.
    assert power[:, 0].sum() == pytest.approx(7.2, abs=1e-6)
    # Without the history the same needs split the other way round (fractions of 10 and 15).
    blind = LPAlgorithm().solve(_two(None)).sum(axis=1) / 60.0
    np.testing.assert_allclose(blind, [7.2 * 10 / 25, 7.2 * 15 / 25], atol=1e-6)


def test_unknown_departure_charges_now_not_spread_over_the_horizon() -> None:
    # Two EVs, plenty of hours left: the whole site is used from the first step, not spread.
    p = _two(None, limit=10.0, steps=480)
    power = LPAlgorithm().solve(p)
    assert power[:, 0].sum() == pytest.approx(10.0, abs=1e-6)
    assert np.all(power[:, 0] > 0)


# -- the time budget ------------------------------------------------------------------------------


class _Broken(Algorithm):
    name: ClassVar[str] = "broken"

    def solve(self, problem: Problem) -> FloatArray:
        raise TimeoutError("out of time")


def test_a_failed_cycle_uses_the_previous_plan_shifted_and_plans_newcomers_in_the_headroom() -> None:
    old = Problem(ids=["a", "b"], start=T0, resolution_s=60, site_limit_kw=np.full(10, 10.0),
                  energy_kwh=[1.0, 1.0], min_power_kw=[0.0, 0.0], max_power_kw=[7.2, 7.2],
                  first_step=[0, 0], end_step=[10, 10])
    previous = PowerSchedule(old.ids, np.vstack([np.full(10, 5.0), np.arange(10.0) / 2]), T0, 60, "lp", 0.1)
    now = Problem(ids=["b", "c"], start=T0 + timedelta(minutes=2), resolution_s=60,
                  site_limit_kw=np.full(10, 10.0), energy_kwh=[0.1, 2.0], min_power_kw=[0.0, 0.0],
                  max_power_kw=[4.0, 7.2], first_step=[0, 0], end_step=[10, 10])
    shifted = shift_schedule(previous, now)
    # "b" two steps on; cut after the step that brings its 0.1 kWh in.
    np.testing.assert_allclose(shifted[0, :4], [1.0, 1.5, 2.0, 2.5])
    assert shifted[0, :3].sum() / 60 < 0.1 <= shifted[0, :4].sum() / 60 and np.all(shifted[0, 4:] == 0)
    np.testing.assert_array_equal(shifted[1], 0.0)
    schedule = plan(now, _Broken(), previous=previous)
    assert schedule.algorithm == "lp" and "previous plan" in schedule.note and "out of time" in schedule.note
    np.testing.assert_allclose(schedule.power_kw[0], shifted[0])
    # The newcomer gets the headroom left by the shifted plan, never above the limit.
    np.testing.assert_allclose(schedule.power_kw[1, 0], 7.2)
    assert np.all(schedule.power_kw.sum(axis=0) <= 10.0 + 1e-9)


def test_the_shifted_plan_is_capped_at_the_new_max_power() -> None:
    p = Problem(ids=["a"], start=T0 + timedelta(minutes=1), resolution_s=60, site_limit_kw=np.full(5, 10.0),
                energy_kwh=[5.0], min_power_kw=[0.0], max_power_kw=[3.0], first_step=[0], end_step=[5])
    previous = PowerSchedule(["a"], np.full((1, 5), 7.0), T0, 60, "lp", 0.1)
    np.testing.assert_allclose(shift_schedule(previous, p)[0], [3.0, 3.0, 3.0, 3.0, 0.0])


def test_a_previous_plan_off_the_step_grid_is_not_used() -> None:
    p = _two(None)
    previous = PowerSchedule(p.ids, np.ones((2, 60)), T0 + timedelta(seconds=30), 60, "lp", 0.1)
    schedule = plan(p, _Broken(), previous=previous)
    assert schedule.algorithm == "equal-share" and "broken failed" in schedule.note
