"""A site tree's limits as sparse linear constraints on a schedule, and what breaks them.

Built by :meth:`optivgi.topology.Topology.network`; carried by a planning problem as
:attr:`optivgi.algorithms.base.Problem.network`. Pure: numpy and scipy only.
"""

from __future__ import annotations

import attrs
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = ["PHASES", "NetworkConstraints", "Violation", "scale_into", "waterfill"]

_Float = npt.NDArray[np.float64]

#: The grid phases, in order; phase index ``j`` is ``PHASES[j]``.
PHASES = ("L1", "L2", "L3")


def scale_into(matrix: sp.csr_array, load: _Float, limit: _Float) -> _Float:
    """``(n, T)`` factors in ``(0, 1]``: each column of ``matrix`` (an EV) and step takes the
    least ``limit / load`` of the rows it is on that are over their limit, so that scaling the
    schedule by them brings every row within its limit (and leaves rows that fit fitting)."""
    n, steps = matrix.shape[1], load.shape[1]
    scale = np.ones((n, steps))
    over_rows = np.flatnonzero((load > limit).any(axis=1))
    if over_rows.size == 0:
        return scale
    csr = sp.csr_array(matrix)
    for chunk in np.array_split(over_rows, max(1, over_rows.size // 64)):  # bounded memory
        sub_load, sub_limit = load[chunk], limit[chunk]
        factor = np.ones_like(sub_load)
        over = sub_load > sub_limit
        factor[over] = sub_limit[over] / sub_load[over]
        coo = sp.coo_array(csr[chunk])
        if coo.nnz == 0:
            continue
        order = np.argsort(coo.col, kind="stable")
        cols = coo.col[order]
        evs, starts = np.unique(cols, return_index=True)
        scale[evs] = np.minimum(scale[evs], np.minimum.reduceat(factor[coo.row[order]], starts, axis=0))
    return scale


@attrs.frozen
class Violation:
    """A node (and phase) above its limit at one step.

    ``phase`` is ``"L1"``/``"L2"``/``"L3"`` for a limit per phase (``value``/``limit`` in A), or
    None for a limit on the node's total (in kW).
    """

    node: str
    phase: str | None
    step: int
    value: float
    limit: float

    @property
    def unit(self) -> str:
        """``"A"`` for a phase limit, ``"kW"`` for a total."""
        return "kW" if self.phase is None else "A"

    def __str__(self) -> str:
        where = self.node if self.phase is None else f"{self.node} {self.phase}"
        return (f"{where} draws {self.value:.6g} {self.unit} at step {self.step}, "
                f"above its limit {self.limit:.6g} {self.unit}")


@attrs.frozen(eq=False)
class NetworkConstraints:
    """Every node limit of a topology as sparse linear constraints on a schedule's rows.

    For a schedule ``P`` of shape ``(n, T)`` [kW], ``matrix @ P <= limit_kw`` must hold
    element-wise: one row per node with a kW limit (its total) and one per node and limited
    phase (the node's load on that phase, in kW; the amp limit times the voltage). Rows are
    labelled by ``(node, phase)`` with ``phase`` None for a total.

    Attributes:
        matrix: ``(m, n)`` sparse coefficients (CSR).
        limit_kw: ``(m, T)`` limits [kW].
        labels: ``m`` labels ``(node name, phase or None)``.
        voltage: line-to-neutral voltage [V] the amp limits were converted with.
    """

    matrix: sp.csr_array
    limit_kw: _Float
    labels: tuple[tuple[str, str | None], ...]
    voltage: float

    @property
    def n_rows(self) -> int:
        """Number of constraints per step."""
        return len(self.labels)

    def loads(self, power_kw: npt.ArrayLike) -> _Float:
        """``(m, T)`` load of every constrained node and phase [kW]."""
        power = np.asarray(power_kw, dtype=np.float64)
        return np.asarray(self.matrix @ power, dtype=np.float64).reshape(self.n_rows, power.shape[1])

    def violations(self, power_kw: npt.ArrayLike, *, tol_kw: float = 1e-6,
                   most: int | None = None) -> list[Violation]:
        """The nodes, phases and steps above their limit by more than ``tol_kw``, in tree order
        then by step; at most ``most`` of them (None: all)."""
        power = np.asarray(power_kw, dtype=np.float64)
        if self.n_rows == 0 or power.size == 0:
            return []
        load = self.loads(power)
        rows, steps = np.nonzero(load > self.limit_kw + tol_kw)
        out: list[Violation] = []
        for r, k in zip(rows[:most], steps[:most], strict=True):
            node, phase = self.labels[r]
            value, limit = float(load[r, k]), float(self.limit_kw[r, k])
            if phase is not None:
                value, limit = value * 1000.0 / self.voltage, limit * 1000.0 / self.voltage
            out.append(Violation(node, phase, int(k), value, limit))
        return out

    def count_violations(self, power_kw: npt.ArrayLike, *, tol_kw: float = 1e-6) -> int:
        """How many (node or phase, step) pairs are above their limit by more than ``tol_kw``."""
        power = np.asarray(power_kw, dtype=np.float64)
        if self.n_rows == 0 or power.size == 0:
            return 0
        return int(np.count_nonzero(self.loads(power) > self.limit_kw + tol_kw))

    def select(self, rows: npt.NDArray[np.bool_]) -> NetworkConstraints:
        """The constraints on the schedule rows where ``rows`` is True."""
        return attrs.evolve(self, matrix=sp.csr_array(self.matrix[:, np.flatnonzero(rows)]))

    def fit(self, power_kw: npt.ArrayLike, rows: npt.NDArray[np.bool_]) -> _Float:
        """``power_kw`` (one row per True entry of ``rows``) scaled down, each row by the least
        factor of the constraints it is on, so that these rows alone fit every limit."""
        power = np.asarray(power_kw, dtype=np.float64)
        sub = sp.csr_array(self.matrix[:, np.flatnonzero(rows)])
        load = np.asarray(sub @ power).reshape(self.n_rows, power.shape[1])
        return power * scale_into(sub, load, self.limit_kw)

    def reserve(self, power_kw: npt.ArrayLike, rows: npt.NDArray[np.bool_]) -> NetworkConstraints:
        """The constraints left for the other rows once the rows in ``rows`` draw ``power_kw``.

        ``power_kw`` has one row per True entry of ``rows``; limits never go below 0.
        """
        idx = np.flatnonzero(rows)
        used = np.asarray(sp.csr_array(self.matrix[:, idx]) @ np.asarray(power_kw, dtype=np.float64))
        rest = np.flatnonzero(~np.asarray(rows, dtype=bool))
        return attrs.evolve(self, matrix=sp.csr_array(self.matrix[:, rest]),
                            limit_kw=np.maximum(self.limit_kw - used.reshape(self.limit_kw.shape), 0.0))


def waterfill(
    matrix: sp.csr_array, limit_kw: _Float, upper_kw: npt.ArrayLike, *, tol_kw: float = 1e-9
) -> _Float:
    """Max-min fair power down a tree, every step at once (progressive filling).

    All EVs of a step rise together from 0; an EV stops at its ``upper_kw`` (its max power in
    that step, 0 outside its window) or when a row it is on (a node or phase of ``matrix``, with
    limits ``limit_kw``; add a row of ones for the site limit) becomes full. The result is the
    max-min fair allocation of each step: no EV can get more without one that has less (or as
    much) on a shared full node getting less. Minimum powers are not considered.

    Args:
        matrix: ``(m, n)`` non-negative coefficients (as :attr:`NetworkConstraints.matrix`).
        limit_kw: ``(m, T)`` limits [kW], >= 0.
        upper_kw: ``(n, T)`` the most each EV may draw in each step [kW], >= 0.

    Returns:
        ``(n, T)`` powers [kW] with ``matrix @ power <= limit_kw`` and ``0 <= power <= upper_kw``.
    """
    a = sp.csr_array(matrix)
    upper = np.maximum(np.asarray(upper_kw, dtype=np.float64), 0.0)
    limit = np.maximum(np.asarray(limit_kw, dtype=np.float64), 0.0)
    n, steps = upper.shape
    at = sp.csr_array(a.T)
    level = np.zeros((n, steps))
    frozen = upper <= tol_kw
    for _ in range(a.shape[0] + n + 1):
        active = (~frozen).astype(np.float64)
        if not active.any():
            break
        rate = np.asarray(a @ active).reshape(a.shape[0], steps)
        slack = np.maximum(limit - np.asarray(a @ level).reshape(a.shape[0], steps), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            by_row = np.where(rate > 0, slack / np.where(rate > 0, rate, 1.0), np.inf)
        headroom = np.where(frozen, np.inf, upper - level)
        dt = np.minimum(by_row.min(axis=0) if a.shape[0] else np.inf, headroom.min(axis=0))
        dt = np.where(np.isfinite(dt), np.maximum(dt, 0.0), 0.0)
        level += active * dt[None, :]
        full = (rate > 0) & (slack - rate * dt[None, :] <= tol_kw)
        frozen |= (np.asarray(at @ full.astype(np.float64)).reshape(n, steps) > 0) | (upper - level <= tol_kw)
    # Round-off of the rises must not leave a row a hair over its limit.
    load = np.asarray(a @ level).reshape(a.shape[0], steps)
    return np.minimum(level * scale_into(a, load, limit), upper)
