"""The site tree: parsing, per-phase constraints, the check, fallback shares and circuits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optivgi.algorithms.validate import validate_schedule
from optivgi.errors import ScenarioError, ScheduleValidationError
from optivgi.models.ev import EV
from optivgi.models.site import SiteConstraints
from optivgi.planner import build_problem
from optivgi.topology import Node, Topology, Wiring
from optivgi.topology_io import TopologyError, load_topology, parse_topology, scenario_topology

V = 230.0
NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def three_feeders() -> dict[str, Any]:
    """A 100 kW depot, three feeders of 40 A per phase, four single-phase 32 A chargers each,
    rotated over L1/L2/L3 (the fourth of each feeder on L1 again)."""
    feeders = []
    for f in range(3):
        stations = [{"name": f"ST-{f}{s}", "phases": 1, "phase": f"L{(s % 3) + 1}", "limit_a": 32,
                     "connectors": [{"id": 1}]} for s in range(4)]
        feeders.append({"name": f"feeder-{'ABC'[f]}", "kind": "feeder", "limit_a": 40, "children": stations})
    return {"name": "depot", "voltage": V, "limit_kw": 100, "children": feeders}


def keys_of(topology: Topology) -> list[tuple[str, int]]:
    return list(topology.connector_keys)


# -- parsing ---------------------------------------------------------------------------------------
def test_parse_builds_the_tree_and_wiring() -> None:
    t = parse_topology(three_feeders())
    assert t.voltage == V
    assert len(t.connector_keys) == 12
    assert [n.name for n in t.path("ST-21/1")] == ["depot", "feeder-C", "ST-21", "ST-21/1"]
    leaf = t.connector(("ST-21", 1))
    assert leaf is not None and leaf.wiring == Wiring(1, (1,))
    assert t.node("feeder-A").limit_a == (40.0, 40.0, 40.0)
    assert t.keys_below("feeder-B") == {(f"ST-1{s}", 1) for s in range(4)}


@pytest.mark.parametrize(("raw", "expected"), [
    (32, (32.0, 32.0, 32.0)),
    ([32, None, 16], (32.0, None, 16.0)),
    ({"L2": 10}, (None, 10.0, None)),
])
def test_limit_a_forms(raw: Any, expected: tuple[float | None, ...]) -> None:
    t = parse_topology({"limit_a": raw, "children": [{"name": "S", "connectors": [{"id": 1}]}]})
    assert t.root.limit_a == expected


@pytest.mark.parametrize(("rotation", "phase", "grid"), [
    (None, None, (0, 1, 2)),
    (None, "L2", (1, 2, 0)),
    ("L3L1L2", None, (2, 0, 1)),
    (["L1", "L3", "L2"], "L1", (0, 2, 1)),
])
def test_three_phase_rotation(rotation: Any, phase: Any, grid: tuple[int, ...]) -> None:
    conn: dict[str, Any] = {"id": 1}
    if rotation is not None:
        conn["rotation"] = rotation
    if phase is not None:
        conn["phase"] = phase
    t = parse_topology({"children": [{"name": "S", "connectors": [conn]}]})
    leaf = t.connector(("S", 1))
    assert leaf is not None and leaf.wiring == Wiring(3, grid)
    # A single-phase car on that connector draws on the grid phase of the connector's L1.
    assert leaf.wiring.fractions(1)[grid[0]] == 1.0
    assert leaf.wiring.fractions(2) == tuple(0.5 if j in grid[:2] else 0.0 for j in range(3))


@pytest.mark.parametrize(("doc", "message"), [
    ({"limit_A": 3}, "topology.limit_A: unknown key in a node"),
    ({"children": [{"name": "F", "max_current": 3}]}, "topology.children[0].max_current: unknown key"),
    ({"children": [{"name": "S", "connectors": [{"id": 1, "phse": "L1"}]}]},
     "topology.children[0].connectors[0].phse: unknown key in a connector"),
    ({"children": [{"name": "S", "children": [], "connectors": [{"id": 1}]}]},
     "topology.children[0].children: unknown key in a station"),
    ({"limit_a": {"L4": 3}}, "topology.limit_a.L4: unknown key"),
    ({"limit_a": [1, 2]}, "topology.limit_a: a list must have three values"),
    ({"limit_kw": -1}, "topology.limit_kw: must be >= 0"),
    ({"limit_kw": True}, "topology.limit_kw: must be a finite number"),
    ({"voltage": 0}, "topology.voltage: must be > 0"),
    ({"children": [{"kind": "feeder"}]}, "topology.children[0].name: required field is missing"),
    ({"children": [{"name": "F", "kind": "substation"}]}, "topology.children[0].kind: must be one of"),
    ({"children": [{"name": "S", "connectors": [{"id": -1}]}]}, "connectors[0].id: must be an integer >= 0"),
    ({"children": [{"name": "S", "connectors": [{"id": 1, "phase": "L4"}]}]}, "connectors[0].phase: must be one of"),
    ({"children": [{"name": "S", "connectors": [{"id": 1, "phases": 2}]}]}, "connectors[0].phases: must be 1 or 3"),
    ({"children": [{"name": "S", "connectors": [{"id": 1, "rotation": "L1L1L2"}]}]},
     "connectors[0].rotation: must name L1, L2 and L3 once each"),
    ({"children": [{"name": "S", "connectors": [{"id": 1, "rotation": "L2L3L1", "phase": "L1"}]}]},
     "puts the connector's L1 on L2, but 'phase' says L1"),
    ({"children": [{"name": "S", "phases": 1, "connectors": [{"id": 1, "rotation": "L2L3L1"}]}]},
     "only a three-phase connector has a rotation"),
    ({"children": [{"name": "S", "connectors": []}]}, "topology.children[0].connectors: must be a non-empty list"),
    ({"children": [{"name": "F"}, {"name": "F"}]}, "node name 'F' is used twice"),
    ({"children": [{"name": "A", "station_id": "S", "connectors": [{"id": 1, "name": "a"}]},
                   {"name": "B", "station_id": "S", "connectors": [{"id": 1, "name": "b"}]}]},
     "connector 'S'/1 appears twice"),
    ([1], "topology: must be an object"),
])
def test_schema_errors_name_the_key_and_path(doc: Any, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse_topology(doc)
    assert message in str(err.value)


def test_unknown_single_phase_counts_on_every_phase() -> None:
    t = parse_topology({"limit_a": 10, "children": [{"name": "S", "phases": 1, "connectors": [{"id": 1}]}]})
    net = t.network([("S", 1)], 1)
    assert net.labels == (("site", "L1"), ("site", "L2"), ("site", "L3"))
    assert net.matrix.toarray().ravel().tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("suffix", [".json", ".toml", ".yaml"])
def test_load_topology_files(tmp_path: Path, suffix: str) -> None:
    doc = three_feeders()
    path = tmp_path / f"site{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(doc))
    elif suffix == ".yaml":
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(doc))
    else:
        lines = [f'name = "depot"\nvoltage = {V}\nlimit_kw = 100\n']
        for feeder in doc["children"]:
            lines.append(f'[[children]]\nname = "{feeder["name"]}"\nkind = "feeder"\nlimit_a = 40\n')
            for st_ in feeder["children"]:
                lines.append(f'[[children.children]]\nname = "{st_["name"]}"\nphases = 1\nphase = "{st_["phase"]}"\n'
                             f'limit_a = 32\nconnectors = [{{id = 1}}]\n')
        path.write_text("".join(lines))
    t = load_topology(path)
    assert len(t.connector_keys) == 12 and t.node("feeder-C").limit_a == (40.0, 40.0, 40.0)
    bad = tmp_path / f"bad{suffix}"
    bad.write_text('{"name": "x", "limitkw": 3}' if suffix != ".toml" else 'name = "x"\nlimitkw = 3\n')
    with pytest.raises(TopologyError, match=r"bad.*topology\.limitkw: unknown key"):
        load_topology(bad)


# -- constraints and check -------------------------------------------------------------------------
def test_phase_overload_found_while_site_total_is_fine() -> None:
    t = parse_topology(three_feeders())
    keys = keys_of(t)
    power = np.zeros((12, 3))
    # Step 1: feeder A's two L1 chargers at 32 A each = 64 A on a 40 A breaker; 14.7 kW in all.
    power[[0, 3], 1] = 32 * V / 1000
    # Step 2: every charger at 13 A: fine everywhere (feeder L1 = 26 A).
    power[:, 2] = 13 * V / 1000
    assert power.sum(axis=0).max() < 100
    found = t.check(keys, power)
    assert [(v.node, v.phase, v.step) for v in found] == [("feeder-A", "L1", 1)]
    assert found[0].value == pytest.approx(64.0) and found[0].limit == 40.0 and found[0].unit == "A"
    assert "feeder-A L1 draws 64 A at step 1, above its limit 40 A" in str(found[0])


def test_three_phase_car_is_limited_by_its_full_phase() -> None:
    doc = {"name": "panel", "limit_a": 32, "children": [
        {"name": "S1", "phases": 1, "phase": "L1", "connectors": [{"id": 1}]},
        {"name": "S3", "connectors": [{"id": 1}]}]}
    t = parse_topology(doc)
    keys = [("S1", 1), ("S3", 1)]
    single = 20 * V / 1000  # 20 A on L1
    # The three-phase car may take 12 A per phase (L1 then at 32 A), not 32 A.
    ok = np.array([[single], [3 * 12 * V / 1000]])
    over = np.array([[single], [3 * 12.5 * V / 1000]])
    assert t.check(keys, ok) == []
    found = t.check(keys, over)
    assert [(v.node, v.phase) for v in found] == [("panel", "L1")]
    assert found[0].value == pytest.approx(32.5)


def test_kw_limit_and_site_series_and_unknown_connector() -> None:
    t = parse_topology(three_feeders())
    keys = [*keys_of(t), ("ELSEWHERE", 1)]
    net = t.network(keys, 2, site_limit_kw=[90.0, 50.0])
    assert net.labels[0] == ("depot", None)
    assert net.limit_kw[0].tolist() == [90.0, 50.0]
    # The unknown connector is only on the site's rows.
    col = net.matrix.toarray()[:, -1]
    assert col[0] == 1.0 and not col[1:].any()
    power = np.full((13, 2), 4.0)
    assert [(v.node, v.step) for v in net.violations(power)] == [("depot", 1)]


def test_circuits_agree_with_the_constraints() -> None:
    t = parse_topology({"name": "site", "limit_kw": 40, "limit_a": [50, 50, 50], "children": [
        {"name": "F", "limit_a": {"L1": 20}, "children": [
            {"name": "A", "phases": 1, "phase": "L1", "connectors": [{"id": 1}, {"id": 2, "phase": "L3"}]},
            {"name": "B", "connectors": [{"id": 1, "rotation": "L3L1L2"}]}]}]})
    circuits = {c.name: c for c in t.circuits()}
    assert set(circuits) == {"site", "site/L1", "site/L2", "site/L3", "F/L1"}
    assert circuits["F/L1"].keys == {("A", 1), ("B", 1)}
    assert circuits["F/L1"].limit_kw == pytest.approx(20 * V / 1000)
    keys = [("A", 1), ("A", 2), ("B", 1)]
    power = {("A", 1): 3.0, ("A", 2): 2.0, ("B", 1): 9.0}
    net = t.network(keys, 1)
    loads = net.loads(np.array([[power[k]] for k in keys]))[:, 0]
    for (node, phase), load in zip(net.labels, loads, strict=True):
        name = node if phase is None else f"{node}/{phase}"
        assert circuits[name].load_kw(power) == pytest.approx(load)
    assert circuits["F/L1"].load_kw(power) == pytest.approx(3.0 + 9.0 / 3)


# -- fallback --------------------------------------------------------------------------------------
def test_fallback_share_is_the_minimum_over_the_path() -> None:
    t = parse_topology(three_feeders())
    shares = t.fallback_shares()
    # Feeder L1 has two chargers: 40 / 2 = 20 A; L2 and L3 one each: 32 A (the station's own limit),
    # but the site's 100 kW over 12 lines caps every share at 36.2 A.
    assert shares[("ST-00", 1)].amps == 20.0 and shares[("ST-00", 1)].binding == "feeder-A"
    assert shares[("ST-01", 1)].amps == 32.0 and shares[("ST-01", 1)].binding == "ST-01"
    assert shares[("ST-01", 1)].kw == pytest.approx(32 * V / 1000)
    # A lower live floor at the root binds for everyone.
    low = t.fallback_shares(site_limit_kw=22.0)
    assert {s.binding for s in low.values()} == {"depot"}
    assert all(s.amps == 7.9 for s in low.values())  # 22 kW / (12 x 230 V) = 7.97 A, rounded down


@st.composite
def trees(draw: st.DrawFn) -> Topology:
    counter = iter(range(10_000))

    def limits() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if draw(st.booleans()):
            out["limit_kw"] = draw(st.floats(1, 200))
        if draw(st.booleans()):
            out["limit_a"] = draw(st.lists(st.one_of(st.none(), st.floats(6, 120)), min_size=3, max_size=3))
        return out

    def node(depth: int) -> dict[str, Any]:
        name = f"n{next(counter)}"
        if depth >= 2 or draw(st.booleans()):
            conns = []
            for c in range(draw(st.integers(1, 3))):
                conn: dict[str, Any] = {"id": c + 1, **limits()}
                if draw(st.booleans()):
                    conn["phases"] = 1
                    conn["phase"] = draw(st.sampled_from(["L1", "L2", "L3", None]))
                else:
                    conn["rotation"] = draw(st.sampled_from(["L1L2L3", "L2L3L1", "L3L1L2", "L1L3L2"]))
                conns.append({k: v for k, v in conn.items() if v is not None})
            return {"name": name, "connectors": conns, **limits()}
        return {"name": name, "children": [node(depth + 1) for _ in range(draw(st.integers(1, 3)))], **limits()}

    return parse_topology({"name": "root", **limits(), "children": [node(0) for _ in range(draw(st.integers(1, 3)))]})


@settings(max_examples=80, deadline=None)
@given(trees())
def test_fallback_shares_fit_every_node_and_phase(t: Topology) -> None:
    shares = t.fallback_shares()
    keys = list(shares)
    power = np.array([[shares[k].kw] for k in keys])
    assert t.check(keys, power, tol_kw=1e-9) == []
    for share in shares.values():
        # The share never exceeds any limit on its own path, and names the node that decided it.
        assert share.amps >= 0 and (share.binding == "" or share.binding in {n.name for n in t.nodes})


# -- validator, planner, scenario -----------------------------------------------------------------
def _evs(t: Topology, n: int) -> list[EV]:
    return [EV(ev_id=f"EV-{i:02d}", station_id=k[0], connector_id=k[1], arrival_time=NOW - timedelta(hours=1),
               departure_time=NOW + timedelta(hours=2), energy=20, max_power=7.36, min_power=0)
            for i, k in enumerate(keys_of(t)[:n])]


def test_validator_rejects_a_phase_overload_and_snaps_round_off() -> None:
    t = parse_topology(three_feeders())
    problem = build_problem(_evs(t, 12), SiteConstraints(100.0), NOW, n_steps=4, topology=t)
    assert problem.network is not None and problem.network.n_rows == 1 + 3 * 3 + 12 * 3
    power = np.zeros((12, 4))
    power[[0, 3], 1] = 32 * V / 1000
    with pytest.raises(ScheduleValidationError, match="feeder-A L1 draws 64 A at step 1"):
        validate_schedule(problem, power)
    # 40 A on feeder A's L1 plus a solver's hair: accepted, and cleaned onto the limit exactly.
    power[[0, 3], 1] = 20 * V / 1000 + 1e-7
    cleaned = validate_schedule(problem, power)
    assert (problem.network.loads(cleaned) <= problem.network.limit_kw).all()
    # The same schedule on a flat site is fine (the site total is 9.2 kW).
    flat = build_problem(_evs(t, 12), SiteConstraints(100.0), NOW, n_steps=4)
    power[[0, 3], 1] = 32 * V / 1000
    assert validate_schedule(flat, power)[0, 1] == pytest.approx(7.36)


def test_problem_select_keeps_the_network_columns() -> None:
    t = parse_topology(three_feeders())
    problem = build_problem(_evs(t, 12), SiteConstraints(100.0), NOW, n_steps=4, topology=t)
    rows = np.zeros(12, dtype=bool)
    rows[[0, 3]] = True
    sub = problem.select(rows)
    assert sub.network is not None and sub.network.matrix.shape == (problem.network.n_rows, 2)  # type: ignore[union-attr]
    assert problem.network is not None
    rest = problem.network.reserve(np.full((2, 4), 4.6), rows)
    i = rest.labels.index(("feeder-A", "L1"))
    assert rest.limit_kw[i, 0] == pytest.approx(40 * V / 1000 - 9.2)
    assert rest.matrix.shape == (problem.network.n_rows, 10)
    fitted = problem.network.fit(np.full((2, 4), 7.36), rows)
    assert fitted[:, 0] == pytest.approx([4.6, 4.6])


def test_scenario_topology_block() -> None:
    t = parse_topology(three_feeders())
    evs = _evs(t, 3)
    assert scenario_topology({"site_limit_kw": 30}, evs) is None
    got = scenario_topology({"topology": three_feeders()}, evs)
    assert got is not None and got.connector_keys == t.connector_keys
    stray = [*evs, EV(ev_id="X", station_id="NOPE", connector_id=1, arrival_time=NOW,
                      departure_time=NOW + timedelta(hours=1), energy=1, max_power=7)]
    with pytest.raises(ScenarioError, match=r"evs\[3\]: connector NOPE/1 is not in the topology"):
        scenario_topology({"topology": three_feeders()}, stray)
    with pytest.raises(ScenarioError, match=r"topology\.children: must be a list"):
        scenario_topology({"topology": {"children": 3}}, evs)


def test_node_model_rules() -> None:
    with pytest.raises(ValueError, match="limits must be finite"):
        Node("x", limit_kw=float("nan"))
    with pytest.raises(ValueError, match="needs both"):
        Node("x", key=("S", 1))
    with pytest.raises(ValueError, match="'phases' must be 1 or 3"):
        Wiring(2, (0, 1))
    with pytest.raises(ValueError, match="'voltage' must be"):
        Topology(Node("x"), voltage=0)


def test_plan_scales_a_tree_blind_fallback_into_the_tree() -> None:
    from optivgi.algorithms.equal_share import EqualShareAlgorithm
    from optivgi.planner import plan

    t = parse_topology(three_feeders())
    problem = build_problem(_evs(t, 12), SiteConstraints(100.0), NOW, n_steps=4, topology=t)

    class Broken(EqualShareAlgorithm):
        name = "broken"

        def solve(self, problem: Any) -> Any:
            raise RuntimeError("boom")

    schedule = plan(problem, Broken())
    assert schedule.algorithm == "equal-share" and "broken failed" in schedule.note
    assert t.check(keys_of(t), schedule.power_kw) == []
    # Feeder A's two L1 chargers share its 40 A.
    assert schedule.power_kw[[0, 3], 0].sum() == pytest.approx(40 * V / 1000)


def test_an_algorithm_claiming_the_tree_is_held_to_it() -> None:
    from optivgi.algorithms.base import Algorithm
    from optivgi.planner import plan

    t = parse_topology(three_feeders())
    problem = build_problem(_evs(t, 12), SiteConstraints(100.0), NOW, n_steps=4, topology=t)

    class Overloads(Algorithm):
        name = "overloads"
        honours_network = True

        def solve(self, problem: Any) -> Any:
            power = problem.zeros()
            power[[0, 3], :] = 7.36  # 64 A on feeder A's L1, 14.7 kW of 100 kW
            return power

    schedule = plan(problem, Overloads())
    assert schedule.algorithm == "equal-share"
    assert "feeder-A L1 draws 64 A at step 0" in schedule.note
    assert t.check(keys_of(t), schedule.power_kw) == []


def test_the_docs_example_site_parses_and_overloads_feeder_a_on_l1() -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "topology.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block is not None
    t = parse_topology(json.loads(block.group(1)))
    assert len(t.connector_keys) == 10 and t.root.limit_kw == 100
    keys = [("ST-01", 1), ("ST-04", 1)]
    found = t.check(keys, np.array([[7.36], [7.36]]))
    assert [(v.node, v.phase) for v in found] == [("feeder-A", "L1")] and found[0].value == pytest.approx(64)
    st10 = t.connector(("ST-10", 1))
    assert st10 is not None and st10.wiring == Wiring(3, (1, 2, 0))


@settings(max_examples=60, deadline=None)
@given(trees(), st.randoms(use_true_random=False))
def test_constraint_rows_match_a_direct_sum_over_the_tree(t: Topology, rnd: Any) -> None:
    keys = list(t.connector_keys)
    power = {k: rnd.uniform(0, 22) for k in keys}
    net = t.network(keys, 1)
    loads = net.loads(np.array([[power[k]] for k in keys]))[:, 0]
    for (name, phase), load in zip(net.labels, loads, strict=True):
        expected = 0.0
        for key in t.keys_below(name):
            leaf = t.connector(key)
            assert leaf is not None and leaf.wiring is not None
            if phase is None:
                expected += power[key]
            elif leaf.wiring.grid is None:  # phase unknown: the whole power on every phase
                expected += power[key]
            elif ("L1", "L2", "L3").index(phase) in leaf.wiring.grid:
                expected += power[key] / leaf.wiring.phases
        assert load == pytest.approx(expected, abs=1e-9)
        node = t.node(name)
        assert (node.limit_kw is not None) if phase is None else (node.limit_a[("L1", "L2", "L3").index(phase)]
                                                                  is not None)


@settings(max_examples=60, deadline=None)
@given(trees(), st.randoms(use_true_random=False))
def test_waterfill_is_max_min_fair_down_the_tree(t: Topology, rnd: Any) -> None:
    from optivgi.topology_network import waterfill

    keys = list(t.connector_keys)
    steps = 3
    net = t.network(keys, steps, site_limit_kw=[rnd.uniform(0, 60) for _ in range(steps)])
    upper = np.array([[rnd.choice([0.0, 3.7, 7.4, 11.0, 22.0]) for _ in range(steps)] for _ in keys])
    power = waterfill(net.matrix, net.limit_kw, upper)
    assert np.all(power >= 0) and np.all(power <= upper + 1e-12)
    load = net.loads(power)
    assert np.all(load <= net.limit_kw + 1e-9)
    a = net.matrix.toarray()
    for k in range(steps):
        for i in range(len(keys)):
            if power[i, k] >= upper[i, k] - 1e-6:
                continue
            # Below its cap, an EV has a full node on which nobody gets more than it does.
            rows = [r for r in np.flatnonzero(a[:, i] > 0) if load[r, k] >= net.limit_kw[r, k] - 1e-6]
            assert any(power[i, k] >= power[a[r] > 0, k].max() - 1e-6 for r in rows), (i, k)


def test_waterfill_on_the_rotated_supply() -> None:
    from optivgi.topology_network import waterfill

    # Twelve single-phase 32 A chargers rotated over a 3 x 63 A supply; four cars on L1, two on L2.
    doc = {"name": "supply", "limit_a": 63, "children": [
        {"name": f"ST-{i}", "phases": 1, "phase": f"L{i % 3 + 1}", "limit_a": 32, "connectors": [{"id": 1}]}
        for i in range(12)]}
    t = parse_topology(doc)
    keys = list(t.connector_keys)
    net = t.network(keys, 1)
    upper = np.zeros((12, 1))
    upper[[0, 3, 6, 9, 1, 4], 0] = 32 * V / 1000  # ST-0/3/6/9 on L1, ST-1/4 on L2
    power = waterfill(net.matrix, net.limit_kw, upper)
    assert power[[0, 3, 6, 9], 0] == pytest.approx([63 / 4 * V / 1000] * 4)
    assert power[[1, 4], 0] == pytest.approx([31.5 * V / 1000] * 2)


@settings(max_examples=40, deadline=None)
@given(trees())
def test_a_topology_round_trips_through_its_document(t: Topology) -> None:
    from optivgi.topology_io import topology_to_doc

    doc = topology_to_doc(t)
    back = parse_topology(json.loads(json.dumps(doc)))
    assert topology_to_doc(back) == doc
    assert back.connector_keys == t.connector_keys
    for a, b in zip(t.nodes, back.nodes, strict=True):
        assert (a.name, a.limit_kw, a.limit_a, a.key, a.wiring) == (b.name, b.limit_kw, b.limit_a, b.key, b.wiring)


def test_render_draws_the_tree() -> None:
    from optivgi.topology_io import render_topology

    t = parse_topology({"name": "site", "limit_kw": 30, "children": [
        {"name": "F", "limit_a": [40, None, 32], "children": [
            {"name": "S", "phases": 1, "connectors": [{"id": 1, "phase": "L2"}, {"id": 2}]}]}]})
    assert render_topology(t).splitlines() == [
        "site (site) 30 kW",
        "`-- F (panel) L1 40 A L3 32 A",
        "    `-- S (station)",
        "        |-- S/1 (connector) 1-phase on L2",
        "        `-- S/2 (connector) 1-phase on unknown phase",
    ]
