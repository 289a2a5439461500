"""Session rows read from CitrineOS → EVs to plan (pure: no I/O, the clock is an argument).

A bad row never stops the group: any exception while reading one row or building its EV (a NULL
``Connector`` relation, a NaN or boolean ``meterStart``, a ``unitOfMeasure.multiplier`` that
overflows, a bad ``startTime``, ...) skips that row with a WARNING naming the session and the
field, and its connector is reported in :attr:`SessionsRead.unknown` so the ledger counts it at its
worst case. Sessions on connector 0 (the whole station) are refused with a WARNING. Two active
transactions on one connector are an ERROR naming both; the connector is planned once (the
latest start) and reported as unknown too, so it counts at its worst case. What is remembered per
session (its last connector) is dropped when the session leaves the read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import attrs

from optivgi.models.ev import EV, ChargingRateUnit, to_utc
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.needs import ChargingNeeds, ChargingNeedsStore
from optivgi_citrineos.sitefile import SessionParams, resolve_after, resolve_before

__all__ = [
    "SKIPPED_STATUSES",
    "RowError",
    "SessionBook",
    "SessionRow",
    "SessionsRead",
    "UnknownConnector",
    "delivered_energy_wh",
    "row_from_graphql",
    "row_from_sql",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Connector statuses for which an active transaction is not planned (ending, or stale data).
SKIPPED_STATUSES = frozenset({"Available", "Finishing", "Unavailable", "Faulted"})


class RowError(ValueError):
    """One field of a session row could not be understood."""

    def __init__(self, field: str, problem: BaseException | str) -> None:
        text = problem if isinstance(problem, str) else f"{type(problem).__name__}: {problem}"
        super().__init__(f"field {field}: {text}")
        self.field = field


def _field(name: str, read: Callable[[], T]) -> T:
    """``read()``, any exception turned into a :class:`RowError` naming the field."""
    try:
        return read()
    except RowError:
        raise
    except Exception as exc:  # any failure of one field skips the row, never the group
        raise RowError(name, exc) from exc


@attrs.frozen
class SessionRow:
    """One active transaction as read from CitrineOS, independent of the read path."""

    station_id: str
    transaction_id: str
    connector_id: int | None
    id_token: str | None = None
    start_time: datetime | None = None
    meter_start_wh: float | None = None
    sampled_values: tuple[Mapping[str, Any], ...] = ()
    connector_status: str | None = None
    db_id: int | None = None


@attrs.frozen
class UnknownConnector:
    """A connector whose draw is not known this cycle: the ledger counts it at its worst case.

    ``connector_id`` is None when even the connector could not be read (and was never seen).
    """

    station_id: str
    connector_id: int | None
    reason: str


@attrs.frozen
class SessionsRead:
    """What one read of a group's sessions gave."""

    evs: list[EV]
    unknown: list[UnknownConnector]
    #: (station, connector) of every session seen this read, planned or not.
    connectors: frozenset[tuple[str, int]] = frozenset()


def parse_time(value: Any) -> datetime | None:
    """A timestamp from a row (ISO text or datetime) as aware UTC, or None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    return to_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def optional_float(value: Any) -> float | None:
    """A finite number or None; booleans, NaN and infinities raise ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def _connector(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be an integer >= 0, got {value!r}")
    return value


def _sampled(value: Any) -> tuple[Mapping[str, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes):
        value = json.loads(value)
    if not isinstance(value, list):
        raise ValueError(f"sampledValue must be a list, got {type(value).__name__}")
    return tuple(v for v in value if isinstance(v, Mapping))


def delivered_energy_wh(sampled_values: Sequence[Mapping[str, Any]], meter_start_wh: float | None) -> float | None:
    """Energy delivered so far [Wh]: the energy register minus ``meterStart``; None when unknown.

    Uses the ``Energy.Active.Import.Register`` sample without a phase (the total), honouring
    ``unitOfMeasure`` (``Wh``/``kWh`` and ``multiplier``). A register below ``meterStart`` (a meter
    reset) gives 0. A value that is not finite once scaled raises ValueError (OverflowError for a
    multiplier too large for a float).
    """
    if meter_start_wh is None:
        return None
    best: tuple[int, float] | None = None
    for sv in sampled_values:
        if sv.get("measurand") != "Energy.Active.Import.Register":
            continue
        try:
            value = float(sv["value"])
        except (KeyError, TypeError, ValueError):
            continue
        raw_uom = sv.get("unitOfMeasure")
        uom: Mapping[str, Any] = raw_uom if isinstance(raw_uom, Mapping) else {}
        unit = str(uom.get("unit") or sv.get("unit") or "Wh")
        multiplier = int(uom.get("multiplier") or 0)
        wh = value * (10.0**multiplier) * (1000.0 if unit.lower() == "kwh" else 1.0)
        if not math.isfinite(wh):
            raise ValueError(f"energy register {value!r} x 10^{multiplier} is not a finite number")
        rank = 0 if sv.get("phase") in (None, "") else 1  # the total beats a per-phase register
        if best is None or rank < best[0]:
            best = (rank, wh)
    if best is None:
        return None
    return max(best[1] - meter_start_wh, 0.0)


def _identity(station: Any, tx: Any) -> tuple[str, str]:
    if not isinstance(station, str) or not station or tx is None or str(tx) == "":
        raise RowError("stationId/transactionId", "missing")
    return station, str(tx)


def _outlet(connector: Any, evse: Any) -> tuple[int | None, bool]:
    """(the outlet's number, whether it is a 2.0.1 EVSE).

    CitrineOS 1.8.3 points a 2.0.1 transaction at a Connectors row without a connector number but
    with its EVSE (contract README, "Run 3"): for 2.0.1 the EVSE id identifies the outlet, and it is
    what SetChargingProfile 2.0.1 addresses.
    """
    number = _connector(connector)
    if number is None and evse is not None:
        return _connector(evse), True
    return number, False


def _meter_start_wh(value: Any, ocpp201: bool) -> float | None:
    # CitrineOS 1.8.3 stores a 2.0.1 session's meterStart in kWh (a 1000 Wh register was stored as 1).
    start = optional_float(value)
    return None if start is None else start * 1000.0 if ocpp201 else start


def row_from_graphql(raw: Mapping[str, Any]) -> SessionRow:
    """A Hasura ``Transactions`` element → :class:`SessionRow`; raises :class:`RowError`."""
    station, tx = _identity(raw.get("stationId"), raw.get("transactionId"))
    number, ocpp201 = _field("Connector.connectorId", lambda: _outlet(
        (raw.get("Connector") or {}).get("connectorId"), (raw.get("Evse") or {}).get("evseTypeId")))
    meter_values = raw.get("MeterValues") or []
    sampled = _field("MeterValues.sampledValue",
                     lambda: _sampled(meter_values[0].get("sampledValue")) if meter_values else ())

    def status() -> str | None:
        found, latest = None, None
        for item in (raw.get("ChargingStation") or {}).get("LatestStatusNotifications") or []:
            sn = (item or {}).get("StatusNotification") or {}
            if number is not None and sn.get("evseId" if ocpp201 else "connectorId") == number:
                ts = parse_time(sn.get("timestamp"))
                if latest is None or (ts is not None and ts >= latest):
                    found, latest = sn.get("connectorStatus"), ts
        return found

    return SessionRow(
        station_id=station,
        transaction_id=tx,
        connector_id=number,
        id_token=_field("Authorization.idToken", lambda: (raw.get("Authorization") or {}).get("idToken")),
        start_time=_field("startTime", lambda: parse_time(raw.get("startTime"))),
        meter_start_wh=_field("meterStart", lambda: _meter_start_wh(raw.get("meterStart"), ocpp201)),
        sampled_values=sampled,
        connector_status=_field("LatestStatusNotifications", status),
        db_id=raw.get("id"),
    )


def row_from_sql(rec: Mapping[str, Any]) -> SessionRow:
    """A row of :data:`~optivgi_citrineos.queries.ACTIVE_SESSIONS_SQL` → :class:`SessionRow`."""
    station, tx = _identity(rec.get("stationId"), rec.get("transactionId"))
    number, ocpp201 = _field("ocppConnectorId", lambda: _outlet(rec.get("ocppConnectorId"), rec.get("ocppEvseId")))
    return SessionRow(
        station_id=station,
        transaction_id=tx,
        connector_id=number,
        id_token=rec.get("idToken"),
        start_time=_field("startTime", lambda: parse_time(rec.get("startTime"))),
        meter_start_wh=_field("meterStart", lambda: _meter_start_wh(rec.get("meterStart"), ocpp201)),
        sampled_values=_field("lastSampledValue", lambda: _sampled(rec.get("lastSampledValue"))),
        connector_status=rec.get("lastConnectorStatus"),
        db_id=rec.get("transactionDatabaseId"),
    )


def configured_max_kw(config: CitrineOSConfig, row: SessionRow, connector_id: int) -> float | None:
    """The most specific configured ``max_power_kw`` of the session, None when only the built-in
    default applies (walks the layers of :meth:`CitrineOSConfig.session_params` without it)."""
    site = config.site
    layers: list[SessionParams] = []
    if site is not None and row.id_token is not None and row.id_token in site.id_tags:
        layers.append(site.id_tags[row.id_token])
    key = (row.station_id, connector_id)
    if key in config.connectors:
        layers.append(config.connectors[key])
    if site is not None:
        if key in site.connectors:
            layers.append(site.connectors[key])
        if row.station_id in site.stations:
            layers.append(site.stations[row.station_id])
        layers.append(site.defaults)
    for layer in layers:
        if layer.max_power_kw is not None:
            return layer.max_power_kw
    return None


def _apply_needs(config: CitrineOSConfig, row: SessionRow, needs: ChargingNeeds, now: datetime,
                 departure: datetime, needed_kwh: float, max_kw: float, min_kw: float, volts: float,
                 phases: int) -> tuple[datetime, float, float, float, int]:
    """(departure, energy [kWh], max [kW], min [kW], phases) with the car's own needs laid over."""
    if needs.departure is not None and needs.departure > now:
        departure = needs.departure
    if needs.energy_wh is not None:
        needed_kwh = needs.energy_wh / 1000.0
    if needs.phases is not None:
        phases = needs.phases
    wanted_max = needs.max_power_kw(volts, phases)
    if wanted_max is not None:
        configured = configured_max_kw(config, row, needs.evse_id)
        # A configured maximum is what the connector or site may give; the car cannot raise it.
        max_kw = wanted_max if configured is None else min(wanted_max, configured)
    wanted_min = needs.min_power_kw(volts, phases)
    if wanted_min is not None:
        min_kw = wanted_min
    return departure, needed_kwh, max_kw, min_kw, phases


def build_ev(config: CitrineOSConfig, row: SessionRow, now: datetime, needs: ChargingNeedsStore) -> EV:
    """The EV of one session row; raises :class:`RowError` naming the field that fails."""
    if row.connector_id is None:
        raise RowError("Connector.connectorId", "no OCPP connector number nor EVSE (Connector relationship missing)")
    connector = row.connector_id
    params = _field("session parameters", lambda: config.session_params(row.station_id, connector, row.id_token))
    tz = config.tz
    if row.start_time is not None:
        arrival = row.start_time
    elif params.arrival is not None:
        arrival = _field("arrival", lambda: resolve_before(params.arrival or "", now, tz))
    else:
        arrival = now
    arrival = min(arrival, now)
    departure = now + timedelta(seconds=config.horizon_s)
    if params.departure is not None:
        planned = _field("departure", lambda: resolve_after(params.departure or "", arrival, tz))
        if planned > now:
            departure = planned
    volts = params.voltage or config.voltage
    phases = params.phases or config.phases
    needed_kwh = params.energy_needed_kwh or 0.0
    max_kw = params.max_power_kw if params.max_power_kw is not None else 0.0
    min_kw = params.min_power_kw or 0.0
    car = needs.get(row.station_id, connector, row.transaction_id)
    if car is not None:
        departure, needed_kwh, max_kw, min_kw, phases = _field(
            "NotifyEVChargingNeeds",
            lambda: _apply_needs(config, row, car, now, departure, needed_kwh, max_kw, min_kw, volts, phases))
    delivered = _field("MeterValues.sampledValue (energy register)",
                       lambda: delivered_energy_wh(row.sampled_values, row.meter_start_wh))
    remaining = max(needed_kwh - (delivered or 0.0) / 1000.0, 0.0)
    return _field("EV", lambda: EV(
        ev_id=f"{row.station_id}:{row.transaction_id}", station_id=row.station_id, connector_id=connector,
        arrival_time=arrival, departure_time=departure, energy=remaining, min_power=min(min_kw, max_kw),
        max_power=max_kw, active=True, unit=ChargingRateUnit.W, voltage=volts, phases=phases,
        transaction_id=row.transaction_id))


class SessionBook:
    """Turns each read of a group into EVs, remembering each session's connector while it lasts.

    Args:
        config: validated configuration.
        needs: the OCPP 2.0.1 charging needs kept from RabbitMQ.
    """

    def __init__(self, config: CitrineOSConfig, needs: ChargingNeedsStore) -> None:
        self.config = config
        self.needs = needs
        #: (station, transaction) → connector, of every session in the last read.
        self.connector_of: dict[tuple[str, str], int] = {}
        self._warned_strangers: set[str] = set()
        self._unreadable: list[tuple[str, str, str]] = []

    def strangers(self, rows: Sequence[SessionRow]) -> None:
        """Log (once per station) sessions on stations that are in no configured group."""
        for row in rows:
            if self.config.group_of(row.station_id) is None and row.station_id not in self._warned_strangers:
                self._warned_strangers.add(row.station_id)
                logger.error("station %s is not configured (STATION_IDS) but has active session %s: its draw is "
                             "not counted in any site limit", row.station_id, row.transaction_id)

    def read(self, rows: Sequence[SessionRow], stations: Collection[str], now: datetime,
             ended: Collection[tuple[str, str]] = ()) -> SessionsRead:
        """EVs of ``stations`` from ``rows``; see the module documentation for what is skipped."""
        evs: dict[tuple[str, int], tuple[EV, SessionRow]] = {}
        unknown: list[UnknownConnector] = []
        seen: set[tuple[str, str]] = set()
        connectors: set[tuple[str, int]] = set()
        remembered: dict[tuple[str, str], int] = {}
        for station, tx, why in self._unreadable:
            if station in stations:
                connector = self.connector_of.get((station, tx))
                if connector is not None:
                    remembered[(station, tx)] = connector
                unknown.append(UnknownConnector(station, connector, f"session {station}:{tx} unreadable: {why}"))
        self._unreadable = []
        for row in rows:
            key = (row.station_id, row.transaction_id)
            name = f"{row.station_id}:{row.transaction_id}"
            if row.station_id not in stations or key in seen:
                if key in seen:
                    logger.warning("session %s listed twice; the second row is skipped", name)
                continue
            seen.add(key)
            connector = row.connector_id if row.connector_id is not None else self.connector_of.get(key)
            if connector is not None:
                remembered[key] = connector
                connectors.add((row.station_id, connector))
            if connector == 0:
                logger.warning("session %s refused: it is on connector 0 (the whole station)", name)
                continue
            if key in ended:
                logger.info("session %s skipped: stopped (seen on RabbitMQ)", name)
                continue
            if row.connector_status in SKIPPED_STATUSES:
                logger.info("session %s skipped: connector status %s", name, row.connector_status)
                continue
            try:
                ev = build_ev(self.config, row, now, self.needs)
            except Exception as exc:  # one row must never fail the group
                logger.warning("session %s skipped: %s; its connector counts at its worst case", name, exc)
                unknown.append(UnknownConnector(row.station_id, connector, f"session {name} unreadable: {exc}"))
                continue
            slot = (row.station_id, ev.connector_id)
            if slot in evs:
                other_ev, other = evs[slot]
                logger.error("sessions %s:%s and %s both active on %s connector %d: planned as one, counted at "
                             "its worst case", other.station_id, other.transaction_id, name, row.station_id,
                             ev.connector_id)
                unknown.append(UnknownConnector(row.station_id, ev.connector_id,
                                                f"two active sessions {other_ev.ev_id} and {name}"))
                if (row.start_time or now) < (other.start_time or now):
                    continue
            evs[slot] = (ev, row)
        self.connector_of = remembered
        return SessionsRead([ev for ev, _ in evs.values()], unknown, frozenset(connectors))

    def rows_from_graphql(self, transactions: Sequence[Any]) -> list[SessionRow]:
        """Rows of a Hasura answer; an unreadable identity is logged and skipped."""
        return self._rows(transactions, row_from_graphql)

    def rows_from_sql(self, records: Sequence[Mapping[str, Any]]) -> list[SessionRow]:
        """Rows of the SQL read; an unreadable identity is logged and skipped."""
        return self._rows(records, row_from_sql)

    def _rows(self, raws: Sequence[Any], parse: Callable[[Mapping[str, Any]], SessionRow]) -> list[SessionRow]:
        rows: list[SessionRow] = []
        for raw in raws:
            try:
                rows.append(parse(raw))
            except Exception as exc:  # one row must never fail the group
                station = raw.get("stationId") if isinstance(raw, Mapping) else None
                tx = raw.get("transactionId") if isinstance(raw, Mapping) else None
                logger.warning("session %s:%s skipped: %s; its connector counts at its worst case", station, tx, exc)
                if isinstance(station, str) and station:
                    self._unreadable.append((station, str(tx), str(exc)))
        return rows
