"""PostgreSQL: pg_dump custom format, statistics from the dump's own snapshot, pg_restore restore tests.

Consistency: one connection opens a REPEATABLE READ transaction and exports its snapshot; pg_dump runs with
`--snapshot` on that snapshot while the same connection counts every table's rows, so the counts describe
exactly the data in the archive and a restore test can demand equality.
"""

from __future__ import annotations

import re
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from backup_pipelines.engines.base import Dump, Feed, RestoreReport
from backup_pipelines.engines.fingerprint import FINGERPRINT, compare_fingerprints
from backup_pipelines.engines.pg_parallel import raw_size_of, splittable_size
from backup_pipelines.engines.postgres_fingerprint import (
    ROW_METHOD,
    Scope,
    sequence_moved_forward,
    sequence_values,
    take_fingerprint,
)
from backup_pipelines.engines.postgres_globals import LABEL, globals_script
from backup_pipelines.engines.postgres_restore import (
    binary,
    connection_env,
    restore_as,
    scratch_restore,
    target_arguments,
)
from backup_pipelines.engines.postgres_samples import SAMPLE_KEYS, SAMPLES
from backup_pipelines.engines.validation import QueryRunner, compare_stats, jsonable, run_validation_queries
from backup_pipelines.errors import (
    IntegrityError,
    SourceUnavailableError,
)
from backup_pipelines.execute import PIPE, Command, Process, tool_version
from backup_pipelines.manifest import (
    Manifest,
    PostgresDataset,
    PostgresServerConfig,
    read_secret,
)
from backup_pipelines.repository.base import BackupRecord
from backup_pipelines.threads import Worker

TABLES_SQL = """
select n.nspname, c.relname
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r'
  and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%'
  and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')
order by 1, 2
"""
SCRATCH_PREFIX = "bp_restore_"
# pg_dump fails instead of waiting forever behind a lock someone else holds (an ALTER TABLE, a VACUUM FULL).
LOCK_WAIT = "10min"


def pg_dump_command(
    server: PostgresServerConfig, dataset: PostgresDataset, snapshot: str | None, password: str | None
) -> Command:
    """Return the pg_dump command that writes `dataset`'s database in custom format, uncompressed (zstd
    compresses later), to stdout, reading the exported `snapshot` if given."""
    source = dataset.source
    argv = [binary("pg_dump", server), "--format=custom", "--compress=0", f"--lock-wait-timeout={LOCK_WAIT}"]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    argv += [f"--schema={schema}" for schema in source.schemas]
    argv += [f"--exclude-schema={schema}" for schema in source.exclude_schemas]
    argv += [f"--exclude-table={table}" for table in source.exclude_tables]
    if source.large_objects is not None:
        argv.append("--blobs" if source.large_objects else "--no-blobs")
    argv += target_arguments(server, source.database)
    return Command(tuple(argv), connection_env(server, password))


def pg_archive_check_command(server: PostgresServerConfig) -> Command:
    """Return the command that reads a custom-format archive from stdin to its last byte (every data block
    decoded by pg_restore) and prints its table of contents, then `data: complete` (see pg_archive_check)."""
    return Command((sys.executable, str(Path(__file__).with_name("pg_archive_check.py")), binary("pg_restore", server)))


def postgres_server(manifest: Manifest, name: str) -> PostgresServerConfig:
    """Return server `name` of the manifest, which must be a PostgreSQL server."""
    server = manifest.servers[name]
    assert isinstance(server, PostgresServerConfig), f"server {name} is a {server.kind} server, not postgres"
    return server


def _password(server_name: str, server: PostgresServerConfig) -> str | None:
    if not server.password_env:
        return None
    return read_secret(server.password_env, f"servers.{server_name}.password_env")


def connect(server: PostgresServerConfig, database: str, password: str | None) -> psycopg.Connection[Any]:
    """Return a psycopg connection. Raise SourceUnavailableError naming the server if it fails."""
    try:
        return psycopg.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=password,
            dbname=database,
            sslmode=server.sslmode or "prefer",
            application_name="backup-pipelines",
            connect_timeout=10,
        )
    except psycopg.OperationalError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SourceUnavailableError(
            f"cannot connect to PostgreSQL {server.host}:{server.port} database {database!r}: {message}"
        ) from error


def refuse_older_pg_dump(pg_dump: str, server_version: int, server_name: str) -> None:
    """Raise SourceUnavailableError when `pg_dump` is of an older major version than the server (it cannot dump
    a newer server), naming both and what to install."""
    match = re.search(r"PostgreSQL\)?\s+(\d+)", tool_version(pg_dump))  # "pg_dump (PostgreSQL) 15.18 (Debian ...)"
    server_major = server_version // 10000
    if match and int(match.group(1)) < server_major:
        raise SourceUnavailableError(
            f"{pg_dump} is version {match.group(1)}, older than server {server_name} (PostgreSQL {server_major}): "
            f"pg_dump cannot dump a newer server; install postgresql-client-{server_major} or point "
            f"servers.{server_name}.bin_dir at its binaries"
        )


def _in_scope(schema: str, table: str, dataset: PostgresDataset) -> bool:
    source = dataset.source
    if source.schemas and schema not in source.schemas:
        return False
    if schema in source.exclude_schemas:
        return False
    return f"{schema}.{table}" not in source.exclude_tables and table not in source.exclude_tables


def object_scope(dataset: PostgresDataset) -> Scope:
    """Return whether an object (by schema and table; None for cluster-wide or schema-level ones) is part of
    `dataset`'s dump, as pg_dump's --schema, --exclude-schema and --exclude-table decide."""

    def scope(schema: str | None, table: str | None) -> bool:
        if schema is None:  # extensions, default privileges for all schemas: only whole-database dumps
            return not dataset.source.schemas
        return _in_scope(schema, table or "", dataset)

    return scope


def collect_stats(
    connection: psycopg.Connection[Any],
    dataset: PostgresDataset,
    row_counts: bool,
    sequences: dict[str, Any] | None = None,
    source_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the database's statistics as seen by `connection`'s transaction: server version, size,
    encoding, exact row count of every in-scope table, number of large objects, the value of every
    validation query that compares with the source, and (unless turned off) the content fingerprint, with
    `sequences` read earlier when given. Given the `source_stats` of a backup (when judging a restored copy),
    the fingerprint digests the sampled tables' recorded ranges by their recorded keys, and rows by the
    recorded method."""
    recorded = source_stats or {}

    def one(query: Any) -> Any:
        row = connection.execute(query).fetchone()
        return row[0] if row else None

    stats: dict[str, Any] = {
        "server_version": one("show server_version"),
        "database_size_bytes": one("select pg_database_size(current_database())"),
        "encoding": one("select pg_encoding_to_char(encoding) from pg_database where datname = current_database()"),
        "large_objects": one("select count(*) from pg_largeobject_metadata")
        if dataset.source.includes_large_objects
        else 0,
    }
    tables = [(s, t) for s, t in connection.execute(TABLES_SQL).fetchall() if _in_scope(s, t, dataset)]
    stats["table_count"] = len(tables)
    stats["queries"] = {
        query.name: jsonable(one(query.sql)) for query in dataset.verification.queries if query.expect.same_as_source
    }
    if dataset.verification.fingerprint:
        stats.update(
            take_fingerprint(
                connection,
                tables,
                dataset.verification.sampled_tables,
                recorded.get(SAMPLES),
                large_objects=dataset.source.includes_large_objects,
                sample_above=dataset.verification.sample_above_bytes,
                schemas=(dataset.source.schemas, dataset.source.exclude_schemas),
                recorded_keys=recorded.get(SAMPLE_KEYS),
                sequences=sequences,
                database=dataset.source.globals,
                scope=object_scope(dataset),
                method=recorded.get(ROW_METHOD),
            )
        )
    if row_counts:
        digests = stats.get(FINGERPRINT, {})
        count = sql.SQL("select count(*) from {}.{}")
        stats["tables"] = {
            f"{s}.{t}": _counted(digests.get(f"rows {s}.{t}"))
            if f"rows {s}.{t}" in digests
            else one(count.format(sql.Identifier(s), sql.Identifier(t)))
            for s, t in tables
        }
    return stats


def _counted(digest: str) -> int:
    """The row count a whole table's fingerprint item (`<rows>:<sum of row hashes>`) carries, so the table is
    not scanned a second time just to count it."""
    return int(digest.split(":", 1)[0])


def query_runner(connection: psycopg.Connection[Any]) -> QueryRunner:
    def run(query: str) -> Any:
        try:
            row = connection.execute(query).fetchone()
        except psycopg.Error:
            connection.rollback()
            raise
        return row[0] if row else None

    return run


class PostgresEngine:
    """The PostgreSQL engine (see the module docstring)."""

    kind = "postgres"
    format = "pg_dump-custom"

    def extension_for(self, manifest: Manifest, name: str) -> str:
        return "dump"

    def _dataset(self, manifest: Manifest, name: str) -> tuple[PostgresDataset, str, PostgresServerConfig]:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, PostgresDataset), f"{name} is a {dataset.kind} dataset, not postgres"
        return dataset, dataset.source.server, postgres_server(manifest, dataset.source.server)

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        _, _, server = self._dataset(manifest, name)
        return {"pg_dump": tool_version(binary("pg_dump", server)), "zstd": tool_version("zstd")}

    @contextmanager
    def dump(self, manifest: Manifest, name: str) -> Iterator[Dump]:
        dataset, server_name, server = self._dataset(manifest, name)
        password = _password(server_name, server)
        with connect(server, dataset.source.database, password) as connection:
            refuse_older_pg_dump(binary("pg_dump", server), connection.info.server_version, server_name)
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            connection.read_only = True
            snapshot = connection.execute("select pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            # Sequences are not transactional: read them before pg_dump does, so a restored one is never behind.
            fingerprinted = dataset.verification.fingerprint
            sequences = sequence_values(connection, object_scope(dataset)) if fingerprinted else None
            process = Process(pg_dump_command(server, dataset, snapshot, password), stdout=PIPE)
            row_counts = dataset.verification.compare_row_counts
            companions: dict[str, bytes] = {}

            def gather() -> dict[str, Any]:
                stats = collect_stats(connection, dataset, row_counts, sequences)
                if dataset.source.globals:
                    companions[LABEL] = globals_script(connection, dataset.source.role_passwords)
                return stats

            stats_worker = Worker(gather, "pg-stats")
            stats_worker.start()

            def finish() -> dict[str, Any]:
                process.check()
                stats = stats_worker.result()
                dump.companions.update(companions)
                return stats

            dump = Dump(stream=process.stdout, finish=finish)
            try:
                yield dump
            except BaseException:
                process.kill()
                connection.cancel_safe()
                stats_worker.join()
                raise
            finally:
                process.close()
                connection.rollback()

    def archive_check_command(self, manifest: Manifest, name: str) -> Command:
        _, _, server = self._dataset(manifest, name)
        return pg_archive_check_command(server)

    def summarize_archive_listing(self, listing: str) -> dict[str, Any]:
        lines = listing.splitlines()
        if "data: complete" not in lines:
            raise IntegrityError("the archive is not whole: pg_restore could not read it to the end")
        entries = [line for line in lines if line.strip() and not line.startswith(";") and line != "data: complete"]
        if not entries:
            raise IntegrityError("pg_restore --list found no entry in the archive")
        return {
            "toc_entries": len(entries),
            "table_data_entries": sum(" TABLE DATA " in line for line in entries),
            "large_object_entries": sum(" BLOB " in line or " LARGE OBJECT " in line for line in entries),
        }

    def restore_to(self, manifest: Manifest, name: str, target: str, server_name: str | None, feed: Feed) -> str:
        dataset, source_server, _ = self._dataset(manifest, name)
        server_name = server_name or dataset.restore_test.server or source_server
        if server_name not in manifest.servers:
            raise KeyError(f"no server {server_name!r} in the manifest (known: {', '.join(manifest.servers)})")
        server = postgres_server(manifest, server_name)
        password = _password(server_name, server)
        keep_privileges = bool(getattr(feed, "keep_privileges", True))
        with connect(server, server.maintenance_database, password) as admin:
            admin.autocommit = True
            restore_as(server, password, admin, target, feed, "UTF8", keep_privileges, raw_size_of(feed))
        return f"postgresql://{server.host}:{server.port}/{target}"

    def restore_test(self, manifest: Manifest, name: str, record: BackupRecord, feed: Feed) -> RestoreReport:
        dataset, source_server, _ = self._dataset(manifest, name)
        server_name = dataset.restore_test.server or source_server
        server = postgres_server(manifest, server_name)
        password = _password(server_name, server)
        scratch = f"{SCRATCH_PREFIX}{name[:30]}_{secrets.token_hex(4)}".lower()
        encoding = str(record.source_stats.get("encoding", "UTF8"))
        size = splittable_size(record.bytes_raw, record.source_stats.get("table_count"))
        with connect(server, server.maintenance_database, password) as admin:
            admin.autocommit = True
            started = time.monotonic()
            with scratch_restore(server, password, admin, scratch, feed, encoding, size) as jobs:
                restore_seconds = time.monotonic() - started
                started = time.monotonic()
                with connect(server, scratch, password) as connection:
                    row_counts = dataset.verification.compare_row_counts
                    restored = collect_stats(connection, dataset, row_counts, source_stats=record.source_stats)
                    outcomes = compare_stats(record.source_stats, restored, dataset.verification)
                    if dataset.verification.fingerprint:
                        outcomes += compare_fingerprints(record.source_stats, restored, sequence_moved_forward)
                    outcomes += run_validation_queries(
                        query_runner(connection), dataset.verification, record.source_stats
                    )
                validation_seconds = time.monotonic() - started
        restored.pop(FINGERPRINT, None)  # the report keeps the comparison's outcomes, not every digest
        restored["pg_restore_jobs"] = jobs  # 1: streamed into one pg_restore
        return RestoreReport(
            target=f"postgresql://{server.host}:{server.port}/{scratch} (dropped)",
            restore_seconds=restore_seconds,
            validation_seconds=validation_seconds,
            bytes_raw=record.bytes_raw,
            outcomes=outcomes,
            restored_stats=restored,
        )
