"""Whole MariaDB servers, copied physically by mariabackup and stored like any dump.

Backup: the tables' row counts in a consistent snapshot, then `mariabackup --backup --stream=mbstream`
(the password in MYSQL_PWD, never argv) into the object pipeline (zstd, age, repository), the archive checked
as it is written by `mbstream_check.py` (every chunk's CRC, every file ended, mariabackup's closing files
present), then the row counts again: a table whose count did not move is recorded exactly, one written during
the copy as the range its restored count must fall in.

The content fingerprint (the mysql kind's: row digests, SHOW CREATE of every object, the defaults) is taken in
both snapshots too; the items equal in both are recorded, those that moved are named and not compared.

Restore test: `mbstream -x` into a scratch folder, `mariabackup --prepare`, a temporary mariadbd on a free
loopback port, then: the same tables, their row counts, the fingerprint's stable items, CHECK TABLE on each,
and the validation queries.
`restore --output DIR` leaves a prepared datadir there, ready for a server.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from backup_pipelines.engines import mysql_fingerprint
from backup_pipelines.engines.base import CheckOutcome, Dump, Feed, RestoreReport, new_folder
from backup_pipelines.engines.fingerprint import FINGERPRINT, FINGERPRINT_METHOD, compare_fingerprints
from backup_pipelines.engines.mariadb_copy import (
    check_tables,
    connect_copy,
    extract_and_prepare,
    snapshot,
    temporary_server,
)
from backup_pipelines.engines.mysql import _password, connect, mysql_server, query_runner
from backup_pipelines.engines.validation import run_validation_queries
from backup_pipelines.errors import IntegrityError
from backup_pipelines.execute import PIPE, Command, Process, tool_version
from backup_pipelines.manifest import Manifest, MariadbPhysicalDataset, MysqlServerConfig
from backup_pipelines.repository.base import BackupRecord
from backup_pipelines.system_user import owned_scratch

CHANGED_ITEMS = "fingerprint_changed_during_copy"  # items that moved while mariabackup copied: not compared
STABLE_ONLY = "items that changed while the copy ran (the two snapshots before and after differ) are not compared"


@functools.cache
def mariabackup_version() -> str:
    return tool_version("mariabackup")


def mariabackup_command(server: MysqlServerConfig, dataset: MariadbPhysicalDataset, target_dir: Path) -> Command:
    """The backup command: the whole server as an mbstream on stdout (its temporary files in `target_dir`)."""
    argv = (
        "mariabackup",
        "--backup",
        "--stream=mbstream",
        f"--datadir={dataset.source.data_directory}",
        f"--target-dir={target_dir}",
        f"--host={server.host}",
        f"--port={server.port}",
        f"--user={server.user}",
        f"--parallel={dataset.source.parallel}",
    )
    return Command(argv)


def merge_counts(before: dict[str, int], after: dict[str, int]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Exact counts for the tables that did not move during the copy; [low, high] for those that did (or that
    appeared or vanished meanwhile: 0 stands for absent)."""
    exact, ranges = {}, {}
    for table in sorted(set(before) | set(after)):
        first, last = before.get(table, 0), after.get(table, 0)
        if table in before and table in after and first == last:
            exact[table] = first
        else:
            ranges[table] = [min(first, last), max(first, last)]
    return exact, ranges


def judge_counts(source: dict[str, Any], restored: dict[str, int]) -> list[CheckOutcome]:
    outcomes = []
    for table, expected in source.get("tables", {}).items():
        actual = restored.get(table, "no such table")
        outcomes.append(CheckOutcome(f"rows in {table}", expected, actual, actual == expected))
    for table, (low, high) in source.get("table_ranges", {}).items():
        actual = restored.get(table, 0)
        outcomes.append(
            CheckOutcome(f"rows in {table} (written during the copy)", f"{low}..{high}", actual, low <= actual <= high)
        )
    extra = sorted(set(restored) - set(source.get("tables", {})) - set(source.get("table_ranges", {})))
    outcomes.append(CheckOutcome("tables not in the source", "none", ", ".join(extra) or "none", not extra))
    return outcomes


class MariabackupEngine:
    """The mariadb_physical engine (see the module docstring)."""

    kind = "mariadb_physical"
    format = "mbstream"

    def _parts(self, manifest: Manifest, name: str) -> tuple[MariadbPhysicalDataset, MysqlServerConfig, str | None]:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, MariadbPhysicalDataset), f"{name} is a {dataset.kind} dataset"
        return dataset, mysql_server(manifest, dataset.source.server), _password(manifest, dataset.source.server)

    def extension_for(self, manifest: Manifest, name: str) -> str:
        return "mbstream"

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        return {"mariabackup": mariabackup_version(), "zstd": tool_version("zstd")}

    @contextmanager
    def dump(self, manifest: Manifest, name: str) -> Iterator[Dump]:
        dataset, server, password = self._parts(manifest, name)
        databases = dataset.source.databases
        verification = dataset.verification if dataset.verification.fingerprint else None
        with closing(connect(server, password)) as connection:
            with connection.cursor() as cursor:
                cursor.execute("select version()")
                version = str(cursor.fetchone()[0])
            before = snapshot(connection, databases, verification)
            work = Path(tempfile.mkdtemp(prefix="bp-mariabackup-"))
            command = mariabackup_command(server, dataset, work)
            process = Process(Command(command.argv, {"MYSQL_PWD": password} if password else {}), stdout=PIPE)

            def finish() -> dict[str, Any]:
                process.check()
                after = snapshot(connection, databases, verification)
                exact, ranges = merge_counts(before[0], after[0])
                stats: dict[str, Any] = {
                    "server_version": version,
                    "table_count": len(exact) + len(ranges),
                    "tables": exact,
                    "table_ranges": ranges,
                    "queries": {},
                }
                if verification is not None:
                    stable = {item: value for item, value in before[1].items() if after[1].get(item) == value}
                    stats[FINGERPRINT] = stable
                    stats[CHANGED_ITEMS] = sorted((set(before[1]) | set(after[1])) - set(stable))
                    stats[FINGERPRINT_METHOD] = f"{mysql_fingerprint.METHOD}; {STABLE_ONLY}"
                return stats

            try:
                yield Dump(stream=process.stdout, finish=finish)
            except BaseException:
                process.kill()
                raise
            finally:
                process.close()
                shutil.rmtree(work, ignore_errors=True)

    def archive_check_command(self, manifest: Manifest, name: str) -> Command:
        return Command((sys.executable, str(Path(__file__).with_name("mbstream_check.py"))))

    def summarize_archive_listing(self, listing: str) -> dict[str, Any]:
        values = dict(line.split(": ", 1) for line in listing.splitlines() if ": " in line)
        if values.get("complete") != "yes":
            raise IntegrityError(f"the mbstream archive is not whole: {values.get('complete', 'no output')}")
        return {"files": int(values["files"]), "bytes_in_files": int(values["bytes"])}

    def restore_to(self, manifest: Manifest, name: str, target: str, server_name: str | None, feed: Feed) -> str:
        """Extract and prepare the backup as the new datadir `target` (whole or absent)."""
        dataset, _, _ = self._parts(manifest, name)
        with new_folder(target) as folder:
            folder.rmdir()  # extract_and_prepare makes it, owned by the server's user
            extract_and_prepare(feed, folder, dataset.source.os_user)
        return str(Path(target).resolve())

    def restore_test(self, manifest: Manifest, name: str, record: BackupRecord, feed: Feed) -> RestoreReport:
        dataset, server, password = self._parts(manifest, name)
        user = dataset.source.os_user
        folder = owned_scratch(user, "bp-mariabackup-")
        try:
            started = time.monotonic()
            extract_and_prepare(feed, folder / "data", user)
            wait = max(60.0, dataset.rto.total_seconds())
            with temporary_server(folder / "data", user, wait) as port:
                restore_seconds = time.monotonic() - started
                started = time.monotonic()
                with closing(_connect_when_ready(port, server.user, password, wait)) as connection:
                    fingerprinted = FINGERPRINT in record.source_stats
                    verification = dataset.verification if fingerprinted else None
                    counts, items = snapshot(connection, dataset.source.databases, verification)
                    outcomes = judge_counts(record.source_stats, counts)
                    if fingerprinted:
                        changed = set(record.source_stats.get(CHANGED_ITEMS, []))
                        compared = {item: value for item, value in items.items() if item not in changed}
                        outcomes += compare_fingerprints(record.source_stats, {FINGERPRINT: compared})
                    damaged = check_tables(connection, sorted(counts))
                    outcomes.append(
                        CheckOutcome("CHECK TABLE", "OK for every table", "; ".join(damaged) or "OK", not damaged)
                    )
                    outcomes += run_validation_queries(
                        query_runner(connection), dataset.verification, record.source_stats
                    )
                validation_seconds = time.monotonic() - started
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return RestoreReport(
            "temporary mariadbd on a prepared copy (removed)",
            restore_seconds,
            validation_seconds,
            record.bytes_raw,
            outcomes,
            {"tables": counts},
        )


def _connect_when_ready(port: int, user: str, password: str | None, wait: float) -> Any:
    import pymysql

    deadline = time.monotonic() + wait
    while True:
        try:
            return connect_copy(port, user, password)
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
