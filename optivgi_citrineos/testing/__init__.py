"""Test double of CitrineOS 1.8.3 and a scriptable OCPP 1.6J charge point.

:class:`CitrineOSDouble` reproduces, on 127.0.0.1, what a real CitrineOS 1.8.3 answers on REST,
publishes on RabbitMQ and stores in PostgreSQL, so the CitrineOS integration can be tested (and
demonstrated) without a CitrineOS installation. :class:`TestChargePoint` is an OCPP 1.6J charge
point built on the ``ocpp`` library that runs sessions against it (or against a real CitrineOS).

Needs a reachable PostgreSQL (``psycopg``) and RabbitMQ (``pika``).
"""

from __future__ import annotations

from optivgi_citrineos.testing._amqp import AmqpUnavailableError
from optivgi_citrineos.testing._db import DatabaseUnavailableError
from optivgi_citrineos.testing._http import HttpFaults
from optivgi_citrineos.testing.chargepoint import ProfileAnswer, TestChargePoint
from optivgi_citrineos.testing.double import CitrineOSDouble, DoubleConfig

__all__ = [
    "AmqpUnavailableError",
    "CitrineOSDouble",
    "DatabaseUnavailableError",
    "DoubleConfig",
    "HttpFaults",
    "ProfileAnswer",
    "TestChargePoint",
]
