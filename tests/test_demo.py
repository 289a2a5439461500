"""The embedded demo: curtailment of six 7.2 kW EVs on a 30 kW site, in simulated time.

The demo's numbers come from the closed-loop replay, so nothing here depends on the wall clock:
pacing goes through an injected ``sleep`` that only records what it was asked to wait.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from optivgi.demo import run_demo
from optivgi.plugins import load_algorithm


def _run(algorithm: str, speed: float, **kwargs: object) -> tuple[object, list[str], list[float]]:
    lines: list[str] = []
    waits: list[float] = []
    result = run_demo(load_algorithm(algorithm), speed=speed, echo=lines.append, sleep=waits.append,
                      **kwargs)  # type: ignore[arg-type]
    return result, lines, waits


@pytest.mark.parametrize("algorithm", ["lp", "equal-share"])
def test_demo_curtails_fairly_and_never_exceeds_the_limit(algorithm: str) -> None:
    result, lines, _ = _run(algorithm, 120.0)
    sim = result.simulation  # type: ignore[attr-defined]
    # realised site power in every step, and the instantaneous peak
    assert sim.power_kw.sum(axis=0).max() <= 30.0 + 1e-9
    assert result.within_limit and result.peak_kw == pytest.approx(30.0, abs=0.05)  # type: ignore[attr-defined]
    by_count: dict[int, list[float]] = {}
    for _, alloc in result.allocations:  # type: ignore[attr-defined]
        by_count.setdefault(len(alloc), []).extend(alloc.values())
        assert sum(alloc.values()) <= 30.0 + 1e-9
    # Curtailed, the 30 kW are handed out but for less than a car's 1.4 kW minimum; alone, a car gets 7.2 kW.
    for _, alloc in result.allocations:  # type: ignore[attr-defined]
        if len(alloc) >= 5:
            assert 30.0 - 1.4 - 0.05 < sum(alloc.values()) <= 30.0 + 1e-9
    assert all(v == pytest.approx(7.2, abs=1e-6) for v in by_count[1])
    if algorithm == "equal-share":
        # equal shares whatever each car got before (lp favours the cars that got less so far)
        assert by_count[5] and all(v == pytest.approx(6.0, abs=0.05) for v in by_count[5])
        assert by_count[6] and all(v == pytest.approx(5.0, abs=0.05) for v in by_count[6])
    text = "\n".join(lines)
    assert "CURTAILMENT ON — 5 EVs request 36.00 kW, limit 30.00 kW" in text
    assert "CURTAILMENT OFF — 4 EVs request 28.80 kW" in text
    assert text.count(" arrived — max 7.20 kW") == 6 and text.count(" departed — delivered ") == 6
    assert "within the limit" in text
    # 10 minutes each: EV 1 at 7.2 kW for 4 min, 6.0 for 1, then 5.0 for 5 (and EV 6 mirrors it)
    delivered = result.delivered_kwh()  # type: ignore[attr-defined]
    if algorithm == "equal-share":
        assert delivered["EV-01"] == pytest.approx((4 * 7.2 + 6.0 + 5 * 5.0) / 60, abs=1e-3)
        assert delivered["EV-06"] == pytest.approx((5 * 5.0 + 6.0 + 4 * 7.2) / 60, abs=1e-3)
        assert delivered["EV-03"] == pytest.approx((3 * 7.2 + 2 * 6.0 + 5 * 5.0) / 60, abs=1e-3)
    assert sum(delivered.values()) == pytest.approx(5.9, abs=0.05)  # the offline energy bound
    assert all(0.5 < kwh < 1.25 for kwh in delivered.values()), delivered
    # the departure line shows the energy at departure, which is the final figure
    assert f"EV 1 departed — delivered {delivered['EV-01']:.2f} of 48.0 kWh" in text


def test_demo_results_do_not_depend_on_the_speed() -> None:
    slow, slow_lines, slow_waits = _run("go", 600.0)
    fast, fast_lines, fast_waits = _run("go", 10000.0)
    assert slow.delivered_kwh() == fast.delivered_kwh()  # type: ignore[attr-defined]
    assert slow.allocations == fast.allocations  # type: ignore[attr-defined]
    assert slow.simulation.cycles == fast.simulation.cycles  # type: ignore[attr-defined]
    assert slow_lines[1:] == fast_lines[1:]  # everything but the header naming the speed
    # The output is paced over the 15 simulated minutes (09:00 to the last departure, 09:15).
    assert sum(slow_waits) == pytest.approx(15 * 60 / 600.0)
    assert sum(fast_waits) == pytest.approx(15 * 60 / 10000.0)
    assert all(w > 0 for w in slow_waits)


def test_demo_known_departures_is_passed_to_the_planner() -> None:
    result, lines, _ = _run("equal-share", 1e6, known_departures=True)
    assert "departures known" in lines[0]
    for report in result.reports:  # type: ignore[attr-defined]
        for ev in report.groups["default"].evs:
            assert (ev.departure_time - ev.arrival_time).total_seconds() == 600


def test_demo_plot_is_written(tmp_path: Path) -> None:
    png = tmp_path / "demo.png"
    run_demo(load_algorithm("equal-share"), speed=240.0, plot=png, echo=lambda _: None, sleep=lambda _: None)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
