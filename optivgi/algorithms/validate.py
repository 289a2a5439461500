"""The one validator every schedule passes before anything is sent.

A violation here is a bug in an algorithm, never a reason to send a profile anyway: the caller
gets :class:`~optivgi.errors.ScheduleValidationError` and the scheduling loop falls back to a
safer algorithm for that cycle.
"""

from __future__ import annotations

import numpy as np

from optivgi.algorithms.base import FloatArray, Problem
from optivgi.errors import ScheduleValidationError
from optivgi.topology_network import scale_into

__all__ = ["TOLERANCE_KW", "validate_network", "validate_schedule"]

#: Absolute tolerance [kW] for solver round-off; far below any limit a charger can resolve.
TOLERANCE_KW = 1e-6
#: The widest tolerance accepted: 1 W. A wider one would let real overloads through, scaled silently.
MAX_TOLERANCE_KW = 1e-3


def validate_schedule(problem: Problem, power_kw: FloatArray, *, tol: float = TOLERANCE_KW) -> FloatArray:
    """Check ``power_kw`` against every hard rule of ``problem`` and return it cleaned.

    Rules: shape ``(n, T)``; finite; no power outside an EV's window; each power either 0 or in
    ``[min, max]``; the sum over EVs in each step at most the site limit. Values within ``tol`` of
    a bound are snapped onto it (solver round-off), so the returned array satisfies the rules
    exactly.

    ``tol`` is for round-off only: it must lie in ``[0, MAX_TOLERANCE_KW)``; a schedule over a
    bound by more than ``tol`` is refused, never scaled back.

    Raises:
        ScheduleValidationError: naming the rule, the EV or step and the values.
        ValueError: ``tol`` is negative, not finite, or not below :data:`MAX_TOLERANCE_KW`.
    """
    if not 0.0 <= tol < MAX_TOLERANCE_KW:
        raise ValueError(f"'tol' must be in [0, {MAX_TOLERANCE_KW}) kW (solver round-off only), got {tol!r}")
    power = np.asarray(power_kw, dtype=np.float64)
    expected = (problem.n_evs, problem.n_steps)
    if power.shape != expected:
        raise ScheduleValidationError(f"schedule shape must be {expected}, got {power.shape}")
    if problem.n_evs == 0:
        return power.copy()
    if not np.all(np.isfinite(power)):
        i, k = np.argwhere(~np.isfinite(power))[0]
        raise ScheduleValidationError(f"schedule has a non-finite power for EV {problem.ids[i]!r} at step {k}")
    power = power.copy()
    power[np.abs(power) <= tol] = 0.0
    if np.any(power < 0):
        i, k = np.argwhere(power < 0)[0]
        raise ScheduleValidationError(
            f"EV {problem.ids[i]!r} has negative power {power[i, k]:.6g} kW at step {k}"
        )
    outside = (power > 0) & ~problem.window_mask()
    if np.any(outside):
        i, k = np.argwhere(outside)[0]
        raise ScheduleValidationError(
            f"EV {problem.ids[i]!r} draws {power[i, k]:.6g} kW at step {k}, outside its window "
            f"[{problem.first_step[i]}, {problem.end_step[i]})"
        )
    pmax = problem.max_power_kw[:, None]
    pmin = problem.min_power_kw[:, None]
    power = np.where((power > pmax) & (power <= pmax + tol), pmax, power)
    power = np.where((power > 0) & (power < pmin) & (power >= pmin - tol), pmin, power)
    if np.any(power > pmax):
        i, k = np.argwhere(power > pmax)[0]
        raise ScheduleValidationError(
            f"EV {problem.ids[i]!r} draws {power[i, k]:.6g} kW at step {k}, above its max "
            f"{problem.max_power_kw[i]:.6g} kW"
        )
    below_min = (power > 0) & (power < pmin)
    if np.any(below_min):
        i, k = np.argwhere(below_min)[0]
        raise ScheduleValidationError(
            f"EV {problem.ids[i]!r} draws {power[i, k]:.6g} kW at step {k}, between 0 and its min "
            f"{problem.min_power_kw[i]:.6g} kW"
        )
    total = power.sum(axis=0)
    over = total > problem.site_limit_kw + tol
    if np.any(over):
        k = int(np.argmax(over))
        raise ScheduleValidationError(
            f"site draws {total[k]:.6g} kW at step {k}, above its limit {problem.site_limit_kw[k]:.6g} kW"
        )
    # Snap round-off above the limit down, proportionally, so the sum is exactly within it.
    slightly = total > problem.site_limit_kw
    if np.any(slightly):
        scale = np.ones_like(total)
        scale[slightly] = problem.site_limit_kw[slightly] / total[slightly]
        power = power * scale[None, :]
        # Scaling may nudge a power a hair under its min; such a power was within tol of it.
        power = np.where((power > 0) & (power < pmin), 0.0, power)
    if problem.network is not None:
        power = validate_network(problem, power, tol=tol)
    return power


def validate_network(problem: Problem, power_kw: FloatArray, *, tol: float = TOLERANCE_KW) -> FloatArray:
    """Check ``power_kw`` against every node and phase limit of ``problem.network`` and return it
    cleaned (round-off within ``tol`` above a limit is scaled away, as for the site limit).

    Raises:
        ScheduleValidationError: naming the node, the phase, the step and the values.
    """
    network = problem.network
    power = np.asarray(power_kw, dtype=np.float64)
    if network is None or network.n_rows == 0 or problem.n_evs == 0:
        return power
    violations = network.violations(power, tol_kw=tol, most=1)
    if violations:
        count = network.count_violations(power, tol_kw=tol)
        more = f" (and {count - 1} more)" if count > 1 else ""
        raise ScheduleValidationError(f"{violations[0]}{more}")
    load = network.loads(power)
    if not np.any(load > network.limit_kw):
        return power
    # Each EV takes the smallest factor of the rows it is on that are a hair over their limit.
    power = power * scale_into(network.matrix, load, network.limit_kw)
    return np.where((power > 0) & (power < problem.min_power_kw[:, None]), 0.0, power)
