"""The CitrineOS 1.8.3 translation: sessions from its database, profiles through its REST API.

What CitrineOS 1.8.3 does and how this module answers it (details and sources in
``docs/citrineos-contract.md``):

- No REST endpoint lists sessions, so active transactions are read through Hasura GraphQL
  (``HASURA_URL``) or plain SQL (``CITRINEOS_DB_DSN``) over CitrineOS's tables
  (:mod:`optivgi_citrineos.queries`). A session is ``(stationId, transactionId)``: OCPP 1.6
  transaction ids repeat across stations. The OCPP connector number comes from the ``Connector``
  relationship (``Transactions.connectorId`` is a database id) and the delivered energy from the
  latest ``Energy.Active.Import.Register`` minus ``meterStart`` (``totalKwh`` is wrong while active).
- ``POST /ocpp/1.6/smartcharging/setChargingProfile`` answers ``[{"success": true}]`` when the call
  is only *queued*; the charger's answer comes on RabbitMQ with the ``correlationId`` of the
  request CitrineOS published, which :class:`~optivgi_citrineos.listener.ProfileAnswerTracker`
  matches by station and profile fingerprint. A CALLERROR never reaches RabbitMQ: it ends as
  UNANSWERED after ``CITRINEOS_ANSWER_TIMEOUT_S``.
- CitrineOS holds one outstanding call per station, so one station's profiles are sent one after
  another, each waiting for its answer; different stations are sent in parallel.
- CitrineOS validates ``multipleOf: 0.1`` in binary floating point and lets negative limits and
  float start periods through, so every period is checked here before sending, and the summed
  limits of a group are checked against its site limit at every period boundary.

Fail-safe (``docs/citrineos.md``, "Fail-safe"): every station gets a fallback TxDefaultProfile
(connector 0, a low stack level) that shares the site limit among all configured connectors, and
the optimizer's TxProfiles carry a ``validTo`` a few intervals ahead, so a dead optimizer leaves
the chargers on the safe share. CSMS calls are retried with exponential backoff and jitter within
a per-cycle budget; secrets never reach a log line or an exception message.

OCPP 2.0.1 charging needs (``docs/citrineos.md``, "What each session needs"): the latest
NotifyEVChargingNeeds of each (station, EVSE) seen on RabbitMQ overrides the configured departure,
energy and power limits of the session on that connector, never above a configured maximum.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

import attrs

from optivgi.config import mask_url
from optivgi.errors import ConfigurationError, CSMSConnectionError, CSMSResponseError
from optivgi.models.ev import EV, ChargingRateUnit, to_utc
from optivgi.models.profile import (
    ChargingProfile,
    ChargingProfileKind,
    ChargingProfilePurpose,
    ChargingSchedulePeriod,
    round_down_tenth,
)
from optivgi.translation import SendOutcome, Translation, TriggerFn
from optivgi_citrineos import queries
from optivgi_citrineos.config import CitrineOSConfig, SecretRedactor, redact
from optivgi_citrineos.listener import AmqpEvent, CitrineOSListener, ProfileAnswerTracker
from optivgi_citrineos.needs import ChargingNeeds, ChargingNeedsStore, parse_charging_needs
from optivgi_citrineos.sitefile import OCPP16, SessionParams, resolve_after, resolve_before

if TYPE_CHECKING:
    import httpx

    from optivgi.config import Settings

__all__ = [
    "CitrineOSTranslation",
    "ProfileInForce",
    "SessionRow",
    "SiteLimitExceeded",
    "check_request_body",
    "delivered_energy_wh",
]

logger = logging.getLogger(__name__)

#: Removes configured secrets from every log line of the plugin (see :class:`SecretRedactor`).
REDACTOR = SecretRedactor()
logger.addFilter(REDACTOR)
logging.getLogger("optivgi_citrineos.listener").addFilter(REDACTOR)
logging.getLogger("optivgi_citrineos.needs").addFilter(REDACTOR)

# A station whose fallback could not be installed is tried again after this pause (doubling up to
# an hour), or at once when RabbitMQ shows it (re)connecting.
_FALLBACK_RETRY_S = 30.0
_FALLBACK_RETRY_MAX_S = 3600.0

#: Connector statuses for which an active transaction is not planned (ending, or stale data).
SKIPPED_STATUSES = frozenset({"Available", "Finishing", "Unavailable", "Faulted"})

# A session a StopTransaction/TransactionEvent Ended announced is hidden this long at most, in
# case the database never marks it inactive (e.g. the stop was rejected).
_ENDED_TTL_S = 600.0


class SiteLimitExceeded(ValueError):
    """The profiles of a group would together allow more than the group's site limit."""


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


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    return to_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


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
    reset) gives 0.
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
        rank = 0 if sv.get("phase") in (None, "") else 1  # the total beats a per-phase register
        if best is None or rank < best[0]:
            best = (rank, wh)
    if best is None:
        return None
    return max(best[1] - meter_start_wh, 0.0)


def check_request_body(body: Mapping[str, Any]) -> None:
    """Check what CitrineOS would forward unchecked; raise ValueError naming the first bad field.

    Every ``limit`` must be a number >= 0 that is a valid tenth (``round_down_tenth(x) == x``),
    every ``startPeriod`` an integer (not ``60.0``), the first 0 and the rest increasing.
    """
    if "csChargingProfiles" in body:
        schedules = [body["csChargingProfiles"].get("chargingSchedule")]
        where = "csChargingProfiles.chargingSchedule"
    else:
        schedules = list(body["chargingProfile"].get("chargingSchedule") or [])
        where = "chargingProfile.chargingSchedule"
    if not schedules:
        raise ValueError(f"{where} is missing")
    for s_index, schedule in enumerate(schedules):
        periods = schedule.get("chargingSchedulePeriod") if isinstance(schedule, Mapping) else None
        if not periods:
            raise ValueError(f"{where}[{s_index}].chargingSchedulePeriod must hold at least one period")
        previous = -1
        for i, period in enumerate(periods):
            here = f"{where}[{s_index}].chargingSchedulePeriod[{i}]"
            start, limit = period.get("startPeriod"), period.get("limit")
            if isinstance(start, bool) or not isinstance(start, int):
                raise ValueError(f"{here}.startPeriod must be an integer, got {start!r}")
            if (i == 0 and start != 0) or start <= previous:
                raise ValueError(f"{here}.startPeriod must start at 0 and increase, got {start!r}")
            previous = start
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
                raise ValueError(f"{here}.limit must be a finite number, got {limit!r}")
            if limit < 0:
                raise ValueError(f"{here}.limit must be >= 0, got {limit!r}")
            if round_down_tenth(float(limit)) != limit:
                raise ValueError(f"{here}.limit must be a multiple of 0.1 that CitrineOS accepts, got {limit!r}")
            phases = period.get("numberPhases")
            if phases is not None and phases not in (1, 2, 3):
                raise ValueError(f"{here}.numberPhases must be 1, 2 or 3, got {phases!r}")


@attrs.frozen
class ProfileInForce:
    """One charging profile CitrineOS records as active for a station (``ChargingProfiles`` row).

    Attributes:
        station_id: the station.
        connector_id: OCPP connector (1.6) / EVSE (2.0.1) number; 0 = the whole station.
        profile_id: chargingProfileId.
        purpose: chargingProfilePurpose.
        stack_level: stackLevel.
        unit: ``A`` or ``W`` (None when the row has no schedule).
        limit: the limit in force now, in ``unit`` (None when unknown).
    """

    station_id: str
    connector_id: int
    profile_id: int
    purpose: str
    stack_level: int
    unit: str | None
    limit: float | None

    def describe(self) -> str:
        """A short text for logs."""
        limit = "?" if self.limit is None else f"{self.limit:g} {self.unit}"
        return f"#{self.connector_id} {self.purpose} id {self.profile_id} level {self.stack_level}: {limit}"


class _GaveUp(Exception):
    """A CSMS call failed on every attempt within the budget."""

    def __init__(self, reason: str, *, connection: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection = connection


@attrs.define
class _FallbackState:
    """Whether a station's fallback profile is installed, and when to try again if not."""

    installed: bool = False
    next_try: float = 0.0
    pause_s: float = _FALLBACK_RETRY_S
    reason: str = "not tried yet"


@attrs.define
class _Send:
    """One EV's profile on its way to CitrineOS."""

    ev: EV
    ev_id: str
    station_id: str
    group: str
    ocpp: str
    profile: ChargingProfile
    body: dict[str, Any]


class CitrineOSTranslation(Translation):
    """Connects opti-vgi to CitrineOS 1.8.3 (see the module documentation and ``docs/citrineos.md``).

    Args:
        config: validated configuration (:meth:`from_settings` builds it).
        client: an ``httpx.Client`` to use (not closed by :meth:`teardown`); by default one is
            created and owned.
        clock: returns "now" (UTC); injectable for tests.
    """

    def __init__(
        self,
        config: CitrineOSConfig,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self._owns_client = client is None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tracker = ProfileAnswerTracker()
        self._listener: CitrineOSListener | None = None
        self._trigger: TriggerFn | None = None
        self._lock = threading.Lock()
        self._ended: dict[tuple[str, str], float] = {}
        #: Why each EV got its last outcome (``ev_id`` → reason), for logs and callers.
        self.last_reasons: dict[str, str] = {}
        self._fallbacks: dict[str, _FallbackState] = {}
        # Until when each station's zero "hold" default profile is known to be in force; a
        # TxProfile's validTo never goes past it.
        self._hold_until: dict[str, datetime] = {}
        # Limit [kW] last known in force per (station, connector): read back at start, then
        # updated with every applied profile. Decides which profiles are reductions.
        self._known_kw: dict[tuple[str, int], float] = {}
        # The transaction each known limit was confirmed for (None: read back, transaction unknown);
        # a new session on the connector starts from scratch.
        self._known_tx: dict[tuple[str, int], str | None] = {}
        #: Profiles CitrineOS recorded as active when :meth:`setup` read them back, per station.
        self.profiles_in_force: dict[str, list[ProfileInForce]] = {}
        self._cycle_deadline: float | None = None
        # The latest OCPP 2.0.1 charging needs per (station, EVSE), fed from RabbitMQ.
        self._needs = ChargingNeedsStore()
        REDACTOR.add(config.secrets)

    # -- construction and life cycle ---------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, *, client: httpx.Client | None = None) -> Self:
        """Build from settings; raises ConfigurationError naming the first bad variable."""
        return cls(CitrineOSConfig.from_settings(settings), client=client)

    def describe(self) -> dict[str, Any]:
        """Endpoints and groups, secrets masked."""
        return self.config.describe()

    def setup(self) -> None:
        """Create the HTTP client, start the RabbitMQ listener (when ``AMQP_URL`` is set), read
        back the profiles in force and install the fallback profile on every reachable station."""
        self._http()
        self._ensure_listener()
        self.read_profiles_in_force()
        if self.config.fallback:
            stations = [s for group in self.config.groups.values() for s in group]
            self.ensure_fallbacks(stations, deadline=time.monotonic() + self.config.retry_budget_s)

    def teardown(self) -> None:
        """Stop the listener and close the HTTP client this translation created."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def attach(self, trigger: TriggerFn) -> None:
        """Call ``trigger(reason)`` on each charging event seen on RabbitMQ (needs ``AMQP_URL``)."""
        self._trigger = trigger
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

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            cfg = self.config
            headers: dict[str, str] = {}
            auth: httpx.Auth | None = None
            if cfg.api_token:
                headers["Authorization"] = f"Bearer {cfg.api_token}"
            elif cfg.api_user:
                auth = httpx.BasicAuth(cfg.api_user, cfg.api_password or "")
            # The same client reads Hasura: the CA bundle and client certificate apply to both.
            verify: Any = cfg.api_tls.context() if cfg.api_tls.configured else True
            self._client = httpx.Client(timeout=cfg.http_timeout_s, headers=headers, auth=auth, verify=verify)
            self._owns_client = True
        return self._client

    def _redact(self, text: str) -> str:
        return redact(text, self.config.secrets)

    def _post(
        self,
        what: str,
        url: str,
        body: Any,
        *,
        deadline: float,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, Any]:
        """POST with retries; returns the response and its decoded JSON (None if not JSON).

        Timeouts, refused connections, 5xx answers and a 200 whose body is not JSON are retried
        with exponential backoff and jitter while ``deadline`` (``time.monotonic()``) allows; the
        first attempt is always made. Other answers (4xx) are returned at once. Raises
        :class:`_GaveUp` with a secret-free reason after the last attempt.
        """
        import httpx

        cfg = self.config
        delay = cfg.retry_initial_s
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            timeout = cfg.http_timeout_s
            if attempt > 1:
                timeout = max(min(timeout, deadline - time.monotonic()), 0.05)
            connection = True
            try:
                resp = self._http().post(url, params=params, json=body, headers=headers, timeout=timeout)
            except httpx.TimeoutException:
                problem = f"{what} did not answer within {timeout:g} s"
            except httpx.HTTPError as exc:
                problem = f"{what} at {mask_url(url)} unreachable: {type(exc).__name__}"
            else:
                connection = False
                if resp.status_code >= 500:
                    problem = f"{what} answered HTTP {resp.status_code}: {resp.text[:200]}"
                else:
                    try:
                        return resp, resp.json()
                    except ValueError:
                        if resp.status_code != 200:
                            return resp, None
                        problem = f"{what} answered with a body that is not JSON: {resp.text[:80]!r}"
            problem = self._redact(problem)
            pause = random.uniform(delay / 2, delay)
            if time.monotonic() + pause >= deadline:
                if attempt > 1:
                    problem += f" (gave up after {attempt} attempts in {time.monotonic() - started:.1f} s)"
                raise _GaveUp(problem, connection=connection)
            logger.warning("%s; retry %d in %.2f s", problem, attempt, pause)
            time.sleep(pause)
            delay = min(delay * 2, cfg.retry_max_s)

    def _begin_cycle(self) -> float:
        """Start the retry budget of a cycle (its first call is :meth:`get_evs`)."""
        self._cycle_deadline = time.monotonic() + self.config.retry_budget_s
        return self._cycle_deadline

    def _take_deadline(self) -> float:
        """The current cycle's retry deadline (used up by the send), or a fresh budget."""
        deadline, self._cycle_deadline = self._cycle_deadline, None
        return deadline if deadline is not None else time.monotonic() + self.config.retry_budget_s

    def _ensure_listener(self) -> CitrineOSListener | None:
        if self.config.amqp_url is None:
            return None
        with self._lock:
            listener = self._listener
            created = listener is None
            if listener is None:
                tls = self.config.amqp_tls
                listener = self._listener = CitrineOSListener(
                    self.config.amqp_url,
                    exchange=self.config.exchange,
                    trigger=self._trigger,
                    handlers=(self._tracker.feed, self._on_event),
                    accept=self._accepts,
                    ssl_context=tls.context() if tls.configured else None,
                )
                listener.start()
        # Only the first call waits for the broker; later ones must not stall a cycle while it reconnects.
        if created and not listener.wait_ready(self.config.http_timeout_s):
            logger.warning(
                "RabbitMQ at %s is not reachable yet; the listener keeps retrying",
                mask_url(self.config.amqp_url),
            )
        return listener

    def _accepts(self, event: AmqpEvent) -> bool:
        """Only this tenant's configured stations matter (the exchange carries every station)."""
        return event.tenant_id == str(self.config.tenant_id) and self.config.group_of(event.station_id) is not None

    def _on_event(self, event: AmqpEvent) -> None:
        """Hide a session as soon as RabbitMQ says it stopped, before the database does (and drop
        its charging needs); keep each EVSE's latest charging needs; note a station seen for the
        first time (or rebooted) so the next cycle installs its fallback."""
        if event.origin != "cs" or event.state != 1 or not isinstance(event.payload, Mapping):
            return
        if self.config.fallback:
            with self._lock:
                state = self._fallbacks.setdefault(event.station_id, _FallbackState())
                if event.action == "BootNotification":
                    # A charger that rebooted may have lost its profiles.
                    state.installed = False
                    self._hold_until.pop(event.station_id, None)
                if not state.installed:
                    state.next_try = 0.0
        if event.action == "NotifyEVChargingNeeds":
            self._on_charging_needs(event)
            return
        tx: Any = None
        evse: Any = None
        if event.action == "StopTransaction":
            tx = event.payload.get("transactionId")
        elif event.action == "TransactionEvent" and event.payload.get("eventType") == "Ended":
            tx = (event.payload.get("transactionInfo") or {}).get("transactionId")
            evse = (event.payload.get("evse") or {}).get("id")
        if tx is not None:
            with self._lock:
                self._ended[(event.station_id, str(tx))] = time.monotonic()
            valid_evse = evse if isinstance(evse, int) and not isinstance(evse, bool) else None
            dropped = self._needs.transaction_ended(event.station_id, str(tx), valid_evse)
            if dropped:
                logger.info(
                    "charging needs of %s EVSE %s dropped: transaction %s ended",
                    event.station_id,
                    ", ".join(map(str, dropped)),
                    tx,
                )

    def _on_charging_needs(self, event: AmqpEvent) -> None:
        """Keep a NotifyEVChargingNeeds; invalid fields are logged and left out, never raised."""
        parsed = parse_charging_needs(event.payload, to_utc(self._clock()))
        evse = event.payload.get("evseId") if isinstance(event.payload, Mapping) else None
        for problem in parsed.problems:
            logger.warning(
                "NotifyEVChargingNeeds from %s EVSE %s: ignoring invalid value: %s", event.station_id, evse, problem
            )
        if parsed.needs is None:
            logger.warning("NotifyEVChargingNeeds from %s EVSE %s ignored: nothing usable", event.station_id, evse)
            return
        self._needs.update(event.station_id, parsed.needs)
        logger.info("charging needs of %s EVSE %d: %s", event.station_id, parsed.needs.evse_id, parsed.needs)

    # -- reading sessions --------------------------------------------------------------------
    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        """Active sessions of the group's stations; rows that cannot be understood are logged and skipped.

        Raises:
            CSMSConnectionError: Hasura/PostgreSQL could not be reached.
            CSMSResponseError: it answered with an error.
        """
        stations = self.config.groups.get(group_name)
        if stations is None:
            logger.warning("unknown station group %r (configured: %s)", group_name, ", ".join(self.config.groups))
            return [], self.config.voltage
        deadline = self._begin_cycle()
        if self.config.fallback:
            self.ensure_fallbacks(stations, deadline=deadline)
        rows = self._read_sessions(stations, deadline)
        now = to_utc(self._clock())
        active_keys = {(r.station_id, r.transaction_id) for r in rows}
        self._needs.prune(set(stations), active_keys)
        with self._lock:
            cutoff = time.monotonic() - _ENDED_TTL_S
            self._ended = {k: t for k, t in self._ended.items() if t >= cutoff and k in active_keys}
            ended = set(self._ended)
        evs: list[EV] = []
        seen: set[tuple[str, str]] = set()
        for row in rows:
            key = (row.station_id, row.transaction_id)
            if row.station_id not in stations:
                logger.debug("session %s:%s skipped: station not in group %r", *key, group_name)
                continue
            if key in seen:
                logger.warning("session %s:%s listed twice; the second row is skipped", *key)
                continue
            seen.add(key)
            if key in ended:
                logger.info("session %s:%s skipped: stopped (seen on RabbitMQ)", *key)
                continue
            if row.connector_status in SKIPPED_STATUSES:
                logger.info("session %s:%s skipped: connector status %s", *key, row.connector_status)
                continue
            try:
                evs.append(self._build_ev(row, now))
            except (ValueError, TypeError, KeyError) as exc:
                logger.warning("session %s:%s skipped: %s", *key, exc)
        logger.debug("group %r: %d active session(s)", group_name, len(evs))
        return evs, self.config.voltage

    def _build_ev(self, row: SessionRow, now: datetime) -> EV:
        if row.connector_id is None:
            raise ValueError("no OCPP connector number (Connector relationship missing)")
        cfg = self.config
        params = cfg.session_params(row.station_id, row.connector_id, row.id_token)
        tz = cfg.tz
        if row.start_time is not None:
            arrival = row.start_time
        elif params.arrival is not None:
            arrival = resolve_before(params.arrival, now, tz)
        else:
            arrival = now
        arrival = min(arrival, now)
        horizon_end = now + timedelta(seconds=cfg.horizon_s)
        departure = horizon_end
        if params.departure is not None:
            planned = resolve_after(params.departure, arrival, tz)
            if planned > now:
                departure = planned
            else:
                logger.debug(
                    "session %s:%s is past its planned departure; using the horizon end",
                    row.station_id,
                    row.transaction_id,
                )
        volts = params.voltage or cfg.voltage
        phases = params.phases or cfg.phases
        needed_kwh = params.energy_needed_kwh or 0.0
        max_kw = params.max_power_kw if params.max_power_kw is not None else 0.0
        wanted_min_kw = params.min_power_kw or 0.0
        needs = self._needs.get(row.station_id, row.connector_id, row.transaction_id)
        if needs is not None:
            # What the car itself asked for beats what was configured for the connector.
            departure, needed_kwh, max_kw, wanted_min_kw, phases = self._apply_needs(
                row, needs, now, departure, needed_kwh, max_kw, wanted_min_kw, volts, phases
            )
        delivered = delivered_energy_wh(row.sampled_values, row.meter_start_wh)
        remaining = max(needed_kwh - (delivered or 0.0) / 1000.0, 0.0)
        min_kw = min(wanted_min_kw, max_kw)
        return EV(
            ev_id=f"{row.station_id}:{row.transaction_id}",
            station_id=row.station_id,
            connector_id=row.connector_id,
            arrival_time=arrival,
            departure_time=departure,
            energy=remaining,
            min_power=min_kw,
            max_power=max_kw,
            active=True,
            unit=ChargingRateUnit.W,
            voltage=volts,
            phases=phases,
            transaction_id=row.transaction_id,
        )

    def _apply_needs(
        self,
        row: SessionRow,
        needs: ChargingNeeds,
        now: datetime,
        departure: datetime,
        needed_kwh: float,
        max_kw: float,
        min_kw: float,
        volts: float,
        phases: int,
    ) -> tuple[datetime, float, float, float, int]:
        """The session's (departure, energy needed [kWh], max [kW], min [kW], phases) with the
        car's charging needs laid over the configured values; a field the car left out keeps
        the configured value."""
        if needs.departure is not None:
            if needs.departure > now:
                departure = needs.departure
            else:
                logger.debug(
                    "session %s:%s is past the departure its car asked for; using the configured one",
                    row.station_id,
                    row.transaction_id,
                )
        if needs.energy_wh is not None:
            needed_kwh = needs.energy_wh / 1000.0
        if needs.phases is not None:
            # The car draws on the phases it asked for; the EV carries them too, so a profile in
            # amps is converted with the same phases the power was planned with.
            phases = needs.phases
        wanted_max = needs.max_power_kw(volts, phases)
        if wanted_max is not None:
            configured = self._configured_max_kw(row, needs.evse_id)
            # A configured maximum is what the connector or site may give; the car cannot raise it.
            max_kw = wanted_max if configured is None else min(wanted_max, configured)
        wanted_min = needs.min_power_kw(volts, phases)
        if wanted_min is not None:
            min_kw = wanted_min
        logger.debug(
            "session %s:%s uses its car's charging needs: departure %s, %.3f kWh, %.3f-%.3f kW, %d phase(s)",
            row.station_id,
            row.transaction_id,
            departure.isoformat(),
            needed_kwh,
            min_kw,
            max_kw,
            phases,
        )
        return departure, needed_kwh, max_kw, min_kw, phases

    def _configured_max_kw(self, row: SessionRow, connector_id: int) -> float | None:
        """The most specific ``max_power_kw`` that was configured for the session, or None when
        only the built-in default applies.

        Walks the layers of :meth:`CitrineOSConfig.session_params` in the same order, leaving
        out the built-in default: that one is a guess, which the car's own figure replaces.
        """
        cfg, site = self.config, self.config.site
        layers: list[SessionParams] = []
        if site is not None and row.id_token is not None and row.id_token in site.id_tags:
            layers.append(site.id_tags[row.id_token])
        key = (row.station_id, connector_id)
        if key in cfg.connectors:
            layers.append(cfg.connectors[key])
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

    def _read_sessions(self, stations: Sequence[str], deadline: float) -> list[SessionRow]:
        if self.config.graphql_url is not None:
            return self._read_graphql(stations, deadline)
        return self._read_sql(stations)

    def _graphql(self, operation: str, document: str, variables: Mapping[str, Any], deadline: float) -> Any:
        """Run one Hasura query (with retries); returns ``data``.

        Raises:
            CSMSConnectionError: Hasura could not be reached within the budget.
            CSMSResponseError: it answered an error status, errors, or no JSON.
        """
        url = self.config.graphql_url
        if url is None:
            raise ConfigurationError("HASURA_URL must be set for the GraphQL read path")
        headers = {"x-hasura-admin-secret": self.config.hasura_admin_secret} if self.config.hasura_admin_secret else {}
        body = {"query": document, "variables": dict(variables), "operationName": operation}
        try:
            resp, answer = self._post("Hasura", url, body, deadline=deadline, headers=headers)
        except _GaveUp as exc:
            if exc.connection:
                raise CSMSConnectionError(exc.reason) from None
            raise CSMSResponseError(exc.reason) from None
        if resp.status_code != 200:
            raise CSMSResponseError(
                self._redact(f"Hasura answered HTTP {resp.status_code}: {resp.text[:200]}"),
                status_code=resp.status_code,
            )
        if not isinstance(answer, Mapping) or answer.get("errors"):
            errors = answer.get("errors") if isinstance(answer, Mapping) else answer
            raise CSMSResponseError(self._redact(f"Hasura answered with errors: {errors!r}"[:500]), status_code=200)
        return answer.get("data") or {}

    def _read_graphql(self, stations: Sequence[str], deadline: float) -> list[SessionRow]:
        variables = {"stationIds": list(stations), "tenantId": self.config.tenant_id}
        data = self._graphql(queries.ACTIVE_SESSIONS_OPERATION, queries.ACTIVE_SESSIONS_QUERY, variables, deadline)
        transactions = data.get("Transactions") if isinstance(data, Mapping) else None
        if not isinstance(transactions, list):
            raise CSMSResponseError("Hasura's answer has no Transactions list", status_code=200)
        rows: list[SessionRow] = []
        for raw in transactions:
            try:
                rows.append(self._row_from_graphql(raw))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                logger.warning("skipping a malformed Transactions row (%s): %.200r", exc, raw)
        return rows

    @staticmethod
    def _row_from_graphql(raw: Mapping[str, Any]) -> SessionRow:
        station = raw["stationId"]
        tx = raw["transactionId"]
        if not isinstance(station, str) or not station or tx is None or str(tx) == "":
            raise ValueError("stationId/transactionId missing")
        connector = raw.get("Connector") or {}
        number = connector.get("connectorId")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 0):
            raise ValueError(f"Connector.connectorId must be an integer >= 0, got {number!r}")
        meter_values = raw.get("MeterValues") or []
        sampled = _sampled(meter_values[0].get("sampledValue")) if meter_values else ()
        status = None
        station_row = raw.get("ChargingStation") or {}
        latest_ts: datetime | None = None
        for item in station_row.get("LatestStatusNotifications") or []:
            sn = (item or {}).get("StatusNotification") or {}
            if number is not None and sn.get("connectorId") == number:
                ts = _parse_time(sn.get("timestamp"))
                if latest_ts is None or (ts is not None and ts >= latest_ts):
                    status, latest_ts = sn.get("connectorStatus"), ts
        return SessionRow(
            station_id=station,
            transaction_id=str(tx),
            connector_id=number,
            id_token=(raw.get("Authorization") or {}).get("idToken"),
            start_time=_parse_time(raw.get("startTime")),
            meter_start_wh=_optional_float(raw.get("meterStart")),
            sampled_values=sampled,
            connector_status=status,
            db_id=raw.get("id"),
        )

    def _sql_rows(self, query: str, params: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
        """Run a read-only query on CitrineOS's PostgreSQL (``CITRINEOS_DB_DSN``), rows as dicts.

        Raises:
            ConfigurationError: no DSN, or psycopg missing.
            CSMSConnectionError: the database is unreachable.
            CSMSResponseError: the query failed.
        """
        dsn = self.config.db_dsn
        if dsn is None:
            raise ConfigurationError("HASURA_URL or CITRINEOS_DB_DSN must be set to read from CitrineOS")
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise ConfigurationError("CITRINEOS_DB_DSN needs psycopg (v3): pip install 'psycopg[binary]'") from None
        try:
            with psycopg.connect(
                dsn, connect_timeout=max(1, int(self.config.http_timeout_s)), row_factory=dict_row
            ) as conn:
                return [dict(r) for r in conn.execute(query, dict(params)).fetchall()]
        except psycopg.OperationalError as exc:
            raise CSMSConnectionError(self._redact(f"PostgreSQL at {mask_url(dsn)} unreachable: {exc}")) from None
        except psycopg.Error as exc:
            raise CSMSResponseError(self._redact(f"the {what} query failed: {exc}")) from None

    def _read_sql(self, stations: Sequence[str]) -> list[SessionRow]:
        records = self._sql_rows(queries.ACTIVE_SESSIONS_SQL, {"tenant_id": self.config.tenant_id}, "session")
        wanted = set(stations)
        rows: list[SessionRow] = []
        for rec in records:
            if rec.get("stationId") not in wanted:
                continue
            try:
                number = rec.get("ocppConnectorId")
                rows.append(
                    SessionRow(
                        station_id=str(rec["stationId"]),
                        transaction_id=str(rec["transactionId"]),
                        connector_id=None if number is None else int(number),
                        id_token=rec.get("idToken"),
                        start_time=_parse_time(rec.get("startTime")),
                        meter_start_wh=_optional_float(rec.get("meterStart")),
                        sampled_values=_sampled(rec.get("lastSampledValue")),
                        connector_status=rec.get("lastConnectorStatus"),
                        db_id=rec.get("transactionDatabaseId"),
                    )
                )
            except (ValueError, TypeError, KeyError) as exc:
                logger.warning("skipping a malformed session row (%s): %.200r", exc, dict(rec))
        return rows

    # -- limits ------------------------------------------------------------------------------
    def get_peak_power_demand(
        self, group_name: str, now: datetime, voltage: float | None = None
    ) -> Sequence[float] | float:
        """The group's site limit [kW]: a constant, or one value per planning step from the site file."""
        schedule = self.config.group_limits.get(group_name)
        if schedule is None:
            raise ConfigurationError(f"SITE_POWER_LIMIT_KW: no limit for unknown group {group_name!r}")
        return schedule.series(to_utc(now), self.config.resolution_s, self.config.horizon_s // self.config.resolution_s)

    def check_site_limit(self, group: str, profiles: Sequence[tuple[EV, ChargingProfile]]) -> None:
        """Raise :class:`SiteLimitExceeded` when the profiles together allow more than the group's limit.

        The sum is taken at every period start of every profile (absolute time), each profile
        counting the limit in force then (its first limit before it starts, its last after it
        ends), converted to kW with the EV's voltage and the period's phases.
        """
        schedule = self.config.group_limits[group]
        entries: list[tuple[datetime, list[tuple[int, float]]]] = []
        instants: set[datetime] = set()
        for ev, profile in profiles:
            kw = [
                (p.start_period, profile.unit.limit_to_kw(p.limit, self._volts(ev), p.number_phases or ev.phases))
                for p in profile.periods
            ]
            entries.append((profile.start_schedule, kw))
            instants.update(profile.start_schedule + timedelta(seconds=s) for s, _ in kw)
        for instant in sorted(instants):
            total = 0.0
            for start, kw in entries:
                offset = (instant - start).total_seconds()
                current = kw[0][1]
                for s, value in kw:
                    if s <= offset:
                        current = value
                total += current
            allowed = schedule.at(instant)
            if total > allowed + 1e-9:
                raise SiteLimitExceeded(
                    f"group {group!r}: the profiles allow {total:.3f} kW at {instant.isoformat()}, "
                    f"above the site limit of {allowed:.3f} kW"
                )

    # -- sending -----------------------------------------------------------------------------
    def send_power_to_evs(
        self, powers: Mapping[EV, ChargingProfile], unit: ChargingRateUnit | None = None
    ) -> Mapping[str, SendOutcome]:
        """Send each EV its profile through CitrineOS and report what the charger did.

        Outcomes: APPLIED (the charger answered Accepted on RabbitMQ), REJECTED (CitrineOS said
        ``success: false`` — unknown or offline station — or the charger answered Rejected),
        UNANSWERED (queued, but no answer within ``CITRINEOS_ANSWER_TIMEOUT_S``, e.g. a CALLERROR),
        FAILED (refused here, 4xx/5xx, unreachable). The reason of each is logged and kept in
        :attr:`last_reasons`.
        """
        outcomes: dict[str, SendOutcome] = {}
        reasons: dict[str, str] = {}
        sends: list[_Send] = []
        groups = {self.config.group_of(str(ev.station_id)) for ev in powers}
        # One attempt, no retries: the cycle's retry budget is for the TxProfiles, and a hold
        # that was not renewed is safe (the TxProfiles' validTo stays capped at the old one).
        self.refresh_holds([s for g in groups if g is not None for s in self.config.groups[g]],
                           deadline=time.monotonic())
        for ev, profile in powers.items():
            ev_id = str(ev.ev_id)
            try:
                sends.append(self._prepare(ev, profile))
            except (ValueError, TypeError, KeyError) as exc:
                outcomes[ev_id], reasons[ev_id] = SendOutcome.FAILED, f"not sent: {exc}"
        by_group: dict[str, list[_Send]] = defaultdict(list)
        for s in sends:
            by_group[s.group].append(s)
        to_send: list[_Send] = []
        for group, items in by_group.items():
            try:
                self.check_site_limit(group, [(s.ev, s.profile) for s in items])
            except SiteLimitExceeded as exc:
                logger.error("refusing to send %d profile(s): %s", len(items), exc)
                for s in items:
                    outcomes[s.ev_id], reasons[s.ev_id] = SendOutcome.FAILED, f"not sent: {exc}"
                continue
            to_send.extend(items)

        deadline = self._take_deadline()
        if to_send and self.config.amqp_url is not None:
            self._ensure_listener()
        # Reductions (and profiles for connectors whose limit is unknown, which may draw their
        # max) go out first, increases only once every reduction has been answered: stations are
        # sent in parallel, so without two waves an increase could land before a reduction.
        reductions: list[_Send] = []
        increases: list[_Send] = []
        now = to_utc(self._clock())
        for s in to_send:
            key = (s.station_id, s.ev.connector_id)
            known = self._known_kw.get(key)
            if self._known_tx.get(key) not in (None, str(s.ev.transaction_id)):
                known = None  # that limit was another car's
            if known is None and self._hold_until.get(s.station_id, now) > now:
                # A new session under the station's hold draws nothing yet: its first profile is
                # an increase and must wait until the others' reductions are answered.
                known = 0.0
            new_kw = s.profile.limit_kw_at(0, self._volts(s.ev), s.ev.phases)
            (increases if known is not None and new_kw > known + 1e-9 else reductions).append(s)
        for wave in (reductions, increases):
            by_station: dict[str, list[_Send]] = defaultdict(list)
            for s in wave:
                by_station[s.station_id].append(s)
            if not by_station:
                continue
            with ThreadPoolExecutor(max_workers=min(8, len(by_station)), thread_name_prefix="citrineos-send") as pool:
                futures = [pool.submit(self._send_station, items, deadline) for items in by_station.values()]
                for future in futures:
                    for ev_id, (outcome, reason) in future.result().items():
                        outcomes[ev_id], reasons[ev_id] = outcome, reason

        for ev_id, outcome in outcomes.items():
            level = logging.INFO if outcome is SendOutcome.APPLIED else logging.WARNING
            logger.log(level, "profile for %s: %s (%s)", ev_id, outcome.value, reasons[ev_id])
        self.last_reasons.update(reasons)
        applied = {s.ev_id: s for s in to_send if outcomes.get(s.ev_id) is SendOutcome.APPLIED}
        for s in applied.values():
            self._known_kw[(s.station_id, s.ev.connector_id)] = s.profile.limit_kw_at(0, self._volts(s.ev), s.ev.phases)
            self._known_tx[(s.station_id, s.ev.connector_id)] = str(s.ev.transaction_id)
        return outcomes

    def _prepare(self, ev: EV, profile: ChargingProfile) -> _Send:
        station = str(ev.station_id)
        group = self.config.group_of(station)
        if group is None:
            raise ValueError(f"station {station!r} is in no configured group, so its site limit is unknown")
        params = self.config.station(station)
        target = params.unit or profile.unit
        profile_id = self.config.profile_id_base + ev.connector_id
        tx = profile.transaction_id if profile.transaction_id is not None else ev.transaction_id
        valid_to = profile.valid_to
        if self.config.profile_validity_s > 0:
            # If opti-vgi stops sending, the profile lapses and the charger falls back to the
            # site-safe TxDefaultProfile underneath.
            lapse = to_utc(self._clock()) + timedelta(seconds=self.config.profile_validity_s)
            # Never outlive the station's hold: were opti-vgi to stop, new sessions would start
            # at the fallback share while this profile still let its EV draw more.
            hold = self._hold_until.get(station)
            if hold is not None:
                lapse = min(lapse, hold)
            valid_to = lapse if valid_to is None else min(valid_to, lapse)
        if target is not profile.unit or params.max_periods is not None:
            # Rebuilt from the planned power when the loop kept it (one rounding), else from the
            # profile's own periods (rounded down once more, never up).
            if ev.power:
                power_kw: list[float] = list(ev.power)
                resolution = self.config.resolution_s
            else:
                power_kw, resolution = self._periods_as_steps(ev, profile)
            profile = ChargingProfile.from_power(
                power_kw,
                start=profile.start_schedule,
                resolution_s=resolution,
                unit=target,
                voltage=self._volts(ev),
                phases=ev.phases,
                charging_profile_id=profile_id,
                stack_level=self.config.stack_level,
                purpose=profile.purpose,
                kind=profile.kind,
                transaction_id=tx,
                duration=profile.duration,
                valid_to=valid_to,
                max_periods=params.max_periods,
            )
        else:
            profile = attrs.evolve(
                profile,
                charging_profile_id=profile_id,
                stack_level=self.config.stack_level,
                transaction_id=tx,
                valid_to=valid_to,
            )
        if params.ocpp == OCPP16:
            body: dict[str, Any] = {"connectorId": ev.connector_id, "csChargingProfiles": profile.to_ocpp16()}
        else:
            # The 2.0.1 EVSE is taken to be the connector number (one connector per EVSE).
            body = {"evseId": ev.connector_id, "chargingProfile": profile.to_ocpp201()}
        check_request_body(body)
        return _Send(ev, str(ev.ev_id), station, group, params.ocpp or OCPP16, profile, body)

    def _volts(self, ev: EV) -> float:
        """The EV's voltage, or the site's when the EV leaves it open."""
        return float(ev.voltage) if ev.voltage is not None else self.config.voltage

    def _periods_as_steps(self, ev: EV, profile: ChargingProfile) -> tuple[list[float], int]:
        volts = self._volts(ev)
        starts = [p.start_period for p in profile.periods]
        step = math.gcd(*starts) if len(starts) > 1 else 60
        step = step or 60
        end = starts[-1] + step
        power: list[float] = []
        for t in range(0, end, step):
            power.append(profile.limit_kw_at(t, volts, ev.phases))
        return power, step

    def _send_station(self, items: list[_Send], deadline: float) -> dict[str, tuple[SendOutcome, str]]:
        """One station's profiles, strictly one after another (CitrineOS allows one call in flight)."""
        out: dict[str, tuple[SendOutcome, str]] = {}
        for s in sorted(items, key=lambda s: s.ev.connector_id):
            try:
                out[s.ev_id] = self._post_profile(s.station_id, s.ocpp, s.body, deadline)
            except Exception as exc:  # one bad send must not lose the other outcomes
                logger.exception("sending the profile for %s failed", s.ev_id)
                out[s.ev_id] = (SendOutcome.FAILED, self._redact(f"{type(exc).__name__}: {exc}"))
        return out

    def _post_profile(
        self, station_id: str, ocpp: str, body: Mapping[str, Any], deadline: float
    ) -> tuple[SendOutcome, str]:
        """POST one SetChargingProfile and wait for the charger's answer on RabbitMQ."""
        cfg = self.config
        version = "1.6" if ocpp == OCPP16 else "2.0.1"
        url = f"{cfg.api_url}/ocpp/{version}/smartcharging/setChargingProfile"
        params: dict[str, str | int] = {"identifier": station_id, "tenantId": cfg.tenant_id}
        listener = self._listener
        pending = None
        if listener is not None and listener.is_consuming:
            # Registered before the POST: CitrineOS publishes the request within milliseconds.
            pending = self._tracker.expect(cfg.tenant_id, station_id, body)
        try:
            try:
                resp, answer = self._post("CitrineOS", url, body, deadline=deadline, params=params)
            except _GaveUp as exc:
                return SendOutcome.FAILED, exc.reason
            status = resp.status_code
            if status == 400:
                message = answer.get("message") if isinstance(answer, Mapping) else resp.text[:200]
                code = answer.get("code") if isinstance(answer, Mapping) else None
                return SendOutcome.FAILED, self._redact(f"CitrineOS refused the request (400 {code or ''}): {message}")
            if status != 200:
                return SendOutcome.FAILED, self._redact(f"CitrineOS answered HTTP {status}: {resp.text[:200]}")
            if not isinstance(answer, list) or not answer or not isinstance(answer[0], Mapping):
                return SendOutcome.FAILED, self._redact(f"CitrineOS answered an unexpected body: {resp.text[:200]}")
            result = answer[0]
            if result.get("success") is not True:
                return SendOutcome.REJECTED, self._redact(f"CitrineOS: {result.get('payload', 'success false')}")
            if pending is None:
                return (
                    SendOutcome.UNANSWERED,
                    "queued by CitrineOS; no RabbitMQ listener connected to see the charger's answer",
                )
            if not pending.wait(cfg.answer_timeout_s):
                seen = (
                    f"request published as {pending.correlation_id}"
                    if pending.correlation_id
                    else "request not seen on RabbitMQ"
                )
                return (
                    SendOutcome.UNANSWERED,
                    f"queued by CitrineOS; no charger answer within {cfg.answer_timeout_s:g} s ({seen})",
                )
            if pending.status == "Accepted":
                return SendOutcome.APPLIED, f"charger accepted ({pending.correlation_id})"
            return SendOutcome.REJECTED, f"charger answered {pending.status or repr(pending.answer)}"
        finally:
            if pending is not None:
                self._tracker.discard(pending)

    # -- fail-safe ---------------------------------------------------------------------------
    def fallback_profile(self, station_id: str) -> tuple[ChargingProfile, dict[str, Any]]:
        """The site-safe fallback of a station and the request body that installs it.

        A TxDefaultProfile on connector (EVSE) 0, so it covers every connector of the station, at
        ``CITRINEOS_FALLBACK_STACK_LEVEL``: each connector may draw the group's lowest limit
        divided by the group's connector count, converted to the station's unit and rounded down.

        Raises:
            ValueError: the station is in no configured group.
        """
        cfg = self.config
        group = cfg.group_of(station_id)
        if group is None:
            raise ValueError(f"station {station_id!r} is in no configured group")
        params = cfg.session_params(station_id, None, None)
        volts, phases = params.voltage or cfg.voltage, params.phases or cfg.phases
        unit = cfg.station(station_id).unit or cfg.unit
        limit = round_down_tenth(max(unit.from_kw(cfg.fallback_share_kw(group), volts, phases), 0.0))
        # Absolute from yesterday's midnight without a duration: in force from now on, also on a
        # charger whose clock is somewhat behind, and the last period never ends.
        today = to_utc(self._clock()).replace(hour=0, minute=0, second=0, microsecond=0)
        profile = ChargingProfile(
            charging_profile_id=cfg.profile_id_base,
            stack_level=cfg.fallback_stack_level,
            purpose=ChargingProfilePurpose.TX_DEFAULT_PROFILE,
            kind=ChargingProfileKind.ABSOLUTE,
            unit=unit,
            start_schedule=today - timedelta(days=1),
            periods=(ChargingSchedulePeriod(0, limit, phases if unit is ChargingRateUnit.A else None),),
        )
        if cfg.station(station_id).ocpp == OCPP16:
            body: dict[str, Any] = {"connectorId": 0, "csChargingProfiles": profile.to_ocpp16()}
        else:
            body = {"evseId": 0, "chargingProfile": profile.to_ocpp201()}
        check_request_body(body)
        return profile, body

    def hold_profile(self, station_id: str, valid_to: datetime) -> tuple[ChargingProfile, dict[str, Any]]:
        """A zero TxDefaultProfile one stack level above the fallback, valid until ``valid_to``.

        While opti-vgi runs, it keeps a newly started session at 0 until the session's own
        TxProfile arrives (one cycle later), so an arrival cannot add its fallback share on top of
        TxProfiles that already use the whole site. It lapses with those TxProfiles (theirs is
        capped at its ``validTo``): if opti-vgi stops, every connector falls back to the share at
        the same moment, and none is left at 0.
        """
        fallback, _ = self.fallback_profile(station_id)
        profile = attrs.evolve(
            fallback,
            charging_profile_id=self.config.profile_id_base - 1,
            stack_level=self.config.fallback_stack_level + 1,
            periods=(ChargingSchedulePeriod(0, 0.0, fallback.periods[0].number_phases),),
            valid_to=valid_to,
        )
        if self.config.station(station_id).ocpp == OCPP16:
            body: dict[str, Any] = {"connectorId": 0, "csChargingProfiles": profile.to_ocpp16()}
        else:
            body = {"evseId": 0, "chargingProfile": profile.to_ocpp201()}
        check_request_body(body)
        return profile, body

    def refresh_holds(self, stations: Sequence[str], *, deadline: float) -> dict[str, SendOutcome]:
        """Renew the hold profile, valid for one profile validity, on each station with a fallback.

        Called before every send, so a hold lapses together with the TxProfiles of the same cycle
        (whose ``validTo`` is capped at the hold's). Stations are sent in parallel; returns the
        outcome per station.
        """
        validity = self.config.profile_validity_s
        if not self.config.fallback or validity <= 0:
            return {}
        with self._lock:
            due = [s for s in dict.fromkeys(stations) if s in self._fallbacks and self._fallbacks[s].installed]
        if not due:
            return {}
        until = to_utc(self._clock()) + timedelta(seconds=validity)

        def send(station: str) -> tuple[SendOutcome, str]:
            try:
                _, body = self.hold_profile(station, until)
            except ValueError as exc:
                return SendOutcome.FAILED, f"not sent: {exc}"
            return self._post_profile(station, self.config.station(station).ocpp or OCPP16, body, deadline)

        results: dict[str, SendOutcome] = {}
        with ThreadPoolExecutor(max_workers=min(8, len(due)), thread_name_prefix="citrineos-hold") as pool:
            for station, (outcome, reason) in zip(due, pool.map(send, due), strict=True):
                results[station] = outcome
                if outcome is SendOutcome.APPLIED:
                    with self._lock:
                        self._hold_until[station] = until
                else:
                    logger.warning("hold profile not renewed on %s (%s): %s", station, outcome.value, reason)
        return results

    def fallback_installed(self, station_id: str) -> bool:
        """Whether the station's charger accepted its fallback profile."""
        with self._lock:
            state = self._fallbacks.get(station_id)
            return state is not None and state.installed

    def ensure_fallbacks(self, stations: Sequence[str], *, deadline: float) -> dict[str, SendOutcome]:
        """Install the fallback profile on each station that lacks it and is due.

        A station is due when it was never tried, when RabbitMQ showed it (re)connecting, or when
        its retry pause (30 s, doubling up to an hour) has passed. Stations are sent in parallel.
        Returns the outcome per station tried.
        """
        if not self.config.fallback:
            return {}
        now = time.monotonic()
        with self._lock:
            due = []
            for station in dict.fromkeys(stations):
                state = self._fallbacks.setdefault(station, _FallbackState())
                if not state.installed and state.next_try <= now:
                    due.append(station)
        if not due:
            return {}
        if self.config.amqp_url is not None:
            self._ensure_listener()

        def install(station: str) -> tuple[SendOutcome, str]:
            try:
                profile, body = self.fallback_profile(station)
            except ValueError as exc:
                return SendOutcome.FAILED, f"not sent: {exc}"
            outcome, reason = self._post_profile(station, self.config.station(station).ocpp or OCPP16, body, deadline)
            if outcome is SendOutcome.APPLIED:
                reason = f"{profile.first_limit:g} {profile.unit.value} per connector, {reason}"
            return outcome, reason

        results: dict[str, SendOutcome] = {}
        with ThreadPoolExecutor(max_workers=min(8, len(due)), thread_name_prefix="citrineos-fallback") as pool:
            for station, (outcome, reason) in zip(due, pool.map(install, due), strict=True):
                results[station] = outcome
                with self._lock:
                    state = self._fallbacks[station]
                    state.reason = reason
                    if outcome is SendOutcome.APPLIED:
                        state.installed, state.pause_s = True, _FALLBACK_RETRY_S
                    else:
                        state.next_try = time.monotonic() + state.pause_s
                        state.pause_s = min(state.pause_s * 2, _FALLBACK_RETRY_MAX_S)
                if outcome is SendOutcome.APPLIED:
                    logger.info("fallback profile installed on %s: %s", station, reason)
                else:
                    logger.warning("fallback profile not installed on %s (%s): %s", station, outcome.value, reason)
        return results

    # -- reading back what is in force -------------------------------------------------------
    def read_profiles_in_force(self) -> dict[str, list[ProfileInForce]]:
        """Read the profiles CitrineOS records as active on the configured stations, log them,
        and remember each connector's current limit (so the first cycle sends reductions first).

        CitrineOS keeps a profile ``isActive`` after its transaction ends and writes a row only
        for an accepted profile, so this is what the chargers *accepted*, not necessarily what is
        in force; an unreadable answer is logged and leaves nothing known.
        """
        stations = [s for group in self.config.groups.values() for s in group]
        try:
            rows = self._read_profile_rows(stations)
        except (CSMSConnectionError, CSMSResponseError, ConfigurationError) as exc:
            logger.warning("could not read the profiles in force: %s", exc)
            return {}
        now = to_utc(self._clock())
        found: dict[str, list[ProfileInForce]] = defaultdict(list)
        for raw in rows:
            try:
                item = self._profile_from_row(raw, now)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                logger.debug("skipping a ChargingProfiles row (%s): %.200r", exc, raw)
                continue
            found[item.station_id].append(item)
            if item.purpose == "TxProfile" and item.limit is not None and item.unit is not None:
                kw = ChargingRateUnit(item.unit).limit_to_kw(item.limit, self.config.voltage, self.config.phases)
                key = (item.station_id, item.connector_id)
                # Several rows for one connector: count the highest, so a new profile is more
                # likely treated as a reduction and sent early.
                self._known_kw[key] = max(kw, self._known_kw.get(key, 0.0))
        for station, items in sorted(found.items()):
            logger.info("profiles CitrineOS holds for %s: %s", station, "; ".join(i.describe() for i in items))
            # The fallback (base), the hold (base - 1) and the TxProfiles (base + connector).
            ours = {self.config.profile_id_base + c for c in range(-1, 100)}
            for i in items:
                if i.profile_id not in ours and i.stack_level >= self.config.stack_level:
                    logger.warning(
                        "%s: profile %d (%s, level %d) is not opti-vgi's and may outrank its profiles",
                        station,
                        i.profile_id,
                        i.purpose,
                        i.stack_level,
                    )
        self.profiles_in_force = dict(found)
        return self.profiles_in_force

    def _read_profile_rows(self, stations: Sequence[str]) -> list[Mapping[str, Any]]:
        deadline = time.monotonic() + self.config.retry_budget_s
        if self.config.graphql_url is not None:
            variables = {"stationIds": list(stations), "tenantId": self.config.tenant_id}
            data = self._graphql(
                queries.ACTIVE_CHARGING_PROFILES_OPERATION, queries.ACTIVE_CHARGING_PROFILES_QUERY, variables, deadline
            )
            rows = data.get("ChargingProfiles") if isinstance(data, Mapping) else None
            if not isinstance(rows, list):
                raise CSMSResponseError("Hasura's answer has no ChargingProfiles list", status_code=200)
            return [r for r in rows if isinstance(r, Mapping)]
        return self._sql_rows(
            queries.ACTIVE_CHARGING_PROFILES_SQL,
            {"tenant_id": self.config.tenant_id, "station_ids": list(stations)},
            "ChargingProfiles",
        )

    @staticmethod
    def _profile_from_row(raw: Mapping[str, Any], now: datetime) -> ProfileInForce:
        schedules = raw.get("ChargingSchedules") or []
        schedule = schedules[0] if schedules else {}
        unit = schedule.get("chargingRateUnit")
        periods = schedule.get("chargingSchedulePeriod") or []
        if isinstance(periods, str):
            periods = json.loads(periods)
        limit: float | None = None
        start = _parse_time(schedule.get("startSchedule"))
        offset = (now - start).total_seconds() if start is not None else 0.0
        for period in sorted(periods, key=lambda p: float(p["startPeriod"])):
            if limit is None or float(period["startPeriod"]) <= offset:
                limit = float(period["limit"])
        return ProfileInForce(
            station_id=str(raw["stationId"]),
            connector_id=int(raw.get("evseId") or 0),
            profile_id=int(raw["id"]),
            purpose=str(raw.get("chargingProfilePurpose")),
            stack_level=int(raw.get("stackLevel") or 0),
            unit=None if unit is None else str(unit),
            limit=limit,
        )
