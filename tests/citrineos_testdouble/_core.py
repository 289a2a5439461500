"""What lives in the CitrineOS double's event loop: its settings, stores, servers and outputs.

:class:`~citrineos_testdouble.double.CitrineOSDouble` runs it in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.server import Server, ServerConnection, serve

from citrineos_testdouble._amqp import AmqpPublisher
from citrineos_testdouble._db import Store
from citrineos_testdouble._db201 import Store201
from citrineos_testdouble._graphql import handle_graphql
from citrineos_testdouble._http import (
    HttpRequest,
    HttpResponse,
    HttpServer,
    json_response,
)
from citrineos_testdouble._jsonutil import iso_ms
from citrineos_testdouble._ocpp import (
    OutgoingCall,
    RequestFaults,
    StationSession,
    regex_allows,
    station_id_from_path,
)
from citrineos_testdouble._ocpp201 import StationSession201
from citrineos_testdouble._rest import RestRoutes

__all__ = ["DEFAULT_AMQP_URL", "DEFAULT_DSN", "DoubleConfig"]

logger = logging.getLogger(__name__)

DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class DoubleConfig:
    """Settings of a :class:`CitrineOSDouble` (see its constructor for the meaning of each)."""

    host: str = "127.0.0.1"
    rest_port: int = 0
    ws_port: int = 0
    ws201_port: int = 0
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
    smart_charging_on_needs: bool = True


class _Core(RestRoutes):
    """Everything that lives in the double's event loop."""

    def __init__(self, config: DoubleConfig, schema: str) -> None:
        self.config = config
        self.store = Store(config.dsn, schema, config.tenant_id)
        self.store201 = Store201(self.store)
        self.publisher = AmqpPublisher(config.amqp_url, config.exchange)
        self.sessions: dict[str, StationSession] = {}
        self.rest = HttpServer(self.handle_rest, config.host, config.rest_port, "REST")
        self.graphql = HttpServer(self.handle_graphql, config.host, config.graphql_port, "GraphQL")
        self.ws_server: Server | None = None
        self.ws201_server: Server | None = None
        self.ws_port = config.ws_port
        self.ws201_port = config.ws201_port
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
        # OCPP 2.0.1 on its own port, as CitrineOS (8081 beside 1.6 on 8092).
        self.ws201_server = await serve(
            self._ws201_handler,
            self.config.host,
            self.config.ws201_port,
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            select_subprotocol=_select_subprotocol_201,
            ping_interval=60,
        )
        self.ws201_port = next(iter(self.ws201_server.sockets)).getsockname()[1]
        await self.rest.start()
        await self.graphql.start()

    async def stop(self) -> None:
        await self.rest.stop()
        await self.graphql.stop()
        for server in (self.ws_server, self.ws201_server):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 3)
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
                    "protocol": session.protocol,
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

    async def _ws201_handler(self, connection: ServerConnection) -> None:
        await self._ws_handler(connection, "ocpp2.0.1")

    async def _ws_handler(self, connection: ServerConnection, protocol: str = "ocpp1.6") -> None:
        path = connection.request.path if connection.request is not None else "/"
        station_id = station_id_from_path(path)
        if connection.subprotocol != protocol or not station_id:
            # CitrineOS accepts such a socket and never registers it: it stays open and silent.
            logger.warning("websocket %s without %s is left unregistered", path, protocol)
            with contextlib.suppress(Exception):
                async for _ in connection:
                    pass
            return
        kind = StationSession201 if protocol == "ocpp2.0.1" else StationSession
        session = kind(self, station_id, connection)
        previous = self.sessions.get(session.key)
        if previous is not None:
            await previous.ws.close(1000, "Replaced by a new connection")
        self.sessions[session.key] = session
        session.subscriptions = await self.store.subscriptions(station_id)
        await self.store.set_online(station_id, True, protocol)
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

    async def handle_graphql(self, request: HttpRequest) -> HttpResponse:
        if request.path not in ("/v1/graphql", "/v1/graphql/"):
            return json_response(404, {"code": "not-found", "error": "resource does not exist", "path": "$"})
        return await handle_graphql(self.store, request)


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
    # Accept the handshake whatever is offered (CitrineOS does); only ocpp1.6 gets negotiated.
    return "ocpp1.6" if "ocpp1.6" in offered else None


def _select_subprotocol_201(connection: ServerConnection, offered: Any) -> Any:
    return "ocpp2.0.1" if "ocpp2.0.1" in offered else None
