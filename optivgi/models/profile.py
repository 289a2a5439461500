"""OCPP charging profiles built from a power schedule.

This module is the one place where a schedule becomes OCPP JSON. Limits are always rounded
DOWN to the protocol's 0.1 step (never to the nearest), so rounding can only lower what a site
draws. Start periods are integers, as both OCPP 1.6 and 2.0.1 require.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import numpy as np

from optivgi.models.ev import ChargingRateUnit, to_utc

__all__ = [
    "ChargingProfile",
    "ChargingProfileKind",
    "ChargingProfilePurpose",
    "ChargingSchedulePeriod",
    "round_down_tenth",
]


def round_down_tenth(value: float) -> float:
    """Round ``value`` down to the largest multiple of 0.1 that CSMS validators accept.

    Returns the largest ``k / 10`` (``k`` a whole number) that is ``<= value`` and for which
    ``(k / 10) / 0.1`` is an exact integer in IEEE doubles. JSON-schema validators such as the
    one in CitrineOS test ``multipleOf: 0.1`` with that division and reject tenths like 5.8, 6.1
    or 8.1 whose quotient is 57.99999999999999; stepping down to the next tenth keeps the limit
    valid and below the planned power. Whole numbers and halves always pass. Negative and
    non-finite inputs raise ``ValueError``.
    """
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'limit' must be a finite number >= 0, got {value!r}")
    k = math.floor(value * 10)
    while (k + 1) / 10 <= value:
        k += 1
    while k > 0 and (k / 10 > value or not ((k / 10) / 0.1).is_integer()):
        k -= 1
    return max(k, 0) / 10


class ChargingProfilePurpose(enum.StrEnum):
    """OCPP ``chargingProfilePurpose`` (1.6 names; 2.0.1 uses the same strings)."""

    CHARGE_POINT_MAX_PROFILE = "ChargePointMaxProfile"
    TX_DEFAULT_PROFILE = "TxDefaultProfile"
    TX_PROFILE = "TxProfile"


class ChargingProfileKind(enum.StrEnum):
    """OCPP ``chargingProfileKind``."""

    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


def _as_periods(value: Iterable[ChargingSchedulePeriod]) -> tuple[ChargingSchedulePeriod, ...]:
    return tuple(value)


def _iso(value: datetime) -> str:
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class ChargingSchedulePeriod:
    """One period of a charging schedule.

    Attributes:
        start_period: seconds from the schedule start (integer >= 0).
        limit: limit in the profile's unit (W or A), a multiple of 0.1, >= 0.
        number_phases: phases the limit applies to, or None to leave it out.
    """

    start_period: int
    limit: float
    number_phases: int | None = None

    def __attrs_post_init__(self) -> None:
        if isinstance(self.start_period, bool) or not isinstance(self.start_period, int) or self.start_period < 0:
            raise ValueError(f"'start_period' must be an integer >= 0, got {self.start_period!r}")
        if not math.isfinite(self.limit) or self.limit < 0:
            raise ValueError(f"'limit' must be a finite number >= 0, got {self.limit!r}")
        if round_down_tenth(self.limit) != self.limit:
            raise ValueError(f"'limit' must be a valid multiple of 0.1, got {self.limit!r}")

    def to_json(self) -> dict[str, Any]:
        """The period as OCPP JSON (``startPeriod``, ``limit``, ``numberPhases``)."""
        out: dict[str, Any] = {"startPeriod": self.start_period, "limit": self.limit}
        if self.number_phases is not None:
            out["numberPhases"] = self.number_phases
        return out


@attrs.frozen
class ChargingProfile(Mapping[str, Any]):
    """A charging profile, independent of OCPP version until serialised.

    It reads like the OCPP 1.6 ``csChargingProfiles`` dict (``profile["chargingSchedule"]``), so
    translations written against dict profiles keep working; :meth:`to_ocpp16` and
    :meth:`to_ocpp201` give the wire JSON of each version.

    Attributes:
        charging_profile_id: OCPP ``chargingProfileId`` (1.6) / ``id`` (2.0.1).
        stack_level: higher levels override lower ones of the same purpose.
        purpose: profile purpose.
        kind: profile kind.
        unit: ``W`` or ``A``.
        start_schedule: when period 0 starts (UTC).
        periods: at least one period, start periods strictly increasing from 0.
        transaction_id: the transaction a ``TxProfile`` applies to.
        duration: schedule duration [s], or None for open-ended.
        valid_from: optional start of validity.
        valid_to: optional end of validity (after it, lower stack levels apply again).
        min_charging_rate: optional least rate the EV supports, in ``unit``.
    """

    charging_profile_id: int
    stack_level: int
    purpose: ChargingProfilePurpose = attrs.field(converter=ChargingProfilePurpose)
    kind: ChargingProfileKind = attrs.field(converter=ChargingProfileKind)
    unit: ChargingRateUnit = attrs.field(converter=ChargingRateUnit)
    start_schedule: datetime = attrs.field(converter=to_utc)
    periods: tuple[ChargingSchedulePeriod, ...] = attrs.field(converter=_as_periods)
    transaction_id: int | str | None = None
    duration: int | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    min_charging_rate: float | None = None

    def __attrs_post_init__(self) -> None:
        if not self.periods:
            raise ValueError("'periods' must hold at least one period")
        if self.periods[0].start_period != 0:
            raise ValueError(f"'periods[0].start_period' must be 0, got {self.periods[0].start_period}")
        for a, b in zip(self.periods, self.periods[1:], strict=False):
            if b.start_period <= a.start_period:
                raise ValueError("'periods' must have strictly increasing start periods")
        if self.stack_level < 0:
            raise ValueError(f"'stack_level' must be >= 0, got {self.stack_level}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"'duration' must be > 0, got {self.duration}")

    @classmethod
    def from_power(
        cls,
        power_kw: Sequence[float],
        *,
        start: datetime,
        resolution_s: int,
        unit: ChargingRateUnit | str = ChargingRateUnit.W,
        voltage: float = 230.0,
        phases: int = 1,
        charging_profile_id: int = 1,
        stack_level: int = 1,
        purpose: ChargingProfilePurpose | str = ChargingProfilePurpose.TX_PROFILE,
        kind: ChargingProfileKind | str = ChargingProfileKind.ABSOLUTE,
        transaction_id: int | str | None = None,
        duration: int | None = None,
        valid_to: datetime | None = None,
        max_periods: int | None = None,
    ) -> ChargingProfile:
        """Build a profile from one EV's planned power per step [kW].

        Each step's power is converted to ``unit`` (``W``, or amps per phase at ``voltage`` and
        ``phases``), rounded down to the 0.1 step, and consecutive equal limits are merged into
        one period. ``max_periods`` truncates the schedule (chargers limit the number of
        periods); ``duration`` then defaults to the covered time so nothing is extrapolated.
        """
        unit = ChargingRateUnit(unit)
        if resolution_s <= 0:
            raise ValueError(f"'resolution_s' must be > 0, got {resolution_s}")
        if len(power_kw) == 0:
            raise ValueError("'power_kw' must hold at least one step")
        number_phases = phases if unit is ChargingRateUnit.A else None
        power = np.asarray(power_kw, dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(power) | (power < -1e-9)
        if bad.any():
            step = int(np.argmax(bad))
            raise ValueError(f"'power_kw[{step}]' must be a finite number >= 0, got {float(power[step])!r}")
        # The same arithmetic as ChargingRateUnit.from_kw, for every step at once.
        raw = np.maximum(power, 0.0) * 1000.0
        if unit is ChargingRateUnit.A:
            raw = raw / (voltage * phases)
        # Only a step whose value differs from the previous one can start a period.
        changes = np.flatnonzero(np.concatenate([[True], raw[1:] != raw[:-1]]))
        periods: list[ChargingSchedulePeriod] = []
        for step in changes.tolist():
            limit = round_down_tenth(max(float(raw[step]), 0.0))
            if periods and periods[-1].limit == limit:
                continue
            if max_periods is not None and len(periods) == max_periods:
                duration = duration or step * resolution_s
                break
            periods.append(ChargingSchedulePeriod(step * resolution_s, limit, number_phases))
        return cls(
            charging_profile_id=charging_profile_id,
            stack_level=stack_level,
            purpose=purpose,
            kind=kind,
            unit=unit,
            start_schedule=start,
            periods=periods,
            transaction_id=transaction_id,
            duration=duration,
            valid_to=valid_to,
        )

    def period_at(self, offset_s: float) -> ChargingSchedulePeriod:
        """The period in force ``offset_s`` seconds after the schedule start (the first before it)."""
        current = self.periods[0]
        for period in self.periods[1:]:
            if period.start_period > offset_s:
                break
            current = period
        return current

    def limit_kw_at(self, offset_s: float, voltage: float, phases: int = 1) -> float:
        """The limit [kW] in force ``offset_s`` seconds after the schedule start.

        ``voltage`` [V] and ``phases`` convert amps; a period's own ``number_phases`` wins.
        """
        period = self.period_at(offset_s)
        return self.unit.limit_to_kw(period.limit, voltage, period.number_phases or phases)

    @property
    def first_limit(self) -> float:
        """The limit in force at the start of the schedule, in the profile's unit."""
        return self.periods[0].limit

    def _schedule_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "chargingRateUnit": self.unit.value,
            "startSchedule": _iso(self.start_schedule),
            "chargingSchedulePeriod": [p.to_json() for p in self.periods],
        }
        if self.duration is not None:
            body["duration"] = int(self.duration)
        if self.min_charging_rate is not None:
            body["minChargingRate"] = round_down_tenth(self.min_charging_rate)
        return body

    def _common(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stackLevel": self.stack_level,
            "chargingProfilePurpose": self.purpose.value,
            "chargingProfileKind": self.kind.value,
        }
        if self.transaction_id is not None:
            out["transactionId"] = self.transaction_id
        if self.valid_from is not None:
            out["validFrom"] = _iso(self.valid_from)
        if self.valid_to is not None:
            out["validTo"] = _iso(self.valid_to)
        return out

    def to_ocpp16(self) -> dict[str, Any]:
        """OCPP 1.6 ``csChargingProfiles`` JSON (``transactionId`` as an integer when numeric)."""
        out = {"chargingProfileId": self.charging_profile_id, **self._common()}
        if isinstance(self.transaction_id, str) and self.transaction_id.isdigit():
            out["transactionId"] = int(self.transaction_id)
        out["chargingSchedule"] = self._schedule_body()
        return out

    def to_ocpp201(self, schedule_id: int | None = None) -> dict[str, Any]:
        """OCPP 2.0.1 ``chargingProfile`` JSON (``transactionId`` as a string, schedule as a list)."""
        out = {"id": self.charging_profile_id, **self._common()}
        if self.transaction_id is not None:
            out["transactionId"] = str(self.transaction_id)
        schedule = {"id": self.charging_profile_id if schedule_id is None else schedule_id}
        schedule.update(self._schedule_body())
        out["chargingSchedule"] = [schedule]
        return out

    # Mapping protocol over the OCPP 1.6 form.
    def __getitem__(self, key: str) -> Any:
        return self.to_ocpp16()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_ocpp16())

    def __len__(self) -> int:
        return len(self.to_ocpp16())
