"""Read queries for the CitrineOS 1.8.3 database, as GraphQL documents for Hasura and as plain SQL.

CitrineOS 1.8.3 has no REST endpoint that lists active sessions, so the integration reads them from
CitrineOS's PostgreSQL tables, either through Hasura (which exposes each table as a root field named
after the table, with relationships named after the foreign keys) or directly with SQL.

Every GraphQL document is sent as ``{"query": <document>, "variables": {...}, "operationName": <name>}``
and Hasura answers ``{"data": {...}}`` or ``{"errors": [{"message", "extensions": {"path", "code"}}]}``.
Hasura renders ``timestamptz`` columns as ISO 8601 strings with an offset
(``"2026-11-24T00:41:08.95+00:00"``), ``numeric``/``integer`` columns as JSON numbers, ``json``/``jsonb``
columns as JSON values, and a missing object relationship as ``null``.

Variables common to the documents:

- ``stationIds``: ``[String!]!``, the OCPP station ids (``ChargingStations.id``) to read;
- ``tenantId``: ``Int!``, the CitrineOS tenant (1 on a default installation).

Result shapes
-------------

``ACTIVE_SESSIONS_QUERY`` (operation ``ActiveSessions``)::

    {"Transactions": [            # one per active transaction, ordered by stationId, transactionId
        {"id": 6,                                  # Transactions.id (database id)
         "stationId": "LAB-STATION-01",
         "transactionId": "2",                     # OCPP 1.6 id as a string, unique per station only
         "isActive": true,
         "startTime": "2026-11-24T00:41:08.95+00:00",   # may be null
         "meterStart": 5000,                       # Wh, number (may be null)
         "Connector": {"id": 6, "connectorId": 1}, # connectorId = OCPP connector number; may be null
         "Evse": null,                             # 2.0.1: {"id": 3, "evseTypeId": 1}, the OCPP EVSE id
         "Authorization": {"idToken": "LAB-TAG-01"},    # may be null
         "MeterValues": [                          # the latest row only (0 or 1 element)
             {"timestamp": "2026-11-24T00:41:19.071+00:00",
              "sampledValue": [{"value": 5030, "measurand": "Energy.Active.Import.Register",
                                "context": "Sample.Periodic", "location": "Outlet",
                                "unitOfMeasure": {"unit": "Wh", "multiplier": 0}}, ...]}],
         "ChargingStation": {                      # may be null
             "isOnline": true,                     # true/false, or null for a brand-new station
             "LatestStatusNotifications": [        # one per connector that reported a stored status
                 {"StatusNotification": {"connectorId": 1, "connectorStatus": "Charging",
                                         "timestamp": "2026-11-24T00:41:08.992+00:00"}}]}}]}

  The latest connector status of a session is the ``LatestStatusNotifications`` element whose
  ``StatusNotification.connectorId`` equals ``Connector.connectorId``. ``sampledValue`` values are
  numbers; a measurand without ``unitOfMeasure`` keeps its OCPP default unit.

``LATEST_STATUS_QUERY`` (operation ``LatestConnectorStatus``)::

    {"LatestStatusNotifications": [        # one per (station, connector) with a stored status
        {"stationId": "LAB-STATION-01",
         "StatusNotification": {"connectorId": 1, "connectorStatus": "Charging",
                                "errorCode": "NoError",
                                "timestamp": "2026-11-24T00:41:08.992+00:00"}}]}

``STATUS_HISTORY_QUERY`` (operation ``StatusHistory``, extra variable ``limit: Int!``)::

    {"StatusNotifications": [              # newest first, at most ``limit`` rows
        {"id": 34, "stationId": "LAB-STATION-01", "connectorId": 1, "connectorStatus": "Available",
         "errorCode": "NoError", "timestamp": "2026-11-24T00:41:39.217+00:00"}]}

``ACTIVE_CHARGING_PROFILES_QUERY`` (operation ``ActiveChargingProfiles``)::

    {"ChargingProfiles": [                 # rows with isActive true, ordered by stationId, id
        {"databaseId": 10, "stationId": "LAB-STATION-01", "id": 206,   # id = chargingProfileId
         "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute", "stackLevel": 1,
         "isActive": true, "evseId": 1, "transactionDatabaseId": 4, "chargingLimitSource": "CSO",
         "updatedAt": "2026-11-24T00:38:26.575+00:00",
         "ChargingSchedules": [{"chargingRateUnit": "A", "startSchedule": "2026-11-24T00:37:58Z",
                                "duration": null,
                                "chargingSchedulePeriod": [{"limit": 13, "startPeriod": 0,
                                                            "numberPhases": 1}]}]}]}

  ``isActive`` does not mean "in force on the charger": CitrineOS keeps it true after the
  transaction ends and sets it false on every profile of the station after any accepted
  ClearChargingProfile.

``ACTIVE_SESSIONS_SQL``
    Plain SQL (psycopg ``%(tenant_id)s`` placeholder) for a connection whose ``search_path`` holds
    CitrineOS's tables. One row per active transaction with the columns listed in
    ``ACTIVE_SESSIONS_SQL_COLUMNS``: ``transactionDatabaseId`` (int), ``stationId`` (str),
    ``transactionId`` (str), ``ocppConnectorId`` (int or None), ``ocppEvseId`` (the OCPP EVSE id
    of a 2.0.1 session, whose Connectors row has no connector number; int or None), ``idToken`` (str
    or None), ``startTime`` (datetime or None), ``meterStart`` (Decimal: Wh for 1.6, **kWh** for a
    2.0.1 session, as CitrineOS 1.8.3 stores it), ``lastMeterTimestamp``
    (datetime or None), ``lastSampledValue`` (list of dicts or None), ``lastConnectorStatus``
    (str or None), ``lastStatusTimestamp`` (datetime or None).
"""

from __future__ import annotations

__all__ = [
    "ACTIVE_CHARGING_PROFILES_OPERATION",
    "ACTIVE_CHARGING_PROFILES_QUERY",
    "ACTIVE_CHARGING_PROFILES_SQL",
    "ACTIVE_SESSIONS_OPERATION",
    "ACTIVE_SESSIONS_QUERY",
    "ACTIVE_SESSIONS_SQL",
    "ACTIVE_SESSIONS_SQL_COLUMNS",
    "LATEST_STATUS_OPERATION",
    "LATEST_STATUS_QUERY",
    "QUERIES",
    "STATUS_HISTORY_OPERATION",
    "STATUS_HISTORY_QUERY",
]

ACTIVE_SESSIONS_OPERATION = "ActiveSessions"
ACTIVE_SESSIONS_QUERY = """
query ActiveSessions($stationIds: [String!]!, $tenantId: Int!) {
  Transactions(
    where: {isActive: {_eq: true}, stationId: {_in: $stationIds}, tenantId: {_eq: $tenantId}}
    order_by: [{stationId: asc}, {transactionId: asc}]
  ) {
    id
    stationId
    transactionId
    isActive
    startTime
    meterStart
    Connector {
      id
      connectorId
    }
    Evse {
      id
      evseTypeId
    }
    Authorization {
      idToken
    }
    MeterValues(order_by: {timestamp: desc}, limit: 1) {
      timestamp
      sampledValue
    }
    ChargingStation {
      isOnline
      LatestStatusNotifications {
        StatusNotification {
          evseId
          connectorId
          connectorStatus
          timestamp
        }
      }
    }
  }
}
""".strip()

LATEST_STATUS_OPERATION = "LatestConnectorStatus"
LATEST_STATUS_QUERY = """
query LatestConnectorStatus($stationIds: [String!]!, $tenantId: Int!) {
  LatestStatusNotifications(
    where: {stationId: {_in: $stationIds}, tenantId: {_eq: $tenantId}}
    order_by: [{stationId: asc}]
  ) {
    stationId
    StatusNotification {
      connectorId
      connectorStatus
      errorCode
      timestamp
    }
  }
}
""".strip()

STATUS_HISTORY_OPERATION = "StatusHistory"
STATUS_HISTORY_QUERY = """
query StatusHistory($stationIds: [String!]!, $tenantId: Int!, $limit: Int!) {
  StatusNotifications(
    where: {stationId: {_in: $stationIds}, tenantId: {_eq: $tenantId}}
    order_by: [{timestamp: desc}, {id: desc}]
    limit: $limit
  ) {
    id
    stationId
    connectorId
    connectorStatus
    errorCode
    timestamp
  }
}
""".strip()

ACTIVE_CHARGING_PROFILES_OPERATION = "ActiveChargingProfiles"
ACTIVE_CHARGING_PROFILES_QUERY = """
query ActiveChargingProfiles($stationIds: [String!]!, $tenantId: Int!) {
  ChargingProfiles(
    where: {isActive: {_eq: true}, stationId: {_in: $stationIds}, tenantId: {_eq: $tenantId}}
    order_by: [{stationId: asc}, {id: asc}]
  ) {
    databaseId
    stationId
    id
    chargingProfilePurpose
    chargingProfileKind
    stackLevel
    isActive
    evseId
    transactionDatabaseId
    chargingLimitSource
    updatedAt
    ChargingSchedules {
      chargingRateUnit
      startSchedule
      duration
      chargingSchedulePeriod
    }
  }
}
""".strip()

#: Every GraphQL document by operation name.
QUERIES: dict[str, str] = {
    ACTIVE_SESSIONS_OPERATION: ACTIVE_SESSIONS_QUERY,
    LATEST_STATUS_OPERATION: LATEST_STATUS_QUERY,
    STATUS_HISTORY_OPERATION: STATUS_HISTORY_QUERY,
    ACTIVE_CHARGING_PROFILES_OPERATION: ACTIVE_CHARGING_PROFILES_QUERY,
}

# The status lookup goes through StatusNotifications rather than LatestStatusNotifications because
# the recorded query does so; both give the same answer once a connector has reported.
ACTIVE_SESSIONS_SQL = """
SELECT t.id AS "transactionDatabaseId", t."stationId", t."transactionId", c."connectorId" AS "ocppConnectorId",
       e."evseTypeId" AS "ocppEvseId", a."idToken", t."startTime", t."meterStart",
       mv."timestamp" AS "lastMeterTimestamp", mv."sampledValue" AS "lastSampledValue",
       sn."connectorStatus" AS "lastConnectorStatus", sn."timestamp" AS "lastStatusTimestamp"
FROM "Transactions" t
LEFT JOIN "Connectors" c ON c.id = t."connectorId"
LEFT JOIN "Evses" e ON e.id = t."evseId"
LEFT JOIN "Authorizations" a ON a.id = t."authorizationId"
LEFT JOIN LATERAL (SELECT m."timestamp", m."sampledValue" FROM "MeterValues" m
                   WHERE m."transactionDatabaseId" = t.id ORDER BY m."timestamp" DESC LIMIT 1) mv ON true
LEFT JOIN LATERAL (SELECT s."connectorStatus", s."timestamp" FROM "StatusNotifications" s
                   WHERE s."stationId" = t."stationId" AND s."tenantId" = t."tenantId"
                     AND (s."connectorId" = c."connectorId"
                          OR (c."connectorId" IS NULL AND s."evseId" = e."evseTypeId"))
                   ORDER BY s."timestamp" DESC LIMIT 1) sn ON true
WHERE t."isActive" AND t."tenantId" = %(tenant_id)s
ORDER BY t."stationId", t."transactionId"
""".strip()

ACTIVE_SESSIONS_SQL_COLUMNS: tuple[str, ...] = (
    "transactionDatabaseId",
    "stationId",
    "transactionId",
    "ocppConnectorId",
    "ocppEvseId",
    "idToken",
    "startTime",
    "meterStart",
    "lastMeterTimestamp",
    "lastSampledValue",
    "lastConnectorStatus",
    "lastStatusTimestamp",
)

# --- Read by ``optivgi citrineos verify`` --------------------------------------------------------
#
# ``PROFILE_MESSAGES_QUERY`` (operation ``SetChargingProfileMessages``): every SetChargingProfile
# frame CitrineOS logged in ``OCPPMessages`` for the stations, oldest first. ChargingProfiles keeps
# only the last accepted profile per (station, chargingProfileId), so this log is the only stored
# history of what was sent and when::
#
#     {"OCPPMessages": [
#         {"id": 293, "stationId": "LAB-STATION-01", "correlationId": "93a65452-...",
#          "origin": "csms", "state": "1",                # the request, as sent to the charger
#          "message": [2, "93a65452-...", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {...}}],
#          "timestamp": "2026-11-24T00:37:56.554+00:00"},
#         {"id": 294, ..., "origin": "cs", "state": "2",  # the charger's answer (same correlationId)
#          "message": [3, "93a65452-...", {"status": "Accepted"}], ...}]}
#
# ``state`` is a string column; a CALLERROR answer is ``[4, id, code, description, details]``, and an
# answer that came after ``maxCallLengthSeconds`` is logged as action ``NoAction`` (so not listed).

PROFILE_MESSAGES_OPERATION = "SetChargingProfileMessages"
PROFILE_MESSAGES_QUERY = """
query SetChargingProfileMessages($stationIds: [String!]!, $tenantId: Int!) {
  OCPPMessages(
    where: {action: {_eq: "SetChargingProfile"}, stationId: {_in: $stationIds}, tenantId: {_eq: $tenantId}}
    order_by: [{id: asc}]
  ) {
    id
    stationId
    correlationId
    origin
    state
    message
    timestamp
  }
}
""".strip()

QUERIES[PROFILE_MESSAGES_OPERATION] = PROFILE_MESSAGES_QUERY
__all__ += ["PROFILE_MESSAGES_OPERATION", "PROFILE_MESSAGES_QUERY"]

#: Plain SQL for the profiles CitrineOS records as active on some stations (psycopg placeholders
#: ``%(tenant_id)s`` and ``%(station_ids)s``, a list), one row per profile in the shape of
#: ``ACTIVE_CHARGING_PROFILES_QUERY``'s rows (``ChargingSchedules`` a JSON list).
ACTIVE_CHARGING_PROFILES_SQL = """
SELECT p."databaseId", p."stationId", p.id, p."chargingProfilePurpose", p."chargingProfileKind",
       p."stackLevel", p."isActive", p."evseId", p."transactionDatabaseId", p."chargingLimitSource",
       p."updatedAt",
       coalesce((SELECT json_agg(json_build_object('chargingRateUnit', cs."chargingRateUnit",
                                                   'startSchedule', cs."startSchedule",
                                                   'duration', cs.duration,
                                                   'chargingSchedulePeriod', cs."chargingSchedulePeriod")
                                 ORDER BY cs."databaseId")
                 FROM "ChargingSchedules" cs WHERE cs."chargingProfileDatabaseId" = p."databaseId"),
                '[]'::json) AS "ChargingSchedules"
FROM "ChargingProfiles" p
WHERE p."isActive" AND p."tenantId" = %(tenant_id)s AND p."stationId" = ANY(%(station_ids)s)
ORDER BY p."stationId", p.id
""".strip()
