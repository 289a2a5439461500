"""The ``ocpp`` charge point of a simulated OCPP 1.6J station: frame log and the CSMS's calls.

The handlers only translate; the station does the work (:class:`~optivgi_citrineos.simulator.station.Station`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection

if TYPE_CHECKING:
    from optivgi_citrineos.simulator.station import Station

logger = logging.getLogger(__name__)


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
