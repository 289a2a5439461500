"""Fail-safe arithmetic: the fallback share every connector may draw, and when a hold must end.

Pure, no I/O. The fallback (a TxDefaultProfile on every station, in force whenever no TxProfile
is) must keep the site within its lowest limit even if every connector draws its share at once,
so the share is the LOWEST limit of the day divided by the connectors that exist, rounded DOWN
to the charger's step. A car whose TxProfile fails is held at 0 at most one validity period;
then its station's hold is let lapse and the car draws its fallback share, which the ledger
counts (:class:`HoldRelease`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import attrs

from optivgi.ledger import ConnectorKey
from optivgi.models.ev import ChargingRateUnit, to_utc
from optivgi.models.profile import round_down_tenth

__all__ = [
    "ConnectorCount",
    "FallbackShare",
    "HoldRelease",
    "capped_valid_to",
    "count_connectors",
    "fallback_share",
    "round_down_to_step",
]

#: The least current [A] an IEC 61851 charger can signal; below it the car pauses.
MIN_CURRENT_A = 6.0


def round_down_to_step(value: float, step: float) -> float:
    """The largest multiple of ``step`` that is ``<= value`` (never rounded up).

    A step of 0.1 uses :func:`~optivgi.models.profile.round_down_tenth`, which also skips the
    tenths a CSMS's floating-point ``multipleOf`` check refuses.
    """
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"value must be a finite number >= 0, got {value!r}")
    if not math.isfinite(step) or step <= 0:
        raise ValueError(f"step must be a finite number > 0, got {step!r}")
    if math.isclose(step, 0.1):
        return round_down_tenth(value)
    k = math.floor(value / step)
    while k > 0 and k * step > value:
        k -= 1
    while (k + 1) * step <= value:
        k += 1
    return k * step


def capped_valid_to(now: datetime, validity_s: float, hold_until: datetime | None) -> datetime:
    """The ``validTo`` of a TxProfile sent at ``now``: one validity period, but never after the
    station's hold (``hold_until``), so that if sending stops every connector of the station
    drops to its fallback share at the same moment and none keeps more while new sessions start
    at their share."""
    if not math.isfinite(validity_s) or validity_s <= 0:
        raise ValueError(f"validity_s must be a finite number > 0, got {validity_s!r}")
    lapse = to_utc(now) + timedelta(seconds=validity_s)
    return lapse if hold_until is None else min(lapse, to_utc(hold_until))


@attrs.frozen
class ConnectorCount:
    """How many connectors each station has, as far as seen.

    Attributes:
        per_station: connectors counted per station (at least 1 for a configured station).
        errors: one text per station whose seen connectors differ from the override.
    """

    per_station: Mapping[str, int]
    errors: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Connectors of all stations together."""
        return sum(self.per_station.values())


def count_connectors(stations: Iterable[str], seen: Iterable[ConnectorKey], *,
                     override: int | None = None) -> ConnectorCount:
    """Count the connectors of ``stations`` from the connector keys ``seen`` (the CSMS's
    connector/EVSE rows, StatusNotifications, sessions; connector 0 is the station itself).

    A station with none seen counts as 1 (or ``override``). With ``override`` (a configured
    count per station), a station whose seen count differs is an error naming it, and the
    higher of the two is used, so the share can only get smaller.
    """
    if override is not None and (isinstance(override, bool) or override < 1):
        raise ValueError(f"override must be an integer >= 1, got {override!r}")
    stations = [str(s) for s in stations]
    found: dict[str, set[int]] = {s: set() for s in stations}
    for station, connector in seen:
        if str(station) in found and connector >= 1:
            found[str(station)].add(connector)
    per_station: dict[str, int] = {}
    errors: list[str] = []
    for station in stations:
        n = len(found[station])
        if override is not None and n and n != override:
            errors.append(f"station {station}: {n} connector(s) seen ({sorted(found[station])}), "
                          f"but {override} configured per station; counting {max(n, override)}")
        per_station[station] = max(n, override or 1)
    return ConnectorCount(per_station, tuple(errors))


@attrs.frozen
class FallbackShare:
    """The fallback limit of every connector of a circuit.

    Attributes:
        lowest_limit_kw: the lowest limit of the schedule [kW].
        connectors: connectors sharing it.
        limit: the per-connector limit in ``unit``, rounded down to the step.
        unit: ``A`` or ``W``.
        share_kw: ``limit`` in kW (at the voltage and phases given).
        warning: the arithmetic, when the share is below the chargers' minimum current; else None.
    """

    lowest_limit_kw: float
    connectors: int
    limit: float
    unit: ChargingRateUnit
    share_kw: float
    warning: str | None = None


def fallback_share(limits_kw: float | Iterable[float], connectors: int, *, unit: ChargingRateUnit | str,
                   voltage: float, phases: int = 1, step: float | None = None,
                   min_current_a: float = MIN_CURRENT_A) -> FallbackShare:
    """Each connector's fallback share of the lowest of ``limits_kw`` (a constant, or every
    value of a daily / time-of-day schedule), rounded DOWN to ``step`` in ``unit`` (default
    0.1 A or 1 W).

    Raises:
        ValueError: no limit, a negative or non-finite one, or fewer than one connector.
    """
    unit = ChargingRateUnit(unit)
    values = [float(limits_kw)] if isinstance(limits_kw, int | float) else [float(v) for v in limits_kw]
    if not values:
        raise ValueError("no site limit to share")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"site limits must be finite kW >= 0, got {values!r}")
    if isinstance(connectors, bool) or connectors < 1:
        raise ValueError(f"connectors must be an integer >= 1, got {connectors!r}")
    if not math.isfinite(voltage) or voltage <= 0:
        raise ValueError(f"voltage must be > 0, got {voltage!r}")
    lowest = min(values)
    step = step if step is not None else (0.1 if unit is ChargingRateUnit.A else 1.0)
    raw = unit.from_kw(lowest / connectors, voltage, phases)
    limit = round_down_to_step(raw, step)
    share_kw = unit.limit_to_kw(limit, voltage, phases)
    raw_amps = lowest / connectors * 1000.0 / (voltage * phases)
    amps = share_kw * 1000.0 / (voltage * phases)
    warning = None
    if amps < min_current_a:
        warning = (f"fallback share {lowest:g} kW / {connectors} connectors = {lowest / connectors:.3f} kW "
                   f"= {raw_amps:.2f} A at {voltage:g} V x {phases} phase(s) (sent as {limit:g} {unit.value}), "
                   f"below the {min_current_a:g} A chargers need: under the fallback alone cars will pause")
    return FallbackShare(lowest, connectors, limit, unit, share_kw, warning)


@attrs.define
class HoldRelease:
    """When a car held at 0 must be let go to its fallback share.

    Call :meth:`failed` when a connector's TxProfile fails (rejected, unanswered, session
    unreadable), :meth:`succeeded` when one is accepted or the session ends. A station's hold may
    be renewed only while :meth:`may_renew_hold` is True: no connector of it has been failing for
    a whole validity period. The hold then lapses (its ``validTo`` is at most one validity
    period after it was last renewed) and the car draws its fallback share.
    """

    validity_s: float
    _since: dict[ConnectorKey, datetime] = attrs.field(factory=dict)

    def failed(self, key: ConnectorKey, at: datetime) -> None:
        """The connector's TxProfile failed at ``at`` (the first failure of a run counts)."""
        self._since.setdefault((str(key[0]), key[1]), to_utc(at))

    def succeeded(self, key: ConnectorKey) -> None:
        """The connector's TxProfile was accepted, or its session ended."""
        self._since.pop((str(key[0]), key[1]), None)

    def failing_since(self, key: ConnectorKey) -> datetime | None:
        """Since when the connector's TxProfiles fail, or None."""
        return self._since.get((str(key[0]), key[1]))

    def released(self, key: ConnectorKey, now: datetime) -> bool:
        """Whether the connector has been failing for at least one validity period."""
        since = self.failing_since(key)
        return since is not None and to_utc(now) - since >= timedelta(seconds=self.validity_s)

    def may_renew_hold(self, station_id: str, now: datetime) -> bool:
        """Whether the station's hold may be renewed until ``now`` + one validity period
        without keeping any of its cars at 0 for longer than one validity period in all."""
        horizon = to_utc(now) + timedelta(seconds=self.validity_s)
        return not any(k[0] == str(station_id) and horizon - since > timedelta(seconds=self.validity_s)
                       for k, since in self._since.items())
