"""The scheduling loop: cycles, triggers, coalescing, failure isolation, fallback, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import attrs
import numpy as np
import pytest

from optivgi.algorithms.base import Algorithm, FloatArray, Problem
from optivgi.algorithms.equal_share import EqualShareAlgorithm
from optivgi.clock import AcceleratedClock
from optivgi.config import Settings
from optivgi.loop import CycleReport, Scheduler
from optivgi.models import EV, ChargingProfile, ChargingRateUnit
from optivgi.translation import SendOutcome, Translation

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class FakeSite(Translation):
    """Six 7.2 kW EVs on a 30 kW site; records what it is sent; can be told to fail."""

    def __init__(self, n: int = 6, fail_first: int = 0) -> None:
        self.n = n
        self.fail_first = fail_first
        self.calls = 0
        self.sent: list[dict[str, ChargingProfile]] = []
        self.max_kw: dict[int, float] = {}  # per EV index, when not 7.2

    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("CSMS unreachable")
        now = datetime.now(UTC)
        evs = [EV(ev_id=f"EV-{i}", station_id=f"S{i}", connector_id=1, arrival_time=now - timedelta(hours=1),
                  departure_time=now + timedelta(days=1), energy=100.0, min_power=0.0,
                  max_power=self.max_kw.get(i, 7.2), transaction_id=i) for i in range(self.n)]
        return evs, 240.0

    def get_peak_power_demand(self, group_name: str, now: datetime, voltage: float | None = None) -> float:
        return 30.0

    unanswered: set[str] = set()

    def send_power_to_evs(self, powers: Mapping[EV, ChargingProfile],
                          unit: ChargingRateUnit | None = None) -> dict[str, SendOutcome]:
        self.sent.append({str(ev.ev_id): p for ev, p in powers.items()})
        return {str(ev.ev_id): SendOutcome.UNANSWERED if str(ev.ev_id) in self.unanswered else SendOutcome.APPLIED
                for ev in powers}


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {"horizon_s": 3600, "charging_rate_unit": "A", "voltage": 240.0}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def _kw(profile: ChargingProfile, voltage: float = 240.0) -> float:
    return profile.limit_kw_at(0, voltage)


def test_one_cycle_sends_fair_profiles_under_the_limit() -> None:
    site = FakeSite()
    report = Scheduler(site, EqualShareAlgorithm(), _settings()).run_cycle("test")
    assert report.ok
    profiles = site.sent[-1]
    assert len(profiles) == 6
    for p in profiles.values():
        assert p.unit is ChargingRateUnit.A and p.first_limit == 20.8  # 5.0 kW at 240 V, rounded down
        assert p["transactionId"] is not None
    assert sum(_kw(p) for p in profiles.values()) <= 30.0


def test_a_failing_cycle_is_isolated_and_the_next_trigger_recovers() -> None:
    site = FakeSite(fail_first=2)
    reports: list[CycleReport] = []
    sched = Scheduler(site, EqualShareAlgorithm(), _settings(interval_s=3600), on_cycle=reports.append,
                      coalesce_s=0.01)
    thread = threading.Thread(target=sched.run, kwargs={"max_cycles": 3})
    thread.start()
    for _ in range(2):
        time.sleep(0.2)
        sched.trigger("event")
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [r.ok for r in reports] == [False, False, True]
    assert "ConnectionError: CSMS unreachable" in (reports[0].groups["default"].error or "")
    assert sched.failed_cycles == 2 and len(site.sent) == 1


def test_a_burst_of_triggers_is_one_cycle() -> None:
    site = FakeSite()
    sched = Scheduler(site, EqualShareAlgorithm(), _settings(interval_s=3600), coalesce_s=0.5)
    thread = threading.Thread(target=sched.run)
    thread.start()
    time.sleep(0.3)
    for i in range(20):
        sched.trigger(f"event {i}")
    time.sleep(1.5)
    sched.stop()
    thread.join(timeout=10)
    assert sched.cycles == 2  # the start cycle and one for the whole burst


def test_timer_cycles_are_aligned_to_the_interval() -> None:
    clock = AcceleratedClock(T0 + timedelta(seconds=17), speed=600.0)
    reports: list[CycleReport] = []
    sched = Scheduler(FakeSite(), EqualShareAlgorithm(), _settings(interval_s=60), clock=clock,
                      on_cycle=reports.append)
    sched.run(max_cycles=4)
    timer = [r for r in reports if r.reason == "timer"]
    assert len(timer) == 3
    for r in timer:
        # the planning start is the tick, give or take the cycle's own latency at x600
        offset = r.now.timestamp() % 60
        assert min(offset, 60 - offset) < 15


class OverLimit(Algorithm):
    name = "over"

    def solve(self, problem: Problem) -> FloatArray:
        return np.asarray(problem.max_power_kw[:, None] * problem.window_mask(), dtype=np.float64)


class Crashing(Algorithm):
    name = "crash"

    def solve(self, problem: Problem) -> FloatArray:
        raise RuntimeError("solver exploded")


@pytest.mark.parametrize("algorithm", [OverLimit(), Crashing()], ids=["over-limit", "crash"])
def test_a_bad_algorithm_falls_back_and_nothing_above_the_limit_is_sent(algorithm: Algorithm) -> None:
    site = FakeSite()
    report = Scheduler(site, algorithm, _settings()).run_cycle()
    group = report.groups["default"]
    assert group.schedule is not None and group.schedule.algorithm == "equal-share"
    assert algorithm.name in group.schedule.note
    assert sum(_kw(p) for p in site.sent[-1].values()) <= 30.0


def test_run_stops_cleanly_on_sigterm(tmp_path: object) -> None:
    env = {**os.environ, "OPTIVGI_SPEED": "60", "INTERVAL_S": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "optivgi", "--log-level", "INFO", "run", "--translation",
                             "simulated", "--algorithm", "equal-share"], env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "signal SIGTERM received, stopping" in err
    assert "cycle 1 (start)" in err
    assert "Traceback" not in err


def test_reductions_are_sent_before_increases() -> None:
    site = FakeSite()
    sched = Scheduler(site, EqualShareAlgorithm(), _settings())
    sched.run_cycle()  # six EVs at 5.0 kW (20.8 A at 240 V)
    accepted = {ev_id: _kw(p) for ev_id, p in site.sent[-1].items()}
    site.max_kw[5] = 2.0  # the last EV tapers to 2.0 kW: the five others may go up to 5.6 kW
    sched.run_cycle()
    order = list(site.sent[-1])
    assert order[0] == "EV-5" and set(order[1:]) == {f"EV-{i}" for i in range(5)}
    assert all(_kw(site.sent[-1][ev_id]) > accepted[ev_id] for ev_id in order[1:])
    # sent one by one in this order, each EV at the more of its old and new limit until it is
    # reached: never above 30 kW (the increases, first in the planner's order, must wait)
    current = dict(accepted)
    for ev_id in order:
        current[ev_id] = max(current[ev_id], _kw(site.sent[-1][ev_id]))
        assert sum(current.values()) <= 30.0 + 1e-9
        current[ev_id] = _kw(site.sent[-1][ev_id])


def test_unanswered_evs_are_counted_at_what_they_may_draw_not_at_their_max() -> None:
    """Five of six profiles unanswered: counting them at 7.2 kW each (36 kW) would leave the one
    confirmed car 0 W; each may draw at most its old or its new 5 kW, so it keeps its 5 kW."""
    site = FakeSite()
    sched = Scheduler(site, EqualShareAlgorithm(), _settings())
    sched.run_cycle()
    site.unanswered = {f"EV-{i}" for i in range(1, 6)}
    sched.run_cycle()
    sched.run_cycle()
    last = site.sent[-1]
    assert _kw(last["EV-0"]) == pytest.approx(4.992)
    assert sum(_kw(p) for p in last.values()) <= 30.0 + 1e-9


class RejectingSite(FakeSite):
    """Rejects the profiles of the EVs in ``reject``."""

    def __init__(self, reject: set[str], **kw: int) -> None:
        super().__init__(**kw)
        self.reject = reject

    def send_power_to_evs(self, powers: Mapping[EV, ChargingProfile],
                          unit: ChargingRateUnit | None = None) -> dict[str, SendOutcome]:
        super().send_power_to_evs(powers, unit)
        return {str(ev.ev_id): SendOutcome.REJECTED if str(ev.ev_id) in self.reject else SendOutcome.APPLIED
                for ev in powers}


def test_a_rejected_ev_is_counted_at_its_max_until_confirmed() -> None:
    site = RejectingSite({"EV-0"})
    sched = Scheduler(site, EqualShareAlgorithm(), _settings())
    first = sched.run_cycle().groups["default"]
    assert first.outcomes["EV-0"] is SendOutcome.REJECTED
    assert all(_kw(p) == pytest.approx(5.0, abs=0.01) for p in site.sent[-1].values())
    # EV-0 may still draw 7.2 kW: the other five share the remaining 22.8 kW
    second = sched.run_cycle().groups["default"]
    sent = site.sent[-1]
    assert _kw(sent["EV-0"]) == pytest.approx(7.2, abs=0.01)
    others = [_kw(p) for ev_id, p in sent.items() if ev_id != "EV-0"]
    # 4.56 kW each, rounded down to a valid tenth of an amp at 240 V
    assert all(22.8 / 5 - 0.05 <= v <= 22.8 / 5 for v in others)
    assert 7.2 + sum(others) <= 30.0 + 1e-9
    assert "unconfirmed EVs counted at max: EV-0" in (second.schedule.note if second.schedule else "")
    # once the charger confirms, EV-0 is planned like everyone again
    site.reject.clear()
    sched.run_cycle()
    sched.run_cycle()
    assert all(_kw(p) == pytest.approx(5.0, abs=0.01) for p in site.sent[-1].values())


def test_unconfirmed_evs_together_above_the_limit_are_scaled_into_it() -> None:
    site = RejectingSite({f"EV-{i}" for i in range(6)})
    sched = Scheduler(site, EqualShareAlgorithm(), _settings())
    sched.run_cycle()
    sched.run_cycle()  # six unconfirmed EVs x 7.2 kW = 43.2 kW > 30 kW
    total = sum(_kw(p) for p in site.sent[-1].values())
    assert total <= 30.0 + 1e-9
    assert all(_kw(p) == pytest.approx(5.0, abs=0.01) for p in site.sent[-1].values())


class DuplicatingSite(FakeSite):
    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        evs, volts = super().get_evs(group_name)
        return [*evs, attrs.evolve(evs[0], max_power=22.0)], volts


def test_duplicate_session_ids_are_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    site = DuplicatingSite()
    report = Scheduler(site, EqualShareAlgorithm(), _settings()).run_cycle()
    assert report.ok
    assert sorted(site.sent[-1]) == [f"EV-{i}" for i in range(6)]
    assert all(_kw(p) == pytest.approx(5.0, abs=0.01) for p in site.sent[-1].values())
    assert "duplicate session id 'EV-0' from the translation skipped" in caplog.text
