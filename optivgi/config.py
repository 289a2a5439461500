"""Settings: built once at the edge (the CLI) from options, environment and a .env file.

Precedence, highest first: command-line options, environment variables, the ``.env`` file,
defaults. Nothing here reads the environment at import time; :meth:`Settings.load` is given the
mappings to read. Plugins read their own variables through :meth:`Settings.get`, which follows
the same precedence.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from optivgi.caps import MAX_RESOLUTION_S, MAX_STEPS
from optivgi.errors import ConfigurationError
from optivgi.models.ev import ChargingRateUnit

__all__ = ["Settings", "mask_url", "read_dotenv"]

logger = logging.getLogger(__name__)



def read_dotenv(path: str | Path) -> dict[str, str]:
    """Parse a ``.env`` file with python-dotenv: ``KEY=value`` lines, ``#`` comments, quotes, ``export``.

    Values are taken literally (no ``${VAR}`` expansion). A UTF-8 byte-order mark is accepted. A
    missing file gives an empty mapping; a file that is not UTF-8 or a malformed line raises
    ConfigurationError naming the file (and the line).
    """
    from dotenv.parser import parse_stream

    from optivgi.jsonfile import read_text_file

    path = Path(path)
    if not path.is_file():
        return {}
    text = read_text_file(path, ConfigurationError)
    out: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.string.strip()
        if binding.error or (binding.key is not None and binding.value is None):
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise ConfigurationError(f"{path}:{binding.original.line}: expected KEY=value, got {shown!r}")
        if binding.key is not None and binding.value is not None:
            out[binding.key] = binding.value
    return out


_USERINFO = re.compile(r"(?<=://)([^:/@\s?#]*)(?::(\S*))?@")


def mask_url(url: str) -> str:
    """``url`` (or any text holding URLs) with every password replaced by ``***`` (safe to log).

    A password may contain ``/`` or ``:``; a user name without a password is masked too (it is
    often a token).
    """
    return _USERINFO.sub(lambda m: (m.group(1) + ":***@") if m.group(2) is not None else "***@", url)


def _shown(raw: str) -> str:
    """``repr(raw)`` short enough for a one-line error."""
    return repr(raw) if len(raw) <= 40 else repr(raw[:30]) + f" ... ({len(raw)} characters)"


def _whole(raw: str) -> int:
    """A whole number, also written as ``1e3`` or ``3600.0``; ValueError otherwise."""
    text = raw.strip()
    if len(text) > 30:
        raise ValueError(text)
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not math.isfinite(value) or value != int(value):
            raise
        return int(value)


def _unit(value: Any) -> ChargingRateUnit:
    text = str(value).strip().upper()
    if text not in ("W", "A"):
        raise ConfigurationError(f"CHARGING_RATE_UNIT must be W or A, got {value!r}")
    return ChargingRateUnit(text)


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    groups = tuple(g.strip() for g in value if g and g.strip())
    return groups


@attrs.frozen(kw_only=True)
class Settings:
    """Validated settings of one opti-vgi process.

    Attributes:
        translation: name of the translation plugin (entry point in ``optivgi.translations``).
        algorithm: name of the algorithm plugin (``optivgi.algorithms``).
        station_groups: groups scheduled each cycle (``STATION_GROUPS``, comma-separated).
        site_power_limit_kw: site limit [kW] (``SITE_POWER_LIMIT_KW``), if set.
        voltage: voltage [V] for amp conversions (``VOLTAGE``).
        phases: phases for amp conversions (``PHASES``).
        charging_rate_unit: unit of the profiles sent (``CHARGING_RATE_UNIT``: W or A).
        resolution_s: planning step [s] (``RESOLUTION_S``).
        horizon_s: planning horizon [s] (``HORIZON_S``).
        interval_s: periodic cycle interval [s] (``INTERVAL_S``).
        values: every raw variable (environment over .env) for plugins; see :meth:`get`.
    """

    translation: str = "simulated"
    algorithm: str = "lp"
    station_groups: tuple[str, ...] = attrs.field(default=("default",), converter=_groups)
    site_power_limit_kw: float | None = None
    voltage: float = 240.0
    phases: int = 1
    charging_rate_unit: ChargingRateUnit = attrs.field(default=ChargingRateUnit.W, converter=ChargingRateUnit)
    resolution_s: int = 60
    horizon_s: int = 8 * 3600
    interval_s: float = 60.0
    values: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.station_groups:
            raise ConfigurationError("STATION_GROUPS must name at least one group")
        if self.site_power_limit_kw is not None and (
            not math.isfinite(self.site_power_limit_kw) or self.site_power_limit_kw < 0
        ):
            raise ConfigurationError(f"SITE_POWER_LIMIT_KW must be a number >= 0, got {self.site_power_limit_kw!r}")
        if not (0 < self.voltage < 2000):
            raise ConfigurationError(f"VOLTAGE must be between 0 and 2000 V, got {self.voltage!r}")
        if self.phases not in (1, 2, 3):
            raise ConfigurationError(f"PHASES must be 1, 2 or 3, got {self.phases!r}")
        if not 0 < self.resolution_s <= MAX_RESOLUTION_S:
            raise ConfigurationError(f"RESOLUTION_S must be in 1..{MAX_RESOLUTION_S} s, got {self.resolution_s!r}")
        if self.horizon_s < self.resolution_s or self.horizon_s % self.resolution_s:
            raise ConfigurationError(
                f"HORIZON_S must be a positive multiple of RESOLUTION_S ({self.resolution_s}), got {self.horizon_s!r}"
            )
        if self.horizon_s // self.resolution_s > MAX_STEPS:
            raise ConfigurationError(
                f"HORIZON_S / RESOLUTION_S must give at most {MAX_STEPS} steps, got "
                f"{self.horizon_s // self.resolution_s} (HORIZON_S={self.horizon_s}, RESOLUTION_S={self.resolution_s})"
            )
        if not (0 < self.interval_s <= 86400):
            raise ConfigurationError(f"INTERVAL_S must be in (0, 86400] seconds, got {self.interval_s!r}")

    @property
    def n_steps(self) -> int:
        """Number of planning steps."""
        return self.horizon_s // self.resolution_s

    def get(self, name: str, default: str | None = None) -> str | None:
        """A raw variable (environment over .env), or ``default``; empty strings count as unset."""
        value = self.values.get(name)
        return default if value is None or value == "" else value

    def get_float(self, name: str, default: float | None = None, *, minimum: float | None = None) -> float | None:
        """A variable as a finite float, validated; raises ConfigurationError naming it."""
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number, got {_shown(raw)}") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise ConfigurationError(f"{name} must be a finite number >= {minimum}, got {_shown(raw)}")
        return value

    @classmethod
    def load(
        cls,
        cli: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        dotenv: str | Path | None = ".env",
    ) -> Settings:
        """Merge CLI options (non-None values), ``environ`` (default ``os.environ``) and ``dotenv``.

        Raises:
            ConfigurationError: a value is missing, of the wrong type or out of range; the
                message names the variable.
        """
        values: dict[str, str] = dict(read_dotenv(dotenv)) if dotenv else {}
        values.update(os.environ if environ is None else environ)
        cli = {k: v for k, v in (cli or {}).items() if v is not None}

        def pick(key: str, env: str, conv: Any, default: Any) -> Any:
            if key in cli:
                return cli[key]
            raw = values.get(env)
            if raw is None or raw == "":
                return default
            try:
                value = conv(raw)
            except ValueError:
                kind = "a whole number" if conv is _whole else "a number" if conv is float else conv.__name__
                raise ConfigurationError(f"{env} must be {kind}, got {_shown(raw)}") from None
            return value

        try:
            return cls(
                translation=pick("translation", "OPTIVGI_TRANSLATION", str, "simulated"),
                algorithm=pick("algorithm", "OPTIVGI_ALGORITHM", str, "lp"),
                station_groups=pick("station_groups", "STATION_GROUPS", str, "default"),
                site_power_limit_kw=pick("site_power_limit_kw", "SITE_POWER_LIMIT_KW", float, None),
                voltage=pick("voltage", "VOLTAGE", float, 240.0),
                phases=pick("phases", "PHASES", _whole, 1),
                charging_rate_unit=_unit(pick("charging_rate_unit", "CHARGING_RATE_UNIT", str, "W")),
                resolution_s=pick("resolution_s", "RESOLUTION_S", _whole, 60),
                horizon_s=pick("horizon_s", "HORIZON_S", _whole, 8 * 3600),
                interval_s=pick("interval_s", "INTERVAL_S", float, 60.0),
                values={**values, **{k.upper(): str(v) for k, v in cli.items()}},
            )
        except ValueError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(str(exc)) from None
