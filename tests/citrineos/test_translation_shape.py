"""The request bodies the translation builds have the shape recorded from a real CitrineOS 1.8.3."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import missing

from optivgi.config import Settings
from optivgi.models.ev import EV
from optivgi.models.profile import ChargingProfile
from optivgi_citrineos.translation import CitrineOSTranslation


def recorded(name: str) -> dict[str, Any]:
    path = Path(os.environ["CITRINEOS_CONTRACT_DIR"]) / "rest" / name
    if not path.is_file():
        missing(f"recording {path} is missing: put the shared folder beside the clone")
    return json.loads(path.read_text(encoding="utf-8"))["request"]


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (numbers are one type: CitrineOS writes 16.0 as 16)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def built_body(station: str, **extra: str) -> dict[str, Any]:
    values = {
        "CITRINEOS_API_URL": "http://127.0.0.1:9",
        "HASURA_URL": "http://127.0.0.1:9",
        "STATION_IDS": station,
        "SITE_POWER_LIMIT_KW": "30",
        "CHARGING_RATE_UNIT": "A",
        **extra,
    }
    t = CitrineOSTranslation.from_settings(Settings(voltage=240.0, values=values))
    now = datetime(2026, 11, 24, tzinfo=UTC)
    tx = "a03a85bbf1314b5e" if "CITRINEOS_OCPP201_STATIONS" in extra else "1"
    ev = EV(ev_id=f"{station}:{tx}", station_id=station, connector_id=1, arrival_time=now,
            departure_time=now.replace(year=2027), energy=10, max_power=7.2, voltage=240, transaction_id=tx)
    profile = ChargingProfile.from_power([4.992], start=now, resolution_s=60, unit="A", voltage=240,
                                         transaction_id=tx)
    return t._prepare(ev, profile).body


@pytest.mark.parametrize(("version", "record"), [("2.0.1", "setChargingProfile-2.0.1-ok.json"),
                                                 ("1.6", "setChargingProfile-1.6-ok.json")])
def test_body_has_the_recorded_shape(version: str, record: str) -> None:
    extra = {"CITRINEOS_OCPP201_STATIONS": "ST-1"} if version == "2.0.1" else {}
    want = recorded(record)["body"]
    # Without validTo the body is exactly the recorded one, key for key and type for type.
    body = built_body("ST-1", CITRINEOS_PROFILE_VALIDITY_S="0", **extra)
    assert shape(body) == shape(want)
    # With the default validity the only addition is validTo, a date-time string.
    body = built_body("ST-1", **extra)
    key = "chargingProfile" if version == "2.0.1" else "csChargingProfiles"
    valid_to = body[key].pop("validTo")
    assert datetime.fromisoformat(valid_to.replace("Z", "+00:00")) > datetime.now(UTC)
    assert shape(body) == shape(want)
    profile = body[key]
    assert profile["stackLevel"] > 0  # above CitrineOS's own smart charging (stackLevel 0)
    assert profile["chargingProfilePurpose"] == "TxProfile"
    schedule = profile["chargingSchedule"][0] if version == "2.0.1" else profile["chargingSchedule"]
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 20.8, "numberPhases": 1}]
    if version == "2.0.1":
        assert profile["transactionId"] == "a03a85bbf1314b5e" and body["evseId"] == 1
