"""The CitrineOS docker-compose example, checked without a Docker engine.

The compose file is parsed with PyYAML and its ``${VARIABLES}`` resolved from ``example.env`` the
way docker compose does; the resolved environments of the opti-vgi and simulator services are then
given to the real configuration loaders, so a renamed variable or a wrong URL fails here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from support import require_shared

from optivgi.config import Settings, read_dotenv
from optivgi_citrineos import queries
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.simulator.config import SimulatorConfig, default_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "citrineos"
CONTRACT_SCHEMA = "citrineos-contract/db-schema.txt"  # in ../shared

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")

EXPECTED_SERVICES = {
    "ocpp-db",
    "amqp-broker",
    "minio",
    "citrineos",
    "graphql-engine",
    "hasura-init",
    "opti-vgi",
    "simulator",
}

#: Every variable the example documents, as listed for the demo.
REQUIRED_VARIABLES = [
    "CITRINEOS_PORT",
    "OCPP16_PORT",
    "HASURA_PORT",
    "STATION_IDS",
    "CONNECTORS_PER_STATION",
    "METER_VALUES_INTERVAL",
    "CITRINEOS_WS_URL",
    "SCENARIO_FILE",
    "SEED_ID_TAGS",
    "SITE_POWER_LIMIT_KW",
    "VOLTAGE",
    "STATION_GROUPS",
    "CITRINEOS_API_URL",
    "HASURA_URL",
    "AMQP_URL",
    *(
        f"CONN_{n:02d}_{field}"
        for n in range(1, 7)
        for field in ("ENERGY_NEEDED_KWH", "MAX_POWER_KW", "MIN_POWER_KW", "ARRIVAL_TIME", "DEPARTURE_TIME")
    ),
]


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (EXAMPLE / "docker-compose.yml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(compose_text)
    return data


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_dotenv(EXAMPLE / "example.env")


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _resolve(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env[m.group(1)], value)


def _container_env(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """The environment compose gives a service: env_file (.env = example.env), then environment."""
    out: dict[str, str] = {}
    if ".env" in (service.get("env_file") or []):
        out.update(env)
    for key, value in (service.get("environment") or {}).items():
        out[key] = _resolve(str(value), env)
    return out


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in (service.get("depends_on") or {}).items()}


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert set(services) == EXPECTED_SERVICES
    assert services["citrineos"]["image"] == "ghcr.io/citrineos/citrineos-server:v1.8.3"
    assert services["ocpp-db"]["image"].startswith("postgis/postgis:")
    assert services["amqp-broker"]["image"].startswith("rabbitmq:3")
    assert services["graphql-engine"]["image"].startswith("hasura/graphql-engine:v2.")
    # opti-vgi is built from this repository; the simulator runs the same image.
    build = services["opti-vgi"]["build"]
    assert (EXAMPLE / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == (EXAMPLE / "Dockerfile").resolve()
    assert services["simulator"]["image"] == services["opti-vgi"]["image"]


def test_dockerfile_installs_the_citrineos_extra_from_the_checkout() -> None:
    dockerfile = (EXAMPLE / "Dockerfile").read_text(encoding="utf-8")
    extras = re.search(r"ARG OPTIVGI_EXTRAS=(\S+)", dockerfile)
    assert extras is not None and "citrineos" in extras.group(1).split(",")
    assert 'pip install ".[${OPTIVGI_EXTRAS}]"' in dockerfile
    for path in ("pyproject.toml", "optivgi", "optivgi_citrineos"):
        assert re.search(rf"^COPY {path} ", dockerfile, re.M), path
        assert (ROOT / path).exists()
    ignore = (EXAMPLE / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {"**", "!optivgi/**", "!optivgi_citrineos/**", "!pyproject.toml"} <= set(ignore)


def test_startup_order(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert _depends(services["citrineos"]) == {
        "ocpp-db": "service_healthy",
        "amqp-broker": "service_healthy",
        "minio": "service_started",
    }
    # Hasura tracks CitrineOS's tables, which exist once CitrineOS has migrated its database.
    assert _depends(services["graphql-engine"]) == {"citrineos": "service_healthy"}
    assert _depends(services["hasura-init"]) == {"graphql-engine": "service_healthy"}
    assert _depends(services["opti-vgi"]) == {
        "citrineos": "service_healthy",
        "amqp-broker": "service_healthy",
        "hasura-init": "service_completed_successfully",
    }
    # The chargers start after the idTags are seeded (else StartTransaction is refused).
    assert _depends(services["simulator"])["hasura-init"] == "service_completed_successfully"
    assert _depends(services["simulator"])["opti-vgi"] == "service_started"
    for name, service in services.items():
        for dependency, condition in _depends(service).items():
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"


def test_ports(compose: dict[str, Any], env: dict[str, str]) -> None:
    services = _services(compose)
    assert services["citrineos"]["ports"] == ["${CITRINEOS_PORT}:8080", "${OCPP16_PORT}:8092"]
    assert services["graphql-engine"]["ports"] == ["${HASURA_PORT}:8080"]
    published = [
        _resolve(port, env).split(":")[0] for service in services.values() for port in service.get("ports") or []
    ]
    assert len(published) == len(set(published)), f"two services publish the same host port: {published}"
    assert all(p.isdigit() for p in published)
    assert not {"opti-vgi", "simulator", "hasura-init"} & {n for n, s in services.items() if s.get("ports")}


def test_every_variable_used_is_defined_in_example_env(compose_text: str, env: dict[str, str]) -> None:
    used = {m.group(1) for m in _VAR.finditer(compose_text)}
    assert used, "the compose file uses no variables"
    assert sorted(used - set(env)) == []
    # No defaults hidden in the compose file: example.env is the single place for values.
    assert [m.group(0) for m in _VAR.finditer(compose_text) if m.group(2)] == []


def test_example_env_defines_every_documented_variable(env: dict[str, str]) -> None:
    assert [name for name in REQUIRED_VARIABLES if name not in env] == []


def test_urls_point_at_the_services(compose: dict[str, Any], env: dict[str, str]) -> None:
    services = _services(compose)
    for variable, service, port, scheme in (
        ("CITRINEOS_API_URL", "citrineos", 8080, "http"),
        ("HASURA_URL", "graphql-engine", 8080, "http"),
        ("AMQP_URL", "amqp-broker", 5672, "amqp"),
        ("CITRINEOS_WS_URL", "citrineos", 8092, "ws"),
    ):
        url = urlparse(env[variable])
        assert (url.scheme, url.hostname, url.port) == (scheme, service, port), variable
        assert service in services


def test_opti_vgi_service_wiring(compose: dict[str, Any], env: dict[str, str]) -> None:
    service = _services(compose)["opti-vgi"]
    command = service["command"]
    assert command[0] == "optivgi" and command[command.index("run") :] == ["run", "--translation", "citrineos"]
    for name in ("CITRINEOS_API_URL", "HASURA_URL", "AMQP_URL", "SITE_POWER_LIMIT_KW", "VOLTAGE", "STATION_IDS",
                 "STATION_GROUPS"):
        assert service["environment"][name] == f"${{{name}}}", name
    assert service["env_file"] == [".env"]  # CONN_XX_* and the other settings
    # The environment the container gets is one the translation accepts, for the six stations.
    container = _container_env(service, env)
    settings = Settings.load({"translation": "citrineos"}, environ=container, dotenv=None)
    config = CitrineOSConfig.from_settings(settings)
    stations = tuple(env["STATION_IDS"].split(","))
    assert config.groups == {"default": stations}
    assert config.graphql_url == "http://graphql-engine:8080/v1/graphql"
    assert config.amqp_url == "amqp://guest:guest@amqp-broker:5672"
    assert settings.site_power_limit_kw == 30.0 and settings.voltage == 240.0
    # The fallback share counts the simulator's connectors: 30 kW / (6 stations x 1) = 5 kW.
    assert container["CITRINEOS_CONNECTORS_PER_STATION"] == env["CONNECTORS_PER_STATION"]
    assert config.fallback_share_kw("default") == pytest.approx(5.0)
    for n, station in enumerate(stations, start=1):
        params = config.session_params(station, 1, None)
        assert (params.energy_needed_kwh, params.max_power_kw, params.min_power_kw) == (48.0, 7.2, 1.4), n
        assert params.departure is None and params.arrival is None


def test_simulator_service_wiring(compose: dict[str, Any], env: dict[str, str]) -> None:
    service = _services(compose)["simulator"]
    assert service["command"][0] == "optivgi" and service["command"][-2:] == ["citrineos", "simulate"]
    for name in ("CITRINEOS_WS_URL", "STATION_IDS", "CONNECTORS_PER_STATION", "METER_VALUES_INTERVAL",
                 "SCENARIO_FILE", "SIMULATOR_SPEED", "VOLTAGE"):
        assert service["environment"][name] == f"${{{name}}}", name
    config = SimulatorConfig.from_env(_container_env(service, env))
    assert config.ws_url == "ws://citrineos:8092"
    assert config.station_ids == tuple(env["STATION_IDS"].split(","))
    assert (config.connectors_per_station, config.meter_values_interval_s, config.speed) == (1, 10.0, 1.0)
    assert config.scenario == default_scenario()


def test_seeded_id_tags_cover_the_scenario(env: dict[str, str]) -> None:
    scenario = default_scenario()
    assert {s.id_tag for s in scenario.sessions} <= set(env["SEED_ID_TAGS"].split(","))
    assert {s.station_id for s in scenario.sessions} <= set(env["STATION_IDS"].split(","))


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (EXAMPLE / source).exists(), f"{name} mounts missing {source}"
    assert (EXAMPLE / "citrineos-start.sh").read_text(encoding="utf-8").startswith("#!/bin/sh")


def _load_track_tables() -> Any:
    spec = importlib.util.spec_from_file_location("track_tables", EXAMPLE / "hasura" / "track_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recorded_foreign_keys() -> tuple[list[list[str]], dict[str, set[str]]]:
    """Single-column foreign keys and columns of the tables in the recorded CitrineOS schema."""
    fks: list[list[str]] = []
    columns: dict[str, set[str]] = {}
    table = None
    for line in require_shared(CONTRACT_SCHEMA).read_text(encoding="utf-8").splitlines():
        header = re.search(r'Table "public\.(\w+)"', line)
        if header:
            table = header.group(1)
            columns[table] = set()
            continue
        if table is None:
            continue
        column = re.match(r"^ (\w+)\s+\|", line)
        if column and column.group(1) != "Column":
            columns[table].add(column.group(1))
        fk = re.match(r'^\s+"\w+" FOREIGN KEY \("(\w+)"\) REFERENCES "(\w+)"', line)
        if fk:
            fks.append([table, fk.group(1), fk.group(2)])
    return fks, columns


def test_hasura_relationships_carry_the_names_the_queries_use() -> None:
    track = _load_track_tables()
    fks, columns = _recorded_foreign_keys()
    assert len(fks) > 20
    operations = track.relationship_operations(fks, columns)
    names = {(op["args"]["table"]["name"], op["args"]["name"]) for op in operations}
    needed = {
        ("Transactions", "Connector"),
        ("Transactions", "Authorization"),
        ("Transactions", "MeterValues"),
        ("Transactions", "ChargingStation"),
        ("ChargingStations", "LatestStatusNotifications"),
        ("LatestStatusNotifications", "StatusNotification"),
        ("ChargingProfiles", "ChargingSchedules"),
    }
    assert needed <= names
    # Each is used by a query document.
    documents = " ".join(queries.QUERIES.values())
    assert all(re.search(rf"\b{name}\b", documents) for _, name in needed)
    # Names are unique per table and never hide a column.
    per_table = [(op["args"]["table"]["name"], op["args"]["name"]) for op in operations]
    assert len(per_table) == len(set(per_table))
    assert not [(t, n) for t, n in per_table if n in columns.get(t, set())]
    # A second foreign key to the same table gets a distinct name.
    again = track.relationship_operations([["A", "fooId", "Foos"], ["A", "otherFooId", "Foos"]], {})
    assert [op["args"]["name"] for op in again] == ["Foo", "A", "FooByOtherFooId", "AByOtherFooId"]


def test_readme_documents_every_variable(env: dict[str, str]) -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    missing = [name for name in env if not name.startswith("CONN_") and f"`{name}`" not in readme]
    assert missing == []
    assert "CONN_XX_" in readme
    assert "optivgi citrineos verify" in readme
