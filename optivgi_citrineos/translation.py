"""The CitrineOS 1.8.3 translation: wires the plugin's parts (``docs/citrineos.md``).

- :mod:`~optivgi_citrineos.client`: REST, Hasura and SQL, one retry policy;
- :mod:`~optivgi_citrineos.sessions`: session rows → EVs, bad rows skipped one by one;
- :mod:`~optivgi_citrineos.wire`: request bodies, profile ids, units, reading profiles back;
- :mod:`~optivgi_citrineos.calls`: one call in flight per station, waiting for the charger's answer;
- :mod:`~optivgi_citrineos.fallbacks`: connectors that exist, fallback share, fallback and hold;
- :mod:`~optivgi_citrineos.safety`: the in-force ledger, the planner's budget, safe waves;
- :mod:`~optivgi_citrineos.events`: stopped and started sessions, charging needs, from RabbitMQ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from optivgi.config import mask_url
from optivgi.errors import ConfigurationError
from optivgi.models.ev import EV, ChargingRateUnit, to_utc
from optivgi.models.profile import ChargingProfile
from optivgi.translation import ProfileSpec, SendOutcome, Translation, TriggerFn
from optivgi_citrineos import wire
from optivgi_citrineos.calls import StationCalls
from optivgi_citrineos.client import CitrineOSClient
from optivgi_citrineos.config import CitrineOSConfig, SecretRedactor
from optivgi_citrineos.events import EventBook
from optivgi_citrineos.fallbacks import ConnectorCensus, FallbackSchedule, fallback_profile, hold_profile
from optivgi_citrineos.listener import AmqpEvent, CitrineOSListener, ProfileAnswerTracker
from optivgi_citrineos.needs import ChargingNeedsStore
from optivgi_citrineos.reads import read_connectors, read_profiles_in_force, read_sessions
from optivgi_citrineos.safety import Item, SiteSafety
from optivgi_citrineos.sender import Sender
from optivgi_citrineos.sessions import SessionBook, SessionRow, SessionsRead, delivered_energy_wh
from optivgi_citrineos.wire import ProfileInForce, SiteLimitExceeded, check_request_body

if TYPE_CHECKING:
    import httpx

    from optivgi.config import Settings

__all__ = ["CitrineOSTranslation", "ProfileInForce", "SessionRow", "SiteLimitExceeded", "check_request_body",
           "delivered_energy_wh"]

logger = logging.getLogger(__name__)

#: Removes configured secrets from every log line of the plugin (see :class:`SecretRedactor`).
REDACTOR = SecretRedactor()
logging.getLogger("optivgi_citrineos").addFilter(REDACTOR)
for _name in ("translation", "listener", "needs", "client", "calls", "sessions", "safety", "events", "fallbacks"):
    logging.getLogger(f"optivgi_citrineos.{_name}").addFilter(REDACTOR)


class CitrineOSTranslation(Translation):
    """Connects opti-vgi to CitrineOS 1.8.3 (see the module documentation and ``docs/citrineos.md``).

    Args:
        config: validated configuration (:meth:`from_settings` builds it).
        client: an ``httpx.Client`` to use (not closed by :meth:`teardown`).
        clock: returns "now" (UTC); injectable for tests.
    """

    counts_in_force = True  # the ledger reserves what is unconfirmed; the safe waves order the sends

    def __init__(self, config: CitrineOSConfig, *, client: httpx.Client | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self.client = CitrineOSClient(config, http=client)
        self._tracker = ProfileAnswerTracker()
        self._listener: CitrineOSListener | None = None
        self._trigger: TriggerFn | None = None
        self._lock = threading.Lock()
        self.calls = StationCalls(self.client, self._tracker, lambda: self._listener)
        self.census = ConnectorCensus(config)
        self.fallbacks = FallbackSchedule()
        self.safety = SiteSafety(config, self.census)
        self.sender = Sender(config, self.census, self.fallbacks, self.safety, self.calls, self._now)
        self._needs = ChargingNeedsStore()
        self.book = SessionBook(config, self._needs)
        self.events = EventBook(self._needs, self._clock, self._seen_connector, self._station_changed)
        self._reads: dict[str, SessionsRead] = {}
        #: Why each EV got its last outcome (``ev_id`` → reason), for logs and callers.
        self.last_reasons: dict[str, str] = {}
        #: Profiles CitrineOS recorded as active when :meth:`setup` read them back, per station.
        self.profiles_in_force: dict[str, list[ProfileInForce]] = {}
        REDACTOR.add(config.secrets)

    @classmethod
    def from_settings(cls, settings: Settings, *, client: httpx.Client | None = None) -> Self:
        """Build from settings; raises ConfigurationError naming the first bad variable."""
        return cls(CitrineOSConfig.from_settings(settings), client=client)

    def describe(self) -> dict[str, Any]:
        return self.config.describe()  # endpoints and groups, secrets masked

    def _now(self) -> datetime:
        return to_utc(self._clock())

    @property
    def stations(self) -> list[str]:
        """Every configured station."""
        return [s for group in self.config.groups.values() for s in group]

    def setup(self) -> None:
        """Start the listener, learn the connectors, count every connector unknown (a restart) and
        install the fallback profile on every reachable station."""
        self.client.http()
        self._ensure_listener()
        self.read_profiles_in_force()
        read_connectors(self.client, self.census, self.stations)
        now = self._now()
        self.safety.sync_connectors(self.stations, now)
        self.safety.restart(now)
        for group, members in self.config.groups.items():
            if members and (warning := self.census.share(group, members[0]).warning):
                logger.warning("group %s: %s", group, warning)
        if self.config.fallback:
            self.ensure_fallbacks(self.stations, deadline=time.monotonic() + self.config.retry_budget_s)

    def teardown(self) -> None:
        """Stop the listener and close the clients this translation created."""
        self.events.stop()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self.client.close()

    def attach(self, trigger: TriggerFn) -> None:
        """Call ``trigger(reason)`` on each charging event seen on RabbitMQ (needs ``AMQP_URL``)."""
        self._trigger = self.events.trigger = trigger
        listener = self._ensure_listener()
        if listener is None:
            logger.warning("AMQP_URL is not set: no charging events will trigger cycles")
        else:
            listener.set_trigger(trigger)

    @property
    def listener(self) -> CitrineOSListener | None:
        """The RabbitMQ listener, once started."""
        return self._listener

    @property
    def charging_needs(self) -> ChargingNeedsStore:
        """The OCPP 2.0.1 charging needs kept per (station, EVSE) from RabbitMQ."""
        return self._needs

    def _ensure_listener(self) -> CitrineOSListener | None:
        if self.config.amqp_url is None:
            return None
        with self._lock:
            listener, created = self._listener, self._listener is None
            if listener is None:
                tls = self.config.amqp_tls
                listener = self._listener = CitrineOSListener(
                    self.config.amqp_url, exchange=self.config.exchange, trigger=self._trigger,
                    handlers=(self._tracker.feed, self._on_event), accept=self._accepts,
                    ssl_context=tls.context() if tls.configured else None)
                listener.start()
        if created and not listener.wait_ready(self.config.http_timeout_s):
            logger.warning("RabbitMQ at %s is not reachable yet; the listener keeps retrying",
                           mask_url(self.config.amqp_url))
        return listener

    def _accepts(self, event: AmqpEvent) -> bool:
        """Only this tenant's configured stations matter (the exchange carries every station)."""
        return event.tenant_id == str(self.config.tenant_id) and self.config.group_of(event.station_id) is not None

    def _on_event(self, event: AmqpEvent) -> None:
        if event.origin == "cs" and self.fallbacks.known(event.station_id) and not self.fallbacks.installed(
                event.station_id):
            self.fallbacks.reinstall(event.station_id)  # it is online: try its fallback at once
        self.events.feed(event)

    def _seen_connector(self, station: str, connector: int) -> bool:
        return self.census.see(station, [connector])

    def _station_changed(self, station: str, rebooted: bool) -> None:
        """A station booted (it may have lost its profiles) or showed a new connector (the share
        of its whole group changes): its group's fallbacks are installed again first."""
        group = self.config.group_of(station)
        for s in [station] if rebooted or group is None else self.config.groups[group]:
            self.fallbacks.reinstall(s)

    # -- reading -----------------------------------------------------------------------------
    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        """Active sessions of the group; bad rows are skipped one by one (their connector counts at
        its worst case). Raises CSMSConnectionError / CSMSResponseError when the read fails."""
        stations = self.config.groups.get(group_name)
        if stations is None:
            logger.warning("unknown station group %r (configured: %s)", group_name, ", ".join(self.config.groups))
            return [], self.config.voltage
        rows = read_sessions(self.client, self.book, stations, time.monotonic() + self.config.retry_budget_s)
        self.book.strangers(rows)
        now = self._now()
        keys = {(r.station_id, r.transaction_id) for r in rows}
        self._needs.prune(set(stations), keys)
        read = self.book.read(rows, stations, now, self.events.ended(keys))
        for station in stations:
            if self.census.see(station, [c for s, c in read.connectors if s == station]):
                self._station_changed(station, False)
        self.safety.sync_connectors(stations, now)
        self.safety.note_read(stations, read, now)
        self.ensure_fallbacks(stations, deadline=time.monotonic() + self.config.retry_budget_s)
        self.sender.place_holds(group_name, time.monotonic() + self.config.retry_budget_s, renew=False)  # departures
        self.events.after_read(stations, read.connectors)
        previous, self._reads[group_name] = self._reads.get(group_name), read
        # Per-session state ends with the session (memory stays flat over a day of churn).
        gone = {str(ev.ev_id) for ev in previous.evs} - {str(ev.ev_id) for ev in read.evs} if previous else set()
        self.last_reasons = {k: v for k, v in self.last_reasons.items() if k not in gone}
        planned = set(self.safety.planned_keys(read))
        return [ev for ev in read.evs if (str(ev.station_id), ev.connector_id) in planned], self.config.voltage

    def get_peak_power_demand(self, group_name: str, now: datetime, voltage: float | None = None) -> list[float]:
        """Per planning step, the group's limit minus the worst case of every connector not planned."""
        if group_name not in self.config.group_limits:
            raise ConfigurationError(f"SITE_POWER_LIMIT_KW: no limit for unknown group {group_name!r}")
        read = self._reads.get(group_name, SessionsRead([], []))
        n_steps = max(self.config.horizon_s // self.config.resolution_s, 1)
        return self.safety.budget_kw(group_name, self.safety.planned_keys(read), to_utc(now), n_steps)

    def profile_spec(self, ev: EV) -> ProfileSpec:
        """The station's unit, the connector's profile id, the stack level and period count."""
        station = self.config.station(str(ev.station_id))
        return ProfileSpec(unit=station.unit or self.config.unit, stack_level=self.config.stack_level,
                           charging_profile_id=wire.tx_profile_id(self.config.profile_id_base, ev.connector_id),
                           max_periods=station.max_periods)

    # -- sending -----------------------------------------------------------------------------
    def _volts(self, ev: EV) -> float:
        return float(ev.voltage) if ev.voltage is not None else self.config.voltage

    def check_site_limit(self, group: str, profiles: Sequence[tuple[EV, ChargingProfile]]) -> None:
        """Raise :class:`~.wire.SiteLimitExceeded` when the profiles together allow more than the limit."""
        wire.check_site_limit(group, self.config.group_limits[group].at,
                         [wire.profile_kw_steps(p, self._volts(ev), ev.phases) for ev, p in profiles])

    def _prepare(self, ev: EV, profile: ChargingProfile) -> Item:
        return self.sender.prepare(ev, profile)

    def send_power_to_evs(self, powers: Mapping[EV, ChargingProfile],
                          unit: ChargingRateUnit | None = None) -> Mapping[str, SendOutcome]:
        """Send each EV its profile, in safe waves with the group's holds (see :mod:`.safety`).

        APPLIED: the charger accepted; REJECTED: CitrineOS or the charger refused; UNANSWERED: no
        answer within ``CITRINEOS_ANSWER_TIMEOUT_S``; FAILED: refused here, not sent (no room
        confirmed, station busy) or CitrineOS unreachable. Reasons are kept in :attr:`last_reasons`.
        """
        results: dict[str, tuple[SendOutcome, str]] = {}
        by_group: dict[str, list[tuple[EV, Item]]] = {}
        for ev, profile in powers.items():
            try:
                item = self.sender.prepare(ev, profile)
                by_group.setdefault(self.config.group_of(item.station_id) or "", []).append((ev, item))
            except (ValueError, TypeError, KeyError) as exc:
                results[str(ev.ev_id)] = (SendOutcome.FAILED, f"not sent: {exc}")
        deadline = time.monotonic() + self.config.retry_budget_s
        for group, pairs in by_group.items():
            try:
                self.check_site_limit(group, [(ev, i.profile) for ev, i in pairs])
            except SiteLimitExceeded as exc:
                logger.error("refusing to send %d profile(s): %s", len(pairs), exc)
                results.update({i.label: (SendOutcome.FAILED, f"not sent: {exc}") for _, i in pairs})
                continue
            results.update(self.sender.send_group(group, [i for _, i in pairs], deadline))
            now = self._now()
            for _, item in pairs:
                self.safety.outcome_of((item.station_id, item.connector), results[item.label][0], now)
        for ev_id, (outcome, reason) in results.items():
            level = logging.INFO if outcome is SendOutcome.APPLIED else logging.WARNING
            logger.log(level, "profile for %s: %s (%s)", ev_id, outcome.value, reason)
        self.last_reasons.update({k: r for k, (_, r) in results.items()})
        return {k: o for k, (o, _) in results.items()}

    # -- fail-safe ---------------------------------------------------------------------------
    def fallback_profile(self, station_id: str) -> tuple[ChargingProfile, dict[str, Any]]:
        """The station's site-safe fallback TxDefaultProfile and its request body."""
        profile = fallback_profile(self.config, self.census, station_id, self._now())
        return profile, wire.envelope(self.config.station(station_id).ocpp, 0, profile)

    def hold_profile(self, station_id: str, valid_to: datetime) -> tuple[ChargingProfile, dict[str, Any]]:
        """The station's zero hold TxDefaultProfile until ``valid_to`` and its request body."""
        profile = hold_profile(self.config, self.census, station_id, self._now(), valid_to)
        return profile, wire.envelope(self.config.station(station_id).ocpp, 0, profile)

    def fallback_installed(self, station_id: str) -> bool:
        """Whether the station's charger accepted its current fallback profile."""
        return self.fallbacks.installed(station_id)

    def ensure_fallbacks(self, stations: Sequence[str], *, deadline: float) -> dict[str, SendOutcome]:
        """(Re)install the fallback, through the safe waves, on each of ``stations`` that is due."""
        return self.sender.ensure_fallbacks(stations, deadline=deadline)

    def read_profiles_in_force(self) -> dict[str, list[ProfileInForce]]:
        """Log the profiles CitrineOS records as active (:func:`~.reads.read_profiles_in_force`)."""
        self.profiles_in_force = read_profiles_in_force(self.client, self.stations, self._now())
        return self.profiles_in_force
