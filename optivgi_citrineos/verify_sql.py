"""Reading what the verifier judges straight from CitrineOS's PostgreSQL (``CITRINEOS_DB_DSN``).

The same tables Hasura exposes, read with plain SQL on one read-only connection: the
SetChargingProfile history (``OCPPMessages``), the stored profiles (``ChargingProfiles``), and for
the whole-run checks the sessions (``Transactions`` with their ``Connectors``/``Evses`` rows), their
``MeterValues`` and the stations' ``StatusNotifications``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from optivgi.errors import ConfigurationError, CSMSConnectionError, CSMSResponseError
from optivgi_citrineos import queries
from optivgi_citrineos.verify_run import SessionTrace, power_kw_of

__all__ = ["PROFILE_MESSAGES_SQL", "RUN_SESSIONS_SQL", "RunRows", "read_run_rows", "sessions_from_rows"]

logger = logging.getLogger(__name__)

#: The SetChargingProfile calls and answers of some stations (``PROFILE_MESSAGES_QUERY`` in SQL).
PROFILE_MESSAGES_SQL = """
SELECT id, "stationId", "correlationId", origin, state, message, timestamp
FROM "OCPPMessages"
WHERE action = 'SetChargingProfile' AND "stationId" = ANY(%(station_ids)s) AND "tenantId" = %(tenant_id)s
ORDER BY id
""".strip()

#: Sessions of some stations started since a time: OCPP connector (1.6) or EVSE (2.0.1) number.
RUN_SESSIONS_SQL = """
SELECT t.id, t."stationId", t."transactionId", t."startTime", t."endTime", t."isActive",
       c."connectorId" AS "ocppConnectorId", e."evseTypeId" AS "evseTypeId"
FROM "Transactions" t
LEFT JOIN "Connectors" c ON c.id = t."connectorId"
LEFT JOIN "Evses" e ON e.id = t."evseId"
WHERE t."tenantId" = %(tenant_id)s AND t."stationId" = ANY(%(station_ids)s) AND t."startTime" >= %(since)s
ORDER BY t."startTime"
""".strip()

_METER_SQL = """
SELECT "transactionDatabaseId", timestamp, "sampledValue" FROM "MeterValues"
WHERE "transactionDatabaseId" = ANY(%(ids)s) ORDER BY timestamp, id
""".strip()

#: When CitrineOS logged each session's start: the 1.6 StartTransaction answer (it carries the new
#: transactionId) or the 2.0.1 TransactionEvent Started request.
_STARTS_SQL = """
SELECT "stationId", action, message, timestamp FROM "OCPPMessages"
WHERE "stationId" = ANY(%(station_ids)s) AND "tenantId" = %(tenant_id)s AND timestamp >= %(since)s
  AND ((action = 'StartTransaction' AND origin = 'csms' AND state = '2')
       OR (action = 'TransactionEvent' AND origin = 'cs' AND state = '1' AND message->3->>'eventType' = 'Started'))
ORDER BY id
""".strip()

_STATUS_SQL = """
SELECT "stationId", "connectorId", "evseId", "connectorStatus", timestamp FROM "StatusNotifications"
WHERE "stationId" = ANY(%(station_ids)s) AND timestamp >= %(since)s ORDER BY timestamp, id
""".strip()


@dataclass(frozen=True)
class RunRows:
    """The rows the verifier reads, as dicts."""

    messages: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    meters: list[dict[str, Any]]
    statuses: list[dict[str, Any]]
    starts: list[dict[str, Any]]

    def started_at(self) -> dict[str, datetime]:
        """``station:transactionId`` -> when CitrineOS logged the session's start (its own clock)."""
        out: dict[str, datetime] = {}
        for row in self.starts:
            frame = row.get("message")
            if not isinstance(frame, list) or row.get("timestamp") is None:
                continue
            tx = None
            if row.get("action") == "StartTransaction" and len(frame) >= 3 and isinstance(frame[2], Mapping):
                tx = frame[2].get("transactionId")
            elif len(frame) >= 4 and isinstance(frame[3], Mapping):
                info = frame[3].get("transactionInfo")
                tx = info.get("transactionId") if isinstance(info, Mapping) else None
            if tx is not None:
                out.setdefault(f"{row['stationId']}:{tx}", row["timestamp"])
        return out


def read_run_rows(
    dsn: str, station_ids: Sequence[str], *, tenant_id: int, since: datetime, timeout_s: float = 10.0
) -> RunRows:
    """Read every row the checks need from CitrineOS's database.

    Raises:
        ConfigurationError: psycopg is not installed.
        CSMSConnectionError: the database cannot be reached.
        CSMSResponseError: a query failed (for instance a table is missing).
    """
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        raise ConfigurationError("CITRINEOS_DB_DSN needs psycopg (v3): pip install 'psycopg[binary]'") from None
    params = {"station_ids": list(station_ids), "tenant_id": tenant_id, "since": since}
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout_s)), row_factory=dict_row) as conn:
            conn.read_only = True

            def rows(query: str, args: Mapping[str, Any]) -> list[dict[str, Any]]:
                return [dict(r) for r in conn.execute(query, dict(args)).fetchall()]

            messages = rows(PROFILE_MESSAGES_SQL, params)
            profiles = rows(queries.ACTIVE_CHARGING_PROFILES_SQL, params)
            sessions = rows(RUN_SESSIONS_SQL, params)
            meters = rows(_METER_SQL, {"ids": [s["id"] for s in sessions]})
            statuses = rows(_STATUS_SQL, params)
            starts = rows(_STARTS_SQL, params)
    except psycopg.OperationalError as exc:
        raise CSMSConnectionError(f"PostgreSQL cannot be reached: {exc}") from None
    except psycopg.Error as exc:
        raise CSMSResponseError(f"reading CitrineOS's tables failed: {exc}") from None
    for message in (*messages, *starts):
        # The JSON column may come back as text on some drivers' settings.
        if isinstance(message.get("message"), str):
            import json

            message["message"] = json.loads(message["message"])
    return RunRows(messages, profiles, sessions, meters, statuses, starts)


def sessions_from_rows(rows: RunRows, max_kw: Callable[[str, int], float]) -> list[SessionTrace]:
    """One :class:`SessionTrace` per session row; ``max_kw(station, connector)`` gives the car's maximum.

    A 1.6 session's outlet is its OCPP connector; a 2.0.1 session's is its EVSE (its Connectors row
    has no connector number), and its StatusNotifications are matched on ``evseId``.
    """
    power: dict[int, list[tuple[datetime, float]]] = {}
    for m in rows.meters:
        kw = power_kw_of(m.get("sampledValue"))
        if kw is not None and m.get("timestamp") is not None:
            power.setdefault(int(m["transactionDatabaseId"]), []).append((m["timestamp"], kw))
    out: list[SessionTrace] = []
    for s in rows.sessions:
        evse = s.get("evseTypeId")
        outlet = s.get("ocppConnectorId") if s.get("ocppConnectorId") is not None else evse
        if outlet is None or s.get("startTime") is None:
            logger.warning("session %s:%s has no outlet or start time; not judged", s.get("stationId"),
                           s.get("transactionId"))
            continue
        station = str(s["stationId"])
        by_evse = s.get("ocppConnectorId") is None
        statuses = tuple(
            (r["timestamp"], str(r["connectorStatus"])) for r in rows.statuses
            if r["stationId"] == station and r.get("timestamp") is not None
            and (r.get("evseId") if by_evse else r.get("connectorId")) == outlet
        )
        out.append(SessionTrace(
            key=f"{station}:{s['transactionId']}",
            start=s["startTime"],
            end=None if s.get("isActive") else s.get("endTime"),
            max_kw=max_kw(station, int(outlet)),
            power=tuple(power.get(int(s["id"]), [])),
            statuses=statuses,
        ))
    return out
