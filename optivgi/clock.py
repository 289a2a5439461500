"""Clocks: the wall clock, and an accelerated one for simulations and demos."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["AcceleratedClock", "Clock", "SystemClock"]


class Clock(Protocol):
    """What the scheduling loop needs from a clock."""

    def now(self) -> datetime:
        """Current time (aware, UTC)."""
        ...

    def real_seconds(self, seconds: float) -> float:
        """How many wall-clock seconds ``seconds`` of this clock's time take."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """Current UTC time."""
        return datetime.now(UTC)

    def real_seconds(self, seconds: float) -> float:
        """Identity: one second is one second."""
        return seconds


class AcceleratedClock:
    """A clock that starts at ``start`` and runs ``speed`` times faster than the wall clock."""

    def __init__(self, start: datetime, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"'speed' must be > 0, got {speed!r}")
        self.start = start
        self.speed = float(speed)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        """Simulated current time."""
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def real_seconds(self, seconds: float) -> float:
        """Wall-clock seconds for ``seconds`` of simulated time."""
        return seconds / self.speed
