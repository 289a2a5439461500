"""Where the ``lp`` algorithm spends its time: model build, HiGHS, layout, min-power repair.

Usage: ``python benchmarks/lp_profile.py [SCENARIO_DIR] [--runs N] [--scenario NAME ...]``
(default: ``../shared/scenarios`` next to the repository, fleet-200 and fleet-1000, 3 runs).
Prints each run's split and the median; the first run in a process also pays one-off imports.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

from optivgi.algorithms.lp import LPAlgorithm
from optivgi.planner import plan
from optivgi.scenario import load_scenario

_PARTS = ("build", "highs", "call other", "layout", "repair", "validate", "total")


def profile(path: Path, runs: int) -> None:
    """Solve the scenario at ``path`` ``runs`` times through the planner and print the split [s]."""
    problem = load_scenario(path).to_problem()
    algo = LPAlgorithm()
    rows = []
    for _ in range(runs):
        t0 = time.perf_counter()
        schedule = plan(problem, algo)
        total = time.perf_counter() - t0
        if schedule.algorithm != "lp":
            raise SystemExit(f"{path.stem}: lp fell back to {schedule.algorithm!r}: {schedule.note}")
        t = algo.last_timings
        other = t["solve"] - t["highs"]
        validate = total - t["build"] - t["solve"] - t["layout"] - t["repair"]
        rows.append((t["build"], t["highs"], other, t["layout"], t["repair"], validate, total))
    print(f"{path.stem}: {problem.n_evs} EVs x {problem.n_steps} steps")
    print("  run  " + "  ".join(f"{p:>11s}" for p in _PARTS))
    for i, row in enumerate(rows, 1):
        print(f"  {i:<4d} " + "  ".join(f"{v:11.4f}" for v in row))
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print("  med  " + "  ".join(f"{v:11.4f}" for v in med))


def main() -> None:
    """Parse the arguments and profile each scenario."""
    default_dir = Path(__file__).resolve().parents[2] / "shared" / "scenarios"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario_dir", nargs="?", type=Path, default=default_dir)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", action="append", default=None)
    args = parser.parse_args()
    for name in args.scenario or ["fleet-200", "fleet-1000"]:
        profile(args.scenario_dir / f"{name}.json", args.runs)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
