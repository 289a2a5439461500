"""One simulated OCPP 1.6J charge point: its websocket, its connectors and the cars plugged into them.

Everything here runs in the simulator's event loop. State shared with other threads (read by
:meth:`Simulator.snapshot`) is changed only under the simulator's lock, in short synchronous
blocks, never across an ``await``.

The station is built in layers, one job each: :mod:`~optivgi_citrineos.simulator.station_meter`
(state, energies, limits), :mod:`~optivgi_citrineos.simulator.station_link` (websocket, boot,
calls), :mod:`~optivgi_citrineos.simulator.station_sessions` (transactions) and this module (the
CSMS's requests); :mod:`~optivgi_citrineos.simulator.station_client` is the ``ocpp`` charge point.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import GenericError
from ocpp.v16 import call, call_result

from optivgi_citrineos.simulator.clock import iso_ms
from optivgi_citrineos.simulator.profiles import (
    TX_PROFILE,
    ChargingProfile,
    ProfileError,
    composite_schedule,
    floor_tenth,
)
from optivgi_citrineos.simulator.records import ProfileEvent
from optivgi_citrineos.simulator.station_client import _Client as _Client
from optivgi_citrineos.simulator.station_parts import _CALL_ERRORS
from optivgi_citrineos.simulator.station_parts import _TX_RETRY_INITIAL_S as _TX_RETRY_INITIAL_S
from optivgi_citrineos.simulator.station_parts import _TX_RETRY_MAX_S as _TX_RETRY_MAX_S
from optivgi_citrineos.simulator.station_parts import _Connector as _Connector
from optivgi_citrineos.simulator.station_parts import _Hooks as _Hooks
from optivgi_citrineos.simulator.station_sessions import _SessionStation

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Station"]

logger = logging.getLogger(__name__)


class Station(_SessionStation):
    """One charge point: connects (with backoff), boots, reports, runs its cars' sessions."""

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
