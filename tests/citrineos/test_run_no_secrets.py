"""``optivgi --log-level DEBUG run -t citrineos --once`` with a secret in every URL and token setting
prints none of them, while the credentials still reach the servers.

Local servers only: an HTTP server on 127.0.0.1 playing CitrineOS REST and Hasura (it records the
headers it receives) and a TCP listener that accepts AMQP connections and closes them at once, so
pika logs its failures at DEBUG with the URL it was given.
"""

from __future__ import annotations

import base64
import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SECRETS = {
    "url": "UrlPw-4e1f",
    "hasura": "HasuraSecret-77a0",
    "token": "ApiToken-9c2b",
    "password": "ApiPw-31d5",
    "amqp": "Amqp/Pw-5a6b",  # a '/' in the password (percent-encoded in the URL)
    "dsn": "DsnPw-0b9e",
}


class _Csms(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.startswith("/v1/graphql"):
            body = b'{"data": {"Transactions": [], "ChargingProfiles": []}}'
        else:
            body = b'[{"success": false, "payload": "No connection found for identifier: 1:ST"}]'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def csms() -> Iterator[tuple[int, list[dict[str, str]]]]:
    handler = type("Handler", (_Csms,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler.seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def amqp_port() -> Iterator[int]:
    """Accepts TCP connections and closes them (a broker that hangs up)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    stop.set()
    thread.join(5)
    sock.close()


def _run(values: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITRINEOS_", "HASURA_", "AMQP_"))}
    env.update(values)
    return subprocess.run(
        [sys.executable, "-m", "optivgi", "--log-level", "DEBUG", "--env-file", str(tmp_path / "none.env"),
         "run", "-t", "citrineos", "--once"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )


def _common(port: int, amqp_port: int) -> dict[str, str]:
    return {
        "HASURA_ADMIN_SECRET": SECRETS["hasura"],
        "AMQP_URL": f"amqp://guest:{SECRETS['amqp'].replace('/', '%2F')}@127.0.0.1:{amqp_port}/%2F",
        "CITRINEOS_DB_DSN": f"postgresql://citrine:{SECRETS['dsn']}@127.0.0.1:1/citrine",
        "STATION_IDS": "ST",
        "SITE_POWER_LIMIT_KW": "10",
        "CITRINEOS_HTTP_TIMEOUT_S": "1",
        "CITRINEOS_RETRY_BUDGET_S": "0.5",
        "CITRINEOS_RETRY_INITIAL_S": "0.1",
        "CITRINEOS_FALLBACK": "on",
    }


def _assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    everything = proc.stdout + proc.stderr
    assert "DEBUG" in proc.stderr  # the debug log really was on (pika's tracebacks at DEBUG included)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 0 or (proc.returncode == 1 and last.startswith("Error: ")), proc.stderr[-2000:]
    for secret in SECRETS.values():
        for form in {secret, secret.replace("/", "%2F")}:
            assert form not in everything, f"{form!r} printed"


def test_no_secret_is_printed_with_url_credentials_as_basic_auth(
    csms: tuple[int, list[dict[str, str]]], amqp_port: int, tmp_path: Path
) -> None:
    port, seen = csms
    values = {
        **_common(port, amqp_port),
        "CITRINEOS_API_URL": f"http://admin:{SECRETS['url']}@127.0.0.1:{port}",
        "HASURA_URL": f"http://admin:{SECRETS['url']}@127.0.0.1:{port}",
    }
    proc = _run(values, tmp_path)
    _assert_clean(proc)
    assert f"http://127.0.0.1:{port}" in proc.stderr  # the endpoints themselves stay visible
    assert "AMQP listener lost the broker" in proc.stderr
    expected = "Basic " + base64.b64encode(f"admin:{SECRETS['url']}".encode()).decode()
    assert seen and all(h.get("authorization") == expected for h in seen)
    assert all(h.get("x-hasura-admin-secret") == SECRETS["hasura"] for h in seen if "x-hasura-admin-secret" in h)


def test_no_secret_is_printed_with_token_and_password_settings(
    csms: tuple[int, list[dict[str, str]]], amqp_port: int, tmp_path: Path
) -> None:
    port, seen = csms
    token_run = _run({**_common(port, amqp_port), "CITRINEOS_API_URL": f"http://127.0.0.1:{port}",
                      "HASURA_URL": f"http://127.0.0.1:{port}", "CITRINEOS_API_TOKEN": SECRETS["token"]}, tmp_path)
    _assert_clean(token_run)
    assert seen and all(h.get("authorization") == f"Bearer {SECRETS['token']}" for h in seen)
    seen.clear()
    basic_run = _run({**_common(port, amqp_port), "CITRINEOS_API_URL": f"http://127.0.0.1:{port}",
                      "HASURA_URL": f"http://127.0.0.1:{port}", "CITRINEOS_API_USER": "ops",
                      "CITRINEOS_API_PASSWORD": SECRETS["password"]}, tmp_path)
    _assert_clean(basic_run)
    expected = "Basic " + base64.b64encode(f"ops:{SECRETS['password']}".encode()).decode()
    assert seen and all(h.get("authorization") == expected for h in seen)
