"""Helpers for contract tests of the CitrineOS double: an AMQP recorder, an HTTP listener for
callbacks and webhooks, access to the recordings of a live CitrineOS 1.8.3, and a JSON shape
comparison.

The recordings are read from ``$CITRINEOS_CONTRACT_DIR`` (default ``../shared/citrineos-contract``,
relative to the working directory).
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

__all__ = [
    "VOLATILE_KEYS",
    "AmqpRecorder",
    "CallbackServer",
    "RecordingMissingError",
    "assert_same_shape",
    "contract_dir",
    "load_jsonl",
    "load_recording",
    "set_profile_body",
    "substitute",
]

DEFAULT_CONTRACT_DIR = "../shared/citrineos-contract"

# Values that identify rows or moments rather than behaviour.
VOLATILE_KEYS = frozenset(
    {
        "id",
        "startTime",
        "endTime",
        "createdAt",
        "updatedAt",
        "lastBootTime",
        "connectorId",
        "authorizationId",
        "url",
        "host",
        "port",
        "_messageId",
        "scheduleStart",
    }
)


def set_profile_body(
    profile_id: int,
    limits: list[float],
    *,
    tx: int = 1,
    unit: str = "A",
    period_s: int = 600,
    start: str = "2026-11-24T00:37:30Z",
) -> dict[str, Any]:
    """A 1.6 SetChargingProfile REST body like the recorded ones: a TxProfile on connector 1 with
    one period per limit, ``period_s`` apart, from ``start``."""
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": profile_id,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "transactionId": tx,
            "chargingSchedule": {
                "chargingRateUnit": unit,
                "startSchedule": start,
                "chargingSchedulePeriod": [
                    {"startPeriod": period_s * i, "limit": limit, "numberPhases": 1} for i, limit in enumerate(limits)
                ],
            },
        },
    }


def contract_dir() -> Path:
    """Directory of the recordings."""
    return Path(os.environ.get("CITRINEOS_CONTRACT_DIR", DEFAULT_CONTRACT_DIR))


class RecordingMissingError(FileNotFoundError):
    """A recording is not there (the shared folder is not beside the clone)."""


def _contract_file(name: str) -> Path:
    path = contract_dir() / name
    if not path.is_file():
        raise RecordingMissingError(f"recording {path} not found (set CITRINEOS_CONTRACT_DIR)")
    return path


def load_recording(name: str) -> dict[str, Any]:
    """A REST recording (``rest/x.json`` or ``run2/rest/x.json``)."""
    data: dict[str, Any] = json.loads(_contract_file(name).read_text())
    return data


def load_jsonl(*names: str) -> list[dict[str, Any]]:
    """Every line of the given JSON-lines recordings."""
    out: list[dict[str, Any]] = []
    for name in names:
        with _contract_file(name).open() as handle:
            out.extend(json.loads(line) for line in handle if line.strip())
    return out


def substitute(value: Any, mapping: dict[str, str]) -> Any:
    """Replace recorded station ids, URLs, ... inside a JSON value."""
    text = json.dumps(value)
    for old, new in mapping.items():
        text = text.replace(old, new)
    return json.loads(text)


def assert_same_shape(actual: Any, expected: Any, path: str = "$", volatile: frozenset[str] = VOLATILE_KEYS) -> None:
    """Same structure and fixed values as a recording; volatile keys only need the same null-ness.

    Raises:
        AssertionError: naming the first difference.
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise AssertionError(f"{path}: expected an object, got {actual!r}")
        if set(actual) != set(expected):
            raise AssertionError(f"{path}: keys {sorted(actual)} != recorded {sorted(expected)}")
        for key, value in expected.items():
            if key in volatile:
                if (actual[key] is None) != (value is None):
                    raise AssertionError(f"{path}.{key}: {actual[key]!r} vs recorded {value!r}")
            else:
                assert_same_shape(actual[key], value, f"{path}.{key}", volatile)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise AssertionError(f"{path}: {actual!r} is not a list of {len(expected)} like the recording")
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_shape(a, e, f"{path}[{i}]", volatile)
    elif actual != expected or type(actual) is not type(expected):
        raise AssertionError(f"{path}: {actual!r} != recorded {expected!r}")


class AmqpRecorder:
    """Collect every message published on an exchange, through a private queue bound with
    ``x-match: all`` and no other header (which matches every message).

    Reconnects when the broker drops the connection (messages published meanwhile are missed).
    """

    def __init__(self, url: str, exchange: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.url = url
        self.exchange = exchange
        self._lock = threading.Lock()
        self._connect()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amqp-recorder", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self._channel = self._connection.channel()
        self._channel.exchange_declare(
            exchange=self.exchange, exchange_type="headers", durable=False, auto_delete=False
        )
        result = self._channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        self._queue = result.method.queue
        self._channel.queue_bind(
            queue=self._queue, exchange=self.exchange, routing_key="", arguments={"x-match": "all"}
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except pika.exceptions.AMQPError:
                time.sleep(0.2)
                try:
                    self._connect()
                except pika.exceptions.AMQPError:
                    continue

    def _poll(self) -> None:
        method, properties, body = self._channel.basic_get(self._queue, auto_ack=True)
        if method is None:
            self._connection.sleep(0.02)
            return
        message = {
            "headers": dict(properties.headers or {}),
            "properties": {
                "content_type": properties.content_type,
                "content_encoding": properties.content_encoding,
                "delivery_mode": properties.delivery_mode,
                "priority": properties.priority,
                "correlation_id": properties.correlation_id,
                "message_id": properties.message_id,
                "timestamp": properties.timestamp,
            },
            "body": json.loads(body),
            "routing_key": method.routing_key,
            "exchange": method.exchange,
        }
        with self._lock:
            self.messages.append(message)

    def for_station(self, station_id: str) -> list[dict[str, Any]]:
        """Messages about one station, in arrival order."""
        with self._lock:
            return [m for m in self.messages if m["headers"].get("stationId") == station_id]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """The first message matching ``predicate`` (waits up to ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.messages)
            for message in snapshot:
                if predicate(message):
                    return message
            time.sleep(0.02)
        raise AssertionError("no matching AMQP message within the timeout")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._connection.close()
        except pika.exceptions.AMQPError:
            pass


class CallbackServer:
    """An HTTP listener on 127.0.0.1 recording each request (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        lock = threading.Lock()
        self._lock = lock
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                with lock:
                    requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": json.loads(raw) if raw else None,
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def for_path(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def wait_for_path(self, path: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.for_path(path)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} request(s) to {path}, got {len(self.for_path(path))}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
