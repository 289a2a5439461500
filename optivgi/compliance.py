"""Compliance watch: connectors that draw more than the limit in force at them (pure).

A charger may accept a profile and not apply it (a firmware that stays at its old current, a
limit lost after a websocket reconnect or when a suspended session resumes). :class:`ComplianceWatch`
reads each connector's measured draw against its limit in force and keeps a state per connector.

Rules (defaults in :class:`ComplianceRules`):

- A sample is **over** when ``power > limit + tolerance_kw + tolerance_frac * limit``.
- A connector over in every sample since its first over sample, for at least ``grace_s``, is
  **non-compliant** (the sample that makes it so returns :attr:`Verdict.FLAGGED`, once): the
  caller logs it at ERROR with the station, the limit and the measured draw (see
  :func:`error_line`), asks for its profile to be re-sent once (:meth:`ComplianceWatch.take_resend`),
  and counts it at :meth:`ComplianceWatch.reserved_kw` — the larger of its measured draw and its
  max power, the worst case of a charger that does not follow its profile — so the limits of
  the others are planned within what is left and the site stays under its limit.
- One sample within the tolerance clears it (:attr:`Verdict.CLEARED`); the connector is planned
  normally again from the next cycle.
- A connector with no limit in force (None) is never over.
"""

from __future__ import annotations

import enum
import logging

import attrs

__all__ = ["ComplianceRules", "ComplianceWatch", "Verdict", "error_line"]

logger = logging.getLogger(__name__)


@attrs.frozen
class ComplianceRules:
    """Tolerances of the watch.

    Attributes:
        tolerance_kw: absolute tolerance above the limit [kW] (meter and rounding error).
        tolerance_frac: relative tolerance, as a share of the limit.
        grace_s: how long [s] a connector may be over before it is non-compliant (a charger
            takes a few seconds to apply a new limit).
    """

    tolerance_kw: float = 0.5
    tolerance_frac: float = 0.05
    grace_s: float = 60.0

    def __attrs_post_init__(self) -> None:
        for name in ("tolerance_kw", "tolerance_frac", "grace_s"):
            value = getattr(self, name)
            if not (value >= 0.0 and value < float("inf")):
                raise ValueError(f"'{name}' must be finite and >= 0, got {value!r}")

    def over(self, power_kw: float, limit_kw: float | None) -> bool:
        """True when ``power_kw`` is above ``limit_kw`` beyond the tolerance."""
        if limit_kw is None:
            return False
        return power_kw > limit_kw + self.tolerance_kw + self.tolerance_frac * limit_kw


class Verdict(enum.Enum):
    """What one sample changed for its connector."""

    OK = "ok"
    OVER = "over"  # over its limit, still within the grace time (or already flagged)
    FLAGGED = "flagged"  # non-compliant from this sample on
    CLEARED = "cleared"  # complies again


@attrs.define
class _Connector:
    over_since: float | None = None
    flagged: bool = False
    measured_kw: float = 0.0
    limit_kw: float | None = None
    resend: bool = False


def error_line(connector: str, limit_kw: float | None, measured_kw: float) -> str:
    """The ERROR message for a non-compliant connector."""
    shown = "none" if limit_kw is None else f"{limit_kw:.2f} kW"
    return (f"connector {connector} ignores its charging profile: limit in force {shown}, "
            f"measured draw {measured_kw:.2f} kW; counted at its draw until it complies")


class ComplianceWatch:
    """Per-connector compliance state, fed one sample at a time."""

    def __init__(self, rules: ComplianceRules | None = None) -> None:
        self.rules = rules or ComplianceRules()
        self._state: dict[str, _Connector] = {}

    def observe(self, connector: str, time_s: float, power_kw: float, limit_kw: float | None) -> Verdict:
        """Record a sample of ``connector`` (any string key, e.g. ``station/connector``) and
        return what it changed. A FLAGGED verdict is also logged at ERROR."""
        if not (power_kw >= 0.0 and power_kw < float("inf")):
            raise ValueError(f"'power_kw' must be finite and >= 0, got {power_kw!r}")
        st = self._state.setdefault(connector, _Connector())
        st.measured_kw, st.limit_kw = power_kw, limit_kw
        if not self.rules.over(power_kw, limit_kw):
            st.over_since = None
            if st.flagged:
                st.flagged = st.resend = False
                logger.warning("connector %s complies again: %.2f kW under its limit %.2f kW",
                               connector, power_kw, limit_kw or 0.0)
                return Verdict.CLEARED
            return Verdict.OK
        if st.over_since is None:
            st.over_since = time_s
        if not st.flagged and time_s - st.over_since >= self.rules.grace_s:
            st.flagged = st.resend = True
            logger.error("%s", error_line(connector, limit_kw, power_kw))
            return Verdict.FLAGGED
        return Verdict.OVER

    def forget(self, connector: str) -> None:
        """Drop a connector's state (its session ended)."""
        self._state.pop(connector, None)

    def non_compliant(self) -> set[str]:
        """The connectors flagged now."""
        return {k for k, st in self._state.items() if st.flagged}

    def is_non_compliant(self, connector: str) -> bool:
        """True when ``connector`` is flagged now."""
        st = self._state.get(connector)
        return st is not None and st.flagged

    def reserved_kw(self, connector: str, max_kw: float) -> float:
        """What a connector must be counted at [kW]: for a flagged one the larger of its
        measured draw and ``max_kw`` (the floor the others are planned under); 0 otherwise."""
        st = self._state.get(connector)
        if st is None or not st.flagged:
            return 0.0
        return max(st.measured_kw, max_kw)

    def take_resend(self, connector: str) -> bool:
        """True once per flagging: the caller re-sends the connector's profile (and clears
        stale profiles) after a reconnect or a resumed suspension."""
        st = self._state.get(connector)
        if st is None or not st.resend:
            return False
        st.resend = False
        return True
