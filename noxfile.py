"""Developer sessions: ``nox -s tests`` (the CI command), lint, typecheck, demo, bench, docs, e2e."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"

PYTHON = ["3.11"]
ALL_EXTRAS = ".[citrineos,plot,dev]"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (it starts its own PostgreSQL and RabbitMQ: see tests/services.py).

    The closed-loop replays of 200-EV fleets (marker ``heavy``) run in ``nox -s heavy``.
    """
    session.install(ALL_EXTRAS)
    session.run("pytest", "-m", "not heavy", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def heavy(session: nox.Session) -> None:
    """The closed-loop replays of 200-EV fleets (minutes each on two cores)."""
    session.install(ALL_EXTRAS)
    session.run("pytest", "-m", "heavy", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff over the code, tests and benchmarks."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "optivgi", "optivgi_citrineos", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the packages in pyproject's [tool.mypy] (optivgi and optivgi_citrineos)."""
    session.install(ALL_EXTRAS)
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The embedded demo: six EVs on a 30 kW site, no CSMS."""
    session.install(".[plot]")
    session.run("optivgi", "demo", *(session.posargs or ["--plot", "demo.png"]))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every algorithm on every scenario in ../shared/scenarios, one table."""
    session.install(".")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors (the API reference is read from the source:
    only MkDocs and mkdocstrings are installed)."""
    session.install("mkdocs>=1.6", "mkdocstrings[python]>=0.26")
    session.run("mkdocs", "build", "--strict", "-d", "site")


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The CitrineOS demo end to end without Docker: test double + simulator + optivgi run + verify."""
    session.install(ALL_EXTRAS)
    session.run("pytest", "-m", "slow", "-p", "no:cacheprovider", "tests/citrineos/test_e2e.py",
                *(session.posargs or ["-q", "-s"]))
