"""Cars as they really are, for the simulated site: on-board limits, taper, rogue chargers.

A scenario EV may carry an optional ``"car"`` object (files without it stay valid; the
scenario parser ignores it and :func:`parse_cars` reads it)::

    "car": {"onboard_kw": 3.7, "battery_kwh": 50, "rogue": {"after_s": 600, "until_s": 3000}}

- ``onboard_kw``: the car's on-board charger limit [kW] (> 0); the car draws at most
  ``min(max_power_kw, onboard_kw)`` whatever it is allowed. Absent: ``max_power_kw``.
- ``battery_kwh``: battery size [kWh] (> 0) for the taper: the session ends with a full
  battery, the car takes its max up to 80 % state of charge, then linearly less to 0 at full,
  and stops when full (its need met). Absent: the replay's ``battery_kwh`` (or no taper).
- ``rogue``: the charger ignores its profiles and draws what the car takes: ``"always"``, or
  ``{"after_s": A, "until_s": U}`` — from ``A`` seconds after arrival (default 0) until ``U``
  seconds after arrival (default: the end of the session), when it complies again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from optivgi.errors import ScenarioError
from optivgi.jsonfile import read_json_file

__all__ = ["CarModel", "load_cars", "parse_cars"]


@attrs.frozen
class CarModel:
    """How one scenario car behaves in the replay (see the module docs)."""

    onboard_kw: float | None = None
    battery_kwh: float | None = None
    rogue_after_s: float | None = None
    rogue_until_s: float | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("onboard_kw", "battery_kwh"):
            value = getattr(self, name)
            if value is not None and not (0.0 < value < math.inf):
                raise ValueError(f"'{name}' must be > 0 and finite, got {value!r}")
        if self.rogue_after_s is not None and not (0.0 <= self.rogue_after_s < math.inf):
            raise ValueError(f"'rogue_after_s' must be >= 0 and finite, got {self.rogue_after_s!r}")
        if self.rogue_until_s is not None and (self.rogue_after_s is None
                                               or not self.rogue_until_s > self.rogue_after_s):
            raise ValueError("'rogue_until_s' needs 'rogue_after_s' and must be after it")

    def max_kw(self, station_max_kw: float) -> float:
        """The most this car draws on a connector allowing ``station_max_kw`` [kW]."""
        return station_max_kw if self.onboard_kw is None else min(station_max_kw, self.onboard_kw)

    def rogue_at(self, since_arrival_s: float) -> bool:
        """True when the charger ignores its profile ``since_arrival_s`` after the arrival."""
        if self.rogue_after_s is None or since_arrival_s < self.rogue_after_s:
            return False
        return self.rogue_until_s is None or since_arrival_s < self.rogue_until_s

    def rogue_switches_s(self) -> tuple[float, ...]:
        """Seconds after arrival at which the charger starts or stops ignoring its profile."""
        return tuple(t for t in (self.rogue_after_s, self.rogue_until_s) if t is not None)


def _num(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}.{key}: must be a number, got {value!r}")
    return float(value)


def _car(raw: Any, where: str) -> CarModel:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be an object, got {type(raw).__name__}")
    unknown = set(raw) - {"onboard_kw", "battery_kwh", "rogue"}
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {sorted(unknown)}")
    rogue = raw.get("rogue")
    after = until = None
    if rogue == "always":
        after = 0.0
    elif isinstance(rogue, dict):
        after = _num(rogue, "after_s", f"{where}.rogue")
        after = 0.0 if after is None else after
        until = _num(rogue, "until_s", f"{where}.rogue")
    elif rogue is not None:
        raise ScenarioError(f"{where}.rogue: must be \"always\" or an object, got {rogue!r}")
    try:
        return CarModel(onboard_kw=_num(raw, "onboard_kw", where), battery_kwh=_num(raw, "battery_kwh", where),
                        rogue_after_s=after, rogue_until_s=until)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def parse_cars(doc: Any) -> dict[str, CarModel]:
    """The ``car`` objects of a decoded scenario document, by EV id (EVs without one are left out).

    Raises:
        ScenarioError: a ``car`` object breaks a rule (named by its EV).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("evs"), list):
        return {}
    out: dict[str, CarModel] = {}
    for i, raw in enumerate(doc["evs"]):
        if isinstance(raw, dict) and raw.get("car") is not None:
            out[str(raw.get("id"))] = _car(raw["car"], f"evs[{i}].car")
    return out


def load_cars(path: str | Path) -> dict[str, CarModel]:
    """The ``car`` objects of a scenario file (see :func:`parse_cars`)."""
    path = Path(path)
    doc = read_json_file(path, ScenarioError, max_bytes=64 * 1024 * 1024)
    try:
        return parse_cars(doc)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
