"""The simplest limit source: one number, always."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from optivgi.clock import Clock
from optivgi.limits.base import LimitSource, Trigger, _Float, _kw

__all__ = ["ConstantLimit"]


class ConstantLimit(LimitSource):
    """A site limit that never changes.

    Args:
        kw: the limit [kW], >= 0.
    """

    name = "constant"

    def __init__(self, kw: float, *, clock: Clock | None = None, trigger: Trigger | None = None) -> None:
        super().__init__(clock=clock, trigger=trigger)
        self.kw = _kw(kw, "'kw'")

    def series(self, start: datetime, resolution_s: int, n_steps: int) -> _Float:
        """``kw`` in every step."""
        return np.full(n_steps, self.kw)

    def lowest_kw(self) -> float:
        """``kw``."""
        return self.kw
