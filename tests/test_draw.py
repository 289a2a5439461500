"""Measured draw (optivgi.draw), the compliance watch (optivgi.compliance) and the car models."""

from __future__ import annotations

import logging

import pytest

from optivgi.cars import CarModel, parse_cars
from optivgi.compliance import ComplianceRules, ComplianceWatch, Verdict
from optivgi.draw import DrawRules, DrawState, MeterSample, estimate_draw
from optivgi.errors import ScenarioError


def samples(*rows: tuple[float, float, float | None]) -> list[MeterSample]:
    return [MeterSample(t, p, lim) for t, p, lim in rows]


def test_no_samples_or_no_limit_in_force_plans_with_the_max() -> None:
    assert estimate_draw([], 7.2) .power_kw == 7.2
    est = estimate_draw(samples((0, 3.7, None), (60, 3.7, None)), 7.2)
    assert (est.power_kw, est.state) == (7.2, DrawState.UNKNOWN)


def test_one_sample_below_is_not_enough_two_cap_at_draw_plus_margin() -> None:
    assert estimate_draw(samples((0, 3.7, 7.2)), 7.2).state is DrawState.UNKNOWN
    est = estimate_draw(samples((0, 3.7, 7.2), (60, 3.7, 7.2)), 7.2)
    assert est.state is DrawState.CAPPED
    assert est.power_kw == pytest.approx(3.7 + 0.5)
    assert est.plan_max_kw(7.2) == pytest.approx(4.2)


def test_a_capped_car_stays_capped_under_its_own_cap() -> None:
    # Under its cap of 4.2 kW it still draws 3.7 kW: 0.5 kW below, more than the probe tolerance.
    est = estimate_draw(samples((0, 3.7, 7.2), (60, 3.7, 4.2), (120, 3.7, 4.2)), 7.2)
    assert est.state is DrawState.CAPPED
    assert est.power_kw == pytest.approx(4.2)


def test_a_draw_rising_to_its_cap_gets_its_max_back_at_once() -> None:
    est = estimate_draw(samples((0, 3.7, 4.2), (60, 4.1, 4.2)), 7.2)
    assert (est.power_kw, est.state) == (7.2, DrawState.PROBE)


def test_taper_follows_the_highest_recent_draw_and_old_samples_drop_out() -> None:
    rules = DrawRules(window_s=120)
    rows = samples((0, 6.0, 7.2), (60, 5.0, 7.2), (120, 4.0, 6.5), (180, 3.0, 6.5), (240, 2.0, 6.5))
    est = estimate_draw(rows, 7.2, rules=rules)
    assert est.power_kw == pytest.approx(4.0 + 0.5)  # samples 120..240 count
    assert est.measured_kw == pytest.approx(4.0)


def test_a_full_car_keeps_a_floor_so_it_can_start_again() -> None:
    est = estimate_draw(samples((0, 0.0, 7.2), (60, 0.0, 7.2)), 7.2, min_kw=1.4)
    assert est.state is DrawState.CAPPED
    assert est.power_kw == pytest.approx(1.4)
    assert estimate_draw(samples((0, 0.0, 7.2), (60, 0.0, 7.2)), 7.2).power_kw == pytest.approx(0.5)


def test_an_older_sample_at_its_limit_is_not_capped() -> None:
    est = estimate_draw(samples((0, 7.2, 7.2), (60, 5.0, 7.2)), 7.2)
    assert (est.power_kw, est.state) == (7.2, DrawState.LIMITED)


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="power_kw"):
        MeterSample(0, -1.0, 7.2)
    with pytest.raises(ValueError, match="probe_kw"):
        DrawRules(margin_kw=0.2, probe_kw=0.3)
    with pytest.raises(ValueError, match="max_kw"):
        estimate_draw([], float("nan"))


def test_compliance_flags_after_the_grace_time_logs_and_clears(caplog: pytest.LogCaptureFixture) -> None:
    watch = ComplianceWatch(ComplianceRules(tolerance_kw=0.5, tolerance_frac=0.05, grace_s=60))
    assert watch.observe("CS1/1", 0, 5.7, 5.0) is Verdict.OK  # within 0.5 + 0.25 kW
    assert watch.observe("CS1/1", 10, 7.2, 5.0) is Verdict.OVER
    assert watch.observe("CS1/1", 60, 7.2, 5.0) is Verdict.OVER  # 50 s over: still in grace
    with caplog.at_level(logging.ERROR, logger="optivgi.compliance"):
        assert watch.observe("CS1/1", 70, 7.2, 5.0) is Verdict.FLAGGED
    assert "CS1/1" in caplog.text and "5.00 kW" in caplog.text and "7.20 kW" in caplog.text
    assert watch.non_compliant() == {"CS1/1"}
    assert watch.reserved_kw("CS1/1", 7.2) == pytest.approx(7.2)
    assert watch.reserved_kw("CS1/1", 11.0) == pytest.approx(11.0)
    assert watch.take_resend("CS1/1") and not watch.take_resend("CS1/1")
    assert watch.observe("CS1/1", 130, 7.3, 5.0) is Verdict.OVER  # flagged once only
    assert watch.observe("CS1/1", 190, 5.0, 5.0) is Verdict.CLEARED
    assert watch.reserved_kw("CS1/1", 7.2) == 0.0 and not watch.non_compliant()


def test_compliance_needs_continuous_excess_and_a_limit() -> None:
    watch = ComplianceWatch(ComplianceRules(grace_s=60))
    watch.observe("a", 0, 7.2, 5.0)
    watch.observe("a", 50, 5.0, 5.0)  # back under: the timer restarts
    assert watch.observe("a", 70, 7.2, 5.0) is Verdict.OVER
    assert watch.observe("b", 0, 7.2, None) is Verdict.OK
    assert watch.observe("b", 100, 7.2, None) is Verdict.OK


def test_car_objects_parse_and_bad_ones_name_the_ev() -> None:
    doc = {"evs": [{"id": "A", "car": {"onboard_kw": 3.7, "battery_kwh": 40}},
                   {"id": "B", "car": {"rogue": "always"}},
                   {"id": "C", "car": {"rogue": {"after_s": 600, "until_s": 1800}}},
                   {"id": "D"}]}
    cars = parse_cars(doc)
    assert cars["A"] == CarModel(onboard_kw=3.7, battery_kwh=40.0)
    assert cars["A"].max_kw(7.2) == 3.7 and cars["A"].max_kw(2.0) == 2.0
    assert cars["B"].rogue_at(0) and cars["B"].rogue_at(1e6)
    assert not cars["C"].rogue_at(599) and cars["C"].rogue_at(600) and not cars["C"].rogue_at(1800)
    assert "D" not in cars
    with pytest.raises(ScenarioError, match=r"evs\[0\]\.car.*onboard_kw"):
        parse_cars({"evs": [{"id": "A", "car": {"onboard_kw": -1}}]})
    with pytest.raises(ScenarioError, match=r"evs\[0\]\.car: unknown"):
        parse_cars({"evs": [{"id": "A", "car": {"onbord_kw": 3.7}}]})
    with pytest.raises(ScenarioError, match="rogue"):
        parse_cars({"evs": [{"id": "A", "car": {"rogue": "sometimes"}}]})
