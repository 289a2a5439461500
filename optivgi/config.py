"""Settings: built once at the edge (the CLI) from options, environment and a .env file.

Precedence, highest first: command-line options, environment variables, the ``.env`` file,
defaults. Nothing here reads the environment at import time; :meth:`Settings.load` is given the
mappings to read. Plugins read their own variables through :meth:`Settings.get`, which follows
the same precedence.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from optivgi.errors import ConfigurationError
from optivgi.models.ev import ChargingRateUnit

__all__ = ["Settings", "mask_url", "read_dotenv"]

logger = logging.getLogger(__name__)

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_dotenv(path: str | Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes.

    A missing file gives an empty mapping; a malformed line raises ConfigurationError naming it.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigurationError(f"{path}:{lineno}: expected KEY=value, got {raw.strip()!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[key] = value
    return out


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    return re.sub(r"(?<=://)([^:/@]+):([^@/]*)@", r"\1:***@", url)


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
        if self.resolution_s <= 0:
            raise ConfigurationError(f"RESOLUTION_S must be > 0, got {self.resolution_s!r}")
        if self.horizon_s < self.resolution_s or self.horizon_s % self.resolution_s:
            raise ConfigurationError(
                f"HORIZON_S must be a positive multiple of RESOLUTION_S ({self.resolution_s}), got {self.horizon_s!r}"
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
            raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise ConfigurationError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
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

        def pick(key: str, env: str, conv: type, default: Any) -> Any:
            if key in cli:
                return cli[key]
            raw = values.get(env)
            if raw is None or raw == "":
                return default
            try:
                return conv(raw)
            except ValueError:
                raise ConfigurationError(f"{env} must be {conv.__name__}, got {raw!r}") from None

        try:
            return cls(
                translation=pick("translation", "OPTIVGI_TRANSLATION", str, "simulated"),
                algorithm=pick("algorithm", "OPTIVGI_ALGORITHM", str, "lp"),
                station_groups=pick("station_groups", "STATION_GROUPS", str, "default"),
                site_power_limit_kw=pick("site_power_limit_kw", "SITE_POWER_LIMIT_KW", float, None),
                voltage=pick("voltage", "VOLTAGE", float, 240.0),
                phases=pick("phases", "PHASES", int, 1),
                charging_rate_unit=_unit(pick("charging_rate_unit", "CHARGING_RATE_UNIT", str, "W")),
                resolution_s=pick("resolution_s", "RESOLUTION_S", int, 60),
                horizon_s=pick("horizon_s", "HORIZON_S", int, 8 * 3600),
                interval_s=pick("interval_s", "INTERVAL_S", float, 60.0),
                values={**values, **{k.upper(): str(v) for k, v in cli.items()}},
            )
        except ValueError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(str(exc)) from None
