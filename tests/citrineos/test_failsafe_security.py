"""Secrets stay out of logs and errors; REST authentication and TLS options reach the wire.

Real sockets throughout: the real RabbitMQ refusing a wrong password, closed ports on 127.0.0.1,
and small HTTP(S) servers on 127.0.0.1 that record the headers they receive.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.config import Settings
from optivgi.errors import ConfigurationError, CSMSConnectionError
from optivgi.loop import Scheduler
from optivgi.models.ev import EV
from optivgi.models.profile import ChargingProfile
from optivgi.translation import SendOutcome
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.translation import CitrineOSTranslation

AMQP_PASSWORD = "amqp-Pw-7f3c91"
HASURA_SECRET = "hasura-Sec-52ab0e"
API_TOKEN = "api-Tok-c0ffee42"
URL_PASSWORD = "url-Pw-9d8e7f"


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_secret_in_logs_or_errors_of_a_failing_cycle(caplog: pytest.LogCaptureFixture, amqp_url: str) -> None:
    caplog.set_level(logging.DEBUG)
    api, hasura = closed_port(), closed_port()
    values = {
        "CITRINEOS_API_URL": f"http://admin:{URL_PASSWORD}@127.0.0.1:{api}",
        "HASURA_URL": f"http://127.0.0.1:{hasura}",
        "HASURA_ADMIN_SECRET": HASURA_SECRET,
        "CITRINEOS_API_TOKEN": API_TOKEN,
        # The real broker refuses this password (guest's is "guest").
        "AMQP_URL": amqp_url.replace("guest:guest@", f"guest:{AMQP_PASSWORD}@"),
        "STATION_IDS": "SEC-01",
        "SITE_POWER_LIMIT_KW": "10",
        "CITRINEOS_HTTP_TIMEOUT_S": "0.5",
        "CITRINEOS_RETRY_BUDGET_S": "0.5",
        "CITRINEOS_RETRY_INITIAL_S": "0.1",
    }
    settings = Settings(voltage=240.0, values=values)
    t = CitrineOSTranslation.from_settings(settings)
    try:
        t.setup()
        report = Scheduler(t, EqualShareAlgorithm(), settings).run_cycle("test")
        now = datetime.now(UTC)
        ev = EV(ev_id="SEC-01:1", station_id="SEC-01", connector_id=1, arrival_time=now,
                departure_time=now.replace(year=now.year + 1), energy=5, max_power=7.2, transaction_id="1")
        profile = ChargingProfile.from_power([3.0], start=now, resolution_s=60, transaction_id="1")
        outcomes = t.send_power_to_evs({ev: profile})
        deadline = time.monotonic() + 10
        while "ACCESS_REFUSED" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        described = json.dumps(t.describe())
    finally:
        t.teardown()
    # The failures happened and were logged ...
    error = report.groups["default"].error or ""
    assert "Hasura" in error and "unreachable" in error
    assert outcomes == {"SEC-01:1": SendOutcome.FAILED}
    assert "unreachable" in t.last_reasons["SEC-01:1"]
    assert "ACCESS_REFUSED" in caplog.text, "the broker never refused the login"
    assert "fallback profile not installed on SEC-01" in caplog.text
    # ... without a single secret, in the log, the errors, the reasons or the description.
    everything = "\n".join([caplog.text, error, *t.last_reasons.values(), described])
    for secret in (AMQP_PASSWORD, HASURA_SECRET, API_TOKEN, URL_PASSWORD):
        assert secret not in everything
    assert f"127.0.0.1:{api}" in everything  # the endpoints themselves stay visible


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST like CitrineOS for an unknown station and keeps the request headers."""

    seen: list[dict[str, str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.startswith("/v1/graphql"):
            body = b'{"data": {"Transactions": []}}'
        else:
            body = b'[{"success": false, "payload": "No connection found for identifier: 1:A"}]'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[http.server.HTTPServer, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"seen": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def _send_one(url: str, **extra: str) -> CitrineOSTranslation:
    values = {"CITRINEOS_API_URL": url, "HASURA_URL": url, "STATION_IDS": "A", "SITE_POWER_LIMIT_KW": "10",
              "CITRINEOS_FALLBACK": "off", **extra}
    t = CitrineOSTranslation.from_settings(Settings(voltage=240.0, values=values))
    now = datetime.now(UTC)
    ev = EV(ev_id="A:1", station_id="A", connector_id=1, arrival_time=now,
            departure_time=now.replace(year=now.year + 1), energy=5, max_power=7.2, transaction_id="1")
    t.send_power_to_evs({ev: ChargingProfile.from_power([3.0], start=now, resolution_s=60, transaction_id="1")})
    try:
        t.get_evs("default")
    except CSMSConnectionError as exc:
        t.last_reasons["read"] = str(exc)
    t.teardown()
    return t


def test_bearer_token_and_basic_auth_reach_citrineos(recorder: tuple[http.server.HTTPServer, Any]) -> None:
    server, handler = recorder
    url = f"http://127.0.0.1:{server.server_port}"
    t = _send_one(url, CITRINEOS_API_TOKEN=API_TOKEN, HASURA_ADMIN_SECRET=HASURA_SECRET)
    rest, graphql = handler.seen
    assert rest["authorization"] == f"Bearer {API_TOKEN}"
    assert graphql["x-hasura-admin-secret"] == HASURA_SECRET
    assert t.last_reasons["A:1"] == "CitrineOS: No connection found for identifier: 1:A"
    handler.seen.clear()
    _send_one(url, CITRINEOS_API_USER="optivgi", CITRINEOS_API_PASSWORD=URL_PASSWORD)
    # base64("optivgi:url-Pw-9d8e7f")
    assert handler.seen[0]["authorization"] == "Basic b3B0aXZnaTp1cmwtUHctOWQ4ZTdm"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_citrineos_ca_file_verifies_a_private_certificate(
    recorder: tuple[http.server.HTTPServer, Any], certificate: tuple[Path, Path]
) -> None:
    server, handler = recorder
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    url = f"https://127.0.0.1:{server.server_port}"
    # Without the CA the private certificate is not trusted: nothing reaches the server.
    untrusted = _send_one(url, CITRINEOS_RETRY_BUDGET_S="0")
    assert "unreachable: ConnectError" in untrusted.last_reasons["A:1"]
    assert "unreachable: ConnectError" in untrusted.last_reasons["read"]
    assert handler.seen == []
    trusted = _send_one(url, CITRINEOS_CA_FILE=str(cert))
    assert trusted.last_reasons["A:1"] == "CitrineOS: No connection found for identifier: 1:A"
    assert len(handler.seen) == 2


def test_tls_and_auth_settings_are_checked(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    base = {"CITRINEOS_API_URL": "http://c:8080", "HASURA_URL": "http://h:8080", "STATION_IDS": "A",
            "SITE_POWER_LIMIT_KW": "10"}

    def config(**extra: str) -> CitrineOSConfig:
        return CitrineOSConfig.from_settings(Settings(values={**base, **extra}))

    with pytest.raises(ConfigurationError, match="CITRINEOS_CA_FILE"):
        config(CITRINEOS_CA_FILE=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match="AMQP_CLIENT_KEY needs AMQP_CLIENT_CERT"):
        config(AMQP_URL="amqps://u:p@r:5671", AMQP_CLIENT_KEY=str(key))
    with pytest.raises(ConfigurationError, match="need an amqps:// AMQP_URL, got amqp://u:\\*\\*\\*@r"):
        config(AMQP_URL="amqp://u:p@r:5672", AMQP_CA_FILE=str(cert))
    with pytest.raises(ConfigurationError, match="not both"):
        config(CITRINEOS_API_TOKEN="t", CITRINEOS_API_USER="u")
    good = config(AMQP_URL="amqps://u:secret-pw@r:5671", AMQP_CA_FILE=str(cert), AMQP_CLIENT_CERT=str(cert),
                  AMQP_CLIENT_KEY=str(key), CITRINEOS_API_TOKEN="tok-123")
    assert isinstance(good.amqp_tls.context(), ssl.SSLContext)
    assert {"secret-pw", "tok-123"} <= set(good.secrets)
    assert "secret-pw" not in json.dumps(good.describe()) and "tok-123" not in repr(good)
