"""The translation example of docs/translations.md is a complete package that works as printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "translations.md"


def _block(after: str, lang: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(after, text.index("## A complete example"))
    match = re.compile(rf"```{lang}\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, f"no {lang} block after {after!r}"
    return match.group(1)


def test_the_pyproject_declares_the_module_and_the_entry_point() -> None:
    doc = tomllib.loads(_block("`pyproject.toml`:", "toml"))
    assert doc["build-system"]["build-backend"] == "setuptools.build_meta"
    assert doc["project"]["name"] == "fixed-site" and doc["project"]["version"]
    assert any(d.startswith("opti-vgi") for d in doc["project"]["dependencies"])
    assert doc["tool"]["setuptools"]["py-modules"] == ["fixed_site"]
    assert doc["project"]["entry-points"]["optivgi.translations"] == {"fixed-site": "fixed_site:FixedSiteTranslation"}


def test_the_example_runs_and_its_connected_session_gets_power(tmp_path: Path) -> None:
    (tmp_path / "fixed_site.py").write_text(_block("`fixed_site.py`:", "python"), encoding="utf-8")
    (tmp_path / "sessions.json").write_text(_block("A sessions file", "json"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "FIXED_SITE_SESSIONS": "sessions.json", "SITE_POWER_LIMIT_KW": "12"}
    proc = subprocess.run(
        [sys.executable, "-m", "optivgi", "--env-file", str(tmp_path / "none.env"), "run",
         "-t", "fixed_site:FixedSiteTranslation", "-a", "equal-share", "--once"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "planning horizon" not in proc.stderr  # dated relative to now: never stale
    lines = [json.loads(line) for line in (tmp_path / "profiles.jsonl").read_text().splitlines()]
    assert [m["station"] for m in lines] == ["S1"]  # S2-1 is expected: planned for, no message
    period = lines[0]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]
    assert period["startPeriod"] == 0 and period["limit"] == 7200.0  # 7.2 kW fits the 12 kW site
