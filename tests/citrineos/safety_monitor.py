"""What each test charger accepted, and the limit in force at every charger from it (OCPP 1.6 stacking).

The charge point side knows what it accepted: :class:`AcceptedLog` wraps a charger's answer policy
and records every SetChargingProfile it answers Accepted, with the (injected) clock's time. The
site total is then evaluated at every instant a limit can change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from citrineos_testdouble import ProfileAnswer
from citrineos_testdouble.chargepoint import default_profile_answer

VOLTS = 240.0
MAX_A = 32.0


class ManualClock:
    """A clock the test moves (for the translation and the scheduling loop)."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def real_seconds(self, seconds: float) -> float:
        return seconds

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class AcceptedLog:
    """Everything the test chargers accepted, and the stations' connectors and sessions."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        # (station) -> list of (accepted at, connectorId, csChargingProfiles)
        self.accepted: dict[str, list[tuple[datetime, int, dict[str, Any]]]] = {}
        self.connectors: dict[str, int] = {}
        # (station, connector) -> (transaction id, start, end or None)
        self.sessions: dict[tuple[str, int], list[tuple[str, datetime, datetime | None]]] = {}
        self.instants: list[datetime] = []

    def policy(self, station: str, rule: Callable[[dict[str, Any]], ProfileAnswer | None] | None = None) -> Callable[
            [dict[str, Any]], ProfileAnswer]:
        """A charger answer policy for ``station``: ``rule`` (None = the default), Accepted ones logged."""

        def answer(payload: dict[str, Any]) -> ProfileAnswer:
            chosen = (rule(payload) if rule is not None else None) or default_profile_answer(payload)
            if chosen.kind == "Accepted":
                now = self.clock.now()
                self.accepted.setdefault(station, []).append((now, payload["connectorId"],
                                                              payload["csChargingProfiles"]))
                self.instants.append(now)
            return chosen

        return answer

    def add_station(self, station: str, connectors: int) -> None:
        self.connectors[station] = connectors

    def session(self, station: str, connector: int, tx: int | str, start: datetime) -> None:
        self.sessions.setdefault((station, connector), []).append((str(tx), start, None))

    def end_session(self, station: str, connector: int, end: datetime) -> None:
        tx, start, _ = self.sessions[(station, connector)][-1]
        self.sessions[(station, connector)][-1] = (tx, start, end)

    def _tx_at(self, station: str, connector: int, t: datetime) -> str | None:
        for tx, start, end in self.sessions.get((station, connector), []):
            if start <= t and (end is None or t < end):
                return tx
        return None

    def limit_a(self, station: str, connector: int, t: datetime) -> float:
        """The limit [A] in force on the connector at ``t``: by chargingProfileId the last accepted
        before ``t``; a valid TxProfile of the running transaction over TxDefaultProfiles; the
        highest stack level within a purpose; the charger maximum when none applies."""
        by_id: dict[int, tuple[int, dict[str, Any]]] = {}
        for at, conn, p in self.accepted.get(station, []):
            if at <= t and conn in (0, connector):
                by_id[p["chargingProfileId"]] = (conn, p)
        tx = self._tx_at(station, connector, t)

        def in_force(p: dict[str, Any]) -> float | None:
            if "validTo" in p and _time(p["validTo"]) <= t:
                return None
            schedule = p["chargingSchedule"]
            offset = (t - _time(schedule["startSchedule"])).total_seconds()
            if offset < 0:
                return None
            limit = None
            for period in schedule["chargingSchedulePeriod"]:
                if period["startPeriod"] <= offset:
                    limit = float(period["limit"])
            return limit

        tx_profiles = [(p["stackLevel"], v) for conn, p in by_id.values() if p["chargingProfilePurpose"] == "TxProfile"
                       and conn == connector and tx is not None and str(p.get("transactionId", tx)) == tx
                       and (v := in_force(p)) is not None]
        if tx_profiles:
            return min(max(tx_profiles)[1], MAX_A)
        defaults = [(p["stackLevel"], conn == connector, v) for conn, p in by_id.values()
                    if p["chargingProfilePurpose"] == "TxDefaultProfile" and (v := in_force(p)) is not None]
        if defaults:
            return min(max(defaults)[2], MAX_A)
        return MAX_A

    def site_kw(self, t: datetime) -> float:
        return sum(self.limit_a(s, c, t) for s, n in self.connectors.items() for c in range(1, n + 1)) * VOLTS / 1000

    def boundaries(self, start: datetime, end: datetime) -> list[datetime]:
        """Every instant in [start, end] at which a limit can change."""
        points = {start, end, *self.instants}
        for items in self.accepted.values():
            for _, _, p in items:
                if "validTo" in p:
                    points.add(_time(p["validTo"]))
                base = _time(p["chargingSchedule"]["startSchedule"])
                points.update(base + timedelta(seconds=q["startPeriod"]) for q in p["chargingSchedule"][
                    "chargingSchedulePeriod"])
        for spans in self.sessions.values():
            for _, a, b in spans:
                points.update(x for x in (a, b) if x is not None)
        return sorted(x for x in points if start <= x <= end)

    def worst(self, start: datetime, end: datetime) -> tuple[datetime, float]:
        """The instant with the highest site total in [start, end], and that total [kW]."""
        return max(((t, self.site_kw(t)) for t in self.boundaries(start, end)), key=lambda x: x[1])

    def longest_zero_s(self, station: str, connector: int, start: datetime, end: datetime) -> float:
        """The longest time [s] the car on the connector was held at 0 A within [start, end]."""
        longest, since = 0.0, None
        for t in self.boundaries(start, end):
            zero = self._tx_at(station, connector, t) is not None and self.limit_a(station, connector, t) == 0.0
            if zero and since is None:
                since = t
            elif not zero and since is not None:
                longest, since = max(longest, (t - since).total_seconds()), None
        if since is not None:
            longest = max(longest, (end - since).total_seconds())
        return longest
