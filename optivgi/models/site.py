"""The site's limits over the planning horizon."""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from optivgi.arrays import FloatArray

__all__ = ["SiteConstraints"]


def _limit_converter(value: float | Sequence[float] | FloatArray) -> float | tuple[float, ...]:
    if isinstance(value, int | float):
        return float(value)
    return tuple(float(v) for v in value)


def _price_converter(value: Sequence[float] | FloatArray | None) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


@attrs.frozen
class SiteConstraints:
    """What the whole site may draw, step by step.

    Attributes:
        site_limit_kw: one limit [kW] for every step, or one per step (the last value is held
            when the horizon is longer than the series).
        price_per_kwh: optional energy price per step (any currency); the last value is held.
    """

    site_limit_kw: float | tuple[float, ...] = attrs.field(converter=_limit_converter)
    price_per_kwh: tuple[float, ...] | None = attrs.field(default=None, converter=_price_converter)

    @site_limit_kw.validator
    def _check_limit(self, attribute: attrs.Attribute[object], value: float | tuple[float, ...]) -> None:
        values = (value,) if isinstance(value, float) else value
        if not values:
            raise ValueError("'site_limit_kw' must not be an empty series")
        for i, v in enumerate(values):
            if not math.isfinite(v) or v < 0:
                where = "" if isinstance(value, float) else f"[{i}]"
                raise ValueError(f"'site_limit_kw{where}' must be a finite number >= 0, got {v!r}")

    @price_per_kwh.validator
    def _check_price(self, attribute: attrs.Attribute[object], value: tuple[float, ...] | None) -> None:
        if value is None:
            return
        if not value:
            raise ValueError("'price_per_kwh' must not be an empty series")
        for i, v in enumerate(value):
            if not math.isfinite(v):
                raise ValueError(f"'price_per_kwh[{i}]' must be a finite number, got {v!r}")

    @staticmethod
    def _series(value: float | tuple[float, ...], n_steps: int) -> FloatArray:
        if isinstance(value, float):
            return np.full(n_steps, value)
        arr = np.asarray(value[:n_steps], dtype=np.float64)
        if arr.shape[0] < n_steps:
            arr = np.concatenate([arr, np.full(n_steps - arr.shape[0], value[-1])])
        return arr

    def limit_series(self, n_steps: int) -> FloatArray:
        """The site limit [kW] for each of ``n_steps`` steps."""
        return self._series(self.site_limit_kw, n_steps)

    def price_series(self, n_steps: int) -> FloatArray | None:
        """The price for each of ``n_steps`` steps, or None when no prices are known."""
        return None if self.price_per_kwh is None else self._series(self.price_per_kwh, n_steps)
