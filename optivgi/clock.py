"""Clocks: the wall clock, and an accelerated one for simulations and demos."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["AcceleratedClock", "Clock", "ManualClock", "SystemClock"]


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


class ManualClock:
    """A clock that only moves when told to: for deterministic replays and tests.

    Its time is whatever :meth:`set` last made it; :meth:`real_seconds` is 0, so a scheduler
    driven by it never waits.
    """

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        """The time last set."""
        return self._now

    def set(self, t: datetime) -> None:
        """Move to ``t``.

        Raises:
            ValueError: ``t`` lies before the current time (a replay never goes back).
        """
        if t < self._now:
            raise ValueError(f"a manual clock never goes back: {t.isoformat()} < {self._now.isoformat()}")
        self._now = t

    def real_seconds(self, seconds: float) -> float:
        """Always 0: a manual clock is never waited for."""
        return 0.0
