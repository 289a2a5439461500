"""Data models: EV sessions, site constraints, schedules and OCPP charging profiles."""

from optivgi.models.ev import EV, ChargingRateUnit
from optivgi.models.profile import (
    ChargingProfile,
    ChargingProfileKind,
    ChargingProfilePurpose,
    ChargingSchedulePeriod,
    round_down_tenth,
)
from optivgi.models.schedule import PowerSchedule
from optivgi.models.site import SiteConstraints

__all__ = [
    "EV",
    "ChargingProfile",
    "ChargingProfileKind",
    "ChargingProfilePurpose",
    "ChargingRateUnit",
    "ChargingSchedulePeriod",
    "PowerSchedule",
    "SiteConstraints",
    "round_down_tenth",
]
