"""Keeping secrets out of log lines and error messages.

:class:`Redactor` is a :class:`logging.Filter` the command line puts on every log handler, so a
record from any library (httpx, pika, psycopg) is cleaned before it is written. It replaces by
``***``:

- known secret values (passwords, tokens; :meth:`Redactor.add`), but only as whole values: a
  secret is matched where it is not part of a longer word (the password ``citrine`` leaves the
  exchange name ``citrineos`` alone);
- the password (or a lone user name, often a token) of every URL, e.g. ``amqp://u:***@host``;
- the value of credential headers (``Authorization: Bearer ***``, ``x-hasura-admin-secret``);
- the value of secret-looking ``key=value`` pairs (``password=***`` in a libpq DSN, ``token=***``
  in a query string).

:func:`secrets_in_settings` picks the secrets out of a settings mapping (variables named like
``*_PASSWORD``, ``*_SECRET``, ``*_TOKEN`` and the passwords inside URL and DSN values).
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping

from optivgi.config import mask_url

__all__ = ["Redactor", "install", "redact_text", "secrets_in_settings", "url_error_reason", "url_secrets"]

# A variable holds a secret when its name ends so (CITRINEOS_API_TOKEN, HASURA_ADMIN_SECRET), not
# when the word is only part of it (a KUBE_SECRET_NAME of "default" must not hide every "default").
_SECRET_NAME = re.compile(r"(?:PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PASSPHRASE|CREDENTIALS?)$", re.IGNORECASE)
_URL_USERINFO = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://([^:/@\s?#]*)(?::([^@\s]*))?@")
_HEADER = re.compile(
    r"""(?P<name>\b(?:proxy-)?authorization|x-hasura-admin-secret|x-api-key|api-key|cookie|set-cookie)"""
    r"""(?P<sep>['"]?\s*[:=]\s*['"]?)(?:(?P<scheme>bearer|basic|token)\s+)?(?P<value>[^\s'",}]+)""",
    re.IGNORECASE,
)
_PAIR = re.compile(
    r"""(?P<key>\b[\w-]*(?:password|passwd|pwd|secret|token|api_?key)[\w-]*)(?P<sep>\s*=\s*)"""
    r"""(?P<value>'[^']*'|"[^"]*"|[^\s&;,'")]+)""",
    re.IGNORECASE,
)
#: Secrets shorter than this are not matched by value (they would garble ordinary text).
MIN_SECRET_LENGTH = 3


def url_secrets(text: str | None) -> list[str]:
    """Passwords (and lone user names) of every URL in ``text``, as written and percent-decoded,
    and ``password=`` values of a libpq DSN."""
    if not text:
        return []
    found: list[str] = []
    for match in _URL_USERINFO.finditer(text):
        user, password = match.group(1), match.group(2)
        for value in ((password,) if password is not None else (user,)):
            if value:
                found += [value, urllib.parse.unquote(value)]
    for match in _PAIR.finditer(text):
        value = match.group("value").strip("'\"")
        if value:
            found.append(value)
    return list(dict.fromkeys(found))


def url_error_reason(reason: str, url: str) -> str:
    """A parser's complaint about ``url``, or a generic hint when it could quote part of the
    credentials (``Port could not be cast ... 'pa'`` for the password ``pa/ss``)."""
    head = url.split("://", 1)[-1]
    userinfo = head.rsplit("@", 1)[0] if "@" in head else ""
    pieces = [p for p in re.split(r"[:/@?#\[\]]", userinfo) if p]
    if any(p in reason for p in pieces):
        return "malformed; a password holding / : @ ? or # must be percent-encoded"
    return redact_text(reason, url_secrets(url))


def secrets_in_settings(values: Mapping[str, str]) -> list[str]:
    """The secret values of a settings mapping (``Settings.values``)."""
    found: list[str] = []
    for name, value in values.items():
        if not value:
            continue
        if _SECRET_NAME.search(name):
            found.append(value)
        found += url_secrets(value)
    return list(dict.fromkeys(found))


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    chosen = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
    if not chosen:
        return None
    alternatives = "|".join(re.escape(s) for s in chosen)
    # Not inside a longer word: no letter or digit right before or after.
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


def _scrub(text: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is not None:
        text = pattern.sub("***", text)
    text = mask_url(text)
    text = _HEADER.sub(
        lambda m: f"{m.group('name')}{m.group('sep')}{m.group('scheme') + ' ' if m.group('scheme') else ''}***", text
    )
    return _PAIR.sub(lambda m: f"{m.group('key')}{m.group('sep')}***", text)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets`` (as whole values), URL passwords, credential headers and secret
    ``key=value`` pairs replaced by ``***``."""
    return _scrub(text, _pattern(secrets))


class Redactor(logging.Filter):
    """A logging filter that cleans each record's message, traceback and stack (see the module)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also replace these values (shorter than :data:`MIN_SECRET_LENGTH` characters are ignored)."""
        with self._lock:
            self._secrets.update(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)
            self._pattern = _pattern(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` cleaned."""
        return _scrub(text, self._pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the logging module's own report
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set: the traceback is formatted (and cleaned) once, here.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install(redactor: Redactor, logger: logging.Logger | None = None) -> None:
    """Put ``redactor`` on every handler of ``logger`` (default: the root logger) and of every
    logger created so far; installing twice does nothing more."""
    loggers: list[logging.Logger] = [logger or logging.getLogger()]
    if logger is None:
        loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            if redactor not in handler.filters:
                handler.addFilter(redactor)
