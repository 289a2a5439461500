"""Reading single values of the CitrineOS configuration from :class:`optivgi.config.Settings`.

Each helper names the variable in the :class:`~optivgi.errors.ConfigurationError` it raises;
:func:`connector_params` reads the per-connector ``CONN_XX_*`` variables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optivgi.config import Settings, _shown
from optivgi.errors import ConfigurationError
from optivgi.redaction import Redactor, redact_text, url_secrets
from optivgi_citrineos.sitefile import SessionParams, check_time_value

__all__ = [
    "BUILTIN_SESSION_DEFAULTS",
    "SecretRedactor",
    "connector_params",
    "group_variable",
    "redact",
]

#: Used when neither the environment nor the site file says anything about a session.
BUILTIN_SESSION_DEFAULTS = SessionParams(energy_needed_kwh=30.0, max_power_kw=7.2, min_power_kw=0.0)

_CONN = re.compile(
    r"^CONN_(\d+)_(ENERGY_NEEDED_KWH|MAX_POWER_KW|MIN_POWER_KW|ARRIVAL_TIME|DEPARTURE_TIME|STATION|CONNECTOR)$"
)


def group_variable(group: str, prefix: str = "STATION_GROUP_") -> str:
    """The environment variable naming ``group``'s stations (``north-lot`` → ``STATION_GROUP_NORTH_LOT``)."""
    return prefix + re.sub(r"[^A-Za-z0-9]", "_", group).upper()


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (value or "").split(",") if s.strip())


def _positive_float(settings: Settings, name: str, default: float) -> float:
    value = settings.get_float(name, default, minimum=0.0)
    if value is None or value <= 0:
        raise ConfigurationError(f"{name} must be > 0, got {settings.get(name)!r}")
    return value


def _int(settings: Settings, name: str, default: int, minimum: int) -> int:
    raw = settings.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {_shown(raw)}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {_shown(raw)}")
    return value


def _switch(settings: Settings, name: str, default: bool) -> bool:
    raw = settings.get(name)
    if raw is None:
        return default
    text = raw.strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ConfigurationError(f"{name} must be on or off, got {_shown(raw)}")


def _file(settings: Settings, name: str) -> str | None:
    raw = settings.get(name)
    if raw is None:
        return None
    if not Path(raw).is_file():
        raise ConfigurationError(f"{name}: {raw!r} is not a readable file")
    return raw


def _url_secrets(url: str | None) -> list[str]:
    """The password (and a token-like user name) embedded in a URL or libpq DSN."""
    return url_secrets(url)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (as a whole value, never inside a longer word), URL passwords,
    credential headers and secret ``key=value`` pairs replaced by ``***``."""
    return redact_text(text, secrets)


class SecretRedactor(Redactor):
    """A logging filter that removes known secrets from a record's message and traceback.

    Attached to the plugin's module loggers, so whatever ends up in a log line (a URL, an error
    text echoed by a server, an exception from a library) never carries a password or token; the
    command line puts the same kind of filter on every log handler.
    """


def connector_params(settings: Settings, station_ids: tuple[str, ...]) -> dict[tuple[str, int], SessionParams]:
    """``CONN_XX_*``: ``XX`` names the XX-th station of ``STATION_IDS``, connector 1, unless
    ``CONN_XX_STATION`` / ``CONN_XX_CONNECTOR`` say otherwise."""
    numbers = sorted({m.group(1) for m in (_CONN.match(k) for k in settings.values) if m})
    out: dict[tuple[str, int], SessionParams] = {}
    for num in numbers:
        prefix = f"CONN_{num}_"
        station = settings.get(prefix + "STATION")
        if station is None:
            index = int(num) - 1
            if not 0 <= index < len(station_ids):
                raise ConfigurationError(
                    f"{prefix}STATION must be set: STATION_IDS has no station number {int(num)}"
                )
            station = station_ids[index]
        connector = _int(settings, prefix + "CONNECTOR", 1, 0)
        fields: dict[str, Any] = {}
        for key, field in (
            ("ENERGY_NEEDED_KWH", "energy_needed_kwh"),
            ("MAX_POWER_KW", "max_power_kw"),
            ("MIN_POWER_KW", "min_power_kw"),
        ):
            value = settings.get_float(prefix + key, minimum=0.0)
            if value is not None:
                fields[field] = value
        for key, field in (("ARRIVAL_TIME", "arrival"), ("DEPARTURE_TIME", "departure")):
            raw = settings.get(prefix + key)
            if raw is not None:
                fields[field] = check_time_value(raw, prefix + key)
        params = SessionParams(**fields)
        if (
            params.max_power_kw is not None
            and params.min_power_kw is not None
            and params.min_power_kw > params.max_power_kw
        ):
            raise ConfigurationError(f"{prefix}MIN_POWER_KW must be <= {prefix}MAX_POWER_KW")
        if (station, connector) in out:
            raise ConfigurationError(f"{prefix}*: station {station!r} connector {connector} is configured twice")
        out[(station, connector)] = params
    return out
