"""``optivgi citrineos verify``: prove from CitrineOS's own records that a site was curtailed.

The verifier reads what CitrineOS stored (through Hasura GraphQL), never the optimizer's memory:

- ``OCPPMessages``: every SetChargingProfile CitrineOS sent and each charger's answer. This is the
  history: ``ChargingProfiles`` keeps only the last accepted profile per (station, profile id);
- ``ChargingProfiles`` + ``ChargingSchedules``: the profiles the chargers accepted, used alone
  when the message log cannot be read.

Accepted ``TxProfile`` calls are grouped into *cycles* by their ``startSchedule`` (every profile
of one scheduling cycle shares it). A cycle's allocation of an EV is the limit its profile sets at
the start of the schedule; an EV absent from a cycle holds nothing in it. Four checks follow:

1. profiles sent: at least 3 SetChargingProfile calls accepted by the chargers;
2. concurrent sessions: at least 3 EVs held a positive allocation in the same cycle;
3. latest cycle within the limit: at every period start of the latest cycle, the summed limits
   are at most the site limit plus one 0.1 A step per EV (the rounding a charger in amps allows);
4. curtailment occurred: some EV was given less than its max rate, by more than one amp step.

Only the latest run is judged: cycles are split into runs where two follow each other more than
:data:`RUN_GAP` apart (a CitrineOS database keeps the history of every earlier demo).

The work is split by job: :mod:`~optivgi_citrineos.verify_records` (records, cycles, runs),
:mod:`~optivgi_citrineos.verify_parse` (rows to records), :mod:`~optivgi_citrineos.verify_read`
(Hasura / SQL), :mod:`~optivgi_citrineos.verify_checks` and :mod:`~optivgi_citrineos.verify_plot`;
this module keeps the command and re-exports their public names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from optivgi.errors import ConfigurationError, OptiVGIError
from optivgi_citrineos.config import BUILTIN_SESSION_DEFAULTS, CitrineOSConfig
from optivgi_citrineos.verify_checks import (
    _hhmmss,
    check_concurrent_sessions,
    check_curtailment,
    check_latest_cycle_within_limit,
    check_profiles_sent,
    run_checks,
)
from optivgi_citrineos.verify_parse import profiles_from_messages, profiles_from_rows
from optivgi_citrineos.verify_plot import allocation_series, plot_allocations
from optivgi_citrineos.verify_read import fetch_verify_data, fetch_verify_data_sql
from optivgi_citrineos.verify_records import (
    AMP_STEP_A,
    MIN_CONCURRENT,
    MIN_PROFILES,
    RUN_GAP,
    CheckResult,
    Cycle,
    ProfileRecord,
    VerifyData,
    VerifyReport,
    group_cycles,
    latest_run,
)

if TYPE_CHECKING:

    from optivgi.config import Settings
    from optivgi_citrineos.verify_run import RunJudgement

__all__ = [
    "AMP_STEP_A",
    "MIN_CONCURRENT",
    "MIN_PROFILES",
    "RUN_GAP",
    "CheckResult",
    "Cycle",
    "ProfileRecord",
    "VerifyData",
    "VerifyReport",
    "allocation_series",
    "check_concurrent_sessions",
    "check_curtailment",
    "check_latest_cycle_within_limit",
    "check_profiles_sent",
    "fetch_verify_data",
    "fetch_verify_data_sql",
    "group_cycles",
    "latest_run",
    "plot_allocations",
    "profiles_from_messages",
    "profiles_from_rows",
    "run_checks",
    "verify_command",
]

logger = logging.getLogger(__name__)


class _CannotVerify(click.ClickException):
    """Nothing could be judged (configuration or Hasura problem): exit status 2."""

    exit_code = 2


def _outlet_rate_lookup(settings: Settings, station_ids: Sequence[str]) -> Callable[[str, int], float]:
    """A car's max rate [kW] by (station, connector): ``CONN_XX_MAX_POWER_KW``, else 7.2."""
    configured = CitrineOSConfig._connectors(settings, tuple(station_ids))
    default = float(BUILTIN_SESSION_DEFAULTS.max_power_kw or 0.0)

    def lookup(station_id: str, connector: int) -> float:
        params = configured.get((station_id, connector))
        if params is not None and params.max_power_kw is not None:
            return float(params.max_power_kw)
        return default

    return lookup


def _max_rate_lookup(settings: Settings, station_ids: Sequence[str]) -> Callable[[ProfileRecord], float]:
    """Each EV's max rate [kW]: ``CONN_XX_MAX_POWER_KW`` for its station and connector, else 7.2."""
    outlet = _outlet_rate_lookup(settings, station_ids)

    def lookup(p: ProfileRecord) -> float:
        return outlet(p.station_id, p.connector_id if p.connector_id is not None else 1)

    return lookup


@click.command("verify")
@click.option("--url", help="Hasura base URL (HASURA_URL); /v1/graphql is appended unless present.")
@click.option("--dsn", help="PostgreSQL DSN of CitrineOS's database (CITRINEOS_DB_DSN), read instead of Hasura; "
              "also judges the whole run (delivered power, starved cars, time to the first profile).")
@click.option("--max-starved-s", type=click.FloatRange(min=0), default=None,
              help="Fail when a car sat at 0 kW with room on the site longer than this (default 60 s).")
@click.option("--first-profile-s", type=click.FloatRange(min=0), default=None,
              help="Fail when a car's first profile came later than this after its start (default 10 s).")
@click.option("--limit", "limit_kw", type=click.FloatRange(min=0), help="Site limit in kW (SITE_POWER_LIMIT_KW).")
@click.option("--voltage", type=click.FloatRange(min=0, min_open=True), help="Voltage for amp limits (VOLTAGE, 240).")
@click.option("--stations", help="Comma-separated station ids to judge (STATION_IDS).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Save a stacked chart of the allocations with the site limit (PNG).")
@click.pass_context
def verify_command(
    ctx: click.Context,
    url: str | None,
    dsn: str | None,
    max_starved_s: float | None,
    first_profile_s: float | None,
    limit_kw: float | None,
    voltage: float | None,
    stations: str | None,
    plot: Path | None,
) -> None:
    """Check from CitrineOS's records that the site was curtailed and kept under its limit."""
    from optivgi.config import Settings

    root = ctx.find_root()
    env_file = root.obj.get("env_file") if isinstance(root.obj, Mapping) else None
    try:
        settings = Settings.load({"site_power_limit_kw": limit_kw, "voltage": voltage}, dotenv=env_file)
        dsn = dsn or settings.get("CITRINEOS_DB_DSN")
        url = url or settings.get("HASURA_URL")
        if not url and not dsn:
            raise ConfigurationError("set --dsn or CITRINEOS_DB_DSN (PostgreSQL), or --url or HASURA_URL (Hasura)")
        station_ids = [s.strip() for s in (stations or settings.get("STATION_IDS") or "").split(",") if s.strip()]
        if not station_ids:
            raise ConfigurationError("set --stations or STATION_IDS to the stations to judge")
        if settings.site_power_limit_kw is None:
            raise ConfigurationError("set --limit or SITE_POWER_LIMIT_KW to the site limit in kW")
        tenant = int(settings.get("CITRINEOS_TENANT_ID", "1") or "1")
        max_kw = _max_rate_lookup(settings, station_ids)
        limit, volts = settings.site_power_limit_kw, settings.voltage
        run: RunJudgement | None = None
        if dsn:
            from optivgi.config import mask_url

            click.echo(f"CitrineOS curtailment check: PostgreSQL {mask_url(dsn)}, {len(station_ids)} station(s), "
                       f"tenant {tenant}")
            click.echo(f"site limit {limit:g} kW, voltage {volts:g} V")
            data, run = fetch_verify_data_sql(
                dsn, station_ids, tenant_id=tenant, site_limit_kw=limit, voltage=volts,
                max_kw=_outlet_rate_lookup(settings, station_ids), max_starved_s=max_starved_s,
                first_profile_s=first_profile_s,
            )
        else:
            assert url is not None
            click.echo(f"CitrineOS curtailment check: Hasura {url}, {len(station_ids)} station(s), tenant {tenant}")
            click.echo(f"site limit {limit:g} kW, voltage {volts:g} V")
            data = fetch_verify_data(url, station_ids, tenant_id=tenant,
                                     admin_secret=settings.get("HASURA_ADMIN_SECRET"))
    except (ConfigurationError, ValueError) as exc:
        raise _CannotVerify(str(exc)) from None
    except OptiVGIError as exc:
        hint = "--dsn postgresql://...@localhost:<PORT>/citrine" if dsn else "--url http://localhost:<HASURA_PORT>"
        raise _CannotVerify(f"{exc} (from the host, pass {hint})") from None
    cycles = data.cycles()
    if cycles:
        click.echo(
            f"{len(data.history)} SetChargingProfile call(s), {len(cycles)} cycle(s) "
            f"from {_hhmmss(cycles[0].start)} to {_hhmmss(cycles[-1].start)}"
        )
    click.echo("")
    report = run_checks(data, limit, volts, max_kw, run)
    if run is None:
        report = VerifyReport(report.checks, (*report.notes, "[INFO] the whole-run checks (delivered power, "
                                              "starved cars, first profile) need --dsn / CITRINEOS_DB_DSN"))
    for line in report.lines():
        click.echo(line)
    if plot is not None:
        try:
            written = plot_allocations(data, limit, volts, plot)
        except OptiVGIError as exc:
            click.echo(f"no plot: {exc}", err=True)
        else:
            click.echo(f"plot saved to {written}")
    ctx.exit(0 if report.passed else 1)


if __name__ == "__main__":  # ``python -m optivgi_citrineos.verify``: the command without the optivgi group
    verify_command()
