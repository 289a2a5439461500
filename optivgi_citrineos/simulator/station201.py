"""One simulated OCPP 2.0.1 charging station: one EVSE per connector, each with one connector.

Everything physical is the 1.6 station's (battery, composite limits, power sharing on the
simulated clock); this module speaks 2.0.1 on the wire:

- BootNotification, StatusNotification (``Available``/``Occupied`` per EVSE), Heartbeat;
- a session is TransactionEvent ``Started`` (with the idToken, the EVSE and a meter value), then
  NotifyEVChargingNeeds (departure time, energy still wanted, the car's current limits), then
  ``Updated`` every meter interval and on every charging-state change, and ``Ended``;
- the CSMS's SetChargingProfile (per ``evseId``; ``ChargingStationMaxProfile`` on EVSE 0),
  ClearChargingProfile, GetChargingProfiles, GetCompositeSchedule and GetBaseReport (answered with
  a NotifyReport naming the EVSEs: CitrineOS only addresses EVSEs its device model knows).

2.0.1 rules on top of the shared stacking: a TxProfile needs the ``transactionId`` of the EVSE's
running transaction, and a profile with another id but the same purpose, stack level and EVSE
whose validity overlaps an installed one is Rejected (K01.FR.39).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, cast

from ocpp.routing import on
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call, call_result

from optivgi_citrineos.simulator.clock import iso_ms
from optivgi_citrineos.simulator.profiles import (
    CHARGE_POINT_MAX,
    TX_PROFILE,
    ChargingProfile,
    ProfileError,
)
from optivgi_citrineos.simulator.station import (
    _TX_RETRY_INITIAL_S,
    _TX_RETRY_MAX_S,
    Station,
    _Client,
    _Connector,
)

__all__ = ["Station201", "profile_from_201"]

logger = logging.getLogger(__name__)

_PURPOSES_IN = {"ChargingStationMaxProfile": CHARGE_POINT_MAX, "TxDefaultProfile": "TxDefaultProfile",
                "TxProfile": TX_PROFILE}
_PURPOSES_OUT = {v: k for k, v in _PURPOSES_IN.items()}
_CHARGING_STATE = {"Preparing": "EVConnected", "Charging": "Charging", "SuspendedEV": "SuspendedEV",
                   "SuspendedEVSE": "SuspendedEVSE", "Finishing": "Idle"}
_STOP_TRIGGER = {"EVDisconnected": "EVCommunicationLost", "Remote": "RemoteStop", "Local": "StopAuthorized",
                 "DeAuthorized": "Deauthorized"}


def profile_from_201(evse_id: int, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A 2.0.1 ``chargingProfile`` in the 1.6 ``csChargingProfiles`` shape the profile store reads.

    Raises:
        ProfileError: a purpose the simulator does not model, no schedule, or a TxProfile without
            a numeric ``transactionId`` (the simulated stations number their transactions).
    """
    purpose = raw.get("chargingProfilePurpose")
    if purpose not in _PURPOSES_IN:
        raise ProfileError(f"chargingProfilePurpose {purpose!r} is not supported")
    schedules = raw.get("chargingSchedule")
    if not isinstance(schedules, list) or not schedules:
        raise ProfileError("chargingSchedule must list at least one schedule", call_error="ProtocolError")
    out: dict[str, Any] = {
        "chargingProfileId": raw.get("id"), "stackLevel": raw.get("stackLevel"),
        "chargingProfilePurpose": _PURPOSES_IN[purpose], "chargingProfileKind": raw.get("chargingProfileKind"),
        "chargingSchedule": {k: v for k, v in schedules[0].items() if k != "id"},
    }
    for key in ("recurrencyKind", "validFrom", "validTo"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    tx = raw.get("transactionId")
    if purpose == "TxProfile":
        if tx is None:
            raise ProfileError("a TxProfile needs a transactionId (OCPP 2.0.1)")
        if not str(tx).isdigit():
            raise ProfileError(f"unknown transaction {tx!r} on EVSE {evse_id}")
        out["transactionId"] = int(str(tx))
    elif tx is not None:
        raise ProfileError("transactionId is only allowed in a TxProfile")
    return out


def _overlaps(a: ChargingProfile, b: ChargingProfile) -> bool:
    lo = max(a.valid_from or dt.datetime.min.replace(tzinfo=dt.UTC), b.valid_from or dt.datetime.min.replace(
        tzinfo=dt.UTC))
    hi = min(a.valid_to or dt.datetime.max.replace(tzinfo=dt.UTC), b.valid_to or dt.datetime.max.replace(
        tzinfo=dt.UTC))
    return lo < hi


class _Client201(ChargePoint201, _Client):
    """The ``ocpp`` 2.0.1 charging station on one connection (frames recorded as for 1.6).

    The handlers keep the 1.6 client's method names so that they replace them for the actions
    both versions have.
    """

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id: int, **_: Any) -> Any:
        raw = self.current_payload.get("chargingProfile", {})
        station = cast("Station201", self._station)
        return call_result.SetChargingProfile(status=station.set_charging_profile_201(evse_id, raw))

    @on("ClearChargingProfile")
    async def on_clear_charging_profile(self, **_: Any) -> Any:
        criteria = self.current_payload.get("chargingProfileCriteria") or {}
        purpose = criteria.get("chargingProfilePurpose")
        status = self._station.clear_charging_profile(
            profile_id=self.current_payload.get("chargingProfileId"), connector_id=criteria.get("evseId"),
            purpose=_PURPOSES_IN.get(purpose, purpose) if purpose else None, stack_level=criteria.get("stackLevel"),
        )
        return call_result.ClearChargingProfile(status=status)

    @on("GetChargingProfiles")
    async def on_get_charging_profiles(self, request_id: int, **_: Any) -> Any:
        station = cast("Station201", self._station)
        if not station.store.profiles:
            return call_result.GetChargingProfiles(status="NoProfiles")
        station.spawn(station.report_charging_profiles(request_id), f"{station.station_id}-report-profiles")
        return call_result.GetChargingProfiles(status="Accepted")

    @on("GetCompositeSchedule")
    async def on_get_composite_schedule(self, evse_id: int, duration: int, **kwargs: Any) -> Any:
        result = self._station.get_composite_schedule(evse_id, duration, kwargs.get("charging_rate_unit"))
        if result.status != "Accepted":
            return call_result.GetCompositeSchedule(status="Rejected")
        schedule = result.charging_schedule
        return call_result.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": schedule["startSchedule"],
            "charging_rate_unit": schedule["chargingRateUnit"],
            "charging_schedule_period": [
                {"start_period": p["startPeriod"], "limit": p["limit"], "number_phases": p["numberPhases"]}
                for p in schedule["chargingSchedulePeriod"]],
        })

    @on("GetBaseReport")
    async def on_get_base_report(self, request_id: int, **_: Any) -> Any:
        station = cast("Station201", self._station)
        station.spawn(station.notify_report(request_id), f"{station.station_id}-report")
        return call_result.GetBaseReport(status="Accepted")


class Station201(Station):
    """A charging station speaking OCPP 2.0.1 (see the module docstring)."""

    subprotocol = "ocpp2.0.1"
    ocpp_version = "2.0.1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = f"{self.config.ws201_url.rstrip('/')}/{self.station_id}"
        # Transaction ids are strings in 2.0.1; these are numbers, unique across restarts.
        self._next_tx = int(time.time() * 1000) % 10**12 * 10
        self._seq: dict[int, int] = {}
        self._reported_state: dict[int, str | None] = {}

    def _make_client(self, ws: Any) -> Any:
        return _Client201(self, ws)

    # --- boot and status ---------------------------------------------------------------------

    async def _boot_and_heartbeat(self, client: Any) -> None:
        interval = await self._boot(client, call.BootNotification(
            charging_station={"model": self.config.model, "vendor_name": self.config.vendor,
                              "serial_number": self.station_id[:25]},
            reason="PowerUp"))
        logger.info("%s: BootNotification accepted (OCPP 2.0.1), heartbeat every %g s", self.station_id, interval)
        for c in self.connectors.values():
            await self._sync_status(c)
        with self._lock:
            # Booted once the first statuses are out too: a car plugged in from now on follows them.
            self.booted = True
        self._ready.set()
        while True:
            await asyncio.sleep(interval)
            await self._call(call.Heartbeat())

    async def _sync_status(self, c: _Connector) -> None:
        async with c.status_lock:
            while self._online.is_set() and c.reported != c.status:
                status = c.status
                connector = "Available" if status == "Available" else "Occupied"
                previous = "Available" if c.reported in (None, "Available") else "Occupied"
                if c.reported is None or connector != previous:
                    result = await self._call(call.StatusNotification(
                        timestamp=iso_ms(self.clock.now()), connector_status=connector, evse_id=c.connector_id,
                        connector_id=1))
                    if result is None:
                        return
                state = _CHARGING_STATE.get(status)
                if c.transaction_id is not None and not c.stopping and state != self._reported_state.get(
                        c.connector_id) and state is not None:
                    await self._event(c, "Updated", "ChargingStateChanged", state)
                c.reported = status

    # --- sessions ------------------------------------------------------------------------------

    def _meter_value(self, c: _Connector, context: str, now: dt.datetime) -> list[dict[str, Any]]:
        power_w = c.power_w
        samples: list[dict[str, Any]] = [
            {"value": round(c.energy_wh, 1), "context": context, "measurand": "Energy.Active.Import.Register",
             "location": "Outlet", "unit_of_measure": {"unit": "Wh"}},
            {"value": round(power_w, 1), "context": context, "measurand": "Power.Active.Import",
             "location": "Outlet", "unit_of_measure": {"unit": "W"}},
            {"value": round(self._watts_to_amps(power_w), 2), "context": context, "measurand": "Current.Import",
             "location": "Outlet", "unit_of_measure": {"unit": "A"}},
        ]
        if c.battery is not None:
            samples.append({"value": round(c.battery.soc * 100, 1), "context": context, "measurand": "SoC",
                            "location": "EV", "unit_of_measure": {"unit": "Percent"}})
        return [{"timestamp": iso_ms(now), "sampled_value": samples}]

    async def _event(self, c: _Connector, event_type: str, trigger: str, state: str, *,
                     context: str | None = None, stopped: str | None = None, extra: dict[str, Any] | None = None,
                     transaction_id: int | None = None, wait_online: bool = False) -> Any:
        tx = transaction_id if transaction_id is not None else c.transaction_id
        if tx is None:
            return None
        with self._lock:
            now = self.clock.now()
            self.advance(now)
            seq = self._seq.get(c.connector_id, 0)
            self._seq[c.connector_id] = seq + 1
            info: dict[str, Any] = {"transaction_id": str(tx), "charging_state": state}
            if stopped is not None:
                info["stopped_reason"] = stopped
            meter = self._meter_value(c, context, now) if context is not None else None
        self._reported_state[c.connector_id] = state
        payload = call.TransactionEvent(event_type=event_type, timestamp=iso_ms(now), trigger_reason=trigger,
                                        seq_no=seq, transaction_info=info, meter_value=meter, offline=False,
                                        **(extra or {}))
        return await self._call(payload, wait_online=wait_online)

    async def run_session(self, connector_id: int, *, authorize: bool) -> int | None:
        """Authorize (optionally), TransactionEvent Started and the car's charging needs; returns the id."""
        c = self.connectors[connector_id]
        await self._ready.wait()
        await self._sync_status(c)
        id_tag = c.id_tag or "OPTIVGI-AUTO"
        token = {"id_token": id_tag, "type": "Central"}
        if authorize:
            result = await self._call(call.Authorize(id_token=token), wait_online=True)
            status = result.id_token_info.get("status") if result is not None else None
            if status != "Accepted":
                logger.warning("%s: idToken %s not authorized (%s); the car waits plugged in",
                               c.tag(self.station_id), id_tag, status or "no answer")
                return None
        with self._lock:
            if c.transaction_id is not None or c.battery is None:
                return c.transaction_id
            self._next_tx += 1
            transaction_id = self._next_tx
            now = self.clock.now()
            self.advance(now)
            c.meter_start_wh = math.floor(c.energy_wh)
            self._seq[connector_id] = 0
            c.starting = True  # the car draws from the Started event's timestamp on
            self._recompute(now)
        extra = {"id_token": token, "evse": {"id": connector_id, "connector_id": 1}}
        delay = _TX_RETRY_INITIAL_S
        try:
            while True:
                result = await self._event(c, "Started", "Authorized", "EVConnected", context="Transaction.Begin",
                                           extra=extra, transaction_id=transaction_id, wait_online=True)
                if result is not None:
                    break
                logger.error("%s: TransactionEvent Started failed; retrying in %.0f s (simulated)",
                             c.tag(self.station_id), delay)
                await self.clock.sleep(delay)
                delay = min(delay * 2, _TX_RETRY_MAX_S)
                if c.battery is None:
                    return None
        finally:
            with self._lock:
                self.advance(self.clock.now())
                c.starting = False
        info = result.id_token_info or {}
        accepted = info.get("status", "Accepted") == "Accepted"
        with self._lock:
            c.transaction_id = transaction_id
            c.tx_start = now
            pending, c.pending_profile = c.pending_profile, None
            if pending is not None and accepted:
                self.store.install(dataclasses.replace(pending, transaction_id=transaction_id),
                                   {connector_id: transaction_id})
            self.advance(self.clock.now())
            power = c.power_w
        if not accepted:
            logger.warning("%s: transaction %d not authorized (%s); ending it", c.tag(self.station_id),
                           transaction_id, info.get("status"))
            await self.stop_transaction(connector_id, "DeAuthorized")
            return None
        logger.info("%s: transaction %d started (idToken %s, OCPP 2.0.1), drawing %.2f kW", c.tag(self.station_id),
                    transaction_id, id_tag, power / 1000)
        await self._charging_needs(c)
        await self._sync_status(c)
        c.meter_task = self.supervise(lambda: self._meter_loop(c, transaction_id),
                                      f"{self.station_id}-{connector_id}-meter")
        return transaction_id

    async def _charging_needs(self, c: _Connector) -> None:
        if c.battery is None or c.ev is None:
            return
        volts, phases = self.config.voltage, self.config.phases
        wanted_wh = max(0, int((c.battery.target_soc - c.battery.soc) * c.battery.capacity_kwh * 1000))
        needs: dict[str, Any] = {
            "requested_energy_transfer": "AC_single_phase" if phases == 1 else "AC_three_phase",
            "ac_charging_parameters": {
                "energy_amount": wanted_wh, "ev_min_current": 6,
                "ev_max_current": max(6, int(c.ev.max_charge_rate_kw * 1000 / (volts * phases))),
                "ev_max_voltage": int(volts),
            },
        }
        if c.departure is not None:
            needs["departure_time"] = c.departure.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = await self._call(call.NotifyEVChargingNeeds(charging_needs=needs, evse_id=c.connector_id))
        logger.info("%s: NotifyEVChargingNeeds %s (%d Wh%s)", c.tag(self.station_id),
                    result.status if result is not None else "failed", wanted_wh,
                    f", departs {needs['departure_time']}" if "departure_time" in needs else "")

    async def send_meter_values(self, c: _Connector, context: str = "Sample.Periodic") -> None:
        """TransactionEvent Updated with the meter value (MeterValuePeriodic)."""
        state = _CHARGING_STATE.get(c.status, "Charging")
        await self._event(c, "Updated", "MeterValuePeriodic", state, context=context)

    async def stop_transaction(self, connector_id: int, reason: str) -> None:
        """TransactionEvent Ended (then the EVSE stays Occupied until the car leaves)."""
        c = self.connectors[connector_id]
        with self._lock:
            if c.transaction_id is None or c.stopping:
                return
            self.advance(self.clock.now())
            c.stopping = True
            transaction_id = c.transaction_id
            meter_stop = max(c.meter_start_wh, math.floor(c.energy_wh))
            self._recompute(self.clock.now())
        if c.meter_task is not None and not c.meter_in_flight:
            c.meter_task.cancel()
        await self._event(c, "Ended", _STOP_TRIGGER.get(reason, "StopAuthorized"), "Idle", context="Transaction.End",
                          stopped=reason if reason != "DeAuthorized" else "DeAuthorized", wait_online=True)
        with self._lock:
            c.transaction_id = None
            c.tx_start = None
            c.stopping = False
            c.power_w = 0.0
            c.status = "Finishing"
            self.store.end_transaction(connector_id)
            self._recompute(self.clock.now())
            soc = c.battery.soc * 100 if c.battery is not None else float("nan")
        logger.info("%s: transaction %d ended (%s) — %.2f kWh delivered, SoC %.1f %%", c.tag(self.station_id),
                    transaction_id, reason, (meter_stop - c.meter_start_wh) / 1000, soc)
        await self._sync_status(c)

    # --- CSMS requests -------------------------------------------------------------------------

    def set_charging_profile_201(self, evse_id: int, raw: Mapping[str, Any]) -> str:
        """SetChargingProfile 2.0.1: the 2.0.1 checks, then the shared install; Accepted or Rejected."""
        try:
            as16 = profile_from_201(evse_id, raw)
            candidate = ChargingProfile.from_ocpp(evse_id, as16, self._profile_time(self.clock.now()))
            with self._lock:
                for p in self.store.profiles:
                    if (p.profile_id != candidate.profile_id and p.purpose == candidate.purpose
                            and p.stack_level == candidate.stack_level and p.connector_id == evse_id
                            and _overlaps(p, candidate)):
                        raise ProfileError(f"profile {p.profile_id} has the same purpose and stack level on "
                                           f"EVSE {evse_id} for an overlapping period (K01.FR.39)")
        except ProfileError as exc:
            with self._lock:
                self._profile_event(evse_id, dict(raw), "Rejected", str(exc))
            logger.warning("%s/%d: profile %s refused (Rejected): %s", self.station_id, evse_id, raw.get("id"), exc)
            return "Rejected"
        try:
            return self.set_charging_profile(evse_id, as16)
        except Exception:  # a CALLERROR raised for the 1.6 shape: a 2.0.1 station rejects instead
            return "Rejected"

    async def notify_report(self, request_id: int) -> None:
        """The device model's EVSEs and connectors (answer to GetBaseReport)."""
        data: list[dict[str, Any]] = []
        for n in self.connectors:
            data.append({"component": {"name": "EVSE", "evse": {"id": n}}, "variable": {"name": "EvseId"},
                         "variable_attribute": [{"type": "Actual", "value": f"{self.station_id}*E{n}"}]})
            data.append({"component": {"name": "EVSE", "evse": {"id": n}}, "variable": {"name": "Power"},
                         "variable_attribute": [{"type": "MaxSet", "value": str(int(self.config.evse_max_w))}]})
            data.append({"component": {"name": "Connector", "evse": {"id": n, "connector_id": 1}},
                         "variable": {"name": "ConnectorType"},
                         "variable_attribute": [{"type": "Actual", "value": "cType2"}]})
        await self._call(call.NotifyReport(request_id=request_id, generated_at=iso_ms(self.clock.now()), seq_no=0,
                                           report_data=data, tbc=False))
        logger.info("%s: NotifyReport %d sent (%d EVSEs)", self.station_id, request_id, len(self.connectors))

    async def report_charging_profiles(self, request_id: int) -> None:
        """ReportChargingProfiles for GetChargingProfiles: every installed profile, per EVSE."""
        by_evse: dict[int, list[dict[str, Any]]] = {}
        for p in self.store.profiles:
            wire = p.to_ocpp()
            schedule = wire["chargingSchedule"]
            profile: dict[str, Any] = {
                "id": p.profile_id, "stack_level": p.stack_level, "charging_profile_purpose": _PURPOSES_OUT[p.purpose],
                "charging_profile_kind": p.kind,
                "charging_schedule": [{
                    "id": p.profile_id, "charging_rate_unit": schedule["chargingRateUnit"],
                    "charging_schedule_period": [{"start_period": q["startPeriod"], "limit": q["limit"]}
                                                 for q in schedule["chargingSchedulePeriod"]],
                }],
            }
            if p.transaction_id is not None:
                profile["transaction_id"] = str(p.transaction_id)
            by_evse.setdefault(p.connector_id, []).append(profile)
        for i, (evse, profiles) in enumerate(sorted(by_evse.items())):
            await self._call(call.ReportChargingProfiles(request_id=request_id, charging_limit_source="CSO",
                                                         evse_id=evse, charging_profile=profiles,
                                                         tbc=i < len(by_evse) - 1))

    def trigger(self, requested: str, connector_id: int | None) -> str:
        """TriggerMessage is not simulated for 2.0.1 stations."""
        return "NotImplemented"

