"""``optivgi run``'s operator lines announce each EV when it first appears and when it is gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from optivgi.loop import CycleReport, GroupResult
from optivgi.models.ev import EV
from optivgi.report import CurtailmentReporter

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _ev(station: str) -> EV:
    return EV(ev_id=f"{station}:1", station_id=station, connector_id=1, arrival_time=T0,
              departure_time=T0 + timedelta(hours=3), energy=48.0, min_power=1.4, max_power=7.2, active=True)


def _cycle(reporter: CurtailmentReporter, minute: int, *stations: str) -> None:
    group = GroupResult("default", evs=[_ev(s) for s in stations], site_limit_kw=30.0)
    reporter(CycleReport("timer", T0 + timedelta(minutes=minute), {"default": group}))


def test_arrivals_and_departures_are_announced_once() -> None:
    lines: list[str] = []
    reporter = CurtailmentReporter(lines.append, arrivals=True)
    _cycle(reporter, 0, "ST-1")
    _cycle(reporter, 1, "ST-1", "ST-2")
    _cycle(reporter, 2, "ST-2")
    said = [line for line in lines if "arrived" in line or "left" in line]
    assert said == [
        "[12:00:00] EV ST-1:1 arrived — max 7.20 kW at ST-1/1, needs 48.0 kWh",
        "[12:01:00] EV ST-2:1 arrived — max 7.20 kW at ST-2/1, needs 48.0 kWh",
        "[12:02:00] EV ST-1:1 left",
    ]
    quiet: list[str] = []
    _cycle(CurtailmentReporter(quiet.append), 0, "ST-1")
    assert not any("arrived" in line for line in quiet)
