"""Go: a departure-aware greedy heuristic (minimums first, then a proportional split).

It is a heuristic, not a fast path: it makes two Python passes over every step (one numpy
pass over the EVs present per step), so on small sites (a few EVs, hundreds of steps) it is
slower than ``lp``, whose cost there is one small LP; it overtakes ``lp`` only on large fleets.
Use it for its behaviour (no solver, departure-aware), not for speed.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from optivgi.algorithms.base import Algorithm, FloatArray, IntArray, Problem
from optivgi.algorithms.equal_share import ENERGY_EPS_KWH, fit_minimums, water_fill

__all__ = ["GoAlgorithm"]

logger = logging.getLogger(__name__)


def _greedy_pass(
    limit: FloatArray,
    need: FloatArray,
    pmin: FloatArray,
    pmax: FloatArray,
    first: IntArray,
    end: IntArray,
    h: float,
    floor: FloatArray | None,
) -> FloatArray:
    """One pass over the steps in index order; returns a ``(T, n)`` power array [kW].

    ``floor`` (``(T, n)``, optional) is a feasible plan this pass must not fall behind: in step
    ``k`` an EV gets at least what it needs now so that ``floor``'s steps after ``k`` can still
    bring it its remaining need, up to ``floor[k]``.
    """
    n_steps, n = limit.shape[0], need.shape[0]
    power = np.zeros((n_steps, n))
    remaining = need.copy()
    usable = (pmax > 0) & (end > first) & (need > ENERGY_EPS_KWH)
    safe_need = np.where(need > 0, need, 1.0)
    safe_max = np.where(pmax > 0, pmax, 1.0)
    # later[k, i]: energy the floor plan gives EV i in steps after k [kWh].
    later = None
    if floor is not None:
        later = np.zeros_like(floor)
        later[:-1] = np.cumsum(floor[::-1], axis=0)[::-1][1:] * h
    for k in range(n_steps):
        total = float(limit[k])
        if total <= 0.0:
            continue
        idx = np.flatnonzero(usable & (first <= k) & (end > k) & (remaining > ENERGY_EPS_KWH))
        if idx.size == 0:
            continue
        rem = remaining[idx]
        lo = pmin[idx]
        top = pmax[idx]
        hi = np.maximum(np.minimum(top, rem / h), lo)
        left = (end[idx] - k).astype(np.float64)
        if floor is not None and later is not None:
            owed = np.minimum((rem - later[k, idx]) / h, floor[k, idx])
            base = np.where(owed > 0.0, np.clip(owed, lo, hi), lo)
        else:
            owed = np.zeros(idx.size)
            base = lo
        if float(base.sum()) > total:
            slack = left - rem / (safe_max[idx] * h)
            # Best fraction of its need each EV can still reach: 1 while it has slack.
            reach = np.minimum(1.0, 1.0 + slack * top * h / safe_need[idx])
            keep = fit_minimums(base, np.lexsort((slack, reach, owed <= 0.0)), total)
            idx, rem, lo, top, hi, left, base = (
                idx[keep], rem[keep], lo[keep], top[keep], hi[keep], left[keep], base[keep])
            if idx.size == 0:
                continue
        urgent = np.clip(rem / h - (left - 1.0) * top, 0.0, None)
        urgent = np.maximum(np.where(urgent > 0.0, np.clip(urgent, lo, hi), lo), base)
        p = water_fill(base, urgent, total)
        p = water_fill(p, hi, total, weight=rem / (left * h))
        power[k, idx] = p
        remaining[idx] -= p * h
    return power


class GoAlgorithm(Algorithm):
    """Greedy heuristic: an as-late-as-possible plan, then the same energy moved as early as possible.

    Both passes run step by step (one vectorised numpy pass per step over the EVs present), and
    each step is filled the same way, for the EVs inside their window that still need energy:

    1. **Minimum powers first.** If the minimums of all those EVs fit under the step's site limit,
       every one of them charges at least at its min. If not, EVs are taken in priority order as
       long as their minimums fit and the others get 0 in this step. The order: EVs owed power by
       the reverse plan (below) first, then lowest reachable fraction of their need, then least
       slack (steps left in the window minus steps needed at max power). Charging an EV raises
       its slack and waiting lowers it, so paused EVs move up the order and the choice rotates.
    2. **Urgent energy.** An EV that could no longer finish at max power if it got less than
       ``remaining_need/step - (steps_left - 1) * max`` now is raised towards that amount
       (max-min fair between such EVs).
    3. **Proportional split.** What remains of the limit is split in proportion to each EV's
       required rate (remaining need / time left in its window) by weighted water-filling, each
       EV capped at its max power and at its remaining need. Equal need and window give equal
       power; the split fills the step up to the site limit or until every EV is capped.

    **Reverse pass (as late as possible).** The steps above run on the time-reversed problem
    (arrivals become departures), giving a feasible plan that serves every EV as late as its
    window and the other EVs allow: it tells how much each EV must have by every step when the
    site is busy later on.

    **Forward pass (shift earlier, hand out the rest).** The steps above run again in time
    order, with one more lower bound in step 1: each EV gets at least what it needs now so that
    the reverse plan's later steps can still bring its remaining need (never more than the
    reverse plan gives it in this step, so these floors always fit together). Power therefore
    moves as early as the site allows, every EV gets at least what the reverse plan gives it,
    and spare capacity goes out by the proportional split.

    Every power is 0 or in ``[min, max]``, the site limit holds in every step, no EV draws outside
    its window, and an EV stops once its need is met (an EV needing less than one step at its
    min gets its min for that last step). Prices are ignored. It is a heuristic: when minimum
    powers or the site limit bind, it can deliver less than the optimum, and under heavy
    overload an EV with a long window can end with a lower fraction than a max-min fair plan.
    """

    name: ClassVar[str] = "go"

    def solve(self, problem: Problem) -> FloatArray:
        """Return the ``(n_evs, n_steps)`` power schedule [kW]."""
        n, n_steps = problem.n_evs, problem.n_steps
        if n == 0 or n_steps == 0:
            return problem.zeros()
        h = problem.step_hours
        first, end = problem.first_step, problem.end_step
        args = (problem.energy_kwh, problem.min_power_kw, problem.max_power_kw)
        limit = problem.site_limit_kw
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            late = _greedy_pass(limit[::-1].copy(), *args, n_steps - end, n_steps - first, h, None)[::-1]
            power = _greedy_pass(limit, *args, first, end, h, np.ascontiguousarray(late))
        if not np.all(np.isfinite(power)):
            # Only inputs near the float range get here; the planner then falls back.
            raise ArithmeticError("go: the plan overflowed (powers or energies near the float range)")
        return np.ascontiguousarray(power.T)
