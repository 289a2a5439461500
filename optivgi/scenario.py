"""Reading scenario files and writing schedule files (the neutral JSON exchange format).

A scenario is one planning problem for one site; see the "Scenario format" page of the docs.
Every problem with a file raises :class:`~optivgi.errors.ScenarioError` with a one-line
message naming the field (``evs[2].departure``), the rule and the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from optivgi.algorithms.base import Problem
from optivgi.caps import (
    MAX_CELLS,
    MAX_EVS,
    MAX_FILE_BYTES,
    MAX_MAGNITUDE,
    MAX_RESOLUTION_S,
    MAX_STEPS,
    MAX_YEAR,
    MIN_YEAR,
)
from optivgi.errors import ScenarioError
from optivgi.jsonfile import read_json_file
from optivgi.models.ev import EV
from optivgi.models.schedule import PowerSchedule
from optivgi.models.site import SiteConstraints
from optivgi.planner import build_problem

__all__ = ["Scenario", "load_scenario", "parse_scenario", "write_schedule"]

#: Scenario files larger than this are refused before parsing [bytes].
MAX_SCENARIO_BYTES = MAX_FILE_BYTES

_EV_FIELDS = ("id", "station_id", "connector_id", "arrival", "departure", "energy_kwh", "min_power_kw",
              "max_power_kw")


@attrs.frozen
class Scenario:
    """One site's planning problem as read from a scenario file.

    Attributes:
        name: short id.
        description: free text.
        now: start of step 0 (UTC).
        resolution_s: step length [s].
        horizon_s: plan length [s], a multiple of ``resolution_s``.
        site: site limit (and prices) per step.
        evs: the sessions, connected or expected.
    """

    name: str
    description: str
    now: datetime
    resolution_s: int
    horizon_s: int
    site: SiteConstraints
    evs: tuple[EV, ...]

    @property
    def n_steps(self) -> int:
        """Number of steps in the horizon."""
        return self.horizon_s // self.resolution_s

    def to_problem(self) -> Problem:
        """The vectorised problem an algorithm solves."""
        return build_problem(self.evs, self.site, self.now, resolution_s=self.resolution_s,
                             n_steps=self.n_steps)


def _shown(value: object) -> str:
    """``repr(value)``, shortened to one readable line (a value may be megabytes long)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {len(str(abs(value))) if abs(value) < 10**4000 else 'over 4000'} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(field: str, rule: str, value: object = attrs.NOTHING) -> ScenarioError:
    shown = "" if value is attrs.NOTHING else f", got {_shown(value)}"
    return ScenarioError(f"{field}: {rule}{shown}")


def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        return _raise(_fail(f"{where}{key}", "required field is missing"))
    return obj[key]


def _raise(exc: Exception) -> Any:
    raise exc


def _number(value: Any, field: str, *, minimum: float | None = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field, "must be a number", value)
    if abs(value) > MAX_MAGNITUDE or not math.isfinite(value):
        raise _fail(field, f"must be a finite number of magnitude <= {MAX_MAGNITUDE:g}", value)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise _fail(field, f"must be {'>' if strict else '>='} {minimum:g}", value)
    return float(value)


def _integer(value: Any, field: str, minimum: int, maximum: int = 10**9) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, "must be an integer", value)
    if value < minimum:
        raise _fail(field, f"must be >= {minimum}", value)
    if value > maximum:
        raise _fail(field, f"must be <= {maximum}", value)
    return value


def _time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise _fail(field, "must be an ISO 8601 string", value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(field, "must be an ISO 8601 date-time", value) from None
    if parsed.tzinfo is None:
        raise _fail(field, "must carry a time zone (e.g. a trailing Z)", value)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise _fail(field, f"must lie in the years {MIN_YEAR} to {MAX_YEAR}", value)
    return parsed


def _series_or_number(value: Any, field: str, n_steps: int, *, minimum: float | None) -> float | list[float]:
    if isinstance(value, list):
        if len(value) != n_steps:
            raise _fail(field, f"must have one value per step ({n_steps}), got {len(value)} values")
        return [_number(v, f"{field}[{i}]", minimum=minimum) for i, v in enumerate(value)]
    return _number(value, field, minimum=minimum)


def _parse_ev(raw: Any, i: int, ids: set[str], now: datetime) -> EV:
    where = f"evs[{i}]."
    if not isinstance(raw, dict):
        raise _fail(f"evs[{i}]", "must be an object", raw)
    values = {key: _get(raw, key, where) for key in _EV_FIELDS}
    ev_id = values["id"]
    if not isinstance(ev_id, str) or not ev_id:
        raise _fail(f"{where}id", "must be a non-empty string", ev_id)
    if ev_id in ids:
        raise _fail(f"{where}id", "must be unique in the file", ev_id)
    ids.add(ev_id)
    station = values["station_id"]
    if not isinstance(station, str) or not station:
        raise _fail(f"{where}station_id", "must be a non-empty string", station)
    connector = _integer(values["connector_id"], f"{where}connector_id", 1)
    arrival = _time(values["arrival"], f"{where}arrival")
    departure = _time(values["departure"], f"{where}departure")
    if departure <= arrival:
        raise _fail(f"{where}departure", f"must be after arrival ({values['arrival']})", values["departure"])
    energy = _number(values["energy_kwh"], f"{where}energy_kwh")
    pmin = _number(values["min_power_kw"], f"{where}min_power_kw")
    pmax = _number(values["max_power_kw"], f"{where}max_power_kw")
    if pmax < pmin:
        raise _fail(f"{where}max_power_kw", f"must be >= min_power_kw ({pmin:g})", pmax)
    return EV(ev_id=ev_id, station_id=station, connector_id=connector, arrival_time=arrival,
              departure_time=departure, energy=energy, min_power=pmin, max_power=pmax, active=arrival <= now)


def parse_scenario(doc: Any) -> Scenario:
    """Validate a decoded scenario document and build a :class:`Scenario`.

    Raises:
        ScenarioError: naming the first offending field.
    """
    if not isinstance(doc, dict):
        raise _fail("scenario", "must be a JSON object", type(doc).__name__)
    name = _get(doc, "name", "")
    if not isinstance(name, str):
        raise _fail("name", "must be a string", name)
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", "must be a string", description)
    now = _time(_get(doc, "now", ""), "now")
    resolution = _integer(_get(doc, "resolution_s", ""), "resolution_s", 1, MAX_RESOLUTION_S)
    horizon = _integer(_get(doc, "horizon_s", ""), "horizon_s", resolution)
    if horizon % resolution:
        raise _fail("horizon_s", f"must be a multiple of resolution_s ({resolution})", horizon)
    n_steps = horizon // resolution
    if n_steps > MAX_STEPS:
        raise _fail("horizon_s", f"must give at most {MAX_STEPS} steps of resolution_s ({resolution}), "
                    f"got {n_steps} steps")
    limit = _series_or_number(_get(doc, "site_limit_kw", ""), "site_limit_kw", n_steps, minimum=0.0)
    raw_price = doc.get("price_per_kwh")
    price: list[float] | None = None
    if raw_price is not None:
        if not isinstance(raw_price, list):
            raise _fail("price_per_kwh", "must be null or a list with one number per step", raw_price)
        if len(raw_price) != n_steps:
            raise _fail("price_per_kwh", f"must have one value per step ({n_steps}), got {len(raw_price)} values")
        price = [_number(v, f"price_per_kwh[{i}]", minimum=None) for i, v in enumerate(raw_price)]
    raw_evs = _get(doc, "evs", "")
    if not isinstance(raw_evs, list):
        raise _fail("evs", "must be a list", type(raw_evs).__name__)
    if len(raw_evs) > MAX_EVS:
        raise _fail("evs", f"must hold at most {MAX_EVS} sessions, got {len(raw_evs)}")
    if len(raw_evs) * n_steps > MAX_CELLS:
        raise _fail("evs", f"sessions x steps must be at most {MAX_CELLS}, got {len(raw_evs)} x {n_steps}")
    ids: set[str] = set()
    evs = tuple(_parse_ev(raw, i, ids, now) for i, raw in enumerate(raw_evs))
    return Scenario(name=name, description=description, now=now, resolution_s=resolution,
                    horizon_s=horizon, site=SiteConstraints(limit, price), evs=evs)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file.

    Raises:
        ScenarioError: unreadable, too large, not JSON, or a field breaks a rule; the message
            starts with the file name.
    """
    path = Path(path)
    doc = read_json_file(path, ScenarioError, max_bytes=MAX_SCENARIO_BYTES)
    try:
        return parse_scenario(doc)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def write_schedule(schedule: PowerSchedule, path: str | Path, scenario: str = "") -> None:
    """Write ``schedule`` in the schedule exchange format to ``path``."""
    Path(path).write_text(json.dumps(schedule.to_json(scenario), indent=1) + "\n", encoding="utf-8")
