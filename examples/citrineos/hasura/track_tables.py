"""Expose CitrineOS's tables through Hasura and seed the demo's idTags (runs once, standard library only).

1. waits for Hasura's ``/healthz``;
2. tracks every table of the ``public`` schema that CitrineOS created (its migrations must have run:
   the compose file starts this after CitrineOS is healthy);
3. turns each single-column foreign key into two relationships, named the way opti-vgi's GraphQL
   documents expect: on the referencing table an object relationship named after the referenced
   table in the singular (``Transactions.connectorId`` -> ``Connector``), on the referenced table an
   array relationship named after the referencing table (``MeterValues`` on ``Transactions``). A
   name already taken on a table gets ``By<Column>`` appended;
4. inserts the idTags of ``SEED_ID_TAGS`` into ``Authorizations`` as Accepted, so that CitrineOS
   authorizes the simulated chargers.

Everything is idempotent: running it again changes nothing. Environment: ``HASURA_ENDPOINT``
(default ``http://graphql-engine:8080``), ``HASURA_ADMIN_SECRET`` (optional), ``SEED_ID_TAGS``
(comma-separated), ``HASURA_WAIT_S`` (default 180).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from typing import Any

ENDPOINT = os.environ.get("HASURA_ENDPOINT", "http://graphql-engine:8080").rstrip("/")
SECRET = os.environ.get("HASURA_ADMIN_SECRET", "")
SOURCE = "default"
SKIPPED_TABLES = {"spatial_ref_sys", "SequelizeMeta"}
# OCPP 1.6 idTag: CiString20. Anything else is refused rather than pasted into SQL.
ID_TAG = re.compile(r"^[A-Za-z0-9._:-]{1,20}$")


def log(message: str) -> None:
    print(f"[hasura-init] {message}", flush=True)


def post(path: str, payload: dict[str, Any]) -> Any:
    headers = {"Content-Type": "application/json"}
    if SECRET:
        headers["x-hasura-admin-secret"] = SECRET
    # The endpoint is the operator's own http(s) URL.
    request = urllib.request.Request(ENDPOINT + path, json.dumps(payload).encode(), headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise RuntimeError(f"{path} answered {exc.code}: {body[:500]}") from exc


def sql(statement: str) -> list[list[str]]:
    """Rows of a read-only statement (without the header row)."""
    answer = post("/v2/query", {"type": "run_sql", "args": {"source": SOURCE, "sql": statement, "read_only": True}})
    return list(answer.get("result") or [])[1:]


def wait_for_hasura(limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            with urllib.request.urlopen(ENDPOINT + "/healthz", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"[hasura-init] Hasura at {ENDPOINT} not healthy after {limit_s:.0f} s")
        time.sleep(2)


def keep_going(operations: list[dict[str, Any]]) -> tuple[int, int]:
    """Run metadata operations, ignoring the ones already done; returns (applied, already there)."""
    if not operations:
        return 0, 0
    results = post("/v1/metadata", {"type": "bulk_keep_going", "args": operations})
    applied = existing = 0
    for op, result in zip(operations, results, strict=True):
        if isinstance(result, dict) and "error" in result:
            if result.get("code") in ("already-tracked", "already-exists"):
                existing += 1
            else:
                log(f"{op['type']} {op['args'].get('name') or op['args'].get('table')}: {result['error']}")
        else:
            applied += 1
    return applied, existing


def singular(table: str) -> str:
    return table[:-1] if table.endswith("s") else table


def relationship_operations(foreign_keys: list[list[str]], columns: dict[str, set[str]]) -> list[dict[str, Any]]:
    """Object and array relationships for single-column foreign keys (see the module docstring)."""
    taken = {table: set(cols) for table, cols in columns.items()}

    def claim(table: str, name: str, column: str) -> str:
        used = taken.setdefault(table, set())
        if name in used:
            name = f"{name}By{column[:1].upper()}{column[1:]}"
        used.add(name)
        return name

    # The conventional column (connectorId for Connectors) claims the plain name first.
    def natural_first(fk: list[str]) -> tuple[int, str, str]:
        source, column, target = fk
        natural = singular(target)
        return (0 if column.lower() == natural.lower() + "id" else 1, source, column)

    operations: list[dict[str, Any]] = []
    for source, column, target in sorted(foreign_keys, key=natural_first):
        operations.append(
            {
                "type": "pg_create_object_relationship",
                "args": {
                    "source": SOURCE,
                    "table": {"schema": "public", "name": source},
                    "name": claim(source, singular(target), column),
                    "using": {"foreign_key_constraint_on": column},
                },
            }
        )
        operations.append(
            {
                "type": "pg_create_array_relationship",
                "args": {
                    "source": SOURCE,
                    "table": {"schema": "public", "name": target},
                    "name": claim(target, source, column),
                    "using": {
                        "foreign_key_constraint_on": {"table": {"schema": "public", "name": source}, "column": column}
                    },
                },
            }
        )
    return operations


def seed_id_tags(tags: list[str]) -> None:
    good = [t for t in tags if ID_TAG.match(t)]
    for bad in sorted(set(tags) - set(good)):
        log(f"idTag {bad!r} skipped: an OCPP 1.6 idTag is 1-20 letters, digits or . _ : -")
    if not good:
        return
    values = ", ".join(f"('{t}', 'ISO14443', 'Accepted', 'Never', 1, now(), now())" for t in good)
    # Each tag matched ID_TAG (no quotes, no spaces), so it can be written as a literal.
    columns = '"idToken", "idTokenType", "status", "realTimeAuth", "tenantId", "createdAt", "updatedAt"'
    conflict = 'ON CONFLICT ("idToken", "idTokenType") DO NOTHING'
    statement = f'INSERT INTO "Authorizations" ({columns}) VALUES {values} {conflict}'  # noqa: S608
    post("/v2/query", {"type": "run_sql", "args": {"source": SOURCE, "sql": statement}})
    log(f"idTags accepted by CitrineOS: {', '.join(good)}")


def main() -> None:
    wait_for_hasura(float(os.environ.get("HASURA_WAIT_S", "180")))
    tables = [
        row[0]
        for row in sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        if row[0] not in SKIPPED_TABLES
    ]
    if "Transactions" not in tables:
        sys.exit("[hasura-init] CitrineOS's tables are missing: did its migrations run?")
    applied, existing = keep_going(
        [{"type": "pg_track_table", "args": {"source": SOURCE, "table": {"schema": "public", "name": t}}}
         for t in tables]
    )
    log(f"tables: {applied} tracked now, {existing} already tracked")
    columns: dict[str, set[str]] = {}
    for table, column in sql(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
    ):
        columns.setdefault(table, set()).add(column)
    foreign_keys = [
        [source, column, target]
        for source, column, target, width in sql(
            "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, "
            "array_length(c.conkey, 1)::text "
            "FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace ORDER BY 1, 2"
        )
        if width == "1"
    ]
    # regclass text is quoted when the name has capitals ("ChargingProfiles").
    foreign_keys = [[s.strip('"'), c, t.strip('"')] for s, c, t in foreign_keys]
    foreign_keys = [fk for fk in foreign_keys if fk[0] in tables and fk[2] in tables]
    applied, existing = keep_going(relationship_operations(foreign_keys, columns))
    log(f"relationships: {applied} created now, {existing} already there")
    seed_id_tags([t.strip() for t in os.environ.get("SEED_ID_TAGS", "").split(",") if t.strip()])
    log("done")


if __name__ == "__main__":
    main()
