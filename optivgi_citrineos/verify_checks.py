"""The verifier's four checks on the latest run's cycles, and the report that gathers them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from optivgi_citrineos.config import BUILTIN_SESSION_DEFAULTS
from optivgi_citrineos.verify_records import (
    AMP_STEP_A,
    MIN_CONCURRENT,
    MIN_PROFILES,
    CheckResult,
    ProfileRecord,
    VerifyData,
    VerifyReport,
)

if TYPE_CHECKING:

    from optivgi_citrineos.verify_run import RunJudgement


def _step_kw(voltage: float, phases: int = 1) -> float:
    return AMP_STEP_A * voltage * phases / 1000.0


def _hhmmss(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%H:%M:%S UTC")


def check_profiles_sent(data: VerifyData, minimum: int = MIN_PROFILES) -> CheckResult:
    """Check 1: at least ``minimum`` SetChargingProfile calls were accepted by the chargers."""
    accepted = len(data.accepted)
    if data.from_log:
        detail = (
            f"{accepted} accepted by the chargers ({len(data.history)} sent, "
            f"{data.stored_rows} stored in ChargingProfiles; need >= {minimum})"
        )
    else:
        detail = f"{accepted} stored in ChargingProfiles (OCPPMessages unreadable; need >= {minimum})"
    return CheckResult(1, "Charging profiles sent", accepted >= minimum, detail)


def check_concurrent_sessions(data: VerifyData, voltage: float, minimum: int = MIN_CONCURRENT) -> CheckResult:
    """Check 2: at least ``minimum`` EVs held a positive allocation in the same cycle."""
    count, best = 0, None
    for cycle in data.cycles():
        positive = sum(1 for kw in cycle.allocations_kw(voltage).values() if kw > 0)
        if positive > count:
            count, best = positive, cycle
    when = f" in the cycle of {_hhmmss(best.start)}" if best is not None else ""
    detail = f"{count} EVs held a positive allocation at once{when} (need >= {minimum})"
    if not data.from_log:
        detail += "; from the stored last profile of each connector only"
    return CheckResult(2, "Concurrent sessions", count >= minimum, detail)


def check_latest_cycle_within_limit(data: VerifyData, site_limit_kw: float, voltage: float) -> CheckResult:
    """Check 3: the latest cycle's summed limits stay within the site limit plus one amp step per EV."""
    cycles = data.cycles()
    if not cycles:
        return CheckResult(3, "Latest cycle within site limit", False, "no accepted TxProfile to add up")
    latest = cycles[-1]
    peak, when = latest.peak(voltage)
    tolerance = sum(_step_kw(voltage, p.phases()) for p in latest.profiles.values())
    passed = peak <= site_limit_kw + tolerance + 1e-9
    n = len(latest.profiles)
    detail = (
        f"{n} EV{'s' if n != 1 else ''} in the cycle of {_hhmmss(latest.start)}: peak {peak:.2f} kW "
        f"{'<=' if passed else '>'} {site_limit_kw:.2f} kW + {tolerance:.2f} kW (one {AMP_STEP_A} A step per EV)"
    )
    if when != latest.start:
        detail += f" at {_hhmmss(when)}"
    return CheckResult(3, "Latest cycle within site limit", passed, detail)


def check_curtailment(
    data: VerifyData, max_kw: Callable[[ProfileRecord], float], voltage: float
) -> CheckResult:
    """Check 4: some accepted TxProfile gave its EV less than its max rate, by more than one amp step.

    ``max_kw`` gives the max rate [kW] of a profile's EV. A limit of 0 does not count: it is what
    an EV gets once it needs nothing more.
    """
    curtailed: list[tuple[float, float]] = []
    for cycle in data.cycles():
        for p in cycle.profiles.values():
            kw, ceiling = p.first_limit_kw(voltage), max_kw(p)
            if 0 < kw < ceiling - _step_kw(voltage, p.phases()) - 1e-9:
                curtailed.append((kw, ceiling))
    if not curtailed:
        return CheckResult(4, "Curtailment occurred", False, "no EV was ever given less than its max rate")
    low, ceiling = min(curtailed)
    detail = (
        f"{len(curtailed)} allocation{'s' if len(curtailed) != 1 else ''} below the EV's max rate "
        f"(lowest {low:.2f} kW of {ceiling:.2f} kW)"
    )
    return CheckResult(4, "Curtailment occurred", True, detail)


def run_checks(
    data: VerifyData,
    site_limit_kw: float,
    voltage: float,
    max_kw: Callable[[ProfileRecord], float] | None = None,
    run: RunJudgement | None = None,
) -> VerifyReport:
    """Run the four checks, and checks 5-7 of the whole run when ``run`` is given.

    ``max_kw`` defaults to the built-in 7.2 kW for every EV. Besides the checks, the report notes
    every earlier cycle above the limit (check 3 judges the latest one only) and the runs that
    were left out.
    """
    if max_kw is None:

        def max_kw(_: ProfileRecord) -> float:
            return float(BUILTIN_SESSION_DEFAULTS.max_power_kw or 0.0)

    checks: tuple[CheckResult, ...] = (
        check_profiles_sent(data),
        check_concurrent_sessions(data, voltage),
        check_latest_cycle_within_limit(data, site_limit_kw, voltage),
        check_curtailment(data, max_kw, voltage),
    )
    if run is not None:
        checks += tuple(CheckResult(5 + i, title, passed, detail)
                        for i, (passed, title, detail) in enumerate(run.lines()))
    notes: list[str] = []
    over = []
    for cycle in data.cycles()[:-1]:
        peak, when = cycle.peak(voltage)
        tolerance = sum(_step_kw(voltage, p.phases()) for p in cycle.profiles.values())
        if peak > site_limit_kw + tolerance + 1e-9:
            over.append((when, peak))
    if over:
        worst = max(over, key=lambda item: item[1])
        notes.append(
            f"[WARN] {len(over)} earlier cycle(s) above the limit; worst {worst[1]:.2f} kW at {_hhmmss(worst[0])}"
        )
    if data.ignored_runs:
        notes.append(f"[INFO] {data.ignored_runs} earlier run(s) in the database were not judged")
    return VerifyReport(checks, tuple(notes))


# --- reading -------------------------------------------------------------------------------------
