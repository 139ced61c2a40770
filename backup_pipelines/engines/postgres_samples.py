"""Which PostgreSQL tables the content fingerprint digests in key ranges instead of whole, and which ranges.

At backup time a table is sampled when `verification.sampled_tables` lists it, or when it is bigger on disk
(`pg_table_size`) than `verification.sample_tables_above_bytes` and its primary key is one integer column.
The ranges are chosen from the key's span and recorded with the key, so the restore side digests exactly the
same rows, whatever the manifest says by then: the restore follows the record, never its own sizes.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from backup_pipelines.manifest import TableSample, listed_sample

SAMPLES = "fingerprint_samples"  # source_stats key: {schema.table: [[low, high), ...]}
SAMPLE_KEYS = "fingerprint_sample_keys"  # source_stats key: {schema.table: key column}
# Catalog only: sizing a table (pg_table_size) waits for a lock on it, so only the in-scope candidates are sized
# afterwards, tables pg_dump locks anyway; sizing every table would wait on a migration in a schema left out.
INTEGER_KEYS_SQL = """
    select n.nspname, c.relname, a.attname, c.oid from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join pg_index i on i.indrelid = c.oid and i.indisprimary and i.indnkeyatts = 1
    join pg_attribute a on a.attrelid = c.oid and a.attnum = i.indkey[0]
    where c.relkind in ('r', 'm') and a.atttypid in ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)"""


def planned_samples(
    connection: psycopg.Connection[Any],
    tables: list[tuple[str, str]],
    listed: dict[str, TableSample],
    above_bytes: int | None,
) -> dict[str, TableSample]:
    """Return {schema.table: how} for the `tables` to sample at backup time: those `listed` (by schema.table or
    table), then those bigger than `above_bytes` whose primary key is one integer column (None: none)."""
    chosen: dict[str, TableSample] = {}
    for schema, table in tables:
        sample = listed_sample(listed, schema, table)
        if sample is not None:
            chosen[f"{schema}.{table}"] = sample
    if above_bytes is None:
        return chosen
    wanted = set(tables)
    candidates = {
        oid: (f"{schema}.{table}", key)
        for schema, table, key, oid in connection.execute(INTEGER_KEYS_SQL).fetchall()
        if (schema, table) in wanted and f"{schema}.{table}" not in chosen
    }
    sizes = connection.execute(
        "select relation, pg_table_size(relation::regclass) from unnest(%s::oid[]) relation", (list(candidates),)
    ).fetchall()
    for oid, size in sizes:
        if size is not None and size > above_bytes:
            name, key = candidates[oid]
            chosen[name] = TableSample(key=key)
    return chosen


def recorded_samples(
    tables: list[tuple[str, str]],
    ranges: dict[str, list[list[int]]],
    keys: dict[str, str] | None,
    listed: dict[str, TableSample],
) -> dict[str, TableSample]:
    """Return {schema.table: how} for the restore side: every one of `tables` the backup sampled (its recorded
    `ranges`), by its recorded key; backups made before keys were recorded sampled only `listed` tables (by
    schema.table or table), whose key the manifest gives. A sampled table whose key is known neither way is
    digested whole (and then differs)."""
    chosen: dict[str, TableSample] = {}
    for schema, table in tables:
        name = f"{schema}.{table}"
        if name not in ranges:
            continue
        key = (keys or {}).get(name)
        if key is None:
            sample = listed_sample(listed, schema, table)
            key = sample.key if sample is not None else None
        if key is not None:
            chosen[name] = TableSample(key=key)
    return chosen


def choose_ranges(connection: psycopg.Connection[Any], schema: str, table: str, sample: TableSample) -> list[list[int]]:
    """Return `sample.ranges` [low, high) key ranges spread evenly over the key's span, each covering
    `sample.range_fraction` of its slice."""
    query = sql.SQL("select min({key})::bigint, max({key})::bigint from {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table), key=sql.Identifier(sample.key)
    )
    row = connection.execute(query).fetchone()
    if row is None or row[0] is None:
        return []
    low, high = int(row[0]), int(row[1]) + 1
    slice_width = max(1, (high - low) // sample.ranges)
    width = max(1, int(slice_width * sample.range_fraction))
    return [[start, start + width] for start in range(low, high, slice_width)][: sample.ranges]


def range_filter(key: str, ranges: list[list[int]]) -> sql.Composable:
    """Return the WHERE clause selecting the rows whose `key` lies in one of `ranges` ([low, high))."""
    if not ranges:
        return sql.SQL(" where false")
    parts = [
        sql.SQL("({key} >= {low} and {key} < {high})").format(
            key=sql.Identifier(key), low=sql.Literal(low), high=sql.Literal(high)
        )
        for low, high in ranges
    ]
    return sql.SQL(" where ") + sql.SQL(" or ").join(parts)
