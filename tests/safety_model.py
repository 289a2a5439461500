"""A pure model of OCPP chargers, written apart from the ledger, for the stateful safety test.

Each modelled station holds the profiles it accepted and applies them by the OCPP stacking rules
(TxProfile of the active transaction over TxDefaultProfile, connector 0 defaults on every
connector, highest stackLevel in force, validTo, schedule offsets); a connector with a car draws
``min(car max, limit)``. Stations can be offline, refuse, answer with a CALLERROR, or apply a
profile and lose the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from optivgi.ledger import Outcome, Request


@dataclass
class Held:
    """One profile a modelled charger holds."""

    connector: int
    profile_id: int
    purpose: str
    level: int
    start: datetime
    periods: list[tuple[int, float]]
    valid_to: datetime | None
    tx: str | None

    def value(self, t: datetime) -> float | None:
        if t < self.start or (self.valid_to is not None and t >= self.valid_to):
            return None
        offset = (t - self.start).total_seconds()
        out = self.periods[0][1]
        for start, kw in self.periods:
            if start <= offset:
                out = kw
        return out


@dataclass
class Station:
    """One modelled charging station."""

    name: str
    connectors: int
    max_kw: float = 7.2
    held: list[Held] = field(default_factory=list)
    cars: dict[int, tuple[str, float]] = field(default_factory=dict)  # connector -> (transaction, car max kW)
    online: bool = True
    answer: str = "accept"  # accept | reject | callerror | lost (applied, answer lost) | dropped (not applied)
    refuse_holds: bool = False

    def limit(self, connector: int, t: datetime) -> float:
        car = self.cars.get(connector)
        tx_best: tuple[int, float] | None = None
        default_best: tuple[int, int, float] | None = None
        for p in self.held:
            v = p.value(t)
            if v is None:
                continue
            if p.purpose == "TxProfile" and p.connector == connector and car is not None and p.tx == car[0]:
                if tx_best is None or p.level > tx_best[0]:
                    tx_best = (p.level, v)
            elif p.purpose == "TxDefaultProfile" and p.connector in (0, connector):
                rank = (p.level, int(p.connector == connector))
                if default_best is None or rank > default_best[:2]:
                    default_best = (rank[0], rank[1], v)
        if tx_best is not None:
            return tx_best[1]
        if default_best is not None:
            return default_best[2]
        return self.max_kw

    def draw(self, connector: int, t: datetime) -> float:
        car = self.cars.get(connector)
        return 0.0 if car is None else min(car[1], self.limit(connector, t), self.max_kw)

    def install(self, p: Held) -> None:
        self.held = [h for h in self.held if h.profile_id != p.profile_id
                     and not (h.connector == p.connector and h.purpose == p.purpose and h.level == p.level)]
        self.held.append(p)

    def handle(self, request: Request) -> tuple[Outcome, bool]:
        """What the controller hears, and whether the charger applied the request."""
        profile = request.profile
        if not self.online or profile is None:
            return Outcome.REJECTED, False  # "No connection found": never reached the charger
        is_hold = profile.purpose.value == "TxDefaultProfile" and profile.periods[0][1] == 0.0
        if self.answer in ("reject", "callerror") or (is_hold and self.refuse_holds):
            return Outcome.REJECTED, False
        car = self.cars.get(profile.key[1])
        if profile.purpose.value == "TxProfile" and (car is None or car[0] != profile.transaction_id):
            return Outcome.REJECTED, False  # no such transaction on that connector
        if self.answer == "dropped":
            return Outcome.UNANSWERED, False
        self.install(Held(profile.key[1], profile.profile_id, profile.purpose.value, profile.stack_level,
                          profile.start, list(profile.periods), profile.valid_to, profile.transaction_id))
        return (Outcome.UNANSWERED if self.answer == "lost" else Outcome.ACCEPTED), True

    def end_session(self, connector: int) -> None:
        car = self.cars.pop(connector, None)
        if car is not None:
            self.held = [h for h in self.held if not (h.purpose == "TxProfile" and h.tx == car[0])]

    def boundaries(self) -> list[datetime]:
        out: list[datetime] = []
        for p in self.held:
            out.append(p.start)
            if p.valid_to is not None:
                out.append(p.valid_to)
        return out
