"""The limit-source interface: where a site's limit [kW] comes from, now and ahead.

A :class:`LimitSource` answers two questions: what may the site draw now
(:meth:`~LimitSource.limit_kw`), and over the planning horizon (:meth:`~LimitSource.series`,
which carries limits announced ahead, e.g. a demand-response event). Sources fed from outside
(:class:`ReadingSource`: an HTTP endpoint, an MQTT topic) hold their last reading; a reading
older than ``timeout_s`` is worth nothing, and the source then answers its safe ``floor_kw``
(stale data means assume the worst, never the last good value). When the limit in force drops,
the source calls its trigger (e.g. :meth:`optivgi.loop.Scheduler.trigger`) so the loop re-plans
at once.
"""

from __future__ import annotations

import abc
import logging
import math
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar

import attrs
import numpy as np
import numpy.typing as npt

from optivgi.clock import Clock, SystemClock
from optivgi.models.ev import to_utc

__all__ = ["LimitReading", "LimitSource", "ReadingSource", "Trigger", "parse_payload"]

logger = logging.getLogger(__name__)

#: Called with a reason when the limit in force drops (the scheduler's ``trigger``).
Trigger = Callable[[str], None]

_Float = npt.NDArray[np.float64]


def _kw(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


@attrs.frozen
class LimitReading:
    """One reading of a source.

    Attributes:
        kw: the limit in force from ``at`` [kW].
        at: when it was received (the source's clock, UTC).
        forecast: limits announced ahead, ``(from, kw)`` sorted by time; each holds until the
            next. Points at or before ``at`` are superseded by ``kw``.
    """

    kw: float
    at: datetime
    forecast: tuple[tuple[datetime, float], ...] = ()


def _path(doc: Any, field: str) -> Any:
    value = doc
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"field {field!r} is missing")
        value = value[part]
    return value


def parse_payload(
    doc: Any, *, field: str = "limit_kw", forecast_field: str = "forecast", scale: float = 1.0
) -> tuple[float, tuple[tuple[datetime, float], ...]]:
    """A limit and its forecast from a decoded JSON document.

    ``doc`` is a bare number, or an object whose ``field`` (a dotted path such as
    ``"site.headroom_kw"``) holds the limit and whose optional ``forecast_field`` holds a list of
    ``{"at": ISO 8601 with zone, "kw": number}``. Every value is multiplied by ``scale`` (e.g.
    0.001 for watts).

    Raises:
        ValueError: a missing field, a value that is not a finite number >= 0, a bad time.
    """
    if isinstance(doc, int | float) and not isinstance(doc, bool):
        return _kw(doc * scale, "the limit"), ()
    kw = _kw(_path(doc, field), f"field {field!r}") * scale
    raw = doc.get(forecast_field) if isinstance(doc, dict) else None
    if raw is None:
        return kw, ()
    if not isinstance(raw, list):
        raise ValueError(f"field {forecast_field!r} must be a list of {{'at', 'kw'}} objects")
    points: list[tuple[datetime, float]] = []
    for i, item in enumerate(raw):
        where = f"{forecast_field}[{i}]"
        if not isinstance(item, dict) or set(item) - {"at", "kw"} or "at" not in item or "kw" not in item:
            raise ValueError(f"{where} must be an object with 'at' and 'kw' only")
        try:
            at = datetime.fromisoformat(str(item["at"]).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where}.at must be an ISO 8601 date-time, got {item['at']!r}") from None
        if at.tzinfo is None:
            raise ValueError(f"{where}.at must carry a time zone, got {item['at']!r}")
        points.append((to_utc(at), _kw(item["kw"], f"{where}.kw") * scale))
    return kw, tuple(sorted(points))


class LimitSource(abc.ABC):
    """Where a site limit comes from. Subclasses are registered under ``optivgi.limits``.

    Args:
        clock: time source (default: the wall clock); tests inject one.
        trigger: called with a reason when the limit in force drops.
    """

    name: ClassVar[str] = "unnamed"

    def __init__(self, *, clock: Clock | None = None, trigger: Trigger | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.trigger = trigger
        self._last_kw: float | None = None
        self._drop_lock = threading.Lock()

    # -- what a source provides -----------------------------------------------------------------
    @abc.abstractmethod
    def series(self, start: datetime, resolution_s: int, n_steps: int) -> _Float:
        """The limit [kW] for each step ``[start + k*resolution_s, ...)`` of the horizon."""

    @abc.abstractmethod
    def lowest_kw(self) -> float:
        """The lowest limit this source can ever answer (for fallback shares)."""

    def limit_kw(self, now: datetime | None = None) -> float:
        """The limit in force at ``now`` (default: the clock's now) [kW]."""
        return float(self.series(to_utc(now or self.clock.now()), 1, 1)[0])

    # -- lifecycle (sources that talk to something override these) -------------------------------
    def start(self) -> None:
        """Start reading (connect, subscribe, poll); idempotent."""
        self.poll()

    def stop(self) -> None:  # noqa: B027 - a source with nothing to stop keeps the default
        """Stop reading; idempotent."""

    def __enter__(self) -> LimitSource:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- drops --------------------------------------------------------------------------------------
    def poll(self, now: datetime | None = None) -> float:
        """Look at the limit in force now and call the trigger if it dropped since the last look.

        Returns the limit in force [kW].
        """
        kw = self.limit_kw(now)
        with self._drop_lock:
            old, self._last_kw = self._last_kw, kw
        if old is not None and kw < old and self.trigger is not None:
            reason = f"site limit dropped from {old:g} to {kw:g} kW ({self.name})"
            logger.info("%s", reason)
            try:
                self.trigger(reason)
            except Exception:  # the trigger's failure must not stop the source
                logger.exception("limit source %s: trigger failed", self.name)
        return kw


class ReadingSource(LimitSource):
    """A source fed with readings from outside, valid for ``timeout_s`` each.

    Args:
        floor_kw: the safe limit [kW] answered before the first reading and whenever the last one
            is older than ``timeout_s``.
        timeout_s: how long a reading is valid [s of clock time].
        max_kw: readings above this are clipped to it (None: no cap).
    """

    def __init__(self, *, floor_kw: float, timeout_s: float, max_kw: float | None = None,
                 clock: Clock | None = None, trigger: Trigger | None = None) -> None:
        super().__init__(clock=clock, trigger=trigger)
        self.floor_kw = _kw(floor_kw, "'floor_kw'")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not (
                math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"'timeout_s' must be a finite number > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.max_kw = None if max_kw is None else _kw(max_kw, "'max_kw'")
        self._reading: LimitReading | None = None
        self._lock = threading.Lock()
        self._updated = threading.Condition(self._lock)
        #: Number of readings taken so far.
        self.updates = 0

    def update(self, kw: float, forecast: Sequence[tuple[datetime, float]] = (),
               at: datetime | None = None) -> LimitReading:
        """Record a reading received now (or at ``at``) and call the trigger if the limit dropped."""
        kw = _kw(kw, "the limit")
        points = tuple(sorted((to_utc(t), _kw(v, "a forecast value")) for t, v in forecast))
        reading = LimitReading(kw, to_utc(at or self.clock.now()), points)
        with self._lock:
            self._reading = reading
            self.updates += 1
            self._updated.notify_all()
        self.poll()
        return reading

    def wait_for_update(self, after: int, timeout_s: float) -> bool:
        """Block until more than ``after`` readings were taken, at most ``timeout_s`` real seconds."""
        with self._updated:
            return self._updated.wait_for(lambda: self.updates > after, timeout=timeout_s)

    @property
    def reading(self) -> LimitReading | None:
        """The last reading, fresh or not."""
        with self._lock:
            return self._reading

    def fresh(self, now: datetime | None = None) -> LimitReading | None:
        """The last reading if it is younger than ``timeout_s`` at ``now``, else None."""
        now = to_utc(now or self.clock.now())
        reading = self.reading
        if reading is None or now - reading.at >= timedelta(seconds=self.timeout_s):
            return None
        return reading

    def lowest_kw(self) -> float:
        """The floor: a source fed from outside may fall to it at any time."""
        return self.floor_kw

    def series(self, start: datetime, resolution_s: int, n_steps: int) -> _Float:
        """The reading and its forecast over the horizon, or the floor everywhere when stale."""
        start = to_utc(start)
        reading = self.fresh(start)
        if reading is None:
            return np.full(n_steps, self.floor_kw)
        out = np.full(n_steps, reading.kw)
        offsets = np.arange(n_steps) * float(resolution_s)
        for at, kw in reading.forecast:
            if at <= reading.at:
                continue
            change = (at - start).total_seconds()
            # A step in which the limit changes gets the lower of the two values.
            inside = (offsets < change) & (offsets + resolution_s > change)
            out[inside] = np.minimum(out[inside], kw)
            out[offsets >= change] = kw
        if self.max_kw is not None:
            out = np.minimum(out, self.max_kw)
        return out
