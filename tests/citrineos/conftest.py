"""Fixtures for tests against the CitrineOS 1.8.3 double (the run's own PostgreSQL and RabbitMQ).

``citrineos_double`` starts one double for the session on the run's services (``tests/conftest.py``),
publishing on an exchange of the run. A double made directly with ``CitrineOSDouble()`` in a test
picks the same services from the ``CITRINEOS_DOUBLE_*`` variables that the service fixtures set;
such a test must ask for the ``citrineos_services`` fixture.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from citrineos_testdouble import CitrineOSDouble
from citrineos_testdouble.contract import AmqpRecorder, CallbackServer
from services import RUN_ID
from support import shared_dir

# The recordings live beside the repository, like the scenarios.
os.environ.setdefault("CITRINEOS_CONTRACT_DIR", str(shared_dir() / "citrineos-contract"))

#: The exchange of this run's doubles (no other run's events reach its listeners).
RUN_EXCHANGE = f"citrineos-{RUN_ID}"


def require_services() -> None:
    """Fail unless the ``citrineos_services`` fixture is active (a direct ``CitrineOSDouble()`` needs it)."""
    if not (os.environ.get("CITRINEOS_DOUBLE_DSN") and os.environ.get("CITRINEOS_DOUBLE_AMQP_URL")):
        pytest.fail("this test makes its own CitrineOSDouble: ask for the citrineos_services fixture", pytrace=False)


@pytest.fixture(scope="session")
def citrineos_services(postgres_dsn: str, amqp_url: str) -> Iterator[tuple[str, str]]:
    """The run's (dsn, amqp_url); while it lives, ``CitrineOSDouble()`` uses them and the run's exchange."""
    previous = os.environ.get("CITRINEOS_DOUBLE_EXCHANGE")
    os.environ["CITRINEOS_DOUBLE_EXCHANGE"] = RUN_EXCHANGE
    try:
        yield postgres_dsn, amqp_url
    finally:
        if previous is None:
            os.environ.pop("CITRINEOS_DOUBLE_EXCHANGE", None)
        else:
            os.environ["CITRINEOS_DOUBLE_EXCHANGE"] = previous


@pytest.fixture(scope="session")
def citrineos_double(citrineos_services: tuple[str, str]) -> Iterator[CitrineOSDouble]:
    """A running CitrineOS double shared by the whole session (defaults of CitrineOS 1.8.3)."""
    dsn, amqp_url = citrineos_services
    with CitrineOSDouble(dsn=dsn, amqp_url=amqp_url, exchange=RUN_EXCHANGE) as double:
        yield double


@pytest.fixture
def station_id() -> str:
    """A station id no other test uses (the double and the exchange are shared within the run)."""
    return f"T{RUN_ID[:4].upper()}-{uuid.uuid4().hex[:8].upper()}"


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
