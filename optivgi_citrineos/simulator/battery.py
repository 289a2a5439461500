"""The simulated car's battery: constant power to 80 % state of charge, then a linear taper."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TAPER_START_SOC", "Battery"]

#: State of charge where the car starts lowering its power (to 0 at 100 %).
TAPER_START_SOC = 0.8


@dataclass
class Battery:
    """A car battery being charged.

    Attributes:
        capacity_kwh: usable capacity.
        soc: state of charge, 0..1.
        target_soc: the car stops drawing at this state of charge, 0..1.
        max_rate_kw: the most the car's on-board charger accepts.
    """

    capacity_kwh: float
    soc: float
    target_soc: float
    max_rate_kw: float

    def __post_init__(self) -> None:
        if self.capacity_kwh <= 0:
            raise ValueError(f"capacity_kwh must be > 0, got {self.capacity_kwh}")
        if not 0 <= self.soc <= 1:
            raise ValueError(f"soc must be between 0 and 1, got {self.soc}")
        if not 0 <= self.target_soc <= 1:
            raise ValueError(f"target_soc must be between 0 and 1, got {self.target_soc}")
        if self.max_rate_kw <= 0:
            raise ValueError(f"max_rate_kw must be > 0, got {self.max_rate_kw}")

    @property
    def full(self) -> bool:
        """Whether the target state of charge is reached (to 0.1 Wh: the taper only approaches 100 % asymptotically)."""
        return (self.target_soc - self.soc) * self.capacity_kwh * 1000 < 0.1

    def acceptance_kw(self) -> float:
        """What the car accepts now: its maximum up to 80 %, then falling linearly to 0 at 100 %."""
        if self.full:
            return 0.0
        if self.soc <= TAPER_START_SOC:
            return self.max_rate_kw
        return max(0.0, self.max_rate_kw * (1.0 - self.soc) / (1.0 - TAPER_START_SOC))

    def charge(self, power_kw: float, seconds: float) -> float:
        """Charge at ``power_kw`` for ``seconds``; returns the Wh stored (stops at the target)."""
        if power_kw <= 0 or seconds <= 0 or self.full:
            return 0.0
        room_wh = max(0.0, (self.target_soc - self.soc) * self.capacity_kwh * 1000)
        energy_wh = min(power_kw * seconds / 3.6, room_wh)
        self.soc = min(self.target_soc, self.soc + energy_wh / (self.capacity_kwh * 1000))
        return energy_wh
