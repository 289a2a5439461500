"""opti-vgi: smart charging that keeps a site under its power limit.

The names below are the public API; everything else is reached through its module
(``optivgi.algorithms.lp``, ``optivgi.models.profile``, ...). They are imported on first use, so
``import optivgi`` stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optivgi.algorithms.base import Algorithm, Problem
    from optivgi.config import Settings
    from optivgi.errors import (
        ConfigurationError,
        CSMSConnectionError,
        CSMSError,
        CSMSResponseError,
        InfeasibleScheduleError,
        OptiVGIError,
        PluginError,
        ScenarioError,
        ScheduleError,
        ScheduleValidationError,
    )
    from optivgi.loop import Scheduler
    from optivgi.models import EV, ChargingProfile, ChargingRateUnit, PowerSchedule, SiteConstraints
    from optivgi.planner import build_problem, plan
    from optivgi.plugins import load_algorithm, load_translation_class
    from optivgi.scenario import Scenario, load_scenario, parse_scenario
    from optivgi.translation import SendOutcome, Translation

try:
    __version__: str = version("opti-vgi")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

_WHERE = {
    "Algorithm": "optivgi.algorithms.base",
    "Problem": "optivgi.algorithms.base",
    "Settings": "optivgi.config",
    "Scheduler": "optivgi.loop",
    "EV": "optivgi.models",
    "ChargingProfile": "optivgi.models",
    "ChargingRateUnit": "optivgi.models",
    "PowerSchedule": "optivgi.models",
    "SiteConstraints": "optivgi.models",
    "build_problem": "optivgi.planner",
    "plan": "optivgi.planner",
    "load_algorithm": "optivgi.plugins",
    "load_translation_class": "optivgi.plugins",
    "Scenario": "optivgi.scenario",
    "load_scenario": "optivgi.scenario",
    "parse_scenario": "optivgi.scenario",
    "SendOutcome": "optivgi.translation",
    "Translation": "optivgi.translation",
    **dict.fromkeys(
        (
            "CSMSConnectionError",
            "CSMSError",
            "CSMSResponseError",
            "ConfigurationError",
            "InfeasibleScheduleError",
            "OptiVGIError",
            "PluginError",
            "ScenarioError",
            "ScheduleError",
            "ScheduleValidationError",
        ),
        "optivgi.errors",
    ),
}

__all__ = [
    "EV",
    "Algorithm",
    "CSMSConnectionError",
    "CSMSError",
    "CSMSResponseError",
    "ChargingProfile",
    "ChargingRateUnit",
    "ConfigurationError",
    "InfeasibleScheduleError",
    "OptiVGIError",
    "PluginError",
    "PowerSchedule",
    "Problem",
    "Scenario",
    "ScenarioError",
    "ScheduleError",
    "ScheduleValidationError",
    "Scheduler",
    "SendOutcome",
    "Settings",
    "SiteConstraints",
    "Translation",
    "__version__",
    "build_problem",
    "load_algorithm",
    "load_scenario",
    "load_translation_class",
    "parse_scenario",
    "plan",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'optivgi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
