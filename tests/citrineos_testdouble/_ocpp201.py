"""The OCPP 2.0.1 side of the double: a :class:`StationSession201` per station on the 2.0.1 port.

It shares the 1.6 session's machinery (one call per station in flight, the busy CALLERROR, late
answers, webhooks, OCPPMessages, RabbitMQ) and validates frames against the ``ocpp`` library's
2.0.1 schemas. What CitrineOS 1.8.3 does with a 2.0.1 station (contract README, "OCPP 2.0.1" and
"Run 3"; ``amqp-messages-2.0.1.jsonl``):

- BootNotification Accepted (interval 60), no GetBaseReport of its own;
- StatusNotification, TransactionEvent Started/Updated/Ended (answered with idTokenInfo, ``{}`` and
  ``{"totalCost": 0}``), MeterValues, NotifyReport, NotifyEVChargingNeeds (``Accepted``);
- after NotifyEVChargingNeeds its own smart charging sends a TxProfile (id 1, stackLevel 0, limit
  evMaxCurrent, minChargingRate evMinCurrent, validTo the departure time) and GetChargingProfiles.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

from ocpp.routing import on
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from citrineos_testdouble._jsonutil import iso_ms, js_dumps, now_utc, parse_iso
from citrineos_testdouble._ocpp import OutgoingCall, StationSession

__all__ = ["StationSession201"]

logger = logging.getLogger(__name__)


class StationSession201(StationSession):
    """One connected OCPP 2.0.1 charging station."""

    protocol = "ocpp2.0.1"
    _ocpp_version = "2.0.1"
    _call = call201
    _call_result = result201

    # --- answers -------------------------------------------------------------------------------

    async def _after_answer(self, call: OutgoingCall, payload: Any) -> None:
        status = payload.get("status") if isinstance(payload, dict) else None
        store = self.core.store201
        if call.action == "SetChargingProfile":
            if status == "Accepted":
                await store.store_charging_profile(self.station_id, call.payload)
            else:
                logger.error("OCPP 2.0.1 SetChargingProfile rejected: %s", js_dumps(payload))
        elif call.action == "ClearChargingProfile" and status == "Accepted":
            await store.clear_charging_profiles(self.station_id, call.payload)

    # --- charger request handlers (method names override the 1.6 ones) ------------------------

    @on("BootNotification")
    async def on_boot_notification(self, **_: Any) -> result201.BootNotification:
        interval = self.core.config.heartbeat_interval
        when = await self.core.store201.boot(self.station_id, self._payload(), interval)
        return result201.BootNotification(current_time=_stamp(when), interval=interval, status="Accepted")

    @on("Heartbeat")
    async def on_heartbeat(self, **_: Any) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=_stamp(now_utc()))

    @on("StatusNotification")
    async def on_status_notification(self, **_: Any) -> result201.StatusNotification:
        await self.core.store201.status_notification(self.station_id, self._payload())
        return result201.StatusNotification()

    @on("Authorize")
    async def on_authorize(self, **_: Any) -> result201.Authorize:
        token = (self._payload().get("idToken") or {}).get("idToken", "")
        _auth_id, status = await self.core.store.authorization(token, self.core.config.id_tags is None)
        return result201.Authorize(id_token_info={"status": status})

    @on("TransactionEvent")
    async def on_transaction_event(self, **_: Any) -> result201.TransactionEvent:
        payload = self._payload()
        token = payload.get("idToken")
        auth_id, status = None, None
        if isinstance(token, dict) and token.get("idToken"):
            auth_id, status = await self.core.store.authorization(token["idToken"], self.core.config.id_tags is None)
        await self.core.store201.transaction_event(self.station_id, payload, auth_id)
        if payload.get("eventType") == "Ended":
            return result201.TransactionEvent(total_cost=0)
        if status is not None:
            return result201.TransactionEvent(id_token_info={"status": status})
        return result201.TransactionEvent()

    @on("MeterValues")
    async def on_meter_values(self, **_: Any) -> result201.MeterValues:
        payload = self._payload()
        await self.core.store201.meter_values(self.station_id, payload.get("evseId"), payload.get("meterValue") or [],
                                              None, None)
        return result201.MeterValues()

    @on("NotifyReport")
    async def on_notify_report(self, **_: Any) -> result201.NotifyReport:
        for item in self._payload().get("reportData") or []:
            component = item.get("component") or {}
            evse = component.get("evse") or {}
            if component.get("name") != "EVSE" or evse.get("id") is None:
                continue
            evse_id = None
            if (item.get("variable") or {}).get("name") == "EvseId":
                values = [a.get("value") for a in item.get("variableAttribute") or [] if a.get("value")]
                evse_id = str(values[0]) if values else None
            await self.core.store201.report_evse(self.station_id, int(evse["id"]), evse_id)
        return result201.NotifyReport()

    @on("NotifyEVChargingNeeds")
    async def on_notify_ev_charging_needs(self, **_: Any) -> result201.NotifyEVChargingNeeds:
        payload = self._payload()
        if self.core.config.smart_charging_on_needs:
            self.core.spawn(self._own_smart_charging(payload))
        return result201.NotifyEVChargingNeeds(status="Accepted")

    async def _own_smart_charging(self, payload: dict[str, Any]) -> None:
        """CitrineOS's built-in answer to charging needs: a TxProfile at evMaxCurrent, then GetChargingProfiles."""
        evse_id = int(payload.get("evseId", 0))
        needs = payload.get("chargingNeeds") or {}
        ac = needs.get("acChargingParameters") or {}
        row = await self.core.store._one(
            'SELECT t."transactionId" FROM "Transactions" t JOIN "Evses" e ON e.id = t."evseId" '
            'WHERE t."stationId" = %s AND t."isActive" AND e."evseTypeId" = %s ORDER BY t.id DESC LIMIT 1',
            (self.station_id, evse_id),
        )
        if row is None or ac.get("evMaxCurrent") is None:
            return
        now = now_utc()
        departure = parse_iso(needs.get("departureTime")) or (now + dt.timedelta(hours=24))
        schedule: dict[str, Any] = {
            "id": 1,
            "duration": max(1, int((departure - now).total_seconds())),
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": ac["evMaxCurrent"], "numberPhases": 1}],
        }
        if ac.get("evMinCurrent") is not None:
            schedule["minChargingRate"] = ac["evMinCurrent"]
        profile = {
            "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
            "validFrom": _stamp(now), "validTo": _stamp(departure), "chargingSchedule": [schedule],
            "transactionId": row["transactionId"],
        }
        self.core.send_call(self, "SetChargingProfile", {"evseId": evse_id, "chargingProfile": profile},
                            "smartcharging")
        self.core.send_call(self, "GetChargingProfiles",
                            {"requestId": 1, "chargingProfile": {"chargingLimitSource": ["CSO"]}}, "smartcharging")


def _stamp(when: dt.datetime) -> str:
    stamp = iso_ms(when)
    assert stamp is not None
    return stamp


def new_call(action: str, payload: dict[str, Any], callback_url: str | None = None) -> OutgoingCall:
    """A CSMS call for :meth:`StationSession.enqueue`."""
    return OutgoingCall(str(uuid.uuid4()), action, payload, callback_url, time.monotonic())
