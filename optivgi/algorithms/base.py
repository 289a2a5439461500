"""The planning problem every algorithm sees, and the algorithm interface.

An algorithm never sees a CSMS, a translation or a clock: it gets a :class:`Problem` (plain numpy
arrays, one entry per EV and per step) and returns a power matrix in kW. The same code therefore
runs on a scenario file, on the built-in simulator and on a live site.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import ClassVar

import attrs
import numpy as np
import numpy.typing as npt

from optivgi.arrays import FloatArray, IntArray
from optivgi.arrays import as_float as _as_float
from optivgi.arrays import as_ids as _as_ids
from optivgi.arrays import as_int as _as_int
from optivgi.topology_network import NetworkConstraints

__all__ = ["Algorithm", "FloatArray", "IntArray", "Problem"]

@attrs.frozen(eq=False)
class Problem:
    """A site's planning problem, vectorised: ``n`` EVs over ``T`` steps.

    Step ``k`` covers ``[start + k*resolution_s, start + (k+1)*resolution_s)``. EV ``i`` may draw
    power only in steps ``first_step[i] <= k < end_step[i]`` (its window; empty when
    ``end_step[i] <= first_step[i]``), and in such a step it draws either exactly 0 kW or a power in
    ``[min_power_kw[i], max_power_kw[i]]``. In every step the sum over EVs must not exceed
    ``site_limit_kw[k]``.

    Attributes:
        ids: EV identifiers, one per row of the schedule.
        start: start of step 0 (timezone-aware UTC).
        resolution_s: step length [s].
        site_limit_kw: ``(T,)`` site limit per step [kW], >= 0.
        energy_kwh: ``(n,)`` energy still needed by departure [kWh], >= 0.
        min_power_kw: ``(n,)`` least power when charging [kW], >= 0.
        max_power_kw: ``(n,)`` most power [kW], >= ``min_power_kw``.
        first_step: ``(n,)`` first step of the window (inclusive), in ``[0, T]``.
        end_step: ``(n,)`` end of the window (exclusive), in ``[0, T]``.
        price_per_kwh: ``(T,)`` energy price per step, or ``None``.
        network: the site tree's limits as sparse constraints on the rows (one per node and
            phase; see :class:`~optivgi.topology.NetworkConstraints`), or ``None`` for a flat site.
            ``network.matrix @ power <= network.limit_kw`` must hold in every step.
        delivered_kwh: ``(n,)`` energy already delivered in each session before ``start``
            [kWh], >= 0; ``None`` (the default) means all zeros. ``delivered_kwh + energy_kwh``
            is the session's total need, which fairness may be measured against.
    """

    ids: tuple[str, ...] = attrs.field(converter=_as_ids)
    start: datetime
    resolution_s: int
    site_limit_kw: FloatArray = attrs.field(converter=_as_float)
    energy_kwh: FloatArray = attrs.field(converter=_as_float)
    min_power_kw: FloatArray = attrs.field(converter=_as_float)
    max_power_kw: FloatArray = attrs.field(converter=_as_float)
    first_step: IntArray = attrs.field(converter=_as_int)
    end_step: IntArray = attrs.field(converter=_as_int)
    price_per_kwh: FloatArray | None = attrs.field(
        default=None, converter=attrs.converters.optional(_as_float)
    )
    network: NetworkConstraints | None = None
    delivered_kwh: FloatArray | None = attrs.field(
        default=None, converter=attrs.converters.optional(_as_float)
    )

    def __attrs_post_init__(self) -> None:
        n, t = len(self.ids), self.site_limit_kw.shape[0] if self.site_limit_kw.ndim == 1 else -1
        if self.resolution_s <= 0:
            raise ValueError(f"'resolution_s' must be > 0, got {self.resolution_s}")
        if self.site_limit_kw.ndim != 1:
            raise ValueError("'site_limit_kw' must be one-dimensional (one limit per step)")
        for name in ("energy_kwh", "min_power_kw", "max_power_kw", "first_step", "end_step"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"'{name}' must have shape ({n},), got {arr.shape}")
        for name in ("site_limit_kw", "energy_kwh", "min_power_kw", "max_power_kw"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"'{name}' must be finite and >= 0")
        if np.any(self.max_power_kw < self.min_power_kw):
            raise ValueError("'max_power_kw' must be >= 'min_power_kw' for every EV")
        steps = np.concatenate([self.first_step, self.end_step])
        if np.any(steps < 0) or np.any(steps > t):
            raise ValueError(f"'first_step'/'end_step' must lie in [0, {t}]")
        if self.price_per_kwh is not None and self.price_per_kwh.shape != (t,):
            raise ValueError(f"'price_per_kwh' must have shape ({t},), got {self.price_per_kwh.shape}")
        if self.delivered_kwh is not None:
            if self.delivered_kwh.shape != (n,):
                raise ValueError(f"'delivered_kwh' must have shape ({n},), got {self.delivered_kwh.shape}")
            if not np.all(np.isfinite(self.delivered_kwh)) or np.any(self.delivered_kwh < 0):
                raise ValueError("'delivered_kwh' must be finite and >= 0")
        if len(set(self.ids)) != n:
            raise ValueError("'ids' must be unique")
        if self.network is not None and (self.network.matrix.shape[1] != n or self.network.limit_kw.shape[1:] != (t,)):
            raise ValueError(f"'network' must have {n} columns and {t} steps")

    @property
    def n_evs(self) -> int:
        """Number of EVs (rows of the schedule)."""
        return len(self.ids)

    @property
    def n_steps(self) -> int:
        """Number of steps (columns of the schedule)."""
        return int(self.site_limit_kw.shape[0])

    @property
    def step_hours(self) -> float:
        """Step length [h]: energy [kWh] = power [kW] * ``step_hours``."""
        return self.resolution_s / 3600.0

    @property
    def delivered(self) -> FloatArray:
        """``(n,)`` energy already delivered per session [kWh] (zeros when not given)."""
        return np.zeros(self.n_evs) if self.delivered_kwh is None else self.delivered_kwh

    def window_mask(self) -> npt.NDArray[np.bool_]:
        """``(n, T)`` boolean mask, True where an EV may draw power."""
        k = np.arange(self.n_steps)
        return (k[None, :] >= self.first_step[:, None]) & (k[None, :] < self.end_step[:, None])

    def select(
        self,
        rows: npt.NDArray[np.bool_],
        site_limit_kw: FloatArray | None = None,
        network: NetworkConstraints | None = None,
    ) -> Problem:
        """The sub-problem of the EVs where ``rows`` is True, optionally with other site limits
        (and other network limits, e.g. :meth:`NetworkConstraints.reserve`'s)."""
        if network is None and self.network is not None:
            network = self.network.select(rows)
        return attrs.evolve(
            self,
            ids=[i for i, keep in zip(self.ids, rows, strict=True) if keep],
            site_limit_kw=self.site_limit_kw if site_limit_kw is None else site_limit_kw,
            energy_kwh=self.energy_kwh[rows],
            min_power_kw=self.min_power_kw[rows],
            max_power_kw=self.max_power_kw[rows],
            first_step=self.first_step[rows],
            end_step=self.end_step[rows],
            network=network,
            delivered_kwh=None if self.delivered_kwh is None else self.delivered_kwh[rows],
        )

    def zeros(self) -> FloatArray:
        """An all-zero ``(n, T)`` schedule."""
        return np.zeros((self.n_evs, self.n_steps))


class Algorithm(abc.ABC):
    """A scheduling algorithm: turns a :class:`Problem` into a power matrix.

    Subclasses set :attr:`name` and implement :meth:`solve`. They are registered under the
    ``optivgi.algorithms`` entry-point group and instantiated without arguments (options have
    defaults). Whatever :meth:`solve` returns is checked by
    :func:`optivgi.algorithms.validate.validate_schedule` before it is used; an algorithm should
    nevertheless honour every limit itself.
    """

    name: ClassVar[str] = "unnamed"
    #: True when :meth:`solve` honours :attr:`Problem.network` (every node and phase of the site
    #: tree). Otherwise the planner scales the schedule into the tree, EV by EV, before it is
    #: validated: safe, but neither fair nor optimal across the tree.
    honours_network: ClassVar[bool] = False

    @abc.abstractmethod
    def solve(self, problem: Problem) -> FloatArray:
        """Return the ``(n_evs, n_steps)`` power schedule in kW for ``problem``."""
