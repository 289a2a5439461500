"""Writes the two topology scenarios of this folder (run from anywhere: python make_topology_scenarios.py).

- ``topology-three-feeders.json``: a 100 kW depot, three feeders of 40 A per phase; feeder A has six
  three-phase 11 kW chargers, feeder B two three-phase 22 kW ones, feeder C three single-phase 32 A
  ones rotated over L1/L2/L3. A flat plan within 100 kW puts feeders A and B over their breakers.
- ``topology-rotated-12.json``: twelve single-phase 32 A chargers rotated over L1/L2/L3 on a
  3 x 63 A supply, cars arriving unevenly: on L1 two waves of four cars (0-4 h, 4-8 h, 20 kWh
  each), on L2 two cars, on L3 one car and two more at 2 h. L1 decides fairness: its 63 A over
  4 h for four cars is 14.49 kWh each of 20, so the max-min worst fraction is 0.7245.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
V = 230.0


def _t(hours: float) -> str:
    return (NOW + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ev(ev_id: str, station: str, arrive: float, leave: float, kwh: float, kw: float) -> dict[str, Any]:
    return {"id": ev_id, "station_id": station, "connector_id": 1, "arrival": _t(arrive), "departure": _t(leave),
            "energy_kwh": kwh, "min_power_kw": 0.0, "max_power_kw": kw}


def three_feeders() -> dict[str, Any]:
    a = [{"name": f"A{i}", "limit_a": 16, "connectors": [{"id": 1}]} for i in range(1, 7)]
    b = [{"name": f"B{i}", "limit_a": 32, "connectors": [{"id": 1, "rotation": ["L1L2L3", "L2L3L1"][i - 1]}]}
         for i in range(1, 3)]
    c = [{"name": f"C{i}", "limit_a": 32, "phases": 1, "phase": f"L{i}", "connectors": [{"id": 1}]}
         for i in range(1, 4)]
    feeders = [{"name": f"feeder-{x}", "kind": "feeder", "limit_a": 40, "children": kids}
               for x, kids in (("A", a), ("B", b), ("C", c))]
    evs = [_ev(f"EV-A{i}", f"A{i}", 0, 8, 60, 3 * 16 * V / 1000) for i in range(1, 7)]
    evs += [_ev(f"EV-B{i}", f"B{i}", 0, 8, 80, 3 * 32 * V / 1000) for i in range(1, 3)]
    evs += [_ev(f"EV-C{i}", f"C{i}", 0.5 * i, 8, 30, 32 * V / 1000) for i in range(1, 4)]
    return {"name": "topology-three-feeders",
            "description": "100 kW depot, three 40 A/phase feeders; a flat plan overloads feeders A and B.",
            "now": _t(0), "resolution_s": 300, "horizon_s": 28800, "site_limit_kw": 100.0, "evs": evs,
            "topology": {"name": "depot", "voltage": V, "limit_kw": 100, "children": feeders}}


def rotated_12() -> dict[str, Any]:
    stations = [{"name": f"ST-{i:02d}", "phases": 1, "phase": f"L{(i - 1) % 3 + 1}", "limit_a": 32,
                 "connectors": [{"id": 1}]} for i in range(1, 13)]
    on = {p: [s["name"] for s in stations if s["phase"] == p] for p in ("L1", "L2", "L3")}
    kw = 32 * V / 1000
    evs = [_ev(f"L1-early-{j}", st, 0, 4, 20, kw) for j, st in enumerate(on["L1"])]
    evs += [_ev(f"L1-late-{j}", st, 4, 8, 20, kw) for j, st in enumerate(on["L1"])]
    evs += [_ev(f"L2-{j}", st, 0, 8, 30, kw) for j, st in enumerate(on["L2"][:2])]
    evs += [_ev("L3-0", on["L3"][0], 0, 8, 30, kw)]
    evs += [_ev(f"L3-{j}", st, 2, 8, 20, kw) for j, st in enumerate(on["L3"][1:3], start=1)]
    return {"name": "topology-rotated-12",
            "description": "Twelve single-phase 32 A chargers rotated over L1/L2/L3 on 3 x 63 A; more cars on L1.",
            "now": _t(0), "resolution_s": 300, "horizon_s": 28800, "site_limit_kw": 3 * 63 * V / 1000, "evs": evs,
            "topology": {"name": "supply", "voltage": V, "limit_a": 63, "children": stations}}


if __name__ == "__main__":
    for doc in (three_feeders(), rotated_12()):
        (HERE / f"{doc['name']}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
