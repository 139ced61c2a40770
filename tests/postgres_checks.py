"""Independent judges of a restored PostgreSQL database, shared by the tests that restore one (the tool's path
and the documented commands): pg_dump's own schema dump, and the database's cluster-level properties."""

from __future__ import annotations

import subprocess

import psycopg
from psycopg.conninfo import make_conninfo

from backup_pipelines.engines.postgres_restore import binary
from backup_pipelines.manifest import PostgresServerConfig
from backup_pipelines.sandbox import PostgresSandbox

VOLATILE = ("-- Dumped", "\\restrict", "\\unrestrict")  # versions, and pg_dump's random per-run key


def conninfo(sandbox: PostgresSandbox, database: str) -> str:
    """The sandbox's connection string for `database`, quoted (a name may hold spaces)."""
    return make_conninfo(sandbox.conninfo(), dbname=database)


def schema_dump(sandbox: PostgresSandbox, database: str) -> str:
    """The schema-only dump of `database` with owners, privileges and comments, without its volatile lines."""
    server = PostgresServerConfig(kind="postgres", port=sandbox.port, user=sandbox.user)
    command = [binary("pg_dump", server), "--schema-only", conninfo(sandbox, database)]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in text.splitlines() if not line.startswith(VOLATILE))


def database_properties(sandbox: PostgresSandbox, database: str) -> tuple[object, ...]:
    """What pg_dump leaves out of a database: comment, privileges, owner, encoding and settings (sorted)."""
    with psycopg.connect(sandbox.conninfo(), autocommit=True) as connection:
        row = connection.execute(
            "select shobj_description(d.oid, 'pg_database'), d.datacl::text, pg_get_userbyid(d.datdba), "
            "pg_encoding_to_char(d.encoding), (select array_agg(c order by c) from pg_db_role_setting s, "
            "unnest(s.setconfig) c where s.setdatabase = d.oid and s.setrole = 0) "
            "from pg_database d where datname = %s",
            (database,),
        ).fetchone()
    assert row is not None, f"database {database!r} does not exist"
    return tuple(row)


def fresh_database(sandbox: PostgresSandbox, name: str, content_sql: str) -> str:
    """Create database `name` on `sandbox` anew (dropping one left by an earlier run), run `content_sql` in
    it, and return its name."""
    with psycopg.connect(sandbox.conninfo(), autocommit=True) as admin:
        admin.execute(f"drop database if exists {name}")
        admin.execute(f"create database {name}")
    with psycopg.connect(sandbox.conninfo(name), autocommit=True) as connection:
        connection.execute(content_sql)
    return name
