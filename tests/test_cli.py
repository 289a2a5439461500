"""The optivgi command line: plan, list, errors as one line with the field named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support import scenario_files

from optivgi.cli import main
from optivgi.scenario import load_scenario

ALGORITHMS = ["lp", "go", "equal-share"]
OPTIVGI = [sys.executable, "-m", "optivgi"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_plan_seed_all_six_gives_five_kw_each(algorithm: str, scenarios_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "schedule.json"
    result = CliRunner().invoke(main, ["plan", str(scenarios_dir / "seed-all-six.json"), "--algorithm", algorithm,
                                       "--output", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "seed-all-six" and doc["algorithm"] == algorithm and doc["resolution_s"] == 60
    assert len(doc["power_kw"]) == 6
    for series in doc["power_kw"].values():
        assert len(series) == 480
        assert series[0] == pytest.approx(5.0, abs=0.05)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_plan_every_scenario_respects_limits(algorithm: str, path: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = CliRunner().invoke(main, ["plan", str(path), "-a", algorithm, "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    sc = load_scenario(path)
    problem = sc.to_problem()
    assert set(doc["power_kw"]) == {ev.ev_id for ev in sc.evs}
    power = np.array([doc["power_kw"][i] for i in problem.ids]).reshape(problem.n_evs, problem.n_steps)
    assert np.all(power.sum(axis=0) <= problem.site_limit_kw + 1e-9)
    assert np.all(power <= problem.max_power_kw[:, None] + 1e-9)
    assert np.all(power >= 0)
    assert np.all(power[~problem.window_mask()] == 0)


def test_plan_to_stdout_and_plot(scenarios_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    result = CliRunner().invoke(main, ["plan", str(scenarios_dir / "seed-default.json"), "-a", "equal-share",
                                       "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scenario"] == "seed-default"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_shows_builtins() -> None:
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for name in ["lp", "go", "equal-share", "simulated", "citrineos"]:
        assert f"  {name} " in result.output
    assert "opti-vgi" in result.output


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def _good() -> dict[str, object]:
    return {"name": "t", "now": "2026-01-05T06:00:00Z", "resolution_s": 60, "horizon_s": 600, "site_limit_kw": 30,
            "evs": [{"id": "a", "station_id": "S", "connector_id": 1, "arrival": "2026-01-05T06:00:00Z",
                     "departure": "2026-01-05T07:00:00Z", "energy_kwh": 5, "min_power_kw": 0, "max_power_kw": 7}]}


def _ev_with(**kw: object) -> dict[str, object]:
    doc = _good()
    doc["evs"][0].update(kw)  # type: ignore[index]
    return doc


def _without(key: str) -> dict[str, object]:
    doc = _good()
    del doc[key]
    return doc


def _ev_without(key: str) -> dict[str, object]:
    doc = _good()
    del doc["evs"][0][key]  # type: ignore[index]
    return doc


MALFORMED = [
    (_without("now"), "now: required field is missing"),
    (_ev_without("energy_kwh"), "evs[0].energy_kwh: required field is missing"),
    (_ev_with(departure="2026-01-05T05:00:00Z"), "evs[0].departure: must be after arrival"),
    (_ev_with(energy_kwh=-3), "evs[0].energy_kwh: must be >= 0, got -3"),
    (_ev_with(max_power_kw="7"), "evs[0].max_power_kw: must be a number, got '7'"),
    (_ev_with(connector_id=0), "evs[0].connector_id: must be >= 1, got 0"),
    (_ev_with(min_power_kw=8), "evs[0].max_power_kw: must be >= min_power_kw (8)"),
    (_ev_with(arrival="yesterday"), "evs[0].arrival: must be an ISO 8601 date-time"),
    ({**_good(), "horizon_s": 90}, "horizon_s: must be a multiple of resolution_s (60)"),
    ({**_good(), "site_limit_kw": [30, 30]}, "site_limit_kw: must have one value per step (10)"),
    ({**_good(), "resolution_s": 1.5}, "resolution_s: must be an integer"),
    ({**_good(), "evs": [_good()["evs"][0], _good()["evs"][0]]}, "evs[1].id: must be unique"),  # type: ignore[index]
    ("{not json", "not valid JSON"),
    ([1, 2], "scenario: must be a JSON object"),
]


@pytest.mark.parametrize(("doc", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_scenario_is_one_line_naming_the_field(doc: object, message: str, tmp_path: Path) -> None:
    path = _write(tmp_path, doc)
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
    assert str(path) in lines[0]


def test_malformed_scenario_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, _ev_with(energy_kwh=-1))
    proc = subprocess.run([*OPTIVGI, "plan", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"Error: {path}: evs[0].energy_kwh: must be >= 0, got -1"]


def test_unknown_algorithm_is_a_clear_error(scenarios_dir: Path) -> None:
    result = CliRunner().invoke(main, ["plan", str(scenarios_dir / "empty.json"), "-a", "nope"])
    assert result.exit_code == 1
    assert "unknown algorithm 'nope' (available: " in result.output and "equal-share" in result.output


def test_every_command_has_help() -> None:
    for cmd in ["run", "plan", "list", "demo"]:
        result = CliRunner().invoke(main, [cmd, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_plan_stdout_of_a_real_process_is_json_only(scenarios_dir: Path) -> None:
    # HiGHS writes a banner straight to file descriptor 1 the first time it starts in a process.
    proc = subprocess.run([*OPTIVGI, "plan", str(scenarios_dir / "seed-at-nine.json"), "-a", "lp"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["algorithm"] == "lp"
    assert "HiGHS" not in proc.stdout and "HiGHS" not in proc.stderr
    power = np.array(list(doc["power_kw"].values()))
    assert np.all(power.sum(axis=0) <= 30.0 + 1e-9)


def test_demo_operator_lines_carry_no_solver_banner() -> None:
    proc = subprocess.run([*OPTIVGI, "demo", "-a", "lp", "--speed", "2000"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the demo printed nothing"
    for stream in (proc.stdout, proc.stderr):
        assert "HiGHS" not in stream and "Copyright" not in stream
