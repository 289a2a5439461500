"""What the plugin learns from CitrineOS's RabbitMQ events between reads (thread-safe).

- Ended sessions: a StopTransaction / TransactionEvent Ended hides its session before the database
  marks it inactive (at most :data:`ENDED_TTL_S`).
- No lost arrivals: a StartTransaction / TransactionEvent Started whose session is missing from the
  next read asks for another read :data:`REREAD_DELAY_S` later, again and again for at most
  :data:`ARRIVAL_WAIT_S`, so a new car is planned as soon as CitrineOS has written its row.
- Charging needs (OCPP 2.0.1 NotifyEVChargingNeeds) per (station, EVSE).
- Connectors reported by StatusNotification, and stations that (re)booted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from optivgi.models.ev import to_utc
from optivgi_citrineos.listener import AmqpEvent
from optivgi_citrineos.needs import ChargingNeedsStore, parse_charging_needs

__all__ = ["ARRIVAL_WAIT_S", "ENDED_TTL_S", "REREAD_DELAY_S", "EventBook"]

logger = logging.getLogger(__name__)

#: How long an ended session stays hidden at most, in case the database never marks it inactive.
ENDED_TTL_S = 600.0
#: Pause before reading again when a started session is not in the read yet.
REREAD_DELAY_S = 0.15
#: How long a started session is waited for.
ARRIVAL_WAIT_S = 10.0


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class EventBook:
    """Keeps what RabbitMQ events say until the database says it too.

    Args:
        needs: where OCPP 2.0.1 charging needs are kept.
        clock: wall clock (UTC) for parsing departures.
        monotonic: seconds clock for the bounds (injectable for tests).
        on_station: called with (station, rebooted) when a station reports a new connector or boots.
        seen_connector: called with (station, connector) for every StatusNotification; returns
            True when the connector is new.
    """

    def __init__(self, needs: ChargingNeedsStore, clock: Callable[[], datetime],
                 seen_connector: Callable[[str, int], bool], on_station: Callable[[str, bool], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.needs = needs
        self._clock = clock
        self._mono = monotonic
        self._seen_connector = seen_connector
        self._on_station = on_station
        self._lock = threading.Lock()
        self._ended: dict[tuple[str, str], float] = {}
        self._arrivals: dict[tuple[str, int], float] = {}
        self._timer: threading.Timer | None = None
        self.trigger: Callable[[str], None] | None = None

    def feed(self, event: AmqpEvent) -> None:
        """Handle one charger-originated request seen on RabbitMQ."""
        if event.origin != "cs" or event.state != 1 or not isinstance(event.payload, Mapping):
            return
        payload, station = event.payload, event.station_id
        if event.action == "BootNotification":
            self._on_station(station, True)
        elif event.action == "StatusNotification":
            connector = _int(payload.get("connectorId")) or _int((payload.get("evse") or {}).get("id"))
            if connector and self._seen_connector(station, connector):
                self._on_station(station, False)
        elif event.action == "NotifyEVChargingNeeds":
            self._charging_needs(event)
        elif event.action == "StartTransaction":
            self._arrived(station, _int(payload.get("connectorId")))
        elif event.action == "TransactionEvent" and payload.get("eventType") == "Started":
            self._arrived(station, _int((payload.get("evse") or {}).get("id")))
        tx: Any = None
        evse: int | None = None
        if event.action == "StopTransaction":
            tx = payload.get("transactionId")
        elif event.action == "TransactionEvent" and payload.get("eventType") == "Ended":
            tx = (payload.get("transactionInfo") or {}).get("transactionId")
            evse = _int((payload.get("evse") or {}).get("id"))
        if tx is not None:
            with self._lock:
                self._ended[(station, str(tx))] = self._mono()
            dropped = self.needs.transaction_ended(station, str(tx), evse)
            if dropped:
                logger.info("charging needs of %s EVSE %s dropped: transaction %s ended", station,
                            ", ".join(map(str, dropped)), tx)

    def _charging_needs(self, event: AmqpEvent) -> None:
        parsed = parse_charging_needs(event.payload, to_utc(self._clock()))
        evse = event.payload.get("evseId") if isinstance(event.payload, Mapping) else None
        for problem in parsed.problems:
            logger.warning("NotifyEVChargingNeeds from %s EVSE %s: ignoring invalid value: %s",
                           event.station_id, evse, problem)
        if parsed.needs is None:
            logger.warning("NotifyEVChargingNeeds from %s EVSE %s ignored: nothing usable", event.station_id, evse)
            return
        self.needs.update(event.station_id, parsed.needs)
        logger.info("charging needs of %s EVSE %d: %s", event.station_id, parsed.needs.evse_id, parsed.needs)

    def _arrived(self, station: str, connector: int | None) -> None:
        if connector:
            with self._lock:
                self._arrivals[(station, connector)] = self._mono()

    def ended(self, active: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Sessions announced as stopped that the read still lists (older ones are forgotten)."""
        cutoff = self._mono() - ENDED_TTL_S
        with self._lock:
            self._ended = {k: t for k, t in self._ended.items() if t >= cutoff and k in active}
            return set(self._ended)

    def after_read(self, stations: Collection[str], present: Collection[tuple[str, int]]) -> None:
        """Forget arrivals the read shows; for those still missing, ask for another read soon."""
        now = self._mono()
        with self._lock:
            for key in list(self._arrivals):
                if key[0] in stations and (key in present or now - self._arrivals[key] > ARRIVAL_WAIT_S):
                    if key not in present:
                        logger.warning("session started on %s connector %d never appeared in the read", *key)
                    del self._arrivals[key]
            missing = [k for k in self._arrivals if k[0] in stations]
            if not missing or self.trigger is None or (self._timer is not None and self._timer.is_alive()):
                return
            trigger = self.trigger
            reason = f"session started on {missing[0][0]} connector {missing[0][1]} not read yet"
            self._timer = threading.Timer(REREAD_DELAY_S, trigger, args=(reason,))
            self._timer.daemon = True
            self._timer.start()

    def stop(self) -> None:
        """Cancel a pending re-read."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
