"""Benchmark every registered algorithm on every scenario file and print one markdown table.

Usage::

    python benchmarks/bench.py [--scenarios DIR|FILE|NAME ...] [--repeat 3] [--algorithms go equal-share ...]
                               [--quick] [--closed-loop-max-evs 200] [--no-closed-loop]

Each algorithm x scenario pair runs in a fresh subprocess (so one algorithm's imports, caches
and memory never colour another's figures). The subprocess imports the algorithm, loads the
scenario and records its peak resident set size (``VmHWM`` from ``/proc/self/status``) as the
baseline, then times ``scenario.to_problem()`` + ``algorithm.solve()`` ``--repeat`` times and
records the peak RSS again; the table shows the peak and its increase over the baseline. One
extra, untimed build+solve runs under ``tracemalloc`` for the peak heap it allocates. The schedule comes back as
a ``.npy`` file and is scored here against bounds computed independently of every algorithm:

* max deliverable energy: LP relaxation (min powers ignored) maximising delivered energy,
* max-min fraction: LP relaxation maximising the least delivered fraction over servable EVs
  (need > 0, a non-empty window and max power > 0).

Both LPs use ``scipy.optimize.linprog(method="highs")`` with sparse constraint matrices.

A second table replays every scenario in closed loop (``optivgi.simulate``: one planning cycle
per step and per arrival/departure, only connected EVs known), with departures unknown (the
horizon end, as on OCPP 1.6) and known, and scores what was delivered against the same offline
bounds; see ``benchmarks/closed_loop.py``. Scenarios with more EVs than
``--closed-loop-max-evs`` (default 200) are listed as skipped there: a replay runs ~480 cycles.
``--quick`` means one timed run offline and closed loop only up to 50 EVs.

Both tables are also written to ``benchmarks/results/latest.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from optivgi.algorithms.base import Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import closed_loop  # the closed-loop table, beside this file

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIOS = REPO.parent / "shared" / "scenarios"
RESULTS = REPO / "benchmarks" / "results" / "latest.md"
GROUP = "optivgi.algorithms"


def _hwm_mib() -> float:
    """Peak resident set size of this process [MiB] (``VmHWM``).

    ``getrusage(...).ru_maxrss`` is not used: Linux carries the parent's high-water mark across
    fork+exec into the child's ``ru_maxrss``, so a large parent would mask the child's figure.
    ``VmHWM`` belongs to the address space created by exec, so it starts afresh.
    """
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return math.nan


def worker(scenario_path: str, algorithm: str, repeat: int, out_npy: str) -> None:
    """Run one algorithm on one scenario in this (fresh) process; print a JSON line."""
    import tracemalloc

    from optivgi.scenario import load_scenario

    (ep,) = [e for e in entry_points(group=GROUP) if e.name == algorithm]
    algo = ep.load()()
    scenario = load_scenario(scenario_path)
    baseline = _hwm_mib()
    times: list[float] = []
    power = None
    error = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            problem = scenario.to_problem()
            power = np.asarray(algo.solve(problem), dtype=np.float64)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        times.append(time.perf_counter() - t0)
    peak = _hwm_mib()
    traced = math.nan
    if error is None:
        # One more, untimed run under tracemalloc: the heap the build+solve itself allocates.
        tracemalloc.start()
        algo.solve(scenario.to_problem())
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    if power is not None:
        np.save(out_npy, power)
    print(json.dumps({"times": times, "baseline_mib": baseline, "peak_mib": peak, "traced_mib": traced,
                      "error": error}))


@dataclass
class Bounds:
    """Upper bounds for one scenario, from LP relaxations that ignore min powers."""

    max_energy_kwh: float
    max_min_fraction: float | None  # None: no servable EV
    seconds: float


def _servable(problem: Problem) -> np.ndarray:
    p = problem
    return (p.energy_kwh > 0) & (p.end_step > p.first_step) & (p.max_power_kw > 0)


def _lp_structure(problem: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """Variables x[i,k] (kW) for every servable EV i and step k in its window."""
    p = problem
    serv = np.flatnonzero(_servable(p))
    first, end = p.first_step[serv], p.end_step[serv]
    lengths = end - first
    ev = np.repeat(np.arange(serv.size), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    step = np.repeat(first, lengths) + offsets
    nv = ev.size
    ones = np.ones(nv)
    a_ev = sp.csr_matrix((ones, (ev, np.arange(nv))), shape=(serv.size, nv))
    a_site = sp.csr_matrix((ones, (step, np.arange(nv))), shape=(p.n_steps, nv))
    return serv, ev, step, a_ev, a_site


def compute_bounds(problem: Problem) -> Bounds:
    """Max deliverable energy [kWh] and max-min delivered fraction, ignoring min powers."""
    t0 = time.perf_counter()
    p = problem
    h = p.step_hours
    serv, ev, _step, a_ev, a_site = _lp_structure(p)
    if serv.size == 0:
        return Bounds(0.0, None, time.perf_counter() - t0)
    need = p.energy_kwh[serv]
    ub = p.max_power_kw[serv][ev]
    nv = ev.size
    a_ub = sp.vstack([a_ev * h, a_site]).tocsr()
    b_ub = np.concatenate([need, p.site_limit_kw])
    res = linprog(-np.full(nv, h), A_ub=a_ub, b_ub=b_ub, bounds=np.column_stack([np.zeros(nv), ub]),
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"energy bound LP failed: {res.message}")
    max_energy = -float(res.fun)
    # Max-min: variables [x, t]; maximise t s.t. t*need_i - h*sum_k x_ik <= 0, t <= 1.
    a_frac = sp.hstack([-a_ev * h, sp.csr_matrix(need[:, None])])
    a_lim = sp.hstack([a_site, sp.csr_matrix((p.n_steps, 1))])
    c = np.zeros(nv + 1)
    c[-1] = -1.0
    res2 = linprog(c, A_ub=sp.vstack([a_frac, a_lim]).tocsr(),
                   b_ub=np.concatenate([np.zeros(serv.size), p.site_limit_kw]),
                   bounds=np.vstack([np.column_stack([np.zeros(nv), ub]), [[0.0, 1.0]]]), method="highs")
    if res2.status != 0:
        raise RuntimeError(f"max-min bound LP failed: {res2.message}")
    return Bounds(max_energy, -float(res2.fun), time.perf_counter() - t0)


@dataclass
class Score:
    """Figures for one schedule (raw output of the algorithm, before the validator)."""

    delivered_kwh: float
    worst_fraction: float | None
    site_violation_kw: float
    ev_max_violation_kw: float
    valid: str


def score(problem: Problem, power: np.ndarray) -> Score:
    """Delivered energy, worst servable EV's fraction and the largest violations of the raw schedule."""
    from optivgi.algorithms.validate import validate_schedule
    from optivgi.errors import ScheduleValidationError

    p = problem
    if power.shape != (p.n_evs, p.n_steps):
        return Score(math.nan, None, math.nan, math.nan, f"bad shape {power.shape}")
    try:
        validate_schedule(p, power)
        valid = "ok"
    except ScheduleValidationError as exc:
        valid = f"INVALID: {exc}"
    if p.n_evs == 0:
        return Score(0.0, None, 0.0, 0.0, valid)
    energy = power.sum(axis=1) * p.step_hours
    need = p.energy_kwh
    delivered = float(np.minimum(energy, need).sum())
    serv = _servable(p)
    worst = float(np.min(np.minimum(energy[serv], need[serv]) / need[serv])) if serv.any() else None
    site_v = max(0.0, float(np.max(power.sum(axis=0) - p.site_limit_kw)))
    ev_v = max(0.0, float(np.max(power - p.max_power_kw[:, None])))
    return Score(delivered, worst, site_v, ev_v, valid)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _scenario_files(specs: list[str] | None) -> list[Path]:
    """Scenario files from folders, files or names (a name is looked up in the default folder)."""
    files: list[Path] = []
    for spec in specs or [str(DEFAULT_SCENARIOS)]:
        path = Path(spec)
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        elif (DEFAULT_SCENARIOS / f"{spec}.json").is_file():
            files.append(DEFAULT_SCENARIOS / f"{spec}.json")
        else:
            raise SystemExit(f"bench: no scenario folder, file or name {spec!r}")
    return files


def _offline_row(f: Path, name: str, args: argparse.Namespace, tmp: str, problem: Problem, bounds: Bounds) -> str:
    npy = os.path.join(tmp, f"{f.stem}.{name}.npy")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(f), name, str(args.repeat), npy]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"| {f.stem} | {name} | timeout > {args.timeout:g} s |  |  |  |  |  |  |  |"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
        return f"| {f.stem} | {name} | error: {err} |  |  |  |  |  |  |  |"
    res = json.loads(lines[-1])
    if res["error"] or not os.path.exists(npy):
        return f"| {f.stem} | {name} | error: {str(res['error'])[:120]} |  |  |  |  |  |  |  |"
    power = np.load(npy)
    sc = score(problem, power)
    med = statistics.median(res["times"])
    frac = sc.delivered_kwh / bounds.max_energy_kwh if bounds.max_energy_kwh > 0 else None
    deliv = (f"{sc.delivered_kwh:.2f} / {bounds.max_energy_kwh:.2f} kWh"
             + (f" ({frac:.4f})" if frac is not None else ""))
    worst = f"{_fmt(sc.worst_fraction, '.4f')} ({_fmt(bounds.max_min_fraction, '.4f')})"
    mem = f"{res['peak_mib']:.1f} (+{res['peak_mib'] - res['baseline_mib']:.1f})"
    valid = sc.valid if sc.valid == "ok" else sc.valid[:80]
    return (f"| {f.stem} | {name} | {med:.4f} | {mem} | {res['traced_mib']:.1f} | {deliv} | {worst} | "
            f"{sc.site_violation_kw:.2g} | {sc.ev_max_violation_kw:.2g} | {valid} |")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", metavar="DIR|FILE|NAME",
                    help=f"scenario folders, files or names (default: every file in {DEFAULT_SCENARIOS})")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per pair (median is shown)")
    ap.add_argument("--algorithms", nargs="*", help="entry-point names (default: all registered)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per algorithm x scenario (x departures)")
    ap.add_argument("--output", type=Path, default=RESULTS, help="markdown file for the tables")
    ap.add_argument("--quick", action="store_true",
                    help="one timed run offline; closed loop only for scenarios with at most 50 EVs")
    ap.add_argument("--closed-loop-max-evs", type=int, default=None,
                    help="closed loop only for scenarios with at most this many EVs (default 200; 50 with --quick)")
    ap.add_argument("--no-closed-loop", action="store_true", help="the offline table only")
    ap.add_argument("--no-offline", action="store_true", help="the closed-loop table only")
    ap.add_argument("--departures", nargs="+", choices=["unknown", "known"], default=["unknown", "known"],
                    help="departure modes of the closed loop")
    ap.add_argument("--worker", nargs=4, metavar=("SCENARIO", "ALGORITHM", "REPEAT", "NPY"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--closed-worker", nargs=3, metavar=("SCENARIO", "ALGORITHM", "DEPARTURES"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), args.worker[3])
        return 0
    if args.closed_worker:
        closed_loop.closed_worker(*args.closed_worker, hwm=_hwm_mib)
        return 0
    if args.quick:
        args.repeat = 1
    max_evs = args.closed_loop_max_evs if args.closed_loop_max_evs is not None else (50 if args.quick else 200)

    from optivgi.scenario import load_scenario

    names = sorted({e.name for e in entry_points(group=GROUP)})
    if args.algorithms:
        unknown = set(args.algorithms) - set(names)
        if unknown:
            ap.error(f"unknown algorithm(s) {sorted(unknown)}; registered: {names}")
        names = list(args.algorithms)
    files = _scenario_files(args.scenarios)
    if not files:
        ap.error("no scenario files found")

    started = time.perf_counter()
    header = ("| scenario | algorithm | build+solve [s] (median) | peak RSS [MiB] (Δ over baseline) | "
              "tracemalloc peak [MiB] | "
              "delivered / bound | worst-EV fraction (max-min bound) | max site violation [kW] | "
              "max EV-max violation [kW] | validator |")
    rows = ["## Offline (one plan of the whole scenario)", "", header, "|" + "---|" * 10]
    notes: list[str] = []
    closed = ["## Closed loop (optivgi simulate: a cycle per step and per arrival/departure)", "",
              closed_loop.HEADER, closed_loop.SEPARATOR]

    def save() -> None:
        parts = [] if args.no_offline else ["\n".join(rows)]
        if not args.no_closed_loop:
            parts.append("\n".join(closed))
        parts.append("\n".join(f"- {n}" for n in notes))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n\n".join(parts) + "\n", encoding="utf-8")

    bounds_by: dict[Path, tuple[int, Bounds]] = {}
    for f in files:
        scenario = load_scenario(f)
        problem = scenario.to_problem()
        bounds = compute_bounds(problem)
        bounds_by[f] = (len(scenario.evs), bounds)
        notes.append(f"{f.stem}: bounds in {bounds.seconds:.2f} s (max energy {bounds.max_energy_kwh:.2f} kWh)")
    if not args.no_offline:
        print("\n".join(rows), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                problem = load_scenario(f).to_problem()
                for name in names:
                    row = _offline_row(f, name, args, tmp, problem, bounds_by[f][1])
                    rows.append(row)
                    print(row, flush=True)
        save()
    offline_s = time.perf_counter() - started
    if not args.no_closed_loop:
        print("\n" + "\n".join(closed), flush=True)
        for f in files:
            n_evs, bounds = bounds_by[f]
            for name in names:
                for departures in args.departures:
                    if n_evs > max_evs:
                        row = closed_loop.skipped_row(f, name, departures,
                                                      f"{n_evs} EVs > {max_evs} (--closed-loop-max-evs)")
                    else:
                        row = closed_loop.run_one(Path(__file__).resolve(), f, name, departures,
                                                  bounds.max_energy_kwh, bounds.max_min_fraction, args.timeout)
                    closed.append(row)
                    print(row, flush=True)
            save()
    total = time.perf_counter() - started
    notes.append(f"bench wall time {total:.0f} s (offline {offline_s:.0f} s, closed loop {total - offline_s:.0f} s), "
                 f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    save()
    print(f"\n{notes[-1]}\nwritten to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
