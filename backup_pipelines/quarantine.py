"""Quarantine: a committed backup that a blocking check failed on (or that an operator judged suspect).

A quarantined backup stays committed, listed and restorable by its id, but it is never "the newest backup":
not for a restore without an id, restore-commands, the runbook, the RPO check, the restore drill or the
status dashboard, and retention's keep rules never count it (it expires like any other backup once older
than the minimum age). The mark lives with the backup in every repository holding it: a field of the JSON
sidecar (local, S3), a restic snapshot tag, an AWS snapshot tag. An operator releases it with
`backup-pipelines quarantine DATASET BACKUP_ID --release`, after which it is a normal backup again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository import BackupRecord, open_repository

LOG = logging.getLogger("backup_pipelines")
SIZE_ANOMALY_PREFIX = "size_anomaly failed"


def good(records: Iterable[BackupRecord]) -> list[BackupRecord]:
    """Return the records that are not quarantined, in their order."""
    return [record for record in records if not record.quarantined]


def describe(record: BackupRecord) -> str:
    """Return one line saying that (and why, and since when) `record` is quarantined, or "" if it is not."""
    if not record.quarantined:
        return ""
    since = f" since {record.quarantined_at[:19]} UTC" if record.quarantined_at else ""
    return f"backup {record.backup_id} of {record.dataset} is QUARANTINED{since}: {record.quarantine_reason}"


def size_anomaly_reason(description: str) -> str:
    """Return the quarantine reason of a backup whose size_anomaly check failed with `description`."""
    return f"{SIZE_ANOMALY_PREFIX}: {description}"


def set_quarantine(manifest: Manifest, name: str, backup_id: str, reason: str | None) -> list[str]:
    """Mark backup `backup_id` of dataset `name` quarantined with `reason` in every repository of the dataset
    that holds it, or release it there when `reason` is None; return the names of those repositories.

    A repository that cannot be reached is skipped with a warning (the others are still marked). Raise
    StorageError if no reachable repository holds the backup, or if marking fails in every one holding it.
    """
    at = datetime.now(UTC).isoformat()
    marked: list[str] = []
    problems: list[str] = []
    for repository_name in manifest.dataset(name).repositories:
        try:
            repository = open_repository(manifest, repository_name)
            record = repository.find_backup(name, backup_id)
            if record is not None:
                repository.set_quarantine(record, reason, at)
                marked.append(repository_name)
        except StorageError as error:
            LOG.warning(f"could not change the quarantine of {backup_id} in {repository_name}: {error}")
            problems.append(f"{repository_name}: {error}")
    if not marked:
        trouble = f" ({'; '.join(problems)})" if problems else ""
        raise StorageError(f"no repository of {name} holds backup {backup_id}{trouble}")
    return marked


def quarantine_backup(manifest: Manifest, name: str, backup_id: str, reason: str) -> list[str]:
    """Quarantine backup `backup_id` of `name` with `reason` everywhere it is stored (see `set_quarantine`)."""
    if not reason.strip():
        raise ValueError("a quarantine needs a reason")
    return set_quarantine(manifest, name, backup_id, reason.strip())


def release_backup(manifest: Manifest, name: str, backup_id: str) -> list[str]:
    """Release backup `backup_id` of `name` from quarantine everywhere it is stored (see `set_quarantine`)."""
    return set_quarantine(manifest, name, backup_id, None)
