"""How ``lp`` lays block energies out on steps, and how it fills its first step.

See "The first step" and "Inside a block" in :mod:`optivgi.algorithms.lp`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from optivgi.algorithms.base import FloatArray, IntArray, Problem
from optivgi.algorithms.equal_share import fit_minimums, water_fill
from optivgi.algorithms.repair import fit_site_limit

__all__ = ["fill_first_step", "layout", "worst_share"]

#: (EV, block) pair indices: int32 halves their memory at a million pairs.
Index = npt.NDArray[np.signedinteger[Any]]


def worst_share(problem: Problem, power: FloatArray, rows: npt.NDArray[np.bool_]) -> float:
    """Least fraction of the session totals over ``rows``."""
    got = np.minimum(power.sum(axis=1) * problem.step_hours, problem.energy_kwh)
    total = problem.delivered + problem.energy_kwh
    return float(((problem.delivered[rows] + got[rows]) / total[rows]).min()) if rows.any() else 1.0


def fill_first_step(problem: Problem, power: FloatArray, wanted: FloatArray | None = None) -> FloatArray:
    """Give step 0's headroom left idle by pulsing minimum powers to EVs that can still use it.

    First, EVs the relaxed plan charges in step 0 (``wanted > 0``) but the repair paused start at
    their minimum, leaving first, then lowest totals: from the idle headroom, and where that is
    short, by taking the rest from EVs above their minimum, in proportion to how far above they
    are. Then those charging are raised towards their max, never past their remaining need over
    the plan, max-min fairly; then other paused EVs that still need energy start at their minimum
    while it fits. Later steps are left as they are.
    """
    if problem.n_evs == 0 or problem.n_steps == 0:
        return power
    h = problem.step_hours
    limit0 = float(problem.site_limit_kw[0]) * (1.0 - 1e-9)
    inside = (problem.first_step <= 0) & (problem.end_step > 0)
    slack = problem.energy_kwh - power.sum(axis=1) * h
    pmin, pmax = problem.min_power_kw, problem.max_power_kw
    total = problem.delivered + problem.energy_kwh
    frac = np.where(total > 0, (problem.delivered + power.sum(axis=1) * h) / np.where(total > 0, total, 1.0), 1.0)
    power = power.copy()
    if wanted is not None:
        denied = np.flatnonzero(inside & (power[:, 0] == 0) & (wanted > 1e-9) & (pmin > 0) & (slack > 1e-9))
        for i in denied[np.lexsort((frac[denied], problem.end_step[denied]))]:
            p0 = power[:, 0]
            short = float(pmin[i]) - (limit0 - float(p0.sum()))
            above = np.where(p0 > 0, p0 - pmin, 0.0)
            spare = float(above.sum())
            if short > spare:
                continue
            if short > 0:
                power[:, 0] = p0 - above * (short / spare)
            power[i, 0] = pmin[i]
    p0 = power[:, 0]
    room = limit0 - float(p0.sum())
    if room <= 1e-9 or not np.any(inside & (slack > 1e-9)):
        return fit_site_limit(power, problem.site_limit_kw, pmin, pmax)
    on = np.flatnonzero(inside & (p0 > 0) & (slack > 1e-9) & (p0 < pmax))
    if on.size:
        top = np.minimum(pmax[on], p0[on] + slack[on] / h)
        new = water_fill(p0[on], top, float(p0[on].sum()) + room)
        room -= float(new.sum() - p0[on].sum())
        power[on, 0] = new
    off = np.flatnonzero(inside & (power[:, 0] == 0) & (slack > 1e-9) & (pmax > 0))
    if off.size and room > 1e-9:
        lo = np.maximum(pmin[off], 1e-6)
        pick = fit_minimums(lo, np.argsort(frac[off], kind="stable"), room)
        if pick.size:
            sel = off[pick]
            top = np.maximum(np.minimum(pmax[sel], slack[sel] / h), lo[pick])
            power[sel, 0] = water_fill(lo[pick], top, room)
    return fit_site_limit(power, problem.site_limit_kw, pmin, pmax)


def layout(problem: Problem, y: FloatArray, ev: Index, blk: Index, start_b: IntArray,
            blen: IntArray) -> FloatArray:
    """Block energies ``y`` [kWh] to step powers [kW]: step 0 fairly and full, then block by block.

    See "The first step" and "Inside a block" in the module doc.
    """
    h = problem.step_hours
    pmax = problem.max_power_kw
    first = blk == 0
    step0 = np.zeros(0)
    if first.any() and blen[0] >= 1:
        rows = ev[first]
        y0 = y[first]
        must = np.maximum(y0 / h - (blen[0] - 1) * pmax[rows], 0.0)
        # Every EV with energy in the block charges now, at least at its minimum, when all the
        # minimums fit; otherwise only what must be delivered now is held (the repair pulses it).
        room = float(problem.site_limit_kw[0])
        lo = np.where(y0 > 0, np.maximum(problem.min_power_kw[rows], must), 0.0)
        if float(lo.sum()) > room:
            lo = must
        top = np.maximum(np.minimum(pmax[rows], y0 / h), lo)
        # Water-filling on the totals each EV would reach if it held this power through the
        # block, (D + len h p) / N: lowest totals first, and nearly equal powers over long blocks.
        done = problem.delivered[rows]
        span = float(blen[0]) * h
        shift = done / span
        step0 = water_fill(lo + shift, top + shift, room + float(shift.sum()),
                           weight=(done + problem.energy_kwh[rows]) / span) - shift
        step0 = np.clip(step0, lo, top)
        y = y.copy()
        y[first] = np.maximum(y0 - step0 * h, 0.0)
        if blen[0] == 1:
            y[first] = 0.0
    # Step 0 becomes its own block; the rest of block 0 starts at step 1.
    start_r, blen_r = start_b.copy(), blen.copy()
    if step0.size:
        start_r[0] += 1
        blen_r[0] -= 1
    rest = _spread_in_blocks(problem, y, ev, blk, start_r, blen_r)
    if step0.size:
        rest[ev[first], 0] = step0
    return rest


def _spread_in_blocks(problem: Problem, y: FloatArray, ev: Index, blk: Index, start_b: IntArray,
                      blen: IntArray) -> FloatArray:
    """Turn block energies ``y`` [kWh] into step powers [kW], as early as the block allows.

    In block ``b`` every EV's flat rate ``f_j = y_j / (len_b * h)`` is scaled by the common factor
    ``C_b / sum_b f`` (the site's capacity over the block's flat load, >= 1) and capped at the EV's
    maximum; the EV draws that rate from the block's first step until its energy is in (the last
    step partial). The rates of a block add up to at most ``C_b``, each is at least ``f_j`` (so
    everything fits in the block), and EVs sharing a binding limit get powers in proportion to
    their block energies: equal energies, equal and flat powers.
    """
    n, n_steps, h = problem.n_evs, problem.n_steps, problem.step_hours
    n_blocks = blen.size
    length = blen[blk]
    safe_len = np.where(length > 0, length, 1)
    flat = np.where(length > 0, y / (safe_len * h), 0.0)
    flat_sum = np.bincount(blk, weights=flat, minlength=n_blocks)
    room = problem.site_limit_kw[np.minimum(start_b, n_steps - 1)]
    factor = np.where(flat_sum > 0, room / np.where(flat_sum > 0, flat_sum, 1.0), 1.0)
    rate = np.maximum(np.minimum(problem.max_power_kw[ev], factor[blk] * flat), flat)
    steps = np.where(rate > 0, y / (np.where(rate > 0, rate, 1.0) * h), 0.0)
    full = np.minimum(np.floor(steps + 1e-9), length).astype(np.int64)
    rest = np.maximum(y / h - full * rate, 0.0)

    # Scatter pair by pair: `full` steps at `rate` from the block's start, then `rest` once.
    power = np.zeros((n, n_steps))
    begin = start_b[blk]
    total = int(full.sum())
    if total:
        run = np.arange(total) - np.repeat(np.cumsum(full) - full, full)
        power[np.repeat(ev, full), np.repeat(begin, full) + run] = np.repeat(rate, full)
    tail = (full < length) & (rest > 0)
    power[ev[tail], begin[tail] + full[tail]] = rest[tail]
    return power
