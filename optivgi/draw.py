"""What a car can actually take now, estimated from its measured draw (pure, service-free).

A station's limit says what a car *may* draw; many draw less: an on-board charger below the
station's rating (3.7 kW single-phase, 11 kW three-phase on a 22 kW station), a battery in its
taper above about 80 % state of charge, a car that is full. Power allowed to such a car is lost
to every other car for the whole cycle. :func:`estimate_draw` reads the recent meter samples of
one session, each with the limit in force when it was taken, and says what to plan with.

Rules (the defaults are in :class:`DrawRules`):

1. Only samples taken under a limit in force (accepted by the charger) and no older than
   ``window_s`` count; fewer than ``min_samples`` of them: **unknown**, plan with the max.
2. **Capped**: every counted sample draws less than its limit in force minus ``probe_kw``
   (persistently below it, by more than that tolerance). Plan with ``max(highest draw in the window +
   margin_kw, floor)``, where the floor is the session's minimum power and at least
   ``margin_kw`` (so a car that stopped can start again and be seen to, never held at 0).
3. **Probe up**: the latest sample draws within ``probe_kw`` of its limit in force (a taper
   ended, a phase switch, a car that paused resumed): the car may want more; plan with the max
   again, so it gets its room back in the next cycle. ``probe_kw < margin_kw`` keeps a capped
   car (drawing ``margin_kw`` below its cap) from being released by its own cap.
4. Otherwise (an older sample near its limit, the latest not): **limited**, plan with the max.

How the planner and loop use it (the safety argument): the estimate only lowers the ``max``
the car is planned with, ``min(max, estimate)``; the loop sends reductions before increases,
and an EV whose profile is not confirmed is planned at its max until it is. So what the other
cars gain comes out of limits that were lowered *and accepted* (the limits in force), never
out of a guess about the car: if the car draws more than its estimate, its own profile holds
it at the cap until the next cycle releases it (rule 3), and a charger that ignores its
profile is the compliance watch's business (:mod:`optivgi.compliance`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

__all__ = ["DrawEstimate", "DrawRules", "DrawState", "MeterSample", "estimate_draw"]


def _finite_nonneg(name: str, value: float) -> None:
    if not (value >= 0.0 and value < float("inf")):
        raise ValueError(f"'{name}' must be finite and >= 0, got {value!r}")


@attrs.frozen
class MeterSample:
    """One meter reading of a session.

    Attributes:
        time_s: when it was taken [s, any fixed origin].
        power_kw: measured active import power [kW].
        limit_kw: the limit in force at the connector then [kW] (the last profile the charger
            accepted), or None when none was known to be in force.
        soc: state of charge [0..1] when the meter reports it (informative only).
    """

    time_s: float
    power_kw: float
    limit_kw: float | None
    soc: float | None = None

    def __attrs_post_init__(self) -> None:
        _finite_nonneg("power_kw", self.power_kw)
        if self.limit_kw is not None:
            _finite_nonneg("limit_kw", self.limit_kw)


@attrs.frozen
class DrawRules:
    """Tolerances of :func:`estimate_draw`.

    Attributes:
        window_s: samples older than this [s] before the latest are ignored.
        min_samples: samples needed in the window before a car is capped.
        margin_kw: head-room above the measured draw when capped [kW].
        probe_kw: a draw within this of its limit counts as held by the limit [kW], a draw
            further below as the car's own; must be below ``margin_kw``.
    """

    window_s: float = 300.0
    min_samples: int = 2
    margin_kw: float = 0.5
    probe_kw: float = 0.2

    def __attrs_post_init__(self) -> None:
        for name in ("window_s", "margin_kw", "probe_kw"):
            _finite_nonneg(name, getattr(self, name))
        if self.min_samples < 1:
            raise ValueError(f"'min_samples' must be >= 1, got {self.min_samples!r}")
        if not self.probe_kw < self.margin_kw:
            raise ValueError(f"'probe_kw' ({self.probe_kw}) must be below 'margin_kw' ({self.margin_kw})")


class DrawState(enum.Enum):
    """Which rule decided a :class:`DrawEstimate`."""

    UNKNOWN = "unknown"
    CAPPED = "capped"
    PROBE = "probe"
    LIMITED = "limited"


@attrs.frozen
class DrawEstimate:
    """What to plan a session with.

    Attributes:
        power_kw: the most the car is expected to take now [kW] (``max_kw`` unless capped).
        state: the rule that decided it.
        measured_kw: the highest draw in the window [kW] (0 when no sample counted).
    """

    power_kw: float
    state: DrawState
    measured_kw: float = 0.0

    def plan_max_kw(self, max_kw: float) -> float:
        """The max power to plan the car with: ``min(max_kw, estimate)``."""
        return min(max_kw, self.power_kw)


def estimate_draw(samples: Sequence[MeterSample], max_kw: float, *, min_kw: float = 0.0,
                  rules: DrawRules | None = None) -> DrawEstimate:
    """Estimate what a session's car can take now from its recent meter samples.

    Args:
        samples: the session's samples, oldest first.
        max_kw: the session's max power (station and car as configured) [kW].
        min_kw: the session's minimum power when charging [kW] (the capped floor).
        rules: tolerances (default :class:`DrawRules`).

    Returns:
        The estimate; ``power_kw <= max_kw`` always.

    Raises:
        ValueError: ``max_kw`` or ``min_kw`` negative or not finite.
    """
    _finite_nonneg("max_kw", max_kw)
    _finite_nonneg("min_kw", min_kw)
    r = rules or DrawRules()
    if not samples:
        return DrawEstimate(max_kw, DrawState.UNKNOWN)
    latest = samples[-1].time_s
    counted = [s for s in samples if s.limit_kw is not None and latest - s.time_s <= r.window_s]
    if not counted:
        return DrawEstimate(max_kw, DrawState.UNKNOWN)
    measured = max(s.power_kw for s in counted)
    last = counted[-1]
    if last.power_kw >= (last.limit_kw or 0.0) - r.probe_kw:
        return DrawEstimate(max_kw, DrawState.PROBE, measured)
    if len(counted) < r.min_samples:
        return DrawEstimate(max_kw, DrawState.UNKNOWN, measured)
    if all(s.power_kw < (s.limit_kw or 0.0) - r.probe_kw for s in counted):
        cap = max(measured + r.margin_kw, min_kw, r.margin_kw)
        return DrawEstimate(min(cap, max_kw), DrawState.CAPPED, measured)
    return DrawEstimate(max_kw, DrawState.LIMITED, measured)
