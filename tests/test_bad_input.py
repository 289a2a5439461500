"""Every bad input ends in one ``Error: ...`` line naming the file or variable and the field.

Each case runs the real command line (click's runner) on a real file in a temporary directory and
checks the whole output: exactly one line, the expected text, exit status 1, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from optivgi.caps import MAX_NESTING, MAX_STEPS
from optivgi.cli import main
from optivgi.config import Settings, read_dotenv
from optivgi.errors import ConfigurationError

NOW = "2026-01-05T06:00:00Z"


def _scenario(**changes: Any) -> dict[str, Any]:
    ev = {"id": "EV-1", "station_id": "ST-1", "connector_id": 1, "arrival": NOW,
          "departure": "2026-01-05T08:00:00Z", "energy_kwh": 10, "min_power_kw": 0, "max_power_kw": 7.2}
    doc: dict[str, Any] = {"name": "bad", "now": NOW, "resolution_s": 60, "horizon_s": 3600,
                           "site_limit_kw": 30, "evs": [ev]}
    for key, value in changes.items():
        if key.startswith("ev_"):
            ev[key[3:]] = value
        else:
            doc[key] = value
    return doc


def _one_error_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _plan(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    line = _one_error_line(["plan", str(path), "-a", "equal-share"])
    assert line.startswith(f"Error: {path}: ")
    return line[len(f"Error: {path}: "):]


def _replace(old: str, new: str, **changes: Any) -> str:
    text = json.dumps(_scenario(**changes))
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('{"name": "x", "description": ' + "[" * 100_000 + "]" * 100_000 + "}",
                 f"arrays and objects are nested deeper than {MAX_NESTING} levels", id="nested-100k"),
    pytest.param('{"name": "x", "description": ' + "[" * 40 + "]" * 40 + "}",
                 f"arrays and objects are nested deeper than {MAX_NESTING} levels", id="nested-40"),
    pytest.param(_replace('"site_limit_kw": 30', '"site_limit_kw": ' + "9" * 5000),
                 "not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits",
                 id="5000-digits"),
    pytest.param(_replace('"site_limit_kw": 30', '"site_limit_kw": 1' + "0" * 400),
                 "site_limit_kw: must be a finite number of magnitude <= 1e+09, got an integer of 401 digits",
                 id="10^400"),
    pytest.param(_replace('"site_limit_kw": 30', '"site_limit_kw": 1e400'),
                 "site_limit_kw: must be a finite number of magnitude <= 1e+09, got inf", id="1e400-float"),
    pytest.param(json.dumps(_scenario(ev_max_power_kw=1e308)),
                 "evs[0].max_power_kw: must be a finite number of magnitude <= 1e+09, got 1e+308", id="1e308-power"),
    pytest.param(json.dumps(_scenario(ev_energy_kwh=1e308)),
                 "evs[0].energy_kwh: must be a finite number of magnitude <= 1e+09, got 1e+308", id="1e308-energy"),
    pytest.param(json.dumps(_scenario(now="0001-01-01T00:00:00+05:00")),
                 "now: must lie in the years 1970 to 9000, got '0001-01-01T00:00:00+05:00'", id="year-1"),
    pytest.param(json.dumps(_scenario(ev_departure="9999-12-31T23:00:00-05:00")),
                 "evs[0].departure: must lie in the years 1970 to 9000, got '9999-12-31T23:00:00-05:00'",
                 id="year-9999"),
    pytest.param(json.dumps(_scenario(resolution_s=1, horizon_s=10**8)),
                 f"horizon_s: must give at most {MAX_STEPS} steps of resolution_s (1), got 100000000 steps",
                 id="10^8-steps"),
    pytest.param(json.dumps(_scenario(resolution_s=10**12, horizon_s=10**12)),
                 "resolution_s: must be <= 86400, got 1000000000000", id="huge-resolution"),
    pytest.param(json.dumps(_scenario(evs=[{}] * 10_001)),
                 "evs: must hold at most 10000 sessions, got 10001", id="too-many-evs"),
])
def test_a_bad_scenario_file_gives_one_error_line(tmp_path: Path, text: str, expected: str) -> None:
    assert _plan(tmp_path, text) == expected


def test_the_steps_file_of_the_issue_is_small_and_refused_at_once(tmp_path: Path) -> None:
    text = json.dumps(_scenario(resolution_s=1, horizon_s=10**8))
    assert len(text) < 1500  # a 1.4 kB file used to ask for 10^8 steps (1.6 GB)
    assert _plan(tmp_path, text).startswith("horizon_s: must give at most")


def test_a_scenario_file_over_the_size_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optivgi.scenario

    monkeypatch.setattr(optivgi.scenario, "MAX_SCENARIO_BYTES", 1024)
    assert _plan(tmp_path, json.dumps(_scenario(description="x" * 2000))).startswith(
        "file is larger than 0 MiB (")


def test_a_scenario_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(json.dumps(_scenario()).encode("utf-8").replace(b'"bad"', b'"b\xe9d"'))
    line = _one_error_line(["plan", str(path)])
    assert line == f"Error: {path}: file is not UTF-8 text (byte 0xe9 at offset 11)"


def test_a_scenario_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_scenario()).encode("utf-8"))
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["plan", str(path), "-a", "equal-share", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["power_kw"]["EV-1"][0] == pytest.approx(7.2)


# --- settings and .env -----------------------------------------------------------------------------


def _run(tmp_path: Path, dotenv: bytes, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("HORIZON_S", "RESOLUTION_S", "OPTIVGI_TRANSLATION", "OPTIVGI_SCENARIO", "VOLTAGE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / ".env"
    path.write_bytes(dotenv)
    return _one_error_line(["--env-file", str(path), "run", "--once"])


def test_a_dotenv_that_is_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = _run(tmp_path, b"VOLTAGE=230\nSTATION_GROUPS=caf\xe9\n", monkeypatch)
    assert line == f"Error: {tmp_path / '.env'}: file is not UTF-8 text (byte 0xe9 at offset 30)"


def test_a_dotenv_with_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfVOLTAGE=230\r\nexport PHASES='3'\r\n")
    assert read_dotenv(path) == {"VOLTAGE": "230", "PHASES": "3"}
    settings = Settings.load({}, environ={}, dotenv=path)
    assert (settings.voltage, settings.phases) == (230.0, 3)


def test_a_horizon_of_1e11_steps_is_refused_at_settings_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = _run(tmp_path, b"HORIZON_S=1e11\nRESOLUTION_S=1\n", monkeypatch)
    assert line == (f"Error: HORIZON_S / RESOLUTION_S must give at most {MAX_STEPS} steps, got 100000000000 "
                    "(HORIZON_S=100000000000, RESOLUTION_S=1)")


def test_a_5000_digit_setting_is_named_and_shortened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = _run(tmp_path, b"HORIZON_S=" + b"9" * 5000 + b"\n", monkeypatch)
    assert line == "Error: HORIZON_S must be a whole number, got '999999999999999999999999999999' ... (5000 characters)"


def test_a_malformed_dotenv_line_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = _run(tmp_path, b"VOLTAGE=230\nnot a setting\n", monkeypatch)
    assert line == f"Error: {tmp_path / '.env'}:2: expected KEY=value, got 'not a setting'"


def test_whole_numbers_may_use_exponents_but_not_fractions() -> None:
    assert Settings.load({}, environ={"HORIZON_S": "3.6e3"}, dotenv=None).horizon_s == 3600
    with pytest.raises(ConfigurationError, match=r"^RESOLUTION_S must be a whole number, got '1.5'$"):
        Settings.load({}, environ={"RESOLUTION_S": "1.5"}, dotenv=None)
