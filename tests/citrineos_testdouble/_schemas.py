"""Request validation that answers like CitrineOS 1.8.3's REST layer.

CitrineOS validates with Fastify's default Ajv setup: types are coerced (a query string ``"1"``
becomes the number 1, a single value becomes an array where an array is expected), defaults are
filled in, properties not in the schema are dropped where ``additionalProperties`` is false, and
validation stops at the first error. The error text is ``<part><instancePath> <message>``, e.g.
``body/csChargingProfiles/chargingSchedule/chargingSchedulePeriod/0/limit must be multiple of 0.1``.

Only the keywords the schemas below use are implemented. String formats (``date-time``) are not
checked.
"""

from __future__ import annotations

import copy
import math
from typing import Any

Schema = dict[str, Any]


class ValidationFailed(Exception):
    """A request part broke its schema; ``str()`` is the message CitrineOS puts in the 400 body."""


_MISSING = object()


def _coerce_number(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if value is None:
        return 0
    if isinstance(value, str) and value.strip():
        try:
            number = float(value)
        except ValueError:
            return _MISSING
        if not math.isfinite(number):
            return _MISSING
        return int(number) if number.is_integer() else number
    return _MISSING


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    # JSON numbers like 60.0 are integers for a JavaScript validator.
    return _is_number(value) and float(value).is_integer()


def _coerce(value: Any, wanted: str) -> Any:
    """Return ``value`` converted to ``wanted`` the way Ajv's ``coerceTypes: 'array'`` does."""
    if wanted == "array":
        return [value]
    if isinstance(value, list) and len(value) == 1:
        # 'array' coercion also unwraps single-element arrays for scalar types.
        return _coerce(value[0], wanted)
    if wanted in ("number", "integer"):
        number = _coerce_number(value)
        if number is _MISSING or (wanted == "integer" and not _is_integer(number)):
            return _MISSING
        return number
    if wanted == "string":
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if _is_number(value):
            return str(int(value)) if float(value).is_integer() else repr(value)
        return _MISSING
    if wanted == "boolean":
        if value in ("true", 1):
            return True
        if value in ("false", 0, None):
            return False
        return _MISSING
    return _MISSING


def _type_ok(value: Any, wanted: str) -> bool:
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "number": _is_number,
        "integer": _is_integer,
    }
    return bool(checks[wanted](value))


def _multiple_of(value: float, divisor: float) -> bool:
    # Same arithmetic as Ajv without multipleOfPrecision: IEEE division, compared with its
    # truncation. 5.8 / 0.1 == 57.99999999999999, so 5.8 is "not a multiple of 0.1".
    quotient = value / divisor
    return math.isfinite(quotient) and quotient == math.trunc(quotient)


def _validate(value: Any, schema: Schema, path: str) -> Any:
    """Validate ``value``; return the (coerced, cleaned) value or raise ValidationFailed."""
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _validate(copy.deepcopy(value), option, path)
            except ValidationFailed:
                continue
        raise ValidationFailed(f"{path} must match a schema in anyOf")
    wanted = schema.get("type")
    if wanted is not None and not _type_ok(value, wanted):
        coerced = _coerce(value, wanted)
        if coerced is _MISSING or not _type_ok(coerced, wanted):
            raise ValidationFailed(f"{path} must be {wanted}")
        value = coerced
    if "enum" in schema and value not in schema["enum"]:
        raise ValidationFailed(f"{path} must be equal to one of the allowed values")
    if "multipleOf" in schema and _is_number(value) and not _multiple_of(value, schema["multipleOf"]):
        raise ValidationFailed(f"{path} must be multiple of {schema['multipleOf']}")
    if "minimum" in schema and _is_number(value) and value < schema["minimum"]:
        raise ValidationFailed(f"{path} must be >= {schema['minimum']}")
    if "maximum" in schema and _is_number(value) and value > schema["maximum"]:
        raise ValidationFailed(f"{path} must be <= {schema['maximum']}")
    if isinstance(value, dict) and wanted == "object":
        properties: dict[str, Schema] = schema.get("properties", {})
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name in schema.get("required", []):
            if name not in value:
                raise ValidationFailed(f"{path} must have required property '{name}'")
        if schema.get("additionalProperties") is False:
            for name in [k for k in value if k not in properties]:
                del value[name]
        for name, sub in properties.items():
            if name in value:
                value[name] = _validate(value[name], sub, f"{path}/{name}")
    if isinstance(value, list) and "items" in schema:
        value = [_validate(item, schema["items"], f"{path}/{i}") for i, item in enumerate(value)]
    return value


def validate(value: Any, schema: Schema, part: str) -> Any:
    """Validate one request part (``"body"`` or ``"querystring"``) and return it coerced.

    Raises:
        ValidationFailed: with the exact message CitrineOS returns.
    """
    return _validate(copy.deepcopy(value), schema, part)


# --- schemas of the routes the double serves (field names and rules of the CitrineOS 1.8.3 API) ---

_PURPOSE_16 = {"type": "string", "enum": ["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]}
_RATE_UNIT = {"type": "string", "enum": ["A", "W"]}

SET_CHARGING_PROFILE_16: Schema = {
    "type": "object",
    "properties": {
        "connectorId": {"type": "integer"},
        "csChargingProfiles": {
            "type": "object",
            "properties": {
                "chargingProfileId": {"type": "integer"},
                "transactionId": {"type": "integer"},
                "stackLevel": {"type": "integer"},
                "chargingProfilePurpose": _PURPOSE_16,
                "chargingProfileKind": {"type": "string", "enum": ["Absolute", "Recurring", "Relative"]},
                "recurrencyKind": {"type": "string", "enum": ["Daily", "Weekly"]},
                "validFrom": {"type": "string"},
                "validTo": {"type": "string"},
                "chargingSchedule": {
                    "type": "object",
                    "properties": {
                        "duration": {"type": "integer"},
                        "startSchedule": {"type": "string"},
                        "chargingRateUnit": _RATE_UNIT,
                        "chargingSchedulePeriod": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "startPeriod": {"type": "integer"},
                                    "limit": {"type": "number", "multipleOf": 0.1},
                                    "numberPhases": {"type": "integer"},
                                },
                                "additionalProperties": False,
                                "required": ["startPeriod", "limit"],
                            },
                        },
                        "minChargingRate": {"type": "number", "multipleOf": 0.1},
                    },
                    "additionalProperties": False,
                    "required": ["chargingRateUnit", "chargingSchedulePeriod"],
                },
            },
            "additionalProperties": False,
            "required": [
                "chargingProfileId",
                "stackLevel",
                "chargingProfilePurpose",
                "chargingProfileKind",
                "chargingSchedule",
            ],
        },
    },
    "additionalProperties": False,
    "required": ["connectorId", "csChargingProfiles"],
}

CLEAR_CHARGING_PROFILE_16: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "connectorId": {"type": "integer"},
        "chargingProfilePurpose": _PURPOSE_16,
        "stackLevel": {"type": "integer"},
    },
    "additionalProperties": False,
}

GET_COMPOSITE_SCHEDULE_16: Schema = {
    "type": "object",
    "properties": {
        "connectorId": {"type": "integer"},
        "duration": {"type": "integer"},
        "chargingRateUnit": _RATE_UNIT,
    },
    "additionalProperties": False,
    "required": ["connectorId", "duration"],
}

TRIGGER_MESSAGE_16: Schema = {
    "type": "object",
    "properties": {
        "requestedMessage": {
            "type": "string",
            "enum": [
                "BootNotification",
                "DiagnosticsStatusNotification",
                "FirmwareStatusNotification",
                "Heartbeat",
                "MeterValues",
                "StatusNotification",
            ],
        },
        "connectorId": {"type": "integer"},
    },
    "additionalProperties": False,
    "required": ["requestedMessage"],
}

# Only the top level of the 2.0.1 request is checked: the double answers every 2.0.1 call for a
# 1.6 station with "Evse <n> not found." before anything else would matter.
SET_CHARGING_PROFILE_201: Schema = {
    "type": "object",
    "properties": {
        "customData": {"type": "object"},
        "evseId": {"type": "integer", "minimum": -2147483648, "maximum": 2147483647},
        "chargingProfile": {"type": "object"},
    },
    "additionalProperties": False,
    "required": ["evseId", "chargingProfile"],
}

CLEAR_CHARGING_PROFILE_201: Schema = {
    "type": "object",
    "properties": {
        "customData": {"type": "object"},
        "chargingProfileId": {"type": "integer"},
        "chargingProfileCriteria": {"type": "object"},
    },
    "additionalProperties": False,
}

GET_BASE_REPORT_201: Schema = {
    "type": "object",
    "properties": {
        "customData": {"type": "object"},
        "requestId": {"type": "integer"},
        "reportBase": {"type": "string", "enum": ["ConfigurationInventory", "FullInventory", "SummaryInventory"]},
    },
    "additionalProperties": False,
    "required": ["requestId", "reportBase"],
}

CREATE_SUBSCRIPTION: Schema = {
    "type": "object",
    "properties": {
        "stationId": {"type": "string"},
        "url": {"type": "string"},
        "messageRegexFilter": {"type": "string"},
        "onClose": {"type": "boolean"},
        "onConnect": {"type": "boolean"},
        "onMessage": {"type": "boolean"},
        "sentMessage": {"type": "boolean"},
    },
    "required": ["stationId", "url"],
}

OCPP_CALL_QUERY: Schema = {
    "type": "object",
    "properties": {
        "identifier": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "tenantId": {"type": "number", "default": 1},
        "callbackUrl": {"type": "string"},
    },
    "required": ["identifier", "tenantId"],
}

TRANSACTION_QUERY: Schema = {
    "type": "object",
    "properties": {
        "stationId": {"type": "string"},
        "transactionId": {"type": "string"},
        "tenantId": {"type": "number", "default": "1"},
    },
    "required": ["stationId", "transactionId", "tenantId"],
}

STATION_TENANT_QUERY: Schema = {
    "type": "object",
    "properties": {"stationId": {"type": "string"}, "tenantId": {"type": "number", "default": "1"}},
    "required": ["stationId", "tenantId"],
}

CONNECTION_DELETE_QUERY: Schema = {
    "type": "object",
    "properties": {"stationId": {"type": "string"}, "tenantId": {"type": "number"}},
    "required": ["stationId", "tenantId"],
}

TENANT_QUERY: Schema = {
    "type": "object",
    "properties": {"tenantId": {"type": "number", "default": "1"}},
    "required": ["tenantId"],
}

SUBSCRIPTION_DELETE_QUERY: Schema = {
    "type": "object",
    "properties": {"id": {"type": "number"}, "tenantId": {"type": "number", "default": "1"}},
    "required": ["id", "tenantId"],
}

WEBSOCKET_LIST_QUERY: Schema = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "tenantId": {"type": "string"}},
}
