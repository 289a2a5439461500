"""Every send of a cycle in its order: fallbacks that are due, then renewed holds with the
TxProfiles, then holds that became safe — each batch through the safe waves of :mod:`.safety`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from optivgi.models.ev import EV
from optivgi.models.profile import ChargingProfile
from optivgi.translation import SendOutcome
from optivgi_citrineos.calls import StationCalls
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.fallbacks import ConnectorCensus, FallbackSchedule, fallback_profile, hold_profile
from optivgi_citrineos.safety import Item, SiteSafety
from optivgi_citrineos.wire import envelope, tx_profile_id

__all__ = ["Sender"]

logger = logging.getLogger(__name__)


class Sender:
    """Sends a group's profiles, holds and fallbacks (see the module documentation)."""

    def __init__(self, config: CitrineOSConfig, census: ConnectorCensus, fallbacks: FallbackSchedule,
                 safety: SiteSafety, calls: StationCalls, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.census = census
        self.fallbacks = fallbacks
        self.safety = safety
        self.calls = calls
        self._now = clock

    def _call(self, deadline: float) -> Callable[[str, str | None, Mapping[str, Any]], tuple[SendOutcome, str]]:
        return lambda station, ocpp, body: self.calls.call(station, ocpp, body, deadline)

    def station_item(self, label: str, station: str, profile: ChargingProfile) -> Item:
        """An item for connector 0 of ``station`` (a fallback or a hold)."""
        params = self.config.session_params(station, None, None)
        return Item(label, station, self.config.station(station).ocpp, 0, profile,
                    params.voltage or self.config.voltage, params.phases or self.config.phases)

    def holds(self, stations: Sequence[str], now: datetime) -> list[Item]:
        """Hold items for ``stations`` that have their fallback, valid one profile validity."""
        if self.config.profile_validity_s <= 0 or not self.config.fallback:
            return []
        until = now + timedelta(seconds=self.config.profile_validity_s)
        return [self.station_item(f"hold:{s}", s, hold_profile(self.config, self.census, s, now, until))
                for s in stations if self.fallbacks.installed(s)]

    def prepare(self, ev: EV, profile: ChargingProfile) -> Item:
        """The item to send: the loop's profile with our id and level, ``validTo`` one validity ahead
        and never past the station's hold in force."""
        station = str(ev.station_id)
        if self.config.group_of(station) is None:
            raise ValueError(f"station {station!r} is in no configured group, so its site limit is unknown")
        valid_to = self._valid_to(station, profile.valid_to)
        tx = profile.transaction_id if profile.transaction_id is not None else ev.transaction_id
        profile = attrs.evolve(profile, charging_profile_id=tx_profile_id(self.config.profile_id_base,
                               ev.connector_id), stack_level=self.config.stack_level, transaction_id=tx,
                               valid_to=valid_to)
        ocpp = self.config.station(station).ocpp
        envelope(ocpp, ev.connector_id, profile)  # checked before anything is sent
        volts = float(ev.voltage) if ev.voltage is not None else self.config.voltage
        return Item(str(ev.ev_id), station, ocpp, ev.connector_id, profile, volts, ev.phases)

    def _valid_to(self, station: str, wanted: datetime | None) -> datetime | None:
        """One validity from now, never past the station's hold in force (nor ``wanted``)."""
        if self.config.profile_validity_s <= 0:
            return wanted
        now = self._now()
        lapse = now + timedelta(seconds=self.config.profile_validity_s)
        hold = self.safety.hold_cap(station, now)
        lapse = min(lapse, hold) if hold is not None else lapse
        return lapse if wanted is None else min(wanted, lapse)

    def send_group(self, group: str, items: Sequence[Item], deadline: float) -> dict[str, tuple[SendOutcome, str]]:
        """Fallbacks due first, then ``items``, then the holds (renewed, or placed where they became safe)."""
        stations = self.config.groups[group]
        if self.config.fallback:
            self.ensure_fallbacks(stations, deadline=deadline)
        now = self._now()
        results = self.safety.send(group, items, self._call(deadline), now, self._now)
        self.place_holds(group, deadline)
        return results

    def place_holds(self, group: str, deadline: float, *, renew: bool = True) -> None:
        """Hold the idle connectors of every station of ``group`` whose cars all run an accepted
        TxProfile (so a hold stops no car): placed where none is in force, and (``renew``) renewed
        at half their validity; the next TxProfiles there end with them."""
        now = self._now()
        half = timedelta(seconds=self.config.profile_validity_s / 2)
        wanted = [s for s in self.config.groups[group] if self.fallbacks.installed(s)
                  and self.safety.hold_wanted(s, now)
                  and ((h := self.safety.hold_until(s, now)) is None or (renew and h - now < half))]
        for label, (outcome, reason) in self.safety.send(group, self.holds(wanted, now), self._call(deadline), now,
                                                         self._now).items():
            if outcome is not SendOutcome.APPLIED:
                logger.warning("hold profile not placed on %s (%s): %s", label[5:], outcome.value, reason)

    def ensure_fallbacks(self, stations: Sequence[str], *, deadline: float) -> dict[str, SendOutcome]:
        """(Re)install the fallback on each of ``stations`` that is due; outcome per station tried."""
        if not self.config.fallback:
            return {}
        results: dict[str, SendOutcome] = {}
        now = self._now()
        by_group: dict[str, list[Item]] = {}
        for station in self.fallbacks.due(stations):
            group = self.config.group_of(station)
            if group is None:
                self.fallbacks.done(station, False, "in no configured group")
                continue
            by_group.setdefault(group, []).append(self.station_item(
                f"fallback:{station}", station, fallback_profile(self.config, self.census, station, now)))
        for group, items in by_group.items():
            self.safety.sync_connectors([i.station_id for i in items], now)
            sent = self.safety.send(group, items, self._call(deadline), now, self._now)
            for label, (outcome, reason) in sent.items():
                station = label.split(":", 1)[1]
                results[station] = outcome
                self.fallbacks.done(station, outcome is SendOutcome.APPLIED, reason)
                if outcome is SendOutcome.APPLIED:
                    self.safety.fallback_accepted(station)
                    logger.info("fallback profile installed on %s: %s", station, reason)
                else:
                    logger.warning("fallback profile not installed on %s (%s): %s", station, outcome.value, reason)
        return results
