"""Planning with measured draw: a translation wrapper that feeds :mod:`optivgi.draw` and
:mod:`optivgi.compliance` and hands the planner what the cars can really take.

:class:`MeasuredDrawTranslation` wraps any translation and a meter source (a callable giving,
per session id, the measured draw [kW] now and the limit in force [kW] now: the last limit the
charger accepted, as the ledger records it). In every cycle, when the loop asks for the
sessions, it reads the meter once per session and then:

- a session flagged by the compliance watch is left out of the plan (its charger keeps its
  last profile, which is re-sent once) and the site limit is lowered by
  :meth:`~optivgi.compliance.ComplianceWatch.reserved_kw` (the larger of its measured draw and
  its max), so the others are planned within what is left and the measured site power stays
  under the limit;
- every other session is planned with ``max_power = min(max, estimate)``
  (:func:`~optivgi.draw.estimate_draw`); the loop sends the lowered limits first and plans an
  EV whose profile is not confirmed at its max, so the others' gain only comes out of limits
  lowered and accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from optivgi.compliance import ComplianceRules, ComplianceWatch, Verdict
from optivgi.draw import DrawEstimate, DrawRules, MeterSample, estimate_draw
from optivgi.models.ev import EV, ChargingRateUnit
from optivgi.models.profile import ChargingProfile
from optivgi.translation import SendOutcome, Translation, TriggerFn

__all__ = ["MeasuredDrawTranslation", "MeterFn"]

logger = logging.getLogger(__name__)

#: ``() -> (measured draw [kW] by session id, limit in force [kW] or None by session id)``.
MeterFn = Callable[[], tuple[Mapping[str, float], Mapping[str, float | None]]]


class MeasuredDrawTranslation(Translation):
    """``inner`` with each session's max power lowered to what its car takes, and chargers
    that ignore their profile counted at their draw (see the module docs).

    Args:
        inner: the translation to wrap (entered and left with this one).
        meter: the meter source.
        clock_s: the time [s] of a reading (any fixed origin; e.g. the simulation clock).
        draw_rules: tolerances of the estimate.
        compliance_rules: tolerances of the compliance watch.
        on_verdict: called as ``on_verdict(time_s, session_id, verdict)`` when a session is
            flagged or clears.
    """

    def __init__(self, inner: Translation, meter: MeterFn, clock_s: Callable[[], float], *,
                 draw_rules: DrawRules | None = None, compliance_rules: ComplianceRules | None = None,
                 on_verdict: Callable[[float, str, Verdict], None] | None = None) -> None:
        self.inner = inner
        self.meter = meter
        self.clock_s = clock_s
        self.draw_rules = draw_rules or DrawRules()
        self.watch = ComplianceWatch(compliance_rules)
        self.on_verdict = on_verdict
        self._samples: dict[str, list[MeterSample]] = {}
        self._reserved: dict[str, float] = {}
        self._hidden: dict[str, dict[str, EV]] = {}
        self._last_profile: dict[str, tuple[EV, ChargingProfile]] = {}
        #: The latest estimate per session (for reports and tests).
        self.estimates: dict[str, DrawEstimate] = {}

    def _observe(self, now_s: float) -> None:
        power, limits = self.meter()
        keep = self.draw_rules.window_s
        for ev_id, kw in power.items():
            limit = limits.get(ev_id)
            history = self._samples.setdefault(ev_id, [])
            history.append(MeterSample(now_s, max(float(kw), 0.0), limit))
            while history and now_s - history[0].time_s > keep:
                history.pop(0)
            verdict = self.watch.observe(ev_id, now_s, max(float(kw), 0.0), limit)
            if verdict in (Verdict.FLAGGED, Verdict.CLEARED) and self.on_verdict is not None:
                self.on_verdict(now_s, ev_id, verdict)
        for gone in set(self._samples) - set(power):
            self._samples.pop(gone, None)
            self.watch.forget(gone)
            self.estimates.pop(gone, None)

    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        """The inner sessions, planned with their estimate; flagged ones left out (reserved)."""
        evs, voltage = self.inner.get_evs(group_name)
        self._observe(self.clock_s())
        planned: list[EV] = []
        reserved = 0.0
        hidden: dict[str, EV] = {}
        for ev in evs:
            key = str(ev.ev_id)
            if self.watch.is_non_compliant(key):
                reserved += self.watch.reserved_kw(key, ev.max_power_kw)
                hidden[key] = ev
                continue
            est = estimate_draw(self._samples.get(key, []), ev.max_power_kw, min_kw=ev.min_power_kw,
                                rules=self.draw_rules)
            self.estimates[key] = est
            cap = est.plan_max_kw(ev.max_power_kw)
            planned.append(ev if cap >= ev.max_power_kw else
                           attrs.evolve(ev, max_power=cap, min_power=min(ev.min_power_kw, cap)))
        self._reserved[group_name] = reserved
        self._hidden[group_name] = hidden
        return planned, voltage

    def get_peak_power_demand(self, group_name: str, now: datetime,
                              voltage: float | None = None) -> Sequence[float] | float:
        """The inner limits less what flagged chargers are counted at (never below 0)."""
        limits = self.inner.get_peak_power_demand(group_name, now, voltage)
        reserved = self._reserved.get(group_name, 0.0)
        if not reserved:
            return limits
        if isinstance(limits, int | float):
            return max(float(limits) - reserved, 0.0)
        return [max(float(x) - reserved, 0.0) for x in limits]

    def get_prices(self, group_name: str, now: datetime) -> Sequence[float] | None:
        """The inner prices."""
        return self.inner.get_prices(group_name, now)

    def send_power_to_evs(self, powers: Mapping[EV, ChargingProfile],
                          unit: ChargingRateUnit | None = None) -> Mapping[str, SendOutcome] | None:
        """Send through the inner translation, with the last profile of each newly flagged
        session re-sent once."""
        batch = dict(powers)
        for hidden in self._hidden.values():
            for key in hidden:
                last = self._last_profile.get(key)
                if last is not None and self.watch.take_resend(key):
                    logger.warning("re-sending the last profile of non-compliant session %s", key)
                    batch[last[0]] = last[1]
        out = self.inner.send_power_to_evs(batch, unit)
        for ev, profile in powers.items():
            self._last_profile[str(ev.ev_id)] = (ev, profile)
        return out

    def attach(self, trigger: TriggerFn) -> None:
        """Attach the inner translation's events."""
        self.inner.attach(trigger)

    def setup(self) -> None:
        """Enter the inner translation."""
        self.inner.__enter__()

    def teardown(self) -> None:
        """Leave the inner translation."""
        self.inner.__exit__(None, None, None)

    def describe(self) -> dict[str, Any]:
        """The inner description, marked as planned with measured draw."""
        return {**self.inner.describe(), "measured_draw": True}
