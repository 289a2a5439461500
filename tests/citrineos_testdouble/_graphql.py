"""A Hasura-like GraphQL endpoint that answers the documents of :mod:`optivgi_citrineos.queries`.

It does not parse GraphQL. A request's document is normalised (comments, commas and insignificant
whitespace removed) and looked up among the known documents; each one is answered by a SQL query
that builds Hasura's JSON in PostgreSQL, so timestamps, numbers and JSON columns come out exactly
as Hasura renders them. Anything else gets a Hasura-style ``validation-failed`` error.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from citrineos_testdouble._db import Store
from citrineos_testdouble._http import HttpRequest, HttpResponse, json_response
from optivgi_citrineos import queries

logger = logging.getLogger(__name__)

_PUNCT = r"[{}()\[\]:!=@$|&]"


def normalize_document(document: str) -> str:
    """Canonical text of a GraphQL document (no comments, commas or optional whitespace)."""
    text = re.sub(r"#[^\n]*", " ", document)
    text = text.replace(",", " ")
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(rf"\s*({_PUNCT})\s*", r"\1", text)
    # "$" binds to the following name, "..." never occurs in the known documents.
    return text


_SQL_ACTIVE_SESSIONS = """
SELECT coalesce(json_agg(q.x ORDER BY q.s, q.t), '[]'::json) AS result FROM (
  SELECT t."stationId" AS s, t."transactionId" AS t, json_build_object(
    'id', t.id,
    'stationId', t."stationId",
    'transactionId', t."transactionId",
    'isActive', t."isActive",
    'startTime', t."startTime",
    'meterStart', t."meterStart",
    'Connector', (SELECT json_build_object('id', c.id, 'connectorId', c."connectorId")
                  FROM "Connectors" c WHERE c.id = t."connectorId"),
    'Evse', (SELECT json_build_object('id', e.id, 'evseTypeId', e."evseTypeId")
             FROM "Evses" e WHERE e.id = t."evseId"),
    'Authorization', (SELECT json_build_object('idToken', a."idToken")
                      FROM "Authorizations" a WHERE a.id = t."authorizationId"),
    'MeterValues', coalesce((
        SELECT json_agg(json_build_object('timestamp', m."timestamp", 'sampledValue', m."sampledValue")
                        ORDER BY m."timestamp" DESC)
        FROM (SELECT * FROM "MeterValues" mv WHERE mv."transactionDatabaseId" = t.id
              ORDER BY mv."timestamp" DESC NULLS LAST, mv.id DESC LIMIT 1) m), '[]'::json),
    'ChargingStation', (
        SELECT json_build_object(
          'isOnline', cs."isOnline",
          'LatestStatusNotifications', coalesce((
              SELECT json_agg(json_build_object('StatusNotification', (
                  SELECT json_build_object('evseId', sn."evseId", 'connectorId', sn."connectorId",
                                           'connectorStatus', sn."connectorStatus",
                                           'timestamp', sn."timestamp")
                  FROM "StatusNotifications" sn WHERE sn.id = l."statusNotificationId")) ORDER BY l.id)
              FROM "LatestStatusNotifications" l WHERE l."stationId" = cs.id), '[]'::json))
        FROM "ChargingStations" cs WHERE cs.id = t."stationId")
  ) AS x
  FROM "Transactions" t
  WHERE t."isActive" = true AND t."stationId" = ANY(%(stationIds)s) AND t."tenantId" = %(tenantId)s
) q
"""

_SQL_LATEST_STATUS = """
SELECT coalesce(json_agg(q.x ORDER BY q.s, q.i), '[]'::json) AS result FROM (
  SELECT l."stationId" AS s, l.id AS i, json_build_object(
    'stationId', l."stationId",
    'StatusNotification', (SELECT json_build_object('connectorId', sn."connectorId",
                                                    'connectorStatus', sn."connectorStatus",
                                                    'errorCode', sn."errorCode",
                                                    'timestamp', sn."timestamp")
                           FROM "StatusNotifications" sn WHERE sn.id = l."statusNotificationId")
  ) AS x
  FROM "LatestStatusNotifications" l
  WHERE l."stationId" = ANY(%(stationIds)s) AND l."tenantId" = %(tenantId)s
) q
"""

_SQL_STATUS_HISTORY = """
SELECT coalesce(json_agg(q.x ORDER BY q.ts DESC, q.i DESC), '[]'::json) AS result FROM (
  SELECT s."timestamp" AS ts, s.id AS i, json_build_object(
    'id', s.id, 'stationId', s."stationId", 'connectorId', s."connectorId",
    'connectorStatus', s."connectorStatus", 'errorCode', s."errorCode", 'timestamp', s."timestamp"
  ) AS x
  FROM "StatusNotifications" s
  WHERE s."stationId" = ANY(%(stationIds)s) AND s."tenantId" = %(tenantId)s
  ORDER BY s."timestamp" DESC, s.id DESC
  LIMIT %(limit)s
) q
"""

_SQL_ACTIVE_PROFILES = """
SELECT coalesce(json_agg(q.x ORDER BY q.s, q.i), '[]'::json) AS result FROM (
  SELECT p."stationId" AS s, p.id AS i, json_build_object(
    'databaseId', p."databaseId", 'stationId', p."stationId", 'id', p.id,
    'chargingProfilePurpose', p."chargingProfilePurpose", 'chargingProfileKind', p."chargingProfileKind",
    'stackLevel', p."stackLevel", 'isActive', p."isActive", 'evseId', p."evseId",
    'transactionDatabaseId', p."transactionDatabaseId", 'chargingLimitSource', p."chargingLimitSource",
    'updatedAt', p."updatedAt",
    'ChargingSchedules', coalesce((
        SELECT json_agg(json_build_object('chargingRateUnit', cs."chargingRateUnit",
                                          'startSchedule', cs."startSchedule",
                                          'duration', cs.duration,
                                          'chargingSchedulePeriod', cs."chargingSchedulePeriod")
                        ORDER BY cs."databaseId")
        FROM "ChargingSchedules" cs WHERE cs."chargingProfileDatabaseId" = p."databaseId"), '[]'::json)
  ) AS x
  FROM "ChargingProfiles" p
  WHERE p."isActive" = true AND p."stationId" = ANY(%(stationIds)s) AND p."tenantId" = %(tenantId)s
) q
"""

_SQL_PROFILE_MESSAGES = """
SELECT coalesce(json_agg(q.x ORDER BY q.i), '[]'::json) AS result FROM (
  SELECT m.id AS i, json_build_object(
    'id', m.id, 'stationId', m."stationId", 'correlationId', m."correlationId", 'origin', m.origin,
    'state', m.state, 'message', m.message, 'timestamp', m."timestamp"
  ) AS x
  FROM "OCPPMessages" m
  WHERE m.action = 'SetChargingProfile' AND m."stationId" = ANY(%(stationIds)s) AND m."tenantId" = %(tenantId)s
) q
"""

# operation name -> (root field, SQL, variables: name -> (GraphQL type, python check))
_OPERATIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    queries.ACTIVE_SESSIONS_OPERATION: (
        "Transactions",
        _SQL_ACTIVE_SESSIONS,
        {"stationIds": "[String!]!", "tenantId": "Int!"},
    ),
    queries.LATEST_STATUS_OPERATION: (
        "LatestStatusNotifications",
        _SQL_LATEST_STATUS,
        {"stationIds": "[String!]!", "tenantId": "Int!"},
    ),
    queries.STATUS_HISTORY_OPERATION: (
        "StatusNotifications",
        _SQL_STATUS_HISTORY,
        {"stationIds": "[String!]!", "tenantId": "Int!", "limit": "Int!"},
    ),
    queries.ACTIVE_CHARGING_PROFILES_OPERATION: (
        "ChargingProfiles",
        _SQL_ACTIVE_PROFILES,
        {"stationIds": "[String!]!", "tenantId": "Int!"},
    ),
    queries.PROFILE_MESSAGES_OPERATION: (
        "OCPPMessages",
        _SQL_PROFILE_MESSAGES,
        {"stationIds": "[String!]!", "tenantId": "Int!"},
    ),
}

_KNOWN = {normalize_document(doc): name for name, doc in queries.QUERIES.items()}


def _error(message: str, code: str = "validation-failed", path: str = "$") -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"path": path, "code": code}}]}


def _check_variable(name: str, gql_type: str, value: Any) -> str | None:
    if value is None:
        return f'expecting a value for non-nullable variable: "{name}"'
    if gql_type == "Int!":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"parsing Int failed, expected Int, but encountered {type(value).__name__}"
    elif gql_type == "[String!]!":
        if isinstance(value, str):
            return None  # GraphQL input coercion turns a single value into a one-element list
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "parsing Text failed, expected String"
    return None


async def handle_graphql(store: Store, request: HttpRequest) -> HttpResponse:
    """Answer one POST to the GraphQL endpoint."""
    if request.method != "POST":
        return json_response(405, {"code": "method-not-allowed", "error": "only POST is supported", "path": "$"})
    try:
        body = json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return json_response(400, {"code": "invalid-json", "error": f"Error in $: {exc}", "path": "$"})
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return json_response(200, {"code": "parse-failed", "error": "the key 'query' was not present", "path": "$"})
    operation = _KNOWN.get(normalize_document(body["query"]))
    if operation is None:
        return json_response(200, _error("the double of Hasura only answers the documents of queries.py"))
    wanted = body.get("operationName")
    if wanted is not None and wanted != operation:
        return json_response(200, _error(f'no such operation found in the document: "{wanted}"'))
    root, sql, variables = _OPERATIONS[operation]
    given = body.get("variables") or {}
    if not isinstance(given, dict):
        return json_response(200, _error("variables must be an object", code="parse-failed"))
    params: dict[str, Any] = {}
    for name, gql_type in variables.items():
        problem = _check_variable(name, gql_type, given.get(name))
        if problem is not None:
            return json_response(200, _error(problem, path=f"$.variableValues.{name}"))
        value = given[name]
        params[name] = [value] if gql_type.startswith("[") and isinstance(value, str) else value
    rows = await store.query_json(sql, params)
    return json_response(200, {"data": {root: rows if rows is not None else []}})
