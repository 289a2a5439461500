"""Settings: CLI over environment over .env, validated at start with the variable named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from optivgi.cli import main
from optivgi.config import Settings, mask_url, read_dotenv
from optivgi.errors import ConfigurationError
from optivgi.models import ChargingRateUnit


def test_precedence_cli_over_env_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# site\nSITE_POWER_LIMIT_KW=20\nVOLTAGE=230\nSTATION_GROUPS='a, b'\nEXTRA=\"x y\" \n"
                      "export INTERVAL_S=30  # comment\n")
    env = {"SITE_POWER_LIMIT_KW": "25", "CHARGING_RATE_UNIT": "a"}
    s = Settings.load({"site_power_limit_kw": 30.0, "voltage": None}, environ=env, dotenv=dotenv)
    assert s.site_power_limit_kw == 30.0  # CLI
    assert s.voltage == 230.0  # .env (CLI gave None, env silent)
    assert s.station_groups == ("a", "b")
    assert s.interval_s == 30.0
    assert s.charging_rate_unit is ChargingRateUnit.A  # env, case-insensitive
    assert s.get("EXTRA") == "x y"
    assert Settings.load({}, environ={"SITE_POWER_LIMIT_KW": "25"}, dotenv=dotenv).site_power_limit_kw == 25.0


@pytest.mark.parametrize(("env", "message"), [
    ({"SITE_POWER_LIMIT_KW": "lots"}, "SITE_POWER_LIMIT_KW must be a number, got 'lots'"),
    ({"SITE_POWER_LIMIT_KW": "-5"}, "SITE_POWER_LIMIT_KW must be a number >= 0, got -5.0"),
    ({"SITE_POWER_LIMIT_KW": "nan"}, "SITE_POWER_LIMIT_KW must be a number >= 0"),
    ({"VOLTAGE": "0"}, "VOLTAGE must be between 0 and 2000 V"),
    ({"PHASES": "4"}, "PHASES must be 1, 2 or 3, got 4"),
    ({"CHARGING_RATE_UNIT": "kW"}, "CHARGING_RATE_UNIT must be W or A, got 'kW'"),
    ({"STATION_GROUPS": " , "}, "STATION_GROUPS must name at least one group"),
    ({"HORIZON_S": "90"}, "HORIZON_S must be a positive multiple of RESOLUTION_S (60), got 90"),
    ({"INTERVAL_S": "0"}, "INTERVAL_S must be in (0, 86400] seconds"),
])
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load({}, environ=env, dotenv=None)
    assert message in str(info.value)


def test_malformed_dotenv_line_is_named(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("GOOD=1\nthis is not a setting\n")
    with pytest.raises(ConfigurationError, match=r"\.env:2: expected KEY=value, got 'this is not a setting'"):
        read_dotenv(dotenv)
    assert read_dotenv(tmp_path / "missing.env") == {}


def test_run_reports_bad_configuration_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTAGE", "abc")
    result = CliRunner().invoke(main, ["--env-file", str(tmp_path / "none.env"), "run", "--once"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: VOLTAGE must be a number, got 'abc'"


def test_mask_url_hides_passwords() -> None:
    assert mask_url("amqp://guest:s3cret@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert mask_url("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080/x"
