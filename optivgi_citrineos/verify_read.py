"""Reading the verifier's data from CitrineOS: Hasura GraphQL, or plain SQL on its database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from optivgi.errors import CSMSConnectionError, CSMSResponseError
from optivgi_citrineos import queries
from optivgi_citrineos.verify_parse import profiles_from_messages, profiles_from_rows
from optivgi_citrineos.verify_records import _TX_PROFILE, RUN_GAP, VerifyData, latest_run

if TYPE_CHECKING:
    import httpx

    from optivgi_citrineos.verify_run import RunJudgement

logger = logging.getLogger(__name__)


def _graphql(client: httpx.Client, url: str, operation: str, variables: Mapping[str, Any]) -> Mapping[str, Any]:
    import httpx

    body = {"query": queries.QUERIES[operation], "variables": dict(variables), "operationName": operation}
    try:
        resp = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise CSMSConnectionError(f"Hasura at {url} cannot be reached: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise CSMSResponseError(f"Hasura at {url} answered HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        answer = resp.json()
    except ValueError as exc:
        raise CSMSResponseError(f"Hasura at {url} answered something that is not JSON: {resp.text[:200]}") from exc
    if not isinstance(answer, Mapping) or answer.get("errors") or not isinstance(answer.get("data"), Mapping):
        raise CSMSResponseError(f"Hasura refused {operation}: {str(answer)[:300]}")
    data: Mapping[str, Any] = answer["data"]
    return data


def fetch_verify_data(
    url: str,
    station_ids: Sequence[str],
    *,
    tenant_id: int = 1,
    admin_secret: str | None = None,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
) -> VerifyData:
    """Read the profile history of ``station_ids`` from Hasura at ``url`` (``/v1/graphql`` appended).

    Falls back to the stored ChargingProfiles rows alone when ``OCPPMessages`` cannot be queried
    (for instance when Hasura does not track it). Keeps the latest run only (:func:`latest_run`).

    Raises:
        CSMSConnectionError: Hasura cannot be reached.
        CSMSResponseError: Hasura answered with an error to the ChargingProfiles query.
    """
    import httpx

    endpoint = url if url.rstrip("/").endswith("/v1/graphql") else url.rstrip("/") + "/v1/graphql"
    headers = {"x-hasura-admin-secret": admin_secret} if admin_secret else {}
    own = client is None
    http = client if client is not None else httpx.Client(timeout=timeout_s, headers=headers)
    variables = {"stationIds": list(station_ids), "tenantId": tenant_id}
    try:
        stored = _graphql(http, endpoint, queries.ACTIVE_CHARGING_PROFILES_OPERATION, variables)
        rows = list(stored.get("ChargingProfiles") or [])
        try:
            log = _graphql(http, endpoint, queries.PROFILE_MESSAGES_OPERATION, variables)
        except CSMSResponseError as exc:
            logger.warning("OCPPMessages unreadable (%s); judging the stored ChargingProfiles rows only", exc)
            history, from_log = profiles_from_rows(rows), False
        else:
            history, from_log = profiles_from_messages(log.get("OCPPMessages") or []), True
    finally:
        if own:
            http.close()
    history, ignored = latest_run(history)
    return VerifyData(tuple(history), stored_rows=len(rows), from_log=from_log, ignored_runs=ignored)


def fetch_verify_data_sql(
    dsn: str,
    station_ids: Sequence[str],
    *,
    tenant_id: int = 1,
    site_limit_kw: float,
    max_kw: Callable[[str, int], float],
    now: datetime | None = None,
    max_starved_s: float | None = None,
    first_profile_s: float | None = None,
    voltage: float = 240.0,
    timeout_s: float = 10.0,
) -> tuple[VerifyData, RunJudgement]:
    """Read the profile history and the sessions of ``station_ids`` with plain SQL and judge the run.

    The run is the latest one of the profile history (:func:`latest_run`); its sessions are those
    that started at most :data:`RUN_GAP` before its first SetChargingProfile. ``max_kw(station,
    connector)`` is a car's own maximum (the EVSE number for OCPP 2.0.1).

    Raises:
        CSMSConnectionError: the database cannot be reached.
        CSMSResponseError: a query failed.
    """
    from optivgi_citrineos import verify_run, verify_sql

    now = now or datetime.now(UTC)
    rows = verify_sql.read_run_rows(dsn, station_ids, tenant_id=tenant_id, since=now - timedelta(days=1),
                                    timeout_s=timeout_s)
    history, ignored = latest_run(profiles_from_messages(rows.messages))
    data = VerifyData(tuple(history), stored_rows=len(rows.profiles), from_log=True, ignored_runs=ignored)
    sessions = verify_sql.sessions_from_rows(rows, max_kw)
    if history:
        begin = min(p.sent_at for p in history) - RUN_GAP
        sessions = [s for s in sessions if s.start >= begin]
    first: dict[str, datetime] = {}
    for p in data.accepted:
        if p.purpose == _TX_PROFILE and p.transaction_id is not None:
            first.setdefault(p.ev_key, p.sent_at)
    # The site "has room" for a car while it is at least 6 A (the least a car charges at) below its limit.
    options: dict[str, float] = {"min_kw": 6 * voltage / 1000}
    if max_starved_s is not None:
        options["max_starved_s"] = max_starved_s
    if first_profile_s is not None:
        options["first_profile_s"] = first_profile_s
    judgement = verify_run.judge_run(sessions, first, site_limit_kw, now=now, started_at=rows.started_at(),
                                     **options)
    return data, judgement


# --- plot ----------------------------------------------------------------------------------------
