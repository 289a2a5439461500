"""What the simulator reports: snapshots, the log of received profiles, and the websocket frames."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from ocpp.messages import Call, CallResult, MessageType, unpack

# The synchronous validator behind ocpp's (async) validate_payload: usable outside an event loop.
from ocpp.messages import _validate_payload as _ocpp_validate_payload

__all__ = [
    "ConnectorSnapshot",
    "Frame",
    "ProfileEvent",
    "SimulatorSnapshot",
    "StationSnapshot",
    "validate_frame",
]


@dataclass(frozen=True)
class ProfileEvent:
    """One SetChargingProfile (or RemoteStartTransaction profile) the simulator received.

    Attributes:
        station_id / connector_id: where it was sent (connector 0 = the charge point).
        sim_time / wall_time: when it arrived, on the simulated and the wall clock.
        profile: the ``csChargingProfiles`` object as received (camelCase).
        status: ``Accepted``, ``Rejected`` or ``CallError:<code>``.
        reason: why it was refused (None when accepted).
        limit_w: the connector's composite limit right after (None: no limit), W.
    """

    station_id: str
    connector_id: int
    sim_time: dt.datetime
    wall_time: dt.datetime
    profile: dict[str, Any]
    status: str
    reason: str | None = None
    limit_w: float | None = None

    @property
    def accepted(self) -> bool:
        """Whether the charge point accepted the profile."""
        return self.status == "Accepted"

    @property
    def profile_id(self) -> int | None:
        """The chargingProfileId (None when the payload had none)."""
        value = self.profile.get("chargingProfileId")
        return value if isinstance(value, int) else None


@dataclass(frozen=True)
class ConnectorSnapshot:
    """One connector at one moment.

    Attributes:
        status: the OCPP status last decided (Available, Preparing, Charging, SuspendedEV,
            SuspendedEVSE, Finishing).
        transaction_id: the running transaction (None when idle).
        id_tag: the session's idTag.
        ev_number: the car's number in the log (``EV 3``), None when empty.
        limit_w / limit_a: the connector's composite limit (profiles only; None = unlimited).
        tx_profile_id: the profile giving the transaction-level limit (TxProfile or TxDefaultProfile).
        power_kw: what the car draws now.
        energy_wh: the connector's energy register.
        session_energy_wh: energy since the transaction started (0 when idle).
        soc_percent: the car's state of charge (None when empty).
        ev_max_kw: the car's maximum rate.
        latest_profile: the last profile received for this connector (accepted or not).
    """

    station_id: str
    connector_id: int
    status: str
    transaction_id: int | None
    id_tag: str | None
    ev_number: int | None
    limit_w: float | None
    limit_a: float | None
    tx_profile_id: int | None
    power_kw: float
    energy_wh: float
    session_energy_wh: float
    soc_percent: float | None
    ev_max_kw: float | None
    latest_profile: ProfileEvent | None


@dataclass(frozen=True)
class StationSnapshot:
    """One charge point at one moment.

    Attributes:
        connected: the websocket is open.
        booted: the CSMS accepted its BootNotification on this connection and the station sent
            its first StatusNotifications after it.
        station_limit_w: the ChargePointMaxProfile limit now (None = none).
        power_kw: the sum over its connectors.
        connectors: by connector id (1-based).
        latest_profile: the last profile received for connector 0 (ChargePointMaxProfile or a
            TxDefaultProfile for every connector).
    """

    station_id: str
    connected: bool
    booted: bool
    station_limit_w: float | None
    power_kw: float
    connectors: dict[int, ConnectorSnapshot]
    latest_profile: ProfileEvent | None = None


@dataclass(frozen=True)
class SimulatorSnapshot:
    """Every station at one moment of simulated time (``sim_time``)."""

    sim_time: dt.datetime
    stations: dict[str, StationSnapshot] = field(default_factory=dict)

    def connector(self, station_id: str, connector_id: int = 1) -> ConnectorSnapshot:
        """One connector (KeyError when unknown)."""
        return self.stations[station_id].connectors[connector_id]

    @property
    def power_kw(self) -> float:
        """Total power drawn by every car."""
        return sum(s.power_kw for s in self.stations.values())

    @property
    def active_transactions(self) -> int:
        """How many transactions are running."""
        return sum(1 for s in self.stations.values() for c in s.connectors.values() if c.transaction_id is not None)


@dataclass(frozen=True)
class Frame:
    """One websocket frame sent or received by a simulated charge point.

    ``action`` is the call's action, also for the CALLRESULT/CALLERROR answering a call.
    """

    station_id: str
    direction: str  # "send" or "recv"
    sim_time: dt.datetime
    wall_time: dt.datetime
    text: str
    action: str | None

    @property
    def message_type(self) -> int | None:
        """2 CALL, 3 CALLRESULT, 4 CALLERROR (None when not an OCPP frame)."""
        try:
            value = json.loads(self.text)[0]
        except (json.JSONDecodeError, IndexError, KeyError, TypeError):
            return None
        return value if isinstance(value, int) else None

    @property
    def payload(self) -> Any:
        """The frame's payload (CALL/CALLRESULT), or None."""
        try:
            parsed = json.loads(self.text)
        except json.JSONDecodeError:
            return None
        if parsed and parsed[0] == MessageType.Call:
            return parsed[3]
        if parsed and parsed[0] == MessageType.CallResult:
            return parsed[2]
        return None


def validate_frame(text: str, action: str | None = None, version: str = "1.6") -> None:
    """Check one OCPP frame against the ``ocpp`` library's JSON schemas (``version`` 1.6 or 2.0.1).

    ``action`` names the call a CALLRESULT answers (a CALLRESULT does not carry it). CALLERROR
    frames have no schema and only need to parse.

    Raises:
        OCPPError: the frame does not match its schema (FormatViolation, ProtocolError, ...).
        ValueError: a CALLRESULT without ``action``.
    """
    message = unpack(text)
    if isinstance(message, Call):
        _ocpp_validate_payload(message, version)
    elif isinstance(message, CallResult):
        if not action:
            raise ValueError("validating a CALLRESULT needs the action of the call it answers")
        message.action = action
        _ocpp_validate_payload(message, version)
