"""The command line's edges: redaction on every handler, ``-t package.module:Class``, one Error line,
and the warning when no session of a cycle lies in the horizon.

The translation is a module written to a temporary directory and named ``module:Class``, run in a
subprocess like a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODULE = '''
"""A translation that logs through library loggers what a careless library might print."""
import logging
import os
from datetime import UTC, datetime, timedelta

from optivgi.models import EV
from optivgi.translation import Translation


class Leaky(Translation):
    @classmethod
    def from_settings(cls, settings):
        t = cls()
        t.url = settings.get("LEAKY_URL")
        t.token = settings.get("LEAKY_TOKEN")
        t.mode = settings.get("LEAKY_MODE", "")
        return t

    def setup(self):
        logging.getLogger("httpx").info("HTTP Request: POST %s", self.url)
        logging.getLogger("pika.connection").debug("connecting with token %s", self.token)
        logging.getLogger("psycopg").warning("connection failed: host=db password=%s", self.token)
        if self.mode == "explode":
            raise RuntimeError(f"cannot connect to {self.url} with {self.token}")

    def get_evs(self, group_name):
        start = datetime.now(UTC) - timedelta(days=30)  # an example left with last month's sessions
        return [EV(ev_id=f"EV-{i}", station_id=f"ST-{i}", connector_id=1, arrival_time=start,
                   departure_time=start + timedelta(hours=8), energy=10.0, max_power=7.2)
                for i in range(2)], None

    def get_peak_power_demand(self, group_name, now, voltage=None):
        return 30.0

    def send_power_to_evs(self, powers, unit=None):
        return None
'''

TOKEN = "tok-Zq81"
URL_PASSWORD = "urlpw-Xk4"


def _run(tmp_path: Path, *extra: str, mode: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "leaky_translation.py").write_text(MODULE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "LEAKY_URL": f"http://ops:{URL_PASSWORD}@127.0.0.1:9/api", "LEAKY_TOKEN": TOKEN, "LEAKY_MODE": mode}
    return subprocess.run(
        [sys.executable, "-m", "optivgi", "--log-level", "DEBUG", "--env-file", str(tmp_path / "none.env"), "run",
         "-t", "leaky_translation:Leaky", "-a", "equal-share", "--once", *extra],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )


def test_library_records_are_redacted_and_a_dotted_translation_runs(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "translation leaky_translation:Leaky" in proc.stderr
    out = proc.stdout + proc.stderr
    assert TOKEN not in out and URL_PASSWORD not in out
    assert "httpx: HTTP Request: POST http://ops:***@127.0.0.1:9/api" in proc.stderr
    assert "pika.connection: connecting with token ***" in proc.stderr
    assert "psycopg: connection failed: host=db password=***" in proc.stderr


def test_sessions_all_outside_the_horizon_are_warned_about(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert "group default: none of its 2 sessions lies within the planning horizon" in proc.stderr


def test_an_unexpected_failure_while_starting_is_one_redacted_error_line(tmp_path: Path) -> None:
    proc = _run(tmp_path, mode="explode")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "Error: RuntimeError: cannot connect to http://ops:***@127.0.0.1:9/api with ***"
    assert TOKEN not in proc.stderr and URL_PASSWORD not in proc.stderr


def test_run_help_lists_every_setting_the_readme_names() -> None:
    import re

    from click.testing import CliRunner

    from optivgi.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    sentence = readme[readme.index("Settings come from"):readme.index("plugin's own")]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", sentence))
    assert {"STATION_GROUPS", "SITE_POWER_LIMIT_KW", "VOLTAGE", "CHARGING_RATE_UNIT", "INTERVAL_S"} <= named
    help_text = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    assert sorted(n for n in named if n not in help_text) == []
    assert "--unit [W|A]" in help_text
