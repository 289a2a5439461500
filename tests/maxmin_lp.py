"""An independent max-min check: scipy's linprog (HiGHS) on the plain LP, not the product's models.

For a problem without minimum powers, :func:`maxmin_fraction` returns the largest ``t`` such that
every EV with energy to get can be given at least ``t`` of it, within its window and max power,
the site limit of every step and every node and phase of the site tree.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from optivgi.algorithms.base import FloatArray, Problem


def worst_fraction(problem: Problem, power: FloatArray) -> float:
    """The least share of its energy an EV gets from ``power`` (EVs asking for nothing left out)."""
    need = problem.energy_kwh > 0
    if not need.any():
        return 1.0
    got = power.sum(axis=1) * problem.step_hours
    return float(np.min(np.minimum(got[need], problem.energy_kwh[need]) / problem.energy_kwh[need]))


def maxmin_fraction(problem: Problem) -> tuple[float, FloatArray]:
    """The max-min worst fraction and one schedule reaching it.

    Raises:
        ValueError: the problem has minimum powers (the plain LP ignores them), or the LP failed.
    """
    if np.any(problem.min_power_kw > 0):
        raise ValueError("the independent LP handles problems without minimum powers only")
    n, steps = problem.n_evs, problem.n_steps
    mask = problem.window_mask()
    ev, step = np.nonzero(mask)  # one variable per EV and step of its window, then t
    nv = ev.size
    cols = np.arange(nv)
    blocks: list[sp.csr_array] = []
    rhs: list[FloatArray] = []
    # Energy: t * E_i - sum_k p_ik * h <= 0 for every EV asking for energy.
    need = np.flatnonzero(problem.energy_kwh > 0)
    row_of = -np.ones(n, dtype=np.int64)
    row_of[need] = np.arange(need.size)
    sel = row_of[ev] >= 0
    energy = sp.csr_array((np.full(int(sel.sum()), -problem.step_hours), (row_of[ev][sel], cols[sel])),
                          shape=(need.size, nv + 1)).tolil()
    energy[np.arange(need.size), nv] = problem.energy_kwh[need]
    blocks.append(sp.csr_array(energy))
    rhs.append(np.zeros(need.size))
    # Site: sum_i p_ik <= L_k.
    blocks.append(sp.csr_array((np.ones(nv), (step, cols)), shape=(steps, nv + 1)))
    rhs.append(problem.site_limit_kw.copy())
    # Every node and phase: sum_i A_ri p_ik <= b_rk.
    if problem.network is not None and problem.network.n_rows:
        a = sp.coo_array(problem.network.matrix)
        # For each nonzero (r, i) and each step k in EV i's window: row r*T + k, variable of (i, k).
        var = -np.ones((n, steps), dtype=np.int64)
        var[ev, step] = cols
        rr, cc, vv = [], [], []
        for r, i, v in zip(a.row, a.col, a.data, strict=True):
            ks = np.flatnonzero(mask[i])
            rr.append(r * steps + ks)
            cc.append(var[i, ks])
            vv.append(np.full(ks.size, v))
        m = problem.network.n_rows
        if rr:
            blocks.append(sp.csr_array((np.concatenate(vv), (np.concatenate(rr), np.concatenate(cc))),
                                       shape=(m * steps, nv + 1)))
            rhs.append(problem.network.limit_kw.reshape(-1))
    a_ub = sp.vstack(blocks, format="csr")
    c = np.zeros(nv + 1)
    c[nv] = -1.0
    bounds = np.column_stack([np.zeros(nv + 1), np.append(problem.max_power_kw[ev], 1.0)])
    res = linprog(c, A_ub=a_ub, b_ub=np.concatenate(rhs), bounds=bounds, method="highs")
    if res.status != 0:
        raise ValueError(f"independent LP failed: {res.message}")
    power = np.zeros((n, steps))
    power[ev, step] = res.x[:nv]
    return float(res.x[nv]), power
