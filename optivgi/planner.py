"""From EV sessions and site limits to a validated schedule.

:func:`build_problem` turns sessions into the vectorised :class:`~optivgi.algorithms.Problem`;
:func:`plan` runs an algorithm on it, checks the result with the shared validator and, when the
algorithm fails or breaks a rule, falls back to ``equal-share`` for that call so a safe schedule
always comes out.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from optivgi.algorithms.base import Algorithm, FloatArray, Problem
from optivgi.algorithms.validate import validate_schedule
from optivgi.errors import ScheduleValidationError
from optivgi.models.ev import EV, to_utc
from optivgi.models.schedule import PowerSchedule
from optivgi.models.site import SiteConstraints
from optivgi.topology import Topology

__all__ = ["build_problem", "plan", "shift_schedule", "step_window"]

logger = logging.getLogger(__name__)


def step_window(
    arrival: datetime, departure: datetime, now: datetime, resolution_s: int, n_steps: int
) -> tuple[int, int]:
    """Steps ``[first, end)`` whose start lies in ``[arrival, departure)``, clipped to the horizon."""
    a = (to_utc(arrival) - now).total_seconds() / resolution_s
    d = (to_utc(departure) - now).total_seconds() / resolution_s
    first = min(max(math.ceil(a - 1e-9), 0), n_steps)
    end = min(max(math.ceil(d - 1e-9), 0), n_steps)
    return first, max(end, first)


def build_problem(
    evs: Sequence[EV],
    site: SiteConstraints,
    now: datetime,
    *,
    resolution_s: int = 60,
    n_steps: int = 480,
    topology: Topology | None = None,
    voltage: float | None = None,
) -> Problem:
    """Vectorise ``evs`` and ``site`` into a :class:`Problem` starting at ``now``.

    With a ``topology``, the problem carries its node and phase limits
    (:attr:`Problem.network`) for the EVs' connectors, amps converted at ``voltage`` (default:
    the topology's); an EV on a connector the tree does not have is counted at the site, on
    every phase.

    Raises:
        ValueError: two sessions share an ``ev_id``.
    """
    now = to_utc(now)
    ids = [str(ev.ev_id) for ev in evs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"'ev_id' must be unique, got duplicates {dup}")
    # A connected EV may charge from step 0 even if its arrival stamp is a moment after `now`.
    windows = [step_window(min(ev.arrival_time, now) if ev.active else ev.arrival_time, ev.departure_time, now,
                           resolution_s, n_steps) for ev in evs]
    return Problem(
        ids=ids,
        start=now,
        resolution_s=resolution_s,
        site_limit_kw=site.limit_series(n_steps),
        energy_kwh=[ev.energy_kwh for ev in evs],
        min_power_kw=[ev.min_power_kw for ev in evs],
        max_power_kw=[ev.max_power_kw for ev in evs],
        first_step=[w[0] for w in windows] or np.zeros(0, dtype=np.int64),
        end_step=[w[1] for w in windows] or np.zeros(0, dtype=np.int64),
        price_per_kwh=site.price_series(n_steps),
        network=None if topology is None else topology.network(
            [(str(ev.station_id), ev.connector_id) for ev in evs], n_steps, voltage=voltage),
        # None when nothing was delivered yet, so sub-problems built with attrs.evolve stay valid.
        delivered_kwh=[ev.delivered_kwh for ev in evs] if any(ev.delivered_kwh > 0 for ev in evs) else None,
    )


def _fit_network(problem: Problem, algorithm: Algorithm, power: FloatArray) -> FloatArray:
    """``power`` scaled into the site tree when ``algorithm`` does not honour it itself."""
    if problem.network is None or algorithm.honours_network or problem.n_evs == 0:
        return power
    fitted = problem.network.fit(np.asarray(power, dtype=np.float64), np.ones(problem.n_evs, dtype=bool))
    # Scaled below an EV's minimum, a power cannot be regulated: pause that EV instead.
    fitted[(fitted > 0) & (fitted < problem.min_power_kw[:, None])] = 0.0
    return fitted


def shift_schedule(previous: PowerSchedule, problem: Problem) -> FloatArray:
    """``previous`` moved onto ``problem``'s steps, for the EVs it planned.

    Row ``i`` gets ``previous``'s powers for EV ``problem.ids[i]`` from the step that starts at
    ``problem.start`` on (0 past its end and for EVs it did not plan), clipped to the EV's window
    and max power, and cut once the EV's remaining need is in (the step that completes it is
    kept). Nothing is validated here.

    Raises:
        ValueError: the step lengths differ or ``problem`` starts off ``previous``'s step grid.
    """
    if previous.resolution_s != problem.resolution_s:
        raise ValueError(f"step lengths differ ({previous.resolution_s} s vs {problem.resolution_s} s)")
    offset_s = (problem.start - previous.start).total_seconds()
    if offset_s < 0 or offset_s % problem.resolution_s:
        raise ValueError(f"the plan starts {offset_s:g} s off the previous plan's step grid")
    shift = int(offset_s // problem.resolution_s)
    out = problem.zeros()
    index = {ev_id: i for i, ev_id in enumerate(previous.ev_ids)}
    width = max(0, min(problem.n_steps, previous.n_steps - shift))
    for row, ev_id in enumerate(problem.ids):
        i = index.get(ev_id)
        if i is not None and width:
            out[row, :width] = previous.power_kw[i, shift:shift + width]
    out = np.minimum(out, problem.max_power_kw[:, None]) * problem.window_mask()
    before = np.cumsum(out, axis=1) * problem.step_hours - out * problem.step_hours
    out[before >= problem.energy_kwh[:, None]] = 0.0
    return out


def _from_previous(problem: Problem, previous: PowerSchedule, fallback: Algorithm) -> FloatArray:
    """The previous plan shifted, with ``fallback`` planning the others in the headroom it leaves."""
    power = shift_schedule(previous, problem)
    planned = np.isin(np.asarray(problem.ids, dtype=object), np.asarray(previous.ev_ids, dtype=object))
    if (~planned).any():
        headroom = np.maximum(problem.site_limit_kw - power[planned].sum(axis=0), 0.0)
        network = None if problem.network is None else problem.network.reserve(power[planned], planned)
        sub = problem.select(~planned, headroom, network)
        power[~planned] = validate_schedule(sub, _fit_network(sub, fallback, fallback.solve(sub)))
    return validate_schedule(problem, power)


def plan(problem: Problem, algorithm: Algorithm, *, fallback: Algorithm | None = None,
         previous: PowerSchedule | None = None) -> PowerSchedule:
    """Solve ``problem`` with ``algorithm`` and return a schedule that passed the validator.

    When the algorithm raises, or its schedule breaks a rule, the error is logged and, in this
    order, ``previous`` (the last cycle's schedule, shifted onto this cycle's steps by
    :func:`shift_schedule`; EVs it did not plan are planned by ``fallback`` in the headroom it
    leaves) or ``fallback`` (default: ``equal-share``) is used instead; the returned schedule's
    ``note`` says why. When the algorithm sets a ``last_note`` attribute (``lp`` does when its
    time budget ran out and it used the best plan found), the note carries it too. An error of
    the fallback itself propagates: it is a bug, never a reason to send an unchecked schedule.
    """
    t0 = time.perf_counter()
    try:
        power = algorithm.solve(problem)
        power = validate_schedule(problem, _fit_network(problem, algorithm, power))
        note = getattr(algorithm, "last_note", None)
        return PowerSchedule(problem.ids, power, problem.start, problem.resolution_s, algorithm.name,
                             time.perf_counter() - t0, note=note if isinstance(note, str) else "")
    except Exception as exc:  # any failure of a plugin algorithm falls back; the fallback must not
        if fallback is None:
            from optivgi.algorithms.equal_share import EqualShareAlgorithm

            fallback = EqualShareAlgorithm()
        if fallback.name == algorithm.name:
            raise
        level = logging.ERROR if isinstance(exc, ScheduleValidationError) else logging.WARNING
        if previous is not None:
            try:
                power = _from_previous(problem, previous, fallback)
            except (ValueError, ScheduleValidationError) as prev_exc:
                logger.warning("previous plan not usable (%s)", prev_exc)
            else:
                logger.log(level, "algorithm %r failed (%s: %s); using its previous plan from %s, shifted",
                           algorithm.name, type(exc).__name__, exc, previous.start.isoformat())
                return PowerSchedule(problem.ids, power, problem.start, problem.resolution_s, previous.algorithm,
                                     time.perf_counter() - t0,
                                     note=f"{algorithm.name} failed: {exc}; previous plan from "
                                          f"{previous.start.isoformat()} shifted and re-validated")
        logger.log(level, "algorithm %r failed (%s: %s); using %r for this cycle",
                   algorithm.name, type(exc).__name__, exc, fallback.name)
        power = validate_schedule(problem, _fit_network(problem, fallback, fallback.solve(problem)))
        return PowerSchedule(problem.ids, power, problem.start, problem.resolution_s, fallback.name,
                             time.perf_counter() - t0, note=f"{algorithm.name} failed: {exc}")
