"""OCPP 2.0.1 charging needs (NotifyEVChargingNeeds) override the configured session parameters.

The parsing and the store are tested on their own; the translation is tested end to end: a
session runs in the CitrineOS double (real websockets, PostgreSQL), a NotifyEVChargingNeeds shaped
exactly like the one recorded from CitrineOS 1.8.3 is published on the real RabbitMQ, and
``get_evs`` must show what the car asked for.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
from citrineos_testdouble import CitrineOSDouble, TestChargePoint
from citrineos_testdouble.chargepoint import LoopThread
from support import missing

from optivgi.config import Settings
from optivgi.models.ev import EV, ChargingRateUnit
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.listener import AmqpEvent
from optivgi_citrineos.needs import ChargingNeeds, ChargingNeedsStore, parse_charging_needs
from optivgi_citrineos.sessions import build_ev
from optivgi_citrineos.translation import CitrineOSTranslation, SessionRow

NOW = datetime(2026, 11, 24, 0, 20, 15, tzinfo=UTC)


def recorded_needs() -> dict[str, Any]:
    """The NotifyEVChargingNeeds request (origin cs, state 1) recorded from CitrineOS 1.8.3."""
    path = Path(os.environ["CITRINEOS_CONTRACT_DIR"]) / "amqp-messages-2.0.1.jsonl"
    if not path.is_file():
        missing(f"recording {path} is missing: put the shared folder beside the clone")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            message = json.loads(line)
            headers = message["headers"]
            if (headers["action"], headers["origin"], headers["state"]) == ("NotifyEVChargingNeeds", "cs", "1"):
                return dict(message)
    raise LookupError(f"no NotifyEVChargingNeeds request in {path}")


def needs_payload(**params: Any) -> dict[str, Any]:
    """The recorded payload, with some ``acChargingParameters`` (or top-level keys) replaced."""
    payload = copy.deepcopy(recorded_needs()["body"]["payload"])
    for key, value in params.items():
        if key in ("evseId",):
            payload[key] = value
        elif key in ("departureTime", "requestedEnergyTransfer"):
            payload["chargingNeeds"][key] = value
        else:
            payload["chargingNeeds"]["acChargingParameters"][key] = value
    return dict(payload)


# -- parsing ---------------------------------------------------------------------------------


def test_the_recorded_needs_parse() -> None:
    parsed = parse_charging_needs(recorded_needs()["body"]["payload"], NOW)
    assert parsed.problems == ()
    assert parsed.needs == ChargingNeeds(
        evse_id=1,
        transfer="AC_single_phase",
        dc=False,
        phases=1,
        departure=datetime(2026, 11, 24, 3, 20, 15, tzinfo=UTC),
        energy_wh=30000.0,
        min_current_a=6.0,
        max_current_a=32.0,
        max_voltage_v=240.0,
    )
    needs = parsed.needs
    assert needs.max_power_kw(230.0, 1) == pytest.approx(7.36)
    assert needs.min_power_kw(230.0, 1) == pytest.approx(1.38)


def test_three_phase_ac_uses_three_phases() -> None:
    needs = parse_charging_needs(needs_payload(requestedEnergyTransfer="AC_three_phase", evMaxCurrent=16), NOW).needs
    assert needs is not None and needs.phases == 3
    assert needs.max_power_kw(230.0, needs.phases) == pytest.approx(11.04)


def test_dc_needs_use_the_max_power() -> None:
    payload = {
        "evseId": 2,
        "chargingNeeds": {
            "requestedEnergyTransfer": "DC",
            "departureTime": "2026-11-24T05:00:00+01:00",
            "dcChargingParameters": {"evMaxCurrent": 200, "evMaxVoltage": 500, "energyAmount": 45000,
                                     "evMaxPower": 50000, "stateOfCharge": 40},
        },
    }
    parsed = parse_charging_needs(payload, NOW)
    assert parsed.problems == ()
    needs = parsed.needs
    assert needs is not None and needs.dc and needs.phases is None
    assert needs.departure == datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
    assert needs.max_power_kw(240.0, 1) == 50.0
    assert needs.min_power_kw(240.0, 1) is None  # DC has no minimum current
    del payload["chargingNeeds"]["dcChargingParameters"]["evMaxPower"]
    needs = parse_charging_needs(payload, NOW).needs
    assert needs is not None and needs.max_power_kw(240.0, 1) == 100.0  # 200 A × 500 V, an upper bound


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"energyAmount": -1}, "energy_wh", "energyAmount must be a finite number >= 0"),
        ({"energyAmount": "30000"}, "energy_wh", "energyAmount must be a number"),
        ({"evMaxCurrent": math.nan}, "max_current_a", "evMaxCurrent must be a finite number >= 0"),
        ({"evMaxCurrent": math.inf}, "max_current_a", "evMaxCurrent must be a finite number >= 0"),
        ({"evMinCurrent": True}, "min_current_a", "evMinCurrent must be a number"),
        ({"departureTime": "2026-11-24T00:00:00Z"}, "departure", "is not after now"),
        ({"departureTime": "tomorrow"}, "departure", "not an ISO 8601 date-time"),
        ({"departureTime": "2026-11-24T05:00:00"}, "departure", "no UTC offset"),
        ({"departureTime": 1764000000}, "departure", "must be a date-time string"),
    ],
)
def test_a_bad_field_is_left_out_and_named(change: dict[str, Any], field: str, problem: str) -> None:
    parsed = parse_charging_needs(needs_payload(**change), NOW)
    assert parsed.needs is not None
    assert getattr(parsed.needs, field) is None
    (reported,) = parsed.problems
    assert problem in reported
    # The other fields still count.
    assert parsed.needs.max_current_a == (None if field == "max_current_a" else 32.0)
    assert parsed.needs.energy_wh == (None if field == "energy_wh" else 30000.0)


@pytest.mark.parametrize(
    "make_payload",
    [
        lambda: None,
        lambda: [],
        lambda: needs_payload(evseId=0),
        lambda: needs_payload(evseId="1"),
        lambda: needs_payload(evseId=True),
        lambda: {"evseId": 1},
        lambda: {"evseId": 1, "chargingNeeds": "AC"},
        lambda: {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "AC_single_phase",
                                                "acChargingParameters": 5}},
        lambda: needs_payload(energyAmount=-1, evMinCurrent=math.nan, evMaxCurrent=-6,
                              departureTime="2020-01-01T00:00Z"),
    ],
    ids=[
        "none", "list", "evse-0", "evse-str", "evse-bool", "no-needs", "needs-str", "ac-params-int", "all-bad"
    ],
)
def test_needs_without_anything_usable_are_refused(make_payload: Callable[[], Any]) -> None:
    parsed = parse_charging_needs(make_payload(), NOW)
    assert parsed.needs is None
    assert parsed.problems


def test_an_unknown_transfer_mode_keeps_the_configured_phases() -> None:
    needs = parse_charging_needs(needs_payload(requestedEnergyTransfer="AC_BPT"), NOW).needs
    assert needs is not None and not needs.dc and needs.phases is None and needs.max_current_a == 32.0


# -- the store -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def some_needs(evse: int = 1) -> ChargingNeeds:
    return ChargingNeeds(evse_id=evse, energy_wh=20000.0)


def test_the_store_binds_needs_to_the_first_transaction() -> None:
    store = ChargingNeedsStore()
    store.update("S", some_needs())
    assert store.get("S", 1, "7") == some_needs()
    assert store.get("S", 1, "7") == some_needs()
    assert store.get("S", 2, "8") is None
    # Another transaction on the EVSE is another car: the needs are not its.
    assert store.get("S", 1, "9") is None
    assert len(store) == 0


def test_the_store_drops_needs_when_their_transaction_ends() -> None:
    store = ChargingNeedsStore()
    store.update("S", some_needs(1))
    store.update("S", some_needs(2))
    store.update("OTHER", some_needs(1))
    assert store.get("S", 1, "7") is not None
    assert store.transaction_ended("S", "8") == [2]  # tx 8 never read: the unbound needs of S go
    assert store.peek("S", 1) is not None and store.peek("OTHER", 1) is not None
    assert store.transaction_ended("S", "7") == [1]
    assert len(store) == 1


def test_a_stop_finds_the_connector_of_needs_not_yet_bound() -> None:
    store = ChargingNeedsStore()
    assert store.get("S", 1, "7") is None  # a cycle read tx 7 on connector 1 before the needs came
    store.update("S", some_needs(1))
    store.update("S", some_needs(2))
    assert store.transaction_ended("S", "7") == [1]
    assert store.transaction_ended("S", "5", evse_id=2) == [2]  # a 2.0.1 Ended names its EVSE
    assert len(store) == 0


def test_needs_expire() -> None:
    clock = FakeClock()
    store = ChargingNeedsStore(max_age_s=60, clock=clock)
    store.update("S", some_needs(1))
    store.update("S", some_needs(2))
    clock.t += 61
    assert store.get("S", 1, "7") is None
    store.prune({"S"}, set())
    assert len(store) == 0
    with pytest.raises(ValueError, match="max_age_s"):
        ChargingNeedsStore(max_age_s=0)


# -- the translation, without services -------------------------------------------------------


def offline_translation(**extra: str) -> CitrineOSTranslation:
    """A translation that only builds EVs (nothing is contacted)."""
    values = {
        "CITRINEOS_API_URL": "http://127.0.0.1:9",
        "HASURA_URL": "http://127.0.0.1:9",
        "STATION_IDS": "ST-01",
        "SITE_POWER_LIMIT_KW": "30",
        "CONN_01_ENERGY_NEEDED_KWH": "10",
        "CONN_01_MIN_POWER_KW": "0.5",
        **extra,
    }
    settings = Settings(station_groups=("default",), site_power_limit_kw=30.0, voltage=240.0,
                        resolution_s=60, horizon_s=60 * 480, values=values)
    return CitrineOSTranslation(CitrineOSConfig.from_settings(settings), clock=lambda: NOW)


def event(station: str, action: str, payload: Any) -> AmqpEvent:
    return AmqpEvent(action=action, origin="cs", state=1, station_id=station, correlation_id="c", tenant_id="1",
                     payload=payload)


ROW = SessionRow(station_id="ST-01", transaction_id="7", connector_id=1, start_time=NOW - timedelta(hours=1),
                 meter_start_wh=1000.0,
                 sampled_values=({"measurand": "Energy.Active.Import.Register", "value": "3500", "unit": "Wh"},))


def test_needs_override_the_configuration_and_are_clamped_to_a_configured_max() -> None:
    t = offline_translation()
    before = build_ev(t.config, ROW, NOW, t.charging_needs)
    assert (before.energy, before.max_power, before.min_power) == (pytest.approx(7.5), 7.2, 0.5)  # configured
    assert before.departure_time == NOW + timedelta(hours=8)  # horizon end

    t._on_event(event("ST-01", "NotifyEVChargingNeeds", needs_payload()))
    ev = build_ev(t.config, ROW, NOW, t.charging_needs)
    assert ev.departure_time == datetime(2026, 11, 24, 3, 20, 15, tzinfo=UTC)
    assert ev.energy == pytest.approx(27.5)  # 30 kWh asked for, 2.5 kWh already delivered
    assert ev.max_power == pytest.approx(7.68)  # 32 A × 240 V: only the built-in 7.2 kW default was there
    assert ev.min_power == pytest.approx(1.44)
    assert ev.phases == 1

    clamped = offline_translation(CONN_01_MAX_POWER_KW="3.6")
    clamped._on_event(event("ST-01", "NotifyEVChargingNeeds", needs_payload()))
    ev = build_ev(clamped.config, ROW, NOW, clamped.charging_needs)
    assert (ev.max_power, ev.min_power) == (3.6, pytest.approx(1.44))  # never above the configured max
    small = offline_translation(CONN_01_MAX_POWER_KW="1")
    small._on_event(event("ST-01", "NotifyEVChargingNeeds", needs_payload()))
    ev = build_ev(small.config, ROW, NOW, small.charging_needs)
    assert (ev.max_power, ev.min_power) == (1.0, 1.0)  # the car's minimum cannot exceed the maximum


def test_a_three_phase_car_carries_its_phases_and_energy_never_goes_negative() -> None:
    t = offline_translation(CONN_01_MAX_POWER_KW="22")
    t._on_event(event("ST-01", "NotifyEVChargingNeeds",
                      needs_payload(requestedEnergyTransfer="AC_three_phase", evMaxCurrent=16, energyAmount=2000)))
    ev = build_ev(t.config, ROW, NOW, t.charging_needs)
    assert (ev.phases, ev.max_power, ev.energy) == (3, pytest.approx(11.52), 0.0)


def test_a_departure_that_passed_since_falls_back_to_the_configured_one() -> None:
    t = offline_translation()
    t._on_event(event("ST-01", "NotifyEVChargingNeeds", needs_payload()))
    later = NOW + timedelta(hours=4)
    ev = build_ev(t.config, ROW, later, t.charging_needs)
    assert ev.departure_time == later + timedelta(hours=8)
    assert ev.energy == pytest.approx(27.5)


def test_a_transaction_event_ended_drops_the_needs_of_its_evse() -> None:
    t = offline_translation()
    t._on_event(event("ST-01", "NotifyEVChargingNeeds", needs_payload()))
    t._on_event(event("ST-01", "TransactionEvent", {"eventType": "Ended", "evse": {"id": 1},
                                                      "transactionInfo": {"transactionId": "abc"}}))
    assert t.charging_needs.peek("ST-01", 1) is None
    assert build_ev(t.config, ROW, NOW, t.charging_needs).energy == pytest.approx(7.5)


# -- end to end: the double, RabbitMQ, the translation ----------------------------------------

AMQP_TIMEOUT_S = 10.0


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as thread:
        yield thread


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """Translations and charge points to close after the test, with the loop that runs the latter."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        if isinstance(item, CitrineOSTranslation):
            item.teardown()
        else:
            loop, cp = item
            loop.run(cp.close())


def start_session(double: CitrineOSDouble, loop: LoopThread, station: str, opened: list[Any]) -> TestChargePoint:
    """One session on connector 1: meterStart 5 kWh, 2 kWh delivered so far."""
    tag = f"TAG-{station}"
    double.seed_id_tag(tag)
    cp = TestChargePoint(station, double.ws_url, id_tag=tag)
    loop.run(cp.connect())
    opened.append((loop, cp))
    loop.run(cp.start_session(meter_start_wh=5000))
    loop.run(cp.send_meter_values(energy_wh=7000, power_w=7200, current_a=30.0))
    return cp


def open_translation(double: CitrineOSDouble, stations: list[str], opened: list[Any],
                     **extra: str) -> CitrineOSTranslation:
    values = {
        "CITRINEOS_API_URL": double.rest_url,
        "HASURA_URL": double.graphql_url,
        "AMQP_URL": double.amqp_url,
        "CITRINEOS_EXCHANGE": double.exchange,
        "CITRINEOS_TENANT_ID": str(double.tenant_id),
        "CITRINEOS_FALLBACK": "off",
        "STATION_IDS": ",".join(stations),
        "SITE_POWER_LIMIT_KW": "30",
        "CITRINEOS_HTTP_TIMEOUT_S": "5",
        **{f"CONN_{i:02d}_ENERGY_NEEDED_KWH": "10" for i in range(1, len(stations) + 1)},
        **extra,
    }
    settings = Settings(station_groups=("default",), site_power_limit_kw=30.0, voltage=240.0,
                        charging_rate_unit=ChargingRateUnit.A, resolution_s=60, horizon_s=60 * 480, values=values)
    t = CitrineOSTranslation.from_settings(settings)
    opened.append(t)
    t.setup()
    assert t.listener is not None and t.listener.wait_ready(10), "the run's RabbitMQ is not reachable"
    return t


def publish_needs(double: CitrineOSDouble, station: str, evse: int, departure: str | None = None,
                  **params: Any) -> None:
    """Publish the recorded NotifyEVChargingNeeds for ``station`` the way CitrineOS does.

    Only the station, EVSE, correlation id, timestamps and departure (the recording's +3 h, from
    now) are substituted, plus any ``acChargingParameters`` given.
    """
    message = recorded_needs()
    now = datetime.now(UTC)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    correlation = str(uuid.uuid4())
    headers = dict(message["headers"], stationId=station, correlationId=correlation, timestamp=stamp)
    body = copy.deepcopy(message["body"])
    body["context"].update(stationId=station, correlationId=correlation, timestamp=stamp)
    payload = body["payload"]
    payload["evseId"] = evse
    payload["chargingNeeds"]["departureTime"] = departure or (now + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload["chargingNeeds"]["acChargingParameters"].update(params)
    connection = pika.BlockingConnection(pika.URLParameters(double.amqp_url))
    try:
        connection.channel().basic_publish(
            exchange=double.exchange,
            routing_key=message["routing_key"],
            body=json.dumps(body),  # NaN stays NaN, as a JavaScript-free producer could send it
            properties=pika.BasicProperties(content_type=message["content_type"], headers=headers),
        )
    finally:
        connection.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + AMQP_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def the_ev(t: CitrineOSTranslation, station: str) -> EV:
    evs, _ = t.get_evs("default")
    (ev,) = [ev for ev in evs if ev.station_id == station]
    return ev


def test_published_needs_override_departure_energy_and_max_power(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any]
) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    free, capped = f"NEEDS-{tag}-1", f"NEEDS-{tag}-2"
    for station in (free, capped):
        start_session(citrineos_double, loop, station, opened)
    # The first station only has the built-in 7.2 kW maximum, the second a configured 3.6 kW.
    t = open_translation(citrineos_double, [free, capped], opened, CONN_02_MAX_POWER_KW="3.6")
    before = the_ev(t, free)
    assert (before.energy, before.max_power) == (pytest.approx(8.0), 7.2)  # 10 kWh configured, 2 delivered

    departure = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    for station in (free, capped):
        publish_needs(citrineos_double, station, 1, departure.strftime("%Y-%m-%dT%H:%M:%SZ"))
    wait_for(lambda: all(t.charging_needs.peek(s, 1) is not None for s in (free, capped)), "the needs on RabbitMQ")

    ev = the_ev(t, free)
    assert ev.departure_time == departure
    assert ev.energy == pytest.approx(28.0)  # 30 kWh asked for, 2 kWh delivered
    assert ev.max_power == pytest.approx(7.68)  # 32 A × 240 V × 1 phase
    assert ev.min_power == pytest.approx(1.44)  # 6 A
    ev = the_ev(t, capped)
    assert (ev.departure_time, ev.energy) == (departure, pytest.approx(28.0))
    assert ev.max_power == 3.6  # never above the configured maximum


def test_invalid_needs_are_ignored_with_a_log_line(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any], station_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "optivgi_citrineos")
    start_session(citrineos_double, loop, station_id, opened)
    t = open_translation(citrineos_double, [station_id], opened)
    before = the_ev(t, station_id)

    publish_needs(citrineos_double, station_id, 1, "2020-01-01T00:00:00Z", energyAmount=-30000, evMaxCurrent=math.nan)
    wait_for(lambda: t.charging_needs.peek(station_id, 1) is not None, "the needs on RabbitMQ")
    ev = the_ev(t, station_id)
    # Each bad field keeps the configured value; the valid evMinCurrent still counts.
    assert (ev.energy, ev.max_power) == (before.energy, before.max_power)
    # Still the horizon end (8 h ahead), not 2020.
    assert abs((ev.departure_time - before.departure_time).total_seconds()) < 60
    assert ev.min_power == pytest.approx(1.44)
    for problem in ("energyAmount must be a finite number >= 0, got -30000",
                    "evMaxCurrent must be a finite number >= 0, got nan",
                    "departureTime 2020-01-01T00:00:00Z is not after now"):
        assert f"NotifyEVChargingNeeds from {station_id} EVSE 1: ignoring invalid value: " in caplog.text
        assert problem in caplog.text

    # Nothing usable at all: the message is dropped and the listener keeps going.
    publish_needs(citrineos_double, station_id, 0)
    wait_for(lambda: f"NotifyEVChargingNeeds from {station_id} EVSE 0 ignored" in caplog.text, "the refusal")
    assert t.listener is not None and t.listener.is_consuming
    assert the_ev(t, station_id).min_power == pytest.approx(1.44)


def test_needs_are_dropped_when_the_transaction_stops(
    citrineos_double: CitrineOSDouble, loop: LoopThread, opened: list[Any], station_id: str
) -> None:
    cp = start_session(citrineos_double, loop, station_id, opened)
    t = open_translation(citrineos_double, [station_id], opened)
    publish_needs(citrineos_double, station_id, 1)
    wait_for(lambda: t.charging_needs.peek(station_id, 1) is not None, "the needs on RabbitMQ")
    assert the_ev(t, station_id).energy == pytest.approx(28.0)

    loop.run(cp.stop_transaction())
    wait_for(lambda: t.charging_needs.peek(station_id, 1) is None, "the needs to be dropped")
    evs, _ = t.get_evs("default")
    assert [ev for ev in evs if ev.station_id == station_id] == []

    # The next car on the connector gets the configured values again.
    loop.run(cp.start_session(meter_start_wh=9000, boot=False))
    ev = the_ev(t, station_id)
    assert ev.transaction_id == "2"
    assert (ev.energy, ev.max_power, ev.min_power) == (10.0, 7.2, 0.0)
