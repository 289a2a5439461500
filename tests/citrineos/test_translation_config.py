"""Configuration of the CitrineOS translation: variables, groups, CONN_XX_*, the site file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from optivgi.config import Settings
from optivgi.errors import ConfigurationError
from optivgi.models.ev import ChargingRateUnit
from optivgi_citrineos.config import CitrineOSConfig, group_variable
from optivgi_citrineos.sessions import build_ev
from optivgi_citrineos.sitefile import SiteFile, resolve_after, resolve_before
from optivgi_citrineos.translation import CitrineOSTranslation, SessionRow, delivered_energy_wh

BASE = {
    "CITRINEOS_API_URL": "http://citrineos:8080/",
    "HASURA_URL": "http://graphql-engine:8080",
    "STATION_IDS": "ST-01,ST-02,ST-03",
    "SITE_POWER_LIMIT_KW": "30",
}


def settings(groups: tuple[str, ...] = ("default",), **values: str) -> Settings:
    merged = {**BASE, **values}
    return Settings(station_groups=groups, voltage=240.0, values={k: v for k, v in merged.items() if v != ""})


def test_defaults_and_urls() -> None:
    cfg = CitrineOSConfig.from_settings(settings(HASURA_ADMIN_SECRET="s3cret", AMQP_URL="amqp://u:pw@rabbit:5672/"))
    assert cfg.api_url == "http://citrineos:8080"
    assert cfg.graphql_url == "http://graphql-engine:8080/v1/graphql"
    assert (cfg.tenant_id, cfg.stack_level, cfg.profile_id_base, cfg.answer_timeout_s) == (1, 1, 9000, 30.0)
    assert cfg.groups == {"default": ("ST-01", "ST-02", "ST-03")}
    described = json.dumps(cfg.describe())
    assert "s3cret" not in described and "pw@" not in described and "u:***@rabbit" in described
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"CITRINEOS_API_URL": ""}, "CITRINEOS_API_URL"),
        ({"CITRINEOS_API_URL": "citrineos:8080"}, "CITRINEOS_API_URL"),
        ({"HASURA_URL": ""}, "HASURA_URL"),
        ({"SITE_POWER_LIMIT_KW": "lots"}, "SITE_POWER_LIMIT_KW"),
        ({"SITE_POWER_LIMIT_KW": ""}, "SITE_POWER_LIMIT_KW"),
        ({"CITRINEOS_TENANT_ID": "one"}, "CITRINEOS_TENANT_ID"),
        ({"CITRINEOS_ANSWER_TIMEOUT_S": "0"}, "CITRINEOS_ANSWER_TIMEOUT_S"),
        ({"STATION_IDS": ""}, "STATION_GROUP_DEFAULT"),
        ({"CONN_07_MAX_POWER_KW": "7"}, "CONN_07_STATION"),
        ({"CONN_01_DEPARTURE_TIME": "late"}, "CONN_01_DEPARTURE_TIME"),
        ({"CONN_01_MIN_POWER_KW": "8", "CONN_01_MAX_POWER_KW": "7"}, "CONN_01_MIN_POWER_KW"),
        ({"CITRINEOS_SITE_FILE": "/nonexistent/site.json"}, "CITRINEOS_SITE_FILE"),
    ],
)
def test_bad_values_name_the_variable(values: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        CitrineOSConfig.from_settings(settings(**values))


def test_sql_path_without_hasura() -> None:
    cfg = CitrineOSConfig.from_settings(settings(HASURA_URL="", CITRINEOS_DB_DSN="postgresql://u:pw@db/citrine"))
    assert cfg.graphql_url is None and cfg.describe()["read_path"] == "sql"
    assert "pw" not in json.dumps(cfg.describe())


def test_groups_need_their_own_station_lists() -> None:
    with pytest.raises(ConfigurationError, match="STATION_GROUP_NORTH_LOT"):
        CitrineOSConfig.from_settings(settings(("north-lot", "south")))
    cfg = CitrineOSConfig.from_settings(
        settings(
            ("north-lot", "south"),
            STATION_GROUP_NORTH_LOT="ST-01",
            STATION_GROUP_SOUTH="ST-02, ST-03",
            SITE_POWER_LIMIT_KW_SOUTH="11",
        )
    )
    assert cfg.groups == {"north-lot": ("ST-01",), "south": ("ST-02", "ST-03")}
    assert cfg.group_of("ST-03") == "south" and cfg.group_of("ST-99") is None
    assert cfg.group_limits["north-lot"].constant_kw == 30.0 and cfg.group_limits["south"].constant_kw == 11.0
    assert group_variable("north-lot") == "STATION_GROUP_NORTH_LOT"
    with pytest.raises(ConfigurationError, match="already in group"):
        CitrineOSConfig.from_settings(settings(("a", "b"), STATION_GROUP_A="ST-01", STATION_GROUP_B="ST-01"))


def test_conn_variables_follow_station_ids() -> None:
    cfg = CitrineOSConfig.from_settings(
        settings(
            CONN_01_ENERGY_NEEDED_KWH="30",
            CONN_01_MAX_POWER_KW="7.2",
            CONN_01_MIN_POWER_KW="1.4",
            CONN_01_ARRIVAL_TIME="06:00",
            CONN_01_DEPARTURE_TIME="14:00",
            CONN_03_ENERGY_NEEDED_KWH="40",
            CONN_03_CONNECTOR="2",
            CONN_04_STATION="ST-02",
            CONN_04_CONNECTOR="2",
            CONN_04_MAX_POWER_KW="11",
        )
    )
    assert set(cfg.connectors) == {("ST-01", 1), ("ST-03", 2), ("ST-02", 2)}
    first = cfg.connectors[("ST-01", 1)]
    assert (first.energy_needed_kwh, first.max_power_kw, first.min_power_kw) == (30.0, 7.2, 1.4)
    assert (first.arrival, first.departure) == ("06:00", "14:00")
    # Unset fields fall back to the built-in defaults (30 kWh, 7.2 kW, 0 kW).
    other = cfg.session_params("ST-02", 2, None)
    assert (other.energy_needed_kwh, other.max_power_kw, other.min_power_kw) == (30.0, 11.0, 0.0)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SITE_TOML = """
timezone = "America/Chicago"
limit_kw = [{at = "00:00", kw = 30}, {at = "17:00", kw = 20}]

[defaults]
energy_needed_kwh = 20
max_power_kw = 6.6
departure = "17:30"

[groups.default]
stations = ["ST-01", "ST-02"]

[stations.ST-01]
ocpp = "1.6"
unit = "W"
max_periods = 5
max_power_kw = 11
phases = 3

[stations.ST-01.connectors.2]
energy_needed_kwh = 44

[id_tags.FLEET-7]
energy_needed_kwh = 60
departure = "2026-11-25T06:30:00Z"
"""


def test_site_file_toml_layers_and_limit_schedule(tmp_path: Path) -> None:
    path = write(tmp_path, "site.toml", SITE_TOML)
    cfg = CitrineOSConfig.from_settings(
        settings(
            CITRINEOS_SITE_FILE=str(path), SITE_POWER_LIMIT_KW="", CONN_01_ENERGY_NEEDED_KWH="35", CONN_01_CONNECTOR="2"
        )
    )
    assert cfg.groups == {"default": ("ST-01", "ST-02")}  # the file's group wins over STATION_IDS
    st = cfg.station("ST-01")
    assert (st.ocpp, st.unit, st.max_periods) == ("1.6", ChargingRateUnit.W, 5)
    assert cfg.station("ST-02").ocpp == "1.6"
    # idTag > CONN_XX > file connector > file station > file defaults > built-in.
    assert cfg.session_params("ST-01", 2, "FLEET-7").energy_needed_kwh == 60
    assert cfg.session_params("ST-01", 2, None).energy_needed_kwh == 35
    p = cfg.session_params("ST-01", 3, None)
    assert (p.energy_needed_kwh, p.max_power_kw, p.phases, p.departure) == (20, 11, 3, "17:30")
    assert cfg.session_params("ST-02", 1, "unknown").max_power_kw == 6.6
    # 16:58 to 17:02 Chicago (UTC-6 in November): the limit steps from 30 to 20 kW at 17:00.
    start = datetime(2026, 11, 24, 22, 58, tzinfo=UTC)
    assert cfg.group_limits["default"].series(start, 60, 4) == [30.0, 30.0, 20.0, 20.0]
    # Before the first step of the day, the previous day's last value holds.
    assert cfg.group_limits["default"].at(datetime(2026, 11, 24, 5, 0, tzinfo=UTC)) == 20.0


def test_site_file_json_and_yaml(tmp_path: Path) -> None:
    doc: dict[str, Any] = {"limit_kw": 22, "stations": {"ST-02": {"ocpp": "2.0.1"}}}
    cfg = CitrineOSConfig.from_settings(
        settings(CITRINEOS_SITE_FILE=str(write(tmp_path, "s.json", json.dumps(doc))), SITE_POWER_LIMIT_KW="")
    )
    assert cfg.group_limits["default"].constant_kw == 22 and cfg.station("ST-02").ocpp == "2.0.1"
    pytest.importorskip("yaml")
    yaml_path = write(tmp_path, "s.yaml", "limit_kw: 18\nid_tags:\n  T-1:\n    energy_needed_kwh: 12\n")
    cfg = CitrineOSConfig.from_settings(settings(CITRINEOS_SITE_FILE=str(yaml_path), SITE_POWER_LIMIT_KW=""))
    assert cfg.group_limits["default"].constant_kw == 18
    assert cfg.session_params("ST-01", 1, "T-1").energy_needed_kwh == 12


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"limit_kw": -1}, "limit_kw"),
        ({"limit_kw": [{"at": "25:00", "kw": 3}]}, r"limit_kw\[0\]\.at"),
        ({"stations": {"S": {"ocpp": "1.5"}}}, r"stations\.S\.ocpp"),
        ({"stations": {"S": {"unit": "kW"}}}, r"stations\.S\.unit"),
        ({"stations": {"S": {"connectors": {"one": {}}}}}, "connector numbers"),
        ({"defaults": {"phases": 4}}, r"defaults\.phases"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"id_tags": {"T": {"departure": "soon"}}}, r"id_tags\.T\.departure"),
    ],
)
def test_site_file_errors_name_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SiteFile.parse(doc)


def test_time_of_day_resolution() -> None:
    at = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    assert resolve_after("14:00", at, UTC) == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    assert resolve_after("06:00", at, UTC) == datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    assert resolve_before("06:00", at, UTC) == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert resolve_before("14:00", at, UTC) == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    assert resolve_after("2026-11-25T08:00:00+01:00", at, UTC) == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def test_delivered_energy_uses_the_register_never_total_kwh() -> None:
    samples = [
        {"value": 5030, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh", "multiplier": 0}},
        {"value": 7200, "measurand": "Power.Active.Import"},
        {"value": 1700, "measurand": "Energy.Active.Import.Register", "phase": "L1"},
    ]
    assert delivered_energy_wh(samples, 5000.0) == 30.0
    assert (
        delivered_energy_wh([{"value": "5.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"}], 5000.0)
        == 500.0
    )
    assert (
        delivered_energy_wh(
            [
                {
                    "value": 2,
                    "measurand": "Energy.Active.Import.Register",
                    "unitOfMeasure": {"unit": "Wh", "multiplier": 3},
                }
            ],
            1000.0,
        )
        == 1000.0
    )
    assert delivered_energy_wh(samples, 6000.0) == 0.0  # meter reset: never negative
    assert delivered_energy_wh([], 5000.0) is None
    assert delivered_energy_wh(samples, None) is None


def test_departure_and_arrival_from_configuration() -> None:
    now = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    t = CitrineOSTranslation.from_settings(
        settings(CONN_01_DEPARTURE_TIME="14:00", CONN_02_DEPARTURE_TIME="12:00", CONN_02_ARRIVAL_TIME="06:00")
    )
    t._clock = lambda: now
    row = SessionRow(
        "ST-01",
        "5",
        1,
        start_time=now - timedelta(hours=2),
        meter_start_wh=1000.0,
        sampled_values=({"value": 3000, "measurand": "Energy.Active.Import.Register"},),
    )
    ev = build_ev(t.config, row, now, t.charging_needs)
    assert (ev.ev_id, ev.transaction_id, ev.energy) == ("ST-01:5", "5", pytest.approx(28.0))
    assert ev.departure_time == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    # ST-02's planned departure (12:00 after a 06:00 arrival) has passed: the horizon end stands in.
    late = build_ev(t.config, SessionRow("ST-02", "1", 1), now, t.charging_needs)
    assert late.arrival_time == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert late.departure_time == now + timedelta(hours=8)
    # Unknown departure: the horizon end.
    third = build_ev(t.config, SessionRow("ST-03", "1", 1, start_time=now), now, t.charging_needs)
    assert third.departure_time == now + timedelta(hours=8)
