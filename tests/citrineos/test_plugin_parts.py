"""The plugin's parts without services: session rows, wire format, lost arrivals, retry policy."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optivgi.config import Settings
from optivgi.errors import CSMSConnectionError
from optivgi.models.ev import ChargingRateUnit
from optivgi.models.profile import ChargingProfile
from optivgi_citrineos.client import CitrineOSClient, GaveUp, _Retry, as_csms_error, retrying
from optivgi_citrineos.config import CitrineOSConfig
from optivgi_citrineos.events import ARRIVAL_WAIT_S, EventBook
from optivgi_citrineos.listener import AmqpEvent
from optivgi_citrineos.needs import ChargingNeedsStore
from optivgi_citrineos.sessions import SessionBook, SessionRow
from optivgi_citrineos.wire import envelope, fallback_id, hold_id, limit_kw, tx_profile_id

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def config(**extra: str) -> CitrineOSConfig:
    values = {"CITRINEOS_API_URL": "http://127.0.0.1:9", "HASURA_URL": "http://127.0.0.1:9",
              "STATION_IDS": "A,B", "SITE_POWER_LIMIT_KW": "20", **extra}
    return CitrineOSConfig.from_settings(Settings(voltage=240.0, values=values))


def graphql_row(station: str = "A", tx: str = "1", connector: Any = 1, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": 1, "stationId": station, "transactionId": tx, "isActive": True,
                           "startTime": "2026-12-01T11:00:00+00:00", "meterStart": 1000,
                           "Connector": {"id": 3, "connectorId": connector},
                           "MeterValues": [{"sampledValue": [{"value": 3000, "measurand":
                                                              "Energy.Active.Import.Register"}]}]}
    row.update(fields)
    return row


def read(book: SessionBook, rows: list[dict[str, Any]], stations: tuple[str, ...] = ("A", "B")) -> Any:
    return book.read(book.rows_from_graphql(rows), stations, NOW)


@pytest.mark.parametrize(("field", "damage"), [
    ("Connector.connectorId", {"Connector": {"connectorId": True}}),
    ("meterStart", {"meterStart": "NaN"}),
    ("meterStart", {"meterStart": False}),
    ("startTime", {"startTime": "yesterday"}),
    ("MeterValues.sampledValue", {"MeterValues": [{"sampledValue": [{"value": 5, "measurand":
        "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh", "multiplier": 309}}]}]}),
    ("MeterValues.sampledValue", {"MeterValues": [{"sampledValue": "{not json"}]}),
])
def test_a_bad_field_skips_its_row_names_it_and_leaves_the_connector_at_worst_case(
        field: str, damage: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    book = SessionBook(config(), ChargingNeedsStore())
    read(book, [graphql_row(), graphql_row("B")])  # first read: both fine, connectors remembered
    caplog.set_level(logging.WARNING, "optivgi_citrineos")
    result = read(book, [graphql_row(**damage), graphql_row("B")])
    assert [ev.ev_id for ev in result.evs] == ["B:1"]
    assert [(u.station_id, u.connector_id) for u in result.unknown] == [("A", 1)]
    assert "session A:1 skipped" in caplog.text and field in caplog.text


def test_a_row_with_a_null_connector_keeps_the_connector_it_was_seen_on() -> None:
    book = SessionBook(config(), ChargingNeedsStore())
    read(book, [graphql_row(connector=2)])
    result = read(book, [graphql_row(Connector=None)])
    assert result.evs == [] and [(u.station_id, u.connector_id) for u in result.unknown] == [("A", 2)]
    # Never seen: the whole station's unplanned connectors are unknown.
    fresh = SessionBook(config(), ChargingNeedsStore())
    assert [u.connector_id for u in read(fresh, [graphql_row(Connector=None)]).unknown] == [None]


def test_connector_zero_is_refused_and_duplicates_are_an_error(caplog: pytest.LogCaptureFixture) -> None:
    book = SessionBook(config(), ChargingNeedsStore())
    caplog.set_level(logging.WARNING, "optivgi_citrineos")
    result = read(book, [graphql_row(connector=0), graphql_row("B", "7"),
                         graphql_row("B", "8", startTime="2026-12-01T11:30:00+00:00")])
    assert "session A:1 refused: it is on connector 0" in caplog.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "B:7" in errors[0].getMessage() and "B:8" in errors[0].getMessage()
    assert [ev.ev_id for ev in result.evs] == ["B:8"]  # planned as one: the latest start
    assert [(u.station_id, u.connector_id) for u in result.unknown] == [("B", 1)]
    with pytest.raises(ValueError, match="connector >= 1"):
        tx_profile_id(9000, 0)


def test_per_session_state_ends_with_the_session() -> None:
    book = SessionBook(config(), ChargingNeedsStore())
    for i in range(500):  # a day of churn: one session after another
        read(book, [graphql_row(tx=str(i))])
    assert len(book.connector_of) == 1


def test_strangers_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    book = SessionBook(config(), ChargingNeedsStore())
    caplog.set_level(logging.ERROR, "optivgi_citrineos")
    rows = [SessionRow("STRANGER", "1", 1)]
    book.strangers(rows)
    book.strangers(rows)
    assert caplog.text.count("station STRANGER is not configured") == 1


def test_profile_ids_never_collide_and_units_are_read_once() -> None:
    assert len({fallback_id(9000), hold_id(9000), *(tx_profile_id(9000, c) for c in range(1, 50))}) == 51
    assert limit_kw(ChargingRateUnit.W, 3680.0, 240.0) == pytest.approx(3.68)  # watts on the wire
    assert limit_kw(ChargingRateUnit.A, 16.0, 240.0) == pytest.approx(3.84)
    profile = ChargingProfile.from_power([3.68], start=NOW, resolution_s=60, unit="W")
    assert envelope(None, 1, profile)["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0][
        "limit"] == 3680.0
    assert "evseId" in envelope("2.0.1", 1, profile)


class _Mono:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _start(station: str, connector: int) -> AmqpEvent:
    return AmqpEvent(origin="cs", action="StartTransaction", state=1, station_id=station,
                     correlation_id="c", tenant_id="1",
                     payload={"connectorId": connector, "idTag": "T", "meterStart": 0, "timestamp": "x"})


def test_a_start_missing_from_the_read_asks_for_another_read_until_it_appears() -> None:
    mono = _Mono()
    book = EventBook(ChargingNeedsStore(), lambda: NOW, lambda s, c: False, lambda s, r: None, monotonic=mono)
    asked = threading.Event()
    reasons: list[str] = []
    book.trigger = lambda reason: (reasons.append(reason), asked.set())  # type: ignore[func-returns-value]
    book.feed(_start("A", 1))
    book.after_read(["A"], present=set())
    assert asked.wait(5), "no re-read was asked for"
    assert "A connector 1 not read yet" in reasons[0]
    asked.clear()
    book.after_read(["A"], present={("A", 1)})  # it appeared: nothing more
    assert not asked.wait(0.6)
    book.feed(_start("A", 2))
    mono.t += ARRIVAL_WAIT_S + 1  # bounded: given up after the wait
    book.after_read(["A"], present=set())
    assert not asked.wait(0.6)


def test_one_retry_policy_and_one_mapping_of_transport_errors() -> None:
    cfg = config(CITRINEOS_RETRY_INITIAL_S="0.01", CITRINEOS_RETRY_MAX_S="0.02")
    calls: list[int] = []
    pauses: list[float] = []

    def attempt() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise _Retry("down", connection=True)
        return 7

    import time as _time
    assert retrying(cfg, _time.monotonic() + 10, sleep=pauses.append)(attempt) == 7
    assert len(calls) == 3 and len(pauses) == 2 and all(0 <= p <= 0.02 for p in pauses)
    with pytest.raises(GaveUp) as info:
        retrying(cfg, _time.monotonic() - 1, sleep=pauses.append)(lambda: (_ for _ in ()).throw(
            _Retry("refused", connection=True)))
    assert isinstance(as_csms_error(info.value), CSMSConnectionError)
    client = CitrineOSClient(cfg)
    with pytest.raises(CSMSConnectionError, match="Hasura"):
        client.graphql("Op", "query", {}, _time.monotonic() + 0.2)
    client.close()


def test_profile_spec_is_what_goes_on_the_wire() -> None:
    from optivgi_citrineos.translation import CitrineOSTranslation

    t = CitrineOSTranslation(config(CHARGING_RATE_UNIT="A"))
    from optivgi.models.ev import EV

    ev = EV(ev_id="A:1", station_id="A", connector_id=2, arrival_time=NOW, departure_time=NOW + timedelta(hours=1),
            energy=1, max_power=7.2, transaction_id="1")
    spec = t.profile_spec(ev)
    assert (spec.charging_profile_id, spec.stack_level) == (9002, 1)
