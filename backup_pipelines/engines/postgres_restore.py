"""Restoring a PostgreSQL backup into a new database, the same way for `backup-pipelines restore`, the restore
test and the documented standard-tool commands: the globals script (roles, CREATE DATABASE), pg_restore with
owners and privileges (with parallel jobs from a temporary file for a large archive: see pg_parallel), the
globals script again (database properties). A restore never overwrites and never leaves a half-restored
database behind: it restores under a temporary name, renames on success, drops on failure. It also says where
the client tools are and how they reach a server, for pg_dump too."""

from __future__ import annotations

import glob
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from backup_pipelines.engines.base import Feed, companions_of, run_restore_tool
from backup_pipelines.engines.pg_parallel import archive_file, create_archive_file, restore_jobs
from backup_pipelines.engines.postgres_globals import LABEL
from backup_pipelines.errors import RestoreTargetExistsError
from backup_pipelines.execute import Command, run
from backup_pipelines.manifest import PostgresServerConfig
from backup_pipelines.system_user import scratch_folder

LOG = logging.getLogger("backup_pipelines")
RESTORING_PREFIX = "bp_restoring_"


def find_bin_dir(configured: str | None) -> str | None:
    """Return the folder of the PostgreSQL client tools: `configured`, else the newest
    /usr/lib/postgresql/<N>/bin (Debian's layout), else None (use PATH)."""
    if configured:
        return configured
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_dump")
    if not candidates:
        return None
    newest = max(candidates, key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0)
    return os.path.dirname(newest)


def binary(name: str, server: PostgresServerConfig) -> str:
    """Return the path of client tool `name` for `server` (its bin_dir, else the newest installed)."""
    bin_dir = find_bin_dir(server.bin_dir)
    return os.path.join(bin_dir, name) if bin_dir else name


def connection_env(server: PostgresServerConfig, password: str | None) -> dict[str, str]:
    """Return the libpq environment for `server` (the password travels here, never in argv)."""
    env = {"PGAPPNAME": "backup-pipelines", "PGCONNECT_TIMEOUT": "10"}
    if password:
        env["PGPASSWORD"] = password
    if server.sslmode:
        env["PGSSLMODE"] = server.sslmode
    return env


def target_arguments(server: PostgresServerConfig, database: str) -> tuple[str, ...]:
    """Return the libpq connection options for `database` on `server` (no password: see connection_env)."""
    return (
        "--no-password",
        f"--host={server.host}",
        f"--port={server.port}",
        f"--username={server.user}",
        f"--dbname={database}",
    )


def pg_restore_command(
    server: PostgresServerConfig,
    database: str,
    password: str | None,
    keep_privileges: bool = True,
    archive: str | None = None,
    jobs: int = 1,
) -> Command:
    """Return the pg_restore command that restores a custom-format archive into `database`, stopping at the
    first error; with owners and privileges unless `keep_privileges` is False. It reads stdin, or the file
    `archive` when given, which alone allows `jobs` parallel jobs."""
    assert archive is not None or jobs == 1, "pg_restore runs parallel jobs only from a file"
    argv = [binary("pg_restore", server), "--exit-on-error"]
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    if not keep_privileges:
        argv += ["--no-owner", "--no-privileges"]
    argv += target_arguments(server, database)
    if archive is not None:
        argv.append(archive)
    return Command(tuple(argv), connection_env(server, password))


def psql_globals_command(
    server: PostgresServerConfig, script: str, target: str, restored: bool, password: str | None
) -> Command:
    """Return the psql command that runs the globals script file `script` for the new database `target`:
    roles and CREATE DATABASE, or (`restored`) the database's properties after pg_restore."""
    argv = [binary("psql", server), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"target={target}"]
    if restored:
        argv += ["-v", "restored=1"]
    argv += ["-f", script, *target_arguments(server, server.maintenance_database)]
    return Command(tuple(argv), connection_env(server, password))


def database_exists(admin: psycopg.Connection[Any], name: str) -> bool:
    """True when database `name` exists on the server `admin` is connected to."""
    return admin.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is not None


def run_pg_restore(
    server: PostgresServerConfig,
    password: str | None,
    database: str,
    feed: Feed,
    keep_privileges: bool,
    raw_size: int | None,
) -> int:
    """Restore the archive `feed` writes into the existing `database` with pg_restore: from a temporary file
    with several jobs when the archive (`raw_size` bytes, None: unknown) is large and the scratch folder has
    room (see pg_parallel), else streamed into one job. Return the number of jobs. Raise CommandFailedError
    with pg_restore's stderr, or what `feed` raised; the temporary file is removed in every case."""
    folder = scratch_folder()
    jobs = restore_jobs(raw_size, folder)
    created = create_archive_file(folder) if jobs > 1 else None
    if created is None:
        run_restore_tool(pg_restore_command(server, database, password, keep_privileges), feed)
        return 1
    LOG.info(f"pg_restore restores {database} with {jobs} jobs from a temporary file in {folder}")
    with archive_file(*created, feed) as archive:
        run(pg_restore_command(server, database, password, keep_privileges, archive, jobs))
    return jobs


def restore_into(
    server: PostgresServerConfig,
    password: str | None,
    admin: psycopg.Connection[Any],
    name: str,
    feed: Feed,
    encoding: str = "UTF8",
    keep_privileges: bool = True,
    raw_size: int | None = None,
) -> int:
    """Create database `name` and restore the backup `feed` writes into it: with the backup's globals script
    (companion "globals.sql") when it has one and privileges are kept, else as an empty database in
    `encoding`; with parallel pg_restore jobs when the archive's `raw_size` allows (see run_pg_restore).
    Return the number of pg_restore jobs. Drop the database and raise if any step fails."""
    script = companions_of(feed).get(LABEL) if keep_privileges else None
    with tempfile.TemporaryDirectory(prefix="bp-globals-") as folder:
        path = os.path.join(folder, LABEL)
        if script is not None:
            with open(path, "wb") as file:
                file.write(script)
            run(psql_globals_command(server, path, name, False, password))
        else:
            _create_plain(admin, name, encoding)
        try:
            jobs = run_pg_restore(server, password, name, feed, keep_privileges, raw_size)
            if script is not None:
                run(psql_globals_command(server, path, name, True, password))
        except BaseException:
            drop_database(admin, name)
            raise
    return jobs


def _create_plain(admin: psycopg.Connection[Any], name: str, encoding: str) -> None:
    identifier = sql.Identifier(name)
    try:
        admin.execute(
            sql.SQL("create database {} template template0 encoding {}").format(identifier, sql.Literal(encoding))
        )
    except psycopg.errors.InvalidParameterValue:
        admin.execute(
            sql.SQL("create database {} template template0 encoding {} locale 'C'").format(
                identifier, sql.Literal(encoding)
            )
        )


def drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop database `name` if it exists, ending the connections still open to it."""
    admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def restore_as(
    server: PostgresServerConfig,
    password: str | None,
    admin: psycopg.Connection[Any],
    target: str,
    feed: Feed,
    encoding: str,
    keep_privileges: bool,
    raw_size: int | None = None,
) -> None:
    """Restore into the new database `target` atomically: under a temporary name, renamed to `target` once
    everything succeeded, dropped otherwise; in parallel when the archive's `raw_size` allows (see
    run_pg_restore). Raise RestoreTargetExistsError if `target` exists."""
    where = f"{server.host}:{server.port}"
    if database_exists(admin, target):
        raise RestoreTargetExistsError(
            f"database {target!r} already exists on {where}: a restore never overwrites; choose another name"
        )
    temporary = f"{RESTORING_PREFIX}{secrets.token_hex(6)}"
    restore_into(server, password, admin, temporary, feed, encoding, keep_privileges, raw_size)
    try:
        admin.execute(
            sql.SQL("alter database {} rename to {}").format(sql.Identifier(temporary), sql.Identifier(target))
        )
    except psycopg.errors.DuplicateDatabase as error:
        drop_database(admin, temporary)
        raise RestoreTargetExistsError(f"database {target!r} was created on {where} during the restore") from error
    except BaseException:
        drop_database(admin, temporary)
        raise


@contextmanager
def scratch_restore(
    server: PostgresServerConfig,
    password: str | None,
    admin: psycopg.Connection[Any],
    name: str,
    feed: Feed,
    encoding: str,
    raw_size: int | None = None,
) -> Iterator[int]:
    """Restore into the scratch database `name` (as `restore_into`, privileges kept) for a restore test,
    yield the number of pg_restore jobs it took (1: streamed), and drop the database afterwards whatever
    happens."""
    try:
        yield restore_into(server, password, admin, name, feed, encoding, raw_size=raw_size)
    finally:
        drop_database(admin, name)
