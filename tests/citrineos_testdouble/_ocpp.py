"""The OCPP 1.6J side of the double: one :class:`StationSession` per connected charge point.

Charger requests are handled by ``ocpp``'s :class:`ocpp.v16.ChargePoint` (``@on`` handlers, JSON
schema validation on). Calls from the CSMS are sent by the session itself because CitrineOS
forwards the REST payload unchanged (after its own validation) and keeps exactly one call per
station in flight, in either direction:

- a CSMS call holds the station's slot until the charger answers or ``max_call_length_s`` passes;
  calls queued behind it go out in order afterwards;
- a charger request that arrives while a CSMS call is outstanding waits for the slot; if that call
  then times out, the request is answered with CALLERROR ``RpcFrameworkError`` "Call already in
  progress" and is lost (not published, not stored), as CitrineOS 1.8.3 does;
- an answer arriving after the timeout is only logged (``OCPPMessages`` action ``NoAction``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, MessageType, unpack, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus

from citrineos_testdouble._amqp import charger_message, csms_answer
from citrineos_testdouble._jsonutil import iso_ms, js_dumps, js_value, now_utc

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from citrineos_testdouble.double import _Core

logger = logging.getLogger(__name__)


@dataclass
class OutgoingCall:
    """A CSMS-initiated call queued for one station."""

    correlation_id: str
    action: str
    payload: dict[str, Any]
    callback_url: str | None
    queued_at: float
    done: asyncio.Future[None] | None = None
    answer: Any = None


@dataclass
class RequestFaults:
    """CALLERRORs to answer charger requests with, for tests (``CitrineOSDouble.fail_requests``).

    Each rule answers the next ``count`` requests of ``action`` from ``station_id`` (None: every
    station) with CALLERROR ``code``; a count of None answers every such request until cleared.
    """

    rules: list[dict[str, Any]] = field(default_factory=list)
    injected: int = 0

    def add(self, station_id: str | None, action: str, count: int | None, code: str, description: str) -> None:
        self.rules.append(
            {"station": station_id, "action": action, "count": count, "code": code, "description": description}
        )

    def take(self, station_id: str, action: str) -> tuple[str, str] | None:
        for rule in self.rules:
            if rule["action"] != action or rule["station"] not in (None, station_id):
                continue
            if rule["count"] is not None:
                if rule["count"] <= 0:
                    continue
                rule["count"] -= 1
            self.injected += 1
            return str(rule["code"]), str(rule["description"])
        return None

    def clear(self) -> None:
        self.rules.clear()


@dataclass
class _Incoming:
    action: str
    timestamp: str
    when: dt.datetime
    payload: dict[str, Any] = field(default_factory=dict)


class StationSession(ChargePoint):
    """One connected OCPP 1.6J charge point."""

    #: The protocol CitrineOS names in OCPPMessages, RabbitMQ bodies and webhooks.
    protocol = "ocpp1.6"

    def __init__(self, core: _Core, station_id: str, connection: ServerConnection) -> None:
        super().__init__(station_id, connection, response_timeout=core.config.max_call_length_s)
        self.core = core
        self.station_id = station_id
        self.ws = connection
        self.key = f"{core.config.tenant_id}:{station_id}"
        self._incoming: dict[str, _Incoming] = {}
        self._pending: dict[str, OutgoingCall] = {}
        self._slot = asyncio.Lock()
        self._expired_releases = 0
        self._outbox: asyncio.Queue[OutgoingCall] = asyncio.Queue()
        self._inbox: asyncio.Queue[tuple[str, Call]] = asyncio.Queue()
        self._current: _Incoming | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.subscriptions: list[dict[str, Any]] = []

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes."""
        self._tasks = [
            asyncio.create_task(self._inbox_worker(), name=f"{self.station_id}-in"),
            asyncio.create_task(self._outbox_worker(), name=f"{self.station_id}-out"),
        ]
        try:
            async for raw in self.ws:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                await self._on_frame(text)
        except Exception:
            logger.debug("%s: connection ended with an error", self.station_id, exc_info=True)
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for pending in self._pending.values():
                if pending.done is not None and not pending.done.done():
                    pending.done.set_result(None)
            self._pending.clear()

    def enqueue(self, call: OutgoingCall) -> None:
        """Queue a CSMS call; it is sent when the station's slot is free."""
        self._outbox.put_nowait(call)

    # --- records of this protocol ----------------------------------------------------------------

    async def _log_message(self, *args: Any) -> None:
        await self.core.store.log_message(*args, protocol=self.protocol)

    def _charger_message(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return charger_message(**kwargs, protocol=self.protocol)

    def _csms_answer(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return csms_answer(**kwargs, protocol=self.protocol)

    # --- frames from the charger ----------------------------------------------------------------

    async def _on_frame(self, text: str) -> None:
        try:
            msg = unpack(text)
        except OCPPError:
            logger.warning("%s: not an OCPP frame: %r", self.station_id, text[:200])
            return
        if msg.message_type_id == MessageType.Call:
            self._inbox.put_nowait((text, msg))
        else:
            await self._on_answer(text, msg)

    async def _inbox_worker(self) -> None:
        while True:
            text, msg = await self._inbox.get()
            expired_before = self._expired_releases
            async with self._slot:
                if self._expired_releases != expired_before:
                    await self._reject_busy(msg)
                    continue
                injected = self.core.request_faults.take(self.station_id, msg.action)
                if injected is not None:
                    await self._reject_injected(msg, *injected)
                    continue
                try:
                    await self._handle_incoming(text, msg)
                except Exception:
                    logger.exception("%s: handling %s failed", self.station_id, msg.action)

    async def _reject_busy(self, msg: Call) -> None:
        error = CallError(msg.unique_id, "RpcFrameworkError", "Call already in progress", {})
        frame = error.to_json()
        logger.error("%s: Error processing message %s: Call already in progress", self.station_id, msg)
        now = now_utc()
        await self._log_message(self.station_id, msg.unique_id, "csms", msg.action, 2, json.loads(frame), now)
        await self._send_frame(frame, msg.unique_id, msg.action, now)

    async def _reject_injected(self, msg: Call, code: str, description: str) -> None:
        # A fault injected by a test: answered like CitrineOS's busy CALLERROR, never published or stored.
        logger.error("%s: Error processing message %s: %s (injected)", self.station_id, msg.action, description)
        frame = CallError(msg.unique_id, code, description, {}).to_json()
        now = now_utc()
        await self._log_message(self.station_id, msg.unique_id, "csms", msg.action, 2, json.loads(frame), now)
        await self._send_frame(frame, msg.unique_id, msg.action, now)

    async def _handle_incoming(self, text: str, msg: Call) -> None:
        now = now_utc()
        stamp = iso_ms(now)
        assert stamp is not None
        await self.core.webhook_message(self, "cs", text, msg.unique_id, msg.action, now)
        self._incoming[msg.unique_id] = _Incoming(msg.action, stamp, now, msg.payload)
        try:
            await validate_payload(msg, self._ocpp_version)
        except OCPPError as exc:
            # An invalid request is answered with a CALLERROR and never published.
            await self._send(msg.create_call_error(exc).to_json())
            self._incoming.pop(msg.unique_id, None)
            return
        await self._log_message(self.station_id, msg.unique_id, "cs", msg.action, 1, json.loads(text), now)
        await self.core.store.touch_station(self.station_id, now)
        headers, body = self._charger_message(
            origin="cs",
            event_group="router",
            action=msg.action,
            state=1,
            station_id=self.station_id,
            correlation_id=msg.unique_id,
            tenant_id=self.core.config.tenant_id,
            timestamp=stamp,
            payload=msg.payload,
        )
        self.core.publish(headers, body)
        self._current = self._incoming[msg.unique_id]
        try:
            await self._handle_call(msg)
        except OCPPError as error:
            await self._send(msg.create_call_error(error).to_json())
        finally:
            self._current = None
            self._incoming.pop(msg.unique_id, None)

    async def _send(self, message: str) -> None:
        """Send a frame the ``ocpp`` handlers produced, publishing CitrineOS's answer for results."""
        parsed = json.loads(message)
        unique_id = parsed[1]
        incoming = self._incoming.get(unique_id)
        action = incoming.action if incoming is not None else "NoAction"
        now = now_utc()
        await self._send_frame(message, unique_id, action, now)
        await self._log_message(self.station_id, unique_id, "csms", action, 2, parsed, now)
        if parsed[0] == MessageType.CallResult and incoming is not None:
            headers, body = self._csms_answer(
                action=action,
                station_id=self.station_id,
                correlation_id=unique_id,
                tenant_id=self.core.config.tenant_id,
                timestamp=incoming.timestamp,
                payload=parsed[2],
            )
            self.core.publish(headers, body)

    async def _send_frame(self, frame: str, unique_id: str, action: str, when: dt.datetime) -> None:
        try:
            await self.ws.send(frame)
        except Exception:
            logger.debug("%s: send failed", self.station_id, exc_info=True)
            return
        await self.core.webhook_message(self, "csms", frame, unique_id, action, when)

    # --- CSMS calls -----------------------------------------------------------------------------

    async def _outbox_worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            call = await self._outbox.get()
            async with self._slot:
                call.done = loop.create_future()
                self._pending[call.correlation_id] = call
                frame = js_dumps([2, call.correlation_id, call.action, call.payload])
                now = now_utc()
                await self._log_message(
                    self.station_id, call.correlation_id, "csms", call.action, 1, json.loads(frame), now
                )
                await self._send_frame(frame, call.correlation_id, call.action, now)
                try:
                    await asyncio.wait_for(asyncio.shield(call.done), self.core.config.max_call_length_s)
                except TimeoutError:
                    self._pending.pop(call.correlation_id, None)
                    self._expired_releases += 1
                    logger.warning(
                        "%s: no answer to %s %s within %.1f s",
                        self.station_id,
                        call.action,
                        call.correlation_id,
                        self.core.config.max_call_length_s,
                    )

    async def _on_answer(self, text: str, msg: CallResult | CallError) -> None:
        now = now_utc()
        call = self._pending.pop(msg.unique_id, None)
        if call is None:
            # CitrineOS no longer knows the call: it logs the frame under a fresh id and drops it.
            logger.error("%s: MessageId not found, call may have timed out: %s", self.station_id, text)
            fresh = str(uuid.uuid4())
            await self._log_message(self.station_id, fresh, "cs", "NoAction", 2, text, now)
            await self.core.webhook_message(self, "cs", text, fresh, "NoAction", now)
            return
        await self.core.webhook_message(self, "cs", text, call.correlation_id, call.action, now)
        if isinstance(msg, CallResult):
            stamp = iso_ms(now)
            assert stamp is not None
            headers, body = self._charger_message(
                origin="cs",
                event_group="router",
                action=call.action,
                state=2,
                station_id=self.station_id,
                correlation_id=call.correlation_id,
                tenant_id=self.core.config.tenant_id,
                timestamp=stamp,
                payload=msg.payload,
            )
            self.core.publish(headers, body)
            await self._after_answer(call, msg.payload)
            call.answer = msg.payload
            self.core.callback(call, js_value(msg.payload))
        else:
            logger.warning("%s: OCPP Error routing not implemented (%s)", self.station_id, msg.error_code)
            error = {
                "_messageId": msg.unique_id,
                "_errorCode": msg.error_code,
                "_errorDetails": msg.error_details if msg.error_details is not None else {},
                "name": "OcppError",
            }
            call.answer = error
            self.core.callback(call, error)
        # Logged once the rows it implies are written: a reader that sees the answer sees them too.
        await self._log_message(self.station_id, call.correlation_id, "cs", call.action, 2, json.loads(text), now)
        if call.done is not None and not call.done.done():
            call.done.set_result(None)

    async def _after_answer(self, call: OutgoingCall, payload: Any) -> None:
        status = payload.get("status") if isinstance(payload, dict) else None
        if call.action == "SetChargingProfile":
            if status == "Accepted":
                await self.core.store.store_charging_profile(self.station_id, call.payload)
            else:
                logger.error("OCPP 1.6 SetChargingProfile rejected: %s", js_dumps(payload))
        elif call.action == "ClearChargingProfile" and status == "Accepted":
            await self.core.store.clear_charging_profiles(self.station_id)

    # --- charger request handlers -------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        return self._current.payload if self._current is not None else {}

    @on(Action.boot_notification)
    async def on_boot_notification(self, **_: Any) -> call_result.BootNotification:
        when = await self.core.store.boot(self.station_id, self._payload(), self.core.config.heartbeat_interval)
        stamp = iso_ms(when)
        assert stamp is not None
        return call_result.BootNotification(
            current_time=stamp, interval=self.core.config.heartbeat_interval, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        stamp = iso_ms(now_utc())
        assert stamp is not None
        return call_result.Heartbeat(current_time=stamp)

    @on(Action.status_notification)
    async def on_status_notification(self, **_: Any) -> call_result.StatusNotification:
        await self.core.store.status_notification(self.station_id, self._payload())
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        _auth_id, status = await self.core.store.authorization(id_tag, self.core.config.id_tags is None)
        return call_result.Authorize(id_tag_info=IdTagInfo(status=AuthorizationStatus(status)))

    @on(Action.start_transaction)
    async def on_start_transaction(self, id_tag: str, **_: Any) -> call_result.StartTransaction:
        auth_id, status = await self.core.store.authorization(id_tag, self.core.config.id_tags is None)
        transaction_id = await self.core.store.start_transaction(self.station_id, self._payload(), auth_id)
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info=IdTagInfo(status=AuthorizationStatus(status))
        )

    @on(Action.meter_values)
    async def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        await self.core.store.meter_values(self.station_id, self._payload())
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, **kwargs: Any) -> call_result.StopTransaction:
        await self.core.store.stop_transaction(self.station_id, self._payload())
        if kwargs.get("id_tag"):
            _auth_id, status = await self.core.store.authorization(kwargs["id_tag"], self.core.config.id_tags is None)
            return call_result.StopTransaction(id_tag_info=IdTagInfo(status=AuthorizationStatus(status)))
        return call_result.StopTransaction()


def station_id_from_path(path: str) -> str:
    """The station id is the last non-empty path segment (``/tenantX/CP-1`` connects as ``CP-1``)."""
    segments = [s for s in urllib.parse.urlsplit(path).path.split("/") if s]
    return urllib.parse.unquote(segments[-1]) if segments else ""


def regex_allows(pattern: str | None, frame: str) -> bool:
    """Whether a subscription's ``messageRegexFilter`` lets a frame through."""
    if not pattern:
        return True
    try:
        return re.search(pattern, frame) is not None
    except re.error:
        return True
