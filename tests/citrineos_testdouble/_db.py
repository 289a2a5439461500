"""CitrineOS 1.8.3's tables (the subset the double fills) in a private PostgreSQL schema.

Table and column names and types follow CitrineOS's migrations, so a query written against a real
CitrineOS database runs unchanged with ``search_path`` set to the double's schema. Two columns
differ: ``ChargingStations.coordinates`` is ``jsonb`` (PostGIS is not required) and
``Authorizations.idToken`` falls back to ``character varying(255)`` if the ``citext`` extension
cannot be created.

Rows are written the way CitrineOS writes them, quirks included (see ``docs/citrineos-double.md``).
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from psycopg.types.json import Json

from citrineos_testdouble._db_base import DatabaseUnavailableError, StoreBase
from citrineos_testdouble._jsonutil import js_dumps, js_number, js_value, now_utc, parse_iso
from citrineos_testdouble._tables import TABLE_NAMES

__all__ = ["TABLE_NAMES", "DatabaseUnavailableError", "Store"]

logger = logging.getLogger(__name__)


class Store(StoreBase):
    """Reads and writes of CitrineOS rows, on one async connection, inside the double's loop.

    Connection, schema and helpers are :class:`~citrineos_testdouble._db_base.StoreBase`.
    """

    # --- stations -------------------------------------------------------------------------------

    async def station_exists(self, station_id: str) -> bool:
        return await self._one('SELECT 1 FROM "ChargingStations" WHERE id = %s', (station_id,)) is not None

    async def set_online(self, station_id: str, online: bool, protocol: str = "ocpp1.6") -> None:
        """Mark a known station on/offline. An unknown station is left alone (no row is created)."""
        now = now_utc()
        if online:
            await self._exec(
                'UPDATE "ChargingStations" SET "isOnline" = true, protocol = %s, "updatedAt" = %s '
                'WHERE id = %s AND "tenantId" = %s',
                (protocol, now, station_id, self.tenant_id),
            )
        else:
            await self._exec(
                'UPDATE "ChargingStations" SET "isOnline" = false, "updatedAt" = %s WHERE id = %s',
                (now, station_id),
            )

    async def touch_station(self, station_id: str, when: dt.datetime) -> None:
        await self._exec(
            'UPDATE "ChargingStations" SET "latestOcppMessageTimestamp" = %s WHERE id = %s',
            (when, station_id),
        )

    async def boot(self, station_id: str, payload: dict[str, Any], interval: int) -> dt.datetime:
        """Store a BootNotification: ChargingStations row (created if new) and Boots row."""
        now = now_utc()
        fields = {
            "chargePointVendor": payload.get("chargePointVendor"),
            "chargePointModel": payload.get("chargePointModel"),
            "chargePointSerialNumber": payload.get("chargePointSerialNumber"),
            "chargeBoxSerialNumber": payload.get("chargeBoxSerialNumber"),
            "firmwareVersion": payload.get("firmwareVersion"),
            "iccid": payload.get("iccid"),
            "imsi": payload.get("imsi"),
            "meterType": payload.get("meterType"),
            "meterSerialNumber": payload.get("meterSerialNumber"),
        }
        cols = ", ".join(f'"{k}"' for k in fields)
        marks = ", ".join(["%s"] * len(fields))
        updates = ", ".join(f'"{k}" = EXCLUDED."{k}"' for k in fields)
        # A station created by its first BootNotification keeps isOnline NULL for that whole
        # connection: CitrineOS only sets it at connect time, when the row did not exist yet.
        await self._exec(
            # Column names come from the fixed list above, never from the charger.
            f'INSERT INTO "ChargingStations" (id, {cols}, "createdAt", "updatedAt", "tenantId") '
            f"VALUES (%s, {marks}, %s, %s, %s) "
            f'ON CONFLICT (id) DO UPDATE SET {updates}, "updatedAt" = EXCLUDED."updatedAt"',
            (station_id, *fields.values(), now, now, self.tenant_id),
        )
        await self._exec(
            'INSERT INTO "Boots" (id, "lastBootTime", "heartbeatInterval", status, "createdAt", '
            '"updatedAt", "tenantId") VALUES (%s, %s, %s, %s, %s, %s, %s) '
            'ON CONFLICT (id) DO UPDATE SET "lastBootTime" = EXCLUDED."lastBootTime", '
            '"heartbeatInterval" = EXCLUDED."heartbeatInterval", status = EXCLUDED.status, '
            '"updatedAt" = EXCLUDED."updatedAt"',
            (station_id, now, interval, "Accepted", now, now, self.tenant_id),
        )
        return now

    async def get_boot(self, station_id: str) -> dict[str, Any] | None:
        return await self._one('SELECT * FROM "Boots" WHERE id = %s', (station_id,))

    # --- connectors and status --------------------------------------------------------------------

    async def connector_row(self, station_id: str, connector_id: int) -> int | None:
        """The Connectors row id of (station, OCPP connector), created if needed; None if unknown station."""
        if not await self.station_exists(station_id):
            return None
        now = now_utc()
        row = await self._one(
            'INSERT INTO "Connectors" ("stationId", "connectorId", "createdAt", "updatedAt", "tenantId") '
            'VALUES (%s, %s, %s, %s, %s) ON CONFLICT ("stationId", "connectorId") '
            'DO UPDATE SET "updatedAt" = "Connectors"."updatedAt" RETURNING id',
            (station_id, connector_id, now, now, self.tenant_id),
        )
        return None if row is None else int(row["id"])

    async def status_notification(self, station_id: str, payload: dict[str, Any]) -> bool:
        """Store a StatusNotification; False (nothing stored) when the station has no row."""
        if not await self.station_exists(station_id):
            logger.warning("Charging station %s not found; status notification not stored", station_id)
            return False
        now = now_utc()
        connector_id = int(payload["connectorId"])
        when = parse_iso(payload.get("timestamp")) or now
        async with self._transaction():
            row = await self._one(
                'INSERT INTO "StatusNotifications" (timestamp, "connectorStatus", "connectorId", '
                '"errorCode", info, "vendorId", "vendorErrorCode", "createdAt", "updatedAt", '
                '"stationId", "tenantId") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id',
                (
                    when,
                    payload.get("status"),
                    connector_id,
                    payload.get("errorCode"),
                    payload.get("info"),
                    payload.get("vendorId"),
                    payload.get("vendorErrorCode"),
                    now,
                    now,
                    station_id,
                    self.tenant_id,
                ),
            )
            assert row is not None
            status_id = row["id"]
            # One "latest" row per (station, connector): the previous one is replaced.
            await self._exec(
                'DELETE FROM "LatestStatusNotifications" l USING "StatusNotifications" s '
                'WHERE l."statusNotificationId" = s.id AND l."stationId" = %s AND s."connectorId" = %s',
                (station_id, connector_id),
            )
            await self._exec(
                'INSERT INTO "LatestStatusNotifications" ("createdAt", "updatedAt", "stationId", '
                '"statusNotificationId", "tenantId") VALUES (%s, %s, %s, %s, %s)',
                (now, now, station_id, status_id, self.tenant_id),
            )
            if connector_id > 0:
                await self.connector_row(station_id, connector_id)
                await self._exec(
                    'UPDATE "Connectors" SET status = %s, "errorCode" = %s, timestamp = %s, info = %s, '
                    '"vendorId" = %s, "vendorErrorCode" = %s, "updatedAt" = %s '
                    'WHERE "stationId" = %s AND "connectorId" = %s',
                    (
                        payload.get("status"),
                        payload.get("errorCode"),
                        when,
                        payload.get("info"),
                        payload.get("vendorId"),
                        payload.get("vendorErrorCode"),
                        now,
                        station_id,
                        connector_id,
                    ),
                )
        return True

    # --- authorization --------------------------------------------------------------------------

    async def seed_authorization(self, id_token: str, status: str = "Accepted") -> int:
        now = now_utc()
        row = await self._one(
            'INSERT INTO "Authorizations" ("createdAt", "updatedAt", "tenantId", "idToken", "idTokenType", '
            'status) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT ("idToken", "idTokenType") '
            "DO UPDATE SET status = EXCLUDED.status RETURNING id",
            (now, now, self.tenant_id, id_token, "Central", status),
        )
        assert row is not None
        return int(row["id"])

    async def authorization(self, id_token: str, accept_unknown: bool) -> tuple[int | None, str]:
        """(Authorizations.id, idTagInfo status) for an idTag; unknown tags are Invalid unless accepted."""
        row = await self._one(
            'SELECT id, status FROM "Authorizations" WHERE "idToken" = %s ORDER BY id LIMIT 1', (id_token,)
        )
        if row is not None:
            return int(row["id"]), str(row["status"])
        if not accept_unknown:
            logger.error("No authorization found for idToken: %s", id_token)
            return None, "Invalid"
        return await self.seed_authorization(id_token), "Accepted"

    # --- transactions ---------------------------------------------------------------------------

    async def next_transaction_id(self, station_id: str) -> int:
        now = now_utc()
        row = await self._one(
            'INSERT INTO "ChargingStationSequences" ("stationId", type, value, "createdAt", "updatedAt", '
            '"tenantId") VALUES (%s, %s, 1, %s, %s, %s) ON CONFLICT ("stationId", type) '
            'DO UPDATE SET value = "ChargingStationSequences".value + 1, "updatedAt" = EXCLUDED."updatedAt" '
            "RETURNING value",
            (station_id, "transactionId", now, now, self.tenant_id),
        )
        assert row is not None
        return int(row["value"])

    async def start_transaction(self, station_id: str, payload: dict[str, Any], authorization_id: int | None) -> int:
        """Create the Transactions row; returns the OCPP transactionId (per-station counter)."""
        now = now_utc()
        transaction_id = await self.next_transaction_id(station_id)
        connector_db_id = await self.connector_row(station_id, int(payload["connectorId"]))
        await self._exec(
            'INSERT INTO "Transactions" ("stationId", "transactionId", "isActive", "createdAt", '
            '"updatedAt", "tenantId", "connectorId", "authorizationId", "startTime", "meterStart") '
            "VALUES (%s, %s, true, %s, %s, %s, %s, %s, %s, %s)",
            (
                station_id,
                str(transaction_id),
                now,
                now,
                self.tenant_id,
                connector_db_id,
                authorization_id,
                parse_iso(payload.get("timestamp")),
                Decimal(str(payload["meterStart"])),
            ),
        )
        return transaction_id

    async def transaction_row(self, station_id: str, transaction_id: str) -> dict[str, Any] | None:
        return await self._one(
            'SELECT * FROM "Transactions" WHERE "stationId" = %s AND "transactionId" = %s',
            (station_id, transaction_id),
        )

    async def meter_values(self, station_id: str, payload: dict[str, Any]) -> None:
        """Store each meterValue element as one MeterValues row with numeric sampled values."""
        now = now_utc()
        tx_id = payload.get("transactionId")
        tx_row = None
        if tx_id is not None:
            tx_row = await self.transaction_row(station_id, str(tx_id))
        for meter_value in payload.get("meterValue", []):
            samples = [_stored_sample(s) for s in meter_value.get("sampledValue", [])]
            await self._exec(
                'INSERT INTO "MeterValues" ("transactionDatabaseId", "sampledValue", timestamp, '
                '"connectorId", "createdAt", "updatedAt", "tenantId", "transactionId") '
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    None if tx_row is None else tx_row["id"],
                    Json(samples, dumps=js_dumps),
                    parse_iso(meter_value.get("timestamp")),
                    payload.get("connectorId"),
                    now,
                    now,
                    self.tenant_id,
                    None if tx_id is None else str(tx_id),
                ),
            )
            if tx_row is not None and tx_row["isActive"]:
                register = _register_kwh(meter_value.get("sampledValue", []))
                if register is not None:
                    # CitrineOS's running total subtracts meterStart in Wh from the register in
                    # kWh, so it is wrong (hugely negative) until the stop fixes it.
                    total = register - Decimal(tx_row["meterStart"] or 0)
                    await self._exec(
                        'UPDATE "Transactions" SET "totalKwh" = %s, "updatedAt" = %s WHERE id = %s',
                        (total, now, tx_row["id"]),
                    )

    async def stop_transaction(self, station_id: str, payload: dict[str, Any]) -> bool:
        """End the transaction; returns False when it is unknown."""
        now = now_utc()
        row = await self.transaction_row(station_id, str(payload["transactionId"]))
        if row is None:
            return False
        total = (Decimal(str(payload["meterStop"])) - Decimal(row["meterStart"] or 0)) / Decimal(1000)
        await self._exec(
            'UPDATE "Transactions" SET "isActive" = false, "endTime" = %s, "stoppedReason" = %s, '
            '"totalKwh" = %s, "updatedAt" = %s WHERE id = %s',
            (parse_iso(payload.get("timestamp")), payload.get("reason", "Local"), total, now, row["id"]),
        )
        return True

    # --- charging profiles ----------------------------------------------------------------------

    async def store_charging_profile(self, station_id: str, request: dict[str, Any]) -> None:
        """Write (or replace) the ChargingProfiles/ChargingSchedules rows of an accepted 1.6 profile."""
        now = now_utc()
        profile = request["csChargingProfiles"]
        schedule = profile["chargingSchedule"]
        tx_db_id = None
        if profile.get("transactionId") is not None:
            tx = await self.transaction_row(station_id, str(profile["transactionId"]))
            tx_db_id = None if tx is None else tx["id"]
        async with self._transaction():
            row = await self._one(
                'INSERT INTO "ChargingProfiles" ("stationId", id, "chargingProfileKind", '
                '"chargingProfilePurpose", "recurrencyKind", "stackLevel", "validFrom", "validTo", '
                '"evseId", "isActive", "chargingLimitSource", "createdAt", "updatedAt", '
                '"transactionDatabaseId", "tenantId") '
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, true, 'CSO', %s, %s, %s, %s) "
                'ON CONFLICT ("stationId", id) DO UPDATE SET '
                '"chargingProfileKind" = EXCLUDED."chargingProfileKind", '
                '"chargingProfilePurpose" = EXCLUDED."chargingProfilePurpose", '
                '"recurrencyKind" = EXCLUDED."recurrencyKind", "stackLevel" = EXCLUDED."stackLevel", '
                '"validFrom" = EXCLUDED."validFrom", "validTo" = EXCLUDED."validTo", '
                '"evseId" = EXCLUDED."evseId", "isActive" = true, '
                '"transactionDatabaseId" = EXCLUDED."transactionDatabaseId", '
                '"updatedAt" = EXCLUDED."updatedAt" RETURNING "databaseId"',
                (
                    station_id,
                    profile["chargingProfileId"],
                    profile.get("chargingProfileKind"),
                    profile.get("chargingProfilePurpose"),
                    profile.get("recurrencyKind"),
                    profile.get("stackLevel"),
                    parse_iso(profile.get("validFrom")),
                    parse_iso(profile.get("validTo")),
                    request.get("connectorId"),
                    now,
                    now,
                    tx_db_id,
                    self.tenant_id,
                ),
            )
            assert row is not None
            min_rate = schedule.get("minChargingRate")
            await self._exec(
                'INSERT INTO "ChargingSchedules" (id, "stationId", "chargingRateUnit", '
                '"chargingSchedulePeriod", duration, "minChargingRate", "startSchedule", '
                '"chargingProfileDatabaseId", "createdAt", "updatedAt", "tenantId") '
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                'ON CONFLICT (id, "stationId") DO UPDATE SET '
                '"chargingRateUnit" = EXCLUDED."chargingRateUnit", '
                '"chargingSchedulePeriod" = EXCLUDED."chargingSchedulePeriod", '
                'duration = EXCLUDED.duration, "minChargingRate" = EXCLUDED."minChargingRate", '
                '"startSchedule" = EXCLUDED."startSchedule", '
                '"chargingProfileDatabaseId" = EXCLUDED."chargingProfileDatabaseId", '
                '"updatedAt" = EXCLUDED."updatedAt"',
                (
                    profile["chargingProfileId"],
                    station_id,
                    schedule.get("chargingRateUnit"),
                    Json(js_value(schedule.get("chargingSchedulePeriod", []))),
                    schedule.get("duration"),
                    None if min_rate is None else Decimal(str(min_rate)),
                    schedule.get("startSchedule"),
                    row["databaseId"],
                    now,
                    now,
                    self.tenant_id,
                ),
            )

    async def clear_charging_profiles(self, station_id: str) -> None:
        """An accepted 1.6 ClearChargingProfile deactivates every profile of the station, whatever the filter."""
        await self._exec(
            'UPDATE "ChargingProfiles" SET "isActive" = false, "updatedAt" = %s WHERE "stationId" = %s',
            (now_utc(), station_id),
        )



def _stored_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A sampled value as CitrineOS stores it: numeric value, unit moved into unitOfMeasure."""
    out: dict[str, Any] = {"value": js_number(str(sample.get("value")))}
    for key in ("context", "format", "measurand", "phase", "location"):
        if key in sample:
            out[key] = sample[key]
    if "unit" in sample:
        out["unitOfMeasure"] = {"unit": sample["unit"], "multiplier": 0}
    return out


def _register_kwh(samples: list[dict[str, Any]]) -> Decimal | None:
    for sample in samples:
        if sample.get("measurand", "Energy.Active.Import.Register") != "Energy.Active.Import.Register":
            continue
        if sample.get("phase"):
            continue
        try:
            value = Decimal(str(sample.get("value")))
        except ArithmeticError:
            return None
        unit = sample.get("unit", "Wh")
        return value if unit == "kWh" else value / Decimal(1000)
    return None
