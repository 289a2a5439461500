"""The translation layer: how opti-vgi talks to a charging station management system (CSMS).

Subclass :class:`Translation` to connect any CSMS. The scheduling loop uses a translation
like this, once per cycle and station group::

    with MyTranslation() as translation:               # __enter__: connect, start listeners
        translation.attach(trigger)                    # optional: push events to the loop
        evs, voltage = translation.get_evs(group)      # who is charging, what they need
        limits = translation.get_peak_power_demand(group, now, voltage)   # site limit [kW]
        ...                                            # plan, validate, build profiles
        outcomes = translation.send_power_to_evs(profiles, unit)

The method names and meanings are those of the original Opti-VGI translation interface, so a
translation written for it keeps working after changing its imports (see the migration page).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import attrs

from optivgi.models.ev import EV, ChargingRateUnit
from optivgi.models.profile import ChargingProfile

if TYPE_CHECKING:
    from optivgi.config import Settings

__all__ = ["ProfileSpec", "SendOutcome", "Translation", "TriggerFn"]

#: Callback a translation calls to ask the loop for a new cycle; the argument says why.
TriggerFn = Callable[[str], None]


class SendOutcome(enum.StrEnum):
    """What became of one EV's profile."""

    APPLIED = "applied"
    """The charger accepted it."""
    REJECTED = "rejected"
    """The CSMS or the charger refused it; the EV may still draw up to its max."""
    UNANSWERED = "unanswered"
    """No answer in time; treated as not applied."""
    FAILED = "failed"
    """It could not be sent (CSMS unreachable, invalid request)."""


@attrs.frozen
class ProfileSpec:
    """How the loop builds one EV's profile, as the translation wants it on the wire.

    Attributes:
        unit: ``chargingRateUnit`` (None: the loop's ``CHARGING_RATE_UNIT``).
        charging_profile_id: ``chargingProfileId``.
        stack_level: ``stackLevel``.
        max_periods: most schedule periods the charger takes (None: no limit).
    """

    unit: ChargingRateUnit | None = None
    charging_profile_id: int = 1
    stack_level: int = 1
    max_periods: int | None = None


class Translation(AbstractContextManager["Translation"], abc.ABC):
    """Abstract bridge between the scheduler and a CSMS.

    Implement the three abstract methods. Override :meth:`__enter__`/:meth:`__exit__` (calling
    ``super()``) or :meth:`setup`/:meth:`teardown` to open and close connections, and
    :meth:`attach` to start listeners that call the loop's trigger on charging events.
    Translations are found through the ``optivgi.translations`` entry-point group and built
    with :meth:`from_settings` (which calls the class without arguments unless overridden).
    """

    #: True when the translation itself counts what may be in force at the chargers (unconfirmed
    #: profiles, unknown connectors) in the limit it gives the loop and orders its own sends
    #: safely; the loop then plans every EV freely instead of pinning unconfirmed ones at max.
    counts_in_force: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Build the translation from validated settings; the default ignores them."""
        return cls()

    @abc.abstractmethod
    def get_peak_power_demand(
        self, group_name: str, now: datetime, voltage: float | None = None
    ) -> Sequence[float] | float:
        """The site (group) limit [kW] from ``now``: one number, or one per step.

        A series shorter than the horizon is extended with its last value.
        """

    @abc.abstractmethod
    def get_evs(self, group_name: str) -> tuple[list[EV], float | None]:
        """The EVs of ``group_name`` (connected ones ``active=True``, expected ones False),
        and the group's voltage [V] if the CSMS knows it (else None)."""

    @abc.abstractmethod
    def send_power_to_evs(
        self, powers: Mapping[EV, ChargingProfile], unit: ChargingRateUnit | None = None
    ) -> Mapping[str, SendOutcome] | None:
        """Send each EV its profile.

        ``powers`` maps every planned EV to its :class:`ChargingProfile` (which also reads like
        the OCPP 1.6 ``csChargingProfiles`` dict); ``unit`` is the unit the profiles are in.
        The mapping is ordered with reductions first: send in that order, so the site never
        draws more than its limit while the profiles arrive one by one.
        Return the outcome per ``ev_id`` (as a string), or None when the CSMS gives no
        feedback (then every profile counts as applied).
        """

    def profile_spec(self, ev: EV) -> ProfileSpec | None:
        """Unit, profile id, stack level and period count of ``ev``'s profile, so the loop builds
        it once as it goes on the wire; None (default): the loop's defaults."""
        return None

    def get_prices(self, group_name: str, now: datetime) -> Sequence[float] | None:
        """Energy price per step from ``now`` (any currency per kWh), or None (default)."""
        return None

    def attach(self, trigger: TriggerFn) -> None:
        """Start event sources that call ``trigger(reason)`` to request a cycle (default: none)."""

    def setup(self) -> None:
        """Open connections; called by ``__enter__``."""

    def teardown(self) -> None:
        """Close connections and stop listeners; called by ``__exit__``."""

    def __enter__(self) -> Self:
        self.setup()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()

    def describe(self) -> dict[str, Any]:
        """Facts worth logging at start (endpoints with secrets masked); default empty."""
        return {}
