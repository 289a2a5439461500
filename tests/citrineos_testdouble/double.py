"""CitrineOS 1.8.3 test double: OCPP 1.6J central system, REST API, Hasura-like GraphQL, RabbitMQ.

Start it from Python (it runs its servers in a background thread with its own asyncio loop)::

    with CitrineOSDouble() as double:
        ...  # connect charge points to f"{double.ws_url}/CP-1", call double.rest_url, ...

It stores what it sees in a private schema of a real PostgreSQL database (same tables as
CitrineOS, dropped on stop) and publishes on a real RabbitMQ broker the messages CitrineOS
publishes. See ``docs/citrineos-double.md`` for the recorded behaviour it reproduces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from citrineos_testdouble._amqp import AmqpUnavailableError
from citrineos_testdouble._core import DEFAULT_AMQP_URL as DEFAULT_AMQP_URL
from citrineos_testdouble._core import DEFAULT_DSN as DEFAULT_DSN
from citrineos_testdouble._core import DoubleConfig
from citrineos_testdouble._core import _Core as _Core
from citrineos_testdouble._db import DatabaseUnavailableError
from citrineos_testdouble._http import HttpFaults

__all__ = ["AmqpUnavailableError", "CitrineOSDouble", "DatabaseUnavailableError", "DoubleConfig"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CitrineOSDouble:
    """A stand-in for CitrineOS 1.8.3 that speaks its OCPP 1.6J, REST, AMQP and Hasura interfaces.

    Args:
        host: interface to bind; keep the default 127.0.0.1.
        rest_port / ws_port / graphql_port: ports (0 picks a free one; read the ``*_url`` attributes).
        dsn: libpq connection string of the PostgreSQL database that receives the private schema
            (default ``$CITRINEOS_DOUBLE_DSN``, else PostgreSQL on 127.0.0.1:5432, database ``test``).
        amqp_url: RabbitMQ URL (default ``$CITRINEOS_DOUBLE_AMQP_URL``, else guest@127.0.0.1:5672);
            messages go to exchange ``exchange`` (type headers; default ``$CITRINEOS_DOUBLE_EXCHANGE``,
            else ``citrineos``). The test suite sets these three variables to its private services.
        tenant_id: the CitrineOS tenant of every station (1 by default, like CitrineOS).
        heartbeat_interval: interval given in the BootNotification answer.
        max_call_length_s: how long a CSMS call may wait for the charger's answer (CitrineOS: 30 s).
        max_caching_s: how long a callbackUrl stays usable after the REST call (CitrineOS: 30 s).
        id_tags: None accepts every idTag; a list seeds these tags as Accepted in ``Authorizations``
            and answers Invalid for every other tag (CitrineOS's behaviour with seeded tags).
        keep_schema: keep the schema after :meth:`stop` (for debugging).
        ws201_port: port of the OCPP 2.0.1 websocket (subprotocol ocpp2.0.1; read :attr:`ws201_url`).
        smart_charging_on_needs: answer NotifyEVChargingNeeds with CitrineOS's own TxProfile (stackLevel
            0 at evMaxCurrent) and GetChargingProfiles, as CitrineOS 1.8.3 does.

    Raises (from :meth:`start`):
        DatabaseUnavailableError: PostgreSQL cannot be reached.
        AmqpUnavailableError: RabbitMQ cannot be reached.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        ws_port: int = 0,
        ws201_port: int = 0,
        graphql_port: int = 0,
        dsn: str | None = None,
        amqp_url: str | None = None,
        exchange: str | None = None,
        tenant_id: int = 1,
        heartbeat_interval: int = 60,
        max_call_length_s: float = 30.0,
        max_caching_s: float = 30.0,
        id_tags: Iterable[str] | None = None,
        keep_schema: bool = False,
        smart_charging_on_needs: bool = True,
    ) -> None:
        if max_call_length_s <= 0:
            raise ValueError(f"max_call_length_s must be > 0, got {max_call_length_s}")
        self.config = DoubleConfig(
            host=host,
            rest_port=rest_port,
            ws_port=ws_port,
            ws201_port=ws201_port,
            graphql_port=graphql_port,
            dsn=dsn or os.environ.get("CITRINEOS_DOUBLE_DSN") or DEFAULT_DSN,
            amqp_url=amqp_url or os.environ.get("CITRINEOS_DOUBLE_AMQP_URL") or DEFAULT_AMQP_URL,
            exchange=exchange or os.environ.get("CITRINEOS_DOUBLE_EXCHANGE") or "citrineos",
            tenant_id=tenant_id,
            heartbeat_interval=heartbeat_interval,
            max_call_length_s=max_call_length_s,
            max_caching_s=max_caching_s,
            id_tags=None if id_tags is None else tuple(id_tags),
            keep_schema=keep_schema,
            smart_charging_on_needs=smart_charging_on_needs,
        )
        #: Name of the PostgreSQL schema holding this instance's tables.
        self.schema = f"citrineos_double_{uuid.uuid4().hex[:10]}"
        self._core = _Core(self.config, self.schema)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> CitrineOSDouble:
        """Connect to PostgreSQL and RabbitMQ, create the schema and start listening."""
        if self._thread is not None:
            raise RuntimeError("the double is already running")
        self._core.publisher.start()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._core.start())
            except BaseException as exc:
                failure.append(exc)
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._core.store.close(drop=True))
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
                # Connection handlers still waiting for a peer that went away are cancelled
                # rather than destroyed with the loop.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="citrineos-double", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure or not ready.is_set():
            self._thread.join(timeout=5)
            self._thread = None
            self._core.publisher.stop()
            if failure:
                raise failure[0]
            raise RuntimeError("the double did not start within 30 s")
        logger.info("CitrineOS double: REST %s, OCPP %s, GraphQL %s", self.rest_url, self.ws_url, self.graphql_url)
        return self

    def stop(self) -> None:
        """Close every connection, drop the schema and stop the thread."""
        if self._thread is None or self._loop is None:
            return
        try:
            self.run(self._core.stop(), timeout=15)
        except Exception:
            logger.warning("stopping the double failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._core.publisher.stop()

    def __enter__(self) -> CitrineOSDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run a coroutine in the double's loop and return its result (for tests and tools)."""
        if self._loop is None:
            raise RuntimeError("the double is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- addresses --------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.config.host}:{self._core.rest.port}"

    @property
    def ws_url(self) -> str:
        """Base URL for charge points; connect to ``f"{ws_url}/{station_id}"`` with subprotocol ocpp1.6."""
        return f"ws://{self.config.host}:{self._core.ws_port}"

    @property
    def ws201_url(self) -> str:
        """Base URL for OCPP 2.0.1 stations (``f"{ws201_url}/{station_id}"``, subprotocol ocpp2.0.1)."""
        return f"ws://{self.config.host}:{self._core.ws201_port}"

    @property
    def graphql_url(self) -> str:
        """The Hasura-like endpoint (``POST {"query", "variables", "operationName"}``)."""
        return f"http://{self.config.host}:{self._core.graphql.port}/v1/graphql"

    @property
    def dsn(self) -> str:
        """libpq connection string of the database; set ``search_path`` to :attr:`schema`."""
        return self.config.dsn

    @property
    def amqp_url(self) -> str:
        """The RabbitMQ URL the double publishes to."""
        return self.config.amqp_url

    @property
    def exchange(self) -> str:
        """The exchange the double publishes to (``citrineos``)."""
        return self.config.exchange

    @property
    def tenant_id(self) -> int:
        """Tenant of every station."""
        return self.config.tenant_id

    # --- faults and helpers -------------------------------------------------------------------

    @property
    def rest_faults(self) -> HttpFaults:
        """Fault injection for the REST API: ``fail_next``, ``hang_next``, ``refuse``, ``heal``."""
        return self._core.rest.faults

    @property
    def graphql_faults(self) -> HttpFaults:
        """Fault injection for the GraphQL endpoint (same methods as :attr:`rest_faults`)."""
        return self._core.graphql.faults

    def heal(self) -> None:
        """Clear every injected fault and listen again where refused."""
        self.rest_faults.heal()
        self.graphql_faults.heal()

    def connected_stations(self) -> list[str]:
        """Station ids with a registered OCPP connection (1.6 or 2.0.1)."""
        return sorted(session.station_id for session in list(self._core.sessions.values()))

    def disconnect(self, station_id: str, code: int = 1000, reason: str = "Disconnected by admin request") -> None:
        """Close a station's websocket from the CSMS side (as ``DELETE /data/ocpprouter/connection``)."""

        async def close() -> None:
            key = f"{self.config.tenant_id}:{station_id}"
            session = self._core.sessions.get(key)
            if session is not None:
                # Unregistered at once, as CitrineOS does: a frame the session is still handling
                # must not keep the station looking connected.
                del self._core.sessions[key]
                await session.ws.close(code, reason)
                with contextlib.suppress(Exception):
                    await self._core.store.set_online(station_id, False)

        self.run(close())

    def fail_requests(
        self,
        action: str,
        *,
        station_id: str | None = None,
        count: int | None = 1,
        code: str = "RpcFrameworkError",
        description: str = "Call already in progress",
    ) -> None:
        """Answer the next ``count`` ``action`` requests of a station (None: any) with a CALLERROR.

        ``count=None`` answers every such request until :meth:`clear_request_faults`. The default
        is the CALLERROR CitrineOS 1.8.3 sends a busy station (also to OCPP 1.6 stations, which do
        not define the code). Such a request is neither published nor stored, as CitrineOS does.
        """
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1 or None, got {count}")

        async def add() -> None:
            self._core.request_faults.add(station_id, action, count, code, description)

        self.run(add())

    def clear_request_faults(self) -> int:
        """Stop injecting request CALLERRORs; returns how many were injected so far."""

        async def clear() -> int:
            self._core.request_faults.clear()
            return self._core.request_faults.injected

        return self.run(clear())

    def seed_id_tag(self, id_tag: str, status: str = "Accepted") -> None:
        """Insert or update an ``Authorizations`` row (status Accepted, Blocked, Invalid, ...)."""
        self.run(self._core.store.seed_authorization(id_tag, status))

    def flush_amqp(self, timeout: float = 5.0) -> None:
        """Wait until every message so far has been handed to RabbitMQ."""
        self._core.publisher.flush(timeout)
