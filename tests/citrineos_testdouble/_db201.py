"""The rows CitrineOS 1.8.3 writes for an OCPP 2.0.1 station (contract README, "Run 3").

What differs from OCPP 1.6, as recorded:

- a StatusNotification writes a ``Connectors`` row keyed by the OCPP ``connectorId`` with
  ``evseId`` NULL; a TransactionEvent writes a **second** row with ``connectorId`` NULL,
  ``evseId`` = the ``Evses`` database id and ``evseTypeConnectorId`` = the connector within the
  EVSE, and ``Transactions.connectorId`` points at that second row;
- a TransactionEvent creates the ``Evses`` row (``evseTypeId`` = the OCPP EVSE id, ``evseId``
  NULL); CitrineOS only knows an EVSE for SetChargingProfile once the station's device model
  reported it (NotifyReport after GetBaseReport). The double keeps that knowledge in the same
  ``Evses`` row: NotifyReport sets its ``evseId`` (the reported ``EvseId`` value, else the number);
- ``Transactions.meterStart`` holds the Started event's energy register **in kWh** (a 1000 Wh
  register was stored as ``1``);
- meter values of TransactionEvents go to ``MeterValues`` with their ``unitOfMeasure`` as sent.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Json

from citrineos_testdouble._jsonutil import js_dumps, js_number, js_value, now_utc, parse_iso

if TYPE_CHECKING:
    from citrineos_testdouble._db import Store

__all__ = ["Store201", "register_kwh_201"]

logger = logging.getLogger(__name__)

_REGISTER = "Energy.Active.Import.Register"


def register_kwh_201(meter_values: list[dict[str, Any]]) -> Decimal | None:
    """The last whole-meter ``Energy.Active.Import.Register`` of 2.0.1 meter values, in kWh."""
    found: Decimal | None = None
    for meter_value in meter_values:
        for sample in meter_value.get("sampledValue", []):
            if sample.get("measurand", _REGISTER) != _REGISTER or sample.get("phase"):
                continue
            unit = sample.get("unitOfMeasure") or {}
            try:
                value = Decimal(str(sample.get("value"))) * Decimal(10) ** int(unit.get("multiplier", 0))
            except (ArithmeticError, ValueError):
                continue
            found = value if unit.get("unit", "Wh") == "kWh" else value / Decimal(1000)
    return found


def _stored_sample(sample: dict[str, Any]) -> dict[str, Any]:
    out = {key: sample[key] for key in ("context", "measurand", "phase", "location", "unitOfMeasure") if key in sample}
    return {"value": js_number(str(sample.get("value"))), **out}


class Store201:
    """OCPP 2.0.1 writes on the double's :class:`~citrineos_testdouble._db.Store` (same connection)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tenant_id = store.tenant_id

    # --- stations, EVSEs and connectors -----------------------------------------------------------

    async def boot(self, station_id: str, payload: dict[str, Any], interval: int) -> dt.datetime:
        station = payload.get("chargingStation") or {}
        as16 = {
            "chargePointVendor": station.get("vendorName"),
            "chargePointModel": station.get("model"),
            "chargePointSerialNumber": station.get("serialNumber"),
            "firmwareVersion": station.get("firmwareVersion"),
        }
        when = await self.store.boot(station_id, as16, interval)
        await self.store._exec(
            'UPDATE "ChargingStations" SET protocol = %s WHERE id = %s', ("ocpp2.0.1", station_id)
        )
        return when

    async def evse_row(self, station_id: str, evse_type_id: int) -> int | None:
        """The ``Evses`` database id of (station, OCPP EVSE id), created (evseId NULL) if needed."""
        if not await self.store.station_exists(station_id):
            return None
        row = await self.store._one(
            'SELECT id FROM "Evses" WHERE "stationId" = %s AND "evseTypeId" = %s ORDER BY id LIMIT 1',
            (station_id, evse_type_id),
        )
        if row is not None:
            return int(row["id"])
        now = now_utc()
        row = await self.store._one(
            'INSERT INTO "Evses" ("createdAt", "updatedAt", "tenantId", "stationId", "evseTypeId") '
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (now, now, self.tenant_id, station_id, evse_type_id),
        )
        return None if row is None else int(row["id"])

    async def report_evse(self, station_id: str, evse_type_id: int, evse_id: str | None) -> None:
        """An EVSE the station's device model reported (NotifyReport): SetChargingProfile may address it."""
        db_id = await self.evse_row(station_id, evse_type_id)
        if db_id is None:
            return
        await self.store._exec(
            'UPDATE "Evses" SET "evseId" = %s, removed = false, "updatedAt" = %s WHERE id = %s',
            (evse_id or str(evse_type_id), now_utc(), db_id),
        )

    async def evse_known(self, station_id: str, evse_type_id: int) -> bool:
        """Whether the device model knows the EVSE (else CitrineOS answers ``Evse N not found.``)."""
        row = await self.store._one(
            'SELECT 1 FROM "Evses" WHERE "stationId" = %s AND "evseTypeId" = %s AND "evseId" IS NOT NULL',
            (station_id, evse_type_id),
        )
        return row is not None

    async def _transaction_connector(self, station_id: str, evse_db_id: int, connector: int | None) -> int:
        row = await self.store._one(
            'SELECT id FROM "Connectors" WHERE "stationId" = %s AND "connectorId" IS NULL AND "evseId" = %s '
            'AND "evseTypeConnectorId" IS NOT DISTINCT FROM %s ORDER BY id LIMIT 1',
            (station_id, evse_db_id, connector),
        )
        if row is not None:
            return int(row["id"])
        now = now_utc()
        row = await self.store._one(
            'INSERT INTO "Connectors" ("stationId", "connectorId", status, "errorCode", "createdAt", "updatedAt", '
            '"tenantId", "evseId", "evseTypeConnectorId") VALUES (%s, NULL, %s, %s, %s, %s, %s, %s, %s) RETURNING id',
            (station_id, "Unknown", "NoError", now, now, self.tenant_id, evse_db_id, connector),
        )
        assert row is not None
        return int(row["id"])

    async def status_notification(self, station_id: str, payload: dict[str, Any]) -> bool:
        """Store a 2.0.1 StatusNotification; False (nothing stored) for an unknown station."""
        if not await self.store.station_exists(station_id):
            logger.warning("Charging station %s not found; status notification not stored", station_id)
            return False
        now = now_utc()
        when = parse_iso(payload.get("timestamp")) or now
        connector_id = int(payload["connectorId"])
        async with self.store._transaction():
            row = await self.store._one(
                'INSERT INTO "StatusNotifications" (timestamp, "connectorStatus", "evseId", "connectorId", '
                '"createdAt", "updatedAt", "stationId", "tenantId") VALUES (%s, %s, %s, %s, %s, %s, %s, %s) '
                "RETURNING id",
                (when, payload.get("connectorStatus"), payload.get("evseId"), connector_id, now, now, station_id,
                 self.tenant_id),
            )
            assert row is not None
            await self.store._exec(
                'DELETE FROM "LatestStatusNotifications" l USING "StatusNotifications" s '
                'WHERE l."statusNotificationId" = s.id AND l."stationId" = %s AND s."evseId" = %s '
                'AND s."connectorId" = %s',
                (station_id, payload.get("evseId"), connector_id),
            )
            await self.store._exec(
                'INSERT INTO "LatestStatusNotifications" ("createdAt", "updatedAt", "stationId", '
                '"statusNotificationId", "tenantId") VALUES (%s, %s, %s, %s, %s)',
                (now, now, station_id, row["id"], self.tenant_id),
            )
            # The row keyed by the OCPP connector number, evseId left NULL (as recorded).
            await self.store.connector_row(station_id, connector_id)
            await self.store._exec(
                'UPDATE "Connectors" SET status = %s, "errorCode" = %s, timestamp = %s, "updatedAt" = %s '
                'WHERE "stationId" = %s AND "connectorId" = %s',
                (payload.get("connectorStatus"), "NoError", when, now, station_id, connector_id),
            )
        return True

    # --- transactions -------------------------------------------------------------------------------

    async def transaction_event(self, station_id: str, payload: dict[str, Any], authorization_id: int | None) -> None:
        """Create or update the Transactions row of a TransactionEvent and store its meter values."""
        now = now_utc()
        info = payload.get("transactionInfo") or {}
        transaction_id = str(info["transactionId"])
        when = parse_iso(payload.get("timestamp")) or now
        meter_values = payload.get("meterValue") or []
        row = await self.store.transaction_row(station_id, transaction_id)
        if row is None:
            evse = payload.get("evse") or {}
            evse_db_id = connector_db_id = None
            if evse.get("id") is not None and await self.store.station_exists(station_id):
                evse_db_id = await self.evse_row(station_id, int(evse["id"]))
                if evse_db_id is not None:
                    connector_db_id = await self._transaction_connector(station_id, evse_db_id, evse.get("connectorId"))
            register = register_kwh_201(meter_values)
            row = await self.store._one(
                'INSERT INTO "Transactions" ("stationId", "transactionId", "isActive", "chargingState", '
                '"createdAt", "updatedAt", "tenantId", "evseId", "connectorId", "authorizationId", "startTime", '
                '"meterStart", "remoteStartId") VALUES (%s, %s, true, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) '
                "RETURNING *",
                (station_id, transaction_id, info.get("chargingState"), now, now, self.tenant_id, evse_db_id,
                 connector_db_id, authorization_id, when, register, info.get("remoteStartId")),
            )
            assert row is not None
        elif info.get("chargingState"):
            await self.store._exec(
                'UPDATE "Transactions" SET "chargingState" = %s, "updatedAt" = %s WHERE id = %s',
                (info["chargingState"], now, row["id"]),
            )
        await self.meter_values(station_id, None, meter_values, row["id"], transaction_id)
        if payload.get("eventType") == "Ended":
            last = await self.latest_register_kwh(int(row["id"]))
            start = Decimal(row["meterStart"]) if row["meterStart"] is not None else None
            total = None if last is None or start is None else last - start
            await self.store._exec(
                'UPDATE "Transactions" SET "isActive" = false, "endTime" = %s, "stoppedReason" = %s, '
                '"chargingState" = %s, "totalKwh" = %s, "updatedAt" = %s WHERE id = %s',
                (when, info.get("stoppedReason", "Local"), info.get("chargingState"), total, now, row["id"]),
            )

    async def latest_register_kwh(self, transaction_db_id: int) -> Decimal | None:
        rows = await self.store._all(
            'SELECT "sampledValue" FROM "MeterValues" WHERE "transactionDatabaseId" = %s ORDER BY timestamp, id',
            (transaction_db_id,),
        )
        return register_kwh_201([{"sampledValue": r["sampledValue"]} for r in rows])

    async def meter_values(
        self,
        station_id: str,
        evse_id: int | None,
        meter_values: list[dict[str, Any]],
        transaction_db_id: int | None,
        transaction_id: str | None,
    ) -> None:
        """One MeterValues row per meterValue element (values numeric, unitOfMeasure kept)."""
        now = now_utc()
        for meter_value in meter_values:
            samples = [_stored_sample(s) for s in meter_value.get("sampledValue", [])]
            await self.store._exec(
                'INSERT INTO "MeterValues" ("transactionDatabaseId", "sampledValue", timestamp, "connectorId", '
                '"createdAt", "updatedAt", "tenantId", "transactionId") VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
                (transaction_db_id, Json(samples, dumps=js_dumps), parse_iso(meter_value.get("timestamp")), evse_id,
                 now, now, self.tenant_id, transaction_id),
            )

    # --- charging profiles --------------------------------------------------------------------------

    async def store_charging_profile(self, station_id: str, request: dict[str, Any]) -> None:
        """Write (or replace) the rows of an accepted 2.0.1 SetChargingProfile (first schedule)."""
        profile = request["chargingProfile"]
        schedules = profile.get("chargingSchedule") or [{}]
        as16 = {
            "connectorId": request.get("evseId"),
            "csChargingProfiles": {
                "chargingProfileId": profile["id"],
                "stackLevel": profile.get("stackLevel"),
                "chargingProfilePurpose": profile.get("chargingProfilePurpose"),
                "chargingProfileKind": profile.get("chargingProfileKind"),
                "recurrencyKind": profile.get("recurrencyKind"),
                "validFrom": profile.get("validFrom"),
                "validTo": profile.get("validTo"),
                "transactionId": profile.get("transactionId"),
                "chargingSchedule": js_value(schedules[0]),
            },
        }
        await self.store.store_charging_profile(station_id, as16)

    async def clear_charging_profiles(self, station_id: str, request: dict[str, Any]) -> None:
        """An accepted 2.0.1 ClearChargingProfile: deactivate the profiles it names (by id or criteria)."""
        clauses, params = ['"stationId" = %s'], [station_id]
        if request.get("chargingProfileId") is not None:
            clauses.append("id = %s")
            params.append(request["chargingProfileId"])
        criteria = request.get("chargingProfileCriteria") or {}
        for key, column in (("evseId", '"evseId"'), ("chargingProfilePurpose", '"chargingProfilePurpose"'),
                            ("stackLevel", '"stackLevel"')):
            if criteria.get(key) is not None:
                clauses.append(f"{column} = %s")
                params.append(criteria[key])
        await self.store._exec(
            # Column names come from the fixed list above.
            f'UPDATE "ChargingProfiles" SET "isActive" = false, "updatedAt" = %s WHERE {" AND ".join(clauses)}',
            (now_utc(), *params),
        )
