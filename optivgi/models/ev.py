"""The EV charging session model."""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime
from typing import Any

import attrs

__all__ = ["EV", "ChargingRateUnit", "to_utc"]


class ChargingRateUnit(enum.StrEnum):
    """Unit of a charging limit on the wire (OCPP ``chargingRateUnit``)."""

    W = "W"
    A = "A"

    def to_kw(self, value: float, voltage: float, phases: int = 1) -> float:
        """Convert ``value`` in this unit (kW for ``W``, amps per phase for ``A``) to kW."""
        if self is ChargingRateUnit.W:
            return float(value)
        return float(value) * voltage * phases / 1000.0

    def limit_to_kw(self, limit: float, voltage: float, phases: int = 1) -> float:
        """Convert a profile limit in this unit (watts for ``W``, amps per phase for ``A``) to kW.

        The inverse of :meth:`from_kw`; :meth:`to_kw` instead reads ``W`` values as kW, the unit
        of EV fields.
        """
        if self is ChargingRateUnit.W:
            return float(limit) / 1000.0
        return float(limit) * voltage * phases / 1000.0

    def from_kw(self, power_kw: float, voltage: float, phases: int = 1) -> float:
        """Convert ``power_kw`` [kW] to this unit: watts for ``W``, amps per phase for ``A``."""
        if self is ChargingRateUnit.W:
            return float(power_kw) * 1000.0
        return float(power_kw) * 1000.0 / (voltage * phases)


def to_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _finite_nonneg(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{attribute.name}' must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'{attribute.name}' must be a finite number >= 0, got {value!r}")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"'{attribute.name}' must be a finite number > 0, got {value!r}")


def _datetime(instance: Any, attribute: attrs.Attribute[Any], value: datetime) -> None:
    if not isinstance(value, datetime):
        raise ValueError(f"'{attribute.name}' must be a datetime, got {value!r}")


def _utc(value: Any) -> Any:
    return to_utc(value) if isinstance(value, datetime) else value


@attrs.define(kw_only=True, eq=False)
class EV:
    """One charging session: a car on a connector, with what it needs and what it can draw.

    Powers and energy are in kW and kWh when ``unit`` is :attr:`ChargingRateUnit.W` (the
    default), or in amps per phase and amp-hours when it is :attr:`ChargingRateUnit.A` (then
    ``voltage`` and ``phases`` convert them; see :attr:`max_power_kw` and friends).

    Attributes:
        ev_id: session identifier, unique at the site (e.g. ``"STATION-01:17"``).
        station_id: charging station (OCPP identity).
        connector_id: OCPP connector number (>= 0).
        arrival_time: when the car was (or will be) plugged in; naive values are taken as UTC.
        departure_time: when it leaves (must be after ``arrival_time``).
        energy: energy still needed by departure [kWh, or Ah with unit A], >= 0.
        min_power: least power when charging [kW, or A] (0 = can regulate down to nothing).
        max_power: most power [kW, or A], >= ``min_power``.
        active: True when plugged in now, False for a planned (expected) arrival.
        unit: unit of ``min_power``, ``max_power`` and ``energy``.
        voltage: line-to-neutral voltage [V] used for amp conversions; None means "the site's"
            (the scheduler fills it in from the translation or the ``VOLTAGE`` setting).
        phases: number of phases used for amp conversions (1 or 3).
        transaction_id: the CSMS's transaction id, when there is one.
        delivered_kwh: energy already delivered in this session [kWh, always kWh whatever
            ``unit``], finite and >= 0 (0 when unknown). ``energy`` is what is still needed on
            top of it, so ``delivered_kwh + energy_kwh`` is the session's total need; the ``lp``
            algorithm is fair on that total, so a session that got less earlier is favoured now.
        power: the last planned power per step [kW], filled in by the scheduler.
    """

    ev_id: str | int = attrs.field()
    station_id: str | int = attrs.field()
    connector_id: int = attrs.field()
    arrival_time: datetime = attrs.field(converter=_utc, validator=_datetime)
    departure_time: datetime = attrs.field(converter=_utc, validator=_datetime)
    energy: float = attrs.field(validator=_finite_nonneg)
    min_power: float = attrs.field(default=0.0, validator=_finite_nonneg)
    max_power: float = attrs.field(validator=_finite_nonneg)
    active: bool = True
    unit: ChargingRateUnit = attrs.field(default=ChargingRateUnit.W, converter=ChargingRateUnit)
    voltage: float | None = attrs.field(default=None, validator=attrs.validators.optional(_positive))
    phases: int = attrs.field(default=1)
    transaction_id: str | int | None = None
    delivered_kwh: float = attrs.field(default=0.0, validator=_finite_nonneg)
    power: list[float] = attrs.field(factory=list, repr=False)

    @ev_id.validator
    def _check_id(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise ValueError(f"'ev_id' must be a non-empty string or an integer, got {value!r}")

    @station_id.validator
    def _check_station(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise ValueError(f"'station_id' must be a non-empty string or an integer, got {value!r}")

    @connector_id.validator
    def _check_connector(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"'connector_id' must be an integer >= 0, got {value!r}")

    @phases.validator
    def _check_phases(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in (1, 2, 3) or isinstance(value, bool):
            raise ValueError(f"'phases' must be 1, 2 or 3, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.max_power < self.min_power:
            raise ValueError(
                f"'max_power' must be >= 'min_power' ({self.min_power!r}), got {self.max_power!r}"
            )
        if self.departure_time <= self.arrival_time:
            raise ValueError(
                f"'departure_time' must be after 'arrival_time' ({self.arrival_time.isoformat()}), "
                f"got {self.departure_time.isoformat()}"
            )

    # Sessions are identified by their id, so an EV can key the dict handed to a translation.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EV):
            return NotImplemented
        return self.ev_id == other.ev_id

    def __hash__(self) -> int:
        return hash(self.ev_id)

    def _to_kw(self, value: float) -> float:
        if self.unit is ChargingRateUnit.W:
            return float(value)
        if self.voltage is None:
            raise ValueError(f"EV {self.ev_id!r}: 'voltage' is needed to convert amps to kW")
        return self.unit.to_kw(value, self.voltage, self.phases)

    @property
    def min_power_kw(self) -> float:
        """Least power when charging [kW]."""
        return self._to_kw(self.min_power)

    @property
    def max_power_kw(self) -> float:
        """Most power [kW]."""
        return self._to_kw(self.max_power)

    @property
    def energy_kwh(self) -> float:
        """Energy still needed by departure [kWh]."""
        return self._to_kw(self.energy)
