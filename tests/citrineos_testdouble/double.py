"""CitrineOS 1.8.3 test double: OCPP 1.6J central system, REST API, Hasura-like GraphQL, RabbitMQ.

Start it from Python (it runs its servers in a background thread with its own asyncio loop)::

    with CitrineOSDouble() as double:
        ...  # connect charge points to f"{double.ws_url}/CP-1", call double.rest_url, ...

It stores what it sees in a private schema of a real PostgreSQL database (same tables as
CitrineOS, dropped on stop) and publishes on a real RabbitMQ broker the messages CitrineOS
publishes. See ``docs/citrineos-double.md`` for the recorded behaviour it reproduces.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from websockets.asyncio.server import Server, ServerConnection, serve

from citrineos_testdouble import _schemas as schemas
from citrineos_testdouble._amqp import AmqpPublisher, AmqpUnavailableError, charger_message
from citrineos_testdouble._db import DatabaseUnavailableError, Store
from citrineos_testdouble._graphql import handle_graphql
from citrineos_testdouble._http import (
    HttpFaults,
    HttpRequest,
    HttpResponse,
    HttpServer,
    json_response,
)
from citrineos_testdouble._jsonutil import iso_ms, js_value, now_utc
from citrineos_testdouble._ocpp import (
    OutgoingCall,
    RequestFaults,
    StationSession,
    regex_allows,
    station_id_from_path,
)

__all__ = ["AmqpUnavailableError", "CitrineOSDouble", "DatabaseUnavailableError", "DoubleConfig"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class DoubleConfig:
    """Settings of a :class:`CitrineOSDouble` (see its constructor for the meaning of each)."""

    host: str = "127.0.0.1"
    rest_port: int = 0
    ws_port: int = 0
    graphql_port: int = 0
    dsn: str = DEFAULT_DSN
    amqp_url: str = DEFAULT_AMQP_URL
    exchange: str = "citrineos"
    tenant_id: int = 1
    heartbeat_interval: int = 60
    max_call_length_s: float = 30.0
    max_caching_s: float = 30.0
    id_tags: tuple[str, ...] | None = None
    keep_schema: bool = False


# (method, path) -> handler name on _Core
_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/ocpp/1.6/smartcharging/setChargingProfile"): "_rest_set_charging_profile_16",
    ("POST", "/ocpp/1.6/smartcharging/clearChargingProfile"): "_rest_clear_charging_profile_16",
    ("POST", "/ocpp/1.6/smartcharging/getCompositeSchedule"): "_rest_get_composite_schedule_16",
    ("POST", "/ocpp/1.6/configuration/triggerMessage"): "_rest_trigger_message_16",
    ("POST", "/ocpp/2.0.1/smartcharging/setChargingProfile"): "_rest_set_charging_profile_201",
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


class _Core:
    """Everything that lives in the double's event loop."""

    def __init__(self, config: DoubleConfig, schema: str) -> None:
        self.config = config
        self.store = Store(config.dsn, schema, config.tenant_id)
        self.publisher = AmqpPublisher(config.amqp_url, config.exchange)
        self.sessions: dict[str, StationSession] = {}
        self.rest = HttpServer(self.handle_rest, config.host, config.rest_port, "REST")
        self.graphql = HttpServer(self.handle_graphql, config.host, config.graphql_port, "GraphQL")
        self.ws_server: Server | None = None
        self.ws_port = config.ws_port
        self._http: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.callbacks_sent = 0
        self.request_faults = RequestFaults()

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        if self.config.id_tags is not None:
            for tag in self.config.id_tags:
                await self.store.seed_authorization(tag)
        self._http = httpx.AsyncClient(timeout=10.0, headers={"User-Agent": "node"})
        self.ws_server = await serve(
            self._ws_handler,
            self.config.host,
            self.config.ws_port,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            select_subprotocol=_select_subprotocol,
            ping_interval=60,
        )
        self.ws_port = next(iter(self.ws_server.sockets)).getsockname()[1]
        await self.rest.start()
        await self.graphql.start()

    async def stop(self) -> None:
        await self.rest.stop()
        await self.graphql.stop()
        if self.ws_server is not None:
            self.ws_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws_server.wait_closed(), 3)
        for task in list(self._background):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
        await self.store.close(drop=not self.config.keep_schema)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- outputs ----------------------------------------------------------------------------------

    def publish(self, headers: dict[str, Any], body: dict[str, Any]) -> None:
        self.publisher.publish(headers, body)

    def callback(self, call: OutgoingCall, payload: Any) -> None:
        """POST the answer to the call's callbackUrl while it is still cached."""
        if not call.callback_url:
            return
        if time.monotonic() - call.queued_at > self.config.max_caching_s:
            return
        self.spawn(self._post(call.callback_url, payload))

    async def _post(self, url: str, payload: Any) -> None:
        if self._http is None:
            return
        try:
            await self._http.post(url, json=payload)
            self.callbacks_sent += 1
        except httpx.HTTPError as exc:
            # CitrineOS ignores the outcome of a callback as well.
            logger.info("callback to %s failed: %s", url, exc)

    async def webhook_message(
        self, session: StationSession, origin: str, frame: str, correlation_id: str, action: str, when: Any
    ) -> None:
        """Send a frame to the station's subscriptions (onMessage: received, sentMessage: sent)."""
        flag = "onMessage" if origin == "cs" else "sentMessage"
        for sub in session.subscriptions:
            if not sub.get(flag) or not regex_allows(sub.get("messageRegexFilter"), frame):
                continue
            body = {
                "stationId": session.station_id,
                "event": "message",
                "origin": origin,
                "message": frame,
                "info": {
                    "correlationId": correlation_id,
                    "origin": origin,
                    "timestamp": iso_ms(when),
                    "protocol": "ocpp1.6",
                    "action": action,
                },
            }
            self.spawn(self._post(sub["url"], body))

    def _webhook_event(self, session: StationSession, event: str) -> None:
        flag = "onConnect" if event == "connected" else "onClose"
        for sub in session.subscriptions:
            if sub.get(flag):
                self.spawn(self._post(sub["url"], {"stationId": session.station_id, "event": event}))

    # --- websocket --------------------------------------------------------------------------------

    async def _ws_handler(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request is not None else "/"
        station_id = station_id_from_path(path)
        if connection.subprotocol != "ocpp1.6" or not station_id:
            # CitrineOS accepts such a socket and never registers it: it stays open and silent.
            logger.warning("websocket %s without ocpp1.6 is left unregistered", path)
            with contextlib.suppress(Exception):
                async for _ in connection:
                    pass
            return
        session = StationSession(self, station_id, connection)
        previous = self.sessions.get(session.key)
        if previous is not None:
            await previous.ws.close(1000, "Replaced by a new connection")
        self.sessions[session.key] = session
        session.subscriptions = await self.store.subscriptions(station_id)
        await self.store.set_online(station_id, True)
        self._webhook_event(session, "connected")
        try:
            await session.run()
        finally:
            if self.sessions.get(session.key) is session:
                del self.sessions[session.key]
                with contextlib.suppress(Exception):
                    await self.store.set_online(station_id, False)
            self._webhook_event(session, "closed")

    # --- REST -------------------------------------------------------------------------------------

    async def handle_rest(self, request: HttpRequest) -> HttpResponse:
        name = _ROUTES.get((request.method, request.path))
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

    async def handle_graphql(self, request: HttpRequest) -> HttpResponse:
        if request.path not in ("/v1/graphql", "/v1/graphql/"):
            return json_response(404, {"code": "not-found", "error": "resource does not exist", "path": "$"})
        return await handle_graphql(self.store, request)

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
            call = OutgoingCall(
                correlation_id=str(uuid.uuid4()),
                action=action,
                payload=payload,
                callback_url=query.get("callbackUrl"),
                queued_at=time.monotonic(),
            )
            stamp = iso_ms(now_utc())
            assert stamp is not None
            headers, message = charger_message(
                origin="csms",
                event_group=event_group,
                action=action,
                state=1,
                station_id=station_id,
                correlation_id=call.correlation_id,
                tenant_id=self.config.tenant_id,
                timestamp=stamp,
                payload=payload,
            )
            self.publish(headers, message)
            session.enqueue(call)
            results.append({"success": True})
        return json_response(200, results)

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
        identifiers = query["identifier"] if isinstance(query["identifier"], list) else [query["identifier"]]
        # The double only has OCPP 1.6 stations, which never report 2.0.1 EVSEs to the device model.
        evse = js_value(body["evseId"])
        return json_response(200, [{"success": False, "payload": f"Evse {evse} not found."} for _ in identifiers])

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


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
    # Accept the handshake whatever is offered (CitrineOS does); only ocpp1.6 gets negotiated.
    return "ocpp1.6" if "ocpp1.6" in offered else None


class CitrineOSDouble:
    """A stand-in for CitrineOS 1.8.3 that speaks its OCPP 1.6J, REST, AMQP and Hasura interfaces.

    Args:
        host: interface to bind; keep the default 127.0.0.1.
        rest_port / ws_port / graphql_port: ports (0 picks a free one; read the ``*_url`` attributes).
        dsn: libpq connection string of the PostgreSQL database that receives the private schema.
        amqp_url: RabbitMQ URL; messages go to exchange ``exchange`` (type headers).
        tenant_id: the CitrineOS tenant of every station (1 by default, like CitrineOS).
        heartbeat_interval: interval given in the BootNotification answer.
        max_call_length_s: how long a CSMS call may wait for the charger's answer (CitrineOS: 30 s).
        max_caching_s: how long a callbackUrl stays usable after the REST call (CitrineOS: 30 s).
        id_tags: None accepts every idTag; a list seeds these tags as Accepted in ``Authorizations``
            and answers Invalid for every other tag (CitrineOS's behaviour with seeded tags).
        keep_schema: keep the schema after :meth:`stop` (for debugging).

    Raises (from :meth:`start`):
        DatabaseUnavailableError: PostgreSQL cannot be reached.
        AmqpUnavailableError: RabbitMQ cannot be reached.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        ws_port: int = 0,
        graphql_port: int = 0,
        dsn: str = DEFAULT_DSN,
        amqp_url: str = DEFAULT_AMQP_URL,
        exchange: str = "citrineos",
        tenant_id: int = 1,
        heartbeat_interval: int = 60,
        max_call_length_s: float = 30.0,
        max_caching_s: float = 30.0,
        id_tags: Iterable[str] | None = None,
        keep_schema: bool = False,
    ) -> None:
        if max_call_length_s <= 0:
            raise ValueError(f"max_call_length_s must be > 0, got {max_call_length_s}")
        self.config = DoubleConfig(
            host=host,
            rest_port=rest_port,
            ws_port=ws_port,
            graphql_port=graphql_port,
            dsn=dsn,
            amqp_url=amqp_url,
            exchange=exchange,
            tenant_id=tenant_id,
            heartbeat_interval=heartbeat_interval,
            max_call_length_s=max_call_length_s,
            max_caching_s=max_caching_s,
            id_tags=None if id_tags is None else tuple(id_tags),
            keep_schema=keep_schema,
        )
        #: Name of the PostgreSQL schema holding this instance's tables.
        self.schema = f"citrineos_double_{uuid.uuid4().hex[:10]}"
        self._core = _Core(self.config, self.schema)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> CitrineOSDouble:
        """Connect to PostgreSQL and RabbitMQ, create the schema and start listening."""
        if self._thread is not None:
            raise RuntimeError("the double is already running")
        self._core.publisher.start()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._core.start())
            except BaseException as exc:
                failure.append(exc)
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._core.store.close(drop=True))
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
                # Connection handlers still waiting for a peer that went away are cancelled
                # rather than destroyed with the loop.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="citrineos-double", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure or not ready.is_set():
            self._thread.join(timeout=5)
            self._thread = None
            self._core.publisher.stop()
            if failure:
                raise failure[0]
            raise RuntimeError("the double did not start within 30 s")
        logger.info("CitrineOS double: REST %s, OCPP %s, GraphQL %s", self.rest_url, self.ws_url, self.graphql_url)
        return self

    def stop(self) -> None:
        """Close every connection, drop the schema and stop the thread."""
        if self._thread is None or self._loop is None:
            return
        try:
            self.run(self._core.stop(), timeout=15)
        except Exception:
            logger.warning("stopping the double failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._core.publisher.stop()

    def __enter__(self) -> CitrineOSDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run a coroutine in the double's loop and return its result (for tests and tools)."""
        if self._loop is None:
            raise RuntimeError("the double is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- addresses --------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.config.host}:{self._core.rest.port}"

    @property
    def ws_url(self) -> str:
        """Base URL for charge points; connect to ``f"{ws_url}/{station_id}"`` with subprotocol ocpp1.6."""
        return f"ws://{self.config.host}:{self._core.ws_port}"

    @property
    def graphql_url(self) -> str:
        """The Hasura-like endpoint (``POST {"query", "variables", "operationName"}``)."""
        return f"http://{self.config.host}:{self._core.graphql.port}/v1/graphql"

    @property
    def dsn(self) -> str:
        """libpq connection string of the database; set ``search_path`` to :attr:`schema`."""
        return self.config.dsn

    @property
    def amqp_url(self) -> str:
        """The RabbitMQ URL the double publishes to."""
        return self.config.amqp_url

    @property
    def exchange(self) -> str:
        """The exchange the double publishes to (``citrineos``)."""
        return self.config.exchange

    @property
    def tenant_id(self) -> int:
        """Tenant of every station."""
        return self.config.tenant_id

    # --- faults and helpers -------------------------------------------------------------------

    @property
    def rest_faults(self) -> HttpFaults:
        """Fault injection for the REST API: ``fail_next``, ``hang_next``, ``refuse``, ``heal``."""
        return self._core.rest.faults

    @property
    def graphql_faults(self) -> HttpFaults:
        """Fault injection for the GraphQL endpoint (same methods as :attr:`rest_faults`)."""
        return self._core.graphql.faults

    def heal(self) -> None:
        """Clear every injected fault and listen again where refused."""
        self.rest_faults.heal()
        self.graphql_faults.heal()

    def connected_stations(self) -> list[str]:
        """Station ids with a registered OCPP 1.6 connection."""
        return sorted(session.station_id for session in list(self._core.sessions.values()))

    def disconnect(self, station_id: str, code: int = 1000, reason: str = "Disconnected by admin request") -> None:
        """Close a station's websocket from the CSMS side (as ``DELETE /data/ocpprouter/connection``)."""

        async def close() -> None:
            key = f"{self.config.tenant_id}:{station_id}"
            session = self._core.sessions.get(key)
            if session is not None:
                # Unregistered at once, as CitrineOS does: a frame the session is still handling
                # must not keep the station looking connected.
                del self._core.sessions[key]
                await session.ws.close(code, reason)
                with contextlib.suppress(Exception):
                    await self._core.store.set_online(station_id, False)

        self.run(close())

    def fail_requests(
        self,
        action: str,
        *,
        station_id: str | None = None,
        count: int | None = 1,
        code: str = "RpcFrameworkError",
        description: str = "Call already in progress",
    ) -> None:
        """Answer the next ``count`` ``action`` requests of a station (None: any) with a CALLERROR.

        ``count=None`` answers every such request until :meth:`clear_request_faults`. The default
        is the CALLERROR CitrineOS 1.8.3 sends a busy station (also to OCPP 1.6 stations, which do
        not define the code). Such a request is neither published nor stored, as CitrineOS does.
        """
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1 or None, got {count}")

        async def add() -> None:
            self._core.request_faults.add(station_id, action, count, code, description)

        self.run(add())

    def clear_request_faults(self) -> int:
        """Stop injecting request CALLERRORs; returns how many were injected so far."""

        async def clear() -> int:
            self._core.request_faults.clear()
            return self._core.request_faults.injected

        return self.run(clear())

    def seed_id_tag(self, id_tag: str, status: str = "Accepted") -> None:
        """Insert or update an ``Authorizations`` row (status Accepted, Blocked, Invalid, ...)."""
        self.run(self._core.store.seed_authorization(id_tag, status))

    def flush_amqp(self, timeout: float = 5.0) -> None:
        """Wait until every message so far has been handed to RabbitMQ."""
        self._core.publisher.flush(timeout)
