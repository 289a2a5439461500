"""``lp``: the default algorithm, one linear program with a strict order of objectives.

What it optimises, in strict priority:

1. the worst fraction of a session's total need, ``min_i (D_i + d_i) / (D_i + E_i)``, with ``D_i``
   the energy the session already received (``problem.delivered_kwh``), ``d_i`` what it is planned
   and ``E_i`` what it still needs, over the EVs that need energy and can receive some (a step in
   the window where both ``max_power_kw`` and the site limit are above 0). Counting ``D_i`` gives
   the planner a memory: re-planned every minute, an EV that got less earlier is favoured now,
   so a closed loop ends where one plan over the whole day would. An EV that can receive nothing
   keeps its fraction under every schedule, so leaving it out changes nothing at this level;
2. the total delivered energy ``sum_i d_i`` with ``d_i <= E_i`` (energy beyond need counts for
   nothing, so none is planned);
3. the energy cost ``sum_k price_k * load_k`` when ``problem.price_per_kwh`` is given;
4. charging early (more load in earlier blocks);
5. inside the first block, the first step delivers as much of the block's energy as the site
   and the cars allow, split max-min fairly on the sessions' totals (see "The first step").

Blocks
    Steps are grouped into *blocks*: maximal runs of steps in which no EV arrives or leaves and
    neither the site limit nor the price changes. Without minimum powers the problem is the same
    on blocks as on steps: a step schedule averaged over each block is a feasible block schedule
    with the same energies, loads and costs, and a block schedule can be laid out on the steps
    (see "Inside a block"). The model has one variable per (EV, block) pair inside the EV's
    window: ``y_j`` [kWh], the energy EV ``ev[j]`` gets in block ``blk[j]`` (``C_b`` is the block's
    limit [kW], ``len_b`` its steps, ``h`` the step length [h], ``E_i`` the need [kWh]).

Variables
    one flat ``cp.Variable(nnz + 1)``: the ``y_j`` with bounds
    ``0 <= y_j <= min(min(max_i, C_b) * len_b * h, E_i)`` and ``t`` in ``[0, 1]``; the bounds go to
    HiGHS as column bounds, not as rows.

Constraints (sparse incidence matrices stacked into one ``A @ [y; t] <= b``)
    site:     ``sum_{j in b} y_j <= C_b * len_b * h``                (one row per block)
    need:     ``sum_{j of i} y_j <= E_i``                            (one row per EV)
    fairness: ``N_i * t - sum_{j of i} y_j <= D_i``                  (one row per EV; ``N_i = D_i + E_i``)

Objective (maximise) ``W1 * t + sum_j (1 - g_blk(j)) * y_j``
    with ``g_b = (p_b + delta * c_b) / (2 s)``: ``c_b`` the block's mid time as a fraction of the
    horizon (in ``(0, 1)``), ``p_b`` its price (0 without prices), ``delta = w * gap / 2`` (``gap``
    the smallest difference between two distinct prices, 1 without; ``w`` the
    ``earliness_weight`` option), ``s = max_b |p_b + delta * c_b|`` so that ``|g_b| <= 1/2``, and
    ``W1 = sum(N) * (2 (g_max - g_min) + 1)``.

Why these weights give the strict order (the relaxed problem is a flow: source -> EV (capacity
``E_i``, lower bound ``t * N_i - D_i``) -> block (capacity of ``y_j``) -> sink (capacity of the site
row); cost and earliness depend only on the block loads):

* energy over cost and earliness: below the maximum total there is an augmenting path; it never
  lowers an EV's delivery (a simple path leaves the source once), so ``t`` holds, and it gains
  ``1 - g_b >= 1/2`` per kWh. So every optimum delivers the maximum.
* fairness over the rest: below the max-min optimum ``t*``, the difference to a max-min optimal
  flow splits into conformal paths and cycles; the right share of those that start at the EVs at
  the minimum raises ``t`` by ``mu`` with at most ``mu * sum(E)`` kWh of flow, and each kWh either
  reaches the sink (gain ``1 - g_b > 0``), returns to the source without touching the sink (block
  loads unchanged: gain 0) or moves load between two blocks (loss at most ``g_max - g_min``).
  ``W1`` above makes every such move strictly better, so every optimum has ``t = t*``. Levels 1
  and 2 never compete: augmenting a max-min optimum to the maximum total keeps ``t``.
* cost over earliness: two schedules with the same ``t`` and total differ by cycles that each move
  load between two blocks; a cycle that changes the cost changes it by at least ``gap`` per kWh
  and the earliness term by less than ``delta <= gap / 2``.

So one LP solve gives the lexicographic optimum of levels 1-4 (the tests check levels 1-3 against
sequential solves). HiGHS runs dual simplex with presolve and scaling off: the matrix holds only
ones and the ``N_i``, and scaling made fleet-1000 five times slower.

Matrix form
    The model is built with numpy as one CSC matrix and handed to HiGHS directly
    (:mod:`optivgi.algorithms.highs`): no per-element expressions and no modelling layer, so the
    build is a few vectorised passes over the ``nnz`` pairs and memory is linear in them (at
    5000 EVs x 480 steps, about a million pairs). ``backend="cvxpy"`` passes the same matrices
    through cvxpy instead, for cross-checks; it is several times slower at scale.

    Without prices HiGHS first solves the LP restricted to each EV's earliest blocks (until they
    could take 1.2 times its need) and then adds every pair whose reduced cost under the row duals
    is positive, until none is (column generation): the optimum of the whole LP, usually from the
    first, smaller solve. The minimum-power repair depends on which optimal vertex comes back;
    when the repaired plan of that vertex loses fairness, the whole LP is solved and the fairer
    repaired plan kept.

The first step
    With departures unknown (every connected EV planned to the horizon end) the whole horizon is
    often one block, so how a block's energy is laid out decides what the cars get now, and a
    closed loop only ever applies the first step. Step 0 is therefore laid out on its own: each EV
    of the first block gets at least what it must have now for the rest of its block energy to
    fit at its max power in the block's remaining steps (``u_j = max(0, y_j / h - (len - 1) max_i)``);
    when all of them fit, at least its minimum; on top of that the step's limit is shared by
    water-filling on the totals each EV would reach if it held its power through the block,
    ``(D_i + len h p_i) / N_i``, lowest first, each EV capped at its max and at its block energy.
    So the step is filled whenever the block's energies allow and no energy is held back for a
    departure time nobody knows; over a short block a car that got less so far comes first, over
    a long one (departures unknown) the powers are nearly equal, so a car that leaves early is not
    starved for the late arrivals. What is left of each block
    energy fits flat in the remaining steps (each ``<= max * (len - 1) * h`` and their sum
    ``<= C * (len - 1) * h``, because the step gave either the whole limit or every EV its cap), so
    the rest of the block is laid out as every other block.

Inside a block
    Each EV's flat rate ``f_j = y_j / (len_b * h)`` is multiplied by the block's common factor
    ``C_b / sum_b f`` (>= 1) and capped at its maximum; the EV draws that rate from the block's
    first step until its energy is in (last step partial). A block's rates add up to at most
    ``C_b`` and each is at least ``f_j``, so everything fits. Six EVs that need the whole block
    get ``C_b / 6`` each in every step; a lone EV with time to spare charges at its maximum first.

Minimum powers ("0 or at least min", not convex)
    The LP ignores them; a repair makes the schedule valid and never fails. EVs whose relaxed
    powers are all 0 or within ``[min, max]`` (every EV with ``min_power_kw == 0`` among them) keep
    their powers. The others (set ``R``) are replanned step by step in time order, vectorised over
    ``R``, inside the headroom ``H_k`` the kept EVs leave (``C_k`` minus their load):

    * each EV of ``R`` carries a backlog ``a_i`` [kWh], energy planned but not yet delivered
      (negative when ahead), and asks ``u_i = plan_ik + a_i / h``, clipped to ``[0, max_i]`` and to
      its remaining need;
    * EVs asking at least ``min_i / 2`` are *due*. ``H_k`` is filled in this order, each while it
      fits: due EVs at their minimum, then up to ``max(min_i, plan_ik)``; EVs asking less than
      half a minimum but more than 0 at their minimum (they run ahead of plan, using room that
      would stay empty), most owed first; due EVs up to ``u_i`` (catching up). A raising stage
      that does not fit whole is shared in proportion to what is asked. So a sub-minimum plan
      becomes full-minimum pulses with the same average;
    * when even the due minimums do not fit, the due EVs owed most (``a_i + plan_ik * h``, ties to
      the lower row) are kept while their minimums fit and the rest pause. A paused EV's backlog
      grows, so it comes first later: when the minimums cannot all fit under the limit, the EVs
      take turns and share the energy over time, and the site limit is never exceeded.

    The limit holds in every step by construction (kept EVs: the LP's site row; ``R``: ``H_k``);
    round-off above it is taken off the EV with most power above its minimum. Energy is lost only
    where headroom is too small to pulse a sub-minimum plan before departure; the tests bound
    that loss at 0.1 % of the relaxed optimum on every scenario.

Failures and the time budget
    HiGHS gets ``time_limit`` = what is left of ``time_limit_s`` after the model is built. When it
    stops at that limit with a point, that point (clipped to the bounds and scaled into every row,
    so it is feasible) is used: the schedule is valid but not proven optimal, and
    :attr:`LPAlgorithm.last_note` says so (the planner puts it in the schedule's note and the
    cycle log). A solver error, no feasible point, any other status, or a budget used up while
    building raises :class:`~optivgi.errors.InfeasibleScheduleError` naming the status; the
    planner then uses the previous cycle's plan (shifted) or its fallback for that cycle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from optivgi.algorithms.base import Algorithm, FloatArray, Problem
from optivgi.algorithms.highs import LPResult, new_highs, solve_lp
from optivgi.algorithms.lp_layout import Index, fill_first_step, layout, worst_share
from optivgi.algorithms.repair import ZERO_KW, fit_site_limit, repair_min_power
from optivgi.errors import InfeasibleScheduleError

__all__ = ["LPAlgorithm", "repair_min_power"]

logger = logging.getLogger(__name__)

_BACKENDS = ("highs", "cvxpy")

#: Column generation starts from each EV's best blocks until they could take this many times its need.
_START_NEED_FACTOR = 1.2



class LPAlgorithm(Algorithm):
    """Max-min fair (on session totals), energy-maximal, cost- and time-aware LP on HiGHS.

    Args:
        time_limit_s: wall-time budget for building and solving [s]; see "Failures and the time
            budget" in the module doc.
        earliness_weight: in ``[0, 1]``: share of the largest provably safe weight on charging
            early (level 4). 0 turns the tie-break off.
        backend: ``"highs"`` (HiGHS called directly, the default) or ``"cvxpy"`` (the same
            matrices through cvxpy's HiGHS interface; slower, for cross-checks).
        canon_backend: cvxpy canonicalisation backend for ``backend="cvxpy"``.
        highs_options: extra HiGHS options, applied last (they override the defaults
            ``presolve="off"``, ``simplex_scale_strategy=0``).
        column_generation: start HiGHS from each EV's earliest blocks and add the others only
            when their reduced cost says they help (see "Matrix form"); the optimum is the same.
        verbose: let HiGHS (and cvxpy) print their logs.

    Raises:
        ValueError: an option out of range.
    """

    name: ClassVar[str] = "lp"

    def __init__(
        self,
        *,
        time_limit_s: float = 30.0,
        earliness_weight: float = 1.0,
        backend: str = "highs",
        canon_backend: str = "SCIPY",
        highs_options: Mapping[str, Any] | None = None,
        column_generation: bool = True,
        verbose: bool = False,
    ) -> None:
        if not np.isfinite(time_limit_s) or time_limit_s < 0:
            raise ValueError(f"'time_limit_s' must be a finite number >= 0, got {time_limit_s!r}")
        if not 0.0 <= earliness_weight <= 1.0:
            raise ValueError(f"'earliness_weight' must lie in [0, 1], got {earliness_weight!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"'backend' must be one of {_BACKENDS}, got {backend!r}")
        self.time_limit_s = float(time_limit_s)
        self.earliness_weight = float(earliness_weight)
        self.backend = backend
        self.canon_backend = canon_backend
        self.highs_options: dict[str, Any] = dict(highs_options or {})
        self.column_generation = column_generation
        self.verbose = verbose
        #: Wall times of the last :meth:`solve` [s]: ``build``, ``solve`` (HiGHS call), ``highs``
        #: (HiGHS alone), ``layout``, ``repair``; for profiling.
        self.last_timings: dict[str, float] = {}
        #: Why the last schedule is not the proven optimum (the time budget ran out), else None.
        self.last_note: str | None = None

    def solve(self, problem: Problem) -> FloatArray:
        """Return the ``(n_evs, n_steps)`` schedule [kW]; see the module doc for the rules.

        Raises:
            InfeasibleScheduleError: HiGHS failed, ended without a feasible point, or the time
                budget ran out before it could start.
        """
        relaxed = self.solve_relaxed(problem)
        t1 = time.perf_counter()
        power = self._repair(problem, relaxed)
        self.last_timings["repair"] = time.perf_counter() - t1
        rows = (problem.energy_kwh > 0) & (relaxed.sum(axis=1) > 0)
        lost = worst_share(problem, power, rows) < worst_share(problem, relaxed, rows) - 1e-4
        if self.last_timings.get("rounds", 0.0) > 0 and lost:
            # The repair of minimum powers depends on which optimal vertex HiGHS returns; when the
            # one column generation found loses fairness there, the whole LP's vertex is tried too.
            timings, note = self.last_timings, self.last_note
            self.column_generation = False
            try:
                other = self._repair(problem, self.solve_relaxed(problem))
            finally:
                self.column_generation = True
            if worst_share(problem, other, rows) > worst_share(problem, power, rows):
                power = other
            else:
                self.last_timings, self.last_note = timings, note
        return power

    @staticmethod
    def _repair(problem: Problem, relaxed: FloatArray) -> FloatArray:
        return fill_first_step(problem, repair_min_power(problem, relaxed), relaxed[:, 0] if relaxed.size else None)

    # -- relaxed LP ----------------------------------------------------------------------------

    def solve_relaxed(self, problem: Problem) -> FloatArray:
        """The LP optimum [kW] of ``problem`` with minimum powers ignored (``0 <= power <= max``).

        Respects windows, maximum powers and the site limit exactly; :meth:`solve` repairs it.

        Raises:
            InfeasibleScheduleError: as :meth:`solve`.
        """
        t0 = time.perf_counter()
        self.last_timings = {}
        self.last_note = None
        n, n_steps, h = problem.n_evs, problem.n_steps, problem.step_hours
        power = problem.zeros()
        if n == 0 or n_steps == 0:
            return power
        limit = problem.site_limit_kw
        price = problem.price_per_kwh
        first, end = problem.first_step, problem.end_step

        # Block boundaries: window ends and every step where the limit or the price changes.
        cuts = [np.array([0, n_steps]), first, end, np.flatnonzero(np.diff(limit)) + 1]
        if price is not None:
            cuts.append(np.flatnonzero(np.diff(price)) + 1)
        bounds = np.unique(np.concatenate(cuts))
        start_b, blen = bounds[:-1], np.diff(bounds)
        n_blocks = blen.size
        cap_b = limit[start_b] * blen * h  # site energy per block [kWh]

        energy = problem.energy_kwh
        first_b = np.searchsorted(bounds, first)
        count = np.where(energy > 0, np.maximum(np.searchsorted(bounds, end) - first_b, 0), 0)
        ev = np.repeat(np.arange(n, dtype=np.int32), count)
        blk = (np.arange(ev.size, dtype=np.int32)
               - np.repeat((np.cumsum(count) - count - first_b).astype(np.int32), count))
        upper = np.minimum(np.minimum(problem.max_power_kw[ev], limit[start_b[blk]]) * blen[blk] * h,
                           energy[ev])
        keep = upper > 0
        if not keep.all():
            ev, blk, upper = ev[keep], blk[keep], upper[keep]
        nnz = ev.size
        if nnz == 0:
            return power
        # The EVs that can receive energy: the fairness level is taken over these.
        fair = np.flatnonzero(np.bincount(ev, minlength=n) > 0)
        done = problem.delivered
        total_need = done + energy

        # Per-kWh weight of each block: price, then earliness (see the module doc for the bounds).
        mid = (start_b + blen / 2.0) / n_steps
        p_b = np.zeros(n_blocks) if price is None else price[start_b]
        used = np.zeros(n_blocks, dtype=bool)
        used[blk] = True
        distinct = np.unique(p_b[used])
        gap = float(np.min(np.diff(distinct))) if distinct.size > 1 else 1.0
        delta = self.earliness_weight * 0.5 * gap
        g_raw = p_b + delta * mid
        span = float(np.max(np.abs(g_raw[used])))
        g = g_raw / (2.0 * span) if span > 0 else np.zeros(n_blocks)
        g_used = g[used]
        w_t = float(total_need[fair].sum()) * (2.0 * float(g_used.max() - g_used.min()) + 1.0)
        cost = np.append(1.0 - g[blk], w_t)

        # Columns [y; t], rows [site per block; need per EV; fairness per EV], built as CSC:
        # column j holds (blk_j, 1), (need row of ev_j, 1), (fairness row of ev_j, -1), already
        # sorted by row; column t holds N_i in the fairness rows.
        n_fair = fair.size
        row_of = np.full(n, -1, dtype=np.int64)
        row_of[fair] = np.arange(n_fair)
        er = row_of[ev]
        indices = np.empty(3 * nnz + n_fair, dtype=np.int32)
        indices[0:3 * nnz:3] = blk
        indices[1:3 * nnz:3] = n_blocks + er
        indices[2:3 * nnz:3] = n_blocks + n_fair + er
        indices[3 * nnz:] = np.arange(n_blocks + n_fair, n_blocks + 2 * n_fair)
        data = np.empty(3 * nnz + n_fair)
        data[0:3 * nnz:3] = 1.0
        data[1:3 * nnz:3] = 1.0
        data[2:3 * nnz:3] = -1.0
        data[3 * nnz:] = total_need[fair]
        indptr = np.append(np.arange(0, 3 * nnz + 1, 3), 3 * nnz + n_fair).astype(np.int32)
        a_mat = sp.csc_matrix((data, indices, indptr), shape=(n_blocks + 2 * n_fair, nnz + 1))
        rhs = np.concatenate([cap_b, energy[fair], done[fair]])
        col_upper = np.append(upper, 1.0)

        built = time.perf_counter()
        self.last_timings["build"] = built - t0
        left = self.time_limit_s - (built - t0)
        if left <= 0:
            raise InfeasibleScheduleError(
                f"lp: time budget of {self.time_limit_s:g} s used up while building the model")
        options: dict[str, Any] = {"presolve": "off", "simplex_scale_strategy": 0, "time_limit": left}
        if self.verbose:
            options.update(output_flag=True, log_to_console=True)
        options.update(self.highs_options)
        if self.backend == "cvxpy":
            result = _solve_cvxpy(cost, a_mat, rhs, col_upper, options, self.canon_backend, self.verbose)
        else:
            # Column generation only pays when the first restricted solve is usually optimal
            # already: without prices, where the earliest blocks are the ones the optimum uses.
            start = None
            if self.column_generation and price is None:
                start = _start_columns(ev, cost[:nnz], upper, energy)
                if start.sum() > 0.9 * start.size:
                    start = None
            result = solve_lp(cost, a_mat, rhs, np.zeros(nnz + 1), col_upper, maximize=True, options=options,
                              start_columns=start)
            self.last_timings["rounds"] = float(result.rounds)
        solved = time.perf_counter()
        self.last_timings["solve"] = solved - built
        self.last_timings["highs"] = result.seconds
        if result.x is None:
            raise InfeasibleScheduleError(f"lp: HiGHS ended with status {result.status!r} and no solution")
        z = np.clip(result.x, 0.0, col_upper)
        if not result.optimal:
            if result.status != "Time limit reached":
                raise InfeasibleScheduleError(f"lp: HiGHS ended with status {result.status!r}")
            z = _make_feasible(z, a_mat, rhs, nnz)
            self.last_note = (f"lp: HiGHS stopped at its time limit after {solved - t0:.2f} s (budget "
                              f"{self.time_limit_s:g} s); used the best plan it had found, made feasible "
                              "(not proven optimal)")
            logger.warning("%s", self.last_note)
        y = z[:nnz]
        logger.debug("lp: %d EVs, %d blocks, %d variables, t=%.6f, %.4f s", n, n_blocks, nnz, float(z[nnz]),
                     solved - t0)
        power = layout(problem, y, ev, blk, start_b, blen)
        power[power < ZERO_KW] = 0.0
        self.last_timings["layout"] = time.perf_counter() - solved
        return fit_site_limit(power, limit, np.zeros(n), problem.max_power_kw)


def _start_columns(ev: Index, weight: FloatArray, upper: FloatArray, energy: FloatArray) -> npt.NDArray[np.bool_]:
    """Columns HiGHS starts from: each EV's best-paid blocks, until they could take twice its need.

    ``weight`` is each pair's objective weight per kWh (earliness and price); ``t`` (the last
    column) is always in.
    """
    order = np.lexsort((-weight, ev))
    up = upper[order]
    ev_o = ev[order]
    cum = np.cumsum(up)
    start = np.flatnonzero(np.r_[True, ev_o[1:] != ev_o[:-1]])
    base = np.repeat(cum[start] - up[start], np.diff(np.r_[start, ev_o.size]))
    chosen = np.zeros(ev.size + 1, dtype=bool)
    chosen[order[cum - up - base < _START_NEED_FACTOR * energy[ev_o]]] = True
    chosen[-1] = True
    return chosen


def _make_feasible(z: FloatArray, a_mat: sp.csc_matrix, rhs: FloatArray, nnz: int) -> FloatArray:
    """Scale a point that may break some rows (an interrupted solve) into one that breaks none.

    Site and need rows have only non-negative coefficients on ``y``: scaling the ``y`` of an
    over-full row down fixes it and breaks no other. Then ``t`` is lowered to what the ``y``
    give every EV.
    """
    n_fair = int(np.count_nonzero(a_mat[:, nnz].toarray()))
    n_rows = a_mat.shape[0]
    caps = n_rows - n_fair
    y = z[:nnz].copy()
    a_y = a_mat[:caps, :nnz].tocsr()
    for _ in range(2):
        load = a_y @ y
        ratio = np.where(load > rhs[:caps], rhs[:caps] / np.where(load > 0, load, 1.0), 1.0)
        worst = np.ones(nnz)
        coo = a_y.tocoo()
        np.minimum.at(worst, coo.col, ratio[coo.row])
        y *= worst * (1.0 - 1e-12)
    fair_rows = a_mat[caps:, :].tocsr()
    need = fair_rows[:, nnz].toarray().ravel()
    got = -(fair_rows[:, :nnz] @ y)  # sum of y per EV
    t = float(np.min((rhs[caps:] + got) / need)) if n_fair else 0.0
    return np.append(y, max(0.0, min(1.0, t)))


def _solve_cvxpy(cost: FloatArray, a_mat: sp.csc_matrix, rhs: FloatArray, col_upper: FloatArray,
                 options: dict[str, Any], canon_backend: str, verbose: bool) -> LPResult:
    """The same LP through cvxpy (for cross-checks); never raises for a solver failure."""
    import cvxpy as cp

    new_highs()  # HiGHS's one-off banner goes to /dev/null before cvxpy makes its own solver
    z = cp.Variable(cost.size, bounds=[np.zeros(cost.size), col_upper])
    prob = cp.Problem(cp.Maximize(cost @ z), [a_mat @ z <= rhs])
    opts = {k: v for k, v in options.items() if k not in ("output_flag", "log_to_console")}
    try:
        prob.solve(solver=cp.HIGHS, ignore_dpp=True, canon_backend=canon_backend,  # type: ignore[no-untyped-call]
                   verbose=verbose, highs_options=opts)
    except cp.error.SolverError as exc:
        return LPResult(f"solver error: {exc}", False, None, 0.0)
    x = None if z.value is None else np.asarray(z.value, dtype=np.float64)
    stats = prob.solver_stats
    seconds = float(stats.solve_time or 0.0) if stats is not None else 0.0
    return LPResult(str(prob.status), prob.status == cp.OPTIMAL, x, seconds)
