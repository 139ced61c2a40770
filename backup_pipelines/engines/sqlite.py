"""SQLite: a consistent online copy with SQLite's backup API, statistics taken on that same copy, and restore
tests that open the restored file, run `PRAGMA integrity_check` and the validation queries."""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from backup_pipelines.engines.base import CheckOutcome, Dump, Feed, RestoreReport, restore_to_file
from backup_pipelines.engines.fingerprint import FINGERPRINT, compare_fingerprints
from backup_pipelines.engines.sqlite_fingerprint import take_fingerprint
from backup_pipelines.engines.validation import compare_stats, jsonable, run_validation_queries
from backup_pipelines.errors import IntegrityError, SourceUnavailableError
from backup_pipelines.execute import Command, tool_version
from backup_pipelines.manifest import Manifest, SqliteDataset
from backup_pipelines.repository.base import BackupRecord

TABLES_SQL = "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name"


def collect_stats(connection: sqlite3.Connection, dataset: SqliteDataset) -> dict[str, Any]:
    """Return the database's table count, every table's row count, the values of the validation queries
    that compare with the source and (unless turned off) the content fingerprint."""
    tables = [row[0] for row in connection.execute(TABLES_SQL)]
    stats: dict[str, Any] = {"sqlite_version": sqlite3.sqlite_version, "table_count": len(tables)}
    if dataset.verification.compare_row_counts:
        quoted = {table: '"' + table.replace('"', '""') + '"' for table in tables}
        stats["tables"] = {
            table: connection.execute(f"select count(*) from {quoted[table]}").fetchone()[0] for table in tables
        }
    stats["queries"] = {
        query.name: jsonable(connection.execute(query.sql).fetchone()[0])
        for query in dataset.verification.queries
        if query.expect.same_as_source
    }
    if dataset.verification.fingerprint:
        stats.update(take_fingerprint(connection, tables))
    return stats


def integrity(path: Path) -> str:
    """Return `PRAGMA integrity_check`'s verdict on the database file at `path` ("ok" when sound)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        rows = connection.execute("pragma integrity_check").fetchall()
    return "; ".join(str(row[0]) for row in rows)


class SqliteEngine:
    """The SQLite engine (see the module docstring)."""

    kind = "sqlite"
    format = "sqlite-database"

    def extension_for(self, manifest: Manifest, name: str) -> str:
        return "sqlite"

    def _dataset(self, manifest: Manifest, name: str) -> SqliteDataset:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, SqliteDataset), f"{name} is a {dataset.kind} dataset, not sqlite"
        return dataset

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        return {"sqlite": sqlite3.sqlite_version, "zstd": tool_version("zstd")}

    @contextmanager
    def dump(self, manifest: Manifest, name: str) -> Iterator[Dump]:
        dataset = self._dataset(manifest, name)
        source = manifest.resolve_path(dataset.source.path)
        if not source.is_file():
            raise SourceUnavailableError(f"SQLite database {source} (dataset {name}) does not exist")
        with tempfile.TemporaryDirectory(prefix="bp-sqlite-") as folder:
            copy = Path(folder) / "copy.sqlite"
            try:
                with (
                    closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)) as live,
                    closing(sqlite3.connect(copy)) as snapshot,
                ):
                    live.backup(snapshot)
                    stats = collect_stats(snapshot, dataset)
            except sqlite3.Error as error:
                raise SourceUnavailableError(f"cannot copy SQLite database {source}: {error}") from error
            with open(copy, "rb") as stream:
                yield Dump(stream=stream, finish=lambda: stats)

    def archive_check_command(self, manifest: Manifest, name: str) -> Command:
        return Command((sys.executable, "-m", "backup_pipelines.engines.sqlite_check"))

    def summarize_archive_listing(self, listing: str) -> dict[str, Any]:
        values = dict(line.split(": ", 1) for line in listing.splitlines() if ": " in line)
        if values.get("integrity_check") != "ok":
            raise IntegrityError(f"the stored SQLite database fails integrity_check: {values.get('integrity_check')}")
        return {"integrity_check": "ok", "tables": int(values.get("tables", 0))}

    def restore_to(self, manifest: Manifest, name: str, target: str, server_name: str | None, feed: Feed) -> str:
        return restore_to_file(target, feed)

    def restore_test(self, manifest: Manifest, name: str, record: BackupRecord, feed: Feed) -> RestoreReport:
        dataset = self._dataset(manifest, name)
        with tempfile.TemporaryDirectory(prefix="bp-sqlite-restore-") as folder:
            path = Path(folder) / "restored.sqlite"
            started = time.monotonic()
            with open(path, "wb") as output:
                feed(output)
            restore_seconds = time.monotonic() - started
            started = time.monotonic()
            verdict = integrity(path)
            outcomes = [CheckOutcome("integrity_check", "ok", verdict, verdict == "ok")]
            with closing(sqlite3.connect(path)) as connection:
                restored = collect_stats(connection, dataset)
                outcomes += compare_stats(record.source_stats, restored, dataset.verification)
                if dataset.verification.fingerprint:
                    outcomes += compare_fingerprints(record.source_stats, restored)

                def run(query: str) -> Any:
                    row = connection.execute(query).fetchone()
                    return row[0] if row else None

                outcomes += run_validation_queries(run, dataset.verification, record.source_stats)
            validation_seconds = time.monotonic() - started
        restored.pop(FINGERPRINT, None)  # the report keeps the comparison's outcomes, not every digest
        report = RestoreReport(
            "temporary SQLite file (deleted)", restore_seconds, validation_seconds, record.bytes_raw, outcomes, restored
        )
        return report
