"""A scriptable OCPP 1.6J charge point built on the ``ocpp`` library, for tests and demos.

It connects over a real websocket (subprotocol ``ocpp1.6``), sends what a charger sends during a
session (BootNotification, StatusNotification, Authorize, StartTransaction, MeterValues,
StopTransaction, Heartbeat) and answers the CSMS's SetChargingProfile with Accepted, Rejected, a
CALLERROR, or after a delay, as configured per chargingProfileId.

Example (inside a coroutine)::

    cp = TestChargePoint("CP-1", double.ws_url, id_tag="TAG-1")
    await cp.connect()
    transaction_id = await cp.start_session(meter_start_wh=5000)
    await cp.send_meter_values(energy_wh=5010, power_w=3840, current_a=16.0, soc=30)
    await cp.stop_transaction(meter_stop_wh=5220)
    await cp.close()

From synchronous code, :class:`LoopThread` runs the coroutines in a background loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import websockets
from ocpp.exceptions import GenericError, OCPPError, PropertyConstraintViolationError
from ocpp.messages import MessageType
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    GetCompositeScheduleStatus,
    TriggerMessageStatus,
)
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["LoopThread", "ProfileAnswer", "TestChargePoint"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ProfileAnswer:
    """How the charge point answers one SetChargingProfile.

    ``kind`` is ``"Accepted"``, ``"Rejected"`` or ``"CallError"``; ``delay_s`` holds the answer back
    (the charge point keeps sending its own messages meanwhile).
    """

    kind: str = "Accepted"
    delay_s: float = 0.0
    error_code: str = "GenericError"
    error_description: str = "simulated charger failure"

    def __post_init__(self) -> None:
        if self.kind not in ("Accepted", "Rejected", "CallError"):
            raise ValueError(f"ProfileAnswer.kind must be Accepted, Rejected or CallError, got {self.kind!r}")
        if self.delay_s < 0:
            raise ValueError(f"ProfileAnswer.delay_s must be >= 0, got {self.delay_s}")

    @classmethod
    def accepted(cls, delay_s: float = 0.0) -> ProfileAnswer:
        """Answer ``{"status": "Accepted"}`` (optionally late)."""
        return cls("Accepted", delay_s)

    @classmethod
    def rejected(cls, delay_s: float = 0.0) -> ProfileAnswer:
        """Answer ``{"status": "Rejected"}``."""
        return cls("Rejected", delay_s)

    @classmethod
    def call_error(
        cls, code: str = "GenericError", description: str = "simulated charger failure", delay_s: float = 0.0
    ) -> ProfileAnswer:
        """Answer with a CALLERROR (``GenericError`` or ``PropertyConstraintViolation``)."""
        if code not in ("GenericError", "PropertyConstraintViolation"):
            raise ValueError(f"unsupported CALLERROR code {code!r}")
        return cls("CallError", delay_s, code, description)


def default_profile_answer(payload: dict[str, Any]) -> ProfileAnswer:
    """Accept every profile except one with a negative limit (CALLERROR PropertyConstraintViolation)."""
    periods = payload.get("csChargingProfiles", {}).get("chargingSchedule", {}).get("chargingSchedulePeriod", [])
    if any(float(p.get("limit", 0)) < 0 for p in periods):
        return ProfileAnswer.call_error("PropertyConstraintViolation", "limit must be >= 0")
    return ProfileAnswer.accepted()


def _now(clock: Callable[[], dt.datetime] | None = None) -> str:
    now = clock() if clock is not None else dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class Received:
    """A CSMS call the charge point received."""

    action: str
    unique_id: str
    payload: dict[str, Any]
    at: float


class _Client(ChargePoint):
    """The ``ocpp`` charge point, with CSMS calls handled concurrently (a late answer must not
    stop the charger from sending its own messages)."""

    def __init__(self, owner: TestChargePoint, connection: ClientConnection) -> None:
        super().__init__(owner.station_id, connection, response_timeout=owner.response_timeout)
        self.owner = owner
        self._handlers: set[asyncio.Task[None]] = set()

    async def route_message(self, raw_msg: str) -> None:
        try:
            parsed = json.loads(raw_msg)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and parsed and parsed[0] == MessageType.Call and len(parsed) == 4:
            self.owner.received.append(Received(parsed[2], parsed[1], parsed[3], asyncio.get_running_loop().time()))
            task = asyncio.create_task(super().route_message(raw_msg))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            return
        await super().route_message(raw_msg)

    async def _react(self, answer: ProfileAnswer) -> None:
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if answer.kind == "CallError":
            error: OCPPError
            if answer.error_code == "PropertyConstraintViolation":
                error = PropertyConstraintViolationError(description=answer.error_description)
            else:
                error = GenericError(description=answer.error_description)
            raise error

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, **_: Any) -> call_result.SetChargingProfile:
        payload = self.owner.last_payload("SetChargingProfile")
        profile_id = payload.get("csChargingProfiles", {}).get("chargingProfileId")
        policy = self.owner.profile_answers.get(profile_id) if profile_id is not None else None
        answer = policy if policy is not None else self.owner.profile_policy(payload)
        await self._react(answer)
        status = ChargingProfileStatus.accepted if answer.kind == "Accepted" else ChargingProfileStatus.rejected
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, **_: Any) -> call_result.ClearChargingProfile:
        return call_result.ClearChargingProfile(status=ClearChargingProfileStatus.accepted)

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, connector_id: int, duration: int, **kwargs: Any
    ) -> call_result.GetCompositeSchedule:
        unit = kwargs.get("charging_rate_unit") or "A"
        limit = self.owner.composite_limit
        return call_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted,
            connector_id=connector_id,
            schedule_start=_now(),
            charging_schedule={
                "chargingRateUnit": unit,
                "duration": duration,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 1}],
            },
        )

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **kwargs: Any) -> call_result.TriggerMessage:
        if requested_message in ("MeterValues", "Heartbeat", "StatusNotification"):
            self.owner._after_trigger(requested_message, kwargs.get("connector_id"))
            return call_result.TriggerMessage(status=TriggerMessageStatus.accepted)
        return call_result.TriggerMessage(status=TriggerMessageStatus.not_implemented)


@dataclass
class _MeterState:
    energy_wh: float = 0.0
    power_w: float = 0.0
    current_a: float = 0.0
    soc: float | None = None


class TestChargePoint:
    """An OCPP 1.6J charge point with one connector per session, driven from a coroutine.

    Args:
        station_id: the charge point identity (last URL segment).
        base_url: the CSMS websocket base URL (``CitrineOSDouble.ws_url``); the station id is appended.
        id_tag: idTag used for Authorize/StartTransaction.
        connector_id: OCPP connector of the session.
        profile_answers: per chargingProfileId, how to answer SetChargingProfile.
        profile_policy: answer for profiles not in ``profile_answers``
            (default: accept, CALLERROR for a negative limit).
        response_timeout: seconds to wait for the CSMS's answer to the charger's own calls.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        station_id: str,
        base_url: str,
        *,
        id_tag: str = "OPTIVGI-TAG",
        connector_id: int = 1,
        profile_answers: dict[int, ProfileAnswer] | None = None,
        profile_policy: Callable[[dict[str, Any]], ProfileAnswer] = default_profile_answer,
        response_timeout: float = 35.0,
        composite_limit: float = 16,
    ) -> None:
        self.station_id = station_id
        self.url = f"{base_url.rstrip('/')}/{station_id}"
        self.id_tag = id_tag
        self.connector_id = connector_id
        self.profile_answers: dict[int, ProfileAnswer] = dict(profile_answers or {})
        self.profile_policy = profile_policy
        self.response_timeout = response_timeout
        self.composite_limit = composite_limit
        self.transaction_id: int | None = None
        self.received: list[Received] = []
        self.meter = _MeterState()
        #: The charger's clock for the timestamps it sends (None: the wall clock).
        self.clock: Callable[[], dt.datetime] | None = None
        self._client: _Client | None = None
        self._connection: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # --- connection -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the websocket (subprotocol ocpp1.6) and start reading."""
        self._connection = await connect(self.url, subprotocols=["ocpp1.6"], open_timeout=10)  # type: ignore[list-item]
        self._client = _Client(self, self._connection)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._client is not None and self._connection is not None
        try:
            await self._client.start()
        except websockets.ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
            self.close_reason = exc.rcvd.reason if exc.rcvd is not None else None

    @property
    def connected(self) -> bool:
        """Whether the websocket is open."""
        return self._reader is not None and not self._reader.done()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the CSMS closes the connection."""
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def close(self) -> None:
        """Close the websocket."""
        for task in list(self._tasks):
            task.cancel()
        if self._connection is not None:
            await self._connection.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._connection = None
        self._client = None

    @property
    def client(self) -> ChargePoint:
        """The underlying ``ocpp`` charge point (for calls this class does not wrap)."""
        if self._client is None:
            raise RuntimeError(f"{self.station_id} is not connected")
        return self._client

    async def _call(self, payload: Any) -> Any:
        # suppress=False: a CALLERROR from the CSMS raises (an OCPPError naming code and text).
        return await self.client.call(payload, suppress=False)

    def last_payload(self, action: str) -> dict[str, Any]:
        """Raw payload of the latest received CSMS call of this action ({} if none)."""
        for item in reversed(self.received):
            if item.action == action:
                return item.payload
        return {}

    # --- messages ---------------------------------------------------------------------------------

    async def boot(self, vendor: str = "Lab", model: str = "LabSim") -> call_result.BootNotification:
        """Send BootNotification."""
        return await self._call(
            call.BootNotification(
                charge_point_model=model, charge_point_vendor=vendor, charge_point_serial_number=self.station_id
            )
        )

    async def heartbeat(self) -> call_result.Heartbeat:
        """Send Heartbeat."""
        return await self._call(call.Heartbeat())

    async def status(self, status: str, connector_id: int | None = None, error_code: str = "NoError") -> None:
        """Send StatusNotification for a connector (0 = the whole charge point)."""
        await self._call(
            call.StatusNotification(
                connector_id=self.connector_id if connector_id is None else connector_id,
                error_code=error_code,
                status=status,
                timestamp=_now(self.clock),
            )
        )

    async def authorize(self, id_tag: str | None = None) -> str:
        """Send Authorize; returns the idTagInfo status."""
        result = await self._call(call.Authorize(id_tag=id_tag or self.id_tag))
        return str(result.id_tag_info["status"])

    async def start_transaction(self, meter_start_wh: int = 1000, id_tag: str | None = None) -> int:
        """Send StartTransaction; returns (and remembers) the transactionId."""
        result = await self._call(
            call.StartTransaction(
                connector_id=self.connector_id,
                id_tag=id_tag or self.id_tag,
                meter_start=meter_start_wh,
                timestamp=_now(self.clock),
            )
        )
        self.transaction_id = int(result.transaction_id)
        self.meter.energy_wh = meter_start_wh
        return self.transaction_id

    async def start_session(self, meter_start_wh: int = 1000, boot: bool = True) -> int:
        """Boot, report connectors 0 and the session's connector Available, Preparing, Authorize,
        StartTransaction, Charging; returns the transactionId."""
        if boot:
            await self.boot()
        await self.status("Available", connector_id=0)
        await self.status("Available")
        await self.status("Preparing")
        await self.authorize()
        transaction_id = await self.start_transaction(meter_start_wh)
        await self.status("Charging")
        return transaction_id

    async def send_meter_values(
        self,
        energy_wh: float | None = None,
        power_w: float | None = None,
        current_a: float | None = None,
        soc: float | None = None,
        transaction_id: int | None = None,
    ) -> None:
        """Send MeterValues with the register, power, current and SoC (values as strings, like a charger)."""
        if energy_wh is not None:
            self.meter.energy_wh = energy_wh
        if power_w is not None:
            self.meter.power_w = power_w
        if current_a is not None:
            self.meter.current_a = current_a
        if soc is not None:
            self.meter.soc = soc
        samples: list[dict[str, Any]] = [
            {
                "value": _fmt(self.meter.energy_wh),
                "measurand": "Energy.Active.Import.Register",
                "unit": "Wh",
                "context": "Sample.Periodic",
                "location": "Outlet",
            },
            {
                "value": f"{self.meter.current_a:.1f}",
                "measurand": "Current.Import",
                "unit": "A",
                "context": "Sample.Periodic",
                "phase": "L1",
            },
            {
                "value": _fmt(self.meter.power_w),
                "measurand": "Power.Active.Import",
                "unit": "W",
                "context": "Sample.Periodic",
            },
        ]
        if self.meter.soc is not None:
            samples.append(
                {
                    "value": _fmt(self.meter.soc),
                    "measurand": "SoC",
                    "unit": "Percent",
                    "context": "Sample.Periodic",
                    "location": "EV",
                }
            )
        tx = transaction_id if transaction_id is not None else self.transaction_id
        await self._call(
            call.MeterValues(
                connector_id=self.connector_id,
                meter_value=[{"timestamp": _now(self.clock), "sampledValue": samples}],
                transaction_id=tx,
            )
        )

    async def stop_transaction(
        self, meter_stop_wh: int | None = None, reason: str = "EVDisconnected", finish: bool = True
    ) -> None:
        """Send StopTransaction (then Finishing and Available when ``finish``)."""
        if self.transaction_id is None:
            raise RuntimeError(f"{self.station_id} has no transaction to stop")
        meter_stop = int(self.meter.energy_wh if meter_stop_wh is None else meter_stop_wh)
        await self._call(
            call.StopTransaction(
                meter_stop=meter_stop,
                timestamp=_now(self.clock),
                transaction_id=self.transaction_id,
                reason=reason,
                id_tag=self.id_tag,
            )
        )
        self.transaction_id = None
        if finish:
            await self.status("Finishing")
            await self.status("Available")

    def _after_trigger(self, requested: str, connector_id: int | None) -> None:
        async def send() -> None:
            await asyncio.sleep(0.05)
            if requested == "MeterValues":
                await self.send_meter_values()
            elif requested == "Heartbeat":
                await self.heartbeat()
            else:
                await self.status("Charging" if self.transaction_id else "Available", connector_id)

        task = asyncio.create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class LoopThread:
    """An asyncio loop in a daemon thread, to drive :class:`TestChargePoint` from synchronous code.

    Example::

        with LoopThread() as loop:
            cp = TestChargePoint("CP-1", double.ws_url)
            loop.run(cp.connect())
            loop.run(cp.start_session())
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chargepoint-loop", daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run ``coro`` in the loop and wait for its result."""
        if not self._thread.is_alive():
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` in the loop without waiting."""
        if not self._thread.is_alive():
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self) -> None:
        """Stop the loop and the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
