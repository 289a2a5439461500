"""OCPP 1.6 charging profiles and the composite schedule a charge point derives from them.

Pure functions and values, no I/O, so the smart-charging rules can be unit tested on their own.

The rules implemented (OCPP 1.6 edition 2, §3.13 and SetChargingProfile/GetCompositeSchedule):

- a profile applies while ``validFrom <= t < validTo`` and while its schedule runs: from its start
  (``startSchedule`` for Absolute, the transaction start for Relative, the latest daily/weekly
  recurrence for Recurring) for ``duration`` seconds (unbounded when absent); the limit is the one
  of the last period whose ``startPeriod`` has passed;
- per purpose the valid profile with the highest ``stackLevel`` wins; for TxDefaultProfile a
  connector-specific profile wins a tie against one installed on connector 0;
- an active TxProfile (only during a transaction, and only for its ``transactionId`` when given)
  replaces the TxDefaultProfile;
- the ChargePointMaxProfile (connector 0) caps the whole charge point, i.e. the sum of its
  connectors; for a single connector it is an upper bound as well.

Limits in A are converted to W with ``voltage x phases``, where phases is the charger's phase
count, lowered to the period's ``numberPhases`` when that is smaller.

One profile (parsing, validity, its limit at an instant) is :mod:`~optivgi_citrineos.simulator.profile_model`;
this module combines them and re-exports the model's names.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from optivgi_citrineos.simulator.profile_model import (
    CHARGE_POINT_MAX,
    PURPOSES,
    TX_DEFAULT,
    TX_PROFILE,
    ActiveLimit,
    ChargingProfile,
    ProfileError,
    SchedulePeriod,
    Transaction,
    floor_tenth,
    parse_ocpp_datetime,
)

__all__ = [
    "CHARGE_POINT_MAX",
    "PURPOSES",
    "TX_DEFAULT",
    "TX_PROFILE",
    "ActiveLimit",
    "ChargingProfile",
    "CompositeLimit",
    "ProfileError",
    "ProfileStore",
    "SchedulePeriod",
    "Transaction",
    "allocate_power",
    "composite_limit",
    "composite_schedule",
    "floor_tenth",
    "parse_ocpp_datetime",
]




def _winner(
    profiles: Iterable[ChargingProfile], now: dt.datetime, tx: Transaction | None, connector_id: int
) -> ActiveLimit | None:
    best: ActiveLimit | None = None
    best_key: tuple[int, int] | None = None
    for profile in profiles:
        limit = profile.limit_at(now, tx)
        if limit is None:
            continue
        # Highest stackLevel first; on a tie the connector's own profile beats the charge point's.
        key = (profile.stack_level, 1 if profile.connector_id == connector_id and connector_id != 0 else 0)
        if best_key is None or key > best_key:
            best, best_key = limit, key
    return best


@dataclass(frozen=True)
class CompositeLimit:
    """What limits one connector at one instant (W; None = no limit from profiles).

    ``tx_limit_w`` comes from the winning TxProfile or else TxDefaultProfile (``tx_source``);
    ``station_cap_w`` from the winning ChargePointMaxProfile, which caps the connectors' sum;
    ``limit_w`` is the smaller of the two, the connector's composite limit.
    """

    tx_limit_w: float | None
    tx_source: ChargingProfile | None
    station_cap_w: float | None
    station_source: ChargingProfile | None

    @property
    def limit_w(self) -> float | None:
        """The connector's composite limit in W (None = unlimited by profiles)."""
        values = [v for v in (self.tx_limit_w, self.station_cap_w) if v is not None]
        return min(values) if values else None


def composite_limit(
    profiles: Sequence[ChargingProfile],
    connector_id: int,
    now: dt.datetime,
    tx: Transaction | None,
    *,
    voltage: float,
    phases: int,
) -> CompositeLimit:
    """The composite limit of ``connector_id`` (0 = the charge point) at ``now``.

    ``profiles`` are all profiles installed on the charge point; ``tx`` is the connector's running
    transaction (None when idle; TxProfiles and Relative profiles then do not apply).
    """
    station = _winner((p for p in profiles if p.purpose == CHARGE_POINT_MAX), now, None, 0)
    station_w = station.watts(voltage, phases) if station is not None else None
    if connector_id == 0:
        return CompositeLimit(None, None, station_w, station.profile if station else None)
    tx_limit: ActiveLimit | None = None
    if tx is not None:
        tx_limit = _winner(
            (
                p
                for p in profiles
                if p.purpose == TX_PROFILE
                and p.connector_id == connector_id
                and (p.transaction_id is None or p.transaction_id == tx.transaction_id)
            ),
            now,
            tx,
            connector_id,
        )
    if tx_limit is None:
        tx_limit = _winner(
            (p for p in profiles if p.purpose == TX_DEFAULT and p.connector_id in (0, connector_id)),
            now,
            tx,
            connector_id,
        )
    return CompositeLimit(
        tx_limit.watts(voltage, phases) if tx_limit is not None else None,
        tx_limit.profile if tx_limit is not None else None,
        station_w,
        station.profile if station is not None else None,
    )


def composite_schedule(
    profiles: Sequence[ChargingProfile],
    connector_id: int,
    start: dt.datetime,
    duration_s: int,
    tx: Transaction | None,
    *,
    voltage: float,
    phases: int,
    hardware_max_w: float,
) -> list[tuple[int, float]]:
    """The composite schedule of a connector from ``start`` for ``duration_s`` seconds, in W.

    Returns ``(startPeriod, limit_w)`` pairs (first at 0, consecutive equal limits merged). Where no
    profile limits the connector the charger's own maximum ``hardware_max_w`` applies, so the
    schedule always has a value.
    """
    end = start + dt.timedelta(seconds=duration_s)
    points = {start}
    for profile in profiles:
        points |= profile.breakpoints(start, end, tx)
    out: list[tuple[int, float]] = []
    for when in sorted(points):
        limit = composite_limit(profiles, connector_id, when, tx, voltage=voltage, phases=phases).limit_w
        value = hardware_max_w if limit is None else min(limit, hardware_max_w)
        offset = math.ceil((when - start).total_seconds()) if when > start else 0
        if out and out[-1][0] == offset:
            # Two changes within the same second: the later one holds from that second on.
            out.pop()
        if out and out[-1][1] == value:
            continue
        out.append((offset, value))
    return out


def allocate_power(desired_w: Mapping[int, float], cap_w: float | None) -> dict[int, float]:
    """Share a charge point's cap among its connectors (water-filling).

    Every connector gets what it asks for when the sum fits under ``cap_w``; otherwise the cap is
    split equally, and what a connector does not need goes to the others.
    """
    if cap_w is None or sum(desired_w.values()) <= cap_w:
        return dict(desired_w)
    out: dict[int, float] = {}
    remaining = max(cap_w, 0.0)
    pending = sorted(desired_w.items(), key=lambda item: item[1])
    while pending:
        share = remaining / len(pending)
        connector, want = pending[0]
        if want <= share:
            out[connector] = want
            remaining -= want
            pending.pop(0)
            continue
        for connector, _ in pending:
            out[connector] = share
        break
    return out


class ProfileStore:
    """The profiles installed on one charge point, with OCPP's replacement and clearing rules."""

    def __init__(self, connectors: int) -> None:
        self.connectors = connectors
        self._profiles: list[ChargingProfile] = []

    @property
    def profiles(self) -> tuple[ChargingProfile, ...]:
        """The installed profiles, oldest first."""
        return tuple(self._profiles)

    def install(self, profile: ChargingProfile, transactions: Mapping[int, int | None]) -> None:
        """Install ``profile``, replacing one with the same id or the same purpose, stack level and connector.

        ``transactions`` maps each connector to its running transactionId (None when idle).

        Raises:
            ProfileError: the connector or purpose does not allow this profile (answer Rejected).
        """
        c = profile.connector_id
        if not 0 <= c <= self.connectors:
            raise ProfileError(f"connector {c} does not exist (the charge point has {self.connectors})")
        if profile.purpose == CHARGE_POINT_MAX and c != 0:
            raise ProfileError("a ChargePointMaxProfile must be set on connector 0")
        if profile.purpose == TX_PROFILE:
            if c == 0:
                raise ProfileError("a TxProfile must be set on a connector, not 0")
            running = transactions.get(c)
            if running is None:
                raise ProfileError(f"a TxProfile needs a transaction on connector {c}, none is running")
            if profile.transaction_id is not None and profile.transaction_id != running:
                raise ProfileError(
                    f"TxProfile for transaction {profile.transaction_id}, connector {c} runs {running}"
                )
        self._profiles = [
            p
            for p in self._profiles
            if p.profile_id != profile.profile_id
            and not (p.purpose == profile.purpose and p.stack_level == profile.stack_level and p.connector_id == c)
        ]
        self._profiles.append(profile)

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> list[ChargingProfile]:
        """Remove profiles as ClearChargingProfile does; returns the removed ones.

        With ``profile_id`` only that profile goes (the other criteria are ignored, as OCPP says);
        otherwise every profile matching all given criteria goes (none given: all).
        """

        def matches(p: ChargingProfile) -> bool:
            if profile_id is not None:
                return p.profile_id == profile_id
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        removed = [p for p in self._profiles if matches(p)]
        self._profiles = [p for p in self._profiles if not matches(p)]
        return removed

    def end_transaction(self, connector_id: int) -> list[ChargingProfile]:
        """Drop the connector's TxProfiles: they only live as long as their transaction."""
        return self.clear(connector_id=connector_id, purpose=TX_PROFILE)
