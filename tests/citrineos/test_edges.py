"""The CitrineOS plugin's edges: the site file's schema, URL credentials, the AMQP URL, a dead listener.

Service-free: files in a temporary directory, closed ports and small servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from optivgi.config import Settings
from optivgi.errors import ConfigurationError
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.listener import CitrineOSListener, check_amqp_url
from optivgi_citrineos.sitefile import SiteFile

BASE = {
    "CITRINEOS_API_URL": "http://citrineos:8080",
    "HASURA_URL": "http://graphql-engine:8080",
    "STATION_IDS": "ST-01",
    "SITE_POWER_LIMIT_KW": "30",
}


def _config(**values: str) -> CitrineOSConfig:
    return CitrineOSConfig.from_settings(Settings(values={**BASE, **values}))


# --- the site file -----------------------------------------------------------------------------------


def test_every_unknown_site_file_key_is_named_with_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text('{"limit_kW": 5, "defaults": {"max_power_kW": 3.6}, "stations": {"ST-1": {"units": "A"}}}')
    with pytest.raises(ConfigurationError) as info:
        SiteFile.load(path)
    assert str(info.value) == (
        f"{path}: unknown keys limit_kW (did you mean limit_kw?), defaults.max_power_kW (did you mean "
        "max_power_kw?), stations.ST-1.units (did you mean unit?)"
    )


@pytest.mark.parametrize(("doc", "where"), [
    ({"groups": {"north": {"stations": ["A"], "limit": 3}}}, "groups.north.limit"),
    ({"stations": {"A": {"connectors": {"1": {"energy_kwh": 3}}}}}, "stations.A.connectors.1.energy_kwh"),
    ({"id_tags": {"FLEET": {"ocpp": "1.6"}}}, "id_tags.FLEET.ocpp"),  # a station-only key
    ({"zone": "UTC"}, "zone"),
])
def test_unknown_keys_at_every_level(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^site file: unknown key {where}( \(did you mean .*\?\))?$"):
        SiteFile.parse(doc)


def test_a_complete_site_file_passes_the_schema() -> None:
    site = SiteFile.parse({
        "timezone": "UTC", "limit_kw": [{"at": "00:00", "kw": 30}],
        "defaults": {"energy_needed_kwh": 30, "max_power_kw": 7.2, "min_power_kw": 0, "departure": "17:00",
                     "arrival": "08:00", "voltage": 230, "phases": 1},
        "groups": {"north": {"stations": ["ST-01"], "limit_kw": 22}},
        "stations": {"ST-01": {"ocpp": "1.6", "unit": "A", "max_periods": 24, "phases": 1, "voltage": 240,
                               "max_power_kw": 11, "connectors": {"1": {"energy_needed_kwh": 40}}}},
        "id_tags": {"FLEET-007": {"energy_needed_kwh": 60, "departure": "06:30"}},
    })
    assert site.connectors[("ST-01", 1)].energy_needed_kwh == 40
    assert site.group_limits["north"].constant_kw == 22


def test_a_deeply_nested_site_file_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text('{"defaults": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigurationError, match=r"^CITRINEOS_SITE_FILE: .*nested deeper than 32 levels$"):
        SiteFile.load(path)


# --- credentials in URLs -------------------------------------------------------------------------------


def test_url_credentials_become_basic_auth_and_leave_the_url() -> None:
    cfg = _config(CITRINEOS_API_URL="http://admin:p%40ss%2Fw@citrineos:8080/",
                  HASURA_URL="http://admin:p%40ss%2Fw@graphql-engine:8080")
    assert cfg.api_url == "http://citrineos:8080"
    assert cfg.hasura_url == "http://graphql-engine:8080"
    assert (cfg.api_user, cfg.api_password) == ("admin", "p@ss/w")
    assert "p@ss/w" not in repr(cfg) and "ss" not in json.dumps(cfg.describe())
    assert "p@ss/w" in cfg.secrets


def test_different_credentials_in_the_two_urls_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^CITRINEOS_API_URL and HASURA_URL carry different credentials"):
        _config(CITRINEOS_API_URL="http://a:one@citrineos:8080", HASURA_URL="http://b:two@graphql-engine:8080")


def test_an_explicit_token_wins_over_url_credentials(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(CITRINEOS_API_URL="http://admin:urlpw@citrineos:8080", CITRINEOS_API_TOKEN="tok-123")
    assert (cfg.api_url, cfg.api_user, cfg.api_token) == ("http://citrineos:8080", None, "tok-123")
    assert "CITRINEOS_API_URL carries credentials that are not used: CITRINEOS_API_TOKEN is set" in caplog.text


@pytest.mark.parametrize(("variable", "url", "expected"), [
    ("CITRINEOS_API_URL", "http://admin:Pw/Secret@citrineos:8080",
     "CITRINEOS_API_URL is not a valid URL (malformed; a password holding / : @ ? or # must be percent-encoded): "
     "'http://admin:***@citrineos:8080'"),
    ("HASURA_URL", "http://admin:Pw:Secret@[::1/",
     "HASURA_URL is not a valid URL (Invalid IPv6 URL): 'http://admin:***@[::1/'"),
    ("AMQP_URL", "amqp://guest:Pw/Secret@127.0.0.1:5672/%2F",
     "AMQP_URL is not a valid URL (malformed; a password holding / : @ ? or # must be percent-encoded): "
     "'amqp://guest:***@127.0.0.1:5672/%2F'"),
])
def test_a_malformed_url_error_names_the_variable_and_masks_the_password(variable: str, url: str,
                                                                        expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        _config(**{variable: url})
    assert str(info.value) == expected
    assert "Pw" not in str(info.value) and "Secret" not in str(info.value)


def test_the_listener_refuses_to_start_on_a_url_pika_cannot_use() -> None:
    listener = CitrineOSListener("amqp://guest:pa/ss@127.0.0.1:5672/", variable="AMQP_URL")
    with pytest.raises(ConfigurationError) as info:
        listener.start()
    assert str(info.value) == ("AMQP_URL cannot be used (malformed; a password holding / : @ ? or # must be "
                               "percent-encoded): 'amqp://guest:***@127.0.0.1:5672/'")
    assert not listener.is_consuming
    with pytest.raises(ConfigurationError, match=r"^AMQP_URL must be an amqp:// or amqps:// URL"):
        check_amqp_url("http://guest:guest@127.0.0.1:5672/")
    assert check_amqp_url("amqp://guest:pa%2Fss@127.0.0.1:5672/%2F").credentials.password == "pa/ss"


# --- a dead listener -------------------------------------------------------------------------------------


def test_a_listener_loop_that_dies_is_restarted_and_logged_at_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer loop failing outside its reconnect handling (a fault no socket can provoke,
    hence the patched loop) is logged at ERROR and the loop runs again."""
    original = CitrineOSListener._run
    calls: list[int] = []
    second = threading.Event()

    def failing_once(self: CitrineOSListener) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("loop bug")
        second.set()
        original(self)  # the real loop against a closed port: refused, retried until stopped

    monkeypatch.setattr(CitrineOSListener, "_run", failing_once)
    caplog.set_level(logging.INFO, logger="optivgi_citrineos.listener")
    listener = CitrineOSListener("amqp://guest:guest@127.0.0.1:1/%2F", reconnect_initial_s=0.01,
                                 reconnect_max_s=0.05)
    listener.start()
    try:
        assert second.wait(10)
    finally:
        listener.stop()
    assert listener.restarts == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].getMessage().startswith("AMQP listener thread died (RuntimeError: loop bug); "
                                                        "restarting it in")


def test_start_revives_a_thread_that_ended(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    ended = threading.Event()

    def ends_at_once(self: CitrineOSListener) -> None:
        ended.set()

    monkeypatch.setattr(CitrineOSListener, "_supervise", ends_at_once)
    listener = CitrineOSListener("amqp://guest:guest@127.0.0.1:1/%2F")
    listener.start()
    assert ended.wait(10)
    thread = listener._thread
    assert thread is not None
    thread.join(10)
    ended.clear()
    listener.start()
    assert ended.wait(10)
    listener.stop()
    assert listener.restarts == 1
    assert "AMQP listener thread had died; starting it again" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
    ]


# --- one Error line ---------------------------------------------------------------------------------------


def test_a_simulator_scenario_nested_100k_deep_is_one_error_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from optivgi.cli import main

    path = tmp_path / "sim.json"
    path.write_text('{"sessions": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = CliRunner().invoke(main, ["--env-file", str(tmp_path / "none.env"), "citrineos", "simulate",
                                       "--scenario", str(path), "--duration", "0.1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {path}: arrays and objects are nested deeper than 32 levels"]


def test_run_once_against_a_csms_that_is_down_ends_in_one_error_line(tmp_path: Path) -> None:
    import os
    import re
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITRINEOS_", "HASURA_", "AMQP_"))}
    env.update({"CITRINEOS_API_URL": f"http://127.0.0.1:{port}", "HASURA_URL": f"http://127.0.0.1:{port}",
                "SITE_POWER_LIMIT_KW": "30", "STATION_IDS": "ST-1", "CITRINEOS_RETRY_BUDGET_S": "0.3",
                "CITRINEOS_RETRY_INITIAL_S": "0.1"})
    proc = subprocess.run([sys.executable, "-m", "optivgi", "--env-file", str(tmp_path / "none.env"), "run", "-t",
                           "citrineos", "--once"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1]
    expected = (r"Error: the cycle failed: group default: CSMSConnectionError: "
                rf"Hasura at http://127\.0\.0\.1:{port}/v1/graphql unreachable: ConnectError"
                r"( \(gave up after \d+ attempts in [\d.]+ s\))?")
    assert re.fullmatch(expected, errors[0]), errors[0]


def test_a_non_utf8_dotenv_is_one_error_line_for_the_simulator_too(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from optivgi.cli import main

    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"SIMULATOR_SPEED=\xff\n")
    result = CliRunner().invoke(main, ["--env-file", str(dotenv), "citrineos", "simulate", "--duration", "0.1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {dotenv}: file is not UTF-8 text (byte 0xff at offset 16)"]


def test_the_plugin_redactor_replaces_a_word_password_only_as_a_whole_value() -> None:
    from optivgi_citrineos.config import SecretRedactor, redact

    cfg = _config(CITRINEOS_DB_DSN="postgresql://citrine:citrine@db:5432/citrine")
    assert "citrine" in cfg.secrets
    assert redact("binding to exchange 'citrineos' with citrine", cfg.secrets) == (
        "binding to exchange 'citrineos' with ***"
    )
    record = logging.LogRecord("optivgi_citrineos.listener", logging.INFO, __file__, 1,
                               "AMQP listener consuming q on exchange %r via %s", ("citrineos", cfg.db_dsn), None)
    filt = SecretRedactor()
    filt.add(cfg.secrets)
    assert filt.filter(record)
    assert record.getMessage() == "AMQP listener consuming q on exchange 'citrineos' via postgresql://***:***@db:5432/***"
