"""The rows' digest in a PostgreSQL fingerprint, by each method a backup may record: "columns" (the default
on PostgreSQL 14+), "text" (before 14), and "hash" and "md5" (recorded by earlier versions). A change to one
value, a NULL, values swapped between two rows, one microsecond or one trailing zero changes the digest; the
same rows in another physical order, or read in another time zone, do not. "hash", the default before
"columns", sums PostgreSQL's record hash, which is linear in the column hashes (31 * h + next), so values
swapped between rows cancel out; "md5" read the session's time zone. Backups recorded with them are still
compared by them, and their flaws are asserted here so they stay known.

Real server only: the session's PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from backup_pipelines.engines.fingerprint import FINGERPRINT
from backup_pipelines.engines.postgres_fingerprint import ROW_METHOD, take_fingerprint
from backup_pipelines.sandbox import PostgresSandbox
from tests.postgres_checks import fresh_database

DATABASE = "row_digest"
TABLE = [("public", "items")]
CONTENT_SQL = """
create table items (id bigint primary key, at timestamptz, name varchar(40), note text, amount numeric,
                    flag boolean, day date, blob bytea, tags text[]);
insert into items select g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute', 'item ' || g,
       case when g % 3 = 0 then null else 'note ' || g end, g / 4.0, g % 2 = 0, date '2026-01-01' + g,
       decode(md5(g::text), 'hex'), array['a', g::text]
from generate_series(1, 200) g;
"""
CHANGES = {
    "one value": "update items set note = 'other' where id = 1",
    "a NULL": "update items set note = null where id = 1",
    "a NULL filled": "update items set note = 'note 3' where id = 3",
    "values swapped between rows": "update items set name = case id when 1 then 'item 2' else 'item 1' end "
    "where id in (1, 2)",
    "one microsecond": "update items set at = at + interval '1 microsecond' where id = 5",
    "one trailing zero": "update items set amount = 1.250 where id = 5",
    "one byte": "update items set blob = set_byte(blob, 0, get_byte(blob, 0) # 1) where id = 7",
    "a boolean": "update items set flag = not flag where id = 7",
    "a date": "update items set day = day + 1 where id = 7",
    "an array element": "update items set tags = array['a', 'x'] where id = 9",
    "a row removed": "delete from items where id = 200",
    "a duplicate row": "insert into items select id + 1000, at, name, note, amount, flag, day, blob, tags "
    "from items where id = 10; update items set id = 10 where id = 1010",
}
# What the methods recorded before "columns" and "text" get wrong (see the module docstring), asserted so it
# stays known: "hash" cannot see values swapped between rows, "md5" sees a time zone as a change.
KNOWN = {"hash": {"values swapped between rows"}, "md5": {"another session time zone"}}
SAME = {
    "another physical order": "create temp table copy as select * from items; delete from items; "
    "insert into items select * from copy order by id desc",
    "another session time zone": "set local timezone = 'Asia/Kathmandu'",
}


@pytest.fixture(scope="module")
def database(postgres: PostgresSandbox) -> Iterator[str]:
    yield fresh_database(postgres, DATABASE, CONTENT_SQL)


def rows_digest(connection: psycopg.Connection[Any], method: str | None) -> tuple[str, str]:
    taken = take_fingerprint(connection, TABLE, {}, large_objects=False, database=False, method=method)
    return taken[FINGERPRINT]["rows public.items"], taken[ROW_METHOD]


@pytest.mark.parametrize("method", ["columns", "text", "hash", "md5"])
def test_every_change_alters_the_digest_and_order_or_time_zone_does_not(
    postgres: PostgresSandbox, database: str, method: str
) -> None:
    with psycopg.connect(postgres.conninfo(database)) as connection:
        original, recorded = rows_digest(connection, method)
        connection.rollback()
        assert recorded == method
        assert original.startswith("200:")
        for name, change in {**CHANGES, **SAME}.items():
            # "a duplicate row" needs the primary key gone for a moment
            connection.execute("alter table items drop constraint items_pkey")
            connection.execute(change)
            digest, _ = rows_digest(connection, method)
            connection.rollback()
            if (name in SAME) != (name in KNOWN.get(method, set())):
                assert digest == original, f"{method}: {name} changed the digest"
            else:
                assert digest != original, f"{method}: {name} left the digest unchanged"


def test_the_default_method_is_columns_and_a_recorded_method_is_kept(postgres: PostgresSandbox, database: str) -> None:
    with psycopg.connect(postgres.conninfo(database)) as connection:
        assert connection.info.server_version >= 140000
        by_default = rows_digest(connection, None)
        by_hash = rows_digest(connection, "hash")
    assert by_default[1] == "columns"
    assert by_hash[1] == "hash"
    assert by_default[0] != by_hash[0], "the two methods are different functions of the rows"
    assert by_default[0].split(":")[0] == by_hash[0].split(":")[0] == "200"
