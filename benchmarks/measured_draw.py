"""Delivered energy with measured-draw planning vs without, in closed loop.

Replays each generated fleet of ``tests/data/*-measured.json`` (30 % of the cars with an
on-board charger below their station's max, every car tapering above 80 %; made by
``tests/data/make_measured_draw_scenarios.py``) with :func:`optivgi.simulate.simulate`,
departures unknown (horizon end, as on OCPP 1.6), once planning with each car's max and once
with its measured draw, and prints a Markdown table: energy delivered both ways, the gain, the
peak site power and the violations of the site limit.

Run:  python benchmarks/measured_draw.py [-a ALGORITHM] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
DEFAULT = ("fleet-50-measured", "fleet-200-measured", "fleet-50-scarce-measured")


def run(path: str, algorithm: str, measured: bool) -> tuple[float, float, float, int]:
    """(delivered kWh, needed kWh, peak site kW, violations) of one replay."""
    from optivgi.cars import load_cars
    from optivgi.scenario import load_scenario
    from optivgi.simulate import simulate

    result = simulate(load_scenario(path), algorithm, cars=load_cars(path), measured_draw=measured)
    return result.delivered_kwh, result.needed_kwh, result.peak_kw, result.violations


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(DEFAULT))
    parser.add_argument("-a", "--algorithm", default="lp")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    paths = [str(DATA / f"{s}.json") if not s.endswith(".json") else s for s in args.scenarios]
    jobs = [(p, args.algorithm, m) for p in paths for m in (False, True)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True)))
    print(f"| scenario ({args.algorithm}) | needed kWh | delivered without | delivered with measured draw | gain "
          "| peak kW without / with | limit kW | violations without / with |")
    print("|---|---|---|---|---|---|---|---|")
    from optivgi.scenario import load_scenario

    for i, path in enumerate(paths):
        (d0, need, p0, v0), (d1, _, p1, v1) = results[2 * i], results[2 * i + 1]
        limit = float(load_scenario(path).site.limit_series(1)[0])
        print(f"| {Path(path).stem} | {need:.1f} | {d0:.1f} | {d1:.1f} | {d1 - d0:+.1f} kWh ({(d1 - d0) / d0:+.1%}) "
              f"| {p0:.1f} / {p1:.1f} | {limit:.1f} | {v0} / {v1} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
