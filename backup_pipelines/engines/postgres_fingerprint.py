"""The content fingerprint of a PostgreSQL database, taken inside one transaction's snapshot.

Items (see `engines.fingerprint`):
- `rows <schema>.<table>`: the row count and an order-independent digest of the rows: the sum of a 64-bit
  hash of each row. Duplicated rows count. The row hash ("columns", PostgreSQL 14+) is the xor of each
  column's extended hash seeded by its position; types whose hash is looser than their text output (numeric,
  floats, json...) are hashed as their text, and text under the C collation, byte for byte. Before 14 ("text")
  it is the first 64 bits of the md5 of the row's text. Both pin the time zone and output styles. Backups
  recorded with the earlier "hash" (record hash, whose sum lets values swapped between rows cancel out) or
  "md5" (session time zone) are compared by the method they recorded. Tables listed under
  `verification.sampled_tables`, and tables above `verification.sample_tables_above_bytes` with an integer
  primary key, are digested in key ranges chosen at backup time (`rows <schema>.<table> (sampled)`); the
  ranges and keys are recorded so the restore digests the same rows (see postgres_samples).
- `sequence <schema>.<name>`: last_value and is_called. pg_dump reads sequences outside the snapshot, a little
  later than this fingerprint, so a sequence that moved forward (in its direction) is accepted, never one
  that moved back.
- `large objects`: every large object's oid, owner, privileges and md5 of its content.
- one item per schema object (schema, table, view, materialized view, sequence, foreign table, column list,
  index, constraint, trigger, policy, function, type, default privileges, extension): its definition, owner,
  privileges and comment, names schema-qualified (the queries run with search_path = pg_catalog).
- `database <property>`: owner, privileges, comment, settings, encoding and locale.
Privileges are compared as sorted ACL items, with the object kind's default ACL standing in for NULL, so an
explicit ACL equal to the default matches the implicit one pg_dump restores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD, digest_lines
from backup_pipelines.engines.postgres_samples import (
    SAMPLE_KEYS,
    SAMPLES,
    choose_ranges,
    planned_samples,
    range_filter,
    recorded_samples,
)
from backup_pipelines.manifest import TableSample

Scope = Callable[[str | None, str | None], bool]
ROW_METHOD = "row_digest"  # source_stats key: how rows were digested ("columns", "text", "hash" or "md5"); the
# restore digests the same way
MD5_ROW = "('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint"
# Output settings pinned while "columns" and "text" digest rows (as pg_dump pins them), so a value's text does
# not depend on the session or server defaults; "hash" and "md5", recorded before, keep the session's.
PINNED = {"timezone": "UTC", "datestyle": "ISO, YMD", "intervalstyle": "postgres", "extra_float_digits": "3"}
PINNED_METHODS = {"columns", "text"}
# Types whose extended hash distinguishes exactly what their text output distinguishes: hashed as values, by the
# SQL-callable hash expression given here ({} the value, {seed} the seed), or (None: none is callable from SQL)
# together in one record of such columns. A timestamptz is hashed as its UTC timestamp (the same instant).
HASHED_TYPES: dict[str, str | None] = {
    "smallint": "hashint2extended({}, {seed})",
    "integer": "hashint4extended({}, {seed})",
    "bigint": "hashint8extended({}, {seed})",
    "oid": "hashoidextended({}, {seed})",
    "uuid": "uuid_hash_extended({}, {seed})",
    '"char"': "hashcharextended({}, {seed})",
    "timestamp without time zone": "timestamp_hash_extended({}, {seed})",
    "timestamp with time zone": "timestamp_hash_extended({} at time zone 'UTC', {seed})",
    "time without time zone": "time_hash_extended({}, {seed})",
    "boolean": None,
    "bytea": None,
    "date": None,
}
TEXT_HASH = 'hashtextextended({}::text collate "C", {seed})'
C_COLLATED_TYPES = {"text", "character varying", "name"}  # hashed byte for byte under the C collation
COLUMNS_SQL = """
    select a.attname, format_type(a.atttypid, null) from pg_attribute a
    join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped order by a.attnum"""
SCOPE = """
    {column} not in ('pg_catalog', 'information_schema') and {column} not like 'pg\\_toast%'
    and {column} not like 'pg\\_temp%'
"""
# The object kinds that belong to a table, whose definition functions (pg_get_indexdef, pg_get_expr...) wait for
# the table's lock: their queries keep only the dump's schemas in SQL (schema_condition), before those functions
# run, so a migration holding a table in a schema the dump leaves out does not hold the backup up.
TABLE_BOUND = {"relation", "index", "constraint", "policy"}
RELATION_ACL_KIND = "(case when c.relkind = 'S' then 's' else 'r' end)::\"char\""
NOT_EXTENSION = "not exists (select 1 from pg_depend d where d.objid = {oid} and d.deptype = 'e')"


def acl(column: str, kind: str, owner: str) -> str:
    """Return SQL for the sorted ACL items of `column`, the default ACL of object kind `kind` (a one-letter
    code, or an SQL expression giving one) for `owner` when NULL."""
    code = f"'{kind}'" if len(kind) == 1 else kind
    return (
        f"(select string_agg(item::text, ',' order by item::text) "
        f"from unnest(coalesce({column}, acldefault({code}, {owner}))) item)"
    )


OBJECT_QUERIES: dict[str, str] = {
    "schema": f"""
        select n.nspname, null, n.nspname,
               concat_ws(' | ', pg_get_userbyid(n.nspowner), {acl("n.nspacl", "n", "n.nspowner")},
               obj_description(n.oid, 'pg_namespace'))
        from pg_namespace n where {SCOPE.format(column="n.nspname")} and {NOT_EXTENSION.format(oid="n.oid")}""",
    "relation": f"""
        select n.nspname, c.relname, n.nspname || '.' || c.relname,
               concat_ws(' | ', c.relkind, pg_get_userbyid(c.relowner),
               {acl("c.relacl", RELATION_ACL_KIND, "c.relowner")}, obj_description(c.oid, 'pg_class'),
               'rls=' || c.relrowsecurity || '/' || c.relforcerowsecurity, c.relpersistence,
               case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end,
               case when c.relkind = 'p' then pg_get_partkeydef(c.oid) end,
               case when c.relispartition then pg_get_expr(c.relpartbound, c.oid) end,
               (select concat_ws(' ', s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmax, s.seqmin,
                       s.seqcache, s.seqcycle) from pg_sequence s where s.seqrelid = c.oid),
               (select string_agg(concat_ws(' ', quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
                       case when a.attnotnull then 'not null' end, nullif(a.attgenerated, ''),
                       nullif(a.attidentity, ''), pg_get_expr(ad.adbin, ad.adrelid),
                       case when a.attcollation <> 0 then a.attcollation::regcollation::text end,
                       'acl:' || {acl("a.attacl", "c", "c.relowner")}, col_description(c.oid, a.attnum)),
                       ', ' order by a.attnum)
                from pg_attribute a left join pg_attrdef ad on ad.adrelid = a.attrelid and ad.adnum = a.attnum
                where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                  and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c')))
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and {SCOPE.format(column="n.nspname")}
          and {NOT_EXTENSION.format(oid="c.oid")}""",
    "index": f"""
        select n.nspname, r.relname, n.nspname || '.' || c.relname, pg_get_indexdef(i.indexrelid)
        from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
        join pg_class r on r.oid = i.indrelid
        where {SCOPE.format(column="n.nspname")} and {NOT_EXTENSION.format(oid="i.indrelid")}""",
    "constraint": f"""
        select n.nspname, r.relname, n.nspname || '.' || coalesce(r.relname, t.typname, '') || '.' || o.conname,
               pg_get_constraintdef(o.oid) || coalesce(' | ' || obj_description(o.oid, 'pg_constraint'), '')
        from pg_constraint o join pg_namespace n on n.oid = o.connamespace
        left join pg_class r on r.oid = o.conrelid left join pg_type t on t.oid = o.contypid
        where {SCOPE.format(column="n.nspname")} and {NOT_EXTENSION.format(oid="coalesce(r.oid, t.oid)")}""",
    "trigger": f"""
        select n.nspname, c.relname, n.nspname || '.' || c.relname || '.' || g.tgname,
               pg_get_triggerdef(g.oid) || ' ' || g.tgenabled::text
        from pg_trigger g join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace
        where not g.tgisinternal and {SCOPE.format(column="n.nspname")}""",
    "policy": f"""
        select n.nspname, c.relname, n.nspname || '.' || c.relname || '.' || p.polname,
               concat_ws(' | ', p.polcmd::text, p.polpermissive,
                         (select string_agg(case when r = 0 then 'public' else pg_get_userbyid(r) end, ','
                                 order by 1) from unnest(p.polroles) r),
                         pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
        from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
        where {SCOPE.format(column="n.nspname")}""",
    "function": f"""
        select n.nspname, null,
               n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               concat_ws(' | ', pg_get_userbyid(p.proowner), {acl("p.proacl", "f", "p.proowner")},
                         obj_description(p.oid, 'pg_proc'),
                         case when p.prokind = 'a' then 'aggregate' else pg_get_functiondef(p.oid) end)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where {SCOPE.format(column="n.nspname")} and {NOT_EXTENSION.format(oid="p.oid")}""",
    "type": f"""
        select n.nspname, null, n.nspname || '.' || t.typname,
               concat_ws(' | ', t.typtype, pg_get_userbyid(t.typowner), {acl("t.typacl", "T", "t.typowner")},
                         obj_description(t.oid, 'pg_type'), format_type(t.typbasetype, t.typtypmod),
                         (select string_agg(e.enumlabel, ',' order by e.enumsortorder)
                          from pg_enum e where e.enumtypid = t.oid))
        from pg_type t join pg_namespace n on n.oid = t.typnamespace
        where t.typtype in ('e', 'd', 'r', 'm') and {SCOPE.format(column="n.nspname")}
          and {NOT_EXTENSION.format(oid="t.oid")}""",
    "default privileges": """
        select n.nspname, null, concat_ws(' ', pg_get_userbyid(d.defaclrole), coalesce(n.nspname, '(all schemas)'),
                         d.defaclobjtype::text),
               (select string_agg(item::text, ',' order by item::text) from unnest(d.defaclacl) item)
        from pg_default_acl d left join pg_namespace n on n.oid = d.defaclnamespace""",
    "extension": """
        select null, null, e.extname, e.extversion || ' in ' || n.nspname
        from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname <> 'plpgsql'""",
}

DATABASE_QUERY = f"""
    select pg_get_userbyid(d.datdba), {acl("d.datacl", "d", "d.datdba")},
           shobj_description(d.oid, 'pg_database'), pg_encoding_to_char(d.encoding),
           d.datcollate || ' / ' || d.datctype,
           (select string_agg(setting, ', ' order by setting) from pg_db_role_setting s, unnest(s.setconfig) setting
            where s.setdatabase = d.oid and s.setrole = 0),
           (select string_agg(pg_get_userbyid(s.setrole) || ': ' || array_to_string(s.setconfig, ', '), '; '
                   order by 1) from pg_db_role_setting s where s.setdatabase = d.oid and s.setrole <> 0)
    from pg_database d where d.datname = current_database()"""
DATABASE_ITEMS = ("owner", "privileges", "comment", "encoding", "locale", "settings", "role settings")

ROW_DESCRIPTIONS = {
    "columns": "count and sum of a 64-bit hash of each row: the xor of each column's hash seeded by its position "
    "(PostgreSQL's extended hash; text output for types whose hash is looser than their text)",
    "hash": "count and sum of a 64-bit hash of each row's values (PostgreSQL's extended hash; text output for "
    "types whose hash is looser than their text; values swapped between rows cancel out)",
    "text": "count and sum of the first 64 bits of the md5 of each row's text, time zone UTC",
    "md5": "count and sum of the first 64 bits of the md5 of each row's text",
}
METHOD = (
    "rows: {rows} (every table{sampled}); sequences: last_value/is_called "
    "(moved forward accepted); large objects: oid, owner, privileges, md5 of content; schema objects: "
    "definition, owner, privileges, comment of every schema, table, column, view, sequence, index, constraint, "
    "trigger, policy, function, type, default privilege and extension; database: owner, privileges, comment, "
    "settings, encoding, locale"
)


def take_fingerprint(
    connection: psycopg.Connection[Any],
    tables: list[tuple[str, str]],
    samples: dict[str, TableSample],
    recorded_ranges: dict[str, list[list[int]]] | None = None,
    large_objects: bool = True,
    sample_above: int | None = None,
    recorded_keys: dict[str, str] | None = None,
    schemas: tuple[list[str], list[str]] = ([], []),
    sequences: dict[str, Any] | None = None,
    database: bool = True,
    scope: Scope | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Return `{FINGERPRINT: items, FINGERPRINT_METHOD: sentence, SAMPLES: key ranges, SAMPLE_KEYS: their
    keys}` of the database `connection` is on, as its current transaction sees it. `tables` are the in-scope
    (schema, table) pairs. At backup time (`recorded_ranges` None) a table named in `samples` (as
    schema.table or table), or bigger than `sample_above` bytes with a one-column integer primary key, is
    digested only in key ranges chosen now; on the restore side exactly the tables in `recorded_ranges` are,
    in those ranges, by `recorded_keys` (see postgres_samples). `sequences` are the sequence items
    read earlier (`sequence_values`), read now when None. The database's own properties are items only with
    `database` (they are restored only with the globals script). `scope(schema, table)` says whether an
    object belongs to the dump (schema None: a cluster-wide one such as an extension; table None: a
    schema-level one); `tables` and `sequences` must already be in scope. Rows are digested by `method`
    (the one recorded at backup time, on the restore side), else by "columns" where the server has
    hash_record_extended (PostgreSQL 14+), else "text"."""
    connection.execute("set search_path = pg_catalog")
    row_method = method or ("columns" if connection.info.server_version >= 140000 else "text")
    pinned = PINNED if row_method in PINNED_METHODS else {}
    for setting, value in pinned.items():
        connection.execute(sql.SQL("set {} = {}").format(sql.Identifier(setting), sql.Literal(value)))
    items: dict[str, Any] = {}
    ranges: dict[str, list[list[int]]] = {}
    if recorded_ranges is None:  # backup time: listed tables, and large ones with an integer key
        plan = planned_samples(connection, tables, samples, sample_above)
    else:  # the restore side digests what the backup digested, whatever the manifest says now
        plan = recorded_samples(tables, recorded_ranges, recorded_keys, samples)
    for schema, table in tables:
        name = f"{schema}.{table}"
        sample = plan.get(name)
        where: sql.Composable = sql.SQL("")
        if sample is not None:
            chosen = (recorded_ranges or {}).get(name)
            ranges[name] = chosen if chosen is not None else choose_ranges(connection, schema, table, sample)
            where = range_filter(sample.key, ranges[name])
        row_hash = _row_hash(connection, schema, table, row_method)
        # sum() of bigint is exact (PostgreSQL accumulates it in 128 bits and returns numeric): the same value as
        # summing the hashes cast to numeric, measured 7-15 % cheaper.
        query = sql.SQL("select count(*)::text || ':' || coalesce(sum({}), 0) from {}.{} t{}").format(
            row_hash, sql.Identifier(schema), sql.Identifier(table), where
        )
        items[f"rows {name}" + (" (sampled)" if sample is not None else "")] = _one(connection, query)
    items.update(sequence_values(connection, scope) if sequences is None else sequences)
    if large_objects:
        items["large objects"] = _large_objects(connection)
    condition = schema_condition(*schemas)
    for kind, object_query in OBJECT_QUERIES.items():
        listing: sql.SQL | sql.Composed = sql.SQL(object_query)
        if kind in TABLE_BOUND and condition is not None:
            listing = listing + sql.SQL(" and ") + condition
        for schema, table, identity, description in connection.execute(listing).fetchall():
            if scope is None or scope(schema, table):
                items[f"{kind} {identity}"] = description or ""
    row = connection.execute(DATABASE_QUERY.encode()).fetchone() if database else None
    for label, value in zip(DATABASE_ITEMS, row or (), strict=False):
        items[f"database {label}"] = value or ""
    for setting in ("search_path", *pinned):
        connection.execute(sql.SQL("reset {}").format(sql.Identifier(setting)))
    sampled = f"; sampled in key ranges: {', '.join(sorted(ranges))}" if ranges else ""
    described = METHOD.format(sampled=sampled, rows=ROW_DESCRIPTIONS[row_method])
    keys = {name: plan[name].key for name in ranges}
    return {
        FINGERPRINT: items,
        FINGERPRINT_METHOD: described,
        SAMPLES: ranges,
        SAMPLE_KEYS: keys,
        ROW_METHOD: row_method,
    }


def schema_condition(only: list[str], excluded: list[str]) -> sql.Composable | None:
    """Return the WHERE condition keeping the objects of schema `n` that are in `only` (all when empty) and not in
    `excluded`, or None when that is every schema."""
    parts = [sql.SQL("n.nspname = any({})").format(sql.Literal(only))] if only else []
    parts += [sql.SQL("n.nspname <> all({})").format(sql.Literal(excluded))] if excluded else []
    return sql.SQL(" and ").join(parts) if parts else None


def _row_hash(connection: psycopg.Connection[Any], schema: str, table: str, method: str) -> sql.Composable:
    """Return the SQL expression giving one row's 64-bit hash. Types listed in HASHED_TYPES are hashed as
    values, text types under the C collation, every other type as its text output (so a type whose hash is
    looser than its text is judged by its text). With "columns", each column is hashed by its own function
    with its position as seed (the HASHED_TYPES without a callable one together in one record) and the
    column hashes are combined by xor, which binds the values to their row (and costs about what reading the
    rows does, measured); with "hash", PostgreSQL's extended hash of the whole row as one record; with "text"
    and "md5", the first 64 bits of the md5 of the row's text."""
    columns = connection.execute(COLUMNS_SQL, (schema, table)).fetchall()
    if method in ("md5", "text") or not columns:
        return sql.SQL(MD5_ROW)
    parts: list[sql.Composable] = []
    together: list[sql.Composable] = []  # hashed as one record
    for position, (column, type_name) in enumerate(columns, start=1):
        name = sql.Identifier(column)
        if method == "hash":  # the expressions this method has always used, so recorded digests still match
            typed = "t.{}" if type_name in HASHED_TYPES else "t.{}::text"
            together.append(sql.SQL('t.{} collate "C"' if type_name in C_COLLATED_TYPES else typed).format(name))
            continue
        hashed = HASHED_TYPES.get(type_name, TEXT_HASH)  # text types and unlisted types: TEXT_HASH
        if hashed is None:
            together.append(sql.SQL("t.{}").format(name))
        else:  # a NULL hashes to the seed, so it still counts
            expression = sql.SQL(hashed).format(sql.SQL("t.{}").format(name), seed=sql.Literal(position))
            parts.append(sql.SQL("coalesce({}, {})").format(expression, sql.Literal(position)))
    if together:
        parts.append(sql.SQL("hash_record_extended(row({}), 0)").format(sql.SQL(", ").join(together)))
    return sql.SQL(" # ").join(parts)


def _one(connection: psycopg.Connection[Any], query: Any) -> Any:
    row = connection.execute(query).fetchone()
    return row[0] if row else None


def sequence_values(connection: psycopg.Connection[Any], scope: Scope | None = None) -> dict[str, Any]:
    """Return the fingerprint items of every sequence in `scope`: last_value, is_called and the increment."""
    rows = connection.execute(
        "select n.nspname, c.relname, s.seqincrement from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace join pg_sequence s on s.seqrelid = c.oid "
        f"where c.relkind = 'S' and {SCOPE.format(column='n.nspname')} and {NOT_EXTENSION.format(oid='c.oid')}"
    ).fetchall()
    values = {}
    for schema, name, increment in rows:
        if scope is not None and not scope(schema, name):
            continue
        query = sql.SQL("select last_value, is_called from {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        row = connection.execute(query).fetchone()
        assert row is not None, "a sequence always has one row"
        last_value, is_called = row
        values[f"sequence {schema}.{name}"] = {
            "last_value": int(last_value),
            "is_called": bool(is_called),
            "increment": int(increment),
        }
    return values


def _large_objects(connection: psycopg.Connection[Any]) -> str:
    rows = connection.execute(
        "select oid::text, pg_get_userbyid(lomowner), "
        + acl("lomacl", "L", "lomowner")
        + ", md5(lo_get(oid)) from pg_largeobject_metadata"
    ).fetchall()
    return f"{len(rows)}:{digest_lines([' '.join(str(value) for value in row) for row in rows])}"


def sequence_moved_forward(item: str, expected: Any, actual: Any) -> bool:
    """Accept a restored sequence that is ahead of the one fingerprinted, in its own direction: pg_dump read
    it a moment after the fingerprint did, and sequences are not transactional."""
    if not item.startswith("sequence ") or not isinstance(expected, dict) or not isinstance(actual, dict):
        return False
    before, after = int(expected.get("last_value", 0)), int(actual.get("last_value", 0))
    if after == before:  # the same value: is_called may only have turned true (nextval ran once more)
        return bool(actual.get("is_called")) or not expected.get("is_called")
    return after > before if int(expected.get("increment", 1)) > 0 else after < before
