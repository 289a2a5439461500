"""The ``lp`` algorithm: valid schedules, energy and fairness against independent LP bounds.

The bounds are computed here, per step (no blocks), with ``scipy.optimize.linprog``: they share no
code with :mod:`optivgi.algorithms.lp`.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any, ClassVar

import attrs
import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog
from support import scenario_files, shared_dir

from optivgi.algorithms.base import Algorithm, FloatArray, Problem
from optivgi.algorithms.lp import LPAlgorithm, repair_min_power
from optivgi.algorithms.validate import validate_schedule
from optivgi.errors import InfeasibleScheduleError
from optivgi.planner import plan
from optivgi.scenario import load_scenario

SCENARIO_FILES = scenario_files()
SCENARIO_DIR = SCENARIO_FILES[0].parent if SCENARIO_FILES else shared_dir() / "scenarios"
SCENARIOS = [p.stem for p in SCENARIO_FILES]
EXACT_KW = 1e-9

pytestmark = pytest.mark.skipif(not SCENARIOS, reason=f"no scenario files in {SCENARIO_DIR}")


@functools.cache
def problem_of(name: str) -> Problem:
    return load_scenario(SCENARIO_DIR / f"{name}.json").to_problem()


@functools.cache
def lp_schedule(name: str) -> FloatArray:
    problem = problem_of(name)
    # A generous budget: the machine running the tests may be loaded; speed is benchmarked.
    schedule = plan(problem, LPAlgorithm(time_limit_s=900.0))
    assert schedule.algorithm == "lp" and not schedule.note, schedule.note
    return np.asarray(schedule.power_kw)


def delivered(problem: Problem, power: FloatArray) -> FloatArray:
    """Energy per EV that counts [kWh]: what it got, capped at its need."""
    return np.minimum(power.sum(axis=1) * problem.step_hours, problem.energy_kwh)


@functools.cache
def relaxed_bounds(name: str) -> tuple[float, float, tuple[int, ...], float | None]:
    """Per-step relaxed optimum: (max total energy, max-min fraction, EVs counted, min cost)."""
    p = problem_of(name)
    n, n_steps, h = p.n_evs, p.n_steps, p.step_hours
    ev, step = np.nonzero(p.window_mask() & (p.energy_kwh[:, None] > 0))
    ub = np.minimum(p.max_power_kw[ev], p.site_limit_kw[step])
    fair = np.unique(ev[ub > 0])
    if fair.size == 0:
        return 0.0, 1.0, (), None
    m = ev.size
    site = sp.csr_matrix((np.ones(m), (step, np.arange(m))), shape=(n_steps, m))
    need = sp.csr_matrix((np.full(m, h), (ev, np.arange(m))), shape=(n, m))
    col = sp.csr_matrix(p.energy_kwh[fair][:, None])
    a_ub = sp.vstack([sp.hstack([site, sp.csr_matrix((n_steps, 1))]),
                      sp.hstack([need, sp.csr_matrix((n, 1))]),
                      sp.hstack([-need[fair], col])]).tocsr()
    b_ub = np.concatenate([p.site_limit_kw, p.energy_kwh, np.zeros(fair.size)])
    bounds = np.vstack([np.column_stack([np.zeros(m), ub]), [0.0, 1.0]])
    c_t = np.zeros(m + 1)
    c_t[-1] = -1.0
    r_t = linprog(c_t, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    r_d = linprog(np.append(-np.full(m, h), 0.0), A_ub=a_ub[: n_steps + n, :], b_ub=b_ub[: n_steps + n],
                  bounds=bounds, method="highs")
    assert r_t.status == 0 and r_d.status == 0
    t_star, d_max = -r_t.fun, -r_d.fun
    cost = None
    if p.price_per_kwh is not None:
        # Lexicographic: fix the max-min fraction and the total, then minimise cost.
        bounds[-1] = [t_star - 1e-9, 1.0]
        a_c = sp.vstack([a_ub, sp.csr_matrix(np.append(-np.full(m, h), 0.0)[None, :])])
        r_c = linprog(np.append(p.price_per_kwh[step] * h, 0.0), A_ub=a_c,
                      b_ub=np.append(b_ub, -(d_max - 1e-7)), bounds=bounds, method="highs")
        assert r_c.status == 0
        cost = float(r_c.fun)
    return d_max, t_star, tuple(int(i) for i in fair), cost


def site_cost(problem: Problem, power: FloatArray) -> float:
    assert problem.price_per_kwh is not None
    return float(power.sum(axis=0) @ problem.price_per_kwh * problem.step_hours)


def subset(problem: Problem, rows: list[int]) -> Problem:
    return Problem(ids=[problem.ids[i] for i in rows], start=problem.start, resolution_s=problem.resolution_s,
                   site_limit_kw=problem.site_limit_kw, energy_kwh=problem.energy_kwh[rows],
                   min_power_kw=problem.min_power_kw[rows], max_power_kw=problem.max_power_kw[rows],
                   first_step=problem.first_step[rows], end_step=problem.end_step[rows],
                   price_per_kwh=problem.price_per_kwh)


# -- every scenario ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_schedule_is_valid_without_fallback(name: str) -> None:
    p = problem_of(name)
    power = lp_schedule(name)
    assert power.shape == (p.n_evs, p.n_steps)
    np.testing.assert_array_equal(validate_schedule(p, power, tol=0.0).shape, power.shape)
    assert np.all(power.sum(axis=0) <= p.site_limit_kw + EXACT_KW)
    assert np.all(power[~p.window_mask()] == 0.0)
    on = power > 0
    assert np.all(power[on] >= np.broadcast_to(p.min_power_kw[:, None], power.shape)[on] - EXACT_KW)
    assert np.all(power <= p.max_power_kw[:, None] + EXACT_KW)


@pytest.mark.parametrize("name", SCENARIOS)
def test_energy_reaches_the_relaxed_bound(name: str) -> None:
    p = problem_of(name)
    d_max, _, _, _ = relaxed_bounds(name)
    got = float(delivered(p, lp_schedule(name)).sum())
    assert got <= d_max + 1e-6
    assert got >= 0.999 * d_max


@pytest.mark.parametrize("name", SCENARIOS)
def test_worst_ev_fraction_is_the_max_min_optimum(name: str) -> None:
    p = problem_of(name)
    _, t_star, fair, _ = relaxed_bounds(name)
    if not fair:
        assert np.all(lp_schedule(name) == 0.0)
        return
    idx = np.array(fair)
    worst = float((delivered(p, lp_schedule(name))[idx] / p.energy_kwh[idx]).min())
    assert worst == pytest.approx(t_star, abs=1e-3)


# -- specific behaviour --------------------------------------------------------------------------


def test_seed_all_six_gets_five_kw_each_flat() -> None:
    power = lp_schedule("seed-all-six")
    np.testing.assert_allclose(power[:, 0], 5.0, atol=0.05)
    np.testing.assert_allclose(power, 5.0, atol=0.05)


def test_five_equal_evs_get_six_kw_each() -> None:
    p = subset(problem_of("seed-all-six"), [0, 1, 2, 3, 4])
    power = plan(p, LPAlgorithm()).power_kw
    np.testing.assert_allclose(power, 6.0, atol=0.05)


def test_infeasible_minimums_take_turns_under_the_limit() -> None:
    p = problem_of("infeasible-min")
    power = lp_schedule("infeasible-min")
    assert np.all(power.sum(axis=0) <= 30.0 + EXACT_KW)
    assert np.all(delivered(p, power) > 0)
    # Every EV charged, but never all eight at once.
    assert np.all((power > 0).sum(axis=0) <= 5)


def test_prices_lower_cost_at_equal_energy() -> None:
    p = problem_of("fleet-200-tou")
    with_price = lp_schedule("fleet-200-tou")
    no_price = LPAlgorithm().solve(attrs.evolve(p, price_per_kwh=None))
    assert site_cost(p, with_price) <= site_cost(p, no_price)
    assert delivered(p, with_price).sum() == pytest.approx(delivered(p, no_price).sum(), rel=1e-9)


def test_relaxed_lp_is_the_lexicographic_optimum() -> None:
    p = problem_of("fleet-200-tou")
    d_max, t_star, fair, cost = relaxed_bounds("fleet-200-tou")
    relaxed = LPAlgorithm().solve_relaxed(p)
    d = delivered(p, relaxed)
    assert float((d[list(fair)] / p.energy_kwh[list(fair)]).min()) == pytest.approx(t_star, abs=1e-7)
    assert float(d.sum()) == pytest.approx(d_max, rel=1e-9)
    assert site_cost(p, relaxed) == pytest.approx(cost, rel=1e-7)


def test_earliness_breaks_ties() -> None:
    # One EV, plenty of time and power: it charges at full power from the first step.
    p = Problem(ids=["a"], start=problem_of("empty").start, resolution_s=60, site_limit_kw=np.full(60, 10.0),
                energy_kwh=[1.0], min_power_kw=[0.0], max_power_kw=[6.0], first_step=[0], end_step=[60])
    power = LPAlgorithm().solve(p)
    np.testing.assert_allclose(power[0, :10], 6.0)
    np.testing.assert_allclose(power[0, 10:], 0.0, atol=EXACT_KW)


def test_zero_evs_and_empty_windows_give_zeros() -> None:
    assert LPAlgorithm().solve(problem_of("empty")).shape == (0, problem_of("empty").n_steps)
    p = problem_of("seed-default")
    idle = attrs.evolve(p, first_step=p.end_step)
    np.testing.assert_array_equal(LPAlgorithm().solve(idle), 0.0)
    np.testing.assert_array_equal(LPAlgorithm().solve(attrs.evolve(p, energy_kwh=np.zeros(p.n_evs))), 0.0)


def test_repair_pulses_a_sub_minimum_plan_at_the_same_energy() -> None:
    p = Problem(ids=["a", "b"], start=problem_of("empty").start, resolution_s=60,
                site_limit_kw=np.full(20, 9.0), energy_kwh=[10.0, 10.0], min_power_kw=[2.0, 0.0],
                max_power_kw=[7.0, 7.0], first_step=[0, 0], end_step=[20, 20])
    relaxed = np.vstack([np.full(20, 1.0), np.full(20, 7.0)])
    power = repair_min_power(p, relaxed)
    validate_schedule(p, power, tol=0.0)
    np.testing.assert_allclose(power[1], 7.0, atol=1e-8)
    assert set(np.unique(power[0])) <= {0.0, 2.0}
    assert power[0].sum() == pytest.approx(relaxed[0].sum())


# -- failures ------------------------------------------------------------------------------------


class _Zero(Algorithm):
    name: ClassVar[str] = "zero"

    def solve(self, problem: Problem) -> FloatArray:
        return problem.zeros()


def test_budget_used_up_while_building_raises_and_planner_falls_back() -> None:
    p = problem_of("fleet-200")
    algo = LPAlgorithm(time_limit_s=0.0)
    with pytest.raises(InfeasibleScheduleError, match="lp: time budget"):
        algo.solve(p)
    schedule = plan(p, algo, fallback=_Zero())
    assert schedule.algorithm == "zero"


def test_highs_time_limit_uses_the_best_plan_found_and_says_so() -> None:
    p = problem_of("fleet-200")
    algo = LPAlgorithm(highs_options={"time_limit": 1e-3, "simplex_iteration_limit": 10**9})
    schedule = plan(p, algo, fallback=_Zero())
    if schedule.algorithm == "zero":  # HiGHS stopped before it had any point: the planner fell back
        assert "no solution" in schedule.note
        return
    assert schedule.algorithm == "lp"
    assert "time limit" in schedule.note and "not proven optimal" in schedule.note
    validate_schedule(p, schedule.power_kw, tol=0.0)
    assert np.all(schedule.power_kw.sum(axis=0) <= p.site_limit_kw + EXACT_KW)


def test_backends_agree() -> None:
    p = problem_of("fleet-50-scarce") if "fleet-50-scarce" in SCENARIOS else problem_of("fleet-50")
    a = LPAlgorithm().solve_relaxed(p)
    b = LPAlgorithm(backend="cvxpy").solve_relaxed(p)
    np.testing.assert_allclose(delivered(p, a).sum(), delivered(p, b).sum(), rtol=1e-7)
    fair = delivered(p, a) > 0
    assert float((delivered(p, a)[fair] / p.energy_kwh[fair]).min()) == pytest.approx(
        float((delivered(p, b)[fair] / p.energy_kwh[fair]).min()), abs=1e-7)


@pytest.mark.parametrize("outcome", [cp.INFEASIBLE, cp.SOLVER_ERROR, "raise"])
def test_bad_solver_status_raises(monkeypatch: pytest.MonkeyPatch, outcome: str) -> None:
    def fake_solve(self: cp.Problem, *args: Any, **kwargs: Any) -> None:
        if outcome == "raise":
            raise cp.error.SolverError("boom")
        self._status = outcome

    monkeypatch.setattr(cp.Problem, "solve", fake_solve)
    with pytest.raises(InfeasibleScheduleError, match="status"):
        LPAlgorithm(backend="cvxpy").solve(problem_of("seed-default"))


def test_an_unsolvable_model_raises_naming_the_status() -> None:
    # A bound HiGHS refuses (lower above upper) stands for any solver failure of the direct call.
    from optivgi.algorithms.highs import solve_lp

    res = solve_lp(np.ones(1), sp.csc_matrix(np.ones((1, 1))), np.ones(1), np.ones(1), np.zeros(1),
                   maximize=True, options={})
    assert not res.optimal and res.status != "Optimal"


def test_registered_under_lp_and_built_without_arguments() -> None:
    (entry,) = [e for e in entry_points(group="optivgi.algorithms") if e.name == "lp"]
    algo = entry.load()()
    assert isinstance(algo, LPAlgorithm) and algo.name == "lp"


@pytest.mark.parametrize("kwargs", [{"time_limit_s": -1.0}, {"time_limit_s": float("nan")},
                                    {"earliness_weight": 1.5}, {"earliness_weight": -0.1},
                                    {"backend": "glpk"}])
def test_bad_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LPAlgorithm(**kwargs)
