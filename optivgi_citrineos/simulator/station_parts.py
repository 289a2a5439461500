"""Parts of a simulated OCPP 1.6J charge point: its constants, its hooks and one connector's state."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ocpp.exceptions import (
    FormatViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)

from optivgi_citrineos.simulator.battery import Battery
from optivgi_citrineos.simulator.config import EVSpec
from optivgi_citrineos.simulator.profiles import (
    ChargingProfile,
    CompositeLimit,
)
from optivgi_citrineos.simulator.records import Frame, ProfileEvent

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
