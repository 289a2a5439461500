"""Property tests: any valid problem gives a valid schedule; invalid inputs name the field."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optivgi.algorithms.base import Algorithm, Problem
from optivgi.algorithms.validate import TOLERANCE_KW, validate_schedule
from optivgi.models import EV, SiteConstraints

ALGORITHMS = sorted({ep.name for ep in entry_points(group="optivgi.algorithms")})
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@functools.cache
def _algorithm(name: str) -> Algorithm:
    (ep,) = [e for e in entry_points(group="optivgi.algorithms") if e.name == name]
    algo: Algorithm = ep.load()()
    return algo


def _kw(hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=0.0, max_value=hi, allow_nan=False, allow_infinity=False)


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    """Random valid problems, including site limits below the sum of the minimum powers."""
    n = draw(st.integers(0, 8))
    t = draw(st.integers(1, 24))
    resolution = draw(st.sampled_from([60, 300, 900]))
    firsts, ends, mins, maxes = [], [], [], []
    for _ in range(n):
        a = draw(st.integers(0, t))
        firsts.append(a)
        ends.append(draw(st.integers(a, t)))
        lo = draw(st.one_of(st.just(0.0), _kw(12.0)))
        mins.append(lo)
        maxes.append(lo + draw(st.one_of(st.just(0.0), _kw(20.0))))
    energy = draw(st.lists(st.one_of(st.just(0.0), _kw(60.0)), min_size=n, max_size=n))
    if draw(st.booleans()):
        limit = [draw(_kw(60.0))] * t
    else:
        limit = draw(st.lists(_kw(60.0), min_size=t, max_size=t))
    prices = draw(st.one_of(st.none(), st.lists(st.floats(-1.0, 1.0), min_size=t, max_size=t)))
    return Problem(
        ids=[f"EV-{i}" for i in range(n)],
        start=START,
        resolution_s=resolution,
        site_limit_kw=limit,
        energy_kwh=energy,
        min_power_kw=mins,
        max_power_kw=maxes,
        first_step=np.asarray(firsts, dtype=np.int64),
        end_step=np.asarray(ends, dtype=np.int64),
        price_per_kwh=prices,
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_every_schedule_passes_the_validator(algorithm: str, problem: Problem) -> None:
    power = np.asarray(_algorithm(algorithm).solve(problem), dtype=np.float64)
    cleaned = validate_schedule(problem, power)
    assert np.allclose(cleaned, power, atol=TOLERANCE_KW, rtol=0)
    if problem.n_evs:
        h = problem.step_hours
        assert np.all(power.sum(axis=0) <= problem.site_limit_kw + 1e-9)
        assert np.all(power.sum(axis=1) * h <= problem.energy_kwh + problem.max_power_kw * h + 1e-6)


# --- invalid inputs: the message names the field --------------------------------------------

_BAD_NUMBERS = st.sampled_from([-1.0, -1e-3, math.nan, math.inf, -math.inf])


def _ev_kwargs() -> dict[str, Any]:
    return {
        "ev_id": "EV-1",
        "station_id": "ST-1",
        "connector_id": 1,
        "arrival_time": START,
        "departure_time": START + timedelta(hours=2),
        "energy": 10.0,
        "min_power": 1.4,
        "max_power": 7.2,
    }


@settings(max_examples=40, deadline=None)
@given(field=st.sampled_from(["energy", "min_power", "max_power", "voltage"]), bad=_BAD_NUMBERS)
def test_ev_rejects_bad_numbers_naming_the_field(field: str, bad: float) -> None:
    kwargs = _ev_kwargs()
    kwargs[field] = bad
    with pytest.raises(ValueError, match=field):
        EV(**kwargs)


@settings(max_examples=20, deadline=None)
@given(gap=st.floats(0.0, 6.9), minimum=st.floats(7.0, 50.0))
def test_ev_rejects_max_below_min(gap: float, minimum: float) -> None:
    kwargs = _ev_kwargs()
    kwargs["min_power"], kwargs["max_power"] = minimum, minimum - 7.0 + gap
    with pytest.raises(ValueError, match="max_power"):
        EV(**kwargs)


@settings(max_examples=20, deadline=None)
@given(back=st.integers(0, 10_000))
def test_ev_rejects_departure_not_after_arrival(back: int) -> None:
    kwargs = _ev_kwargs()
    kwargs["departure_time"] = START - timedelta(seconds=back)
    with pytest.raises(ValueError, match="departure_time"):
        EV(**kwargs)


@settings(max_examples=30, deadline=None)
@given(bad=_BAD_NUMBERS, series=st.booleans(), pos=st.integers(0, 4))
def test_site_rejects_bad_limits_naming_the_field(bad: float, series: bool, pos: int) -> None:
    value: float | list[float] = bad
    if series:
        value = [30.0] * 5
        value[pos] = bad
    with pytest.raises(ValueError, match="site_limit_kw"):
        SiteConstraints(value)


def _problem_kwargs(n: int = 3, t: int = 6) -> dict[str, Any]:
    return {
        "ids": [f"EV-{i}" for i in range(n)],
        "start": START,
        "resolution_s": 60,
        "site_limit_kw": np.full(t, 30.0),
        "energy_kwh": np.full(n, 10.0),
        "min_power_kw": np.full(n, 1.4),
        "max_power_kw": np.full(n, 7.2),
        "first_step": np.zeros(n, dtype=np.int64),
        "end_step": np.full(n, t, dtype=np.int64),
    }


@settings(max_examples=40, deadline=None)
@given(
    field=st.sampled_from(["site_limit_kw", "energy_kwh", "min_power_kw", "max_power_kw"]),
    bad=_BAD_NUMBERS,
    pos=st.integers(0, 2),
)
def test_problem_rejects_bad_values_naming_the_field(field: str, bad: float, pos: int) -> None:
    kwargs = _problem_kwargs()
    arr = np.array(kwargs[field], dtype=np.float64)
    arr[pos] = bad
    kwargs[field] = arr
    if field == "min_power_kw":
        # Keep max >= min so the message is about this field alone.
        kwargs["max_power_kw"] = np.where(np.isfinite(arr) & (arr > 7.2), arr, 7.2)
    with pytest.raises(ValueError, match=field):
        Problem(**kwargs)


@settings(max_examples=30, deadline=None)
@given(
    field=st.sampled_from(["energy_kwh", "min_power_kw", "max_power_kw", "first_step", "end_step"]),
    size=st.integers(0, 6).filter(lambda s: s != 3),
)
def test_problem_rejects_wrong_shapes_naming_the_field(field: str, size: int) -> None:
    kwargs = _problem_kwargs()
    kwargs[field] = np.zeros(size, dtype=kwargs[field].dtype)
    with pytest.raises(ValueError, match=field):
        Problem(**kwargs)


@settings(max_examples=30, deadline=None)
@given(
    case=st.one_of(
        st.tuples(st.just("first_step"), st.integers(-50, -1)),
        st.tuples(st.just("first_step"), st.integers(7, 50)),
        st.tuples(st.just("end_step"), st.integers(-50, -1)),
        st.tuples(st.just("end_step"), st.integers(7, 50)),
    )
)
def test_problem_rejects_windows_outside_the_horizon(case: tuple[str, int]) -> None:
    field, bad = case
    kwargs = _problem_kwargs()
    kwargs[field] = np.array([0, bad, 0], dtype=np.int64)
    with pytest.raises(ValueError, match=field):
        Problem(**kwargs)


@settings(max_examples=20, deadline=None)
@given(resolution=st.integers(-3600, 0))
def test_problem_rejects_non_positive_resolution(resolution: int) -> None:
    kwargs = _problem_kwargs()
    kwargs["resolution_s"] = resolution
    with pytest.raises(ValueError, match="resolution_s"):
        Problem(**kwargs)


def test_problem_rejects_max_below_min() -> None:
    kwargs = _problem_kwargs()
    kwargs["max_power_kw"] = np.array([7.2, 1.0, 7.2])
    with pytest.raises(ValueError, match="max_power_kw"):
        Problem(**kwargs)
