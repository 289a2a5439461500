"""PostgreSQL and RabbitMQ for the tests: private servers of the test run, or ones named by variables.

By default each test run starts its own servers from the installed binaries, on free ports with
temporary data directories, and stops them at the end:

- PostgreSQL: ``initdb`` + ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` (or ``$OPTIVGI_TEST_PG_BIN``,
  or ``PATH``); when run as root, as the ``postgres`` user.
- RabbitMQ: a node of its own (own node name, AMQP and distribution ports, epmd port, Erlang cookie,
  config, data and log directories, no plugins), started with ``rabbitmq-server`` from
  ``/usr/lib/rabbitmq/bin`` (or ``$OPTIVGI_TEST_RABBITMQ_BIN``, or ``PATH``).

Servers that already run can be used instead:

- ``OPTIVGI_TEST_PG_DSN``: libpq string of a server where the run may create (and drops at the end) a
  database of its own, e.g. ``host=127.0.0.1 port=5432 user=postgres dbname=postgres``;
- ``OPTIVGI_TEST_AMQP_URL``: an AMQP URL, e.g. ``amqp://guest:guest@127.0.0.1:5672/%2F`` (the run
  then uses exchange and queue names of its own); ``OPTIVGI_TEST_RABBITMQ_API`` (e.g.
  ``http://guest:guest@127.0.0.1:15672``) lets the tests close their own connections through the
  management API.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

#: A short id of this test run: databases, exchanges and stations get it in their names.
RUN_ID = uuid.uuid4().hex[:8]


class ServiceUnavailable(Exception):
    """The binaries of a service are not installed (the message says what to install)."""


class ServiceFailed(Exception):
    """A service was found but could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, deadline: float, alive: subprocess.Popen[bytes] | None = None) -> bool:
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(0.1)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_bin() -> Path:
    given = os.environ.get("OPTIVGI_TEST_PG_BIN")
    candidates = [Path(given)] if given else []
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise ServiceUnavailable(
        "PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql) "
        "or set OPTIVGI_TEST_PG_DSN"
    )


class PostgresServer:
    """A PostgreSQL database of this test run (private server, or a database on a given one)."""

    def __init__(self) -> None:
        self.dsn = ""
        self.private = False
        self.startup_s = 0.0
        self._dir: Path | None = None
        self._bin: Path | None = None
        self._user: tuple[int, int] | None = None
        self._admin_dsn = ""
        self._dbname = ""

    def start(self) -> PostgresServer:
        """Start the private server, or create the run's database on ``$OPTIVGI_TEST_PG_DSN``."""
        began = time.monotonic()
        given = os.environ.get("OPTIVGI_TEST_PG_DSN")
        if given:
            self._create_database(given)
        else:
            self._start_private()
        self.startup_s = time.monotonic() - began
        return self

    def _create_database(self, admin_dsn: str) -> None:
        import psycopg
        from psycopg import conninfo, sql

        self._admin_dsn = admin_dsn
        self._dbname = f"optivgi_test_{RUN_ID}"
        try:
            with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self._dbname)))
        except psycopg.Error as exc:
            raise ServiceFailed(f"OPTIVGI_TEST_PG_DSN: cannot create database {self._dbname}: {exc}") from exc
        self.dsn = conninfo.make_conninfo(admin_dsn, dbname=self._dbname)

    def _run(self, *args: str, timeout: float = 120) -> None:
        assert self._bin is not None and self._dir is not None
        uid_gid = self._user
        result = subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self._dir,
            user=uid_gid[0] if uid_gid else None,
            group=uid_gid[1] if uid_gid else None,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
        if result.returncode != 0:
            raise ServiceFailed(f"{args[0]} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")

    def _start_private(self) -> None:
        self._bin = _pg_bin()
        self._dir = Path(tempfile.mkdtemp(prefix=f"optivgi-pg-{RUN_ID}-"))
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServiceUnavailable(
                    "PostgreSQL refuses to run as root and there is no 'postgres' user: "
                    "run the tests as another user or set OPTIVGI_TEST_PG_DSN"
                ) from exc
            self._user = (entry.pw_uid, entry.pw_gid)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        data, log = self._dir / "data", self._dir / "server.log"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        for attempt in range(3):
            port = free_port()
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -k {self._dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "120", "-o", options, "start")
                break
            except ServiceFailed:
                if attempt == 2:
                    raise ServiceFailed(f"PostgreSQL did not start:\n{_tail(log)}") from None
        self.private = True
        self.dsn = f"host=127.0.0.1 port={port} dbname=postgres user=postgres"

    def stop(self) -> None:
        """Stop the private server and remove its files (or drop the run's database)."""
        if self.private and self._dir is not None:
            with contextlib.suppress(ServiceFailed, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "immediate", "-w", "-t", "60", "stop")
            shutil.rmtree(self._dir, ignore_errors=True)
            self.private = False
        elif self._dbname:
            import psycopg
            from psycopg import sql

            with contextlib.suppress(psycopg.Error), psycopg.connect(self._admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self._dbname)))
            self._dbname = ""


# -- RabbitMQ --------------------------------------------------------------------------------


def _rabbit_bin() -> Path:
    given = os.environ.get("OPTIVGI_TEST_RABBITMQ_BIN")
    # Debian's /usr/sbin wrappers switch to the rabbitmq user and its cookie: use the real scripts.
    candidates = [Path(given)] if given else []
    candidates.append(Path("/usr/lib/rabbitmq/bin"))
    found = shutil.which("rabbitmq-server")
    if found:
        candidates.append(Path(found).resolve().parent)
    for folder in candidates:
        if (folder / "rabbitmq-server").exists() and (folder / "rabbitmqctl").exists():
            return folder
    raise ServiceUnavailable(
        "RabbitMQ server not found: install it (Debian: apt-get install rabbitmq-server) "
        "or set OPTIVGI_TEST_AMQP_URL"
    )


class RabbitNode:
    """A RabbitMQ broker for this test run: a private node, or the one ``$OPTIVGI_TEST_AMQP_URL`` names."""

    def __init__(self) -> None:
        self.url = ""
        self.private = False
        self.startup_s = 0.0
        self.node = ""
        self._dir: Path | None = None
        self._bin: Path | None = None
        self._env: dict[str, str] = {}
        self._epmd_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RabbitNode:
        """Start the private node (or check the given broker)."""
        began = time.monotonic()
        given = os.environ.get("OPTIVGI_TEST_AMQP_URL")
        if given:
            self.url = given
        else:
            self._start_private()
        self.startup_s = time.monotonic() - began
        return self

    def _start_private(self) -> None:
        self._bin = _rabbit_bin()
        self._dir = Path(tempfile.mkdtemp(prefix=f"optivgi-rmq-{RUN_ID}-"))
        home = self._dir / "home"
        for sub in ("home", "mnesia", "log"):
            (self._dir / sub).mkdir()
        amqp_port, dist_port, self._epmd_port = free_port(), free_port(), free_port()
        self.node = f"optivgi-{RUN_ID}@localhost"
        (self._dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\nlog.console = false\nlog.file.level = warning\n"
        )
        (self._dir / "rabbitmq-env.conf").write_text("")
        (self._dir / "enabled_plugins").write_text("[].\n")
        self._env = {
            **os.environ,
            "HOME": str(home),  # a private Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self._dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self._dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self._dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self._dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self._dir / "rabbit.pid"),
            "ERL_EPMD_PORT": str(self._epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        log = self._dir / "startup.log"
        with log.open("wb") as out:
            self._process = subprocess.Popen(
                [str(self._bin / "rabbitmq-server")],
                env=self._env,
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.private = True
        if not _wait_port(amqp_port, time.monotonic() + 180, self._process):
            self.stop()
            raise ServiceFailed(f"the private RabbitMQ node did not start:\n{_tail(log)}")
        self.url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/%2F"

    def ctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <private node> ARGS`` (only for the private node)."""
        if not self.private or self._bin is None:
            raise RuntimeError("rabbitmqctl is only used on the run's private node")
        return subprocess.run(
            [str(self._bin / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env,
            cwd=self._dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def close_connections(self, connection_name: str, reason: str = "closed by a test") -> int:
        """Close this run's connections whose client property ``connection_name`` matches; returns how many.

        On the private node through ``rabbitmqctl``, on a given broker through the management API
        named by ``$OPTIVGI_TEST_RABBITMQ_API``; raises :class:`ServiceUnavailable` without either.
        """
        if self.private:
            name = connection_name.replace("\\", "\\\\").replace('"', '\\"')
            why = reason.replace("\\", "\\\\").replace('"', '\\"')
            code = (
                f'Name = <<"{name}">>, '
                "Pids = [P || P <- rabbit_networking:connections(), "
                "lists:keyfind(<<\"connection_name\">>, 1, proplists:get_value(client_properties, "
                "rabbit_networking:connection_info(P, [client_properties]), [])) "
                "=:= {<<\"connection_name\">>, longstr, Name}], "
                f'[rabbit_networking:close_connection(P, "{why}") || P <- Pids], '
                "length(Pids)."
            )
            result = self.ctl("eval", code)
            if result.returncode != 0 or not result.stdout.strip().isdigit():
                raise ServiceFailed(f"closing connections on {self.node} failed: {result.stderr or result.stdout}")
            return int(result.stdout.strip())
        return _close_by_api(connection_name, reason)

    def stop(self) -> None:
        """Stop the private node, its epmd, and remove its files."""
        if not self.private:
            return
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, RuntimeError):
                self.ctl("stop", timeout=60)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        epmd = shutil.which("epmd")
        if epmd and self._epmd_port:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(
                    [epmd, "-port", str(self._epmd_port), "-kill"], capture_output=True, timeout=120, check=False
                )
        self.private = False
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _close_by_api(connection_name: str, reason: str) -> int:
    import httpx

    api = os.environ.get("OPTIVGI_TEST_RABBITMQ_API")
    if not api:
        raise ServiceUnavailable(
            "closing connections on OPTIVGI_TEST_AMQP_URL needs OPTIVGI_TEST_RABBITMQ_API (management API)"
        )
    parts = urllib.parse.urlsplit(api)
    netloc = (parts.hostname or "127.0.0.1") + (f":{parts.port}" if parts.port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, "", "", ""))
    auth = (urllib.parse.unquote(parts.username or "guest"), urllib.parse.unquote(parts.password or "guest"))
    with httpx.Client(base_url=base, auth=auth, timeout=30) as client:
        rows = client.get("/api/connections").raise_for_status().json()
        names = [
            r["name"] for r in rows if (r.get("client_properties") or {}).get("connection_name") == connection_name
        ]
        for name in names:
            client.delete(
                f"/api/connections/{urllib.parse.quote(name, safe='')}", headers={"X-Reason": reason}
            ).raise_for_status()
    return len(names)
