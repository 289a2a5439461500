"""Configuration of the CitrineOS translation, read from :class:`optivgi.config.Settings`.

Every variable is read through ``Settings.get``/``get_float`` (environment over ``.env``); a bad
value raises :class:`~optivgi.errors.ConfigurationError` naming the variable. The variables are
listed in ``docs/citrineos.md``.

Which stations belong to which group (first match wins):

1. ``STATION_GROUP_<NAME>=ST-01,ST-02`` (``<NAME>`` is the group name upper-cased, every character
   other than a letter or digit replaced by ``_``);
2. the site file's ``groups.<name>.stations``;
3. with a single group in ``STATION_GROUPS``: every station of ``STATION_IDS``.

A station may belong to one group only (its power would otherwise be counted twice).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

import attrs

from optivgi.config import Settings, mask_url
from optivgi.errors import ConfigurationError
from optivgi.models.ev import ChargingRateUnit
from optivgi_citrineos.config_values import (
    BUILTIN_SESSION_DEFAULTS,
    SecretRedactor,
    _csv,
    _file,
    _int,
    _positive_float,
    _switch,
    _url_secrets,
    connector_params,
    group_variable,
    redact,
)
from optivgi_citrineos.sitefile import (
    OCPP16,
    OCPP201,
    LimitSchedule,
    SessionParams,
    SiteFile,
    StationParams,
)
from optivgi_citrineos.tls import TlsFiles
from optivgi_citrineos.urls import check_url as _url
from optivgi_citrineos.urls import split_credentials

__all__ = [
    "BUILTIN_SESSION_DEFAULTS",
    "CitrineOSConfig",
    "SecretRedactor",
    "TlsFiles",
    "group_variable",
    "redact",
]

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class CitrineOSConfig:
    """Everything the translation needs, validated.

    Attributes:
        api_url: CitrineOS REST base (``CITRINEOS_API_URL``), e.g. ``http://citrineos:8080``.
        hasura_url: Hasura base or ``/v1/graphql`` URL (``HASURA_URL``), or None.
        hasura_admin_secret: sent as ``x-hasura-admin-secret`` (``HASURA_ADMIN_SECRET``), never logged.
        db_dsn: PostgreSQL DSN for the plain-SQL read path (``CITRINEOS_DB_DSN``), or None.
        tenant_id: CitrineOS tenant (``CITRINEOS_TENANT_ID``, default 1).
        amqp_url: RabbitMQ URL (``AMQP_URL``), or None for no listener.
        exchange: CitrineOS's exchange (``CITRINEOS_EXCHANGE``, default ``citrineos``).
        groups: stations per group name.
        group_limits: site limit per group.
        voltage: default voltage [V] (``VOLTAGE``).
        phases: default phases (``PHASES``).
        resolution_s: planning step [s] (``RESOLUTION_S``).
        horizon_s: planning horizon [s] (``HORIZON_S``).
        unit: the loop's unit (``CHARGING_RATE_UNIT``).
        http_timeout_s: timeout of each REST/GraphQL call (``CITRINEOS_HTTP_TIMEOUT_S``, default 10).
        answer_timeout_s: how long to wait for a charger's answer on RabbitMQ
            (``CITRINEOS_ANSWER_TIMEOUT_S``, default 30: CitrineOS's ``maxCallLengthSeconds``).
        stack_level: stackLevel of the profiles (``CITRINEOS_STACK_LEVEL``, default 1: above
            CitrineOS's own 0).
        profile_id_base: chargingProfileId = base + connector/EVSE number
            (``CITRINEOS_PROFILE_ID_BASE``, default 9000).
        ocpp201_stations: stations spoken to in OCPP 2.0.1 (``CITRINEOS_OCPP201_STATIONS``).
        connectors: session settings per (station, connector) from ``CONN_XX_*``.
        site: the parsed site file (``CITRINEOS_SITE_FILE``), if any.
        tz: time zone of ``HH:MM`` times (site file ``timezone``, default UTC).
        api_token: bearer token for CitrineOS REST (``CITRINEOS_API_TOKEN``), never logged.
        api_user / api_password: basic auth for CitrineOS REST (``CITRINEOS_API_USER`` /
            ``CITRINEOS_API_PASSWORD``), never logged.
        api_tls: CA bundle and client certificate for REST and Hasura (``CITRINEOS_CA_FILE``,
            ``CITRINEOS_CLIENT_CERT``, ``CITRINEOS_CLIENT_KEY``).
        amqp_tls: the same for RabbitMQ over ``amqps://`` (``AMQP_CA_FILE``, ``AMQP_CLIENT_CERT``,
            ``AMQP_CLIENT_KEY``).
        interval_s: the loop's interval [s] (``INTERVAL_S``).
        fallback: install the site-safe fallback profile on every station (``CITRINEOS_FALLBACK``,
            on by default).
        fallback_stack_level: its stackLevel (``CITRINEOS_FALLBACK_STACK_LEVEL``, default 0).
        connectors_per_station: an explicit connector count per station
            (``CITRINEOS_CONNECTORS_PER_STATION``), checked against the connectors seen (a
            mismatch is an ERROR naming the station); None (default): the connectors seen.
        profile_validity_s: TxProfiles carry ``validTo`` = send time + this
            (``CITRINEOS_PROFILE_VALIDITY_S``, default 3 x ``INTERVAL_S``; 0 = no ``validTo``).
        retry_budget_s: how long one cycle may spend retrying failed CSMS calls
            (``CITRINEOS_RETRY_BUDGET_S``, default 15).
        retry_initial_s / retry_max_s: first and largest pause between retries
            (``CITRINEOS_RETRY_INITIAL_S``, default 0.25; ``CITRINEOS_RETRY_MAX_S``, default 4).
    """

    api_url: str
    hasura_url: str | None = None
    hasura_admin_secret: str | None = attrs.field(default=None, repr=False)
    db_dsn: str | None = attrs.field(default=None, repr=False)
    tenant_id: int = 1
    amqp_url: str | None = attrs.field(default=None, repr=False)
    exchange: str = "citrineos"
    groups: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    group_limits: Mapping[str, LimitSchedule] = attrs.field(factory=dict)
    voltage: float = 240.0
    phases: int = 1
    resolution_s: int = 60
    horizon_s: int = 8 * 3600
    unit: ChargingRateUnit = ChargingRateUnit.W
    http_timeout_s: float = 10.0
    answer_timeout_s: float = 30.0
    stack_level: int = 1
    profile_id_base: int = 9000
    ocpp201_stations: frozenset[str] = frozenset()
    connectors: Mapping[tuple[str, int], SessionParams] = attrs.field(factory=dict)
    site: SiteFile | None = None
    api_token: str | None = attrs.field(default=None, repr=False)
    api_user: str | None = None
    api_password: str | None = attrs.field(default=None, repr=False)
    api_tls: TlsFiles = attrs.field(factory=TlsFiles)
    amqp_tls: TlsFiles = attrs.field(factory=TlsFiles)
    interval_s: float = 60.0
    fallback: bool = True
    fallback_stack_level: int = 0
    connectors_per_station: int | None = None
    profile_validity_s: float = 180.0
    retry_budget_s: float = 15.0
    retry_initial_s: float = 0.25
    retry_max_s: float = 4.0

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured secret, for redaction (passwords in URLs and DSN included)."""
        found = [s for s in (self.hasura_admin_secret, self.api_token, self.api_password) if s]
        for url in (self.api_url, self.hasura_url, self.amqp_url, self.db_dsn):
            found += _url_secrets(url)
        return tuple(dict.fromkeys(found))

    def connectors_of(self, station_id: str) -> tuple[int, ...]:
        """The connector numbers configured for a station (``CONN_XX_*`` and the site file)."""
        numbers = {c for s, c in self.connectors if s == station_id}
        if self.site is not None:
            numbers |= {c for s, c in self.site.connectors if s == station_id}
        return tuple(sorted(numbers))

    def connector_count(self, group: str) -> int:
        """Connectors of a group known from the configuration alone: per station the configured ones,
        at least ``connectors_per_station`` (1 when unset); the translation adds those it sees."""
        least = self.connectors_per_station or 1
        return sum(max(len(self.connectors_of(s)), least) for s in self.groups.get(group, ()))

    def lowest_limit_kw(self, group: str) -> float:
        """The lowest value the group's limit ever takes (a daily schedule's minimum)."""
        schedule = self.group_limits[group]
        if schedule.constant_kw is not None:
            return schedule.constant_kw
        return min(kw for _, kw in schedule.steps)

    def fallback_share_kw(self, group: str) -> float:
        """Power [kW] each connector of the group may draw under the fallback profile: the lowest
        site limit divided among all the group's connectors, so all of them together fit."""
        count = self.connector_count(group)
        return self.lowest_limit_kw(group) / count if count else 0.0

    @property
    def tz(self) -> tzinfo:
        """Time zone of ``HH:MM`` times."""
        return self.site.tz if self.site is not None else SiteFile().tz

    @property
    def graphql_url(self) -> str | None:
        """The Hasura GraphQL endpoint."""
        if self.hasura_url is None:
            return None
        return self.hasura_url if self.hasura_url.endswith("/v1/graphql") else self.hasura_url + "/v1/graphql"

    def group_of(self, station_id: str) -> str | None:
        """The group ``station_id`` belongs to, or None."""
        for name, stations in self.groups.items():
            if station_id in stations:
                return name
        return None

    def station(self, station_id: str) -> StationParams:
        """How ``station_id`` is talked to (OCPP version filled in)."""
        base = self.site.station_params.get(station_id, StationParams()) if self.site else StationParams()
        ocpp = base.ocpp or (OCPP201 if station_id in self.ocpp201_stations else OCPP16)
        return attrs.evolve(base, ocpp=ocpp)

    def session_params(self, station_id: str, connector_id: int | None, id_tag: str | None) -> SessionParams:
        """Merged session settings, most specific first: idTag (site file), ``CONN_XX_*``,
        site-file connector, site-file station, site-file defaults, built-in defaults."""
        layers: list[SessionParams] = []
        site = self.site
        if site is not None and id_tag is not None and id_tag in site.id_tags:
            layers.append(site.id_tags[id_tag])
        if connector_id is not None and (station_id, connector_id) in self.connectors:
            layers.append(self.connectors[(station_id, connector_id)])
        if site is not None:
            if connector_id is not None and (station_id, connector_id) in site.connectors:
                layers.append(site.connectors[(station_id, connector_id)])
            if station_id in site.stations:
                layers.append(site.stations[station_id])
            layers.append(site.defaults)
        merged = BUILTIN_SESSION_DEFAULTS
        for layer in reversed(layers):
            merged = layer.over(merged)
        return merged

    def describe(self) -> dict[str, Any]:
        """Facts safe to log (URLs masked, no secrets)."""
        return {
            "api_url": mask_url(self.api_url),
            "read_path": "hasura" if self.hasura_url else "sql",
            "hasura_url": mask_url(self.hasura_url) if self.hasura_url else None,
            "hasura_admin_secret": "set" if self.hasura_admin_secret else None,
            "db_dsn": mask_url(self.db_dsn) if self.db_dsn else None,
            "amqp_url": mask_url(self.amqp_url) if self.amqp_url else None,
            "tenant_id": self.tenant_id,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "site_file": self.site.path if self.site else None,
            "answer_timeout_s": self.answer_timeout_s,
            "api_auth": "bearer" if self.api_token else "basic" if self.api_user else None,
            "api_tls": self.api_tls.configured,
            "amqp_tls": self.amqp_tls.configured,
            "fallback": self.fallback,
            "profile_validity_s": self.profile_validity_s,
            "retry_budget_s": self.retry_budget_s,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> CitrineOSConfig:
        """Read and check every variable; raise ConfigurationError naming the first bad one."""
        api_url = _url(settings, "CITRINEOS_API_URL")
        if api_url is None:
            raise ConfigurationError("CITRINEOS_API_URL must be set (e.g. http://citrineos:8080)")
        hasura_url = _url(settings, "HASURA_URL")
        # Credentials in a URL become the client's basic auth: the URLs kept (and logged) carry none.
        url_auth: dict[str, tuple[str | None, str | None]] = {}
        api_url, *creds = split_credentials(api_url)
        if creds[0] is not None:
            url_auth["CITRINEOS_API_URL"] = (creds[0], creds[1])
        if hasura_url is not None:
            hasura_url, *creds = split_credentials(hasura_url)
            if creds[0] is not None:
                url_auth["HASURA_URL"] = (creds[0], creds[1])
        db_dsn = settings.get("CITRINEOS_DB_DSN")
        if hasura_url is None and db_dsn is None:
            raise ConfigurationError("HASURA_URL (or CITRINEOS_DB_DSN for plain SQL) must be set to read sessions")
        amqp_url = _url(settings, "AMQP_URL")
        if amqp_url is not None:
            from optivgi_citrineos.listener import check_amqp_url

            check_amqp_url(amqp_url, "AMQP_URL")
        site_path = settings.get("CITRINEOS_SITE_FILE")
        site = SiteFile.load(site_path) if site_path else None

        station_ids = _csv(settings.get("STATION_IDS"))
        groups: dict[str, tuple[str, ...]] = {}
        for group in settings.station_groups:
            var = group_variable(group)
            explicit = _csv(settings.get(var))
            if explicit:
                groups[group] = explicit
            elif site is not None and group in site.groups:
                groups[group] = site.groups[group]
            elif len(settings.station_groups) == 1 and station_ids:
                groups[group] = station_ids
            else:
                raise ConfigurationError(
                    f"{var} (or STATION_IDS with a single group, or the site file's groups.{group}.stations) "
                    f"must list the stations of group {group!r}"
                )
        seen: dict[str, str] = {}
        for group, stations in groups.items():
            for station in stations:
                if station in seen and seen[station] != group:
                    raise ConfigurationError(
                        f"{group_variable(group)}: station {station!r} is already in group {seen[station]!r}"
                    )
                seen[station] = group

        global_limit = settings.get_float("SITE_POWER_LIMIT_KW", minimum=0.0)
        if global_limit is None and settings.site_power_limit_kw is not None:
            global_limit = settings.site_power_limit_kw
        limits: dict[str, LimitSchedule] = {}
        for group in groups:
            var = group_variable(group, "SITE_POWER_LIMIT_KW_")
            own = settings.get_float(var, minimum=0.0)
            if own is not None:
                limits[group] = LimitSchedule(constant_kw=own)
            elif site is not None and group in site.group_limits:
                limits[group] = site.group_limits[group]
            elif global_limit is not None:
                limits[group] = LimitSchedule(constant_kw=global_limit)
            elif site is not None and site.limit is not None:
                limits[group] = site.limit
            else:
                raise ConfigurationError(
                    f"SITE_POWER_LIMIT_KW (or {var}, or the site file's limit_kw) must be set for group {group!r}"
                )

        connectors = cls._connectors(settings, station_ids)
        tenant = _int(settings, "CITRINEOS_TENANT_ID", 1, 0)
        stack_level = _int(settings, "CITRINEOS_STACK_LEVEL", 1, 0)
        fallback_level = _int(settings, "CITRINEOS_FALLBACK_STACK_LEVEL", 0, 0)
        fallback = _switch(settings, "CITRINEOS_FALLBACK", True)
        if fallback and fallback_level >= stack_level:
            raise ConfigurationError(
                f"CITRINEOS_FALLBACK_STACK_LEVEL ({fallback_level}) must be below CITRINEOS_STACK_LEVEL ({stack_level})"
            )
        validity = settings.get_float("CITRINEOS_PROFILE_VALIDITY_S", minimum=0.0)
        if validity is None:
            validity = 3 * settings.interval_s
        if 0 < validity < settings.interval_s:
            # The profiles would lapse between two periodic cycles and every EV would drop to its
            # fallback share until the next one.
            raise ConfigurationError(
                f"CITRINEOS_PROFILE_VALIDITY_S must be 0 or >= INTERVAL_S ({settings.interval_s:g}), got {validity:g}"
            )
        api_user, api_password = settings.get("CITRINEOS_API_USER"), settings.get("CITRINEOS_API_PASSWORD")
        api_token = settings.get("CITRINEOS_API_TOKEN")
        if url_auth:
            pairs = set(url_auth.values())
            named = " and ".join(url_auth)
            if api_user or api_token:
                # The explicit settings win; the URL's credentials are dropped (never sent or logged).
                logger.warning("%s carries credentials that are not used: CITRINEOS_API_%s is set",
                               named, "TOKEN" if api_token else "USER")
            elif len(pairs) > 1:
                raise ConfigurationError(f"{named} carry different credentials; one REST/Hasura login is supported")
            else:
                api_user, api_password = pairs.pop()
        if api_token and api_user:
            raise ConfigurationError("set CITRINEOS_API_TOKEN or CITRINEOS_API_USER, not both")
        if api_password and not api_user:
            raise ConfigurationError("CITRINEOS_API_PASSWORD needs CITRINEOS_API_USER")
        api_tls = TlsFiles(
            _file(settings, "CITRINEOS_CA_FILE"),
            _file(settings, "CITRINEOS_CLIENT_CERT"),
            _file(settings, "CITRINEOS_CLIENT_KEY"),
        )
        amqp_tls = TlsFiles(
            _file(settings, "AMQP_CA_FILE"), _file(settings, "AMQP_CLIENT_CERT"), _file(settings, "AMQP_CLIENT_KEY")
        )
        for tls, prefix in ((api_tls, "CITRINEOS"), (amqp_tls, "AMQP")):
            if tls.key_file and not tls.cert_file:
                raise ConfigurationError(f"{prefix}_CLIENT_KEY needs {prefix}_CLIENT_CERT")
        if amqp_tls.configured and amqp_url is not None and not amqp_url.lower().startswith("amqps://"):
            raise ConfigurationError(
                f"AMQP_CA_FILE/AMQP_CLIENT_CERT need an amqps:// AMQP_URL, got {mask_url(amqp_url)}"
            )
        retry_initial = _positive_float(settings, "CITRINEOS_RETRY_INITIAL_S", 0.25)
        retry_max = _positive_float(settings, "CITRINEOS_RETRY_MAX_S", 4.0)
        if retry_max < retry_initial:
            raise ConfigurationError("CITRINEOS_RETRY_MAX_S must be >= CITRINEOS_RETRY_INITIAL_S")
        budget = settings.get_float("CITRINEOS_RETRY_BUDGET_S", 15.0, minimum=0.0)
        return cls(
            api_url=api_url,
            hasura_url=hasura_url,
            hasura_admin_secret=settings.get("HASURA_ADMIN_SECRET"),
            db_dsn=db_dsn,
            tenant_id=tenant,
            amqp_url=amqp_url,
            exchange=settings.get("CITRINEOS_EXCHANGE", "citrineos") or "citrineos",
            groups=groups,
            group_limits=limits,
            voltage=settings.voltage,
            phases=settings.phases,
            resolution_s=settings.resolution_s,
            horizon_s=settings.horizon_s,
            unit=settings.charging_rate_unit,
            http_timeout_s=_positive_float(settings, "CITRINEOS_HTTP_TIMEOUT_S", 10.0),
            answer_timeout_s=_positive_float(settings, "CITRINEOS_ANSWER_TIMEOUT_S", 30.0),
            stack_level=stack_level,
            profile_id_base=_int(settings, "CITRINEOS_PROFILE_ID_BASE", 9000, 1),
            ocpp201_stations=frozenset(_csv(settings.get("CITRINEOS_OCPP201_STATIONS"))),
            connectors=connectors,
            site=site,
            api_token=api_token,
            api_user=api_user,
            api_password=api_password,
            api_tls=api_tls,
            amqp_tls=amqp_tls,
            interval_s=settings.interval_s,
            fallback=fallback,
            fallback_stack_level=fallback_level,
            connectors_per_station=(_int(settings, "CITRINEOS_CONNECTORS_PER_STATION", 1, 1)
                                    if settings.get("CITRINEOS_CONNECTORS_PER_STATION") else None),
            profile_validity_s=validity,
            retry_budget_s=budget if budget is not None else 15.0,
            retry_initial_s=retry_initial,
            retry_max_s=retry_max,
        )

    @staticmethod
    def _connectors(settings: Settings, station_ids: tuple[str, ...]) -> dict[tuple[str, int], SessionParams]:
        """``CONN_XX_*``: ``XX`` names the XX-th station of ``STATION_IDS``, connector 1, unless
        ``CONN_XX_STATION`` / ``CONN_XX_CONNECTOR`` say otherwise."""
        return connector_params(settings, station_ids)
