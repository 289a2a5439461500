"""A scriptable OCPP 2.0.1 charging station (python ``ocpp``, schema validation on) for tests of the double.

It sends what the recorded station of ``amqp-messages-2.0.1.jsonl`` sent, one call per method, and
answers the CSMS calls CitrineOS sends a 2.0.1 station: SetChargingProfile (Accepted, or Rejected for
the ids in ``reject_profiles``), ClearChargingProfile, GetChargingProfiles and GetBaseReport (followed
by a NotifyReport naming its EVSEs)::

    with LoopThread() as loop:
        station = TestStation201("CP-201", double.ws201_url)
        loop.run(station.connect())
        loop.run(station.start_transaction(meter_wh=1000))
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result

__all__ = ["Received201", "TestStation201"]


def _now() -> str:
    when = dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _energy(wh: float, power_w: float | None = None) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = [
        {"value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh", "multiplier": 0}}
    ]
    if power_w is not None:
        samples.append({"value": power_w, "measurand": "Power.Active.Import",
                        "unitOfMeasure": {"unit": "W", "multiplier": 0}})
    return [{"timestamp": _now(), "sampledValue": samples}]


@dataclass
class Received201:
    """A CSMS call the station received (payload as sent, camelCase)."""

    action: str
    payload: dict[str, Any]


class _Station(ChargePoint):
    def __init__(self, owner: TestStation201, ws: Any) -> None:
        super().__init__(owner.station_id, ws)
        self.owner = owner

    async def route_message(self, raw_msg: str | bytes) -> None:
        import json

        text = raw_msg if isinstance(raw_msg, str) else raw_msg.decode()
        parsed = json.loads(text)
        if isinstance(parsed, list) and parsed and parsed[0] == 2:
            self.owner.received.append(Received201(str(parsed[2]), parsed[3]))
        await super().route_message(text)

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, charging_profile: dict[str, Any], **_: Any) -> Any:
        status = "Rejected" if charging_profile.get("id") in self.owner.reject_profiles else "Accepted"
        return call_result.SetChargingProfile(status=status)

    @on("ClearChargingProfile")
    async def on_clear_charging_profile(self, **_: Any) -> Any:
        return call_result.ClearChargingProfile(status="Accepted")

    @on("GetChargingProfiles")
    async def on_get_charging_profiles(self, **_: Any) -> Any:
        return call_result.GetChargingProfiles(status="NoProfiles")

    @on("GetBaseReport")
    async def on_get_base_report(self, request_id: int, **_: Any) -> Any:
        self.owner.spawn(self.owner.notify_report(request_id))
        return call_result.GetBaseReport(status="Accepted")


@dataclass
class TestStation201:
    """One OCPP 2.0.1 station with ``evses`` EVSEs of one connector each."""

    station_id: str
    ws_url: str
    evses: int = 1
    id_token: str = "OPTIVGI-01"
    reject_profiles: set[int] = field(default_factory=set)
    received: list[Received201] = field(default_factory=list)
    transaction_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _cp: _Station | None = None
    _ws: Any = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _seq: int = 0

    __test__ = False  # not a pytest class

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _serve(cp: _Station) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await cp.start()

    @property
    def cp(self) -> _Station:
        if self._cp is None:
            raise RuntimeError("not connected")
        return self._cp

    async def connect(self, boot: bool = True) -> Any:
        """Open the websocket (subprotocol ocpp2.0.1), then BootNotification (and return its answer)."""
        self._ws = await websockets.connect(f"{self.ws_url}/{self.station_id}", subprotocols=["ocpp2.0.1"])
        self._cp = _Station(self, self._ws)
        self.spawn(self._serve(self._cp))
        if not boot:
            return None
        return await self.cp.call(
            call.BootNotification(charging_station={"model": "Sim201", "vendor_name": "Rec"}, reason="PowerUp")
        )

    async def status(self, status: str = "Occupied", evse: int = 1) -> Any:
        return await self.cp.call(
            call.StatusNotification(timestamp=_now(), connector_status=status, evse_id=evse, connector_id=1)
        )

    async def _event(self, event_type: str, trigger: str, info: dict[str, Any], **extra: Any) -> Any:
        seq = 999 if event_type == "Ended" else self._seq
        self._seq += 1
        return await self.cp.call(
            call.TransactionEvent(event_type=event_type, timestamp=_now(), trigger_reason=trigger, seq_no=seq,
                                  transaction_info=info, offline=False, **extra)
        )

    async def start_transaction(self, meter_wh: float = 1000, evse: int = 1) -> Any:
        return await self._event(
            "Started", "Authorized", {"transaction_id": self.transaction_id, "charging_state": "EVConnected"},
            meter_value=_energy(meter_wh), evse={"id": evse, "connector_id": 1},
            id_token={"id_token": self.id_token, "type": "ISO14443"},
        )

    async def update(self, meter_wh: float, power_w: float = 7200) -> Any:
        return await self._event(
            "Updated", "MeterValuePeriodic", {"transaction_id": self.transaction_id, "charging_state": "Charging"},
            meter_value=_energy(meter_wh, power_w),
        )

    async def end_transaction(self) -> Any:
        return await self._event(
            "Ended", "EVCommunicationLost",
            {"transaction_id": self.transaction_id, "charging_state": "Idle", "stopped_reason": "EVDisconnected"},
        )

    async def meter_values(self, meter_wh: float, evse: int = 1) -> Any:
        return await self.cp.call(call.MeterValues(evse_id=evse, meter_value=_energy(meter_wh)))

    async def charging_needs(self, departure: dt.datetime, energy_wh: int = 30000, evse: int = 1) -> Any:
        return await self.cp.call(call.NotifyEVChargingNeeds(
            evse_id=evse,
            charging_needs={
                "requested_energy_transfer": "AC_single_phase",
                "departure_time": departure.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ac_charging_parameters": {"energy_amount": energy_wh, "ev_min_current": 6, "ev_max_current": 32,
                                           "ev_max_voltage": 240},
            },
        ))

    async def notify_report(self, request_id: int) -> Any:
        """The device model's EVSE components (what CitrineOS learns EVSEs from)."""
        data = [
            {"component": {"name": "EVSE", "evse": {"id": n}}, "variable": {"name": "EvseId"},
             "variable_attribute": [{"type": "Actual", "value": f"{self.station_id}*E{n}"}]}
            for n in range(1, self.evses + 1)
        ]
        return await self.cp.call(call.NotifyReport(request_id=request_id, generated_at=_now(), seq_no=0,
                                                    report_data=data, tbc=False))

    def received_of(self, action: str) -> list[Received201]:
        return [r for r in self.received if r.action == action]

    async def wait_received(self, action: str, count: int = 1, timeout: float = 5.0) -> list[Received201]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received_of(action)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.station_id} received {len(self.received_of(action))} {action}, not {count}")
            await asyncio.sleep(0.02)
        return self.received_of(action)

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in list(self._tasks):
            task.cancel()
