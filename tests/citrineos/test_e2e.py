"""The whole CitrineOS demo without Docker: double + simulated chargers + ``optivgi run`` + verifier.

Run twice: the default six OCPP 1.6 stations, and a mixed site whose stations 4-6 speak OCPP 2.0.1
(each 2.0.1 station is asked for its device model with GetBaseReport once it booted, as an operator
does on a real CitrineOS, which answers ``Evse N not found.`` before). The verifier reads the double's
tables with plain SQL and judges the whole run; ``optivgi run``'s own operator lines are checked.

- the CitrineOS double (real PostgreSQL, real RabbitMQ on its own exchange, real websockets);
- the charger simulator in this process, playing its default scenario (six 7.2 kW EVs arriving
  60 s apart for 10 minutes each) 12 times faster than real time, reading profile times on the
  wall clock because the optimizer plans in real time;
- ``python -m optivgi run --translation citrineos`` as a separate process;
- ``optivgi citrineos verify`` as a separate process at the end.

The simulated chargers' state is sampled every 50 ms and the numbers are asserted: the site total
stays within 30 kW (+ one 0.1 A step per EV) whenever every car present is under an optimizer
profile, curtailment starts with the fifth car, six cars get 5.0 kW each, and a departure hands
its power to the others within one cycle. An arriving car draws what its charger allows until the
optimizer has heard of it; that window is measured and bounded separately.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from citrineos_testdouble import CitrineOSDouble

from optivgi_citrineos.simulator import Simulator, SimulatorConfig, SimulatorSnapshot
from optivgi_citrineos.simulator.config import default_scenario

pytestmark = pytest.mark.slow

SPEED = 12.0  # slow enough that a loaded machine keeps the cars 5 wall seconds apart
SITE_KW = 30.0
VOLTS = 240.0
STEP_KW = 0.1 * VOLTS / 1000  # one 0.1 A step at 240 V
EV_MAX_KW = 7.2
PROFILE_ID_BASE = 9000  # the fallback TxDefaultProfile's id; TxProfiles get base + connector (9001)
INTERVAL_S = 2.0  # wall seconds between periodic cycles (events trigger cycles too)
VALIDITY_S = 6.0  # TxProfiles lapse this long after they were sent
#: Wall seconds an arriving or leaving car may wait for the optimizer (one event-triggered cycle).
ONE_CYCLE_S = 2.0
SAMPLE_S = 0.05


@dataclass(frozen=True)
class Car:
    """One connector in one sample."""

    station: str
    transaction: int | None
    power_kw: float
    limit_kw: float | None
    profile_id: int | None

    @property
    def optimized(self) -> bool:
        """Drawing under opti-vgi's TxProfile (id base + connector), not a fallback or nothing."""
        return self.profile_id == PROFILE_ID_BASE + 1


@dataclass(frozen=True)
class Sample:
    wall: float  # time.monotonic()
    cars: tuple[Car, ...]

    @property
    def present(self) -> list[Car]:
        return [c for c in self.cars if c.transaction is not None]

    @property
    def total_kw(self) -> float:
        return sum(c.power_kw for c in self.cars)

    @property
    def allowance_kw(self) -> float:
        return SITE_KW + STEP_KW * len(self.present)

    @property
    def all_optimized(self) -> bool:
        return all(c.optimized for c in self.present)


def _sample(snap: SimulatorSnapshot) -> Sample:
    cars = []
    for sid, station in sorted(snap.stations.items()):
        c = station.connectors[1]
        limit = None if c.limit_w is None else c.limit_w / 1000
        cars.append(Car(sid, c.transaction_id, c.power_kw, limit, c.tx_profile_id))
    return Sample(time.monotonic(), tuple(cars))


class Sampler:
    """Samples the simulator every 50 ms in a thread."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(_sample(self.sim.snapshot()))
            self._stop.wait(SAMPLE_S)

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(5)
        return list(self.samples)


class OptiVGI:
    """``python -m optivgi run --translation citrineos`` with its log collected."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "optivgi", "--log-level", "INFO", "run", "--translation", "citrineos"],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        #: The operator lines ``optivgi run`` prints on stdout (arrivals, CURTAILMENT ON/OFF, allocations).
        self.operator: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self.operator), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line.rstrip("\n"))

    def log(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.lines)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"optivgi run did not log {text!r} within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class DemoRun:
    samples: list[Sample]
    stations: tuple[str, ...]
    optimizer_log: list[str]
    operator: list[str] = field(default_factory=list)
    ocpp201: tuple[str, ...] = ()
    verifier: subprocess.CompletedProcess[str] | None = None
    killed_at: float | None = None
    arrivals: dict[str, float] = field(default_factory=dict)
    departures: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def e2e_double(citrineos_services: tuple[str, str]) -> Iterator[CitrineOSDouble]:
    """A double of its own, publishing on its own exchange (no other test's events reach opti-vgi)."""
    with CitrineOSDouble(exchange=f"citrineos-e2e-{uuid.uuid4().hex[:8]}") as double:
        yield double


def _optivgi_env(double: CitrineOSDouble, stations: tuple[str, ...], ocpp201: tuple[str, ...] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONN_", "CITRINEOS_", "STATION_", "OPTIVGI_"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "CITRINEOS_API_URL": double.rest_url,
            "HASURA_URL": double.graphql_url,
            "AMQP_URL": double.amqp_url,
            "CITRINEOS_EXCHANGE": double.exchange,
            "SITE_POWER_LIMIT_KW": str(SITE_KW),
            "VOLTAGE": str(VOLTS),
            "STATION_GROUPS": "default",
            "STATION_IDS": ",".join(stations),
            "INTERVAL_S": str(INTERVAL_S),
            "CITRINEOS_PROFILE_VALIDITY_S": str(VALIDITY_S),
            "CITRINEOS_PROFILE_ID_BASE": str(PROFILE_ID_BASE),
            "CITRINEOS_CONNECTORS_PER_STATION": "1",
            "CITRINEOS_ANSWER_TIMEOUT_S": "3",
            "CITRINEOS_HTTP_TIMEOUT_S": "3",
            "CITRINEOS_OCPP201_STATIONS": ",".join(ocpp201),
        }
    )
    for i in range(1, len(stations) + 1):
        env[f"CONN_{i:02d}_ENERGY_NEEDED_KWH"] = "48"
        env[f"CONN_{i:02d}_MAX_POWER_KW"] = str(EV_MAX_KW)
        env[f"CONN_{i:02d}_MIN_POWER_KW"] = "1.4"
    return env


def _verify(double: CitrineOSDouble, stations: tuple[str, ...], plot: Path) -> subprocess.CompletedProcess[str]:
    from optivgi.cli import main

    if "citrineos" in main.commands:
        command = [sys.executable, "-m", "optivgi", "citrineos", "verify"]
    else:  # the group is not attached to the optivgi command yet: the module runs the same command
        command = [sys.executable, "-m", "optivgi_citrineos.verify"]
    # Plain SQL on the double's tables (as CitrineOS's PostgreSQL): the whole run is judged too.
    dsn = f"{double.dsn} options='-csearch_path={double.schema}'"
    command += ["--dsn", dsn, "--stations", ",".join(stations), "--limit", str(SITE_KW),
                "--voltage", str(VOLTS), "--plot", str(plot)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _report_device_models(double: CitrineOSDouble, sim: Simulator, stations: tuple[str, ...]) -> None:
    """What an operator does for a 2.0.1 station: have it report its device model (GetBaseReport)."""
    import httpx

    for station in stations:
        sim.wait_until(lambda s, st=station: s.stations[st].booted, timeout=20)
        answer = httpx.post(f"{double.rest_url}/ocpp/2.0.1/reporting/getBaseReport",
                            params={"identifier": station, "tenantId": 1},
                            json={"requestId": 1, "reportBase": "FullInventory"}, timeout=10).json()
        assert answer == [{"success": True}], answer


def _run_demo(double: CitrineOSDouble, tmp: Path, *, kill_when_six: bool = False,
              ocpp201: tuple[int, ...] = ()) -> DemoRun:
    """The default scenario; the stations at the indexes ``ocpp201`` speak OCPP 2.0.1."""
    scenario = default_scenario()
    stations = tuple(s.station_id for s in scenario.sessions)
    v201 = tuple(stations[i] for i in ocpp201)
    last_departure = max(s.depart_offset_s or 0.0 for s in scenario.sessions)
    env = _optivgi_env(double, stations, v201)
    if v201:
        # The 2.0.1 cars announce their departure (10 minutes on) and 48 kWh in NotifyEVChargingNeeds,
        # which the 1.6 ones cannot: lp rightly favours them. The equal shares this demo checks are
        # equal-share's, with the same car data on both protocols.
        env["OPTIVGI_ALGORITHM"] = "equal-share"
    optimizer = OptiVGI(env, tmp)
    run = DemoRun([], stations, optimizer.lines, optimizer.operator, v201)
    try:
        optimizer.wait_for("AMQP listener consuming", timeout=30)
        optimizer.wait_for("cycle 1 (start) done", timeout=30)
        config = SimulatorConfig(
            ws_url=double.ws_url, station_ids=stations, connectors_per_station=1, speed=SPEED, scenario=scenario,
            voltage=VOLTS, profile_clock="wall", meter_values_interval_s=10.0,
            ws201_url=double.ws201_url, ocpp201_stations=v201,
        )
        with Simulator(config) as sim:
            sampler = Sampler(sim)
            started = time.monotonic()
            end = started + last_departure / SPEED + 1.0
            try:
                _report_device_models(double, sim, v201)
                if kill_when_six:
                    sim.wait_until(
                        lambda s: sum(1 for c in _sample(s).present if c.optimized and c.limit_kw and c.limit_kw < 5.3)
                        == 6,
                        timeout=40,
                    )
                    optimizer.proc.kill()  # SIGKILL: no teardown, nothing cleared
                    optimizer.proc.wait(10)
                    run.killed_at = time.monotonic()
                while time.monotonic() < end:
                    time.sleep(0.2)
            finally:
                run.samples = sampler.stop()
        run.verifier = _verify(double, stations, tmp / "curtailment.png") if not kill_when_six else None
    finally:
        optimizer.stop()
    # When each car's transaction started and ended, as sampled.
    for i, sample in enumerate(run.samples):
        for car in sample.cars:
            if car.transaction is not None and car.station not in run.arrivals:
                run.arrivals[car.station] = sample.wall
            if car.station in run.arrivals and car.transaction is None and car.station not in run.departures:
                if i > 0 and any(c.station == car.station and c.transaction for c in run.samples[i - 1].cars):
                    run.departures[car.station] = sample.wall
    return run


def _first(samples: list[Sample], after: float, predicate: Callable[[Sample], bool]) -> Sample | None:
    """The first sample at or after ``after`` (monotonic seconds) that satisfies ``predicate``."""
    return next((s for s in samples if s.wall >= after and predicate(s)), None)


#: The two demos: the default six OCPP 1.6 stations, and a mixed site whose last three stations
#: speak OCPP 2.0.1 (stations 4-6 of the default scenario, whose cars arrive 3 to 5 minutes in).
DEMOS = {"six-1.6": (), "mixed-1.6-2.0.1": (3, 4, 5)}


@pytest.fixture(scope="module", params=list(DEMOS))
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         citrineos_services: tuple[str, str]) -> Iterator[DemoRun]:
    """One demo on a double of its own (the verifier judges that double's whole history)."""
    with CitrineOSDouble(exchange=f"citrineos-e2e-{uuid.uuid4().hex[:8]}") as double:
        yield _run_demo(double, tmp_path_factory.mktemp(f"e2e-{request.param}"), ocpp201=DEMOS[request.param])


def test_site_total_stays_within_the_limit(demo: DemoRun) -> None:
    samples = demo.samples
    first = _first(samples, 0, lambda s: any(c.optimized for c in s.present))
    assert first is not None, "no optimizer profile ever reached a charger:\n" + "\n".join(demo.optimizer_log[-40:])
    judged = [s for s in samples if s.wall >= first.wall and s.all_optimized]
    over = [(round(s.wall - first.wall, 2), round(s.total_kw, 3)) for s in judged if s.total_kw > s.allowance_kw + 1e-6]
    peak = max(s.total_kw for s in judged)
    waiting = [s.total_kw for s in samples if s.wall >= first.wall and not s.all_optimized]
    print(f"{len(judged)} of {len(samples)} samples judged, peak {peak:.3f} kW; "
          f"{len(waiting)} samples with a car waiting for its first profile, peak {max(waiting, default=0):.3f} kW")
    assert len(judged) > 300
    assert over == []
    assert peak == pytest.approx(SITE_KW, abs=6 * STEP_KW)  # the site is used, not just kept under


def test_an_arriving_car_waits_at_most_one_cycle_for_its_profile(demo: DemoRun) -> None:
    waits = {}
    for station, arrived in demo.arrivals.items():
        governed = _first(demo.samples, arrived, lambda s, st=station: any(
            c.station == st and c.optimized for c in s.present))
        assert governed is not None, f"{station} never got a TxProfile"
        waits[station] = governed.wall - arrived
    print("wall seconds from StartTransaction to the car's TxProfile:", {k[-2:]: round(v, 2) for k, v in waits.items()})
    assert len(waits) == 6 and max(waits.values()) < ONE_CYCLE_S


def test_curtailment_starts_with_the_fifth_car(demo: DemoRun) -> None:
    stations = demo.stations
    fifth = demo.arrivals[stations[4]]
    # Settled: two cycles after the fourth arrival (its first profile may wait for a second wave).
    before = [s for s in demo.samples if demo.arrivals[stations[3]] + 2 * ONE_CYCLE_S <= s.wall < fifth]
    assert before, "no sample with four cars settled"
    # Four cars fit (28.8 kW): nobody is curtailed.
    for s in before:
        assert len(s.present) == 4
        assert all(c.optimized and c.limit_kw is not None and c.limit_kw >= EV_MAX_KW - STEP_KW for c in s.present), (
            s.wall - demo.arrivals[stations[3]], [(c.station, c.optimized, c.limit_kw) for c in s.present])
        assert s.total_kw == pytest.approx(4 * EV_MAX_KW, abs=4 * STEP_KW)
    settled = _first(demo.samples, fifth, lambda s: len(s.present) == 5 and s.all_optimized
                     and all(c.limit_kw is not None and c.limit_kw < EV_MAX_KW - STEP_KW for c in s.present))
    assert settled is not None and settled.wall - fifth < ONE_CYCLE_S
    limits = sorted(c.limit_kw or 0.0 for c in settled.present)
    print(f"fifth car: curtailed {settled.wall - fifth:.2f} s after its arrival, limits {limits}")
    assert all(c.limit_kw == pytest.approx(SITE_KW / 5, abs=0.3) for c in settled.present)


def test_six_cars_share_the_site_equally(demo: DemoRun) -> None:
    stations = demo.stations
    sixth, leave = demo.arrivals[stations[5]], demo.departures[stations[0]]
    six = [s for s in demo.samples if sixth + ONE_CYCLE_S <= s.wall < leave and len(s.present) == 6]
    assert len(six) > 50, "too few samples with six cars settled"
    for s in six:
        assert s.all_optimized
        assert all(c.limit_kw == pytest.approx(5.0, abs=0.3) for c in s.present), [c.limit_kw for c in s.present]
        assert all(c.power_kw <= (c.limit_kw or 0) + 1e-6 for c in s.present)
        assert s.total_kw <= s.allowance_kw
    print(f"six cars: {len(six)} samples, limits {sorted({round(c.limit_kw or 0, 3) for s in six for c in s.present})}")


def test_a_departure_hands_its_power_over_within_one_cycle(demo: DemoRun) -> None:
    stations = demo.stations
    leave = demo.departures[stations[0]]
    raised = _first(demo.samples, leave, lambda s: len(s.present) == 5 and s.all_optimized
                    and all(c.limit_kw == pytest.approx(SITE_KW / 5, abs=0.3) for c in s.present))
    assert raised is not None
    print(f"first departure: the five others at 6.0 kW {raised.wall - leave:.2f} s later")
    assert raised.wall - leave < ONE_CYCLE_S
    second = demo.departures[stations[1]]
    assert raised.wall < second
    four = _first(demo.samples, second, lambda s: len(s.present) == 4 and s.all_optimized
                  and all(c.limit_kw is not None and c.limit_kw >= EV_MAX_KW - STEP_KW for c in s.present))
    assert four is not None and four.wall - second < ONE_CYCLE_S


def test_optivgi_run_prints_the_operator_lines(demo: DemoRun) -> None:
    lines = demo.operator
    print("\n".join(line for line in lines if "arrived" in line or "CURTAILMENT" in line))
    arrived = [line for line in lines if re.search(r"\] EV \S+ arrived — max 7\.20 kW at ", line)]
    assert len(arrived) == 6, "\n".join(lines[-20:])
    assert any(line.endswith("CURTAILMENT ON — 5 EVs request 36.00 kW, limit 30.00 kW, allocated 30.00 kW")
               for line in lines), "\n".join(lines[-40:])
    # Per-EV kW: six cars at 5.0 kW each.
    six = [line for line in lines if "allocation (" in line and line.count(" kW") == 7]
    assert any(all(abs(float(kw) - 5.0) <= 0.05 for kw in re.findall(r": (\d+\.\d+) kW", line))
               for line in six), six[-3:]


def test_the_201_stations_were_planned_on_their_evses(demo: DemoRun) -> None:
    if not demo.ocpp201:
        pytest.skip("no OCPP 2.0.1 station in this demo")
    # Their cars were governed by the optimizer's TxProfile (id base + EVSE 1), like the 1.6 ones.
    for station in demo.ocpp201:
        assert any(c.station == station and c.optimized for s in demo.samples for c in s.present), station
    assert not any("does not know EVSE" in line for line in demo.optimizer_log), "a 2.0.1 EVSE was unknown"


def test_the_verifier_passes_every_check_from_sql(demo: DemoRun) -> None:
    result = demo.verifier
    assert result is not None
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("CitrineOS curtailment check: PostgreSQL") for line in lines)
    assert sum(line.startswith("[PASS] Check ") for line in lines) == 7
    assert "Result: 7/7 checks passed -- PASS" in lines
    assert any("6 EVs held a positive allocation at once" in line for line in lines)


@pytest.fixture(scope="module")
def killed_demo(e2e_double: CitrineOSDouble, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return _run_demo(e2e_double, tmp_path_factory.mktemp("e2e-kill"), kill_when_six=True)


def test_sigkill_leaves_the_site_within_the_limit(killed_demo: DemoRun) -> None:
    run = killed_demo
    assert run.killed_at is not None
    after = [s for s in run.samples if s.wall >= run.killed_at]
    assert len(after) > 300
    over = [(round(s.wall - run.killed_at, 2), round(s.total_kw, 3)) for s in after if s.total_kw > s.allowance_kw]
    assert over == []
    # Once the optimizer's profiles lapse, every car still present is held by the fallback share.
    lapsed = [s for s in after if s.wall >= run.killed_at + VALIDITY_S + 1.0 and s.present]
    assert lapsed
    fallback = [c for s in lapsed for c in s.present]
    share = SITE_KW / 6
    assert all(c.profile_id == PROFILE_ID_BASE for c in fallback), {c.profile_id for c in fallback}
    assert all(c.limit_kw is not None and share - STEP_KW <= c.limit_kw <= share for c in fallback)
    print(f"after SIGKILL: {len(after)} samples, peak {max(s.total_kw for s in after):.3f} kW, "
          f"fallback limits {sorted({round(c.limit_kw or 0, 3) for c in fallback})}")
