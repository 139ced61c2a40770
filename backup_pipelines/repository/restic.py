"""A restic repository as a backup store: each snapshot tagged `bp-dataset=` and `bp-id=` is one backup.

restic does the storing (deduplicated, compressed, encrypted with the repository password); this class only
lists, tags and forgets snapshots through the restic CLI, so retention, list and the runbook treat file-tree
backups like any other. The password travels in RESTIC_PASSWORD, never in argv.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from backup_pipelines.errors import CommandFailedError, StorageError
from backup_pipelines.execute import Command, run
from backup_pipelines.repository import restic_walk
from backup_pipelines.repository.base import BackupRecord, BackupStore

TAG_DATASET = "bp-dataset="
TAG_PARTITION = "bp-partition="
TAG_ID = "bp-id="
TAG_FILES = "bp-files="
TAG_BYTES = "bp-bytes="
TAG_SAMPLE = "bp-sample="
TAG_TESTED = "bp-restore-tested"
TAG_QUARANTINE = "bp-quarantine="  # the reason, percent-encoded (restic splits tags at commas)
TAG_QUARANTINED_AT = "bp-quarantined-at="
HOST = "backup-pipelines"
LOCK_WAIT_SECONDS = 900  # how long a run waits for another run's restic lock on a shared repository
LOG = logging.getLogger("backup_pipelines")

_initialized: set[str] = set()
_init_lock = threading.Lock()


def tag_value(tags: list[str], prefix: str) -> str | None:
    """Return the value of the first tag starting with `prefix`, or None."""
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return None


class ResticRepository(BackupStore):
    """Backups as restic snapshots in `location` (a folder or a restic URL)."""

    def __init__(self, name: str, location: str, environment: dict[str, str], read_data_subset: str = "5%") -> None:
        super().__init__(name)
        self.location = location
        self.environment = {"RESTIC_REPOSITORY": location, **environment}
        self.read_data_subset = read_data_subset

    def command(self, *arguments: str, extra: dict[str, str] | None = None) -> Command:
        """Return a restic command against this repository."""
        return Command(("restic", *arguments), {**self.environment, **(extra or {})})

    def run(self, *arguments: str, timeout: float | None = None, extra: dict[str, str] | None = None) -> str:
        """Run restic (waiting out other runs' locks, see `run_unlocked`); return its stdout. Raise StorageError
        with restic's message if it fails."""
        try:
            return self.run_unlocked(*arguments, timeout=timeout, extra=extra)
        except CommandFailedError as error:
            raise StorageError(
                f"restic {arguments[0]} on {self.location} failed: {error.stderr.strip()[-1500:]}"
            ) from error

    def run_unlocked(
        self,
        *arguments: str,
        timeout: float | None = None,
        extra: dict[str, str] | None = None,
        input_bytes: bytes | None = None,
    ) -> str:
        """Run restic; return its stdout. Datasets sharing a repository run at once (one backs up while another's
        retention prunes) and restic refuses a conflicting lock, so a locked repository is tried again with
        backoff for up to LOCK_WAIT_SECONDS (the installed restic 0.14 has no --retry-lock). Raise
        CommandFailedError otherwise."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 1.0
        while True:
            try:
                return run(self.command(*arguments, extra=extra), input_bytes=input_bytes, timeout=timeout)
            except CommandFailedError as error:
                if "repository is already locked" not in error.stderr or time.monotonic() + delay > deadline:
                    raise
                LOG.info(f"restic {arguments[0]}: {self.location} is locked by another run; trying again")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def ensure_initialized(self) -> None:
        """Create the repository if it does not exist yet (once per process)."""
        with _init_lock:
            if self.location in _initialized:
                return
            try:
                run(self.command("cat", "config"), timeout=120)
            except CommandFailedError:
                self.run("init", timeout=300)
            _initialized.add(self.location)

    def uri(self, path: str) -> str:
        return f"restic:{self.location}#{path}"

    def snapshots(self, dataset: str | None = None) -> list[dict[str, Any]]:
        arguments = ["snapshots", "--json"] + (["--tag", f"{TAG_DATASET}{dataset}"] if dataset else [])
        try:
            output = self.run_unlocked(*arguments, timeout=300)
        except CommandFailedError as error:
            if "does not exist" in error.stderr or "unable to open config file" in error.stderr:
                return []
            raise StorageError(f"restic snapshots on {self.location} failed: {error.stderr.strip()[-1500:]}") from error
        return list(json.loads(output or "[]") or [])

    def list_backups(self, dataset: str | None = None, include_expiring: bool = False) -> list[BackupRecord]:
        records = [record for snapshot in self.snapshots(dataset) if (record := _record(snapshot)) is not None]
        return sorted(records, key=lambda record: (record.created_at, record.partition_key, record.backup_id))

    def delete_backup(self, record: BackupRecord) -> None:
        """Forget the snapshot (atomic in restic), then the walk recorded with it (a file tree's second snapshot,
        see `restic_walk`); `finish_deletes` reclaims the space."""
        self.run("forget", record.object_name, timeout=600)
        walks = restic_walk.walk_ids(self, record.backup_id)
        if walks:
            self.run("forget", *walks, timeout=600)

    def copy_from(self, source: ResticRepository, record: BackupRecord) -> str:
        """Copy `record`'s snapshot from `source` into this repository (restic copy); return its new location.
        The source password reaches restic through the environment, never argv."""
        self.ensure_initialized()
        existing = self.find_backup(record.dataset, record.backup_id)
        if existing is None:
            current = source.find_backup(record.dataset, record.backup_id)
            if current is None:
                raise StorageError(f"backup {record.backup_id} is not in {source.location}")
            extra = {"RESTIC_FROM_REPOSITORY": source.location, "BP_RESTIC_FROM_PASSWORD": source.password}
            have_walk = restic_walk.walk_ids(self, record.backup_id)
            walks = [] if have_walk else restic_walk.walk_ids(source, record.backup_id)
            self.run(  # the walk first: the tree snapshot, copied last, makes the copy exist
                "copy",
                "--from-password-command",
                "printenv BP_RESTIC_FROM_PASSWORD",
                *walks,
                current.object_name,
                timeout=None,
                extra=extra,
            )
            existing = self.find_backup(record.dataset, record.backup_id)
            if existing is None:
                raise StorageError(f"restic copy into {self.location} finished but the snapshot is not there")
        return self.uri(existing.object_name)

    @property
    def password(self) -> str:
        return self.environment.get("RESTIC_PASSWORD", "")

    def finish_deletes(self) -> None:
        """Forget walks left by interrupted file-tree backups (`restic_walk.orphan_walk_ids`), then prune."""
        orphans = restic_walk.orphan_walk_ids(self)
        if orphans:
            self.run("forget", *orphans, timeout=600)
        self.run("prune", timeout=3600)

    def restore_tested(self, dataset: str) -> set[str]:
        return {
            record_id
            for snapshot in self.snapshots(dataset)
            if TAG_TESTED in (snapshot.get("tags") or []) and (record_id := tag_value(snapshot["tags"], TAG_ID))
        }

    def mark_restore_tested(self, record: BackupRecord, details: dict[str, Any]) -> None:
        """Tag the snapshot (restic gives it a new snapshot id; the backup id tag stays)."""
        self.run("tag", "--add", TAG_TESTED, record.object_name, timeout=300)

    def set_quarantine(self, record: BackupRecord, reason: str | None, at: str | None = None) -> None:
        """Replace the snapshot's quarantine tags (`restic tag`; the snapshot gets a new id, the backup id tag
        stays): add them with `reason`, or only remove them when releasing."""
        snapshot = next((s for s in self.snapshots(record.dataset) if _has_id(s, record.backup_id)), None)
        if snapshot is None:
            raise StorageError(f"backup {record.backup_id} of {record.dataset} is not in {self.location}")
        old = [t for t in snapshot.get("tags") or [] if t.startswith((TAG_QUARANTINE, TAG_QUARANTINED_AT))]
        new = [] if reason is None else quarantine_tags(reason, at or datetime.now(UTC).isoformat())
        arguments = [argument for tag in old if tag not in new for argument in ("--remove", tag)]
        arguments += [argument for tag in new if tag not in old for argument in ("--add", tag)]
        if arguments:
            self.run("tag", *arguments, str(snapshot["id"]), timeout=300)


def quarantine_tags(reason: str, at: str) -> list[str]:
    """Return the restic tags that mark a snapshot quarantined with `reason` (no commas: restic splits there)."""
    return [TAG_QUARANTINE + quote(reason, safe=" :;()/=+-_.@'<>[]"), TAG_QUARANTINED_AT + at]


def _has_id(snapshot: dict[str, Any], backup_id: str) -> bool:
    return tag_value(list(snapshot.get("tags") or []), TAG_ID) == backup_id


def _record(snapshot: dict[str, Any]) -> BackupRecord | None:
    tags = list(snapshot.get("tags") or [])
    dataset, backup_id = tag_value(tags, TAG_DATASET), tag_value(tags, TAG_ID)
    if not dataset or not backup_id:
        return None
    created = parse_restic_time(str(snapshot["time"]))
    total = int(tag_value(tags, TAG_BYTES) or 0)
    reason = tag_value(tags, TAG_QUARANTINE)
    return BackupRecord(
        dataset=dataset,
        partition_key=tag_value(tags, TAG_PARTITION) or "",
        backup_id=backup_id,
        kind="files",
        format="restic-snapshot",
        object_name=str(snapshot["id"]),
        created_at=created.astimezone(UTC).isoformat(),
        bytes_raw=total,
        bytes_stored=total,
        sha256="",
        compression="restic",
        encrypted=True,
        source_stats={
            "files": int(tag_value(tags, TAG_FILES) or 0),
            "bytes": total,
            "sample": tag_value(tags, TAG_SAMPLE) or "",
            "paths": list(snapshot.get("paths") or []),
        },
        quarantine_reason=None if reason is None else unquote(reason),
        quarantined_at=tag_value(tags, TAG_QUARANTINED_AT) if reason is not None else None,
    )


def parse_restic_time(text: str) -> datetime:
    """Parse restic's RFC 3339 time with nanoseconds ("2026-11-27T09:05:01.123456789+01:00" or "...Z")."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if match is None:
        raise StorageError(f"restic printed an unexpected snapshot time {text!r}")
    fraction = (match.group(2) or "0")[:6].ljust(6, "0")
    offset = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(f"{match.group(1)}.{fraction}{offset}")
