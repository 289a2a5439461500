"""Feasibility battery: every registered algorithm on every benchmark scenario.

Each check looks at the algorithm's raw output (what ``solve()`` returns), so a rule broken by
an algorithm fails here instead of being rescued by the planner's fallback.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

import attrs
import numpy as np
import pytest
from support import require_shared, scenario_files

from optivgi.algorithms.base import Algorithm, FloatArray, Problem
from optivgi.algorithms.validate import TOLERANCE_KW, validate_schedule
from optivgi.scenario import load_scenario

FILES = {p.stem: p for p in scenario_files()}
SCENARIOS = sorted(FILES)
ALGORITHMS = sorted({ep.name for ep in entry_points(group="optivgi.algorithms")})


@functools.cache
def _algorithm(name: str) -> Algorithm:
    (ep,) = [e for e in entry_points(group="optivgi.algorithms") if e.name == name]
    algo = ep.load()()
    assert isinstance(algo, Algorithm)
    assert algo.name == name
    return algo


@functools.cache
def _problem(scenario: str) -> Problem:
    path = FILES.get(scenario) or require_shared(f"scenarios/{scenario}.json")
    return load_scenario(path).to_problem()


@functools.cache
def _solved(algorithm: str, scenario: str) -> tuple[Problem, FloatArray]:
    problem = _problem(scenario)
    power = np.asarray(_algorithm(algorithm).solve(problem), dtype=np.float64)
    return problem, power


pytestmark = pytest.mark.parametrize("algorithm", ALGORITHMS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_validator_accepts_raw_schedule(algorithm: str, scenario: str) -> None:
    problem, power = _solved(algorithm, scenario)
    assert power.shape == (problem.n_evs, problem.n_steps)
    cleaned = validate_schedule(problem, power)
    assert np.allclose(cleaned, power, atol=TOLERANCE_KW, rtol=0)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_site_limit_holds_every_step(algorithm: str, scenario: str) -> None:
    problem, power = _solved(algorithm, scenario)
    total = power.sum(axis=0)
    assert np.all(total <= problem.site_limit_kw + 1e-9), float(np.max(total - problem.site_limit_kw))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_ev_above_max_or_between_zero_and_min(algorithm: str, scenario: str) -> None:
    problem, power = _solved(algorithm, scenario)
    assert np.all(power >= -TOLERANCE_KW)
    assert np.all(power <= problem.max_power_kw[:, None] + 1e-9)
    charging = power > TOLERANCE_KW
    assert np.all(~charging | (power >= problem.min_power_kw[:, None] - TOLERANCE_KW))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nothing_outside_window(algorithm: str, scenario: str) -> None:
    problem, power = _solved(algorithm, scenario)
    outside = ~problem.window_mask()
    assert np.all(np.abs(power[outside]) <= TOLERANCE_KW)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_energy_at_most_need_plus_one_step(algorithm: str, scenario: str) -> None:
    problem, power = _solved(algorithm, scenario)
    h = problem.step_hours
    energy = power.sum(axis=1) * h
    assert np.all(energy <= problem.energy_kwh + problem.max_power_kw * h + 1e-6)


def test_seed_all_six_first_step_is_fair(algorithm: str) -> None:
    problem, power = _solved(algorithm, "seed-all-six")
    assert problem.n_evs == 6
    np.testing.assert_allclose(power[:, 0], 5.0, atol=0.05)


def test_five_evs_get_six_kw_each(algorithm: str) -> None:
    six = _problem("seed-all-six")
    keep = np.arange(5)
    five = attrs.evolve(
        six,
        ids=six.ids[:5],
        energy_kwh=six.energy_kwh[keep],
        min_power_kw=six.min_power_kw[keep],
        max_power_kw=six.max_power_kw[keep],
        first_step=six.first_step[keep],
        end_step=six.end_step[keep],
    )
    power = _algorithm(algorithm).solve(five)
    validate_schedule(five, power)
    np.testing.assert_allclose(power[:, 0], 6.0, atol=0.05)


def test_infeasible_minimums_stay_under_site_limit(algorithm: str) -> None:
    problem, power = _solved(algorithm, "infeasible-min")
    assert float(problem.min_power_kw.sum()) > float(problem.site_limit_kw.max())
    assert np.all(power.sum(axis=0) <= 30.0 + 1e-9)
    charging = power > TOLERANCE_KW
    assert np.all(power[charging] >= 6.0 - TOLERANCE_KW)
    # Pausing EVs must not mean pausing the site: most of the capacity while EVs are present is used.
    present = problem.window_mask().any(axis=0)
    assert float(power.sum()) > 0.5 * float(problem.site_limit_kw[present].sum())
