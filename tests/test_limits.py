"""Live site limits: constant, time of day, HTTP (a real server on 127.0.0.1) and the plugin loader.

The MQTT source has its own module (it needs the broker)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from optivgi.errors import ConfigurationError, PluginError
from optivgi.limits import ConstantLimit, ReadingSource, ScheduleLimit, load_limit_source, parse_payload
from optivgi.limits.http import HttpJsonLimit

T0 = datetime(2026, 1, 5, 16, 0, tzinfo=UTC)


class ManualClock:
    """A clock the test moves by hand; real waits are as long as clock waits."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def real_seconds(self, seconds: float) -> float:
        return seconds

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


class Triggers:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.fired = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.fired.set()


# -- constant and schedule ------------------------------------------------------------------------
def test_constant() -> None:
    src = ConstantLimit(30)
    assert src.series(T0, 60, 3).tolist() == [30.0, 30.0, 30.0]
    assert src.limit_kw(T0) == 30.0 and src.lowest_kw() == 30.0
    with pytest.raises(ValueError, match="'kw' must be a finite number >= 0"):
        ConstantLimit(-1)


def test_schedule_steps_wrap_and_time_zone() -> None:
    src = ScheduleLimit([{"at": "07:00", "kw": 30}, {"at": "17:00", "kw": 15}, ("22:00", 40)])
    at = [src.limit_kw(T0.replace(hour=h)) for h in (0, 6, 7, 16, 17, 21, 22, 23)]
    assert at == [40, 40, 30, 30, 15, 15, 40, 40]
    assert src.lowest_kw() == 15
    # 15-minute steps from 16:30: the 17:00 drop starts the third step.
    assert src.series(T0.replace(minute=30), 900, 4).tolist() == [30, 30, 15, 15]
    # A drop inside a step counts for the whole step (17:05 inside 17:00-17:15).
    inside = ScheduleLimit([("00:00", 30), ("17:05", 15)])
    assert inside.series(T0.replace(hour=16, minute=45), 900, 3).tolist() == [30, 15, 15]
    # "17:00" in Chicago is 23:00 UTC in January.
    chicago = ScheduleLimit([("00:00", 30), ("17:00", 15)], timezone="America/Chicago")
    assert chicago.limit_kw(T0.replace(hour=22, minute=59)) == 30
    assert chicago.limit_kw(T0.replace(hour=23)) == 15


@pytest.mark.parametrize(("steps", "tz", "message"), [
    ([], "UTC", "non-empty list"),
    ([{"at": "25:00", "kw": 1}], "UTC", r"steps\[0\].at must be a time of day"),
    ([{"at": "10:00", "kw": -1}], "UTC", r"steps\[0\].kw must be a finite number >= 0"),
    ([{"at": "10:00", "kw": 1, "extra": 2}], "UTC", "exactly the keys"),
    ([("10:00", 1), ("10:00", 2)], "UTC", "same time twice"),
    ([("10:00", 1)], "Mars/Olympus", "IANA time zone"),
])
def test_schedule_errors(steps: Any, tz: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScheduleLimit(steps, timezone=tz)


# -- readings: staleness, drops, forecasts --------------------------------------------------------
class Pushed(ReadingSource):
    name = "pushed"


def test_stale_reading_means_the_floor_never_the_last_good_value() -> None:
    clock, triggers = ManualClock(), Triggers()
    src = Pushed(floor_kw=6.0, timeout_s=30, clock=clock, trigger=triggers)
    assert src.limit_kw() == 6.0  # nothing read yet
    src.update(30.0)
    assert src.limit_kw() == 30.0
    clock.advance(29.9)
    assert src.limit_kw() == 30.0
    clock.advance(0.1)
    assert src.limit_kw() == 6.0 and src.series(clock.now(), 60, 3).tolist() == [6.0] * 3
    assert triggers.reasons == []  # nobody looked yet: poll() is what notices
    assert src.poll() == 6.0
    assert triggers.reasons == ["site limit dropped from 30 to 6 kW (pushed)"]
    src.update(20.0)  # a rise does not trigger
    assert len(triggers.reasons) == 1 and src.limit_kw() == 20.0


def test_a_drop_triggers_at_once() -> None:
    clock, triggers = ManualClock(), Triggers()
    src = Pushed(floor_kw=0.0, timeout_s=60, clock=clock, trigger=triggers)
    src.update(30.0)
    src.update(30.0)
    assert triggers.reasons == []
    src.update(15.0)
    assert triggers.reasons == ["site limit dropped from 30 to 15 kW (pushed)"]


def test_forecast_is_planned_for_and_capped() -> None:
    clock = ManualClock()
    src = Pushed(floor_kw=5.0, timeout_s=600, max_kw=50, clock=clock)
    # Now 30 kW; a demand-response event 16:02-16:04 at 12 kW, then 80 kW (capped at 50).
    src.update(30.0, [(T0 + timedelta(minutes=2), 12.0), (T0 + timedelta(minutes=4), 80.0),
                      (T0 - timedelta(minutes=5), 1.0)])
    assert src.series(T0, 60, 6).tolist() == [30, 30, 12, 12, 50, 50]
    # A change inside a step takes the lower value for that step.
    assert src.series(T0 + timedelta(seconds=30), 60, 5).tolist() == [30, 12, 12, 12, 50]
    clock.advance(600)
    assert src.series(clock.now(), 60, 2).tolist() == [5, 5]


@pytest.mark.parametrize(("doc", "field", "scale", "expected"), [
    (27.5, "limit_kw", 1.0, (27.5, ())),
    ({"limit_kw": 12}, "limit_kw", 1.0, (12.0, ())),
    ({"site": {"headroom_w": 15000}}, "site.headroom_w", 0.001, (15.0, ())),
    ({"limit_kw": 30, "forecast": [{"at": "2026-01-05T17:00:00Z", "kw": 15}]}, "limit_kw", 1.0,
     (30.0, ((datetime(2026, 1, 5, 17, tzinfo=UTC), 15.0),))),
])
def test_parse_payload(doc: Any, field: str, scale: float, expected: Any) -> None:
    assert parse_payload(doc, field=field, scale=scale) == expected


@pytest.mark.parametrize(("doc", "message"), [
    ({"kw": 3}, "field 'limit_kw' is missing"),
    ({"limit_kw": "3"}, "must be a finite number >= 0"),
    ({"limit_kw": -3}, "must be a finite number >= 0"),
    (float("nan"), "must be a finite number"),
    ({"limit_kw": 3, "forecast": 5}, "must be a list"),
    ({"limit_kw": 3, "forecast": [{"at": "2026-01-05T17:00:00", "kw": 1}]}, "must carry a time zone"),
    ({"limit_kw": 3, "forecast": [{"at": "soon", "kw": 1}]}, "must be an ISO 8601"),
    ({"limit_kw": 3, "forecast": [{"at": "2026-01-05T17:00:00Z"}]}, "'at' and 'kw' only"),
])
def test_parse_payload_errors(doc: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_payload(doc)


# -- HTTP -----------------------------------------------------------------------------------------
class Endpoint:
    """A real HTTP server on 127.0.0.1 answering whatever the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"{}"
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(endpoint.body)))
                self.end_headers()
                self.wfile.write(endpoint.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/limit"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, doc: Any, status: int = 200) -> None:
        self.body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.status = status

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


def test_http_reads_drops_and_goes_stale(endpoint: Endpoint) -> None:
    clock, triggers = ManualClock(), Triggers()
    src = HttpJsonLimit(endpoint.url, floor_kw=8.0, timeout_s=30, clock=clock, trigger=triggers)
    endpoint.answer({"limit_kw": 30, "forecast": [{"at": "2026-01-05T16:01:00Z", "kw": 20}]})
    reading = src.fetch()
    assert reading is not None and reading.kw == 30 and src.series(T0, 60, 3).tolist() == [30, 20, 20]
    endpoint.answer({"limit_kw": 15})
    src.fetch()
    assert src.limit_kw() == 15 and triggers.reasons == ["site limit dropped from 30 to 15 kW (http)"]
    # The endpoint fails: the last reading ages, then the floor, and the drop triggers.
    endpoint.answer({"error": "meter offline"}, status=503)
    clock.advance(20)
    assert src.fetch() is None and src.limit_kw() == 15
    endpoint.answer(b"not json")
    clock.advance(10)
    assert src.fetch() is None and src.failures == 2
    assert src.limit_kw() == 8.0
    assert triggers.reasons[-1] == "site limit dropped from 15 to 8 kW (http)"
    endpoint.answer({"limit_kw": 25})
    assert src.fetch() is not None and src.limit_kw() == 25
    assert endpoint.requests == 5


def test_http_unreachable_is_the_floor() -> None:
    src = HttpJsonLimit("http://127.0.0.1:9/limit", floor_kw=4.0, timeout_s=30, request_timeout_s=1,
                        clock=ManualClock())
    assert src.fetch() is None and src.limit_kw() == 4.0


def test_http_polls_in_the_background(endpoint: Endpoint) -> None:
    endpoint.answer(17.5)
    src = HttpJsonLimit(endpoint.url, floor_kw=0.0, timeout_s=3600, interval_s=3600)
    with src:
        assert src.wait_for_update(0, timeout_s=30)
        assert src.limit_kw() == 17.5
    assert src._thread is None


# -- the plugin loader ----------------------------------------------------------------------------
def test_load_limit_source_by_name(endpoint: Endpoint) -> None:
    clock = ManualClock()
    src = load_limit_source({"source": "schedule", "steps": [{"at": "00:00", "kw": 22}]}, clock=clock)
    assert isinstance(src, ScheduleLimit) and src.limit_kw() == 22
    http = load_limit_source({"source": "http", "url": endpoint.url, "floor_kw": 3}, clock=clock)
    assert isinstance(http, HttpJsonLimit) and http.limit_kw() == 3
    mqtt = load_limit_source({"source": "mqtt", "topic": "site/limit", "floor_kw": 3, "timeout_s": 9})
    assert mqtt.name == "mqtt" and mqtt.lowest_kw() == 3


@pytest.mark.parametrize(("spec", "error", "message"), [
    ({"source": "solar"}, PluginError, "unknown limit source 'solar'"),
    ({"kw": 3}, ConfigurationError, "limit_source.source: required"),
    ({"source": "constant", "kw": 3, "kilowatts": 4}, ConfigurationError, "limit_source.kilowatts: unknown option"),
    ({"source": "mqtt", "topic": "a"}, ConfigurationError, "limit_source.floor_kw: required option"),
    ({"source": "mqtt", "topic": "a/#", "floor_kw": 1}, ConfigurationError, "without wildcards"),
    ({"source": "http", "url": "ftp://x", "floor_kw": 1}, ConfigurationError, "http:// or https://"),
])
def test_load_limit_source_errors(spec: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        load_limit_source(spec)


def test_entry_points_list_the_built_ins() -> None:
    from optivgi.limits import LIMITS_GROUP
    from optivgi.plugins import available

    assert {"constant", "schedule", "http", "mqtt"} <= {p.name for p in available(LIMITS_GROUP)}
    assert np.isfinite(ConstantLimit(1).series(T0, 60, 1)).all()
