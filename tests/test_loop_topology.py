"""The scheduling loop with a site tree and a live site limit."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.config import Settings
from optivgi.limits.base import ReadingSource
from optivgi.loop import Scheduler
from optivgi.models import EV, ChargingProfile, ChargingRateUnit
from optivgi.topology_io import parse_topology
from optivgi.translation import SendOutcome, Translation

VOLTS = 230.0


class Clock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def now(self) -> datetime:
        return self.t

    def real_seconds(self, seconds: float) -> float:
        return seconds


class Site(Translation):
    """Six single-phase 7.36 kW EVs on stations S0..S5; records what it is sent."""

    def __init__(self, reject: set[str] | None = None) -> None:
        self.sent: list[dict[str, ChargingProfile]] = []
        self.reject = reject or set()

    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        now = datetime.now(UTC)
        return [EV(ev_id=f"EV-{i}", station_id=f"S{i}", connector_id=1, arrival_time=now - timedelta(hours=1),
                   departure_time=now + timedelta(days=1), energy=100.0, min_power=0.0, max_power=7.36,
                   transaction_id=i) for i in range(6)], VOLTS

    def get_peak_power_demand(self, group_name: str, now: datetime, voltage: float | None = None) -> float:
        return 40.0

    def send_power_to_evs(self, powers: Mapping[EV, ChargingProfile],
                          unit: ChargingRateUnit | None = None) -> dict[str, SendOutcome]:
        self.sent.append({str(ev.ev_id): p for ev, p in powers.items()})
        return {str(ev.ev_id): SendOutcome.REJECTED if str(ev.ev_id) in self.reject else SendOutcome.APPLIED
                for ev in powers}


def two_feeders() -> dict[str, object]:
    """Feeder A (S0-S2, all on L1, 32 A) and feeder B (S3-S5 on L1/L2/L3, 16 A per phase)."""
    a = [{"name": f"S{i}", "phases": 1, "phase": "L1", "connectors": [{"id": 1}]} for i in range(3)]
    b = [{"name": f"S{i}", "phases": 1, "phase": f"L{i - 2}", "connectors": [{"id": 1}]} for i in range(3, 6)]
    return {"name": "site", "voltage": VOLTS, "children": [
        {"name": "A", "kind": "feeder", "limit_a": 32, "children": a},
        {"name": "B", "kind": "feeder", "limit_a": 16, "children": b}]}


def _settings() -> Settings:
    return Settings(horizon_s=600, charging_rate_unit="W", voltage=VOLTS)  # type: ignore[arg-type]


def _first_kw(profiles: dict[str, ChargingProfile]) -> dict[tuple[str, int], float]:
    return {(f"S{k.split('-')[1]}", 1): p.limit_kw_at(0, VOLTS) for k, p in profiles.items()}


def test_profiles_sent_keep_every_feeder_and_phase_within_limits() -> None:
    t = parse_topology(two_feeders())
    site = Site()
    report = Scheduler(site, EqualShareAlgorithm(), _settings(), topology=t).run_cycle("test")
    assert report.ok
    sent = _first_kw(site.sent[-1])
    keys = list(sent)
    assert t.check(keys, np.array([[sent[k]] for k in keys])) == []
    # Feeder A's 32 A on L1 is shared by three cars; feeder B's cars get 16 A each.
    assert sum(sent[(f"S{i}", 1)] for i in range(3)) <= 32 * VOLTS / 1000 + 1e-9
    assert sent[("S3", 1)] == sent[("S5", 1)] > 3.6


def test_unconfirmed_evs_are_reserved_within_their_feeder() -> None:
    t = parse_topology(two_feeders())
    site = Site(reject={"EV-0"})
    scheduler = Scheduler(site, EqualShareAlgorithm(), _settings(), topology=t)
    scheduler.run_cycle("first")
    report = scheduler.run_cycle("second")
    assert report.ok, report.groups
    sent = _first_kw(site.sent[-1])
    # EV-0 is counted at its max (7.36 kW = 32 A) on feeder A's L1: nothing is left for S1, S2.
    assert sent[("S1", 1)] == 0.0 and sent[("S2", 1)] == 0.0


class Pushed(ReadingSource):
    name = "pushed"


def test_a_live_limit_caps_the_site_and_a_drop_triggers_a_cycle() -> None:
    clock = Clock()
    source = Pushed(floor_kw=6.0, timeout_s=60, clock=clock)
    site = Site()
    scheduler = Scheduler(site, EqualShareAlgorithm(), _settings(), clock=clock, limit_source=source)
    assert source.trigger is not None
    source.update(30.0)
    report = scheduler.run_cycle("start")
    assert report.groups["default"].site_limit_kw == 30.0
    assert sum(p.limit_kw_at(0, VOLTS) for p in site.sent[-1].values()) <= 30.0 + 1e-9
    source.update(15.0)
    assert scheduler._queue.get_nowait() == "site limit dropped from 30 to 15 kW (pushed)"
    scheduler.run_cycle("drop")
    assert sum(p.limit_kw_at(0, VOLTS) for p in site.sent[-1].values()) <= 15.0 + 1e-9
    # The source goes stale: the floor, whatever the translation says.
    clock.t += timedelta(seconds=61)
    report = scheduler.run_cycle("stale")
    assert report.groups["default"].site_limit_kw == 6.0
    assert sum(p.limit_kw_at(0, VOLTS) for p in site.sent[-1].values()) <= 6.0 + 1e-9


class Grouped(Site):
    """Group "A" is S0-S2, group "B" is S3-S5; each group limited to 40 kW by the translation."""

    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        evs, volts = super().get_evs(group_name)
        wanted = {"A": range(3), "B": range(3, 6)}[group_name]
        return [ev for ev in evs if int(str(ev.station_id)[1:]) in wanted], volts


def test_a_group_named_like_a_node_is_planned_within_that_subtree() -> None:
    t = parse_topology(two_feeders())
    site = Grouped()
    settings = Settings(horizon_s=600, charging_rate_unit="W", voltage=VOLTS,  # type: ignore[arg-type]
                        station_groups=("A", "B"))
    report = Scheduler(site, EqualShareAlgorithm(), settings, topology=t).run_cycle("test")
    assert report.ok
    sent = {**_first_kw(site.sent[0]), **_first_kw(site.sent[1])}
    keys = list(sent)
    assert len(keys) == 6 and t.check(keys, np.array([[sent[k]] for k in keys])) == []
    # Feeder A: three cars on one 32 A phase; feeder B: one car per phase at its 16 A.
    assert sum(sent[(f"S{i}", 1)] for i in range(3)) == pytest.approx(32 * VOLTS / 1000, abs=0.01)
    assert sent[("S4", 1)] == pytest.approx(16 * VOLTS / 1000, abs=0.01)


class Broken(ReadingSource):
    name = "broken"

    def series(self, start: datetime, resolution_s: int, n_steps: int) -> np.ndarray:
        raise RuntimeError("meter parser bug")


def test_a_failing_limit_source_means_its_floor_not_the_translation_limit() -> None:
    site = Site()
    scheduler = Scheduler(site, EqualShareAlgorithm(), _settings(), limit_source=Broken(floor_kw=9.0, timeout_s=5))
    report = scheduler.run_cycle("test")
    assert report.ok and report.groups["default"].site_limit_kw == 9.0
    assert sum(p.limit_kw_at(0, VOLTS) for p in site.sent[-1].values()) <= 9.0 + 1e-9
