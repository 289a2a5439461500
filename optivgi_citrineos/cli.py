"""``optivgi citrineos ...``: command line tools of the CitrineOS plugin.

The group is attached to the core command line (``optivgi.cli:main``). Each command imports its
heavy dependencies (ocpp, websockets) only when it runs, so ``optivgi --help`` stays fast and works
without the ``citrineos`` extra.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import click

__all__ = ["citrineos"]

logger = logging.getLogger(__name__)


def _environment(ctx: click.Context) -> dict[str, str]:
    """``os.environ`` over the ``.env`` file named by the root command (``--env-file``)."""
    from optivgi.config import read_dotenv
    from optivgi.errors import ConfigurationError

    root = ctx.find_root().obj
    env_file = root.get("env_file") if isinstance(root, dict) else None
    try:
        values: dict[str, str] = dict(read_dotenv(env_file)) if env_file else {}
    except ConfigurationError as exc:  # a bad .env: one Error line like every other command
        raise click.ClickException(str(exc)) from None
    values.update(os.environ)
    return values


def _ensure_logging(names: tuple[str, ...]) -> None:
    """Make the named loggers' INFO lines visible (they are what a person running a tool watches)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in names:
        log = logging.getLogger(name)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)


@click.group("citrineos", context_settings={"help_option_names": ["-h", "--help"]})
def citrineos() -> None:
    """Tools for the CitrineOS integration (charger simulator, ...)."""


# --- simulate -------------------------------------------------------------------------------------


@citrineos.command("simulate")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True),
              help="Run the simulated clock N times faster than real time (SIMULATOR_SPEED, default 1).")
@click.option("--scenario", help="Scenario JSON file, 'default' (built-in six EVs) or 'none' for manual mode "
                                 "(SCENARIO_FILE; unset: default, empty: manual).")
@click.option("--url", "ws_url", help="CSMS OCPP 1.6J websocket base, e.g. ws://127.0.0.1:8092 (CITRINEOS_WS_URL).")
@click.option("--stations", help="Comma-separated station ids (STATION_IDS, default OPTIVGI-STATION-01..06).")
@click.option("--ocpp", "ocpp_version", type=click.Choice(["1.6", "2.0.1"]),
              help="OCPP version of every station (OCPP_VERSION, default 1.6; a scenario may set it per station).")
@click.option("--url201", "ws201_url",
              help="CSMS OCPP 2.0.1 websocket base, e.g. ws://127.0.0.1:8081 (CITRINEOS_WS201_URL).")
@click.option("--connectors", type=click.IntRange(1, 32), help="Connectors per station (CONNECTORS_PER_STATION).")
@click.option("--meter-interval", type=click.FloatRange(min=0, min_open=True),
              help="Simulated seconds between MeterValues (METER_VALUES_INTERVAL, default 10).")
@click.option("--profile-clock", type=click.Choice(["simulated", "wall"]),
              help="Clock for profile times (default simulated; 'wall' when the optimizer runs in real time).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this many wall seconds (default: until Ctrl-C).")
@click.option("--summary-every", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Wall seconds between summary lines (0: none).")
@click.pass_context
def simulate(ctx: click.Context, speed: float | None, scenario: str | None, ws_url: str | None,
             stations: str | None, ocpp_version: str | None, ws201_url: str | None, connectors: int | None,
             meter_interval: float | None, profile_clock: str | None, duration: float | None,
             summary_every: float) -> None:
    """Run OCPP 1.6J or 2.0.1 charge points with simulated cars against a CSMS (CitrineOS)."""
    from optivgi.errors import OptiVGIError
    from optivgi_citrineos.simulator import Simulator, SimulatorConfig

    environ = _environment(ctx)
    if scenario is not None:
        environ["SCENARIO_FILE"] = "" if scenario.strip().lower() in ("none", "manual") else scenario
    overrides: dict[str, Any] = {
        "speed": speed,
        "ws_url": ws_url.rstrip("/") if ws_url else None,
        "station_ids": tuple(s.strip() for s in stations.split(",") if s.strip()) if stations else None,
        "connectors_per_station": connectors,
        "meter_values_interval_s": meter_interval,
        "profile_clock": profile_clock,
        "ocpp_version": ocpp_version,
        "ws201_url": ws201_url.rstrip("/") if ws201_url else None,
    }
    try:
        config = SimulatorConfig.from_env(environ, **overrides)
    except OptiVGIError as exc:
        raise click.ClickException(str(exc)) from None
    _ensure_logging(("optivgi_citrineos.simulator", __name__))
    # ocpp logs every frame at INFO: keep that for --log-level DEBUG only.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("ocpp").setLevel(logging.WARNING)
    scenario_text = (f"{len(config.scenario.sessions)} sessions" if config.scenario is not None
                     else "manual mode (RemoteStartTransaction)")
    v201 = sum(1 for sid in config.station_ids if config.ocpp_version_of(sid) == "2.0.1")
    targets = config.ws_url if v201 == 0 else (
        config.ws201_url if v201 == len(config.station_ids)
        else f"{config.ws_url} (1.6) and {config.ws201_url} ({v201} on 2.0.1)")
    click.echo(f"optivgi citrineos simulate: {len(config.station_ids)} stations x {config.connectors_per_station} "
               f"connectors -> {targets}, speed x{config.speed:g}, {scenario_text}", err=True)
    asyncio.run(_run_simulator(Simulator(config), duration, summary_every))


async def _run_simulator(sim: Any, duration: float | None, summary_every: float) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, sim.request_stop)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - platforms without signal support
            pass
    runner = asyncio.create_task(sim.run())

    async def summaries() -> None:
        while summary_every > 0:
            await asyncio.sleep(summary_every)
            snap = sim.snapshot()
            charging = sum(1 for st in snap.stations.values() for c in st.connectors.values() if c.power_kw > 0)
            online = sum(1 for st in snap.stations.values() if st.booted)
            elapsed = sim.clock.elapsed_s()
            logger.info("t+%02d:%02d:%02d simulated: %d/%d stations online, %d transactions, %d charging, %.2f kW",
                        elapsed // 3600, elapsed % 3600 // 60, elapsed % 60, online, len(snap.stations),
                        snap.active_transactions, charging, snap.power_kw)

    reporter = asyncio.create_task(summaries())
    try:
        if duration is not None:
            done, _ = await asyncio.wait({runner}, timeout=duration)
            if not done:
                sim.request_stop()
        await runner
    finally:
        reporter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass


# --- further commands of the group go below (e.g. ``verify``) ------------------------------------

# --- verify ---------------------------------------------------------------------------------------

from optivgi_citrineos.verify import verify_command  # noqa: E402  (joins the group defined above)

citrineos.add_command(verify_command)
