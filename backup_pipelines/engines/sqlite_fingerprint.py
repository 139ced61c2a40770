"""The content fingerprint of a SQLite database (see `engines.fingerprint`), taken on the consistent copy the
backup stores and again on the restored file.

Items: `rows <table>`, the row count and the sum (mod 2^64) of the first 64 bits of each row's sha256, the row
rendered column by column as its storage class and exact value (reals to 17 significant digits, text and
blobs as hex), so 1 and 1.0 and '1' differ and duplicated rows count; `schema <type> <name>`, the SQL of every
table, index, view and trigger; `pragma <name>` for user_version, application_id and encoding.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD

METHOD = (
    "rows: count and sum of sha256-64 of each row's storage classes and exact values (every table); schema: "
    "the SQL of every table, index, view and trigger; pragmas user_version, application_id, encoding"
)
PRAGMAS = ("user_version", "application_id", "encoding")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _row_sql(connection: sqlite3.Connection, table: str) -> str:
    columns = [row[1] for row in connection.execute(f"pragma table_xinfo({_quote(table)})")]
    rendered = [
        f"typeof({_quote(column)}) || ':' || (case typeof({_quote(column)}) when 'real' then "
        f"printf('%!.17g', {_quote(column)}) when 'null' then '' else hex({_quote(column)}) end)"
        for column in columns
    ]
    expression = " || char(31) || ".join(rendered) or "''"
    return f"select {expression} from {_quote(table)}"


def _rows_digest(connection: sqlite3.Connection, table: str) -> str:
    count, total = 0, 0
    for (row,) in connection.execute(_row_sql(connection, table)):
        count += 1
        total = (total + int.from_bytes(hashlib.sha256(row.encode()).digest()[:8], "big")) % (1 << 64)
    return f"{count}:{total}"


def take_fingerprint(connection: sqlite3.Connection, tables: list[str]) -> dict[str, Any]:
    """Return `{FINGERPRINT: items, FINGERPRINT_METHOD: sentence}` of the database `connection` is open on;
    `tables` are its tables (sqlite_* internal tables left out)."""
    items: dict[str, Any] = {f"rows {table}": _rows_digest(connection, table) for table in tables}
    for kind, name, definition in connection.execute(
        "select type, name, sql from sqlite_master where name not like 'sqlite\\_%' escape '\\' order by 1, 2"
    ):
        items[f"schema {kind} {name}"] = definition or ""
    for pragma in PRAGMAS:
        items[f"pragma {pragma}"] = str(connection.execute(f"pragma {pragma}").fetchone()[0])
    return {FINGERPRINT: items, FINGERPRINT_METHOD: METHOD}
