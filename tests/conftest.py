"""Shared fixtures: the scenario folder, and the PostgreSQL and RabbitMQ of this test run.

The services start lazily, once per session, when a test first needs them (see ``services.py``):
a private server of the run from the installed binaries, or the ones that ``OPTIVGI_TEST_PG_DSN``
and ``OPTIVGI_TEST_AMQP_URL`` name. Tests that use them are marked ``needs_postgres`` /
``needs_rabbitmq`` by fixture, so ``-m "not needs_rabbitmq and not needs_postgres"`` runs the
pure tests only. Missing binaries or a missing ``../shared`` skip with one line, and fail under CI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from citrineos_testdouble.contract import RecordingMissingError
from services import PostgresServer, RabbitNode, ServiceUnavailable
from support import missing, require_shared

logger = logging.getLogger(__name__)

#: fixture -> marker added to every test that uses it (directly or through another fixture).
SERVICE_MARKERS = {"postgres_server": "needs_postgres", "rabbitmq_node": "needs_rabbitmq"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by the services its fixtures need."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in SERVICE_MARKERS.items():
            if fixture in names:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    try:
        return (yield)
    except RecordingMissingError as exc:
        missing(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    try:
        return (yield)
    except RecordingMissingError as exc:
        missing(str(exc))


#: What the run started, for the terminal summary ("RabbitMQ: private node ... ready in 6.2 s").
_STARTED: list[str] = []


def _report_startup(config: pytest.Config, name: str, seconds: float, where: str) -> None:
    line = f"{name}: {where} ready in {seconds:.1f} s"
    _STARTED.append(line)
    logger.info("%s", line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per service the run started, with its startup time."""
    for line in _STARTED:
        terminalreporter.write_line(f"[services] {line}")


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[PostgresServer]:
    """The run's PostgreSQL database (private server, or a database of its own on OPTIVGI_TEST_PG_DSN)."""
    server = PostgresServer()
    try:
        server.start()
    except ServiceUnavailable as exc:
        server.stop()
        missing(str(exc))
    except BaseException:
        server.stop()
        raise
    where = "private server" if server.private else "database on OPTIVGI_TEST_PG_DSN"
    _report_startup(pytestconfig, "PostgreSQL", server.startup_s, where)
    os.environ["CITRINEOS_DOUBLE_DSN"] = server.dsn
    try:
        yield server
    finally:
        os.environ.pop("CITRINEOS_DOUBLE_DSN", None)
        server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """libpq string of the run's own database."""
    return postgres_server.dsn


@pytest.fixture(scope="session")
def rabbitmq_node(pytestconfig: pytest.Config) -> Iterator[RabbitNode]:
    """The run's RabbitMQ broker (a private node, or OPTIVGI_TEST_AMQP_URL)."""
    node = RabbitNode()
    try:
        node.start()
    except ServiceUnavailable as exc:
        node.stop()
        missing(str(exc))
    except BaseException:
        node.stop()
        raise
    where = f"private node {node.node}" if node.private else "broker of OPTIVGI_TEST_AMQP_URL"
    _report_startup(pytestconfig, "RabbitMQ", node.startup_s, where)
    os.environ["CITRINEOS_DOUBLE_AMQP_URL"] = node.url
    try:
        yield node
    finally:
        os.environ.pop("CITRINEOS_DOUBLE_AMQP_URL", None)
        node.stop()


@pytest.fixture(scope="session")
def amqp_url(rabbitmq_node: RabbitNode) -> str:
    """AMQP URL of the run's broker."""
    return rabbitmq_node.url


@pytest.fixture(scope="session")
def scenarios_dir() -> Path:
    """The folder of benchmark scenarios (skipped outside CI when absent)."""
    return require_shared("scenarios")
