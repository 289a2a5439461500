"""The topology scenarios of tests/data: every algorithm keeps every node and phase within its
limits at every step, and the max-min optimum is checked against an independent LP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from maxmin_lp import maxmin_fraction, worst_fraction

from optivgi.algorithms.base import Problem
from optivgi.algorithms.validate import validate_schedule
from optivgi.errors import ScheduleValidationError
from optivgi.planner import build_problem, plan
from optivgi.plugins import load_algorithm
from optivgi.scenario import parse_scenario
from optivgi.topology import Topology
from optivgi.topology_io import scenario_topology

DATA = Path(__file__).resolve().parent / "data"
ALGORITHMS = ("lp", "go", "equal-share")


def load(name: str, *, flat: bool = False) -> tuple[Problem, Topology, list[tuple[str, int]]]:
    doc = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    scenario = parse_scenario(doc)
    topology = scenario_topology(doc, scenario.evs)
    assert topology is not None
    problem = build_problem(scenario.evs, scenario.site, scenario.now, resolution_s=scenario.resolution_s,
                            n_steps=scenario.n_steps, topology=None if flat else topology)
    keys = [(str(ev.station_id), ev.connector_id) for ev in scenario.evs]
    return problem, topology, keys


def phase_amps(topology: Topology, keys: list[tuple[str, int]], power: np.ndarray, node: str) -> np.ndarray:
    """(3, T) current per phase [A] through ``node``."""
    net = topology.network(keys, power.shape[1])
    loads = net.loads(power)
    rows = [net.labels.index((node, p)) for p in ("L1", "L2", "L3")]
    return loads[rows] * 1000.0 / topology.voltage


def test_the_independent_lp_finds_the_hand_computed_optimum() -> None:
    problem, topology, keys = load("topology-rotated-12")
    t, power = maxmin_fraction(problem)
    # L1: 63 A x 230 V over 4 h shared by four cars asking 20 kWh each, twice.
    assert t == pytest.approx(63 * 230 / 1000 * 4 / (4 * 20), abs=1e-6)
    assert worst_fraction(problem, power) == pytest.approx(t, abs=1e-6)
    validate_schedule(problem, power)  # the LP's own schedule keeps every rule
    assert phase_amps(topology, keys, power, "supply").max() <= 63 + 1e-6
    # Without the tree the same LP would let L1 take the whole 43.47 kW: a higher (wrong) optimum.
    flat, _, _ = load("topology-rotated-12", flat=True)
    assert maxmin_fraction(flat)[0] > t + 0.2


@pytest.mark.parametrize("name", ["topology-three-feeders", "topology-rotated-12"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_keeps_every_node_and_phase(name: str, algorithm: str) -> None:
    problem, topology, keys = load(name)
    schedule = plan(problem, load_algorithm(algorithm))
    assert topology.check(keys, schedule.power_kw) == []
    assert np.all(schedule.power_kw.sum(axis=0) <= problem.site_limit_kw + 1e-9)
    if name == "topology-rotated-12":
        assert phase_amps(topology, keys, schedule.power_kw, "supply").max() <= 63 + 1e-6
    else:
        for feeder in ("feeder-A", "feeder-B", "feeder-C"):
            assert phase_amps(topology, keys, schedule.power_kw, feeder).max() <= 40 + 1e-6
    t, _ = maxmin_fraction(problem)
    print(f"\n{name} {algorithm:12s} worst fraction {worst_fraction(problem, schedule.power_kw):.4f} "
          f"(max-min optimum {t:.4f}; {schedule.algorithm}{'; ' + schedule.note if schedule.note else ''})")


def test_a_flat_plan_would_overload_the_feeders() -> None:
    flat, topology, keys = load("topology-three-feeders", flat=True)
    schedule = plan(flat, load_algorithm("equal-share"))
    overloaded = {(v.node, v.phase) for v in topology.check(keys, schedule.power_kw)}
    assert ("feeder-A", "L1") in overloaded and ("feeder-B", "L1") in overloaded
    assert not any(node == "feeder-C" for node, _ in overloaded)


def test_the_validator_rejects_one_phase_over_while_the_site_total_is_fine() -> None:
    problem, _, _ = load("topology-rotated-12")
    power = problem.zeros()
    l1_early = [i for i, ev in enumerate(problem.ids) if ev.startswith("L1-early")]
    power[l1_early, 0] = 32 * 230 / 1000  # 128 A on L1; 29.4 kW of 43.47 kW
    assert power[:, 0].sum() < problem.site_limit_kw[0]
    with pytest.raises(ScheduleValidationError, match=r"supply L1 draws 128 A at step 0, above its limit 63 A"):
        validate_schedule(problem, power)


@pytest.mark.parametrize("name", ["topology-three-feeders", "topology-rotated-12"])
def test_lp_reaches_the_max_min_optimum_over_the_tree(name: str) -> None:
    algorithm = load_algorithm("lp")
    if not algorithm.honours_network:
        pytest.xfail("lp does not plan over the site tree yet (its schedule is only scaled into it)")
    problem, _, _ = load(name)
    t, _ = maxmin_fraction(problem)
    schedule = plan(problem, algorithm)
    assert schedule.algorithm == "lp" and not schedule.note
    assert worst_fraction(problem, schedule.power_kw) >= t - 1e-3
