"""MySQL and MariaDB: mysqldump --single-transaction (routines, triggers, events), statistics from the same
snapshot, restore tests into a scratch database with the mysql client.

Consistency: MySQL cannot share a snapshot between connections, so the engine briefly holds
`FLUSH TABLES WITH READ LOCK`, opens its own consistent-snapshot transaction, starts mysqldump and waits until
mysqldump's transaction exists, then releases the lock (what `mysqldump --master-data` does internally). No
write can land between the two snapshots, so the row counts describe exactly the dumped data (InnoDB tables).
The account needs RELOAD for this.

Fidelity: the statistics hold a content fingerprint (`mysql_fingerprint`) taken in that snapshot, which the
restore test compares item by item. The stored dump is made strict and gives the database its default
character set and collation back (`mysql_stream`); restores go through the same edits, so a value the restored
table cannot hold is an error, not a silently stored ''. Rows that only a non-strict server takes back as they
are (tables with generated columns; ENUM columns holding the error value '', found before the dump starts) are
inserted without strict mode, and the record says which (`tables_restored_non_strict`). ENUM/SET members that
mysqldump cannot write fail the backup, or are written correctly when the dataset asks for it (`mysql_enums`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import IO, Any, cast

import pymysql

from backup_pipelines.engines import mysql_fingerprint
from backup_pipelines.engines.base import Dump, Feed, RestoreReport, run_restore_tool
from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD, compare_fingerprints
from backup_pipelines.engines.mysql_enums import ColumnRewrite, lost_columns, refuse, tables_with_enum_error_values
from backup_pipelines.engines.mysql_stream import DumpFilter, StrictDumpWriter, alter_database_line, plain_name
from backup_pipelines.engines.validation import compare_stats, jsonable, run_validation_queries
from backup_pipelines.errors import IntegrityError, RestoreTargetExistsError, SourceUnavailableError
from backup_pipelines.execute import PIPE, Command, Process, tool_version
from backup_pipelines.manifest import Manifest, MysqlDataset, MysqlServerConfig, read_secret
from backup_pipelines.repository.base import BackupRecord
from backup_pipelines.threads import Worker

TABLES_SQL = (
    "select table_name from information_schema.tables where table_schema = %s and table_type = 'BASE TABLE' "
    "order by table_name"
)
SNAPSHOT_WAIT_SECONDS = 60
COMPLETED_MARK = "-- Dump completed"
NON_STRICT_TABLES = "tables_restored_non_strict"  # source_stats: table -> why its rows restore without strict mode


_quote = mysql_fingerprint.quote_identifier


def mysqldump_command(server: MysqlServerConfig, dataset: MysqlDataset, password: str | None) -> Command:
    """Return the mysqldump command that writes `dataset`'s database as SQL to stdout, in one transaction,
    with routines, triggers and events, binary columns as hex, and no CREATE DATABASE (so it restores into
    any database)."""
    source = dataset.source
    argv = [
        server.dump_binary,
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--skip-lock-tables",
        "--no-tablespaces",
        f"--host={server.host}",
        f"--port={server.port}",
        f"--user={server.user}",
        *[f"--ignore-table={source.database}.{table}" for table in source.exclude_tables],
        source.database,
    ]
    return Command(tuple(argv), {"MYSQL_PWD": password} if password else {})


def mysql_restore_command(server: MysqlServerConfig, database: str, password: str | None) -> Command:
    """Return the mysql client command that replays a dump from stdin into `database`."""
    argv = (
        server.client_binary,
        "--default-character-set=utf8mb4",
        f"--host={server.host}",
        f"--port={server.port}",
        f"--user={server.user}",
        f"--database={database}",
    )
    return Command(argv, {"MYSQL_PWD": password} if password else {})


def archive_check_command() -> Command:
    """Return a command that reads a dump on stdin and prints its table count and whether it is complete."""
    program = (
        "/^CREATE TABLE/{t++} /^-- Dump completed/{d=1} "
        'END{print "tables: " t+0; print "completed: " (d ? "yes" : "no")}'
    )
    return Command(("awk", program))


def _password(manifest: Manifest, server_name: str) -> str | None:
    server = mysql_server(manifest, server_name)
    return read_secret(server.password_env, f"servers.{server_name}.password_env") if server.password_env else None


def mysql_server(manifest: Manifest, name: str) -> MysqlServerConfig:
    """Return server `name` of the manifest, which must be a MySQL/MariaDB server."""
    server = manifest.servers[name]
    assert isinstance(server, MysqlServerConfig), f"server {name} is a {server.kind} server, not mysql"
    return server


def connect(server: MysqlServerConfig, password: str | None, database: str | None = None) -> Any:
    """Return a PyMySQL connection (autocommit). Raise SourceUnavailableError naming the server if it fails."""
    try:
        return pymysql.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=(password or "").encode(),  # PyMySQL would encode a str as latin-1
            database=database,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=10,
        )
    except pymysql.err.MySQLError as error:
        raise SourceUnavailableError(
            f"cannot connect to MySQL {server.host}:{server.port} database {database!r}: {error.args[-1]}"
        ) from error


def collect_stats(
    connection: Any, database: str, dataset: MysqlDataset, source_stats: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the server version, table count, the database's default character set and collation, every
    table's row count, the content fingerprint (unless the dataset turns it off) and the validation queries'
    values of `database`. Given the `source_stats` of a backup (when judging a restored copy), the fingerprint
    names items after the source database and digests the same sampled key ranges."""
    with connection.cursor() as cursor:
        cursor.execute("select version()")
        version = cursor.fetchone()[0]
        cursor.execute(TABLES_SQL, (database,))
        tables = [row[0] for row in cursor.fetchall() if row[0] not in dataset.source.exclude_tables]
        character_set, collation = mysql_fingerprint.database_defaults(cursor, database)
        stats: dict[str, Any] = {
            "server_version": version,
            "table_count": len(tables),
            "database_character_set": character_set,
            "database_collation": collation,
        }
        if dataset.verification.fingerprint:
            recorded = (source_stats or {}).get(FINGERPRINT)
            stats[FINGERPRINT] = mysql_fingerprint.fingerprint(
                cursor,
                database,
                dataset.source.database,
                tables,
                dataset,
                recorded,
                dataset.verification.sample_above_bytes,
            )
            stats[FINGERPRINT_METHOD] = mysql_fingerprint.METHOD
        if dataset.verification.compare_row_counts:
            counts = {}
            for table in tables:
                cursor.execute(f"select count(*) from {_quote(database)}.{_quote(table)}")
                counts[table] = cursor.fetchone()[0]
            stats["tables"] = counts
        values = {}
        for query in dataset.verification.queries:
            if query.expect.same_as_source:
                cursor.execute(query.sql)
                values[query.name] = jsonable(cursor.fetchone()[0])
        stats["queries"] = values
    return stats


def query_runner(connection: Any) -> Any:
    """Return a function running one query on `connection` and giving the first column of its first row."""

    def run(query: str) -> Any:
        with connection.cursor() as cursor:
            cursor.execute(query)
            row = cursor.fetchone()
            return row[0] if row else None

    return run


def column_rewrite(connection: Any, dataset: MysqlDataset) -> ColumnRewrite | None:
    """Return the dump-stream rewrite that writes the real members of the dataset's ENUM/SET columns that
    mysqldump would write as '?', None when there are none. Raise UnrepresentableSourceError naming them
    unless the dataset opts in to the rewrite; SourceUnavailableError if they cannot be read."""
    database = dataset.source.database
    try:
        lost = lost_columns(connection, database, set(dataset.source.exclude_tables))
    except pymysql.err.MySQLError as error:
        raise SourceUnavailableError(
            f"cannot read the real members of {database}'s ENUM/SET columns shown with '?' (through a temporary "
            f"table: the account needs CREATE TEMPORARY TABLES): {error.args[-1]}"
        ) from error
    if not lost:
        return None
    if not dataset.source.preserve_supplementary_enum_members:
        raise refuse(database, lost)
    return ColumnRewrite(lost)


def create_database_sql(name: str, source_stats: dict[str, Any]) -> str:
    """Return the CREATE DATABASE statement for restoring into `name`, with the source's default character
    set and collation when the backup recorded them (utf8mb4 otherwise). Raise ValueError if a recorded name
    is not a plain name."""
    character_set = plain_name(source_stats.get("database_character_set", "utf8mb4"))
    statement = f"create database {_quote(name)} character set {character_set}"
    collation = source_stats.get("database_collation")
    return statement + (f" collate {plain_name(collation)}" if collation else "")


def strict_feed(feed: Feed) -> Feed:
    """Return a feed writing what `feed` writes with the strict-mode edits of `mysql_stream` made to it (dumps
    stored before the engine made them at backup time), so a value the restored table cannot hold fails the
    restore."""

    def strict(stdin: IO[bytes]) -> None:
        writer = StrictDumpWriter(stdin)
        feed(cast(IO[bytes], writer))
        writer.finish()

    return strict


def _transaction_threads(connection: Any) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("select trx_mysql_thread_id from information_schema.innodb_trx")
        return {int(row[0]) for row in cursor.fetchall()}


class MysqlEngine:
    """The MySQL/MariaDB engine (see the module docstring)."""

    kind = "mysql"
    format = "mysqldump-sql"

    def extension_for(self, manifest: Manifest, name: str) -> str:
        return "sql"

    def _dataset(self, manifest: Manifest, name: str) -> MysqlDataset:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, MysqlDataset), f"{name} is a {dataset.kind} dataset, not mysql"
        return dataset

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        server = mysql_server(manifest, self._dataset(manifest, name).source.server)
        return {"mysqldump": tool_version(server.dump_binary), "zstd": tool_version("zstd")}

    @contextmanager
    def dump(self, manifest: Manifest, name: str) -> Iterator[Dump]:
        dataset = self._dataset(manifest, name)
        server_name = dataset.source.server
        server, password = mysql_server(manifest, server_name), _password(manifest, server_name)
        database = dataset.source.database
        with closing(connect(server, password, database)) as stats_connection:
            rewrite = column_rewrite(stats_connection, dataset)
            relax = tables_with_enum_error_values(stats_connection, database, set(dataset.source.exclude_tables))
            with stats_connection.cursor() as cursor:
                injected = alter_database_line(*mysql_fingerprint.database_defaults(cursor, database))
            process = self._start_in_snapshot(server, password, dataset, stats_connection)
            stream = DumpFilter(process.stdout, injected, rewrite, relax)
            worker = Worker(lambda: collect_stats(stats_connection, database, dataset), "mysql-stats")
            worker.start()

            def finish() -> dict[str, Any]:
                process.check()
                stream.check()
                return {**worker.result(), NON_STRICT_TABLES: stream.relaxed}

            try:
                yield Dump(stream=cast(IO[bytes], stream), finish=finish)
            except BaseException:
                process.kill()
                worker.join()
                raise
            finally:
                process.close()

    def _start_in_snapshot(
        self, server: MysqlServerConfig, password: str | None, dataset: MysqlDataset, stats_connection: Any
    ) -> Process:
        with closing(connect(server, password)) as lock:
            with lock.cursor() as cursor:
                try:
                    cursor.execute("set session lock_wait_timeout = 60")
                    cursor.execute("flush tables with read lock")
                except pymysql.err.MySQLError as error:
                    raise SourceUnavailableError(
                        f"cannot take the brief global read lock that makes the statistics consistent with the dump "
                        f"(the account needs RELOAD): {error.args[-1]}"
                    ) from error
            with stats_connection.cursor() as cursor:
                cursor.execute("set session transaction isolation level repeatable read")
                cursor.execute("start transaction with consistent snapshot")
            before = _transaction_threads(lock) | {lock.thread_id(), stats_connection.thread_id()}
            process = Process(mysqldump_command(server, dataset, password), stdout=PIPE)
            deadline = time.monotonic() + SNAPSHOT_WAIT_SECONDS
            while not (_transaction_threads(lock) - before):
                if process.popen.poll() is not None or time.monotonic() > deadline:
                    break  # mysqldump failed or is stuck: its exit status tells at finish()
                time.sleep(0.005)
            with lock.cursor() as cursor:
                cursor.execute("unlock tables")
        return process

    def archive_check_command(self, manifest: Manifest, name: str) -> Command:
        return archive_check_command()

    def summarize_archive_listing(self, listing: str) -> dict[str, Any]:
        values = dict(line.split(": ", 1) for line in listing.splitlines() if ": " in line)
        if values.get("completed") != "yes":
            raise IntegrityError(f"the stored dump does not end with mysqldump's '{COMPLETED_MARK}' line: truncated")
        return {"tables": int(values.get("tables", 0)), "completed": True}

    def restore_to(self, manifest: Manifest, name: str, target: str, server_name: str | None, feed: Feed) -> str:
        dataset = self._dataset(manifest, name)
        server_name = server_name or dataset.restore_test.server or dataset.source.server
        server, password = mysql_server(manifest, server_name), _password(manifest, server_name)
        with closing(connect(server, password)) as admin:
            with admin.cursor() as cursor:
                cursor.execute("select 1 from information_schema.schemata where schema_name = %s", (target,))
                if cursor.fetchone() is not None:
                    raise RestoreTargetExistsError(
                        f"database {target!r} already exists on {server.host}:{server.port}: a restore never "
                        "overwrites; choose another name"
                    )
                cursor.execute(create_database_sql(target, {}))  # the stored dump sets the source's defaults
            try:
                run_restore_tool(mysql_restore_command(server, target, password), strict_feed(feed))
            except BaseException:  # never leave a half-restored database under the target's name
                with admin.cursor() as cursor:
                    cursor.execute(f"drop database if exists {_quote(target)}")
                raise
        return f"mysql://{server.host}:{server.port}/{target}"

    def restore_test(self, manifest: Manifest, name: str, record: BackupRecord, feed: Feed) -> RestoreReport:
        dataset = self._dataset(manifest, name)
        server_name = dataset.restore_test.server or dataset.source.server
        server, password = mysql_server(manifest, server_name), _password(manifest, server_name)
        scratch = f"bp_restore_{name[:30]}_{secrets.token_hex(4)}".lower()
        with closing(connect(server, password)) as admin:
            with admin.cursor() as cursor:
                cursor.execute(create_database_sql(scratch, record.source_stats))
            try:
                started = time.monotonic()
                run_restore_tool(mysql_restore_command(server, scratch, password), strict_feed(feed))
                restore_seconds = time.monotonic() - started
                started = time.monotonic()
                with closing(connect(server, password, scratch)) as connection:
                    restored = collect_stats(connection, scratch, dataset, record.source_stats)
                    outcomes = compare_stats(record.source_stats, restored, dataset.verification)
                    if dataset.verification.fingerprint:
                        outcomes += compare_fingerprints(record.source_stats, restored)
                    outcomes += run_validation_queries(
                        query_runner(connection), dataset.verification, record.source_stats
                    )
                validation_seconds = time.monotonic() - started
            finally:
                with admin.cursor() as cursor:
                    cursor.execute(f"drop database if exists {_quote(scratch)}")
        report = RestoreReport(
            f"mysql://{server.host}:{server.port}/{scratch} (dropped)",
            restore_seconds,
            validation_seconds,
            record.bytes_raw,
            outcomes,
            restored,
        )
        return report
