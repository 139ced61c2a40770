"""A pgBackRest repository as a backup store: each base backup annotated `bp-dataset`/`bp-id` is one backup.

pgBackRest stores (zstd, aes-256-cbc, checksums per file) and keeps the WAL archive; this class runs its CLI
to list (`info --output=json`), expire (`expire --set`) and annotate backups (restore-tested, quarantine), so
retention, list and the runbook treat cluster backups like any other. A backup that builds on another
(differential, incremental) names it in `source_stats["needs"]`, and retention keeps what a kept backup needs.
Base backups made by hand (no annotation) are left to the operator: never listed, never expired.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from backup_pipelines.errors import CommandFailedError, StorageError
from backup_pipelines.execute import Command, run
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository.base import BackupRecord, BackupStore
from backup_pipelines.repository.pgbackrest_config import (
    ClusterSettings,
    render_config,
    secret_environment,
    write_config,
)
from backup_pipelines.system_user import as_user

NOTE_DATASET = "bp-dataset"
NOTE_PARTITION = "bp-partition"
NOTE_ID = "bp-id"
NOTE_TESTED = "bp-restore-tested"
NOTE_QUARANTINE = "bp-quarantine"  # the reason, percent-encoded
NOTE_QUARANTINED_AT = "bp-quarantined-at"
FORMAT = "pgbackrest"


def pgbackrest_command(settings: ClusterSettings, environment: dict[str, str], *arguments: str) -> Command:
    """Return a pgBackRest command for the dataset's stanza, run as the cluster's system user when we are root
    (runuser keeps the environment, so the secrets travel there, never in argv)."""
    argv = ("pgbackrest", f"--config={settings.config_file}", f"--stanza={settings.stanza}", *arguments)
    return Command(as_user(settings.os_user, *argv), environment)


class PgBackRestRepository(BackupStore):
    """Base backups of postgres_cluster datasets in one pgBackRest repository (repo<n> of each dataset)."""

    def __init__(self, name: str, manifest: Manifest, datasets: list[str], location: str) -> None:
        super().__init__(name)
        self.manifest = manifest
        self.datasets = datasets
        self.location = location

    def settings(self, dataset: str) -> ClusterSettings:
        return render_config(self.manifest, dataset)

    def run(self, dataset: str, *arguments: str, timeout: float | None = 600, repo: bool = True) -> str:
        """Run pgBackRest for `dataset` on this repository (after writing its configuration); return stdout.
        Raise StorageError with pgBackRest's message if it fails, MissingSecretError if a secret is unset."""
        settings = self.settings(dataset)
        write_config(settings)
        extra = (f"--repo={settings.repo_index(self.name)}",) if repo else ()
        command = pgbackrest_command(settings, secret_environment(self.manifest, dataset), *arguments, *extra)
        try:
            return run(command, timeout=timeout)
        except CommandFailedError as error:
            raise StorageError(f"pgbackrest {arguments[0]} of {dataset} on {self.location} failed: {error}") from error
        except subprocess.TimeoutExpired as error:
            raise StorageError(f"pgbackrest {arguments[0]} of {dataset} timed out after {timeout} s") from error

    def uri(self, path: str) -> str:
        return f"pgbackrest:{self.location}#{path}"

    def info(self, dataset: str) -> dict[str, Any]:
        """Return `pgbackrest info --output=json` for the dataset's stanza in this repository ({} when the
        stanza does not exist yet)."""
        output = self.run(dataset, "info", "--output=json", timeout=300)
        stanzas = json.loads(output or "[]")
        return dict(stanzas[0]) if stanzas else {}

    def list_backups(self, dataset: str | None = None, include_expiring: bool = False) -> list[BackupRecord]:
        records: list[BackupRecord] = []
        for name in [dataset] if dataset else self.datasets:
            if name not in self.datasets:
                continue
            info = self.info(name)
            records += records_from_info(name, info, self.name)
        return sorted(records, key=lambda record: (record.created_at, record.partition_key, record.backup_id))

    def delete_backup(self, record: BackupRecord) -> None:
        """Expire the backup with `pgbackrest expire --set` (pgBackRest removes it, and what depends on it, as
        one operation; the archive it alone needed goes with it). A backup already gone is not an error."""
        labels = {backup.get("label") for backup in self.info(record.dataset).get("backup", [])}
        if record.object_name in labels:
            self.run(record.dataset, "expire", f"--set={record.object_name}")

    def annotate(self, record: BackupRecord, notes: dict[str, str]) -> None:
        """Set (or, with an empty value, remove) annotations of `record`'s backup."""
        arguments = [f"--annotation={key}={value}" for key, value in notes.items()]
        self.run(record.dataset, "annotate", f"--set={record.object_name}", *arguments)

    def restore_tested(self, dataset: str) -> set[str]:
        return {record.backup_id for record in self.list_backups(dataset) if record.source_stats.get("restore_tested")}

    def mark_restore_tested(self, record: BackupRecord, details: dict[str, Any]) -> None:
        self.annotate(record, {NOTE_TESTED: str(details.get("tested_at") or datetime.now(UTC).isoformat())})

    def set_quarantine(self, record: BackupRecord, reason: str | None, at: str | None = None) -> None:
        if reason is None:
            self.annotate(record, {NOTE_QUARANTINE: "", NOTE_QUARANTINED_AT: ""})
        else:
            when = at or datetime.now(UTC).isoformat()
            self.annotate(record, {NOTE_QUARANTINE: quote(reason, safe=""), NOTE_QUARANTINED_AT: when})

    def copy_from(self, source: PgBackRestRepository, record: BackupRecord) -> str:
        """Give this repository its own base backup for `record` (pgBackRest copies nothing between repositories:
        each takes its own backups, and the WAL archive goes to all of them), annotated with the same dataset,
        partition and backup id; return its location. A backup already there is not taken again."""
        existing = self.find_backup(record.dataset, record.backup_id)
        if existing is None:
            notes = {NOTE_DATASET: record.dataset, NOTE_PARTITION: record.partition_key, NOTE_ID: record.backup_id}
            kind = str(record.source_stats.get("backup_type", "full"))
            self.run(record.dataset, "backup", f"--type={kind}", *(f"--annotation={k}={v}" for k, v in notes.items()))
            existing = self.find_backup(record.dataset, record.backup_id)
            if existing is None:
                raise StorageError(
                    f"pgbackrest reported the backup of {record.dataset} into {self.name} done but lists none"
                )
        return self.uri(existing.object_name)

    def prerequisites(self, record: BackupRecord) -> set[str]:
        return set(record.source_stats.get("needs", []))


def records_from_info(dataset: str, info: dict[str, Any], repository: str) -> list[BackupRecord]:
    """Return the records of the annotated base backups in one stanza's `info` JSON (backups in error, or
    made by hand, are left out)."""
    backups = [backup for backup in info.get("backup", []) if not backup.get("error")]
    ids = {backup["label"]: (backup.get("annotation") or {}).get(NOTE_ID) for backup in backups}
    encrypted = info.get("cipher", "none") != "none"
    records = []
    for backup in backups:
        notes = backup.get("annotation") or {}
        if notes.get(NOTE_DATASET) != dataset or not notes.get(NOTE_ID):
            continue
        records.append(_record(dataset, backup, notes, ids, encrypted, repository))
    return records


def _record(
    dataset: str,
    backup: dict[str, Any],
    notes: dict[str, str],
    ids: dict[str, str | None],
    encrypted: bool,
    repository: str,
) -> BackupRecord:
    started, stopped = backup["timestamp"]["start"], backup["timestamp"]["stop"]
    sizes = backup.get("info", {})
    needs = [ids[label] for label in backup.get("reference") or [] if ids.get(label)]
    reason = notes.get(NOTE_QUARANTINE) or None
    return BackupRecord(
        dataset=dataset,
        partition_key=notes.get(NOTE_PARTITION, ""),
        backup_id=notes[NOTE_ID],
        kind="postgres_cluster",
        format=f"{FORMAT}-{backup['type']}",
        object_name=backup["label"],
        created_at=datetime.fromtimestamp(started, UTC).isoformat(),
        bytes_raw=int(sizes.get("size", 0)),
        bytes_stored=int(sizes.get("repository", {}).get("delta", 0)),
        sha256="",
        compression="zst",
        encrypted=encrypted,
        duration_seconds=float(stopped - started),
        source_stats={
            "backup_type": backup["type"],
            "label": backup["label"],
            "prior": backup.get("prior"),
            "needs": [backup_id for backup_id in needs if backup_id],
            "lsn_start": backup.get("lsn", {}).get("start"),
            "lsn_stop": backup.get("lsn", {}).get("stop"),
            "wal_start": backup.get("archive", {}).get("start"),
            "wal_stop": backup.get("archive", {}).get("stop"),
            "stopped_at": datetime.fromtimestamp(stopped, UTC).isoformat(),
            "bytes_repository": int(sizes.get("repository", {}).get("size", 0)),
            "restore_tested": notes.get(NOTE_TESTED) or None,
            "repository": repository,
        },
        tool_versions={"pgbackrest": str(backup.get("backrest", {}).get("version", ""))},
        quarantine_reason=unquote(reason) if reason else None,
        quarantined_at=notes.get(NOTE_QUARANTINED_AT) or None,
    )
