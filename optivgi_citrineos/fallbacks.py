"""Fail-safe profiles: the connectors that exist, the fallback share, the fallback and hold profiles.

The fallback is a TxDefaultProfile on connector (EVSE) 0 at ``CITRINEOS_FALLBACK_STACK_LEVEL``:
each connector may draw the group's lowest limit divided among the connectors that exist,
converted to the station's unit and rounded down, so all of them together fit if opti-vgi stops.
The connectors that exist are those configured, those seen in StatusNotifications and those
sessions were seen on (:class:`ConnectorCensus`); ``CITRINEOS_CONNECTORS_PER_STATION`` is an explicit
override, and a station seen with more connectors than it says is an ERROR naming the station (the
connectors seen are counted then, the safe choice). The hold is a zero TxDefaultProfile one level
above the fallback, valid for one profile validity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import attrs

from optivgi.failsafe import ConnectorCount, FallbackShare, count_connectors, fallback_share
from optivgi.ledger import ConnectorKey
from optivgi.models.ev import to_utc
from optivgi.models.profile import (
    ChargingProfile,
    ChargingProfileKind,
    ChargingProfilePurpose,
    ChargingSchedulePeriod,
)
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.wire import fallback_id, hold_id

__all__ = ["ConnectorCensus", "FallbackSchedule", "fallback_profile", "hold_profile"]

logger = logging.getLogger(__name__)

class ConnectorCensus:
    """Which connectors each configured station has, from everything seen (thread-safe)."""

    def __init__(self, config: CitrineOSConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._seen: set[ConnectorKey] = {k for k in config.connectors if config.group_of(k[0]) is not None}
        self._reported: set[str] = set()

    def see(self, station_id: str, connectors: Iterable[int]) -> bool:
        """Note connectors seen on a station (0 is ignored); True when one is new."""
        if self.config.group_of(station_id) is None:
            return False
        keys = {(station_id, c) for c in connectors if isinstance(c, int) and not isinstance(c, bool) and c > 0}
        with self._lock:
            new = bool(keys - self._seen)
            self._seen |= keys
        if new:
            group = self.config.group_of(station_id)
            for error in self._count(group or "").errors:
                station = error.split(":", 1)[0]
                if station not in self._reported:
                    self._reported.add(station)
                    logger.error("CITRINEOS_CONNECTORS_PER_STATION mismatch: %s", error)
        return new

    def _count(self, group: str) -> ConnectorCount:
        with self._lock:
            seen = set(self._seen)
        return count_connectors(self.config.groups.get(group, ()), seen, override=self.config.connectors_per_station)

    def connectors(self, station_id: str) -> list[int]:
        """The station's connector numbers: those seen, and 1 up to its count."""
        group = self.config.group_of(station_id)
        count = self._count(group).per_station.get(station_id, 1) if group is not None else 1
        with self._lock:
            seen = {c for s, c in self._seen if s == station_id}
        return sorted(seen | set(range(1, count + 1)))

    def count(self, group: str) -> int:
        """Connectors of a group's stations."""
        return sum(len(self.connectors(s)) for s in self.config.groups.get(group, ()))

    def share(self, group: str, station_id: str) -> FallbackShare:
        """The fallback share of one connector of ``station_id`` (in its unit, rounded down)."""
        cfg = self.config
        schedule = cfg.group_limits[group]
        limits = [schedule.constant_kw] if schedule.constant_kw is not None else [kw for _, kw in schedule.steps]
        volts, phases = _station_volts(cfg, station_id)
        unit = cfg.station(station_id).unit or cfg.unit
        return fallback_share(limits, max(self.count(group), 1), unit=unit, voltage=volts, phases=phases)


def _station_volts(config: CitrineOSConfig, station_id: str) -> tuple[float, int]:
    params = config.session_params(station_id, None, None)
    return params.voltage or config.voltage, params.phases or config.phases


def fallback_profile(config: CitrineOSConfig, census: ConnectorCensus, station_id: str,
                     now: datetime) -> ChargingProfile:
    """The station's fallback TxDefaultProfile (absolute from yesterday's midnight, no end).

    Raises:
        ValueError: the station is in no configured group.
    """
    group = config.group_of(station_id)
    if group is None:
        raise ValueError(f"station {station_id!r} is in no configured group")
    _, phases = _station_volts(config, station_id)
    share = census.share(group, station_id)
    unit, limit = share.unit, share.limit
    today = to_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return ChargingProfile(
        charging_profile_id=fallback_id(config.profile_id_base),
        stack_level=config.fallback_stack_level,
        purpose=ChargingProfilePurpose.TX_DEFAULT_PROFILE,
        kind=ChargingProfileKind.ABSOLUTE,
        unit=unit,
        start_schedule=today - timedelta(days=1),
        periods=(ChargingSchedulePeriod(0, limit, phases if unit.value == "A" else None),),
    )


def hold_profile(config: CitrineOSConfig, census: ConnectorCensus, station_id: str, now: datetime,
                 valid_to: datetime) -> ChargingProfile:
    """A zero TxDefaultProfile one stack level above the fallback, valid until ``valid_to``."""
    fallback = fallback_profile(config, census, station_id, now)
    return ChargingProfile(
        charging_profile_id=hold_id(config.profile_id_base),
        stack_level=config.fallback_stack_level + 1,
        purpose=ChargingProfilePurpose.TX_DEFAULT_PROFILE,
        kind=ChargingProfileKind.ABSOLUTE,
        unit=fallback.unit,
        start_schedule=fallback.start_schedule,
        periods=(ChargingSchedulePeriod(0, 0.0, fallback.periods[0].number_phases),),
        valid_to=valid_to,
    )


#: A station whose fallback could not be installed is tried again after this pause (doubling up
#: to :data:`FALLBACK_RETRY_MAX_S`), or at once when it (re)connects or a connector appears.
FALLBACK_RETRY_S = 30.0
FALLBACK_RETRY_MAX_S = 3600.0


@attrs.define
class _Due:
    installed: bool = False
    next_try: float = 0.0
    pause_s: float = FALLBACK_RETRY_S
    reason: str = "not tried yet"


class FallbackSchedule:
    """Which stations need their fallback (re)installed (thread-safe)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._mono = monotonic
        self._lock = threading.Lock()
        self._state: dict[str, _Due] = {}

    def installed(self, station_id: str) -> bool:
        """Whether the station's charger accepted its current fallback."""
        with self._lock:
            state = self._state.get(station_id)
            return state is not None and state.installed

    def known(self, station_id: str) -> bool:
        """Whether the station was ever tried."""
        with self._lock:
            return station_id in self._state

    def reinstall(self, station_id: str) -> None:
        """The station rebooted or its share changed: install again at the next chance."""
        with self._lock:
            state = self._state.setdefault(station_id, _Due())
            state.installed, state.next_try = False, 0.0

    def due(self, stations: Iterable[str]) -> list[str]:
        """Stations lacking their fallback whose retry pause is over."""
        now = self._mono()
        with self._lock:
            return [s for s in dict.fromkeys(stations)
                    if not (state := self._state.setdefault(s, _Due())).installed and state.next_try <= now]

    def done(self, station_id: str, ok: bool, reason: str) -> None:
        """Record an attempt."""
        with self._lock:
            state = self._state.setdefault(station_id, _Due())
            state.reason = reason
            if ok:
                state.installed, state.pause_s = True, FALLBACK_RETRY_S
            else:
                state.next_try = self._mono() + state.pause_s
                state.pause_s = min(state.pause_s * 2, FALLBACK_RETRY_MAX_S)
