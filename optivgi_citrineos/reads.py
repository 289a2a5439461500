"""The plugin's reads of CitrineOS's database (through Hasura, or plain SQL), as plain functions."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from optivgi.errors import ConfigurationError, CSMSConnectionError, CSMSResponseError
from optivgi_citrineos import queries
from optivgi_citrineos.client import CitrineOSClient
from optivgi_citrineos.fallbacks import ConnectorCensus
from optivgi_citrineos.sessions import SessionBook, SessionRow
from optivgi_citrineos.wire import ProfileInForce, profile_from_row

__all__ = ["read_connectors", "read_profiles_in_force", "read_sessions"]

logger = logging.getLogger(__name__)


def read_sessions(client: CitrineOSClient, book: SessionBook, stations: Sequence[str], deadline: float) -> list[
        SessionRow]:
    """The active sessions' rows (unreadable ones logged and kept by ``book`` as unknown).

    Raises:
        CSMSConnectionError: Hasura/PostgreSQL could not be reached.
        CSMSResponseError: it answered with an error.
    """
    cfg = client.config
    if cfg.graphql_url is not None:
        data = client.graphql(queries.ACTIVE_SESSIONS_OPERATION, queries.ACTIVE_SESSIONS_QUERY,
                              {"stationIds": list(stations), "tenantId": cfg.tenant_id}, deadline)
        transactions = data.get("Transactions") if isinstance(data, Mapping) else None
        if not isinstance(transactions, list):
            raise CSMSResponseError("Hasura's answer has no Transactions list", status_code=200)
        return book.rows_from_graphql(transactions)
    return book.rows_from_sql(client.sql_rows(queries.ACTIVE_SESSIONS_SQL, {"tenant_id": cfg.tenant_id},
                                              "session", deadline=deadline))


def read_connectors(client: CitrineOSClient, census: ConnectorCensus, stations: Sequence[str]) -> None:
    """Note the connectors CitrineOS has a status for (Hasura only; sessions and events add more)."""
    cfg = client.config
    if cfg.graphql_url is None:
        return
    try:
        data = client.graphql(queries.LATEST_STATUS_OPERATION, queries.LATEST_STATUS_QUERY,
                              {"stationIds": list(stations), "tenantId": cfg.tenant_id},
                              time.monotonic() + cfg.http_timeout_s)
    except (CSMSConnectionError, CSMSResponseError) as exc:
        logger.warning("could not read the connectors' status: %s", exc)
        return
    for row in (data.get("LatestStatusNotifications") or []) if isinstance(data, Mapping) else []:
        sn = (row or {}).get("StatusNotification") or {}
        if isinstance(row.get("stationId"), str) and isinstance(sn.get("connectorId"), int):
            census.see(row["stationId"], [sn["connectorId"]])


def read_profiles_in_force(client: CitrineOSClient, stations: Sequence[str], now: datetime) -> dict[
        str, list[ProfileInForce]]:
    """The profiles CitrineOS records as active, logged per station.

    That is what was probably sent, not what is in force (rows are missing for some accepted
    profiles and stay active after their transaction): the ledger starts from "unknown" anyway.
    """
    cfg = client.config
    try:
        if cfg.graphql_url is not None:
            data = client.graphql(queries.ACTIVE_CHARGING_PROFILES_OPERATION, queries.ACTIVE_CHARGING_PROFILES_QUERY,
                                  {"stationIds": list(stations), "tenantId": cfg.tenant_id},
                                  time.monotonic() + cfg.retry_budget_s)
            rows = data.get("ChargingProfiles") if isinstance(data, Mapping) else None
        else:
            rows = client.sql_rows(queries.ACTIVE_CHARGING_PROFILES_SQL,
                                   {"tenant_id": cfg.tenant_id, "station_ids": list(stations)}, "ChargingProfiles")
    except (CSMSConnectionError, CSMSResponseError, ConfigurationError) as exc:
        logger.warning("could not read the profiles in force: %s", exc)
        return {}
    found: dict[str, list[ProfileInForce]] = {}
    for raw in rows if isinstance(rows, list) else []:
        try:
            item = profile_from_row(raw, now)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            logger.debug("skipping a ChargingProfiles row (%s): %.200r", exc, raw)
            continue
        found.setdefault(item.station_id, []).append(item)
    for station, items in sorted(found.items()):
        logger.info("profiles CitrineOS holds for %s: %s", station, "; ".join(i.describe() for i in items))
    return found
