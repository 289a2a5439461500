"""JSON and time helpers that mimic how a Node.js CSMS renders values."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

_MAX_SAFE_INT = 2**53 - 1


def js_value(value: Any) -> Any:
    """Return ``value`` with numbers as JavaScript would print them.

    JavaScript has one number type, so ``16.0`` and ``16`` are the same value and ``JSON.stringify``
    prints ``16``. CitrineOS forwards request bodies after parsing them, so a limit sent as ``16.0``
    reaches the charger as ``16``.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= _MAX_SAFE_INT:
            return int(value)
        return value
    if isinstance(value, Decimal):
        return js_value(float(value))
    if isinstance(value, dict):
        return {k: js_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [js_value(v) for v in value]
    return value


def js_dumps(value: Any) -> str:
    """Serialise like ``JSON.stringify``: compact separators, JavaScript numbers."""
    return json.dumps(js_value(value), separators=(",", ":"), ensure_ascii=False)


def js_number(text: str) -> float | int | None:
    """Parse a string the way JavaScript's ``parseFloat`` would for a meter value, or None."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    out: float | int = js_value(number)
    return out


def now_utc() -> dt.datetime:
    """The current time in UTC, truncated to milliseconds like a JavaScript ``Date``."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def iso_ms(value: dt.datetime | None) -> str | None:
    """Render a timestamp like JavaScript's ``Date.toISOString()`` (``2026-11-24T00:37:28.541Z``)."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_iso(text: str | None) -> dt.datetime | None:
    """Parse an OCPP timestamp; None when absent or unreadable (the row then keeps NULL)."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value
