"""The wire format: SetChargingProfile request bodies for OCPP 1.6 and 2.0.1, the checks CitrineOS
leaves out, reading profiles back, profile ids, and the one conversion of wire limits to kW.

Units live here only: a wire limit in ``W`` is watts and a limit in ``A`` is amps per phase, and
:func:`limit_kw` is the only place that turns either into kW (the EV model's ``W`` means kW, so
never use ``ChargingRateUnit.to_kw`` on a wire limit). Profile ids: the fallback is
``CITRINEOS_PROFILE_ID_BASE``, the hold one below it, a TxProfile ``base + connector`` for a
connector ≥ 1 — so they never collide (connector 0 sessions are refused before a TxProfile is
built, and :func:`tx_profile_id` raises for them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from optivgi.models.ev import ChargingRateUnit
from optivgi.models.profile import ChargingProfile, round_down_tenth
from optivgi_citrineos.sessions import parse_time
from optivgi_citrineos.sitefile import OCPP16

__all__ = [
    "ProfileInForce",
    "SiteLimitExceeded",
    "check_request_body",
    "check_site_limit",
    "envelope",
    "fallback_id",
    "hold_id",
    "limit_kw",
    "max_sum_kw",
    "profile_from_row",
    "set_profile_path",
    "tx_profile_id",
]


def fallback_id(base: int) -> int:
    """chargingProfileId of the fallback TxDefaultProfile."""
    return base


def hold_id(base: int) -> int:
    """chargingProfileId of the zero hold TxDefaultProfile."""
    return base - 1


def tx_profile_id(base: int, connector_id: int) -> int:
    """chargingProfileId of the TxProfile on ``connector_id`` (≥ 1; never the fallback's or hold's)."""
    if isinstance(connector_id, bool) or not isinstance(connector_id, int) or connector_id < 1:
        raise ValueError(f"a TxProfile needs a connector >= 1, got {connector_id!r}")
    return base + connector_id


def limit_kw(unit: ChargingRateUnit | str, limit: float, voltage: float, phases: int = 1) -> float:
    """A wire limit (W = watts, A = amps per phase) in kW."""
    return ChargingRateUnit(unit).limit_to_kw(limit, voltage, phases)


def wire_limit(unit: ChargingRateUnit | str, power_kw: float, voltage: float, phases: int = 1) -> float:
    """``power_kw`` as a wire limit in ``unit``, rounded down to a tenth CitrineOS accepts."""
    return round_down_tenth(max(ChargingRateUnit(unit).from_kw(max(power_kw, 0.0), voltage, phases), 0.0))


def set_profile_path(ocpp: str | None) -> str:
    """The REST path of SetChargingProfile for the station's OCPP version."""
    return "/ocpp/1.6/smartcharging/setChargingProfile" if (ocpp or OCPP16) == OCPP16 else \
        "/ocpp/2.0.1/smartcharging/setChargingProfile"


def envelope(ocpp: str | None, connector_id: int, profile: ChargingProfile) -> dict[str, Any]:
    """The checked request body for ``profile`` on ``connector_id`` (1.6) / EVSE (2.0.1; 0 = station)."""
    if (ocpp or OCPP16) == OCPP16:
        body: dict[str, Any] = {"connectorId": connector_id, "csChargingProfiles": profile.to_ocpp16()}
    else:
        body = {"evseId": connector_id, "chargingProfile": profile.to_ocpp201()}
    check_request_body(body)
    return body


def check_request_body(body: Mapping[str, Any]) -> None:
    """Check what CitrineOS would forward unchecked; raise ValueError naming the first bad field.

    Every ``limit`` must be a number >= 0 that is a valid tenth (``round_down_tenth(x) == x``),
    every ``startPeriod`` an integer (not ``60.0``), the first 0 and the rest increasing.
    """
    if "csChargingProfiles" in body:
        schedules = [body["csChargingProfiles"].get("chargingSchedule")]
        where = "csChargingProfiles.chargingSchedule"
    else:
        schedules = list(body["chargingProfile"].get("chargingSchedule") or [])
        where = "chargingProfile.chargingSchedule"
    if not schedules:
        raise ValueError(f"{where} is missing")
    for s_index, schedule in enumerate(schedules):
        periods = schedule.get("chargingSchedulePeriod") if isinstance(schedule, Mapping) else None
        if not periods:
            raise ValueError(f"{where}[{s_index}].chargingSchedulePeriod must hold at least one period")
        previous = -1
        for i, period in enumerate(periods):
            here = f"{where}[{s_index}].chargingSchedulePeriod[{i}]"
            start, limit = period.get("startPeriod"), period.get("limit")
            if isinstance(start, bool) or not isinstance(start, int):
                raise ValueError(f"{here}.startPeriod must be an integer, got {start!r}")
            if (i == 0 and start != 0) or start <= previous:
                raise ValueError(f"{here}.startPeriod must start at 0 and increase, got {start!r}")
            previous = start
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
                raise ValueError(f"{here}.limit must be a finite number, got {limit!r}")
            if limit < 0:
                raise ValueError(f"{here}.limit must be >= 0, got {limit!r}")
            if round_down_tenth(float(limit)) != limit:
                raise ValueError(f"{here}.limit must be a multiple of 0.1 that CitrineOS accepts, got {limit!r}")
            phases = period.get("numberPhases")
            if phases is not None and phases not in (1, 2, 3):
                raise ValueError(f"{here}.numberPhases must be 1, 2 or 3, got {phases!r}")


def profile_kw_steps(profile: ChargingProfile, voltage: float, phases: int) -> tuple[datetime, list[tuple[int, float]]]:
    """(schedule start, [(start period [s], limit [kW])]) of a profile."""
    return profile.start_schedule, [
        (p.start_period, limit_kw(profile.unit, p.limit, voltage, p.number_phases or phases)) for p in profile.periods
    ]


def max_sum_kw(entries: Iterable[tuple[datetime, Sequence[tuple[int, float]]]]) -> list[tuple[datetime, float]]:
    """The summed limit [kW] at every period start of every entry (absolute time), ascending.

    Each entry is (schedule start, [(start period [s], kW)]); before its first period an entry
    counts its first limit, after its last its last (the conservative reading). Used by the
    pre-send check; the verifier can use it on what the chargers accepted.
    """
    items = [(start, list(kw)) for start, kw in entries]
    instants = sorted({start + timedelta(seconds=s) for start, kw in items for s, _ in kw})
    out: list[tuple[datetime, float]] = []
    for instant in instants:
        total = 0.0
        for start, kw in items:
            offset = (instant - start).total_seconds()
            current = kw[0][1]
            for s, value in kw:
                if s <= offset:
                    current = value
            total += current
        out.append((instant, total))
    return out


class SiteLimitExceeded(ValueError):
    """The profiles of a group would together allow more than the group's site limit."""


def check_site_limit(group: str, limit_at: Callable[[datetime], float],
                     entries: Iterable[tuple[datetime, Sequence[tuple[int, float]]]]) -> None:
    """Raise :class:`SiteLimitExceeded` when the summed limits (:func:`max_sum_kw`) exceed
    ``limit_at(instant)`` at any period start."""
    for instant, total in max_sum_kw(entries):
        if total > limit_at(instant) + 1e-9:
            raise SiteLimitExceeded(f"group {group!r}: the profiles allow {total:.3f} kW at {instant.isoformat()}, "
                                    f"above the site limit of {limit_at(instant):.3f} kW")


@attrs.frozen
class ProfileInForce:
    """One charging profile CitrineOS records as active for a station (``ChargingProfiles`` row).

    Attributes:
        station_id: the station.
        connector_id: OCPP connector (1.6) / EVSE (2.0.1) number; 0 = the whole station.
        profile_id: chargingProfileId.
        purpose: chargingProfilePurpose.
        stack_level: stackLevel.
        unit: ``A`` or ``W`` (None when the row has no schedule).
        limit: the limit in force now, in ``unit`` (None when unknown).
        transaction_db_id: ``transactionDatabaseId`` of a TxProfile, when recorded.
    """

    station_id: str
    connector_id: int
    profile_id: int
    purpose: str
    stack_level: int
    unit: str | None
    limit: float | None
    transaction_db_id: int | None = None

    def describe(self) -> str:
        """A short text for logs."""
        limit = "?" if self.limit is None else f"{self.limit:g} {self.unit}"
        return f"#{self.connector_id} {self.purpose} id {self.profile_id} level {self.stack_level}: {limit}"


def profile_from_row(raw: Mapping[str, Any], now: datetime) -> ProfileInForce:
    """A ``ChargingProfiles`` row (Hasura or SQL) → :class:`ProfileInForce` with the limit at ``now``."""
    schedules = raw.get("ChargingSchedules") or []
    schedule = schedules[0] if schedules else {}
    unit = schedule.get("chargingRateUnit")
    periods = schedule.get("chargingSchedulePeriod") or []
    if isinstance(periods, str):
        periods = json.loads(periods)
    limit: float | None = None
    start = parse_time(schedule.get("startSchedule"))
    offset = (now - start).total_seconds() if start is not None else 0.0
    for period in sorted(periods, key=lambda p: float(p["startPeriod"])):
        if limit is None or float(period["startPeriod"]) <= offset:
            limit = float(period["limit"])
    tx = raw.get("transactionDatabaseId")
    return ProfileInForce(
        station_id=str(raw["stationId"]),
        connector_id=int(raw.get("evseId") or 0),
        profile_id=int(raw["id"]),
        purpose=str(raw.get("chargingProfilePurpose")),
        stack_level=int(raw.get("stackLevel") or 0),
        unit=None if unit is None else str(unit),
        limit=limit,
        transaction_db_id=tx if isinstance(tx, int) and not isinstance(tx, bool) else None,
    )
