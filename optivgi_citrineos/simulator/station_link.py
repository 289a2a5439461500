"""The link of a simulated OCPP 1.6J station to its CSMS: supervised tasks, websocket, boot, calls, statuses."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import websockets
from ocpp.exceptions import (
    OCPPError,
    UnknownCallErrorCodeError,
)
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from optivgi_citrineos.simulator.clock import iso_ms
from optivgi_citrineos.simulator.records import Frame
from optivgi_citrineos.simulator.station_client import _Client
from optivgi_citrineos.simulator.station_meter import _MeteredStation
from optivgi_citrineos.simulator.station_parts import (
    _MAX_RESTARTS,
    _Connector,
)

if TYPE_CHECKING:
    from optivgi_citrineos.simulator.station import Station

logger = logging.getLogger(__name__)


class _LinkedStation(_MeteredStation):
    """A metered charge point connected to its CSMS (with backoff), booted and reporting."""

    # --- helpers -------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this station (cancelled on shutdown)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: task %s failed", self.station_id, task.get_name(), exc_info=task.exception())

    def supervise(self, factory: Callable[[], Coroutine[Any, Any, Any]], name: str) -> asyncio.Task[Any]:
        """Run ``factory()`` as a station task that is restarted (and logged) whenever it fails.

        A task that returns ends; one that raises is started again after a short backoff, up to
        :data:`_MAX_RESTARTS` times (a charger's firmware keeps its metering alive the same way).
        """

        async def keeper() -> None:
            restarts = 0
            while True:
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    restarts += 1
                    self.restarts += 1
                    if restarts > _MAX_RESTARTS:
                        logger.exception("%s: task %s failed %d times; giving up", self.station_id, name, restarts)
                        return
                    logger.exception("%s: task %s failed; restarting it (%d)", self.station_id, name, restarts)
                await self.clock.sleep(min(60.0, 2.0**restarts))

        return self.spawn(keeper(), name)

    def record(self, direction: str, text: str, action: str | None) -> None:
        """Keep a frame in the simulator's frame log."""
        self._hooks.record_frame(
            Frame(self.station_id, direction, self.clock.now(), dt.datetime.now(dt.UTC), text, action)
        )

    def kick_status(self) -> None:
        """Send StatusNotification for connectors whose status changed (in the background)."""
        if not self._ready.is_set():
            return
        for c in self.connectors.values():
            if c.status != c.reported and (c.sync_task is None or c.sync_task.done()):
                c.sync_task = self.spawn(self._sync_status(c), f"{self.station_id}-{c.connector_id}-status")

    # --- connection ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, boot and serve until cancelled, reconnecting with a doubling backoff."""
        delay = self.config.reconnect_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                async with connect(
                    self.url, subprotocols=[Subprotocol(self.subprotocol)], open_timeout=10, close_timeout=2
                ) as ws:
                    if ws.subprotocol != self.subprotocol:
                        # CitrineOS leaves such a socket open and silent (e.g. its 2.0.1 port): give up on it.
                        raise ConnectionError(
                            f"the server did not agree to subprotocol {self.subprotocol} (wrong port?)"
                        )
                    logger.info("%s: connected to %s", self.station_id, self.url)
                    attempt = 0
                    delay = self.config.reconnect_initial_s
                    await self._serve(ws)
                    logger.warning("%s: connection closed (%s)", self.station_id, ws.close_reason or ws.close_code)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                log = logger.warning if attempt <= 1 else logger.info
                log("%s: cannot reach %s (%s); retrying in %.0f s", self.station_id, self.url, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max_s)

    def _make_client(self, ws: ClientConnection) -> _Client:
        # Only a whole Station answers the CSMS's calls: every instance of this layer is one.
        return _Client(cast("Station", self), ws)

    async def _serve(self, ws: ClientConnection) -> None:
        client = self._make_client(ws)
        with self._lock:
            self._client = client
            self._connection = ws
            self.connected = True
        reader = asyncio.get_running_loop().create_task(client.start(), name=f"{self.station_id}-reader")
        booter = self.spawn(self._boot_and_heartbeat(client), f"{self.station_id}-boot")
        try:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await reader
        finally:
            client.closed.set()
            booter.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with self._lock:
                self._client = None
                self._connection = None
                self.connected = False
                self.booted = False
                self._online.clear()
                self._ready.clear()
                for c in self.connectors.values():
                    # Unknown to the CSMS after a reconnect: report every status again.
                    c.reported = None

    async def _boot(self, client: Any, request: Any) -> float:
        """Send ``request`` (a BootNotification) until it is accepted, waiting the interval the CSMS
        asks for between tries; then mark the station online. Returns the heartbeat interval [s]."""
        while True:
            result = await self._raw_call(client, request)
            if result is not None and result.status == "Accepted":
                break
            retry = result.interval if result is not None and result.interval > 0 else 10
            logger.warning("%s: BootNotification %s; retrying in %s s", self.station_id,
                           result.status if result is not None else "failed", retry)
            await asyncio.sleep(retry)
        interval: float = self.config.heartbeat_interval_s or (result.interval if result.interval > 0 else 60)
        with self._lock:
            self._online.set()
            self.advance(self.clock.now())
        return interval

    async def _boot_and_heartbeat(self, client: _Client) -> None:
        interval = await self._boot(client, call.BootNotification(
            charge_point_model=self.config.model,
            charge_point_vendor=self.config.vendor,
            charge_point_serial_number=self.station_id[:25],
        ))
        logger.info("%s: BootNotification accepted, heartbeat every %g s", self.station_id, interval)
        await self._call(call.StatusNotification(connector_id=0, error_code="NoError", status="Available",
                                                 timestamp=iso_ms(self.clock.now())))
        for c in self.connectors.values():
            await self._sync_status(c)
        with self._lock:
            # Booted once the first statuses are out too: a car plugged in from now on follows them.
            self.booted = True
        self._ready.set()
        while True:
            await asyncio.sleep(interval)
            await self._call(call.Heartbeat())

    async def _raw_call(self, client: _Client, payload: Any) -> Any:
        await client.idle.wait()
        name = type(payload).__name__
        # Schema validation stays on for the request and the answer (the library's default).
        sending = asyncio.ensure_future(client.call(payload, suppress=False, skip_schema_validation=False))
        closing = asyncio.ensure_future(client.closed.wait())
        try:
            await asyncio.wait({sending, closing}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            sending.cancel()
            raise
        finally:
            closing.cancel()
        if not sending.done():
            # The answer cannot come any more: do not wait the whole response timeout for it.
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sending
            logger.info("%s: %s got no answer, the connection closed", self.station_id, name)
            return None
        try:
            return sending.result()
        except OCPPError as exc:
            logger.warning("%s: %s answered with CALLERROR %s: %s", self.station_id, name,
                           type(exc).__name__, exc.description)
        except UnknownCallErrorCodeError as exc:
            # CitrineOS answers OCPP 1.6 stations with 2.0.1 codes (RpcFrameworkError "Call already
            # in progress"): the call failed like any other.
            logger.warning("%s: %s answered with a CALLERROR code this OCPP version does not define (%s)",
                           self.station_id, name, exc)
        except TimeoutError:
            logger.warning("%s: no answer to %s within %g s", self.station_id, name, self.config.response_timeout_s)
        except websockets.exceptions.ConnectionClosed:
            logger.info("%s: %s not sent, the connection closed", self.station_id, name)
        return None

    async def _call(self, payload: Any, *, wait_online: bool = False) -> Any:
        """Send a call once booted; None when it failed or (unless ``wait_online``) the station is offline.

        Transaction messages use ``wait_online``: a charger keeps them until it is back online.
        """
        while True:
            if not self._online.is_set():
                if not wait_online:
                    logger.debug("%s: offline, %s dropped", self.station_id, type(payload).__name__)
                    return None
                await self._online.wait()
            client = self._client
            if client is None:
                continue
            result = await self._raw_call(client, payload)
            if result is None and wait_online and self._client is not client:
                continue  # lost with the connection: send again on the new one
            return result

    async def _sync_status(self, c: _Connector) -> None:
        async with c.status_lock:
            while self._online.is_set() and c.reported != c.status:
                status = c.status
                result = await self._call(
                    call.StatusNotification(connector_id=c.connector_id, error_code="NoError", status=status,
                                            timestamp=iso_ms(self.clock.now()))
                )
                if result is None:
                    return
                c.reported = status

    # --- shutdown -------------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Close the websocket normally (code 1000)."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 3)

    async def close(self) -> None:
        """Cancel every task of this station."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
