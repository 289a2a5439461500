"""Publishing to RabbitMQ the way CitrineOS 1.8.3 does, from a dedicated thread.

pika's BlockingConnection is not thread-safe, so one thread owns it and drains a queue filled by
the double's asyncio loop. That keeps the publication order equal to the order of events.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import pika
import pika.exceptions

from citrineos_testdouble._jsonutil import js_dumps

logger = logging.getLogger(__name__)

_STOP = object()


class AmqpUnavailableError(RuntimeError):
    """The broker could not be reached when the double started."""


def charger_message(
    *,
    origin: str,
    event_group: str,
    action: str,
    state: int,
    station_id: str,
    correlation_id: str,
    tenant_id: int,
    timestamp: str,
    payload: Any,
    protocol: str = "ocpp1.6",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headers and body of a request, or of a charger's answer (plain keys)."""
    context = _context(station_id, correlation_id, tenant_id, timestamp)
    body = {
        "origin": origin,
        "eventGroup": event_group,
        "action": action,
        "context": context,
        "state": state,
        "protocol": protocol,
        "payload": payload,
    }
    return _headers(origin, event_group, action, state, context), body


def csms_answer(
    *,
    action: str,
    station_id: str,
    correlation_id: str,
    tenant_id: int,
    timestamp: str,
    payload: Any,
    protocol: str = "ocpp1.6",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headers and body of CitrineOS's own answer to a charger (keys with a leading underscore)."""
    context = _context(station_id, correlation_id, tenant_id, timestamp)
    body = {
        "_origin": "csms",
        "_eventGroup": "router",
        "_action": action,
        "_state": 2,
        "_context": context,
        "_payload": payload,
        "_protocol": protocol,
    }
    return _headers("csms", "router", action, 2, context), body


def _context(station_id: str, correlation_id: str, tenant_id: int, timestamp: str) -> dict[str, Any]:
    return {
        "stationId": station_id,
        "correlationId": correlation_id,
        "tenantId": tenant_id,
        "timestamp": timestamp,
    }


def _headers(origin: str, event_group: str, action: str, state: int, context: dict[str, Any]) -> dict[str, Any]:
    # Header values are strings on the wire (state "1", tenantId "1").
    return {
        "origin": origin,
        "eventGroup": event_group,
        "action": action,
        "state": str(state),
        "stationId": context["stationId"],
        "correlationId": context["correlationId"],
        "tenantId": str(context["tenantId"]),
        "timestamp": context["timestamp"],
    }


class AmqpPublisher:
    """Publish messages on a headers exchange from a background thread."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self.published = 0

    def start(self) -> None:
        """Connect (raising AmqpUnavailableError if the broker is unreachable) and start the thread."""
        try:
            self._connect()
        except pika.exceptions.AMQPError as exc:
            raise AmqpUnavailableError(f"cannot reach RabbitMQ at {self._safe_url()}: {exc!r}") from exc
        self._thread = threading.Thread(target=self._run, name="citrineos-double-amqp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Publish what is queued, then close the connection."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.close()
            except pika.exceptions.AMQPError:
                logger.debug("closing the AMQP connection failed", exc_info=True)
        self._connection = None

    def publish(self, headers: dict[str, Any], body: dict[str, Any]) -> None:
        """Queue one message; safe to call from any thread."""
        self._queue.put((headers, js_dumps(body).encode()))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued message has been handed to the broker."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def _safe_url(self) -> str:
        params = pika.URLParameters(self.url)
        return f"amqp://{params.host}:{params.port}{params.virtual_host}"

    def _connect(self) -> None:
        params = pika.URLParameters(self.url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 10
        self._connection = pika.BlockingConnection(params)
        self._channel = self._connection.channel()
        self._channel.exchange_declare(
            exchange=self.exchange, exchange_type="headers", durable=False, auto_delete=False
        )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                headers, body = item
                self._send(headers, body)
            finally:
                self._queue.task_done()

    def _send(self, headers: dict[str, Any], body: bytes) -> None:
        properties = pika.BasicProperties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=1,
            priority=0,
            headers=headers,
        )
        for attempt in range(2):
            try:
                if self._channel is None or self._connection is None or not self._connection.is_open:
                    self._connect()
                self._channel.basic_publish(exchange=self.exchange, routing_key="", body=body, properties=properties)
                self.published += 1
                return
            except pika.exceptions.AMQPError:
                # One reconnect: a broker restart should not silently drop everything after it.
                logger.warning("AMQP publish failed (attempt %d)", attempt + 1, exc_info=True)
                self._channel = None
        logger.error("dropping AMQP message %s/%s", headers.get("action"), headers.get("correlationId"))
