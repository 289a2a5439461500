"""One simulated OCPP 1.6J charge point: its websocket, its connectors and the cars plugged into them.

Everything here runs in the simulator's event loop. State shared with other threads (read by
:meth:`Simulator.snapshot`) is changed only under the simulator's lock, in short synchronous
blocks, never across an ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import websockets
from ocpp.exceptions import (
    FormatViolationError,
    GenericError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
    UnknownCallErrorCodeError,
)
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from optivgi_citrineos.simulator.battery import Battery
from optivgi_citrineos.simulator.clock import SimClock, iso_ms
from optivgi_citrineos.simulator.config import EVSpec, SimulatorConfig
from optivgi_citrineos.simulator.profiles import (
    TX_PROFILE,
    ChargingProfile,
    CompositeLimit,
    ProfileError,
    ProfileStore,
    Transaction,
    allocate_power,
    composite_limit,
    composite_schedule,
    floor_tenth,
)
from optivgi_citrineos.simulator.records import ConnectorSnapshot, Frame, ProfileEvent, StationSnapshot

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Station"]

logger = logging.getLogger(__name__)

_SUBPROTOCOL = "ocpp1.6"
#: Simulated seconds per integration step: fine enough for the taper above 80 % SoC.
_STEP_S = 1.0
#: Backoff of a transaction message the CSMS did not take (simulated seconds, doubling).
_TX_RETRY_INITIAL_S = 5.0
_TX_RETRY_MAX_S = 120.0
#: How often a supervised task is restarted before the station gives up on it.
_MAX_RESTARTS = 20
_CALL_ERRORS: dict[str, type[OCPPError]] = {
    "PropertyConstraintViolation": PropertyConstraintViolationError,
    "FormatViolation": FormatViolationError,
    "TypeConstraintViolation": TypeConstraintViolationError,
    "ProtocolError": ProtocolError,
}


@dataclass
class _Hooks:
    """What a station reports to its simulator."""

    lock: threading.RLock
    record_frame: Callable[[Frame], None]
    record_profile: Callable[[ProfileEvent], None]
    next_ev_number: Callable[[], int]


@dataclass
class _Connector:
    connector_id: int
    energy_wh: float
    status: str = "Available"
    reported: str | None = None
    battery: Battery | None = None
    ev: EVSpec | None = None
    ev_number: int | None = None
    id_tag: str | None = None
    departs: bool = False
    #: When the car leaves (simulated), if known: OCPP 2.0.1 reports it in NotifyEVChargingNeeds.
    departure: dt.datetime | None = None
    transaction_id: int | None = None
    #: The transaction is being started (its Start message is out): the car already draws, as on a
    #: real charger, so the energy counts from the start's timestamp whatever the CSMS's latency.
    starting: bool = False
    tx_start: dt.datetime | None = None
    meter_start_wh: int = 0
    stopping: bool = False
    power_w: float = 0.0
    limit: CompositeLimit = field(default_factory=lambda: CompositeLimit(None, None, None, None))
    pending_profile: ChargingProfile | None = None
    latest_profile: ProfileEvent | None = None
    meter_task: asyncio.Task[None] | None = None
    meter_in_flight: bool = False
    sync_task: asyncio.Task[None] | None = None
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def tag(self, station_id: str) -> str:
        prefix = f"EV {self.ev_number} at " if self.ev_number is not None else ""
        return f"{prefix}{station_id}/{self.connector_id}"


class _Client(ChargePoint):
    """The ``ocpp`` charge point on one websocket connection (schema validation on, as by default).

    It records every frame, remembers which call a result answers, and marks when it is busy
    answering a CSMS call so that the station's own calls wait (CitrineOS keeps one call per
    station in flight, in either direction).
    """

    def __init__(self, station: Station, connection: ClientConnection) -> None:
        super().__init__(station.station_id, connection, response_timeout=station.config.response_timeout_s)
        self._station = station
        self._answered: dict[str, str] = {}
        self._sent_calls: dict[str, str] = {}
        self.current_payload: dict[str, Any] = {}
        self.idle = asyncio.Event()
        self.idle.set()
        # Set when the connection is gone: calls still waiting for an answer give up at once.
        self.closed = asyncio.Event()

    async def route_message(self, raw_msg: str | bytes) -> None:
        text = raw_msg if isinstance(raw_msg, str) else raw_msg.decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        is_call = isinstance(parsed, list) and len(parsed) == 4 and parsed[0] == 2
        action: str | None = None
        if is_call and isinstance(parsed, list):
            action = str(parsed[2])
            self._answered[str(parsed[1])] = action
        elif isinstance(parsed, list) and len(parsed) >= 2:
            action = self._sent_calls.pop(str(parsed[1]), None)
        self._station.record("recv", text, action)
        if not (is_call and isinstance(parsed, list)):
            await super().route_message(text)
            return
        # The raw camelCase payload, for handlers that want the message exactly as sent.
        self.current_payload = parsed[3] if isinstance(parsed[3], dict) else {}
        self.idle.clear()
        try:
            await super().route_message(text)
        finally:
            self._answered.pop(str(parsed[1]), None)
            self.current_payload = {}
            self.idle.set()

    async def _send(self, message: str) -> None:
        parsed = json.loads(message)
        if parsed[0] == 2:
            action: str | None = parsed[2]
            self._sent_calls[parsed[1]] = parsed[2]
        else:
            action = self._answered.get(parsed[1])
        self._station.record("send", message, action)
        await super()._send(message)

    # --- CSMS calls ------------------------------------------------------------------------------

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, **_: Any) -> call_result.SetChargingProfile:
        profile = self.current_payload.get("csChargingProfiles", {})
        return call_result.SetChargingProfile(status=self._station.set_charging_profile(connector_id, profile))

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, **kwargs: Any) -> call_result.ClearChargingProfile:
        status = self._station.clear_charging_profile(
            profile_id=kwargs.get("id"),
            connector_id=kwargs.get("connector_id"),
            purpose=kwargs.get("charging_profile_purpose"),
            stack_level=kwargs.get("stack_level"),
        )
        return call_result.ClearChargingProfile(status=status)

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, connector_id: int, duration: int, **kwargs: Any
    ) -> call_result.GetCompositeSchedule:
        return self._station.get_composite_schedule(connector_id, duration, kwargs.get("charging_rate_unit"))

    @on(Action.remote_start_transaction)
    async def on_remote_start_transaction(self, id_tag: str, **kwargs: Any) -> call_result.RemoteStartTransaction:
        status = self._station.remote_start(
            kwargs.get("connector_id"), id_tag, self.current_payload.get("chargingProfile")
        )
        return call_result.RemoteStartTransaction(status=status)

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(status=self._station.remote_stop(transaction_id))

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **kwargs: Any) -> call_result.TriggerMessage:
        return call_result.TriggerMessage(status=self._station.trigger(requested_message, kwargs.get("connector_id")))


class Station:
    """One charge point: connects (with backoff), boots, reports, runs its cars' sessions."""

    #: The websocket subprotocol (and OCPP version) this station speaks.
    subprotocol = _SUBPROTOCOL
    #: Its OCPP version for schema validation.
    ocpp_version = "1.6"

    def __init__(self, station_id: str, config: SimulatorConfig, clock: SimClock, hooks: _Hooks) -> None:
        self.station_id = station_id
        self.config = config
        self.clock = clock
        self.url = f"{config.ws_url.rstrip('/')}/{station_id}"
        self._hooks = hooks
        self._lock = hooks.lock
        self.store = ProfileStore(config.connectors_per_station)
        self.connectors = {
            c: _Connector(c, energy_wh=float(config.meter_start_wh))
            for c in range(1, config.connectors_per_station + 1)
        }
        self.connected = False
        self.booted = False
        self.station_limit_w: float | None = None
        self.latest_station_profile: ProfileEvent | None = None
        self._client: _Client | None = None
        self._connection: ClientConnection | None = None
        # Online: the CSMS accepted the BootNotification on this connection (calls may go out).
        # Ready: the first StatusNotifications after it are sent too (sessions may go on).
        self._online = asyncio.Event()
        self._ready = asyncio.Event()
        self._last_advance = clock.now()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: How many times a supervised task of this station was restarted after failing.
        self.restarts = 0

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

    def _profile_time(self, sim_time: dt.datetime) -> dt.datetime:
        if self.config.profile_clock == "wall":
            return self.clock.wall_at(sim_time)
        return sim_time

    def _tx(self, c: _Connector) -> Transaction | None:
        if c.transaction_id is None or c.tx_start is None:
            return None
        return Transaction(c.transaction_id, self._profile_time(c.tx_start))

    def _watts_to_amps(self, watts: float) -> float:
        return watts / (self.config.voltage * self.config.phases)

    # --- physics -------------------------------------------------------------------------------

    def advance(self, now: dt.datetime) -> None:
        """Integrate every car's energy up to ``now`` (simulated), then update limits and powers."""
        with self._lock:
            t = self._last_advance
            while t < now:
                end = min(now, t + dt.timedelta(seconds=_STEP_S))
                seconds = (end - t).total_seconds()
                for c in self.connectors.values():
                    if c.power_w > 0 and c.battery is not None:
                        c.energy_wh += c.battery.charge(c.power_w / 1000, seconds)
                t = end
                self._recompute(t)
            self._last_advance = max(self._last_advance, now)
            self._recompute(self._last_advance)

    def _recompute(self, now: dt.datetime) -> None:
        """Limits, powers and statuses at ``now`` (caller holds the lock)."""
        pnow = self._profile_time(now)
        profiles = self.store.profiles
        cfg = self.config
        station = composite_limit(profiles, 0, pnow, None, voltage=cfg.voltage, phases=cfg.phases)
        self.station_limit_w = station.station_cap_w
        desired: dict[int, float] = {}
        offered: dict[int, float] = {}
        for c in self.connectors.values():
            c.limit = composite_limit(profiles, c.connector_id, pnow, self._tx(c), voltage=cfg.voltage,
                                      phases=cfg.phases)
            if (c.transaction_id is None and not c.starting) or c.battery is None or c.stopping:
                continue
            offer = cfg.evse_max_w
            for bound in (c.limit.tx_limit_w, c.limit.station_cap_w):
                if bound is not None:
                    offer = min(offer, bound)
            offered[c.connector_id] = max(0.0, offer)
            desired[c.connector_id] = min(offered[c.connector_id], c.battery.acceptance_kw() * 1000)
        shares = allocate_power(desired, self.station_limit_w)
        for c in self.connectors.values():
            c.power_w = shares.get(c.connector_id, 0.0)
            if c.connector_id not in offered or c.transaction_id is None:
                continue  # a starting transaction keeps its Preparing status until it is confirmed
            if offered[c.connector_id] <= 0:
                status = "SuspendedEVSE"
            elif c.battery is not None and c.battery.acceptance_kw() <= 0:
                status = "SuspendedEV"
            else:
                status = "Charging"
            if status != c.status:
                self._log_status_change(c, status)
                c.status = status

    def _log_status_change(self, c: _Connector, status: str) -> None:
        if status == "SuspendedEVSE":
            logger.info("%s: suspended by the charger (limit 0)", c.tag(self.station_id))
        elif status == "SuspendedEV" and c.battery is not None:
            logger.info("%s: battery at target (%.1f %%), the car stops drawing", c.tag(self.station_id),
                        c.battery.soc * 100)
        elif status == "Charging" and c.status.startswith("Suspended"):
            logger.info("%s: charging again at %.2f kW", c.tag(self.station_id), c.power_w / 1000)

    def kick_status(self) -> None:
        """Send StatusNotification for connectors whose status changed (in the background)."""
        if not self._ready.is_set():
            return
        for c in self.connectors.values():
            if c.status != c.reported and (c.sync_task is None or c.sync_task.done()):
                c.sync_task = self.spawn(self._sync_status(c), f"{self.station_id}-{c.connector_id}-status")

    # --- snapshot --------------------------------------------------------------------------------

    def snapshot(self) -> StationSnapshot:
        """This station now (caller holds the lock)."""
        connectors: dict[int, ConnectorSnapshot] = {}
        for c in self.connectors.values():
            limit_w = c.limit.limit_w
            tx_source = c.limit.tx_source
            connectors[c.connector_id] = ConnectorSnapshot(
                station_id=self.station_id,
                connector_id=c.connector_id,
                status=c.status,
                transaction_id=c.transaction_id,
                id_tag=c.id_tag,
                ev_number=c.ev_number,
                limit_w=limit_w,
                limit_a=None if limit_w is None else self._watts_to_amps(limit_w),
                tx_profile_id=tx_source.profile_id if tx_source is not None else None,
                power_kw=c.power_w / 1000,
                energy_wh=c.energy_wh,
                session_energy_wh=(c.energy_wh - c.meter_start_wh) if c.transaction_id is not None else 0.0,
                soc_percent=None if c.battery is None else c.battery.soc * 100,
                ev_max_kw=None if c.ev is None else c.ev.max_charge_rate_kw,
                latest_profile=c.latest_profile,
            )
        return StationSnapshot(
            station_id=self.station_id,
            connected=self.connected,
            booted=self.booted,
            station_limit_w=self.station_limit_w,
            power_kw=sum(c.power_w for c in self.connectors.values()) / 1000,
            connectors=connectors,
            latest_profile=self.latest_station_profile,
        )

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
        return _Client(self, ws)

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

    async def _boot_and_heartbeat(self, client: _Client) -> None:
        while True:
            result = await self._raw_call(
                client,
                call.BootNotification(
                    charge_point_model=self.config.model,
                    charge_point_vendor=self.config.vendor,
                    charge_point_serial_number=self.station_id[:25],
                ),
            )
            if result is not None and result.status == "Accepted":
                break
            retry = result.interval if result is not None and result.interval > 0 else 10
            logger.warning("%s: BootNotification %s; retrying in %s s", self.station_id,
                           result.status if result is not None else "failed", retry)
            await asyncio.sleep(retry)
        interval = self.config.heartbeat_interval_s or (result.interval if result.interval > 0 else 60)
        with self._lock:
            self._online.set()
            self.advance(self.clock.now())
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

    # --- sessions --------------------------------------------------------------------------------

    def plug_in(
        self, connector_id: int, ev: EVSpec, id_tag: str, *, departs: bool, ev_number: int | None = None
    ) -> bool:
        """A car plugs in (status Preparing); False when the connector is taken."""
        c = self.connectors[connector_id]
        with self._lock:
            if c.battery is not None or c.status == "Finishing":
                return False
            self.advance(self.clock.now())
            c.battery = Battery(ev.capacity_kwh, ev.arrival_soc, ev.target_soc, ev.max_charge_rate_kw)
            c.ev = ev
            c.ev_number = ev_number if ev_number is not None else self._hooks.next_ev_number()
            c.id_tag = id_tag
            c.departs = departs
            c.status = "Preparing"
        logger.info("EV %d arrived at %s/%d — max %.2f kW, %.0f kWh at %.0f %%, wants %.0f %%", c.ev_number,
                    self.station_id, connector_id, ev.max_charge_rate_kw, ev.capacity_kwh, ev.arrival_soc * 100,
                    ev.target_soc * 100)
        return True

    async def run_session(self, connector_id: int, *, authorize: bool) -> int | None:
        """Authorize (optionally) and start a transaction for the plugged-in car; returns its transactionId."""
        c = self.connectors[connector_id]
        await self._ready.wait()
        await self._sync_status(c)
        id_tag = c.id_tag or "OPTIVGI-AUTO"
        if authorize:
            result = await self._call(call.Authorize(id_tag=id_tag), wait_online=True)
            status = result.id_tag_info.get("status") if result is not None else None
            if status != "Accepted":
                logger.warning("%s: idTag %s not authorized (%s); the car waits plugged in", c.tag(self.station_id),
                               id_tag, status or "no answer")
                return None
        with self._lock:
            if c.transaction_id is not None or c.battery is None:
                return c.transaction_id
            now = self.clock.now()
            self.advance(now)
            c.meter_start_wh = math.floor(c.energy_wh)
            c.starting = True
            self._recompute(now)
        try:
            result = await self._start_transaction(c, connector_id, id_tag, now)
        finally:
            with self._lock:
                self.advance(self.clock.now())
                c.starting = False
        if result is None:
            return c.transaction_id
        transaction_id = int(result.transaction_id)
        return await self._after_start(c, connector_id, transaction_id, result, now, id_tag)

    async def _start_transaction(self, c: _Connector, connector_id: int, id_tag: str, now: dt.datetime) -> Any:
        """StartTransaction, retried with backoff until answered; None when the car left meanwhile."""
        delay = _TX_RETRY_INITIAL_S
        while True:
            result = await self._call(
                call.StartTransaction(connector_id=connector_id, id_tag=id_tag, meter_start=c.meter_start_wh,
                                      timestamp=iso_ms(now)),
                wait_online=True,
            )
            if result is not None:
                return result
            # A charger keeps a transaction message until the CSMS takes it (TransactionMessageAttempts).
            logger.error("%s: StartTransaction failed; retrying in %.0f s (simulated)", c.tag(self.station_id),
                         delay)
            await self.clock.sleep(delay)
            delay = min(delay * 2, _TX_RETRY_MAX_S)
            with self._lock:
                if c.battery is None or c.transaction_id is not None:
                    return None  # the car left (or another start won) meanwhile

    async def _after_start(self, c: _Connector, connector_id: int, transaction_id: int, result: Any,
                           now: dt.datetime, id_tag: str) -> int | None:
        accepted = result.id_tag_info.get("status") == "Accepted"
        with self._lock:
            c.transaction_id = transaction_id
            c.tx_start = now
            pending, c.pending_profile = c.pending_profile, None
            if pending is not None and accepted:
                profile = dataclasses.replace(pending, transaction_id=transaction_id)
                self.store.install(profile, {connector_id: transaction_id})
            self.advance(self.clock.now())
            power = c.power_w
        if not accepted:
            logger.warning("%s: transaction %d not authorized (%s); stopping it", c.tag(self.station_id),
                           transaction_id, result.id_tag_info.get("status"))
            await self.stop_transaction(connector_id, "DeAuthorized")
            return None
        logger.info("%s: transaction %d started (idTag %s), drawing %.2f kW", c.tag(self.station_id), transaction_id,
                    id_tag, power / 1000)
        await self._sync_status(c)
        c.meter_task = self.supervise(lambda: self._meter_loop(c, transaction_id),
                                      f"{self.station_id}-{connector_id}-meter")
        return transaction_id

    async def _meter_loop(self, c: _Connector, transaction_id: int) -> None:
        interval = dt.timedelta(seconds=self.config.meter_values_interval_s)
        context = "Transaction.Begin"
        due = self.clock.now()
        while c.transaction_id == transaction_id and not c.stopping:
            c.meter_in_flight = True
            try:
                await self.send_meter_values(c, context)
            finally:
                c.meter_in_flight = False
            context = "Sample.Periodic"
            # Fixed cadence on the simulated clock, whatever the CSMS's answering time.
            due += interval
            await self.clock.sleep_until(due)

    async def send_meter_values(self, c: _Connector, context: str = "Sample.Periodic") -> None:
        """Send one MeterValues for the connector's transaction (sampled now, on the simulated clock)."""
        with self._lock:
            now = self.clock.now()
            self.advance(now)
            transaction_id = c.transaction_id
            if transaction_id is None:
                return
            power_w = c.power_w
            samples: list[dict[str, Any]] = [
                {"value": f"{c.energy_wh:.1f}", "context": context, "measurand": "Energy.Active.Import.Register",
                 "location": "Outlet", "unit": "Wh"},
                {"value": f"{power_w:.1f}", "context": context, "measurand": "Power.Active.Import",
                 "location": "Outlet", "unit": "W"},
                {"value": f"{self._watts_to_amps(power_w):.2f}", "context": context, "measurand": "Current.Import",
                 "location": "Outlet", "unit": "A"},
            ]
            if c.battery is not None:
                samples.append({"value": f"{c.battery.soc * 100:.1f}", "context": context, "measurand": "SoC",
                                "location": "EV", "unit": "Percent"})
        await self._call(call.MeterValues(connector_id=c.connector_id, transaction_id=transaction_id,
                                          meter_value=[{"timestamp": iso_ms(now), "sampledValue": samples}]))

    async def stop_transaction(self, connector_id: int, reason: str) -> None:
        """Stop the connector's transaction (StopTransaction, then Finishing)."""
        c = self.connectors[connector_id]
        with self._lock:
            if c.transaction_id is None or c.stopping:
                return
            now = self.clock.now()
            self.advance(now)
            c.stopping = True
            transaction_id = c.transaction_id
            meter_stop = max(c.meter_start_wh, math.floor(c.energy_wh))
            self._recompute(now)
        if c.meter_task is not None and not c.meter_in_flight:
            c.meter_task.cancel()
        await self._call(
            call.StopTransaction(meter_stop=meter_stop, timestamp=iso_ms(now), transaction_id=transaction_id,
                                 reason=reason, id_tag=c.id_tag),
            wait_online=True,
        )
        with self._lock:
            c.transaction_id = None
            c.tx_start = None
            c.stopping = False
            c.power_w = 0.0
            c.status = "Finishing"
            self.store.end_transaction(connector_id)
            self._recompute(self.clock.now())
            soc = c.battery.soc * 100 if c.battery is not None else float("nan")
        logger.info("%s: transaction %d stopped (%s) — %.2f kWh delivered, SoC %.1f %%", c.tag(self.station_id),
                    transaction_id, reason, (meter_stop - c.meter_start_wh) / 1000, soc)
        await self._sync_status(c)

    async def unplug(self, connector_id: int) -> None:
        """The car leaves: stop its transaction if any, then Available."""
        c = self.connectors[connector_id]
        if c.transaction_id is not None:
            await self.stop_transaction(connector_id, "EVDisconnected")
        with self._lock:
            if c.battery is None and c.status == "Available":
                return
            number = c.ev_number
            c.battery = None
            c.ev = None
            c.ev_number = None
            c.id_tag = None
            c.departs = False
            c.departure = None
            c.pending_profile = None
            c.status = "Available"
        if number is not None:
            logger.info("EV %d left %s/%d", number, self.station_id, connector_id)
        await self._sync_status(c)

    # --- CSMS requests (called from the ocpp handlers; synchronous, quick) ---------------------

    def _profile_event(self, connector_id: int, raw: Any, status: str, reason: str | None) -> ProfileEvent:
        now = self.clock.now()
        if connector_id in self.connectors:
            limit_w = self.connectors[connector_id].limit.limit_w
        else:
            limit_w = self.station_limit_w
        event = ProfileEvent(
            station_id=self.station_id,
            connector_id=connector_id,
            sim_time=now,
            wall_time=dt.datetime.now(dt.UTC),
            profile=json.loads(json.dumps(raw, default=float)) if isinstance(raw, dict) else {},
            status=status,
            reason=reason,
            limit_w=limit_w,
        )
        if connector_id in self.connectors:
            self.connectors[connector_id].latest_profile = event
        else:
            self.latest_station_profile = event
        self._hooks.record_profile(event)
        return event

    def set_charging_profile(self, connector_id: int, raw: Mapping[str, Any]) -> str:
        """Install a profile; returns Accepted/Rejected or raises the OCPP error to answer with."""
        now = self.clock.now()
        with self._lock:
            try:
                profile = ChargingProfile.from_ocpp(connector_id, raw, self._profile_time(now))
                self.advance(now)
                self.store.install(profile, {i: c.transaction_id for i, c in self.connectors.items()})
                self._recompute(now)
            except ProfileError as exc:
                status = f"CallError:{exc.call_error}" if exc.call_error else "Rejected"
                self._profile_event(connector_id, dict(raw), status, str(exc))
                logger.warning("%s/%d: profile %s refused (%s): %s", self.station_id, connector_id,
                               raw.get("chargingProfileId"), status, exc)
                if exc.call_error:
                    raise _CALL_ERRORS.get(exc.call_error, GenericError)(description=str(exc)) from None
                return "Rejected"
            event = self._profile_event(connector_id, dict(raw), "Accepted", None)
            drawing = sum(c.power_w for c in self.connectors.values()) / 1000
        limit = "none" if event.limit_w is None else f"{event.limit_w / 1000:.2f} kW"
        first = profile.periods[0]
        logger.info("%s/%d: profile %d %s stack %d accepted (%g %s first) — limit now %s, station draws %.2f kW",
                    self.station_id, connector_id, profile.profile_id, profile.purpose, profile.stack_level,
                    first.limit, profile.unit, limit, drawing)
        self.kick_status()
        return "Accepted"

    def clear_charging_profile(
        self, *, profile_id: int | None, connector_id: int | None, purpose: str | None, stack_level: int | None
    ) -> str:
        """ClearChargingProfile: Accepted when something was removed, else Unknown."""
        with self._lock:
            now = self.clock.now()
            self.advance(now)
            removed = self.store.clear(profile_id=profile_id, connector_id=connector_id, purpose=purpose,
                                       stack_level=stack_level)
            self._recompute(now)
        logger.info("%s: ClearChargingProfile removed %s", self.station_id,
                    ", ".join(str(p.profile_id) for p in removed) or "nothing")
        self.kick_status()
        return "Accepted" if removed else "Unknown"

    def get_composite_schedule(
        self, connector_id: int, duration: int, unit: str | None
    ) -> call_result.GetCompositeSchedule:
        """GetCompositeSchedule over ``duration`` seconds from now (profile clock)."""
        if not 0 <= connector_id <= len(self.connectors) or duration <= 0:
            return call_result.GetCompositeSchedule(status="Rejected")
        unit = unit or "A"
        cfg = self.config
        with self._lock:
            start = self._profile_time(self.clock.now())
            tx = self._tx(self.connectors[connector_id]) if connector_id else None
            hardware = cfg.evse_max_w * (len(self.connectors) if connector_id == 0 else 1)
            periods = composite_schedule(self.store.profiles, connector_id, start, duration, tx, voltage=cfg.voltage,
                                         phases=cfg.phases, hardware_max_w=hardware)
        rows = [
            {
                "startPeriod": offset,
                "limit": floor_tenth(self._watts_to_amps(watts) if unit == "A" else watts),
                "numberPhases": cfg.phases,
            }
            for offset, watts in periods
        ]
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=iso_ms(start),
            charging_schedule={"duration": duration, "startSchedule": iso_ms(start), "chargingRateUnit": unit,
                               "chargingSchedulePeriod": rows},
        )

    def remote_start(self, connector_id: int | None, id_tag: str, raw_profile: Any) -> str:
        """RemoteStartTransaction: Accepted and start in the background, or Rejected."""
        with self._lock:
            if connector_id is not None:
                c = self.connectors.get(connector_id)
                candidates = [c] if c is not None else []
            else:
                # A car already waiting on a connector first, else the first empty one.
                waiting = [c for c in self.connectors.values() if c.battery is not None and c.transaction_id is None
                           and c.status == "Preparing"]
                empty = [c for c in self.connectors.values() if c.battery is None and c.status == "Available"]
                candidates = (waiting or empty)[:1]
            target = next(
                (c for c in candidates if c.transaction_id is None and c.status in ("Available", "Preparing")), None
            )
            if target is None:
                logger.warning("%s: RemoteStartTransaction rejected (connector %s busy or unknown)", self.station_id,
                               connector_id)
                return "Rejected"
            if isinstance(raw_profile, dict):
                try:
                    profile = ChargingProfile.from_ocpp(target.connector_id, raw_profile,
                                                        self._profile_time(self.clock.now()))
                    if profile.purpose != TX_PROFILE:
                        raise ProfileError("RemoteStartTransaction only carries a TxProfile")
                except ProfileError as exc:
                    self._profile_event(target.connector_id, raw_profile, "Rejected", str(exc))
                    logger.warning("%s: RemoteStartTransaction rejected: %s", self.station_id, exc)
                    return "Rejected"
                target.pending_profile = profile
                self._profile_event(target.connector_id, raw_profile, "Accepted", None)
        if target.battery is None:
            self.plug_in(target.connector_id, self.config.default_ev, id_tag, departs=False)
        target.id_tag = id_tag
        logger.info("%s/%d: RemoteStartTransaction accepted (idTag %s)", self.station_id, target.connector_id, id_tag)
        # The CSMS already authorized the idTag (AuthorizeRemoteTxRequests is false).
        self.spawn(self.run_session(target.connector_id, authorize=False), f"{self.station_id}-remote-start")
        return "Accepted"

    def remote_stop(self, transaction_id: int) -> str:
        """RemoteStopTransaction: Accepted and stop in the background, or Rejected for an unknown id."""
        for c in self.connectors.values():
            if c.transaction_id == transaction_id and not c.stopping:
                logger.info("%s: RemoteStopTransaction %d accepted", c.tag(self.station_id), transaction_id)
                self.spawn(self._remote_stop(c.connector_id), f"{self.station_id}-remote-stop")
                return "Accepted"
        logger.warning("%s: RemoteStopTransaction for unknown transaction %d", self.station_id, transaction_id)
        return "Rejected"

    async def _remote_stop(self, connector_id: int) -> None:
        await self.stop_transaction(connector_id, "Remote")
        if not self.connectors[connector_id].departs:
            # No departure planned: the driver unplugs once the charger ends the session.
            await self.unplug(connector_id)

    def trigger(self, requested: str, connector_id: int | None) -> str:
        """TriggerMessage for Heartbeat, StatusNotification, MeterValues or BootNotification."""
        connectors = [self.connectors[connector_id]] if connector_id in self.connectors else list(
            self.connectors.values())
        if requested == "Heartbeat":
            self.spawn(self._call(call.Heartbeat()))
        elif requested == "StatusNotification":
            for c in connectors:
                c.reported = None
            self.kick_status()
        elif requested == "MeterValues":
            for c in connectors:
                if c.transaction_id is not None:
                    self.spawn(self.send_meter_values(c, "Trigger"))
        elif requested == "BootNotification" and self._client is not None:
            client = self._client
            self.spawn(self._raw_call(client, call.BootNotification(charge_point_model=self.config.model,
                                                                    charge_point_vendor=self.config.vendor)))
        else:
            return "NotImplemented"
        return "Accepted"

    # --- shutdown -------------------------------------------------------------------------------

    async def stop_all(self, reason: str = "Local") -> None:
        """Stop every running transaction (on shutdown, so the CSMS does not keep them open)."""
        await asyncio.gather(
            *(self.stop_transaction(c.connector_id, reason) for c in self.connectors.values()
              if c.transaction_id is not None and self._online.is_set()),
            return_exceptions=True,
        )

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
