"""The optional site file: per-station, per-connector and per-idTag session defaults and site limits.

The file is JSON (``.json``), TOML (``.toml``) or YAML (``.yaml``/``.yml``, when PyYAML is
installed). Every section is optional::

    {
      "timezone": "America/Chicago",          # how "HH:MM" times are read (default UTC)
      "limit_kw": 30,                          # site limit for every group, or a daily schedule:
      # "limit_kw": [{"at": "00:00", "kw": 30}, {"at": "17:00", "kw": 20}],
      "defaults": {"energy_needed_kwh": 30, "max_power_kw": 7.2, "min_power_kw": 0,
                   "departure": "17:00"},
      "groups": {"north": {"stations": ["ST-01", "ST-02"], "limit_kw": 22}},
      "stations": {
        "ST-01": {"ocpp": "1.6", "unit": "A", "max_periods": 24, "phases": 1, "voltage": 240,
                  "max_power_kw": 11,
                  "connectors": {"1": {"energy_needed_kwh": 40, "departure": "2026-11-25T08:00:00Z"}}}
      },
      "id_tags": {"FLEET-007": {"energy_needed_kwh": 60, "departure": "06:30"}}
    }

Session fields (``defaults``, station, connector and idTag entries): ``energy_needed_kwh``,
``max_power_kw``, ``min_power_kw``, ``arrival`` and ``departure`` (``"HH:MM"`` in ``timezone``
or an ISO 8601 date-time), ``voltage``, ``phases``. Station-only fields: ``ocpp`` (``"1.6"``
or ``"2.0.1"``), ``unit`` (``"W"`` or ``"A"``: the unit this charger is sent), ``max_periods``.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from optivgi.caps import MAX_NESTING
from optivgi.errors import ConfigurationError
from optivgi.jsonfile import nesting_depth, parse_json_text, read_text_file
from optivgi.models.ev import ChargingRateUnit, to_utc

__all__ = [
    "OCPP16",
    "OCPP201",
    "SITE_FILE_SCHEMA",
    "LimitSchedule",
    "SessionParams",
    "SiteFile",
    "StationParams",
    "parse_time_of_day",
    "resolve_after",
    "resolve_before",
    "unknown_keys",
]

OCPP16 = "1.6"
OCPP201 = "2.0.1"

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

_SESSION_KEYS: dict[str, Any] = dict.fromkeys(
    ("energy_needed_kwh", "max_power_kw", "min_power_kw", "arrival", "departure", "voltage", "phases")
)

#: The keys a site file may hold. A dict maps each allowed key to the schema of its value
#: (None: any value, checked by the parser); ``{"*": ...}`` is a table of user-chosen names.
SITE_FILE_SCHEMA: dict[str, Any] = {
    "timezone": None,
    "limit_kw": None,
    "defaults": _SESSION_KEYS,
    "groups": {"*": {"stations": None, "limit_kw": None}},
    "stations": {"*": {**_SESSION_KEYS, "ocpp": None, "unit": None, "max_periods": None,
                       "connectors": {"*": _SESSION_KEYS}}},
    "id_tags": {"*": _SESSION_KEYS},
}


def unknown_keys(raw: Any, schema: Mapping[str, Any] = SITE_FILE_SCHEMA, path: str = "") -> list[str]:
    """Every key of ``raw`` the schema does not allow, as dotted paths (``stations.ST-1.units``),
    with the closest allowed key suggested (``limit_kW (did you mean limit_kw?)``)."""
    if not isinstance(raw, Mapping):
        return []
    found: list[str] = []
    for key, value in raw.items():
        where = f"{path}{key}"
        if "*" in schema:
            sub = schema["*"]
        elif key in schema:
            sub = schema[key]
        else:
            close = difflib.get_close_matches(str(key).lower(), list(schema), n=1, cutoff=0.6)
            found.append(where + (f" (did you mean {close[0]}?)" if close else ""))
            continue
        if isinstance(sub, Mapping):
            found += unknown_keys(value, sub, where + ".")
    return found


def parse_time_of_day(value: str) -> time | None:
    """``"HH:MM"`` as a time, or None when ``value`` is not of that form."""
    match = _HHMM.match(value.strip())
    if not match:
        return None
    return time(int(match.group(1)), int(match.group(2)))


def _parse_datetime(value: str, tz: tzinfo) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return to_utc(parsed)


def check_time_value(value: str, where: str) -> str:
    """Check ``value`` is ``"HH:MM"`` or an ISO 8601 date-time; ConfigurationError names ``where``."""
    if parse_time_of_day(value) is None and _parse_datetime(value, UTC) is None:
        raise ConfigurationError(f"{where} must be HH:MM or an ISO 8601 date-time, got {value!r}")
    return value


def _absolute(value: str, tz: tzinfo) -> datetime:
    parsed = _parse_datetime(value, tz)
    if parsed is None:
        raise ValueError(f"not HH:MM or an ISO 8601 date-time: {value!r}")
    return parsed


def resolve_after(value: str, after: datetime, tz: tzinfo) -> datetime:
    """The moment ``value`` names: a date-time as is, ``"HH:MM"`` as its first occurrence after ``after``."""
    tod = parse_time_of_day(value)
    if tod is None:
        return _absolute(value, tz)
    local = to_utc(after).astimezone(tz)
    candidate = datetime.combine(local.date(), tod, tzinfo=tz)
    while candidate <= local:
        candidate = datetime.combine(candidate.date() + timedelta(days=1), tod, tzinfo=tz)
    return to_utc(candidate)


def resolve_before(value: str, before: datetime, tz: tzinfo) -> datetime:
    """The moment ``value`` names: a date-time as is, ``"HH:MM"`` as its last occurrence <= ``before``."""
    tod = parse_time_of_day(value)
    if tod is None:
        return _absolute(value, tz)
    local = to_utc(before).astimezone(tz)
    candidate = datetime.combine(local.date(), tod, tzinfo=tz)
    while candidate > local:
        candidate = datetime.combine(candidate.date() - timedelta(days=1), tod, tzinfo=tz)
    return to_utc(candidate)


def _number(value: Any, where: str, *, minimum: float = 0.0, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(f"{where} must be a finite number >= {minimum}, got {value!r}")
    if integer and float(value) != int(value):
        raise ConfigurationError(f"{where} must be a whole number, got {value!r}")
    return float(value)


@attrs.frozen
class SessionParams:
    """What is known about a session beyond the CSMS: one layer of settings; None = not set here.

    Attributes:
        energy_needed_kwh: energy the car needs in this session [kWh].
        max_power_kw: most power the car may draw [kW].
        min_power_kw: least power when charging [kW].
        arrival: ``"HH:MM"`` or ISO date-time, used when the CSMS has no start time.
        departure: ``"HH:MM"`` or ISO date-time of the planned departure.
        voltage: voltage for amp conversions [V].
        phases: phases for amp conversions.
    """

    energy_needed_kwh: float | None = None
    max_power_kw: float | None = None
    min_power_kw: float | None = None
    arrival: str | None = None
    departure: str | None = None
    voltage: float | None = None
    phases: int | None = None

    def over(self, lower: SessionParams) -> SessionParams:
        """This layer on top of ``lower``: every field set here wins."""
        return SessionParams(
            **{
                f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(lower, f.name)
                for f in attrs.fields(SessionParams)
            }
        )

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> SessionParams:
        """Read the session fields of ``raw`` (unknown keys are the caller's business)."""
        out: dict[str, Any] = {}
        for key in ("energy_needed_kwh", "max_power_kw", "min_power_kw"):
            if raw.get(key) is not None:
                out[key] = _number(raw[key], f"{where}.{key}")
        for key in ("arrival", "departure"):
            if raw.get(key) is not None:
                if not isinstance(raw[key], str):
                    raise ConfigurationError(f"{where}.{key} must be a string, got {raw[key]!r}")
                out[key] = check_time_value(raw[key], f"{where}.{key}")
        if raw.get("voltage") is not None:
            volts = _number(raw["voltage"], f"{where}.voltage")
            if not 0 < volts < 2000:
                raise ConfigurationError(f"{where}.voltage must be between 0 and 2000 V, got {volts!r}")
            out["voltage"] = volts
        if raw.get("phases") is not None:
            if raw["phases"] not in (1, 2, 3) or isinstance(raw["phases"], bool):
                raise ConfigurationError(f"{where}.phases must be 1, 2 or 3, got {raw['phases']!r}")
            out["phases"] = int(raw["phases"])
        return cls(**out)


@attrs.frozen
class StationParams:
    """How one station is talked to.

    Attributes:
        ocpp: ``"1.6"`` or ``"2.0.1"``, or None (decided elsewhere; 1.6 by default).
        unit: the unit this station's profiles are sent in, or None for the loop's unit.
        max_periods: most schedule periods the charger accepts, or None.
    """

    ocpp: str | None = None
    unit: ChargingRateUnit | None = None
    max_periods: int | None = None


@attrs.frozen
class LimitSchedule:
    """A site limit: one number, or a daily schedule of ``(time of day, kW)`` steps in ``tz``."""

    constant_kw: float | None = None
    steps: tuple[tuple[time, float], ...] = ()
    tz: tzinfo = UTC

    def at(self, moment: datetime) -> float:
        """The limit [kW] in force at ``moment``."""
        if self.constant_kw is not None:
            return self.constant_kw
        local = to_utc(moment).astimezone(self.tz).time().replace(tzinfo=None)
        current = self.steps[-1][1]  # before the first step of the day, yesterday's last one holds
        for start, kw in self.steps:
            if start <= local:
                current = kw
        return current

    def series(self, now: datetime, resolution_s: int, n_steps: int) -> float | list[float]:
        """The limit per planning step from ``now`` (a constant stays one number)."""
        if self.constant_kw is not None:
            return self.constant_kw
        return [self.at(now + timedelta(seconds=i * resolution_s)) for i in range(n_steps)]

    @classmethod
    def parse(cls, raw: Any, where: str, tz: tzinfo) -> LimitSchedule:
        """``raw`` is a number or a list of ``{"at": "HH:MM", "kw": number}``."""
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return cls(constant_kw=_number(raw, where))
        if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
            raise ConfigurationError(f"{where} must be a number or a non-empty list of {{at, kw}}, got {raw!r}")
        steps: list[tuple[time, float]] = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or not isinstance(item.get("at"), str):
                raise ConfigurationError(f'{where}[{i}] must be {{"at": "HH:MM", "kw": number}}, got {item!r}')
            tod = parse_time_of_day(item["at"])
            if tod is None:
                raise ConfigurationError(f"{where}[{i}].at must be HH:MM, got {item['at']!r}")
            steps.append((tod, _number(item.get("kw"), f"{where}[{i}].kw")))
        steps.sort(key=lambda s: s[0])
        if len({s[0] for s in steps}) != len(steps):
            raise ConfigurationError(f"{where} names the same time twice")
        return cls(steps=tuple(steps), tz=tz)


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a table/object, got {type(raw).__name__}")
    return raw


@attrs.frozen
class SiteFile:
    """A parsed site file; see the module documentation for the format."""

    path: str = ""
    tz: tzinfo = UTC
    limit: LimitSchedule | None = None
    defaults: SessionParams = SessionParams()
    groups: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    group_limits: Mapping[str, LimitSchedule] = attrs.field(factory=dict)
    stations: Mapping[str, SessionParams] = attrs.field(factory=dict)
    station_params: Mapping[str, StationParams] = attrs.field(factory=dict)
    connectors: Mapping[tuple[str, int], SessionParams] = attrs.field(factory=dict)
    id_tags: Mapping[str, SessionParams] = attrs.field(factory=dict)

    @classmethod
    def load(cls, path: str | Path, variable: str = "CITRINEOS_SITE_FILE") -> SiteFile:
        """Read and check the file; every problem raises ConfigurationError naming it."""
        path = Path(path)
        try:
            text = read_text_file(path, ConfigurationError)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{variable}: {exc}") from None
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                raw: Any = tomllib.loads(text)
            elif suffix in (".yaml", ".yml"):
                try:
                    import yaml
                except ImportError:
                    raise ConfigurationError(
                        f"{variable}: {str(path)!r} is YAML but PyYAML is not installed; use JSON or TOML"
                    ) from None
                raw = yaml.safe_load(text)
            else:
                raw = parse_json_text(text, str(path), ConfigurationError)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{variable}: {exc}") from None
        except RecursionError:
            raise ConfigurationError(f"{variable}: {str(path)!r} is nested deeper than {MAX_NESTING} levels") from None
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{variable}: {str(path)!r} is not valid: {exc}") from None
        except Exception as exc:  # PyYAML's own error types, without importing them at module level
            raise ConfigurationError(f"{variable}: {str(path)!r} is not valid: {exc}") from None
        if nesting_depth(raw) > MAX_NESTING:
            raise ConfigurationError(f"{variable}: {str(path)!r} is nested deeper than {MAX_NESTING} levels")
        return cls.parse(_mapping(raw, str(path)), str(path))

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str = "site file") -> SiteFile:
        """Build from an already decoded document; an unknown key anywhere is an error naming it."""
        unknown = unknown_keys(raw)
        if unknown:
            raise ConfigurationError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        tz: tzinfo = UTC
        if raw.get("timezone") is not None:
            try:
                tz = ZoneInfo(str(raw["timezone"]))
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigurationError(f"{where}: timezone {raw['timezone']!r} is unknown") from None
        limit = (
            LimitSchedule.parse(raw["limit_kw"], f"{where}: limit_kw", tz) if raw.get("limit_kw") is not None else None
        )
        defaults = SessionParams.parse(_mapping(raw.get("defaults"), f"{where}: defaults"), f"{where}: defaults")
        groups: dict[str, tuple[str, ...]] = {}
        group_limits: dict[str, LimitSchedule] = {}
        for name, graw in _mapping(raw.get("groups"), f"{where}: groups").items():
            g = _mapping(graw, f"{where}: groups.{name}")
            stations = g.get("stations")
            if stations is not None:
                if (
                    not isinstance(stations, Sequence)
                    or isinstance(stations, str)
                    or not all(isinstance(s, str) and s for s in stations)
                ):
                    raise ConfigurationError(f"{where}: groups.{name}.stations must be a list of station ids")
                groups[str(name)] = tuple(stations)
            if g.get("limit_kw") is not None:
                group_limits[str(name)] = LimitSchedule.parse(g["limit_kw"], f"{where}: groups.{name}.limit_kw", tz)
        stations_p: dict[str, SessionParams] = {}
        station_params: dict[str, StationParams] = {}
        connectors: dict[tuple[str, int], SessionParams] = {}
        for sid, sraw in _mapping(raw.get("stations"), f"{where}: stations").items():
            here = f"{where}: stations.{sid}"
            s = _mapping(sraw, here)
            stations_p[str(sid)] = SessionParams.parse(s, here)
            ocpp = s.get("ocpp")
            if ocpp is not None and str(ocpp) not in (OCPP16, OCPP201):
                raise ConfigurationError(f'{here}.ocpp must be "1.6" or "2.0.1", got {ocpp!r}')
            unit = s.get("unit")
            if unit is not None and unit not in ("W", "A"):
                raise ConfigurationError(f'{here}.unit must be "W" or "A", got {unit!r}')
            max_periods = s.get("max_periods")
            if max_periods is not None:
                max_periods = int(_number(max_periods, f"{here}.max_periods", minimum=1, integer=True))
            station_params[str(sid)] = StationParams(
                ocpp=None if ocpp is None else str(ocpp),
                unit=None if unit is None else ChargingRateUnit(unit),
                max_periods=max_periods,
            )
            for cid, craw in _mapping(s.get("connectors"), f"{here}.connectors").items():
                try:
                    number = int(cid)
                except ValueError:
                    raise ConfigurationError(f"{here}.connectors keys must be connector numbers, got {cid!r}") from None
                connectors[(str(sid), number)] = SessionParams.parse(
                    _mapping(craw, f"{here}.connectors.{cid}"), f"{here}.connectors.{cid}"
                )
        id_tags = {
            str(tag): SessionParams.parse(_mapping(t, f"{where}: id_tags.{tag}"), f"{where}: id_tags.{tag}")
            for tag, t in _mapping(raw.get("id_tags"), f"{where}: id_tags").items()
        }
        return cls(
            path=where,
            tz=tz,
            limit=limit,
            defaults=defaults,
            groups=groups,
            group_limits=group_limits,
            stations=stations_p,
            station_params=station_params,
            connectors=connectors,
            id_tags=id_tags,
        )
