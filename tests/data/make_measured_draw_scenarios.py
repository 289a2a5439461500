"""Generate the measured-draw fleets in tests/data from the shared fleet scenarios.

Each output is its source fleet (same sessions, stations and site limit) where every car has
a ``car`` object (see ``optivgi.cars``): a battery for the taper above 80 % (sized so the
session ends full, 1.2 to 2.5 times its need and at least 30 kWh), and 30 % of the cars (every
car whose index is in a seeded sample) an on-board charger below its station's max: 3.7 kW
single-phase on a 7.2 kW station, 3.7 or 11 kW on an 11 or 22 kW station. The site limit is
the lower of the source's and 25 % of the sum of the stations' max, so that the site is full
for most of the day and what the capped cars leave unused matters.

Run from the repository root:  python tests/data/make_measured_draw_scenarios.py [SCENARIOS_DIR]
(default ../shared/scenarios).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SOURCES = ("fleet-50", "fleet-200", "fleet-50-scarce")
SHARE_LIMITED = 0.3
SEED = 13
SITE_SHARE = 0.25


def onboard_for(station_max_kw: float, rng: random.Random) -> float:
    """An on-board charger limit below ``station_max_kw``."""
    choices = [kw for kw in (3.7, 11.0) if kw < station_max_kw - 1e-9]
    return rng.choice(choices) if choices else round(station_max_kw / 2, 2)


def transform(doc: dict, rng: random.Random) -> dict:
    """The fleet ``doc`` with a ``car`` object on every EV."""
    evs = doc["evs"]
    limited = set(rng.sample(range(len(evs)), round(SHARE_LIMITED * len(evs))))
    for i, ev in enumerate(evs):
        car: dict[str, float] = {"battery_kwh": round(max(30.0, ev["energy_kwh"] * rng.uniform(1.2, 2.5)), 1)}
        if i in limited:
            car["onboard_kw"] = onboard_for(float(ev["max_power_kw"]), rng)
        ev["car"] = car
    limit = doc["site_limit_kw"]
    if isinstance(limit, int | float):
        doc["site_limit_kw"] = round(min(float(limit), SITE_SHARE * sum(float(ev["max_power_kw"]) for ev in evs)), 1)
    doc["name"] = f"{doc['name']}-measured"
    doc["description"] = (f"{doc.get('description', '')} Cars: every car tapers above 80 % (own battery), "
                          f"{round(SHARE_LIMITED * 100)} % have an on-board charger below their station's max; "
                          f"site limit {doc['site_limit_kw']} kW.")
    return doc


def main(argv: list[str]) -> None:
    src = Path(argv[1]) if len(argv) > 1 else Path("../shared/scenarios")
    out = Path(__file__).parent
    for name in SOURCES:
        rng = random.Random(f"{SEED}-{name}")
        doc = transform(json.loads((src / f"{name}.json").read_text(encoding="utf-8")), rng)
        path = out / f"{name}-measured.json"
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv)
