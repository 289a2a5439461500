"""Minimum-power repair: from a schedule that ignores minimum powers to a valid one.

The ``lp`` algorithm solves a relaxation in which each EV may draw any power in ``[0, max]``;
:func:`repair_min_power` turns it into a schedule where each power is 0 or in ``[min, max]``
("Minimum powers" in :mod:`optivgi.algorithms.lp` describes the rule).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from optivgi.algorithms.base import FloatArray, IntArray, Problem

__all__ = ["fit_site_limit", "repair_min_power"]

BoolArray = npt.NDArray[np.bool_]

#: Powers below this are solver round-off and read as 0 [kW].
ZERO_KW = 1e-9
#: A relaxed power this close under its minimum counts as at the minimum [kW].
_SNAP_KW = 1e-7
#: What a step is cut below its limit when round-off put it above [kW].
_MARGIN_KW = 1e-9
#: Relative round-off of a sum of powers that may differ with the order of summation.
_ROUND_OFF = 1e-12


def fit_site_limit(power: FloatArray, limit: FloatArray, pmin: FloatArray, pmax: FloatArray) -> FloatArray:
    """Clip to ``[0, max]`` and keep every step's load strictly within its limit despite round-off.

    A step whose load is within round-off of its limit, or above it, loses what is above plus
    :data:`_MARGIN_KW` from the EV with most power above its minimum, so the load stays under the
    limit whatever order it is summed in and no power drops below its minimum. A step above its
    limit where no single EV has that much slack is scaled down instead.
    """
    power = np.ascontiguousarray(np.clip(power, 0.0, pmax[:, None]))
    load = power.sum(axis=0)
    cols = np.flatnonzero(load > limit - _ROUND_OFF * np.maximum(limit, 1.0))
    if cols.size == 0:
        return power
    cut = np.maximum(load[cols] - limit[cols], 0.0) + _MARGIN_KW
    sub = power[:, cols]
    slack = np.where(sub > 0, sub - pmin[:, None], 0.0)
    row = np.argmax(slack, axis=0)
    ok = slack[row, np.arange(cols.size)] >= cut
    power[row[ok], cols[ok]] -= cut[ok]
    bad = cols[~ok & (load[cols] > limit[cols])]
    if bad.size:
        power[:, bad] *= limit[bad] / load[bad]
    return power


def repair_min_power(problem: Problem, relaxed: FloatArray) -> FloatArray:
    """Turn a schedule that ignores minimum powers into one where each power is 0 or in [min, max].

    ``relaxed`` [kW] must respect windows, maximum powers and the site limit. EVs with no power
    strictly between 0 and their minimum keep their powers; the others are replanned with the
    backlog rule of the module doc inside the headroom the kept EVs leave. Returns a new array.
    """
    n, n_steps, h = problem.n_evs, problem.n_steps, problem.step_hours
    if n == 0 or n_steps == 0:
        return relaxed.copy()
    pmin, pmax = problem.min_power_kw, problem.max_power_kw
    power = np.minimum(np.maximum(relaxed, 0.0), pmax[:, None])
    power[power < ZERO_KW] = 0.0
    near = (power > 0) & (power < pmin[:, None]) & (power >= pmin[:, None] - _SNAP_KW)
    power = np.where(near, pmin[:, None], power)
    sub = (power > 0) & (power < pmin[:, None])
    rows = np.flatnonzero(sub.any(axis=1))
    if rows.size == 0:
        return fit_site_limit(power, problem.site_limit_kw, pmin, pmax)

    limit = problem.site_limit_kw
    plan = power[rows]
    kept_load = power.sum(axis=0) - plan.sum(axis=0)
    headroom = np.maximum(limit - kept_load, 0.0)
    first, end = problem.first_step[rows], problem.end_step[rows]
    lo, hi = pmin[rows], pmax[rows]
    need = problem.energy_kwh[rows]
    backlog = np.zeros(rows.size)
    delivered = np.zeros(rows.size)
    out = np.zeros_like(plan)
    for k in range(int(first.min()), int(end.max())):
        inside = (first <= k) & (k < end)
        ask = np.minimum(np.clip(plan[:, k] + backlog / h, 0.0, hi),
                         np.maximum(need - delivered, 0.0) / h)
        due = inside & (ask >= 0.5 * lo) & (ask > 0)
        extra = inside & ~due & (ask > 0)
        want = np.maximum(ask, lo)
        got = _fit_step(want, np.minimum(np.maximum(plan[:, k], lo), want), lo, due, extra,
                        backlog + plan[:, k] * h, float(headroom[k]))
        out[:, k] = got
        backlog += (plan[:, k] - got) * h
        delivered += got * h
    power[rows] = out
    return fit_site_limit(power, limit, pmin, pmax)


def _fit_step(want: FloatArray, base: FloatArray, lo: FloatArray, due: BoolArray, extra: BoolArray,
              priority: FloatArray, room: float) -> FloatArray:
    """Powers [kW] of the replanned EVs in one step, within ``room`` [kW].

    Fills, in this order and each while it fits: the ``due`` EVs at their minimum ``lo``, then up
    to ``base`` (this step's plan, at least the minimum); the ``extra`` EVs (owed less than half a
    minimum) at their minimum; the due EVs up to ``want`` (catching up a backlog). When even the
    due minimums do not fit, the EVs owed most (``priority`` [kWh], ties to the lower row) are kept
    while their minimums fit and the others pause.
    """
    got = np.zeros_like(want)
    idx = np.flatnonzero(due)
    if float(lo[idx].sum()) > room:
        order = idx[np.argsort(-priority[idx], kind="stable")]
        idx = order[np.cumsum(lo[order]) <= room]
    got[idx] = lo[idx]
    left = _raise_towards(got, idx, base, room - float(lo[idx].sum()))
    more = np.flatnonzero(extra)
    if more.size and left > 0:
        order = more[np.argsort(-priority[more], kind="stable")]
        order = order[np.cumsum(lo[order]) <= left]
        got[order] = lo[order]
        left -= float(lo[order].sum())
    _raise_towards(got, idx, want, left)
    return got


def _raise_towards(got: FloatArray, idx: IntArray, top: FloatArray, left: float) -> float:
    """Raise ``got[idx]`` towards ``top[idx]`` within ``left`` [kW], proportionally; return what is left."""
    if left <= 0:
        return 0.0
    above = np.maximum(top[idx] - got[idx], 0.0)
    spare = float(above.sum())
    if spare <= left:
        got[idx] += above
        return left - spare
    got[idx] += above * (left / spare)
    return 0.0
