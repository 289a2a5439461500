"""``optivgi simulate``: a scenario replayed in closed loop, in simulated time (see :mod:`optivgi.simulate`)."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import click

from optivgi.errors import OptiVGIError

__all__ = ["simulate_command"]


def _progress(total_hint: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress bar on standard error when it is a terminal; nothing otherwise."""
    stream = sys.stderr
    if not stream.isatty():
        return None, lambda: None
    state: dict[str, int] = {"shown": -1}

    def update(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct == state["shown"]:
            return
        state["shown"] = pct
        width = 30
        filled = width * done // max(total, 1)
        stream.write(f"\r{total_hint} [{'#' * filled}{'.' * (width - filled)}] {pct:3d}% step {done}/{total}")
        stream.flush()

    def close() -> None:
        if state["shown"] >= 0:
            stream.write("\n")
            stream.flush()

    return update, close


@click.command("simulate")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--algorithm", "-a", default="lp", show_default=True, help="Algorithm plugin name.")
@click.option("--known-departures", is_flag=True,
              help="Tell the planner the real departure times (default: the horizon end, as on an OCPP 1.6 site).")
@click.option("--battery-kwh", type=click.FloatRange(min=0.0, min_open=True),
              help="Battery size of every car for the taper model (full power to 80 %, then linear to 0).")
@click.option("--horizon", "horizon_s", type=click.IntRange(min=1),
              help="The planner's rolling horizon in seconds (default: the scenario's horizon_s).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the realised schedule (schedule format, with a closed_loop summary) here.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the realised power as PNG (top EVs + the rest as one band + a heat map of all).")
@click.option("--top", type=click.IntRange(min=1), help="List only the N EVs with the lowest delivered share.")
@click.option("--measured-draw/--no-measured-draw", default=False, show_default=True,
              help="Plan each car with what it was measured to draw, and count chargers that ignore their "
                   "profile at their draw (the scenario's optional 'car' objects model such cars).")
def simulate_command(scenario: Path, algorithm: str, known_departures: bool, battery_kwh: float | None,
                     horizon_s: int | None, output: Path | None, plot: Path | None, top: int | None,
                     measured_draw: bool) -> None:
    """Replay a scenario in closed loop, in simulated time, and report what each EV got.

    One planning cycle runs at every step and on every arrival and departure, through the same
    planner, validator and profiles as `optivgi run`. The report on standard output is the same
    on every run; cycle times and the progress bar go to standard error.
    """
    from optivgi.cars import load_cars
    from optivgi.plugins import load_algorithm
    from optivgi.scenario import load_scenario
    from optivgi.simulate import simulate

    try:
        sc = load_scenario(scenario)
        cars = load_cars(scenario)
        algo = load_algorithm(algorithm)
        if horizon_s is not None and horizon_s % sc.resolution_s:
            raise click.BadParameter(f"must be a multiple of the scenario's resolution_s ({sc.resolution_s})",
                                     param_hint="--horizon")
        update, close = _progress(f"{sc.name} ({algo.name})")
        try:
            result = simulate(sc, algo, known_departures=known_departures, horizon_s=horizon_s,
                              battery_kwh=battery_kwh, progress=update, cars=cars,
                              measured_draw=measured_draw)
        finally:
            close()
    except OptiVGIError as exc:
        raise click.ClickException(str(exc)) from None
    for line in result.summary_lines(top=top):
        click.echo(line)
    times = result.cycle_seconds
    if times.size:
        click.echo(f"cycle time median {statistics.median(times.tolist()):.4f} s, max {float(times.max()):.4f} s, "
                   f"total {float(times.sum()):.2f} s over {times.size} cycles", err=True)
    if output is not None:
        output.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        click.echo(f"realised schedule written to {output}", err=True)
    if plot is not None:
        from optivgi.plotting import plot_stacked_power

        steps = [sc.now + timedelta(seconds=k * sc.resolution_s) for k in range(sc.n_steps)]
        rows = {e.ev_id: result.power_kw[i] for i, e in enumerate(result.evs)}
        try:
            plot_stacked_power(steps, rows, result.site_limit_kw, plot,
                               title=f"{sc.name} closed loop ({result.algorithm}, departures "
                                     f"{'known' if known_departures else 'unknown'})")
        except OptiVGIError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"plot written to {plot}", err=True)
    if not result.within_limit:
        raise click.ClickException(f"site limit exceeded in {result.violations} segments "
                                   f"(max {result.max_violation_kw:.3f} kW over)")
