"""RabbitMQ listener for CitrineOS 1.8.3: charging events trigger cycles, profile answers are correlated.

CitrineOS publishes every OCPP message, in both directions, on the ``citrineos`` headers exchange
(non-durable, not auto-delete, routing key ``""``), with the headers ``origin`` (``cs``/``csms``),
``eventGroup``, ``action``, ``state`` (``"1"`` request, ``"2"`` answer), ``stationId``,
``correlationId`` (the OCPP message id, shared by a request and its answer), ``tenantId`` and
``timestamp``. :class:`CitrineOSListener` binds its own exclusive, auto-delete queue to that
exchange with ``x-match: all`` bindings (see :data:`BINDINGS`), so CitrineOS's own queues are never
touched, and runs a pika blocking connection in a daemon thread that reconnects with exponential
backoff and jitter after the broker goes away, re-declaring its queue and bindings each time.

Two kinds of messages arrive:

- charging events (StartTransaction, StopTransaction, StatusNotification, and for OCPP 2.0.1
  TransactionEvent and NotifyEVChargingNeeds, all ``origin=cs, state=1``): handlers see them,
  then the trigger is called once per event (:func:`trigger_reason`);
- SetChargingProfile requests published by CitrineOS (``csms``, state 1) and the chargers' answers
  (``cs``, state 2): they go to the handlers only (the :class:`ProfileAnswerTracker`) and never
  trigger a cycle, so sending profiles cannot feed back into the loop;
- BootNotification (``cs``, state 1): handlers only (a rebooted charger may have lost its
  profiles), no cycle.

A charger reports a burst of StatusNotifications when it boots or a session starts (connector 0,
then each connector, often repeating a status). Only a change of a connector's status can change
the plan, so a StatusNotification for connector 0 (the whole charge point) or repeating the last
status seen for that connector does not trigger a cycle; the loop coalesces the rest.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = [
    "BINDINGS",
    "EVENT_ACTIONS",
    "AmqpEvent",
    "CitrineOSListener",
    "PendingAnswer",
    "ProfileAnswerTracker",
    "check_amqp_url",
    "parse_message",
    "profile_fingerprint",
    "trigger_reason",
]

from optivgi_citrineos.answers import PendingAnswer, ProfileAnswerTracker, profile_fingerprint

logger = logging.getLogger(__name__)

#: Charger-initiated actions that may change who charges or what they need.
EVENT_ACTIONS: tuple[str, ...] = (
    "StartTransaction",
    "StopTransaction",
    "StatusNotification",
    "TransactionEvent",
    "NotifyEVChargingNeeds",
)

#: The listener queue's bindings on the exchange (``x-match: all`` on string header values).
BINDINGS: tuple[dict[str, str], ...] = (
    *({"x-match": "all", "action": a, "origin": "cs", "state": "1"} for a in EVENT_ACTIONS),
    # The request CitrineOS publishes for a REST SetChargingProfile (gives the correlationId) ...
    {"x-match": "all", "action": "SetChargingProfile", "origin": "csms", "state": "1"},
    # ... and the charger's answer under the same correlationId.
    {"x-match": "all", "action": "SetChargingProfile", "origin": "cs", "state": "2"},
    # A (re)booted charger: its fallback profile is installed again.
    {"x-match": "all", "action": "BootNotification", "origin": "cs", "state": "1"},
)

# TransactionEvent Updated arrives every few seconds with meter values; only these reasons
# change what the planner should do.
_TX_UPDATE_REASONS = frozenset(
    {
        "ChargingStateChanged",
        "EVConnected",
        "EVDeparted",
        "EVCommunicationLost",
        "StopAuthorized",
        "Deauthorized",
        "EnergyLimitReached",
        "ChargingRateChanged",
        "RemoteStop",
        "AbnormalCondition",
    }
)


@attrs.frozen
class AmqpEvent:
    """One message from the ``citrineos`` exchange, decoded.

    Attributes:
        action: OCPP action.
        origin: ``cs`` (from the charger) or ``csms`` (from CitrineOS).
        state: 1 request, 2 answer.
        station_id: the station.
        correlation_id: OCPP message id (request and answer share it).
        tenant_id: tenant, as the string header.
        payload: the OCPP payload.
    """

    action: str
    origin: str
    state: int
    station_id: str
    correlation_id: str
    tenant_id: str
    payload: Any


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def parse_message(headers: Mapping[str, Any] | None, body: bytes) -> AmqpEvent | None:
    """Decode one message; None (and a debug log) when it does not have CitrineOS's shape.

    Headers are authoritative; the body gives the payload (``payload``, or ``_payload`` in
    CitrineOS's own answers).
    """
    h = headers or {}
    action, origin, station = _text(h.get("action")), _text(h.get("origin")), _text(h.get("stationId"))
    try:
        state = int(_text(h.get("state")))
        decoded = json.loads(body)
    except (ValueError, TypeError):
        logger.debug("ignoring a message that is not CitrineOS JSON (headers %r)", dict(h))
        return None
    if not action or not origin or not station or not isinstance(decoded, Mapping):
        logger.debug("ignoring a message without action/origin/stationId (headers %r)", dict(h))
        return None
    payload = decoded.get("payload", decoded.get("_payload"))
    return AmqpEvent(
        action=action,
        origin=origin,
        state=state,
        station_id=station,
        correlation_id=_text(h.get("correlationId")),
        tenant_id=_text(h.get("tenantId")),
        payload=payload,
    )


def trigger_reason(event: AmqpEvent) -> str | None:
    """Why ``event`` should start a cycle, or None (profile traffic, periodic meter values)."""
    if event.origin != "cs" or event.state != 1 or event.action not in EVENT_ACTIONS:
        return None
    p = event.payload if isinstance(event.payload, Mapping) else {}
    where = event.station_id
    if event.action == "StatusNotification":
        conn = p.get("connectorId", p.get("evseId"))
        return f"StatusNotification {where}#{conn} {p.get('status', p.get('connectorStatus', '?'))}"
    if event.action == "StartTransaction":
        return f"StartTransaction {where}#{p.get('connectorId')}"
    if event.action == "StopTransaction":
        return f"StopTransaction {where} tx {p.get('transactionId')}"
    if event.action == "TransactionEvent":
        kind, reason = p.get("eventType"), p.get("triggerReason")
        if kind in ("Started", "Ended") or reason in _TX_UPDATE_REASONS:
            tx = (p.get("transactionInfo") or {}).get("transactionId")
            return f"TransactionEvent {kind} {where} tx {tx} ({reason})"
        return None
    return f"NotifyEVChargingNeeds {where}#{p.get('evseId')}"


Handler = Callable[[AmqpEvent], None]


def check_amqp_url(url: str, variable: str = "AMQP_URL") -> Any:
    """The pika connection parameters of ``url``; ConfigurationError naming ``variable`` (and
    showing the URL with its password masked) when pika cannot use it."""
    from optivgi.config import mask_url
    from optivgi.errors import ConfigurationError
    from optivgi.redaction import url_error_reason

    if not url.lower().startswith(("amqp://", "amqps://")):
        raise ConfigurationError(f"{variable} must be an amqp:// or amqps:// URL, got {mask_url(url)!r}")
    try:
        import pika
    except ImportError:  # pragma: no cover - pika is part of the citrineos extra
        raise ConfigurationError(
            f"{variable} is set but pika is not installed (pip install 'opti-vgi[citrineos]')"
        ) from None
    try:
        return pika.URLParameters(url)
    except Exception as exc:  # pika raises ValueError, TypeError or its own errors for a bad URL
        reason = url_error_reason(f"{type(exc).__name__}: {exc}", url)
        raise ConfigurationError(f"{variable} cannot be used ({reason}): {mask_url(url)!r}") from None


class CitrineOSListener:
    """Consumes CitrineOS's exchange in a daemon thread; see the module documentation.

    Args:
        amqp_url: broker URL (``amqp://user:pass@host:5672/vhost``).
        exchange: CitrineOS's exchange name.
        trigger: called with a reason string once per charging event (may be set later).
        handlers: called with every decoded message before the trigger.
        accept: which messages matter (e.g. only the configured stations and tenant: the
            exchange carries every station of every tenant); None accepts all.
        reconnect_initial_s: first reconnect delay; doubles up to ``reconnect_max_s``, each
            delay drawn uniformly from its upper half (jitter).
        heartbeat_s: AMQP heartbeat, so a dead broker is noticed.
        ssl_context: TLS context for an ``amqps://`` URL (CA bundle, client certificate); None
            uses the system's trust store for ``amqps://``.
        variable: the setting the URL came from, named when it cannot be used.

    The URL is checked by :meth:`start` (ConfigurationError naming ``variable``). Should the
    consumer thread's loop ever fail outside its reconnect handling, the failure is logged at
    ERROR and the loop starts again after the reconnect delay (:attr:`restarts` counts it).
    """

    def __init__(
        self,
        amqp_url: str,
        *,
        exchange: str = "citrineos",
        trigger: Callable[[str], None] | None = None,
        handlers: tuple[Handler, ...] = (),
        accept: Callable[[AmqpEvent], bool] | None = None,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        heartbeat_s: int = 30,
        ssl_context: ssl.SSLContext | None = None,
        variable: str = "AMQP_URL",
    ) -> None:
        self._url = amqp_url
        self._variable = variable
        self._restarts = 0
        self._ssl_context = ssl_context
        # Last status per (tenant, station, connector), to skip StatusNotifications that change nothing.
        self._last_status: dict[tuple[str, str, str], str] = {}
        self._suppressed = 0
        self._exchange = exchange
        self._trigger = trigger
        self._handlers: list[Handler] = list(handlers)
        self._accept = accept
        self._initial = reconnect_initial_s
        self._max = reconnect_max_s
        self._heartbeat = heartbeat_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._connections = 0
        self._queue: str | None = None
        self._events = 0
        self._triggers = 0

    # -- public API --------------------------------------------------------------------------
    def set_trigger(self, trigger: Callable[[str], None] | None) -> None:
        """Set (or clear) the function called once per charging event."""
        self._trigger = trigger

    def add_handler(self, handler: Handler) -> None:
        """Call ``handler`` with every decoded message (before the trigger)."""
        self._handlers.append(handler)

    def start(self) -> None:
        """Check the URL and start the consumer thread (idempotent); a thread that died is
        started again (logged at ERROR).

        Raises:
            ConfigurationError: the URL cannot be used (naming the variable, password masked).
        """
        check_amqp_url(self._url, self._variable)
        if self._thread is not None:
            if self._thread.is_alive():
                return
            if not self._stop.is_set():
                with self._lock:
                    self._restarts += 1
                logger.error("AMQP listener thread had died; starting it again")
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="optivgi-citrineos-amqp", daemon=True)
        self._thread.start()

    @property
    def restarts(self) -> int:
        """How many times the consumer loop was started again after dying."""
        with self._lock:
            return self._restarts

    def _supervise(self) -> None:
        """Run :meth:`_run`; if it ever fails, log at ERROR and run it again until stopped."""
        delay = self._initial
        while not self._stop.is_set():
            try:
                self._run()
                return
            except Exception as exc:  # the listener must outlive any bug in its loop
                with self._lock:
                    self._restarts += 1
                    count = self._restarts
                self._ready.clear()
                logger.exception("AMQP listener thread died (%s: %s); restarting it in %.1f s (restart %d)",
                                 type(exc).__name__, exc, delay, count)
                self._stop.wait(delay)
                delay = min(delay * 2, self._max)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming, close the connection and join the thread."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("AMQP listener thread did not stop within %.1f s", timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the queue is bound and consuming; False when ``timeout`` passed first."""
        return self._ready.wait(timeout)

    @property
    def is_consuming(self) -> bool:
        """True while the queue is bound and a consumer is registered."""
        return self._ready.is_set()

    @property
    def connection_count(self) -> int:
        """How many times a connection was set up and consuming (1 + reconnections)."""
        with self._lock:
            return self._connections

    @property
    def queue_name(self) -> str | None:
        """The broker-named queue of the current connection."""
        with self._lock:
            return self._queue

    @property
    def suppressed(self) -> int:
        """How many StatusNotifications did not trigger a cycle (connector 0 or no change)."""
        with self._lock:
            return self._suppressed

    @property
    def triggers(self) -> int:
        """How many times the trigger was called."""
        with self._lock:
            return self._triggers

    def _status_changed(self, event: AmqpEvent) -> bool:
        """Record a StatusNotification; False for connector 0 or a repeat of the last status."""
        p = event.payload if isinstance(event.payload, Mapping) else {}
        connector = p.get("connectorId", p.get("evseId"))
        status = str(p.get("status", p.get("connectorStatus", "")))
        # OCPP 2.0.1 reports per EVSE and connector; the pair names the connector.
        key = (event.tenant_id, event.station_id, f"{p.get('evseId', '')}/{connector}")
        with self._lock:
            if str(connector) == "0" or self._last_status.get(key) == status:
                self._suppressed += 1
                return False
            self._last_status[key] = status
            return True

    # -- thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        import pika
        import pika.exceptions

        params = self._parameters()
        if self._url.lower().startswith("amqps://"):
            context = self._ssl_context or ssl.create_default_context()
            params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
        params.heartbeat = self._heartbeat
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": "optivgi-citrineos-listener"}
        delay = self._initial
        while not self._stop.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(params)
                channel = self._declare(connection)
                queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
                for arguments in BINDINGS:
                    channel.queue_bind(queue=queue, exchange=self._exchange, arguments=dict(arguments))
                channel.basic_consume(queue=queue, on_message_callback=self._on_message, auto_ack=True)
                with self._lock:
                    self._connections += 1
                    self._queue = queue
                    count = self._connections
                self._ready.set()
                delay = self._initial
                logger.info("AMQP listener consuming %s on exchange %r (connection %d)", queue, self._exchange, count)
                while not self._stop.is_set():
                    connection.process_data_events(time_limit=0.25)
            except Exception as exc:  # broker loss (pika.exceptions.AMQPError, OSError) or anything else
                if self._stop.is_set():
                    break
                pause = random.uniform(delay / 2, delay)
                expected = isinstance(exc, pika.exceptions.AMQPError | OSError)
                logger.log(
                    logging.WARNING if expected else logging.ERROR,
                    "AMQP listener lost the broker (%s: %s); reconnecting in %.1f s",
                    type(exc).__name__,
                    exc or "",
                    pause,
                    exc_info=not expected,
                )
                self._ready.clear()
                self._close(connection)
                connection = None
                self._stop.wait(pause)
                delay = min(delay * 2, self._max)
            finally:
                self._ready.clear()
                self._close(connection)
        logger.info("AMQP listener stopped")

    def _parameters(self) -> Any:
        """pika's connection parameters for the URL (checked by :meth:`start`)."""
        return check_amqp_url(self._url, self._variable)

    def _declare(self, connection: Any) -> Any:
        """Make sure the exchange exists without disturbing a running CitrineOS.

        A passive declare checks it; only when it is missing (CitrineOS not started yet) is it
        declared, with CitrineOS's own parameters so CitrineOS's later declare agrees.
        """
        import pika.exceptions

        channel = connection.channel()
        try:
            channel.exchange_declare(exchange=self._exchange, passive=True)
            return channel
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
        channel = connection.channel()
        channel.exchange_declare(exchange=self._exchange, exchange_type="headers", durable=False, auto_delete=False)
        return channel

    @staticmethod
    def _close(connection: Any) -> None:
        if connection is None:
            return
        try:
            if connection.is_open:
                connection.close()
        except Exception as exc:  # the connection is being thrown away; nothing else to do
            logger.debug("closing the AMQP connection failed: %s", exc)

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        event = parse_message(getattr(properties, "headers", None), body)
        if event is None or (self._accept is not None and not self._accept(event)):
            return
        with self._lock:
            self._events += 1
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:  # a faulty handler must not kill the consumer
                logger.exception("AMQP handler failed on %s from %s", event.action, event.station_id)
        reason = trigger_reason(event)
        trigger = self._trigger
        if reason is None or trigger is None:
            return
        if event.action == "StatusNotification" and not self._status_changed(event):
            logger.debug("no cycle for %s (nothing changed)", reason)
            return
        with self._lock:
            self._triggers += 1
        logger.debug("trigger: %s", reason)
        try:
            trigger(reason)
        except Exception:  # the loop's trigger must not kill the consumer either
            logger.exception("trigger failed for %s", reason)
