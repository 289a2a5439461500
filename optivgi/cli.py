"""The ``optivgi`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from optivgi.cli_simulate import simulate_command
from optivgi.config import Settings
from optivgi.errors import OptiVGIError
from optivgi.plugins import (
    ALGORITHMS_GROUP,
    TRANSLATIONS_GROUP,
    available,
    load_algorithm,
    load_translation_class,
)
from optivgi.redaction import Redactor, install, secrets_in_settings

__all__ = ["main"]

logger = logging.getLogger(__name__)

_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


#: Cleans every log line and error message of the process (see :mod:`optivgi.redaction`).
REDACTOR = Redactor()


def _fail(exc: Exception) -> click.ClickException:
    text = str(exc) if isinstance(exc, OptiVGIError) else f"{type(exc).__name__}: {exc}"
    return click.ClickException(REDACTOR.redact(" ".join(text.split()) or type(exc).__name__))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", type=_LEVELS, default="WARNING", show_default=True, help="Logging verbosity.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=Path(".env"),
              show_default=True, help="A .env file read for settings (below CLI options and the environment).")
@click.version_option(package_name="opti-vgi")
@click.pass_context
def main(ctx: click.Context, log_level: str, env_file: Path) -> None:
    """Smart charging that keeps a site under its power limit."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install(REDACTOR)
    ctx.obj = {"env_file": env_file}


@main.command("list")
def list_plugins() -> None:
    """List the installed algorithms and translations."""
    for title, group in (("algorithms", ALGORITHMS_GROUP), ("translations", TRANSLATIONS_GROUP)):
        click.echo(f"{title} ({group}):")
        for info in available(group):
            click.echo(f"  {info.name:<16} {info.value:<55} [{info.distribution} {info.version}]")


@main.command()
@click.option("--translation", "-t", help="Translation plugin name (OPTIVGI_TRANSLATION).")
@click.option("--algorithm", "-a", help="Algorithm plugin name (OPTIVGI_ALGORITHM, default lp).")
@click.option("--interval", type=click.FloatRange(min=0.001), help="Seconds between periodic cycles (INTERVAL_S).")
@click.option("--once", is_flag=True, help="Run a single cycle and exit.")
@click.option("--site-limit", "site_power_limit_kw", type=float, help="Site limit in kW (SITE_POWER_LIMIT_KW).")
@click.option("--groups", "station_groups", help="Comma-separated station groups (STATION_GROUPS).")
@click.option("--voltage", type=float, help="Voltage for amp conversions (VOLTAGE).")
@click.option("--unit", "charging_rate_unit", type=click.Choice(["W", "A"], case_sensitive=False), metavar="[W|A]",
              help="Unit of the profiles sent, W or A (CHARGING_RATE_UNIT, default W).")
@click.pass_context
def run(ctx: click.Context, translation: str | None, algorithm: str | None, interval: float | None, once: bool,
        site_power_limit_kw: float | None, station_groups: str | None, voltage: float | None,
        charging_rate_unit: str | None) -> None:
    """Schedule a site through a translation: on every event and every interval.

    Settings, highest first: these options, environment variables, the .env file. Besides the
    ones above: PHASES (1), RESOLUTION_S (60), HORIZON_S (28800) and the translation's own
    variables (see its documentation). -t also takes package.module:Class.
    """
    from optivgi.loop import Scheduler

    try:
        settings = Settings.load(
            {"translation": translation, "algorithm": algorithm, "interval_s": interval,
             "site_power_limit_kw": site_power_limit_kw, "station_groups": station_groups, "voltage": voltage,
             "charging_rate_unit": charging_rate_unit.upper() if charging_rate_unit else None},
            dotenv=ctx.obj["env_file"],
        )
        REDACTOR.add(secrets_in_settings(settings.values))
        algo = load_algorithm(settings.algorithm)
        cls = load_translation_class(settings.translation)
        instance = cls.from_settings(settings)
    except Exception as exc:  # a bad setting or plugin: one line, never a traceback
        logger.debug("start failed", exc_info=True)
        raise _fail(exc) from None
    install(REDACTOR)  # handlers a plugin added while loading
    clock = getattr(instance, "clock", None)
    click.echo(f"optivgi run: translation {settings.translation}, algorithm {algo.name}, groups "
               f"{','.join(settings.station_groups)}, interval {settings.interval_s:g} s", err=True)
    failed: list[str] = []

    def echo(line: str) -> None:
        click.echo(REDACTOR.redact(line))

    try:
        with instance as t:
            from optivgi.report import CurtailmentReporter

            reporter = CurtailmentReporter(echo, voltage=settings.voltage, arrivals=True)

            def on_cycle(report: Any) -> None:
                reporter(report)
                failed[:] = [f"group {g}: {r.error}" for g, r in report.groups.items() if r.error]

            scheduler = Scheduler(t, algo, settings, clock=clock, on_cycle=on_cycle)

            def _stop(signum: int, frame: FrameType | None) -> None:
                logger.warning("signal %s received, stopping", signal.Signals(signum).name)
                scheduler.stop()

            previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                if not once:
                    t.attach(scheduler.trigger)
                scheduler.run(once=once)
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)
            failed_once = once and scheduler.failed_cycles > 0
    except Exception as exc:  # setup/teardown of the translation: one line, the traceback at DEBUG
        logger.debug("run failed", exc_info=True)
        raise _fail(exc) from None
    if failed_once:
        raise click.ClickException(REDACTOR.redact("the cycle failed: " + ("; ".join(failed) or "see the log above")))


@main.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--algorithm", "-a", default="lp", show_default=True, help="Algorithm plugin name.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the schedule JSON here (default: standard output).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Save a stacked power plot (PNG).")
def plan(scenario: Path, algorithm: str, output: Path | None, plot: Path | None) -> None:
    """Plan a scenario file and write its schedule (JSON)."""
    from optivgi.planner import plan as run_plan
    from optivgi.scenario import load_scenario

    try:
        sc = load_scenario(scenario)
        algo = load_algorithm(algorithm)
        problem = sc.to_problem()
        t0 = time.perf_counter()
        schedule = run_plan(problem, algo)
        elapsed = time.perf_counter() - t0
    except OptiVGIError as exc:
        raise _fail(exc) from None
    doc: dict[str, Any] = schedule.to_json(sc.name)
    doc["solve_seconds"] = round(elapsed, 6)
    text = json.dumps(doc, indent=1) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        energy = schedule.energy_kwh()
        click.echo(f"{sc.name}: {len(sc.evs)} EVs, {schedule.n_steps} steps, algorithm {schedule.algorithm}, "
                   f"{elapsed:.3f} s, delivered {sum(energy.values()):.2f} of "
                   f"{float(problem.energy_kwh.sum()):.2f} kWh asked, peak "
                   f"{float(schedule.site_power_kw().max(initial=0.0)):.2f} kW -> {output}", err=True)
    if plot is not None:
        from datetime import timedelta

        from optivgi.plotting import plot_stacked_power

        times = [schedule.start + timedelta(seconds=k * schedule.resolution_s) for k in range(schedule.n_steps)]
        try:
            plot_stacked_power(times, {i: schedule.row(i) for i in schedule.ev_ids}, problem.site_limit_kw, plot,
                               title=f"{sc.name} ({schedule.algorithm})")
        except OptiVGIError as exc:
            raise _fail(exc) from None


@main.command()
@click.option("--algorithm", "-a", default="lp", show_default=True, help="Algorithm plugin name.")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Scenario file to replay (default: the embedded six-EV demo).")
@click.option("--speed", type=click.FloatRange(min=1.0), default=90.0, show_default=True,
              help="How many times faster than real time the simulated clock runs.")
@click.option("--known-departures", is_flag=True, help="Tell the planner the real departure times.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Save a stacked power plot (PNG).")
def demo(algorithm: str, scenario: Path | None, speed: float, known_departures: bool, plot: Path | None) -> None:
    """Watch the reference curtailment scenario being scheduled (no CSMS, no network)."""
    from optivgi.demo import run_demo
    from optivgi.scenario import load_scenario

    try:
        algo = load_algorithm(algorithm)
        sc = load_scenario(scenario) if scenario else None
        result = run_demo(algo, scenario=sc, speed=speed, known_departures=known_departures, plot=plot,
                          echo=click.echo)
    except OptiVGIError as exc:
        raise _fail(exc) from None
    if not result.within_limit:
        raise click.ClickException(f"site limit exceeded: peak {result.peak_kw:.3f} kW > {result.limit_kw:.3f} kW")


main.add_command(simulate_command)


def _attach_plugin_commands() -> None:
    # Plugins add command groups (e.g. `optivgi citrineos simulate`) through entry points.
    from optivgi.plugins import load_commands

    for command in load_commands():
        if isinstance(command, click.Command) and command.name and command.name not in main.commands:
            main.add_command(command)


_attach_plugin_commands()
