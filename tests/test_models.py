"""Models validate themselves on construction, naming the field, the rule and the value."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import attrs
import numpy as np
import pytest

from optivgi.models import EV, ChargingRateUnit, PowerSchedule, SiteConstraints

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def make_ev(**kw: object) -> EV:
    base: dict[str, object] = dict(ev_id="EV-1", station_id="S1", connector_id=1, arrival_time=T0,
                                   departure_time=T0 + timedelta(hours=2), energy=10.0, min_power=1.4,
                                   max_power=7.2)
    base.update(kw)
    return EV(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("energy", -3.0, r"'energy' must be a finite number >= 0, got -3.0"),
        ("energy", math.nan, r"'energy' must be a finite number >= 0"),
        ("max_power", math.inf, r"'max_power' must be a finite number >= 0"),
        ("min_power", -1.0, r"'min_power' must be a finite number >= 0"),
        ("max_power", 1.0, r"'max_power' must be >= 'min_power' \(1.4\), got 1.0"),
        ("departure_time", T0 - timedelta(minutes=1), r"'departure_time' must be after 'arrival_time'"),
        ("departure_time", T0, r"'departure_time' must be after 'arrival_time'"),
        ("connector_id", -1, r"'connector_id' must be an integer >= 0, got -1"),
        ("connector_id", "1", r"'connector_id' must be an integer >= 0"),
        ("ev_id", "", r"'ev_id' must be a non-empty string"),
        ("station_id", None, r"'station_id' must be a non-empty string"),
        ("voltage", 0, r"'voltage' must be a finite number > 0"),
        ("phases", 4, r"'phases' must be 1, 2 or 3, got 4"),
        ("energy", "10", r"'energy' must be a number"),
        ("unit", "kW", r"kW"),
        ("delivered_kwh", -0.5, r"'delivered_kwh' must be a finite number >= 0, got -0.5"),
        ("delivered_kwh", math.inf, r"'delivered_kwh' must be a finite number >= 0"),
        ("delivered_kwh", "2", r"'delivered_kwh' must be a number"),
    ],
)
def test_ev_rejects_bad_fields_naming_them(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_ev(**{field: value})


def test_ev_naive_times_are_utc_and_amp_units_convert() -> None:
    ev = make_ev(arrival_time=datetime(2026, 1, 5, 9, 0), departure_time=datetime(2026, 1, 5, 10, 0),
                 unit="A", min_power=6, max_power=32, energy=100, voltage=230, phases=3)
    assert ev.arrival_time.tzinfo is not None
    assert ev.unit is ChargingRateUnit.A
    assert ev.max_power_kw == pytest.approx(32 * 230 * 3 / 1000)
    assert ev.min_power_kw == pytest.approx(6 * 230 * 3 / 1000)
    assert ev.energy_kwh == pytest.approx(100 * 230 * 3 / 1000)


def test_delivered_energy_reaches_the_problem() -> None:
    from optivgi.planner import build_problem

    evs = [make_ev(ev_id="a", delivered_kwh=3.5), make_ev(ev_id="b")]
    assert evs[1].delivered_kwh == 0.0
    problem = build_problem(evs, SiteConstraints(20.0), T0, n_steps=10)
    np.testing.assert_array_equal(problem.delivered, [3.5, 0.0])
    np.testing.assert_array_equal(problem.select(np.array([True, False])).delivered, [3.5])
    with pytest.raises(ValueError, match="'delivered_kwh' must be finite and >= 0"):
        attrs.evolve(problem, delivered_kwh=[-1.0, 0.0])
    with pytest.raises(ValueError, match="'delivered_kwh' must have shape"):
        attrs.evolve(problem, delivered_kwh=[1.0])


def test_ev_identity_is_its_id() -> None:
    a, b = make_ev(), make_ev(energy=5.0)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert make_ev(ev_id="EV-2") != a


def test_charging_rate_unit_round_trip() -> None:
    assert ChargingRateUnit.A.from_kw(5.0, 240) == pytest.approx(20.8333333)
    assert ChargingRateUnit.A.to_kw(20.8, 240) == pytest.approx(4.992)
    assert ChargingRateUnit.W.from_kw(5.0, 240) == 5000.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"site_limit_kw": -1.0}, r"'site_limit_kw' must be a finite number >= 0, got -1.0"),
        ({"site_limit_kw": [30.0, math.nan]}, r"'site_limit_kw\[1\]' must be a finite number >= 0"),
        ({"site_limit_kw": []}, r"'site_limit_kw' must not be an empty series"),
        ({"site_limit_kw": 30.0, "price_per_kwh": [0.1, math.inf]}, r"'price_per_kwh\[1\]' must be a finite"),
    ],
)
def test_site_constraints_validate(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SiteConstraints(**kwargs)  # type: ignore[arg-type]


def test_site_series_hold_last_value() -> None:
    site = SiteConstraints([30.0, 20.0], price_per_kwh=[0.1])
    assert site.limit_series(4).tolist() == [30.0, 20.0, 20.0, 20.0]
    assert site.price_series(3).tolist() == [0.1, 0.1, 0.1]  # type: ignore[union-attr]
    assert SiteConstraints(30).limit_series(2).tolist() == [30.0, 30.0]
    assert SiteConstraints(30).price_series(2) is None


def test_power_schedule_energy_and_json_never_round_up() -> None:
    power = np.array([[5.0, 4.9999999996], [2.5, 0.0]])
    sched = PowerSchedule(("a", "b"), power, T0, 60, algorithm="x")
    assert sched.energy_kwh() == pytest.approx({"a": 10.0 / 60, "b": 2.5 / 60})
    assert sched.site_power_kw().tolist() == pytest.approx([7.5, 5.0])
    doc = sched.to_json("scn")
    assert doc["power_kw"]["a"][1] <= power[0, 1]
    assert doc["scenario"] == "scn" and doc["resolution_s"] == 60 and doc["algorithm"] == "x"
    with pytest.raises(ValueError, match="'power_kw' must have shape"):
        PowerSchedule(("a",), power, T0, 60)
