"""Exceptions raised by opti-vgi.

Every error the library raises on purpose derives from :class:`OptiVGIError`, so a caller can
catch the whole family at once or act on one branch::

    OptiVGIError
    ├── ConfigurationError          bad option, environment variable or .env entry
    ├── ScenarioError               a scenario or schedule file that cannot be read (also ValueError)
    ├── PluginError                 an algorithm or translation that cannot be found or loaded
    ├── ScheduleError
    │   ├── InfeasibleScheduleError a solver found no schedule (the loop falls back)
    │   └── ScheduleValidationError a schedule broke a hard limit (a bug: never sent)
    └── CSMSError                   talking to the charging station management system failed
        ├── CSMSConnectionError     refused, timed out, TLS failure
        └── CSMSResponseError       the CSMS answered with an error or an unexpected shape

Model constructors raise plain :class:`ValueError` (attrs convention) whose message names the
field, the rule and the value.
"""

from __future__ import annotations

__all__ = [
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
]


class OptiVGIError(Exception):
    """Root of every exception opti-vgi raises on purpose."""


class ConfigurationError(OptiVGIError):
    """A configuration value (CLI option, environment variable, .env entry) is missing or invalid."""


class ScenarioError(OptiVGIError, ValueError):
    """A scenario or schedule document is malformed; the message names the offending field."""


class PluginError(OptiVGIError):
    """An algorithm or translation plugin is unknown or failed to load."""


class ScheduleError(OptiVGIError):
    """Base class for scheduling failures."""


class InfeasibleScheduleError(ScheduleError):
    """The solver could not produce a schedule (infeasible, failed or out of time)."""


class ScheduleValidationError(ScheduleError):
    """A computed schedule violates a hard constraint; it must never reach a charger."""


class CSMSError(OptiVGIError):
    """Communication with the CSMS failed."""


class CSMSConnectionError(CSMSError):
    """The CSMS could not be reached (refused, timed out, TLS failure)."""


class CSMSResponseError(CSMSError):
    """The CSMS answered with an error status or a body of an unexpected shape."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
