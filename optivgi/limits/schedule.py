"""A daily time-of-day schedule of site limits (e.g. a lower limit at the evening peak)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from optivgi.clock import Clock
from optivgi.limits.base import LimitSource, Trigger, _Float, _kw
from optivgi.models.ev import to_utc

__all__ = ["ScheduleLimit"]

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _time_of_day(value: object, where: str) -> time:
    match = _HHMM.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{where} must be a time of day 'HH:MM', got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


class ScheduleLimit(LimitSource):
    """A limit that follows the same steps every day.

    Args:
        steps: ``[{"at": "HH:MM", "kw": number}, ...]`` (or ``("HH:MM", kw)`` pairs); each value
            holds from its time until the next one, the last one wraps over midnight to the first.
        timezone: IANA zone the times are in (default UTC).
    """

    name = "schedule"

    def __init__(self, steps: Sequence[Mapping[str, object] | Sequence[object]], *, timezone: str = "UTC",
                 clock: Clock | None = None, trigger: Trigger | None = None) -> None:
        super().__init__(clock=clock, trigger=trigger)
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'timezone' must be an IANA time zone, got {timezone!r}") from None
        if isinstance(steps, str | bytes) or not steps:
            raise ValueError("'steps' must be a non-empty list of {'at': 'HH:MM', 'kw': number}")
        parsed: list[tuple[int, float]] = []
        for i, step in enumerate(steps):
            if isinstance(step, Mapping):
                if set(step) != {"at", "kw"}:
                    raise ValueError(f"steps[{i}] must have exactly the keys 'at' and 'kw', got {sorted(step)}")
                at, kw = step["at"], step["kw"]
            elif len(step) == 2:
                at, kw = step[0], step[1]
            else:
                raise ValueError(f"steps[{i}] must be {{'at': 'HH:MM', 'kw': number}}")
            t = _time_of_day(at, f"steps[{i}].at")
            parsed.append((t.hour * 60 + t.minute, _kw(kw, f"steps[{i}].kw")))
        minutes = [m for m, _ in parsed]
        if len(set(minutes)) != len(minutes):
            raise ValueError("'steps' must not give the same time twice")
        self.steps = tuple(sorted(parsed))

    def _at(self, moment: datetime) -> float:
        local = moment.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        value = self.steps[-1][1]  # before the first step of the day: yesterday's last one
        for m, kw in self.steps:
            if m <= minute:
                value = kw
        return value

    def series(self, start: datetime, resolution_s: int, n_steps: int) -> _Float:
        """The least value in force during each step (a drop inside a step counts for all of it)."""
        start = to_utc(start)
        out = np.empty(n_steps)
        for k in range(n_steps):
            t0 = start + timedelta(seconds=k * resolution_s)
            t1 = t0 + timedelta(seconds=resolution_s)
            value = self._at(t0)
            # Values change on whole minutes only: look at every minute boundary inside the step.
            t = t0.replace(second=0, microsecond=0) + timedelta(minutes=1)
            while t < t1:
                value = min(value, self._at(t))
                t += timedelta(minutes=1)
            out[k] = value
        return out

    def lowest_kw(self) -> float:
        """The least value of the day."""
        return min(kw for _, kw in self.steps)
