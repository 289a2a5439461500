"""Profile records from CitrineOS's rows: ``OCPPMessages`` request/answer pairs and ``ChargingProfiles``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from optivgi.models.ev import to_utc
from optivgi_citrineos.verify_records import ProfileRecord

logger = logging.getLogger(__name__)


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    return to_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _periods(raw: Any) -> tuple[tuple[int, float, int], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"'chargingSchedulePeriod' must be a list, got {type(raw).__name__}")
    out: list[tuple[int, float, int]] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise ValueError(f"a charging schedule period must be an object, got {item!r}")
        phases = item.get("numberPhases")
        out.append((int(item.get("startPeriod", 0)), float(item["limit"]), int(phases) if phases else 1))
    return tuple(sorted(out, key=lambda p: p[0]))


def _profile_from_request(
    station_id: str, payload: Mapping[str, Any], sent_at: datetime, answer: tuple[str | None, datetime | None]
) -> ProfileRecord:
    if "chargingProfile" in payload:
        # OCPP 2.0.1: {evseId, chargingProfile: {id, ..., chargingSchedule: [first, ...]}}.
        profile = payload["chargingProfile"]
        schedules = profile["chargingSchedule"]
        if not isinstance(schedules, list) or not schedules or not isinstance(schedules[0], Mapping):
            raise ValueError("'chargingSchedule' must be a non-empty list of schedules")
        schedule = schedules[0]
        connector = payload.get("evseId")
        profile_id = profile.get("id")
    else:
        profile = payload["csChargingProfiles"]
        schedule = profile.get("chargingSchedule") or {}
        connector = payload.get("connectorId")
        profile_id = profile.get("chargingProfileId")
    tx = profile.get("transactionId")
    return ProfileRecord(
        station_id=station_id,
        connector_id=int(connector) if connector is not None else None,
        transaction_id=None if tx is None else str(tx),
        profile_id=profile_id,
        purpose=profile.get("chargingProfilePurpose"),
        unit=str(schedule.get("chargingRateUnit", "W")),
        start_schedule=_time(schedule.get("startSchedule")),
        periods=_periods(schedule.get("chargingSchedulePeriod")),
        sent_at=sent_at,
        status=answer[0],
        answered_at=answer[1],
    )


def _answer_status(frame: Any) -> str | None:
    if not isinstance(frame, list) or not frame:
        return None
    if frame[0] == 4:
        return "CALLERROR"
    if frame[0] == 3 and len(frame) >= 3 and isinstance(frame[2], Mapping):
        status = frame[2].get("status")
        return str(status) if status is not None else None
    return None


def profiles_from_messages(rows: Iterable[Mapping[str, Any]]) -> list[ProfileRecord]:
    """Pair the SetChargingProfile requests of ``OCPPMessages`` rows with their answers.

    Requests are the rows with origin ``csms`` and state 1 (frame ``[2, id, action, payload]``);
    answers have origin ``cs``, state 2 and the same ``correlationId``. A request without a stored
    answer gets status None. Only OCPP 1.6 payloads (``csChargingProfiles``) are understood; other
    rows are logged and skipped. Returns the requests oldest first.
    """
    answers: dict[str, tuple[str | None, datetime | None]] = {}
    requests: list[tuple[str, Mapping[str, Any], datetime, str]] = []
    for row in rows:
        origin, state = row.get("origin"), str(row.get("state"))
        correlation = str(row.get("correlationId"))
        frame = row.get("message")
        if origin == "cs" and state == "2":
            answers[correlation] = (_answer_status(frame), _time(row.get("timestamp")))
        elif origin == "csms" and state == "1":
            if not (isinstance(frame, list) and len(frame) >= 4 and isinstance(frame[3], Mapping)):
                logger.warning("OCPPMessages row %s is not a SetChargingProfile call frame; skipped", row.get("id"))
                continue
            when = _time(row.get("timestamp"))
            if when is None:
                logger.warning("OCPPMessages row %s has no timestamp; skipped", row.get("id"))
                continue
            requests.append((str(row.get("stationId")), frame[3], when, correlation))
    out: list[ProfileRecord] = []
    for station_id, payload, when, correlation in requests:
        if "csChargingProfiles" not in payload and "chargingProfile" not in payload:
            logger.warning("SetChargingProfile %s to %s carries no profile; skipped", correlation, station_id)
            continue
        try:
            out.append(_profile_from_request(station_id, payload, when, answers.get(correlation, (None, None))))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("SetChargingProfile %s to %s cannot be read (%s); skipped", correlation, station_id, exc)
    out.sort(key=lambda p: p.sent_at)
    return out


def profiles_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[ProfileRecord]:
    """Profiles from ``ChargingProfiles`` rows (``ACTIVE_CHARGING_PROFILES_QUERY``), all accepted.

    A row carries the database id of its transaction, not the OCPP one, so the EV is named after
    the station and connector (``evseId`` is the OCPP 1.6 connectorId).
    """
    out: list[ProfileRecord] = []
    for row in rows:
        schedules = row.get("ChargingSchedules") or []
        if not schedules:
            continue
        schedule = schedules[0]
        periods = schedule.get("chargingSchedulePeriod")
        try:
            when = _time(row.get("updatedAt")) or datetime.now(UTC)
            out.append(
                ProfileRecord(
                    station_id=str(row.get("stationId")),
                    connector_id=row.get("evseId"),
                    transaction_id=None,
                    profile_id=row.get("id"),
                    purpose=row.get("chargingProfilePurpose"),
                    unit=str(schedule.get("chargingRateUnit", "W")),
                    start_schedule=_time(schedule.get("startSchedule")),
                    periods=_periods(periods),
                    sent_at=when,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("ChargingProfiles row %s cannot be read (%s); skipped", row.get("databaseId"), exc)
    out.sort(key=lambda p: p.sent_at)
    return out
