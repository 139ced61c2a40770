"""The content fingerprint of a MySQL/MariaDB database (see `engines.fingerprint`).

Rows: per table, an order-independent digest that every row takes part in, duplicates included. Each row is
rendered as the HEX of QUOTE() of every column (generated and invisible columns too) joined by commas: QUOTE
keeps NULL (the bare word NULL) apart from the string 'NULL', HEX makes the rendering independent of each
column's character set and the comma unambiguous. The first 64 bits of the MD5 of that text are summed (so
duplicates count) and XORed over the table; the value is the row count, the sum and the XOR. Tables named in
`verification.sampled_tables` are digested only in key ranges chosen from the key's span at backup time and
recorded in the fingerprint ("sample db.table"), so the restore side digests exactly the same rows; so are
tables bigger than `verification.sample_tables_above_bytes` whose primary key is one integer column.

Schema: every table's SHOW CREATE TABLE (without the AUTO_INCREMENT counter), every routine, trigger (with its
action order), event and view as SHOW CREATE gives it with its sql_mode, definer and client character set
(the database's own name replaced, so a copy under another name matches), and the database's default
character set and collation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from backup_pipelines.manifest import MysqlDataset, TableSample, listed_sample

METHOD = (
    "Per table: row count, and the sum and XOR of the first 64 bits of MD5(HEX(QUOTE(column)) of every column, "
    "comma-joined) over all rows (sampled tables: over the recorded key ranges); SHOW CREATE of every table "
    "(without AUTO_INCREMENT), view, routine, trigger and event with sql_mode, definer and character sets; "
    "the database's default character set and collation."
)
SAMPLES = "sample"
AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")
SCHEMA_OBJECTS_SQL = {
    "table": "select table_name from information_schema.tables where table_schema = %s and table_type = 'BASE TABLE'",
    "view": "select table_name from information_schema.views where table_schema = %s",
    "function": "select routine_name from information_schema.routines where routine_schema = %s "
    "and routine_type = 'FUNCTION'",
    "procedure": "select routine_name from information_schema.routines where routine_schema = %s "
    "and routine_type = 'PROCEDURE'",
    "trigger": "select trigger_name from information_schema.triggers where trigger_schema = %s",
    "event": "select event_name from information_schema.events where event_schema = %s",
}
SKIPPED_SHOW_COLUMNS = {"Created"}  # when a trigger was created: a restore makes it anew


def quote_identifier(identifier: str) -> str:
    """Return `identifier` quoted with backticks for MySQL."""
    return "`" + identifier.replace("`", "``") + "`"


def row_digest_sql(database: str, table: str, columns: list[str], where: str = "") -> str:
    """Return the query whose one row is (row count, sum, XOR) of the 64-bit row hashes of `table`."""
    rendered = ", ".join(f"hex(quote({quote_identifier(column)}))" for column in columns)
    row_hash = f"cast(conv(left(md5(concat_ws(',', {rendered})), 16), 16, 10) as unsigned)"
    source = f"{quote_identifier(database)}.{quote_identifier(table)}"
    return (
        f"select count(*), cast(coalesce(sum(row_hash), 0) as char), coalesce(bit_xor(row_hash), 0) "
        f"from (select {row_hash} as row_hash from {source}{where}) as hashed"
    )


def sample_ranges(low: int | None, high: int | None, sample: TableSample) -> list[list[int]]:
    """Given the smallest and largest key of a table (None when it is empty), return `sample.ranges` inclusive
    key ranges spread evenly over the span, each `sample.range_fraction` of its share (at least one key)."""
    if low is None or high is None:
        return []
    share = (high - low + 1) / sample.ranges
    width = max(1, int(share * sample.range_fraction))
    starts = sorted({low + int(index * share) for index in range(sample.ranges)})
    return [[start, min(high, start + width - 1)] for start in starts]


INTEGER_KEYS_SQL = """
    select t.table_name, c.column_name from information_schema.tables t
    join information_schema.columns c on c.table_schema = t.table_schema and c.table_name = t.table_name
    where t.table_schema = %s and t.data_length > %s and c.column_key = 'PRI'
      and c.data_type in ('tinyint', 'smallint', 'mediumint', 'int', 'bigint')
      and (select count(*) from information_schema.columns k where k.table_schema = t.table_schema
           and k.table_name = t.table_name and k.column_key = 'PRI') = 1"""


def _sample_for(dataset: MysqlDataset, label: str, table: str, large: Mapping[str, str]) -> TableSample | None:
    """How the backup samples `table`: as `verification.sampled_tables` says, else by its integer key when it is
    one of the `large` tables ({table: key}), else not at all."""
    listed = listed_sample(dataset.verification.sampled_tables, label, table)
    return listed or (TableSample(key=large[table]) if table in large else None)


def large_tables(cursor: Any, database: str, above_bytes: int | None) -> dict[str, str]:
    """Return {table: key column} for the tables of `database` whose data is bigger than `above_bytes` and whose
    primary key is one integer column (none when `above_bytes` is None). Without a primary key, MySQL reports
    the first unique NOT NULL key as PRI: one such integer column, unique and never NULL, serves as well."""
    if above_bytes is None:
        return {}
    cursor.execute(INTEGER_KEYS_SQL, (database, above_bytes))
    return {str(table): str(key) for table, key in cursor.fetchall()}


def _columns(cursor: Any, database: str, table: str) -> list[str]:
    cursor.execute(
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
        "order by ordinal_position",
        (database, table),
    )
    return [row[0] for row in cursor.fetchall()]


def _rows_value(cursor: Any, sql: str) -> str:
    cursor.execute(sql)
    count, total, xor = cursor.fetchone()
    return f"{count} rows, md5 sum {total}, md5 xor {xor}"


def table_rows(
    cursor: Any,
    database: str,
    label: str,
    table: str,
    dataset: MysqlDataset,
    recorded: Mapping[str, Any],
    large: Mapping[str, str],
) -> dict[str, Any]:
    """Return the fingerprint items of one table's rows: "rows label.table", and for a sampled table also
    "sample label.table" (the key and ranges). Given `recorded` (the source's fingerprint, on the restore side)
    the table is sampled exactly as the backup sampled it, whatever the manifest says now; else as
    `_sample_for` decides, with ranges chosen now from the key's span."""
    columns = _columns(cursor, database, table)
    items: dict[str, Any] = {}
    where = ""
    chosen = recorded.get(f"{SAMPLES} {label}.{table}")
    sample = None if recorded else _sample_for(dataset, label, table, large)
    if sample is not None:
        span = quote_identifier(sample.key)
        cursor.execute(f"select min({span}), max({span}) from {quote_identifier(database)}.{quote_identifier(table)}")
        low, high = cursor.fetchone()
        chosen = {"key": sample.key, "ranges": sample_ranges(low, high, sample)}
    if chosen is not None:
        key = quote_identifier(chosen["key"])
        items[f"{SAMPLES} {label}.{table}"] = chosen
        conditions = [f"{key} between {int(low)} and {int(high)}" for low, high in chosen["ranges"]]
        where = " where " + (" or ".join(conditions) or "false")
    items[f"rows {label}.{table}"] = _rows_value(cursor, row_digest_sql(database, table, columns, where))
    return items


def normalise_definition(text: str, database: str) -> str:
    """Return a SHOW CREATE text with the AUTO_INCREMENT counter dropped and the database's own qualified
    name (`db`.) replaced by a placeholder, so a faithful copy under another name reads the same."""
    text = AUTO_INCREMENT.sub("", text)
    return text.replace(quote_identifier(database) + ".", "`<database>`.")


def show_create(cursor: Any, database: str, kind: str, name: str) -> str:
    """Return a digest (16 hex digits) of SHOW CREATE `kind` `name` with every column it returns except the
    object's name and the trigger's creation time, normalised by `normalise_definition`."""
    cursor.execute(f"show create {kind} {quote_identifier(database)}.{quote_identifier(name)}")
    names = [column[0] for column in cursor.description]
    values = {
        column: normalise_definition(value.decode() if isinstance(value, bytes) else str(value), database)
        for column, value in zip(names[1:], cursor.fetchone()[1:], strict=True)
        if column not in SKIPPED_SHOW_COLUMNS
    }
    if kind == "trigger":
        cursor.execute(
            "select action_order from information_schema.triggers where trigger_schema = %s and trigger_name = %s",
            (database, name),
        )
        values["action_order"] = str(cursor.fetchone()[0])
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def schema_items(cursor: Any, database: str, label: str, excluded: set[str]) -> dict[str, Any]:
    """Return one item per table, view, routine, trigger and event of `database` ("trigger label.name": the
    digest of its definition), leaving out the excluded tables and their triggers."""
    items: dict[str, Any] = {}
    for kind, sql in SCHEMA_OBJECTS_SQL.items():
        cursor.execute(sql, (database,))
        for (name,) in cursor.fetchall():
            if kind == "table" and name in excluded:
                continue
            if kind == "trigger" and _trigger_table(cursor, database, name) in excluded:
                continue
            items[f"{kind} {label}.{name}"] = show_create(cursor, database, kind, name)
    return items


def _trigger_table(cursor: Any, database: str, trigger: str) -> str:
    cursor.execute(
        "select event_object_table from information_schema.triggers where trigger_schema = %s and trigger_name = %s",
        (database, trigger),
    )
    return str(cursor.fetchone()[0])


def database_defaults(cursor: Any, database: str) -> tuple[str, str]:
    """Return the default character set and collation of `database`."""
    cursor.execute(
        "select default_character_set_name, default_collation_name from information_schema.schemata "
        "where schema_name = %s",
        (database,),
    )
    character_set, collation = cursor.fetchone()
    return str(character_set), str(collation)


def fingerprint(
    cursor: Any,
    database: str,
    label: str,
    tables: list[str],
    dataset: MysqlDataset,
    recorded: Mapping[str, Any] | None = None,
    sample_above: int | None = None,
) -> dict[str, Any]:
    """Return the fingerprint of `database` (items named after `label`, the source database's name) over
    `tables`, read through `cursor` (inside the dump's snapshot at backup time). `recorded` is the source's
    fingerprint when fingerprinting a restored copy: its sampled tables and ranges are reused. Without it,
    the tables listed in `verification.sampled_tables` are sampled, and those bigger than `sample_above`
    bytes with a one-column integer primary key."""
    character_set, collation = database_defaults(cursor, database)
    items: dict[str, Any] = {"database character set": character_set, "database collation": collation}
    large = {} if recorded else large_tables(cursor, database, sample_above)
    for table in tables:
        items.update(table_rows(cursor, database, label, table, dataset, recorded or {}, large))
    items.update(schema_items(cursor, database, label, set(dataset.source.exclude_tables)))
    return items
