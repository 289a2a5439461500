"""A site tree's limits as sparse linear constraints on a schedule, and what breaks them.

Built by :meth:`optivgi.topology.Topology.network`; carried by a planning problem as
:attr:`optivgi.algorithms.base.Problem.network`. Pure: numpy and scipy only.
"""

from __future__ import annotations

import attrs
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = ["PHASES", "NetworkConstraints", "Violation"]

_Float = npt.NDArray[np.float64]

#: The grid phases, in order; phase index ``j`` is ``PHASES[j]``.
PHASES = ("L1", "L2", "L3")


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

    def violations(self, power_kw: npt.ArrayLike, *, tol_kw: float = 1e-6) -> list[Violation]:
        """Every node, phase and step above its limit by more than ``tol_kw``, worst first per row."""
        power = np.asarray(power_kw, dtype=np.float64)
        if self.n_rows == 0 or power.size == 0:
            return []
        load = self.loads(power)
        over = load > self.limit_kw + tol_kw
        out: list[Violation] = []
        for r, k in zip(*np.nonzero(over), strict=True):
            node, phase = self.labels[r]
            value, limit = float(load[r, k]), float(self.limit_kw[r, k])
            if phase is not None:
                value, limit = value * 1000.0 / self.voltage, limit * 1000.0 / self.voltage
            out.append(Violation(node, phase, int(k), value, limit))
        return out

    def select(self, rows: npt.NDArray[np.bool_]) -> NetworkConstraints:
        """The constraints on the schedule rows where ``rows`` is True."""
        return attrs.evolve(self, matrix=sp.csr_array(self.matrix[:, np.flatnonzero(rows)]))

    def fit(self, power_kw: npt.ArrayLike, rows: npt.NDArray[np.bool_]) -> _Float:
        """``power_kw`` (one row per True entry of ``rows``) scaled down, each row by the least
        factor of the constraints it is on, so that these rows alone fit every limit."""
        idx = np.flatnonzero(rows)
        power = np.asarray(power_kw, dtype=np.float64)
        sub = sp.csr_array(self.matrix[:, idx])
        load = np.asarray(sub @ power).reshape(self.n_rows, power.shape[1])
        factor = np.ones_like(load)
        over = load > self.limit_kw
        factor[over] = self.limit_kw[over] / load[over]
        scale = np.ones_like(power)
        for r, k in zip(*np.nonzero(over), strict=True):
            cols = sub.indices[sub.indptr[r]:sub.indptr[r + 1]]
            scale[cols, k] = np.minimum(scale[cols, k], factor[r, k])
        return power * scale

    def reserve(self, power_kw: npt.ArrayLike, rows: npt.NDArray[np.bool_]) -> NetworkConstraints:
        """The constraints left for the other rows once the rows in ``rows`` draw ``power_kw``.

        ``power_kw`` has one row per True entry of ``rows``; limits never go below 0.
        """
        idx = np.flatnonzero(rows)
        used = np.asarray(sp.csr_array(self.matrix[:, idx]) @ np.asarray(power_kw, dtype=np.float64))
        rest = np.flatnonzero(~np.asarray(rows, dtype=bool))
        return attrs.evolve(self, matrix=sp.csr_array(self.matrix[:, rest]),
                            limit_kw=np.maximum(self.limit_kw - used.reshape(self.limit_kw.shape), 0.0))
