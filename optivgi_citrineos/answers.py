"""Matching a REST SetChargingProfile to the charger's answer that CitrineOS publishes on RabbitMQ.

CitrineOS's REST answer carries no id, so the request is recognised by its fingerprint
(:func:`profile_fingerprint`) when CitrineOS publishes it, which gives the ``correlationId`` the
charger's answer then carries. :class:`ProfileAnswerTracker` is fed by the listener.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optivgi_citrineos.listener import AmqpEvent

__all__ = ["PendingAnswer", "ProfileAnswerTracker", "profile_fingerprint"]


def _instant(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).isoformat()
    except ValueError:
        return str(value)


def _periods(schedule: Any) -> tuple[tuple[float, float], ...]:
    periods = schedule.get("chargingSchedulePeriod") if isinstance(schedule, Mapping) else None
    return tuple((float(p["startPeriod"]), float(p["limit"])) for p in periods or ())


def profile_fingerprint(payload: Any) -> tuple[Any, ...] | None:
    """What identifies a SetChargingProfile request across CitrineOS's re-serialisation.

    CitrineOS forwards the REST body as the OCPP payload but writes numbers the JavaScript way
    (``16.0`` becomes ``16``), so numbers are compared as floats and times as instants. Works for
    the 1.6 (``connectorId``/``csChargingProfiles``) and 2.0.1 (``evseId``/``chargingProfile``) shapes.
    """
    if not isinstance(payload, Mapping):
        return None
    try:
        if "csChargingProfiles" in payload:
            prof = payload["csChargingProfiles"]
            sched = prof.get("chargingSchedule") or {}
            return (
                "1.6",
                int(payload["connectorId"]),
                int(prof["chargingProfileId"]),
                int(prof["stackLevel"]),
                str(prof.get("transactionId")),
                _instant(sched.get("startSchedule")),
                _periods(sched),
            )
        if "chargingProfile" in payload:
            prof = payload["chargingProfile"]
            scheds = prof.get("chargingSchedule") or [{}]
            sched = scheds[0] if isinstance(scheds, list) and scheds else {}
            return (
                "2.0.1",
                int(payload["evseId"]),
                int(prof["id"]),
                int(prof["stackLevel"]),
                str(prof.get("transactionId")),
                _instant(sched.get("startSchedule")),
                _periods(sched),
            )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return None


class PendingAnswer:
    """One SetChargingProfile whose charger answer is awaited."""

    def __init__(self, tenant_id: str, station_id: str, fingerprint: tuple[Any, ...]) -> None:
        self.tenant_id = tenant_id
        self.station_id = station_id
        self.fingerprint = fingerprint
        self.correlation_id: str | None = None
        self.status: str | None = None
        self.answer: Any = None
        self._done = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Block until the charger's answer arrived (True) or ``timeout`` seconds passed (False)."""
        return self._done.wait(timeout)

    def _resolve(self, payload: Any) -> None:
        self.answer = payload
        status = payload.get("status") if isinstance(payload, Mapping) else None
        self.status = str(status) if status is not None else None
        self._done.set()


class ProfileAnswerTracker:
    """Matches a REST SetChargingProfile to the charger's answer on RabbitMQ.

    CitrineOS's REST answer carries no id. The caller registers what it is about to send
    (:meth:`expect`) *before* the POST; the first SetChargingProfile request CitrineOS then
    publishes for that tenant and station with the same fingerprint gives the ``correlationId``,
    and the charger's answer with that ``correlationId`` resolves it. Profiles sent by others
    (CitrineOS's own smart charging, an operator) have other fingerprints and are ignored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[PendingAnswer] = []
        self._by_correlation: dict[str, PendingAnswer] = {}

    def expect(self, tenant_id: int | str, station_id: str, payload: Mapping[str, Any]) -> PendingAnswer:
        """Register the request body about to be POSTed; raises ValueError if it has no fingerprint."""
        fp = profile_fingerprint(payload)
        if fp is None:
            raise ValueError("the SetChargingProfile body has no recognisable profile")
        pending = PendingAnswer(str(tenant_id), station_id, fp)
        with self._lock:
            self._waiting.append(pending)
        return pending

    def discard(self, pending: PendingAnswer) -> None:
        """Forget ``pending`` (after its answer or its timeout)."""
        with self._lock:
            if pending in self._waiting:
                self._waiting.remove(pending)
            if pending.correlation_id is not None:
                self._by_correlation.pop(pending.correlation_id, None)

    def feed(self, event: AmqpEvent) -> None:
        """Handler for the listener: consume SetChargingProfile requests and answers."""
        if event.action != "SetChargingProfile":
            return
        with self._lock:
            if event.origin == "csms" and event.state == 1:
                fp = profile_fingerprint(event.payload)
                for pending in self._waiting:
                    if (
                        pending.correlation_id is None
                        and pending.station_id == event.station_id
                        and pending.tenant_id == event.tenant_id
                        and pending.fingerprint == fp
                    ):
                        pending.correlation_id = event.correlation_id
                        self._by_correlation[event.correlation_id] = pending
                        break
                return
            if event.origin == "cs" and event.state == 2:
                found = self._by_correlation.pop(event.correlation_id, None)
                if found is not None:
                    found._resolve(event.payload)

    @property
    def waiting(self) -> int:
        """Number of requests still registered."""
        with self._lock:
            return len(self._waiting)
