"""The metering and car model of a simulated OCPP 1.6J station: state, energies, limits, powers, snapshot.

Everything runs in the simulator's event loop; shared state changes only under the simulator's lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection

from optivgi_citrineos.simulator.clock import SimClock
from optivgi_citrineos.simulator.config import SimulatorConfig
from optivgi_citrineos.simulator.profiles import (
    ProfileStore,
    Transaction,
    allocate_power,
    composite_limit,
)
from optivgi_citrineos.simulator.records import ConnectorSnapshot, ProfileEvent, StationSnapshot
from optivgi_citrineos.simulator.station_client import _Client
from optivgi_citrineos.simulator.station_parts import (
    _STEP_S,
    _SUBPROTOCOL,
    _Connector,
    _Hooks,
)

logger = logging.getLogger(__name__)


class _MeteredStation:
    """A charge point's state and its physics: what each car draws under the profiles in force."""


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
