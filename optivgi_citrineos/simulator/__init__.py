"""An OCPP 1.6J charger simulator for demos and end-to-end tests of the CitrineOS integration.

Each simulated charge point speaks OCPP 1.6J through the ``ocpp`` library (JSON schema validation
on) to a CSMS such as CitrineOS 1.8.3 or :class:`~citrineos_testdouble.CitrineOSDouble`. Cars
arrive from a scenario (or on RemoteStartTransaction), charge with a battery model that follows the
charge point's composite schedule, and report MeterValues on a clock that may run faster than real
time.

Example::

    from optivgi_citrineos.simulator import Simulator, SimulatorConfig, default_scenario

    config = SimulatorConfig(ws_url="ws://127.0.0.1:8092", speed=60, scenario=default_scenario())
    with Simulator(config) as sim:
        sim.wait_connected(timeout=30)
        print(sim.snapshot().power_kw)

Command line: ``optivgi citrineos simulate``. See ``docs/citrineos-simulator.md``.
"""

from __future__ import annotations

from optivgi_citrineos.simulator.battery import Battery
from optivgi_citrineos.simulator.clock import SimClock
from optivgi_citrineos.simulator.config import (
    DEFAULT_STATION_IDS,
    DEFAULT_WS_URL,
    EVSpec,
    Scenario,
    SessionSpec,
    SimulatorConfig,
    default_scenario,
    load_scenario,
)
from optivgi_citrineos.simulator.profiles import (
    ChargingProfile,
    CompositeLimit,
    ProfileError,
    ProfileStore,
    SchedulePeriod,
    Transaction,
    allocate_power,
    composite_limit,
    composite_schedule,
)
from optivgi_citrineos.simulator.records import (
    ConnectorSnapshot,
    Frame,
    ProfileEvent,
    SimulatorSnapshot,
    StationSnapshot,
    validate_frame,
)
from optivgi_citrineos.simulator.simulator import Simulator

__all__ = [
    "DEFAULT_STATION_IDS",
    "DEFAULT_WS_URL",
    "Battery",
    "ChargingProfile",
    "CompositeLimit",
    "ConnectorSnapshot",
    "EVSpec",
    "Frame",
    "ProfileError",
    "ProfileEvent",
    "ProfileStore",
    "Scenario",
    "SchedulePeriod",
    "SessionSpec",
    "SimClock",
    "Simulator",
    "SimulatorConfig",
    "SimulatorSnapshot",
    "StationSnapshot",
    "Transaction",
    "allocate_power",
    "composite_limit",
    "composite_schedule",
    "default_scenario",
    "load_scenario",
    "validate_frame",
]
