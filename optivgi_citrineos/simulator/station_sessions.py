"""The sessions of a simulated OCPP 1.6J station: plug in, authorize, transactions, meter values, unplug."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
from typing import Any

from ocpp.v16 import call

from optivgi_citrineos.simulator.battery import Battery
from optivgi_citrineos.simulator.clock import iso_ms
from optivgi_citrineos.simulator.config import EVSpec
from optivgi_citrineos.simulator.station_link import _LinkedStation
from optivgi_citrineos.simulator.station_parts import (
    _TX_RETRY_INITIAL_S,
    _TX_RETRY_MAX_S,
    _Connector,
)

logger = logging.getLogger(__name__)


class _SessionStation(_LinkedStation):
    """A connected charge point that runs its cars' sessions."""

    # --- sessions --------------------------------------------------------------------------------

    def plug_in(
        self, connector_id: int, ev: EVSpec, id_tag: str, *, departs: bool, ev_number: int | None = None
    ) -> bool:
        """A car plugs in (status Preparing); False when the connector is taken."""
        c = self.connectors[connector_id]
        with self._lock:
            if c.battery is not None or c.status == "Finishing":
                return False
            self.advance(self.clock.now())
            c.battery = Battery(ev.capacity_kwh, ev.arrival_soc, ev.target_soc, ev.max_charge_rate_kw)
            c.ev = ev
            c.ev_number = ev_number if ev_number is not None else self._hooks.next_ev_number()
            c.id_tag = id_tag
            c.departs = departs
            c.status = "Preparing"
        logger.info("EV %d arrived at %s/%d — max %.2f kW, %.0f kWh at %.0f %%, wants %.0f %%", c.ev_number,
                    self.station_id, connector_id, ev.max_charge_rate_kw, ev.capacity_kwh, ev.arrival_soc * 100,
                    ev.target_soc * 100)
        return True

    async def run_session(self, connector_id: int, *, authorize: bool) -> int | None:
        """Authorize (optionally) and start a transaction for the plugged-in car; returns its transactionId."""
        c = self.connectors[connector_id]
        await self._ready.wait()
        await self._sync_status(c)
        id_tag = c.id_tag or "OPTIVGI-AUTO"
        if authorize:
            result = await self._call(call.Authorize(id_tag=id_tag), wait_online=True)
            status = result.id_tag_info.get("status") if result is not None else None
            if status != "Accepted":
                logger.warning("%s: idTag %s not authorized (%s); the car waits plugged in", c.tag(self.station_id),
                               id_tag, status or "no answer")
                return None
        with self._lock:
            if c.transaction_id is not None or c.battery is None:
                return c.transaction_id
            now = self.clock.now()
            self.advance(now)
            c.meter_start_wh = math.floor(c.energy_wh)
            c.starting = True
            self._recompute(now)
        try:
            result = await self._start_transaction(c, connector_id, id_tag, now)
        finally:
            with self._lock:
                self.advance(self.clock.now())
                c.starting = False
        if result is None:
            return c.transaction_id
        transaction_id = int(result.transaction_id)
        return await self._after_start(c, connector_id, transaction_id, result, now, id_tag)

    async def _start_transaction(self, c: _Connector, connector_id: int, id_tag: str, now: dt.datetime) -> Any:
        """StartTransaction, retried with backoff until answered; None when the car left meanwhile."""
        delay = _TX_RETRY_INITIAL_S
        while True:
            result = await self._call(
                call.StartTransaction(connector_id=connector_id, id_tag=id_tag, meter_start=c.meter_start_wh,
                                      timestamp=iso_ms(now)),
                wait_online=True,
            )
            if result is not None:
                return result
            # A charger keeps a transaction message until the CSMS takes it (TransactionMessageAttempts).
            logger.error("%s: StartTransaction failed; retrying in %.0f s (simulated)", c.tag(self.station_id),
                         delay)
            await self.clock.sleep(delay)
            delay = min(delay * 2, _TX_RETRY_MAX_S)
            with self._lock:
                if c.battery is None or c.transaction_id is not None:
                    return None  # the car left (or another start won) meanwhile

    async def _after_start(self, c: _Connector, connector_id: int, transaction_id: int, result: Any,
                           now: dt.datetime, id_tag: str) -> int | None:
        accepted = result.id_tag_info.get("status") == "Accepted"
        with self._lock:
            c.transaction_id = transaction_id
            c.tx_start = now
            pending, c.pending_profile = c.pending_profile, None
            if pending is not None and accepted:
                profile = dataclasses.replace(pending, transaction_id=transaction_id)
                self.store.install(profile, {connector_id: transaction_id})
            self.advance(self.clock.now())
            power = c.power_w
        if not accepted:
            logger.warning("%s: transaction %d not authorized (%s); stopping it", c.tag(self.station_id),
                           transaction_id, result.id_tag_info.get("status"))
            await self.stop_transaction(connector_id, "DeAuthorized")
            return None
        logger.info("%s: transaction %d started (idTag %s), drawing %.2f kW", c.tag(self.station_id), transaction_id,
                    id_tag, power / 1000)
        await self._sync_status(c)
        c.meter_task = self.supervise(lambda: self._meter_loop(c, transaction_id),
                                      f"{self.station_id}-{connector_id}-meter")
        return transaction_id

    async def _meter_loop(self, c: _Connector, transaction_id: int) -> None:
        interval = dt.timedelta(seconds=self.config.meter_values_interval_s)
        context = "Transaction.Begin"
        due = self.clock.now()
        while c.transaction_id == transaction_id and not c.stopping:
            c.meter_in_flight = True
            try:
                await self.send_meter_values(c, context)
            finally:
                c.meter_in_flight = False
            context = "Sample.Periodic"
            # Fixed cadence on the simulated clock, whatever the CSMS's answering time.
            due += interval
            await self.clock.sleep_until(due)

    async def send_meter_values(self, c: _Connector, context: str = "Sample.Periodic") -> None:
        """Send one MeterValues for the connector's transaction (sampled now, on the simulated clock)."""
        with self._lock:
            now = self.clock.now()
            self.advance(now)
            transaction_id = c.transaction_id
            if transaction_id is None:
                return
            power_w = c.power_w
            samples: list[dict[str, Any]] = [
                {"value": f"{c.energy_wh:.1f}", "context": context, "measurand": "Energy.Active.Import.Register",
                 "location": "Outlet", "unit": "Wh"},
                {"value": f"{power_w:.1f}", "context": context, "measurand": "Power.Active.Import",
                 "location": "Outlet", "unit": "W"},
                {"value": f"{self._watts_to_amps(power_w):.2f}", "context": context, "measurand": "Current.Import",
                 "location": "Outlet", "unit": "A"},
            ]
            if c.battery is not None:
                samples.append({"value": f"{c.battery.soc * 100:.1f}", "context": context, "measurand": "SoC",
                                "location": "EV", "unit": "Percent"})
        await self._call(call.MeterValues(connector_id=c.connector_id, transaction_id=transaction_id,
                                          meter_value=[{"timestamp": iso_ms(now), "sampledValue": samples}]))

    async def stop_transaction(self, connector_id: int, reason: str) -> None:
        """Stop the connector's transaction (StopTransaction, then Finishing)."""
        c = self.connectors[connector_id]
        with self._lock:
            if c.transaction_id is None or c.stopping:
                return
            now = self.clock.now()
            self.advance(now)
            c.stopping = True
            transaction_id = c.transaction_id
            meter_stop = max(c.meter_start_wh, math.floor(c.energy_wh))
            self._recompute(now)
        if c.meter_task is not None and not c.meter_in_flight:
            c.meter_task.cancel()
        await self._call(
            call.StopTransaction(meter_stop=meter_stop, timestamp=iso_ms(now), transaction_id=transaction_id,
                                 reason=reason, id_tag=c.id_tag),
            wait_online=True,
        )
        with self._lock:
            c.transaction_id = None
            c.tx_start = None
            c.stopping = False
            c.power_w = 0.0
            c.status = "Finishing"
            self.store.end_transaction(connector_id)
            self._recompute(self.clock.now())
            soc = c.battery.soc * 100 if c.battery is not None else float("nan")
        logger.info("%s: transaction %d stopped (%s) — %.2f kWh delivered, SoC %.1f %%", c.tag(self.station_id),
                    transaction_id, reason, (meter_stop - c.meter_start_wh) / 1000, soc)
        await self._sync_status(c)

    async def unplug(self, connector_id: int) -> None:
        """The car leaves: stop its transaction if any, then Available."""
        c = self.connectors[connector_id]
        if c.transaction_id is not None:
            await self.stop_transaction(connector_id, "EVDisconnected")
        with self._lock:
            if c.battery is None and c.status == "Available":
                return
            number = c.ev_number
            c.battery = None
            c.ev = None
            c.ev_number = None
            c.id_tag = None
            c.departs = False
            c.departure = None
            c.pending_profile = None
            c.status = "Available"
        if number is not None:
            logger.info("EV %d left %s/%d", number, self.station_id, connector_id)
        await self._sync_status(c)

    async def stop_all(self, reason: str = "Local") -> None:
        """Stop every running transaction (on shutdown, so the CSMS does not keep them open)."""
        await asyncio.gather(
            *(self.stop_transaction(c.connector_id, reason) for c in self.connectors.values()
              if c.transaction_id is not None and self._online.is_set()),
            return_exceptions=True,
        )
