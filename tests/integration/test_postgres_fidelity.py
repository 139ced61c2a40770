"""A PostgreSQL database built to break naive tools comes back exactly: content, schema, owners, privileges,
roles and database properties, onto the same server and onto a second, empty cluster; a restored copy that
differs in one row or one privilege fails the comparison and names what differs.

Real servers only: the session's PostgreSQL (the source) and a second cluster started here that has none of
the source's roles.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backup_pipelines.cli import main as cli_main
from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines.fingerprint import FINGERPRINT, compare_fingerprints
from backup_pipelines.engines.postgres import collect_stats, connect, postgres_server
from backup_pipelines.engines.postgres_fingerprint import sequence_moved_forward
from backup_pipelines.errors import BackupError, RestoreTargetExistsError
from backup_pipelines.manifest import Manifest, PostgresDataset
from backup_pipelines.operations import restore_backup, restore_test_backup, run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest
from tests.postgres_checks import database_properties, schema_dump

DATABASE = "hostile"
ROLES = ("bp_fid_owner", "bp_fid_reader", "bp_fid_writer")
HOSTILE_SQL = r"""
create role bp_fid_owner nologin;
create role bp_fid_reader nologin;
create role bp_fid_writer login connection limit 7 valid until '2099-01-01';
grant bp_fid_reader to bp_fid_writer;
comment on role bp_fid_reader is 'may read';
alter role bp_fid_writer set statement_timeout = '5min';
"""
CONTENT_SQL = r"""
create schema "Ünïcode Schema" authorization bp_fid_owner;
create type "Ünïcode Schema".mood as enum ('sad', 'ok', 'happy 🚀');
create domain "Ünïcode Schema".positive as integer check (value > 0);
create type "Ünïcode Schema".pair as (a int, b text);
create table "Ünïcode Schema"."Order Items" (
    id bigint generated always as identity primary key,
    "a""b" text, i2 smallint, i8 bigint, num numeric(30, 10), f4 real, f8 double precision, flag boolean,
    day date, ts timestamp, tstz timestamptz, span interval, u uuid, j json, jb jsonb, addr inet, net cidr,
    mac macaddr, blob bytea, tags text[], r int4range, m "Ünïcode Schema".mood, p "Ünïcode Schema".positive,
    pr "Ünïcode Schema".pair, pt point, tv tsvector, bits bit varying(16), money_col money,
    total numeric generated always as (num * 2) stored);
insert into "Ünïcode Schema"."Order Items" ("a""b", i2, i8, num, f4, f8, flag, day, ts, tstz, span, u, j, jb,
    addr, net, mac, blob, tags, r, m, p, pr, pt, tv, bits, money_col)
select 'row ' || g || ' ünï 🚀 ' || repeat('x', g % 7), g % 32767, g::bigint * 1000000007, g / 7.0, 'NaN'::real,
       case when g = 1 then 'Infinity'::float8 else g * 1.5e-300 end, g % 2 = 0, date '2000-02-29' + g,
       timestamp '1999-12-31 23:59:59.999999' + g * interval '1 hour', '2038-01-19 03:14:07+00'::timestamptz,
       g * interval '1 day 2 hours', md5(g::text)::uuid, ('{"k": ' || g || '}')::json,
       jsonb_build_object('n', g, 'nested', jsonb_build_array(1, 'two', null)), ('10.0.0.' || g % 250)::inet,
       '192.168.0.0/16', '08:00:2b:01:02:03', decode(md5(g::text), 'hex'), array['a', null, 'c "q"'],
       int4range(g, g + 10), (array['sad', 'ok', 'happy 🚀'])[1 + g % 3]::"Ünïcode Schema".mood, 1 + g,
       row(g, 'p' || g)::"Ünïcode Schema".pair, point(g, -g), to_tsvector('simple', 'word' || g), B'1011',
       g * 1.25
from generate_series(1, 300) g;
insert into "Ünïcode Schema"."Order Items" ("a""b") values (null), (null), ('duplicate'), ('duplicate');
create table public.all_bytes (id int primary key, data bytea not null);
insert into public.all_bytes select 1, string_agg(set_byte('\x00'::bytea, 0, b), ''::bytea order by b)
from generate_series(0, 255) b;
create table public.no_key (v text);
insert into public.no_key values ('same'), ('same'), ('same'), (null);
create sequence public.uncalled_seq start 42;
create sequence public.used_seq;
select nextval('public.used_seq') from generate_series(1, 5);
create table public.measurements (at date not null, value int) partition by range (at);
create table public.measurements_2025 partition of public.measurements for values from ('2025-01-01') to ('2026-01-01');
create table public.measurements_2026 partition of public.measurements for values from ('2026-01-01') to ('2027-01-01');
insert into public.measurements select date '2025-06-01' + g, g from generate_series(0, 400) g;
create view public.order_summary as select count(*) as orders, sum(num) as total from "Ünïcode Schema"."Order Items";
create materialized view public.order_days as select day, count(*) from "Ünïcode Schema"."Order Items" group by day;
create function public.secret_sum(x int) returns int language sql security definer as 'select x + 1';
revoke all on function public.secret_sum(int) from public;
grant execute on function public.secret_sum(int) to bp_fid_writer;
alter table "Ünïcode Schema"."Order Items" owner to bp_fid_owner;
alter table "Ünïcode Schema"."Order Items" enable row level security;
create policy readers_see_even on "Ünïcode Schema"."Order Items" for select to bp_fid_reader using (id % 2 = 0);
grant usage on schema "Ünïcode Schema" to bp_fid_reader;
grant select on "Ünïcode Schema"."Order Items" to bp_fid_reader;
grant select ("a""b"), update ("a""b") on "Ünïcode Schema"."Order Items" to bp_fid_writer;
revoke all on public.no_key from public;
grant select, insert on public.no_key to bp_fid_writer with grant option;
alter default privileges for role bp_fid_owner in schema "Ünïcode Schema" grant select on tables to bp_fid_reader;
comment on table public.all_bytes is 'every byte value: 0x00..0xff';
comment on column "Ünïcode Schema"."Order Items"."a""b" is 'a column with a quote in its name';
select lo_from_bytea(0, '\xdeadbeef00ff'::bytea);
select lo_from_bytea(0, convert_to('large object ünï', 'UTF8'));
create trigger touch before update on public.no_key for each row execute function suppress_redundant_updates_trigger();
"""
DATABASE_SQL = """
comment on database hostile is 'the hostile source ✓';
alter database hostile set work_mem = '64MB';
alter database hostile set search_path = "$user", public, "Ünïcode Schema";
revoke connect, temporary on database hostile from public;
grant connect on database hostile to bp_fid_reader;
alter role bp_fid_reader in database hostile set statement_timeout = '30s';
"""


@pytest.fixture(scope="module")
def hostile(postgres: PostgresSandbox) -> Iterator[str]:
    """The hostile source database on the session's server, with its roles."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        for role in reversed(ROLES):
            admin.execute(f"drop role if exists {role}")
        admin.execute(HOSTILE_SQL)
        admin.execute(f"create database {DATABASE} template template0 encoding 'UTF8'")
        admin.execute(DATABASE_SQL)
    with psycopg.connect(postgres.conninfo(DATABASE), autocommit=True) as connection:
        connection.execute(CONTENT_SQL)
    yield DATABASE


@pytest.fixture
def manifest(
    tmp_path: Path, postgres: PostgresSandbox, empty_postgres: PostgresSandbox, hostile: str, age_keys: KeyPair
) -> Manifest:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], database=hostile)
    data["servers"]["empty_postgres"] = {
        "kind": "postgres",
        "host": "127.0.0.1",
        "port": empty_postgres.port,
        "user": empty_postgres.user,
        "password_env": "TEST_FRESH_PG_PASSWORD",
    }
    data["datasets"]["app_db"]["verification"] = {"queries": []}
    return write_manifest(tmp_path / "backup_manifest.yaml", data)


@pytest.fixture(autouse=True)
def _fresh_password(monkeypatch: pytest.MonkeyPatch, empty_postgres: PostgresSandbox, age_keys: KeyPair) -> None:
    monkeypatch.setenv("TEST_FRESH_PG_PASSWORD", empty_postgres.password)
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


def row_digests(sandbox: PostgresSandbox, database: str) -> dict[str, str]:
    """Every table's rows, sorted as text and hashed whole: an order-dependent method unlike the fingerprint's."""
    with psycopg.connect(sandbox.conninfo(database)) as connection:
        tables = connection.execute(
            "select format('%I.%I', n.nspname, c.relname) from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'm') "
            "and n.nspname not in ('pg_catalog', 'information_schema') order by 1"
        ).fetchall()
        return {
            table: connection.execute(
                f"select md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) from {table} t"
            ).fetchone()[0]  # type: ignore[index]
            for (table,) in tables
        }


def large_objects(sandbox: PostgresSandbox, database: str) -> list[tuple[str, str]]:
    with psycopg.connect(sandbox.conninfo(database)) as connection:
        return connection.execute(
            "select md5(lo_get(oid)), pg_get_userbyid(lomowner) from pg_largeobject_metadata order by 1"
        ).fetchall()


def roles(sandbox: PostgresSandbox) -> list[tuple[object, ...]]:
    with psycopg.connect(sandbox.conninfo()) as connection:
        return connection.execute(
            "select r.rolname, r.rolcanlogin, r.rolconnlimit, r.rolvaliduntil::date, "
            "array(select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid "
            "      where m.member = r.oid), "
            "shobj_description(r.oid, 'pg_authid') from pg_roles r where r.rolname like 'bp\\_fid\\_%' order by 1"
        ).fetchall()


def test_a_hostile_database_restores_onto_an_empty_cluster_identical_to_the_source(
    manifest: Manifest, postgres: PostgresSandbox, empty_postgres: PostgresSandbox
) -> None:
    stored = run_backup(manifest, "app_db", "2026-12-01-05:00")
    assert "globals.sql" in stored.record.companions
    report = restore_test_backup(manifest, "app_db", stored.record)
    fingerprint = [outcome for outcome in report.outcomes if outcome.name == "content fingerprint"]
    assert fingerprint and fingerprint[0].passed, report.failures

    where = restore_backup(manifest, "app_db", stored.record, "hostile_copy", server="empty_postgres")
    assert where.endswith("/hostile_copy")
    assert roles(empty_postgres) == roles(postgres)
    assert schema_dump(empty_postgres, "hostile_copy") == schema_dump(postgres, DATABASE)
    assert row_digests(empty_postgres, "hostile_copy") == row_digests(postgres, DATABASE)
    assert large_objects(empty_postgres, "hostile_copy") == large_objects(postgres, DATABASE)
    assert database_properties(empty_postgres, "hostile_copy") == database_properties(postgres, DATABASE)
    with psycopg.connect(empty_postgres.conninfo("hostile_copy")) as connection:
        executable = connection.execute("select has_function_privilege('public', 'public.secret_sum(int)', 'execute')")
        assert executable.fetchone() == (False,)


def test_a_restore_test_on_an_empty_cluster_creates_the_roles_and_passes(manifest: Manifest) -> None:
    data = manifest.model_dump(mode="json", exclude_none=True)
    data["datasets"]["app_db"]["restore_test"] = {"server": "empty_postgres"}
    other = write_manifest(manifest.base_dir / "other.yaml", data)
    stored = run_backup(other, "app_db", "2026-12-01-06:00")
    report = restore_test_backup(other, "app_db", stored.record)
    assert not report.failures


def test_an_existing_target_is_a_clear_error_and_a_failed_restore_leaves_no_database(
    manifest: Manifest, empty_postgres: PostgresSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = run_backup(manifest, "app_db", "2026-12-01-07:00")
    restore_backup(manifest, "app_db", stored.record, "taken", server="empty_postgres")
    with pytest.raises(RestoreTargetExistsError, match="'taken' already exists"):
        restore_backup(manifest, "app_db", stored.record, "taken", server="empty_postgres")
    status = cli_main(
        ["--manifest", str(manifest.path), "restore", "app_db", "--database", "taken", "--server", "empty_postgres"]
    )
    assert status == 1 and capsys.readouterr().err.startswith("error: database 'taken' already exists")

    # A damaged archive makes pg_restore fail part-way: nothing is left under the target or a temporary name.
    object_path = manifest.resolve_path(str(manifest.base_dir / "repo")) / stored.record.object_path
    data = object_path.read_bytes()
    object_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackupError):
        restore_backup(manifest, "app_db", stored.record, "half", server="empty_postgres")
    with psycopg.connect(empty_postgres.conninfo()) as connection:
        names = [row[0] for row in connection.execute("select datname from pg_database")]
    assert "half" not in names and not [name for name in names if name.startswith("bp_restoring_")]


def test_skipping_privileges_is_explicit_and_warns(manifest: Manifest, capsys: pytest.CaptureFixture[str]) -> None:
    run_backup(manifest, "app_db", "2026-12-01-08:00")
    argv = ["--manifest", str(manifest.path), "restore", "app_db", "--database", "bare", "--server", "empty_postgres"]
    assert cli_main([*argv, "--skip-privileges"]) == 0
    assert "warning: --skip-privileges" in capsys.readouterr().err


def test_one_changed_row_or_privilege_in_a_restored_copy_is_named(
    manifest: Manifest, postgres: PostgresSandbox
) -> None:
    stored = run_backup(manifest, "app_db", "2026-12-01-09:00")
    restore_backup(manifest, "app_db", stored.record, "tampered")
    with psycopg.connect(postgres.conninfo("tampered"), autocommit=True) as connection:
        connection.execute("update public.no_key set v = 'changed' where v is null")
        connection.execute('revoke select on "Ünïcode Schema"."Order Items" from bp_fid_reader')
    dataset = manifest.dataset("app_db")
    assert isinstance(dataset, PostgresDataset)
    server = postgres_server(manifest, "pg")
    with connect(server, "tampered", postgres.password) as connection:
        restored = collect_stats(connection, dataset, True)
    differing = {
        outcome.name
        for outcome in compare_fingerprints(stored.record.source_stats, restored, sequence_moved_forward)
        if not outcome.passed
    }
    assert differing == {"rows public.no_key", "relation Ünïcode Schema.Order Items"}
    assert FINGERPRINT in stored.record.source_stats
