"""Settings and scenarios of the charger simulator.

Nothing here reads the environment on import: :meth:`SimulatorConfig.from_env` reads a mapping it
is given (the CLI passes ``os.environ`` merged with a ``.env`` file).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from optivgi.caps import MAX_EVS
from optivgi.errors import ConfigurationError, ScenarioError

__all__ = [
    "DEFAULT_SCENARIO_RESOURCE",
    "DEFAULT_STATION_IDS",
    "DEFAULT_WS201_URL",
    "DEFAULT_WS_URL",
    "EVSpec",
    "Scenario",
    "SessionSpec",
    "SimulatorConfig",
    "default_scenario",
    "load_scenario",
]

DEFAULT_STATION_IDS: tuple[str, ...] = tuple(f"OPTIVGI-STATION-{i:02d}" for i in range(1, 7))
#: CitrineOS's OCPP 1.6J websocket on this machine (its ``local`` configuration).
DEFAULT_WS_URL = "ws://127.0.0.1:8092"
#: CitrineOS's OCPP 2.0.1 websocket on this machine (security profile 0).
DEFAULT_WS201_URL = "ws://127.0.0.1:8081"
OCPP_VERSIONS = ("1.6", "2.0.1")
#: The built-in scenario: six EVs arriving 60 s apart for 10-minute sessions.
DEFAULT_SCENARIO_RESOURCE = "simulator-default.json"

ProfileClock = Literal["simulated", "wall"]


@dataclass(frozen=True)
class EVSpec:
    """The car of a session.

    Attributes:
        capacity_kwh: usable battery capacity.
        arrival_soc: state of charge on arrival, 0..1.
        target_soc: the car stops drawing at this state of charge, 0..1.
        max_charge_rate_kw: the most the car accepts (constant up to 80 %, then tapering to 0 at 100 %).
    """

    capacity_kwh: float = 60.0
    arrival_soc: float = 0.20
    target_soc: float = 1.0
    max_charge_rate_kw: float = 7.2

    def __post_init__(self) -> None:
        _positive(self.capacity_kwh, "capacity_kwh")
        _positive(self.max_charge_rate_kw, "max_charge_rate_kw")
        for name in ("arrival_soc", "target_soc"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a fraction between 0 and 1 (0.2 = 20 %), got {value!r}")


@dataclass(frozen=True)
class SessionSpec:
    """One scheduled charging session of a scenario.

    Attributes:
        station_id: the charge point the car plugs into.
        connector_id: its connector (1-based).
        arrive_offset_s: simulated seconds after the simulator's start when the car plugs in.
        depart_offset_s: simulated seconds after the start when it leaves (None: stays until
            RemoteStopTransaction or :meth:`Simulator.stop_session`).
        ev: the car.
        id_tag: idTag presented for Authorize/StartTransaction.
        auto_start: start the transaction on arrival; when False the car waits plugged in
            (Preparing) for a RemoteStartTransaction.
    """

    station_id: str
    connector_id: int = 1
    arrive_offset_s: float = 0.0
    depart_offset_s: float | None = 3600.0
    ev: EVSpec = field(default_factory=EVSpec)
    id_tag: str = "OPTIVGI-AUTO"
    auto_start: bool = True

    def __post_init__(self) -> None:
        if not self.station_id:
            raise ValueError("station_id must not be empty")
        if isinstance(self.connector_id, bool) or not isinstance(self.connector_id, int) or self.connector_id < 1:
            raise ValueError(f"connector_id must be an integer >= 1, got {self.connector_id!r}")
        if not math.isfinite(self.arrive_offset_s) or self.arrive_offset_s < 0:
            raise ValueError(f"arrive_offset_s must be >= 0, got {self.arrive_offset_s!r}")
        if self.depart_offset_s is not None and self.depart_offset_s <= self.arrive_offset_s:
            raise ValueError(
                f"depart_offset_s ({self.depart_offset_s}) must be after arrive_offset_s ({self.arrive_offset_s})"
            )
        if not self.id_tag or len(self.id_tag) > 20:
            raise ValueError(f"id_tag must have 1 to 20 characters (OCPP 1.6 IdToken), got {self.id_tag!r}")


_SESSION_KEYS = {
    "station_id", "connector_id", "arrive_offset_s", "depart_offset_s", "capacity_kwh", "arrival_soc",
    "target_soc", "max_charge_rate_kw", "id_tag", "auto_start",
}


@dataclass(frozen=True)
class Scenario:
    """Scheduled sessions, read from JSON ``{"description": ..., "sessions": [...]}``.

    Each session object has ``station_id`` (required), ``connector_id``, ``arrive_offset_s``,
    ``depart_offset_s`` (null: no departure), ``capacity_kwh``, ``arrival_soc``, ``target_soc``,
    ``max_charge_rate_kw``, ``id_tag`` and ``auto_start``. An optional ``stations`` object sets the
    OCPP version per station: ``{"stations": {"ST-4": {"ocpp": "2.0.1"}}}`` (default 1.6).
    """

    sessions: tuple[SessionSpec, ...]
    description: str = ""
    station_protocols: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, data: Any, source: str = "scenario") -> Scenario:
        """Build a scenario from its JSON document.

        Raises:
            ScenarioError: a field is missing, unknown or out of range; the message names it.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("sessions"), list):
            raise ScenarioError(f"{source}: expected an object with a 'sessions' list")
        unknown_top = set(data) - {"description", "sessions", "stations"}
        if unknown_top:
            raise ScenarioError(f"{source}: unknown keys {sorted(unknown_top)}")
        protocols: list[tuple[str, str]] = []
        stations = data.get("stations", {})
        if not isinstance(stations, Mapping):
            raise ScenarioError(f"{source}: 'stations' must be an object of station id -> settings")
        for sid, settings in stations.items():
            if not isinstance(settings, Mapping) or set(settings) - {"ocpp"}:
                raise ScenarioError(f"{source}: stations.{sid}: expected {{\"ocpp\": \"1.6\" or \"2.0.1\"}}")
            version = settings.get("ocpp", "1.6")
            if version not in OCPP_VERSIONS:
                raise ScenarioError(f"{source}: stations.{sid}.ocpp must be 1.6 or 2.0.1, got {version!r}")
            protocols.append((str(sid), str(version)))
        sessions: list[SessionSpec] = []
        for i, raw in enumerate(data["sessions"]):
            where = f"{source}: sessions[{i}]"
            if not isinstance(raw, Mapping):
                raise ScenarioError(f"{where}: expected an object")
            unknown = set(raw) - _SESSION_KEYS
            if unknown:
                raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
            if "station_id" not in raw:
                raise ScenarioError(f"{where}: station_id is required")
            defaults = EVSpec()
            try:
                ev = EVSpec(
                    capacity_kwh=float(raw.get("capacity_kwh", defaults.capacity_kwh)),
                    arrival_soc=float(raw.get("arrival_soc", defaults.arrival_soc)),
                    target_soc=float(raw.get("target_soc", defaults.target_soc)),
                    max_charge_rate_kw=float(raw.get("max_charge_rate_kw", defaults.max_charge_rate_kw)),
                )
                depart = raw.get("depart_offset_s", 3600.0)
                auto_start = raw.get("auto_start", True)
                if not isinstance(auto_start, bool):
                    raise ValueError(f"auto_start must be true or false, got {auto_start!r}")
                connector = raw.get("connector_id", 1)
                sessions.append(
                    SessionSpec(
                        station_id=str(raw["station_id"]),
                        connector_id=connector,
                        arrive_offset_s=float(raw.get("arrive_offset_s", 0.0)),
                        depart_offset_s=None if depart is None else float(depart),
                        ev=ev,
                        id_tag=str(raw.get("id_tag", "OPTIVGI-AUTO")),
                        auto_start=auto_start,
                    )
                )
            except (TypeError, ValueError, OverflowError) as exc:
                raise ScenarioError(f"{where}: {exc}") from None
        scenario = cls(tuple(sessions), str(data.get("description", "")), tuple(protocols))
        scenario.check_overlaps(source)
        return scenario

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read a scenario file.

        Raises:
            ScenarioError: the file cannot be read, is not JSON, or is not a valid scenario.
        """
        from optivgi.jsonfile import read_json_file

        try:
            Path(path).stat()
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
        # Size, encoding, nesting and digit caps as for every scenario file (optivgi.caps).
        data = read_json_file(path, ScenarioError)
        if isinstance(data, Mapping) and isinstance(data.get("sessions"), list) and len(data["sessions"]) > MAX_EVS:
            raise ScenarioError(f"{path}: sessions: at most {MAX_EVS} sessions, got {len(data['sessions'])}")
        return cls.from_dict(data, str(path))

    def check_overlaps(self, source: str = "scenario") -> None:
        """Raise ScenarioError when two sessions share a connector at the same time."""
        by_connector: dict[tuple[str, int], list[SessionSpec]] = {}
        for s in self.sessions:
            by_connector.setdefault((s.station_id, s.connector_id), []).append(s)
        for (station, connector), items in by_connector.items():
            items.sort(key=lambda s: s.arrive_offset_s)
            for a, b in itertools.pairwise(items):
                if a.depart_offset_s is None or b.arrive_offset_s < a.depart_offset_s:
                    raise ScenarioError(
                        f"{source}: two sessions overlap on {station} connector {connector} "
                        f"(arrivals at {a.arrive_offset_s:g} s and {b.arrive_offset_s:g} s)"
                    )


def default_scenario() -> Scenario:
    """The built-in scenario (six EVs, 60 s apart, 10-minute sessions, 60 kWh, 20 % to 100 %, 7.2 kW)."""
    text = resources.files("optivgi_citrineos").joinpath("data", DEFAULT_SCENARIO_RESOURCE).read_text("utf-8")
    return Scenario.from_dict(json.loads(text), f"optivgi_citrineos/data/{DEFAULT_SCENARIO_RESOURCE}")


def load_scenario(value: str | Path | None) -> Scenario | None:
    """A scenario from a setting: a path, ``"default"`` (the built-in one), or empty/None/``"none"`` (manual mode)."""
    if value is None:
        return None
    text = str(value).strip()
    if text == "" or text.lower() in ("none", "manual"):
        return None
    if text.lower() == "default":
        return default_scenario()
    return Scenario.load(text)


def _positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator needs (environment variable in brackets for :meth:`from_env`).

    Attributes:
        ws_url: the CSMS's OCPP 1.6J websocket base (``CITRINEOS_WS_URL``); each station connects
            to ``<ws_url>/<stationId>`` with subprotocol ``ocpp1.6``.
        station_ids: the charge points (``STATION_IDS``, comma-separated).
        connectors_per_station: connectors of each (``CONNECTORS_PER_STATION``).
        meter_values_interval_s: simulated seconds between MeterValues during a transaction
            (``METER_VALUES_INTERVAL``).
        speed: how many times faster than real time the simulated clock runs (``SIMULATOR_SPEED``).
        scenario: scheduled sessions (``SCENARIO_FILE``: a path, ``default``, or empty for manual
            mode where sessions start only by RemoteStartTransaction or :meth:`Simulator.start_session`).
        voltage: V per phase for A <-> W (``VOLTAGE``).
        phases: phases the chargers use (``PHASES``).
        evse_max_current_a: the connectors' own current limit (``EVSE_MAX_CURRENT_A``), reported by
            GetCompositeSchedule where no profile limits.
        default_ev: the car used by RemoteStartTransaction on an empty connector.
        heartbeat_interval_s: wall seconds between Heartbeats (None: the interval the CSMS gives
            in the BootNotification answer).
        profile_clock: which clock profile times (startSchedule, validFrom, validTo) are read on:
            ``simulated`` (default) or ``wall`` (for a CSMS-side optimizer running in real time
            while the simulator runs faster).
        response_timeout_s: wall seconds to wait for the CSMS's answer to a call (CitrineOS: 30).
        reconnect_initial_s / reconnect_max_s: backoff between connection attempts (doubling).
        vendor / model: BootNotification's chargePointVendor / chargePointModel.
        meter_start_wh: energy register of every connector at start.
        frame_log_size: how many websocket frames :meth:`Simulator.frames` keeps.
        tick_s: wall seconds between physics updates (at most; faster speeds update more often).
        ocpp_version: what every station speaks, ``1.6`` or ``2.0.1`` (``OCPP_VERSION``); the
            scenario's ``stations`` and ``ocpp201_stations`` choose per station.
        ws201_url: the CSMS's OCPP 2.0.1 websocket base (``CITRINEOS_WS201_URL``; subprotocol
            ``ocpp2.0.1``).
        ocpp201_stations: stations that speak OCPP 2.0.1 whatever ``ocpp_version`` says
            (``CITRINEOS_OCPP201_STATIONS``, the plugin's setting of the same name).
    """

    ws_url: str = DEFAULT_WS_URL
    station_ids: tuple[str, ...] = DEFAULT_STATION_IDS
    connectors_per_station: int = 2
    meter_values_interval_s: float = 10.0
    speed: float = 1.0
    scenario: Scenario | None = None
    voltage: float = 240.0
    phases: int = 1
    evse_max_current_a: float = 32.0
    default_ev: EVSpec = field(default_factory=EVSpec)
    heartbeat_interval_s: float | None = None
    profile_clock: ProfileClock = "simulated"
    response_timeout_s: float = 30.0
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 30.0
    vendor: str = "opti-vgi"
    model: str = "optivgi-sim"
    meter_start_wh: int = 0
    frame_log_size: int = 20_000
    tick_s: float = 0.5
    ocpp_version: str = "1.6"
    ws201_url: str = DEFAULT_WS201_URL
    ocpp201_stations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            self._check()
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def _check(self) -> None:
        for name in ("ws_url", "ws201_url"):
            if not re.match(r"^wss?://[^/]+", getattr(self, name)):
                raise ValueError(f"{name} must be a ws:// or wss:// URL, got {getattr(self, name)!r}")
        if self.ocpp_version not in OCPP_VERSIONS:
            raise ValueError(f"ocpp_version must be 1.6 or 2.0.1, got {self.ocpp_version!r}")
        if not self.station_ids:
            raise ValueError("station_ids must not be empty")
        if len(set(self.station_ids)) != len(self.station_ids):
            raise ValueError(f"station_ids has duplicates: {list(self.station_ids)}")
        for sid in self.station_ids:
            if not sid or "/" in sid or len(sid) > 48:
                raise ValueError(f"station id {sid!r} must be 1 to 48 characters without '/'")
        if isinstance(self.connectors_per_station, bool) or not 1 <= self.connectors_per_station <= 32:
            raise ValueError(f"connectors_per_station must be 1..32, got {self.connectors_per_station!r}")
        for name in ("meter_values_interval_s", "speed", "voltage", "evse_max_current_a", "response_timeout_s",
                     "reconnect_initial_s", "reconnect_max_s", "tick_s"):
            _positive(getattr(self, name), name)
        if self.phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, got {self.phases!r}")
        if self.heartbeat_interval_s is not None:
            _positive(self.heartbeat_interval_s, "heartbeat_interval_s")
        if self.profile_clock not in ("simulated", "wall"):
            raise ValueError(f"profile_clock must be 'simulated' or 'wall', got {self.profile_clock!r}")
        if self.meter_start_wh < 0 or self.frame_log_size < 0:
            raise ValueError("meter_start_wh and frame_log_size must be >= 0")
        if self.scenario is not None:
            known = set(self.station_ids)
            for i, s in enumerate(self.scenario.sessions):
                if s.station_id not in known:
                    raise ValueError(f"scenario session {i} uses station {s.station_id!r}, not in station_ids")
                if s.connector_id > self.connectors_per_station:
                    raise ValueError(
                        f"scenario session {i} uses connector {s.connector_id} but stations have "
                        f"{self.connectors_per_station}"
                    )

    def ocpp_version_of(self, station_id: str) -> str:
        """The OCPP version ``station_id`` speaks: 2.0.1 when listed anywhere, else ``ocpp_version``."""
        if station_id in self.ocpp201_stations:
            return "2.0.1"
        if self.scenario is not None:
            for sid, version in self.scenario.station_protocols:
                if sid == station_id:
                    return version
        return self.ocpp_version

    @property
    def evse_max_w(self) -> float:
        """A connector's own limit in W."""
        return self.evse_max_current_a * self.voltage * self.phases

    def with_(self, **changes: Any) -> SimulatorConfig:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> SimulatorConfig:
        """Build a config from environment-style variables; ``overrides`` (non-None) win.

        Unset variables keep the defaults; ``SCENARIO_FILE`` unset means the built-in scenario,
        set but empty means manual mode.

        Raises:
            ConfigurationError: a variable cannot be parsed or is out of range.
            ScenarioError: the scenario file is invalid.
        """
        values: dict[str, Any] = {}

        def get(name: str) -> str | None:
            raw = environ.get(name)
            return None if raw is None else raw.strip()

        def number(name: str, conv: type) -> Any:
            raw = get(name)
            if raw is None or raw == "":
                return None
            try:
                return conv(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be a {conv.__name__}, got {raw!r}") from None

        if (url := get("CITRINEOS_WS_URL")):
            values["ws_url"] = url.rstrip("/")
        if (url := get("CITRINEOS_WS201_URL")):
            values["ws201_url"] = url.rstrip("/")
        if (version := get("OCPP_VERSION")):
            values["ocpp_version"] = version
        if (v201 := get("CITRINEOS_OCPP201_STATIONS")):
            values["ocpp201_stations"] = tuple(s.strip() for s in v201.split(",") if s.strip())
        if (ids := get("STATION_IDS")):
            values["station_ids"] = tuple(s.strip() for s in ids.split(",") if s.strip())
        for key, env, conv in (
            ("connectors_per_station", "CONNECTORS_PER_STATION", int),
            ("meter_values_interval_s", "METER_VALUES_INTERVAL", float),
            ("speed", "SIMULATOR_SPEED", float),
            ("voltage", "VOLTAGE", float),
            ("phases", "PHASES", int),
            ("evse_max_current_a", "EVSE_MAX_CURRENT_A", float),
        ):
            value = number(env, conv)
            if value is not None:
                values[key] = value
        scenario_setting = environ.get("SCENARIO_FILE")
        values["scenario"] = default_scenario() if scenario_setting is None else load_scenario(scenario_setting)
        valid = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in valid:
                raise ConfigurationError(f"unknown simulator setting {key!r}")
            if value is not None:
                values[key] = value
        return cls(**values)
