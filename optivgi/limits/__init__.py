"""Live site limits: where the limit [kW] comes from, now and ahead.

Built-in sources (entry-point group ``optivgi.limits``): ``constant``, ``schedule`` (time of
day), ``http`` (a JSON endpoint polled; needs the ``http`` extra) and ``mqtt`` (a topic; needs
the ``mqtt`` extra). A package adds one by declaring::

    [project.entry-points."optivgi.limits"]
    my-meter = "my_package.meter:MeterLimit"

where ``MeterLimit`` subclasses :class:`~optivgi.limits.base.LimitSource`. See the "Site
topology and live limits" page of the docs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from optivgi.clock import Clock
from optivgi.errors import ConfigurationError, PluginError
from optivgi.limits.base import LimitReading, LimitSource, ReadingSource, Trigger, parse_payload
from optivgi.limits.constant import ConstantLimit
from optivgi.limits.schedule import ScheduleLimit

__all__ = [
    "LIMITS_GROUP",
    "ConstantLimit",
    "LimitReading",
    "LimitSource",
    "ReadingSource",
    "ScheduleLimit",
    "Trigger",
    "load_limit_source",
    "parse_payload",
]

LIMITS_GROUP = "optivgi.limits"


def load_limit_source(spec: Mapping[str, Any], *, clock: Clock | None = None,
                      trigger: Trigger | None = None) -> LimitSource:
    """Build a limit source from a plain mapping, e.g. a site file's ``limit_source`` block:
    ``{"source": "mqtt", "topic": "site/headroom", "floor_kw": 10, "timeout_s": 30}``.

    ``source`` names an ``optivgi.limits`` plugin; the other keys are its options.

    Raises:
        PluginError: unknown source, or one that fails to load.
        ConfigurationError: an unknown or missing option, or a value the source rejects.
    """
    from optivgi.plugins import _load

    if not isinstance(spec, Mapping) or not isinstance(spec.get("source"), str):
        raise ConfigurationError("limit_source.source: required, the name of a limit source (e.g. 'mqtt')")
    name = spec["source"]
    cls = _load(LIMITS_GROUP, name, "limit source")
    if not (isinstance(cls, type) and issubclass(cls, LimitSource)):
        raise PluginError(f"limit source {name!r} is not an optivgi LimitSource subclass: {cls!r}")
    options = {k: v for k, v in spec.items() if k != "source"}
    params = inspect.signature(cls.__init__).parameters
    allowed = {p for p in params if p not in ("self", "clock", "trigger")}
    for key in options:
        if key not in allowed:
            raise ConfigurationError(f"limit_source.{key}: unknown option of the {name!r} source "
                                     f"(known: {', '.join(sorted(allowed))})")
    for p, param in params.items():
        if p in allowed and param.default is inspect.Parameter.empty and p not in options and \
                param.kind is not inspect.Parameter.VAR_KEYWORD:
            raise ConfigurationError(f"limit_source.{p}: required option of the {name!r} source is missing")
    try:
        source: LimitSource = cls(**options, clock=clock, trigger=trigger)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"limit_source ({name}): {exc}") from None
    return source
