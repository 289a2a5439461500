"""The simulator's clock, which may run faster than real time."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

__all__ = ["SimClock", "iso_ms"]


def iso_ms(when: dt.datetime) -> str:
    """``when`` in UTC as OCPP chargers write it: ``2026-11-24T00:37:28.561Z``."""
    when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class SimClock:
    """Simulated time: starts at ``start`` (default: now) and runs ``speed`` times faster than real time.

    Everything the simulated world does (arrivals, energy, meter timestamps) happens on this clock.
    At speed 1 it is the wall clock.
    """

    def __init__(self, speed: float = 1.0, start: dt.datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._real0 = time.monotonic()
        self._wall0 = dt.datetime.now(dt.UTC)
        self._sim0 = (start or self._wall0).astimezone(dt.UTC)

    @property
    def origin(self) -> dt.datetime:
        """The simulated time at which the clock started (scenario offsets count from here)."""
        return self._sim0

    def elapsed_s(self) -> float:
        """Simulated seconds since the start."""
        return (time.monotonic() - self._real0) * self.speed

    def now(self) -> dt.datetime:
        """The simulated time now."""
        return self._sim0 + dt.timedelta(seconds=self.elapsed_s())

    def wall_at(self, sim_time: dt.datetime) -> dt.datetime:
        """The wall-clock time at which the simulated clock shows ``sim_time``."""
        return self._wall0 + (sim_time - self._sim0) / self.speed

    def at_offset(self, offset_s: float) -> dt.datetime:
        """The simulated time ``offset_s`` simulated seconds after the start."""
        return self._sim0 + dt.timedelta(seconds=offset_s)

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep for ``sim_seconds`` of simulated time."""
        await asyncio.sleep(max(0.0, sim_seconds / self.speed))

    async def sleep_until(self, sim_time: dt.datetime) -> None:
        """Sleep until the simulated clock shows ``sim_time`` (returns at once when it is past)."""
        await self.sleep((sim_time - self.now()).total_seconds())
