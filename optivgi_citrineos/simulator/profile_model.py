"""OCPP 1.6 charging profiles as values: parsing a ``csChargingProfiles`` and evaluating one profile.

A :class:`ChargingProfile` knows when it applies and the limit it sets at an instant; how the
profiles of a charge point combine is :mod:`optivgi_citrineos.simulator.profiles`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "CHARGE_POINT_MAX",
    "PURPOSES",
    "TX_DEFAULT",
    "TX_PROFILE",
    "ActiveLimit",
    "ChargingProfile",
    "ProfileError",
    "SchedulePeriod",
    "Transaction",
    "floor_tenth",
    "parse_ocpp_datetime",
]

CHARGE_POINT_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX_PROFILE = "TxProfile"
PURPOSES = (CHARGE_POINT_MAX, TX_DEFAULT, TX_PROFILE)
_KINDS = ("Absolute", "Recurring", "Relative")
_RECURRENCE_S = {"Daily": 86_400, "Weekly": 7 * 86_400}


class ProfileError(ValueError):
    """A charging profile the charge point refuses.

    ``call_error`` is None when the answer is ``{"status": "Rejected"}``, or the OCPP CALLERROR code
    (``PropertyConstraintViolation``, ``FormatViolation``) to answer with instead.
    """

    def __init__(self, message: str, *, call_error: str | None = None) -> None:
        super().__init__(message)
        self.call_error = call_error


def parse_ocpp_datetime(value: Any, name: str) -> dt.datetime:
    """An OCPP date-time (ISO 8601, ``Z`` or offset) as an aware UTC datetime.

    Raises:
        ProfileError: (CALLERROR FormatViolation) the text is not a date-time.
    """
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise ProfileError(
                f"{name} is not an ISO 8601 date-time: {value!r}", call_error="FormatViolation"
            ) from None
    if parsed.tzinfo is None:
        # OCPP requires UTC; a missing offset is read as UTC rather than the host's zone.
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _number(value: Any, name: str) -> float:
    # The ocpp library hands limits over as int or Decimal (never as str); bool is not a number here.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ProfileError(f"{name} must be a number, got {value!r}", call_error="TypeConstraintViolation")
    number = float(value)
    if not math.isfinite(number):
        raise ProfileError(f"{name} must be finite, got {value!r}", call_error="PropertyConstraintViolation")
    return number


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{name} must be an integer, got {value!r}", call_error="TypeConstraintViolation")
    return value


def floor_tenth(value: float) -> float:
    """``value`` rounded down to a multiple of 0.1 (what the OCPP 1.6 schema allows for limits).

    Rounding down keeps a reported limit from promising more than is allowed; the small epsilon
    stops 16.0 computed as 15.999999999 from becoming 15.9.
    """
    return math.floor(value * 10 + 1e-6) / 10


@dataclass(frozen=True)
class SchedulePeriod:
    """One ``chargingSchedulePeriod``: from ``start_period`` seconds after the schedule start."""

    start_period: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True)
class ActiveLimit:
    """The limit a profile imposes at one instant, in the profile's unit."""

    value: float
    unit: str
    number_phases: int | None
    profile: ChargingProfile

    def watts(self, voltage: float, phases: int) -> float:
        """The limit in W (A x voltage x phases, phases lowered to ``numberPhases`` when smaller)."""
        if self.unit == "W":
            return self.value
        used = phases if self.number_phases is None else max(1, min(self.number_phases, phases))
        return self.value * voltage * used


@dataclass(frozen=True)
class Transaction:
    """The transaction running on a connector (its start is on the profile clock)."""

    transaction_id: int
    start: dt.datetime


@dataclass(frozen=True)
class ChargingProfile:
    """A validated ``csChargingProfiles`` as installed on one connector (0 = the charge point).

    Build one from the wire form with :meth:`from_ocpp`; :meth:`to_ocpp` gives the wire form back.
    ``received_at`` is the start of an Absolute profile sent without ``startSchedule``.
    """

    profile_id: int
    connector_id: int
    stack_level: int
    purpose: str
    kind: str
    unit: str
    periods: tuple[SchedulePeriod, ...]
    start_schedule: dt.datetime | None = None
    duration_s: int | None = None
    recurrency_kind: str | None = None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    transaction_id: int | None = None
    min_charging_rate: float | None = None
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    # --- wire form --------------------------------------------------------------------------------

    @classmethod
    def from_ocpp(
        cls, connector_id: int, payload: Mapping[str, Any], received_at: dt.datetime
    ) -> ChargingProfile:
        """Parse and check a ``csChargingProfiles`` object (camelCase keys, as on the wire).

        Raises:
            ProfileError: the profile is malformed or breaks an OCPP rule; a negative limit gives
                CALLERROR ``PropertyConstraintViolation``, every other rule ``Rejected``.
        """
        if not isinstance(payload, Mapping):
            raise ProfileError("csChargingProfiles must be an object", call_error="TypeConstraintViolation")
        for key in ("chargingProfileId", "stackLevel", "chargingProfilePurpose", "chargingProfileKind",
                    "chargingSchedule"):
            if key not in payload:
                raise ProfileError(f"csChargingProfiles.{key} is required", call_error="ProtocolError")
        purpose = payload["chargingProfilePurpose"]
        kind = payload["chargingProfileKind"]
        if purpose not in PURPOSES:
            raise ProfileError(f"unknown chargingProfilePurpose {purpose!r}", call_error="PropertyConstraintViolation")
        if kind not in _KINDS:
            raise ProfileError(f"unknown chargingProfileKind {kind!r}", call_error="PropertyConstraintViolation")
        stack_level = _integer(payload["stackLevel"], "stackLevel")
        if stack_level < 0:
            raise ProfileError(f"stackLevel must be >= 0, got {stack_level}", call_error="PropertyConstraintViolation")
        schedule = payload["chargingSchedule"]
        if not isinstance(schedule, Mapping):
            raise ProfileError("chargingSchedule must be an object", call_error="TypeConstraintViolation")
        unit = schedule.get("chargingRateUnit")
        if unit not in ("A", "W"):
            raise ProfileError(
                f"chargingRateUnit must be A or W, got {unit!r}", call_error="PropertyConstraintViolation"
            )
        raw_periods = schedule.get("chargingSchedulePeriod")
        if not isinstance(raw_periods, list):
            raise ProfileError("chargingSchedulePeriod must be a list", call_error="TypeConstraintViolation")
        periods: list[SchedulePeriod] = []
        for i, raw in enumerate(raw_periods):
            where = f"chargingSchedulePeriod[{i}]"
            if not isinstance(raw, Mapping) or "startPeriod" not in raw or "limit" not in raw:
                raise ProfileError(f"{where} needs startPeriod and limit", call_error="ProtocolError")
            limit = _number(raw["limit"], f"{where}.limit")
            if limit < 0:
                raise ProfileError(
                    f"{where}.limit must be >= 0, got {limit:g}", call_error="PropertyConstraintViolation"
                )
            phases = raw.get("numberPhases")
            if phases is not None:
                phases = _integer(phases, f"{where}.numberPhases")
                if not 1 <= phases <= 3:
                    raise ProfileError(f"{where}.numberPhases must be 1, 2 or 3, got {phases}")
            periods.append(SchedulePeriod(_integer(raw["startPeriod"], f"{where}.startPeriod"), limit, phases))
        # Rejected rather than CALLERROR below: the message is well formed, the content is not usable.
        if not periods:
            raise ProfileError("chargingSchedulePeriod is empty (OCPP requires at least one period)")
        if periods[0].start_period != 0:
            raise ProfileError(f"the first startPeriod must be 0, got {periods[0].start_period}")
        if any(b.start_period <= a.start_period for a, b in itertools.pairwise(periods)):
            raise ProfileError("startPeriod values must increase")
        duration = schedule.get("duration")
        if duration is not None:
            duration = _integer(duration, "chargingSchedule.duration")
            if duration <= 0:
                raise ProfileError(f"chargingSchedule.duration must be > 0, got {duration}")
        start = schedule.get("startSchedule")
        start_schedule = parse_ocpp_datetime(start, "startSchedule") if start is not None else None
        recurrency = payload.get("recurrencyKind")
        if kind == "Recurring":
            if recurrency not in _RECURRENCE_S:
                raise ProfileError(f"a Recurring profile needs recurrencyKind Daily or Weekly, got {recurrency!r}")
            if start_schedule is None:
                raise ProfileError("a Recurring profile needs startSchedule")
        elif kind == "Relative":
            # A Relative schedule starts with the transaction; a startSchedule would contradict it.
            start_schedule = None
        valid_from = payload.get("validFrom")
        valid_to = payload.get("validTo")
        vf = parse_ocpp_datetime(valid_from, "validFrom") if valid_from is not None else None
        vt = parse_ocpp_datetime(valid_to, "validTo") if valid_to is not None else None
        if vf is not None and vt is not None and vt <= vf:
            raise ProfileError("validTo must be after validFrom")
        transaction_id = payload.get("transactionId")
        if transaction_id is not None:
            transaction_id = _integer(transaction_id, "transactionId")
            if purpose != TX_PROFILE:
                raise ProfileError("transactionId is only allowed in a TxProfile")
        min_rate = schedule.get("minChargingRate")
        return cls(
            profile_id=_integer(payload["chargingProfileId"], "chargingProfileId"),
            connector_id=connector_id,
            stack_level=stack_level,
            purpose=purpose,
            kind=kind,
            unit=unit,
            periods=tuple(periods),
            start_schedule=start_schedule,
            duration_s=duration,
            recurrency_kind=recurrency if kind == "Recurring" else None,
            valid_from=vf,
            valid_to=vt,
            transaction_id=transaction_id,
            min_charging_rate=None if min_rate is None else _number(min_rate, "minChargingRate"),
            received_at=received_at,
        )

    def to_ocpp(self) -> dict[str, Any]:
        """The profile as a ``csChargingProfiles`` JSON object (camelCase)."""
        schedule: dict[str, Any] = {
            "chargingRateUnit": self.unit,
            "chargingSchedulePeriod": [
                {"startPeriod": p.start_period, "limit": p.limit}
                | ({} if p.number_phases is None else {"numberPhases": p.number_phases})
                for p in self.periods
            ],
        }
        if self.duration_s is not None:
            schedule["duration"] = self.duration_s
        if self.start_schedule is not None:
            schedule["startSchedule"] = _iso(self.start_schedule)
        if self.min_charging_rate is not None:
            schedule["minChargingRate"] = self.min_charging_rate
        out: dict[str, Any] = {
            "chargingProfileId": self.profile_id,
            "stackLevel": self.stack_level,
            "chargingProfilePurpose": self.purpose,
            "chargingProfileKind": self.kind,
            "chargingSchedule": schedule,
        }
        if self.transaction_id is not None:
            out["transactionId"] = self.transaction_id
        if self.recurrency_kind is not None:
            out["recurrencyKind"] = self.recurrency_kind
        if self.valid_from is not None:
            out["validFrom"] = _iso(self.valid_from)
        if self.valid_to is not None:
            out["validTo"] = _iso(self.valid_to)
        return out

    # --- evaluation -------------------------------------------------------------------------------

    def is_valid_at(self, now: dt.datetime) -> bool:
        """Whether ``now`` is inside ``[validFrom, validTo)``."""
        if self.valid_from is not None and now < self.valid_from:
            return False
        return not (self.valid_to is not None and now >= self.valid_to)

    def schedule_start(self, now: dt.datetime, tx: Transaction | None) -> dt.datetime | None:
        """When the schedule (the recurrence running at ``now``, for Recurring) started, or None."""
        if self.kind == "Relative":
            return tx.start if tx is not None else None
        start = self.start_schedule if self.start_schedule is not None else self.received_at
        if self.kind == "Recurring" and self.recurrency_kind is not None:
            period = _RECURRENCE_S[self.recurrency_kind]
            elapsed = (now - start).total_seconds()
            if elapsed < 0:
                return None
            return start + dt.timedelta(seconds=period * math.floor(elapsed / period))
        return start

    def limit_at(self, now: dt.datetime, tx: Transaction | None) -> ActiveLimit | None:
        """The limit this profile imposes at ``now``, or None when it does not apply then."""
        if not self.is_valid_at(now):
            return None
        start = self.schedule_start(now, tx)
        if start is None:
            return None
        offset = (now - start).total_seconds()
        if offset < 0 or (self.duration_s is not None and offset >= self.duration_s):
            return None
        current: SchedulePeriod | None = None
        for period in self.periods:
            if period.start_period <= offset:
                current = period
            else:
                break
        if current is None:
            return None
        return ActiveLimit(current.limit, self.unit, current.number_phases, self)

    def breakpoints(self, start: dt.datetime, end: dt.datetime, tx: Transaction | None) -> set[dt.datetime]:
        """Instants in ``(start, end)`` where this profile's limit may change."""
        points: set[dt.datetime] = set()
        for edge in (self.valid_from, self.valid_to):
            if edge is not None:
                points.add(edge)
        if self.kind == "Recurring" and self.recurrency_kind is not None:
            period_s = _RECURRENCE_S[self.recurrency_kind]
            first = self.schedule_start(start, tx) or self.start_schedule
            origins: list[dt.datetime] = []
            origin = first
            while origin is not None and origin < end:
                origins.append(origin)
                origin = origin + dt.timedelta(seconds=period_s)
        else:
            single = self.schedule_start(start, tx)
            origins = [single] if single is not None else []
        for origin in origins:
            for period in self.periods:
                points.add(origin + dt.timedelta(seconds=period.start_period))
            if self.duration_s is not None:
                points.add(origin + dt.timedelta(seconds=self.duration_s))
        return {p for p in points if start < p < end}


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
