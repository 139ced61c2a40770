"""MySQL and MariaDB: mysqldump --single-transaction (routines, triggers, events), statistics from the same
snapshot, restore tests into a scratch database with the mysql client.

Consistency: MySQL cannot share a snapshot between connections, so the engine briefly holds
`FLUSH TABLES WITH READ LOCK`, opens its own consistent-snapshot transaction, starts mysqldump and waits until
mysqldump's transaction exists, then releases the lock (what `mysqldump --master-data` does internally). No
write can land between the two snapshots, so the row counts describe exactly the dumped data (InnoDB tables).
The account needs RELOAD for this.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import pymysql

from backup_pipelines.engines.base import Dump, Feed, RestoreReport, run_restore_tool
from backup_pipelines.engines.validation import compare_stats, jsonable, run_validation_queries
from backup_pipelines.errors import IntegrityError, SourceUnavailableError
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


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


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


def collect_stats(connection: Any, database: str, dataset: MysqlDataset) -> dict[str, Any]:
    """Return the server version, table count, every table's row count and the validation queries' values."""
    with connection.cursor() as cursor:
        cursor.execute("select version()")
        version = cursor.fetchone()[0]
        cursor.execute(TABLES_SQL, (database,))
        tables = [row[0] for row in cursor.fetchall() if row[0] not in dataset.source.exclude_tables]
        stats: dict[str, Any] = {"server_version": version, "table_count": len(tables)}
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
            process = self._start_in_snapshot(server, password, dataset, stats_connection)
            worker = Worker(lambda: collect_stats(stats_connection, database, dataset), "mysql-stats")
            worker.start()

            def finish() -> dict[str, Any]:
                process.check()
                return dict(worker.result())

            try:
                yield Dump(stream=process.stdout, finish=finish)
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
        with closing(connect(server, password)) as admin, admin.cursor() as cursor:
            cursor.execute(f"create database {_quote(target)} character set utf8mb4")
        run_restore_tool(mysql_restore_command(server, target, password), feed)
        return f"mysql://{server.host}:{server.port}/{target}"

    def restore_test(self, manifest: Manifest, name: str, record: BackupRecord, feed: Feed) -> RestoreReport:
        dataset = self._dataset(manifest, name)
        server_name = dataset.restore_test.server or dataset.source.server
        server, password = mysql_server(manifest, server_name), _password(manifest, server_name)
        scratch = f"bp_restore_{name[:30]}_{secrets.token_hex(4)}".lower()
        with closing(connect(server, password)) as admin:
            with admin.cursor() as cursor:
                cursor.execute(f"create database {_quote(scratch)} character set utf8mb4")
            try:
                started = time.monotonic()
                run_restore_tool(mysql_restore_command(server, scratch, password), feed)
                restore_seconds = time.monotonic() - started
                started = time.monotonic()
                with closing(connect(server, password, scratch)) as connection:
                    restored = collect_stats(connection, scratch, dataset)
                    outcomes = compare_stats(record.source_stats, restored, dataset.verification)

                    def run(query: str) -> Any:
                        with connection.cursor() as cursor:
                            cursor.execute(query)
                            row = cursor.fetchone()
                            return row[0] if row else None

                    outcomes += run_validation_queries(run, dataset.verification, record.source_stats)
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
