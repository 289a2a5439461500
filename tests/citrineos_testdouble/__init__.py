"""Test double of CitrineOS 1.8.3 and a scriptable OCPP 1.6J charge point.

:class:`CitrineOSDouble` reproduces, on 127.0.0.1, what a real CitrineOS 1.8.3 answers on REST,
publishes on RabbitMQ and stores in PostgreSQL, so the CitrineOS integration can be tested (and
demonstrated) without a CitrineOS installation. :class:`TestChargePoint` is an OCPP 1.6J charge
point built on the ``ocpp`` library that runs sessions against it (or against a real CitrineOS).

Needs a reachable PostgreSQL (``psycopg``) and RabbitMQ (``pika``).
"""

from __future__ import annotations

from citrineos_testdouble._amqp import AmqpUnavailableError
from citrineos_testdouble._db import DatabaseUnavailableError
from citrineos_testdouble._http import HttpFaults
from citrineos_testdouble.chargepoint import ProfileAnswer, TestChargePoint
from citrineos_testdouble.double import CitrineOSDouble, DoubleConfig

__all__ = [
    "AmqpUnavailableError",
    "CitrineOSDouble",
    "DatabaseUnavailableError",
    "DoubleConfig",
    "HttpFaults",
    "ProfileAnswer",
    "TestChargePoint",
]
