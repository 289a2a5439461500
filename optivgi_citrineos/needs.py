"""OCPP 2.0.1 charging needs (NotifyEVChargingNeeds) as the CitrineOS translation uses them.

A 2.0.1 charger relays what the car itself asked for (ISO 15118): the energy it wants, when it
leaves, and the currents or power it takes. CitrineOS publishes the request on its exchange
(``origin cs``, ``state 1``, action ``NotifyEVChargingNeeds``; recorded in
``citrineos-contract/amqp-messages-2.0.1.jsonl``) with the payload::

    {"chargingNeeds": {"requestedEnergyTransfer": "AC_single_phase",
                       "departureTime": "2026-11-24T03:20:15Z",
                       "acChargingParameters": {"energyAmount": 30000, "evMinCurrent": 6,
                                                "evMaxCurrent": 32, "evMaxVoltage": 240}},
     "evseId": 1}

or ``dcChargingParameters`` (``evMaxCurrent``, ``evMaxVoltage``, ``energyAmount``, ``evMaxPower``,
...) for DC. :func:`parse_charging_needs` checks every field on its own (a bad one is reported and
left out, the others still count) and :class:`ChargingNeedsStore` keeps the latest needs per
(station, EVSE) until the transaction they belong to ends, or until they are too old.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from optivgi.models.ev import to_utc

__all__ = [
    "NEEDS_MAX_AGE_S",
    "ChargingNeeds",
    "ChargingNeedsStore",
    "ParsedNeeds",
    "parse_charging_needs",
]

logger = logging.getLogger(__name__)

#: Needs older than this are forgotten even when no stop was seen (a lost StopTransaction or
#: TransactionEvent Ended must not let one car's needs steer the next car on that EVSE forever).
NEEDS_MAX_AGE_S = 24 * 3600.0

#: Phases per AC ``requestedEnergyTransfer`` (OCPP 2.0.1 EnergyTransferModeEnumType).
_AC_PHASES: Mapping[str, int] = {"AC_single_phase": 1, "AC_two_phase": 2, "AC_three_phase": 3}


@attrs.frozen
class ChargingNeeds:
    """What one car asked for through NotifyEVChargingNeeds; None = not given or invalid.

    Attributes:
        evse_id: the EVSE (the translation takes it as the connector number).
        transfer: ``requestedEnergyTransfer`` as sent (``AC_single_phase``, ``DC``, ...).
        dc: whether the DC parameters were used.
        phases: phases of an AC transfer (1, 2, 3), None for DC or an unknown mode.
        departure: ``departureTime`` (UTC).
        energy_wh: ``energyAmount`` [Wh].
        min_current_a: AC ``evMinCurrent`` [A].
        max_current_a: ``evMaxCurrent`` [A] (AC per phase; DC of the battery).
        max_voltage_v: ``evMaxVoltage`` [V].
        max_power_w: DC ``evMaxPower`` [W].
    """

    evse_id: int
    transfer: str | None = None
    dc: bool = False
    phases: int | None = None
    departure: datetime | None = None
    energy_wh: float | None = None
    min_current_a: float | None = None
    max_current_a: float | None = None
    max_voltage_v: float | None = None
    max_power_w: float | None = None

    @property
    def empty(self) -> bool:
        """True when no field that changes a session survived validation."""
        return (
            self.departure is None
            and self.energy_wh is None
            and self.min_current_a is None
            and self.max_current_a is None
            and self.max_power_w is None
        )

    def max_power_kw(self, voltage: float, phases: int) -> float | None:
        """Most power the car takes [kW]: DC ``evMaxPower`` (or, without it, ``evMaxCurrent`` ×
        ``evMaxVoltage`` as an upper bound); AC ``evMaxCurrent`` × ``voltage`` × ``phases``."""
        if self.dc:
            if self.max_power_w is not None:
                return self.max_power_w / 1000.0
            if self.max_current_a is not None and self.max_voltage_v is not None:
                return self.max_current_a * self.max_voltage_v / 1000.0
            return None
        if self.max_current_a is None:
            return None
        return self.max_current_a * voltage * phases / 1000.0

    def min_power_kw(self, voltage: float, phases: int) -> float | None:
        """Least power while charging [kW]: AC ``evMinCurrent`` × ``voltage`` × ``phases``; DC has none."""
        if self.dc or self.min_current_a is None:
            return None
        return self.min_current_a * voltage * phases / 1000.0


@attrs.frozen
class ParsedNeeds:
    """The outcome of :func:`parse_charging_needs`.

    Attributes:
        needs: what can be used, or None when nothing can (no valid ``evseId`` or no valid field).
        problems: one text per field that was left out, for the log.
    """

    needs: ChargingNeeds | None
    problems: tuple[str, ...] = ()


def _number(value: Any, name: str, problems: list[str]) -> float | None:
    """A finite number >= 0, or None (with a problem noted when a value was there but bad)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{name} must be a number, got {value!r}")
        return None
    result = float(value)
    if not math.isfinite(result) or result < 0:
        problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        return None
    return result


def _departure(value: Any, now: datetime, problems: list[str]) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"departureTime must be a date-time string, got {value!r}")
        return None
    try:
        # Python 3.11 reads the ``Z`` suffix itself; the replace keeps older spellings working.
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        problems.append(f"departureTime is not an ISO 8601 date-time: {value!r}")
        return None
    if parsed.tzinfo is None:
        # OCPP date-times carry an offset; a bare one cannot be placed in time with confidence.
        problems.append(f"departureTime has no UTC offset: {value!r}")
        return None
    parsed = to_utc(parsed)
    if parsed <= now:
        problems.append(f"departureTime {value} is not after now ({now.isoformat()})")
        return None
    return parsed


def parse_charging_needs(payload: Any, now: datetime) -> ParsedNeeds:
    """Read a NotifyEVChargingNeeds payload; never raises.

    Every number must be finite and >= 0 and ``departureTime`` an ISO date-time after ``now``;
    a field that is not is left out and named in ``problems``. The parameter block follows
    ``requestedEnergyTransfer`` (``DC`` → ``dcChargingParameters``, otherwise
    ``acChargingParameters``), or whichever block is present when the mode is unknown.
    """
    problems: list[str] = []
    if not isinstance(payload, Mapping):
        return ParsedNeeds(None, (f"payload must be an object, got {type(payload).__name__}",))
    evse = payload.get("evseId")
    if isinstance(evse, bool) or not isinstance(evse, int) or evse < 1:
        # EVSE 0 is the whole station: needs are always about one car on one EVSE.
        return ParsedNeeds(None, (f"evseId must be an integer >= 1, got {evse!r}",))
    raw = payload.get("chargingNeeds")
    if not isinstance(raw, Mapping):
        return ParsedNeeds(None, (f"chargingNeeds must be an object, got {type(raw).__name__}",))

    transfer = raw.get("requestedEnergyTransfer")
    transfer = transfer if isinstance(transfer, str) else None
    ac, dc_params = raw.get("acChargingParameters"), raw.get("dcChargingParameters")
    if transfer == "DC" or (transfer not in _AC_PHASES and ac is None and dc_params is not None):
        dc, block, block_name = True, dc_params, "dcChargingParameters"
    else:
        dc, block, block_name = False, ac, "acChargingParameters"
    if block is not None and not isinstance(block, Mapping):
        problems.append(f"{block_name} must be an object, got {type(block).__name__}")
        block = None
    params: Mapping[str, Any] = block or {}

    def field(key: str) -> float | None:
        return _number(params.get(key), f"{block_name}.{key}", problems)

    needs = ChargingNeeds(
        evse_id=evse,
        transfer=transfer,
        dc=dc,
        phases=None if dc or transfer is None else _AC_PHASES.get(transfer),
        departure=_departure(raw.get("departureTime"), to_utc(now), problems),
        energy_wh=field("energyAmount"),
        min_current_a=None if dc else field("evMinCurrent"),
        max_current_a=field("evMaxCurrent"),
        max_voltage_v=field("evMaxVoltage"),
        max_power_w=field("evMaxPower") if dc else None,
    )
    if needs.empty:
        return ParsedNeeds(None, (*problems, "no usable field"))
    return ParsedNeeds(needs, tuple(problems))


@attrs.define
class _Entry:
    needs: ChargingNeeds
    received: float
    # The transaction the needs were first applied to: a later transaction on the same EVSE is
    # another car, whose needs these are not.
    transaction_id: str | None = None


class ChargingNeedsStore:
    """The latest charging needs per (station, EVSE), safe to use from several threads.

    Needs are kept until the transaction they belong to ends (:meth:`transaction_ended`), until
    another transaction shows up on that EVSE, or for ``max_age_s`` at most.

    Args:
        max_age_s: how long needs are kept at most.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, max_age_s: float = NEEDS_MAX_AGE_S, clock: Callable[[], float] = time.monotonic) -> None:
        if not math.isfinite(max_age_s) or max_age_s <= 0:
            raise ValueError(f"max_age_s must be a positive number, got {max_age_s!r}")
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], _Entry] = {}
        # Which connector each transaction was seen on, so a StopTransaction (which names no
        # connector) finds the needs to drop.
        self._tx_connector: dict[tuple[str, str], int] = {}

    def update(self, station_id: str, needs: ChargingNeeds) -> None:
        """Keep ``needs`` as the latest of its EVSE (replacing earlier ones: the car restated them)."""
        with self._lock:
            self._entries[(station_id, needs.evse_id)] = _Entry(needs, self._clock())

    def get(self, station_id: str, connector_id: int, transaction_id: str) -> ChargingNeeds | None:
        """The needs for this session, binding them to ``transaction_id`` on first use.

        None when there are none, when they are too old, or when they were bound to another
        transaction (those are dropped: a new transaction on the EVSE means another car).
        """
        key = (station_id, connector_id)
        with self._lock:
            self._tx_connector[(station_id, transaction_id)] = connector_id
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry.received > self._max_age_s:
                del self._entries[key]
                logger.info("charging needs of %s EVSE %d expired", station_id, connector_id)
                return None
            if entry.transaction_id is None:
                entry.transaction_id = transaction_id
            elif entry.transaction_id != transaction_id:
                del self._entries[key]
                logger.info(
                    "charging needs of %s EVSE %d dropped: they belonged to transaction %s, now %s",
                    station_id,
                    connector_id,
                    entry.transaction_id,
                    transaction_id,
                )
                return None
            return entry.needs

    def peek(self, station_id: str, evse_id: int) -> ChargingNeeds | None:
        """The needs kept for an EVSE, without binding them (for inspection)."""
        with self._lock:
            entry = self._entries.get((station_id, evse_id))
            return None if entry is None else entry.needs

    def transaction_ended(self, station_id: str, transaction_id: str, evse_id: int | None = None) -> list[int]:
        """Drop the needs of a transaction that ended; returns the EVSEs dropped.

        The EVSE is the event's (2.0.1 TransactionEvent ``evse.id``), else the connector the
        transaction was last read on. When neither is known (a transaction that ended before any
        cycle read it), every needs entry of the station not yet bound to a transaction is
        dropped: they may be that car's, and keeping a departed car's needs is the worse error.
        """
        with self._lock:
            connector = self._tx_connector.pop((station_id, transaction_id), None)
            where = evse_id if evse_id is not None else connector
            dropped: list[int] = []
            for (station, evse), entry in list(self._entries.items()):
                if station != station_id:
                    continue
                if entry.transaction_id is not None:
                    hit = entry.transaction_id == transaction_id
                else:
                    hit = where is None or evse == where
                if hit:
                    del self._entries[(station, evse)]
                    dropped.append(evse)
            return sorted(dropped)

    def prune(self, stations: set[str], active: set[tuple[str, str]]) -> None:
        """Forget needs older than the bound, and which connector the transactions of
        ``stations`` that are not in ``active`` (``(station, transaction)``) were on.

        Only ``stations`` are pruned of transactions: each group reads its own stations, and
        another group's sessions must not be forgotten by this one's read.
        """
        cutoff = self._clock() - self._max_age_s
        with self._lock:
            for key, entry in list(self._entries.items()):
                if entry.received < cutoff:
                    del self._entries[key]
            self._tx_connector = {
                k: v for k, v in self._tx_connector.items() if k[0] not in stations or k in active
            }

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
