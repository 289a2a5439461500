"""Fixtures for tests against the CitrineOS 1.8.3 double (real PostgreSQL and RabbitMQ on 127.0.0.1).

``citrineos_double`` starts one double for the session. The services it needs must be running:
when PostgreSQL or RabbitMQ is unreachable the tests fail (they are not skipped), with a message
naming the missing service.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from support import shared_dir

from citrineos_testdouble import CitrineOSDouble
from citrineos_testdouble.contract import AmqpRecorder, CallbackServer

# The recordings live beside the repository, like the scenarios.
os.environ.setdefault("CITRINEOS_CONTRACT_DIR", str(shared_dir() / "citrineos-contract"))

PG_ADDR = ("127.0.0.1", 5432)
AMQP_ADDR = ("127.0.0.1", 5672)


def _reachable(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=2):
            return True
    except OSError:
        return False


def require_services() -> None:
    """Fail (not skip) when PostgreSQL or RabbitMQ is not reachable."""
    missing = [name for name, addr in (("PostgreSQL", PG_ADDR), ("RabbitMQ", AMQP_ADDR)) if not _reachable(addr)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not reachable on 127.0.0.1 "
            f"(PostgreSQL 5432 with trust auth and database 'test'; RabbitMQ 5672 guest/guest): "
            "the CitrineOS double tests need both services running",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def citrineos_double() -> Iterator[CitrineOSDouble]:
    """A running CitrineOS double shared by the whole session (defaults of CitrineOS 1.8.3)."""
    require_services()
    with CitrineOSDouble() as double:
        yield double


@pytest.fixture
def station_id() -> str:
    """A station id no other test uses (the double and the exchange are shared)."""
    return f"T-{uuid.uuid4().hex[:10].upper()}"


@pytest.fixture(scope="session")
def amqp_recorder(citrineos_double: CitrineOSDouble) -> Iterator[AmqpRecorder]:
    """Records everything the session's double publishes."""
    recorder = AmqpRecorder(citrineos_double.amqp_url, citrineos_double.exchange)
    yield recorder
    recorder.close()


@pytest.fixture(scope="session")
def callback_server() -> Iterator[CallbackServer]:
    """Receives callbackUrl and subscription webhook requests."""
    server = CallbackServer()
    yield server
    server.close()
