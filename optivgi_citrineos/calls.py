"""One SetChargingProfile call to one station, and its answer: at most one call in flight per station.

CitrineOS holds one outstanding call per station (in either direction) until its answer or
``maxCallLengthSeconds`` (30 s): a second call queues behind it and the station's own messages
stall. So :class:`StationCalls` never starts a call to a station while one is pending there, and
waits for the charger's answer (seen on RabbitMQ) up to ``CITRINEOS_ANSWER_TIMEOUT_S`` (default 30 s,
the same as CitrineOS's lock). A call that would have to wait for the station's slot is not made:
it is reported ``BUSY`` and the next cycle tries again.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from optivgi.translation import SendOutcome
from optivgi_citrineos.client import CitrineOSClient, GaveUp
from optivgi_citrineos.listener import CitrineOSListener, ProfileAnswerTracker
from optivgi_citrineos.wire import set_profile_path

__all__ = ["BUSY", "StationCalls"]

logger = logging.getLogger(__name__)

#: Reason of a call not made because one is pending on the station.
BUSY = "not sent: a call to this station is still pending"
#: CitrineOS's answer to a 2.0.1 profile for an EVSE its device model does not know.
_UNKNOWN_EVSE = re.compile(r"^Evse (\d+) not found\.?$")


class StationCalls:
    """Sends SetChargingProfile requests, one at a time per station.

    Args:
        client: the CitrineOS client.
        tracker: matches the chargers' answers seen on RabbitMQ.
        listener: returns the RabbitMQ listener (or None when there is none).
    """

    def __init__(self, client: CitrineOSClient, tracker: ProfileAnswerTracker,
                 listener: Callable[[], CitrineOSListener | None]) -> None:
        self.client = client
        self.tracker = tracker
        self._listener = listener
        self._lock = threading.Lock()
        self._pending: set[str] = set()

    def pending(self, station_id: str) -> bool:
        """Whether a call to the station is in flight."""
        with self._lock:
            return station_id in self._pending

    def call(self, station_id: str, ocpp: str | None, body: Mapping[str, Any], deadline: float) -> tuple[
            SendOutcome, str]:
        """POST one SetChargingProfile and wait for the charger's answer.

        Returns (APPLIED | REJECTED | UNANSWERED | FAILED, reason). FAILED with :data:`BUSY` when
        a call to the station is still pending.
        """
        with self._lock:
            if station_id in self._pending:
                return SendOutcome.FAILED, BUSY
            self._pending.add(station_id)
        try:
            return self._call(station_id, ocpp, body, deadline)
        finally:
            with self._lock:
                self._pending.discard(station_id)

    def _call(self, station_id: str, ocpp: str | None, body: Mapping[str, Any], deadline: float) -> tuple[
            SendOutcome, str]:
        cfg = self.client.config
        url = f"{cfg.api_url}{set_profile_path(ocpp)}"
        params: dict[str, str | int] = {"identifier": station_id, "tenantId": cfg.tenant_id}
        listener = self._listener()
        pending = None
        if listener is not None and listener.is_consuming:
            # Registered before the POST: CitrineOS publishes the request within milliseconds.
            pending = self.tracker.expect(cfg.tenant_id, station_id, body)
        redact = self.client.redact
        try:
            try:
                resp, answer = self.client.post("CitrineOS", url, body, deadline=deadline, params=params)
            except GaveUp as exc:
                return SendOutcome.FAILED, exc.reason
            status = resp.status_code
            if status == 400:
                message = answer.get("message") if isinstance(answer, Mapping) else resp.text[:200]
                code = answer.get("code") if isinstance(answer, Mapping) else None
                return SendOutcome.FAILED, redact(f"CitrineOS refused the request (400 {code or ''}): {message}")
            if status != 200:
                return SendOutcome.FAILED, redact(f"CitrineOS answered HTTP {status}: {resp.text[:200]}")
            if not isinstance(answer, list) or not answer or not isinstance(answer[0], Mapping):
                return SendOutcome.FAILED, redact(f"CitrineOS answered an unexpected body: {resp.text[:200]}")
            result = answer[0]
            if result.get("success") is not True:
                text = str(result.get("payload", "success false"))
                unknown = _UNKNOWN_EVSE.match(text)
                if unknown is not None:
                    return SendOutcome.REJECTED, redact(
                        f"CitrineOS does not know EVSE {unknown.group(1)} of station {station_id}: the station must "
                        "report it in its device model (NotifyReport, e.g. after POST "
                        "/ocpp/2.0.1/reporting/getBaseReport); until then the EVSE stays on its fallback")
                return SendOutcome.REJECTED, redact(f"CitrineOS: {text}")
            if pending is None:
                return SendOutcome.UNANSWERED, "queued by CitrineOS; no RabbitMQ listener connected to see the answer"
            if not pending.wait(cfg.answer_timeout_s):
                seen = (f"request published as {pending.correlation_id}" if pending.correlation_id
                        else "request not seen on RabbitMQ")
                return (SendOutcome.UNANSWERED,
                        f"queued by CitrineOS; no charger answer within {cfg.answer_timeout_s:g} s ({seen})")
            if pending.status == "Accepted":
                return SendOutcome.APPLIED, f"charger accepted ({pending.correlation_id})"
            return SendOutcome.REJECTED, f"charger answered {pending.status or repr(pending.answer)}"
        finally:
            if pending is not None:
                self.tracker.discard(pending)
