"""Secrets never reach a log line: the filter the command line puts on every handler."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from optivgi.config import mask_url
from optivgi.redaction import Redactor, install, redact_text, secrets_in_settings, url_error_reason, url_secrets


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    """A logger with its own stream handler carrying a redactor, like the CLI's root handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    log = logging.getLogger("test_redaction.owner")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    redactor = Redactor()
    install(redactor, log)
    yield log, stream, redactor
    log.removeHandler(handler)


def test_a_word_secret_is_replaced_only_as_a_whole_value() -> None:
    text = "exchange 'citrineos' at postgresql://citrine:citrine@db/citrine password=citrine, user citrine"
    assert redact_text(text, ["citrine"]) == (
        "exchange 'citrineos' at postgresql://***:***@db/*** password=***, user ***"
    )


def test_url_passwords_with_slashes_and_lone_user_tokens_are_masked() -> None:
    assert mask_url("amqp://guest:pa/ss:w@rd@127.0.0.1:5672/%2F") == "amqp://guest:***@127.0.0.1:5672/%2F"
    assert mask_url("POST http://tok3n@api:8080/x and http://u:p@h/y") == "POST http://***@api:8080/x and http://u:***@h/y"
    assert mask_url("http://127.0.0.1:8080/ocpp/1.6") == "http://127.0.0.1:8080/ocpp/1.6"


def test_headers_and_key_value_pairs_are_masked_without_knowing_the_secret() -> None:
    text = ("headers={'Authorization': 'Bearer abc.def', 'x-hasura-admin-secret': 'hs-1'} "
            "Authorization: Basic dXNlcjpwYXNz host=db password='p w' sslpassword=k2 /v1?access_token=zz&x=1")
    assert redact_text(text) == (
        "headers={'Authorization': 'Bearer ***', 'x-hasura-admin-secret': '***'} "
        "Authorization: Basic *** host=db password=*** sslpassword=*** /v1?access_token=***&x=1"
    )


def test_secrets_are_found_in_settings_by_name_and_in_urls() -> None:
    values = {
        "CITRINEOS_API_TOKEN": "tok-1",
        "HASURA_ADMIN_SECRET": "hs-2",
        "CITRINEOS_API_PASSWORD": "pw-3",
        "AMQP_URL": "amqp://guest:a%2Fb@127.0.0.1/",
        "CITRINEOS_DB_DSN": "host=db user=u password=dsnpw",
        "CITRINEOS_CA_FILE": "/etc/ca.pem",
        "CITRINEOS_CLIENT_KEY": "/etc/client.key",
        "KUBE_SECRET_NAME": "default",
        "STATION_IDS": "ST-1",
    }
    assert set(secrets_in_settings(values)) == {"tok-1", "hs-2", "pw-3", "a%2Fb", "a/b", "dsnpw"}
    assert url_secrets("http://onlytoken@h/") == ["onlytoken"]


def test_every_record_is_cleaned_message_args_and_traceback(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    log, stream, redactor = captured
    redactor.add(["S3cr3t-value", "citrine"])
    log.info("HTTP Request: POST %s", "http://admin:S3cr3t-value@127.0.0.1:9/x")
    try:
        raise RuntimeError("login S3cr3t-value refused for exchange citrineos")
    except RuntimeError:
        log.exception("failed")
    out = stream.getvalue()
    assert "S3cr3t-value" not in out
    assert "http://admin:***@127.0.0.1:9/x" in out
    assert "RuntimeError: login *** refused for exchange citrineos" in out  # the traceback, cleaned
    assert out.count("Traceback (most recent call last)") == 1


def test_library_loggers_are_cleaned_by_the_handler_they_reach(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    _, stream, redactor = captured
    redactor.add(["pw-from-settings"])
    for name in ("httpx", "pika.connection", "psycopg"):
        child = logging.getLogger(f"test_redaction.owner.{name}")
        child.warning("connecting with pw-from-settings to amqp://u:other@h/")
    out = stream.getvalue()
    assert out.count("connecting with *** to amqp://u:***@h/") == 3
    assert "pw-from-settings" not in out and "other" not in out


def test_install_is_idempotent(captured: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    log, _, redactor = captured
    install(redactor, log)
    assert log.handlers and all(h.filters.count(redactor) == 1 for h in log.handlers)


def test_a_parse_error_that_could_quote_the_password_is_replaced_by_a_hint() -> None:
    url = "amqp://guest:pa/ss@127.0.0.1:5672/"
    assert url_error_reason("Port could not be cast to integer value as 'pa'", url) == (
        "malformed; a password holding / : @ ? or # must be percent-encoded"
    )
    assert url_error_reason("Invalid heartbeat value 'x'", "amqp://guest:s3cret@h/?heartbeat=x") == (
        "Invalid heartbeat value 'x'"
    )
