"""The OCPP 1.6J charger simulator against the CitrineOS double, over real websockets.

Profiles go through the double's REST API exactly as the optimizer sends them; what the simulator
does is read back from its snapshot, its profile log and the frames it sent. Every frame a
simulator sent is checked against the ``ocpp`` library's OCPP 1.6 JSON schemas when its test ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from citrineos_testdouble import CitrineOSDouble
from citrineos_testdouble._ocpp import OutgoingCall

from optivgi_citrineos.simulator import (
    EVSpec,
    Frame,
    Scenario,
    SessionSpec,
    Simulator,
    SimulatorConfig,
    default_scenario,
    validate_frame,
)

SimFactory = Callable[..., Simulator]


@pytest.fixture
def make_sim(citrineos_double: CitrineOSDouble) -> Iterator[SimFactory]:
    """Start simulators against the double; on teardown stop them and schema-check every sent frame."""
    started: list[Simulator] = []

    def factory(stations: int = 1, **changes: Any) -> Simulator:
        ids = tuple(f"SIM-{uuid.uuid4().hex[:8].upper()}" for _ in range(stations))
        settings: dict[str, Any] = {"ws_url": citrineos_double.ws_url, "station_ids": ids, "scenario": None,
                                    "speed": 10.0, "meter_values_interval_s": 10.0}
        settings.update(changes)
        sim = Simulator(SimulatorConfig(**settings)).start()
        started.append(sim)
        sim.wait_connected(timeout=10)
        return sim

    yield factory
    for sim in started:
        sim.stop()
    for sim in started:
        assert_frames_valid(sim.frames())


def assert_frames_valid(frames: list[Frame]) -> None:
    sent = [f for f in frames if f.direction == "send"]
    assert sent, "the simulator sent nothing"
    for frame in sent:
        assert frame.message_type in (2, 3, 4), frame.text
        if frame.message_type == 4:
            continue  # CALLERRORs have no schema
        validate_frame(frame.text, frame.action)  # raises on any schema violation


def rest(double: CitrineOSDouble, path: str, station: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{double.rest_url}{path}", params={"identifier": station, "tenantId": 1}, json=body,
                          timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == [{"success": True}]
    return response.json()


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def profile(sim: Simulator, pid: int, stack: int, purpose: str, limit: float | list[tuple[int, float]],
            unit: str = "A", **extra: Any) -> dict[str, Any]:
    periods = limit if isinstance(limit, list) else [(0, limit)]
    return {
        "chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": unit,
            "startSchedule": iso(profile_now(sim) - dt.timedelta(seconds=1)),
            "chargingSchedulePeriod": [{"startPeriod": s, "limit": v, "numberPhases": 1} for s, v in periods],
        },
        **extra,
    }


def profile_now(sim: Simulator) -> dt.datetime:
    """Now on the clock the simulator reads profile times on (its accelerated one by default)."""
    return dt.datetime.now(dt.UTC) if sim.config.profile_clock == "wall" else sim.clock.now()


def send_profile(double: CitrineOSDouble, sim: Simulator, station: str, connector: int, body: dict[str, Any]) -> str:
    """SetChargingProfile through REST; returns the charger's answer status from its profile log."""
    count = len(sim.profile_log(station))
    rest(double, "/ocpp/1.6/smartcharging/setChargingProfile", station,
         {"connectorId": connector, "csChargingProfiles": body})
    deadline = time.monotonic() + 5
    while len(sim.profile_log(station)) <= count:
        assert time.monotonic() < deadline, "the simulator never received the profile"
        time.sleep(0.02)
    event = sim.profile_log(station)[count]
    assert event.profile["chargingProfileId"] == body["chargingProfileId"]
    return event.status


def csms_call(double: CitrineOSDouble, station: str, action: str, payload: dict[str, Any]) -> Any:
    """A CSMS call the double has no REST route for (CitrineOS: /ocpp/1.6/evdriver/...), queued on
    the station's session like the REST calls are; returns the charger's answer."""
    session = double._core.sessions[f"1:{station}"]
    outgoing = OutgoingCall(str(uuid.uuid4()), action, payload, None, time.monotonic())

    async def go() -> Any:
        session.enqueue(outgoing)
        while outgoing.answer is None:
            await asyncio.sleep(0.01)
        return outgoing.answer

    return double.run(go(), timeout=10)


def sent(sim: Simulator, station: str, action: str) -> list[dict[str, Any]]:
    return [f.payload for f in sim.frames(station) if f.direction == "send" and f.message_type == 2
            and f.action == action]


def meter_samples(sim: Simulator, station: str, connector: int = 1) -> list[dict[str, Any]]:
    """MeterValues as {"t": datetime, measurand: float, "context": ...}."""
    out = []
    for payload in sent(sim, station, "MeterValues"):
        if payload["connectorId"] != connector:
            continue
        for mv in payload["meterValue"]:
            row: dict[str, Any] = {"t": dt.datetime.fromisoformat(mv["timestamp"])}
            for sv in mv["sampledValue"]:
                row[sv["measurand"]] = float(sv["value"])
                row["context"] = sv["context"]
            out.append(row)
    return out


def statuses(sim: Simulator, station: str, connector: int) -> list[str]:
    return [p["status"] for p in sent(sim, station, "StatusNotification") if p["connectorId"] == connector]


def wait_power(sim: Simulator, station: str, connector: int, kw: float, timeout: float = 5) -> None:
    sim.wait_until(lambda s: abs(s.connector(station, connector).power_kw - kw) < 1e-6, timeout)


# --- tests ---------------------------------------------------------------------------------------


def test_boot_and_status_sequence(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim(connectors_per_station=2)
    sid = sim.config.station_ids[0]
    assert sid in citrineos_double.connected_stations()
    tx = sim.start_session(sid, 1, id_tag="SIM-TAG-1")
    sim.wait_until(lambda s: s.connector(sid, 1).status == "Charging" and statuses(sim, sid, 1)[-1:] == ["Charging"])
    sim.stop_session(sid, 1)
    sim.wait_until(lambda s: statuses(sim, sid, 1)[-1:] == ["Available"])

    calls = [(f.action, f.payload) for f in sim.frames(sid) if f.direction == "send" and f.message_type == 2]
    assert calls[0][0] == "BootNotification"
    assert calls[0][1]["chargePointVendor"] == "opti-vgi"
    first_status = [p["connectorId"] for a, p in calls[1:4]]
    assert first_status == [0, 1, 2] and {p["status"] for _, p in calls[1:4]} == {"Available"}
    session = [(a, p.get("status") or p.get("reason")) for a, p in calls[4:]
               if a != "MeterValues" and p.get("connectorId", 1) == 1]
    assert session == [
        ("StatusNotification", "Preparing"), ("Authorize", None), ("StartTransaction", None),
        ("StatusNotification", "Charging"), ("StopTransaction", "EVDisconnected"),
        ("StatusNotification", "Finishing"), ("StatusNotification", "Available"),
    ]
    start = sent(sim, sid, "StartTransaction")[0]
    stop = sent(sim, sid, "StopTransaction")[0]
    assert start["idTag"] == "SIM-TAG-1" and start["meterStart"] == 0
    assert stop["transactionId"] == tx and stop["meterStop"] >= 0
    # Every call got its answer from the double.
    answered = {json.loads(f.text)[1] for f in sim.frames(sid) if f.direction == "recv" and f.message_type == 3}
    assert {json.loads(f.text)[1] for f in sim.frames(sid) if f.direction == "send" and f.message_type == 2} <= answered


def test_meter_values_energy_follows_the_drawn_power(make_sim: SimFactory) -> None:
    sim = make_sim(speed=20.0, meter_values_interval_s=10.0)
    sid = sim.config.station_ids[0]
    sim.start_session(sid, 1)
    sim.wait_until(lambda s: len(meter_samples(sim, sid)) >= 5, timeout=10)
    samples = meter_samples(sim, sid)[:5]
    assert samples[0]["context"] == "Transaction.Begin" and samples[1]["context"] == "Sample.Periodic"
    for s in samples:
        assert s["Power.Active.Import"] == 7200.0  # the car's 7.2 kW (the 32 A connector offers 7.68 kW)
        assert s["Current.Import"] == 30.0  # 7200 W / 240 V
    for a, b in itertools.pairwise(samples):
        seconds = (b["t"] - a["t"]).total_seconds()
        # The simulated clock's cadence; a little late when the loop is busy (x20: 50 ms wall = 1 s).
        assert seconds == pytest.approx(10.0, abs=1.0)
        delta = b["Energy.Active.Import.Register"] - a["Energy.Active.Import.Register"]
        assert delta == pytest.approx(a["Power.Active.Import"] * seconds / 3600, abs=0.15)  # 20 Wh per sample
    # SoC (reported to 0.1 %) follows the energy into the 60 kWh battery.
    gained = samples[-1]["Energy.Active.Import.Register"] - samples[0]["Energy.Active.Import.Register"]
    assert samples[-1]["SoC"] - samples[0]["SoC"] == pytest.approx(gained / 60000 * 100, abs=0.1)
    assert samples[0]["SoC"] == 20.0
    snap = sim.snapshot().connector(sid, 1)
    assert snap.power_kw == 7.2 and snap.soc_percent is not None and snap.soc_percent > 20


def test_set_charging_profile_lowers_the_draw(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim(speed=20.0)
    sid = sim.config.station_ids[0]
    tx = sim.start_session(sid, 1)
    wait_power(sim, sid, 1, 7.2)
    status = send_profile(citrineos_double, sim, sid, 1, profile(sim, 501, 1, "TxProfile", 16, transactionId=tx))
    assert status == "Accepted"
    snap = sim.snapshot().connector(sid, 1)
    assert (snap.limit_w, snap.limit_a, snap.power_kw, snap.tx_profile_id) == (3840.0, 16.0, 3.84, 501)
    assert snap.latest_profile is not None and snap.latest_profile.limit_w == 3840.0
    before = len(meter_samples(sim, sid))
    sim.wait_until(lambda s: len(meter_samples(sim, sid)) >= before + 2, timeout=5)
    last = meter_samples(sim, sid)[-1]
    assert (last["Power.Active.Import"], last["Current.Import"]) == (3840.0, 16.0)
    # The double stored the accepted profile; the charger's answer carried Accepted.
    answers = [json.loads(f.text)[2] for f in sim.frames(sid) if f.direction == "send" and f.message_type == 3
               and f.action == "SetChargingProfile"]
    assert answers == [{"status": "Accepted"}]
    # A watt profile works the same way.
    watts = profile(sim, 502, 2, "TxProfile", 2000.0, unit="W")
    assert send_profile(citrineos_double, sim, sid, 1, watts) == "Accepted"
    wait_power(sim, sid, 1, 2.0)


def test_stack_levels_and_tx_profile_over_tx_default(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim()
    sid = sim.config.station_ids[0]
    d = citrineos_double
    assert send_profile(d, sim, sid, 0, profile(sim, 601, 0, "TxDefaultProfile", 20)) == "Accepted"
    assert sim.snapshot().connector(sid, 2).limit_w == 4800.0  # connector 0 defaults apply to every connector
    sim.start_session(sid, 1)
    wait_power(sim, sid, 1, 4.8)
    assert send_profile(d, sim, sid, 0, profile(sim, 602, 1, "TxDefaultProfile", 10)) == "Accepted"
    wait_power(sim, sid, 1, 2.4)
    assert send_profile(d, sim, sid, 1, profile(sim, 603, 0, "TxProfile", 24)) == "Accepted"
    wait_power(sim, sid, 1, 5.76)  # TxProfile replaces the defaults, even above them
    assert send_profile(d, sim, sid, 1, profile(sim, 604, 2, "TxProfile", 12)) == "Accepted"
    wait_power(sim, sid, 1, 2.88)
    assert sim.snapshot().connector(sid, 1).tx_profile_id == 604
    rest(d, "/ocpp/1.6/smartcharging/clearChargingProfile", sid, {"id": 604})
    wait_power(sim, sid, 1, 5.76)
    sim.stop_session(sid, 1)
    # TxProfiles end with their transaction; the defaults stay.
    snap = sim.wait_until(lambda s: s.connector(sid, 1).status == "Available")
    assert snap.connector(sid, 1).limit_w == 2400.0


def test_charge_point_max_profile_caps_the_sum(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim(connectors_per_station=2)
    sid = sim.config.station_ids[0]
    d = citrineos_double
    sim.start_session(sid, 1)
    sim.start_session(sid, 2)
    sim.wait_until(lambda s: s.stations[sid].power_kw == pytest.approx(14.4))
    assert send_profile(d, sim, sid, 0, profile(sim, 701, 0, "ChargePointMaxProfile", 20)) == "Accepted"
    snap = sim.wait_until(lambda s: s.stations[sid].power_kw == pytest.approx(4.8))
    assert snap.stations[sid].station_limit_w == 4800.0
    assert (snap.connector(sid, 1).power_kw, snap.connector(sid, 2).power_kw) == (2.4, 2.4)
    assert send_profile(d, sim, sid, 1, profile(sim, 702, 1, "TxProfile", 6)) == "Accepted"
    snap = sim.wait_until(lambda s: s.connector(sid, 1).power_kw == pytest.approx(1.44))
    assert snap.connector(sid, 2).power_kw == pytest.approx(3.36)  # what connector 1 leaves goes to 2
    assert send_profile(d, sim, sid, 1, profile(sim, 703, 0, "ChargePointMaxProfile", 10)) == "Rejected"


@pytest.mark.parametrize("clock", ["simulated", "wall"])
def test_valid_to_expiry_falls_back_to_the_lower_profile(make_sim: SimFactory, citrineos_double: CitrineOSDouble,
                                                          clock: str) -> None:
    sim = make_sim(speed=30.0, profile_clock=clock)
    sid = sim.config.station_ids[0]
    sim.start_session(sid, 1)
    assert send_profile(citrineos_double, sim, sid, 1, profile(sim, 801, 1, "TxProfile", 16)) == "Accepted"
    # 1.5 s of wall time either way: 45 simulated seconds at x30, or 1.5 s on the wall clock.
    valid_to = profile_now(sim) + dt.timedelta(seconds=45 if clock == "simulated" else 1.5)
    assert send_profile(citrineos_double, sim, sid, 1,
                        profile(sim, 802, 2, "TxProfile", 8, validTo=iso(valid_to))) == "Accepted"
    assert sim.snapshot().connector(sid, 1).power_kw == pytest.approx(1.92)
    snap = sim.wait_until(lambda s: s.connector(sid, 1).power_kw == pytest.approx(3.84), timeout=5)
    assert profile_now(sim) >= valid_to
    assert snap.connector(sid, 1).tx_profile_id == 801


def test_battery_taper_and_full_battery(make_sim: SimFactory) -> None:
    sim = make_sim(speed=60.0, meter_values_interval_s=5.0)
    sid = sim.config.station_ids[0]
    sim.start_session(sid, 1, ev=EVSpec(capacity_kwh=10, arrival_soc=0.9, target_soc=0.905, max_charge_rate_kw=7.2))
    first = sim.snapshot().connector(sid, 1)
    # On the taper from 80 % to 100 % (3.6 kW at 90 %, the arrival): at any later SoC of the same snapshot.
    assert first.soc_percent is not None and 90 <= first.soc_percent <= 90.5
    assert first.power_kw == pytest.approx(7.2 * (100 - first.soc_percent) / 20, abs=0.001)
    assert first.power_kw <= 3.6
    snap = sim.wait_until(lambda s: s.connector(sid, 1).status == "SuspendedEV", timeout=5)
    c = snap.connector(sid, 1)
    assert c.power_kw == 0 and c.soc_percent == pytest.approx(90.5, abs=0.01)
    assert c.session_energy_wh == pytest.approx(50, abs=0.5)  # 0.5 % of 10 kWh
    sim.wait_until(lambda s: statuses(sim, sid, 1)[-1:] == ["SuspendedEV"])


def test_reconnects_after_a_disconnect_and_keeps_the_transaction(make_sim: SimFactory,
                                                                  citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim(speed=20.0, reconnect_initial_s=0.1)
    sid = sim.config.station_ids[0]
    tx = sim.start_session(sid, 1)
    citrineos_double.disconnect(sid)
    sim.wait_until(lambda s: not s.stations[sid].connected, timeout=5)
    sim.wait_until(lambda s: s.stations[sid].booted, timeout=5)
    boots = sent(sim, sid, "BootNotification")
    assert len(boots) == 2
    count = len(meter_samples(sim, sid))
    sim.wait_until(lambda s: len(meter_samples(sim, sid)) > count + 1, timeout=5)
    assert {p["transactionId"] for p in sent(sim, sid, "MeterValues")} == {tx}
    # After the new boot every connector's status is reported again.
    assert statuses(sim, sid, 1)[-1] == "Charging"


def test_retries_until_the_csms_is_up(citrineos_services: tuple[str, str]) -> None:
    import socket

    from conftest import require_services

    require_services()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = SimulatorConfig(ws_url=f"ws://127.0.0.1:{port}", station_ids=("SIM-LATE",), scenario=None,
                             reconnect_initial_s=0.1, reconnect_max_s=0.4)
    with Simulator(config) as sim:
        time.sleep(0.8)  # several refused attempts
        assert not sim.snapshot().stations["SIM-LATE"].connected
        with CitrineOSDouble(ws_port=port) as late:
            sim.wait_connected(timeout=5)
            assert late.connected_stations() == ["SIM-LATE"]
            sim.stop()
    assert_frames_valid(sim.frames())


def test_limit_zero_suspends_then_resumes(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim()
    sid = sim.config.station_ids[0]
    sim.start_session(sid, 1)
    assert send_profile(citrineos_double, sim, sid, 1, profile(sim, 901, 1, "TxProfile", 0)) == "Accepted"
    sim.wait_until(lambda s: statuses(sim, sid, 1)[-1:] == ["SuspendedEVSE"])
    assert sim.snapshot().connector(sid, 1).power_kw == 0
    suspended = max(dt.datetime.fromisoformat(p["timestamp"]) for p in sent(sim, sid, "StatusNotification")
                    if p["status"] == "SuspendedEVSE")
    # The first meter value sampled after the suspension (one sampled before may still be in flight).
    sim.wait_until(lambda s: any(m["t"] > suspended for m in meter_samples(sim, sid)))
    last = next(m for m in meter_samples(sim, sid) if m["t"] > suspended)
    assert last["Power.Active.Import"] == 0.0
    energy = last["Energy.Active.Import.Register"]
    assert send_profile(citrineos_double, sim, sid, 1, profile(sim, 901, 1, "TxProfile", 10)) == "Accepted"
    sim.wait_until(lambda s: statuses(sim, sid, 1)[-1:] == ["Charging"])
    assert statuses(sim, sid, 1) == ["Available", "Preparing", "Charging", "SuspendedEVSE", "Charging"]
    sim.wait_until(lambda s: s.connector(sid, 1).energy_wh > energy + 1)


def test_invalid_profiles_are_refused(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim()
    sid = sim.config.station_ids[0]
    d = citrineos_double
    # No transaction yet: a TxProfile is rejected.
    assert send_profile(d, sim, sid, 1, profile(sim, 1001, 1, "TxProfile", 16)) == "Rejected"
    sim.start_session(sid, 1)
    wait_power(sim, sid, 1, 7.2)
    # CitrineOS lets a negative limit through; the charger answers CALLERROR PropertyConstraintViolation.
    status = send_profile(d, sim, sid, 1, profile(sim, 1002, 1, "TxProfile", -5))
    assert status == "CallError:PropertyConstraintViolation"
    errors = [json.loads(f.text) for f in sim.frames(sid) if f.direction == "send" and f.message_type == 4]
    assert [e[2] for e in errors] == ["PropertyConstraintViolation"]
    assert send_profile(d, sim, sid, 1, profile(sim, 1003, 1, "TxProfile", [(0, 10), (0, 8)])) == "Rejected"
    assert send_profile(d, sim, sid, 5, profile(sim, 1004, 1, "TxDefaultProfile", 10)) == "Rejected"
    snap = sim.snapshot().connector(sid, 1)
    assert snap.power_kw == 7.2 and snap.limit_w is None  # nothing was installed
    log = sim.profile_log(sid)
    assert [e.status for e in log] == ["Rejected", "CallError:PropertyConstraintViolation", "Rejected", "Rejected"]
    assert all(e.reason for e in log)


def test_get_composite_schedule(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim(speed=1.0)
    sid = sim.config.station_ids[0]
    d = citrineos_double
    sim.start_session(sid, 1)
    assert send_profile(d, sim, sid, 0, profile(sim, 1101, 0, "TxDefaultProfile", 20)) == "Accepted"
    assert send_profile(d, sim, sid, 1, profile(sim, 1102, 1, "TxProfile", [(0, 16), (600, 10.5)])) == "Accepted"
    rest(d, "/ocpp/1.6/smartcharging/getCompositeSchedule", sid,
         {"connectorId": 1, "duration": 1200, "chargingRateUnit": "A"})
    deadline = time.monotonic() + 5
    while not [f for f in sim.frames(sid) if f.action == "GetCompositeSchedule" and f.direction == "send"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    answer = next(f for f in sim.frames(sid) if f.action == "GetCompositeSchedule" and f.direction == "send").payload
    assert answer["status"] == "Accepted" and answer["connectorId"] == 1
    periods = answer["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [16.0, 10.5]
    assert periods[0]["startPeriod"] == 0 and 595 <= periods[1]["startPeriod"] <= 600
    assert answer["chargingSchedule"]["chargingRateUnit"] == "A"


def test_remote_start_and_stop_with_a_profile(make_sim: SimFactory, citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim(connectors_per_station=2, default_ev=EVSpec(capacity_kwh=40, arrival_soc=0.5, max_charge_rate_kw=11))
    sid = sim.config.station_ids[0]
    tx_profile = profile(sim, 1201, 1, "TxProfile", 12)
    answer = csms_call(citrineos_double, sid, "RemoteStartTransaction",
                       {"connectorId": 2, "idTag": "REMOTE-1", "chargingProfile": tx_profile})
    assert answer == {"status": "Accepted"}
    snap = sim.wait_until(lambda s: s.connector(sid, 2).transaction_id is not None and s.connector(sid, 2).power_kw > 0)
    c = snap.connector(sid, 2)
    assert (c.limit_w, c.power_kw, c.ev_max_kw, c.id_tag) == (2880.0, 2.88, 11, "REMOTE-1")
    assert sent(sim, sid, "Authorize") == []  # the CSMS authorized the remote start itself
    assert csms_call(citrineos_double, sid, "RemoteStopTransaction", {"transactionId": 999}) == {"status": "Rejected"}
    assert csms_call(citrineos_double, sid, "RemoteStopTransaction",
                     {"transactionId": c.transaction_id}) == {"status": "Accepted"}
    sim.wait_until(lambda s: s.connector(sid, 2).status == "Available" and statuses(sim, sid, 2)[-1:] == ["Available"])
    assert sent(sim, sid, "StopTransaction")[0]["reason"] == "Remote"
    assert statuses(sim, sid, 2) == ["Available", "Preparing", "Charging", "Finishing", "Available"]


def test_every_message_validates_against_the_ocpp16_schemas(make_sim: SimFactory,
                                                            citrineos_double: CitrineOSDouble) -> None:
    sim = make_sim(heartbeat_interval_s=0.2, speed=20.0)
    sid = sim.config.station_ids[0]
    sim.start_session(sid, 1)
    send_profile(citrineos_double, sim, sid, 1, profile(sim, 1301, 1, "TxProfile", [(0, 16), (60, 10.5)]))
    send_profile(citrineos_double, sim, sid, 1, profile(sim, 1302, 2, "TxProfile", -1))
    rest(citrineos_double, "/ocpp/1.6/smartcharging/getCompositeSchedule", sid, {"connectorId": 1, "duration": 300})
    rest(citrineos_double, "/ocpp/1.6/smartcharging/clearChargingProfile", sid, {"id": 1301})
    rest(citrineos_double, "/ocpp/1.6/configuration/triggerMessage", sid, {"requestedMessage": "MeterValues"})
    sim.wait_until(lambda s: len(sent(sim, sid, "Heartbeat")) >= 2 and any(
        f.action == "TriggerMessage" and f.direction == "send" for f in sim.frames(sid)), timeout=5)
    sim.stop_session(sid, 1)
    frames = sim.frames(sid)
    kinds = {(f.message_type, f.action) for f in frames if f.direction == "send"}
    assert {(2, a) for a in ("BootNotification", "StatusNotification", "Authorize", "StartTransaction", "MeterValues",
                             "Heartbeat", "StopTransaction")} <= kinds
    assert {(3, a) for a in ("SetChargingProfile", "GetCompositeSchedule", "ClearChargingProfile",
                             "TriggerMessage")} <= kinds
    assert_frames_valid(frames)
    # The explicit check really checks: a frame breaking the schema is refused.
    with pytest.raises(Exception, match=r"(?i)violation|required"):
        validate_frame('[2,"x","StatusNotification",{"connectorId":1,"status":"Sleeping","errorCode":"NoError"}]')
    with pytest.raises(Exception, match=r"(?i)violation|type"):
        validate_frame('[3,"x",{"status":"Accepted","connectorId":1,"chargingSchedule":{"chargingRateUnit":"A",'
                       '"chargingSchedulePeriod":[{"startPeriod":0,"limit":16.05}]}}]', "GetCompositeSchedule")


def test_default_scenario_runs_six_evs(make_sim: SimFactory) -> None:
    # The built-in sessions, on fresh station ids (the double is shared between tests).
    ids = tuple(f"SIM-{uuid.uuid4().hex[:8].upper()}" for _ in range(6))
    builtin = default_scenario().sessions
    renamed = Scenario(tuple(
        SessionSpec(ids[i], s.connector_id, s.arrive_offset_s, s.depart_offset_s, s.ev, s.id_tag, s.auto_start)
        for i, s in enumerate(builtin)))
    # x60: a loaded machine's ~0.15 s of message latency stays within the 15 s checked below.
    sim = make_sim(station_ids=ids, speed=60.0, meter_values_interval_s=30.0, scenario=renamed)
    peak = sim.wait_until(lambda s: s.active_transactions == 6, timeout=15)
    assert peak.power_kw == pytest.approx(6 * 7.2)
    done = sim.wait_until(lambda s: all(
        statuses(sim, sid, 1)[-1:] == ["Available"] and len(sent(sim, sid, "StopTransaction")) == 1 for sid in ids),
        timeout=25)
    assert done.active_transactions == 0
    for i, sid in enumerate(ids):
        start = sent(sim, sid, "StartTransaction")
        stop = sent(sim, sid, "StopTransaction")
        assert len(start) == 1 and start[0]["idTag"] == f"OPTIVGI-{i + 1:02d}"
        assert stop[0]["reason"] == "EVDisconnected"
        delivered = stop[0]["meterStop"] - start[0]["meterStart"]
        # 7.2 kW for the whole transaction on the simulated clock (at most its 600 s; a first car
        # may lose a little waiting for its station's boot, more so on a loaded machine).
        arrival = dt.datetime.fromisoformat(start[0]["timestamp"])
        stopped = dt.datetime.fromisoformat(stop[0]["timestamp"])
        # (meter values are whole Wh, and the car starts drawing once the station reports Charging)
        assert delivered == pytest.approx(7200 * (stopped - arrival).total_seconds() / 3600, abs=6)
        assert 0 < delivered <= 1201
        # The car plugs in (Preparing) when due, never early. A station still booting when its car is
        # due (the first one, on the fast clock) sends it after its boot-time statuses instead.
        scheduled = sim.clock.origin + dt.timedelta(seconds=60 * i)
        plugged = min(f.sim_time for f in sim.frames(sid) if f.direction == "send" and f.action == "StatusNotification"
                      and '"Preparing"' in f.text)
        # Never early, and before its StartTransaction; how late depends on the machine's speed.
        assert scheduled <= plugged <= arrival
        # The first car may plug in before its station has booted: then Preparing is its first status.
        expected = ["Preparing", "Charging", "Finishing", "Available"]
        assert statuses(sim, sid, 1) in (expected, ["Available", *expected])
