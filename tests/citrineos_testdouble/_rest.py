"""The double's REST API: CitrineOS 1.8.3's routes, validation and answers (a mixin of the double's core).

Answers follow the recordings in the contract's ``rest/`` and ``run2/rest/`` folders; the OCPP 2.0.1
routes check the database first, as CitrineOS does (``Evse N not found.``, ``Transaction T not found
on station S.``) and forward the call only when both are known.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from citrineos_testdouble import _schemas as schemas
from citrineos_testdouble._amqp import charger_message
from citrineos_testdouble._http import HttpRequest, HttpResponse, json_response
from citrineos_testdouble._jsonutil import iso_ms, js_value, now_utc
from citrineos_testdouble._ocpp import OutgoingCall, StationSession

if TYPE_CHECKING:
    from citrineos_testdouble._db import Store
    from citrineos_testdouble._db201 import Store201
    from citrineos_testdouble._http import HttpServer
    from citrineos_testdouble.double import DoubleConfig

__all__ = ["ROUTES", "RestRoutes"]

logger = logging.getLogger(__name__)

# (method, path) -> handler name on _Core
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/ocpp/1.6/smartcharging/setChargingProfile"): "_rest_set_charging_profile_16",
    ("POST", "/ocpp/1.6/smartcharging/clearChargingProfile"): "_rest_clear_charging_profile_16",
    ("POST", "/ocpp/1.6/smartcharging/getCompositeSchedule"): "_rest_get_composite_schedule_16",
    ("POST", "/ocpp/1.6/configuration/triggerMessage"): "_rest_trigger_message_16",
    ("POST", "/ocpp/2.0.1/smartcharging/setChargingProfile"): "_rest_set_charging_profile_201",
    ("POST", "/ocpp/2.0.1/smartcharging/clearChargingProfile"): "_rest_clear_charging_profile_201",
    ("POST", "/ocpp/2.0.1/reporting/getBaseReport"): "_rest_get_base_report_201",
    ("GET", "/data/transactions/transaction"): "_rest_get_transaction",
    ("GET", "/data/configuration/boot"): "_rest_get_boot",
    ("DELETE", "/data/ocpprouter/connection"): "_rest_delete_connection",
    ("GET", "/data/ocpprouter/websocket"): "_rest_list_websockets",
    ("GET", "/data/ocpprouter/subscription"): "_rest_get_subscriptions",
    ("POST", "/data/ocpprouter/subscription"): "_rest_create_subscription",
    ("DELETE", "/data/ocpprouter/subscription"): "_rest_delete_subscription",
}

_TRANSACTION_KEYS = (
    "startTime",
    "endTime",
    "id",
    "locationId",
    "stationId",
    "evseId",
    "connectorId",
    "authorizationId",
    "tariffId",
    "transactionId",
    "isActive",
    "chargingState",
    "timeSpentCharging",
    "meterStart",
    "totalKwh",
    "stoppedReason",
    "remoteStartId",
    "totalCost",
    "customData",
    "tenantId",
    "createdAt",
    "updatedAt",
)
_BOOT_KEYS = (
    "lastBootTime",
    "id",
    "heartbeatInterval",
    "bootRetryInterval",
    "status",
    "statusInfo",
    "getBaseReportOnPending",
    "variablesRejectedOnLastBoot",
    "bootWithRejectedVariables",
    "changeConfigurationsOnPending",
    "getConfigurationsOnPending",
    "tenantId",
    "createdAt",
    "updatedAt",
)


def _bad_request(message: str, code: str = "FST_ERR_VALIDATION") -> HttpResponse:
    return json_response(400, {"statusCode": 400, "code": code, "error": "Bad Request", "message": message})


def _empty() -> HttpResponse:
    # CitrineOS answers some routes with an empty body and no Content-Type.
    return HttpResponse(200, b"", content_type=None)


def _row_json(row: dict[str, Any], keys: Iterable[str], omit_null: tuple[str, ...] = ()) -> dict[str, Any]:
    """A database row as Sequelize renders it: ISO timestamps with ms, numeric columns as strings."""
    out: dict[str, Any] = {}
    for key in keys:
        value = row.get(key)
        if value is None and key in omit_null:
            continue
        if isinstance(value, dt.datetime):
            value = iso_ms(value)
        elif isinstance(value, Decimal):
            value = format(value, "f")
        out[key] = value
    return out


def _tenant_text(tenant: Any) -> str:
    value = js_value(tenant)
    return str(value)


class RestRoutes:
    """The REST handlers; the double's core provides the attributes declared here."""

    config: DoubleConfig
    store: Store
    store201: Store201
    sessions: dict[str, StationSession]
    ws_port: int
    rest: HttpServer

    def publish(self, headers: dict[str, Any], body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def handle_rest(self, request: HttpRequest) -> HttpResponse:
        name = ROUTES.get((request.method, request.path))
        if name is None:
            return json_response(
                404,
                {
                    "message": f"Route {request.method}:{request.target} not found",
                    "error": "Not Found",
                    "statusCode": 404,
                },
            )
        handler = getattr(self, name)
        response: HttpResponse = await handler(request)
        return response

    @staticmethod
    def _json_body(request: HttpRequest) -> tuple[Any, HttpResponse | None]:
        content_type = request.headers.get("content-type", "")
        if not request.body:
            if "application/json" in content_type:
                return None, _bad_request(
                    "Body cannot be empty when content-type is set to 'application/json'",
                    code="FST_ERR_CTP_EMPTY_JSON_BODY",
                )
            return None, None
        try:
            return json.loads(request.body), None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, _bad_request(
                "Body is not valid JSON but content-type is set to 'application/json'",
                code="FST_ERR_CTP_INVALID_JSON_BODY",
            )

    def _validated(
        self, request: HttpRequest, body_schema: schemas.Schema | None, query_schema: schemas.Schema
    ) -> tuple[Any, dict[str, Any], HttpResponse | None]:
        body: Any = None
        if body_schema is not None:
            body, error = self._json_body(request)
            if error is not None:
                return None, {}, error
            try:
                # Fastify validates the body before the query string.
                body = schemas.validate(body, body_schema, "body")
            except schemas.ValidationFailed as exc:
                return None, {}, _bad_request(str(exc))
        try:
            query = schemas.validate(dict(request.query), query_schema, "querystring")
        except schemas.ValidationFailed as exc:
            return None, {}, _bad_request(str(exc))
        return body, query, None

    async def _ocpp_call(
        self, request: HttpRequest, body_schema: schemas.Schema, action: str, event_group: str
    ) -> HttpResponse:
        body, query, error = self._validated(request, body_schema, schemas.OCPP_CALL_QUERY)
        if error is not None:
            return error
        identifiers = query["identifier"] if isinstance(query["identifier"], list) else [query["identifier"]]
        tenant = _tenant_text(query["tenantId"])
        payload = js_value(body)
        results: list[dict[str, Any]] = []
        for station_id in identifiers:
            key = f"{tenant}:{station_id}"
            session = self.sessions.get(key)
            if session is None:
                logger.error("Failed sending call. No connection found for identifier: %s", key)
                results.append({"success": False, "payload": f"No connection found for identifier: {key}"})
                continue
            self.send_call(session, action, payload, event_group, query.get("callbackUrl"))
            results.append({"success": True})
        return json_response(200, results)

    def send_call(
        self,
        session: StationSession,
        action: str,
        payload: dict[str, Any],
        event_group: str,
        callback_url: str | None = None,
    ) -> OutgoingCall:
        """Publish a CSMS call (csms, state 1) and queue it for the station's websocket."""
        call = OutgoingCall(
            correlation_id=str(uuid.uuid4()),
            action=action,
            payload=payload,
            callback_url=callback_url,
            queued_at=time.monotonic(),
        )
        stamp = iso_ms(now_utc())
        assert stamp is not None
        headers, message = charger_message(
            origin="csms",
            event_group=event_group,
            action=action,
            state=1,
            station_id=session.station_id,
            correlation_id=call.correlation_id,
            tenant_id=self.config.tenant_id,
            timestamp=stamp,
            payload=payload,
            protocol=session.protocol,
        )
        self.publish(headers, message)
        session.enqueue(call)
        return call

    async def _rest_set_charging_profile_16(self, request: HttpRequest) -> HttpResponse:
        return await self._ocpp_call(request, schemas.SET_CHARGING_PROFILE_16, "SetChargingProfile", "smartcharging")

    async def _rest_clear_charging_profile_16(self, request: HttpRequest) -> HttpResponse:
        return await self._ocpp_call(
            request, schemas.CLEAR_CHARGING_PROFILE_16, "ClearChargingProfile", "smartcharging"
        )

    async def _rest_get_composite_schedule_16(self, request: HttpRequest) -> HttpResponse:
        return await self._ocpp_call(
            request, schemas.GET_COMPOSITE_SCHEDULE_16, "GetCompositeSchedule", "smartcharging"
        )

    async def _rest_trigger_message_16(self, request: HttpRequest) -> HttpResponse:
        return await self._ocpp_call(request, schemas.TRIGGER_MESSAGE_16, "TriggerMessage", "configuration")

    async def _rest_set_charging_profile_201(self, request: HttpRequest) -> HttpResponse:
        body, query, error = self._validated(request, schemas.SET_CHARGING_PROFILE_201, schemas.OCPP_CALL_QUERY)
        if error is not None:
            return error
        payload = js_value(body)
        evse = payload["evseId"]
        tx = payload["chargingProfile"].get("transactionId") if isinstance(payload["chargingProfile"], dict) else None

        async def check(station_id: str) -> str | None:
            # CitrineOS checks its database before looking for the connection.
            if evse != 0 and not await self.store201.evse_known(station_id, int(evse)):
                return f"Evse {evse} not found."
            if tx is not None and await self.store.transaction_row(station_id, str(tx)) is None:
                return f"Transaction {tx} not found on station {station_id}."
            return None

        return await self._ocpp201_call(request, query, payload, "SetChargingProfile", "smartcharging", check)

    async def _rest_clear_charging_profile_201(self, request: HttpRequest) -> HttpResponse:
        body, query, error = self._validated(request, schemas.CLEAR_CHARGING_PROFILE_201, schemas.OCPP_CALL_QUERY)
        if error is not None:
            return error
        return await self._ocpp201_call(request, query, js_value(body), "ClearChargingProfile", "smartcharging")

    async def _rest_get_base_report_201(self, request: HttpRequest) -> HttpResponse:
        body, query, error = self._validated(request, schemas.GET_BASE_REPORT_201, schemas.OCPP_CALL_QUERY)
        if error is not None:
            return error
        return await self._ocpp201_call(request, query, js_value(body), "GetBaseReport", "reporting")

    async def _ocpp201_call(
        self,
        request: HttpRequest,
        query: dict[str, Any],
        payload: dict[str, Any],
        action: str,
        event_group: str,
        check: Any = None,
    ) -> HttpResponse:
        identifiers = query["identifier"] if isinstance(query["identifier"], list) else [query["identifier"]]
        tenant = _tenant_text(query["tenantId"])
        results: list[dict[str, Any]] = []
        for station_id in identifiers:
            problem = await check(station_id) if check is not None else None
            if problem is not None:
                results.append({"success": False, "payload": problem})
                continue
            key = f"{tenant}:{station_id}"
            session = self.sessions.get(key)
            if session is None:
                logger.error("Failed sending call. No connection found for identifier: %s", key)
                results.append({"success": False, "payload": f"No connection found for identifier: {key}"})
                continue
            self.send_call(session, action, payload, event_group, query.get("callbackUrl"))
            results.append({"success": True})
        return json_response(200, results)

    async def _rest_get_transaction(self, request: HttpRequest) -> HttpResponse:
        _, query, error = self._validated(request, None, schemas.TRANSACTION_QUERY)
        if error is not None:
            return error
        # The recorded CitrineOS ignores tenantId on this read.
        row = await self.store.transaction_row(query["stationId"], query["transactionId"])
        if row is None:
            return _empty()
        return json_response(200, _row_json(row, _TRANSACTION_KEYS, omit_null=("endTime",)))

    async def _rest_get_boot(self, request: HttpRequest) -> HttpResponse:
        _, query, error = self._validated(request, None, schemas.STATION_TENANT_QUERY)
        if error is not None:
            return error
        row = await self.store.get_boot(query["stationId"])
        return json_response(200, None if row is None else _row_json(row, _BOOT_KEYS))

    async def _rest_delete_connection(self, request: HttpRequest) -> HttpResponse:
        _, query, error = self._validated(request, None, schemas.CONNECTION_DELETE_QUERY)
        if error is not None:
            return error
        session = self.sessions.get(f"{_tenant_text(query['tenantId'])}:{query['stationId']}")
        if session is not None:
            await session.ws.close(1000, "Disconnected by admin request")
        return _empty()

    async def _rest_list_websockets(self, request: HttpRequest) -> HttpResponse:
        _, _query, error = self._validated(request, None, schemas.WEBSOCKET_LIST_QUERY)
        if error is not None:
            return error
        server = {
            "id": "0",
            "host": self.config.host,
            "port": self.ws_port,
            "pingInterval": 60,
            "protocol": "ocpp1.6",
            "securityProfile": 0,
            "allowUnknownChargingStations": True,
            "tenantId": self.config.tenant_id,
            "dynamicTenantResolution": True,
        }
        return json_response(200, [server])

    async def _rest_get_subscriptions(self, request: HttpRequest) -> HttpResponse:
        _, query, error = self._validated(request, None, schemas.STATION_TENANT_QUERY)
        if error is not None:
            return error
        rows = await self.store.subscriptions(query["stationId"])
        keys = (
            "id",
            "stationId",
            "onConnect",
            "onClose",
            "onMessage",
            "sentMessage",
            "messageRegexFilter",
            "url",
            "tenantId",
            "createdAt",
            "updatedAt",
        )
        return json_response(200, [_row_json(row, keys) for row in rows])

    async def _rest_create_subscription(self, request: HttpRequest) -> HttpResponse:
        body, query, error = self._validated(request, schemas.CREATE_SUBSCRIPTION, schemas.TENANT_QUERY)
        if error is not None:
            return error
        new_id = await self.store.create_subscription(body, int(query["tenantId"]))
        await self._refresh_subscriptions(body["stationId"])
        return json_response(200, new_id)

    async def _rest_delete_subscription(self, request: HttpRequest) -> HttpResponse:
        _, query, error = self._validated(request, None, schemas.SUBSCRIPTION_DELETE_QUERY)
        if error is not None:
            return error
        await self.store.delete_subscription(int(query["id"]))
        for session in self.sessions.values():
            session.subscriptions = [s for s in session.subscriptions if s["id"] != int(query["id"])]
        return json_response(200, True)

    async def _refresh_subscriptions(self, station_id: str) -> None:
        # CitrineOS loads subscriptions at connect time and every 3 minutes; the double refreshes
        # at once so a test does not have to reconnect.
        session = self.sessions.get(f"{self.config.tenant_id}:{station_id}")
        if session is not None:
            session.subscriptions = await self.store.subscriptions(station_id)
