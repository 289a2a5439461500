"""A computed power schedule: EVs x steps, in kW."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import attrs
import numpy as np

from optivgi.arrays import FloatArray
from optivgi.arrays import as_ids as _as_ids
from optivgi.models.ev import to_utc

__all__ = ["PowerSchedule"]


def _as_matrix(value: object) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    return arr


def _floor6(value: float) -> float:
    # Round towards zero so a written schedule never draws more than the computed one.
    return math.floor(float(value) * 1e6) / 1e6


@attrs.frozen(eq=False)
class PowerSchedule:
    """Planned power per EV and step.

    Attributes:
        ev_ids: one id per row.
        power_kw: ``(n_evs, n_steps)`` power [kW].
        start: start of step 0 (UTC).
        resolution_s: step length [s].
        algorithm: name of the algorithm that made it.
        solve_seconds: wall time the algorithm took, model build included [s].
        note: why a fallback was used, or other remarks; empty when none.
    """

    ev_ids: tuple[str, ...] = attrs.field(converter=_as_ids)
    power_kw: FloatArray = attrs.field(converter=_as_matrix)
    start: datetime = attrs.field(converter=to_utc)
    resolution_s: int
    algorithm: str = ""
    solve_seconds: float = 0.0
    note: str = ""

    def __attrs_post_init__(self) -> None:
        if self.power_kw.ndim != 2 or self.power_kw.shape[0] != len(self.ev_ids):
            raise ValueError(
                f"'power_kw' must have shape ({len(self.ev_ids)}, n_steps), got {self.power_kw.shape}"
            )
        if self.resolution_s <= 0:
            raise ValueError(f"'resolution_s' must be > 0, got {self.resolution_s}")

    @property
    def n_steps(self) -> int:
        """Number of steps."""
        return int(self.power_kw.shape[1])

    @property
    def end(self) -> datetime:
        """End of the last step (UTC)."""
        return self.start + timedelta(seconds=self.resolution_s * self.n_steps)

    def row(self, ev_id: str) -> FloatArray:
        """The power [kW] per step of one EV."""
        row: FloatArray = self.power_kw[self.ev_ids.index(ev_id)]
        return row

    def energy_kwh(self) -> dict[str, float]:
        """Energy [kWh] each EV receives over the horizon."""
        per_ev = self.power_kw.sum(axis=1) * self.resolution_s / 3600.0
        return {ev_id: float(e) for ev_id, e in zip(self.ev_ids, per_ev, strict=True)}

    def site_power_kw(self) -> FloatArray:
        """Total site power [kW] per step."""
        if self.power_kw.shape[0] == 0:
            return np.zeros(self.n_steps)
        total: FloatArray = self.power_kw.sum(axis=0)
        return total

    def to_json(self, scenario: str = "") -> dict[str, Any]:
        """The schedule in the exchange format (``scenario``, ``algorithm``, ``resolution_s``,
        ``power_kw`` by EV id, ``solve_seconds``)."""
        return {
            "scenario": scenario,
            "algorithm": self.algorithm,
            "resolution_s": self.resolution_s,
            "start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "power_kw": {
                ev_id: [_floor6(p) for p in row]
                for ev_id, row in zip(self.ev_ids, self.power_kw, strict=True)
            },
            "solve_seconds": round(self.solve_seconds, 6),
            "error": None,
            "note": self.note or None,
        }
