"""One client for everything the plugin asks CitrineOS: its REST API, Hasura GraphQL and plain SQL.

One ``httpx.Client`` (one connection pool, the same TLS and credentials for REST and Hasura), one
PostgreSQL connection kept open and re-opened after a failure, one retry policy
(:func:`retrying`, built on ``tenacity``: exponential backoff with full jitter inside a deadline),
and one mapping of transport failures to the project's exceptions (:func:`as_csms_error`). Every
message is stripped of configured secrets before it reaches a log line or an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from optivgi.config import mask_url
from optivgi.errors import ConfigurationError, CSMSConnectionError, CSMSError, CSMSResponseError
from optivgi_citrineos.config import CitrineOSConfig, redact

if TYPE_CHECKING:
    import httpx

__all__ = ["CitrineOSClient", "GaveUp", "as_csms_error", "retrying"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class GaveUp(Exception):
    """A call failed on every attempt within its deadline.

    Attributes:
        reason: a secret-free description of the last failure.
        connection: True when the service could not be reached (not an answer it gave).
    """

    def __init__(self, reason: str, *, connection: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection = connection


class _Retry(Exception):
    """One attempt failed in a way worth trying again."""

    def __init__(self, reason: str, *, connection: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection = connection


def as_csms_error(exc: GaveUp) -> CSMSError:
    """The project's exception for a call that gave up: unreachable, or a bad answer."""
    if exc.connection:
        return CSMSConnectionError(exc.reason)
    return CSMSResponseError(exc.reason)


def retrying(config: CitrineOSConfig, deadline: float, *, sleep: Callable[[float], None] = time.sleep) -> Callable[
        [Callable[[], T]], T]:
    """The plugin's one retry policy, as a function that runs ``attempt`` until it succeeds.

    ``attempt`` raises :class:`_Retry` for a failure worth repeating. Pauses grow exponentially
    from ``CITRINEOS_RETRY_INITIAL_S`` up to ``CITRINEOS_RETRY_MAX_S`` with full jitter; the first
    attempt is always made, and no retry starts whose pause would end after ``deadline``
    (``time.monotonic()``). Raises :class:`GaveUp` after the last attempt.
    """

    def stop(state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + (state.upcoming_sleep or 0.0) >= deadline

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.warning("%s; retry %d in %.2f s", exc, state.attempt_number, state.upcoming_sleep)

    policy = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(_Retry),
        wait=tenacity.wait_random_exponential(multiplier=config.retry_initial_s, max=config.retry_max_s),
        stop=stop,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )

    def run(attempt: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return policy(attempt)
        except _Retry as exc:
            tries = policy.statistics.get("attempt_number", 1)
            reason = exc.reason
            if tries > 1:
                reason += f" (gave up after {tries} attempts in {time.monotonic() - started:.1f} s)"
            raise GaveUp(reason, connection=exc.connection) from None

    return run


class CitrineOSClient:
    """REST, GraphQL and SQL access to one CitrineOS.

    Args:
        config: validated configuration.
        http: an ``httpx.Client`` to use (not closed by :meth:`close`); by default one is made.
    """

    def __init__(self, config: CitrineOSConfig, *, http: httpx.Client | None = None) -> None:
        self.config = config
        self._http = http
        self._owns_http = http is None
        self._sql: Any = None

    def redact(self, text: str) -> str:
        """``text`` without any configured secret."""
        return redact(text, self.config.secrets)

    def http(self) -> httpx.Client:
        """The shared HTTP client (created on first use)."""
        if self._http is None:
            import httpx

            cfg = self.config
            headers: dict[str, str] = {}
            auth: httpx.Auth | None = None
            if cfg.api_token:
                headers["Authorization"] = f"Bearer {cfg.api_token}"
            elif cfg.api_user:
                auth = httpx.BasicAuth(cfg.api_user, cfg.api_password or "")
            verify: Any = cfg.api_tls.context() if cfg.api_tls.configured else True
            self._http = httpx.Client(timeout=cfg.http_timeout_s, headers=headers, auth=auth, verify=verify)
            self._owns_http = True
        return self._http

    def close(self) -> None:
        """Close the HTTP client (if this object made it) and the SQL connection."""
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None
        self._close_sql()

    # -- HTTP --------------------------------------------------------------------------------
    def post(
        self,
        what: str,
        url: str,
        body: Any,
        *,
        deadline: float,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, Any]:
        """POST with the retry policy; returns the response and its JSON (None if not JSON).

        Timeouts, refused connections, 5xx and a 200 without JSON are retried; other answers
        (4xx) are returned at once. Raises :class:`GaveUp`.
        """
        import httpx

        cfg = self.config
        first = [True]

        def attempt() -> tuple[httpx.Response, Any]:
            timeout = cfg.http_timeout_s
            if not first[0]:
                timeout = max(min(timeout, deadline - time.monotonic()), 0.05)
            first[0] = False
            try:
                resp = self.http().post(url, params=params, json=body, headers=headers, timeout=timeout)
            except httpx.TimeoutException:
                raise _Retry(self.redact(f"{what} did not answer within {timeout:g} s"), connection=True) from None
            except httpx.HTTPError as exc:
                raise _Retry(self.redact(f"{what} at {mask_url(url)} unreachable: {type(exc).__name__}"),
                             connection=True) from None
            if resp.status_code >= 500:
                raise _Retry(self.redact(f"{what} answered HTTP {resp.status_code}: {resp.text[:200]}"),
                             connection=False)
            try:
                return resp, resp.json()
            except ValueError:
                if resp.status_code != 200:
                    return resp, None
                raise _Retry(self.redact(f"{what} answered with a body that is not JSON: {resp.text[:80]!r}"),
                             connection=False) from None

        return retrying(cfg, deadline)(attempt)

    def graphql(self, operation: str, document: str, variables: Mapping[str, Any], deadline: float) -> Any:
        """Run one Hasura query; returns its ``data``.

        Raises:
            ConfigurationError: no ``HASURA_URL``.
            CSMSConnectionError: Hasura could not be reached within the deadline.
            CSMSResponseError: it answered an error status, errors, or no JSON.
        """
        url = self.config.graphql_url
        if url is None:
            raise ConfigurationError("HASURA_URL must be set for the GraphQL read path")
        secret = self.config.hasura_admin_secret
        headers = {"x-hasura-admin-secret": secret} if secret else {}
        body = {"query": document, "variables": dict(variables), "operationName": operation}
        try:
            resp, answer = self.post("Hasura", url, body, deadline=deadline, headers=headers)
        except GaveUp as exc:
            raise as_csms_error(exc) from None
        if resp.status_code != 200:
            raise CSMSResponseError(self.redact(f"Hasura answered HTTP {resp.status_code}: {resp.text[:200]}"),
                                    status_code=resp.status_code)
        if not isinstance(answer, Mapping) or answer.get("errors"):
            errors = answer.get("errors") if isinstance(answer, Mapping) else answer
            raise CSMSResponseError(self.redact(f"Hasura answered with errors: {errors!r}"[:500]), status_code=200)
        return answer.get("data") or {}

    # -- SQL ---------------------------------------------------------------------------------
    def _close_sql(self) -> None:
        conn, self._sql = self._sql, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection must not hide the real failure
                logger.debug("closing the PostgreSQL connection failed", exc_info=True)

    def sql_rows(self, query: str, params: Mapping[str, Any], what: str, *, deadline: float | None = None) -> list[
            dict[str, Any]]:
        """Run a read-only query on CitrineOS's PostgreSQL (``CITRINEOS_DB_DSN``), rows as dicts.

        One connection is kept open (autocommit, so every read sees the latest rows); a lost
        connection is re-opened under the retry policy.

        Raises:
            ConfigurationError: no DSN, or psycopg missing.
            CSMSConnectionError: the database is unreachable.
            CSMSResponseError: the query failed.
        """
        dsn = self.config.db_dsn
        if dsn is None:
            raise ConfigurationError("HASURA_URL or CITRINEOS_DB_DSN must be set to read from CitrineOS")
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise ConfigurationError("CITRINEOS_DB_DSN needs psycopg (v3): pip install 'psycopg[binary]'") from None

        def attempt() -> list[dict[str, Any]]:
            try:
                if self._sql is None:
                    self._sql = psycopg.connect(dsn, connect_timeout=max(1, int(self.config.http_timeout_s)),
                                                row_factory=dict_row, autocommit=True)
                return [dict(r) for r in self._sql.execute(query, dict(params)).fetchall()]
            except psycopg.OperationalError as exc:
                self._close_sql()
                raise _Retry(self.redact(f"PostgreSQL at {mask_url(dsn)} unreachable: {exc}"),
                             connection=True) from None
            except psycopg.Error as exc:
                self._close_sql()
                raise CSMSResponseError(self.redact(f"the {what} query failed: {exc}")) from None

        try:
            return retrying(self.config, deadline if deadline is not None else time.monotonic())(attempt)
        except GaveUp as exc:
            raise as_csms_error(exc) from None
