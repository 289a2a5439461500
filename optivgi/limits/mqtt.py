"""A limit read from an MQTT topic (e.g. a grid meter's import headroom published every few seconds)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from optivgi.clock import Clock
from optivgi.limits.base import ReadingSource, Trigger, parse_payload

__all__ = ["MqttLimit"]

logger = logging.getLogger(__name__)


class MqttLimit(ReadingSource):
    """Subscribes to ``topic`` and takes every message as a new reading.

    A payload is a bare number (``"27.5"``) or a JSON document (see
    :func:`~optivgi.limits.base.parse_payload`). A malformed message is logged and ignored. A
    retained message is ignored unless ``accept_retained`` (it may be hours old, and its age is
    unknown). Without a good message for ``timeout_s`` the source answers ``floor_kw`` and calls
    its trigger; a watchdog thread checks every ``check_s``.

    Args:
        topic: the topic to subscribe to.
        host, port: the broker (default 127.0.0.1:1883).
        floor_kw, timeout_s, max_kw: see :class:`~optivgi.limits.base.ReadingSource`.
        field, forecast_field, scale: where the values are in a JSON payload, and their scale to kW.
        username, password: broker credentials, if any.
        qos: subscription QoS (0, 1 or 2).
        accept_retained: take a retained message as a fresh reading.
        check_s: watchdog period [s of clock time] (default: a quarter of ``timeout_s``, at most 5 s).
    """

    name = "mqtt"

    def __init__(
        self,
        topic: str,
        *,
        floor_kw: float,
        timeout_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 1883,
        field: str = "limit_kw",
        forecast_field: str = "forecast",
        scale: float = 1.0,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        accept_retained: bool = False,
        check_s: float | None = None,
        max_kw: float | None = None,
        clock: Clock | None = None,
        trigger: Trigger | None = None,
    ) -> None:
        super().__init__(floor_kw=floor_kw, timeout_s=timeout_s, max_kw=max_kw, clock=clock, trigger=trigger)
        if not isinstance(topic, str) or not topic or any(c in topic for c in "+#"):
            raise ValueError(f"'topic' must be a topic name without wildcards, got {topic!r}")
        if qos not in (0, 1, 2):
            raise ValueError(f"'qos' must be 0, 1 or 2, got {qos!r}")
        self.topic, self.host, self.port, self.qos = topic, host, int(port), qos
        self.field, self.forecast_field, self.scale = field, forecast_field, float(scale)
        self.username, self.password = username, password
        self.accept_retained = accept_retained
        self.check_s = float(check_s) if check_s is not None else min(self.timeout_s / 4, 5.0)
        self.messages = 0
        self.rejected = 0
        self.subscribed = threading.Event()
        self._client: Any = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- messages -------------------------------------------------------------------------------
    def handle_payload(self, payload: bytes, *, retained: bool = False) -> bool:
        """Take one message; True when it became the new reading."""
        self.messages += 1
        if retained and not self.accept_retained:
            logger.info("limit source %s: retained message on %s ignored (age unknown)", self.name, self.topic)
            return False
        try:
            doc = json.loads(payload.decode("utf-8"))
            kw, forecast = parse_payload(doc, field=self.field, forecast_field=self.forecast_field, scale=self.scale)
        except (UnicodeDecodeError, ValueError) as exc:
            self.rejected += 1
            logger.warning("limit source %s: bad message on %s ignored: %s", self.name, self.topic, exc)
            return False
        self.update(kw, forecast)
        return True

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            logger.warning("limit source %s: broker %s:%d refused the connection: %s",
                           self.name, self.host, self.port, reason)
            return
        # (Re)subscribe on every connection: a reconnect starts a clean session.
        client.subscribe(self.topic, qos=self.qos)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any = None) -> None:
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self.handle_payload(bytes(message.payload), retained=bool(message.retain))
        except Exception:  # a callback must never kill the network thread
            logger.exception("limit source %s: message handling failed", self.name)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        self.subscribed.clear()
        if not self._stop.is_set():
            logger.warning("limit source %s: disconnected from %s:%d (%s); reconnecting",
                           self.name, self.host, self.port, reason)

    # -- lifecycle ------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.clock.real_seconds(self.check_s)):
            try:
                self.poll()
            except Exception:  # the watchdog must outlive any surprise
                logger.exception("limit source %s: watchdog failed", self.name)

    def start(self) -> None:
        """Connect (in the background, retrying) and start the watchdog."""
        if self._client is not None:
            return
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise RuntimeError("the mqtt limit source needs paho-mqtt: pip install 'opti-vgi[mqtt]'") from None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"optivgi-limit-{uuid.uuid4().hex[:12]}")
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._stop.clear()
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client
        self._watchdog = threading.Thread(target=self._watch, name=f"optivgi-limit-{self.name}", daemon=True)
        self._watchdog.start()
        self.poll()

    def stop(self) -> None:
        """Disconnect and stop the watchdog."""
        self._stop.set()
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
            self._watchdog = None
