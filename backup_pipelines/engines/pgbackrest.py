"""Whole PostgreSQL clusters through pgBackRest: one partition is one base backup; the WAL archived between
them makes every moment of the recovery window restorable.

Backup stamps a marker row (see `pitr_server`), then runs `pgbackrest backup --type=full|diff|incr` (the type
from the dataset's `backup_types` at the partition's start) annotated with dataset, partition and backup id;
pgBackRest waits for the WAL that makes the backup consistent, so a cluster whose archiving is broken fails
its backup. Verify runs `pgbackrest verify` on the backup and judges its report as well as its exit status,
then checks that the archive holds every WAL segment from the backup's start to the newest one.

The restore test stamps a marker and runs `pgbackrest check` (which switches and archives the current WAL
segment), so everything up to that marker is in the archive. It then restores the backup twice into scratch
data directories: once to a moment chosen at random between the backup's end and that marker (`--type=time`),
once to the end of the archive. Each copy is started on a free port as the cluster's system user, recovery is
awaited, and the copy is judged: the markers stamped before the target are there, none stamped after it is,
and the dataset's validation queries hold. The second restore's wall time is the RTO.
"""

from __future__ import annotations

import functools
import logging
import random
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backup_pipelines.engines.base import CheckOutcome, RestoreReport, refuse_existing
from backup_pipelines.engines.pgbackrest_wal import check_wal_continuity, judge_verify_report
from backup_pipelines.engines.pitr_server import (
    MARGIN,
    judge_markers,
    markers,
    temporary_server,
    wait_promoted,
    write_marker,
)
from backup_pipelines.engines.postgres import _password, connect, query_runner
from backup_pipelines.engines.postgres_restore import binary
from backup_pipelines.engines.validation import run_validation_queries
from backup_pipelines.errors import CommandFailedError, IntegrityError, RestoreTargetError, StorageError
from backup_pipelines.execute import Command, run
from backup_pipelines.manifest import Manifest, PostgresClusterDataset, PostgresServerConfig
from backup_pipelines.repository.base import BackupRecord, new_backup_id
from backup_pipelines.repository.pgbackrest import NOTE_DATASET, NOTE_ID, NOTE_PARTITION, PgBackRestRepository
from backup_pipelines.repository.pgbackrest_config import (
    cluster_dataset,
    cluster_server,
    secret_environment,
)
from backup_pipelines.system_user import owned_folder, owned_scratch

LOG = logging.getLogger("backup_pipelines")
PARTITION_FORMATS = ("%Y-%m-%d-%H:%M", "%Y-%m-%d")
WINDOW_MARGIN = timedelta(seconds=2)  # a random target keeps this far from the window's ends


@functools.cache
def pgbackrest_version() -> str:
    try:
        return run(Command(("pgbackrest", "version")), timeout=30).strip()
    except (CommandFailedError, OSError):
        return "unavailable"


def partition_moment(partition_key: str) -> datetime:
    """The start of a partition (Dagster's hourly or daily key), in UTC."""
    for pattern in PARTITION_FORMATS:
        try:
            return datetime.strptime(partition_key, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return datetime.now(UTC)


def _parts(manifest: Manifest, name: str) -> tuple[PostgresClusterDataset, PostgresServerConfig, str | None]:
    dataset = cluster_dataset(manifest, name)
    server = cluster_server(manifest, dataset)
    return dataset, server, _password(dataset.source.server, server)


class PgBackRestEngine:
    """The postgres_cluster engine (see the module docstring). It stores through pgBackRest itself."""

    kind = "postgres_cluster"
    format = "pgbackrest"
    store_type = PgBackRestRepository
    exact_copies = False  # each repository holds its own base backup of the partition, not the same bytes

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        return {"pgbackrest": pgbackrest_version()}

    def backup(
        self,
        manifest: Manifest,
        name: str,
        partition_key: str,
        stores: list[PgBackRestRepository],
        started_at: datetime | None,
    ) -> tuple[BackupRecord, dict[str, str]]:
        """Take one base backup into each of `stores`; return the record (of the first) and each location.
        Raise SourceUnavailableError if the cluster cannot be reached, StorageError with pgBackRest's reason
        if the backup fails (then pgBackRest lists no backup: its partial one is resumed or removed later)."""
        dataset, server, password = _parts(manifest, name)
        backup_type = dataset.backup_types.type_at(partition_moment(partition_key))
        backup_id = new_backup_id((started_at or datetime.now(UTC)).astimezone(UTC))
        write_marker(server, dataset.source.marker_database, password)
        notes = [
            f"--annotation={NOTE_DATASET}={name}",
            f"--annotation={NOTE_PARTITION}={partition_key}",
            f"--annotation={NOTE_ID}={backup_id}",
        ]
        records, locations = [], {}
        for store in stores:
            store.run(name, "stanza-create", repo=False, timeout=300)
            kind = backup_type if backup_type == "full" else _type_beside_quarantine(store, name, backup_type)
            store.run(name, "backup", f"--type={kind}", *notes, timeout=None)
            record = store.find_backup(name, backup_id)
            if record is None:
                raise StorageError(f"pgbackrest reported backup {backup_id} of {name} done but does not list it")
            records.append(record)
            locations[store.name] = store.uri(record.object_name)
            LOG.info(f"{name}: {record.source_stats['backup_type']} backup {record.object_name} in {store.name}")
        return records[0], locations

    def verify(
        self, manifest: Manifest, name: str, store: PgBackRestRepository, record: BackupRecord
    ) -> dict[str, Any]:
        """Run `pgbackrest verify` on the backup and judge its report; check the WAL from the backup's start
        to the newest segment has no gap. Raise IntegrityError naming what is wrong."""
        report = store.run(name, "verify", f"--set={record.object_name}", "--output=text", "--verbose", timeout=None)
        details = judge_verify_report(report, record.object_name)
        details.update(check_wal_continuity(store, name, record))
        return details

    def restore_test(
        self, manifest: Manifest, name: str, store: PgBackRestRepository, record: BackupRecord
    ) -> RestoreReport:
        dataset, server, password = _parts(manifest, name)
        # The window to draw from: after the backup became consistent (pgBackRest's stop time, in whole seconds)
        # and before the marker stamped now, whose commit is the record that lets recovery see the target passed.
        stopped = datetime.fromisoformat(record.source_stats["stopped_at"])
        time.sleep(max(0.0, (stopped + 2 * WINDOW_MARGIN - datetime.now(UTC)).total_seconds()))
        stamped = write_marker(server, dataset.source.marker_database, password)
        store.run(name, "check", repo=False, timeout=300)  # switches the WAL segment and waits until archived
        with connect(server, dataset.source.marker_database, password) as connection:
            source_markers = markers(connection)
        target = _random_moment(stopped + WINDOW_MARGIN, stamped - WINDOW_MARGIN)
        outcomes: list[CheckOutcome] = []
        restore_seconds = 0.0
        restored_stats: dict[str, Any] = {"recovery_window": [stopped.isoformat(), stamped.isoformat()]}
        for label, moment in (("random moment", target), ("newest moment", None)):
            started = time.monotonic()
            checks = self._restore_and_judge(manifest, name, store, record, moment, source_markers, stamped)
            seconds = time.monotonic() - started
            outcomes += [CheckOutcome(f"{label}: {c.name}", c.expected, c.actual, c.passed) for c in checks]
            restored_stats[f"{label.split()[0]}_target"] = moment.isoformat() if moment else "end of archive"
            restored_stats[f"{label.split()[0]}_seconds"] = round(seconds, 3)
            restore_seconds = seconds
        return RestoreReport(
            target="scratch data directory",
            restore_seconds=restore_seconds,
            validation_seconds=0.0,
            bytes_raw=record.bytes_raw,
            outcomes=outcomes,
            restored_stats=restored_stats,
        )

    def _restore_and_judge(
        self,
        manifest: Manifest,
        name: str,
        store: PgBackRestRepository,
        record: BackupRecord,
        target: datetime | None,
        source_markers: list[datetime],
        stamped: datetime,
    ) -> list[CheckOutcome]:
        dataset, server, password = _parts(manifest, name)
        folder = owned_scratch(dataset.source.os_user, "bp-pitr-")
        try:
            data = folder / "data"
            self._restore(store, name, record, data, target)
            wait = max(60.0, dataset.rto.total_seconds())
            secrets = secret_environment(manifest, name)
            pg_ctl = binary("pg_ctl", server)
            with temporary_server(data, pg_ctl, dataset.source.os_user, wait, secrets) as restored:
                local = server.model_copy(update={"host": "127.0.0.1", "port": restored.port, "sslmode": "disable"})

                def connect_restored() -> Any:
                    return connect(local, dataset.source.marker_database, password)

                wait_promoted(connect_restored, restored, wait)
                with connect_restored() as connection:
                    outcomes = judge_markers(source_markers, markers(connection), target or stamped + 2 * MARGIN)
                    outcomes += run_validation_queries(query_runner(connection), dataset.verification, {})
            return outcomes
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _restore(
        self, store: PgBackRestRepository, name: str, record: BackupRecord, data: Path, target: datetime | None
    ) -> None:
        arguments = ["restore", f"--set={record.object_name}", f"--pg1-path={data}", "--archive-mode=off"]
        if target is not None:
            moment = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            arguments += ["--type=time", f"--target={moment}", "--target-action=promote"]
        store.run(name, *arguments, timeout=None)

    def restore_to(
        self, manifest: Manifest, name: str, store: PgBackRestRepository, record: BackupRecord, target: str
    ) -> str:
        """Restore `record` into the new data directory `target`, set to recover to the end of the archive
        when started. Raise RestoreTargetExistsError if `target` exists."""
        return self.restore_to_moment(store, name, record, target, None)

    def restore_to_moment(
        self, store: PgBackRestRepository, name: str, record: BackupRecord, target: str, moment: datetime | None
    ) -> str:
        """Restore `record` into the new data directory `target`, set to recover to `moment` (then promote) or,
        when None, to the end of the archive, once a server is started on it; return its path. The folder
        is removed if the restore fails. Raise RestoreTargetExistsError if it exists, RestoreTargetError if
        `moment` is before the backup's end (no backup can recover to an earlier moment)."""
        path = Path(target).resolve()
        refuse_existing(path)
        stopped = record.source_stats.get("stopped_at")
        if moment is not None and stopped and moment <= datetime.fromisoformat(stopped):
            raise RestoreTargetError(
                f"backup {record.backup_id} ended at {stopped}: it cannot recover to {moment.isoformat()}"
            )
        try:
            owned_folder(path, store.settings(name).os_user)  # pgBackRest, as that user, may not write the parent
            self._restore(store, name, record, path, moment)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return str(path)


def _type_beside_quarantine(store: PgBackRestRepository, name: str, wanted: str) -> str:
    """`wanted` (diff or incr), or "full" when the backup it would build on, or one that one needs, is
    quarantined: a chain never grows from a backup known to be bad."""
    records = store.list_backups(name)
    if not records:
        return wanted
    newest = records[-1]
    by_id = {record.backup_id: record for record in records}
    chain = [newest, *(by_id[backup_id] for backup_id in newest.source_stats.get("needs", []) if backup_id in by_id)]
    if wanted == "diff":  # a differential builds on the newest full only
        chain = [record for record in chain if record.source_stats.get("backup_type") == "full"][:1]
    bad = [record for record in chain if record.quarantined]
    if bad:
        LOG.warning(
            f"{name}: {bad[0].object_name} is quarantined ({bad[0].quarantine_reason}): taking a full backup "
            f"instead of {'a' if wanted == 'diff' else 'an'} {wanted}"
        )
        return "full"
    return wanted


def backup_for_moment(records: list[BackupRecord], moment: datetime | None) -> BackupRecord | None:
    """The newest good (not quarantined) backup that ended before `moment` (any moment: the newest good one)."""
    usable = [
        record
        for record in records
        if not record.quarantined
        and (moment is None or datetime.fromisoformat(record.source_stats["stopped_at"]) < moment)
    ]
    return max(usable, key=lambda record: record.source_stats["stopped_at"], default=None)


def _random_moment(start: datetime, end: datetime) -> datetime:
    """A moment drawn uniformly from [start, end] (start when the window is empty)."""
    if end <= start:
        return start
    return start + (end - start) * random.random()


__all__ = ["IntegrityError", "PgBackRestEngine", "partition_moment"]
