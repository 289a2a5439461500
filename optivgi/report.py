"""What a site operator watches: curtailment on/off and each EV's allocation, cycle by cycle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from optivgi.loop import CycleReport
from optivgi.models.ev import EV

__all__ = ["CurtailmentReporter"]

logger = logging.getLogger(__name__)

#: Tolerance [kW] when comparing the requested power with the limit: solver round-off only.
_TOL_KW = 1e-6


class CurtailmentReporter:
    """A ``Scheduler.on_cycle`` callback that prints operator lines.

    For each group it prints ``CURTAILMENT ON``/``OFF`` when the connected EVs' max powers
    together start or stop exceeding the site limit (with the EVs, requested kW, limit and
    allocated kW), and an allocation line with each EV's kW whenever an allocation changes. The
    allocation of an EV is the limit its profile sets now, in kW (what the charger will allow).

    Args:
        echo: receives each line.
        voltage: voltage [V] for amp limits of EVs that leave theirs open.
        names: display names by EV id (default: the id).
        arrivals: also print ``EV <id> arrived — ...`` when a connected EV first appears in a group,
            and ``EV <id> left`` when it is gone (``optivgi run``, where no scenario announces them).
    """

    def __init__(self, echo: Callable[[str], None], *, voltage: float = 240.0,
                 names: Mapping[str, str] | None = None, arrivals: bool = False) -> None:
        self.echo = echo
        self.voltage = voltage
        self.names = dict(names or {})
        self.arrivals = arrivals
        self._present: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._curtailed: dict[str, bool] = {}
        self._last: dict[str, dict[str, float]] = {}
        #: (planning start, {ev_id: kW}) of every successful cycle, all groups merged.
        self.allocations: list[tuple[datetime, dict[str, float]]] = []

    def say(self, t: datetime, text: str) -> None:
        """Print ``text`` stamped with ``t`` (thread-safe)."""
        with self._lock:
            self.echo(f"[{t.strftime('%H:%M:%S')}] {text}")

    def __call__(self, report: CycleReport) -> None:
        merged: dict[str, float] = {}
        many = len(report.groups) > 1
        for name, group in report.groups.items():
            where = f"{name}: " if many else ""
            if group.error is not None:
                self.say(report.now, f"{where}cycle failed: {group.error}")
                continue
            # Profiles come ordered reductions first and only for connected EVs: pair them by id.
            evs = {str(ev.ev_id): ev for ev in group.evs}
            alloc = {
                ev_id: p.limit_kw_at(0, evs[ev_id].voltage or self.voltage, evs[ev_id].phases)
                for ev_id, p in sorted(group.profiles.items())
            }
            merged.update(alloc)
            connected = [ev for ev in group.evs if ev.active]
            if self.arrivals:
                self._announce(report.now, name, connected)
            requested = sum(ev.max_power_kw for ev in connected)
            limit = group.site_limit_kw
            allocated = sum(alloc.values())
            curtailed = requested > limit + _TOL_KW
            if curtailed != self._curtailed.get(name, False):
                self._curtailed[name] = curtailed
                self.say(report.now, f"{where}CURTAILMENT {'ON' if curtailed else 'OFF'} — {len(connected)} EVs "
                                     f"request {requested:.2f} kW, limit {limit:.2f} kW, allocated {allocated:.2f} kW")
            rounded = {k: round(v, 2) for k, v in alloc.items()}
            if rounded != self._last.get(name):
                self._last[name] = rounded
                shown = "  ".join(f"{self.names.get(k, k)}: {v:.2f} kW" for k, v in alloc.items()) or "no EV connected"
                algorithm = group.schedule.algorithm if group.schedule else "?"
                self.say(report.now, f"{where}allocation ({report.reason}; {algorithm}) {shown}  "
                                     f"| site {allocated:.2f}/{limit:.2f} kW")
        if report.ok:
            self.allocations.append((report.now, merged))

    def _announce(self, now: datetime, group: str, connected: list[EV]) -> None:
        before = self._present.get(group, set())
        ids = {str(ev.ev_id) for ev in connected}
        for ev in sorted(connected, key=lambda e: str(e.ev_id)):
            key = str(ev.ev_id)
            if key not in before:
                self.say(now, f"EV {self.names.get(key, key)} arrived — max {ev.max_power_kw:.2f} kW at "
                              f"{ev.station_id}/{ev.connector_id}, needs {ev.energy_kwh:.1f} kWh")
        for key in sorted(before - ids):
            self.say(now, f"EV {self.names.get(key, key)} left")
        self._present[group] = ids
