"""The closed-loop part of the benchmark: every algorithm replayed on every scenario with
:func:`optivgi.simulate.simulate`, departures unknown (horizon end, as on OCPP 1.6) and known.

Each algorithm x scenario x departures run happens in a fresh subprocess (``--closed-worker``),
which records its peak RSS (``VmHWM``) and prints one JSON line; the parent scores it against
the offline bounds of ``bench.py`` (the most energy any schedule can deliver, the best worst-EV
share), so a closed-loop figure reads as "how much of what was possible did the site get".
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEADER = ("| scenario | algorithm | departures | delivered / offline bound | worst EV (max-min bound) | Jain | "
          "cycles | cycle median [s] | cycle max [s] | peak RSS [MiB] | violations | fallbacks | replay [s] |")
SEPARATOR = "|" + "---|" * 13


def closed_worker(scenario_path: str, algorithm: str, departures: str, hwm: Callable[[], float]) -> None:
    """Replay one scenario under one algorithm in this (fresh) process; print a JSON line."""
    from optivgi.plugins import load_algorithm
    from optivgi.scenario import load_scenario
    from optivgi.simulate import simulate

    algo = load_algorithm(algorithm)
    scenario = load_scenario(scenario_path)
    baseline = hwm()
    t0 = time.perf_counter()
    result = simulate(scenario, algo, known_departures=departures == "known")
    wall = time.perf_counter() - t0
    worst = result.worst
    print(json.dumps({
        "delivered_kwh": result.delivered_kwh,
        "worst_ev": None if worst is None else worst.ev_id,
        "worst_fraction": None if worst is None else worst.fraction,
        "jain": result.jain_index,
        "cycles": result.cycles,
        "cycle_median_s": statistics.median(result.cycle_seconds.tolist()) if result.cycles else None,
        "cycle_max_s": float(result.cycle_seconds.max()) if result.cycles else None,
        "violations": result.violations,
        "fallbacks": result.fallback_cycles,
        "failed": result.failed_cycles,
        "short_reasons": _reason_counts(result),
        "baseline_mib": baseline,
        "peak_mib": hwm(),
        "wall_s": wall,
    }))


def _reason_counts(result: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in result.evs:
        if e.reason is not None:
            key = e.reason.split(" (")[0].split(":")[0].split(" at ")[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def run_one(bench: Path, scenario: Path, algorithm: str, departures: str, max_energy: float,
            max_min: float | None, timeout: float) -> str:
    """One row of the closed-loop table (runs the worker subprocess)."""
    cmd = [sys.executable, str(bench), "--closed-worker", str(scenario), algorithm, departures]
    lead = f"| {scenario.stem} | {algorithm} | {departures} |"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{lead} timeout > {timeout:g} s |" + " |" * 9
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
        return f"{lead} error: {err} |" + " |" * 9
    r = json.loads(lines[-1])
    frac = r["delivered_kwh"] / max_energy if max_energy > 0 else None
    deliv = f"{r['delivered_kwh']:.2f} / {max_energy:.2f} kWh" + (f" ({frac:.4f})" if frac is not None else "")
    worst = f"{_fmt(r['worst_fraction'], '.4f')} ({_fmt(max_min, '.4f')})"
    mem = f"{r['peak_mib']:.1f} (+{r['peak_mib'] - r['baseline_mib']:.1f})"
    fallbacks = str(r["fallbacks"]) + (f", {r['failed']} failed" if r["failed"] else "")
    return (f"{lead} {deliv} | {worst} | {_fmt(r['jain'], '.4f')} | {r['cycles']} | "
            f"{_fmt(r['cycle_median_s'], '.4f')} | {_fmt(r['cycle_max_s'], '.4f')} | {mem} | {r['violations']} | "
            f"{fallbacks} | {r['wall_s']:.1f} |")


def skipped_row(scenario: Path, algorithm: str, departures: str, why: str) -> str:
    """A row saying a closed-loop run was left out, and why."""
    return f"| {scenario.stem} | {algorithm} | {departures} | skipped: {why} |" + " |" * 9
