"""Plugins from another installed distribution appear in ``optivgi list`` and run.

The test lays out a separate distribution (its module and its ``.dist-info`` with
``entry_points.txt``) in a temporary folder on ``PYTHONPATH``: exactly what an installed
package looks like to ``importlib.metadata``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optivgi.errors import PluginError
from optivgi.plugins import load_algorithm, load_translation_class

MODULE = '''
"""A site operator's own translation, written against the documented interface."""
import json
import os
from datetime import UTC, datetime, timedelta

import numpy as np

from optivgi.algorithms.base import Algorithm
from optivgi.models import EV
from optivgi.translation import Translation


class DepotTranslation(Translation):
    """Six connected 7.2 kW EVs; profiles are written to $DEPOT_OUT as JSON."""

    def __init__(self):
        self.out = os.environ["DEPOT_OUT"]
        self.entered = False

    def __enter__(self):
        self.entered = True
        return self

    def get_evs(self, group_name):
        now = datetime.now(UTC)
        evs = [EV(ev_id=f"{group_name}-{i}", station_id=f"DEPOT-{i:02d}", connector_id=1,
                  arrival_time=now - timedelta(minutes=5), departure_time=now + timedelta(hours=8),
                  energy=48.0, min_power=0.0, max_power=7.2, transaction_id=i + 1) for i in range(6)]
        return evs, None

    def get_peak_power_demand(self, group_name, now, voltage=None):
        return 30.0

    def send_power_to_evs(self, powers, unit=None):
        assert self.entered
        doc = {str(ev.ev_id): dict(profile) for ev, profile in powers.items()}
        with open(self.out, "w") as fh:
            json.dump({"unit": str(unit), "profiles": doc}, fh)


class HalfAlgorithm(Algorithm):
    """Gives every EV half the site limit / n, the simplest valid plan."""

    name = "half"

    def solve(self, problem):
        n = max(problem.n_evs, 1)
        share = np.minimum(problem.max_power_kw[:, None], problem.site_limit_kw[None, :] / (2 * n))
        return share * problem.window_mask()
'''


@pytest.fixture()
def plugin_path(tmp_path: Path) -> Path:
    (tmp_path / "depot_plugin.py").write_text(textwrap.dedent(MODULE))
    dist = tmp_path / "depot_plugin-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: depot-plugin\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text(
        "[optivgi.translations]\ndepot = depot_plugin:DepotTranslation\n\n"
        "[optivgi.algorithms]\nhalf = depot_plugin:HalfAlgorithm\n"
    )
    return tmp_path


def _run(args: list[str], plugin_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
                **env}
    return subprocess.run([sys.executable, "-m", "optivgi", *args], capture_output=True, text=True,
                          env=full_env, timeout=120, cwd=plugin_path)


def test_list_shows_a_third_party_plugin_with_its_distribution(plugin_path: Path) -> None:
    proc = _run(["list"], plugin_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    depot = [line for line in lines if line.strip().startswith("depot ")]
    half = [line for line in lines if line.strip().startswith("half ")]
    assert len(depot) == 1 and "depot_plugin:DepotTranslation" in depot[0] and "[depot-plugin 0.3]" in depot[0]
    assert len(half) == 1 and "[depot-plugin 0.3]" in half[0]


@pytest.mark.parametrize(("algorithm", "expected_w"), [("equal-share", 5000.0), ("half", 2500.0)])
def test_run_once_with_a_third_party_translation(plugin_path: Path, algorithm: str, expected_w: float) -> None:
    out = plugin_path / "profiles.json"
    proc = _run(["run", "--translation", "depot", "--algorithm", algorithm, "--once"], plugin_path,
                DEPOT_OUT=str(out), STATION_GROUPS="north,south")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    # the last group written is "south"; each group is its own 30 kW site
    assert sorted(doc["profiles"]) == [f"south-{i}" for i in range(6)]
    total_w = 0.0
    for profile in doc["profiles"].values():
        sched = profile["chargingSchedule"]
        assert profile["chargingProfilePurpose"] == "TxProfile" and sched["chargingRateUnit"] == "W"
        assert sched["chargingSchedulePeriod"][0]["limit"] == pytest.approx(expected_w, abs=1.0)
        assert sched["chargingSchedulePeriod"][0]["limit"] <= expected_w
        total_w += sched["chargingSchedulePeriod"][0]["limit"]
    assert total_w <= 30000.0
    # the operator's view, per group (each group is its own 30 kW site)
    allocated = 6 * expected_w / 1000
    for group in ("north", "south"):
        assert (f"{group}: CURTAILMENT ON — 6 EVs request 43.20 kW, limit 30.00 kW, allocated {allocated:.2f} kW"
                in proc.stdout), proc.stdout


def test_unknown_translation_is_a_clear_error(plugin_path: Path) -> None:
    proc = _run(["run", "--translation", "nope", "--once"], plugin_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown translation 'nope' (available: ")
    assert "Traceback" not in proc.stderr


def test_loaders_reject_wrong_types() -> None:
    with pytest.raises(PluginError, match="unknown algorithm 'missing'"):
        load_algorithm("missing")
    with pytest.raises(PluginError, match="unknown translation 'missing'"):
        load_translation_class("missing")
    assert load_translation_class("simulated").__name__ == "SimulatedTranslation"
