"""The simulator: many OCPP 1.6J charge points, their cars, and a scenario, on one event loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from optivgi_citrineos.simulator.clock import SimClock
from optivgi_citrineos.simulator.config import EVSpec, SessionSpec, SimulatorConfig
from optivgi_citrineos.simulator.records import Frame, ProfileEvent, SimulatorSnapshot
from optivgi_citrineos.simulator.station import Station, _Hooks

__all__ = ["Simulator"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Simulator:
    """OCPP 1.6J charge points for demos and end-to-end tests.

    One charge point per ``config.station_ids``, each with ``config.connectors_per_station``
    connectors, connecting to ``<config.ws_url>/<stationId>`` (subprotocol ``ocpp1.6``) and retrying
    until the CSMS is up. With a scenario, cars arrive and leave on the simulated clock; without
    one (manual mode), sessions start by RemoteStartTransaction or :meth:`start_session`.

    Use it from synchronous code (a background thread runs the event loop)::

        with Simulator(SimulatorConfig(ws_url=double.ws_url, station_ids=("CP-1",), speed=60)) as sim:
            sim.wait_until(lambda s: s.stations["CP-1"].booted, timeout=10)
            tx = sim.start_session("CP-1", 1)
            print(sim.snapshot().connector("CP-1", 1).power_kw)

    or inside a running loop with ``await sim.run()`` (until :meth:`request_stop` or cancellation).
    :meth:`snapshot`, :meth:`profile_log` and :meth:`frames` are safe from any thread.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._frames: collections.deque[Frame] = collections.deque(maxlen=config.frame_log_size)
        self._profiles: list[ProfileEvent] = []
        self._stations: dict[str, Station] = {}
        self._clock: SimClock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        scenario_count = len(config.scenario.sessions) if config.scenario is not None else 0
        self._ev_counter = scenario_count

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def clock(self) -> SimClock:
        """The simulated clock (exists once running)."""
        if self._clock is None:
            raise RuntimeError("the simulator is not running")
        return self._clock

    @property
    def running(self) -> bool:
        """Whether the simulator's loop is running."""
        return self._loop is not None and self._started.is_set() and self._stop_event is not None

    def start(self) -> Simulator:
        """Run the simulator in a background thread; returns once its stations are created."""
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")

        def target() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:
                self._failure = exc
                logger.exception("the simulator stopped with an error")
            finally:
                self._started.set()

        self._thread = threading.Thread(target=target, name="optivgi-simulator", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None:
            raise RuntimeError("the simulator failed to start") from self._failure
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop running transactions (StopTransaction, reason Local), disconnect and end the thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe, returns at once)."""
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def run(self) -> None:
        """Run every station and the scenario until :meth:`request_stop` (or cancellation)."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        clock = SimClock(self.config.speed)
        self._clock = clock
        hooks = _Hooks(self._lock, self._record_frame, self._record_profile, self._next_ev_number)
        from optivgi_citrineos.simulator.station201 import Station201

        def make(sid: str) -> Station:
            kind = Station201 if self.config.ocpp_version_of(sid) == "2.0.1" else Station
            return kind(sid, self.config, clock, hooks)

        self._stations = {sid: make(sid) for sid in self.config.station_ids}
        tasks = [asyncio.create_task(st.run(), name=f"{sid}-connection") for sid, st in self._stations.items()]
        tasks.append(asyncio.create_task(self._tick(), name="simulator-tick"))
        scenario = self.config.scenario
        if scenario is not None:
            for number, spec in enumerate(scenario.sessions, start=1):
                tasks.append(asyncio.create_task(self._scenario_session(spec, number), name=f"ev-{number}"))
        mode = f"scenario with {len(scenario.sessions)} sessions" if scenario else "manual mode"
        logger.info("simulator: %d stations x %d connectors -> %s, speed x%g, %s", len(self._stations),
                    self.config.connectors_per_station, self.config.ws_url, self.config.speed, mode)
        self._started.set()
        try:
            await self._stop_event.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(st.stop_all() for st in self._stations.values()), return_exceptions=True), 5
                )
        finally:
            await asyncio.gather(*(st.disconnect() for st in self._stations.values()), return_exceptions=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(st.close() for st in self._stations.values()), return_exceptions=True)
            self._stop_event = None
            logger.info("simulator stopped")

    async def _tick(self) -> None:
        # Often enough that at high speeds a tick is a few simulated seconds at most.
        period = min(self.config.tick_s, max(0.05, 1.0 / self.config.speed))
        while True:
            await asyncio.sleep(period)
            now = self.clock.now()
            for station in self._stations.values():
                station.advance(now)
                station.kick_status()

    async def _scenario_session(self, spec: SessionSpec, number: int) -> None:
        station = self._stations[spec.station_id]
        await self.clock.sleep_until(self.clock.at_offset(spec.arrive_offset_s))
        if not station.plug_in(spec.connector_id, spec.ev, spec.id_tag, departs=spec.depart_offset_s is not None,
                               ev_number=number):
            logger.warning("EV %d cannot plug into %s/%d: the connector is taken", number, spec.station_id,
                           spec.connector_id)
            return
        if spec.depart_offset_s is not None:
            station.connectors[spec.connector_id].departure = self.clock.at_offset(spec.depart_offset_s)
        starter: asyncio.Task[int | None] | None = None
        if spec.auto_start:
            starter = station.spawn(station.run_session(spec.connector_id, authorize=True), f"ev-{number}-start")
        # Otherwise the car waits plugged in (Preparing, reported by the tick) for RemoteStartTransaction.
        if spec.depart_offset_s is None:
            return
        await self.clock.sleep_until(self.clock.at_offset(spec.depart_offset_s))
        if starter is not None and not starter.done():
            # Still waiting for the CSMS when the car leaves: the session never starts.
            starter.cancel()
        await station.unplug(spec.connector_id)

    # --- hooks ---------------------------------------------------------------------------------

    def _record_frame(self, frame: Frame) -> None:
        with self._lock:
            self._frames.append(frame)

    def _record_profile(self, event: ProfileEvent) -> None:
        with self._lock:
            self._profiles.append(event)

    def _next_ev_number(self) -> int:
        with self._lock:
            self._ev_counter += 1
            return self._ev_counter

    # --- observation ---------------------------------------------------------------------------

    def snapshot(self) -> SimulatorSnapshot:
        """Every station and connector now (thread-safe)."""
        with self._lock:
            now = self._clock.now() if self._clock is not None else dt.datetime.now(dt.UTC)
            return SimulatorSnapshot(now, {sid: st.snapshot() for sid, st in self._stations.items()})

    def profile_log(self, station_id: str | None = None) -> list[ProfileEvent]:
        """Every profile received so far (optionally of one station), oldest first."""
        with self._lock:
            return [e for e in self._profiles if station_id is None or e.station_id == station_id]

    def ocpp_version(self, station_id: str) -> str:
        """The OCPP version a station speaks (``1.6`` or ``2.0.1``)."""
        return self.config.ocpp_version_of(station_id)

    def frames(self, station_id: str | None = None) -> list[Frame]:
        """The websocket frames kept so far (``config.frame_log_size`` newest), oldest first."""
        with self._lock:
            return [f for f in self._frames if station_id is None or f.station_id == station_id]

    def wait_until(
        self, predicate: Callable[[SimulatorSnapshot], bool], timeout: float = 30.0, poll: float = 0.05
    ) -> SimulatorSnapshot:
        """Poll :meth:`snapshot` until ``predicate`` holds; returns that snapshot.

        Raises:
            TimeoutError: not within ``timeout`` wall seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(poll)

    def wait_connected(self, timeout: float = 30.0) -> SimulatorSnapshot:
        """Wait until every station is connected and booted."""
        return self.wait_until(lambda s: bool(s.stations) and all(st.booted for st in s.stations.values()), timeout)

    # --- control (from another thread) ---------------------------------------------------------

    def _run_in_loop(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        loop = self._loop
        if loop is None or not self.running:
            coro.close()
            raise RuntimeError("the simulator is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("call the async methods of Station from the simulator's own loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def _station(self, station_id: str, connector_id: int) -> Station:
        station = self._stations.get(station_id)
        if station is None:
            raise KeyError(f"unknown station {station_id!r}")
        if connector_id not in station.connectors:
            raise KeyError(f"{station_id} has no connector {connector_id}")
        return station

    def start_session(
        self,
        station_id: str,
        connector_id: int = 1,
        *,
        ev: EVSpec | None = None,
        id_tag: str = "OPTIVGI-AUTO",
        authorize: bool = True,
        timeout: float = 30.0,
    ) -> int:
        """Plug a car in and start a transaction as a driver would; returns the transactionId.

        The car stays until :meth:`stop_session` or a RemoteStopTransaction.

        Raises:
            KeyError: unknown station or connector.
            RuntimeError: the connector is taken, or the CSMS did not start the transaction.
        """
        station = self._station(station_id, connector_id)

        async def go() -> int | None:
            if not station.plug_in(connector_id, ev or self.config.default_ev, id_tag, departs=False):
                raise RuntimeError(f"{station_id}/{connector_id} is taken")
            return await station.run_session(connector_id, authorize=authorize)

        transaction_id = self._run_in_loop(go(), timeout)
        if transaction_id is None:
            raise RuntimeError(f"the CSMS did not start a transaction on {station_id}/{connector_id} (see the log)")
        return transaction_id

    def stop_session(self, station_id: str, connector_id: int = 1, *, reason: str = "EVDisconnected",
                     timeout: float = 30.0) -> None:
        """Stop the connector's transaction (StopTransaction with ``reason``) and unplug the car."""
        station = self._station(station_id, connector_id)

        async def go() -> None:
            await station.stop_transaction(connector_id, reason)
            await station.unplug(connector_id)

        self._run_in_loop(go(), timeout)
