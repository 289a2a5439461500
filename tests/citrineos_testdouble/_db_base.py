"""The double's PostgreSQL connection: its private schema, locking, query helpers, and the tables
it writes alike for every OCPP version (the OCPP message log, the subscriptions)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Json

from citrineos_testdouble._jsonutil import now_utc
from citrineos_testdouble._tables import ddl

__all__ = ["DatabaseUnavailableError", "StoreBase"]

logger = logging.getLogger(__name__)


class DatabaseUnavailableError(RuntimeError):
    """PostgreSQL could not be reached or the schema could not be created."""


class StoreBase:
    """One async connection to the double's schema, inside the double's loop; rows of both OCPP versions."""

    def __init__(self, dsn: str, schema: str, tenant_id: int) -> None:
        self.dsn = dsn
        self.schema = schema
        self.tenant_id = tenant_id
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    @property
    def conn(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    async def open(self) -> None:
        """Connect, create the schema and its tables."""
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, row_factory=dict_row, connect_timeout=5
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(f"cannot reach PostgreSQL ({self.dsn}): {exc}") from exc
        citext = "citext"
        try:
            await self.conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
        except psycopg.Error:
            # Two doubles creating the extension at once, or no right to create it: use a
            # case-sensitive column rather than fail.
            if await self._has_citext() is False:
                citext = "character varying(255)"
        await self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        await self.conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))
        await self.conn.execute("SET TIME ZONE 'UTC'")
        async with self.conn.transaction():
            for statement in ddl(citext):
                await self.conn.execute(statement.encode())

    async def _has_citext(self) -> bool:
        cur = await self.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citext'")
        return await cur.fetchone() is not None

    async def close(self, drop: bool = True) -> None:
        """Drop the schema (unless ``drop`` is false) and disconnect."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            if drop:
                await self._drop(conn)
        finally:
            await conn.close()

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        statement = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
        try:
            await conn.execute(statement)
            return
        except psycopg.Error:
            logger.debug("dropping %s on the working connection failed; retrying", self.schema, exc_info=True)
        # The working connection may be stuck in a failed transaction: use a fresh one.
        try:
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as fresh:
                await fresh.execute(statement)
        except psycopg.Error:
            logger.warning("dropping schema %s failed", self.schema, exc_info=True)

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        # One connection serves every station's task: a transaction must not interleave with
        # another task's statements. The task holding the lock may nest (re-entrant).
        task = asyncio.current_task()
        if self._owner is not None and self._owner is task:
            yield
            return
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        async with self._locked(), self.conn.transaction():
            yield

    async def _exec(self, query: str, params: Any = None) -> None:
        async with self._locked():
            await self.conn.execute(query.encode(), params)

    async def _one(self, query: str, params: Any = None) -> dict[str, Any] | None:
        async with self._locked():
            cur = await self.conn.execute(query.encode(), params)
            return await cur.fetchone()

    async def _all(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        async with self._locked():
            cur = await self.conn.execute(query.encode(), params)
            return await cur.fetchall()

    # --- OCPP message log -------------------------------------------------------------------------

    async def log_message(
        self,
        station_id: str,
        correlation_id: str,
        origin: str,
        action: str,
        state: int,
        message: Any,
        when: dt.datetime,
        protocol: str = "ocpp1.6",
    ) -> None:
        await self._exec(
            'INSERT INTO "OCPPMessages" ("stationId", "correlationId", origin, protocol, action, message, '
            'timestamp, "createdAt", "updatedAt", "tenantId", state) '
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                station_id,
                correlation_id,
                origin,
                protocol,
                action,
                Json(message),
                when,
                when,
                when,
                self.tenant_id,
                str(state),
            ),
        )

    # --- subscriptions --------------------------------------------------------------------------

    async def create_subscription(self, body: dict[str, Any], tenant_id: int) -> int:
        now = now_utc()
        row = await self._one(
            'INSERT INTO "Subscriptions" ("stationId", "onConnect", "onClose", "onMessage", "sentMessage", '
            '"messageRegexFilter", url, "createdAt", "updatedAt", "tenantId") '
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                body["stationId"],
                bool(body.get("onConnect", False)),
                bool(body.get("onClose", False)),
                bool(body.get("onMessage", False)),
                bool(body.get("sentMessage", False)),
                body.get("messageRegexFilter"),
                body["url"],
                now,
                now,
                tenant_id,
            ),
        )
        assert row is not None
        return int(row["id"])

    async def subscriptions(self, station_id: str) -> list[dict[str, Any]]:
        return await self._all(
            'SELECT id, "stationId", "onConnect", "onClose", "onMessage", "sentMessage", '
            '"messageRegexFilter", url, "tenantId", "createdAt", "updatedAt" FROM "Subscriptions" '
            'WHERE "stationId" = %s ORDER BY id',
            (station_id,),
        )

    async def delete_subscription(self, sub_id: int) -> None:
        await self._exec('DELETE FROM "Subscriptions" WHERE id = %s', (sub_id,))

    async def query_json(self, query: str, params: Any) -> Any:
        """Run a query whose single column ``result`` is JSON built by PostgreSQL."""
        row = await self._one(query, params)
        return None if row is None else row["result"]
