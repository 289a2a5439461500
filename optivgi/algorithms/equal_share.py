"""Equal share: instantaneous max-min fair water-filling, the simplest safe policy.

It is also the planner's fallback when another algorithm fails, so it is written to never raise
on a valid :class:`~optivgi.algorithms.base.Problem` and to never break a rule of the validator.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from optivgi.algorithms.base import Algorithm, FloatArray, IntArray, Problem

__all__ = ["EqualShareAlgorithm", "fit_minimums", "water_fill"]

logger = logging.getLogger(__name__)

#: Remaining need below this counts as delivered [kWh]; far below what a charger can resolve.
ENERGY_EPS_KWH = 1e-9


def water_fill(lo: FloatArray, hi: FloatArray, total: float, weight: FloatArray | None = None) -> FloatArray:
    """Share ``total`` [kW] out as ``clip(level * weight, lo, hi)`` with one common ``level``.

    With unit weights this is max-min fair water-filling between per-EV bounds: everybody gets
    the same power unless a bound stops them. The level is found exactly (sort + piecewise-linear
    interpolation), so the cost is ``O(n log n)`` with no iteration.

    Args:
        lo: ``(m,)`` lower bounds [kW]; ``lo.sum()`` must not exceed ``total``.
        hi: ``(m,)`` upper bounds [kW], ``>= lo``.
        total: power to share [kW], ``>= 0``.
        weight: ``(m,)`` positive weights (default: all 1).

    Returns:
        ``(m,)`` powers [kW] with ``lo <= p <= hi`` and ``p.sum() == min(total, hi.sum())`` up to
        round-off (never above ``total``).
    """
    m = lo.shape[0]
    if m == 0:
        return np.zeros(0)
    hi_sum = float(hi.sum())
    if hi_sum <= total:
        return hi.copy()
    lo_sum = float(lo.sum())
    if lo_sum >= total:
        return lo.copy()
    # Aim a hair below the limit so summing in another order cannot land above it.
    total = max(lo_sum, total - 1e-12 * total)
    w = np.ones(m) if weight is None else weight
    # In "level" space EV i is pinned at lo below a_i, at hi above b_i, and level*w_i between.
    a = lo / w
    b = hi / w
    oa = np.argsort(a, kind="stable")
    ob = np.argsort(b, kind="stable")
    a_s, b_s = a[oa], b[ob]
    cum_lo = np.concatenate(([0.0], np.cumsum(lo[oa])))
    cum_wa = np.concatenate(([0.0], np.cumsum(w[oa])))
    cum_hi = np.concatenate(([0.0], np.cumsum(hi[ob])))
    cum_wb = np.concatenate(([0.0], np.cumsum(w[ob])))
    levels = np.unique(np.concatenate((a_s, b_s)))
    ia = np.searchsorted(a_s, levels, side="right")
    ib = np.searchsorted(b_s, levels, side="left")
    f = (lo_sum - cum_lo[ia]) + cum_hi[ib] + levels * (cum_wa[ia] - cum_wb[ib])
    j = int(np.searchsorted(f, total, side="left"))
    if j == 0:
        level = float(levels[0])
    elif j >= levels.shape[0]:
        level = float(levels[-1])
    else:
        # f is linear between consecutive breakpoints, so interpolation is exact.
        f0, f1 = float(f[j - 1]), float(f[j])
        t = (total - f0) / (f1 - f0) if f1 > f0 else 1.0
        level = float(levels[j - 1] + t * (levels[j] - levels[j - 1]))
    p = np.clip(level * w, lo, hi)
    excess = float(p.sum()) - total
    if excess > 0.0:
        # Round-off only: take it back from the part above the lower bounds.
        room = p - lo
        room_sum = float(room.sum())
        if room_sum > 0.0:
            p = np.maximum(p - room * min(1.0, excess / room_sum), lo)
    return p


def fit_minimums(lo: FloatArray, order: IntArray, total: float) -> IntArray:
    """Pick EVs, in priority ``order``, whose minimum powers ``lo`` [kW] fit in ``total`` [kW].

    Greedy: take the longest prefix of ``order`` that fits, then keep scanning the remaining EVs
    (still in priority order) for ones that fit the capacity left, until nothing more fits. EVs
    with ``lo == 0`` always fit.

    Returns:
        Indices into ``lo`` of the chosen EVs (sorted ascending).
    """
    chosen = np.zeros(lo.shape[0], dtype=bool)
    left = total
    candidates = order
    while candidates.size:
        cs = np.cumsum(lo[candidates])
        k = int(np.searchsorted(cs, left, side="right"))
        if k == 0:
            break
        chosen[candidates[:k]] = True
        left -= float(cs[k - 1])
        rest = candidates[k:]
        candidates = rest[lo[rest] <= left]
    return np.flatnonzero(chosen)


class EqualShareAlgorithm(Algorithm):
    """Instantaneous max-min fair water-filling, step by step, with no look-ahead.

    In each step ``k`` the EVs inside their window that still need energy share the step's site
    limit by water-filling: every EV gets the same power unless capped by its max power or by
    what it still needs (remaining need / step length); what a capped EV cannot take goes to
    the others. The remaining need is then reduced and the next step is planned.

    Min power rule (each power is 0 or in ``[min, max]``):

    * An EV that charges gets at least its ``min_power_kw``: water-filling runs between
      per-EV bounds ``[min, cap]``, so an EV whose fair share would fall below its min gets its
      min and the others share the rest. An EV needing less than one step at min gets its min
      for that one last step (a small overshoot, never more than ``min * step`` [kWh]).
    * When the minimums of all present EVs do not fit under the limit, the EVs to charge in this
      step are chosen by lowest delivered fraction so far (delivered / initial need; ties: earlier
      departure, then row order), as many as fit; the others get 0 in this step. Those paused
      now have the lowest fraction next step, so charging rotates fairly over steps.

    The schedule never exceeds the site limit, an EV's max power or its window, and never gives
    an EV energy once its need is met. It is myopic: it ignores departures, prices and future
    limits, so an EV leaving early may get less than a departure-aware plan would give it.
    """

    name: ClassVar[str] = "equal-share"

    def solve(self, problem: Problem) -> FloatArray:
        """Return the ``(n_evs, n_steps)`` power schedule [kW]."""
        n, n_steps = problem.n_evs, problem.n_steps
        power = np.zeros((n_steps, n))
        if n == 0 or n_steps == 0:
            return power.T.copy()
        h = problem.step_hours
        pmin, pmax = problem.min_power_kw, problem.max_power_kw
        first, end = problem.first_step, problem.end_step
        need = problem.energy_kwh
        remaining = need.copy()
        delivered = np.zeros(n)
        usable = (pmax > 0) & (end > first) & (need > ENERGY_EPS_KWH)
        limit = problem.site_limit_kw
        # Absurd magnitudes (near 1e308) may overflow; such steps are zeroed below, not raised:
        # the fallback must always return a valid schedule.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._fill(power, limit, pmin, pmax, first, end, need, remaining, delivered, usable, h)
            broken = ~np.all(np.isfinite(power), axis=1) | ~(power.sum(axis=1) <= limit)
        if np.any(broken):
            logger.warning("equal-share: overflow in %d steps (values near the float range); "
                           "those steps get 0 kW", int(broken.sum()))
            power[broken] = 0.0
        return np.ascontiguousarray(power.T)

    @staticmethod
    def _fill(power: FloatArray, limit: FloatArray, pmin: FloatArray, pmax: FloatArray, first: IntArray,
              end: IntArray, need: FloatArray, remaining: FloatArray, delivered: FloatArray,
              usable: npt.NDArray[np.bool_], h: float) -> None:
        for k in range(power.shape[0]):
            total = float(limit[k])
            if total <= 0.0:
                continue
            idx = np.flatnonzero(usable & (first <= k) & (end > k) & (remaining > ENERGY_EPS_KWH))
            if idx.size == 0:
                continue
            lo = pmin[idx]
            hi = np.maximum(np.minimum(pmax[idx], remaining[idx] / h), lo)
            if float(lo.sum()) > total:
                order = np.lexsort((end[idx], delivered[idx] / need[idx]))
                keep = fit_minimums(lo, order, total)
                idx, lo, hi = idx[keep], lo[keep], hi[keep]
                if idx.size == 0:
                    continue
            p = water_fill(lo, hi, total)
            power[k, idx] = p
            remaining[idx] -= p * h
            delivered[idx] += p * h
